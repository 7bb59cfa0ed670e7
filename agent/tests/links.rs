//! Writes no link redirects, end to end with the real agent binary: a link
//! the application user planted in its own directory refuses the file
//! (naming it, writing nothing, printing no value), and with `--root` the
//! image's own absolute links resolve inside the root, never on the host.

mod common;

use std::fs;
use std::os::unix::fs::{chown, lchown, symlink};
use std::path::{Path, PathBuf};

use common::*;
use imagectl_agent::config::Boot;

const PASSWORD: &str = "hunter2-planted-link";

/// Every path below `dir`, links listed and not followed, with each
/// file's contents: what must not change.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let t = fs::symlink_metadata(&p).unwrap().file_type();
            if t.is_dir() {
                todo.push(p.clone());
            }
            let contents = t.is_file().then(|| fs::read(&p).unwrap());
            out.push((p, contents));
        }
    }
    out.sort();
    out
}

fn params_file(dir: &Path) -> PathBuf {
    let p = dir.join("params.toml");
    fs::write(&p, format!("[db]\npassword = \"{PASSWORD}\"\n")).unwrap();
    p
}

#[test]
fn a_link_the_application_user_planted_refuses_the_write_and_writes_nothing() {
    if !is_root() {
        eprintln!("skipped: making a link owned by another user needs root");
        return;
    }
    let image = Image::new(
        Boot {
            parameters: None,
            start: vec![],
            templates: vec![
                template("db.yml.hbs", "/etc/learn/public.conf", "0644", "root"),
                template(
                    "db.yml.hbs",
                    "/srv/learn/shared/config/database.yml",
                    "0600",
                    "learn",
                ),
            ],
            health: None,
            ..Default::default()
        },
        &[("db.yml.hbs", "password: {{params.db.password}}\n")],
    );
    // A directory of root's (think /etc/cron.d) holding a file of root's.
    let outside = tempfile::tempdir().unwrap();
    let cron_d = outside.path().join("cron.d");
    fs::create_dir(&cron_d).unwrap();
    fs::write(
        cron_d.join("database.yml"),
        "* * * * * root /usr/bin/true\n",
    )
    .unwrap();
    // /srv/learn belongs to `learn`, who replaced shared/config with a
    // link to that directory.
    let learn = image.path("/srv/learn");
    fs::create_dir_all(learn.join("shared")).unwrap();
    chown(&learn, Some(LEARN_UID), Some(LEARN_GID)).unwrap();
    chown(learn.join("shared"), Some(LEARN_UID), Some(LEARN_GID)).unwrap();
    let link = learn.join("shared/config");
    symlink(&cron_d, &link).unwrap();
    lchown(&link, Some(LEARN_UID), Some(LEARN_GID)).unwrap();
    let params = params_file(outside.path());

    let before = (snapshot(image.root()), snapshot(outside.path()));
    let out = image
        .agent(
            &[
                "render",
                "--params",
                params.to_str().unwrap(),
                "--env",
                "dev",
            ],
            None,
            None,
        )
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let expected = format!(
        "imagectl-agent: error: render failed at step `write`: `{}` is not written: `{}` is a symbolic link \
         owned by uid {LEARN_UID}, so a user other than root could have made or replaced it; the agent \
         follows only links that root made in directories only root can write\n",
        link.join("database.yml").display(),
        link.display()
    );
    assert!(err.ends_with(&expected), "{err}");
    assert!(!err.contains(PASSWORD), "a value leaked: {err}");
    // Nothing written anywhere: not through the link, not the other file,
    // not even a directory.
    assert_eq!((snapshot(image.root()), snapshot(outside.path())), before);

    // `boot` fails the same way, and says so in its report.
    let out = image
        .agent(
            &["boot", "--params", params.to_str().unwrap(), "--env", "dev"],
            None,
            None,
        )
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains(PASSWORD), "a value leaked: {err}");
    let report = image.report();
    assert_eq!(report["status"], "failed");
    assert_eq!(report["failed_step"], "write");
    let error = report["error"].as_str().unwrap();
    assert!(error.contains("is a symbolic link owned by uid"), "{error}");
    assert!(!error.contains(PASSWORD), "{error}");
    assert_eq!(report["changed"], serde_json::json!([]));
    assert_eq!(snapshot(outside.path()), before.1);
}

#[test]
fn with_root_the_images_absolute_links_resolve_inside_the_root() {
    let name = format!("imagectl-test-{}-links", std::process::id());
    let dest = format!("/var/run/{name}/app.conf");
    let image = Image::new(
        Boot {
            parameters: None,
            start: vec![],
            templates: vec![template("app.conf.hbs", &dest, "0600", "root")],
            health: None,
            ..Default::default()
        },
        &[("app.conf.hbs", "password: {{params.db.password}}\n")],
    );
    // Debian's `/var/run -> /run`, absolute: on the host it is the host's
    // /run.
    fs::create_dir_all(image.path("/var")).unwrap();
    fs::create_dir_all(image.path("/run")).unwrap();
    symlink("/run", image.path("/var/run")).unwrap();
    let host_report = fs::read("/run/imagectl/boot.json").ok();
    let outside = tempfile::tempdir().unwrap();
    let params = params_file(outside.path());

    let out = image
        .agent(
            &["boot", "--params", params.to_str().unwrap(), "--env", "dev"],
            None,
            None,
        )
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains(PASSWORD), "a value leaked: {err}");
    assert_eq!(
        image.read(&format!("/run/{name}/app.conf")),
        format!("password: {PASSWORD}\n")
    );
    assert!(!Path::new("/run").join(&name).exists());
    let report = image.report();
    assert_eq!(report["status"], "ok");
    assert_eq!(report["changed"], serde_json::json!([dest]));
    assert_eq!(fs::read("/run/imagectl/boot.json").ok(), host_report);
    // The link is still the image's link.
    assert_eq!(
        fs::read_link(image.path("/var/run")).unwrap(),
        Path::new("/run")
    );
}
