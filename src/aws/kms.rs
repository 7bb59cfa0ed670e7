//! KMS as provenance uses it: signing a statement with the asymmetric key
//! `[provenance] kms_key` names, and verifying a signature with it.

use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};

use super::error::err;
use super::Error;

/// KMS in one region.
#[derive(Debug, Clone)]
pub struct Kms {
    pub(super) client: aws_sdk_kms::Client,
    /// The region.
    pub region: String,
}

/// The signing algorithms imagectl uses, in the order it prefers them: the
/// first the key supports is used to sign and to verify.
const PREFERRED: [SigningAlgorithmSpec; 4] = [
    SigningAlgorithmSpec::EcdsaSha256,
    SigningAlgorithmSpec::EcdsaSha384,
    SigningAlgorithmSpec::RsassaPssSha256,
    SigningAlgorithmSpec::RsassaPkcs1V15Sha256,
];

/// A signing key: its ARN and the algorithm imagectl signs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// The key's ARN (what an alias stands for).
    pub arn: String,
    /// The algorithm (`ECDSA_SHA_256`, ...).
    pub algorithm: String,
}

impl Kms {
    /// The key `key` (ID, ARN or alias) names, with the algorithm to sign
    /// with; `Ok(None)` when it is no signing key or supports none of the
    /// algorithms imagectl uses.
    pub async fn signing_key(&self, key: &str) -> Result<Option<SigningKey>, Error> {
        let out = self
            .client
            .describe_key()
            .key_id(key)
            .send()
            .await
            .map_err(err("DescribeKey", &self.region, Some(key)))?;
        let Some(meta) = out.key_metadata() else {
            return Ok(None);
        };
        let supported = meta.signing_algorithms();
        let algorithm = PREFERRED.iter().find(|a| supported.contains(a));
        Ok(algorithm.map(|a| SigningKey {
            arn: meta.arn().unwrap_or(key).to_string(),
            algorithm: a.as_str().to_string(),
        }))
    }

    /// Signs `message` (the whole message: KMS hashes it) with `key`.
    pub async fn sign(&self, key: &SigningKey, message: &[u8]) -> Result<Vec<u8>, Error> {
        let out = self
            .client
            .sign()
            .key_id(&key.arn)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::from(key.algorithm.as_str()))
            .send()
            .await
            .map_err(err("Sign", &self.region, Some(&key.arn)))?;
        Ok(out
            .signature()
            .map(|b| b.as_ref().to_vec())
            .unwrap_or_default())
    }

    /// Whether `signature` is `key`'s over `message`. A signature KMS finds
    /// invalid is `Ok(false)`, not an error.
    pub async fn verify(
        &self,
        key: &SigningKey,
        message: &[u8],
        signature: &[u8],
    ) -> Result<bool, Error> {
        let out = self
            .client
            .verify()
            .key_id(&key.arn)
            .message(Blob::new(message))
            .message_type(MessageType::Raw)
            .signature(Blob::new(signature))
            .signing_algorithm(SigningAlgorithmSpec::from(key.algorithm.as_str()))
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.signature_valid()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_kms_invalid_signature_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(Error::new("Verify", &self.region, Some(&key.arn), e)),
        }
    }
}
