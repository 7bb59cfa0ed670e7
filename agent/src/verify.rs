//! `imagectl-agent verify`: every baked file checked against the image
//! manifest (contents, mode, owner, group). Drift is listed, never fixed.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::config::ManifestEntry;
use crate::files::{self, Accounts, FileError, Root};
use crate::safepath::Refused;

/// One way a baked file differs from the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The file, as in the manifest.
    pub path: String,
    /// What differs (`contents differ`, `mode 0644, manifest says 0600`).
    pub what: String,
}

/// Checks every manifest entry below `root`; returns what drifted, in
/// manifest order.
pub fn verify(root: &Root, manifest: &[ManifestEntry]) -> Result<Vec<Drift>, FileError> {
    let accounts = Accounts::load(root)?;
    let tree = root.tree()?;
    let mut drift = Vec::new();
    for e in manifest {
        let mut push = |what: String| {
            drift.push(Drift {
                path: e.path.clone(),
                what,
            })
        };
        let shown = root.path(&e.path)?.display().to_string();
        // Resolved as a write is: no link another user planted, and none
        // leading out of the root, is followed; the file's own name never.
        let (dir, name) = match tree.parent(Path::new(&e.path), false) {
            Ok(found) => found,
            Err(Refused::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                push("missing".to_string());
                continue;
            }
            Err(r) => {
                push(format!(
                    "cannot inspect: {}",
                    root.refused(&shown, "read", r)
                ));
                continue;
            }
        };
        let meta = match dir.lstat(&name) {
            Ok(Some(m)) => m,
            Ok(None) => {
                push("missing".to_string());
                continue;
            }
            Err(source) => {
                push(format!("cannot inspect: {source}"));
                continue;
            }
        };
        if !meta.is_file() {
            push("not a regular file".to_string());
            continue;
        }
        let mut bytes = Vec::new();
        match dir
            .open_read(&name)
            .and_then(|mut f| f.read_to_end(&mut bytes))
        {
            Ok(_) => {
                let digest: String = Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if digest != e.sha256 {
                    push("contents differ".to_string());
                }
            }
            Err(source) => push(format!("cannot read: {source}")),
        }
        let mode = meta.mode & 0o7777;
        match files::parse_mode(&e.path, &e.mode) {
            Ok(want) if want == mode => {}
            _ => push(format!("mode {mode:04o}, manifest says {}", e.mode)),
        }
        if accounts.uid(&e.owner, &e.path).ok() != Some(meta.uid) {
            let now = accounts
                .user_name(meta.uid)
                .map(str::to_string)
                .unwrap_or_else(|| meta.uid.to_string());
            push(format!("owner {now}, manifest says {}", e.owner));
        }
        if accounts.gid(&e.group, &e.path).ok() != Some(meta.gid) {
            let now = accounts
                .group_name(meta.gid)
                .map(str::to_string)
                .unwrap_or_else(|| meta.gid.to_string());
            push(format!("group {now}, manifest says {}", e.group));
        }
    }
    Ok(drift)
}
