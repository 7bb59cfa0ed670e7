//! The local record of builds: which role was built with which hash, where
//! the artifact is. Kept in `.imagectl/builds.json` at the project root (not
//! committed); AWS is the record of truth for AMIs, this is for offline use.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::write_atomic;

/// Where a build's artifact is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A root filesystem tarball in `images/local/`.
    Local,
    /// AMIs.
    Aws,
}

impl Kind {
    /// Its name in the record and in plans (`local`, `aws`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Local => "local",
            Kind::Aws => "aws",
        }
    }
}

/// One finished build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The role.
    pub role: String,
    /// Its content hash.
    pub hash: String,
    /// The kind of artifact.
    pub target: Kind,
    /// Where the result is: a path for local builds, AMI IDs for AWS.
    pub artifact: String,
    /// When, in seconds since the epoch.
    pub built_at: u64,
    /// The build's inputs as [`crate::hash::ContentHash::record`] writes
    /// them, so that an offline plan can say what changed since; absent
    /// from records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    /// The build's SBOM (see [`crate::sbom::store`]); absent from records
    /// written before builds kept one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sbom: Option<SbomRef>,
}

/// Where a build keeps its SBOM, and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SbomRef {
    /// The document, relative to the project root.
    pub path: String,
    /// SHA-256 of its bytes (on AWS, also the `imagectl:sbom-sha256` tag).
    pub sha256: String,
}

impl Record {
    /// A build of `hash` of `role` finished now.
    pub fn now(role: &str, hash: &str, target: Kind, artifact: String) -> Record {
        Record {
            role: role.to_string(),
            hash: hash.to_string(),
            target,
            artifact,
            built_at: u64::try_from(crate::time::now_secs()).unwrap_or(0),
            inputs: None,
            sbom: None,
        }
    }

    /// The same record, with the build's inputs.
    pub fn with_inputs(mut self, inputs: String) -> Record {
        self.inputs = Some(inputs);
        self
    }

    /// The same record, with the build's SBOM.
    pub fn with_sbom(mut self, sbom: SbomRef) -> Record {
        self.sbom = Some(sbom);
        self
    }
}

/// Errors reading or writing the record.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file exists but cannot be read or parsed.
    #[error("cannot read the build record `{}`: {reason}; delete it to start a new record", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file cannot be written.
    #[error("cannot write the build record `{}`: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the record lives in a project.
pub fn path(root: &Path) -> PathBuf {
    root.join(".imagectl").join("builds.json")
}

/// Every record, oldest first; none when the file does not exist yet.
pub fn load(root: &Path) -> Result<Vec<Record>, Error> {
    let p = path(root);
    match std::fs::read(&p) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Read {
            path: p,
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::Read {
            path: p,
            reason: e.to_string(),
        }),
    }
}

/// Adds a record, replacing an older one of the same role, hash and target.
pub fn add(root: &Path, record: Record) -> Result<(), Error> {
    let mut all = load(root)?;
    all.retain(|r| !(r.role == record.role && r.hash == record.hash && r.target == record.target));
    all.push(record);
    let p = path(root);
    let json = serde_json::to_vec_pretty(&all).unwrap_or_default();
    write_atomic(&p, &json).map_err(|source| Error::Write { path: p, source })
}

/// The newest record of `role` that holds its build's inputs, if any.
pub fn latest_with_inputs<'a>(records: &'a [Record], role: &str) -> Option<&'a Record> {
    records
        .iter()
        .rev()
        .find(|r| r.role == role && r.inputs.is_some())
}

/// The newest record of `role` with `hash`, if any.
pub fn find<'a>(records: &'a [Record], role: &str, hash: &str) -> Option<&'a Record> {
    records
        .iter()
        .rev()
        .find(|r| r.role == role && r.hash == hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_then_find() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_empty());
        let r = Record {
            role: "worker".into(),
            hash: "ab".into(),
            target: Kind::Local,
            artifact: "x.tar".into(),
            built_at: 1,
            inputs: None,
            sbom: None,
        };
        add(dir.path(), r.clone()).unwrap();
        add(dir.path(), r.clone()).unwrap();
        let all = load(dir.path()).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(find(&all, "worker", "ab"), Some(&r));
        assert_eq!(find(&all, "worker", "cd"), None);
        assert_eq!(latest_with_inputs(&all, "worker"), None);
        let mut newer = r.clone().with_inputs("role\tworker\t00".into());
        newer.hash = "cd".into();
        add(dir.path(), newer.clone()).unwrap();
        add(
            dir.path(),
            Record {
                hash: "ef".into(),
                ..r
            },
        )
        .unwrap();
        let all = load(dir.path()).unwrap();
        assert_eq!(latest_with_inputs(&all, "worker"), Some(&newer));
    }
}
