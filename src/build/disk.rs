//! One bake by the disk method (`--method disk`, `[image] method =
//! "disk"`): the role's disk image, built on this machine exactly as
//! `build --target disk` builds it (and `test --vm` boots it), uploaded to
//! an EBS snapshot with the EBS direct APIs and registered as the AMI. No
//! build instance, no Packer. The images are then completed, signed and
//! recorded as Packer's are ([`super::bake`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use imagectl_core::names::{tags, IMAGE_NAME_PREFIX};
use imagectl_core::record::SbomRef;
use imagectl_core::target::Target;

use super::bake::{io, Bakery, Work};
use super::Error;
use crate::aws::{Registration, Upload};
use crate::local::{self, Format};
use crate::provenance::commit;

impl Bakery<'_> {
    /// Builds (or finds) the disk image of `t`, uploads it and registers
    /// the home region's AMI; returns it, the SBOM read from the disk's
    /// root filesystem, and the build's log.
    pub(super) async fn bake_disk(
        &self,
        t: &Target,
        work: &Work,
    ) -> Result<(BTreeMap<String, String>, SbomRef, String), Error> {
        let role = t.name();
        let settings = &self.project.settings;
        let home = &settings.aws.region;
        // The local build runs its tools to their end on this thread.
        let disk = local::build_as(
            self.project,
            t,
            &self.options.agent,
            self.progress,
            Format::Disk,
        )?;
        if !disk.built {
            self.progress.step(
                role,
                &format!(
                    "disk image {} exists (sha256 {}): uploading those bytes",
                    disk.path.display(),
                    &disk.sha256[..12]
                ),
            );
        }
        let sbom = sbom_of(self.project, &disk)?;
        let mut image_tags = BTreeMap::from([
            (
                tags::NAME.to_string(),
                format!("{IMAGE_NAME_PREFIX}{role}-{}", work.build_id),
            ),
            (tags::ROLE.to_string(), role.to_string()),
            (tags::HASH.to_string(), t.hash.hash.to_string()),
            (tags::BUILD.to_string(), work.build_id.clone()),
            (tags::COMMIT.to_string(), commit(&self.project.root)),
            (
                tags::VERSION.to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            ),
            (tags::DISK.to_string(), disk.sha256.clone()),
        ]);
        let kms_key_arn = match settings.aws.kms_key_in(home) {
            Some(key) => Some(self.session.kms(home).key_arn(&key).await?),
            None => None,
        };
        let ebs = self.session.ebs(home);
        let description = format!(
            "imagectl {role} {} (disk {})",
            t.hash.short(),
            &disk.sha256[..12]
        );
        let upload = Upload {
            path: &disk.path,
            sha256: Some(&disk.sha256),
            volume_size_gib: Some(i64::from(t.role.image.volume_size_gb)),
            description: &description,
            tags: &image_tags,
            encrypted: true,
            kms_key_arn: kms_key_arn.as_deref(),
            timeout_minutes: 60,
        };
        self.progress
            .step(role, "uploading the disk image (EBS direct APIs)");
        let shown = AtomicU64::new(0);
        let report = super::interruptible(ebs.upload(&upload, &|done, total| {
            // Every tenth, and the last.
            let tenth = (done * 10).checked_div(total).unwrap_or(10);
            if shown.fetch_max(tenth, Ordering::Relaxed) < tenth {
                tracing::info!("{role}: uploaded {done} of {total} blocks");
            }
        }))
        .await?;
        tracing::info!(
            "{role}: snapshot {}: {} of {} blocks written ({} MB) in {:.1} s",
            report.snapshot_id,
            report.blocks_written,
            report.blocks_total,
            report.bytes_written / 1_000_000,
            report.secs
        );
        let wait = Duration::from_secs(settings.build.wait_minutes * 60);
        ebs.wait_completed(&report.snapshot_id, wait).await?;
        self.progress.step(
            role,
            &format!("registering the AMI from {}", report.snapshot_id),
        );
        image_tags.insert(tags::SBOM.to_string(), sbom.sha256.clone());
        let name = format!("{IMAGE_NAME_PREFIX}{role}-{}", work.build_id);
        let ec2 = self.session.ec2(home);
        let registered = ec2
            .register_image(&Registration {
                name: &name,
                description: &t.role.description,
                arch: t.role.image.arch,
                snapshot_id: &report.snapshot_id,
                volume_size_gib: report.volume_size_gib,
                tags: &image_tags,
            })
            .await;
        let id = match registered {
            Ok(id) => id,
            Err(e) => {
                // Nothing refers to the snapshot yet: it goes.
                let _ = ec2.delete_snapshot(&report.snapshot_id).await;
                return Err(e.into());
            }
        };
        // Tagged again by CreateTags: an EC2 that ignored the request's tag
        // specifications (moto does) ends with them too, and the copies take
        // the home image's tags. An image left untagged goes with its
        // snapshot: nothing could find it to complete or prune it.
        if let Err(e) = ec2
            .create_tags(std::slice::from_ref(&id), &image_tags)
            .await
        {
            let _ = ec2.deregister_image(&id).await;
            let _ = ec2.delete_snapshot(&report.snapshot_id).await;
            return Err(e.into());
        }
        let log = work.path("upload.json");
        let text = serde_json::json!({
            "disk": disk.path,
            "disk_sha256": disk.sha256,
            "snapshot": report.snapshot_id,
            "blocks_total": report.blocks_total,
            "blocks_written": report.blocks_written,
            "bytes_written": report.bytes_written,
            "secs": report.secs,
            "image": id,
        });
        std::fs::write(&log, format!("{text:#}\n")).map_err(io(&log))?;
        Ok((
            BTreeMap::from([(home.clone(), id)]),
            sbom,
            log.display().to_string(),
        ))
    }
}

/// The SBOM the disk's local build kept, read from its root filesystem.
fn sbom_of(
    project: &imagectl_core::project::Project,
    disk: &local::LocalImage,
) -> Result<SbomRef, Error> {
    let path = imagectl_core::sbom::store::local_path(&disk.path);
    let sha256 = imagectl_core::digest::file_sha256(&path).map_err(io(&path))?;
    let rel = path.strip_prefix(&project.root).unwrap_or(&path);
    Ok(SbomRef {
        path: rel.display().to_string(),
        sha256,
    })
}
