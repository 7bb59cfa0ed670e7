//! `imagectl-agent boot` end to end: the real binary against moto (SSM), a
//! test IMDSv2 server, and an image root in a temporary directory.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;
use imagectl_agent::config::{Boot, BootTemplate};
use imagectl_agent::template::Multiline;

/// Values that must come out byte for byte and never show in logs.
const SECRET: &str = "s3cr&t<pa>\"ss\"'word'\nsecond line \u{e9}\u{4e16}\u{1f680}";
const DB_URL: &str = "postgres://learn:hunter2@db.internal/learn?a=1&b=2";

const APP_ENV: &str = "\
# {{role}} in {{env}} on {{instance.id}} ({{instance.region}}, {{instance.az}}), image {{image.hash}}
DATABASE_URL={{params.db.url}}
SECRET={{json params.app.secret}}
RAW={{params.app.secret}}
{{#each params.extra}}
{{@key}}={{this}}
{{/each}}
";

fn worker_boot(start: &[&str]) -> Boot {
    Boot {
        parameters: Some("/learn/{{env}}/{{role}}".to_string()),
        start: start.iter().map(|s| s.to_string()).collect(),
        templates: vec![
            // RAW prints the secret's line break: allowed for that one.
            BootTemplate {
                multiline: Multiline::Keys(vec!["app.secret".to_string()]),
                ..template(
                    "templates/worker/app.env.hbs",
                    "/etc/learn/app.env",
                    "0600",
                    "learn",
                )
            },
            template(
                "templates/worker/public.conf.hbs",
                "/etc/learn/public.conf",
                "0644",
                "root",
            ),
        ],
        health: health_command("true", 5),
        ..Default::default()
    }
}

fn worker_image(start: &[&str]) -> Image {
    Image::new(
        worker_boot(start),
        &[
            ("templates/worker/app.env.hbs", APP_ENV),
            ("templates/worker/public.conf.hbs", "env={{env}}\n"),
        ],
    )
}

/// 2 named parameters and 12 `extra` ones: more than one page of 10.
fn worker_params(env: &str) -> Vec<(String, String)> {
    let mut p = vec![
        (format!("/learn/{env}/worker/db/url"), DB_URL.to_string()),
        (
            format!("/learn/{env}/worker/app/secret"),
            SECRET.to_string(),
        ),
    ];
    for i in 0..12 {
        p.push((
            format!("/learn/{env}/worker/extra/k{i:02}"),
            format!("v{i}"),
        ));
    }
    // Another environment's parameters must not leak in.
    p.push((
        "/learn/staging/worker/db/url".to_string(),
        "wrong".to_string(),
    ));
    p
}

fn prod_imds() -> Server {
    imds(ImdsBehaviour {
        user_data: Some("env = \"prod\"\n".to_string()),
        refuse_tokens: false,
        ..Default::default()
    })
}

fn assert_no_secrets(text: &str) {
    for needle in ["hunter2", "s3cr", "pa>"] {
        assert!(!text.contains(needle), "a value leaked: {text}");
    }
}

#[test]
fn boot_renders_every_file_starts_units_and_reports() {
    let moto = Moto::start();
    moto.put_parameters(&worker_params("prod"));
    let imds = prod_imds();
    let image = worker_image(&["app.service", "other.service"]);

    let out = image
        .agent(&["boot"], Some(&imds.url()), Some(&moto.url))
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_no_secrets(&err);

    let mut expected = format!(
        "# worker in prod on i-0abc123def4567890 (eu-west-1, eu-west-1b), image {}\nDATABASE_URL={DB_URL}\nSECRET={}\nRAW={SECRET}\n",
        "ab".repeat(32),
        serde_json::to_string(SECRET).unwrap()
    );
    for i in 0..12 {
        expected.push_str(&format!("k{i:02}=v{i}\n"));
    }
    assert_eq!(image.read("/etc/learn/app.env"), expected);
    assert_eq!(image.read("/etc/learn/public.conf"), "env=prod\n");
    let meta = fs::metadata(image.path("/etc/learn/app.env")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!((meta.uid(), meta.gid()), (LEARN_UID, LEARN_GID));
    let meta = fs::metadata(image.path("/etc/learn/public.conf")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o644);
    assert_eq!(meta.uid(), 0);

    assert_eq!(
        image.systemctl_log(),
        "restart -- app.service\nrestart -- other.service\n"
    );

    let report = image.report();
    let text = serde_json::to_string(&report).unwrap();
    assert_no_secrets(&text);
    assert_eq!(report["status"], "ok");
    assert_eq!(report["env"], "prod");
    assert_eq!(report["instance"], "i-0abc123def4567890");
    assert_eq!(report["parameters"], 14);
    assert_eq!(
        report["changed"],
        serde_json::json!(["/etc/learn/app.env", "/etc/learn/public.conf"])
    );
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "config",
            "identity",
            "parameters",
            "render",
            "write",
            "start",
            "health",
            "autoscaling"
        ]
    );
    // The test IMDS has no tags and moto no group: in none.
    assert_eq!(report["autoscaling"]["group"], serde_json::Value::Null);
    assert_eq!(
        report["autoscaling"]["found_by"],
        "DescribeAutoScalingInstances"
    );
    let report_mode = fs::metadata(image.path("/run/imagectl/boot.json"))
        .unwrap()
        .mode();
    assert_eq!(report_mode & 0o777, 0o644);

    // IMDSv2 only: a token first, every GET with it.
    let log = imds.log.lock().unwrap().clone();
    assert!(log[0].starts_with("PUT /latest/api/token"), "{log:?}");
    assert!(
        log.iter().skip(1).all(|l| l.ends_with("token=true")),
        "{log:?}"
    );

    // A second boot changes nothing.
    let out = image
        .agent(&["boot"], Some(&imds.url()), Some(&moto.url))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(image.report()["changed"], serde_json::json!([]));
}

#[test]
fn the_test_imds_refuses_gets_without_a_token() {
    let imds = prod_imds();
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", imds.port)).unwrap();
    s.write_all(b"GET /latest/user-data HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 401"), "{resp}");
}

fn failed_boot(
    image: &Image,
    imds: Option<&str>,
    ssm: Option<&str>,
) -> (serde_json::Value, String) {
    let out = image.agent(&["boot"], imds, ssm).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_no_secrets(&err);
    let report = image.report();
    assert_no_secrets(&serde_json::to_string(&report).unwrap());
    assert_eq!(report["status"], "failed");
    (report, err)
}

#[test]
fn a_missing_parameter_names_template_line_and_parameter_and_changes_nothing() {
    let moto = Moto::start();
    let mut params = worker_params("prod");
    params.retain(|(n, _)| !n.ends_with("/db/url"));
    moto.put_parameters(&params);
    let imds = prod_imds();
    let image = worker_image(&["app.service"]);
    fs::create_dir_all(image.path("/etc/learn")).unwrap();
    fs::write(image.path("/etc/learn/app.env"), "previous\n").unwrap();
    fs::write(image.path("/etc/learn/public.conf"), "previous public\n").unwrap();

    let (report, err) = failed_boot(&image, Some(&imds.url()), Some(&moto.url));
    assert_eq!(report["failed_step"], "render");
    let msg =
        "template `templates/worker/app.env.hbs`, line 2, column 14: `params.db.url` is not set";
    assert_eq!(report["error"], msg);
    assert!(err.contains(msg), "{err}");
    // Nothing replaced, not even the file whose template rendered.
    assert_eq!(image.read("/etc/learn/app.env"), "previous\n");
    assert_eq!(image.read("/etc/learn/public.conf"), "previous public\n");
    assert_eq!(image.systemctl_log(), "");
}

#[test]
fn throttled_ssm_is_retried_with_backoff() {
    let moto = Moto::start();
    moto.put_parameters(&worker_params("prod"));
    let imds = prod_imds();
    let ssm = ssm_proxy(moto.port, 2, "400 Bad Request", "ThrottlingException");
    let image = worker_image(&[]);
    let out = image
        .agent(&["boot"], Some(&imds.url()), Some(&ssm.url()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // 2 throttled, then 2 pages; then DescribeAutoScalingInstances (the
    // same endpoint, AWS_ENDPOINT_URL).
    assert_eq!(ssm.hits(), 5);
    assert!(image.read("/etc/learn/app.env").contains(DB_URL));
}

#[test]
fn failing_ssm_fails_the_boot_after_retries() {
    let moto = Moto::start();
    let imds = prod_imds();
    let ssm = ssm_proxy(
        moto.port,
        usize::MAX,
        "500 Internal Server Error",
        "InternalServerError",
    );
    let image = worker_image(&[]);
    let (report, _) = failed_boot(&image, Some(&imds.url()), Some(&ssm.url()));
    assert_eq!(report["failed_step"], "parameters");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.starts_with("SSM GetParametersByPath `/learn/prod/worker` failed after up to 5 attempts: InternalServerError"),
        "{error}"
    );
    // 5 attempts of SSM, then of DescribeAutoScalingInstances, then of
    // SetInstanceHealth, tried all the same after a failed boot.
    assert_eq!(ssm.hits(), 15);
    assert_eq!(
        report["autoscaling"]["errors"].as_array().unwrap().len(),
        2,
        "{report}"
    );
}

#[test]
fn an_imds_without_tokens_fails_the_boot() {
    let imds = imds(ImdsBehaviour {
        user_data: Some("env = \"prod\"\n".to_string()),
        refuse_tokens: true,
        ..Default::default()
    });
    let image = worker_image(&[]);
    let (report, _) = failed_boot(&image, Some(&imds.url()), None);
    assert_eq!(report["failed_step"], "identity");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.starts_with("instance metadata service: cannot get an IMDSv2 session token"),
        "{error}"
    );
    // Never fell back to IMDSv1.
    let log = imds.log.lock().unwrap().clone();
    assert!(log.iter().all(|l| l.starts_with("PUT")), "{log:?}");
}

#[test]
fn missing_user_data_fails_the_boot() {
    let imds = imds(ImdsBehaviour {
        user_data: None,
        refuse_tokens: false,
        ..Default::default()
    });
    let image = worker_image(&[]);
    let (report, _) = failed_boot(&image, Some(&imds.url()), None);
    assert_eq!(report["failed_step"], "identity");
    assert_eq!(
        report["error"],
        "user data is missing: the launch template must set user data with `env = \"...\"`"
    );
}

#[test]
fn malformed_user_data_fails_the_boot_without_echoing_it() {
    let imds = imds(ImdsBehaviour {
        user_data: Some("#cloud-config\npassword: hunter2\n".to_string()),
        refuse_tokens: false,
        ..Default::default()
    });
    let image = worker_image(&[]);
    let (report, _) = failed_boot(&image, Some(&imds.url()), None);
    assert_eq!(report["failed_step"], "identity");
    let error = report["error"].as_str().unwrap();
    assert!(
        error.starts_with("user data is not valid (line 2): "),
        "{error}"
    );
}

#[test]
fn a_unit_that_fails_to_start_fails_the_boot() {
    let moto = Moto::start();
    moto.put_parameters(&worker_params("prod"));
    let imds = prod_imds();
    let image = worker_image(&["app.service", "broken.service", "never.service"]);
    let (report, err) = failed_boot(&image, Some(&imds.url()), Some(&moto.url));
    assert_eq!(report["failed_step"], "start");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .starts_with("`systemctl start broken.service` failed (exit status: 1)"),
        "{report}"
    );
    assert!(err.contains("Job for broken.service failed."), "{err}");
    assert_eq!(report["started"], serde_json::json!(["app.service"]));
    assert_eq!(
        image.systemctl_log(),
        "restart -- app.service\nrestart -- broken.service\n"
    );
}

#[test]
fn health_that_never_passes_fails_the_boot() {
    let moto = Moto::start();
    moto.put_parameters(&worker_params("prod"));
    let imds = prod_imds();
    let mut boot = worker_boot(&["app.service"]);
    boot.health = health_command("test -f /nonexistent/healthy", 1);
    let image = Image::new(
        boot,
        &[
            ("templates/worker/app.env.hbs", APP_ENV),
            ("templates/worker/public.conf.hbs", "env={{env}}\n"),
        ],
    );
    let (report, _) = failed_boot(&image, Some(&imds.url()), Some(&moto.url));
    assert_eq!(report["failed_step"], "health");
    assert_eq!(
        report["error"],
        "not healthy within 1s (`test -f /nonexistent/healthy`): last result: exit status: 1"
    );
}

#[test]
fn the_boot_deadline_bounds_a_hanging_imds() {
    // Accepts connections and never answers.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            held.push(s);
        }
    });
    let image = worker_image(&[]);
    let started = std::time::Instant::now();
    let out = image
        .agent(
            &["boot", "--deadline", "2"],
            Some(&format!("http://127.0.0.1:{port}")),
            None,
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(started.elapsed() < std::time::Duration::from_secs(6));
    let report = image.report();
    assert_eq!(report["failed_step"], "identity");
    assert_eq!(
        report["error"],
        "the boot deadline (2s) passed during step `identity`"
    );
}

#[test]
fn local_boot_and_render_use_a_parameter_file_and_no_network() {
    let image = worker_image(&["app.service"]);
    let params = image.root().join("params.toml");
    let mut extra = String::from("[extra]\n");
    for i in 0..3 {
        extra.push_str(&format!("k{i} = \"v{i}\"\n"));
    }
    fs::write(
        &params,
        format!(
            "[db]\nurl = {}\n[app]\nsecret = {}\n{extra}",
            toml_string(DB_URL),
            toml_string(SECRET)
        ),
    )
    .unwrap();
    let params = params.to_str().unwrap();

    let out = image
        .agent(&["render", "--params", params, "--env", "dev"], None, None)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let app = image.read("/etc/learn/app.env");
    assert!(
        app.starts_with("# worker in dev on local (local, local)"),
        "{app}"
    );
    assert!(app.contains(&format!("RAW={SECRET}\n")), "{app}");
    assert_eq!(image.systemctl_log(), "", "render starts nothing");
    assert!(!image.path("/run/imagectl/boot.json").exists());

    let out = image
        .agent(&["boot", "--params", params, "--env", "dev"], None, None)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(image.systemctl_log(), "restart -- app.service\n");
    let report = image.report();
    assert_eq!(report["status"], "ok");
    assert_eq!(report["parameters"], 5);

    let out = image
        .agent(&["render", "--params", params], None, None)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--params needs --env ENV"));
}

#[test]
fn directories_are_created_0755_even_under_umask_0077() {
    // The unit runs with UMask=0077: a new /etc/learn must still be
    // traversable by the service user, and a 0644 file readable.
    let image = worker_image(&[]);
    let params = image.root().join("params.toml");
    fs::write(
        &params,
        "[db]\nurl = \"u\"\n[app]\nsecret = \"s\"\n[extra]\nk = \"v\"\n",
    )
    .unwrap();
    let cmd = image.agent(
        &[
            "render",
            "--params",
            params.to_str().unwrap(),
            "--env",
            "dev",
        ],
        None,
        None,
    );
    let mut sh = std::process::Command::new("/bin/sh");
    sh.arg("-c").arg("umask 077 && exec \"$@\"").arg("sh");
    sh.arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    let out = sh.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = fs::metadata(image.path("/etc/learn")).unwrap().mode() & 0o7777;
    assert_eq!(dir, 0o755);
    let public = fs::metadata(image.path("/etc/learn/public.conf"))
        .unwrap()
        .mode()
        & 0o7777;
    assert_eq!(public, 0o644);
}

/// The rsyslog injection of the issue: a collector host that closes the
/// string and adds an action of its own, written by root on every role.
const INJECTED_HOST: &str = "127.0.0.1\")\n*.* action(type=\"omfile\" file=\"/root/.ssh/authorized_keys\" template=\"key\")";

fn forward_image() -> Image {
    let source = "templates/base/forward.conf.hbs";
    let text = fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../roles")
            .join(source),
    )
    .unwrap();
    Image::new(
        Boot {
            parameters: Some("/learn/{{env}}/{{role}}".to_string()),
            start: vec!["rsyslog.service".to_string()],
            templates: vec![
                template(
                    source,
                    "/etc/rsyslog.d/50-learn-forward.conf",
                    "0644",
                    "root",
                ),
                template(
                    "templates/worker/public.conf.hbs",
                    "/etc/learn/public.conf",
                    "0644",
                    "root",
                ),
            ],
            health: None,
            ..Default::default()
        },
        &[
            (source, text.as_str()),
            ("templates/worker/public.conf.hbs", "env={{env}}\n"),
        ],
    )
}

#[test]
fn a_parameter_that_would_add_a_line_fails_the_render_and_writes_nothing() {
    let image = forward_image();
    let dir = image.path("/etc/rsyslog.d");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("50-learn-forward.conf"), "previous\n").unwrap();
    let params = image.root().join("params.toml");
    fs::write(
        &params,
        format!(
            "[logs]\nhost = {}\nport = \"10514\"\n",
            toml_string(INJECTED_HOST)
        ),
    )
    .unwrap();
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
    assert!(
        err.contains("template `templates/base/forward.conf.hbs`: the value printed from `params.logs.host` holds a control character"),
        "{err}"
    );
    for leaked in ["authorized_keys", "omfile", "127.0.0.1"] {
        assert!(!err.contains(leaked), "the value leaked: {err}");
    }
    // Nothing written: the previous file stays, no other file appears.
    assert_eq!(
        image.read("/etc/rsyslog.d/50-learn-forward.conf"),
        "previous\n"
    );
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["50-learn-forward.conf"]);
    assert!(!image.path("/etc/learn/public.conf").exists());
    assert_eq!(image.systemctl_log(), "");

    // The same boot with an honest host renders the quoted value.
    fs::write(
        &params,
        "[logs]\nhost = \"logs.internal\"\nport = \"10514\"\n",
    )
    .unwrap();
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
    assert!(out.status.success(), "{}", stderr(&out));
    let conf = image.read("/etc/rsyslog.d/50-learn-forward.conf");
    assert!(
        conf.contains(
            "*.* action(type=\"omfwd\" target=\"logs.internal\" port=\"10514\" protocol=\"tcp\"\n"
        ),
        "{conf}"
    );
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[test]
fn verify_lists_drift_and_fixes_nothing() {
    use imagectl_agent::config::{ImageConfig, ManifestEntry};
    use sha2::{Digest, Sha256};
    let image = worker_image(&[]);
    let files = [
        ("/etc/a.conf", "a\n", "0644"),
        ("/etc/b.conf", "b\n", "0600"),
        ("/etc/c.conf", "c\n", "0644"),
        ("/etc/d.conf", "d\n", "0644"),
    ];
    let mut manifest = Vec::new();
    for (path, text, mode) in files {
        fs::write(image.path(path), text).unwrap();
        let m = u32::from_str_radix(mode, 8).unwrap();
        fs::set_permissions(
            image.path(path),
            std::os::unix::fs::PermissionsExt::from_mode(m),
        )
        .unwrap();
        manifest.push(ManifestEntry {
            path: path.to_string(),
            sha256: Sha256::digest(text)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            mode: mode.to_string(),
            owner: "root".to_string(),
            group: "root".to_string(),
        });
    }
    let config_path = image.path("/etc/imagectl/image.json");
    let mut config: ImageConfig = serde_json::from_slice(&fs::read(&config_path).unwrap()).unwrap();
    config.manifest = manifest;
    fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();

    let out = image.agent(&["verify"], None, None).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok: 4 file(s) match the manifest\n"
    );

    fs::write(image.path("/etc/a.conf"), "edited by hand\n").unwrap();
    fs::set_permissions(
        image.path("/etc/b.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    fs::remove_file(image.path("/etc/c.conf")).unwrap();
    let out = image.agent(&["verify"], None, None).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "changed: /etc/a.conf: contents differ\nchanged: /etc/b.conf: mode 0644, manifest says 0600\nchanged: /etc/c.conf: missing\n"
    );
    // Nothing was fixed.
    assert_eq!(image.read("/etc/a.conf"), "edited by hand\n");
}
