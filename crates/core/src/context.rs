//! A role's build context before anything is written: every file of
//! `roles/` that enters its image, with the digest of its bytes, taken once
//! when its target is resolved. The content hash is computed over these
//! digests, and staging and the check before the bake hold the bytes to
//! them.

use std::path::{Path, PathBuf};

use crate::digest::hash_files;
use crate::project::{Project, ROLES_DIR};
use crate::role::Role;

/// A file of the role could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read `{path}` for role `{role}`: {source}")]
pub struct ReadError {
    /// The role.
    pub role: String,
    /// The file, relative to the project root.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

/// What a role file becomes in the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A `[[files]]` entry, baked at its destination.
    File,
    /// A `[[boot.templates]]` entry, baked below `/etc/imagectl/templates`
    /// and rendered at boot.
    Template,
    /// An `[[archives]]` tar, unpacked at build time.
    Archive,
}

impl SourceKind {
    /// The name in the list of inputs (`file`, `template`, `archive`).
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Template => "template",
            SourceKind::Archive => "archive",
        }
    }
}

/// A file of `roles/` that enters the image, with the digest of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// What it becomes.
    pub kind: SourceKind,
    /// Its path inside `roles/`.
    pub source: String,
    /// Its path on this machine.
    pub path: PathBuf,
    /// Where it lands: a file's destination, a template's rendering, an
    /// archive's directory.
    pub dest: String,
    /// Octal mode (none for archives, whose entries keep theirs).
    pub mode: Option<String>,
    /// Owning user.
    pub owner: String,
    /// Owning group.
    pub group: String,
    /// SHA-256 of its bytes, taken once when the target was resolved.
    pub sha256: String,
}

impl Source {
    /// Its path relative to the project root (`roles/files/...`).
    pub fn shown(&self) -> String {
        format!("{ROLES_DIR}/{}", self.source)
    }
}

/// A role's build context before it is written: every source with its
/// digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Files, then templates, then archives, each in the role's order.
    pub sources: Vec<Source>,
}

impl Context {
    /// Reads every file `role` bakes and takes its digest (on every core).
    pub fn resolve(project: &Project, role: &Role) -> Result<Context, ReadError> {
        let roles_dir = project.roles_dir();
        let source =
            |kind, src: &str, dest: &str, mode: Option<&String>, o: &str, g: &str| Source {
                kind,
                source: src.to_string(),
                path: roles_dir.join(src),
                dest: dest.to_string(),
                mode: mode.cloned(),
                owner: o.to_string(),
                group: g.to_string(),
                sha256: String::new(),
            };
        let files = role.files.iter().map(|f| {
            source(
                SourceKind::File,
                &f.source,
                &f.dest,
                Some(&f.mode),
                &f.owner,
                &f.group,
            )
        });
        let templates = role.boot.templates.iter().map(|t| {
            source(
                SourceKind::Template,
                &t.source,
                &t.dest,
                Some(&t.mode),
                &t.owner,
                &t.group,
            )
        });
        let archives = role.archives.iter().map(|a| {
            source(
                SourceKind::Archive,
                &a.source,
                &a.dest,
                None,
                &a.owner,
                &a.group,
            )
        });
        let mut sources: Vec<Source> = files.chain(templates).chain(archives).collect();
        let paths: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
        for (s, digest) in sources.iter_mut().zip(hash_files(&paths)) {
            s.sha256 = digest.map_err(|e| ReadError {
                role: role.name.clone(),
                path: s.shown(),
                source: e,
            })?;
        }
        Ok(Context { sources })
    }

    /// The archives as staged: `archives/<n>-<file name>`, in the role's
    /// order.
    pub fn archives(&self) -> Vec<(String, &Source)> {
        self.sources
            .iter()
            .filter(|s| s.kind == SourceKind::Archive)
            .enumerate()
            .map(|(i, s)| {
                let name = Path::new(&s.source)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (format!("{i}-{name}"), s)
            })
            .collect()
    }
}
