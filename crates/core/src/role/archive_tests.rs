//! Hostile archives, built here entry by entry (names and types no honest
//! `tar` writes), as `.tar` and `.tar.gz`: each is refused with its own
//! message, and what releases hold stays accepted.

use std::io::Write;

use tar::{EntryType, Header};

use super::archive::{scan, Refused, Stop, Why, MAX_UNPACKED_BYTES};
use super::tests::{problems, report};

/// One raw tar entry.
#[derive(Clone)]
pub(super) struct E {
    name: Vec<u8>,
    kind: u8,
    mode: u32,
    link: Vec<u8>,
    data: Vec<u8>,
    device: Option<(u32, u32)>,
    size: Option<u64>,
}

fn entry(kind: u8, name: &str, mode: u32) -> E {
    E {
        name: name.as_bytes().to_vec(),
        kind,
        mode,
        link: Vec::new(),
        data: Vec::new(),
        device: None,
        size: None,
    }
}

pub(super) fn file(name: &str, mode: u32) -> E {
    E {
        data: b"puts 1\n".to_vec(),
        ..entry(b'0', name, mode)
    }
}

fn dir(name: &str) -> E {
    entry(b'5', name, 0o755)
}

fn symlink(name: &str, target: &str) -> E {
    E {
        link: target.as_bytes().to_vec(),
        ..entry(b'2', name, 0o777)
    }
}

fn hardlink(name: &str, target: &str) -> E {
    E {
        link: target.as_bytes().to_vec(),
        ..entry(b'1', name, 0o644)
    }
}

fn device(kind: u8, name: &str, major: u32, minor: u32) -> E {
    E {
        device: Some((major, minor)),
        ..entry(kind, name, 0o660)
    }
}

/// An extension header (`L`, `K`, `x`, `g`) holding `data`.
fn extension(kind: u8, data: &[u8]) -> E {
    E {
        data: data.to_vec(),
        ..entry(kind, "././@LongLink", 0o644)
    }
}

/// One pax record: `LEN key=value\n`, LEN counting itself.
fn pax(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// A tar archive of `entries`, written header by header.
pub(super) fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = Header::new_gnu();
        h.as_old_mut().name[..e.name.len()].copy_from_slice(&e.name);
        h.set_entry_type(EntryType::new(e.kind));
        h.set_mode(e.mode);
        h.set_size(e.size.unwrap_or(e.data.len() as u64));
        h.set_link_name_literal(&e.link).unwrap();
        if let Some((major, minor)) = e.device {
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
        }
        h.set_cksum();
        b.append(&h, e.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

fn role(source: &str) -> String {
    format!("extends = [\"base\"]\n\n[[archives]]\nsource = \"{source}\"\ndest = \"/srv/app/releases/1\"\nowner = \"app\"\ngroup = \"app\"\n")
}

/// The problems of an archive of `entries`, as a `.tar` and as a
/// `.tar.gz`, which must be the same but for the name.
fn refused(entries: &[E]) -> Vec<String> {
    let bytes = tar(entries);
    let plain = problems(&role("releases/app.tar"), &[("releases/app.tar", &bytes)]);
    let zipped = problems(
        &role("releases/app.tar.gz"),
        &[("releases/app.tar.gz", &gz(&bytes))],
    );
    let same: Vec<String> = zipped
        .iter()
        .map(|p| p.replace("app.tar.gz", "app.tar"))
        .collect();
    assert_eq!(plain, same, "the .tar.gz is read as the .tar is");
    plain
}

const PACK: &str = "pack the release from inside its directory, as `tar -C DIR -czf release.tar.gz .` does, so that every name is relative and stays inside the destination";
const LINK: &str = "hard-link only to a file packed earlier in the same archive, by its name there, or pack copies instead (`tar --hard-dereference`)";
const DEVICE: &str = "remove it from the archive: a release holds files, directories and links, and a device node would give its owner raw access to the instance's hardware";
const SETID: &str = "clear setuid and setgid before packing (`chmod u-s,g-s`, or `tar --mode=u-s,g-s`): nothing in a release may run with more rights than its caller";
const WRITABLE: &str = "clear the bit before packing (`chmod o-w`, or `tar --mode=o-w`): any process on the instance could change the release";
const A: &str = "archive `roles/releases/app.tar`";

#[test]
fn every_hostile_entry_is_refused_with_its_own_message() {
    let release = || vec![dir("./"), dir("./app/"), file("./app/app.rb", 0o644)];
    let cases: Vec<(E, String)> = vec![
        (device(b'4', "dev/nvme0n1p1", 259, 1), format!("{A} holds block device `dev/nvme0n1p1` | {DEVICE}")),
        (device(b'3', "dev/mem", 1, 1), format!("{A} holds character device `dev/mem` | {DEVICE}")),
        (entry(b'6', "run/app.fifo", 0o644), format!("{A} holds FIFO `run/app.fifo` | remove it from the archive: a release holds files, directories and links; the application can make its FIFOs when it starts")),
        (entry(b'V', "VOLUME", 0o644), format!("{A} holds `VOLUME`, an entry of tar type `V` | pack the release with plain `tar`, from regular files, directories and links only")),
        (file("bin/su", 0o4755), format!("{A} entry `bin/su` has the setuid bit (mode 4755) | {SETID}")),
        (file("bin/wall", 0o2755), format!("{A} entry `bin/wall` has the setgid bit (mode 2755) | {SETID}")),
        (dir("shared/"), String::new()),
        (entry(b'5', "cache/", 0o2775), format!("{A} entry `cache/` has the setgid bit (mode 2775) | {SETID}")),
        (file("config/app.yml", 0o666), format!("{A} entry `config/app.yml` is writable by everyone (mode 0666) | {WRITABLE}")),
        (entry(b'5', "tmp/", 0o1777), format!("{A} entry `tmp/` is writable by everyone (mode 1777) | {WRITABLE}")),
        (file("../x", 0o644), format!("{A} entry `../x` climbs out of its destination with `..` | {PACK}")),
        (file("app/../../x", 0o644), format!("{A} entry `app/../../x` climbs out of its destination with `..` | {PACK}")),
        (file("/etc/x", 0o644), format!("{A} entry `/etc/x` has an absolute name | {PACK}")),
        (hardlink("app/shadow", "../../etc/shadow"), format!("{A} hard link `app/shadow` points to `../../etc/shadow`, outside the archive | {LINK}")),
        (hardlink("app/passwd", "/etc/passwd"), format!("{A} hard link `app/passwd` points to `/etc/passwd`, outside the archive | {LINK}")),
        (hardlink("app/other", "app/missing.rb"), format!("{A} hard link `app/other` points to `app/missing.rb`, which is not a file earlier in the archive | {LINK}")),
        (hardlink("app/dir", "app"), format!("{A} hard link `app/dir` points to `app`, which is not a file earlier in the archive | {LINK}")),
    ];
    for (e, expected) in cases {
        let mut entries = release();
        entries.push(e);
        let expected: Vec<String> = [expected].into_iter().filter(|x| !x.is_empty()).collect();
        assert_eq!(refused(&entries), expected);
    }
}

#[test]
fn what_releases_hold_is_accepted() {
    let entries = vec![
        extension(b'g', &pax("comment", "0f10bf92a783")),
        dir("./"),
        dir("./app/"),
        file("./app/app.rb", 0o644),
        file("./bin/rails", 0o755),
        hardlink("./bin/rake", "./bin/rails"),
        hardlink("bin/rake2", "bin//rails"),
        symlink("log", "/srv/learn/shared/log"),
        symlink("public/assets", "../shared/assets"),
        symlink("config/app.yml", "../../../etc/learn/app.yml"),
        hardlink("log-link", "log"),
        entry(b'5', "private/", 0o700),
        file("README", 0o600),
        entry(b'7', "contiguous", 0o644),
        file("a-very-long-name-".repeat(5).as_str(), 0o644),
    ];
    for (name, bytes) in [
        ("releases/app.tar", tar(&entries)),
        ("releases/app.tgz", gz(&tar(&entries))),
    ] {
        assert_eq!(report(&role(name), &[(name, &bytes)]), "ok", "{name}");
    }
    // An empty archive (two zero blocks) unpacks to an empty directory.
    assert_eq!(
        report(
            &role("releases/app.tar"),
            &[("releases/app.tar", &tar(&[]))]
        ),
        "ok"
    );
}

#[test]
fn the_repositorys_release_is_accepted() {
    let bytes = include_bytes!("../../../../roles/releases/learn-sample.tar.gz");
    let s = scan(&bytes[..]);
    assert!(s.is_clean(), "{s:?}");
}

#[test]
fn a_name_hidden_in_an_extension_header_is_checked_too() {
    // GNU tar takes the long name, or the pax `path`, over the header's.
    let long = [
        extension(b'L', b"../../etc/cron.d/x\0"),
        file("harmless", 0o644),
    ];
    assert_eq!(
        refused(&long),
        [format!(
            "{A} entry `../../etc/cron.d/x` climbs out of its destination with `..` | {PACK}"
        )]
    );
    let path = [
        extension(b'x', &pax("path", "/etc/cron.d/x")),
        file("harmless", 0o644),
    ];
    assert_eq!(
        refused(&path),
        [format!(
            "{A} entry `/etc/cron.d/x` has an absolute name | {PACK}"
        )]
    );
    let link = [
        file("a", 0o644),
        extension(b'K', b"/etc/shadow\0"),
        hardlink("b", "a"),
    ];
    assert_eq!(
        refused(&link),
        [format!(
            "{A} hard link `b` points to `/etc/shadow`, outside the archive | {LINK}"
        )]
    );
    let linkpath = [
        file("a", 0o644),
        extension(b'x', &pax("linkpath", "../../etc/shadow")),
        hardlink("b", "a"),
    ];
    assert_eq!(
        refused(&linkpath),
        [format!(
            "{A} hard link `b` points to `../../etc/shadow`, outside the archive | {LINK}"
        )]
    );
    let global = [extension(b'g', &pax("path", "/etc/x")), file("a", 0o644)];
    assert_eq!(
        refused(&global),
        [format!("{A} entry `/etc/x` has an absolute name | {PACK}")]
    );
}

#[test]
fn nothing_is_unpacked_through_a_symbolic_link() {
    let entries = [
        symlink("log", "/etc/cron.d"),
        file("log/x", 0o644),
        hardlink("log/y", "log/x"),
    ];
    assert_eq!(
        refused(&entries),
        [
            format!("{A} entry `log/x` is inside `log`, a symbolic link earlier in the archive | tar would unpack it through the link, wherever that leads: pack the file where the link points, or drop the link"),
            format!("{A} hard link `log/y` points to `log/x`, which is not a file earlier in the archive | {LINK}"),
        ]
    );
}

#[test]
fn a_sparse_file_is_refused() {
    let sparse = [entry(b'S', "db.img", 0o644)];
    let help = "pack the release without `--sparse` (`-S`): a release holds plain files, directories and links";
    assert_eq!(
        refused(&sparse),
        [format!("{A} holds `db.img` as a GNU sparse file | {help}")]
    );
    let pax_sparse = [
        extension(b'x', &pax("GNU.sparse.name", "db.img")),
        file("GNUSparseFile.0/db.img", 0o644),
    ];
    assert_eq!(
        refused(&pax_sparse),
        [format!(
            "{A} holds `GNUSparseFile.0/db.img` as a GNU sparse file | {help}"
        )]
    );
}

#[test]
fn a_hostile_archive_is_reported_briefly() {
    let mut entries = vec![file("app.rb", 0o644)];
    for i in 0..1000 {
        entries.push(device(b'4', &format!("dev/disk{i}"), 259, i));
    }
    let got = refused(&entries);
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(
        got[4],
        format!("{A} holds block device `dev/disk4` | {DEVICE}")
    );
    assert_eq!(
        got[5],
        format!("{A} holds 995 more entries that cannot be unpacked safely | fix the ones above and run again, or list every entry with its type and mode with `tar -tvf roles/releases/app.tar`")
    );
}

#[test]
fn the_report_points_at_the_source_of_the_archive() {
    let bytes = tar(&[file("app.rb", 0o644), device(b'4', "disk", 259, 1)]);
    assert_eq!(
        report(&role("releases/app.tar"), &[("releases/app.tar", &bytes)]),
        "error: archive `roles/releases/app.tar` holds block device `disk`
 --> roles/app.toml:4:10
  |
4 | source = \"releases/app.tar\"
  |          ^^^^^^^^^^^^^^^^^^
  = help: remove it from the archive: a release holds files, directories and links, and a device node would give its owner raw access to the instance's hardware

error: 1 problem found"
    );
}

#[test]
fn an_archive_that_is_not_a_tar_is_refused() {
    let help = "pack it again with `tar -czf` (`tar -cf` for a `.tar`), and check that `tar -tvf roles/releases/app.tar` lists it";
    let cksum = format!(
        "numeric field was not a number: xxxxxxxx when getting cksum for {}",
        "x".repeat(100)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"release one".to_vec(), "failed to read entire block"),
        (vec![b'x'; 1024], &cksum),
        (gz(b"release one"), "failed to read entire block"),
        (b"\x1f\x8b not really gzip".to_vec(), "invalid gzip header"),
    ];
    for (bytes, why) in cases {
        assert_eq!(
            problems(&role("releases/app.tar"), &[("releases/app.tar", &bytes)]),
            [format!(
                "{A} cannot be read as a tar archive: {why} | {help}"
            )]
        );
    }
    // Cut short: the last entry's data is missing.
    let whole = tar(&[file("a", 0o644), file("b", 0o644)]);
    let cut = &whole[..512 * 3 + 3];
    assert_eq!(
        problems(&role("releases/app.tar"), &[("releases/app.tar", cut)]),
        [format!(
            "{A} cannot be read as a tar archive: unexpected EOF during skip | {help}"
        )]
    );
}

#[test]
fn a_size_override_is_refused_rather_than_misread() {
    // A pax `size` other than the header's: readers would disagree on
    // where the next entry starts, and could unpack one this check skips.
    let entries = [
        extension(b'x', &pax("size", "0")),
        file("a", 0o644),
        file("b", 0o644),
    ];
    let s = scan(&tar(&entries)[..]);
    assert_eq!(
        s.stopped,
        Some(Stop::Unreadable(
            "a pax header gives `a` another size than its tar header".into()
        ))
    );
}

#[test]
fn extension_headers_are_read_as_gnu_tar_reads_them() {
    // A value may hold a newline: the records after it still count.
    let mut header = pax("comment", "one\ntwo");
    header.extend(pax("path", "/etc/cron.d/x"));
    let newline = [extension(b'x', &header), file("harmless", 0o644)];
    assert_eq!(
        refused(&newline),
        [format!(
            "{A} entry `/etc/cron.d/x` has an absolute name | {PACK}"
        )]
    );
    let unreadable = |entries: &[E]| scan(&tar(entries)[..]).stopped;
    let stop = |why: &str| Some(Stop::Unreadable(why.into()));
    assert_eq!(
        unreadable(&[extension(b'x', b"12 path=a\n"), file("a", 0o644)]),
        stop("malformed pax header")
    );
    let two = [
        extension(b'L', b"a\0"),
        extension(b'L', b"../b\0"),
        file("a", 0o644),
    ];
    assert_eq!(
        unreadable(&two),
        stop("two extension headers of one kind describe the same entry")
    );
    let mut big = extension(b'x', b"");
    big.size = Some(2 << 20);
    assert_eq!(
        unreadable(&[big]),
        stop("an extension header of 2.0 MiB (at most 1.0 MiB)")
    );
}

#[test]
fn a_compression_bomb_is_stopped() {
    // Declared sizes count, before any data is read.
    let mut big = file("huge", 0o644);
    big.size = Some(MAX_UNPACKED_BYTES + 1);
    let mut bytes = tar(&[file("a", 0o644)]);
    bytes.truncate(bytes.len() - 1024);
    bytes.extend(tar(&[big]));
    let s = scan(&bytes[..]);
    assert_eq!(s.stopped, Some(Stop::TooLarge));
    assert_eq!(
        problems(&role("releases/app.tar"), &[("releases/app.tar", &bytes)]),
        [format!("{A} unpacks to more than 16.0 GiB | a release unpacks to a few GiB at most: ship what makes this release so big as a Debian package, or slim the release")]
    );
}

#[test]
fn names_are_shown_safely() {
    let s = scan(&tar(&[device(b'4', "dev/\x1b[2Jx", 8, 0)])[..]);
    assert_eq!(
        s.refused,
        [Refused {
            name: "dev/\\u{1b}[2Jx".into(),
            why: Why::BlockDevice
        }]
    );
    let long = format!("{}/../x", "d".repeat(120));
    let s = scan(&tar(&[extension(b'L', long.as_bytes()), file("x", 0o644)])[..]);
    assert_eq!(s.refused[0].name, format!("{}…", "d".repeat(100)));
}

#[test]
fn an_archive_baked_by_several_roles_is_read_once_and_reported_once() {
    let bytes = tar(&[device(b'4', "disk", 259, 1)]);
    let mut roles = super::MemoryRoles::default();
    let parent = format!("abstract = true\n{}", role("releases/app.tar"));
    roles.files.insert("rel.toml".into(), parent.into_bytes());
    roles.files.insert(
        "base.toml".into(),
        include_bytes!("../../../../tests/fixtures/project/roles/base.toml").to_vec(),
    );
    roles
        .files
        .insert("a.toml".into(), b"extends = [\"rel\"]\n".to_vec());
    roles
        .files
        .insert("b.toml".into(), b"extends = [\"rel\"]\n".to_vec());
    roles.files.insert("releases/app.tar".into(), bytes);
    let names: Vec<String> = ["a", "b"].map(String::from).to_vec();
    let d = super::load_in_memory(&super::tests::settings(), &roles, &names).unwrap_err();
    assert_eq!(d.0.len(), 1, "{d}");
    assert_eq!(d.0[0].file, "roles/rel.toml");
}

#[test]
fn a_long_name_cut_short_in_its_header_is_read_whole() {
    // GNU tar keeps the first 100 bytes of a long name in the header,
    // which may end in `/..` where the name goes on `/..zz/`.
    let dir = "e".repeat(95);
    let name = format!("./{dir}/..zz/file");
    let link = format!("./{dir}/..zz/file2");
    let cut = |s: &str| s[..100].to_string();
    assert!(cut(&name).ends_with("/.."));
    let entries = [
        extension(b'L', format!("{name}\0").as_bytes()),
        file(&cut(&name), 0o644),
        extension(b'K', format!("{name}\0").as_bytes()),
        extension(b'L', format!("{link}\0").as_bytes()),
        E {
            link: cut(&name).into_bytes(),
            ..entry(b'1', &cut(&link), 0o644)
        },
    ];
    assert_eq!(refused(&entries), Vec::<String>::new());
}
