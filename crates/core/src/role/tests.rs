//! Loading whole roles from memory: what validation refuses, in the exact
//! words it reports, and what it keeps accepting (the repository's own
//! roles among them).

use super::{load_all, load_in_memory, MemoryRoles};
use crate::diag::Diagnostics;
use crate::project::Project;
use crate::settings::{parse_settings, Settings};

/// The test fixture's `imagectl.toml`.
pub(super) fn settings() -> Settings {
    parse_settings(include_str!(
        "../../../../tests/fixtures/project/imagectl.toml"
    ))
    .unwrap()
}

/// Loads role `app` (extending the fixture's `base`) from `app_toml`, with
/// `files` beside it.
fn load(app_toml: &str, files: &[(&str, &[u8])]) -> Result<(), Diagnostics> {
    let mut roles = MemoryRoles::default();
    roles.files.insert(
        "base.toml".into(),
        include_bytes!("../../../../tests/fixtures/project/roles/base.toml").to_vec(),
    );
    roles
        .files
        .insert("app.toml".into(), app_toml.as_bytes().to_vec());
    for (path, body) in files {
        roles.files.insert(path.to_string(), body.to_vec());
    }
    load_in_memory(&settings(), &roles, &["app".to_string()]).map(|_| ())
}

/// The full report, as `imagectl validate` prints it, or "ok".
pub(super) fn report(app_toml: &str, files: &[(&str, &[u8])]) -> String {
    match load(app_toml, files) {
        Ok(()) => "ok".to_string(),
        Err(d) => d.to_string(),
    }
}

/// Each problem as `message | help`.
pub(super) fn problems(app_toml: &str, files: &[(&str, &[u8])]) -> Vec<String> {
    match load(app_toml, files) {
        Ok(()) => Vec::new(),
        Err(d) => {
            d.0.iter()
                .map(|d| format!("{} | {}", d.message, d.help.as_deref().unwrap_or("")))
                .collect()
        }
    }
}

const ENV: &[(&str, &[u8])] = &[("templates/app/app.env.hbs", b"A={{params.a}}\n")];

fn template(dest: &str, mode: &str) -> String {
    format!("extends = [\"base\"]\n\n[[boot.templates]]\nsource = \"templates/app/app.env.hbs\"\ndest = \"{dest}\"\nmode = \"{mode}\"\n")
}

fn health(url: &str) -> String {
    format!("extends = [\"base\"]\n\n[boot.health]\nhttp = \"{url}\"\n")
}

#[test]
fn the_repositorys_roles_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let project = Project::discover(std::path::Path::new(root)).unwrap();
    let roles = load_all(&project).unwrap_or_else(|d| panic!("{d}"));
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["base", "pushstream", "rails", "web", "worker"]);
    let web = &roles[3];
    assert_eq!(web.archives[0].source, "releases/learn-sample.tar.gz");
}

#[test]
fn an_https_health_check_is_refused() {
    assert_eq!(
        report(&health("https://127.0.0.1:8443/health"), &[]),
        "error: health URL `https://127.0.0.1:8443/health` uses https, but the agent checks health over plain http
 --> roles/app.toml:4:8
  |
4 | http = \"https://127.0.0.1:8443/health\"
  |        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  = help: check the application's own port on the instance, like `http://127.0.0.1:8080/health`, or use `command = \"...\"` for anything else

error: 1 problem found"
    );
    assert_eq!(report(&health("http://127.0.0.1:8080/health"), &[]), "ok");
    // Not a URL at all: the message it always had.
    assert_eq!(
        problems(&health("127.0.0.1:8080"), &[]),
        ["`127.0.0.1:8080` is not an http(s) URL | write it like `http://127.0.0.1:8080/health`"]
    );
}

#[test]
fn templates_the_agents_unit_cannot_write_are_refused() {
    let cases = [
        (
            "/usr/local/etc/app.env",
            "`/usr`, which the agent's unit makes read-only (`ProtectSystem=yes`)",
        ),
        (
            "/boot/app.env",
            "`/boot`, which the agent's unit makes read-only (`ProtectSystem=yes`)",
        ),
        (
            "/home/app/.env",
            "`/home`, which the agent's unit hides (`ProtectHome=yes`)",
        ),
        (
            "/root/.app.env",
            "`/root`, which the agent's unit hides (`ProtectHome=yes`)",
        ),
    ];
    for (dest, why) in cases {
        assert_eq!(
            problems(&template(dest, "0600"), ENV),
            [format!("template destination `{dest}` is under {why} | the agent could not write it and every boot would fail: render it elsewhere, like `/etc/learn/app.env`, and point the service at it")],
            "{dest}"
        );
    }
    for (dest, dir) in [
        ("/tmp/app.env", "/tmp"),
        ("/var/tmp/app/app.env", "/var/tmp"),
    ] {
        assert_eq!(
            problems(&template(dest, "0600"), ENV),
            [format!("template destination `{dest}` is under `{dir}`, which is private to the agent's unit (`PrivateTmp=yes`): no service would see the file | render it where the service reads it, like `/etc/learn/app.env`")],
        );
    }
    for dest in [
        "/etc/app/app.env",
        "/srv/app/shared/app.env",
        "/var/lib/app/env",
        "/usrx/app.env",
    ] {
        assert_eq!(report(&template(dest, "0600"), ENV), "ok", "{dest}");
    }
}

#[test]
fn template_modes_with_special_bits_are_refused() {
    let help = "the agent writes templates as plain files: its unit refuses setuid and setgid (`RestrictSUIDSGID=yes`), which would fail every boot, and a sticky bit means nothing on a file; use a mode like \"0640\"";
    for (mode, bits) in [
        ("4600", "the setuid bit"),
        ("2640", "the setgid bit"),
        ("1644", "the sticky bit"),
        ("6600", "the setuid and setgid bits"),
        ("7777", "the setuid, setgid and sticky bits"),
    ] {
        assert_eq!(
            problems(&template("/etc/app/app.env", mode), ENV),
            [format!("template mode `{mode}` has {bits} | {help}")]
        );
    }
    assert!(report(&template("/etc/app/app.env", "4600"), ENV)
        .contains(" --> roles/app.toml:6:8\n  |\n6 | mode = \"4600\"\n  |        ^^^^^^\n"));
    assert_eq!(report(&template("/etc/app/app.env", "0640"), ENV), "ok");
    assert_eq!(report(&template("/etc/app/app.env", "644"), ENV), "ok");
    // Baked files are installed at build time, not by the agent.
    let file = "extends = [\"base\"]\n\n[[files]]\nsource = \"files/app.conf\"\ndest = \"/usr/local/bin/app\"\nmode = \"4755\"\n";
    assert_eq!(report(file, &[("files/app.conf", b"x\n")]), "ok");
}

#[test]
fn a_template_name_must_leave_room_for_the_agents_temporary_file() {
    let longest = format!("/etc/app/{}", "n".repeat(235));
    assert_eq!(report(&template(&longest, "0600"), ENV), "ok");
    let long = format!("/etc/app/{}", "n".repeat(236));
    let cut = format!("/etc/app/{}…{}", "n".repeat(20), "n".repeat(10));
    assert_eq!(
        problems(&template(&long, "0600"), ENV),
        [format!("template destination `{cut}` has a file name of 236 bytes, too long for the agent's temporary file beside it (`.NAME.imagectl-agent.tmp`, at most 255 bytes) | shorten the file name to at most 235 bytes")]
    );
    // A baked file has no temporary name: only the limit of Linux.
    let file = |dest: &str| {
        format!(
            "extends = [\"base\"]\n\n[[files]]\nsource = \"files/app.conf\"\ndest = \"{dest}\"\n"
        )
    };
    let conf: &[(&str, &[u8])] = &[("files/app.conf", b"x\n")];
    assert_eq!(report(&file(&long), conf), "ok");
    assert_eq!(
        report(&file(&format!("/etc/{}", "n".repeat(255))), conf),
        "ok"
    );
}

#[test]
fn a_name_longer_than_linux_allows_is_refused_in_every_path() {
    let long = "n".repeat(256);
    let cut = format!("{}…{}", "n".repeat(20), "n".repeat(10));
    let help = "shorten each file and directory name in it to at most 255 bytes";
    let why = "has a file or directory name longer than 255 bytes, the most Linux allows";
    let file = format!("extends = [\"base\"]\n\n[[files]]\nsource = \"files/app.conf\"\ndest = \"/etc/{long}/app.conf\"\n");
    assert_eq!(
        problems(&file, &[("files/app.conf", b"x\n")]),
        [format!("destination `/etc/{cut}/app.conf` {why} | {help}")]
    );
    assert_eq!(
        problems(&template(&format!("/etc/{long}"), "0600"), ENV),
        [format!("destination `/etc/{cut}` {why} | {help}")]
    );
    let archive = format!("extends = [\"base\"]\n\n[[archives]]\nsource = \"releases/app.tar\"\ndest = \"/srv/{long}\"\nlink = \"/srv/app/{long}\"\n");
    let tar = super::archive_tests::tar(&[super::archive_tests::file("app.rb", 0o644)]);
    assert_eq!(
        problems(&archive, &[("releases/app.tar", &tar)]),
        [
            format!("archive destination `/srv/{cut}` {why} | {help}"),
            format!("archive link `/srv/app/{cut}` {why} | {help}"),
        ]
    );
}

#[test]
fn templates_are_checked_against_the_roles_test_parameters() {
    let app = template("/etc/app/app.env", "0600");
    let tpl = |body| {
        [
            ("templates/app/app.env.hbs", body),
            ("params/app.toml", &b"[a]\nb = \"x\"\n"[..]),
        ]
    };
    assert_eq!(
        problems(&app, &tpl(b"A={{params.a.b}}\n")),
        Vec::<String>::new()
    );
    assert_eq!(
        problems(&app, &tpl(b"A={{params.a.c}}\n")),
        ["`params.a.c` is not in `roles/params/app.toml` | did you mean `params.a.b`?"]
    );
    // A file of the wrong role's parameters: the first few, then a count.
    let many: String = (0..25).map(|i| format!("{{{{params.z{i}}}}}\n")).collect();
    let found = problems(&app, &tpl(many.as_bytes()));
    assert_eq!(found.len(), 21);
    assert_eq!(
        found[20],
        "5 more `params` paths are not in `roles/params/app.toml` | check that `roles/params/app.toml` is the right file for this template"
    );
    assert_eq!(
        problems(&app, &[("templates/app/app.env.hbs", b"A={{params.a}}\n"), ("params/app.toml", b"a = \"x\n")]),
        ["TOML syntax error: invalid basic string, expected `\"` | fix the syntax at this point; the TOML format is described at https://toml.io"]
    );
}

#[test]
fn an_unknown_parent_leaves_the_roles_own_files_checked() {
    let app = "extends = [\"bsae\"]\n\n[[files]]\nsource = \"files/app/nope.conf\"\ndest = \"/etc/app/app.conf\"\n";
    assert_eq!(
        problems(app, &[]),
        [
            "unknown parent role `bsae` | did you mean `base`?",
            "source file `roles/files/app/nope.conf` does not exist | create `roles/files/app/nope.conf`, or fix the path (it is relative to `roles/`)",
        ]
    );
}

/// Roles `app` extends `mid`, which extends the fixture's `base`; returns
/// app's `[boot]` as it goes into the image.
fn boot_of(mid_boot: &str, app_boot: &str) -> imagectl_image::config::Boot {
    let mut roles = MemoryRoles::default();
    roles.files.insert(
        "base.toml".into(),
        include_bytes!("../../../../tests/fixtures/project/roles/base.toml").to_vec(),
    );
    roles.files.insert(
        "mid.toml".into(),
        format!("abstract = true\nextends = [\"base\"]\n\n[boot]\n{mid_boot}").into_bytes(),
    );
    roles.files.insert(
        "app.toml".into(),
        format!("extends = [\"mid\"]\n\n[boot]\n{app_boot}").into_bytes(),
    );
    let roles =
        load_in_memory(&settings(), &roles, &["app".to_string()]).unwrap_or_else(|d| panic!("{d}"));
    roles[0].boot.clone()
}

#[test]
fn auto_scaling_keys_default_inherit_and_are_replaced_like_other_boot_scalars() {
    use imagectl_image::config::OnFailure;
    let b = boot_of("", "");
    assert_eq!((b.lifecycle_hook, b.on_failure), (None, OnFailure::Replace));
    let b = boot_of("lifecycle_hook = \"launch\"\non_failure = \"stay\"\n", "");
    assert_eq!(b.lifecycle_hook.as_deref(), Some("launch"));
    assert_eq!(b.on_failure, OnFailure::Stay);
    let b = boot_of(
        "lifecycle_hook = \"launch\"\non_failure = \"stay\"\n",
        "lifecycle_hook = \"web/launch-2\"\non_failure = \"replace\"\n",
    );
    assert_eq!(b.lifecycle_hook.as_deref(), Some("web/launch-2"));
    assert_eq!(b.on_failure, OnFailure::Replace);
}

#[test]
fn bad_auto_scaling_keys_are_reported_where_they_are_written() {
    let role = |boot: &str| format!("extends = [\"base\"]\n\n[boot]\n{boot}");
    assert_eq!(
        report(&role("lifecycle_hook = \"launch hook\"\n"), &[]),
        "error: `launch hook` is not a lifecycle hook name
 --> roles/app.toml:4:18
  |
4 | lifecycle_hook = \"launch hook\"
  |                  ^^^^^^^^^^^^^
  = help: write the name of the Auto Scaling group's launch lifecycle hook as the group has it: 1 to 255 letters, digits, `-`, `_` or `/`; or remove the key if the group has no hook

error: 1 problem found"
    );
    let help = "write the name of the Auto Scaling group's launch lifecycle hook as the group has it: 1 to 255 letters, digits, `-`, `_` or `/`; or remove the key if the group has no hook";
    assert_eq!(
        problems(&role("lifecycle_hook = \"\"\n"), &[]),
        [format!("lifecycle hook name is empty | {help}")]
    );
    let long = "h".repeat(256);
    assert_eq!(
        problems(&role(&format!("lifecycle_hook = \"{long}\"\n")), &[]),
        [format!(
            "lifecycle hook name is 256 characters long | {help}"
        )]
    );
    assert_eq!(
        report(
            &role(&format!("lifecycle_hook = \"{}\"\n", "h".repeat(255))),
            &[]
        ),
        "ok"
    );
    assert_eq!(
        report(&role("on_failure = \"stya\"\n"), &[]),
        "error: `stya` is not an `on_failure` value
 --> roles/app.toml:4:14
  |
4 | on_failure = \"stya\"
  |              ^^^^^^
  = help: did you mean `stay`?

error: 1 problem found"
    );
    assert_eq!(
        problems(&role("on_failure = \"terminate\"\n"), &[]),
        ["`terminate` is not an `on_failure` value | write `replace` (the default: a failed boot marks the instance unhealthy, so that Auto Scaling replaces it) or `stay` (Auto Scaling is told nothing and the instance stays, for debugging)"]
    );
    // Not a string: serde's own message, at the value.
    let r = report(&role("on_failure = true\n"), &[]);
    assert!(r.contains("roles/app.toml:4:14"), "{r}");
}
