//! `imagectl test ROLE --vm`: the role's disk image booted in QEMU with
//! UEFI firmware (OVMF), its own boot loader and kernel, KVM when it works
//! and TCG when it does not. The agent runs as on EC2: it reads its identity
//! and user data (the environment and the role's example parameters) from
//! an IMDSv2 endpoint this command serves at 169.254.169.254
//! ([`super::imds`]). The disk is never written: a sparse copy is booted,
//! with the test unit added (debugfs), the results come back on a second
//! disk, and the serial console is kept when the boot fails.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imagectl_core::disk;
use imagectl_core::fsutil::io_error;

use super::boot::{
    collect_results, scratch_dir, test_script, test_unit, Boot, Console, TestReport,
};
use super::{imds, need, require_root, Error};
use crate::progress::Progress;

/// The firmware QEMU boots (Debian's `ovmf`), and the variable store each
/// boot gets a copy of.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The guest's network, link-local like EC2's metadata address: QEMU's
/// user-mode network at 169.254.0.0/16, its gateway (this machine's
/// loopback inside the test's network namespace, where the sidecars
/// listen) at [`GATEWAY`].
const GATEWAY: &str = "169.254.0.2";

/// What the console says when a boot cannot reach the checks: stop at once.
const FATAL: &[&str] = &[
    "Kernel panic",
    "You are in emergency mode",
    "Cannot open access to console, the root account is locked",
    "Dropping to a shell!",
    "Failed to start default target",
];

/// The serial of the results disk, as the guest sees it.
const RESULTS_SERIAL: &str = "imagectl-results";

/// How the VM's test script ends: the results onto the second disk, then
/// power off.
fn vm_end() -> String {
    format!(
        "sync\ntar -C \"$out\" -cf /dev/disk/by-id/virtio-{RESULTS_SERIAL} .\nsync\nsystemctl --no-block poweroff\n"
    )
}

/// What `imagectl test --vm` boots: what `imagectl test` boots (the disk
/// image as its image), and the region its identity names.
pub struct VmBoot<'a> {
    /// The role, its disk image, parameters, environment and limits.
    pub boot: Boot<'a>,
    /// The home region, for the identity document.
    pub region: &'a str,
}

impl VmBoot<'_> {
    /// Boots the disk image and checks it.
    pub fn test(&self, progress: &dyn Progress) -> Result<TestReport, Error> {
        require_root()?;
        need("qemu-system-x86_64", "qemu-system-x86")?;
        need("debugfs", "e2fsprogs")?;
        if self.boot.role.image.arch != imagectl_core::arch::Arch::X86_64 {
            return Err(Error::Vm(format!(
                "`test --vm` boots x86_64 images; role `{}` is {}",
                self.boot.role.name,
                self.boot.role.image.arch.as_str()
            )));
        }
        for f in [OVMF_CODE, OVMF_VARS] {
            if !Path::new(f).is_file() {
                return Err(Error::Missing {
                    tool: "OVMF (UEFI firmware for QEMU)",
                    package: "ovmf",
                });
            }
        }
        let dir = scratch_dir(&self.boot.image.path, "vm")?;
        let result = self.run(&dir, progress);
        if self.boot.keep {
            progress.step(
                &self.boot.role.name,
                &format!("kept the booted disk and console log in {}", dir.display()),
            );
        } else {
            let _ = std::fs::remove_dir_all(&dir);
        }
        result
    }

    fn run(&self, dir: &Path, progress: &dyn Progress) -> Result<TestReport, Error> {
        let role = &self.boot.role.name;
        progress.step(role, "copying the disk image (sparse) to boot it");
        let booted = dir.join("disk.raw");
        let status = Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(&self.boot.image.path)
            .arg(&booted)
            .status()
            .map_err(io_error("run", Path::new("cp")))?;
        if !status.success() {
            return Err(Error::Vm(format!(
                "copying {} failed: {status}",
                self.boot.image.path.display()
            )));
        }
        // QEMU runs in a network namespace of its own with loopback up
        // (user-mode networking hands each metadata connection to
        // `imds-serve` over a loopback socket pair), shared with the
        // role's sidecars if it has any: nothing else reaches the guest.
        let commands = &self.boot.role.test.sidecars;
        if !commands.is_empty() {
            progress.step(role, &format!("starting sidecars: {}", commands.join("; ")));
        }
        let sidecars = crate::sidecar::Sidecars::start(commands, dir)?;
        let ports = if commands.is_empty() {
            Vec::new()
        } else {
            listening_ports(&sidecars.netns_path())
        };
        self.add_harness(dir, &booted, &ports)?;
        let imds_dir = self.serve_metadata(dir)?;
        let results = dir.join("results.raw");
        std::fs::File::create(&results)
            .and_then(|f| f.set_len(32 << 20))
            .map_err(io_error("create", &results))?;
        let console = dir.join("console.log");
        let start = Instant::now();
        let netns = sidecars.netns_path();
        let outcome = boot(&Qemu {
            disk: &booted,
            results: &results,
            console: &console,
            imds: &imds_dir,
            vars: &dir.join("vars.fd"),
            netns: &netns,
            deadline: start + self.boot.timeout,
            role,
            progress,
        })?;
        drop(sidecars);
        let elapsed = start.elapsed();
        let out = dir.join("results");
        std::fs::create_dir_all(&out).map_err(io_error("create", &out))?;
        let unpacked = Command::new("tar")
            .arg("-xf")
            .arg(&results)
            .arg("-C")
            .arg(&out)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && out.join("results.tsv").is_file();
        let mut report = collect_results(&out, self.boot.role, true, elapsed);
        if !unpacked || !report.passed {
            let kept = self.boot.image.path.with_extension("console.log");
            let _ = std::fs::copy(&console, &kept);
            report.console = Some(Console {
                stopped: outcome.stopped,
                tail: console_tail(&console, 40),
                log: kept,
            });
        }
        if !unpacked {
            report.passed = false;
        }
        Ok(report)
    }

    /// Adds the test unit and script (and a proxy to each sidecar port on
    /// the guest's loopback) to the booted copy, with debugfs: nothing is
    /// mounted, and the agent's own unit is left as it is.
    fn add_harness(&self, dir: &Path, disk_copy: &Path, ports: &[u16]) -> Result<(), Error> {
        let h = dir.join("harness");
        std::fs::create_dir_all(&h).map_err(io_error("create", &h))?;
        let mut files: Vec<(String, String)> = vec![
            (
                "/usr/local/lib/imagectl-test/run.sh".into(),
                test_script(self.boot.role, &vm_end()),
            ),
            (
                "/etc/systemd/system/imagectl-test.service".into(),
                test_unit(self.boot.role),
            ),
        ];
        let mut links = vec![(
            "/etc/systemd/system/multi-user.target.wants/imagectl-test.service".to_string(),
            "/etc/systemd/system/imagectl-test.service".to_string(),
        )];
        for p in ports {
            let name = format!("imagectl-test-sidecar-{p}");
            files.push((
                format!("/etc/systemd/system/{name}.socket"),
                format!("[Unit]\nDescription=imagectl test: sidecar port {p}\n\n[Socket]\nListenStream=127.0.0.1:{p}\n\n[Install]\nWantedBy=sockets.target\n"),
            ));
            files.push((
                format!("/etc/systemd/system/{name}.service"),
                format!("[Unit]\nDescription=imagectl test: sidecar port {p} on the test host\n\n[Service]\nExecStart=/lib/systemd/systemd-socket-proxyd {GATEWAY}:{p}\n"),
            ));
            links.push((
                format!("/etc/systemd/system/sockets.target.wants/{name}.socket"),
                format!("/etc/systemd/system/{name}.socket"),
            ));
        }
        let mut cmds = String::from(
            "mkdir /usr/local/lib/imagectl-test\nmkdir /etc/systemd/system/multi-user.target.wants\nmkdir /etc/systemd/system/sockets.target.wants\n",
        );
        for (i, (dest, text)) in files.iter().enumerate() {
            let src = h.join(format!("file-{i}"));
            std::fs::write(&src, text).map_err(io_error("write", &src))?;
            cmds.push_str(&format!("write {} {dest}\n", src.display()));
        }
        for (link, to) in &links {
            cmds.push_str(&format!("symlink {link} {to}\n"));
        }
        let script = h.join("harness.debugfs");
        std::fs::write(&script, cmds).map_err(io_error("write", &script))?;
        let dev = format!(
            "{}?offset={}",
            disk_copy.display(),
            disk::ROOT_START * disk::SECTOR
        );
        let out = Command::new("debugfs")
            .args(["-w", "-f"])
            .arg(&script)
            .arg(&dev)
            .stdout(Stdio::null())
            .output()
            .map_err(io_error("run", Path::new("debugfs")))?;
        let err = String::from_utf8_lossy(&out.stderr);
        // `mkdir` of a directory the image has already is fine.
        let problems: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("debugfs ") && !l.contains("Ext2 directory already exists"))
            .collect();
        if !out.status.success() || !problems.is_empty() {
            return Err(Error::Vm(format!(
                "adding the test unit to the booted copy failed: {}",
                problems.join("; ")
            )));
        }
        Ok(())
    }

    /// Writes the metadata service's answers: a session token, an identity
    /// document, the user data (the environment and the parameters), a
    /// `Name` tag.
    fn serve_metadata(&self, dir: &Path) -> Result<PathBuf, Error> {
        let d = dir.join("imds");
        std::fs::create_dir_all(&d).map_err(io_error("create", &d))?;
        let text = std::fs::read_to_string(self.boot.params)
            .map_err(io_error("read", self.boot.params))?;
        let params: toml::Table = toml::from_str(&text)
            .map_err(|e| Error::Vm(format!("{}: {}", self.boot.params.display(), e.message())))?;
        let mut user_data = toml::Table::new();
        user_data.insert("env".into(), toml::Value::String(self.boot.env.to_string()));
        user_data.insert("parameters".into(), toml::Value::Table(params));
        let user_data = toml::to_string(&user_data).map_err(|e| Error::Vm(e.to_string()))?;
        let identity = serde_json::json!({
            "instanceId": "i-0123456789abcdef0",
            "region": self.region,
            "availabilityZone": format!("{}a", self.region),
            "architecture": "x86_64",
            "imageId": "ami-00000000000000000",
            "instanceType": "t3.medium",
            "accountId": "000000000000",
        });
        let token = session_token()?;
        for (name, body) in [
            (imds::TOKEN, token),
            (imds::USER_DATA, user_data),
            (imds::IDENTITY, identity.to_string()),
            (
                imds::NAME_TAG,
                format!("imagectl-test-{}", self.boot.role.name),
            ),
        ] {
            let p = d.join(name);
            std::fs::write(&p, body).map_err(io_error("write", &p))?;
        }
        Ok(d)
    }
}

/// A fresh IMDSv2 session token for one test.
fn session_token() -> Result<String, Error> {
    let mut b = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| Error::Vm("no randomness for the metadata token".into()))?;
    Ok(imagectl_core::digest::hex(&b))
}

/// One QEMU boot.
struct Qemu<'a> {
    disk: &'a Path,
    results: &'a Path,
    console: &'a Path,
    imds: &'a Path,
    vars: &'a Path,
    /// The network namespace QEMU runs in.
    netns: &'a Path,
    deadline: Instant,
    role: &'a str,
    progress: &'a dyn Progress,
}

/// How a boot ended.
struct Outcome {
    /// Why it was stopped: the console's fatal line, or the time limit.
    stopped: Option<String>,
}

/// Whether KVM is there to try.
fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Boots with KVM when it can, else (or when KVM fails on this machine's
/// CPU, as nested KVM may) with TCG; runs the VM to its end.
fn boot(q: &Qemu<'_>) -> Result<Outcome, Error> {
    if kvm_usable() {
        q.progress.step(q.role, "booting in QEMU (KVM)");
        match run_qemu(q, true)? {
            Run::KvmFailed(reason) => q.progress.step(
                q.role,
                &format!("KVM cannot run this guest here ({reason}); booting with TCG"),
            ),
            Run::Ended(o) => return Ok(o),
        }
    } else {
        q.progress
            .step(q.role, "booting in QEMU (TCG: no usable /dev/kvm)");
    }
    match run_qemu(q, false)? {
        Run::Ended(o) => Ok(o),
        Run::KvmFailed(reason) => Err(Error::Vm(reason)),
    }
}

enum Run {
    Ended(Outcome),
    KvmFailed(String),
}

fn run_qemu(q: &Qemu<'_>, kvm: bool) -> Result<Run, Error> {
    std::fs::copy(OVMF_VARS, q.vars).map_err(io_error("copy", Path::new(OVMF_VARS)))?;
    let _ = std::fs::remove_file(q.console);
    let exe = std::env::current_exe().map_err(io_error("find", Path::new("imagectl")))?;
    for p in [&exe.as_path(), &q.imds] {
        if p.display().to_string().contains([',', ' ']) {
            return Err(Error::Vm(format!(
                "QEMU cannot be given the path {} (it has a comma or space)",
                p.display()
            )));
        }
    }
    let netdev = format!(
        "user,id=n0,net=169.254.0.0/16,host={GATEWAY},dhcpstart=169.254.0.15,dns=169.254.0.3,\
         guestfwd=tcp:169.254.169.254:80-cmd:{} imds-serve {}",
        exe.display(),
        q.imds.display()
    );
    // No network but the guest's own.
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", q.netns.display())).arg("--");
    cmd.arg("qemu-system-x86_64")
        .args([
            "-machine",
            if kvm {
                "q35,accel=kvm"
            } else {
                "q35,accel=tcg"
            },
        ])
        .args(["-cpu", if kvm { "host" } else { "max" }])
        .args(["-m", "2048", "-smp", "2"])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            q.vars.display()
        ))
        .arg("-drive")
        .arg(format!("if=virtio,format=raw,file={}", q.disk.display()))
        .arg("-drive")
        .arg(format!(
            "if=none,id=results,format=raw,file={}",
            q.results.display()
        ))
        .args([
            "-device",
            &format!("virtio-blk-pci,drive=results,serial={RESULTS_SERIAL}"),
        ])
        .args(["-netdev", &netdev])
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .arg("-serial")
        .arg(format!("file:{}", q.console.display()))
        .args(["-monitor", "none"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(io_error("run", Path::new("qemu-system-x86_64")))?;
    let stderr = Arc::new(Mutex::new(Vec::<String>::new()));
    if let Some(err) = child.stderr.take() {
        let lines = stderr.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut v) = lines.lock() {
                    v.push(l);
                }
            }
        });
    }
    let result = watch(q, kvm, &mut child, &stderr);
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Follows the VM until it powers off, fails or runs out of time.
fn watch(
    q: &Qemu<'_>,
    kvm: bool,
    child: &mut Child,
    stderr: &Mutex<Vec<String>>,
) -> Result<Run, Error> {
    let mut console: Option<File> = None;
    let mut pending = Vec::new();
    let mut targets = Vec::new();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let err = stderr.lock().map(|v| v.join("\n")).unwrap_or_default();
        if kvm && (err.contains("KVM internal error") || err.contains("emulation failure")) {
            let first = err
                .lines()
                .find(|l| l.contains("KVM"))
                .unwrap_or("KVM internal error")
                .to_string();
            return Ok(Run::KvmFailed(first));
        }
        // The lines the guest completed since the last look, each read
        // once (QEMU creates the log as it starts): the systemd targets as
        // the guest reaches them, and what stops a boot.
        if console.is_none() {
            console = File::open(q.console).ok();
        }
        if let Some(f) = console.as_mut() {
            let _ = f.read_to_end(&mut pending);
        }
        let end = pending
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let lines: Vec<u8> = pending.drain(..end).collect();
        let fresh = String::from_utf8_lossy(&lines);
        for line in fresh.lines() {
            if let Some(what) = reached(line, &mut targets) {
                q.progress.step(q.role, &format!("guest: reached {what}"));
            }
        }
        if let Some(f) = FATAL.iter().find(|f| fresh.contains(**f)) {
            // A moment for the rest of the message to reach the log.
            std::thread::sleep(Duration::from_secs(2));
            return Ok(Run::Ended(Outcome {
                stopped: Some(format!("the console says \"{f}\"")),
            }));
        }
        match child.try_wait() {
            Ok(Some(status)) => {
                let stopped = (!status.success()).then(|| {
                    let last = err.lines().last().unwrap_or_default().to_string();
                    format!("QEMU exited with {status}: {last}")
                });
                return Ok(Run::Ended(Outcome { stopped }));
            }
            Ok(None) => {}
            Err(e) => return Err(io_error("wait for", Path::new("qemu-system-x86_64"))(e).into()),
        }
        if Instant::now() > q.deadline {
            return Ok(Run::Ended(Outcome {
                stopped: Some("the boot took longer than the time limit".to_string()),
            }));
        }
    }
}

/// The TCP ports the sidecars listen on, in their namespace (waiting up to
/// 10 s for the first).
fn listening_ports(netns: &Path) -> Vec<u16> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args(["--", "cat", "/proc/net/tcp", "/proc/net/tcp6"])
            .stderr(Stdio::null())
            .output();
        let ports = out
            .map(|o| parse_listening(&String::from_utf8_lossy(&o.stdout)))
            .unwrap_or_default();
        if !ports.is_empty() || Instant::now() > until {
            return ports;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Listening ports in `/proc/net/tcp` form (state `0A`).
fn parse_listening(text: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() > 3 && f[3] == "0A" {
                let port = f[1].rsplit_once(':')?.1;
                u16::from_str_radix(port, 16).ok()
            } else {
                None
            }
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Removes terminal escape sequences (systemd colours its status lines).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// The target a console line says the guest reached, unless it was said
/// already. Early in boot systemd says it twice: in the kernel's log
/// (`systemd[1]: Reached target NAME - DESCRIPTION.`, in full) and in its
/// status line (`[  OK  ] Reached target ...`, shortened with `…` to the
/// console's width); `seen` holds the full ones, which the shortened line
/// then matches.
fn reached(line: &str, seen: &mut Vec<String>) -> Option<String> {
    let line = strip_ansi(line);
    let i = line.find("Reached target ")?;
    let what = line[i + "Reached target ".len()..].trim().to_string();
    let said = seen.iter().any(|full| match what.split_once('…') {
        Some((head, tail)) => full.starts_with(head) && full.ends_with(tail),
        None => *full == what,
    });
    if said {
        return None;
    }
    if line[..i].contains("systemd[1]: ") {
        seen.push(what.clone());
    }
    Some(what)
}

/// The last `n` lines of the console log, readable.
fn console_tail(path: &Path, n: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = strip_ansi(&String::from_utf8_lossy(&bytes));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_ports_from_proc_net_tcp() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 65534 0 1 1 0 100 0 0 10 0\n   1: 0100007F:18EB 0100007F:9C40 01 00000000:00000000 00:00000000 00000000 65534 0 1 1 0 100 0 0 10 0\n";
        assert_eq!(parse_listening(t), vec![6379]);
    }

    #[test]
    fn a_target_is_announced_once_though_the_console_says_it_twice() {
        let mut seen = Vec::new();
        let lines = [
            "[   20.136834] systemd[1]: Reached target network-pre.target - Preparation for Network.",
            "[\u{1b}[0;32m  OK  \u{1b}[0m] Reached target \u{1b}[0;1;39mnetwork-pre…get\u{1b}[0m - Preparation for Network.",
            "[   20.2] systemd[1]: Reached target integritysetup.target - Local Integrity Protected Volumes.",
            "[  OK  ] Reached target integrityse…Local Integrity Protected Volumes.",
            "[  OK  ] Reached target network-online.target - Network is Online.",
            "[  OK  ] Stopped target network-online.target - Network is Online.",
        ];
        let said: Vec<String> = lines.iter().filter_map(|l| reached(l, &mut seen)).collect();
        assert_eq!(
            said,
            [
                "network-pre.target - Preparation for Network.",
                "integritysetup.target - Local Integrity Protected Volumes.",
                "network-online.target - Network is Online.",
            ]
        );
    }

    #[test]
    fn escape_sequences_are_removed() {
        assert_eq!(
            strip_ansi("[\u{1b}[0;32m  OK  \u{1b}[0m] Reached target \u{1b}[0;1;39mbasic.target\u{1b}[0m\r"),
            "[  OK  ] Reached target basic.target"
        );
    }
}
