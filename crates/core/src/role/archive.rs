//! What an `[[archives]]` tar may hold, checked entry by entry as roles
//! load: regular files, directories, symbolic links and hard links to files
//! packed earlier, all named inside the destination, none setuid, setgid or
//! writable by everyone. The provisioning script unpacks archives as root,
//! so anything else (a device node, a name climbing out with `..`, a hard
//! link to `/etc/shadow`) is refused here, before anything is built.
//!
//! The archive is read as a stream, gzip or not (told by its first bytes,
//! as GNU tar does), with bounded memory: only a hash of each name is kept.
//! Names are taken from every place a tar reader may take them (the header,
//! a GNU long name, a pax `path`) and each must pass, so that no reader
//! unpacks a name this check did not see.

use std::borrow::Cow;
use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, BufRead, BufReader, Read};

use tar::{EntryType, Header};

use super::load::{At, Loader};
use super::store::human_size;
use super::ROLES_DIR;

/// How many refused entries of one archive are reported; the rest are
/// counted. A hostile archive may hold millions.
const MAX_REPORTED: usize = 5;

/// The most entries (headers included) an archive may hold: a release with
/// its vendored gems holds tens of thousands. It bounds the names kept.
const MAX_ENTRIES: u64 = 1_000_000;

/// The most bytes an archive may unpack to. Releases unpack to a few GiB;
/// the bound keeps a compression bomb (a 1 GiB `.tar.gz` can inflate to a
/// terabyte) from keeping validation busy for hours.
pub(super) const MAX_UNPACKED_BYTES: u64 = 16 << 30;

/// The largest GNU long name or pax header read: they hold one name, or a
/// few attributes, and are read whole.
const MAX_EXTENSION_BYTES: u64 = 1 << 20;

/// What reading an archive found.
#[derive(Debug, Clone, Default)]
pub(super) struct Scan {
    /// The first [`MAX_REPORTED`] entries refused.
    pub(super) refused: Vec<Refused>,
    /// How many more were refused.
    pub(super) more: u64,
    /// Why reading stopped before the end, if it did.
    pub(super) stopped: Option<Stop>,
}

/// One entry that must not be unpacked: its name, as shown, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refused {
    pub(super) name: String,
    pub(super) why: Why,
}

/// Why an entry is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Why {
    Absolute,
    DotDot,
    BlockDevice,
    CharDevice,
    Fifo,
    Sparse,
    /// Another tar entry type, as shown.
    OtherType(String),
    /// A hard link to an absolute path or through `..`, as shown.
    LinkLeaves(String),
    /// A hard link to a name no earlier file has, as shown.
    LinkMissing(String),
    /// Inside an earlier symbolic link of the archive, as shown.
    UnderSymlink(String),
    /// Setuid or setgid bits: which, and the mode.
    SetId(&'static str, u32),
    /// Writable by everyone: the mode.
    WorldWritable(u32),
}

/// Why reading an archive stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stop {
    /// Not a tar archive, or a broken one: the reader's error.
    Unreadable(String),
    /// More than [`MAX_UNPACKED_BYTES`].
    TooLarge,
    /// More than [`MAX_ENTRIES`].
    TooMany,
}

impl Scan {
    /// Nothing refused, and read to the end.
    pub(super) fn is_clean(&self) -> bool {
        self.refused.is_empty() && self.stopped.is_none()
    }
}

/// Reads the archive `read` yields (gzip-compressed or not) to its end, or
/// to the first reason to stop.
pub(super) fn scan(read: impl Read) -> Scan {
    let mut walk = Walk::default();
    if let Err(e) = walk.run(read) {
        // The reader's errors may quote a name from the archive.
        let e = visible(&e.to_string(), MAX_ERROR_SHOWN);
        walk.scan.stopped = Some(Stop::Unreadable(e));
    }
    walk.scan
}

/// GNU long names and pax headers waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

/// The state of one pass over an archive.
#[derive(Default)]
struct Walk {
    scan: Scan,
    /// Hashes of the normalised names of earlier files and links: what a
    /// hard link may point to.
    files: HashSet<u64>,
    /// Hashes of the normalised names of earlier symbolic links.
    symlinks: HashSet<u64>,
    hasher: RandomState,
    entries: u64,
    bytes: u64,
    pending: Pending,
}

impl Walk {
    fn run(&mut self, read: impl Read) -> io::Result<()> {
        let mut input = BufReader::new(read);
        let gzip = input.fill_buf()?.starts_with(&[0x1f, 0x8b]);
        let input: Box<dyn Read> = if gzip {
            Box::new(flate2::bufread::MultiGzDecoder::new(input))
        } else {
            Box::new(input)
        };
        let mut archive = tar::Archive::new(input);
        for entry in archive.entries()?.raw(true) {
            if !self.entry(&mut entry?)? {
                break;
            }
        }
        Ok(())
    }

    /// Takes one raw entry; false when reading must stop.
    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> io::Result<bool> {
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(e.header().entry_size()?);
        if self.entries > MAX_ENTRIES {
            self.scan.stopped = Some(Stop::TooMany);
            return Ok(false);
        }
        if self.bytes > MAX_UNPACKED_BYTES {
            self.scan.stopped = Some(Stop::TooLarge);
            return Ok(false);
        }
        let slot = match e.header().entry_type().as_byte() {
            b'L' => &mut self.pending.long_name,
            b'K' => &mut self.pending.long_link,
            b'x' => &mut self.pending.pax,
            b'g' => {
                let data = extension(e)?;
                self.global(&data)?;
                return Ok(true);
            }
            _ => {
                let pending = std::mem::take(&mut self.pending);
                return self.member(e.header(), pending);
            }
        };
        if slot.is_some() {
            return Err(io::Error::other(
                "two extension headers of one kind describe the same entry",
            ));
        }
        *slot = Some(extension(e)?);
        Ok(true)
    }

    /// A pax global header: its `path` and `linkpath`, if it sets any, are
    /// names too.
    fn global(&mut self, data: &[u8]) -> io::Result<()> {
        for (key, value) in pax_fields(data)? {
            if key == b"path" || key == b"linkpath" {
                if let Some(why) = name_problem(value) {
                    self.refuse(value, why);
                }
            }
        }
        Ok(())
    }

    /// A file, directory, link or anything else, with the extension
    /// headers before it; false when reading must stop.
    fn member(&mut self, h: &Header, pending: Pending) -> io::Result<bool> {
        let pax = pending.pax.as_deref().map(pax_fields).transpose()?;
        let pax = pax.unwrap_or_default();
        let values = |key: &[u8]| -> Vec<Cow<'_, [u8]>> {
            pax.iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| Cow::Borrowed(*v))
                .collect()
        };
        let mut longer = values(b"path");
        longer.extend(pending.long_name.as_deref().map(long_value));
        let names = candidates(Some(h.path_bytes()), longer);
        let mut longer = values(b"linkpath");
        longer.extend(pending.long_link.as_deref().map(long_value));
        let links = candidates(h.link_name_bytes(), longer);
        let size = h.entry_size()?.to_string();
        if values(b"size").iter().any(|v| **v != *size.as_bytes()) {
            // Readers disagree on where the next entry starts: what this
            // check reads would not be what tar unpacks.
            return Err(io::Error::other(format!(
                "a pax header gives `{}` another size than its tar header",
                shown(names.first().map_or(&[][..], |n| n))
            )));
        }
        let sparse = pax.iter().any(|(k, _)| k.starts_with(b"GNU.sparse."));
        let kind = h.entry_type();
        match self.judge(h, kind, sparse, &names, &links)? {
            Some((name, why)) => self.refuse(&name, why),
            None => self.remember(kind, &names),
        }
        // An extended GNU sparse header is followed by blocks the raw
        // reader would take for headers: nothing after it can be read.
        Ok(!h
            .as_gnu()
            .is_some_and(|g| kind.is_gnu_sparse() && g.is_extended()))
    }

    /// The first reason to refuse an entry, with the name to show: its
    /// names, then its type, where a hard link points, whether it is
    /// inside a symbolic link, then its mode.
    fn judge(
        &self,
        h: &Header,
        kind: EntryType,
        sparse: bool,
        names: &[Cow<'_, [u8]>],
        links: &[Cow<'_, [u8]>],
    ) -> io::Result<Option<(Vec<u8>, Why)>> {
        let name = names.first().map_or(Vec::new(), |n| n.to_vec());
        for n in names {
            if let Some(why) = name_problem(n) {
                return Ok(Some((n.to_vec(), why)));
            }
        }
        if let Some(why) = type_problem(kind, sparse) {
            return Ok(Some((name, why)));
        }
        if kind.is_hard_link() {
            for l in links {
                if let Some(why) = self.link_problem(l) {
                    return Ok(Some((name, why)));
                }
            }
        }
        if let Some(link) = self.under_symlink(&name) {
            return Ok(Some((name, Why::UnderSymlink(link))));
        }
        let mode = h.mode()? & 0o7777;
        Ok(mode_problem(kind, mode).map(|why| (name, why)))
    }

    fn link_problem(&self, target: &[u8]) -> Option<Why> {
        if name_problem(target).is_some() {
            return Some(Why::LinkLeaves(shown(target)));
        }
        let known = self.files.contains(&self.hash(&normal(target)));
        (!known).then(|| Why::LinkMissing(shown(target)))
    }

    /// The earlier symbolic link `name` is inside, if any.
    fn under_symlink(&self, name: &[u8]) -> Option<String> {
        let n = normal(name);
        n.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| &n[..i])
            .find(|prefix| self.symlinks.contains(&self.hash(prefix)))
            .map(shown)
    }

    /// Keeps what later entries may refer to: files and links by name,
    /// symbolic links also as what nothing may be unpacked through.
    fn remember(&mut self, kind: EntryType, names: &[Cow<'_, [u8]>]) {
        if kind.is_dir() {
            return;
        }
        for n in names {
            let h = self.hash(&normal(n));
            self.files.insert(h);
            if kind.is_symlink() {
                self.symlinks.insert(h);
            }
        }
    }

    fn refuse(&mut self, name: &[u8], why: Why) {
        if self.scan.refused.len() < MAX_REPORTED {
            self.scan.refused.push(Refused {
                name: shown(name),
                why,
            });
        } else {
            self.scan.more += 1;
        }
    }

    fn hash(&self, name: &[u8]) -> u64 {
        self.hasher.hash_one(name)
    }
}

/// The data of a GNU long name or pax header, read whole within bounds.
fn extension<R: Read>(e: &mut tar::Entry<'_, R>) -> io::Result<Vec<u8>> {
    let size = e.header().entry_size()?;
    if size > MAX_EXTENSION_BYTES {
        return Err(io::Error::other(format!(
            "an extension header of {} (at most {})",
            human_size(size),
            human_size(MAX_EXTENSION_BYTES)
        )));
    }
    let mut data = Vec::new();
    e.take(MAX_EXTENSION_BYTES).read_to_end(&mut data)?;
    Ok(data)
}

/// The names a tar reader may take for an entry: the header's, and the
/// longer ones of GNU long names and pax headers, which GNU tar takes
/// first (the one to show). The header's is left out when it only holds
/// the start of a longer one, which is what a header keeps of a long name.
fn candidates<'a>(header: Option<Cow<'a, [u8]>>, longer: Vec<Cow<'a, [u8]>>) -> Vec<Cow<'a, [u8]>> {
    let keep = header.filter(|h| !longer.iter().any(|l| l.starts_with(h)));
    longer.into_iter().chain(keep).collect()
}

/// A GNU long name or link without its terminating NUL.
fn long_value(data: &[u8]) -> Cow<'_, [u8]> {
    Cow::Borrowed(data.strip_suffix(b"\0").unwrap_or(data))
}

/// The keys and values of a pax header, record by record (`LEN
/// key=value\n`, LEN counting the whole record, so that a value may hold a
/// newline), as GNU tar reads them. A malformed record makes the archive
/// unreadable: skipping it could skip a name.
fn pax_fields(mut data: &[u8]) -> io::Result<Vec<(&[u8], &[u8])>> {
    let bad = || io::Error::other("malformed pax header");
    let mut out = Vec::new();
    while data.iter().any(|b| *b != 0) {
        let space = data.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|n| n.parse().ok())
            .filter(|n| (space + 1..=data.len()).contains(n))
            .ok_or_else(bad)?;
        let record = data[space + 1..len].strip_suffix(b"\n").ok_or_else(bad)?;
        let equals = record.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        out.push((&record[..equals], &record[equals + 1..]));
        data = &data[len..];
    }
    Ok(out)
}

/// An absolute name, or one with a `..` component, leaves the destination.
fn name_problem(name: &[u8]) -> Option<Why> {
    if name.starts_with(b"/") {
        Some(Why::Absolute)
    } else if name.split(|b| *b == b'/').any(|c| c == b"..") {
        Some(Why::DotDot)
    } else {
        None
    }
}

/// Only regular files, directories and links may be unpacked.
fn type_problem(kind: EntryType, sparse: bool) -> Option<Why> {
    if kind.is_gnu_sparse() || sparse {
        return Some(Why::Sparse);
    }
    match kind.as_byte() {
        b'0' | b'\0' | b'7' | b'1' | b'2' | b'5' => None,
        b'3' => Some(Why::CharDevice),
        b'4' => Some(Why::BlockDevice),
        b'6' => Some(Why::Fifo),
        b => Some(Why::OtherType(shown(&[b]))),
    }
}

/// Setuid and setgid bits, then write access for everyone; a symbolic
/// link's mode means nothing.
fn mode_problem(kind: EntryType, mode: u32) -> Option<Why> {
    if kind.is_symlink() {
        return None;
    }
    match mode & 0o6000 {
        0o6000 => return Some(Why::SetId("the setuid and setgid bits", mode)),
        0o4000 => return Some(Why::SetId("the setuid bit", mode)),
        0o2000 => return Some(Why::SetId("the setgid bit", mode)),
        _ => {}
    }
    (mode & 0o002 != 0).then_some(Why::WorldWritable(mode))
}

/// A name as tar unpacks it: no empty or `.` components (`./app//x/` is
/// `app/x`).
fn normal(name: &[u8]) -> Vec<u8> {
    name.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect::<Vec<_>>()
        .join(&b'/')
}

/// The most characters of an entry name shown.
const MAX_NAME_SHOWN: usize = 100;

/// The most characters of a reader's error shown.
const MAX_ERROR_SHOWN: usize = 200;

/// A name for a message: lossy UTF-8, shown as [`visible`] makes it.
fn shown(name: &[u8]) -> String {
    visible(&String::from_utf8_lossy(name), MAX_NAME_SHOWN)
}

/// `text` with control characters escaped (printed raw, they would move
/// the cursor or vanish), cut to `max` characters with a `…`.
fn visible(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What to do about a name outside the destination.
const PACK_HELP: &str = "pack the release from inside its directory, as `tar -C DIR -czf release.tar.gz .` does, so that every name is relative and stays inside the destination";

/// What to do about a hard link that leads out of the archive.
const LINK_HELP: &str = "hard-link only to a file packed earlier in the same archive, by its name there, or pack copies instead (`tar --hard-dereference`)";

/// What to do about a device node.
const DEVICE_HELP: &str = "remove it from the archive: a release holds files, directories and links, and a device node would give its owner raw access to the instance's hardware";

impl Why {
    /// The message about entry `name` of `archive`, and what to do.
    fn describe(&self, archive: &str, name: &str) -> (String, &'static str) {
        let entry = format!("archive `{archive}` entry `{name}`");
        let holds = format!("archive `{archive}` holds");
        let link = format!("archive `{archive}` hard link `{name}` points to");
        match self {
            Why::Absolute => (format!("{entry} has an absolute name"), PACK_HELP),
            Why::DotDot => (format!("{entry} climbs out of its destination with `..`"), PACK_HELP),
            Why::BlockDevice => (format!("{holds} block device `{name}`"), DEVICE_HELP),
            Why::CharDevice => (format!("{holds} character device `{name}`"), DEVICE_HELP),
            Why::Fifo => (
                format!("{holds} FIFO `{name}`"),
                "remove it from the archive: a release holds files, directories and links; the application can make its FIFOs when it starts",
            ),
            Why::Sparse => (
                format!("{holds} `{name}` as a GNU sparse file"),
                "pack the release without `--sparse` (`-S`): a release holds plain files, directories and links",
            ),
            Why::OtherType(t) => (
                format!("{holds} `{name}`, an entry of tar type `{t}`"),
                "pack the release with plain `tar`, from regular files, directories and links only",
            ),
            Why::LinkLeaves(t) => (format!("{link} `{t}`, outside the archive"), LINK_HELP),
            Why::LinkMissing(t) => (
                format!("{link} `{t}`, which is not a file earlier in the archive"),
                LINK_HELP,
            ),
            Why::UnderSymlink(l) => (
                format!("{entry} is inside `{l}`, a symbolic link earlier in the archive"),
                "tar would unpack it through the link, wherever that leads: pack the file where the link points, or drop the link",
            ),
            Why::SetId(bits, mode) => (
                format!("{entry} has {bits} (mode {mode:04o})"),
                "clear setuid and setgid before packing (`chmod u-s,g-s`, or `tar --mode=u-s,g-s`): nothing in a release may run with more rights than its caller",
            ),
            Why::WorldWritable(mode) => (
                format!("{entry} is writable by everyone (mode {mode:04o})"),
                "clear the bit before packing (`chmod o-w`, or `tar --mode=o-w`): any process on the instance could change the release",
            ),
        }
    }
}

impl Stop {
    /// The message about `archive`, and what to do.
    fn describe(&self, archive: &str) -> (String, String) {
        let slim = "ship what makes this release so big as a Debian package, or slim the release";
        match self {
            Stop::Unreadable(e) => (
                format!("archive `{archive}` cannot be read as a tar archive: {e}"),
                format!("pack it again with `tar -czf` (`tar -cf` for a `.tar`), and check that `tar -tvf {archive}` lists it"),
            ),
            Stop::TooLarge => (
                format!(
                    "archive `{archive}` unpacks to more than {}",
                    human_size(MAX_UNPACKED_BYTES)
                ),
                format!("a release unpacks to a few GiB at most: {slim}"),
            ),
            Stop::TooMany => (
                format!("archive `{archive}` holds more than {MAX_ENTRIES} entries"),
                format!("a release holds tens of thousands of files at most: {slim}"),
            ),
        }
    }
}

impl Loader<'_> {
    /// Checks every entry of archive `source`, read once per run however
    /// many roles bake it, and reports each refused one at `source`: at
    /// most [`MAX_REPORTED`], then how many more. False when anything is
    /// refused.
    pub(super) fn check_archive_entries(&mut self, source: &At<String>) -> bool {
        let scan = match self.scans.get(&source.v) {
            Some(s) => s.clone(),
            None => {
                let s = match self.store.open(&source.v) {
                    Ok(read) => scan(read),
                    Err(why) => Scan {
                        stopped: Some(Stop::Unreadable(why.to_string())),
                        ..Scan::default()
                    },
                };
                self.scans.insert(source.v.clone(), s.clone());
                s
            }
        };
        let archive = format!("{ROLES_DIR}/{}", source.v);
        for r in &scan.refused {
            let (message, help) = r.why.describe(&archive, &r.name);
            let d = self.diag(source, message).help(help);
            self.diags.push(d);
        }
        if scan.more > 0 {
            let n = scan.more;
            let d = self
                .diag(
                    source,
                    format!(
                        "archive `{archive}` holds {n} more {} that cannot be unpacked safely",
                        if n == 1 { "entry" } else { "entries" }
                    ),
                )
                .help(format!("fix the ones above and run again, or list every entry with its type and mode with `tar -tvf {archive}`"));
            self.diags.push(d);
        }
        if let Some(stop) = &scan.stopped {
            let (message, help) = stop.describe(&archive);
            let d = self.diag(source, message).help(help);
            self.diags.push(d);
        }
        scan.is_clean()
    }
}
