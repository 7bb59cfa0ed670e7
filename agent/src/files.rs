//! Files on disk: paths below `--root`, user and group names from the
//! image's own `/etc/passwd` and `/etc/group`, and writing a set of files
//! all-or-nothing (temporary file in the same directory, fsync, rename),
//! every one through a directory handle from `safepath`, so that no link
//! another user planted redirects a write or a read.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::safepath::{Dir, Refused, Tree, Untrusted, MAX_LINKS};

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
    /// A symbolic link on the way to a file that a user other than root
    /// could have made or replaced: nothing is written (or read) through
    /// it.
    #[error("`{dest}` is not {verb}: `{link}` is a symbolic link {why}, so a user other than root could have made or replaced it; the agent follows only links that root made in directories only root can write")]
    UntrustedLink {
        /// The file written or read.
        dest: String,
        /// "written" or "read".
        verb: &'static str,
        /// The link.
        link: String,
        /// Who owns it, or the directory holding it.
        why: String,
    },
    /// Too many symbolic links on the way to a file (a loop).
    #[error("`{dest}` is not {verb}: the way to it goes through more than {MAX_LINKS} symbolic links (a loop?), the last at `{at}`")]
    TooManyLinks {
        /// The file written or read.
        dest: String,
        /// "written" or "read".
        verb: &'static str,
        /// Where the walk gave up.
        at: String,
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

    /// `abs` (an absolute path in the image) below this root, as shown in
    /// messages. Refuses relative paths and `..`. Only a name: files are
    /// opened through [`Root::tree`], which resolves links inside the root
    /// and follows only those root made.
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

    /// `image` (an absolute path in the image, as a resolution found it)
    /// as shown in messages: below this root.
    pub fn shown(&self, image: &Path) -> String {
        self.0
            .join(image.strip_prefix("/").unwrap_or(image))
            .display()
            .to_string()
    }

    /// A handle on this root, to resolve paths in (`safepath`).
    pub fn tree(&self) -> Result<Tree, FileError> {
        Tree::open(&self.0).map_err(io_err("open root directory", &self.0))
    }

    /// A refused resolution of `dest` as an error: what is not `verb`
    /// ("written", "read"), and why.
    pub fn refused(&self, dest: &str, verb: &'static str, r: Refused) -> FileError {
        match r {
            Refused::Link { link, why } => {
                let why = match why {
                    Untrusted::Owner(uid) => format!("owned by uid {uid}"),
                    Untrusted::Dir { uid, mode } => {
                        let dir = self.shown(link.parent().unwrap_or(Path::new("/")));
                        if mode & 0o022 != 0 {
                            format!("in `{dir}`, a directory that group or others can write (mode {mode:04o})")
                        } else {
                            format!("in `{dir}`, a directory owned by uid {uid}")
                        }
                    }
                };
                FileError::UntrustedLink {
                    dest: dest.to_string(),
                    verb,
                    link: self.shown(&link),
                    why,
                }
            }
            Refused::Loop { at } => FileError::TooManyLinks {
                dest: dest.to_string(),
                verb,
                at: self.shown(&at),
            },
            Refused::Io {
                action,
                path,
                source,
            } => FileError::Io {
                action,
                path: self.shown(&path),
                source,
            },
        }
    }
}

/// Reads the file at `abs` (an absolute path in the image) below `root`,
/// through trusted links only, none of them leading out of the root. The
/// outer error is a refusal (a link another user could have planted, a
/// loop); the inner one what the system said (a missing file, ...), for
/// the caller to word.
pub fn read(root: &Root, abs: &str) -> Result<io::Result<Vec<u8>>, FileError> {
    let shown = root.path(abs)?.display().to_string();
    let tree = root.tree()?;
    let mut file = match tree.open_file(Path::new(abs)) {
        Ok(f) => f,
        Err(Refused::Io { source, .. }) => return Ok(Err(source)),
        Err(r) => return Err(root.refused(&shown, "read", r)),
    };
    let mut bytes = Vec::new();
    Ok(file.read_to_end(&mut bytes).map(|_| bytes))
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
        let (passwd, users) = read_db(root, "/etc/passwd")?;
        let (group, groups) = read_db(root, "/etc/group")?;
        Ok(Accounts {
            users,
            groups,
            passwd,
            group,
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

/// The database at `abs` (shown as where it is), names to ids.
fn read_db(root: &Root, abs: &str) -> Result<(String, HashMap<String, u32>), FileError> {
    let path = root.path(abs)?;
    let shown = path.display().to_string();
    let bytes = match read(root, abs)? {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((shown, HashMap::new())),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let text = String::from_utf8_lossy(&bytes);
    let db = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            let id = f.next()?.parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect();
    Ok((shown, db))
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

fn io_at(action: &'static str, shown: &str) -> impl FnOnce(io::Error) -> FileError {
    let path = shown.to_string();
    move |source| FileError::Io {
        action,
        path,
        source,
    }
}

/// Whether `name` in `dir` already holds exactly `p` (contents, mode and
/// owner). A link there, or anything but a regular file, is a change: it
/// is replaced, never followed.
fn unchanged(dir: &Dir, name: &OsStr, p: &Planned, shown: &str) -> Result<bool, FileError> {
    let Some(st) = dir.lstat(name).map_err(io_at("inspect", shown))? else {
        return Ok(false);
    };
    let len = p.contents.len() as u64;
    if !st.is_file()
        || st.size != len
        || st.mode & 0o7777 != p.mode
        || st.uid != p.uid
        || st.gid != p.gid
    {
        return Ok(false);
    }
    let f = match dir.open_read(name) {
        Ok(f) => f,
        // Replaced by a link, or removed, since it was looked at.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOENT)) => return Ok(false),
        Err(e) => return Err(io_at("read", shown)(e)),
    };
    let meta = f.metadata().map_err(io_at("inspect", shown))?;
    if (meta.dev(), meta.ino()) != st.id {
        return Ok(false);
    }
    let mut current = Vec::with_capacity(p.contents.len());
    f.take(len + 1)
        .read_to_end(&mut current)
        .map_err(io_at("read", shown))?;
    Ok(current == p.contents)
}

/// The temporary file for `name`: a hidden sibling, so the rename stays on
/// one filesystem. A stale one from a crash is replaced on the next boot.
fn temp_name(name: &OsStr) -> OsString {
    let mut tmp = OsString::from(".");
    tmp.push(name);
    tmp.push(".imagectl-agent.tmp");
    tmp
}

/// One file written to its temporary name and not yet renamed.
struct Staged<'a> {
    /// The directory it goes in, as resolved.
    dir: Dir,
    /// Its name there.
    name: OsString,
    /// The temporary file's name there.
    tmp: OsString,
    /// The destination as shown in messages.
    shown: String,
    p: &'a Planned,
}

/// Writes every file in `plan` below `root`, all or nothing as far as a
/// filesystem allows: each file is first written in full to a temporary
/// sibling (fsync, mode, owner); only when every one is ready are they
/// renamed over their destinations, and the directories fsynced. A failure
/// before the renames removes the temporary files and leaves every previous
/// file as it was. Files that already hold exactly their contents, mode and
/// owner are left alone. Returns the destinations that changed.
///
/// Links: each destination's directory is resolved from a handle on the
/// root (`safepath`): a symbolic link on the way is followed only when
/// root made it in a directory only root can write, and its target stays
/// below the root; any other link refuses the file, and the whole plan,
/// before anything is written, not even a directory (every destination is
/// checked before the first is staged, and again while staged). The
/// destination's own name is never
/// followed: the temporary file is created with `O_EXCL|O_NOFOLLOW` and
/// renamed over whatever is there, a link included.
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
    let tree = root.tree()?;
    check_links(root, &tree, plan)?;
    let mut staged: Vec<Staged> = Vec::new();
    if let Err(e) = stage(root, &tree, plan, &mut staged) {
        remove_temps(&staged);
        return Err(e);
    }
    crate::failpoint::hit("before-rename");
    let mut changed = Vec::new();
    for (i, s) in staged.iter().enumerate() {
        if i == 1 {
            crate::failpoint::hit("between-renames");
        }
        if let Err(e) = s.dir.rename(&s.tmp, &s.name) {
            // The files already renamed stay new; the rest keep their old
            // contents, and their temporary files must not linger.
            remove_temps(&staged[i..]);
            return Err(io_at("rename into place", &s.shown)(e));
        }
        changed.push(s.p.dest.clone());
    }
    let mut synced = Vec::new();
    for s in &staged {
        let shown = root.shown(s.dir.path());
        let id = s.dir.id().map_err(io_at("fsync directory", &shown))?;
        if !synced.contains(&id) {
            s.dir.sync().map_err(io_at("fsync directory", &shown))?;
            synced.push(id);
        }
    }
    Ok(changed)
}

/// Refuses `plan` when the way to a destination goes through a link
/// another user could have planted, before any directory is created: a
/// missing directory (to be created) or any other failure is left to the
/// staging, which resolves each destination again.
fn check_links(root: &Root, tree: &Tree, plan: &[Planned]) -> Result<(), FileError> {
    for p in plan {
        let shown = root.path(&p.dest)?.display().to_string();
        match tree.parent(Path::new(&p.dest), false) {
            Ok(_) | Err(Refused::Io { .. }) => {}
            Err(r) => return Err(root.refused(&shown, "written", r)),
        }
    }
    Ok(())
}

fn remove_temps(staged: &[Staged]) {
    for s in staged {
        let _ = s.dir.remove(&s.tmp);
    }
}

fn stage<'a>(
    root: &Root,
    tree: &Tree,
    plan: &'a [Planned],
    staged: &mut Vec<Staged<'a>>,
) -> Result<(), FileError> {
    for p in plan {
        let shown = root.path(&p.dest)?.display().to_string();
        let (dir, name) = tree
            .parent(Path::new(&p.dest), true)
            .map_err(|r| root.refused(&shown, "written", r))?;
        // A temporary file left by a crash goes first, even when the
        // destination needs no change: it may hold a secret, readable by
        // root only but still not meant to stay.
        let tmp = temp_name(&name);
        match dir.remove(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(io_at("remove stale", &root.shown(&dir.path().join(&tmp)))(
                    e,
                ));
            }
        }
        if unchanged(&dir, &name, p, &shown)? {
            continue;
        }
        let err = |action: &'static str| {
            let dest = shown.clone();
            let tmp = tmp.to_string_lossy().into_owned();
            move |source| FileError::Stage {
                action,
                dest,
                tmp,
                source,
            }
        };
        // Created new (O_EXCL|O_NOFOLLOW: a planted link is refused, not
        // followed) and 0600; it gets its final mode only once written and
        // owned, so a secret is never readable by anyone else, even
        // briefly.
        let mut f = dir.create_new(&tmp, 0o600).map_err(err("create"))?;
        staged.push(Staged {
            dir,
            name,
            tmp: tmp.clone(),
            shown: shown.clone(),
            p,
        });
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

/// Writes one file atomically (temporary sibling, fsync, rename), creating
/// its directory; for the boot report. `abs` (in the image) is resolved
/// below `root` as every destination of [`write_all`] is.
pub fn write_one(root: &Root, abs: &str, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let shown = root.path(abs)?.display().to_string();
    let tree = root.tree()?;
    let (dir, name) = tree
        .parent(Path::new(abs), true)
        .map_err(|r| root.refused(&shown, "written", r))?;
    let tmp = temp_name(&name);
    let tmp_shown = root.shown(&dir.path().join(&tmp));
    let _ = dir.remove(&tmp);
    let mut f = dir
        .create_new(&tmp, mode)
        .map_err(io_at("create", &tmp_shown))?;
    let written = f
        .write_all(contents)
        .map_err(io_at("write", &tmp_shown))
        .and_then(|()| {
            f.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(io_at("change mode of", &tmp_shown))
        })
        .and_then(|()| f.sync_all().map_err(io_at("fsync", &tmp_shown)))
        .and_then(|()| {
            dir.rename(&tmp, &name)
                .map_err(io_at("rename into place", &shown))
        });
    if written.is_err() {
        let _ = dir.remove(&tmp);
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
        let err = write_one(&Root::new(d.path()), "/boot.json", b"{}\n", 0o644).unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot rename into place `{}`: ",
                report.display()
            )),
            "{err}"
        );
        assert!(!d.path().join(".boot.json.imagectl-agent.tmp").exists());
    }

    // Links on the way to a destination.

    use std::os::unix::fs::{lchown, symlink};

    /// An unprivileged uid and gid, for links and directories "a user"
    /// made.
    const USER: u32 = 1000;

    fn is_root() -> bool {
        uid() == 0
    }

    /// A test root at `<tmp>/root` with `<tmp>/outside/victim`, a file
    /// the agent must never touch.
    fn root_and_victim() -> (tempfile::TempDir, Root, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("root/etc")).unwrap();
        fs::create_dir_all(d.path().join("outside")).unwrap();
        fs::write(d.path().join("outside/victim"), "victim\n").unwrap();
        let root = Root::new(d.path().join("root"));
        let outside = d.path().join("outside");
        (d, root, outside)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    fn assert_victim_untouched(outside: &Path) {
        assert_eq!(names(outside), ["victim"]);
        assert_eq!(
            fs::read_to_string(outside.join("victim")).unwrap(),
            "victim\n"
        );
    }

    const TAIL: &str = "so a user other than root could have made or replaced it; \
                        the agent follows only links that root made in directories only root can write";

    #[test]
    fn a_link_a_user_planted_in_its_own_directory_is_refused_and_nothing_is_written() {
        if !is_root() {
            eprintln!("skipped: making a link owned by another user needs root");
            return;
        }
        let (_d, root, outside) = root_and_victim();
        // /srv/learn belongs to the user, who replaced shared/config with
        // a link to a directory of root's.
        let learn = root.dir().join("srv/learn");
        fs::create_dir_all(learn.join("shared")).unwrap();
        std::os::unix::fs::chown(&learn, Some(USER), Some(USER)).unwrap();
        std::os::unix::fs::chown(learn.join("shared"), Some(USER), Some(USER)).unwrap();
        let link = learn.join("shared/config");
        symlink(&outside, &link).unwrap();
        lchown(&link, Some(USER), Some(USER)).unwrap();

        let plan = [
            planned("/etc/app/first.conf", "first\n", 0o644),
            planned(
                "/srv/learn/shared/config/victim",
                "password: s3cret\n",
                0o600,
            ),
        ];
        let err = write_all(&root, &plan).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "`{}` is not written: `{}` is a symbolic link owned by uid {USER}, {TAIL}",
                link.join("victim").display(),
                link.display()
            )
        );
        assert!(!err.contains("s3cret"), "{err}");
        assert_victim_untouched(&outside);
        // Nothing at all: not the other file, not even its directory.
        assert_eq!(names(&root.dir().join("etc")), Vec::<String>::new());

        // A link root made, but in the user's directory: the user could
        // have put it there (renamed from elsewhere) or replaced it.
        fs::remove_file(&link).unwrap();
        symlink(&outside, &link).unwrap();
        let err = write_all(&root, &plan[1..]).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "`{}` is not written: `{}` is a symbolic link in `{}`, a directory owned by uid {USER}, {TAIL}",
                link.join("victim").display(),
                link.display(),
                learn.join("shared").display()
            )
        );
        assert_victim_untouched(&outside);
    }

    #[test]
    fn a_link_in_a_directory_others_can_write_is_refused() {
        let (_d, root, outside) = root_and_victim();
        let shared = root.dir().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o1777)).unwrap();
        symlink(&outside, shared.join("cfg")).unwrap();
        let err = write_all(&root, &[planned("/shared/cfg/victim", "new\n", 0o600)])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "`{}` is not written: `{}` is a symbolic link in `{}`, a directory that group or others can write (mode 1777), {TAIL}",
                shared.join("cfg/victim").display(),
                shared.join("cfg").display(),
                shared.display()
            )
        );
        assert_victim_untouched(&outside);
    }

    #[test]
    fn a_link_root_made_in_a_directory_only_root_writes_is_followed() {
        let (_d, root, _outside) = root_and_victim();
        // Debian's `/lib -> usr/lib`: relative, in a directory only root
        // (here: only the test's user) can write.
        fs::create_dir_all(root.dir().join("usr/lib")).unwrap();
        symlink("usr/lib", root.dir().join("lib")).unwrap();
        let changed = write_all(&root, &[planned("/lib/app/a.conf", "a\n", 0o644)]).unwrap();
        assert_eq!(changed, ["/lib/app/a.conf"]);
        assert_eq!(
            fs::read_to_string(root.dir().join("usr/lib/app/a.conf")).unwrap(),
            "a\n"
        );
        assert!(fs::symlink_metadata(root.dir().join("lib"))
            .unwrap()
            .file_type()
            .is_symlink());
        // Unchanged the second time, through the link as well.
        let again = write_all(&root, &[planned("/lib/app/a.conf", "a\n", 0o644)]).unwrap();
        assert!(again.is_empty(), "{again:?}");
    }

    #[test]
    fn an_absolute_link_of_the_image_resolves_inside_the_root() {
        let (_d, root, _outside) = root_and_victim();
        // The image's `/var/run -> /run`: with `--root`, the image's /run,
        // never the host's.
        fs::create_dir_all(root.dir().join("var")).unwrap();
        fs::create_dir_all(root.dir().join("run")).unwrap();
        symlink("/run", root.dir().join("var/run")).unwrap();
        let name = format!("imagectl-agent-unit-{}", std::process::id());
        let dest = format!("/var/run/{name}/a.conf");
        write_all(&root, &[planned(&dest, "a\n", 0o644)]).unwrap();
        assert_eq!(
            fs::read_to_string(root.dir().join(format!("run/{name}/a.conf"))).unwrap(),
            "a\n"
        );
        assert!(!Path::new("/run").join(&name).exists());

        // The report too.
        let report = format!("/var/run/{name}/boot.json");
        write_one(&root, &report, b"{}\n", 0o644).unwrap();
        assert_eq!(
            fs::read(root.dir().join(format!("run/{name}/boot.json"))).unwrap(),
            b"{}\n"
        );
        assert!(!Path::new("/run").join(&name).exists());
    }

    #[test]
    fn dot_dot_in_a_link_never_climbs_above_the_root() {
        let (d, root, _outside) = root_and_victim();
        // Followed from the host, `etc/up` would be `<tmp>/escaped`.
        symlink("../../escaped", root.dir().join("etc/up")).unwrap();
        write_all(&root, &[planned("/etc/up/x", "x\n", 0o644)]).unwrap();
        assert_eq!(
            fs::read_to_string(root.dir().join("escaped/x")).unwrap(),
            "x\n"
        );
        assert!(!d.path().join("escaped").exists());
        // An absolute one with `..` above `/` stays in too.
        symlink("/../../../escaped2", root.dir().join("etc/abs")).unwrap();
        write_all(&root, &[planned("/etc/abs/y", "y\n", 0o644)]).unwrap();
        assert!(root.dir().join("escaped2/y").is_file());
        assert!(!d.path().join("escaped2").exists());
    }

    #[test]
    fn a_loop_of_links_is_refused() {
        let (_d, root, _outside) = root_and_victim();
        symlink("b", root.dir().join("etc/a")).unwrap();
        symlink("a", root.dir().join("etc/b")).unwrap();
        let err = write_all(&root, &[planned("/etc/a/x", "x\n", 0o644)])
            .unwrap_err()
            .to_string();
        let prefix = format!(
            "`{}` is not written: the way to it goes through more than 40 symbolic links (a loop?), the last at `{}",
            root.dir().join("etc/a/x").display(),
            root.dir().join("etc").display()
        );
        assert!(err.starts_with(&prefix), "{err}");
        assert_eq!(names(&root.dir().join("etc")), ["a", "b"]);
    }

    #[test]
    fn a_link_at_the_destination_is_replaced_not_followed() {
        let (_d, root, outside) = root_and_victim();
        // Even a link root made: the destination's own name is never
        // followed.
        let dest = root.dir().join("etc/app.conf");
        symlink(outside.join("victim"), &dest).unwrap();
        let changed = write_all(&root, &[planned("/etc/app.conf", "victim\n", 0o644)]).unwrap();
        // Same contents as the link's target, but a link is a change.
        assert_eq!(changed, ["/etc/app.conf"]);
        let meta = fs::symlink_metadata(&dest).unwrap();
        assert!(meta.is_file());
        assert_eq!(fs::read_to_string(&dest).unwrap(), "victim\n");
        assert_victim_untouched(&outside);
        // The report's way too.
        let report = root.dir().join("etc/boot.json");
        symlink(outside.join("victim"), &report).unwrap();
        write_one(&root, "/etc/boot.json", b"{}\n", 0o644).unwrap();
        assert!(fs::symlink_metadata(&report).unwrap().is_file());
        assert_victim_untouched(&outside);
    }

    #[test]
    fn a_stale_temporary_link_is_removed_not_followed() {
        let (_d, root, outside) = root_and_victim();
        symlink(
            outside.join("victim"),
            root.dir().join("etc/.a.imagectl-agent.tmp"),
        )
        .unwrap();
        write_all(&root, &[planned("/etc/a", "a\n", 0o600)]).unwrap();
        assert_eq!(names(&root.dir().join("etc")), ["a"]);
        assert_victim_untouched(&outside);
    }

    #[test]
    fn the_image_databases_are_read_inside_the_root() {
        let (_d, root, _outside) = root_and_victim();
        // `/etc/passwd -> /usr/lib/passwd`: the image's file, not the
        // host's (where there is none).
        fs::create_dir_all(root.dir().join("usr/lib")).unwrap();
        fs::write(
            root.dir().join("usr/lib/passwd"),
            "learn:x:4321:4321::/srv/learn:/usr/sbin/nologin\n",
        )
        .unwrap();
        symlink("/usr/lib/passwd", root.dir().join("etc/passwd")).unwrap();
        let a = Accounts::load(&root).unwrap();
        assert_eq!(a.uid("learn", "/f").unwrap(), 4321);
    }

    #[test]
    fn a_planted_link_to_an_image_database_is_refused() {
        if !is_root() {
            eprintln!("skipped: making a link owned by another user needs root");
            return;
        }
        let (_d, root, outside) = root_and_victim();
        let link = root.dir().join("etc/group");
        symlink(outside.join("victim"), &link).unwrap();
        lchown(&link, Some(USER), Some(USER)).unwrap();
        let err = Accounts::load(&root).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "`{}` is not read: `{}` is a symbolic link owned by uid {USER}, {TAIL}",
                link.display(),
                link.display()
            )
        );
    }
}
