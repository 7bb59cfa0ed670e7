//! Orphans of builds that died (imagectl or Packer killed, a runner gone):
//! finding them by imagectl's tags and names, and removing them in an order
//! EC2 accepts. Never a resource imagectl did not create, never a complete
//! image (that is [`crate::gc`]'s business, which keeps referenced ones).
//!
//! What a build creates, and how each is recognised (see
//! [`imagectl_core::packer::template`]):
//! - the build instance and its volumes: `run_tags` / `run_volume_tags`,
//!   `Name = imagectl-build-ROLE-BUILD` and `imagectl:build`;
//! - the AMI and its snapshots: named `imagectl-ROLE-BUILD` at once, tagged
//!   `imagectl:*` only once available (so a build killed in between leaves
//!   an untagged image that only its name identifies), copies likewise;
//! - the temporary key pair: named `imagectl-ROLE-BUILD` (EC2 key pairs
//!   Packer creates carry no tags);
//! - no security group: the template names an existing one
//!   (`security_group_filter`), so Packer creates none. Groups tagged
//!   `imagectl:build` are still swept, in case a template ever makes one.
//!
//! `BUILD` is `HASH12-YYYYMMDDhhmmss` (see [`imagectl_core::names::build_id`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;

use imagectl_core::names::{
    build_of_name, build_secs, tags, IMAGE_NAME_PREFIX, INSTANCE_NAME_PREFIX,
};
use imagectl_core::project::Project;
use imagectl_core::time::iso_secs;

use crate::aws::{self, ImageInfo, Resource, Session};

/// What a leftover is. Deletion goes in this order: instances first (and
/// waited for), images before their snapshots, volumes, key pairs and
/// groups once no instance holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A build instance.
    Instance,
    /// An AMI.
    Image,
    /// An EBS snapshot.
    Snapshot,
    /// An EBS volume attached to nothing.
    Volume,
    /// Packer's temporary key pair.
    KeyPair,
    /// A security group.
    SecurityGroup,
}

impl Kind {
    /// The name in tables (`key-pair`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Instance => "instance",
            Kind::Image => "image",
            Kind::Snapshot => "snapshot",
            Kind::Volume => "volume",
            Kind::KeyPair => "key-pair",
            Kind::SecurityGroup => "security-group",
        }
    }
}

/// What became of an orphan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    /// Found; nothing done yet (`--dry-run`).
    #[serde(rename = "would remove")]
    WouldRemove,
    /// Removed.
    #[serde(rename = "removed")]
    Removed,
    /// Removing it failed.
    #[serde(rename = "failed")]
    Failed,
}

impl Status {
    /// The name in tables (`would remove`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::WouldRemove => "would remove",
            Status::Removed => "removed",
            Status::Failed => "failed",
        }
    }
}

/// One leftover to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Orphan {
    /// What it is.
    pub kind: Kind,
    /// Its region.
    pub region: String,
    /// Its ID (a key pair's name).
    pub id: String,
    /// Its name (Name tag, image, group or key pair name), maybe empty.
    pub name: String,
    /// The build it belongs to, when known.
    pub build: Option<String>,
    /// Age in seconds, when EC2 or its name says.
    pub age_secs: Option<i64>,
    /// Why it is an orphan.
    pub reason: String,
    /// For a snapshot of an orphan image: that image, deregistered first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// What became of it.
    pub status: Status,
    /// Why removing it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything in one region that could be a build's leftover.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// The region.
    pub region: String,
    /// Every pending, running, stopping or stopped instance (also to tell
    /// which key pairs, groups and images are in use).
    pub instances: Vec<Resource>,
    /// Every image the account owns (also to tell which snapshots are in use).
    pub images: Vec<ImageInfo>,
    /// Snapshots tagged `imagectl:role`.
    pub snapshots: Vec<Resource>,
    /// Detached volumes tagged `imagectl:build`.
    pub volumes: Vec<Resource>,
    /// Key pairs named `imagectl-*`.
    pub key_pairs: Vec<Resource>,
    /// Security groups tagged `imagectl:build`.
    pub groups: Vec<Resource>,
}

/// Which orphans a sweep removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// What carries imagectl's tags (instances, volumes and groups of a
    /// build, images and snapshots of a role) and Packer's key pairs,
    /// named after the build: what the sweep policy can be scoped to.
    Tagged,
    /// Break-glass (`--untagged`): images a build was killed before it
    /// could tag, known only by their names, and the snapshots of orphan
    /// images that carry no imagectl tag; the `sweep-untagged` policy
    /// cannot be scoped to imagectl's resources.
    Untagged,
}

/// Decides what in `inv` is an orphan at time `now` (seconds since the
/// epoch) for a sweep in `mode`: only what is at least `older_than` old, so
/// that builds still running are left alone. `build_group` is the group
/// builds run in (by Name tag), never removed.
pub fn plan(
    inv: &Inventory,
    mode: Mode,
    now: i64,
    older_than: Duration,
    build_group: &str,
) -> Vec<Orphan> {
    let mut p = Planner {
        inv,
        now,
        min: i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX),
        out: Vec::new(),
    };
    let gone_instances = p.instances();
    // What instances that stay hold on to.
    let in_use: BTreeSet<&str> = inv
        .instances
        .iter()
        .filter(|i| !gone_instances.contains(&i.id))
        .flat_map(|i| i.uses.iter().map(String::as_str))
        .collect();
    let gone_images = p.images(&in_use);
    p.snapshots(&gone_images);
    p.volumes();
    p.key_pairs(&in_use);
    p.groups(&in_use, build_group);
    p.out
        .into_iter()
        .filter(|o| breaks_glass(o, inv) == (mode == Mode::Untagged))
        .collect()
}

/// Whether removing `o` needs the break-glass policy: an image without
/// imagectl's role tag, or with a snapshot without it (the image and all
/// its snapshots go together, or the snapshots would be left behind with
/// nothing to find them by), or a snapshot of such an image.
fn breaks_glass(o: &Orphan, inv: &Inventory) -> bool {
    let tagged_snapshot = |id: &str| {
        inv.snapshots
            .iter()
            .any(|s| s.id == id && s.tag(tags::ROLE).is_some())
    };
    let image_needs = |id: &str| {
        inv.images.iter().find(|i| i.id == id).is_some_and(|i| {
            i.tag(tags::ROLE).is_none() || i.snapshots.iter().any(|s| !tagged_snapshot(s))
        })
    };
    match o.kind {
        Kind::Image => image_needs(&o.id),
        Kind::Snapshot => match &o.image {
            Some(image) => image_needs(image),
            None => !tagged_snapshot(&o.id),
        },
        _ => false,
    }
}

/// One region's orphans, found kind by kind.
struct Planner<'a> {
    inv: &'a Inventory,
    now: i64,
    /// The least age, seconds, of an orphan.
    min: i64,
    out: Vec<Orphan>,
}

impl Planner<'_> {
    fn old(&self, created: Option<i64>) -> bool {
        created.is_some_and(|c| self.now - c >= self.min)
    }

    fn push(
        &mut self,
        kind: Kind,
        id: &str,
        name: &str,
        build: Option<&str>,
        created: Option<i64>,
        reason: String,
    ) -> &mut Orphan {
        self.out.push(Orphan {
            kind,
            region: self.inv.region.clone(),
            id: id.to_string(),
            name: name.to_string(),
            build: build.map(String::from),
            age_secs: created.map(|c| (self.now - c).max(0)),
            reason,
            image: None,
            status: Status::WouldRemove,
            error: None,
        });
        let last = self.out.len() - 1;
        &mut self.out[last]
    }

    /// Build instances: Packer's run tags, however far the build got.
    /// Returns their IDs.
    fn instances(&mut self) -> BTreeSet<String> {
        let mut gone = BTreeSet::new();
        for i in &self.inv.instances {
            let Some(b) = i.tag(tags::BUILD) else {
                continue;
            };
            if build_of_name(&i.name, INSTANCE_NAME_PREFIX).is_none() || !self.old(i.created) {
                continue;
            }
            gone.insert(i.id.clone());
            let reason = format!("build instance left {}", i.state);
            self.push(Kind::Instance, &i.id, &i.name, Some(b), i.created, reason);
        }
        gone
    }

    /// Images: imagectl's by tag or by name, but not complete, and used by
    /// no instance. Returns their IDs.
    fn images(&mut self, in_use: &BTreeSet<&str>) -> BTreeSet<String> {
        let mut gone = BTreeSet::new();
        for i in &self.inv.images {
            let by_name = build_of_name(&i.name, IMAGE_NAME_PREFIX);
            if i.tag(tags::ROLE).is_none() && by_name.is_none() {
                continue;
            }
            let missing: Vec<&str> = tags::COMPLETE
                .iter()
                .copied()
                .filter(|t| i.tag(t).is_none())
                .collect();
            let reason = match (i.state.as_str(), missing.len()) {
                ("available", 0) => continue,
                ("failed" | "error", _) => format!("image {}", i.state),
                (_, n) if n == tags::COMPLETE.len() => {
                    "never tagged: the build died before completing it".to_string()
                }
                (_, 0) => format!("still {}", i.state),
                _ => format!("half-tagged: no {}", missing.join(", ")),
            };
            let created = iso_secs(&i.created);
            if !self.old(created) || in_use.contains(i.id.as_str()) {
                continue;
            }
            gone.insert(i.id.clone());
            let build = i.tag(tags::BUILD).or(by_name);
            self.push(Kind::Image, &i.id, &i.name, build, created, reason);
        }
        gone
    }

    /// Snapshots: those of the orphan images that no other image uses, and
    /// imagectl's tagged ones whose image is gone.
    fn snapshots(&mut self, gone_images: &BTreeSet<String>) {
        let inv = self.inv;
        let kept: BTreeSet<&str> = inv
            .images
            .iter()
            .filter(|i| !gone_images.contains(&i.id))
            .flat_map(|i| i.snapshots.iter().map(String::as_str))
            .collect();
        let tagged: BTreeMap<&str, &Resource> =
            inv.snapshots.iter().map(|s| (s.id.as_str(), s)).collect();
        let mut seen = BTreeSet::new();
        for i in inv.images.iter().filter(|i| gone_images.contains(&i.id)) {
            for s in &i.snapshots {
                if kept.contains(s.as_str()) || !seen.insert(s.clone()) {
                    continue;
                }
                let name = tagged.get(s.as_str()).map_or("", |r| r.name.as_str());
                let build = i
                    .tag(tags::BUILD)
                    .or(build_of_name(&i.name, IMAGE_NAME_PREFIX));
                let reason = format!("snapshot of orphan image {}", i.id);
                let o = self.push(Kind::Snapshot, s, name, build, iso_secs(&i.created), reason);
                o.image = Some(i.id.clone());
            }
        }
        for s in &inv.snapshots {
            if s.tag(tags::ROLE).is_none()
                || kept.contains(s.id.as_str())
                || seen.contains(&s.id)
                || !self.old(s.created)
            {
                continue;
            }
            seen.insert(s.id.clone());
            let reason = "its image is gone".to_string();
            self.push(
                Kind::Snapshot,
                &s.id,
                &s.name,
                s.tag(tags::BUILD),
                s.created,
                reason,
            );
        }
    }

    /// Volumes a build instance left behind, attached to nothing.
    fn volumes(&mut self) {
        for v in &self.inv.volumes {
            if let Some(b) = v.tag(tags::BUILD).filter(|_| self.old(v.created)) {
                let reason = "build volume attached to nothing".to_string();
                self.push(Kind::Volume, &v.id, &v.name, Some(b), v.created, reason);
            }
        }
    }

    /// Packer's temporary key pairs, by name: EC2 gives them no tags.
    fn key_pairs(&mut self, in_use: &BTreeSet<&str>) {
        for k in &self.inv.key_pairs {
            let Some(b) = build_of_name(&k.name, IMAGE_NAME_PREFIX) else {
                continue;
            };
            let created = k.created.or_else(|| build_secs(b));
            if self.old(created) && !in_use.contains(k.id.as_str()) {
                let reason = "temporary key pair of a build".to_string();
                self.push(Kind::KeyPair, &k.id, &k.name, Some(b), created, reason);
            }
        }
    }

    /// Groups tagged by a build (their age is the build's), never the
    /// default group or the one builds run in.
    fn groups(&mut self, in_use: &BTreeSet<&str>, build_group: &str) {
        for g in &self.inv.groups {
            let Some(b) = g.tag(tags::BUILD) else {
                continue;
            };
            let created = build_secs(b);
            if g.name == "default"
                || g.tag(tags::NAME) == Some(build_group)
                || g.name == build_group
                || !self.old(created)
                || in_use.contains(g.id.as_str())
            {
                continue;
            }
            let reason = "security group of a build".to_string();
            self.push(
                Kind::SecurityGroup,
                &g.id,
                &g.name,
                Some(b),
                created,
                reason,
            );
        }
    }
}

/// Reads every region's inventory.
pub async fn inventory(project: &Project, session: &Session) -> Result<Vec<Inventory>, aws::Error> {
    let mut out = Vec::new();
    for region in project.settings.aws.regions() {
        let ec2 = session.ec2(region);
        out.push(Inventory {
            instances: ec2.live_instances().await?,
            images: ec2.describe_images(&["self".to_string()], &[]).await?,
            snapshots: ec2.snapshots_tagged(tags::ROLE).await?,
            volumes: ec2.detached_volumes_tagged(tags::BUILD).await?,
            key_pairs: ec2.key_pairs_named("imagectl-*").await?,
            groups: ec2.security_groups_tagged(tags::BUILD).await?,
            region: region.to_string(),
        });
    }
    Ok(out)
}

/// Finds the orphans of every region.
pub async fn find(
    project: &Project,
    session: &Session,
    mode: Mode,
    now: i64,
    older_than: Duration,
) -> Result<Vec<Orphan>, aws::Error> {
    let group = project
        .settings
        .aws
        .build_security_group
        .as_deref()
        .unwrap_or_default();
    let mut out = Vec::new();
    for inv in inventory(project, session).await? {
        out.extend(plan(&inv, mode, now, older_than, group));
    }
    Ok(out)
}

/// Removes the orphans, region by region in [`Kind`] order, and marks each
/// `removed` or `failed`. A failure does not stop the others, except what
/// depends on it: an image's snapshots stay when it could not be
/// deregistered. Returns the errors.
pub async fn remove(session: &Session, orphans: &mut [Orphan], wait: Duration) -> Vec<aws::Error> {
    orphans.sort_by(|a, b| (&a.region, a.kind).cmp(&(&b.region, b.kind)));
    let mut errors = Vec::new();
    let regions: BTreeSet<String> = orphans.iter().map(|o| o.region.clone()).collect();
    for region in regions {
        let ec2 = session.ec2(&region);
        let mut terminated = Vec::new();
        let mut failed_images = BTreeSet::new();
        for o in orphans.iter_mut().filter(|o| o.region == region) {
            // Instances go first; the rest waits until they are gone.
            if o.kind > Kind::Instance && !terminated.is_empty() {
                tracing::info!(
                    "waiting for {} instance(s) to terminate in {region}",
                    terminated.len()
                );
                if let Err(e) = ec2.wait_terminated(&terminated, wait).await {
                    errors.push(e);
                }
                terminated.clear();
            }
            if let Some(image) = &o.image {
                if failed_images.contains(image) {
                    o.status = Status::Failed;
                    o.error = Some(format!("its image {image} could not be deregistered"));
                    continue;
                }
            }
            tracing::info!(
                "removing {} {} in {region} ({})",
                o.kind.as_str(),
                o.id,
                o.reason
            );
            let result = match o.kind {
                Kind::Instance => ec2.terminate_instance(&o.id).await,
                Kind::Image => ec2.deregister_image(&o.id).await,
                Kind::Snapshot => ec2.delete_snapshot(&o.id).await,
                Kind::Volume => ec2.delete_volume(&o.id).await,
                Kind::KeyPair => ec2.delete_key_pair(&o.id).await,
                Kind::SecurityGroup => ec2.delete_security_group(&o.id).await,
            };
            match result {
                Ok(()) => {
                    o.status = Status::Removed;
                    if o.kind == Kind::Instance {
                        terminated.push(o.id.clone());
                    }
                }
                Err(e) => {
                    o.status = Status::Failed;
                    o.error = Some(e.to_string());
                    if o.kind == Kind::Image {
                        failed_images.insert(o.id.clone());
                    }
                    errors.push(e);
                }
            }
        }
        if !terminated.is_empty() {
            if let Err(e) = ec2.wait_terminated(&terminated, wait).await {
                errors.push(e);
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_690_494; // 2026-11-26 10:54:54
    const BUILD: &str = "0123456789ab-20261126080000";

    fn res(id: &str, name: &str, created: i64, tags: &[(&str, &str)]) -> Resource {
        Resource {
            id: id.into(),
            name: name.into(),
            state: "running".into(),
            created: Some(created),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            uses: Vec::new(),
        }
    }

    fn image(
        id: &str,
        name: &str,
        state: &str,
        tags: &[(&str, &str)],
        snaps: &[&str],
    ) -> ImageInfo {
        ImageInfo {
            id: id.into(),
            name: name.into(),
            owner: "123456789012".into(),
            arch: "x86_64".into(),
            created: "2026-11-26T08:00:00.000Z".into(),
            state: state.into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            snapshots: snaps.iter().map(|s| s.to_string()).collect(),
            imds_support: None,
            deprecation_time: None,
            deregistration_protection: None,
        }
    }

    #[test]
    fn names_of_builds() {
        assert_eq!(
            build_of_name("imagectl-app-0123456789ab-20261126080000", "imagectl-"),
            Some(BUILD)
        );
        assert_eq!(
            build_of_name(
                "imagectl-build-web-api-0123456789ab-20261126080000",
                "imagectl-build-"
            ),
            Some(BUILD)
        );
        for other in [
            "imagectl-notes",
            "imagectl--0123456789ab-20261126080000",
            "imagectl-app-0123456789AB-20261126080000",
            "imagectl-app-0123456789ab-2026112608000",
            "packer_6409a1f2-0000-4000-8000-000000000000",
            "my-imagectl-app-0123456789ab-20261126080000",
        ] {
            assert_eq!(build_of_name(other, "imagectl-"), None, "{other}");
        }
    }

    fn inventory() -> Inventory {
        let run = [("imagectl:role", "app"), ("imagectl:build", BUILD)];
        let full = [
            ("imagectl:role", "app"),
            ("imagectl:content-hash", "0123456789ab0000"),
            ("imagectl:build", BUILD),
        ];
        let mut left = res(
            "i-left",
            &format!("imagectl-build-app-{BUILD}"),
            NOW - 10_800,
            &run,
        );
        left.uses = vec!["ami-base".into(), format!("imagectl-app-{BUILD}")];
        let mut other = res("i-other", "web", NOW - 10_800, &[]);
        other.uses = vec![
            "ami-half".into(),
            "imagectl-app-0123456789ab-20200101000000".into(),
            "sg-used".into(),
        ];
        let young = res(
            "i-young",
            &format!("imagectl-build-app-{BUILD}"),
            NOW - 60,
            &run,
        );
        Inventory {
            region: "eu-west-1".into(),
            instances: vec![left, other, young],
            images: vec![
                image(
                    "ami-done",
                    &format!("imagectl-app-{BUILD}"),
                    "available",
                    &full,
                    &["snap-done"],
                ),
                image(
                    "ami-untagged",
                    &format!("imagectl-app-{BUILD}"),
                    "available",
                    &[],
                    &["snap-u"],
                ),
                image("ami-half", "imagectl-app-x", "available", &run, &["snap-h"]),
                image(
                    "ami-half2",
                    "imagectl-app-y",
                    "available",
                    &run,
                    &["snap-done"],
                ),
                image("ami-pending", "p", "pending", &full, &[]),
                image(
                    "ami-theirs",
                    "debian-12",
                    "available",
                    &[("team", "x")],
                    &["snap-t"],
                ),
            ],
            snapshots: vec![
                res("snap-done", "", NOW - 10_800, &full),
                res("snap-lost", "", NOW - 10_800, &full),
                res("snap-lost-young", "", NOW - 5, &full),
            ],
            volumes: vec![res("vol-1", "", NOW - 10_800, &run)],
            key_pairs: vec![
                res(
                    &format!("imagectl-app-{BUILD}"),
                    &format!("imagectl-app-{BUILD}"),
                    NOW - 10_800,
                    &[],
                ),
                res(
                    "imagectl-app-0123456789ab-20261126090000",
                    "imagectl-app-0123456789ab-20261126090000",
                    NOW - 10_800,
                    &[],
                ),
                res(
                    "imagectl-app-0123456789ab-20200101000000",
                    "imagectl-app-0123456789ab-20200101000000",
                    NOW - 10_800,
                    &[],
                ),
                res("imagectl-deploy", "imagectl-deploy", NOW - 10_800, &[]),
            ],
            groups: vec![
                res("sg-1", "packer_1", 0, &[("imagectl:build", BUILD)]),
                res("sg-used", "packer_2", 0, &[("imagectl:build", BUILD)]),
                res(
                    "sg-build",
                    "imagectl-build",
                    0,
                    &[("imagectl:build", BUILD), ("Name", "imagectl-build")],
                ),
                res("sg-default", "default", 0, &[("imagectl:build", BUILD)]),
            ],
        }
    }

    fn orphans(mode: Mode) -> Vec<(Kind, String, String)> {
        plan(
            &inventory(),
            mode,
            NOW,
            Duration::from_secs(7200),
            "imagectl-build",
        )
        .into_iter()
        .map(|o| (o.kind, o.id, o.reason))
        .collect()
    }

    fn owned(want: &[(Kind, &str, &str)]) -> Vec<(Kind, String, String)> {
        want.iter()
            .map(|(k, i, r)| (*k, i.to_string(), r.to_string()))
            .collect()
    }

    #[test]
    fn only_old_incomplete_unused_leftovers_are_orphans() {
        // What carries imagectl's tags, and the key pairs named after builds.
        assert_eq!(
            orphans(Mode::Tagged),
            owned(&[
                (Kind::Instance, "i-left", "build instance left running"),
                (
                    Kind::Image,
                    "ami-half2",
                    "half-tagged: no imagectl:content-hash",
                ),
                (Kind::Image, "ami-pending", "still pending"),
                (Kind::Snapshot, "snap-lost", "its image is gone"),
                (Kind::Volume, "vol-1", "build volume attached to nothing"),
                (
                    Kind::KeyPair,
                    "imagectl-app-0123456789ab-20261126080000",
                    "temporary key pair of a build",
                ),
                (
                    Kind::KeyPair,
                    "imagectl-app-0123456789ab-20261126090000",
                    "temporary key pair of a build",
                ),
                (Kind::SecurityGroup, "sg-1", "security group of a build"),
            ])
        );
        // Break-glass: the image a build never tagged, with its snapshot.
        assert_eq!(
            orphans(Mode::Untagged),
            owned(&[
                (
                    Kind::Image,
                    "ami-untagged",
                    "never tagged: the build died before completing it",
                ),
                (
                    Kind::Snapshot,
                    "snap-u",
                    "snapshot of orphan image ami-untagged",
                ),
            ])
        );
    }

    #[test]
    fn nothing_is_old_enough_with_a_long_threshold() {
        for mode in [Mode::Tagged, Mode::Untagged] {
            let got = plan(
                &inventory(),
                mode,
                NOW,
                Duration::from_secs(30 * 86400),
                "imagectl-build",
            );
            assert_eq!(got, Vec::new());
        }
    }
}
