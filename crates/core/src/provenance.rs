//! Signed provenance: the in-toto statement (SLSA provenance v1 predicate)
//! a build makes of what it built from what, the DSSE envelope its
//! signature travels in, and the checks `verify` makes of a statement
//! against an image. Signing and verifying the signature are the caller's
//! (KMS or a local key): this module only says which bytes are signed.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::hash::ContentHash;

/// The statement's `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// The predicate's type.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The envelope's `payloadType`.
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The build type: how to read the predicate's parameters.
pub const BUILD_TYPE: &str = "https://imagectl.dev/provenance/build/v1";
/// The builder's ID.
pub const BUILDER_ID: &str = "https://imagectl.dev/builder/imagectl";
/// The digest algorithm an AMI subject is named by: AMIs have no byte
/// digest a client can compute, so the subject carries the content hash
/// that names its inputs, and the AMI is in its name.
pub const CONTENT_HASH_DIGEST: &str = "imagectlContentHash";
/// The SBOM's name among the byproducts.
pub const SBOM_NAME: &str = "sbom.spdx.json";

/// What a build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// An AMI in a region.
    Ami { region: String, id: String },
    /// A file (a local root filesystem tarball) and the SHA-256 of its bytes.
    File { name: String, sha256: String },
}

impl Subject {
    /// Its name in a statement: an image's ARN (EC2 writes no account in
    /// them), or the file's name.
    pub fn name(&self) -> String {
        match self {
            Subject::Ami { region, id } => format!("arn:aws:ec2:{region}::image/{id}"),
            Subject::File { name, .. } => name.clone(),
        }
    }
}

/// One build, as its statement tells it.
#[derive(Debug, Clone)]
pub struct Build<'a> {
    /// The role's content hash and every input's digest.
    pub hash: &'a ContentHash,
    /// `aws` or `local`.
    pub target: &'a str,
    /// The checkout's commit (`-dirty` when it had uncommitted changes).
    pub commit: &'a str,
    /// imagectl's version.
    pub imagectl: &'a str,
    /// Packer's version, for builds Packer ran.
    pub packer: Option<String>,
    /// SHA-256 of the build's SBOM.
    pub sbom_sha256: &'a str,
    /// The build's ID (`HASH12-TIME`), or the tarball's name.
    pub build_id: &'a str,
    /// When it started and finished, in seconds since the epoch.
    pub started: i64,
    pub finished: i64,
    /// What it made.
    pub subjects: Vec<Subject>,
}

/// The statement of `b`, as bytes: compact JSON with sorted keys, so the
/// same build gives the same bytes.
pub fn statement(b: &Build) -> Vec<u8> {
    let subject: Vec<Value> = b
        .subjects
        .iter()
        .map(|s| match s {
            Subject::Ami { .. } => json!({
                "name": s.name(),
                "digest": {CONTENT_HASH_DIGEST: b.hash.hash.as_str()},
            }),
            Subject::File { sha256, .. } => json!({"name": s.name(), "digest": {"sha256": sha256}}),
        })
        .collect();
    let mut deps: Vec<Value> = b
        .hash
        .inputs
        .iter()
        .map(|i| {
            let mut d = json!({
                "name": format!("{}:{}", i.kind, i.path.as_deref().or(i.name.as_deref()).unwrap_or("")),
                "digest": {"sha256": i.sha256},
            });
            if let Some(path) = &i.path {
                d["uri"] = json!(format!("file:{path}"));
            }
            if let Some(ami) = &i.ami {
                d["annotations"] = json!({"ami": ami});
            }
            d
        })
        .collect();
    let (commit, dirty) = match b.commit.strip_suffix("-dirty") {
        Some(c) => (c, true),
        None => (b.commit, false),
    };
    if commit.len() == 40 && commit.bytes().all(|c| c.is_ascii_hexdigit()) {
        deps.insert(
            0,
            json!({"name": "checkout", "digest": {"gitCommit": commit}, "annotations": {"dirty": dirty}}),
        );
    }
    let mut version = json!({"imagectl": b.imagectl});
    if let Some(p) = &b.packer {
        version["packer"] = json!(p);
    }
    let v = json!({
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "role": b.hash.role,
                    "target": b.target,
                    "contentHash": b.hash.hash.as_str(),
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID, "version": version},
                "metadata": {
                    "invocationId": b.build_id,
                    "startedOn": crate::time::iso(b.started),
                    "finishedOn": crate::time::iso(b.finished),
                },
                "byproducts": [{
                    "name": SBOM_NAME,
                    "mediaType": "application/spdx+json",
                    "digest": {"sha256": b.sbom_sha256},
                }],
            },
        },
    });
    serde_json::to_vec(&v).expect("a JSON value serializes")
}

/// DSSE's pre-authentication encoding of `payload`: the bytes a signature
/// covers (`DSSEv1 LEN(type) type LEN(payload) payload`).
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope: the statement (base64) and its signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The statement, base64.
    pub payload: String,
    pub signatures: Vec<Signature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The key: a KMS key ARN, or `ed25519:` and the SHA-256 of a local
    /// public key.
    pub keyid: String,
    /// The signature, base64.
    pub sig: String,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Envelope {
    /// The envelope of `statement` signed by `keyid` with `sig`.
    pub fn new(statement: &[u8], keyid: &str, sig: &[u8]) -> Envelope {
        Envelope {
            payload_type: PAYLOAD_TYPE.to_string(),
            payload: B64.encode(statement),
            signatures: vec![Signature {
                keyid: keyid.to_string(),
                sig: B64.encode(sig),
            }],
        }
    }

    /// The envelope as stored: compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an envelope serializes")
    }

    /// An envelope as stored; the reason it is none.
    pub fn parse(text: &str) -> Result<Envelope, String> {
        let e: Envelope =
            serde_json::from_str(text).map_err(|e| format!("not a DSSE envelope: {e}"))?;
        if e.payload_type != PAYLOAD_TYPE {
            return Err(format!(
                "payload type `{}`, not `{PAYLOAD_TYPE}`",
                e.payload_type
            ));
        }
        Ok(e)
    }

    /// The signed statement's bytes.
    pub fn statement(&self) -> Result<Vec<u8>, String> {
        B64.decode(&self.payload)
            .map_err(|e| format!("the payload is not base64: {e}"))
    }

    /// The bytes each signature covers.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, String> {
        Ok(pae(&self.payload_type, &self.statement()?))
    }

    /// The first signature's bytes.
    pub fn signature(&self) -> Result<(String, Vec<u8>), String> {
        let s = self
            .signatures
            .first()
            .ok_or("the envelope has no signature")?;
        let sig = B64
            .decode(&s.sig)
            .map_err(|e| format!("the signature is not base64: {e}"))?;
        Ok((s.keyid.clone(), sig))
    }
}

/// What a statement says, as `verify` compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub role: String,
    pub target: String,
    pub content_hash: String,
    /// SHA-256 of the SBOM.
    pub sbom_sha256: String,
    /// Subjects: name → digests.
    pub subjects: BTreeMap<String, BTreeMap<String, String>>,
    /// The commit as the `imagectl:commit` tag writes it (`-dirty` when the
    /// checkout had uncommitted changes); `None` outside a git checkout.
    pub commit: Option<String>,
    /// The build's ID (the `imagectl:build` tag) or the tarball's name.
    pub build_id: String,
    /// Versions of the tools that built it: `imagectl`, `packer`.
    pub builder: BTreeMap<String, String>,
    /// Digests of the inputs, by name.
    pub inputs: BTreeMap<String, String>,
}

/// Reads the claims of a statement's bytes; the reason it is not one
/// imagectl made.
pub fn claims(statement: &[u8]) -> Result<Claims, String> {
    let v: Value =
        serde_json::from_slice(statement).map_err(|e| format!("the statement is not JSON: {e}"))?;
    if v["_type"] != STATEMENT_TYPE || v["predicateType"] != PREDICATE_TYPE {
        return Err(format!(
            "not an in-toto statement with a SLSA provenance v1 predicate (`_type` {}, `predicateType` {})",
            v["_type"], v["predicateType"]
        ));
    }
    let p = &v["predicate"];
    let params = &p["buildDefinition"]["externalParameters"];
    let text = |v: &Value, what: &str| {
        v.as_str()
            .map(String::from)
            .ok_or_else(|| format!("the statement has no {what}"))
    };
    let digests = |d: &Value| -> BTreeMap<String, String> {
        d.as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let byproducts = p["runDetails"]["byproducts"].as_array().cloned();
    let sbom = byproducts
        .unwrap_or_default()
        .into_iter()
        .find(|b| b["name"] == SBOM_NAME)
        .and_then(|b| b["digest"]["sha256"].as_str().map(String::from))
        .ok_or("the statement names no SBOM")?;
    let mut subjects = BTreeMap::new();
    for s in v["subject"].as_array().into_iter().flatten() {
        subjects.insert(text(&s["name"], "subject name")?, digests(&s["digest"]));
    }
    let mut inputs = BTreeMap::new();
    let mut commit = None;
    for d in p["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = text(&d["name"], "dependency name")?;
        if let Some(c) = d["digest"]["gitCommit"].as_str() {
            let dirty = d["annotations"]["dirty"] == true;
            commit = Some(if dirty {
                format!("{c}-dirty")
            } else {
                c.to_string()
            });
        } else if let Some(sha) = d["digest"]["sha256"].as_str() {
            inputs.insert(name, sha.to_string());
        }
    }
    Ok(Claims {
        role: text(&params["role"], "role")?,
        target: text(&params["target"], "target")?,
        content_hash: text(&params["contentHash"], "content hash")?,
        sbom_sha256: sbom,
        subjects,
        commit,
        build_id: text(&p["runDetails"]["metadata"]["invocationId"], "build ID")?,
        builder: digests(&p["runDetails"]["builder"]["version"]),
        inputs,
    })
}

impl Claims {
    /// Whether `subject` is among what the statement says was built, with
    /// the digest it says.
    pub fn names(&self, subject: &Subject) -> bool {
        let Some(d) = self.subjects.get(&subject.name()) else {
            return false;
        };
        match subject {
            Subject::Ami { .. } => d.get(CONTENT_HASH_DIGEST) == Some(&self.content_hash),
            Subject::File { sha256, .. } => d.get("sha256") == Some(sha256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{Hash, Input};

    fn hash() -> ContentHash {
        ContentHash {
            role: "worker".into(),
            hash: Hash::parse(&"ab".repeat(32)).unwrap(),
            inputs: vec![Input {
                kind: "file",
                path: Some("roles/files/a.conf".into()),
                name: None,
                sha256: "cd".repeat(32),
                ami: None,
                dest: None,
                mode: None,
                owner: None,
            }],
            canonical: String::new(),
        }
    }

    fn build(h: &ContentHash) -> Build<'_> {
        Build {
            hash: h,
            target: "aws",
            commit: "0123456789abcdef0123456789abcdef01234567",
            imagectl: "0.1.0",
            packer: Some("1.6.6".into()),
            sbom_sha256: "ef",
            build_id: "abababababab-20261203000000",
            started: 1_800_000_000,
            finished: 1_800_000_100,
            subjects: vec![Subject::Ami {
                region: "eu-west-1".into(),
                id: "ami-0123456789abcdef0".into(),
            }],
        }
    }

    #[test]
    fn a_statement_round_trips_through_its_envelope() {
        let h = hash();
        let s = statement(&build(&h));
        assert_eq!(s, statement(&build(&h)));
        let e = Envelope::parse(&Envelope::new(&s, "k", b"sig").to_json()).unwrap();
        assert_eq!(e.statement().unwrap(), s);
        assert_eq!(e.signature().unwrap(), ("k".to_string(), b"sig".to_vec()));
        let c = claims(&s).unwrap();
        assert_eq!((c.role.as_str(), c.target.as_str()), ("worker", "aws"));
        assert_eq!(c.content_hash, "ab".repeat(32));
        assert_eq!(c.sbom_sha256, "ef");
        assert_eq!(c.inputs["file:roles/files/a.conf"], "cd".repeat(32));
        assert_eq!(c.builder["packer"], "1.6.6");
        assert_eq!(
            c.commit.as_deref(),
            Some("0123456789abcdef0123456789abcdef01234567")
        );
        assert!(c.names(&Subject::Ami {
            region: "eu-west-1".into(),
            id: "ami-0123456789abcdef0".into()
        }));
        assert!(!c.names(&Subject::Ami {
            region: "eu-central-1".into(),
            id: "ami-0123456789abcdef0".into()
        }));
    }

    #[test]
    fn pae_is_dsse_s() {
        // The example of the DSSE specification (protocol.md).
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
    }

    #[test]
    fn what_is_not_a_statement_says_why() {
        assert!(Envelope::parse("{}").is_err());
        let other = Envelope::new(b"x", "k", b"s");
        let mut wrong = other.clone();
        wrong.payload_type = "text/plain".into();
        assert!(Envelope::parse(&wrong.to_json())
            .unwrap_err()
            .contains("payload type"));
        assert!(claims(b"{\"_type\": \"x\"}")
            .unwrap_err()
            .contains("in-toto"));
    }
}
