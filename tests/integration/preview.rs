//! `imagectl preview`: the agent preview of docs/local-testing.md works for
//! every role of this repository, run as documented.

use std::process::Command;

use crate::support::{agent_bin, repo_root, Test};

/// The commands of the documented preview (the `sh` block of step 3).
fn documented_commands() -> Vec<String> {
    let doc = std::fs::read_to_string(repo_root().join("docs/local-testing.md")).unwrap();
    let step = &doc[doc
        .find("3. Preview what the agent renders")
        .expect("step 3")..];
    let block = &step[step.find("```sh").expect("a sh block") + 5..];
    let block = &block[..block.find("```").unwrap()];
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Runs `line` through `sh` in the project, with `imagectl` on `PATH`.
fn sh(t: &Test, line: &str) -> (i32, String, String) {
    let bin = agent_bin().parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new("sh")
        .args(["-c", line])
        .current_dir(t.path(""))
        .env("PATH", path)
        .env_remove("IMAGECTL_AGENT_BIN")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_documented_preview_renders_every_role_of_this_repository() {
    let commands = documented_commands();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let t = Test::repo();
    for role in ["worker", "web", "pushstream"] {
        let out = t.path(&format!("preview-{role}"));
        let out = out.to_str().unwrap();
        let preview = commands[0]
            .replace("/tmp/preview", out)
            .replace(" worker ", &format!(" {role} "));
        let (status, stdout, stderr) = sh(&t, &preview);
        assert_eq!(status, 0, "{preview}\n{stderr}");
        let rendered: Vec<&str> = stdout.lines().collect();
        assert!(!rendered.is_empty(), "{role}: nothing rendered\n{stderr}");
        for path in rendered {
            let text = std::fs::read_to_string(path).unwrap();
            assert!(!text.contains("{{"), "{path} was not rendered:\n{text}");
        }
        if role == "worker" {
            // The documented `cat` shows the worker's parameters rendered.
            let (status, text, stderr) = sh(&t, &commands[1].replace("/tmp/preview", out));
            assert_eq!(status, 0, "{stderr}");
            assert!(
                text.contains("REDIS_URL='redis://127.0.0.1:6379/0'"),
                "{text}"
            );
        }
    }
}

#[test]
fn a_parameter_missing_from_the_file_fails_the_preview_naming_it() {
    agent_bin();
    let short = "[logs]\nhost = \"127.0.0.1\"\nport = \"10514\"\n";
    // Another parameter file (`--params`): the agent refuses to render, as
    // it would refuse at boot, naming the parameter.
    let r = Test::repo()
        .write("short.toml", short)
        .args(&["preview", "worker", "--params", "short.toml", "--out", "pv"])
        .run();
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(r.stderr.contains("db"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the agent could not render the templates (see its error above); fix the template or `short.toml`"),
        "{}",
        r.stderr
    );
    // The role's own parameter file: the role does not even load, as with
    // `validate`.
    let r = Test::repo()
        .write("roles/params/worker.toml", short)
        .args(&["preview", "worker", "--out", "pv"])
        .run();
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("error: `params.db.url` is not in `roles/params/worker.toml`"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_agent_answers_help_after_any_command() {
    for args in [&["--help"][..], &["render", "--help"], &["boot", "-h"]] {
        let out = Command::new(agent_bin()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.starts_with("usage: imagectl-agent boot"), "{stdout}");
        assert!(out.stderr.is_empty(), "{args:?}");
    }
}
