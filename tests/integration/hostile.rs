//! Hostile release archives: role `app` bakes an `[[archives]]` tar holding
//! what must never be unpacked as root (a device, a setuid file, a name
//! climbing out with `..`, a hard link to `/etc/shadow`). `validate`,
//! `hash` and `stage` all refuse it with exit code 2 and the same report,
//! naming the archive and the entry, and write nothing.

use std::io::Write;

use crate::bad_roles::listing;
use crate::support::Test;

/// One tar entry as a hostile packer writes it: type, name, mode, link
/// target and device numbers, none of them checked.
struct Entry {
    kind: u8,
    name: &'static str,
    mode: u32,
    link: &'static str,
    device: Option<(u32, u32)>,
}

const fn entry(kind: u8, name: &'static str, mode: u32) -> Entry {
    Entry {
        kind,
        name,
        mode,
        link: "",
        device: None,
    }
}

/// A tar archive of `entries`, each header written field by field (the
/// `tar` crate's own checks would refuse `..`), regular files holding a
/// line of text.
fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let data: &[u8] = if e.kind == b'0' { b"puts 1\n" } else { b"" };
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        h.set_entry_type(tar::EntryType::new(e.kind));
        h.set_mode(e.mode);
        h.set_size(data.len() as u64);
        h.set_link_name_literal(e.link).unwrap();
        if let Some((major, minor)) = e.device {
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(bytes).unwrap();
    z.finish().unwrap()
}

/// A harmless release: one file holding `contents`.
pub fn release(contents: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_path("app.rb").unwrap();
    h.set_mode(0o644);
    h.set_size(contents.len() as u64);
    h.set_cksum();
    b.append(&h, contents).unwrap();
    b.into_inner().unwrap()
}

/// The fixture project, its role `app` baking `roles/releases/NAME`
/// (whose `source` line is line 41).
fn project(name: &str, bytes: &[u8]) -> Test {
    let t = Test::new().write(&format!("roles/releases/{name}"), bytes);
    let role = std::fs::read_to_string(t.path("roles/app.toml")).unwrap();
    t.write(
        "roles/app.toml",
        format!("{role}\n[[archives]]\nsource = \"releases/{name}\"\ndest = \"/srv/app/releases/1\"\nowner = \"app\"\ngroup = \"app\"\n"),
    )
}

/// The report of one problem at the `source` of archive `name`.
fn one_problem(name: &str, message: &str, help: &str) -> String {
    let source = format!("source = \"releases/{name}\"");
    let carets = "^".repeat(source.len() - "source = ".len());
    format!(
        "error: {message}\n  --> roles/app.toml:41:10\n   |\n41 | {source}\n   |          {carets}\n   = help: {help}\n\nerror: 1 problem found\n"
    )
}

/// `validate`, `hash app` and `stage app` all fail with `expected` on
/// stderr, exit code 2, nothing on stdout, and nothing written.
fn refused_everywhere(t: &mut Test, expected: &str) {
    let out = tempfile::tempdir().unwrap();
    let staged = out.path().join("staged");
    let before = listing(t.dir.path());
    let stage = ["stage", "app", "--out", staged.to_str().unwrap()];
    for args in [&["validate"][..], &["hash", "app"], &stage] {
        let r = t.run_with(args);
        // Only the command that would have written says it did not.
        let expected = if args[0] == "stage" {
            format!("{}; nothing was written\n", expected.trim_end_matches('\n'))
        } else {
            expected.to_string()
        };
        assert_eq!(r.stderr, expected, "imagectl {args:?}");
        assert_eq!(r.status, 2, "imagectl {args:?}");
        assert_eq!(r.stdout, "", "imagectl {args:?}");
    }
    assert!(!staged.exists(), "stage wrote {}", staged.display());
    assert_eq!(
        listing(t.dir.path()),
        before,
        "nothing written in the project"
    );
}

const PACK: &str = "pack the release from inside its directory, as `tar -C DIR -czf release.tar.gz .` does, so that every name is relative and stays inside the destination";
const LINK: &str = "hard-link only to a file packed earlier in the same archive, by its name there, or pack copies instead (`tar --hard-dereference`)";
const DEVICE: &str = "remove it from the archive: a release holds files, directories and links, and a device node would give its owner raw access to the instance's hardware";

/// One hostile entry each, with what is said about it and the advice.
fn hostile_entries() -> [(Entry, &'static str, &'static str); 9] {
    [
        (
            Entry { device: Some((259, 1)), ..entry(b'4', "dev/nvme0n1p1", 0o660) },
            "holds block device `dev/nvme0n1p1`",
            DEVICE,
        ),
        (
            Entry { device: Some((1, 1)), ..entry(b'3', "dev/mem", 0o660) },
            "holds character device `dev/mem`",
            DEVICE,
        ),
        (
            entry(b'6', "run/app.fifo", 0o644),
            "holds FIFO `run/app.fifo`",
            "remove it from the archive: a release holds files, directories and links; the application can make its FIFOs when it starts",
        ),
        (
            entry(b'0', "bin/su", 0o4755),
            "entry `bin/su` has the setuid bit (mode 4755)",
            "clear setuid and setgid before packing (`chmod u-s,g-s`, or `tar --mode=u-s,g-s`): nothing in a release may run with more rights than its caller",
        ),
        (
            entry(b'0', "config/app.yml", 0o666),
            "entry `config/app.yml` is writable by everyone (mode 0666)",
            "clear the bit before packing (`chmod o-w`, or `tar --mode=o-w`): any process on the instance could change the release",
        ),
        (
            entry(b'0', "../x", 0o644),
            "entry `../x` climbs out of its destination with `..`",
            PACK,
        ),
        (
            entry(b'0', "/etc/x", 0o644),
            "entry `/etc/x` has an absolute name",
            PACK,
        ),
        (
            Entry { link: "../../etc/shadow", ..entry(b'1', "app/shadow", 0o644) },
            "hard link `app/shadow` points to `../../etc/shadow`, outside the archive",
            LINK,
        ),
        (
            Entry { link: "app/missing.rb", ..entry(b'1', "app/other.rb", 0o644) },
            "hard link `app/other.rb` points to `app/missing.rb`, which is not a file earlier in the archive",
            LINK,
        ),
    ]
}

#[test]
fn each_hostile_entry_is_refused_by_validate_hash_and_stage() {
    for (hostile, problem, help) in hostile_entries() {
        let bytes = tar(&[
            entry(b'5', "app/", 0o755),
            entry(b'0', "app/app.rb", 0o644),
            hostile,
        ]);
        for (name, bytes) in [("app.tar", bytes.clone()), ("app.tar.gz", gz(&bytes))] {
            let mut t = project(name, &bytes);
            let message = format!("archive `roles/releases/{name}` {problem}");
            refused_everywhere(&mut t, &one_problem(name, &message, help));
        }
    }
}

#[test]
fn a_release_of_many_hostile_entries_is_reported_in_full_but_briefly() {
    let mut entries = vec![
        entry(b'0', "bin/su", 0o6755),
        Entry {
            link: "/etc/shadow",
            ..entry(b'1', "shadow", 0o640)
        },
    ];
    let disks = [
        "dev/sda", "dev/sdb", "dev/sdc", "dev/sdd", "dev/sde", "dev/sdf", "dev/sdg",
    ];
    for (minor, disk) in disks.into_iter().enumerate() {
        entries.push(Entry {
            device: Some((8, minor as u32 * 16)),
            ..entry(b'4', disk, 0o660)
        });
    }
    let mut t = project("app.tgz", &gz(&tar(&entries)));
    refused_everywhere(
        &mut t,
        "error: archive `roles/releases/app.tgz` entry `bin/su` has the setuid and setgid bits (mode 6755)
  --> roles/app.toml:41:10
   |
41 | source = \"releases/app.tgz\"
   |          ^^^^^^^^^^^^^^^^^^
   = help: clear setuid and setgid before packing (`chmod u-s,g-s`, or `tar --mode=u-s,g-s`): nothing in a release may run with more rights than its caller

error: archive `roles/releases/app.tgz` hard link `shadow` points to `/etc/shadow`, outside the archive
  --> roles/app.toml:41:10
   |
41 | source = \"releases/app.tgz\"
   |          ^^^^^^^^^^^^^^^^^^
   = help: hard-link only to a file packed earlier in the same archive, by its name there, or pack copies instead (`tar --hard-dereference`)

error: archive `roles/releases/app.tgz` holds block device `dev/sda`
  --> roles/app.toml:41:10
   |
41 | source = \"releases/app.tgz\"
   |          ^^^^^^^^^^^^^^^^^^
   = help: remove it from the archive: a release holds files, directories and links, and a device node would give its owner raw access to the instance's hardware

error: archive `roles/releases/app.tgz` holds block device `dev/sdb`
  --> roles/app.toml:41:10
   |
41 | source = \"releases/app.tgz\"
   |          ^^^^^^^^^^^^^^^^^^
   = help: remove it from the archive: a release holds files, directories and links, and a device node would give its owner raw access to the instance's hardware

error: archive `roles/releases/app.tgz` holds block device `dev/sdc`
  --> roles/app.toml:41:10
   |
41 | source = \"releases/app.tgz\"
   |          ^^^^^^^^^^^^^^^^^^
   = help: remove it from the archive: a release holds files, directories and links, and a device node would give its owner raw access to the instance's hardware

error: archive `roles/releases/app.tgz` holds 4 more entries that cannot be unpacked safely
  --> roles/app.toml:41:10
   |
41 | source = \"releases/app.tgz\"
   |          ^^^^^^^^^^^^^^^^^^
   = help: fix the ones above and run again, or list every entry with its type and mode with `tar -tvf roles/releases/app.tgz`

error: 6 problems found
",
    );
}

#[test]
fn an_archive_that_is_not_a_tar_is_refused() {
    let mut t = project("app.tar.gz", b"not really gzip\n");
    refused_everywhere(
        &mut t,
        &one_problem(
            "app.tar.gz",
            "archive `roles/releases/app.tar.gz` cannot be read as a tar archive: failed to read entire block",
            "pack it again with `tar -czf` (`tar -cf` for a `.tar`), and check that `tar -tvf roles/releases/app.tar.gz` lists it",
        ),
    );
}

#[test]
fn a_release_of_files_directories_and_links_is_accepted() {
    let entries = [
        entry(b'5', "./", 0o755),
        entry(b'0', "./Gemfile", 0o644),
        entry(b'5', "./bin/", 0o755),
        entry(b'0', "./bin/rails", 0o755),
        Entry {
            link: "./bin/rails",
            ..entry(b'1', "./bin/rake", 0o755)
        },
        Entry {
            link: "/srv/learn/shared/log",
            ..entry(b'2', "./log", 0o777)
        },
        Entry {
            link: "../shared/assets",
            ..entry(b'2', "./public", 0o777)
        },
    ];
    let t = project("app.tar.gz", &gz(&tar(&entries)));
    let out = t.args(&["validate", "app"]).ok();
    assert!(out.contains(", 1 archive"), "{out}");
}
