//! Errors that name the fix: Packer's whole error, an unreachable endpoint
//! named with the setting that chose it, missing credentials told apart
//! from a network failure, and no debug dumps on stderr.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::aws::project;
use crate::moto::Moto;
use crate::support::{Run, Test};

/// A port on 127.0.0.1 nobody listens on: connections are refused.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Environment variables that could give a run credentials.
const CREDENTIAL_VARS: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_MAX_ATTEMPTS",
];

/// The fixture project with no AWS settings from this machine but `set`:
/// every other variable that could name credentials or an endpoint
/// removed, no config files, IMDS disabled.
fn isolated(set: &[(&str, &str)]) -> Test {
    let mut t = Test::new();
    for var in CREDENTIAL_VARS {
        if !set.iter().any(|(k, _)| k == var) {
            t = t.env_remove(var);
        }
    }
    t.envs([
        ("AWS_CONFIG_FILE", "/nonexistent"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ])
    .envs(set.iter().copied())
}

/// Test credentials.
const CREDENTIALS: [(&str, &str); 2] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
];

/// Runs `args`, failing the test if it takes longer than `limit`: a guard
/// against hangs, not a measure of speed.
fn run_within(t: &mut Test, args: &[&str], limit: Duration) -> Run {
    let start = Instant::now();
    let r = t.run_with(args);
    let took = start.elapsed();
    assert!(took < limit, "took {took:?}:\n{}", r.stderr);
    r
}

/// Stderr's retry lines with their random backoff taken out:
/// `retrying X in R: attempt 2 of 3 (connection refused)`.
pub(crate) fn retries(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("INFO retrying "))
        .map(|l| {
            let (head, rest) = l.split_once(", next in ").expect("a backoff");
            let (secs, reason) = rest.split_once(" s ").expect("seconds");
            let secs: f64 = secs.parse().expect("a number of seconds");
            assert!((0.0..=20.0).contains(&secs), "{l}");
            format!("retrying {head} {reason}")
        })
        .collect()
}

/// Stderr without its retry lines and the fixture's unsigned-publish warning.
pub(crate) fn without_retries(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.trim().starts_with("INFO retrying "))
        // The fixture signs nothing (tests/integration/provenance.rs does):
        // publish says it once, before it calls anything.
        .filter(|l| !l.trim().starts_with("WARN publishing without verifying"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Debug output of Rust values: what no message may show.
fn assert_no_debug_shapes(stderr: &str) {
    for shape in [
        "Some(",
        "{ ",
        "ErrorMetadata",
        "DispatchFailure",
        "ConnectorError",
    ] {
        assert!(!stderr.contains(shape), "`{shape}` in:\n{stderr}");
    }
}

/// A build whose subnet does not exist: Packer's error reaches imagectl's
/// message whole (its filter, over several lines), with the log's path.
#[test]
fn a_packer_error_is_reported_whole_with_its_log() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let settings = t.path("imagectl.toml");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        text.replace("\"imagectl-build-private\"", "\"no-such-subnet\""),
    )
    .unwrap();
    // The preflight would name the missing subnet before Packer starts
    // (doctor.rs); skipped, so that Packer meets it and says so itself.
    let r = t.run_with(&["build", "app", "--no-preflight"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    let (_, error) = r
        .stderr
        .split_once("error: app: ")
        .unwrap_or_else(|| panic!("no error:\n{}", r.stderr));
    let (error, log) = error
        .split_once("\n  full log: ")
        .unwrap_or_else(|| panic!("no log:\n{}", r.stderr));
    // Packer builds the filters from a Go map: their order varies by run.
    let name = "{\n        Name: \"tag:Name\",\n        Values: [\"no-such-subnet\"]\n      }";
    let state = "{\n        Name: \"state\",\n        Values: [\"available\"]\n      }";
    let whole = |first: &str, second: &str| {
        format!(
            "packer build of `app` failed (exit code 1):\n  \
             amazon-ebs.app: No Subnets was found matching filters: {{\n    \
             Filters: [{first},{second}]\n  \
             }}"
        )
    };
    assert!(
        error == whole(name, state) || error == whole(state, name),
        "{}",
        r.stderr
    );
    let log = log.strip_suffix('\n').unwrap();
    let rel = log
        .strip_prefix("[ROOT]/")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        rel.starts_with(".imagectl/builds/app-") && rel.ends_with("/packer.log"),
        "{log}"
    );
    let text = std::fs::read_to_string(t.path(rel)).unwrap();
    assert!(
        text.contains("No Subnets was found matching filters"),
        "{text}"
    );
}

/// A dead endpoint named in `AWS_ENDPOINT_URL`: each retry is told as it is
/// decided, a failed connection is tried three times (not the eight of
/// the retry bound), and the error names the endpoint and the setting.
#[test]
fn an_unreachable_endpoint_is_named_with_its_origin_and_retries_are_shown() {
    let port = closed_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut t = isolated(&[CREDENTIALS[0], CREDENTIALS[1], ("AWS_ENDPOINT_URL", &url)]);
    // Three refused attempts with at most 1 s and 2 s between them: ~3 s.
    let r = run_within(&mut t, &["images"], Duration::from_secs(30));
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        retries(&r.stderr),
        [
            "retrying DescribeImages in eu-west-1: attempt 2 of 3 (connection refused)",
            "retrying DescribeImages in eu-west-1: attempt 3 of 3 (connection refused)",
        ],
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.lines().last().unwrap(),
        format!(
            "error: AWS DescribeImages in `eu-west-1` failed for imagectl's images: \
             cannot reach the EC2 endpoint {url} (from AWS_ENDPOINT_URL): connection refused (3 attempts); \
             check that the emulator or proxy it names is running, or `unset AWS_ENDPOINT_URL` to use AWS"
        ),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("gave up"), "{}", r.stderr);

    // A lower bound is kept, and a service's own variable is named.
    let mut t = isolated(&[
        CREDENTIALS[0],
        CREDENTIALS[1],
        ("AWS_ENDPOINT_URL_EC2", &url),
        ("AWS_MAX_ATTEMPTS", "2"),
    ]);
    let r = run_within(&mut t, &["images"], Duration::from_secs(30));
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        retries(&r.stderr),
        ["retrying DescribeImages in eu-west-1: attempt 2 of 2 (connection refused)"],
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.ends_with(&format!(
            "cannot reach the EC2 endpoint {url} (from AWS_ENDPOINT_URL_EC2): connection refused (2 attempts); \
             check that the emulator or proxy it names is running, or `unset AWS_ENDPOINT_URL_EC2` to use AWS\n"
        )),
        "{}",
        r.stderr
    );
}

/// An endpoint from the profile's `endpoint_url` is named as the profile's.
#[test]
fn an_endpoint_from_a_profile_names_the_profile() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aws-config");
    std::fs::write(
        &config,
        format!("[profile ci]\nregion = eu-west-1\nendpoint_url = {url}\n"),
    )
    .unwrap();
    let mut t = isolated(&[
        CREDENTIALS[0],
        CREDENTIALS[1],
        ("AWS_CONFIG_FILE", config.to_str().unwrap()),
        ("AWS_PROFILE", "ci"),
        ("AWS_MAX_ATTEMPTS", "1"),
    ]);
    let r = run_within(&mut t, &["images"], Duration::from_secs(30));
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        format!(
            "error: AWS DescribeImages in `eu-west-1` failed for imagectl's images: \
             cannot reach the EC2 endpoint {url} (from the `endpoint_url` of profile `ci`): connection refused; \
             check the `endpoint_url` of profile `ci` in the AWS config file, or remove it to use AWS\n"
        )
    );
}

/// No credentials anywhere: said at once, with the providers tried and
/// what to do; not retried, not taken for a network failure.
#[test]
fn missing_credentials_are_their_own_error_and_not_retried() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let mut t = isolated(&[("AWS_ENDPOINT_URL", &url)]);
    let r = run_within(&mut t, &["images"], Duration::from_secs(10));
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "error: AWS DescribeImages in `eu-west-1` failed for imagectl's images: \
         no AWS credentials found; not retried; tried:\n  \
         environment variables AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: environment variable not set\n  \
         profile `default` in /nonexistent and /nonexistent: none there\n  \
         web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN): $AWS_WEB_IDENTITY_TOKEN_FILE was not set\n  \
         ECS container credentials: ECS provider not configured\n  \
         EC2 instance metadata (IMDS): IMDS disabled by AWS_EC2_METADATA_DISABLED env var set to `true`\n  \
         to fix: `export AWS_PROFILE=NAME` to use a profile of ~/.aws/config \
         (and `aws sso login --profile NAME` when it uses SSO), or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY\n"
    );
}

/// The SDK's own warnings carry Debug dumps (a credential provider that
/// failed, with its nested error structs): below -vv they are not shown,
/// and imagectl's messages never have them, at any verbosity.
#[test]
fn no_message_shows_debug_output_at_any_verbosity() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    // IMDS enabled but refusing: the case that logged a Debug dump.
    let imds = format!("http://127.0.0.1:{}", closed_port());
    let mut t = isolated(&[
        ("AWS_ENDPOINT_URL", &url),
        ("AWS_EC2_METADATA_DISABLED", "false"),
        ("AWS_EC2_METADATA_ENDPOINT", &imds),
    ]);
    for args in [&["images"][..], &["images", "-v"]] {
        let r = run_within(&mut t, args, Duration::from_secs(30));
        assert_eq!(r.status, 1, "{}", r.stderr);
        assert_no_debug_shapes(&r.stderr);
        assert!(
            r.stderr.starts_with(
                "error: AWS DescribeImages in `eu-west-1` failed for imagectl's images: \
                 cannot load AWS credentials: "
            ),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr
                .contains("\n  tried in turn: environment variables"),
            "{}",
            r.stderr
        );
        assert!(!r.stderr.contains("attempt"), "{}", r.stderr);
    }
    // -vv shows the SDK's logs too; with nothing failing inside the SDK's
    // credential chain, none of what is printed is a Debug dump.
    for mut t in [
        isolated(&[CREDENTIALS[0], CREDENTIALS[1], ("AWS_ENDPOINT_URL", &url)]),
        isolated(&[("AWS_ENDPOINT_URL", &url)]),
    ] {
        let r = run_within(&mut t, &["images", "-vv"], Duration::from_secs(30));
        assert_eq!(r.status, 1, "{}", r.stderr);
        assert_no_debug_shapes(&r.stderr);
    }
}
