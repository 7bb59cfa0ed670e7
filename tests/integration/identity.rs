//! One hash, one image. The content hash names the agent by its identity
//! (the digest of the sources it is built from), so staging and every
//! build refuse, before anything is baked, a binary that is not the agent
//! of this checkout; and the files the hash was computed from are checked
//! again just before the bake.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::moto::Moto;
use crate::support::{
    agent_bin, agent_built_with, foreign_agent, marking_packer, repo_root, target_dir, Test,
};

/// The identity an agent binary says it carries (`imagectl-agent --version`).
fn identity_of(agent: &Path) -> String {
    let out = Command::new(agent).arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let id = text
        .split("(identity ")
        .nth(1)
        .and_then(|r| r.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("{}: {text:?}", agent.display()));
    id.to_string()
}

/// The agent's identity in a role's content hash inputs.
fn identity_in_hash(t: &mut Test) -> String {
    let v: serde_json::Value =
        serde_json::from_str(&t.ok_with(&["inputs", "worker", "--output", "json"])).unwrap();
    let agent = v["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "agent")
        .unwrap();
    agent["sha256"].as_str().unwrap().to_string()
}

#[test]
fn stage_and_every_build_refuse_a_binary_that_is_not_this_checkouts_agent() {
    let foreign = foreign_agent();
    let mut t = Test::repo();
    let tools = tempfile::tempdir().unwrap();
    let (path, packer_ran) = marking_packer(tools.path());
    // An AWS endpoint nobody answers on: a refusal must come before any call.
    let mut t2 = Test::repo().envs([
        ("PATH", path),
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_string()),
        ("AWS_ACCESS_KEY_ID", "testing".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_string()),
        ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
    ]);
    let cases = [
        (
            Path::new("/usr/bin/true").to_path_buf(),
            "error: `/usr/bin/true` is not an imagectl-agent: it carries no agent identity; build the agent with `cargo build --profile release-agent -p imagectl-agent` and pass `--agent target/release-agent/imagectl-agent`\n".to_string(),
        ),
        (
            foreign.clone(),
            format!(
                "error: `{}` is an imagectl-agent built from other sources (identity {}), but this imagectl bakes identity {}: images of one hash would differ; rebuild it from this checkout with `cargo build --profile release-agent -p imagectl-agent`\n",
                foreign.display(),
                &identity_of(&foreign)[..12],
                &identity_in_hash(&mut t)[..12],
            ),
        ),
    ];
    for (agent, message) in &cases {
        let agent = agent.to_str().unwrap();
        let out = t.path("stage-out");
        for args in [
            vec![
                "stage",
                "worker",
                "--out",
                out.to_str().unwrap(),
                "--agent",
                agent,
            ],
            vec!["build", "worker", "--target", "local", "--agent", agent],
        ] {
            let r = t.run_with(&args);
            assert_eq!(
                (r.status, r.stderr.as_str()),
                (2, message.as_str()),
                "{args:?}"
            );
        }
        assert!(!out.exists(), "stage wrote {}", out.display());
        assert!(!t.path("images/local").exists(), "a local build started");

        let r = t2.run_with(&["build", "worker", "--agent", agent]);
        assert_eq!((r.status, r.stderr.as_str()), (2, message.as_str()));
        assert!(!packer_ran.exists(), "packer ran");
        assert!(!t2.path(".imagectl").exists(), "a build started");
    }
    // The foreign agent is real: it runs, and says which sources it is of.
    assert_ne!(identity_of(&foreign), identity_of(&agent_bin()));
}

#[test]
fn agents_of_every_profile_built_from_this_checkout_are_accepted_and_found() {
    let mut t = Test::repo();
    let want = identity_in_hash(&mut t);
    let debug = agent_bin();
    let release = agent_built_with("release");
    let shipped = agent_built_with("release-agent");
    for agent in [&debug, &release, &shipped] {
        assert_eq!(identity_of(agent), want, "{}", agent.display());
        let out = t.path(&format!(
            "stage-{}",
            agent
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
        ));
        t.ok_with(&[
            "stage",
            "worker",
            "--out",
            out.to_str().unwrap(),
            "--agent",
            agent.to_str().unwrap(),
        ]);
        // What is staged is that binary, byte for byte.
        assert_eq!(
            std::fs::read(out.join("rootfs/usr/local/bin/imagectl-agent")).unwrap(),
            std::fs::read(agent).unwrap()
        );
    }
    // Without `--agent`, the build CI ships is found first, and said to be.
    let out = t.path("stage-found");
    let mut found = Test::repo().env_remove("IMAGECTL_AGENT_BIN");
    let r = found.run_with(&["stage", "worker", "--out", out.to_str().unwrap()]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let said = format!(
        "agent: {} (the release-agent build, identity {})",
        shipped.display(),
        &want[..12]
    );
    assert!(r.stderr.contains(&said), "{}", r.stderr);
    assert_eq!(
        std::fs::read(out.join("rootfs/usr/local/bin/imagectl-agent")).unwrap(),
        std::fs::read(&shipped).unwrap()
    );
    assert!(target_dir().join("release-agent/imagectl-agent").is_file());
}

/// Starts `imagectl` with `args` stopped at the failpoint after staging, and
/// returns it once it has stopped there.
fn stopped_after_stage(t: &Test, args: &[&str], env: &[(&str, String)]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imagectl"))
        .args(args)
        .current_dir(t.dir.path())
        .env_remove("RUST_LOG")
        .env("IMAGECTL_AGENT_BIN", agent_bin())
        .env("IMAGECTL_FAILPOINT", "after-stage")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let state = std::fs::read_to_string(&stat).unwrap_or_default();
        // `PID (comm) STATE ...`: T is stopped.
        if state
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('T'))
        {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "imagectl ended ({status}) before the failpoint:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            Instant::now() < deadline,
            "imagectl never reached the failpoint"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Lets a stopped `imagectl` go on; returns its exit code and stderr.
fn resume(child: Child) -> (i32, String) {
    // SAFETY: kill(2) with the PID of a child this test spawned.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGCONT);
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_line(stderr: &str) -> &str {
    stderr.trim_end().lines().last().unwrap_or("")
}

#[test]
fn a_source_edited_between_staging_and_the_local_bake_is_refused() {
    let t = Test::from_tree(&repo_root().join("tests/fixtures/local"));
    let source = "roles/files/tiny.service";
    assert!(t.path(source).is_file(), "the fixture changed: no {source}");
    let child = stopped_after_stage(&t, &["build", "tiny", "--target", "local"], &[]);
    let mut text = std::fs::read_to_string(t.path(source)).unwrap();
    text.push_str("edited while the build waited\n");
    std::fs::write(t.path(source), text).unwrap();
    let (code, stderr) = resume(child);
    assert_eq!(code, 1, "{stderr}");
    let line = last_line(&stderr);
    assert!(
        line.starts_with(&format!(
            "error: `{source}` changed after it was hashed (hashed "
        )) && line.ends_with(
            "); nothing was baked: run the command again to hash and stage what is there now"
        ),
        "{stderr}"
    );
    // Nothing was baked and nothing is left behind.
    let left: Vec<_> = std::fs::read_dir(t.path("images/local"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left in images/local: {left:?}");
}

#[test]
fn a_staged_file_changed_before_the_bake_on_aws_is_refused_and_packer_never_runs() {
    let moto = Moto::start();
    let t = crate::aws::project(&moto);
    let tools = tempfile::tempdir().unwrap();
    let (path, packer_ran) = marking_packer(tools.path());
    // imagectl asks Packer its version before it stages: let that answer.
    std::fs::write(
        tools.path().join("bin/packer"),
        format!(
            "#!/bin/sh\n[ \"$1\" = version ] && {{ echo 'Packer v1.6.6'; exit 0; }}\ntouch '{}'\nexit 1\n",
            packer_ran.display()
        ),
    )
    .unwrap();
    let mut env: Vec<(&str, String)> = moto.env();
    env.push(("PATH", path));
    let child = stopped_after_stage(&t, &["build", "app"], &env);
    let builds = t.path(".imagectl/builds");
    let work = std::fs::read_dir(&builds)
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    let staged = work.join("stage/rootfs/etc/app/app.conf");
    assert!(staged.is_file(), "{}", staged.display());
    std::fs::write(&staged, "listen 6666\n").unwrap();
    let (code, stderr) = resume(child);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("changed after staging: `rootfs/etc/app/app.conf` has other bytes; nothing was baked: run the build again"),
        "{stderr}"
    );
    assert!(!packer_ran.exists(), "packer build ran");
    let images = crate::aws::images(&moto, "eu-west-1");
    assert_eq!(images, serde_json::json!([]), "an image was made");
}
