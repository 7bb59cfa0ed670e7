//! The agent's fault suite: the real binary with IMDS or SSM down, SSM
//! throttling or failing (`tests/fault_proxy.py` in front of moto), a full
//! disk while writing, and SIGKILL between rendering and renaming. Each
//! checks the exit status, the error, the step the report names, and that
//! the previous configuration is intact.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Output;

use common::*;
use imagectl_agent::config::Boot;

const APP_ENV: &str = "DATABASE_URL={{params.db.url}}\nSECRET={{params.app.secret}}\n";
const PUBLIC_CONF: &str = "env={{env}} role={{role}} instance={{instance.id}}\n";
const DB_URL: &str = "postgres://learn:hunter2@db.internal/learn";
const SECRET: &str = "s3cr3t-value";

const PREVIOUS_APP: &str = "DATABASE_URL=postgres://old\nSECRET=old\n";
const PREVIOUS_PUBLIC: &str = "env=prod role=worker instance=i-old\n";

/// The parameter path as the agent renders it for `env = "prod"`.
const PATH: &str = "/learn/prod/worker";

fn fault_image() -> Image {
    let image = Image::new(
        Boot {
            parameters: Some("/learn/{{env}}/{{role}}".to_string()),
            start: vec!["app.service".to_string()],
            templates: vec![
                template(
                    "templates/app.env.hbs",
                    "/etc/learn/app.env",
                    "0600",
                    "learn",
                ),
                template(
                    "templates/public.conf.hbs",
                    "/etc/learn/public.conf",
                    "0644",
                    "root",
                ),
            ],
            health: health_command("true", 5),
            ..Default::default()
        },
        &[
            ("templates/app.env.hbs", APP_ENV),
            ("templates/public.conf.hbs", PUBLIC_CONF),
        ],
    );
    // The configuration a previous boot rendered.
    fs::create_dir_all(image.path("/etc/learn")).unwrap();
    fs::write(image.path("/etc/learn/app.env"), PREVIOUS_APP).unwrap();
    fs::write(image.path("/etc/learn/public.conf"), PREVIOUS_PUBLIC).unwrap();
    image
}

fn prod_params() -> Vec<(String, String)> {
    vec![
        (format!("{PATH}/db/url"), DB_URL.to_string()),
        (format!("{PATH}/app/secret"), SECRET.to_string()),
    ]
}

fn new_app() -> String {
    format!("DATABASE_URL={DB_URL}\nSECRET={SECRET}\n")
}

const NEW_PUBLIC: &str = "env=prod role=worker instance=i-0abc123def4567890\n";

fn prod_imds() -> Server {
    imds(ImdsBehaviour {
        user_data: Some("env = \"prod\"\n".to_string()),
        refuse_tokens: false,
        ..Default::default()
    })
}

/// The hidden files in `/etc/learn`: temporary files left behind.
fn temp_files(image: &Image) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(image.path("/etc/learn"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    names.sort();
    names
}

fn assert_previous_config(image: &Image) {
    assert_eq!(image.read("/etc/learn/app.env"), PREVIOUS_APP);
    assert_eq!(image.read("/etc/learn/public.conf"), PREVIOUS_PUBLIC);
    assert_eq!(temp_files(image), Vec::<String>::new());
}

/// `(name, status)` of every step in the report.
fn steps(report: &serde_json::Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn step_list(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Runs a boot that must fail at `step`; checks the exit status, that the
/// report and the log name the step and the same error, that nothing was
/// started and no value leaked. Returns the error and stderr.
fn failed_at(out: Output, image: &Image, step: &str) -> (String, String) {
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let report = image.report();
    assert_eq!(report["status"], "failed", "{report}");
    assert_eq!(report["failed_step"], step, "{report}");
    let error = report["error"].as_str().unwrap().to_string();
    assert!(
        err.contains(&format!(
            "imagectl-agent: error: boot failed at step `{step}`: {error}\n"
        )),
        "{err}"
    );
    assert_eq!(
        image.systemctl_log(),
        "",
        "nothing may start after a failure"
    );
    for text in [&err, &report.to_string()] {
        assert!(
            !text.contains("hunter2") && !text.contains(SECRET),
            "{text}"
        );
    }
    (error, err)
}

/// Runs a boot that must succeed and checks the new configuration is in
/// place, whole, and nothing is left behind.
fn assert_booted(out: Output, image: &Image) {
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(image.read("/etc/learn/app.env"), new_app());
    assert_eq!(image.read("/etc/learn/public.conf"), NEW_PUBLIC);
    assert_eq!(temp_files(image), Vec::<String>::new());
    let report = image.report();
    assert_eq!(report["status"], "ok", "{report}");
    assert_eq!(report["failed_step"], serde_json::Value::Null);
    assert_eq!(image.systemctl_log(), "restart -- app.service\n");
}

/// Steps up to `failed` ok, then `failed` failed.
fn failed_steps(ok: &[&str], failed: &str) -> Vec<(String, String)> {
    let mut v: Vec<(&str, &str)> = ok.iter().map(|s| (*s, "ok")).collect();
    v.push((failed, "failed"));
    step_list(&v)
}

/// An SSM boot against `ssm` (moto, or the fault proxy in front of it).
fn ssm_boot(image: &Image, imds: &Server, ssm: &str) -> Output {
    image
        .agent(&["boot"], Some(&imds.url()), Some(ssm))
        .output()
        .unwrap()
}

fn moto_with_params() -> Moto {
    let moto = Moto::start();
    moto.put_parameters(&prod_params());
    moto
}

// IMDS down.

#[test]
fn imds_refusing_connections_fails_at_identity_and_keeps_the_previous_files() {
    let image = fault_image();
    let imds = format!("http://127.0.0.1:{}", closed_port());
    let out = image.agent(&["boot"], Some(&imds), None).output().unwrap();
    let (error, _) = failed_at(out, &image, "identity");
    assert_eq!(
        error,
        "instance metadata service: cannot get an IMDSv2 session token after up to 5 attempts \
         (dispatch failure: io error: client error (Connect): tcp connect error: \
         Connection refused (os error 111))"
    );
    assert_eq!(
        steps(&image.report()),
        failed_steps(&["config"], "identity")
    );
    assert_previous_config(&image);
}

#[test]
fn imds_answering_500_fails_at_identity_after_5_attempts() {
    let image = fault_image();
    let imds = Server::start(|_, _| ("500 Internal Server Error".to_string(), vec![], vec![]));
    let out = image
        .agent(&["boot"], Some(&imds.url()), None)
        .output()
        .unwrap();
    let (error, _) = failed_at(out, &image, "identity");
    assert_eq!(
        error,
        "instance metadata service: cannot get an IMDSv2 session token after up to 5 attempts \
         (`PUT /latest/api/token` answered HTTP 500)"
    );
    assert_eq!(imds.hits(), 5);
    assert_eq!(
        steps(&image.report()),
        failed_steps(&["config"], "identity")
    );
    assert_previous_config(&image);
}

/// Every token request times out (2 s read timeout), so the token's five
/// tries with backoff outlast the SDK's default 10 s attempt timeout of the
/// read that needs the token. That must not start a second round of token
/// requests: the bound is 5 requests, not 5 per read attempt.
#[test]
fn imds_timing_out_stays_within_5_token_requests() {
    let image = fault_image();
    let imds = Server::start(|_, _| {
        std::thread::sleep(std::time::Duration::from_millis(2500));
        ("500 Internal Server Error".to_string(), vec![], vec![])
    });
    let out = image
        .agent(&["boot"], Some(&imds.url()), None)
        .output()
        .unwrap();
    let (error, _) = failed_at(out, &image, "identity");
    assert!(
        error.starts_with(
            "instance metadata service: cannot get an IMDSv2 session token after up to 5 attempts"
        ),
        "{error}"
    );
    assert!(error.contains("timeout"), "{error}");
    assert_eq!(imds.hits(), 5, "{:?}", imds.log.lock().unwrap());
    assert_previous_config(&image);
}

#[test]
fn imds_answering_500_twice_is_retried_and_the_boot_succeeds() {
    let moto = moto_with_params();
    let inner = prod_imds();
    let inner_port = inner.port;
    let imds = Server::start(move |req, n| {
        if n < 2 {
            ("500 Internal Server Error".to_string(), vec![], vec![])
        } else {
            forward(inner_port, req)
        }
    });
    let image = fault_image();
    assert_booted(ssm_boot(&image, &imds, &moto.url), &image);
    // Two failed token requests, then one token, used for every read.
    assert_eq!(imds.hits(), 6);
    assert_eq!(
        inner.log.lock().unwrap().clone(),
        [
            "PUT /latest/api/token token=false",
            "GET /latest/dynamic/instance-identity/document token=true",
            "GET /latest/user-data token=true",
            "GET /latest/meta-data/tags/instance token=true",
        ]
    );
}

#[test]
fn imds_dropping_connections_twice_is_retried_and_the_boot_succeeds() {
    // Before the fix the SDK's IMDS client retried only HTTP errors: one
    // dropped connection early in boot failed the boot.
    let moto = moto_with_params();
    let inner = prod_imds();
    let inner_port = inner.port;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let dropped2 = dropped.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let Some(req) = read_request(&mut s) else {
                continue;
            };
            if dropped2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 2 {
                // Read, then closed without a word.
                drop(s);
                continue;
            }
            let (status, headers, body) = forward(inner_port, &req);
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            respond(&mut s, &status, &headers, &body);
        }
    });
    let image = fault_image();
    let out = image
        .agent(
            &["boot"],
            Some(&format!("http://127.0.0.1:{port}")),
            Some(&moto.url),
        )
        .output()
        .unwrap();
    assert_booted(out, &image);
    assert_eq!(dropped.load(std::sync::atomic::Ordering::SeqCst), 6);
    assert_eq!(inner.hits(), 4);
}

// SSM down, throttled, failing.

/// A boot failed at `parameters` for `reason`; the `autoscaling` step
/// after it ended `told` (`ok`, or `failed` when the endpoint is down).
fn ssm_failure(image: &Image, out: Output, reason: &str, told: &str) {
    let (error, _) = failed_at(out, image, "parameters");
    assert_eq!(
        error,
        format!("SSM GetParametersByPath `{PATH}` failed after up to 5 attempts: {reason}")
    );
    let report = image.report();
    let mut expected = failed_steps(&["config", "identity"], "parameters");
    expected.extend(step_list(&[("autoscaling", told)]));
    assert_eq!(steps(&report), expected);
    assert_eq!(report["instance"], "i-0abc123def4567890");
    assert_previous_config(image);
}

#[test]
fn ssm_refusing_connections_fails_at_parameters_naming_the_path() {
    let imds = prod_imds();
    let image = fault_image();
    let ssm = format!("http://127.0.0.1:{}", closed_port());
    let out = ssm_boot(&image, &imds, &ssm);
    ssm_failure(
        &image,
        out,
        "dispatch failure: io error: client error (Connect): tcp connect error: \
         Connection refused (os error 111)",
        "failed",
    );
}

fn proxied(moto: &Moto, error: &str, first: Option<usize>) -> FaultProxy {
    let first = first.map(|n| n.to_string());
    let mut args = vec!["--actions", "GetParametersByPath", "--error", error];
    if let Some(n) = &first {
        args.extend(["--first", n.as_str()]);
    }
    FaultProxy::start(&moto.url, &args)
}

/// What the proxy saw: SSM's requests, then the `autoscaling` step's
/// lookup (moto has no group: nothing more to tell).
fn requests(faults: usize, passes: usize) -> Vec<String> {
    let mut v = vec!["GetParametersByPath fault".to_string(); faults];
    v.extend(vec!["GetParametersByPath pass".to_string(); passes]);
    v.push("DescribeAutoScalingInstances pass".to_string());
    v
}

#[test]
fn ssm_throttled_twice_is_retried_and_the_boot_succeeds() {
    let moto = moto_with_params();
    let proxy = proxied(&moto, "throttle", Some(2));
    let imds = prod_imds();
    let image = fault_image();
    assert_booted(ssm_boot(&image, &imds, &proxy.url), &image);
    assert_eq!(proxy.requests(), requests(2, 1));
}

#[test]
fn ssm_answering_500_twice_is_retried_and_the_boot_succeeds() {
    let moto = moto_with_params();
    let proxy = proxied(&moto, "500", Some(2));
    let imds = prod_imds();
    let image = fault_image();
    assert_booted(ssm_boot(&image, &imds, &proxy.url), &image);
    assert_eq!(proxy.requests(), requests(2, 1));
}

#[test]
fn ssm_throttled_4_times_succeeds_on_the_5th_and_last_attempt() {
    let moto = moto_with_params();
    let proxy = proxied(&moto, "throttle", Some(4));
    let imds = prod_imds();
    let image = fault_image();
    assert_booted(ssm_boot(&image, &imds, &proxy.url), &image);
    assert_eq!(proxy.requests(), requests(4, 1));
}

#[test]
fn ssm_throttled_5_times_fails_at_parameters_naming_ssm_and_the_path() {
    let moto = moto_with_params();
    let proxy = proxied(&moto, "throttle", Some(5));
    let imds = prod_imds();
    let image = fault_image();
    let out = ssm_boot(&image, &imds, &proxy.url);
    ssm_failure(&image, out, "ThrottlingException: Rate exceeded", "ok");
    assert_eq!(proxy.requests(), requests(5, 0));
}

#[test]
fn ssm_answering_500_persistently_fails_at_parameters_naming_ssm_and_the_path() {
    let moto = moto_with_params();
    let proxy = proxied(&moto, "500", None);
    let imds = prod_imds();
    let image = fault_image();
    let out = ssm_boot(&image, &imds, &proxy.url);
    ssm_failure(
        &image,
        out,
        "InternalError: We encountered an internal error. Please try again.",
        "ok",
    );
    assert_eq!(proxy.requests(), requests(5, 0));
}

// A full disk.

#[test]
fn a_full_disk_fails_at_write_naming_the_file_and_keeps_the_previous_files() {
    if !is_root() {
        eprintln!("skipped: mounting a small tmpfs for /etc/learn needs root");
        return;
    }
    let image = fault_image();
    // /etc/learn on a tmpfs of 16 pages holding the previous files, then
    // filled up to one free page: room for the first new file, not for
    // the second.
    let dir = image.path("/etc/learn");
    let _tmpfs = Tmpfs::mount(&dir, 16 * 4096);
    fs::write(dir.join("app.env"), PREVIOUS_APP).unwrap();
    fs::write(dir.join("public.conf"), PREVIOUS_PUBLIC).unwrap();
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = fs::File::create(&filler).unwrap();
        let page = [b'x'; 4096];
        while f.write_all(&page).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len / 4096 * 4096 - 4096).unwrap();
    }
    let params = image.root().join("params.toml");
    fs::write(
        &params,
        format!("[db]\nurl = \"{DB_URL}\"\n[app]\nsecret = \"{SECRET}\"\n"),
    )
    .unwrap();
    let out = image
        .agent(
            &[
                "boot",
                "--params",
                params.to_str().unwrap(),
                "--env",
                "prod",
            ],
            None,
            None,
        )
        .output()
        .unwrap();
    let (error, _) = failed_at(out, &image, "write");
    assert_eq!(
        error,
        format!(
            "cannot write `{}` (temporary file `.public.conf.imagectl-agent.tmp`; \
             the previous file is left as it was): No space left on device (os error 28)",
            dir.join("public.conf").display()
        )
    );
    assert_eq!(
        steps(&image.report()),
        failed_steps(&["config", "parameters", "render"], "write")
    );
    // Neither file replaced, and the first file's finished temporary file
    // removed with the second's.
    assert_previous_config(&image);
}

// SIGKILL between rendering and renaming.

/// Starts a boot that stops at `failpoint`, checks what it staged, and
/// kills it with SIGKILL.
fn boot_killed_at(image: &Image, imds: &Server, ssm: &str, failpoint: &str) {
    let mut cmd = image.agent(&["boot"], Some(&imds.url()), Some(ssm));
    cmd.env("IMAGECTL_AGENT_FAILPOINT", failpoint);
    let (mut child, _) = spawn_until(cmd, &format!("failpoint `{failpoint}` reached"));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status}");
    // The report written as the write step began says where it stopped.
    let report = image.report();
    assert_eq!(report["status"], "running", "{report}");
    assert_eq!(report["running_step"], "write", "{report}");
    assert_eq!(
        steps(&report),
        step_list(&[
            ("config", "ok"),
            ("identity", "ok"),
            ("parameters", "ok"),
            ("render", "ok"),
        ])
    );
    assert_eq!(image.systemctl_log(), "");
}

fn mode(image: &Image, abs: &str) -> u32 {
    fs::metadata(image.path(abs)).unwrap().mode() & 0o7777
}

#[test]
fn sigkill_before_rename_leaves_every_file_old_and_the_next_boot_succeeds() {
    let moto = moto_with_params();
    let imds = prod_imds();
    let image = fault_image();
    boot_killed_at(&image, &imds, &moto.url, "before-rename");
    assert_eq!(image.read("/etc/learn/app.env"), PREVIOUS_APP);
    assert_eq!(image.read("/etc/learn/public.conf"), PREVIOUS_PUBLIC);
    // Both new files were complete (written and fsynced) when it died;
    // the secret one readable by its owner only.
    assert_eq!(
        temp_files(&image),
        [
            ".app.env.imagectl-agent.tmp",
            ".public.conf.imagectl-agent.tmp"
        ]
    );
    assert_eq!(
        image.read("/etc/learn/.app.env.imagectl-agent.tmp"),
        new_app()
    );
    assert_eq!(
        mode(&image, "/etc/learn/.app.env.imagectl-agent.tmp"),
        0o600
    );
    assert_eq!(
        image.read("/etc/learn/.public.conf.imagectl-agent.tmp"),
        NEW_PUBLIC
    );

    assert_booted(ssm_boot(&image, &imds, &moto.url), &image);
    assert_eq!(
        image.report()["changed"],
        serde_json::json!(["/etc/learn/app.env", "/etc/learn/public.conf"])
    );
    assert_eq!(mode(&image, "/etc/learn/app.env"), 0o600);
}

#[test]
fn sigkill_between_renames_leaves_each_file_whole_and_the_next_boot_succeeds() {
    let moto = moto_with_params();
    let imds = prod_imds();
    let image = fault_image();
    boot_killed_at(&image, &imds, &moto.url, "between-renames");
    // The first file entirely new, the second entirely old.
    assert_eq!(image.read("/etc/learn/app.env"), new_app());
    assert_eq!(mode(&image, "/etc/learn/app.env"), 0o600);
    assert_eq!(image.read("/etc/learn/public.conf"), PREVIOUS_PUBLIC);
    assert_eq!(temp_files(&image), [".public.conf.imagectl-agent.tmp"]);

    assert_booted(ssm_boot(&image, &imds, &moto.url), &image);
    assert_eq!(
        image.report()["changed"],
        serde_json::json!(["/etc/learn/public.conf"])
    );
}
