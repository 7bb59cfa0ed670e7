//! The local target: a role built into a real Debian root filesystem on this
//! machine (mmdebstrap, the same staged context and provisioning script as
//! an AMI, [`bootstrap`]) and booted under systemd-nspawn to test it
//! ([`boot`]), no AWS account needed; [`oci`] archives the result as an OCI
//! image.

pub mod boot;
pub mod bootstrap;
pub mod disk;
pub mod imds;
pub mod oci;
pub mod vm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use imagectl_core::digest::file_sha256;
use imagectl_core::fsutil::{self, io_error, IoError};
use imagectl_core::hash::Hash;
use imagectl_core::project::Project;
use imagectl_core::sbom::{self, store};
use imagectl_core::target::Target;
use imagectl_core::{agent::Agent, record, stage};
use serde::Serialize;

use crate::failpoint;
use crate::progress::Progress;

/// Where local images go, relative to the project root.
pub const LOCAL_DIR: &str = "images/local";

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
    /// A step of laying out the disk image failed.
    #[error("making the disk image failed: could not {step}: {reason}")]
    Disk {
        /// What was being done.
        step: String,
        /// The tool's own words.
        reason: String,
    },
    /// The VM test could not run (QEMU or its firmware).
    #[error("{0}")]
    Vm(String),
    /// Staging failed, or the context changed before the bake.
    #[error(transparent)]
    Stage(#[from] stage::Error),
    /// The root filesystem's SBOM could not be made.
    #[error(transparent)]
    Sbom(#[from] store::Error),
    /// The tarball's provenance could not be signed.
    #[error(transparent)]
    Sign(#[from] crate::provenance::Error),
    /// A sidecar did not start.
    #[error(transparent)]
    Sidecar(#[from] crate::sidecar::Error),
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

impl Error {
    /// Whether the user fixes it (exit 2): a missing tool, root, suite or
    /// architecture, or an agent that does not fit.
    pub fn is_usage(&self) -> bool {
        match self {
            Error::NotRoot | Error::Missing { .. } | Error::NoSuite(_) | Error::Arch { .. } => true,
            Error::Stage(e) => e.is_usage(),
            _ => false,
        }
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
    pub hash: Hash,
    /// The image: the root filesystem tarball, or the disk image.
    pub path: PathBuf,
    /// SHA-256 of its bytes.
    pub sha256: String,
    /// Whether this run built it (false: it existed already).
    pub built: bool,
    /// How long the build took, seconds.
    pub duration_secs: f64,
}

/// What a local build writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A root filesystem tarball (`ROLE-HASH12.tar`), booted under
    /// systemd-nspawn.
    Tar,
    /// A bootable GPT disk image (`ROLE-HASH12.raw`), booted in QEMU and
    /// uploaded as an AMI's snapshot.
    Disk,
}

impl Format {
    fn extension(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Disk => "raw",
        }
    }
}

/// The image file of a target's hash.
pub fn image_path(project: &Project, t: &Target, format: Format) -> PathBuf {
    project.root.join(LOCAL_DIR).join(format!(
        "{}-{}.{}",
        t.name(),
        t.hash.short(),
        format.extension()
    ))
}

/// Builds the target's root filesystem tarball unless one of its hash exists.
pub fn build(
    project: &Project,
    t: &Target,
    agent: &Agent,
    progress: &dyn Progress,
) -> Result<LocalImage, Error> {
    build_as(project, t, agent, progress, Format::Tar)
}

/// Builds the target's image in `format` unless one of its hash exists.
pub fn build_as(
    project: &Project,
    t: &Target,
    agent: &Agent,
    progress: &dyn Progress,
    format: Format,
) -> Result<LocalImage, Error> {
    let start = Instant::now();
    let started = imagectl_core::time::now_secs();
    let tar = image_path(project, t, format);
    let image = |path: PathBuf, sha256: String, built: bool| LocalImage {
        role: t.name().to_string(),
        hash: t.hash.hash.clone(),
        path,
        sha256,
        built,
        duration_secs: (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    };
    if tar.is_file() {
        let dir = project.root.join(LOCAL_DIR);
        // Named by SHA256SUMS when it is there: a 16 GiB disk image is not
        // read again.
        let sha256 = match read_sums(&dir).remove(&file_name(&tar)) {
            Some(sum) => sum,
            None => file_sha256(&tar).map_err(io_error("read", &tar))?,
        };
        return Ok(image(tar, sha256, false));
    }
    require_root()?;
    need("mmdebstrap", "mmdebstrap")?;
    let mut plan = bootstrap::Plan::of(project, t)?;
    if format == Format::Disk {
        disk::need_tools()?;
    }
    let dir = project.root.join(LOCAL_DIR);
    std::fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
    let work = dir.join(format!(".work-{}-{}", t.name(), std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io_error("create", &work))?;
    let result = (|| -> Result<(String, record::SbomRef), Error> {
        progress.step(t.name(), "staging the build context");
        let staged = t.stage(agent, &work.join("imagectl-stage"))?;
        failpoint::hit("after-stage");
        t.verify(&staged)?;
        let rootfs = work.join("rootfs.tar");
        if format == Format::Disk {
            plan = disk::extend(plan, t, &work)?;
        }
        plan.run(&staged.dir, &rootfs, progress)?;
        let partial = match format {
            Format::Tar => rootfs.clone(),
            Format::Disk => disk::assemble(t, &rootfs, &work, progress)?,
        };
        progress.step(t.name(), &format!("SHA-256 of {}", file_name(&tar)));
        let sha256 = file_sha256(&partial).map_err(io_error("read", &partial))?;
        // The SBOM before the image: an image in place always has one.
        progress.step(t.name(), "SBOM: reading the root filesystem's packages");
        let inventory = sbom::rootfs::inventory(
            &rootfs,
            Some(&sha256),
            Some(sbom::archives_of(t)),
            Some(sbom::created_of(t)),
        )
        .map_err(store::Error::from)?;
        let sbom = store::write(&project.root, &store::local_path(&tar), &inventory)
            .map_err(store::Error::from)?;
        // Signed before the tarball is in place, like its SBOM.
        progress.step(t.name(), "signing the build's provenance");
        let made = crate::provenance::Made {
            hash: &t.hash,
            commit: crate::provenance::commit(&project.root),
            packer: None,
            sbom_sha256: &sbom.sha256,
            build_id: &file_name(&tar),
            started,
        };
        crate::provenance::sign_tarball(project, &made, &tar, &sha256)?;
        std::fs::rename(&partial, &tar).map_err(io_error("rename into", &tar))?;
        Ok((sha256, sbom))
    })();
    let _ = std::fs::remove_dir_all(&work);
    let (sha256, sbom) = result?;
    write_sums(&dir, &tar, &sha256)?;
    let name = file_name(&tar);
    let rec = record::Record::now(
        t.name(),
        t.hash.hash.as_str(),
        record::Kind::Local,
        format!("{LOCAL_DIR}/{name}"),
    )
    .with_inputs(t.hash.record())
    .with_sbom(sbom);
    if let Err(e) = record::add(&project.root, rec) {
        tracing::warn!(
            "{}: {e} (`plan --offline` will not know this build)",
            t.name()
        );
    }
    Ok(image(tar, sha256, true))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `SHA256SUMS` of `dir`: SHA-256 by file name.
fn read_sums(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(dir.join("SHA256SUMS"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split_once("  ")
                .map(|(h, n)| (n.to_string(), h.to_string()))
        })
        .collect()
}

/// Adds or replaces the image's line in `SHA256SUMS` (the format
/// `sha256sum -c` reads).
fn write_sums(dir: &Path, image: &Path, sha256: &str) -> Result<(), Error> {
    let sums = dir.join("SHA256SUMS");
    let mut lines = read_sums(dir);
    lines.insert(file_name(image), sha256.to_string());
    let text: String = lines.iter().map(|(n, h)| format!("{h}  {n}\n")).collect();
    fsutil::write_atomic(&sums, text.as_bytes()).map_err(io_error("write", &sums))?;
    Ok(())
}
