//! What a publish does to the images on either side of a move, in each
//! region that moved:
//!
//! - the image the channel held before is deprecated `[publish]
//!   deprecate_after_days` from now (unless that is `0`), once no channel
//!   of the role holds it in that region any more: deprecation hides an
//!   image from other accounts' listings and marks it out of date, but
//!   launch templates, Auto Scaling groups and a rollback can still launch
//!   it by ID;
//! - the image the channel holds now has its deprecation cancelled, if it
//!   had one (a rollback, a promote of an older image);
//! - for a channel of `[publish] protect_channels`, the images it holds and
//!   held within its rollback history (the last `rollback_depth` earlier
//!   values, what `prune` keeps for it) get deregistration protection. Only
//!   `prune` lifts it, from an image nothing references any more.
//!
//! Each region's image is its own AMI, so each copy gets the same
//! treatment as the home region's image.

use std::collections::BTreeMap;

use imagectl_core::names::tags;
use imagectl_core::project::Project;
use imagectl_core::time;

use super::{distinct_values, parameter};
use crate::aws::{self, ImageInfo, Session};

/// One channel's publish, after it moved.
pub(super) struct Moved<'a> {
    pub project: &'a Project,
    pub session: &'a Session,
    pub role: &'a str,
    pub channel: &'a str,
    /// The channel parameter.
    pub name: &'a str,
}

impl Moved<'_> {
    /// Deprecates, undeprecates and protects in `region`, where the channel
    /// went from `old` to `new`.
    pub async fn region(
        &self,
        region: &str,
        old: Option<&str>,
        new: &ImageInfo,
    ) -> Result<(), aws::Error> {
        let (name, role) = (self.name, self.role);
        let ec2 = self.session.ec2(region);
        if let Some(at) = &new.deprecation_time {
            ec2.undeprecate(&new.id).await?;
            tracing::info!(
                "{name} in {region}: `{}` is a channel's image again: its deprecation (at {at}) is cancelled",
                new.id
            );
        }
        let publish = &self.project.settings.publish;
        if publish.protect_channels.iter().any(|c| c == self.channel) {
            self.protect(region).await?;
        }
        let (Some(old), Some(days)) = (old.filter(|o| *o != new.id), publish.deprecate_after_days)
        else {
            return Ok(());
        };
        // Still some channel's image here: it stays current.
        let names: Vec<String> = publish
            .channels
            .iter()
            .map(|c| parameter(self.project, role, c))
            .collect();
        let held = self.session.ssm(region).get_many(&names).await?;
        if let Some((by, _)) = held.iter().find(|(_, v)| *v == old) {
            tracing::debug!("{name} in {region}: `{old}` is still held by {by}: not deprecated");
            return Ok(());
        }
        let Some(image) = self.ours(region, &[old.to_string()]).await?.pop() else {
            return Ok(());
        };
        if image.deprecation_time.is_some() {
            return Ok(());
        }
        let at = time::now_secs() + i64::from(days) * 86_400;
        ec2.deprecate(old, at).await?;
        tracing::info!(
            "{name} in {region}: `{old}` is in no channel of `{role}` any more: deprecated at {} ({days} days from now)",
            time::iso(at)
        );
        Ok(())
    }

    /// Protects what the channel holds in `region` and what rollback could
    /// restore there, as far as it is not protected yet.
    async fn protect(&self, region: &str) -> Result<(), aws::Error> {
        let name = self.name;
        let depth = self.project.settings.publish.rollback_depth as usize;
        let history = self.session.ssm(region).history(name).await?;
        let mut values = distinct_values(&history);
        values.reverse();
        values.truncate(depth + 1);
        let ec2 = self.session.ec2(region);
        for image in self.ours(region, &values).await? {
            if image.protection_enabled() {
                continue;
            }
            ec2.protect(&image.id).await?;
            tracing::info!(
                "{name} in {region}: `{}` is protected from deregistration while {name} holds it or can roll back to it",
                image.id
            );
        }
        Ok(())
    }

    /// The images among `ids` in `region` that are imagectl's images of the
    /// role: a value anything else wrote is left alone (and the publish
    /// policy may not touch it).
    async fn ours(&self, region: &str, ids: &[String]) -> Result<Vec<ImageInfo>, aws::Error> {
        let mut unique = ids.to_vec();
        unique.sort();
        unique.dedup();
        let found = self.session.ec2(region).images_by_id(&unique).await?;
        let by_id: BTreeMap<String, ImageInfo> = found
            .into_iter()
            .filter(|i| i.tag(tags::ROLE) == Some(self.role))
            .map(|i| (i.id.clone(), i))
            .collect();
        // In the order asked, each once.
        let mut seen = std::collections::BTreeSet::new();
        Ok(ids
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .filter_map(|id| by_id.get(id).cloned())
            .collect())
    }
}
