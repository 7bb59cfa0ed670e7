//! The systemd unit baked with the agent: `systemd-analyze verify` passes
//! without a warning and `systemd-analyze security` rates it at most 4.0.

use std::process::Command;

use imagectl_agent::UNIT;

fn systemd_analyze(args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}): install systemd (Debian: apt-get install systemd)")
        })
}

/// The unit in a temporary directory under its own name, with `ExecStart`
/// pointing at a binary that exists on this machine (verify checks it).
fn unit_file(dir: &std::path::Path) -> std::path::PathBuf {
    let text = UNIT.replace(
        "ExecStart=/usr/local/bin/imagectl-agent ",
        &format!("ExecStart={} ", env!("CARGO_BIN_EXE_imagectl-agent")),
    );
    assert_ne!(text, UNIT, "ExecStart moved; update this test");
    let path = dir.join("imagectl-agent.service");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn unit_verifies_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let path = unit_file(dir.path());
    let out = systemd_analyze(&["verify", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert_eq!(
        format!("{stdout}{stderr}"),
        "",
        "warnings from systemd-analyze verify"
    );
}

#[test]
fn unit_exposure_is_at_most_4() {
    let dir = tempfile::tempdir().unwrap();
    let path = unit_file(dir.path());
    let out = systemd_analyze(&[
        "security",
        "--offline=yes",
        "--no-pager",
        path.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in:\n{text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let level: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the level in {line:?}"));
    assert!(level <= 4.0, "{line}");
}

#[test]
fn unit_is_a_hardened_oneshot_running_boot() {
    for line in [
        "Type=oneshot",
        "ExecStart=/usr/local/bin/imagectl-agent boot",
        "UMask=0077",
        "PrivateTmp=yes",
        "ProtectHome=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "CapabilityBoundingSet=CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE",
    ] {
        assert!(UNIT.lines().any(|l| l == line), "missing `{line}`");
    }
    assert!(UNIT.lines().any(|l| l.starts_with("SystemCallFilter=")));
}
