//! Where role files and the files they reference are read from: `roles/`
//! on disk or memory, never past a size limit, never out of `roles/`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use super::ROLES_DIR;
use crate::project::Project;

/// Why a file below `roles/` cannot be used.
#[derive(Debug)]
pub(super) enum Unusable {
    /// Nothing there.
    Missing,
    /// A symbolic link to nothing.
    Dangling,
    /// A directory, device, FIFO or socket.
    NotFile,
    /// A symbolic link leading outside `roles/`.
    Outside,
    /// A regular file larger than allowed: its size.
    TooBig(u64),
    /// Reading failed.
    Io(String),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Missing => f.write_str("it does not exist"),
            Unusable::Dangling => f.write_str("it is a symbolic link to nothing"),
            Unusable::NotFile => f.write_str("it is not a regular file"),
            Unusable::Outside => {
                write!(f, "it is a symbolic link that leads outside `{ROLES_DIR}/`")
            }
            Unusable::TooBig(n) => write!(f, "it is {}", human_size(*n)),
            Unusable::Io(e) => f.write_str(e),
        }
    }
}

/// Where role files and the files they reference come from: the project's
/// `roles/` directory, or memory. Paths are relative to `roles/` and made
/// of normal components only.
pub(super) trait Store {
    /// Every role that has a file, sorted.
    fn role_names(&self) -> Vec<String>;
    /// The size of a regular file inside `roles/`.
    fn stat(&self, rel: &str) -> Result<u64, Unusable>;
    /// The bytes of a regular file inside `roles/`, at most `max` of them.
    fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>, Unusable>;
    /// A regular file inside `roles/`, to read as a stream (an archive).
    fn open(&self, rel: &str) -> Result<Box<dyn Read + '_>, Unusable>;
}

/// `roles/` on disk.
pub(super) struct Disk {
    dir: PathBuf,
    /// `dir` with symlinks resolved, to catch links leading out of it.
    real: Option<PathBuf>,
}

impl Store for Disk {
    fn role_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "toml" && p.is_file())
                    .then(|| p.file_stem()?.to_str().map(String::from))?
            })
            .collect();
        names.sort();
        names
    }

    fn stat(&self, rel: &str) -> Result<u64, Unusable> {
        let full = self.dir.join(rel);
        match std::fs::metadata(&full) {
            Err(_) if std::fs::symlink_metadata(&full).is_ok() => Err(Unusable::Dangling),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Err(Unusable::Missing)
            }
            Err(e) => Err(Unusable::Io(e.to_string())),
            Ok(m) if !m.is_file() => Err(Unusable::NotFile),
            Ok(m) => {
                let inside = match (full.canonicalize(), &self.real) {
                    (Ok(r), Some(root)) => r.starts_with(root),
                    _ => false,
                };
                if inside {
                    Ok(m.len())
                } else {
                    Err(Unusable::Outside)
                }
            }
        }
    }

    fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>, Unusable> {
        let len = self.stat(rel)?;
        if len > max {
            return Err(Unusable::TooBig(len));
        }
        // The file may grow between the check and the read: never read
        // more than one byte past the limit.
        let mut bytes = Vec::new();
        std::fs::File::open(self.dir.join(rel))
            .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
            .map_err(|e| Unusable::Io(e.to_string()))?;
        if bytes.len() as u64 > max {
            return Err(Unusable::TooBig(bytes.len() as u64));
        }
        Ok(bytes)
    }

    fn open(&self, rel: &str) -> Result<Box<dyn Read + '_>, Unusable> {
        self.stat(rel)?;
        let f = std::fs::File::open(self.dir.join(rel)).map_err(|e| Unusable::Io(e.to_string()))?;
        Ok(Box::new(f))
    }
}

/// Role files and the files they reference, held in memory: loads roles
/// with [`load_in_memory`](super::load_in_memory) without touching the
/// filesystem. The fuzzer and unit tests use it; `imagectl` itself always
/// reads `roles/`.
#[derive(Debug, Clone, Default)]
pub struct MemoryRoles {
    /// Contents by path relative to `roles/`: `app.toml` is role `app`,
    /// `files/app/app.conf` a file it may reference.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl MemoryRoles {
    /// The roles that have a file, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.files
            .keys()
            .filter(|k| !k.contains('/'))
            .filter_map(|k| k.strip_suffix(".toml"))
            .map(String::from)
            .collect()
    }
}

impl Store for MemoryRoles {
    fn role_names(&self) -> Vec<String> {
        MemoryRoles::role_names(self)
    }

    fn stat(&self, rel: &str) -> Result<u64, Unusable> {
        match self.files.get(rel) {
            Some(b) => Ok(b.len() as u64),
            None => {
                let dir = format!("{rel}/");
                if self.files.keys().any(|k| k.starts_with(&dir)) {
                    Err(Unusable::NotFile)
                } else {
                    Err(Unusable::Missing)
                }
            }
        }
    }

    fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>, Unusable> {
        let len = self.stat(rel)?;
        if len > max {
            return Err(Unusable::TooBig(len));
        }
        Ok(self.files.get(rel).cloned().unwrap_or_default())
    }

    fn open(&self, rel: &str) -> Result<Box<dyn Read + '_>, Unusable> {
        self.stat(rel)?;
        Ok(Box::new(self.files.get(rel).map_or(&[][..], Vec::as_slice)))
    }
}

/// The project's `roles/`; links out of it are found against its real path.
pub(super) fn disk(project: &Project) -> Disk {
    let dir = project.roles_dir();
    Disk {
        real: dir.canonicalize().ok(),
        dir,
    }
}

/// A size for messages: bytes up to a KiB, else KiB, MiB or GiB.
pub(super) fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `text` is binary or not UTF-8: where, for a diagnostic, and the text
/// to show it in.
pub(super) fn not_text(bytes: Vec<u8>) -> Result<String, (String, usize, &'static str)> {
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        return Err((text, 0, "is UTF-16 text, not UTF-8"));
    }
    match String::from_utf8(bytes) {
        Ok(t) => match t.find('\0') {
            Some(at) => Err((t, at, "contains a NUL byte")),
            None => Ok(t),
        },
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            Err((text, valid, "is not UTF-8 text"))
        }
    }
}
