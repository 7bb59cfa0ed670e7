//! Running Packer: its version, one `packer build -machine-readable` with a
//! time limit, its progress streamed and its full log kept, signals
//! forwarded so that Packer cleans up after itself, and its manifest read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};

use crate::progress::Progress;

/// Errors running Packer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Packer is not installed or cannot be run.
    #[error("cannot run `packer`: {0}; install it (Debian: `apt-get install packer`)")]
    NotFound(std::io::Error),
    /// `packer version` printed something else.
    #[error("cannot tell Packer's version from `{0}`")]
    Version(String),
    /// The build failed.
    #[error(
        "packer build of `{role}` failed (exit code {code}){}",
        failure(errors, log)
    )]
    Failed {
        /// The role.
        role: String,
        /// Packer's exit code.
        code: i32,
        /// The errors Packer reported.
        errors: Vec<String>,
        /// The full log.
        log: PathBuf,
    },
    /// The build ran out of time; Packer was interrupted and cleaned up.
    #[error("packer build of `{role}` took longer than {} minutes and was stopped; full log: {}", limit.as_secs() / 60, log.display())]
    TimedOut {
        /// The role.
        role: String,
        /// The limit.
        limit: Duration,
        /// The full log.
        log: PathBuf,
    },
    /// A signal interrupted the build; Packer was told and cleaned up.
    #[error("packer build of `{role}` was interrupted ({signal}); Packer cleaned up its temporary resources, nothing was published")]
    Interrupted {
        /// The role.
        role: String,
        /// `SIGINT` or `SIGTERM`.
        signal: &'static str,
    },
    /// Packer finished but its manifest is missing or unreadable.
    #[error("cannot read Packer's manifest `{}`: {reason}", path.display())]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file of the build could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Packer's errors, each line indented under the headline, and where the
/// full log is.
fn failure(errors: &[String], log: &Path) -> String {
    if errors.is_empty() {
        return format!("; full log: {}", log.display());
    }
    let mut out = String::from(":");
    for line in errors.iter().flat_map(|e| e.lines()) {
        out.push_str("\n  ");
        out.push_str(line);
    }
    out.push_str(&format!("\n  full log: {}", log.display()));
    out
}

/// A Packer version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    /// Whether this Packer understands `required_plugins`, `metadata_options`
    /// and `imds_support` (Packer 1.7 with a current amazon plugin).
    pub fn is_current(self) -> bool {
        self >= Version(1, 7, 0)
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Parses `Packer v1.6.6` (and `1.11.2`, as newer versions print it).
pub fn parse_version(text: &str) -> Option<Version> {
    let word = text.split_whitespace().find(|w| {
        w.trim_start_matches('v')
            .starts_with(|c: char| c.is_ascii_digit())
    })?;
    let mut parts = word
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u32>());
    Some(Version(
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next().and_then(Result::ok).unwrap_or(0),
    ))
}

/// The installed Packer's version.
pub async fn version() -> Result<Version, Error> {
    let out = Command::new("packer")
        .arg("version")
        .env("CHECKPOINT_DISABLE", "1")
        .output()
        .await
        .map_err(Error::NotFound)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    parse_version(&text).ok_or(Error::Version(text.trim().to_string()))
}

/// Runs `packer init` on `template` in `dir`: current Packer installs the
/// amazon plugin named in `required_plugins`.
pub async fn init(role: &str, dir: &Path, template: &str) -> Result<(), Error> {
    let status = Command::new("packer")
        .arg("init")
        .arg(template)
        .current_dir(dir)
        .env("CHECKPOINT_DISABLE", "1")
        .status()
        .await
        .map_err(Error::NotFound)?;
    if status.success() {
        return Ok(());
    }
    Err(Error::Failed {
        role: role.to_string(),
        code: status.code().unwrap_or(-1),
        errors: vec!["packer init failed".into()],
        log: dir.join("packer.log"),
    })
}

/// One Packer build to run.
pub struct Run<'a> {
    /// The role, for messages.
    pub role: &'a str,
    /// The working directory (holds the template).
    pub dir: &'a Path,
    /// The template file name inside `dir`.
    pub template: &'a str,
    /// `-var` values.
    pub vars: &'a BTreeMap<&'static str, String>,
    /// The full log.
    pub log: &'a Path,
    /// Time limit of the whole build.
    pub timeout: Duration,
}

/// Runs `packer build`. On SIGINT or SIGTERM, or when the time limit
/// passes, Packer is sent the same interrupt and given time to delete what
/// it created before this returns.
pub async fn build(run: &Run<'_>, progress: &dyn Progress) -> Result<(), Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let log = tokio::fs::File::create(run.log)
        .await
        .map_err(io(run.log))?;
    let mut child = command(run).spawn().map_err(Error::NotFound)?;
    let mut watch = Watch {
        run,
        progress,
        log,
        pid: child.id().and_then(|p| i32::try_from(p).ok()),
        interrupted: None,
        timed_out: false,
        errors: Vec::new(),
        build_errors: Vec::new(),
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(io(run.log)(std::io::Error::other(
            "packer's output is not piped",
        )));
    };
    let status = watch.follow(&mut child, stdout, stderr).await?;
    watch.outcome(status)
}

/// `packer build -machine-readable` with the run's variables, in its own
/// process group.
fn command(run: &Run<'_>) -> Command {
    let mut cmd = Command::new("packer");
    cmd.arg("build")
        .arg("-machine-readable")
        .arg("-color=false");
    for (k, v) in run.vars {
        cmd.arg("-var").arg(format!("{k}={v}"));
    }
    cmd.arg(run.template)
        .current_dir(run.dir)
        .env("CHECKPOINT_DISABLE", "1")
        // Packer 1.6 reads AWS_MAX_ATTEMPTS as how often to poll while it
        // waits for an instance or an image (a few polls would fail every
        // build); the retry bound it stands for reaches Packer as the
        // template's `max_retries` instead.
        .env_remove(crate::aws::MAX_ATTEMPTS_ENV)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C in the terminal reaches imagectl
        // only, which forwards exactly one interrupt. Two would make Packer
        // quit without cleaning up.
        .process_group(0)
        .kill_on_drop(false);
    cmd
}

/// One Packer run being watched: its log, its errors, and what stopped it.
struct Watch<'a> {
    run: &'a Run<'a>,
    progress: &'a dyn Progress,
    log: tokio::fs::File,
    pid: Option<i32>,
    interrupted: Option<&'static str>,
    timed_out: bool,
    /// What Packer told people (`ui,error`), for failures before any build.
    errors: Vec<String>,
    /// The error each build ended with (`amazon-ebs.app,error`): the same
    /// text, once, when there is a build.
    build_errors: Vec<String>,
}

impl Watch<'_> {
    /// Streams Packer's output into the log and its steps to the progress
    /// display until it exits, forwarding signals and enforcing the time
    /// limit meanwhile.
    async fn follow(
        &mut self,
        child: &mut tokio::process::Child,
        stdout: tokio::process::ChildStdout,
        stderr: tokio::process::ChildStderr,
    ) -> Result<std::process::ExitStatus, Error> {
        let io = |source| Error::Io {
            path: self.run.log.to_path_buf(),
            source,
        };
        let mut stdout = BufReader::new(stdout).lines();
        let mut stderr = BufReader::new(stderr).lines();
        let mut sigint = signal(SignalKind::interrupt()).map_err(io)?;
        let mut sigterm = signal(SignalKind::terminate()).map_err(io)?;
        let deadline = tokio::time::sleep(self.run.timeout);
        tokio::pin!(deadline);
        let (mut out_open, mut err_open) = (true, true);
        let status = loop {
            tokio::select! {
                line = stdout.next_line(), if out_open => match line {
                    Ok(Some(line)) => self.stdout(&line).await,
                    _ => out_open = false,
                },
                line = stderr.next_line(), if err_open => match line {
                    Ok(Some(line)) => {
                        let _ = self.log.write_all(format!("stderr: {line}\n").as_bytes()).await;
                    }
                    _ => err_open = false,
                },
                status = child.wait(), if !out_open && !err_open => break status,
                _ = sigint.recv() => self.interrupt("SIGINT", libc::SIGINT, "interrupted"),
                _ = sigterm.recv() => self.interrupt("SIGTERM", libc::SIGTERM, "terminated"),
                _ = &mut deadline => {
                    let next = self.time_up();
                    deadline.as_mut().reset(tokio::time::Instant::now() + next);
                }
            }
        };
        let _ = self.log.flush().await;
        status.map_err(|source| Error::Io {
            path: self.run.log.to_path_buf(),
            source,
        })
    }

    /// A line of Packer's machine-readable output.
    async fn stdout(&mut self, line: &str) {
        let _ = self.log.write_all(line.as_bytes()).await;
        let _ = self.log.write_all(b"\n").await;
        match parse_line(line) {
            Some(Event::Say(m)) => self.progress.step(self.run.role, &m),
            Some(Event::Error(m)) if !self.errors.contains(&m) => self.errors.push(m),
            Some(Event::BuildError(m)) if !self.build_errors.contains(&m) => {
                self.build_errors.push(m)
            }
            _ => {}
        }
    }

    fn forward(&self, sig: i32) {
        if let Some(pid) = self.pid {
            // SAFETY: kill(2) with a PID we spawned and a valid signal number.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    fn interrupt(&mut self, name: &'static str, sig: i32, what: &str) {
        self.progress.step(
            self.run.role,
            &format!("{what}: waiting for Packer to clean up"),
        );
        self.interrupted = Some(name);
        self.forward(sig);
    }

    /// The time limit passed: Packer is interrupted and gets a bounded time
    /// to clean up, then is killed. Returns when to look again.
    fn time_up(&mut self) -> Duration {
        if self.timed_out {
            self.forward(libc::SIGKILL);
            Duration::from_secs(5)
        } else {
            self.progress.step(
                self.run.role,
                "time limit reached: waiting for Packer to clean up",
            );
            self.timed_out = true;
            self.forward(libc::SIGINT);
            Duration::from_secs(600)
        }
    }

    /// What the run came to.
    fn outcome(self, status: std::process::ExitStatus) -> Result<(), Error> {
        let role = self.run.role.to_string();
        if let Some(signal) = self.interrupted {
            return Err(Error::Interrupted { role, signal });
        }
        if self.timed_out {
            return Err(Error::TimedOut {
                role,
                limit: self.run.timeout,
                log: self.run.log.to_path_buf(),
            });
        }
        if !status.success() {
            let errors = if self.build_errors.is_empty() {
                self.errors
            } else {
                self.build_errors
            };
            return Err(Error::Failed {
                role,
                code: status.code().unwrap_or(-1),
                errors,
                log: self.run.log.to_path_buf(),
            });
        }
        Ok(())
    }
}

/// What a machine-readable line says that matters to people.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    /// A step (`==> amazon-ebs.worker: Creating AMI ...`).
    Say(String),
    /// An error message shown to people, whole.
    Error(String),
    /// The error a build ended with, whole, after the build's name.
    BuildError(String),
}

/// The most of one error kept in imagectl's message; the log has all of it
/// (an HTTP body dumped in hex, say).
const MAX_ERROR_LINES: usize = 30;

/// Parses `timestamp,target,type,data...`, unescaping Packer's `%!(PACKER_COMMA)`
/// and literal `\n`.
fn parse_line(line: &str) -> Option<Event> {
    let mut fields = line.splitn(4, ',');
    let (_ts, target, kind, data) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let unescape = |t: &str| t.replace("%!(PACKER_COMMA)", ",").replace("\\n", "\n");
    match kind {
        // Packer's record of how a build ended: once per build, whole.
        "error" if !target.is_empty() => {
            let text = error_text(&unescape(data))?;
            Some(Event::BuildError(format!("{target}: {text}")))
        }
        "ui" => {
            let (level, text) = data.split_once(',')?;
            ui(level, unescape(text).trim())
        }
        _ => None,
    }
}

/// A `ui` line: a step, or an error.
fn ui(level: &str, text: &str) -> Option<Event> {
    match level {
        // `say` lines are Packer's steps (`==> ...`); `message` lines are
        // their details (every tag added, ...): those stay in the log.
        "say" => {
            if text.starts_with("--> ")
                || text.starts_with("Builds finished")
                || text.starts_with("Wait completed")
            {
                return None;
            }
            let text = text.trim_start_matches("==> ");
            // Drop the `amazon-ebs.worker: ` prefix: the display names the role.
            let text = text.split_once(": ").map_or(text, |(head, rest)| {
                if head.contains('.') && !head.contains(' ') {
                    rest
                } else {
                    text
                }
            });
            (!text.is_empty()).then(|| Event::Say(text.lines().next().unwrap_or("").to_string()))
        }
        "error" => error_text(text).map(Event::Error),
        _ => None,
    }
}

/// An error's lines without Packer's `==> amazon-ebs.app: ` before each,
/// its blank lines and its summary headline, cut to [`MAX_ERROR_LINES`].
fn error_text(text: &str) -> Option<String> {
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim_end();
        let line = match line.strip_prefix("==> ").or(line.strip_prefix("--> ")) {
            // The builder's name before each line, where it has one.
            Some(rest) => rest
                .split_once(": ")
                .filter(|(head, _)| head.contains('.') && !head.contains(' '))
                .map_or(rest, |(_, r)| r),
            None => line,
        };
        if line.trim().is_empty()
            || line.starts_with("Some builds didn't complete successfully")
            || line.starts_with("Builds finished but no artifacts")
        {
            continue;
        }
        lines.push(line);
    }
    if lines.is_empty() {
        return None;
    }
    let more = lines.len().saturating_sub(MAX_ERROR_LINES);
    lines.truncate(MAX_ERROR_LINES);
    let mut out = lines.join("\n");
    if more > 0 {
        out.push_str(&format!("\n... {more} more lines in the log"));
    }
    Some(out)
}

/// The AMI ID per region from Packer's manifest post-processor.
pub fn read_manifest(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let fail = |reason: String| Error::Manifest {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let last = v["last_run_uuid"].as_str().unwrap_or_default();
    let build = v["builds"]
        .as_array()
        .and_then(|b| {
            b.iter()
                .rev()
                .find(|b| b["packer_run_uuid"] == last)
                .or(b.last())
        })
        .ok_or_else(|| fail("no build in it".into()))?;
    let artifact = build["artifact_id"]
        .as_str()
        .ok_or_else(|| fail("no artifact_id".into()))?;
    let mut amis = BTreeMap::new();
    for pair in artifact.split(',') {
        let (region, ami) = pair
            .split_once(':')
            .ok_or_else(|| fail(format!("unexpected artifact `{pair}`")))?;
        amis.insert(region.to_string(), ami.to_string());
    }
    Ok(amis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_version("Packer v1.6.6\n"), Some(Version(1, 6, 6)));
        assert_eq!(
            parse_version("Packer v1.11.2\n\nYour version of Packer is out of date!"),
            Some(Version(1, 11, 2))
        );
        assert_eq!(parse_version("1.9.4"), Some(Version(1, 9, 4)));
        assert!(!Version(1, 6, 6).is_current());
        assert!(Version(1, 11, 0).is_current());
    }

    #[test]
    fn machine_readable_lines() {
        assert_eq!(
            parse_line("1795690494,,ui,say,==> amazon-ebs.worker: Creating AMI imagectl-worker-abc from instance i-1"),
            Some(Event::Say("Creating AMI imagectl-worker-abc from instance i-1".into()))
        );
        assert_eq!(
            parse_line(
                "1,,ui,error,Build 'amazon-ebs.worker' errored: bad%!(PACKER_COMMA) very bad\\n"
            ),
            Some(Event::Error(
                "Build 'amazon-ebs.worker' errored: bad, very bad".into()
            ))
        );
        assert_eq!(
            parse_line("1,amazon-ebs.worker,artifact,0,id,eu-west-1:ami-1"),
            None
        );
        assert_eq!(
            parse_line(
                "1,,ui,error,\\n==> Some builds didn't complete successfully and had errors:"
            ),
            None
        );
    }

    /// Packer 1.6.6's lines for a subnet that does not exist: every line
    /// of the error is kept, without the builder's name before each.
    #[test]
    fn an_error_over_several_lines_is_kept_whole() {
        let filters = "{\\n  Filters: [{\\n      Name: \"tag:Name\"%!(PACKER_COMMA)\\n      Values: [\"x\"]\\n    }]\\n}";
        let whole = "No Subnets was found matching filters: {\n  Filters: [{\n      Name: \"tag:Name\",\n      Values: [\"x\"]\n    }]\n}";
        assert_eq!(
            parse_line(&format!(
                "1,amazon-ebs.app,error,No Subnets was found matching filters: {filters}"
            )),
            Some(Event::BuildError(format!("amazon-ebs.app: {whole}")))
        );
        let prefixed = "==> amazon-ebs.app: No Subnets was found matching filters: {\\n==> amazon-ebs.app:   Filters: [{\\n==> amazon-ebs.app:       Name: \"tag:Name\"%!(PACKER_COMMA)\\n==> amazon-ebs.app:       Values: [\"x\"]\\n==> amazon-ebs.app:     }]\\n==> amazon-ebs.app: }";
        assert_eq!(
            parse_line(&format!("1,,ui,error,{prefixed}")),
            Some(Event::Error(whole.into()))
        );
        let long = (0..40)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\\n");
        let Some(Event::Error(cut)) = parse_line(&format!("1,,ui,error,{long}")) else {
            panic!("not an error");
        };
        assert_eq!(cut.lines().count(), 31);
        assert!(
            cut.ends_with("line 29\n... 10 more lines in the log"),
            "{cut}"
        );
    }

    #[test]
    fn a_failure_lists_packers_errors_under_its_headline() {
        let e = Error::Failed {
            role: "app".into(),
            code: 1,
            errors: vec!["amazon-ebs.app: bad {\n  x\n}".into()],
            log: PathBuf::from("/b/packer.log"),
        };
        assert_eq!(
            e.to_string(),
            "packer build of `app` failed (exit code 1):\n  amazon-ebs.app: bad {\n    x\n  }\n  full log: /b/packer.log"
        );
    }

    #[test]
    fn manifest_gives_amis_per_region() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.json");
        std::fs::write(
            &p,
            r#"{"builds":[{"name":"worker","artifact_id":"eu-central-1:ami-6f0c,eu-west-1:ami-981e","packer_run_uuid":"u1"}],"last_run_uuid":"u1"}"#,
        )
        .unwrap();
        let amis = read_manifest(&p).unwrap();
        assert_eq!(amis["eu-west-1"], "ami-981e");
        assert_eq!(amis["eu-central-1"], "ami-6f0c");
    }
}
