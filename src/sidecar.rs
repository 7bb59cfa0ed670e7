//! Sidecars: the backing services a role's `[test] sidecars` name (Redis for
//! the workers, say), which AWS provides in production and `imagectl test`
//! runs beside the booted image. They run on this machine inside a network
//! namespace made for the test, which the image's container then joins: the
//! two meet on that namespace's loopback and nothing else reaches either.
//! A sidecar is the role author's command: it runs as `nobody`, with no
//! capabilities and no way to gain privileges, in a directory of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Errors starting sidecars.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network namespace could not be made.
    #[error("cannot create the test's network namespace `{name}`: {reason}")]
    Netns {
        /// Its name.
        name: String,
        /// What `ip` said.
        reason: String,
    },
    /// A sidecar did not start or stopped at once.
    #[error("sidecar `{command}` {reason}{}{}", if output.is_empty() { String::new() } else { format!("; it said: {output}") }, hint(command))]
    Failed {
        /// The command.
        command: String,
        /// How it failed.
        reason: String,
        /// The last lines it wrote (its log goes with the test's directory).
        output: String,
    },
}

fn hint(command: &str) -> String {
    let program = command.split_whitespace().next().unwrap_or_default();
    if imagectl_core::fsutil::on_path(program) {
        String::new()
    } else {
        format!(" (`{program}` is not installed on this machine: install it, e.g. `apt-get install {program}`)")
    }
}

/// The last few lines of a sidecar's log, on one line.
fn last_lines(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// The user and group sidecars run as.
const NOBODY: u32 = 65534;

/// `setpriv` dropping to [`NOBODY`], every capability and the possibility
/// to gain any (setuid binaries included).
fn unprivileged() -> Vec<String> {
    [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]
    .map(String::from)
    .to_vec()
}

/// Running sidecars and their namespace; both go away on drop.
pub struct Sidecars {
    name: String,
    children: Vec<Child>,
}

/// How long a sidecar must stay up to count as started.
const SETTLE: Duration = Duration::from_millis(500);

impl Sidecars {
    /// Makes a network namespace with loopback up and starts each command in
    /// it, its output going to `log_dir/sidecar-N.log`.
    pub fn start(commands: &[String], log_dir: &Path) -> Result<Sidecars, Error> {
        let name = format!("imagectl-test-{}", std::process::id());
        let ip = |args: &[&str]| -> Result<(), Error> {
            let out = Command::new("ip")
                .args(args)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| Error::Netns {
                    name: name.clone(),
                    reason: format!("cannot run `ip` ({e}); install iproute2"),
                })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(Error::Netns {
                    name: name.clone(),
                    reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                })
            }
        };
        // A namespace left by a killed run of this same PID is stale.
        let _ = Command::new("ip")
            .args(["netns", "delete", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name])?;
        let mut sidecars = Sidecars {
            name: name.clone(),
            children: Vec::new(),
        };
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        for (i, command) in commands.iter().enumerate() {
            let log = log_dir.join(format!("sidecar-{i}.log"));
            let failed = |reason: String| Error::Failed {
                command: command.clone(),
                reason,
                output: last_lines(&log),
            };
            let out =
                std::fs::File::create(&log).map_err(|e| failed(format!("has no log: {e}")))?;
            let err = out
                .try_clone()
                .map_err(|e| failed(format!("has no log: {e}")))?;
            let home = log_dir.join(format!("sidecar-{i}"));
            std::fs::create_dir_all(&home)
                .and_then(|()| std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)))
                .map_err(|e| failed(format!("has no directory: {e}")))?;
            let mut child = Command::new("ip")
                .args(["netns", "exec", &name])
                .args(unprivileged())
                .args(["sh", "-c"])
                .arg(format!("exec {command}"))
                .current_dir(&home)
                .env("HOME", &home)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .map_err(|e| failed(format!("could not start: {e}")))?;
            let started = Instant::now();
            while started.elapsed() < SETTLE {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(failed(format!("exited at once ({status})")));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            sidecars.children.push(child);
        }
        Ok(sidecars)
    }

    /// The namespace, for `systemd-nspawn --network-namespace-path`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }
}

impl Drop for Sidecars {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Anything still in the namespace (a sidecar's own children) goes too.
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    // SAFETY: kill has no memory preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
