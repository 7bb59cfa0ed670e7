//! Filesystem helpers, each written once: atomic file writes (readers see
//! the old file or the new one, never half), directories built all or
//! nothing, modes, walking a tree, and finding a program on `PATH`.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A filesystem operation that failed, with what and where.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} `{}`: {source}", path.display())]
pub struct IoError {
    /// What was being done (`write`, `rename into`, ...).
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// A closure turning an I/O error into an [`IoError`] about `path`.
pub fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> IoError + 'a {
    move |source| IoError {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory of `path`, `.` for a bare file name.
fn parent_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary sibling of `path`, private to this process.
fn sibling(path: &Path, what: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    parent_of(path).join(format!(".{name}.{what}.{}", std::process::id()))
}

/// Writes `bytes` to `path` through a temporary file in the same directory,
/// flushed to disk, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir)?;
    let tmp = sibling(path, "tmp");
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Builds a new directory at `out`, all or nothing: `fill` writes into a
/// temporary sibling, which is renamed to `out` when it succeeds and removed
/// when it fails. `out` must not exist.
pub fn build_dir<T, E: From<IoError>>(
    out: &Path,
    fill: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let parent = parent_of(out);
    std::fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    let tmp = sibling(out, "tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let result = std::fs::create_dir(&tmp)
        .map_err(|e| E::from(io_error("create", &tmp)(e)))
        .and_then(|()| fill(&tmp))
        .and_then(|value| {
            std::fs::rename(&tmp, out).map_err(io_error("rename into", out))?;
            Ok(value)
        });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Sets the permission bits of `path`.
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Adds to `out` the path, relative to `root` and `/`-separated, of every
/// entry below `root` that is not a directory (symbolic links included, not
/// followed), sorted.
pub fn walk_files(root: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let path = e.path();
            if e.file_type()?.is_dir() {
                walk(root, &path, out)?;
            } else {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push(rel.to_string_lossy().into_owned());
            }
        }
        Ok(())
    }
    walk(root, root, out)?;
    out.sort();
    Ok(())
}

/// Whether `program` is an executable file in a directory of `PATH`.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/f.txt");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(names(p.parent().unwrap()), ["f.txt"]);
    }

    #[test]
    fn a_directory_is_built_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("stage");
        let r: Result<(), IoError> = build_dir(&out, |tmp| {
            std::fs::write(tmp.join("a"), b"a").map_err(io_error("write", tmp))?;
            Err(io_error("write", tmp)(std::io::Error::other("disk full")))
        });
        assert!(r.is_err());
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
        let n: Result<usize, IoError> = build_dir(&out, |tmp| {
            std::fs::create_dir(tmp.join("d")).map_err(io_error("create", tmp))?;
            std::fs::write(tmp.join("d/b"), b"b").map_err(io_error("write", tmp))?;
            Ok(1)
        });
        assert_eq!(n.unwrap(), 1);
        assert_eq!(names(dir.path()), ["stage"]);
        let mut files = Vec::new();
        walk_files(&out, &mut files).unwrap();
        assert_eq!(files, ["d/b"]);
    }
}
