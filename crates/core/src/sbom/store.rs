//! Where builds keep their SBOMs, and finding the build a command names.
//!
//! - Local target: beside the tarball, `images/local/ROLE-HASH12.spdx.json`.
//!   A tarball built before SBOMs were kept has its SBOM made from it when
//!   asked.
//! - AWS: in the build's work directory, `.imagectl/builds/ROLE-BUILD/
//!   sbom.spdx.json`, named by the build record (`.imagectl/builds.json`)
//!   with its SHA-256, which the AMIs carry as their `imagectl:sbom-sha256`
//!   tag. The build also keeps it, gzipped and base64 ([`pack`]), in the
//!   parameter `PREFIX/ROLE/sbom/HASH` when it fits (8 KB), so that any
//!   machine can read it.

use std::path::{Path, PathBuf};

use super::{rootfs, spdx, Archive, Inventory};
use crate::digest::file_sha256;
use crate::fsutil::{io_error, write_atomic, IoError};
use crate::record::{self, Kind, SbomRef};

/// The file name of an AMI build's SBOM in its work directory.
pub const FILE_NAME: &str = "sbom.spdx.json";

/// The local target's SBOM path for its tarball `tar`.
pub fn local_path(tar: &Path) -> PathBuf {
    tar.with_extension("spdx.json")
}

/// Writes the document of `inv` to `path` (atomically); returns the
/// record's reference to it, `path` relative to `root`.
pub fn write(root: &Path, path: &Path, inv: &Inventory) -> Result<SbomRef, IoError> {
    let bytes = spdx::render(&spdx::document(inv));
    write_atomic(path, &bytes).map_err(io_error("write", path))?;
    Ok(SbomRef {
        path: path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string(),
        sha256: crate::digest::sha256(&bytes),
    })
}

/// Errors finding or reading a build's SBOM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No build matches.
    #[error("no {} build of `{role}` has a hash starting with `{prefix}`{}", target.as_str(), if known.is_empty() { String::new() } else { format!(" (its builds: {})", known.join(", ")) })]
    NoBuild {
        /// The role.
        role: String,
        /// The kind of build.
        target: Kind,
        /// The prefix asked for.
        prefix: String,
        /// The short hashes of the builds there are.
        known: Vec<String>,
    },
    /// More than one build matches.
    #[error("`{prefix}` matches several {} builds of `{role}`: {}; give more digits", target.as_str(), matches.join(", "))]
    Ambiguous {
        /// The role.
        role: String,
        /// The kind of build.
        target: Kind,
        /// The prefix asked for.
        prefix: String,
        /// The short hashes it matches.
        matches: Vec<String>,
    },
    /// An AMI build that kept no SBOM here.
    #[error("the AMI build of `{role}` with hash {} kept no SBOM on this machine: SBOMs are kept by the machine that ran the build (`.imagectl/builds/`), and builds made before imagectl kept them have none", crate::hash::short(hash))]
    NotKept {
        /// The role.
        role: String,
        /// The hash.
        hash: String,
    },
    /// The SBOM's bytes are not those the record lists.
    #[error("`{}` has changed since the build wrote it (recorded SHA-256 {}, now {}); it is not the SBOM the images' `imagectl:sbom-sha256` tag names", path.display(), crate::hash::short(recorded), crate::hash::short(now))]
    Changed {
        /// The document.
        path: PathBuf,
        /// The digest in the record.
        recorded: String,
        /// Its digest now.
        now: String,
    },
    /// The SBOM does not parse.
    #[error("cannot read the SBOM `{}`: {source}", path.display())]
    Unreadable {
        /// The document.
        path: PathBuf,
        /// Why.
        source: spdx::ReadError,
    },
    /// The build record cannot be read.
    #[error(transparent)]
    Record(#[from] record::Error),
    /// The tarball cannot be read.
    #[error(transparent)]
    Rootfs(#[from] rootfs::Error),
    /// A file cannot be read.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl Error {
    /// Whether the user fixes it (exit 2): a build that does not exist or
    /// a prefix that names several.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::NoBuild { .. } | Error::Ambiguous { .. } | Error::NotKept { .. }
        )
    }
}

/// A build of a role, as found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Build {
    /// The role.
    pub role: String,
    /// Its hash: 64 digits, or the 12 of a tarball's name when no record
    /// has the whole.
    pub hash: String,
    /// The kind of build.
    pub target: Kind,
    /// The local target's tarball.
    pub tar: Option<PathBuf>,
    /// The SBOM, when the build kept one.
    pub sbom: Option<PathBuf>,
    /// Its SHA-256 as recorded (AMI builds).
    pub sbom_sha256: Option<String>,
}

/// Every build of `role` of kind `target` on this machine: for the local
/// target, the tarballs in `local_dir` (`images/local`, relative to
/// `root`); for AWS, the build record.
pub fn builds(root: &Path, local_dir: &str, role: &str, target: Kind) -> Result<Vec<Build>, Error> {
    let records = record::load(root)?;
    let mut out = Vec::new();
    match target {
        Kind::Local => {
            let dir = root.join(local_dir);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e.flatten().collect::<Vec<_>>(),
                Err(_) => Vec::new(),
            };
            for e in entries {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(short) = name
                    .strip_suffix(".tar")
                    .and_then(|n| n.strip_prefix(role))
                    .and_then(|n| n.strip_prefix('-'))
                else {
                    continue;
                };
                let hex = short.len() == 12
                    && short
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !hex {
                    continue;
                }
                let tar = e.path();
                let artifact = format!("{local_dir}/{name}");
                let full = records
                    .iter()
                    .rev()
                    .find(|r| r.role == role && r.target == Kind::Local && r.artifact == artifact)
                    .map(|r| r.hash.clone())
                    .filter(|h| h.starts_with(short));
                let sbom = Some(local_path(&tar)).filter(|p| p.is_file());
                out.push(Build {
                    role: role.to_string(),
                    hash: full.unwrap_or_else(|| short.to_string()),
                    target,
                    tar: Some(tar),
                    sbom,
                    sbom_sha256: None,
                });
            }
        }
        Kind::Aws => {
            for r in records
                .iter()
                .filter(|r| r.role == role && r.target == Kind::Aws)
            {
                out.push(Build {
                    role: role.to_string(),
                    hash: r.hash.clone(),
                    target,
                    tar: None,
                    sbom: r.sbom.as_ref().map(|s| root.join(&s.path)),
                    sbom_sha256: r.sbom.as_ref().map(|s| s.sha256.clone()),
                });
            }
        }
    }
    out.sort_by(|a, b| a.hash.cmp(&b.hash));
    out.dedup_by(|a, b| a.hash == b.hash);
    Ok(out)
}

/// The one build of `builds` whose hash starts with `prefix`.
pub fn find(builds: Vec<Build>, role: &str, target: Kind, prefix: &str) -> Result<Build, Error> {
    let short = |b: &Build| crate::hash::short(&b.hash).to_string();
    let known: Vec<String> = builds.iter().map(short).collect();
    let mut matching: Vec<Build> = builds
        .into_iter()
        .filter(|b| b.hash.starts_with(prefix) || prefix.starts_with(&b.hash))
        .collect();
    match matching.len() {
        1 => Ok(matching.remove(0)),
        0 => Err(Error::NoBuild {
            role: role.to_string(),
            target,
            prefix: prefix.to_string(),
            known,
        }),
        _ => Err(Error::Ambiguous {
            role: role.to_string(),
            target,
            prefix: prefix.to_string(),
            matches: matching.iter().map(short).collect(),
        }),
    }
}

/// The SBOM of a build, as bytes: the one it kept (checked against the
/// record's digest), else, for a tarball, one made from it now, with the
/// release archives `archives` and the time `created` when the caller
/// knows them (the build of the current hash).
pub fn document_of(
    b: &Build,
    archives: Option<Vec<Archive>>,
    created: Option<i64>,
) -> Result<Vec<u8>, Error> {
    if let Some(path) = &b.sbom {
        let bytes = std::fs::read(path).map_err(io_error("read", path))?;
        if let Some(recorded) = &b.sbom_sha256 {
            let now = crate::digest::sha256(&bytes);
            if &now != recorded {
                return Err(Error::Changed {
                    path: path.clone(),
                    recorded: recorded.clone(),
                    now,
                });
            }
        }
        return Ok(bytes);
    }
    match &b.tar {
        Some(tar) => {
            let inv = from_tarball(tar, archives, created)?;
            Ok(spdx::render(&spdx::document(&inv)))
        }
        None => Err(Error::NotKept {
            role: b.role.clone(),
            hash: b.hash.clone(),
        }),
    }
}

/// The largest packed SBOM a parameter holds (SSM's advanced tier).
pub const MAX_PACKED: usize = 8192;

/// An SBOM's bytes as a parameter value: gzipped (with no name or time in
/// the header, so the same bytes pack the same), base64.
pub fn pack(bytes: &[u8]) -> String {
    use base64::Engine as _;
    use std::io::Write as _;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).expect("writing to memory");
    let packed = gz.finish().expect("writing to memory");
    base64::engine::general_purpose::STANDARD.encode(packed)
}

/// The bytes [`pack`] packed; `None` when `text` is not such a value.
pub fn unpack(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use std::io::Read as _;
    let packed = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(packed.as_slice())
        .take(64 << 20)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// The inventory of a root filesystem tarball (see [`rootfs::inventory`]).
pub fn from_tarball(
    tar: &Path,
    archives: Option<Vec<Archive>>,
    created: Option<i64>,
) -> Result<Inventory, Error> {
    let sha256 = file_sha256(tar).map_err(io_error("read", tar))?;
    Ok(rootfs::inventory(tar, Some(&sha256), archives, created)?)
}

/// The inventory an SBOM file holds.
pub fn from_document(path: &Path, bytes: &[u8]) -> Result<Inventory, Error> {
    spdx::read(bytes).map_err(|source| Error::Unreadable {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_sbom_unpacks_to_its_bytes_and_the_same_bytes_pack_the_same() {
        let doc = br#"{"spdxVersion": "SPDX-2.3", "packages": []}"#.repeat(50);
        let packed = pack(&doc);
        assert_eq!(packed, pack(&doc));
        assert!(packed.len() < doc.len() / 4, "{}", packed.len());
        assert_eq!(unpack(&packed).as_deref(), Some(doc.as_slice()));
        assert_eq!(unpack("not base64 gzip"), None);
    }

    fn build(hash: &str) -> Build {
        Build {
            role: "worker".into(),
            hash: hash.into(),
            target: Kind::Local,
            tar: None,
            sbom: None,
            sbom_sha256: None,
        }
    }

    #[test]
    fn a_prefix_names_one_build() {
        let all = || {
            vec![
                build("0123456789ab"),
                build("0123ffffffff"),
                build(&"9".repeat(64)),
            ]
        };
        assert_eq!(
            find(all(), "worker", Kind::Local, "01234").unwrap().hash,
            "0123456789ab"
        );
        // A longer prefix than a tarball's name holds still finds it.
        assert_eq!(
            find(all(), "worker", Kind::Local, "0123456789abcdef")
                .unwrap()
                .hash,
            "0123456789ab"
        );
        let e = find(all(), "worker", Kind::Local, "0123").unwrap_err();
        assert_eq!(
            e.to_string(),
            "`0123` matches several local builds of `worker`: 0123456789ab, 0123ffffffff; give more digits"
        );
        let e = find(all(), "worker", Kind::Local, "aa").unwrap_err();
        assert_eq!(
            e.to_string(),
            "no local build of `worker` has a hash starting with `aa` (its builds: 0123456789ab, 0123ffffffff, 999999999999)"
        );
        assert!(e.is_usage());
    }

    #[test]
    fn a_kept_sbom_that_changed_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inv = spdx::tests::inventory();
        let path = dir.path().join(".imagectl/builds/x/sbom.spdx.json");
        let r = write(dir.path(), &path, &inv).unwrap();
        assert_eq!(r.path, ".imagectl/builds/x/sbom.spdx.json");
        let mut b = build(&inv.hash);
        b.target = Kind::Aws;
        b.sbom = Some(path.clone());
        b.sbom_sha256 = Some(r.sha256.clone());
        let bytes = document_of(&b, None, None).unwrap();
        assert_eq!(from_document(&path, &bytes).unwrap(), inv);
        std::fs::write(&path, b"{}").unwrap();
        assert!(matches!(
            document_of(&b, None, None),
            Err(Error::Changed { .. })
        ));
        b.sbom = None;
        assert!(document_of(&b, None, None).unwrap_err().is_usage());
    }
}
