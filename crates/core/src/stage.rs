//! The staged build context: exactly what goes into an image, as a
//! directory that every target uses (Packer uploads it, the local target
//! copies it into a root filesystem), with the one provisioning script that
//! installs it.
//!
//! Layout of a staged context:
//!
//! ```text
//! provision.sh                         installs everything below, then runs the checks
//! archives/<n>-<name>                  every `[[archives]]` tar, unpacked by provision.sh
//! rootfs/<dest>                        every role file at its destination
//! rootfs/usr/local/bin/imagectl-agent  the agent
//! rootfs/etc/systemd/system/imagectl-agent.service
//! rootfs/etc/imagectl/image.json       role, hash, [boot], manifest of baked files
//! rootfs/etc/imagectl/templates/...    the boot templates
//! ```
//!
//! One hash, one image: the digests of a role's files are taken once, when
//! its target is resolved ([`Context::resolve`]), and they enter the content
//! hash. Staging copies each file while hashing the copy and refuses a file
//! whose bytes are not the ones hashed; just before the bake, [`verify`]
//! checks that the staged tree and the sources still hold exactly those
//! bytes.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use imagectl_image::config::{
    ImageConfig, ManifestEntry, CONFIG_DIR, CONFIG_FILE, FORMAT_VERSION, TEMPLATES_DIR,
};
use sha2::{Digest, Sha256};

use crate::agent::Agent;
use crate::fsutil;
use crate::hash::{hash_files, hex, Hash};
use crate::project::Project;
use crate::provision::{self, Install};
use crate::role::{Role, ROLES_DIR};

/// Where the agent binary lives in every image.
pub const AGENT_BIN: &str = "/usr/local/bin/imagectl-agent";
/// The agent's unit in every image.
pub const AGENT_UNIT: &str = "/etc/systemd/system/imagectl-agent.service";

/// Errors resolving, staging or verifying a build context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A source file could not be read.
    #[error("cannot read `{path}` for role `{role}`: {source}")]
    Read {
        /// The role.
        role: String,
        /// The file, relative to the project root.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A source file's bytes are no longer those its digest was taken of.
    #[error("`{path}` changed after it was hashed (hashed {}, now {}); nothing was baked: run the command again to hash and stage what is there now", crate::hash::short(hashed), crate::hash::short(now))]
    Changed {
        /// The file, relative to the project root.
        path: String,
        /// The digest that entered the content hash.
        hashed: String,
        /// The digest of its bytes now.
        now: String,
    },
    /// The staged tree differs from what was staged.
    #[error("the staged context `{}` changed after staging: {what}; nothing was baked: run the build again", dir.display())]
    Tampered {
        /// The staged directory.
        dir: PathBuf,
        /// What differs, naming the file.
        what: String,
    },
    /// The agent binary cannot be baked into this role's image.
    #[error(transparent)]
    Agent(#[from] crate::agent::Error),
    /// The output directory is in the way.
    #[error("`{}` exists and is not empty; stage writes a new directory", .0.display())]
    Exists(PathBuf),
    /// Reading or writing a file failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the user fixes it (exit 2): a wrong agent or an output in the
    /// way. A file that changed or cannot be read is a failure (exit 1).
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Agent(e) => e.is_usage(),
            Error::Exists(_) => true,
            _ => false,
        }
    }
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl From<fsutil::IoError> for Error {
    fn from(e: fsutil::IoError) -> Error {
        Error::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    }
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
    pub fn resolve(project: &Project, role: &Role) -> Result<Context, Error> {
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
            s.sha256 = digest.map_err(|e| Error::Read {
                role: role.name.clone(),
                path: s.shown(),
                source: e,
            })?;
        }
        Ok(Context { sources })
    }

    /// The archives as staged: `archives/<n>-<file name>`, in the role's
    /// order.
    fn archives(&self) -> Vec<(String, &Source)> {
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

/// Where the bytes of a file placed in `rootfs/` come from.
#[derive(Debug, Clone)]
enum Bytes<'a> {
    /// A role file, copied and checked against its digest.
    Source(&'a Source),
    /// Generated by imagectl, or the agent.
    Owned(Vec<u8>),
}

/// One file placed in `rootfs/`.
#[derive(Debug, Clone)]
struct Placed<'a> {
    bytes: Bytes<'a>,
    entry: ManifestEntry,
}

impl Placed<'_> {
    fn install(&self) -> Install {
        Install {
            path: self.entry.path.clone(),
            mode: self.entry.mode.clone(),
            owner: self.entry.owner.clone(),
            group: self.entry.group.clone(),
        }
    }
}

fn owned(bytes: Vec<u8>, path: &str, mode: &str) -> Placed<'static> {
    let entry = ManifestEntry {
        path: path.to_string(),
        sha256: hex(&Sha256::digest(&bytes)),
        mode: mode.to_string(),
        owner: "root".into(),
        group: "root".into(),
    };
    Placed {
        bytes: Bytes::Owned(bytes),
        entry,
    }
}

/// What a stage wrote.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The staged directory.
    pub dir: PathBuf,
    /// Every baked file.
    pub manifest: Vec<ManifestEntry>,
    /// Every file written, by path relative to `dir`, with its digest.
    pub files: BTreeMap<String, String>,
}

/// The files of `rootfs/`, sorted by path, `image.json` last (it lists the
/// others).
fn placements<'a>(
    role: &Role,
    hash: &Hash,
    context: &'a Context,
    agent: &Agent,
) -> Vec<Placed<'a>> {
    let mut placed: Vec<Placed> = Vec::new();
    for s in &context.sources {
        let entry = match s.kind {
            SourceKind::File => ManifestEntry {
                path: s.dest.clone(),
                sha256: s.sha256.clone(),
                mode: s.mode.clone().unwrap_or_default(),
                owner: s.owner.clone(),
                group: s.group.clone(),
            },
            // The template itself, readable by the agent; its rendering
            // gets the role's mode and owner at boot.
            SourceKind::Template => ManifestEntry {
                path: format!("{CONFIG_DIR}/{TEMPLATES_DIR}/{}", s.source),
                sha256: s.sha256.clone(),
                mode: "0644".into(),
                owner: "root".into(),
                group: "root".into(),
            },
            SourceKind::Archive => continue,
        };
        placed.push(Placed {
            bytes: Bytes::Source(s),
            entry,
        });
    }
    placed.push(owned(agent.bytes.clone(), AGENT_BIN, "0755"));
    placed.push(owned(
        imagectl_image::UNIT.as_bytes().to_vec(),
        AGENT_UNIT,
        "0644",
    ));
    placed.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));

    let config = ImageConfig {
        format: FORMAT_VERSION,
        role: role.name.clone(),
        hash: hash.to_string(),
        boot: role.boot.clone(),
        manifest: placed.iter().map(|p| p.entry.clone()).collect(),
    };
    let mut json = serde_json::to_vec_pretty(&config).unwrap_or_default();
    json.push(b'\n');
    placed.push(owned(json, &format!("{CONFIG_DIR}/{CONFIG_FILE}"), "0644"));
    placed
}

/// Writes the staged context of `role` to `out`, all or nothing: it is
/// assembled beside `out` and renamed into place. `agent` must be fit for
/// the role's image.
pub fn stage(
    role: &Role,
    hash: &Hash,
    context: &Context,
    agent: &Agent,
    out: &Path,
) -> Result<Staged, Error> {
    agent.check_arch(role)?;
    let placed = placements(role, hash, context, agent);
    let manifest: Vec<ManifestEntry> = placed[..placed.len() - 1]
        .iter()
        .map(|p| p.entry.clone())
        .collect();
    let archives = context.archives();
    let installs: Vec<Install> = placed.iter().map(Placed::install).collect();
    let names: Vec<String> = archives.iter().map(|(n, _)| n.clone()).collect();
    let script = provision::script(role, hash, &installs, &names);

    prepare_out(out)?;
    let files = fsutil::build_dir(out, |tmp| {
        let mut files = BTreeMap::new();
        for p in &placed {
            let rel = format!("rootfs{}", p.entry.path);
            let sha256 = match &p.bytes {
                Bytes::Source(s) => copy_checked(s, &tmp.join(&rel))?,
                Bytes::Owned(bytes) => write_new(&tmp.join(&rel), bytes)?,
            };
            files.insert(rel, sha256);
        }
        for (name, s) in &archives {
            let rel = format!("archives/{name}");
            files.insert(rel.clone(), copy_checked(s, &tmp.join(&rel))?);
        }
        let script_path = tmp.join("provision.sh");
        files.insert(
            "provision.sh".into(),
            write_new(&script_path, script.as_bytes())?,
        );
        fsutil::set_mode(&script_path, 0o755).map_err(io("set the mode of", &script_path))?;
        Ok::<_, Error>(files)
    })?;
    Ok(Staged {
        dir: out.to_path_buf(),
        manifest,
        files,
    })
}

/// Makes room for a new directory at `out`: an empty one is replaced, any
/// other is refused.
fn prepare_out(out: &Path) -> Result<(), Error> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(io("read", out))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::Exists(out.to_path_buf()));
        }
        std::fs::remove_dir(out).map_err(io("replace", out))?;
    }
    Ok(())
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<String, Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    std::fs::write(path, bytes).map_err(io("write", path))?;
    Ok(hex(&Sha256::digest(bytes)))
}

/// Copies a source into the stage, hashing the bytes copied: a source whose
/// bytes are not the ones its digest was taken of is refused.
fn copy_checked(s: &Source, to: &Path) -> Result<String, Error> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    }
    let mut from = std::fs::File::open(&s.path).map_err(io("read", &s.path))?;
    let mut into = std::fs::File::create(to).map_err(io("write", to))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf).map_err(io("read", &s.path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        into.write_all(&buf[..n]).map_err(io("write", to))?;
    }
    let now = hex(&h.finalize());
    if now != s.sha256 {
        return Err(Error::Changed {
            path: s.shown(),
            hashed: s.sha256.clone(),
            now,
        });
    }
    Ok(now)
}

/// Checks, just before a bake, that the staged tree holds exactly the
/// files staging wrote, with the same bytes, and that every source still
/// has the bytes its digest was taken of: what is baked is what is hashed,
/// and what the checkout holds.
pub fn verify(context: &Context, staged: &Staged) -> Result<(), Error> {
    let tampered = |what: String| Error::Tampered {
        dir: staged.dir.clone(),
        what,
    };
    let mut present = Vec::new();
    fsutil::walk_files(&staged.dir, &mut present).map_err(io("read", &staged.dir))?;
    for rel in &present {
        if !staged.files.contains_key(rel) {
            return Err(tampered(format!("`{rel}` was added")));
        }
    }
    let rels: Vec<&String> = staged.files.keys().collect();
    let paths: Vec<PathBuf> = rels.iter().map(|r| staged.dir.join(r)).collect();
    for ((rel, path), digest) in rels.iter().zip(&paths).zip(hash_files(&paths)) {
        match digest {
            Ok(d) if d == staged.files[*rel] => {}
            Ok(_) => return Err(tampered(format!("`{rel}` has other bytes"))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(tampered(format!("`{rel}` was removed")))
            }
            Err(e) => return Err(io("read", path)(e)),
        }
    }
    let sources: Vec<PathBuf> = context.sources.iter().map(|s| s.path.clone()).collect();
    for (s, digest) in context.sources.iter().zip(hash_files(&sources)) {
        let now = digest.map_err(io("read", &s.path))?;
        if now != s.sha256 {
            return Err(Error::Changed {
                path: s.shown(),
                hashed: s.sha256.clone(),
                now,
            });
        }
    }
    Ok(())
}
