//! EC2 images: registering them from snapshots, finding them by tags,
//! completing them (tags, copies, shares, IMDSv2), waiting for them,
//! deprecating and protecting them, deleting them with their snapshots.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::operation::register_image::builders::RegisterImageFluentBuilder;
use aws_sdk_ec2::types::{
    ArchitectureValues, AttributeValue, BlockDeviceMapping, BootModeValues, EbsBlockDevice, Filter,
    ImdsSupportValues, LaunchPermission, LaunchPermissionModifications, ResourceType,
    SnapshotAttributeName, Tag, TagSpecification, VolumeType,
};
use imagectl_core::arch::Arch;

use super::error::err;
use super::{tag_map, Ec2, Error};

/// The root device of an image registered from a snapshot.
const ROOT_DEVICE: &str = "/dev/xvda";

/// An AMI to register from the snapshot of a whole disk.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    /// The image name.
    pub name: &'a str,
    /// Its description.
    pub description: &'a str,
    /// The architecture of what is on the disk.
    pub arch: Arch,
    /// The snapshot of the disk, `snap-...`, completed.
    pub snapshot_id: &'a str,
    /// The root volume's size in GiB, at least the snapshot's.
    pub volume_size_gib: i64,
    /// The image's tags, set as it is created.
    pub tags: &'a BTreeMap<String, String>,
}

/// What imagectl needs to know about an AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `ami-...`.
    pub id: String,
    /// The image name.
    pub name: String,
    /// The owning account.
    pub owner: String,
    /// `x86_64` or `arm64`.
    pub arch: String,
    /// ISO 8601 creation time, as EC2 reports it.
    pub created: String,
    /// `available`, `pending`, ...
    pub state: String,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
    /// The snapshots behind it.
    pub snapshots: Vec<String>,
    /// `v2.0` when instances launched from it must use IMDSv2.
    pub imds_support: Option<String>,
    /// When it is (or was) deprecated, ISO 8601 as EC2 reports it; `None`
    /// when no deprecation time is set.
    pub deprecation_time: Option<String>,
    /// Its deregistration protection as EC2 reports it: `disabled`,
    /// `enabled-without-cooldown`, `enabled-with-cooldown`, or
    /// `disabled-until TIME` while a cooldown runs.
    pub deregistration_protection: Option<String>,
}

impl ImageInfo {
    /// The value of a tag.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags.get(key).map(String::as_str)
    }

    /// Whether DeregisterImage would be refused: protection is enabled, or
    /// was disabled with a cooldown that still runs.
    pub fn protected(&self) -> bool {
        self.deregistration_protection
            .as_deref()
            .is_some_and(|p| p != "disabled")
    }

    /// Whether protection is enabled (with or without a cooldown).
    pub fn protection_enabled(&self) -> bool {
        self.deregistration_protection
            .as_deref()
            .is_some_and(|p| p.starts_with("enabled"))
    }
}

fn image_info(image: &aws_sdk_ec2::types::Image) -> ImageInfo {
    ImageInfo {
        id: image.image_id().unwrap_or_default().to_string(),
        name: image.name().unwrap_or_default().to_string(),
        owner: image.owner_id().unwrap_or_default().to_string(),
        arch: image
            .architecture()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default(),
        created: image.creation_date().unwrap_or_default().to_string(),
        state: image
            .state()
            .map(|s| s.as_str().to_string())
            .unwrap_or_default(),
        tags: tag_map(image.tags()),
        snapshots: image
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs().and_then(|e| e.snapshot_id()).map(String::from))
            .collect(),
        imds_support: image.imds_support().map(|v| v.as_str().to_string()),
        deprecation_time: image.deprecation_time().map(String::from),
        deregistration_protection: image.deregistration_protection().map(String::from),
    }
}

impl Ec2 {
    /// All images matching `owners` and the `filters` (name, values), every page.
    pub async fn describe_images(
        &self,
        owners: &[String],
        filters: &[(&str, Vec<String>)],
    ) -> Result<Vec<ImageInfo>, Error> {
        let mut req = self
            .client
            .describe_images()
            .set_owners((!owners.is_empty()).then(|| owners.to_vec()));
        for (name, values) in filters {
            req = req.filters(
                Filter::builder()
                    .name(*name)
                    .set_values(Some(values.clone()))
                    .build(),
            );
        }
        let mut pages = req.into_paginator().items().send();
        let mut out = Vec::new();
        while let Some(item) = pages.next().await {
            let image = item.map_err(err("DescribeImages", &self.region, None))?;
            out.push(image_info(&image));
        }
        Ok(out)
    }

    /// The images with these IDs that exist (missing ones are left out).
    pub async fn images_by_id(&self, ids: &[String]) -> Result<Vec<ImageInfo>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Asking by filter rather than by ImageIds: an unknown ID is then no
        // match instead of an error for the whole call.
        self.describe_images(&[], &[("image-id", ids.to_vec())])
            .await
    }

    /// Every image this account owns that imagectl built, optionally only
    /// for some roles.
    pub async fn imagectl_images(&self, roles: &[String]) -> Result<Vec<ImageInfo>, Error> {
        let filter = if roles.is_empty() {
            ("tag-key", vec!["imagectl:role".to_string()])
        } else {
            ("tag:imagectl:role", roles.to_vec())
        };
        let what = if roles.is_empty() {
            "imagectl's images".to_string()
        } else {
            let named: Vec<String> = roles.iter().map(|r| format!("`{r}`")).collect();
            format!("images of role {}", named.join(", "))
        };
        self.describe_images(&["self".to_string()], &[filter])
            .await
            .map_err(|e| e.about(what))
    }

    /// Adds or replaces tags on resources.
    pub async fn create_tags(
        &self,
        resources: &[String],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        let mut req = self
            .client
            .create_tags()
            .set_resources(Some(resources.to_vec()));
        for (k, v) in tags {
            req = req.tags(Tag::builder().key(k).value(v).build());
        }
        req.send().await.map_err(err(
            "CreateTags",
            &self.region,
            resources.first().map(String::as_str),
        ))?;
        Ok(())
    }

    /// Copies an image from another region into this one, encrypted.
    pub async fn copy_image(
        &self,
        source_region: &str,
        source: &ImageInfo,
        kms_key: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Error> {
        // Tagged as it is created, image and snapshots: the build policy
        // lets a copy be made only so, and the copy is never an untagged
        // image in between.
        let ec2_tags: Vec<Tag> = tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let specs = [ResourceType::Image, ResourceType::Snapshot].map(|kind| {
            TagSpecification::builder()
                .resource_type(kind)
                .set_tags(Some(ec2_tags.clone()))
                .build()
        });
        let out = self
            .client
            .copy_image()
            .source_region(source_region)
            .source_image_id(&source.id)
            .name(&source.name)
            .encrypted(true)
            .set_kms_key_id(kms_key.map(String::from))
            .set_tag_specifications((!tags.is_empty()).then(|| specs.to_vec()))
            .send()
            .await
            .map_err(err("CopyImage", &self.region, Some(&source.id)))?;
        Ok(out.image_id().unwrap_or_default().to_string())
    }

    /// Registers an AMI booting from `image.snapshot_id`: one gp3 root
    /// volume at `/dev/xvda`, deleted with its instance; HVM, UEFI,
    /// ENA, IMDSv2 required; tagged as it is created. Its encryption is the
    /// snapshot's (EC2 refuses an `Encrypted` flag on a mapping made from a
    /// snapshot). Returns the image ID.
    pub async fn register_image(&self, image: &Registration<'_>) -> Result<String, Error> {
        let out = self.register_request(image)?.send().await.map_err(err(
            "RegisterImage",
            &self.region,
            Some(image.name),
        ))?;
        let Some(id) = out.image_id() else {
            let e = "EC2 answered without an image ID".to_string();
            return Err(Error::other(
                "RegisterImage",
                &self.region,
                Some(image.name),
                e,
            ));
        };
        Ok(id.to_string())
    }

    fn register_request(
        &self,
        image: &Registration<'_>,
    ) -> Result<RegisterImageFluentBuilder, Error> {
        let size = i32::try_from(image.volume_size_gib).map_err(|_| {
            let e = format!(
                "a root volume of {} GiB is too large",
                image.volume_size_gib
            );
            Error::other("RegisterImage", &self.region, Some(image.name), e)
        })?;
        let root = BlockDeviceMapping::builder()
            .device_name(ROOT_DEVICE)
            .ebs(
                EbsBlockDevice::builder()
                    .snapshot_id(image.snapshot_id)
                    .volume_size(size)
                    .volume_type(VolumeType::Gp3)
                    .delete_on_termination(true)
                    .build(),
            )
            .build();
        let tags: Vec<Tag> = image
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let spec = TagSpecification::builder()
            .resource_type(ResourceType::Image)
            .set_tags(Some(tags))
            .build();
        Ok(self
            .client
            .register_image()
            .name(image.name)
            .description(image.description)
            .architecture(ArchitectureValues::from(image.arch.as_str()))
            .root_device_name(ROOT_DEVICE)
            .block_device_mappings(root)
            .virtualization_type("hvm")
            .boot_mode(BootModeValues::Uefi)
            .ena_support(true)
            .imds_support(ImdsSupportValues::V20)
            .set_tag_specifications((!image.tags.is_empty()).then(|| vec![spec])))
    }

    /// Shares an image and its snapshots with accounts.
    pub async fn share(&self, image: &ImageInfo, accounts: &[String]) -> Result<(), Error> {
        if accounts.is_empty() {
            return Ok(());
        }
        let mut perms = LaunchPermissionModifications::builder();
        for a in accounts {
            perms = perms.add(LaunchPermission::builder().user_id(a).build());
        }
        self.client
            .modify_image_attribute()
            .image_id(&image.id)
            .launch_permission(perms.build())
            .send()
            .await
            .map_err(err("ModifyImageAttribute", &self.region, Some(&image.id)))?;
        for snap in &image.snapshots {
            // The OperationType form of the call: EC2 takes both, and
            // emulators know this one.
            self.client
                .modify_snapshot_attribute()
                .snapshot_id(snap)
                .attribute(SnapshotAttributeName::CreateVolumePermission)
                .operation_type(aws_sdk_ec2::types::OperationType::Add)
                .set_user_ids(Some(accounts.to_vec()))
                .send()
                .await
                .map_err(err("ModifySnapshotAttribute", &self.region, Some(snap)))?;
        }
        Ok(())
    }

    /// Requires IMDSv2 on every instance launched from the image.
    pub async fn require_imdsv2(&self, image: &str) -> Result<(), Error> {
        self.client
            .modify_image_attribute()
            .image_id(image)
            .imds_support(AttributeValue::builder().value("v2.0").build())
            .send()
            .await
            .map_err(err("ModifyImageAttribute", &self.region, Some(image)))?;
        Ok(())
    }

    /// Deprecates an image at `at` (seconds since the epoch; EC2 rounds to
    /// the minute).
    pub async fn deprecate(&self, image: &str, at: i64) -> Result<(), Error> {
        self.client
            .enable_image_deprecation()
            .image_id(image)
            .deprecate_at(aws_smithy_types::DateTime::from_secs(at))
            .send()
            .await
            .map_err(err("EnableImageDeprecation", &self.region, Some(image)))?;
        Ok(())
    }

    /// Cancels an image's deprecation.
    pub async fn undeprecate(&self, image: &str) -> Result<(), Error> {
        self.client
            .disable_image_deprecation()
            .image_id(image)
            .send()
            .await
            .map_err(err("DisableImageDeprecation", &self.region, Some(image)))?;
        Ok(())
    }

    /// Turns on deregistration protection, without a cooldown: with one,
    /// `prune` could deregister an image only 24 hours after it lifted the
    /// protection, so each prune would have to run twice a day apart.
    pub async fn protect(&self, image: &str) -> Result<(), Error> {
        self.client
            .enable_image_deregistration_protection()
            .image_id(image)
            .with_cooldown(false)
            .send()
            .await
            .map_err(err(
                "EnableImageDeregistrationProtection",
                &self.region,
                Some(image),
            ))?;
        Ok(())
    }

    /// Turns off deregistration protection.
    pub async fn unprotect(&self, image: &str) -> Result<(), Error> {
        self.client
            .disable_image_deregistration_protection()
            .image_id(image)
            .send()
            .await
            .map_err(err(
                "DisableImageDeregistrationProtection",
                &self.region,
                Some(image),
            ))?;
        Ok(())
    }

    /// Waits until every image is available, polling, for at most `timeout`.
    pub async fn wait_available(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> Result<Vec<ImageInfo>, Error> {
        let start = Instant::now();
        let mut delay = Duration::from_secs(2);
        loop {
            let found = self.images_by_id(ids).await?;
            if let Some(failed) = found
                .iter()
                .find(|i| i.state == "failed" || i.state == "error")
            {
                return Err(Error::other(
                    "DescribeImages",
                    &self.region,
                    Some(&failed.id),
                    "the image failed".into(),
                ));
            }
            if found.len() == ids.len() && found.iter().all(|i| i.state == "available") {
                return Ok(found);
            }
            if start.elapsed() >= timeout {
                return Err(Error::other(
                    "DescribeImages",
                    &self.region,
                    Some(&ids.join(", ")),
                    format!("not available after {} s; it may still finish: run the command again to pick it up", timeout.as_secs()),
                ));
            }
            tokio::time::sleep(delay.min(timeout.saturating_sub(start.elapsed()))).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }

    /// Deregisters an image and deletes its snapshots.
    pub async fn delete_image(&self, image: &ImageInfo) -> Result<(), Error> {
        self.deregister_image(&image.id).await?;
        for snap in &image.snapshots {
            self.delete_snapshot(snap).await?;
        }
        Ok(())
    }

    /// The images that instances (pending, running, stopping or stopped) were
    /// launched from, among `ids`.
    pub async fn images_in_use(&self, ids: &[String]) -> Result<Vec<String>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let states = ["pending", "running", "stopping", "stopped"]
            .map(String::from)
            .to_vec();
        let mut pages = self
            .client
            .describe_instances()
            .filters(
                Filter::builder()
                    .name("image-id")
                    .set_values(Some(ids.to_vec()))
                    .build(),
            )
            .filters(
                Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(states))
                    .build(),
            )
            .into_paginator()
            .items()
            .send();
        let mut out = Vec::new();
        while let Some(r) = pages.next().await {
            let reservation = r.map_err(err("DescribeInstances", &self.region, None))?;
            for i in reservation.instances() {
                if let Some(id) = i.image_id() {
                    out.push(id.to_string());
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Deregisters an image (its snapshots stay).
    pub async fn deregister_image(&self, id: &str) -> Result<(), Error> {
        self.client
            .deregister_image()
            .image_id(id)
            .send()
            .await
            .map_err(err("DeregisterImage", &self.region, Some(id)))?;
        Ok(())
    }

    /// Deletes a snapshot.
    pub async fn delete_snapshot(&self, id: &str) -> Result<(), Error> {
        self.client
            .delete_snapshot()
            .snapshot_id(id)
            .send()
            .await
            .map_err(err("DeleteSnapshot", &self.region, Some(id)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// moto ignores all of RegisterImage but the name and description: what
    /// EC2 is asked for is checked here, on the request.
    #[test]
    fn an_image_from_a_snapshot_boots_uefi_from_a_gp3_root_volume_with_imdsv2() {
        let conf = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("eu-west-1"))
            .build();
        let ec2 = Ec2 {
            client: aws_sdk_ec2::Client::from_conf(conf),
            region: "eu-west-1".into(),
        };
        let tags = BTreeMap::from([("imagectl:role".to_string(), "app".to_string())]);
        let image = Registration {
            name: "app-0123",
            description: "role app",
            arch: Arch::Arm64,
            snapshot_id: "snap-1",
            volume_size_gib: 8,
            tags: &tags,
        };
        let req = ec2.register_request(&image).unwrap();
        let req = req.as_input();
        assert_eq!(req.get_name().as_deref(), Some("app-0123"));
        assert_eq!(req.get_description().as_deref(), Some("role app"));
        assert_eq!(req.get_architecture(), &Some(ArchitectureValues::Arm64));
        assert_eq!(req.get_root_device_name().as_deref(), Some("/dev/xvda"));
        assert_eq!(req.get_virtualization_type().as_deref(), Some("hvm"));
        assert_eq!(req.get_boot_mode(), &Some(BootModeValues::Uefi));
        assert_eq!(req.get_ena_support(), &Some(true));
        assert_eq!(req.get_imds_support(), &Some(ImdsSupportValues::V20));
        let mappings = req.get_block_device_mappings().as_deref().unwrap();
        assert_eq!(mappings.len(), 1);
        assert_eq!(mappings[0].device_name(), Some("/dev/xvda"));
        let ebs = mappings[0].ebs().unwrap();
        assert_eq!(ebs.snapshot_id(), Some("snap-1"));
        assert_eq!(ebs.volume_size(), Some(8));
        assert_eq!(ebs.volume_type(), Some(&VolumeType::Gp3));
        assert_eq!(ebs.delete_on_termination(), Some(true));
        assert_eq!(ebs.encrypted(), None);
        let specs = req.get_tag_specifications().as_deref().unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].resource_type(), Some(&ResourceType::Image));
        assert_eq!(tag_map(specs[0].tags()), tags);
        let huge = Registration {
            volume_size_gib: i64::from(i32::MAX) + 1,
            ..image
        };
        let e = ec2.register_request(&huge).err().unwrap();
        assert_eq!(
            e.to_string(),
            "AWS RegisterImage in `eu-west-1` failed for `app-0123`: a root volume of 2147483648 GiB is too large"
        );
    }
}
