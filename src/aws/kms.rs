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
    /// with; `Ok(Err(why))` when it is missing, not enabled, no signing
    /// key, or supports none of the algorithms imagectl uses.
    pub async fn signing_key(&self, key: &str) -> Result<Result<SigningKey, String>, Error> {
        let out = match self.client.describe_key().key_id(key).send().await {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_not_found_exception()) =>
            {
                return Ok(Err(format!("it does not exist in {}", self.region)))
            }
            Err(e) => return Err(Error::new("DescribeKey", &self.region, Some(key), e)),
        };
        let Some(meta) = out.key_metadata() else {
            return Ok(Err("KMS described no key".to_string()));
        };
        let arn = meta.arn().unwrap_or(key).to_string();
        if let Some(state) = meta.key_state().filter(|s| s.as_str() != "Enabled") {
            return Ok(Err(format!("{arn} is {}", state.as_str())));
        }
        if let Some(usage) = meta.key_usage().filter(|u| u.as_str() != "SIGN_VERIFY") {
            return Ok(Err(format!(
                "{arn} is for {}, not SIGN_VERIFY",
                usage.as_str()
            )));
        }
        let supported = meta.signing_algorithms();
        match PREFERRED.iter().find(|a| supported.contains(a)) {
            Some(a) => Ok(Ok(SigningKey {
                arn,
                algorithm: a.as_str().to_string(),
            })),
            None => Ok(Err(format!(
                "{arn} signs with none of ECDSA_SHA_256, ECDSA_SHA_384, RSASSA_PSS_SHA_256, RSASSA_PKCS1_V1_5_SHA_256"
            ))),
        }
    }

    /// The ARN of the key `key` (ID, ARN or alias) names: what the EBS direct
    /// APIs take to encrypt a snapshot.
    pub async fn key_arn(&self, key: &str) -> Result<String, Error> {
        let out = self
            .client
            .describe_key()
            .key_id(key)
            .send()
            .await
            .map_err(|e| Error::new("DescribeKey", &self.region, Some(key), e))?;
        Ok(out
            .key_metadata()
            .and_then(|m| m.arn())
            .unwrap_or(key)
            .to_string())
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
