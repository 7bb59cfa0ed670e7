//! Faults between imagectl and AWS: throttling and 500s injected by a proxy
//! in front of moto (tests/fault_proxy.py), and two publishes racing for one
//! channel. Results are read back with boto3 straight from moto, never
//! through the proxy.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};

use crate::aws::{build, change, images, json, parameter, project, slow_proxy};
use crate::errors::{retries, without_retries};
use crate::moto::{python, Moto};
use crate::support::{repo_root, Test};

/// A running tests/fault_proxy.py, killed when dropped.
struct FaultProxy {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` with these fault options.
    fn start(upstream: &str, options: &[&str]) -> FaultProxy {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("requests.log");
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/fault_proxy.py"))
            .args([&port.to_string(), upstream])
            .args(options)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "fault proxy did not start");
        FaultProxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// Every request so far: (action, faulted).
    fn requests(&self) -> Vec<(String, bool)> {
        self.lines()
            .into_iter()
            .map(|fields| (fields[0].clone(), fields[1] == "fault"))
            .collect()
    }

    /// The client token of every request of `action` so far, in order
    /// (empty when it had none).
    fn tokens(&self, action: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|fields| fields[0] == action)
            .map(|fields| {
                fields
                    .iter()
                    .find_map(|f| f.strip_prefix("token="))
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    }

    /// The log's lines, split into fields: action, fault or pass, then
    /// `token=...` when the request had one.
    fn lines(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .filter(|fields| fields.len() >= 2)
            .collect()
    }

    /// How many requests of `action` were answered with a fault.
    fn faults(&self, action: &str) -> usize {
        self.requests()
            .iter()
            .filter(|(a, f)| a == action && *f)
            .count()
    }

    /// Asserts that faults were injected and that every action that got
    /// one was sent again and went through. (Not necessarily its last
    /// request: imagectl stops polling for Packer's build instance, with
    /// DescribeInstances, the moment Packer is done, retries or not; so a
    /// fault of DescribeInstances after Packer's last one needs no retry.)
    fn assert_retried(&self, at_least: usize) {
        let requests = self.requests();
        let faults = requests.iter().filter(|(_, f)| *f).count();
        assert!(
            faults >= at_least,
            "only {faults} faults injected: {requests:?}"
        );
        let packer_done = requests
            .iter()
            .rposition(|(a, _)| a == "TerminateInstances")
            .unwrap_or(requests.len());
        for (i, (action, faulted)) in requests.iter().enumerate() {
            if *faulted && !(action == "DescribeInstances" && i > packer_done) {
                assert!(
                    requests[i..].iter().any(|(a, f)| a == action && !*f),
                    "{action} never went through after a fault: {requests:?}"
                );
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What build, publish and promote left in moto, with AMI IDs replaced by
/// what they are (`home`, `copy`) and build stamps left out, so that two
/// runs compare equal when they did the same.
fn outcome(moto: &Moto, home: &str, copy: &str) -> Value {
    let name = |id: &str| {
        if id == home {
            "home".to_string()
        } else if id == copy {
            "copy".to_string()
        } else {
            id.to_string()
        }
    };
    let mut regions = serde_json::Map::new();
    for region in ["eu-west-1", "eu-central-1"] {
        let mut list = images(moto, region);
        for i in list.as_array_mut().unwrap() {
            let id = i["id"].as_str().unwrap().to_string();
            i["id"] = Value::String(name(&id));
            for tags in ["tags", "snapshot_tags"] {
                let t = i[tags].as_object_mut().unwrap();
                t.remove("imagectl:build");
                t.remove("Name");
            }
        }
        let mut params = serde_json::Map::new();
        for channel in ["dev", "staging", "prod"] {
            let mut p = parameter(moto, region, &format!("/imagectl/app/{channel}"));
            if let Some(v) = p["value"].as_str().map(String::from) {
                p["value"] = Value::String(name(&v));
                p["history"] = p["history"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|h| Value::String(name(h.as_str().unwrap())))
                    .collect();
            }
            params.insert(channel.into(), p);
        }
        let mut lt = launch_template(moto, region);
        let default = lt["default_image"].as_str().unwrap().to_string();
        lt["default_image"] = Value::String(name(&default));
        for v in lt["versions"].as_array_mut().unwrap() {
            let id = v["image"].as_str().unwrap().to_string();
            v["image"] = Value::String(name(&id));
        }
        regions.insert(
            region.into(),
            json!({"images": list, "parameters": params, "launch_template": lt}),
        );
    }
    Value::Object(regions)
}

/// The `app-prod` launch template: its default version and every
/// version's image and metadata options.
fn launch_template(moto: &Moto, region: &str) -> Value {
    moto.boto3(&format!(
        r#"
ec2 = boto3.client("ec2", region_name="{region}")
t = ec2.describe_launch_templates(LaunchTemplateNames=["app-prod"])["LaunchTemplates"][0]
vs = ec2.describe_launch_template_versions(LaunchTemplateName="app-prod")["LaunchTemplateVersions"]
print(json.dumps({{
    "default": t["DefaultVersionNumber"],
    "default_image": [v["LaunchTemplateData"].get("ImageId") for v in vs if v["DefaultVersion"]][0],
    "versions": sorted(({{"version": v["VersionNumber"], "image": v["LaunchTemplateData"].get("ImageId"),
                         "tokens": v["LaunchTemplateData"].get("MetadataOptions", {{}}).get("HttpTokens")}} for v in vs),
                       key=lambda v: v["version"]),
}}))
"#
    ))
}

/// Builds `app`, publishes it to dev and promotes it to prod; returns its
/// AMI in the home and the copy region.
fn build_publish_promote(t: &mut Test) -> (String, String) {
    let (home, copy) = build(t);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    t.ok_with(&["promote", "app", "--from", "dev", "--to", "prod"]);
    (home, copy)
}

#[test]
fn build_publish_and_promote_ride_out_throttling_and_500s_with_the_same_result() {
    // Without faults, for comparison.
    let clean = Moto::start();
    let mut t = project(&clean);
    let (home, copy) = build_publish_promote(&mut t);
    let expected = outcome(&clean, &home, &copy);
    drop(clean);

    let moto = Moto::start();
    let t = project(&moto);
    // Three in ten of the calls imagectl and Packer make throttled, but for
    // DescribeImages: Packer 1.6.6 gives up at once when its source image
    // lookup is throttled, `max_retries` or not. Behind that, the first two
    // DescribeImages (imagectl's lookup by hash), RunInstances and
    // CreateImage (Packer's) throttled, so that both are seen retrying.
    let first = FaultProxy::start(
        &moto.endpoint,
        &[
            "--actions",
            "DescribeImages,RunInstances,CreateImage",
            "--first",
            "2",
        ],
    );
    let throttling = FaultProxy::start(
        &first.url,
        &[
            "--actions",
            "RunInstances,CreateImage,DescribeInstances,DescribeSubnets,DescribeSecurityGroups,\
             CreateKeyPair,DeleteKeyPair,StopInstances,TerminateInstances,DescribeVolumes,\
             CreateTags,CopyImage,ModifyImageAttribute,ModifySnapshotAttribute,\
             ModifyInstanceMetadataOptions,DeregisterImage,DeleteSnapshot,PutParameter,GetParameter",
            "--error",
            "throttle",
            "--rate",
            "0.3",
            "--seed",
            "7",
            // Packer's calls retry 3 times at least (some not at all on
            // throttling after their first answer: the source image lookup,
            // left out above): never more than two throttles in a row per
            // action keep this a test of riding out, not of luck.
            "--max-streak",
            "2",
        ],
    );
    let mut t = t.envs([("AWS_ENDPOINT_URL", throttling.url.clone())]);
    let v = json(&mut t, &["build", "app"]);
    assert_eq!(v["builds"][0]["status"], "built", "{v}");
    throttling.assert_retried(3);
    for action in ["DescribeImages", "RunInstances", "CreateImage"] {
        assert_eq!(first.faults(action), 2, "{action}");
    }
    first.assert_retried(6);

    // Publishing and promoting (SSM's JSON API and EC2's launch templates)
    // behind three in ten answered with a 500.
    let failing = FaultProxy::start(
        &moto.endpoint,
        &["--error", "500", "--rate", "0.3", "--seed", "11"],
    );
    let mut t = t.envs([("AWS_ENDPOINT_URL", failing.url.clone())]);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    t.ok_with(&["promote", "app", "--from", "dev", "--to", "prod"]);
    failing.assert_retried(3);
    assert!(
        failing
            .requests()
            .iter()
            .any(|(a, f)| *f && (a == "PutParameter" || a == "GetParameter")),
        "no SSM call got a 500: {:?}",
        failing.requests()
    );

    let amis = v["builds"][0]["amis"].clone();
    let (home, copy) = (
        amis["eu-west-1"].as_str().unwrap(),
        amis["eu-central-1"].as_str().unwrap(),
    );
    assert_eq!(outcome(&moto, home, copy), expected);
}

/// An answer lost after EC2 acted: the proxy forwards the first
/// CreateLaunchTemplateVersion of each publish to moto, then answers 500.
/// The retry must carry the same client token, by which real EC2 answers
/// it with the version the first request made instead of making a second
/// one. moto ignores client tokens, so what is checked is the token EC2
/// keys on, and that the result is right all the same. (CopyImage is
/// Packer's call, and Packer 1.6.6 sends it without a token.)
#[test]
fn an_answer_lost_after_ec2_acted_is_retried_with_the_same_client_token() {
    let moto = Moto::start();
    let t = project(&moto);
    let lost = FaultProxy::start(
        &moto.endpoint,
        &[
            "--actions",
            "CreateLaunchTemplateVersion",
            "--error",
            "500",
            "--first",
            "1",
            "--after",
        ],
    );
    let mut t = t.envs([("AWS_ENDPOINT_URL", lost.url.clone())]);
    let (home, _) = build(&mut t);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    t.ok_with(&["promote", "app", "--from", "dev", "--to", "prod"]);
    // Publish (to app-dev) and promote (to app-prod): one lost answer and
    // its retry, then one request.
    let action = "CreateLaunchTemplateVersion";
    assert_eq!(lost.faults(action), 1, "{:?}", lost.requests());
    let tokens = lost.tokens(action);
    assert_eq!(tokens.len(), 3, "{tokens:?}");
    assert!(tokens.iter().all(|t| t.len() == 64), "{tokens:?}");
    assert_eq!(tokens[0], tokens[1], "the retry has a new token");
    assert_ne!(tokens[1], tokens[2], "two templates share a token");
    let lt = launch_template(&moto, "eu-west-1");
    assert_eq!(lt["default_image"], home.as_str(), "{lt}");
}

/// A call that never answers (the proxy holds every PutParameter far past
/// the attempt timeout) is abandoned and retried up to the bound, then
/// named; it does not hang the publish. The proxy is stopped before it
/// forwards anything, so the requests never reached AWS and nothing moved.
#[test]
fn a_call_that_never_answers_times_out_and_is_named() {
    let moto = Moto::start();
    let mut t = project(&moto);
    build(&mut t);
    let held = FaultProxy::start(
        &moto.endpoint,
        &["--actions", "PutParameter", "--delay", "600"],
    );
    let mut via = Test::from_tree(t.dir.path()).envs(moto.env()).envs([
        ("AWS_ENDPOINT_URL", held.url.clone()),
        ("AWS_MAX_ATTEMPTS", "2".into()),
        ("IMAGECTL_AWS_ATTEMPT_TIMEOUT", "2".into()),
    ]);
    let r = via.run_with(&["publish", "app", "--channel", "dev"]);
    let puts = held.requests();
    drop(held);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        retries(&r.stderr),
        ["retrying PutParameter in eu-central-1: attempt 2 of 2 (no answer within 2 s)"],
        "{}",
        r.stderr
    );
    assert!(
        without_retries(&r.stderr).starts_with(
            "error: AWS PutParameter in `eu-central-1` failed for `/imagectl/app/dev`: "
        ),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains("no answer within 2 s; gave up after 2 attempts (the bound: set AWS_MAX_ATTEMPTS to change it)"),
        "{}",
        r.stderr
    );
    assert_eq!(
        puts.iter().filter(|(a, _)| a == "PutParameter").count(),
        2,
        "{puts:?}"
    );
    for region in ["eu-west-1", "eu-central-1"] {
        assert!(
            parameter(&moto, region, "/imagectl/app/dev").is_null(),
            "{region} moved"
        );
    }
}

#[test]
fn a_build_throttled_beyond_the_bound_names_the_call_and_builds_nothing() {
    let moto = Moto::start();
    let t = project(&moto);
    let proxy = FaultProxy::start(
        &moto.endpoint,
        &["--actions", "DescribeImages", "--error", "throttle"],
    );
    let mut t = t.envs([
        ("AWS_ENDPOINT_URL", proxy.url.clone()),
        ("AWS_MAX_ATTEMPTS", "3".into()),
    ]);
    let r = t.run_with(&["build", "app", "--publish", "dev"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        retries(&r.stderr),
        [
            "retrying DescribeImages in eu-west-1: attempt 2 of 3 (RequestLimitExceeded, HTTP 503)",
            "retrying DescribeImages in eu-west-1: attempt 3 of 3 (RequestLimitExceeded, HTTP 503)",
        ],
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.lines().last().unwrap(),
        "error: AWS DescribeImages in `eu-west-1` failed for images of role `app`: \
         throttled (`RequestLimitExceeded`: Request limit exceeded.); \
         gave up after 3 attempts (the bound: set AWS_MAX_ATTEMPTS to change it)",
        "{}",
        r.stderr
    );
    assert_eq!(proxy.faults("DescribeImages"), 3);
    let state = moto.boto3(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
ssm = boto3.client("ssm", region_name="eu-west-1")
print(json.dumps({
    "images": len(ec2.describe_images(Owners=["self"])["Images"]),
    "instances": sum(len(r["Instances"]) for r in ec2.describe_instances()["Reservations"]),
    "channel": len(ssm.get_parameters(Names=["/imagectl/app/dev"])["Parameters"]),
}))
"#,
    );
    assert_eq!(
        state,
        json!({"images": 0, "instances": 0, "channel": 0}),
        "{state}"
    );
    assert!(
        !t.path(".imagectl/builds.json").exists(),
        "a build was recorded"
    );
}

#[test]
fn a_publish_failing_beyond_the_bound_names_the_parameter_and_moves_nothing() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let (home, copy) = build(&mut t);
    t.ok_with(&["publish", "app", "--channel", "dev"]);

    // Every PutParameter throttled: the copy region is written first, and
    // fails, so no region moves.
    let throttled = FaultProxy::start(
        &moto.endpoint,
        &["--actions", "PutParameter", "--error", "throttle"],
    );
    let mut via = Test::from_tree(t.dir.path()).envs(moto.env()).envs([
        ("AWS_ENDPOINT_URL", throttled.url.clone()),
        ("AWS_MAX_ATTEMPTS", "3".into()),
    ]);
    let r = via.run_with(&["publish", "app", "--channel", "staging"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        retries(&r.stderr),
        [
            "retrying PutParameter in eu-central-1: attempt 2 of 3 (ThrottlingException, HTTP 400)",
            "retrying PutParameter in eu-central-1: attempt 3 of 3 (ThrottlingException, HTTP 400)",
        ],
        "{}",
        r.stderr
    );
    assert_eq!(
        without_retries(&r.stderr),
        "error: AWS PutParameter in `eu-central-1` failed for `/imagectl/app/staging`: \
         throttled (`ThrottlingException`: Rate exceeded); \
         gave up after 3 attempts (the bound: set AWS_MAX_ATTEMPTS to change it)\n"
    );
    assert_eq!(throttled.faults("PutParameter"), 3);

    // Every PutParameter a 500, for a promote to the channel with a launch
    // template: neither the channel nor the template moves.
    let failing = FaultProxy::start(
        &moto.endpoint,
        &["--actions", "PutParameter", "--error", "500"],
    );
    let mut via = via.envs([("AWS_ENDPOINT_URL", failing.url.clone())]);
    let r = via.run_with(&["promote", "app", "--from", "dev", "--to", "prod"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        retries(&r.stderr),
        [
            "retrying PutParameter in eu-central-1: attempt 2 of 3 (InternalError, HTTP 500)",
            "retrying PutParameter in eu-central-1: attempt 3 of 3 (InternalError, HTTP 500)",
        ],
        "{}",
        r.stderr
    );
    assert_eq!(
        without_retries(&r.stderr),
        "error: AWS PutParameter in `eu-central-1` failed for `/imagectl/app/prod`: \
         AWS failed on its side (`InternalError`: We encountered an internal error. Please try again.); \
         gave up after 3 attempts (the bound: set AWS_MAX_ATTEMPTS to change it)\n"
    );
    for region in ["eu-west-1", "eu-central-1"] {
        for channel in ["staging", "prod"] {
            assert!(
                parameter(&moto, region, &format!("/imagectl/app/{channel}")).is_null(),
                "{region} {channel} moved"
            );
        }
        let lt = launch_template(&moto, region);
        assert_eq!(lt["default"], 1, "{region}: {lt}");
        assert_eq!(
            lt["versions"].as_array().unwrap().len(),
            1,
            "{region}: {lt}"
        );
    }
    let dev = parameter(&moto, "eu-west-1", "/imagectl/app/dev");
    assert_eq!(dev["history"], json!([home]));
    let dev = parameter(&moto, "eu-central-1", "/imagectl/app/dev");
    assert_eq!(dev["history"], json!([copy]));
}

/// Forgets the prod channel and points its launch template back at
/// version 1, in both regions.
fn reset_prod(moto: &Moto) {
    moto.boto3(
        r#"
for region in ["eu-west-1", "eu-central-1"]:
    ssm = boto3.client("ssm", region_name=region)
    try:
        ssm.delete_parameter(Name="/imagectl/app/prod")
    except ssm.exceptions.ParameterNotFound:
        pass
    boto3.client("ec2", region_name=region).modify_launch_template(LaunchTemplateName="app-prod", DefaultVersion="1")
"#,
    );
}

/// Starts `imagectl publish app --channel prod --ami AMI` in the
/// background, through `endpoint` when given. Without the preflight: its
/// own DescribeLaunchTemplates would take the proxy's delay before the
/// channel is read, and the race this file stages is between that read and
/// the write.
fn start_publish(t: &Test, moto: &Moto, ami: &str, endpoint: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagectl"));
    cmd.args([
        "publish",
        "app",
        "--channel",
        "prod",
        "--ami",
        ami,
        "--no-preflight",
    ])
    .current_dir(t.dir.path())
    .env_remove("RUST_LOG")
    .envs(moto.env())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    if let Some(e) = endpoint {
        cmd.env("AWS_ENDPOINT_URL", e);
    }
    cmd.spawn().unwrap()
}

#[test]
fn two_publishes_at_once_leave_the_channel_on_the_newer_image_in_any_order() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let older = build(&mut t);
    // Build stamps and creation times are whole seconds.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    change(&t, 1);
    let newer = build(&mut t);

    // A proxy that holds DescribeLaunchTemplates for 3 s (once per region):
    // a publish behind it has read the channel but writes it only after the
    // other publish, started 1.5 s later, is done. First the older image writes last (it must put the newer one
    // back), then the newer one does; then both at once, a few times.
    let (slow, slow_url) = slow_proxy(&moto, "DescribeLaunchTemplates", "3");
    let _slow = Killed(slow);
    let cases = [
        ("older writes last", Some(true)),
        ("newer writes last", Some(false)),
        ("at once 1", None),
        ("at once 2", None),
        ("at once 3", None),
    ];
    for (case, older_delayed) in cases {
        reset_prod(&moto);
        let (a, b) = match older_delayed {
            Some(true) => (Some(slow_url.as_str()), None),
            Some(false) => (None, Some(slow_url.as_str())),
            None => (None, None),
        };
        // The delayed one starts first and has read the channel by the time
        // the other starts; at once, they start together.
        let (first, second) = if b.is_some() {
            let second = start_publish(&t, &moto, &newer.0, b);
            std::thread::sleep(std::time::Duration::from_millis(1500));
            (start_publish(&t, &moto, &older.0, a), second)
        } else {
            let first = start_publish(&t, &moto, &older.0, a);
            if a.is_some() {
                std::thread::sleep(std::time::Duration::from_millis(1500));
            }
            (first, start_publish(&t, &moto, &newer.0, b))
        };
        let (first, second) = (
            first.wait_with_output().unwrap(),
            second.wait_with_output().unwrap(),
        );
        // At once, the newer publish may be done before the older one
        // reads the channel: then the older one is refused, as it would be
        // any time later, and never writes.
        let refused = older_delayed.is_none()
            && first.status.code() == Some(2)
            && String::from_utf8_lossy(&first.stderr).contains("pass `--allow-older`");
        for (who, out) in [("older", &first), ("newer", &second)] {
            assert!(
                out.status.success() || (who == "older" && refused),
                "{case}: the {who} publish failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if older_delayed == Some(true) {
            let stderr = String::from_utf8_lossy(&first.stderr);
            assert!(
                stderr.contains(&format!(
                    "/imagectl/app/prod in eu-west-1: `{}`, a newer image of `app`, was published at the same time; the channel stays on it",
                    newer.0
                )),
                "{case}: {stderr}"
            );
        }
        for (region, old, new) in [
            ("eu-west-1", &older.0, &newer.0),
            ("eu-central-1", &older.1, &newer.1),
        ] {
            let p = parameter(&moto, region, "/imagectl/app/prod");
            assert_eq!(p["value"], new.as_str(), "{case}, {region}: {p}");
            let history: Vec<&str> = p["history"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap())
                .collect();
            assert!(
                (refused || history.contains(&old.as_str())) && history.contains(&new.as_str()),
                "{case}, {region}: {history:?}"
            );
            if older_delayed == Some(true) {
                assert_eq!(history, [new.as_str(), old, new], "{case}, {region}");
            }
            let lt = launch_template(&moto, region);
            assert_eq!(lt["default_image"], new.as_str(), "{case}, {region}: {lt}");
            for v in lt["versions"].as_array().unwrap().iter().skip(1) {
                assert_eq!(v["tokens"], "required", "{case}, {region}: {lt}");
            }
        }
    }
}

/// A child process killed when this goes out of scope, failed test or not.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_build_runs_packer_again_when_its_source_image_lookup_is_throttled() {
    // Packer 1.6.6 does not retry its source image lookup: imagectl runs
    // it again, since nothing was launched yet.
    let moto = Moto::start();
    let t = project(&moto);
    let proxy = FaultProxy::start(
        &moto.endpoint,
        &[
            "--actions",
            "DescribeImages",
            "--agent",
            "aws-sdk-go/",
            "--first",
            "1",
        ],
    );
    let mut t = t.envs([("AWS_ENDPOINT_URL", proxy.url.clone())]);
    let r = t.run_with(&["build", "app", "--output", "json"]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["builds"][0]["status"], "built", "{v}");
    assert!(
        r.stderr.contains(
            "AWS throttled packer before it launched anything; running it again (2 of 3)"
        ),
        "{}\n{:?}",
        r.stderr,
        proxy.requests()
    );
    assert_eq!(proxy.faults("DescribeImages"), 1);
    proxy.assert_retried(1);
}
