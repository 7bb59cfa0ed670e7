//! mmdebstrap, run the way the local target needs it: the role's Debian
//! suite and architecture, its packages, the staged context provisioned by
//! the same script as an AMI, a package cache shared between builds, the
//! host's identity left out, and `SOURCE_DATE_EPOCH` for identical bytes.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imagectl_core::project::Project;
use imagectl_core::target::Target;

use imagectl_core::fsutil::{io_error, IoError};

use super::{Error, LOCAL_DIR};
use crate::progress::Progress;

/// Where the staged context is copied into the root filesystem while it is
/// provisioned (not `/tmp`: the container has a `/tmp` of its own).
const STAGE_IN_ROOT: &str = "/var/lib/imagectl-stage";

/// The Debian mirror, unless `IMAGECTL_DEBIAN_MIRROR` names another.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// One bootstrap, decided before anything is written.
pub struct Plan {
    role: String,
    suite: String,
    arch: &'static str,
    include: Vec<String>,
    mirror: String,
    cache: PathBuf,
    log: PathBuf,
    source_date_epoch: Option<i64>,
    timeout: Duration,
    /// mmdebstrap hooks run before the provisioning script (a disk image's
    /// fstab and network), and after the cleanup.
    before_provision: Vec<String>,
    after_cleanup: Vec<String>,
}

impl Plan {
    /// The bootstrap of `t`, refused when its base has no Debian suite or
    /// this machine runs another architecture.
    pub fn of(project: &Project, t: &Target) -> Result<Plan, Error> {
        let role = &t.role;
        let arch = debian_arch(t)?;
        let base_name = role.image.base.clone().unwrap_or_default();
        let suite = project
            .settings
            .bases
            .get(&base_name)
            .and_then(|b| b.suite(&base_name))
            .ok_or_else(|| Error::NoSuite(base_name.clone()))?;
        let mut include = vec![
            "systemd".to_string(),
            "systemd-sysv".to_string(),
            "dbus".to_string(),
        ];
        include.extend(role.packages.iter().map(|p| p.apt_arg()));
        // Downloaded packages are kept between builds: the second build of
        // a role downloads nothing it already has.
        let cache = std::env::var_os("IMAGECTL_APT_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("HOME")
                    .map(PathBuf::from)
                    .unwrap_or_default()
                    .join(".cache/imagectl/apt-archives")
            });
        Ok(Plan {
            role: role.name.clone(),
            suite,
            arch,
            include,
            mirror: std::env::var("IMAGECTL_DEBIAN_MIRROR")
                .unwrap_or_else(|_| DEFAULT_MIRROR.to_string()),
            cache,
            log: project
                .root
                .join(LOCAL_DIR)
                .join(format!("{}-{}.log", role.name, t.hash.short())),
            source_date_epoch: t.source_date_epoch(),
            timeout: Duration::from_secs(project.settings.build.timeout_minutes * 60),
            before_provision: Vec::new(),
            after_cleanup: Vec::new(),
        })
    }

    /// This bootstrap with more packages and hooks: what a disk image adds
    /// to the root filesystem (`super::disk`).
    pub fn with(
        mut self,
        packages: &[&str],
        before_provision: Vec<String>,
        after_cleanup: Vec<String>,
    ) -> Plan {
        self.include.extend(packages.iter().map(|p| p.to_string()));
        self.before_provision = before_provision;
        self.after_cleanup = after_cleanup;
        self
    }

    /// Bootstraps the root filesystem provisioned from `stage` into the
    /// tarball `out`, logging to the plan's log.
    pub fn run(&self, stage: &Path, out: &Path, progress: &dyn Progress) -> Result<(), Error> {
        super::need("systemd-nspawn", "systemd-container")?;
        std::fs::create_dir_all(&self.cache).map_err(io_error("create", &self.cache))?;
        // One build at a time uses the cache: a build syncing it in must not
        // see a half-copied package from another syncing it out.
        let _lock = lock_cache(&self.cache)?;
        // mmdebstrap's special hooks (sync-in, copy-in) split their
        // arguments at spaces: these paths must have none.
        for p in [&self.cache, &stage.to_path_buf()] {
            if p.display().to_string().contains(char::is_whitespace) {
                return Err(Error::Io(IoError {
                    action: "use",
                    path: p.clone(),
                    source: std::io::Error::other(
                        "mmdebstrap hooks cannot take a path with spaces",
                    ),
                }));
            }
        }
        progress.step(
            &self.role,
            &format!(
                "mmdebstrap {} ({} packages)",
                self.suite,
                self.include.len()
            ),
        );
        let child = self
            .command(stage, out)
            .spawn()
            .map_err(io_error("run", Path::new("mmdebstrap")))?;
        let (status, reason) = self.follow(child, progress)?;
        if status.success() {
            return Ok(());
        }
        Err(Error::Bootstrap {
            role: self.role.clone(),
            status: status.to_string(),
            reason,
            log: self.log.clone(),
        })
    }

    /// The hook that runs `provision.sh` in the root filesystem being built:
    /// systemd-nspawn, with no network (every package is installed by then),
    /// its own mount, PID, IPC and UTS namespaces, the container's reduced
    /// capabilities and system-call filter, and nothing of this machine
    /// (resolv.conf, time zone, journal) written into the image.
    fn provision_hook(&self) -> String {
        let mut hook = String::from(
            "systemd-nspawn --quiet --register=no --keep-unit --private-network \
             --resolv-conf=off --timezone=off --link-journal=no --console=pipe",
        );
        if let Some(epoch) = self.source_date_epoch {
            hook.push_str(&format!(" --setenv=SOURCE_DATE_EPOCH={epoch}"));
        }
        hook.push_str(&format!(
            " --directory=\"$1\" bash {STAGE_IN_ROOT}/provision.sh"
        ));
        hook
    }

    fn command(&self, stage: &Path, out: &Path) -> Command {
        let q = |p: &Path| p.display().to_string();
        let mut cmd = Command::new("mmdebstrap");
        cmd.arg("--mode=root")
            .arg("--variant=minbase")
            .arg(format!("--architectures={}", self.arch))
            .arg(format!("--include={}", self.include.join(",")))
            .arg("--skip=essential/unlink")
            .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives")
            .arg(format!("--setup-hook=sync-in {} /var/cache/apt/archives/", q(&self.cache)))
            .arg(format!("--customize-hook=sync-out /var/cache/apt/archives {}", q(&self.cache)))
            .arg(format!(
                "--customize-hook=copy-in {} {}",
                q(stage),
                STAGE_IN_ROOT.trim_end_matches("/imagectl-stage")
            ))
            .args(self.before_provision.iter().map(|h| format!("--customize-hook={h}")))
            // The same provisioning script as the AMI build, inside a
            // container: the role's code never runs as this machine's root
            // in its namespaces.
            .arg(format!("--customize-hook={}", self.provision_hook()))
            // Nothing of this machine's identity or network stays behind.
            .arg(format!(
                "--customize-hook=rm -rf \"$1\"{STAGE_IN_ROOT} \"$1\"/etc/hostname \"$1\"/etc/resolv.conf"
            ))
            .args(self.after_cleanup.iter().map(|h| format!("--customize-hook={h}")))
            .arg(&self.suite)
            .arg(out)
            .arg(&self.mirror)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(epoch) = self.source_date_epoch {
            cmd.env("SOURCE_DATE_EPOCH", epoch.to_string());
        }
        cmd
    }

    /// Streams mmdebstrap's output into the log and its steps to
    /// `progress`, killing it past the time limit; returns how it ended and
    /// the provisioning script's own last word, when it said one.
    fn follow(
        &self,
        mut child: Child,
        progress: &dyn Progress,
    ) -> Result<(std::process::ExitStatus, Option<String>), Error> {
        let mut log = std::fs::File::create(&self.log).map_err(io_error("write", &self.log))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(io_error("read the output of", Path::new("mmdebstrap"))(
                std::io::Error::other("not piped"),
            )
            .into());
        };
        let out_thread = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        let deadline = Instant::now() + self.timeout;
        let mut reason = None;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if let Some(r) = line.strip_prefix("imagectl: check failed: ") {
                reason = Some(format!("check failed: {r}"));
            }
            if let Some(step) = line.strip_prefix("I: ") {
                progress.step(&self.role, step);
            } else if let Some(step) = line.strip_prefix("imagectl: ") {
                progress.step(&self.role, step);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
            }
        }
        for line in out_thread.join().unwrap_or_default() {
            let _ = writeln!(log, "{line}");
        }
        let status = child
            .wait()
            .map_err(io_error("wait for", Path::new("mmdebstrap")))?;
        Ok((status, reason))
    }
}

/// Takes the package cache's lock, held until the returned file is dropped.
fn lock_cache(cache: &Path) -> Result<std::fs::File, Error> {
    let path = cache.join(".lock");
    let file = std::fs::File::create(&path).map_err(io_error("create", &path))?;
    // SAFETY: flock on a file descriptor this function owns; released when
    // the file is dropped.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
        return Err(io_error("lock", &path)(std::io::Error::last_os_error()).into());
    }
    Ok(file)
}

/// The target's Debian architecture, if this machine runs it.
fn debian_arch(t: &Target) -> Result<&'static str, Error> {
    let want = t.role.image.arch.debian();
    let host = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if host == want {
        Ok(want)
    } else {
        Err(Error::Arch {
            role: t.name().to_string(),
            want: t.role.image.arch.as_str(),
            host,
        })
    }
}
