//! Building images on AWS: find what already exists by content hash, bake
//! what is missing with Packer, and leave every image complete (tagged in
//! every region, copied, shared, IMDSv2 only, available) before anyone may
//! publish it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::aws::{self, ImageInfo, Session};
use crate::hash::ContentHash;
use crate::packer_exec::{self, Progress};
use crate::project::Project;
use crate::role::Role;
use crate::{hcl, lock, packer, record, stage};

/// Tag keys imagectl puts on every image and snapshot.
pub mod tags {
    /// The role.
    pub const ROLE: &str = "imagectl:role";
    /// The content hash.
    pub const HASH: &str = "imagectl:content-hash";
    /// The build that made it.
    pub const BUILD: &str = "imagectl:build";
}

/// Errors of a build.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] aws::Error),
    /// Packer failed, timed out or was interrupted.
    #[error(transparent)]
    Packer(#[from] packer_exec::Error),
    /// The build context could not be staged.
    #[error(transparent)]
    Stage(#[from] stage::Error),
    /// The template could not be generated.
    #[error(transparent)]
    Template(#[from] packer::MissingSetting),
    /// The base image is not pinned.
    #[error(transparent)]
    Lock(#[from] lock::Error),
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

/// One role to build, with what it is built from.
#[derive(Debug, Clone)]
pub struct Target {
    /// The role.
    pub role: Role,
    /// Its content hash.
    pub hash: ContentHash,
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
    pub agent: PathBuf,
}

/// What happened to one role.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The role.
    pub role: String,
    /// Its content hash.
    pub hash: String,
    /// `built`, `reused`, `would-build`, `would-reuse` or `failed`.
    pub status: &'static str,
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

/// How many times a Packer run that AWS throttled before it launched
/// anything is tried in all.
const PACKER_RUNS: u32 = 3;

/// Whether Packer failed on throttling before it launched an instance:
/// Packer 1.6 does not retry its source image lookup, and nothing exists
/// yet to clean up, so running it again is safe.
fn throttled_before_launch(errors: &[String], log: &Path) -> bool {
    let throttled = errors.iter().any(|e| {
        ["RequestLimitExceeded", "Throttling", "RequestThrottled"]
            .iter()
            .any(|code| e.contains(code))
    });
    let launched = std::fs::read_to_string(log)
        .map(|l| l.contains("Launching a source AWS instance"))
        .unwrap_or(true);
    throttled && !launched
}

/// Every complete (available, tagged) image of these roles in `region`, in
/// one `DescribeImages` call (with its pages) however many roles there are.
pub async fn role_images(ec2: &aws::Ec2, roles: &[String]) -> Result<Vec<ImageInfo>, aws::Error> {
    if roles.is_empty() {
        return Ok(Vec::new());
    }
    let named: Vec<String> = roles.iter().map(|r| format!("`{r}`")).collect();
    let what = format!("images of role {}", named.join(", "));
    // EC2 takes at most 200 values in one filter: past that, every image
    // with a content hash comes back and is filtered here.
    let mut filters = vec![("tag-key", vec![tags::HASH.to_string()])];
    let role_filter = format!("tag:{}", tags::ROLE);
    if roles.len() <= 200 {
        filters.push((role_filter.as_str(), roles.to_vec()));
    }
    let found = ec2
        .describe_images(&["self".to_string()], &filters)
        .await
        .map_err(|e| e.about(what))?;
    Ok(found
        .into_iter()
        .filter(|i| i.state == "available")
        .filter(|i| {
            i.tag(tags::ROLE)
                .is_some_and(|r| roles.contains(&r.to_string()))
        })
        .collect())
}

/// The images that exist for `targets`, by role: the newest complete one
/// whose tags carry the role and its current hash.
pub fn existing_of(images: &[ImageInfo], targets: &[Target]) -> BTreeMap<String, ImageInfo> {
    let mut out = BTreeMap::new();
    for t in targets {
        let newest = images
            .iter()
            .filter(|i| {
                i.tag(tags::ROLE) == Some(&t.role.name) && i.tag(tags::HASH) == Some(&t.hash.hash)
            })
            .max_by(|a, b| (&a.created, &a.id).cmp(&(&b.created, &b.id)));
        if let Some(i) = newest {
            out.insert(t.role.name.clone(), i.clone());
        }
    }
    out
}

/// The images that exist for `targets` in `region`, by role (see
/// [`existing_of`]), in one `DescribeImages` call.
pub async fn find_existing(
    ec2: &aws::Ec2,
    targets: &[Target],
) -> Result<BTreeMap<String, ImageInfo>, aws::Error> {
    let roles: Vec<String> = targets.iter().map(|t| t.role.name.clone()).collect();
    let images = role_images(ec2, &roles).await?;
    Ok(existing_of(&images, targets))
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
    let ec2 = session.ec2(&home);
    let existing = find_existing(&ec2, &targets).await?;

    let mut outcomes = Vec::new();
    let mut to_build = Vec::new();
    let mut to_complete = Vec::new();
    for t in targets {
        match existing.get(&t.role.name) {
            Some(_) if options.changed_only && !options.force => {}
            Some(image) if !options.force => {
                tracing::info!(
                    "{}: an image with hash {} exists: {} (reused, nothing baked)",
                    t.role.name,
                    t.hash.short(),
                    image.id
                );
                to_complete.push((t, image.clone()));
            }
            _ => to_build.push(t),
        }
    }

    if options.dry_run {
        for (t, image) in &to_complete {
            outcomes.push(outcome(
                t,
                "would-reuse",
                BTreeMap::from([(home.clone(), image.id.clone())]),
                Duration::ZERO,
            ));
        }
        for t in &to_build {
            outcomes.push(outcome(t, "would-build", BTreeMap::new(), Duration::ZERO));
        }
        return Ok(outcomes);
    }

    if !to_complete.is_empty() {
        let start = Instant::now();
        let homes: Vec<(String, ImageInfo)> = to_complete
            .iter()
            .map(|(t, i)| (t.role.name.clone(), i.clone()))
            .collect();
        let amis = interruptible(complete(project, session, &homes, false)).await?;
        for (t, _) in &to_complete {
            outcomes.push(outcome(
                t,
                "reused",
                amis.get(&t.role.name).cloned().unwrap_or_default(),
                start.elapsed(),
            ));
        }
    }

    if !to_build.is_empty() {
        let packer_version = packer_exec::version().await?;
        let emulator = aws::ec2_endpoint_override().filter(|e| aws::is_loopback_endpoint(e));
        if let Some(e) = &emulator {
            tracing::warn!(
                "the EC2 endpoint {e} is an emulator on this machine: building without a communicator or provisioners \
                 (nothing is installed into these images; the local target tests provisioning for real)"
            );
        }
        if !packer_version.is_current() {
            tracing::info!(
                "Packer {packer_version} predates {}; imagectl leaves them out and enforces IMDSv2 through the EC2 API",
                packer::NOT_IN_PACKER_1_6.join(", ")
            );
        }
        let semaphore = Arc::new(tokio::sync::Semaphore::new(options.jobs.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for t in to_build {
            let (project, session, options, progress, emulator) = (
                project.clone(),
                session.clone(),
                options.clone(),
                progress.clone(),
                emulator.clone(),
            );
            let semaphore = semaphore.clone();
            set.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                let start = Instant::now();
                let result = build_one(
                    &project,
                    &session,
                    &t,
                    &options,
                    packer_version,
                    emulator.as_deref(),
                    &*progress,
                )
                .await;
                (t, start.elapsed(), result)
            });
        }
        let mut interrupted = None;
        while let Some(joined) = set.join_next().await {
            let Ok((t, elapsed, result)) = joined else {
                continue;
            };
            match result {
                Ok((amis, log)) => {
                    let mut o = outcome(&t, "built", amis, elapsed);
                    o.log = Some(log);
                    outcomes.push(o);
                }
                Err(e) => {
                    if let Some(sig) = e.signal() {
                        interrupted = Some((t.role.name.clone(), sig));
                    }
                    let mut o = outcome(&t, "failed", BTreeMap::new(), elapsed);
                    o.error = Some(e.to_string());
                    outcomes.push(o);
                }
            }
        }
        if let Some((role, signal)) = interrupted {
            return Err(Error::Packer(packer_exec::Error::Interrupted {
                role,
                signal,
            }));
        }
    }
    outcomes.sort_by(|a, b| a.role.cmp(&b.role));
    Ok(outcomes)
}

fn outcome(
    t: &Target,
    status: &'static str,
    amis: BTreeMap<String, String>,
    elapsed: Duration,
) -> Outcome {
    Outcome {
        role: t.role.name.clone(),
        hash: t.hash.hash.clone(),
        status,
        amis,
        duration_secs: (elapsed.as_secs_f64() * 10.0).round() / 10.0,
        log: None,
        error: None,
    }
}

/// Stages, runs Packer, completes the images; returns AMI per region and
/// the log path.
async fn build_one(
    project: &Project,
    session: &Session,
    t: &Target,
    options: &Options,
    packer_version: packer_exec::Version,
    emulator: Option<&str>,
    progress: &dyn Progress,
) -> Result<(BTreeMap<String, String>, String), Error> {
    let role = &t.role;
    let build_id = build_id(&t.hash, SystemTime::now());
    let work = project
        .root
        .join(".imagectl")
        .join("builds")
        .join(format!("{}-{build_id}", role.name));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    progress.step(&role.name, "staging the build context");
    let stage_dir = work.join("stage");
    stage::stage(project, role, &t.hash, &options.agent, &stage_dir)?;

    let lock = lock::Lock::load(project)?;
    let base = lock.resolve(project, role.image.base.as_deref().unwrap_or(""))?;
    let mut body = packer::template(&project.settings, role, base)?;
    if !packer_version.is_current() {
        body = packer::for_packer_1_6(&body);
    }
    if let Some(endpoint) = emulator {
        body = packer::for_emulator(&body, endpoint);
    }
    // Packer's own EC2 calls ride out throttling to the same bound as
    // imagectl's.
    body = packer::with_max_retries(&body, aws::max_attempts() - 1);
    let template = format!("{}.pkr.hcl", role.name);
    let template_path = work.join(&template);
    std::fs::write(&template_path, hcl::render(&body)).map_err(io(&template_path))?;
    if packer_version.is_current() {
        // Current Packer installs the amazon plugin named in required_plugins.
        let status = tokio::process::Command::new("packer")
            .arg("init")
            .arg(&template)
            .current_dir(&work)
            .env("CHECKPOINT_DISABLE", "1")
            .status()
            .await
            .map_err(packer_exec::Error::NotFound)?;
        if !status.success() {
            return Err(Error::Packer(packer_exec::Error::Failed {
                role: role.name.clone(),
                code: status.code().unwrap_or(-1),
                errors: vec!["packer init failed".into()],
                log: work.join("packer.log"),
            }));
        }
    }

    let manifest = work.join("manifest.json");
    let log = work.join("packer.log");
    let vars: BTreeMap<&'static str, String> = BTreeMap::from([
        ("content_hash", t.hash.hash.clone()),
        ("build_id", build_id.clone()),
        ("commit", commit(&project.root)),
        ("imagectl_version", env!("CARGO_PKG_VERSION").to_string()),
        ("stage_dir", stage_dir.display().to_string()),
        ("manifest_path", manifest.display().to_string()),
    ]);
    let run = packer_exec::Run {
        role: &role.name,
        dir: &work,
        template: &template,
        vars: &vars,
        log: &log,
        timeout: Duration::from_secs(project.settings.build.timeout_minutes * 60),
    };
    progress.step(&role.name, "running packer build");
    let watcher = (!packer_version.is_current()).then(|| {
        tokio::spawn(require_imdsv2_on_build_instance(
            session.ec2(&project.settings.aws.region),
            build_id.clone(),
        ))
    });
    let mut runs = 1;
    let built = loop {
        let result = packer_exec::build(&run, progress).await;
        match &result {
            Err(packer_exec::Error::Failed { errors, log, .. })
                if runs < PACKER_RUNS && throttled_before_launch(errors, log) =>
            {
                progress.step(
                    &role.name,
                    &format!(
                        "AWS throttled packer before it launched anything; running it again ({} of {PACKER_RUNS})",
                        runs + 1
                    ),
                );
                tokio::time::sleep(Duration::from_secs(5 * u64::from(runs))).await;
                runs += 1;
            }
            _ => break result,
        }
    };
    if let Some(w) = watcher {
        w.abort();
    }
    built?;
    let _ = std::fs::remove_dir_all(&stage_dir);

    let amis = packer_exec::read_manifest(&manifest)?;
    let home = &project.settings.aws.region;
    let home_id = amis.get(home).ok_or_else(|| Error::NoHomeImage {
        role: role.name.clone(),
        region: home.clone(),
    })?;
    progress.step(
        &role.name,
        "completing the images: tags, copies, shares, IMDSv2",
    );
    let ec2 = session.ec2(home);
    let wait = Duration::from_secs(project.settings.build.wait_minutes * 60);
    let done = interruptible(async {
        let image = ec2
            .wait_available(std::slice::from_ref(home_id), wait)
            .await?
            .remove(0);
        complete(project, session, &[(role.name.clone(), image)], true).await
    })
    .await?;
    let amis = done.get(&role.name).cloned().unwrap_or_default();
    if let Err(e) = crate::cmd::plan::record_inputs(project, session, &t.hash).await {
        tracing::warn!("{}: could not record the build's inputs (plan will not say what changed next time): {e}", role.name);
    }
    let artifact = amis
        .iter()
        .map(|(r, a)| format!("{r}={a}"))
        .collect::<Vec<_>>()
        .join(",");
    let _ = record::add(
        &project.root,
        record::Record {
            role: role.name.clone(),
            hash: t.hash.hash.clone(),
            target: "aws".into(),
            artifact,
            built_at: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        },
    );
    Ok((amis, log.display().to_string()))
}

/// Old Packer cannot ask for IMDSv2 on its build instance: imagectl finds
/// the instance by its build tag while Packer runs and requires tokens.
async fn require_imdsv2_on_build_instance(ec2: aws::Ec2, build_id: String) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1800) {
        match ec2.instances_tagged(tags::BUILD, &build_id).await {
            Ok(found) => {
                for (id, state) in found
                    .iter()
                    .filter(|(_, s)| s == "pending" || s == "running")
                {
                    match ec2.require_imdsv2_on_instance(id).await {
                        Ok(()) => {
                            tracing::info!(
                                "build instance {id} ({state}): IMDSv2 tokens now required"
                            );
                            return;
                        }
                        Err(e) => {
                            tracing::warn!("could not require IMDSv2 on build instance {id}: {e}")
                        }
                    }
                }
            }
            Err(e) => tracing::debug!("looking for the build instance: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Makes images complete in every region: the home image (given) is
/// copied where no copy exists yet, every copy carries the same imagectl
/// tags (images and snapshots), requires IMDSv2, is shared with the listed
/// accounts and is available. Returns AMI per region, by role.
pub async fn complete(
    project: &Project,
    session: &Session,
    homes: &[(String, ImageInfo)],
    fresh: bool,
) -> Result<BTreeMap<String, BTreeMap<String, String>>, Error> {
    let settings = &project.settings;
    let home = &settings.aws.region;
    let wait = Duration::from_secs(settings.build.wait_minutes * 60);
    let mut result: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut regions = vec![home.clone()];
    regions.extend(
        settings
            .aws
            .copy_regions
            .iter()
            .filter(|r| *r != home)
            .cloned(),
    );
    for region in &regions {
        let ec2 = session.ec2(region);
        let roles: Vec<String> = homes.iter().map(|(r, _)| r.clone()).collect();
        // Copies are found by their tags: one call for every role.
        let present = if region == home {
            Vec::new()
        } else {
            ec2.imagectl_images(&roles).await?
        };
        let mut images = Vec::new();
        for (role, home_image) in homes {
            let hash = home_image.tag(tags::HASH).unwrap_or_default();
            let wanted: BTreeMap<String, String> = home_image
                .tags
                .iter()
                .filter(|(k, _)| k.starts_with("imagectl:") || *k == "Name")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let copy = if region == home {
                Some(home_image.clone())
            } else {
                present
                    .iter()
                    .filter(|i| {
                        i.tag(tags::ROLE) == Some(role)
                            && i.tag(tags::HASH) == Some(hash)
                            && i.state != "failed"
                    })
                    .max_by(|a, b| a.created.cmp(&b.created))
                    .cloned()
            };
            let id = match copy {
                Some(i) => i.id,
                None => {
                    tracing::info!("{role}: copying {} to {region}", home_image.id);
                    ec2.copy_image(home, home_image, settings.aws.kms_key_in(region).as_deref())
                        .await?
                }
            };
            images.push((role.clone(), id, wanted));
        }
        let ids: Vec<String> = images.iter().map(|(_, id, _)| id.clone()).collect();
        let available = ec2.wait_available(&ids, wait).await?;
        for (role, id, wanted) in &images {
            let Some(image) = available.iter().find(|i| &i.id == id) else {
                continue;
            };
            // Tags first on copies (CopyImage copies none), then snapshots.
            let missing = wanted.iter().any(|(k, v)| image.tags.get(k) != Some(v));
            if missing || fresh {
                let mut resources = vec![image.id.clone()];
                resources.extend(image.snapshots.iter().cloned());
                ec2.create_tags(&resources, wanted).await?;
            }
            // Once v2.0, always v2.0: only images that say otherwise are set.
            if image.imds_support.as_deref() != Some("v2.0") {
                ec2.require_imdsv2(&image.id).await?;
            }
            ec2.share(image, &settings.aws.share_accounts).await?;
            result
                .entry(role.clone())
                .or_default()
                .insert(region.clone(), image.id.clone());
        }
    }
    Ok(result)
}

/// The checkout's commit, with `-dirty` when it has uncommitted changes.
pub fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(head) => {
            let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{head}-dirty")
            } else {
                head
            }
        }
        None => "unknown".to_string(),
    }
}

/// A build's ID, `HASH12-YYYYMMDDhhmmss`: it names the image, the build
/// instance and its key pair, and is the `imagectl:build` tag.
pub fn build_id(hash: &ContentHash, t: SystemTime) -> String {
    format!("{}-{}", hash.short(), utc_stamp(t))
}

/// The `YYYYMMDDhhmmss` stamp of a build ID ([`build_id`]).
pub fn build_stamp(build: &str) -> Option<&str> {
    build.rsplit_once('-').map(|(_, stamp)| stamp)
}

/// `YYYYMMDDhhmmss` in UTC.
pub fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The time a `YYYYMMDDhhmmss` stamp of [`utc_stamp`] names, in seconds
/// since the Unix epoch; `None` for anything else.
pub fn stamp_secs(stamp: &str) -> Option<i64> {
    if stamp.len() != 14 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| stamp[r].parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(4..6)?, n(6..8)?);
    let (hh, mm, ss) = (n(8..10)?, n(10..12)?, n(12..14)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(SystemTime::UNIX_EPOCH), "19700101000000");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_690_494);
        assert_eq!(utc_stamp(t), "20261126105454");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_stamp(leap), "20000229000000");
    }

    #[test]
    fn stamps_read_back() {
        for secs in [0, 951_782_400, 1_795_690_494, 4_102_444_799] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(stamp_secs(&utc_stamp(t)), Some(secs as i64));
        }
        for bad in [
            "",
            "2026112610545",
            "20261326105454",
            "2026112610545x",
            "-0261126105454",
        ] {
            assert_eq!(stamp_secs(bad), None, "{bad}");
        }
    }
}
