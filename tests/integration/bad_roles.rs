//! The corpus of bad role files: each case is rejected with exit code 2 and
//! exactly the message and location in its `expected.stderr`.
//!
//! A case is a directory under `tests/bad-roles/` whose files are laid over a
//! copy of `tests/fixtures/project`; `args` (one per line) replaces the
//! default `validate`. Run with `IMAGECTL_BLESS=1` to rewrite the expected
//! files, then review the diff.

use std::path::Path;

use crate::support::{copy_tree, repo_root, Test};

fn bless() -> bool {
    std::env::var_os("IMAGECTL_BLESS").is_some()
}

fn check(name: &str, t: Test, expected_file: &Path) {
    let r = t.run();
    if bless() {
        std::fs::write(expected_file, &r.stderr).unwrap();
    }
    let expected = std::fs::read_to_string(expected_file).unwrap_or_else(|_| {
        panic!(
            "{name}: no {}; run with IMAGECTL_BLESS=1",
            expected_file.display()
        )
    });
    assert_eq!(r.stderr, expected, "{name}: stderr differs");
    assert_eq!(r.status, 2, "{name}: exit code");
    assert_eq!(r.stdout, "", "{name}: nothing on stdout");
}

#[test]
fn every_bad_role_case_fails_with_its_message_and_location() {
    let cases_dir = repo_root().join("tests/bad-roles");
    let mut cases: Vec<_> = std::fs::read_dir(&cases_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "the corpus is there");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let t = Test::new();
        copy_tree(&case, t.dir.path());
        let _ = std::fs::remove_file(t.path("expected.stderr"));
        let args =
            std::fs::read_to_string(case.join("args")).unwrap_or_else(|_| "validate\n".into());
        let args: Vec<&str> = args.lines().collect();
        let expected = case.join("expected.stderr");
        check(&name, t.args(&args), &expected);
        // Every case says where: a role file with a line and column, or at
        // least the file.
        let text = std::fs::read_to_string(&expected).unwrap();
        assert!(text.contains("--> roles/"), "{name}: no location in {text}");
        assert!(text.contains("= help: "), "{name}: no advice in {text}");
    }
}

/// Cases that cannot live in the repository as plain files.
#[test]
fn a_symlink_leading_outside_roles_is_rejected() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "hunter2\n").unwrap();
    let t = Test::new();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        t.path("roles/files/app/app.conf.link"),
    )
    .unwrap();
    std::fs::remove_file(t.path("roles/files/app/app.conf")).unwrap();
    std::fs::rename(
        t.path("roles/files/app/app.conf.link"),
        t.path("roles/files/app/app.conf"),
    )
    .unwrap();
    let r = t.args(&["validate"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        "error: source `roles/files/app/app.conf` is a symbolic link that leads outside `roles/`
  --> roles/app.toml:12:10
   |
12 | source = \"files/app/app.conf\"
   |          ^^^^^^^^^^^^^^^^^^^^
   = help: copy the file into `roles/` instead of linking to it: an image must not depend on the build machine

error: 1 problem found; nothing was written
"
    );
}

#[test]
fn a_symlink_inside_roles_is_fine() {
    let t = Test::new();
    std::fs::rename(
        t.path("roles/files/app/app.conf"),
        t.path("roles/files/app/real.conf"),
    )
    .unwrap();
    std::os::unix::fs::symlink("real.conf", t.path("roles/files/app/app.conf")).unwrap();
    t.args(&["validate"]).ok();
}

#[test]
fn a_role_file_that_is_not_utf8_is_rejected() {
    let t = Test::new().write("roles/app.toml", b"description = \"caf\xe9\"\n");
    let r = t.args(&["validate", "app"]).run();
    assert_eq!(r.status, 2);
    assert!(
        r.stderr
            .starts_with("error: role file is not UTF-8 text\n --> roles/app.toml:1:19\n"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_bad_settings_file_points_into_it() {
    let t = Test::new().write(
        "imagectl.toml",
        "[aws]\nregion = \"eu-west-1\"\nregoins = [\"x\"]\n\n[bases.debian-12]\nowners = [\"136693071363\"]\narchitecture = \"x86_64\"\n",
    );
    let r = t.args(&["validate"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        "error: unknown key `regoins`
 --> imagectl.toml:3:1
  |
3 | regoins = [\"x\"]
  | ^^^^^^^
  = help: remove it; the keys allowed here are `region`, `copy_regions`, `share_accounts`, `build_subnet`, `build_security_group`, `instance_profile`, `kms_key`

error: base `debian-12` needs both `owners` and `name`
 --> imagectl.toml:5:1
  |
5 | [bases.debian-12]
  | ^^^^^^^^^^^^^^^^^
  = help: an image filter without an owner could match anybody's image

error: 2 problems found; nothing was written
"
    );
}
