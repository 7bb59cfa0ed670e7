//! The local target against Debian's mirror, mmdebstrap and systemd-nspawn:
//! a real root filesystem, provisioned by the same script as an AMI, booted
//! with the agent in local mode. Needs root (as CI runs).

use crate::support::{repo_root, Test};

fn tiny() -> Test {
    Test::from_tree(&repo_root().join("tests/fixtures/local"))
}

#[test]
fn a_role_builds_once_boots_and_passes_its_test() {
    let mut t = tiny();
    let hash = t.hash("tiny");
    let v: serde_json::Value = serde_json::from_str(
        &t.ok_with(&["build", "tiny", "--target", "local", "--output", "json"]),
    )
    .unwrap();
    let image = &v["images"][0];
    assert_eq!(image["built"], true, "{v}");
    let tar = t.path(&format!("images/local/tiny-{}.tar", &hash[..12]));
    assert!(tar.is_file());
    // SHA256SUMS says so, in the form sha256sum -c checks.
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(t.path("images/local"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    // The image has no trace of this machine's identity.
    let list = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tar)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        !list
            .lines()
            .any(|l| l == "./etc/hostname" || l == "./etc/resolv.conf"),
        "host files in the image"
    );
    assert!(list.lines().any(|l| l == "./usr/local/bin/imagectl-agent"));

    // Reproducible: another checkout, building with an empty package cache,
    // gets the same bytes (SOURCE_DATE_EPOCH is the base image's date).
    let cache = tempfile::tempdir().unwrap();
    let mut again = tiny().envs([(
        "IMAGECTL_APT_CACHE",
        cache.path().to_str().unwrap().to_string(),
    )]);
    let v2: serde_json::Value = serde_json::from_str(
        &again.ok_with(&["build", "tiny", "--target", "local", "--output", "json"]),
    )
    .unwrap();
    assert_eq!(
        v2["images"][0]["sha256"], image["sha256"],
        "two builds of the same role differ"
    );

    // An OCI archive of the same root filesystem: its digests check out
    // (read back by Python, not by imagectl).
    t.ok_with(&["build", "tiny", "--target", "local", "--format", "oci"]);
    let oci = t.path(&format!("images/local/tiny-{}.oci.tar", &hash[..12]));
    let checked = crate::moto::python_json(&format!(
        r#"
import hashlib, json, tarfile
t = tarfile.open({oci:?})
blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":")[1]).read()
index = json.loads(t.extractfile("index.json").read())
m = index["manifests"][0]
manifest = blob(m["digest"])
assert hashlib.sha256(manifest).hexdigest() == m["digest"].split(":")[1]
manifest = json.loads(manifest)
config = blob(manifest["config"]["digest"])
assert hashlib.sha256(config).hexdigest() == manifest["config"]["digest"].split(":")[1]
layer = manifest["layers"][0]
print(json.dumps({{"layout": json.loads(t.extractfile("oci-layout").read()), "ref": m["annotations"]["org.opencontainers.image.ref.name"],
  "layer": layer["digest"], "diff_ids": json.loads(config)["rootfs"]["diff_ids"], "cmd": json.loads(config)["config"]["Cmd"]}}))
"#,
        oci = oci.to_str().unwrap()
    ));
    let layer = format!("sha256:{}", image["sha256"].as_str().unwrap());
    assert_eq!(checked["layout"]["imageLayoutVersion"], "1.0.0");
    assert_eq!(checked["ref"], format!("tiny:{}", &hash[..12]));
    assert_eq!(checked["layer"], layer.as_str());
    assert_eq!(checked["diff_ids"][0], layer.as_str());
    assert_eq!(checked["cmd"][0], "/sbin/init");
    // And the library podman reads images with (containers/image, run
    // through skopeo) copies it, checking every digest on the way.
    let copied = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--quiet"])
        .arg(format!("oci-archive:{}", oci.display()))
        .arg(format!("dir:{}", copied.path().display()))
        .output()
        .expect("skopeo (scripts/setup installs it)");
    assert!(
        out.status.success(),
        "skopeo refused the OCI archive: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layer_file = copied.path().join(image["sha256"].as_str().unwrap());
    assert!(
        layer_file.is_file(),
        "skopeo copied no layer {}",
        layer_file.display()
    );

    // The same hash is not built twice.
    let r = t.run_with(&["build", "tiny", "--target", "local"]);
    assert_eq!(r.status, 0);
    assert!(r.stdout.contains("tiny         exists"), "{}", r.stdout);

    let r = t.run_with(&["test", "tiny"]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    for line in [
        "pass agent  imagectl-agent.service",
        "pass check  netcat is installed",
        "pass unit   tiny.service",
    ] {
        assert!(r.stdout.contains(line), "{line} not in\n{}", r.stdout);
    }
    assert!(
        r.stdout.contains("\"status\":\"ok\""),
        "the agent's report: {}",
        r.stdout
    );
    assert!(r.stdout.contains("tiny: 3 of 3 passed"), "{}", r.stdout);
}

#[test]
fn a_failing_check_service_or_parameter_fails_the_test_and_is_named() {
    let mut t = tiny();
    // A parameter the template needs is missing.
    std::fs::write(t.path("missing.toml"), "other = \"x\"\n").unwrap();
    let r = t.run_with(&["test", "tiny", "--params", "missing.toml"]);
    assert_eq!(r.status, 1, "{}", r.stdout);
    assert!(
        r.stdout.contains("FAIL agent  imagectl-agent.service"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("params.greeting"),
        "the agent names the parameter: {}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains("test of `tiny` failed: agent `imagectl-agent.service`"),
        "{}",
        r.stderr
    );

    // A sidecar that cannot start is named, with what to install. `[test]`
    // is not part of the image, so the image is not built again.
    let role = std::fs::read_to_string(t.path("roles/tiny.toml")).unwrap();
    std::fs::write(
        t.path("roles/tiny.toml"),
        format!("{role}\n[test]\nsidecars = [\"no-such-daemon --port 1\"]\n"),
    )
    .unwrap();
    let r = t.run_with(&["test", "tiny"]);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("sidecar `no-such-daemon --port 1` exited at once")
            && r.stderr
                .contains("`no-such-daemon` is not installed on this machine"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("mmdebstrap"), "rebuilt: {}", r.stderr);
    std::fs::write(t.path("roles/tiny.toml"), &role).unwrap();

    // A service that does not start: the agent's health check fails and
    // the unit is named, with its journal.
    std::fs::write(
        t.path("roles/files/tiny.service"),
        "[Unit]\nDescription=broken\n\n[Service]\nType=simple\nExecStart=/nonexistent/binary\n",
    )
    .unwrap();
    let r = t.run_with(&["test", "tiny"]);
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("FAIL unit   tiny.service"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("--- journal of tiny.service ---"),
        "{}",
        r.stdout
    );
    assert!(r.stderr.contains("unit `tiny.service`"), "{}", r.stderr);

    // A check that fails: the build stops there, naming it.
    let role = std::fs::read_to_string(t.path("roles/tiny.toml")).unwrap();
    let role = role.replace(
        "run = \"command -v nc\"",
        "run = \"command -v nc && test -e /etc/not-there\"",
    );
    std::fs::write(t.path("roles/tiny.toml"), &role).unwrap();
    let r = t.run_with(&["test", "tiny"]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("mmdebstrap failed for `tiny`"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .contains(": check failed: netcat is installed; its log: "),
        "{}",
        r.stderr
    );
    let log = std::fs::read_dir(t.path("images/local"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect::<String>();
    assert!(
        log.contains("imagectl: check failed: netcat is installed"),
        "{log}"
    );
}

/// Builds one of the repository's own roles from Debian's mirror and runs
/// `imagectl test` on it: the packages install, the release unpacks, the
/// checks pass, the units run (beside the role's sidecars) and the agent
/// renders its templates from the role's example parameters.
fn real_role_passes(role: &str, expect: &[&str]) {
    let mut t = Test::repo();
    let r = t.run_with(&["test", role]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    for line in expect {
        assert!(r.stdout.contains(line), "{line} not in\n{}", r.stdout);
    }
    assert!(
        r.stdout.contains("\"status\":\"ok\""),
        "the agent's report: {}",
        r.stdout
    );
    assert!(!r.stdout.contains("FAIL"), "{}", r.stdout);
}

#[test]
fn the_worker_role_runs_sidekiq_against_its_redis_sidecar() {
    real_role_passes(
        "worker",
        &[
            "pass check  the release's gems are all installed",
            "pass check  the release boots",
            "pass unit   sidekiq.service",
        ],
    );
}

#[test]
fn the_web_role_serves_the_release_through_nginx() {
    real_role_passes(
        "web",
        &[
            "pass check  nginx configuration is valid",
            "pass unit   nginx.service",
            "pass unit   puma.service",
        ],
    );
}

#[test]
fn the_pushstream_role_passes_its_test() {
    real_role_passes("pushstream", &["pass unit   nginx.service"]);
}
