//! EC2 images: finding them by tags, completing them (tags, copies,
//! shares, IMDSv2), waiting for them, deprecating and protecting them,
//! deleting them with their snapshots.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    AttributeValue, Filter, LaunchPermission, LaunchPermissionModifications, ResourceType,
    SnapshotAttributeName, Tag, TagSpecification,
};

use super::error::err;
use super::{tag_map, Ec2, Error};

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
