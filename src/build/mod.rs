//! Building images on AWS: find what already exists by content hash, bake
//! what is missing with Packer ([`bake`]), and leave every image complete
//! (tagged in every region, copied, shared, IMDSv2 only, available) before
//! anyone may publish it ([`complete`]).

pub mod bake;
pub mod complete;
pub mod disk;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imagectl_core::agent::Agent;
use imagectl_core::hash::Hash;
use imagectl_core::packer;
use imagectl_core::project::Project;
use imagectl_core::stage;
use imagectl_core::target::Target;
use serde::Serialize;

use crate::artifacts;
use crate::aws::{self, ImageInfo, Session};
use crate::packer_exec;
use crate::progress::Progress;
use bake::Bakery;

/// Errors of a build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] aws::Error),
    /// Packer failed, timed out or was interrupted.
    #[error(transparent)]
    Packer(#[from] packer_exec::Error),
    /// The build context could not be staged, or changed before the bake.
    #[error(transparent)]
    Stage(#[from] stage::Error),
    /// A work file could not be written.
    #[error("cannot write `{}`: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A signal came while images were being completed.
    #[error("interrupted ({0}) while completing the images; nothing was published; run the build again to finish them")]
    Stopped(&'static str),
    /// The build's provenance could not be signed or kept.
    #[error("{role}: the images are complete, but their provenance could not be signed: {source}; once fixed, `imagectl build {role} --force` bakes and signs anew (a reused image is never signed after the fact)")]
    Sign {
        /// The role.
        role: String,
        /// Why.
        source: crate::provenance::Error,
    },
    /// The disk image could not be built (`--method disk`).
    #[error(transparent)]
    Disk(#[from] crate::local::Error),
    /// The disk image could not be uploaded to a snapshot.
    #[error(transparent)]
    Upload(#[from] aws::UploadError),
    /// Packer reported no image for the home region.
    #[error("packer built `{role}` but reported no image in the home region `{region}`")]
    NoHomeImage {
        /// The role.
        role: String,
        /// The region.
        region: String,
    },
}

impl Error {
    /// Whether a signal ended the build (the process then exits 130/143).
    pub fn signal(&self) -> Option<&'static str> {
        match self {
            Error::Packer(packer_exec::Error::Interrupted { signal, .. })
            | Error::Stopped(signal) => Some(signal),
            _ => None,
        }
    }

    /// Whether the user fixes it (exit 2): an agent that does not fit.
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Stage(e) => e.is_usage(),
            Error::Disk(e) => e.is_usage(),
            Error::Upload(e) => e.is_usage(),
            Error::Sign { source, .. } => source.is_usage(),
            _ => false,
        }
    }
}

/// Runs `work` unless SIGINT or SIGTERM comes first. Only for what runs
/// while no Packer does (Packer gets the signal itself and is waited for):
/// stopping then loses nothing, the images stay tagged and a later build
/// completes them.
async fn interruptible<T, E: Into<Error>>(
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    use tokio::signal::unix::{signal, SignalKind};
    let io = |source| Error::Io {
        path: PathBuf::from("signal handler"),
        source,
    };
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    tokio::select! {
        r = work => r.map_err(Into::into),
        _ = int.recv() => Err(Error::Stopped("SIGINT")),
        _ = term.recv() => Err(Error::Stopped("SIGTERM")),
    }
}

/// How to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// Build even when an image with the hash exists.
    pub force: bool,
    /// Say what would happen, change nothing.
    pub dry_run: bool,
    /// Leave out, silently, the roles whose hash already has an image.
    pub changed_only: bool,
    /// Roles built at the same time.
    pub jobs: usize,
    /// The agent binary to bake.
    pub agent: Agent,
}

/// What happened to one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Baked by this run.
    Built,
    /// An image of the hash existed; it was completed, nothing baked.
    Reused,
    /// `--dry-run`: would be baked.
    WouldBuild,
    /// `--dry-run`: an image of the hash exists.
    WouldReuse,
    /// The bake failed.
    Failed,
}

impl Status {
    /// The name in tables and JSON (`would-build`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Built => "built",
            Status::Reused => "reused",
            Status::WouldBuild => "would-build",
            Status::WouldReuse => "would-reuse",
            Status::Failed => "failed",
        }
    }

    /// Whether the role has an image now.
    pub fn has_image(self) -> bool {
        matches!(self, Status::Built | Status::Reused)
    }
}

/// What happened to one role.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The role.
    pub role: String,
    /// Its content hash.
    pub hash: Hash,
    /// What happened.
    pub status: Status,
    /// AMI ID per region.
    pub amis: BTreeMap<String, String>,
    /// Wall time, seconds.
    pub duration_secs: f64,
    /// Packer's full log, for built and failed roles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    fn of(
        t: &Target,
        status: Status,
        amis: BTreeMap<String, String>,
        elapsed: Duration,
    ) -> Outcome {
        Outcome {
            role: t.name().to_string(),
            hash: t.hash.hash.clone(),
            status,
            amis,
            duration_secs: (elapsed.as_secs_f64() * 10.0).round() / 10.0,
            log: None,
            error: None,
        }
    }
}

/// Builds (or reuses) every target, at most `options.jobs` at a time.
pub async fn run(
    project: &Project,
    session: &Session,
    targets: Vec<Target>,
    options: &Options,
    progress: Arc<dyn Progress>,
) -> Result<Vec<Outcome>, Error> {
    let home = project.settings.aws.region.clone();
    let existing = artifacts::find_existing(&session.ec2(&home), &targets).await?;
    let (to_complete, to_build) = partition(targets, &existing, options);
    let mut outcomes = Vec::new();
    if options.dry_run {
        for (t, image) in &to_complete {
            let amis = BTreeMap::from([(home.clone(), image.id.clone())]);
            outcomes.push(Outcome::of(t, Status::WouldReuse, amis, Duration::ZERO));
        }
        for t in &to_build {
            outcomes.push(Outcome::of(
                t,
                Status::WouldBuild,
                BTreeMap::new(),
                Duration::ZERO,
            ));
        }
        return Ok(outcomes);
    }
    if !to_complete.is_empty() {
        outcomes.extend(reuse(project, session, &to_complete).await?);
    }
    if !to_build.is_empty() {
        outcomes.extend(bake_all(project, session, to_build, options, progress).await?);
    }
    outcomes.sort_by(|a, b| a.role.cmp(&b.role));
    Ok(outcomes)
}

/// The targets whose image exists (to complete) and those to bake.
fn partition(
    targets: Vec<Target>,
    existing: &BTreeMap<String, ImageInfo>,
    options: &Options,
) -> (Vec<(Target, ImageInfo)>, Vec<Target>) {
    let mut to_complete = Vec::new();
    let mut to_build = Vec::new();
    for t in targets {
        match existing.get(t.name()) {
            Some(_) if options.changed_only && !options.force => {}
            Some(image) if !options.force => {
                tracing::info!(
                    "{}: an image with hash {} exists: {} (reused, nothing baked)",
                    t.name(),
                    t.hash.short(),
                    image.id
                );
                to_complete.push((t, image.clone()));
            }
            _ => to_build.push(t),
        }
    }
    (to_complete, to_build)
}

/// Completes the images that exist (copies, tags, shares).
async fn reuse(
    project: &Project,
    session: &Session,
    to_complete: &[(Target, ImageInfo)],
) -> Result<Vec<Outcome>, Error> {
    let start = Instant::now();
    let homes: Vec<(String, ImageInfo)> = to_complete
        .iter()
        .map(|(t, i)| (t.name().to_string(), i.clone()))
        .collect();
    let amis = interruptible(complete::complete(project, session, &homes, false)).await?;
    Ok(to_complete
        .iter()
        .map(|(t, _)| {
            let a = amis.get(t.name()).cloned().unwrap_or_default();
            Outcome::of(t, Status::Reused, a, start.elapsed())
        })
        .collect())
}

/// Bakes every target, `options.jobs` at a time; an interrupt of any bake
/// ends the whole run once every bake has stopped.
async fn bake_all(
    project: &Project,
    session: &Session,
    to_build: Vec<Target>,
    options: &Options,
    progress: Arc<dyn Progress>,
) -> Result<Vec<Outcome>, Error> {
    // Disk bakes run no Packer: none is needed when every bake is one (the
    // version is then never read).
    let uses_packer = to_build
        .iter()
        .any(|t| t.role.image.method == imagectl_core::role::Method::Packer);
    let packer_version = if uses_packer {
        packer_exec::version().await?
    } else {
        packer_exec::Version(0, 0, 0)
    };
    let emulator = aws::ec2_endpoint_override().filter(|e| aws::is_loopback_endpoint(e));
    if let (Some(e), true) = (&emulator, uses_packer) {
        tracing::warn!(
            "the EC2 endpoint {e} is an emulator on this machine: building without a communicator or provisioners \
             (nothing is installed into these images; the local target tests provisioning for real)"
        );
    }
    if uses_packer && !packer_version.is_current() {
        tracing::info!(
            "Packer {packer_version} predates {}; imagectl leaves them out and enforces IMDSv2 through the EC2 API",
            packer::NOT_IN_PACKER_1_6.join(", ")
        );
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(options.jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for t in to_build {
        let (project, session, options) = (project.clone(), session.clone(), options.clone());
        let (progress, emulator, semaphore) =
            (progress.clone(), emulator.clone(), semaphore.clone());
        set.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let start = Instant::now();
            let bakery = Bakery {
                project: &project,
                session: &session,
                options: &options,
                packer: packer_version,
                emulator: emulator.as_deref(),
                progress: &*progress,
            };
            let result = bakery.bake(&t).await;
            (t, start.elapsed(), result)
        });
    }
    let mut outcomes = Vec::new();
    let mut interrupted = None;
    while let Some(joined) = set.join_next().await {
        let Ok((t, elapsed, result)) = joined else {
            continue;
        };
        match result {
            Ok((amis, log)) => {
                let mut o = Outcome::of(&t, Status::Built, amis, elapsed);
                o.log = Some(log);
                outcomes.push(o);
            }
            Err(e) => {
                if let Some(sig) = e.signal() {
                    interrupted = Some((t.name().to_string(), sig));
                }
                let mut o = Outcome::of(&t, Status::Failed, BTreeMap::new(), elapsed);
                o.error = Some(imagectl_image::error_chain(&e));
                outcomes.push(o);
            }
        }
    }
    match interrupted {
        Some((role, signal)) => Err(Error::Packer(packer_exec::Error::Interrupted {
            role,
            signal,
        })),
        None => Ok(outcomes),
    }
}
