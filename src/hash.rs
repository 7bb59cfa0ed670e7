//! The content hash: one SHA-256 over everything that enters an image, and
//! the list of those inputs so a person can see why a hash moved.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::lock::{self, Lock};
use crate::packer;
use crate::project::Project;
use crate::role::{Role, ROLES_DIR};

/// The version of the image layout imagectl generates (staged context,
/// provisioning script, agent configuration). Bump it whenever generated
/// output changes, so that every image is rebuilt with the new layout.
pub const LAYOUT_VERSION: u32 = 1;

/// The agent's identity: a digest of its sources and locked dependencies,
/// computed by `build.rs`.
pub const AGENT_DIGEST: &str = env!("IMAGECTL_AGENT_DIGEST");

/// Errors computing a hash.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A referenced file could not be read.
    #[error("cannot read `{path}` for role `{role}`: {source}")]
    Read {
        /// The role.
        role: String,
        /// The file, relative to the project root.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The role is abstract and never built.
    #[error("role `{0}` is abstract: it is never built and has no image hash; use a role that extends it")]
    Abstract(String),
    /// The base image is not pinned, or its pin is stale.
    #[error(transparent)]
    Lock(#[from] lock::Error),
    /// The Packer template cannot be generated.
    #[error(transparent)]
    Template(#[from] packer::MissingSetting),
}

/// One thing that enters an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Input {
    /// `layout`, `agent`, `base`, `packer`, `role`, `file` or `template`.
    pub kind: &'static str,
    /// For files: the path relative to the project root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// For things that are not files: their name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SHA-256 of the input's bytes (files) or of its canonical form.
    pub sha256: String,
    /// For the base: the AMI it is pinned to in the home region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    /// For files: where they land, with mode and owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// For files: octal mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// For files: `owner:group`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Input {
    fn named(kind: &'static str, name: impl Into<String>, sha256: String) -> Input {
        Input {
            kind,
            path: None,
            name: Some(name.into()),
            sha256,
            ami: None,
            dest: None,
            mode: None,
            owner: None,
        }
    }

    /// The line this input contributes to the hash.
    fn hash_line(&self) -> String {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            self.kind,
            o(&self.path),
            o(&self.name),
            self.sha256,
            o(&self.ami),
            o(&self.dest),
            o(&self.mode),
            o(&self.owner)
        )
    }
}

/// A role's content hash with the inputs it was computed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContentHash {
    /// The role.
    pub role: String,
    /// 64 lowercase hex characters.
    pub hash: String,
    /// Everything that went into it, in hashing order.
    pub inputs: Vec<Input>,
}

impl ContentHash {
    /// The first 12 characters, for names and tables.
    pub fn short(&self) -> &str {
        &self.hash[..12]
    }
}

/// Computes the content hash of a concrete role, on its locked base image.
pub fn compute(project: &Project, lock: &Lock, role: &Role) -> Result<ContentHash, Error> {
    if role.is_abstract {
        return Err(Error::Abstract(role.name.clone()));
    }
    let base_name = role.image.base.clone().unwrap_or_default();
    let base = lock.resolve(project, &base_name)?;
    let template = crate::hcl::render(&packer::template(&project.settings, role, base)?);
    let mut base_input = Input::named(
        "base",
        base_name,
        hex(&Sha256::digest(format!(
            "{}\n{}\n{}\n",
            base.ami, base.name, base.created
        ))),
    );
    base_input.ami = Some(base.ami.clone());
    let mut inputs = vec![
        Input::named(
            "layout",
            format!("imagectl-layout-{LAYOUT_VERSION}"),
            hex(&Sha256::digest(LAYOUT_VERSION.to_string())),
        ),
        Input::named(
            "agent",
            format!("imagectl-agent {}", env!("CARGO_PKG_VERSION")),
            AGENT_DIGEST.to_string(),
        ),
        base_input,
        Input::named(
            "packer",
            format!("images/{}.pkr.hcl", role.name),
            hex(&Sha256::digest(template.as_bytes())),
        ),
    ];
    let mut role_input = Input::named("role", role.name.clone(), digest_json(role));
    role_input.path = role.sources.last().cloned();
    inputs.push(role_input);

    let roles_dir = project.roles_dir();
    let files = role.files.iter().map(|f| {
        (
            "file",
            &f.source,
            &f.dest,
            Some(&f.mode),
            &f.owner,
            &f.group,
        )
    });
    let templates = role.boot.templates.iter().map(|t| {
        (
            "template",
            &t.source,
            &t.dest,
            Some(&t.mode),
            &t.owner,
            &t.group,
        )
    });
    let archives = role
        .archives
        .iter()
        .map(|a| ("archive", &a.source, &a.dest, None, &a.owner, &a.group));
    let entries: Vec<_> = files.chain(templates).chain(archives).collect();
    let paths: Vec<std::path::PathBuf> = entries.iter().map(|e| roles_dir.join(e.1)).collect();
    let digests = hash_files(&paths);
    for ((kind, source, dest, mode, owner, group), digest) in entries.into_iter().zip(digests) {
        let path = format!("{ROLES_DIR}/{source}");
        let sha256 = digest.map_err(|e| Error::Read {
            role: role.name.clone(),
            path: path.clone(),
            source: e,
        })?;
        inputs.push(Input {
            kind,
            path: Some(path),
            name: None,
            sha256,
            ami: None,
            dest: Some(dest.clone()),
            mode: mode.cloned(),
            owner: Some(format!("{owner}:{group}")),
        });
    }

    let mut h = Sha256::new();
    h.update(b"imagectl content hash\n");
    for i in &inputs {
        h.update(i.hash_line().as_bytes());
    }
    Ok(ContentHash {
        role: role.name.clone(),
        hash: hex(&h.finalize()),
        inputs,
    })
}

impl ContentHash {
    /// The inputs in the compact form stored next to the channels (one line
    /// each: kind, path or name, the first 16 hex digits of the digest, and
    /// the AMI for the base), so that a later plan can say what changed.
    pub fn record(&self) -> String {
        self.inputs
            .iter()
            .map(|i| {
                let what = i.path.as_deref().or(i.name.as_deref()).unwrap_or("");
                let mut line = format!("{}\t{what}\t{}", i.kind, &i.sha256[..16]);
                if let Some(ami) = &i.ami {
                    line.push('\t');
                    line.push_str(ami);
                }
                line
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// What differs between a recorded input list and this one, in words.
    pub fn changes_since(&self, record: &str) -> Vec<String> {
        let parse = |text: &str| -> BTreeMap<(String, String), (String, Option<String>)> {
            text.lines()
                .filter_map(|l| {
                    let mut f = l.split('\t');
                    let (kind, what, sha) = (f.next()?, f.next()?, f.next()?);
                    Some((
                        (kind.to_string(), what.to_string()),
                        (sha.to_string(), f.next().map(String::from)),
                    ))
                })
                .collect()
        };
        let (old, new) = (parse(record), parse(&self.record()));
        let describe = |kind: &str, what: &str| match kind {
            "layout" => "imagectl's image layout".to_string(),
            "agent" => "imagectl-agent".to_string(),
            "packer" => format!("the Packer template ({what})"),
            "role" => format!("the role definition of `{what}` (its file or a parent's)"),
            "base" => format!("base image `{what}`"),
            other => format!("{other} {what}"),
        };
        let mut out = Vec::new();
        for ((kind, what), (sha, ami)) in &new {
            match old.get(&(kind.clone(), what.clone())) {
                None if kind == "layout" || kind == "agent" => {
                    out.push(format!("{} changed", describe(kind, what)))
                }
                None => out.push(format!("added {}", describe(kind, what))),
                Some((old_sha, old_ami)) if old_sha != sha => match (kind.as_str(), old_ami, ami) {
                    ("base", Some(a), Some(b)) => {
                        out.push(format!("new base image `{what}`: {a} -> {b}"))
                    }
                    _ => out.push(format!("changed {}", describe(kind, what))),
                },
                Some(_) => {}
            }
        }
        for (kind, what) in old.keys() {
            if !new.contains_key(&(kind.clone(), what.clone()))
                && kind != "layout"
                && kind != "agent"
            {
                out.push(format!("removed {}", describe(kind, what)));
            }
        }
        out
    }
}

/// The SHA-256 of each file, in order, computed on every core: each file is
/// one stream (SHA-256 cannot be split), so many files make the speed-up.
pub fn hash_files(paths: &[std::path::PathBuf]) -> Vec<std::io::Result<String>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(paths.len().max(1));
    if workers <= 1 {
        return paths.iter().map(|p| file_sha256(p)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<std::io::Result<String>>> =
        (0..paths.len()).map(|_| None).collect();
    let done = std::sync::Mutex::new(&mut results);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                let digest = file_sha256(path);
                if let Ok(mut r) = done.lock() {
                    r[i] = Some(digest);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(std::io::Error::other("not hashed"))))
        .collect()
}

/// SHA-256 of a file's bytes, streamed.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn digest_json<T: Serialize>(value: &T) -> String {
    // Serializing plain data structs to a string cannot fail.
    let json = serde_json::to_string(value).unwrap_or_default();
    hex(&Sha256::digest(json.as_bytes()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0xab, 0x01]), "ab01");
    }

    #[test]
    fn agent_digest_is_a_sha256() {
        assert_eq!(AGENT_DIGEST.len(), 64);
        assert!(AGENT_DIGEST.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
