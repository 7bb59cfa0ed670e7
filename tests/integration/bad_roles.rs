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

fn check(name: &str, t: &Test, expected_file: &Path) {
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
        check(&name, &t.args(&args), &expected);
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

error: 1 problem found
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
  = help: did you mean `region`?

error: base `debian-12` needs both `owners` and `name`
 --> imagectl.toml:5:1
  |
5 | [bases.debian-12]
  | ^^^^^^^^^^^^^^^^^
  = help: an image filter without an owner could match anybody's image

error: 2 problems found
"
    );
}

/// Hostile cases too big, too many or too special (symbolic links, FIFOs,
/// sparse files) to live in the repository: each is built in a temporary
/// project and checked like the corpus, against
/// `tests/bad-roles-generated/NAME.stderr` (blessed the same way).
#[test]
fn every_generated_hostile_case_fails_with_its_message() {
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path();
    std::fs::write(out.join("secret"), "hunter2\n").unwrap();
    std::fs::create_dir(out.join("dir")).unwrap();
    std::fs::write(out.join("dir/app.conf"), "stolen\n").unwrap();
    std::fs::create_dir_all(out.join("tree/app")).unwrap();
    std::fs::write(out.join("tree/app/app.conf"), "stolen\n").unwrap();
    std::fs::write(out.join("app.toml"), "extends = [\"base\"]\n").unwrap();

    let link = |t: &Test, target: &Path, rel: &str| {
        let p = t.path(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            let _ = std::fs::remove_file(&p);
        }
        std::os::unix::fs::symlink(target, p).unwrap();
    };
    let sparse = |t: &Test, rel: &str, len: u64| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(t.path(rel))
            .unwrap();
        f.set_len(len).unwrap();
    };

    type Case<'a> = (&'static str, &'static str, Box<dyn Fn(&Test) + 'a>);
    let cases: Vec<Case> = vec![
        (
            "extends-10000-deep",
            "validate r0",
            Box::new(|t: &Test| deep_chain(t, 10_000)),
        ),
        (
            "extends-65-deep",
            "validate r0",
            Box::new(|t: &Test| deep_chain(t, 65)),
        ),
        (
            "role-file-50mb",
            "validate app",
            Box::new(|t: &Test| sparse(t, "roles/app.toml", 50 << 20)),
        ),
        (
            "source-200gb-sparse",
            "validate app",
            Box::new(|t: &Test| sparse(t, "roles/files/app/app.conf", 200 << 30)),
        ),
        (
            "template-2mb-sparse",
            "validate app",
            Box::new(|t: &Test| sparse(t, "roles/templates/app/app.env.hbs", 2 << 20)),
        ),
        (
            "source-directory-symlink-escapes",
            "validate app",
            Box::new(|t: &Test| link(t, &out.join("dir"), "roles/files/app")),
        ),
        (
            "template-symlink-escapes",
            "validate app",
            Box::new(|t: &Test| link(t, &out.join("secret"), "roles/templates/app/app.env.hbs")),
        ),
        (
            "role-file-symlink-escapes",
            "validate app",
            Box::new(|t: &Test| link(t, &out.join("app.toml"), "roles/app.toml")),
        ),
        (
            "roles-dir-symlink-escapes",
            "validate app",
            Box::new(|t: &Test| link(t, &out.join("tree"), "roles/files")),
        ),
        (
            "source-is-dev-zero",
            "validate app",
            Box::new(|t: &Test| link(t, Path::new("/dev/zero"), "roles/files/app/app.conf")),
        ),
        (
            "source-is-a-fifo",
            "validate app",
            Box::new(|t: &Test| {
                let p = t.path("roles/files/app/app.conf");
                std::fs::remove_file(&p).unwrap();
                let st = std::process::Command::new("mkfifo")
                    .arg(&p)
                    .status()
                    .unwrap();
                assert!(st.success());
            }),
        ),
        (
            "role-file-is-dev-zero",
            "validate zero",
            Box::new(|t: &Test| link(t, Path::new("/dev/zero"), "roles/zero.toml")),
        ),
        (
            "role-file-is-a-directory",
            "validate dir",
            Box::new(|t: &Test| std::fs::create_dir(t.path("roles/dir.toml")).unwrap()),
        ),
    ];
    let expected_dir = repo_root().join("tests/bad-roles-generated");
    for (name, args, build) in cases {
        let t = Test::new();
        build(&t);
        let before = listing(t.dir.path());
        let started = std::time::Instant::now();
        let args: Vec<&str> = args.split(' ').collect();
        let t = t.args(&args);
        check(name, &t, &expected_dir.join(format!("{name}.stderr")));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{name}: took {:?}",
            started.elapsed()
        );
        assert_eq!(listing(t.dir.path()), before, "{name}: nothing written");
        let text = std::fs::read_to_string(expected_dir.join(format!("{name}.stderr"))).unwrap();
        assert!(text.contains("--> roles/"), "{name}: no location in {text}");
        assert!(text.contains("= help: "), "{name}: no advice in {text}");
    }
}

/// Roles `r0` extends `r1` ... extends `r{n-1}`, which has a base.
fn deep_chain(t: &Test, n: usize) {
    for i in 0..n {
        let body = if i + 1 < n {
            format!("extends = [\"r{}\"]\nabstract = true\n", i + 1)
        } else {
            "[image]\nbase = \"debian-12\"\n".to_string()
        };
        std::fs::write(t.path(&format!("roles/r{i}.toml")), body).unwrap();
    }
}

/// Every path below `dir` with its size, to show a run wrote nothing.
pub fn listing(dir: &Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                todo.push(e.path());
            }
            out.push((e.path(), meta.len()));
        }
    }
    out.sort();
    out
}

/// Validating all 10,000 roles of a chain far deeper than allowed: one
/// error per role that reaches too deep, the report cut after 50, in
/// seconds rather than minutes.
#[test]
fn a_10000_role_chain_is_reported_briefly() {
    let t = Test::new();
    deep_chain(&t, 10_000);
    let started = std::time::Instant::now();
    let r = t.args(&["validate"]).run();
    // A hang guard (the report must not take minutes), not a speed claim.
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr
            .matches("\nerror: `extends` goes more than 64 roles deep")
            .count()
            + 1,
        50
    );
    assert!(
        r.stderr
            .contains("error: 9886 more problems not shown; fix these and run again"),
        "{}",
        &r.stderr[r.stderr.len() - 300..]
    );
    assert!(r.stderr.ends_with("error: 9936 problems found\n"));
}
