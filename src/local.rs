//! The local target: a role built into a real Debian root filesystem on this
//! machine (mmdebstrap, the same staged context and provisioning script as
//! an AMI) and booted under systemd-nspawn to test it, no AWS account needed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hash::{file_sha256, ContentHash};
use crate::lock::Lock;
use crate::packer_exec::Progress;
use crate::project::{Arch, Project};
use crate::role::Role;
use crate::{fsutil, record, stage};

/// Where local images go, relative to the project root.
pub const LOCAL_DIR: &str = "images/local";

/// The Debian mirror, unless `IMAGECTL_DEBIAN_MIRROR` names another.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// Errors of the local target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not running as root.
    #[error("local builds and tests need root: mmdebstrap bootstraps in root mode and the provisioning script runs in a chroot; run imagectl as root (or with sudo)")]
    NotRoot,
    /// A tool is missing.
    #[error("`{tool}` is not installed; install it with `apt-get install {package}` (scripts/setup does)")]
    Missing {
        /// The command.
        tool: &'static str,
        /// The Debian package.
        package: &'static str,
    },
    /// The role's base has no Debian suite.
    #[error("base `{0}` has no Debian suite for local builds; set `suite = \"bookworm\"` in `[bases.{0}]`")]
    NoSuite(String),
    /// The role is for another architecture.
    #[error(
        "role `{role}` is {want}, but this machine is {host}; build it locally on a {want} machine"
    )]
    Arch {
        /// The role.
        role: String,
        /// The role's architecture.
        want: &'static str,
        /// This machine's Debian architecture.
        host: String,
    },
    /// mmdebstrap failed.
    #[error("mmdebstrap failed for `{role}` ({status}){}; its log: {}", reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default(), log.display())]
    Bootstrap {
        /// The role.
        role: String,
        /// How it ended.
        status: String,
        /// The provisioning script's own last word, when it said one.
        reason: Option<String>,
        /// The full log.
        log: PathBuf,
    },
    /// Staging failed.
    #[error(transparent)]
    Stage(#[from] stage::Error),
    /// A sidecar did not start.
    #[error(transparent)]
    Sidecar(#[from] crate::sidecar::Error),
    /// A file could not be read or written.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn need(tool: &'static str, package: &'static str) -> Result<(), Error> {
    if fsutil::on_path(tool) {
        Ok(())
    } else {
        Err(Error::Missing { tool, package })
    }
}

fn require_root() -> Result<(), Error> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(Error::NotRoot)
    }
}

/// A local image.
#[derive(Debug, Clone, Serialize)]
pub struct LocalImage {
    /// The role.
    pub role: String,
    /// Its content hash.
    pub hash: String,
    /// The root filesystem tarball.
    pub tar: PathBuf,
    /// SHA-256 of the tarball.
    pub sha256: String,
    /// Whether this run built it (false: it existed already).
    pub built: bool,
    /// How long the build took, seconds.
    pub duration_secs: f64,
}

/// The tarball of a role's hash.
pub fn tar_path(project: &Project, role: &str, hash: &ContentHash) -> PathBuf {
    project
        .root
        .join(LOCAL_DIR)
        .join(format!("{role}-{}.tar", hash.short()))
}

/// The role's Debian architecture, if this machine runs it.
fn debian_arch(role: &Role) -> Result<&'static str, Error> {
    let want = match role.image.arch {
        Arch::X86_64 => "amd64",
        Arch::Arm64 => "arm64",
    };
    let host = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if host == want {
        Ok(want)
    } else {
        Err(Error::Arch {
            role: role.name.clone(),
            want: role.image.arch.as_str(),
            host,
        })
    }
}

/// Seconds since the epoch of an ISO 8601 UTC time (`2026-09-01T22:51:07.000Z`).
fn epoch_of(iso: &str) -> Option<u64> {
    let (date, time) = iso.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time
        .trim_end_matches('Z')
        .split([':', '.'])
        .map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86400 + hh * 3600 + mm * 60 + ss).ok()
}

/// Builds the role's root filesystem unless a tarball of its hash exists.
pub fn build(
    project: &Project,
    lock: &Lock,
    role: &Role,
    hash: &ContentHash,
    agent: &Path,
    progress: &dyn Progress,
) -> Result<LocalImage, Error> {
    let start = Instant::now();
    let source_date_epoch = source_date_epoch(project, lock, role);
    let tar = tar_path(project, &role.name, hash);
    if tar.is_file() {
        let sha256 = file_sha256(&tar).map_err(io("read", &tar))?;
        return Ok(LocalImage {
            role: role.name.clone(),
            hash: hash.hash.clone(),
            tar,
            sha256,
            built: false,
            duration_secs: 0.0,
        });
    }
    require_root()?;
    need("mmdebstrap", "mmdebstrap")?;
    let arch = debian_arch(role)?;
    let base_name = role.image.base.clone().unwrap_or_default();
    let suite = project
        .settings
        .bases
        .get(&base_name)
        .and_then(|b| b.suite(&base_name))
        .ok_or_else(|| Error::NoSuite(base_name.clone()))?;

    let dir = project.root.join(LOCAL_DIR);
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    let work = dir.join(format!(".work-{}-{}", role.name, std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io("create", &work))?;
    let result = (|| {
        progress.step(&role.name, "staging the build context");
        let stage_dir = work.join("imagectl-stage");
        stage::stage(project, role, hash, agent, &stage_dir)?;

        // Downloaded packages are kept between builds: the second build of a
        // role downloads nothing it already has.
        let cache = std::env::var_os("IMAGECTL_APT_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(".cache/imagectl/apt-archives")
            });
        std::fs::create_dir_all(&cache).map_err(io("create", &cache))?;
        // One build at a time uses the cache: a build syncing it in must not
        // see a half-copied package from another syncing it out.
        let lock_path = cache.join(".lock");
        let lock_file = std::fs::File::create(&lock_path).map_err(io("create", &lock_path))?;
        // SAFETY: flock on a file descriptor this function owns; released
        // when `lock_file` is dropped at the end of the build.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock_file), libc::LOCK_EX) } != 0 {
            return Err(Error::Io {
                action: "lock",
                path: lock_path,
                source: std::io::Error::last_os_error(),
            });
        }
        let mut include = vec![
            "systemd".to_string(),
            "systemd-sysv".to_string(),
            "dbus".to_string(),
        ];
        include.extend(role.packages.iter().map(|p| p.apt_arg()));
        let mirror =
            std::env::var("IMAGECTL_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.to_string());
        let partial = work.join("rootfs.tar");
        let log_path = dir.join(format!("{}-{}.log", role.name, hash.short()));
        // mmdebstrap's special hooks (sync-in, copy-in) split their
        // arguments at spaces: these paths must have none.
        for p in [&cache, &stage_dir] {
            if p.display().to_string().contains(char::is_whitespace) {
                return Err(Error::Io {
                    action: "use",
                    path: p.clone(),
                    source: std::io::Error::other(
                        "mmdebstrap hooks cannot take a path with spaces",
                    ),
                });
            }
        }
        let q = |p: &Path| p.display().to_string();
        let mut cmd = Command::new("mmdebstrap");
        cmd.arg("--mode=root")
            .arg("--variant=minbase")
            .arg(format!("--architectures={arch}"))
            .arg(format!("--include={}", include.join(",")))
            .arg("--skip=essential/unlink")
            .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
            .arg(format!("--setup-hook=sync-in {} /var/cache/apt/archives/", q(&cache)))
            .arg(format!("--customize-hook=sync-out /var/cache/apt/archives {}", q(&cache)))
            .arg(format!("--customize-hook=copy-in {} /tmp", q(&stage_dir)))
            // The same provisioning script as the AMI build, in a chroot.
            .arg("--customize-hook=chroot \"$1\" bash /tmp/imagectl-stage/provision.sh")
            // Nothing of this machine's identity or network stays behind.
            .arg("--customize-hook=rm -rf \"$1\"/tmp/imagectl-stage \"$1\"/etc/hostname \"$1\"/etc/resolv.conf")
            .arg(&suite)
            .arg(&partial)
            .arg(&mirror)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(epoch) = source_date_epoch {
            cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
        }
        progress.step(
            &role.name,
            &format!("mmdebstrap {suite} ({} packages)", include.len()),
        );
        let mut child = cmd.spawn().map_err(io("run", Path::new("mmdebstrap")))?;
        let mut log = std::fs::File::create(&log_path).map_err(io("write", &log_path))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let out_thread = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        let deadline =
            Instant::now() + Duration::from_secs(project.settings.build.timeout_minutes * 60);
        let mut reason = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            use std::io::Write;
            let _ = writeln!(log, "{line}");
            if let Some(r) = line.strip_prefix("imagectl: check failed: ") {
                reason = Some(format!("check failed: {r}"));
            }
            if let Some(step) = line.strip_prefix("I: ") {
                progress.step(&role.name, step);
            } else if line.starts_with("imagectl: ") {
                progress.step(&role.name, line.trim_start_matches("imagectl: "));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
            }
        }
        for line in out_thread.join().unwrap_or_default() {
            use std::io::Write;
            let _ = writeln!(log, "{line}");
        }
        let status = child
            .wait()
            .map_err(io("wait for", Path::new("mmdebstrap")))?;
        if !status.success() {
            return Err(Error::Bootstrap {
                role: role.name.clone(),
                status: status.to_string(),
                reason,
                log: log_path,
            });
        }
        std::fs::rename(&partial, &tar).map_err(io("rename into", &tar))?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result?;

    let sha256 = file_sha256(&tar).map_err(io("read", &tar))?;
    write_sums(&dir, &tar, &sha256)?;
    let _ = record::add(
        &project.root,
        record::Record {
            role: role.name.clone(),
            hash: hash.hash.clone(),
            target: "local".into(),
            artifact: format!(
                "{LOCAL_DIR}/{}",
                tar.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            built_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
    );
    Ok(LocalImage {
        role: role.name.clone(),
        hash: hash.hash.clone(),
        tar,
        sha256,
        built: true,
        duration_secs: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    })
}

/// `SOURCE_DATE_EPOCH` for a role: its base image's creation time from the
/// lock, so that the same inputs give the same timestamps.
pub fn source_date_epoch(project: &Project, lock: &Lock, role: &Role) -> Option<u64> {
    let base = lock
        .resolve(project, role.image.base.as_deref().unwrap_or(""))
        .ok()?;
    epoch_of(&base.created)
}

/// Adds or replaces the tarball's line in `SHA256SUMS` (the format
/// `sha256sum -c` reads).
fn write_sums(dir: &Path, tar: &Path, sha256: &str) -> Result<(), Error> {
    let sums = dir.join("SHA256SUMS");
    let name = tar
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut lines: BTreeMap<String, String> = std::fs::read_to_string(&sums)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once("  ")
                .map(|(h, n)| (n.to_string(), h.to_string()))
        })
        .collect();
    lines.insert(name, sha256.to_string());
    let text: String = lines.iter().map(|(n, h)| format!("{h}  {n}\n")).collect();
    fsutil::write_atomic(&sums, text.as_bytes()).map_err(io("write", &sums))
}

/// The outcome of `imagectl test`.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    /// The role.
    pub role: String,
    /// Whether the image was booted (false: nspawn could not run, and only
    /// what needs no booted system was checked in a chroot).
    pub booted: bool,
    /// Each check: (kind, name, passed, milliseconds).
    pub results: Vec<TestResult>,
    /// The agent's boot report, as it wrote it.
    pub agent_report: Option<serde_json::Value>,
    /// Journal lines of each failing unit.
    pub journals: BTreeMap<String, String>,
    /// Wall time from boot to the end of the checks, seconds.
    pub boot_to_checks_secs: f64,
    /// Everything passed.
    pub passed: bool,
}

/// One line of the test results.
#[derive(Debug, Clone, Serialize)]
pub struct TestResult {
    /// `agent`, `check` or `unit`.
    pub kind: String,
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// How long it took, milliseconds.
    pub ms: u64,
}

/// The script the test unit runs inside the booted image.
fn test_script(role: &Role) -> String {
    let q = |s: &str| stage::sh_quote(s);
    let mut s = String::from(
        "#!/bin/bash\n\
         # Generated by `imagectl test`: runs inside the booted image after the agent.\n\
         set -u\n\
         out=/var/lib/imagectl-test\n\
         rm -rf \"$out\" && mkdir -p \"$out/journal\"\n\
         failed=0\n\
         now() { date +%s%3N; }\n\
         result() { printf '%s\\t%s\\t%s\\t%s\\n' \"$1\" \"$2\" \"$3\" \"$4\" >> \"$out/results.tsv\"; }\n\
         journal() { journalctl --no-pager -o cat -n 60 -u \"$1\" > \"$out/journal/$1.txt\" 2>&1; }\n\
         t=$(now)\n\
         cp /run/imagectl/boot.json \"$out/boot.json\" 2>/dev/null\n\
         if systemctl is-active --quiet imagectl-agent.service; then result agent imagectl-agent.service pass $(( $(now) - t ));\n\
         else result agent imagectl-agent.service fail $(( $(now) - t )); journal imagectl-agent.service; failed=1; fi\n",
    );
    for (i, c) in role.checks.iter().enumerate() {
        s.push_str(&format!(
            "t=$(now); if bash -c {run} >\"$out/check-{i}.log\" 2>&1; then result check {name} pass $(( $(now) - t )); \
             else result check {name} fail $(( $(now) - t )); cp \"$out/check-{i}.log\" \"$out/journal/check: \"{name}.txt; failed=1; fi\n",
            run = q(&c.run),
            name = q(&c.name)
        ));
    }
    let mut units: Vec<&str> = role
        .services
        .iter()
        .filter(|s| s.enabled)
        .map(|s| s.name.as_str())
        .collect();
    units.extend(role.boot.start.iter().map(String::as_str));
    units.dedup();
    for u in units {
        // A unit whose own conditions do not hold here (chrony needs
        // CAP_SYS_TIME, which a container lacks) is skipped, not failed.
        s.push_str(&format!(
            "t=$(now); if systemctl is-active --quiet {u}; then result unit {u} pass $(( $(now) - t )); \
             elif [ \"$(systemctl show -p ConditionTimestampMonotonic --value {u})\" != 0 ] \
                  && [ \"$(systemctl show -p ConditionResult --value {u})\" = no ]; then result unit {u} skip $(( $(now) - t )); \
             else result unit {u} fail $(( $(now) - t )); journal {u}; failed=1; fi\n",
            u = q(u)
        ));
    }
    s.push_str("sync\nsystemctl exit \"$((failed ? 1 : 0))\"\n");
    s
}

/// Boots `image` under systemd-nspawn with the parameters of `params` and
/// checks it; or, where nspawn cannot run, runs the checks in a chroot.
pub fn test(
    role: &Role,
    image: &LocalImage,
    params: &Path,
    env: &str,
    timeout: Duration,
    keep: bool,
    progress: &dyn Progress,
) -> Result<TestReport, Error> {
    require_root()?;
    let dir = tempfile_dir(&image.tar)?;
    let root = dir.join("rootfs");
    std::fs::create_dir_all(&root).map_err(io("create", &root))?;
    let result = (|| {
        progress.step(&role.name, "unpacking the image");
        let status = Command::new("tar")
            .args(["-xpf"])
            .arg(&image.tar)
            .args(["--numeric-owner", "-C"])
            .arg(&root)
            .status()
            .map_err(io("run", Path::new("tar")))?;
        if !status.success() {
            return Err(Error::Io {
                action: "unpack",
                path: image.tar.clone(),
                source: std::io::Error::other(status.to_string()),
            });
        }
        // The agent reads the parameters from a file instead of SSM.
        let etc = root.join("etc/imagectl");
        std::fs::copy(params, etc.join("test-params.toml")).map_err(io("copy", params))?;
        let dropin = root.join("etc/systemd/system/imagectl-agent.service.d");
        std::fs::create_dir_all(&dropin).map_err(io("create", &dropin))?;
        let exec = format!(
            "[Service]\nExecStart=\nExecStart=/usr/local/bin/imagectl-agent boot --params /etc/imagectl/test-params.toml --env {}\n",
            stage::sh_quote(env)
        );
        std::fs::write(dropin.join("imagectl-test.conf"), exec).map_err(io("write", &dropin))?;
        let script = root.join("usr/local/lib/imagectl-test/run.sh");
        std::fs::create_dir_all(script.parent().unwrap_or(&root)).map_err(io("create", &script))?;
        std::fs::write(&script, test_script(role)).map_err(io("write", &script))?;
        let mut after = vec!["imagectl-agent.service".to_string()];
        after.extend(
            role.services
                .iter()
                .filter(|s| s.enabled)
                .map(|s| s.name.clone()),
        );
        after.extend(role.boot.start.iter().cloned());
        let unit = format!(
            "[Unit]\nDescription=imagectl test of role {}\nAfter={}\n\n[Service]\nType=oneshot\nExecStart=/bin/bash /usr/local/lib/imagectl-test/run.sh\n\n[Install]\nWantedBy=multi-user.target\n",
            role.name,
            after.join(" ")
        );
        let units = root.join("etc/systemd/system");
        std::fs::write(units.join("imagectl-test.service"), unit).map_err(io("write", &units))?;
        let wants = units.join("multi-user.target.wants");
        std::fs::create_dir_all(&wants).map_err(io("create", &wants))?;
        let link = wants.join("imagectl-test.service");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/etc/systemd/system/imagectl-test.service", &link)
            .map_err(io("link", &link))?;

        let start = Instant::now();
        let nspawn = need("systemd-nspawn", "systemd-container").is_ok();
        let sidecars = if nspawn && !role.test.sidecars.is_empty() {
            progress.step(
                &role.name,
                &format!("starting sidecars: {}", role.test.sidecars.join("; ")),
            );
            Some(crate::sidecar::Sidecars::start(&role.test.sidecars, &dir)?)
        } else {
            None
        };
        let netns = sidecars.as_ref().map(|s| s.netns_path());
        let booted = nspawn && boot(&root, netns.as_deref(), timeout, progress, &role.name)?;
        drop(sidecars);
        if !booted {
            progress.step(&role.name, "systemd-nspawn cannot run here: the boot is skipped; running the checks in a chroot");
            chroot_checks(&root, role)?;
        }
        let elapsed = start.elapsed();
        collect(&root, role, booted, elapsed)
    })();
    if keep {
        progress.step(
            &role.name,
            &format!("kept the booted root filesystem at {}", root.display()),
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn tempfile_dir(near: &Path) -> Result<PathBuf, Error> {
    let parent = near.parent().unwrap_or(Path::new("."));
    let dir = parent.join(format!(".test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
    Ok(dir)
}

/// Boots the root filesystem; true when the boot ran (whatever its result).
fn boot(
    root: &Path,
    netns: Option<&Path>,
    timeout: Duration,
    progress: &dyn Progress,
    role: &str,
) -> Result<bool, Error> {
    progress.step(role, "booting under systemd-nspawn");
    // No network but loopback (the sidecars' namespace has nothing else);
    // no machined or D-Bus on the host, hence --register=no --keep-unit.
    let network = match netns {
        Some(ns) => format!("--network-namespace-path={}", ns.display()),
        None => "--private-network".to_string(),
    };
    let status = Command::new("timeout")
        .arg("--kill-after=10")
        .arg(timeout.as_secs().to_string())
        .args(["systemd-nspawn", "--register=no", "--keep-unit", "--quiet"])
        .arg(network)
        .args([
            "--console=pipe",
            "--resolv-conf=off",
            "--timezone=off",
            "--link-journal=no",
            "-D",
        ])
        .arg(root)
        .arg("-b")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(io("run", Path::new("systemd-nspawn")))?;
    // timeout(1) exits 124 (137 once it had to kill) when the limit passed;
    // the results then say what did not finish.
    let timed_out = matches!(status.code(), Some(124) | Some(137));
    if timed_out {
        progress.step(
            role,
            &format!(
                "the boot took longer than {} s and was stopped",
                timeout.as_secs()
            ),
        );
    }
    // The test unit wrote its results: the image booted. Neither results nor
    // a timeout: nspawn itself could not run here.
    Ok(timed_out || root.join("var/lib/imagectl-test").exists())
}

/// Without nspawn: the role's checks in a chroot with its own mount and PID
/// namespaces. Units cannot run; the boot is reported as skipped.
fn chroot_checks(root: &Path, role: &Role) -> Result<(), Error> {
    let out = root.join("var/lib/imagectl-test");
    std::fs::create_dir_all(&out).map_err(io("create", &out))?;
    let mut tsv = String::new();
    for c in &role.checks {
        let t = Instant::now();
        let ok = Command::new("unshare")
            .args(["--mount", "--pid", "--fork"])
            .arg(format!("--mount-proc={}", root.join("proc").display()))
            .arg("chroot")
            .arg(root)
            .args(["bash", "-c", &c.run])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        tsv.push_str(&format!(
            "check\t{}\t{}\t{}\n",
            c.name,
            if ok { "pass" } else { "fail" },
            t.elapsed().as_millis()
        ));
    }
    std::fs::write(out.join("results.tsv"), tsv).map_err(io("write", &out))
}

fn collect(root: &Path, role: &Role, booted: bool, elapsed: Duration) -> Result<TestReport, Error> {
    let out = root.join("var/lib/imagectl-test");
    let tsv = std::fs::read_to_string(out.join("results.tsv")).unwrap_or_default();
    let results: Vec<TestResult> = tsv
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4).then(|| TestResult {
                kind: f[0].into(),
                name: if f[2] == "skip" {
                    format!("{} (skipped: its conditions do not hold here)", f[1])
                } else {
                    f[1].into()
                },
                passed: f[2] != "fail",
                ms: f[3].parse().unwrap_or(0),
            })
        })
        .collect();
    let agent_report = std::fs::read(out.join("boot.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut journals = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(out.join("journal")) {
        for e in entries.flatten() {
            let name = e
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".txt")
                .to_string();
            journals.insert(name, std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    let expected = role.checks.len() + usize::from(booted);
    let passed = results.len() >= expected && results.iter().all(|r| r.passed);
    Ok(TestReport {
        role: role.name.clone(),
        booted,
        results,
        agent_report,
        journals,
        boot_to_checks_secs: (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        passed,
    })
}

/// Writes `ROLE-HASH12.oci.tar` next to the tarball: an OCI image layout
/// (one uncompressed layer, the root filesystem; `/sbin/init` as the
/// command) archived deterministically, which `podman load`, `docker load`
/// and `skopeo` accept. The first step toward containers.
pub fn write_oci(
    project: &Project,
    lock: &Lock,
    role: &Role,
    image: &LocalImage,
) -> Result<PathBuf, Error> {
    let arch = role.image.arch;
    let epoch = source_date_epoch(project, lock, role).unwrap_or(0);
    let dir = image.tar.parent().unwrap_or(Path::new(".")).to_path_buf();
    let stem = image
        .tar
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = dir.join(format!("{stem}.oci.tar"));
    let layout = dir.join(format!(".oci-{}-{}", stem, std::process::id()));
    let _ = std::fs::remove_dir_all(&layout);
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
    let result = (|| {
        let layer_size = std::fs::metadata(&image.tar)
            .map_err(io("read", &image.tar))?
            .len();
        // The layer is the tarball itself: linked, not copied.
        let layer_blob = blobs.join(&image.sha256);
        if std::fs::hard_link(&image.tar, &layer_blob).is_err() {
            std::fs::copy(&image.tar, &layer_blob).map_err(io("copy", &image.tar))?;
        }
        let blob = |json: serde_json::Value| -> Result<(String, u64), Error> {
            let bytes = serde_json::to_vec(&json).unwrap_or_default();
            let digest = crate::hash::hex(&sha2::Digest::finalize(sha2::Digest::chain_update(
                sha2::Sha256::default(),
                &bytes,
            )));
            let path = blobs.join(&digest);
            std::fs::write(&path, &bytes).map_err(io("write", &path))?;
            Ok((digest, bytes.len() as u64))
        };
        let created = crate::build::utc_stamp(std::time::UNIX_EPOCH + Duration::from_secs(epoch));
        let created = format!(
            "{}-{}-{}T{}:{}:{}Z",
            &created[0..4],
            &created[4..6],
            &created[6..8],
            &created[8..10],
            &created[10..12],
            &created[12..14]
        );
        let goarch = match arch {
            Arch::X86_64 => "amd64",
            Arch::Arm64 => "arm64",
        };
        let (config, config_size) = blob(serde_json::json!({
            "created": created,
            "architecture": goarch,
            "os": "linux",
            "config": {"Cmd": ["/sbin/init"], "StopSignal": "SIGRTMIN+3", "Labels": {
                "org.opencontainers.image.title": image.role,
                "org.opencontainers.image.revision": image.hash,
            }},
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", image.sha256)]},
            "history": [{"created": created, "created_by": "imagectl build --target local --format oci"}],
        }))?;
        let (manifest, manifest_size) = blob(serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{config}"), "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", image.sha256), "size": layer_size}],
        }))?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest}"),
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": format!("{}:{}", image.role, &image.hash[..12])},
            }],
        });
        let index_path = layout.join("index.json");
        std::fs::write(&index_path, serde_json::to_vec(&index).unwrap_or_default())
            .map_err(io("write", &index_path))?;
        let marker = layout.join("oci-layout");
        std::fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(io("write", &marker))?;
        let partial = dir.join(format!(".{stem}.oci.tar.partial"));
        let status = Command::new("tar")
            .args([
                "--sort=name",
                "--owner=0",
                "--group=0",
                "--numeric-owner",
                "--hard-dereference",
            ])
            .arg(format!("--mtime=@{epoch}"))
            .arg("-cf")
            .arg(&partial)
            .arg("-C")
            .arg(&layout)
            .args(["oci-layout", "index.json", "blobs"])
            .status()
            .map_err(io("run", Path::new("tar")))?;
        if !status.success() {
            return Err(Error::Io {
                action: "archive",
                path: out.clone(),
                source: std::io::Error::other(status.to_string()),
            });
        }
        std::fs::rename(&partial, &out).map_err(io("rename into", &out))
    })();
    let _ = std::fs::remove_dir_all(&layout);
    result?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_times_to_epoch() {
        assert_eq!(epoch_of("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(epoch_of("2026-11-26T10:54:54Z"), Some(1_795_690_494));
        assert_eq!(epoch_of("2000-02-29T00:00:00.000Z"), Some(951_782_400));
        assert_eq!(epoch_of("yesterday"), None);
    }
}
