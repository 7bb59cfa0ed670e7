//! Packer templates, base image pins and the staged build context, checked
//! with the real tools: Debian's Packer 1.6.6, shellcheck, moto.

use std::path::Path;
use std::process::Command;

use crate::moto::Moto;
use crate::support::{repo_root, Test};

/// Every variable a template declares, with a value, for `packer validate`.
const VARS: [&str; 6] = [
    "content_hash=0000000000000000000000000000000000000000000000000000000000000000",
    "build_id=000000000000-20260101000000",
    "commit=deadbeef",
    "imagectl_version=0.0.0",
    // The file provisioner checks that its source exists.
    "stage_dir=.",
    "manifest_path=/nonexistent/manifest.json",
];

fn packer(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new("timeout")
        .arg("120")
        .arg("packer")
        .args(args)
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .expect("packer is installed by scripts/setup");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn validate(dir: &Path, file: &str) -> (i32, String) {
    let mut args = vec!["validate"];
    for v in VARS {
        args.extend(["-var", v]);
    }
    args.push(file);
    packer(dir, &args)
}

#[test]
fn the_committed_templates_are_current() {
    let out = Test::repo().args(&["render", "--check"]).ok();
    assert_eq!(
        out,
        "up-to-date pushstream   images/pushstream.pkr.hcl\nup-to-date web          images/web.pkr.hcl\nup-to-date worker       images/worker.pkr.hcl\n"
    );
}

#[test]
fn every_template_passes_packer_1_6_validate_and_fmt_without_the_newer_settings() {
    let t = Test::repo();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    t.args(&["render", "--packer-1-6", "--out", dir]).ok();
    for role in ["web", "worker", "pushstream"] {
        let file = format!("{role}.pkr.hcl");
        let (code, text) = validate(out.path(), &file);
        assert_eq!(code, 0, "packer validate {file}:\n{text}");
        let (code, text) = packer(out.path(), &["fmt", "-check", &file]);
        assert_eq!(code, 0, "packer fmt -check {file}:\n{text}");
        // The committed template is in fmt style too.
        let (code, text) = packer(&repo_root().join("images"), &["fmt", "-check", &file]);
        assert_eq!(code, 0, "packer fmt -check images/{file}:\n{text}");
    }
}

/// The template text without the attributes and blocks named: a test-only
/// editor for the fmt-style output imagectl writes.
fn strip(text: &str, names: &[&str]) -> String {
    let mut out = String::new();
    let mut skip_until: Option<String> = None;
    for line in text.lines() {
        if let Some(end) = &skip_until {
            if line == end {
                skip_until = None;
            }
            continue;
        }
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let name = trimmed.split([' ', '=']).next().unwrap_or("");
        if names.contains(&name) {
            if trimmed.ends_with('{') {
                skip_until = Some(format!("{indent}}}"));
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[test]
fn packer_1_6_rejects_exactly_the_settings_left_out() {
    // The list in src/packer.rs is neither too short (the reduced template
    // validates, tested above) nor too long: Packer 1.6.6 rejects each entry
    // on its own.
    let list = [
        "required_plugins",
        "metadata_options",
        "imds_support",
        "temporary_security_group_source_public_ip",
    ];
    let full = std::fs::read_to_string(repo_root().join("images/worker.pkr.hcl")).unwrap();
    // The templates never use the last one (they name a build security
    // group instead), so it is added to probe it.
    let full = full.replace(
        "  imds_support = \"v2.0\"\n",
        "  imds_support = \"v2.0\"\n  temporary_security_group_source_public_ip = true\n",
    );
    let dir = tempfile::tempdir().unwrap();
    for keep in list {
        let others: Vec<&str> = list.iter().copied().filter(|n| *n != keep).collect();
        std::fs::write(dir.path().join("t.pkr.hcl"), strip(&full, &others)).unwrap();
        let (code, text) = validate(dir.path(), "t.pkr.hcl");
        assert_ne!(code, 0, "Packer 1.6.6 accepted `{keep}`");
        // "An argument named "x" is not expected here" / "Blocks of type "x" are not ..."
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flat.contains(&format!("\"{keep}\"")) && flat.contains("not expected here"),
            "{keep}: {text}"
        );
    }
    std::fs::write(dir.path().join("t.pkr.hcl"), strip(&full, &list)).unwrap();
    let (code, text) = validate(dir.path(), "t.pkr.hcl");
    assert_eq!(code, 0, "{text}");
}

#[test]
fn a_description_with_quotes_backslashes_and_interpolations_reaches_packer_exactly() {
    let description = r#"Say "hi" \ to ${var.x}, %{ if y }z%{ endif }, $$ and %% ~ {{.}} ünïcødé"#;
    let t = Test::new();
    let role = std::fs::read_to_string(t.path("roles/app.toml")).unwrap();
    let escaped = description.replace('\\', "\\\\").replace('"', "\\\"");
    let role = role.replace(
        "description = \"An application server\"",
        &format!("description = \"{escaped}\""),
    );
    let t = t.write("roles/app.toml", role);
    let out = tempfile::tempdir().unwrap();
    t.args(&[
        "render",
        "--packer-1-6",
        "--out",
        out.path().to_str().unwrap(),
    ])
    .ok();
    // Packer itself evaluates the template's description.
    let mut args = vec!["console"];
    for v in VARS {
        args.extend(["-var", v]);
    }
    args.push("app.pkr.hcl");
    let child = Command::new("timeout")
        .arg("60")
        .arg("packer")
        .args(&args)
        .current_dir(out.path())
        .env("CHECKPOINT_DISABLE", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .as_ref()
        .unwrap()
        .write_all(b"local.description\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        printed.strip_suffix('\n'),
        Some(description),
        "packer console printed {printed:?}"
    );
}

#[test]
fn changing_one_role_rerenders_only_its_template_and_moves_only_its_hash() {
    let t = Test::repo();
    let hashes: Vec<String> = ["web", "worker", "pushstream"]
        .iter()
        .map(|r| t.hash(r))
        .collect();
    let before: Vec<String> = ["web", "worker", "pushstream"]
        .iter()
        .map(|r| std::fs::read_to_string(t.path(&format!("images/{r}.pkr.hcl"))).unwrap())
        .collect();
    let role = std::fs::read_to_string(t.path("roles/worker.toml")).unwrap();
    let mut t = t.write(
        "roles/worker.toml",
        role.replace(
            "instance_type = \"t3.medium\"",
            "instance_type = \"t3.large\"",
        ),
    );
    let r = t.run_with(&["render", "--check"]);
    assert_eq!(r.status, 1);
    assert_eq!(
        r.stdout,
        "up-to-date pushstream   images/pushstream.pkr.hcl\nup-to-date web          images/web.pkr.hcl\nstale      worker       images/worker.pkr.hcl\n"
    );
    // Reported as every error is, not as a log line.
    assert!(
        r.stderr
            .ends_with("error: stale templates: worker; run `imagectl render`\n"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("ERROR"), "{}", r.stderr);
    assert_eq!(
        t.ok_with(&["render"]),
        "up-to-date pushstream   images/pushstream.pkr.hcl\nup-to-date web          images/web.pkr.hcl\nwritten    worker       images/worker.pkr.hcl\n"
    );
    for (i, r) in ["web", "worker", "pushstream"].iter().enumerate() {
        let now = std::fs::read_to_string(t.path(&format!("images/{r}.pkr.hcl"))).unwrap();
        assert_eq!(now == before[i], *r != "worker", "template of {r}");
        assert_eq!(t.hash(r) == hashes[i], *r != "worker", "hash of {r}");
    }
}

#[test]
fn a_template_of_a_deleted_role_is_removed() {
    let mut t = Test::repo();
    std::fs::remove_file(t.path("roles/pushstream.toml")).unwrap();
    let r = t.run_with(&["render", "--check"]);
    assert_eq!(r.status, 1);
    assert!(
        r.stdout
            .contains("orphaned   pushstream   images/pushstream.pkr.hcl"),
        "{}",
        r.stdout
    );
    assert!(t.ok_with(&["render"]).contains("removed    pushstream"));
    assert!(!t.path("images/pushstream.pkr.hcl").exists());
}

#[test]
fn templates_name_no_machine_paths_endpoints_or_secrets() {
    for role in ["web", "worker", "pushstream"] {
        let text =
            std::fs::read_to_string(repo_root().join(format!("images/{role}.pkr.hcl"))).unwrap();
        for bad in [
            "/root",
            "/home",
            "/tmp/.",
            "127.0.0.1",
            "localhost",
            "custom_endpoint",
            "secret_key",
            "access_key",
        ] {
            assert!(!text.contains(bad), "images/{role}.pkr.hcl contains {bad}");
        }
    }
}

#[test]
fn bases_update_pins_the_newest_available_image_of_the_right_owner() {
    let moto = Moto::start();
    let t = Test::new();
    std::fs::remove_file(t.path("images/bases.lock")).unwrap();
    let t = t.envs(moto.env()).args(&["bases", "update"]);
    let out = t.ok();
    assert_eq!(
        out,
        "debian-12        eu-central-1   (none) -> ami-0d1e2b1200a900901  debian-12-amd64-20260901-2230
debian-12        eu-west-1      (none) -> ami-0d1e2b1200a900901  debian-12-amd64-20260901-2230
debian-12-arm64  eu-central-1   (none) -> ami-0d1e2b1200b900901  debian-12-arm64-20260901-2230
debian-12-arm64  eu-west-1      (none) -> ami-0d1e2b1200b900901  debian-12-arm64-20260901-2230
"
    );
    // Byte for byte what the fixture project commits.
    let written = std::fs::read_to_string(t.path("images/bases.lock")).unwrap();
    let committed =
        std::fs::read_to_string(repo_root().join("tests/fixtures/project/images/bases.lock"))
            .unwrap();
    assert_eq!(written, committed);

    assert_eq!(t.ok(), "no changes: every base image is the newest match\n");
    let check = t.with_args(&["bases", "update", "--check"]);
    assert_eq!(
        check.ok(),
        "no changes: every base image is the newest match\n"
    );

    // An older pin: --check says a newer image exists, exits 1, writes nothing.
    let old = written.replacen("ami-0d1e2b1200a900901", "ami-0d1e2b1200a700701", 1);
    let t = check.write("images/bases.lock", &old);
    let r = t.run();
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        "debian-12        eu-central-1   ami-0d1e2b1200a700701 -> ami-0d1e2b1200a900901  debian-12-amd64-20260901-2230\n"
    );
    assert_eq!(
        std::fs::read_to_string(t.path("images/bases.lock")).unwrap(),
        old
    );
}

#[test]
fn a_missing_or_stale_lock_says_which_command_to_run() {
    let t = Test::new();
    std::fs::remove_file(t.path("images/bases.lock")).unwrap();
    let r = t.args(&["hash", "app"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(r.stderr, "error: `images/bases.lock` does not exist; run `imagectl bases update` to pin the base images\n");

    let t = Test::new();
    let settings = std::fs::read_to_string(t.path("imagectl.toml")).unwrap();
    let t = t.write(
        "imagectl.toml",
        settings.replace("debian-12-amd64-*", "debian-12-backports-amd64-*"),
    );
    let r = t.args(&["render"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        "error: base `debian-12` changed in `imagectl.toml` since `images/bases.lock` was written; run `imagectl bases update`\n"
    );
}

fn shellcheck(script: &Path) {
    let out = Command::new("shellcheck")
        .arg(script)
        .output()
        .expect("shellcheck is installed by scripts/setup");
    assert!(
        out.status.success(),
        "shellcheck {}:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn stage_writes_the_role_the_agent_and_a_provisioning_script_that_passes_shellcheck() {
    let mut t = Test::repo();
    let out = tempfile::tempdir().unwrap();
    for role in ["web", "worker", "pushstream"] {
        let dir = out.path().join(role);
        let printed = t.ok_with(&["stage", role, "--out", dir.to_str().unwrap()]);
        assert_eq!(printed.trim_end(), dir.to_str().unwrap());
        shellcheck(&dir.join("provision.sh"));
    }
    let hash = t.hash("worker");
    let dir = out.path().join("worker");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("rootfs/etc/imagectl/image.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["role"], "worker");
    assert_eq!(config["hash"], hash.as_str());
    assert_eq!(config["boot"]["parameters"], "/learn/{{env}}/{{role}}");
    assert_eq!(
        config["boot"]["start"],
        serde_json::json!(["rsyslog.service", "sidekiq.service"])
    );
    // Every manifest entry is staged with exactly that digest (checked with
    // coreutils, not with imagectl's own hashing).
    let manifest = config["manifest"].as_array().unwrap();
    let paths: Vec<&str> = manifest
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/etc/chrony/sources.d/aws-time-sync.sources",
            "/etc/imagectl/templates/templates/base/forward.conf.hbs",
            "/etc/imagectl/templates/templates/worker/sidekiq.env.hbs",
            "/etc/systemd/journald.conf.d/50-learn.conf",
            "/etc/systemd/system/imagectl-agent.service",
            "/etc/systemd/system/sidekiq.service",
            "/usr/local/bin/imagectl-agent",
        ]
    );
    for m in manifest {
        let staged = dir
            .join("rootfs")
            .join(m["path"].as_str().unwrap().trim_start_matches('/'));
        let sum = Command::new("sha256sum").arg(&staged).output().unwrap();
        let sum = String::from_utf8(sum.stdout).unwrap();
        assert_eq!(
            sum.split_whitespace().next(),
            m["sha256"].as_str(),
            "{}",
            staged.display()
        );
    }
    let script = std::fs::read_to_string(dir.join("provision.sh")).unwrap();
    for expected in [
        "set -euo pipefail",
        "'ruby'",
        "useradd --user-group --system --home-dir '/srv/learn' --create-home --shell '/usr/sbin/nologin' 'learn'",
        "install -D -T -m '0644' -o 'root' -g 'root' \"$rootfs\"'/etc/systemd/system/sidekiq.service' '/etc/systemd/system/sidekiq.service'",
        "install -D -T -m '0755' -o 'root' -g 'root' \"$rootfs\"'/usr/local/bin/imagectl-agent' '/usr/local/bin/imagectl-agent'",
        "systemctl disable 'sidekiq.service'",
        "systemctl enable 'chrony.service'",
        "systemctl enable imagectl-agent.service",
        "check 'ruby runs' 'ruby --version'",
        "/etc/imagectl/packages.tsv",
    ] {
        assert!(script.contains(expected), "provision.sh lacks {expected:?}:\n{script}");
    }
    // Users come after packages, files after users, checks after services.
    let at = |s: &str| script.find(s).unwrap();
    assert!(at("step 'packages'") < at("step 'users'"));
    assert!(at("step 'users'") < at("step 'files'"));
    assert!(at("step 'services'") < at("step 'checks'"));

    // Staging again into a directory with something in it is refused.
    let r = t.run_with(&["stage", "worker", "--out", dir.to_str().unwrap()]);
    assert_eq!(r.status, 2);
    assert!(r.stderr.contains("exists and is not empty"), "{}", r.stderr);
}

#[test]
fn the_provisioning_script_stops_at_the_first_failing_check_and_names_it() {
    // Run only the checks part of a generated script: a real failing
    // command, and the one after it never runs.
    let t = Test::new().write(
        "roles/app.toml",
        format!(
            "{}\n[[checks]]\nname = \"it's broken\"\nrun = \"false\"\n\n[[checks]]\nname = \"never\"\nrun = \"touch $MARKER\"\n",
            std::fs::read_to_string(repo_root().join("tests/fixtures/project/roles/app.toml"))
                .unwrap()
                .replace("run = \"ruby --version\"", "run = \"true\"")
        ),
    );
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("s");
    t.args(&["stage", "app", "--out", dir.to_str().unwrap()])
        .ok();
    let script = std::fs::read_to_string(dir.join("provision.sh")).unwrap();
    let checks = &script
        [script.find("check() {").unwrap()..script.find("step 'package inventory'").unwrap()];
    let runner =
        format!("set -euo pipefail\nstep() {{ printf 'imagectl: %s\\n' \"$*\" >&2; }}\n{checks}");
    let marker = out.path().join("marker");
    let r = Command::new("bash")
        .arg("-c")
        .arg(&runner)
        .env("MARKER", &marker)
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("imagectl: check failed: it's broken"),
        "{stderr}"
    );
    assert!(!marker.exists(), "checks after a failure do not run");
}

#[test]
fn the_build_agent_is_removed_before_the_image_is_taken_and_listed_nowhere() {
    // The SSM agent the build instance's user data installs (so that Packer
    // reaches it through Session Manager) is no role's: provision.sh starts
    // a unit that removes it when Packer stops the instance, and leaves it
    // out of the package inventory. On the local target (no such package)
    // the step does nothing: the local builds show that.
    let mut t = Test::repo();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("worker");
    t.ok_with(&["stage", "worker", "--out", dir.to_str().unwrap()]);
    let unit = dir.join("build/imagectl-remove-build-agent.service");
    let verify = Command::new("systemd-analyze")
        .args(["verify", unit.to_str().unwrap()])
        .output()
        .expect("systemd-analyze");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("dpkg --purge amazon-ssm-agent"), "{text}");
    assert!(text.contains("Conflicts=shutdown.target"), "{text}");
    let script = std::fs::read_to_string(dir.join("provision.sh")).unwrap();
    let at = |s: &str| {
        script
            .find(s)
            .unwrap_or_else(|| panic!("no {s:?} in provision.sh"))
    };
    assert!(at("step 'build agent'") < at("step 'package inventory'"));
    assert!(script.contains("systemctl start imagectl-remove-build-agent.service"));
    assert!(script.contains("awk -v skip=\"$build_agent\""));
    // Nothing of it is baked as a file of the image.
    assert!(!dir
        .join("rootfs/etc/systemd/system/imagectl-remove-build-agent.service")
        .exists());
}
