//! The README's "Try the AWS path locally" walk, run as written on a fresh
//! copy of the repository: `scripts/aws-sandbox up` (moto with the
//! repository's own `imagectl.toml` set up in it), each `imagectl` command
//! of the block with the exports `up` printed, then `scripts/aws-sandbox
//! down`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{agent_bin, repo_root};

/// The commands of the README section `title`'s first ```sh block.
fn readme_block(title: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let section = readme
        .split_once(&format!("\n## {title}\n"))
        .unwrap_or_else(|| panic!("README.md has no section `{title}`"))
        .1;
    let section = section.split("\n## ").next().unwrap();
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("the section `{title}` has no ```sh block"))
        .0;
    block.lines().map(str::to_string).collect()
}

/// Copies the repository as a fresh checkout has it: without what
/// .gitignore (and fuzz/.gitignore) leave out.
fn fresh_checkout(from: &Path, to: &Path, rel: &Path) {
    const IGNORED: &[&str] = &[
        ".git",
        "target",
        ".imagectl",
        ".venv",
        "images/local",
        "fuzz/target",
        "fuzz/corpus",
        "fuzz/artifacts",
        "fuzz/coverage",
    ];
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let rel = rel.join(e.file_name());
        if IGNORED.iter().any(|i| rel == Path::new(i))
            || rel.extension().is_some_and(|x| x == "log")
        {
            continue;
        }
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ft.is_dir() {
            fresh_checkout(&src, &dst, &rel);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The `export NAME=VALUE` lines of `up`, values unquoted.
fn parse_exports(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap();
            let v = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\''));
            (
                k.to_string(),
                v.unwrap_or(l.split_once('=').unwrap().1).to_string(),
            )
        })
        .collect()
}

/// What one command of the walk did.
struct Step {
    stdout: String,
    stderr: String,
    status: i32,
}

/// The sandbox's moto, stopped if the test ends before the walk's `down`.
struct Sandbox {
    dir: PathBuf,
}

impl Sandbox {
    /// The pid in the state `up` wrote, if any.
    fn pid(&self) -> Option<u32> {
        let state = std::fs::read_to_string(self.dir.join(".imagectl/sandbox/state.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&state).unwrap();
        Some(v["pid"].as_u64().unwrap() as u32)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.pid().is_some() {
            let _ = Command::new(self.dir.join("scripts/aws-sandbox"))
                .arg("down")
                .current_dir(&self.dir)
                .output();
        }
    }
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_string())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// The value `AMI` takes in a line such as `/imagectl/worker/dev:
/// eu-central-1 (none) -> ami-X, eu-west-1 (none) -> ami-Y`: the AMI the
/// channel holds in `region` now.
fn moved_to(out: &str, region: &str) -> String {
    let at = out
        .find(&format!("{region} "))
        .unwrap_or_else(|| panic!("{region} not in {out}"));
    let rest = &out[at..];
    let arrow = rest.find(" -> ").unwrap() + 4;
    rest[arrow..]
        .split([',', ';', '\n'])
        .next()
        .unwrap()
        .to_string()
}

/// The AMIs (home region, copy) in the one line of `imagectl build`'s table
/// that says `built`.
fn built(out: &str) -> (String, String) {
    let line = out
        .lines()
        .find(|l| l.starts_with("worker ") && l.contains(" built "))
        .unwrap_or_else(|| panic!("nothing built: {out}"));
    let ami = |region: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{region}=")))
            .unwrap_or_else(|| panic!("no AMI in {region}: {line}"))
            .to_string()
    };
    (ami("eu-west-1"), ami("eu-central-1"))
}

#[test]
fn the_readme_walk_through_the_aws_sandbox_works_on_a_fresh_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("imagectl");
    fresh_checkout(&repo_root(), &dir, Path::new(""));
    let sandbox = Sandbox { dir: dir.clone() };
    // `imagectl` in the block is the binary under test; its agent is found
    // beside it.
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_imagectl"));
    assert_eq!(agent_bin().parent(), bin.parent());
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap()
    );

    let walk = readme_block("Try the AWS path locally");
    assert_eq!(walk.first().unwrap(), r#"eval "$(scripts/aws-sandbox up)""#);
    assert_eq!(walk.last().unwrap(), "scripts/aws-sandbox down");

    let mut exports: Vec<(String, String)> = Vec::new();
    let mut outputs: Vec<(String, Step)> = Vec::new();
    for line in &walk {
        // `eval "$(CMD)"`: run CMD, and give its exports to what follows.
        let (command, evaluated) = match line
            .strip_prefix("eval \"$(")
            .and_then(|l| l.strip_suffix(")\""))
        {
            Some(inner) => (inner, true),
            None => (line.as_str(), false),
        };
        if command == "scripts/aws-sandbox down" {
            check_before_down(&exports, &outputs);
        }
        let out = Command::new("bash")
            .args(["-euc", command])
            .current_dir(&dir)
            .env("PATH", &path)
            .env_remove("RUST_LOG")
            .env_remove("IMAGECTL_AGENT_BIN")
            .envs(exports.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        let step = Step {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            status: out.status.code().unwrap_or(-1),
        };
        assert_eq!(
            step.status, 0,
            "`{line}` failed:\n{}\n{}",
            step.stdout, step.stderr
        );
        if evaluated {
            exports = parse_exports(&step.stdout);
            if command == "scripts/aws-sandbox up" {
                up_again_and_env_print_the_same(&dir, &step.stdout);
            }
        }
        outputs.push((command.to_string(), step));
    }

    // `up` printed the emulator's environment, and nothing else on stdout.
    let up = &outputs[0].1;
    let endpoint = &exports[0];
    assert_eq!(endpoint.0, "AWS_ENDPOINT_URL");
    let port: u16 = endpoint
        .1
        .strip_prefix("http://127.0.0.1:")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        up.stdout,
        format!(
            "export AWS_ENDPOINT_URL=http://127.0.0.1:{port}
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=eu-west-1
export AWS_DEFAULT_REGION=eu-west-1
export AWS_CONFIG_FILE=/dev/null
export AWS_SHARED_CREDENTIALS_FILE=/dev/null
export AWS_EC2_METADATA_DISABLED=true
export CHECKPOINT_DISABLE=1
unset AWS_PROFILE AWS_SESSION_TOKEN
"
        )
    );
    for made in [
        "eu-west-1: subnet imagectl-build-private",
        "eu-central-1: KMS key alias/imagectl-images",
        "eu-central-1: launch template learn-worker-prod (imagectl:channel=prod)",
        "instance profile imagectl-build",
    ] {
        assert!(up.stderr.contains(made), "{made}: {}", up.stderr);
    }

    let out = |command: &str, nth: usize| -> &Step {
        &outputs
            .iter()
            .filter(|(c, _)| c == command)
            .nth(nth)
            .unwrap_or_else(|| panic!("`{command}` (#{nth}) did not run"))
            .1
    };
    // doctor finds everything the walk needs, and says so check by check.
    let doctor = &out("imagectl doctor", 0).stdout;
    assert!(doctor.lines().count() >= 10, "{doctor}");
    for line in doctor.lines() {
        assert!(line.starts_with("ok"), "not ok: {line}\n{doctor}");
    }
    assert_eq!(
        out("imagectl bases update", 0).stdout,
        "no changes: every base image is the newest match\n"
    );
    let publish = &out("imagectl publish worker --channel dev", 0).stdout;
    let (v1, v1_copy) = (
        moved_to(publish, "eu-west-1"),
        moved_to(publish, "eu-central-1"),
    );
    assert_eq!(
        *publish,
        format!(
            "/imagectl/worker/dev: eu-central-1 (none) -> {v1_copy}, eu-west-1 (none) -> {v1}\n"
        )
    );
    assert_eq!(
        built(&out("imagectl build worker", 0).stdout),
        (v1.clone(), v1_copy.clone()),
        "the image built is the one published"
    );
    assert_eq!(
        out("imagectl promote worker --from dev --to prod", 0).stdout,
        format!(
            "/imagectl/worker/prod: eu-central-1 (none) -> {v1_copy}, eu-west-1 (none) -> {v1}\n\
             learn-worker-prod eu-west-1: version 2 is the default ({v1})\n\
             learn-worker-prod eu-central-1: version 2 is the default ({v1_copy})\n"
        )
    );
    let second = &out("imagectl build worker --publish dev", 0).stdout;
    let (v2, v2_copy) = built(second);
    assert!(v2 != v1 && v2_copy != v1_copy, "{second}");
    assert_eq!(
        out("imagectl promote worker --from dev --to prod", 1).stdout,
        format!(
            "/imagectl/worker/prod: eu-central-1 {v1_copy} -> {v2_copy}, eu-west-1 {v1} -> {v2}\n\
             learn-worker-prod eu-west-1: version 3 is the default ({v2})\n\
             learn-worker-prod eu-central-1: version 3 is the default ({v2_copy})\n"
        )
    );
    assert_eq!(
        out("imagectl rollback worker --channel prod", 0).stdout,
        format!(
            "/imagectl/worker/prod: eu-central-1 {v2_copy} -> {v1_copy}, eu-west-1 {v2} -> {v1}\n\
             learn-worker-prod eu-west-1: version 4 is the default ({v1})\n\
             learn-worker-prod eu-central-1: version 4 is the default ({v1_copy})\n"
        )
    );
    let images = &out("imagectl images worker", 0).stdout;
    for ami in [&v1, &v1_copy, &v2, &v2_copy] {
        assert!(images.contains(ami.as_str()), "{ami} not in {images}");
    }
    // One block per image: a head line, its other AMIs and its references
    // indented below it.
    let mut blocks: Vec<String> = Vec::new();
    for l in images.lines().skip(1) {
        match blocks.last_mut() {
            Some(b) if l.starts_with(' ') => b.push_str(&format!("{l}\n")),
            _ => blocks.push(format!("{l}\n")),
        }
    }
    let block = |ami: &str| blocks.iter().find(|b| b.contains(ami)).unwrap().clone();
    assert_eq!(blocks.len(), 2, "{images}");
    assert_eq!(block(&v1), block(&v1_copy));
    assert!(
        block(&v1).contains("channel /imagectl/worker/prod (current)")
            && block(&v1).contains("launch template learn-worker-prod v4 (default, latest)"),
        "{images}"
    );
    assert!(
        block(&v2).contains("channel /imagectl/worker/dev (current)"),
        "{images}"
    );

    // `down` stopped moto and removed the state: nothing is left running.
    let down = out("scripts/aws-sandbox down", 0);
    assert_eq!(down.stdout, "");
    assert!(
        down.stderr.starts_with("aws-sandbox: stopped moto (pid "),
        "{}",
        down.stderr
    );
    let pid: u32 = down.stderr["aws-sandbox: stopped moto (pid ".len()..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(!alive(pid), "moto (pid {pid}) still runs after `down`");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(!dir.join(".imagectl/sandbox").exists());
    assert_eq!(sandbox.pid(), None);
}

/// Before `down`: a second client (boto3) sees what the walk left, `prod`
/// back on the first image in both regions.
fn check_before_down(exports: &[(String, String)], outputs: &[(String, Step)]) {
    let publish = &outputs
        .iter()
        .find(|(c, _)| c == "imagectl publish worker --channel dev")
        .unwrap()
        .1
        .stdout;
    let python = crate::moto::python();
    let out = Command::new(python)
        .arg("-c")
        .arg(
            r#"
import boto3, json
out = {}
for region in ["eu-west-1", "eu-central-1"]:
    ssm = boto3.client("ssm", region_name=region)
    ec2 = boto3.client("ec2", region_name=region)
    lt = ec2.describe_launch_template_versions(LaunchTemplateName="learn-worker-prod", Versions=["$Default"])["LaunchTemplateVersions"][0]
    out[region] = [ssm.get_parameter(Name="/imagectl/worker/prod")["Parameter"]["Value"], lt["LaunchTemplateData"]["ImageId"]]
print(json.dumps(out))
"#,
        )
        .envs(exports.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for region in ["eu-west-1", "eu-central-1"] {
        let first = moved_to(publish, region);
        assert_eq!(v[region], serde_json::json!([first, first]), "{region}");
    }
}

/// `up` while the sandbox runs starts nothing and prints the same exports;
/// so does `env`.
fn up_again_and_env_print_the_same(dir: &Path, exports: &str) {
    for command in ["up", "env"] {
        let out = Command::new(dir.join("scripts/aws-sandbox"))
            .arg(command)
            .current_dir(dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{command}: {stderr}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), exports, "{command}");
        if command == "up" {
            assert!(
                stderr.starts_with("aws-sandbox: already running: moto on 127.0.0.1:"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn without_moto_up_names_scripts_setup_and_starts_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(repo_root().join("imagectl.toml"), dir.join("imagectl.toml")).unwrap();
    let run = |command: &str| {
        Command::new(repo_root().join("scripts/aws-sandbox"))
            .arg(command)
            .current_dir(dir)
            .env("IMAGECTL_VENV", dir.join("no-venv"))
            .output()
            .unwrap()
    };
    let out = run("up");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "aws-sandbox: error: moto is not installed in {}: run scripts/setup (it installs moto and boto3 there and prints that path)\n",
            dir.join("no-venv").display()
        )
    );
    assert!(!dir.join(".imagectl").exists());
    let out = run("env");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "aws-sandbox: error: no sandbox is running for this project: `scripts/aws-sandbox up` starts one\n"
    );
    let out = run("down");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "aws-sandbox: no sandbox is running for this project\n"
    );
}
