//! The content hash covers exactly what enters the image.

use crate::hostile::release;
use crate::support::{copy_tree, Test};

fn edit(t: &Test, rel: &str, from: &str, to: &str) {
    let p = t.path(rel);
    let s = std::fs::read_to_string(&p).unwrap();
    assert!(s.contains(from), "{rel} does not contain {from:?}");
    std::fs::write(&p, s.replacen(from, to, 1)).unwrap();
}

#[test]
fn hash_is_64_lowercase_hex_on_its_own_line() {
    let out = Test::new().args(&["hash", "app"]).ok();
    assert_eq!(out.len(), 65);
    assert!(out.ends_with('\n'));
    assert!(out
        .trim_end()
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
}

#[test]
fn reformatting_reordering_and_comments_change_nothing() {
    let t = Test::new();
    let before = t.hash("app");
    // The same role, keys reordered, tables inline, comments and spacing added.
    std::fs::write(
        t.path("roles/app.toml"),
        r#"# A comment at the top.
extends = [ "base" ]   # trailing comment
description = 'An application server'

[boot]
start = ["app.service"]
parameters = "/app/{{env}}/app"
health = { timeout_secs = 30, http = "http://127.0.0.1:8080/health" }

[[boot.templates]]
owner = "app"
mode = "0600"
dest = "/etc/app/app.env"
source = "templates/app/app.env.hbs"

[packages]
apt = ["ruby", "nginx=1.22.1-9"]

[image]
volume_size_gb = 16
instance_type = "t3.medium"

[[checks]]
run = "ruby --version"
name = "ruby runs"

[[services]]
enabled = false
name = "app.service"

[[files]]
group = "root"
owner = "root"
mode = "644"
dest = "/etc/app/app.conf"
source = "files/app/app.conf"
"#,
    )
    .unwrap();
    assert_eq!(t.hash("app"), before);
}

#[test]
fn unrelated_files_roles_and_mtimes_change_nothing() {
    let t = Test::new()
        .write("roles/files/other/unused.conf", "not referenced\n")
        .write(
            "roles/other.toml",
            "extends = [\"base\"]\n[image]\nbase = \"debian-12\"\n",
        )
        .write("README.md", "notes\n");
    let before = t.hash("app");
    let f = std::fs::File::options()
        .append(true)
        .open(t.path("roles/files/app/app.conf"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86400))
        .unwrap();
    drop(f);
    std::fs::write(t.path("roles/other.toml"), "this is not even TOML [").unwrap();
    assert_eq!(t.hash("app"), before);
}

#[test]
fn moving_the_checkout_changes_nothing() {
    let t = Test::new();
    let before = t.hash("app");
    let elsewhere = tempfile::tempdir().unwrap();
    let moved = elsewhere.path().join("deep/er/checkout");
    copy_tree(t.dir.path(), &moved);
    let moved = Test::from_tree(&moved);
    assert_eq!(moved.hash("app"), before);
    // Run from a subdirectory too: the project is found by walking up.
    let out = moved.args(&["hash", "app"]).current_dir("roles/files").ok();
    assert_eq!(out.trim_end(), before);
}

#[test]
fn a_changed_byte_mode_path_or_parent_changes_the_hash() {
    let base = Test::new();
    let h0 = base.hash("app");
    let mut seen = vec![h0.clone()];
    let mut check = |t: &Test, what: &str| {
        let h = t.hash("app");
        assert!(!seen.contains(&h), "{what} did not change the hash");
        seen.push(h);
    };

    let t = Test::new().write("roles/files/app/app.conf", "listen 8081\n");
    check(&t, "a changed byte in a file");

    let t = Test::new().write(
        "roles/templates/app/app.env.hbs",
        "DATABASE_URL={{params.db.uri}}\n",
    );
    check(&t, "a changed byte in a template");

    let t = Test::new();
    edit(&t, "roles/app.toml", "mode = \"0644\"", "mode = \"0640\"");
    check(&t, "a changed mode");

    let t = Test::new();
    edit(&t, "roles/app.toml", "owner = \"root\"", "owner = \"app\"");
    check(&t, "a changed owner");

    let t = Test::new();
    std::fs::rename(
        t.path("roles/files/app/app.conf"),
        t.path("roles/files/app/main.conf"),
    )
    .unwrap();
    edit(
        &t,
        "roles/app.toml",
        "files/app/app.conf",
        "files/app/main.conf",
    );
    check(&t, "a renamed source");

    let t = Test::new();
    edit(
        &t,
        "roles/app.toml",
        "dest = \"/etc/app/app.conf\"",
        "dest = \"/etc/app/main.conf\"",
    );
    check(&t, "a changed destination");

    let t = Test::new();
    edit(&t, "roles/base.toml", "\"curl\"", "\"curl\", \"jq\"");
    check(&t, "a package added in the parent role");

    let t = Test::new();
    let lock = std::fs::read_to_string(t.path("images/bases.lock")).unwrap();
    let t = t.write(
        "images/bases.lock",
        lock.replace("ami-0d1e2b1200a900901", "ami-0d1e2b1200a700701"),
    );
    check(&t, "a new base image in the lock");

    // And each of these is stable: computing twice gives the same hash.
    assert_eq!(base.hash("app"), h0);
}

#[test]
fn a_parent_change_moves_only_the_roles_that_extend_it() {
    let t = Test::new().write(
        "roles/solo.toml",
        "description = \"no parent\"\n[image]\nbase = \"debian-12\"\n",
    );
    let (app, solo) = (t.hash("app"), t.hash("solo"));
    edit(&t, "roles/base.toml", "\"curl\"", "\"curl\", \"jq\"");
    assert_ne!(t.hash("app"), app);
    assert_eq!(t.hash("solo"), solo);
}

#[test]
fn inputs_lists_every_input_with_repository_paths() {
    let out = Test::new()
        .args(&["inputs", "app", "--output", "json"])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["role"], "app");
    assert_eq!(v["hash"].as_str().unwrap().len(), 64);
    let inputs = v["inputs"].as_array().unwrap();
    let kinds: Vec<&str> = inputs.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["layout", "agent", "base", "packer", "role", "file", "template"]
    );
    assert_eq!(inputs[2]["ami"], "ami-0d1e2b1200a900901");
    assert_eq!(inputs[3]["name"], "images/app.pkr.hcl");
    let file = &inputs[5];
    assert_eq!(file["path"], "roles/files/app/app.conf");
    assert_eq!(file["dest"], "/etc/app/app.conf");
    assert_eq!(file["mode"], "0644");
    // The digest is of the file's bytes: check it with an independent tool.
    let sha = std::process::Command::new("sha256sum")
        .arg(crate::support::repo_root().join("tests/fixtures/project/roles/files/app/app.conf"))
        .output()
        .unwrap();
    let sha = String::from_utf8(sha.stdout).unwrap();
    assert_eq!(
        file["sha256"].as_str().unwrap(),
        sha.split_whitespace().next().unwrap()
    );
    assert_eq!(inputs[6]["path"], "roles/templates/app/app.env.hbs");
}

#[test]
fn an_archive_moves_the_hash_with_its_bytes_and_the_test_section_does_not() {
    let archive = |bytes: &[u8]| {
        let t = Test::new().write("roles/releases/app.tar", bytes);
        let role = std::fs::read_to_string(t.path("roles/app.toml")).unwrap();
        t.write(
            "roles/app.toml",
            format!("{role}\n[[archives]]\nsource = \"releases/app.tar\"\ndest = \"/srv/app/releases/1\"\nowner = \"app\"\ngroup = \"app\"\nlink = \"/srv/app/current\"\n"),
        )
    };
    let plain = Test::new().hash("app");
    let t = archive(&release(b"release one"));
    let one = t.hash("app");
    assert_ne!(one, plain, "an archive did not change the hash");
    assert_ne!(
        archive(&release(b"release two")).hash("app"),
        one,
        "a changed byte in the archive did not change the hash"
    );
    edit(&t, "roles/app.toml", "/srv/app/current", "/srv/app/live");
    assert_ne!(t.hash("app"), one, "a changed link did not change the hash");

    let out = t.args(&["inputs", "app", "--output", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let input = v["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "archive")
        .expect("an archive input");
    assert_eq!(input["path"], "roles/releases/app.tar");
    assert_eq!(input["dest"], "/srv/app/releases/1");
    assert_eq!(input["owner"], "app:app");

    // What `imagectl test` runs beside the image never enters it.
    let t = Test::new();
    let before = t.hash("app");
    let role = std::fs::read_to_string(t.path("roles/app.toml")).unwrap();
    let t = t.write(
        "roles/app.toml",
        format!("{role}\n[test]\nsidecars = [\"redis-server --port 6379\"]\n"),
    );
    assert_eq!(t.hash("app"), before);
}
