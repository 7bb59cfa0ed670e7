//! One bake on AWS: stage the target's context and check it still holds
//! what was hashed, write the template Packer runs, run Packer (again when
//! AWS throttled it before it launched anything), then complete the images
//! and record the build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use imagectl_core::names::{self, tags};
use imagectl_core::packer;
use imagectl_core::project::Project;
use imagectl_core::record::{self, SbomRef};
use imagectl_core::role::Method;
use imagectl_core::sbom::{store, Inventory};
use imagectl_core::stage::Staged;
use imagectl_core::target::Target;
use imagectl_core::{hcl, time};

use super::complete::complete;
use super::{interruptible, Error, Options};
use crate::aws::{self, Session};
use crate::packer_exec::{self, Version};
use crate::progress::Progress;
use crate::{failpoint, inputs, provenance};

/// How many times a Packer run that AWS throttled before it launched
/// anything is tried in all.
const PACKER_RUNS: u32 = 3;

/// What every bake of one command shares.
pub struct Bakery<'a> {
    /// The project.
    pub project: &'a Project,
    /// AWS.
    pub session: &'a Session,
    /// How to build.
    pub options: &'a Options,
    /// The Packer in use.
    pub packer: Version,
    /// The emulator's endpoint, when building against one.
    pub emulator: Option<&'a str>,
    /// Where progress goes.
    pub progress: &'a dyn Progress,
}

/// A bake's working directory: `.imagectl/builds/ROLE-BUILD`.
pub(super) struct Work {
    pub(super) build_id: String,
    pub(super) dir: PathBuf,
    /// When the bake started, seconds since the epoch.
    pub(super) started: i64,
}

impl Work {
    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Bakery<'_> {
    /// Bakes `t`; returns AMI per region and the path of Packer's log.
    pub async fn bake(&self, t: &Target) -> Result<(BTreeMap<String, String>, String), Error> {
        let started = time::now_secs();
        let build_id = names::build_id(t.hash.short(), started);
        let dir = self
            .project
            .root
            .join(".imagectl")
            .join("builds")
            .join(format!("{}-{build_id}", t.name()));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let work = Work {
            build_id,
            dir,
            started,
        };
        if t.role.image.method == Method::Disk {
            let (amis, sbom, log) = self.bake_disk(t, &work).await?;
            let amis = self.finish(t, &work, sbom, amis, None).await?;
            return Ok((amis, log));
        }
        let staged = self.stage(t, &work)?;
        let sbom = self.sbom(t, &work, &staged)?;
        let template = self.write_template(t, &work).await?;
        self.run_packer(t, &work, &template).await?;
        let _ = std::fs::remove_dir_all(&staged.dir);
        let amis = packer_exec::read_manifest(&work.path("manifest.json"))?;
        let amis = self
            .finish(t, &work, sbom, amis, Some(self.packer.to_string()))
            .await?;
        Ok((amis, work.path("packer.log").display().to_string()))
    }

    /// Stages the context, then checks, just before Packer takes it, that
    /// the staged tree and the sources still hold what was hashed.
    fn stage(&self, t: &Target, work: &Work) -> Result<Staged, Error> {
        self.progress.step(t.name(), "staging the build context");
        let staged = t.stage(&self.options.agent, &work.path("stage"))?;
        failpoint::hit("after-stage");
        t.verify(&staged)?;
        Ok(staged)
    }

    /// Writes the build's SBOM beside Packer's log, from the staged
    /// context: Packer against AWS does not hand back what the build
    /// instance installed, so its packages are those the role declares (see
    /// [`Inventory::declared`]).
    fn sbom(&self, t: &Target, work: &Work, staged: &Staged) -> Result<SbomRef, Error> {
        let path = work.path(store::FILE_NAME);
        let io = |e: imagectl_core::fsutil::IoError| Error::Io {
            path: e.path,
            source: e.source,
        };
        let inventory = Inventory::declared(t, staged).map_err(io)?;
        store::write(&self.project.root, &path, &inventory).map_err(io)
    }

    /// Writes the template Packer runs: the role's, adapted to the Packer in
    /// use and to an emulator, with Packer's retries bounded like
    /// imagectl's. Returns its file name in the work directory.
    async fn write_template(&self, t: &Target, work: &Work) -> Result<String, Error> {
        let mut body = t.template.clone();
        if !self.packer.is_current() {
            body = packer::for_packer_1_6(&body);
        }
        if let Some(endpoint) = self.emulator {
            body = packer::for_emulator(&body, endpoint);
        }
        // Packer's own EC2 calls ride out throttling to the same bound as
        // imagectl's.
        body = packer::with_max_retries(&body, aws::max_attempts() - 1);
        let name = format!("{}.pkr.hcl", t.name());
        let path = work.path(&name);
        std::fs::write(&path, hcl::render(&body)).map_err(io(&path))?;
        if self.packer.is_current() {
            // Current Packer installs the amazon plugin named in required_plugins.
            packer_exec::init(t.name(), &work.dir, &name).await?;
        }
        Ok(name)
    }

    /// Runs `packer build`, again when AWS throttled it before it launched
    /// anything (Packer 1.6 does not retry its source image lookup, and
    /// nothing exists yet to clean up), with IMDSv2 enforced on the build
    /// instance where Packer cannot ask for it.
    async fn run_packer(&self, t: &Target, work: &Work, template: &str) -> Result<(), Error> {
        let settings = &self.project.settings;
        let vars: BTreeMap<&'static str, String> = BTreeMap::from([
            ("content_hash", t.hash.hash.to_string()),
            ("build_id", work.build_id.clone()),
            ("commit", provenance::commit(&self.project.root)),
            ("imagectl_version", env!("CARGO_PKG_VERSION").to_string()),
            ("stage_dir", work.path("stage").display().to_string()),
            (
                "manifest_path",
                work.path("manifest.json").display().to_string(),
            ),
        ]);
        let log = work.path("packer.log");
        let run = packer_exec::Run {
            role: t.name(),
            dir: &work.dir,
            template,
            vars: &vars,
            log: &log,
            timeout: Duration::from_secs(settings.build.timeout_minutes * 60),
        };
        self.progress.step(t.name(), "running packer build");
        let watcher = (!self.packer.is_current()).then(|| {
            tokio::spawn(require_imdsv2_on_build_instance(
                self.session.ec2(&settings.aws.region),
                work.build_id.clone(),
            ))
        });
        let mut runs = 1;
        let built = loop {
            let result = packer_exec::build(&run, self.progress).await;
            match &result {
                Err(packer_exec::Error::Failed { errors, log, .. })
                    if runs < PACKER_RUNS && throttled_before_launch(errors, log) =>
                {
                    self.progress.step(
                        t.name(),
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
        Ok(built?)
    }

    /// Completes the images the bake made (Packer's, or the disk's; tagged
    /// with the SBOM's digest too), signs their provenance, records the
    /// build's inputs beside the channels and in the local record, with the
    /// SBOM; returns AMI per region.
    async fn finish(
        &self,
        t: &Target,
        work: &Work,
        sbom: SbomRef,
        amis: BTreeMap<String, String>,
        packer: Option<String>,
    ) -> Result<BTreeMap<String, String>, Error> {
        let settings = &self.project.settings;
        let home = &settings.aws.region;
        let home_id = amis.get(home).ok_or_else(|| Error::NoHomeImage {
            role: t.name().to_string(),
            region: home.clone(),
        })?;
        self.progress.step(
            t.name(),
            "completing the images: tags, copies, shares, IMDSv2",
        );
        let ec2 = self.session.ec2(home);
        let wait = Duration::from_secs(settings.build.wait_minutes * 60);
        let done = interruptible(async {
            let mut image = ec2
                .wait_available(std::slice::from_ref(home_id), wait)
                .await?
                .remove(0);
            // Completing tags every copy with the home image's imagectl tags.
            image
                .tags
                .insert(tags::SBOM.to_string(), sbom.sha256.clone());
            complete(
                self.project,
                self.session,
                &[(t.name().to_string(), image)],
                true,
            )
            .await
        })
        .await?;
        let amis = done.get(t.name()).cloned().unwrap_or_default();
        self.progress
            .step(t.name(), "signing the build's provenance");
        let made = provenance::Made {
            hash: &t.hash,
            commit: provenance::commit(&self.project.root),
            packer,
            sbom_sha256: &sbom.sha256,
            build_id: &work.build_id,
            started: work.started,
        };
        match provenance::sign_amis(self.project, self.session, &made, &amis).await {
            Ok(Some((name, envelope))) => {
                tracing::info!("{}: provenance signed: {name}", t.name());
                // Beside the SBOM, for CI to keep with it.
                let path = work.path("provenance.intoto.json");
                let text = envelope + "\n";
                if let Err(e) = imagectl_core::fsutil::write_atomic(&path, text.as_bytes()) {
                    tracing::warn!("{}: cannot write {}: {e}", t.name(), path.display());
                }
            }
            Ok(None) => {}
            Err(source) => {
                return Err(Error::Sign {
                    role: t.name().to_string(),
                    source,
                })
            }
        }
        self.publish_sbom(t, &sbom).await;
        if let Err(e) = inputs::record(self.project, self.session, &t.hash).await {
            tracing::warn!(
                "{}: could not record the build's inputs (plan will not say what changed next time): {e}",
                t.name()
            );
        }
        let artifact = amis
            .iter()
            .map(|(r, a)| format!("{r}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let rec = record::Record::now(t.name(), t.hash.hash.as_str(), record::Kind::Aws, artifact)
            .with_inputs(t.hash.record())
            .with_sbom(sbom);
        if let Err(e) = record::add(&self.project.root, rec) {
            tracing::warn!(
                "{}: {e} (`plan --offline` will not know this build)",
                t.name()
            );
        }
        Ok(amis)
    }
}

impl Bakery<'_> {
    /// Keeps the build's SBOM, packed, at `PREFIX/ROLE/sbom/HASH`, so that
    /// `sbom` and `diff` read it on any machine; one that does not fit a
    /// parameter stays in the build's directory only (said).
    async fn publish_sbom(&self, t: &Target, sbom: &SbomRef) {
        let path = self.project.root.join(&sbom.path);
        let packed = match std::fs::read(&path) {
            Ok(bytes) => store::pack(&bytes),
            Err(e) => {
                tracing::warn!("{}: cannot read {}: {e}", t.name(), path.display());
                return;
            }
        };
        let settings = &self.project.settings;
        let name = names::sbom_parameter(&settings.publish.prefix, t.name(), t.hash.hash.as_str());
        if packed.len() > store::MAX_PACKED {
            tracing::warn!(
                "{}: the SBOM packs to {} bytes, more than a parameter holds ({}): kept in {} only",
                t.name(),
                packed.len(),
                store::MAX_PACKED,
                path.display()
            );
            return;
        }
        let ssm = self.session.ssm(&settings.aws.region);
        if let Err(e) = ssm.put_string(&name, &packed).await {
            tracing::warn!(
                "{}: could not keep the SBOM at {name} (`imagectl sbom` and `diff` find it on this machine only): {e}",
                t.name()
            );
        }
    }
}

/// Whether Packer failed on throttling before it launched an instance.
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
