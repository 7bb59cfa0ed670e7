//! Files on disk: paths below `--root`, user and group names from the
//! image's own `/etc/passwd` and `/etc/group`, and writing a set of files
//! all-or-nothing (temporary file in the same directory, fsync, rename).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a file operation failed: which path, and the operating system's
/// reason. Never carries file contents.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// A destination is not an absolute, normal path.
    #[error(
        "`{0}` is not a normal path (absolute for destinations, relative for sources, never `..`)"
    )]
    BadPath(String),
    /// A mode is not four octal digits.
    #[error("mode `{mode}` of `{path}` is not an octal mode such as 0600")]
    BadMode {
        /// The file.
        path: String,
        /// The mode as written.
        mode: String,
    },
    /// A user or group name is not in the image's database.
    #[error("{kind} `{name}` (for `{path}`) is not in `{db}`")]
    UnknownName {
        /// "user" or "group".
        kind: &'static str,
        /// The name.
        name: String,
        /// The file that needed it.
        path: String,
        /// The database looked in.
        db: String,
    },
    /// An operating system call failed.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done ("write", "rename", ...).
        action: &'static str,
        /// The path it was done to.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Writing the new version of a file failed before anything replaced
    /// the old one; the temporary file is removed.
    #[error("cannot {action} `{dest}` (temporary file `{tmp}`; the previous file is left as it was): {source}")]
    Stage {
        /// What was being done ("write", "fsync", ...).
        action: &'static str,
        /// The destination.
        dest: String,
        /// The temporary file's name, next to the destination.
        tmp: String,
        /// Why.
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
    let path = path.display().to_string();
    move |source| FileError::Io {
        action,
        path,
        source,
    }
}

/// The directory every absolute path is taken relative to: `/` on an
/// instance, a temporary directory in tests, an unpacked image when
/// checking one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    /// A root at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Root(dir.into())
    }

    /// The root directory itself.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `abs` (an absolute path in the image) below this root. Refuses
    /// relative paths and `..`, so nothing escapes the root.
    pub fn path(&self, abs: &str) -> Result<PathBuf, FileError> {
        let p = Path::new(abs);
        let normal = p.is_absolute()
            && p.components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !normal {
            return Err(FileError::BadPath(abs.to_string()));
        }
        Ok(self.0.join(abs.trim_start_matches('/')))
    }
}

/// `rel` as a relative path without `..` (a template's source path).
pub fn relative(rel: &str) -> Result<&Path, FileError> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(FileError::BadPath(rel.to_string()));
    }
    Ok(p)
}

/// Parses a four-digit octal mode (`0600`).
pub fn parse_mode(path: &str, mode: &str) -> Result<u32, FileError> {
    let ok = (3..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
    let bad = || FileError::BadMode {
        path: path.to_string(),
        mode: mode.to_string(),
    };
    if !ok {
        return Err(bad());
    }
    u32::from_str_radix(mode, 8).map_err(|_| bad())
}

/// User and group names of the image, read from `<root>/etc/passwd` and
/// `<root>/etc/group` (not from the host's NSS: `--root` must see the
/// image's own users).
#[derive(Debug, Default, Clone)]
pub struct Accounts {
    users: HashMap<String, u32>,
    groups: HashMap<String, u32>,
    passwd: String,
    group: String,
}

impl Accounts {
    /// Reads the databases below `root`. A missing file is an empty
    /// database (`root` still resolves to 0).
    pub fn load(root: &Root) -> Result<Self, FileError> {
        let passwd = root.path("/etc/passwd")?;
        let group = root.path("/etc/group")?;
        Ok(Accounts {
            users: read_db(&passwd)?,
            groups: read_db(&group)?,
            passwd: passwd.display().to_string(),
            group: group.display().to_string(),
        })
    }

    /// The uid of `name`, for `path`.
    pub fn uid(&self, name: &str, path: &str) -> Result<u32, FileError> {
        lookup(&self.users, name).ok_or_else(|| FileError::UnknownName {
            kind: "user",
            name: name.to_string(),
            path: path.to_string(),
            db: self.passwd.clone(),
        })
    }

    /// The gid of `name`, for `path`.
    pub fn gid(&self, name: &str, path: &str) -> Result<u32, FileError> {
        lookup(&self.groups, name).ok_or_else(|| FileError::UnknownName {
            kind: "group",
            name: name.to_string(),
            path: path.to_string(),
            db: self.group.clone(),
        })
    }

    /// The name of uid `id`, if the image has one.
    pub fn user_name(&self, id: u32) -> Option<&str> {
        self.users
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.as_str())
            .or((id == 0).then_some("root"))
    }

    /// The name of gid `id`, if the image has one.
    pub fn group_name(&self, id: u32) -> Option<&str> {
        self.groups
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(k, _)| k.as_str())
            .or((id == 0).then_some("root"))
    }
}

fn lookup(db: &HashMap<String, u32>, name: &str) -> Option<u32> {
    db.get(name)
        .copied()
        .or((name == "root").then_some(0))
        .or_else(|| name.parse().ok())
}

fn read_db(path: &Path) -> Result<HashMap<String, u32>, FileError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(io_err("read", path)(e)),
    };
    Ok(text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            let id = f.next()?.parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect())
}

/// One file to write: where, what, and with which mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Absolute path in the image (what the report shows).
    pub dest: String,
    /// The contents.
    pub contents: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

/// Whether `path` already holds exactly `p` (contents, mode and owner).
fn unchanged(path: &Path, p: &Planned) -> Result<bool, FileError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("inspect", path)(e)),
    };
    if !meta.is_file()
        || meta.len() != p.contents.len() as u64
        || meta.mode() & 0o7777 != p.mode
        || meta.uid() != p.uid
        || meta.gid() != p.gid
    {
        return Ok(false);
    }
    let mut current = Vec::with_capacity(p.contents.len());
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut current))
        .map_err(io_err("read", path))?;
    Ok(current == p.contents)
}

/// The temporary file for `dest`: a hidden sibling, so the rename stays on
/// one filesystem. A stale one from a crash is replaced on the next boot.
fn temp_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.imagectl-agent.tmp"))
}

/// Writes every file in `plan` below `root`, all or nothing as far as a
/// filesystem allows: each file is first written in full to a temporary
/// sibling (fsync, mode, owner); only when every one is ready are they
/// renamed over their destinations, and the directories fsynced. A failure
/// before the renames removes the temporary files and leaves every previous
/// file as it was. Files that already hold exactly their contents, mode and
/// owner are left alone. Returns the destinations that changed.
///
/// Ownership: the temporary file is created by this process, so it belongs
/// to the effective uid and gid; `fchown` is called only when the wanted
/// owner or group differs. Running as root (on an instance) that always
/// works; running as an ordinary user (tests, checking an unpacked image)
/// works as long as no file needs another owner, and otherwise fails with
/// the path and `EPERM` rather than writing a file with the wrong owner.
///
/// Missing parent directories are created (mode 0755 whatever the umask,
/// owned by the process).
pub fn write_all(root: &Root, plan: &[Planned]) -> Result<Vec<String>, FileError> {
    let mut staged: Vec<(PathBuf, PathBuf, &Planned)> = Vec::new();
    if let Err(e) = stage(root, plan, &mut staged) {
        remove_temps(&staged);
        return Err(e);
    }
    crate::failpoint::hit("before-rename");
    let mut changed = Vec::new();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (i, (tmp, dest, p)) in staged.iter().enumerate() {
        if i == 1 {
            crate::failpoint::hit("between-renames");
        }
        if let Err(e) = fs::rename(tmp, dest) {
            // The files already renamed stay new; the rest keep their old
            // contents, and their temporary files must not linger.
            remove_temps(&staged[i..]);
            return Err(io_err("rename into place", dest)(e));
        }
        if let Some(d) = dest.parent() {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
        changed.push(p.dest.clone());
    }
    for d in dirs {
        File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(io_err("fsync directory", &d))?;
    }
    Ok(changed)
}

fn remove_temps(staged: &[(PathBuf, PathBuf, &Planned)]) {
    for (tmp, _, _) in staged {
        let _ = fs::remove_file(tmp);
    }
}

fn stage<'a>(
    root: &Root,
    plan: &'a [Planned],
    staged: &mut Vec<(PathBuf, PathBuf, &'a Planned)>,
) -> Result<(), FileError> {
    for p in plan {
        let dest = root.path(&p.dest)?;
        // A temporary file left by a crash goes first, even when the
        // destination needs no change: it may hold a secret, readable by
        // root only but still not meant to stay.
        let tmp = temp_path(&dest);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {}
            Err(e) => return Err(io_err("remove stale", &tmp)(e)),
        }
        if unchanged(&dest, p)? {
            continue;
        }
        if let Some(dir) = dest.parent() {
            create_dirs(dir)?;
        }
        let err = |action: &'static str| {
            let dest = dest.display().to_string();
            let tmp = tmp
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            move |source| FileError::Stage {
                action,
                dest,
                tmp,
                source,
            }
        };
        // Created new (O_EXCL: a planted link is refused, not followed) and
        // 0600; it gets its final mode only once written and owned, so a
        // secret is never readable by anyone else, even briefly.
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err("create"))?;
        staged.push((tmp.clone(), dest.clone(), p));
        f.write_all(&p.contents).map_err(err("write"))?;
        let meta = f.metadata().map_err(err("inspect"))?;
        if meta.uid() != p.uid || meta.gid() != p.gid {
            std::os::unix::fs::fchown(&f, Some(p.uid), Some(p.gid))
                .map_err(err("change owner of"))?;
        }
        f.set_permissions(fs::Permissions::from_mode(p.mode))
            .map_err(err("change mode of"))?;
        f.sync_all().map_err(err("fsync"))?;
    }
    Ok(())
}

/// Creates `dir` and its missing parents with mode 0755, set explicitly:
/// the unit runs with `UMask=0077`, which would otherwise make them 0700
/// and hide a service's configuration from its own user.
fn create_dirs(dir: &Path) -> Result<(), FileError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(io_err("change mode of", dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_err("create directory", dir)(e)),
    }
}

/// Writes one file atomically (temporary sibling, fsync, rename), creating
/// its directory; for the boot report.
pub fn write_one(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    if let Some(dir) = path.parent() {
        create_dirs(dir)?;
    }
    let tmp = temp_path(path);
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    let written = f
        .write_all(contents)
        .map_err(io_err("write", &tmp))
        .and_then(|()| {
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_err("change mode of", &tmp))
        })
        .and_then(|()| f.sync_all().map_err(io_err("fsync", &tmp)))
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err("rename into place", path)));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid() -> u32 {
        fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0)
    }

    fn gid() -> u32 {
        fs::metadata("/proc/self").map(|m| m.gid()).unwrap_or(0)
    }

    fn planned(dest: &str, contents: &str, mode: u32) -> Planned {
        Planned {
            dest: dest.to_string(),
            contents: contents.as_bytes().to_vec(),
            mode,
            uid: uid(),
            gid: gid(),
        }
    }

    #[test]
    fn root_refuses_escapes() {
        let r = Root::new("/tmp/x");
        assert_eq!(r.path("/etc/a").unwrap(), PathBuf::from("/tmp/x/etc/a"));
        assert!(r.path("etc/a").is_err());
        assert!(r.path("/etc/../../a").is_err());
    }

    #[test]
    fn modes_are_octal() {
        assert_eq!(parse_mode("f", "0600").unwrap(), 0o600);
        assert_eq!(parse_mode("f", "644").unwrap(), 0o644);
        assert!(parse_mode("f", "0800").is_err());
        assert!(parse_mode("f", "rw").is_err());
        assert!(parse_mode("f", "00644").is_err());
    }

    #[test]
    fn accounts_come_from_the_root() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nlearn:x:1001:1001::/srv/learn:/usr/sbin/nologin\n",
        )
        .unwrap();
        fs::write(d.path().join("etc/group"), "root:x:0:\nlearn:x:1002:\n").unwrap();
        let a = Accounts::load(&Root::new(d.path())).unwrap();
        assert_eq!(a.uid("learn", "/f").unwrap(), 1001);
        assert_eq!(a.gid("learn", "/f").unwrap(), 1002);
        assert_eq!(a.uid("root", "/f").unwrap(), 0);
        let err = a.uid("nobody-here", "/etc/f").unwrap_err().to_string();
        assert!(
            err.starts_with("user `nobody-here` (for `/etc/f`) is not in `"),
            "{err}"
        );
    }

    #[test]
    fn writes_new_and_changed_files_and_reports_them() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let plan = vec![
            planned("/etc/app/a.env", "A=1\n", 0o600),
            planned("/etc/app/b.env", "B=2\n", 0o640),
        ];
        let changed = write_all(&root, &plan).unwrap();
        assert_eq!(changed, vec!["/etc/app/a.env", "/etc/app/b.env"]);
        let meta = fs::metadata(d.path().join("etc/app/b.env")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        // Same again: nothing changes.
        assert!(write_all(&root, &plan).unwrap().is_empty());
        // A mode change alone is a change.
        let plan2 = vec![planned("/etc/app/a.env", "A=1\n", 0o644)];
        assert_eq!(write_all(&root, &plan2).unwrap(), vec!["/etc/app/a.env"]);
        let leftovers: Vec<_> = fs::read_dir(d.path().join("etc/app"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_failure_before_renaming_leaves_every_file() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        write_all(&root, &[planned("/etc/a", "old\n", 0o600)]).unwrap();
        // The second file's directory is a file: staging it fails after the
        // first is staged, and the first must stay as it was.
        fs::write(d.path().join("etc/blocker"), "x").unwrap();
        let err = write_all(
            &root,
            &[
                planned("/etc/a", "new\n", 0o600),
                planned("/etc/blocker/b", "b\n", 0o600),
            ],
        )
        .unwrap_err();
        assert!(err.to_string().contains("etc/blocker"), "{err}");
        assert_eq!(fs::read_to_string(d.path().join("etc/a")).unwrap(), "old\n");
        assert!(!d.path().join("etc/.a.imagectl-agent.tmp").exists());
    }

    #[test]
    fn a_stale_temporary_file_is_replaced() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        fs::create_dir_all(d.path().join("etc")).unwrap();
        fs::write(d.path().join("etc/.a.imagectl-agent.tmp"), "stale").unwrap();
        write_all(&root, &[planned("/etc/a", "fresh\n", 0o600)]).unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join("etc/a")).unwrap(),
            "fresh\n"
        );
        assert!(!d.path().join("etc/.a.imagectl-agent.tmp").exists());
    }

    #[test]
    fn a_stale_temporary_file_is_removed_even_when_nothing_changes() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        write_all(&root, &[planned("/etc/a", "same\n", 0o600)]).unwrap();
        fs::write(d.path().join("etc/.a.imagectl-agent.tmp"), "stale secret").unwrap();
        let changed = write_all(&root, &[planned("/etc/a", "same\n", 0o600)]).unwrap();
        assert!(changed.is_empty(), "{changed:?}");
        assert!(!d.path().join("etc/.a.imagectl-agent.tmp").exists());
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        // `/etc/b` is a directory with something in it: renaming a file
        // over it fails, after `/etc/a` was renamed and before `/etc/c`.
        fs::create_dir_all(d.path().join("etc/b/inside")).unwrap();
        let err = write_all(
            &root,
            &[
                planned("/etc/a", "a\n", 0o600),
                planned("/etc/b", "b\n", 0o600),
                planned("/etc/c", "c\n", 0o600),
            ],
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot rename into place `{}`: ",
                d.path().join("etc/b").display()
            )),
            "{err}"
        );
        assert_eq!(fs::read_to_string(d.path().join("etc/a")).unwrap(), "a\n");
        assert!(!d.path().join("etc/c").exists());
        let mut names: Vec<String> = fs::read_dir(d.path().join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn a_failed_write_one_leaves_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let report = d.path().join("boot.json");
        fs::create_dir_all(report.join("inside")).unwrap();
        let err = write_one(&report, b"{}\n", 0o644).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot rename into place `{}`: ",
                report.display()
            )),
            "{err}"
        );
        assert!(!d.path().join(".boot.json.imagectl-agent.tmp").exists());
    }
}
