//! Paths below the root resolved from directory handles, so that no
//! symbolic link another user could have made redirects a write or a read
//! of the agent: every component is opened relative to the directory
//! before it without following links, and a link is followed only when
//! only root could have made it, resolved here with `..` and absolute
//! targets kept inside the root.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// At most this many symbolic links on one path (the kernel's own bound).
pub const MAX_LINKS: usize = 40;

/// Why a path was not resolved. Paths are absolute paths in the image.
#[derive(Debug)]
pub enum Refused {
    /// A symbolic link on the way that a user other than root could have
    /// made or could replace.
    Link {
        /// The link.
        link: PathBuf,
        /// Why it is not followed.
        why: Untrusted,
    },
    /// More than [`MAX_LINKS`] links (a loop), the last at `at`.
    Loop {
        /// Where the walk was when it gave up.
        at: PathBuf,
    },
    /// A system call failed: a component is missing or not a directory,
    /// permission denied, ...
    Io {
        /// What was being done (`inspect`, `open directory`, ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Why a symbolic link is not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrusted {
    /// The link belongs to this uid.
    Owner(u32),
    /// The directory holding the link belongs to `uid`, or group or
    /// others can write it (`mode`).
    Dir {
        /// The directory's owner.
        uid: u32,
        /// Its permission bits.
        mode: u32,
    },
}

/// What `fstatat` says about a name, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Device and inode: which file this is.
    pub id: (u64, u64),
}

impl Stat {
    fn from_raw(st: &libc::stat) -> Stat {
        Stat {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: u64::try_from(st.st_size).unwrap_or(0),
            id: (st.st_dev, st.st_ino),
        }
    }

    fn kind(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.kind() == libc::S_IFREG
    }

    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.kind() == libc::S_IFDIR
    }

    /// A symbolic link.
    pub fn is_link(&self) -> bool {
        self.kind() == libc::S_IFLNK
    }
}

/// Whether a link or directory owned by `uid` can only have been made by
/// root: root itself, or the agent's own user when it runs as another
/// (tests, an unpacked image checked without root), whose own links cannot
/// redirect it anywhere it could not write anyway.
fn trusted(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn openat(dir: RawFd, name: &OsStr, flags: libc::c_int, mode: libc::c_uint) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: `c` is NUL-terminated and outlives the call.
    let fd = cvt(unsafe { libc::openat(dir, c.as_ptr(), flags | libc::O_CLOEXEC, mode) })?;
    // SAFETY: a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn lstatat(dir: RawFd, name: &OsStr) -> io::Result<Stat> {
    let c = cstr(name)?;
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `c` is NUL-terminated, `st` is large enough and is read only
    // once the call has filled it in.
    cvt(unsafe { libc::fstatat(dir, c.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW) })?;
    // SAFETY: filled in by a successful fstatat.
    Ok(Stat::from_raw(unsafe { st.assume_init_ref() }))
}

fn fstat(fd: RawFd) -> io::Result<Stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` is large enough and read only once filled in.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: filled in by a successful fstat.
    Ok(Stat::from_raw(unsafe { st.assume_init_ref() }))
}

fn readlinkat(dir: RawFd, name: &OsStr) -> io::Result<OsString> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: `buf` is writable for its whole length.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    if n >= buf.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    buf.truncate(n);
    Ok(OsString::from_vec(buf))
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The components of `p`: whether it is absolute, and its names in order
/// (`..` kept, `.` dropped).
fn parts(p: &Path) -> (bool, VecDeque<OsString>) {
    let mut absolute = false;
    let mut names = VecDeque::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => absolute = true,
            Component::CurDir => {}
            Component::ParentDir => names.push_back(OsString::from("..")),
            Component::Normal(n) => names.push_back(n.to_os_string()),
        }
    }
    (absolute, names)
}

/// The root directory, as a handle every path is resolved from.
#[derive(Debug)]
pub struct Tree {
    root: OwnedFd,
}

impl Tree {
    /// Opens `dir` (`/` on an instance, an unpacked image with `--root`).
    /// The root itself is the operator's choice: a link in its own path is
    /// followed.
    pub fn open(dir: &Path) -> io::Result<Tree> {
        let c = cstr(dir.as_os_str())?;
        // SAFETY: `c` is NUL-terminated and outlives the call.
        let fd = cvt(unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })?;
        // SAFETY: a new descriptor that nothing else owns.
        Ok(Tree {
            root: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// The directory holding `path` (absolute, in the image) and the name
    /// of the file in it, which is not looked at. Missing directories on
    /// the way are created (mode 0755, owned by this process) when
    /// `create`.
    pub fn parent(&self, path: &Path, create: bool) -> Result<(Dir, OsString), Refused> {
        let (_, mut names) = parts(path);
        let Some(name) = names.pop_back().filter(|n| n != "..") else {
            return Err(Refused::Io {
                action: "resolve",
                path: path.to_path_buf(),
                source: io::Error::from_raw_os_error(libc::EISDIR),
            });
        };
        let mut walk = Walk::new(self, create);
        walk.walk(names)?;
        Ok((walk.into_dir()?, name))
    }

    /// Opens the regular file at `path` (absolute, in the image) for
    /// reading, following only trusted links, the last component's
    /// included.
    pub fn open_file(&self, path: &Path) -> Result<File, Refused> {
        let (_, mut names) = parts(path);
        let mut walk = Walk::new(self, false);
        loop {
            let Some(name) = names.pop_back().filter(|n| n != "..") else {
                return Err(Refused::Io {
                    action: "read",
                    path: walk.here.clone(),
                    source: io::Error::from_raw_os_error(libc::EISDIR),
                });
            };
            walk.walk(names)?;
            let at = walk.here.join(&name);
            let io_err = |source| Refused::Io {
                action: "read",
                path: at.clone(),
                source,
            };
            let st = lstatat(walk.top(), &name).map_err(io_err)?;
            if st.is_link() {
                names = walk.follow(&at, &name, &st)?;
                continue;
            }
            let fd = openat(
                walk.top(),
                &name,
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
                0,
            )
            .map_err(io_err)?;
            if !fstat(fd.as_raw_fd()).map_err(io_err)?.is_file() {
                return Err(io_err(io::Error::other("not a regular file")));
            }
            return Ok(File::from(fd));
        }
    }
}

/// A resolution under way: the directories walked into (below the root,
/// outermost first: `..` pops one and never goes above the root) and the
/// path they make in the image.
struct Walk<'a> {
    tree: &'a Tree,
    dirs: Vec<OwnedFd>,
    here: PathBuf,
    links: usize,
    create: bool,
}

impl<'a> Walk<'a> {
    fn new(tree: &'a Tree, create: bool) -> Self {
        Walk {
            tree,
            dirs: Vec::new(),
            here: PathBuf::from("/"),
            links: 0,
            create,
        }
    }

    fn top(&self) -> RawFd {
        self.dirs.last().unwrap_or(&self.tree.root).as_raw_fd()
    }

    /// Walks into each of `todo` in turn, each a directory, a trusted link
    /// to one, or (when creating) missing.
    fn walk(&mut self, mut todo: VecDeque<OsString>) -> Result<(), Refused> {
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                if self.dirs.pop().is_some() {
                    self.here.pop();
                }
                continue;
            }
            let at = self.here.join(&name);
            let io_err = |action| {
                let path = at.clone();
                move |source| Refused::Io {
                    action,
                    path,
                    source,
                }
            };
            let st = match lstatat(self.top(), &name) {
                Ok(st) => st,
                Err(e) if e.kind() == io::ErrorKind::NotFound && self.create => {
                    if !self.mkdir(&name, &at)? {
                        todo.push_front(name);
                    }
                    continue;
                }
                Err(e) => return Err(io_err("inspect")(e)),
            };
            if st.is_link() {
                let target = self.follow(&at, &name, &st)?;
                for n in target.into_iter().rev() {
                    todo.push_front(n);
                }
            } else if st.is_dir() {
                let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW;
                match openat(self.top(), &name, flags, 0) {
                    Ok(fd) => {
                        self.dirs.push(fd);
                        self.here = at;
                    }
                    // Replaced since it was looked at: look again.
                    Err(e) if matches!(errno(&e), libc::ENOTDIR | libc::ELOOP | libc::ENOENT) => {
                        self.count(&at)?;
                        todo.push_front(name);
                    }
                    Err(e) => return Err(io_err("open directory")(e)),
                }
            } else {
                let e = io::Error::from_raw_os_error(libc::ENOTDIR);
                return Err(io_err("open directory")(e));
            }
        }
        Ok(())
    }

    /// Creates `name` (mode 0755 whatever the umask) and walks into it;
    /// `false` when something else took its place first, to be looked at
    /// again.
    fn mkdir(&mut self, name: &OsStr, at: &Path) -> Result<bool, Refused> {
        let io_err = |action| {
            let path = at.to_path_buf();
            move |source| Refused::Io {
                action,
                path,
                source,
            }
        };
        let c = cstr(name).map_err(io_err("create directory"))?;
        // SAFETY: `c` is NUL-terminated and outlives the call.
        match cvt(unsafe { libc::mkdirat(self.top(), c.as_ptr(), 0o755) }) {
            Ok(_) => {}
            Err(e) if errno(&e) == libc::EEXIST => {
                self.count(at)?;
                return Ok(false);
            }
            Err(e) => return Err(io_err("create directory")(e)),
        }
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        let fd = match openat(self.top(), name, flags, 0) {
            Ok(fd) => fd,
            Err(e) if matches!(errno(&e), libc::ENOTDIR | libc::ELOOP | libc::ENOENT) => {
                self.count(at)?;
                return Ok(false);
            }
            Err(e) => return Err(io_err("open directory")(e)),
        };
        let dir = File::from(fd);
        dir.set_permissions(std::fs::Permissions::from_mode(0o755))
            .map_err(io_err("change mode of"))?;
        self.dirs.push(OwnedFd::from(dir));
        self.here = at.to_path_buf();
        Ok(true)
    }

    /// The components of the target of the link `name` (at `at`) in the
    /// current directory, when root made it in a directory only root can
    /// write; an absolute target restarts from the root.
    fn follow(
        &mut self,
        at: &Path,
        name: &OsStr,
        st: &Stat,
    ) -> Result<VecDeque<OsString>, Refused> {
        if !trusted(st.uid) {
            return Err(Refused::Link {
                link: at.to_path_buf(),
                why: Untrusted::Owner(st.uid),
            });
        }
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| Refused::Io {
                action,
                path,
                source,
            }
        };
        let dir = fstat(self.top()).map_err(io_err("inspect", &self.here))?;
        if !trusted(dir.uid) || dir.mode & 0o022 != 0 {
            return Err(Refused::Link {
                link: at.to_path_buf(),
                why: Untrusted::Dir {
                    uid: dir.uid,
                    mode: dir.mode & 0o7777,
                },
            });
        }
        self.count(at)?;
        let target = readlinkat(self.top(), name).map_err(io_err("read link", at))?;
        let (absolute, names) = parts(Path::new(&target));
        if absolute {
            self.dirs.clear();
            self.here = PathBuf::from("/");
        }
        Ok(names)
    }

    fn count(&mut self, at: &Path) -> Result<(), Refused> {
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(Refused::Loop {
                at: at.to_path_buf(),
            });
        }
        Ok(())
    }

    fn into_dir(mut self) -> Result<Dir, Refused> {
        let fd = match self.dirs.pop() {
            Some(fd) => fd,
            None => self.tree.root.try_clone().map_err(|source| Refused::Io {
                action: "open directory",
                path: self.here.clone(),
                source,
            })?,
        };
        Ok(Dir {
            fd,
            path: self.here,
        })
    }
}

/// A directory resolved below the root: files in it are created, read,
/// renamed and removed by name relative to it, never by path.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Its path in the image, as resolved (links replaced by their
    /// targets).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which directory this is (device and inode).
    pub fn id(&self) -> io::Result<(u64, u64)> {
        Ok(fstat(self.fd.as_raw_fd())?.id)
    }

    /// What `name` is, without following a link; `None` when missing.
    pub fn lstat(&self, name: &OsStr) -> io::Result<Option<Stat>> {
        match lstatat(self.fd.as_raw_fd(), name) {
            Ok(st) => Ok(Some(st)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens `name` for reading; a link there is not followed (`ELOOP`),
    /// nor does a FIFO block.
    pub fn open_read(&self, name: &OsStr) -> io::Result<File> {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK;
        openat(self.fd.as_raw_fd(), name, flags, 0).map(File::from)
    }

    /// Creates `name`, which must not exist, not even as a link.
    pub fn create_new(&self, name: &OsStr, mode: u32) -> io::Result<File> {
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
        openat(self.fd.as_raw_fd(), name, flags, mode).map(File::from)
    }

    /// Removes `name` (a link itself, not its target).
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        let c = cstr(name)?;
        // SAFETY: `c` is NUL-terminated and outlives the call.
        cvt(unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) }).map(drop)
    }

    /// Renames `from` to `to` in this directory, replacing whatever `to`
    /// is (a link at `to` is replaced, not followed).
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> io::Result<()> {
        let (from, to) = (cstr(from)?, cstr(to)?);
        let fd = self.fd.as_raw_fd();
        // SAFETY: both strings are NUL-terminated and outlive the call.
        cvt(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) }).map(drop)
    }

    /// Flushes the directory's entries to disk.
    pub fn sync(&self) -> io::Result<()> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        File::from(openat(self.fd.as_raw_fd(), OsStr::new("."), flags, 0)?).sync_all()
    }
}
