//! What references each imagectl image (channels and their rollback
//! history, launch templates, instances), for `imagectl images`, and the
//! garbage collection that never removes an image still referenced.
//!
//! Publishing protects the images of `[publish] protect_channels` from
//! deregistration (see `publish/lifecycle.rs`); prune lifts that protection
//! from an image it deletes, which it only does to one nothing references,
//! and never touches the protection of an image it keeps.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use imagectl_core::names::tags;
use imagectl_core::project::Project;

use crate::aws::{self, ImageInfo, Session};
use crate::publish;

/// One image: one build of a role, in every region it was copied to.
#[derive(Debug, Clone, Serialize)]
pub struct Image {
    /// The role.
    pub role: String,
    /// The content hash.
    pub hash: String,
    /// The build that made it (`--force` builds the same hash again).
    pub build: String,
    /// Creation time of the home region's image (or the oldest copy).
    pub created: String,
    /// AMI per region.
    pub amis: BTreeMap<String, String>,
    /// Why it must stay: `channel dev (current)`, `launch template x v3
    /// (default)`, `instance i-... in eu-west-1`, ...
    pub references: Vec<String>,
    /// Per region, when the image is (or was) deprecated, as EC2 reports
    /// it; regions without a deprecation time are left out.
    pub deprecation_time: BTreeMap<String, String>,
    /// Per region, its deregistration protection as EC2 reports it
    /// (`disabled`, `enabled-without-cooldown`, ...).
    pub deregistration_protection: BTreeMap<String, String>,
    /// SHA-256 of the disk image it was registered from (`--method disk`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_sha256: Option<String>,
    #[serde(skip)]
    infos: Vec<(String, ImageInfo)>,
}

impl Image {
    /// The regions where the image is protected from deregistration.
    pub fn protected_in(&self) -> Vec<String> {
        self.infos
            .iter()
            .filter(|(_, i)| i.protected())
            .map(|(r, _)| r.clone())
            .collect()
    }
}

/// Images by (role, build).
type Images = BTreeMap<(String, String), Image>;

/// Every imagectl image of `roles` (all when empty), with what references it.
pub async fn inventory(
    project: &Project,
    session: &Session,
    roles: &[String],
) -> Result<Vec<Image>, aws::Error> {
    let mut images = collect(project, session, roles).await?;
    let mut refs = References::of(&images);
    for region in project.settings.aws.regions() {
        refs.in_region(project, session, region).await?;
    }
    let mut out: Vec<Image> = images
        .iter_mut()
        .map(|(key, img)| {
            img.references = refs
                .found
                .remove(key)
                .map(|s| s.into_iter().collect())
                .unwrap_or_default();
            img.clone()
        })
        .collect();
    out.sort_by(|a, b| (&a.role, &b.created).cmp(&(&b.role, &a.created)));
    Ok(out)
}

/// Every imagectl image of `roles` in every region, one per build.
async fn collect(
    project: &Project,
    session: &Session,
    roles: &[String],
) -> Result<Images, aws::Error> {
    let home = &project.settings.aws.region;
    let mut images = Images::new();
    for region in project.settings.aws.regions() {
        for info in session.ec2(region).imagectl_images(roles).await? {
            let (Some(role), Some(hash)) = (info.tag(tags::ROLE), info.tag(tags::HASH)) else {
                continue;
            };
            // Copies carry their build's tag; an untagged one stands alone.
            let build = info
                .tag(tags::BUILD)
                .map_or_else(|| format!("{region}/{}", info.id), String::from);
            let entry = images
                .entry((role.to_string(), build.clone()))
                .or_insert_with(|| Image {
                    role: role.to_string(),
                    hash: hash.to_string(),
                    build: build.clone(),
                    created: info.created.clone(),
                    amis: BTreeMap::new(),
                    references: Vec::new(),
                    deprecation_time: BTreeMap::new(),
                    deregistration_protection: BTreeMap::new(),
                    disk_sha256: None,
                    infos: Vec::new(),
                });
            if entry.disk_sha256.is_none() {
                entry.disk_sha256 = info.tag(tags::DISK).map(str::to_string);
            }
            if region == home || info.created < entry.created {
                entry.created = info.created.clone();
            }
            entry.amis.insert(region.to_string(), info.id.clone());
            if let Some(t) = &info.deprecation_time {
                entry.deprecation_time.insert(region.to_string(), t.clone());
            }
            if let Some(p) = &info.deregistration_protection {
                entry
                    .deregistration_protection
                    .insert(region.to_string(), p.clone());
            }
            entry.infos.push((region.to_string(), info));
        }
    }
    Ok(images)
}

/// What references each image, as found so far.
struct References {
    /// (region, AMI) → the image's key.
    by_ami: BTreeMap<(String, String), (String, String)>,
    /// The roles with images.
    roles: BTreeSet<String>,
    /// The image's key → why it must stay.
    found: BTreeMap<(String, String), BTreeSet<String>>,
}

impl References {
    fn of(images: &Images) -> References {
        let by_ami = images
            .values()
            .flat_map(|i| {
                i.amis
                    .iter()
                    .map(move |(r, a)| ((r.clone(), a.clone()), (i.role.clone(), i.build.clone())))
            })
            .collect();
        References {
            by_ami,
            roles: images.keys().map(|(r, _)| r.clone()).collect(),
            found: BTreeMap::new(),
        }
    }

    fn note(&mut self, region: &str, ami: &str, why: String) {
        if let Some(key) = self.by_ami.get(&(region.to_string(), ami.to_string())) {
            self.found.entry(key.clone()).or_default().insert(why);
        }
    }

    /// Channels (current values and what rollback could restore), launch
    /// templates and instances in `region`.
    async fn in_region(
        &mut self,
        project: &Project,
        session: &Session,
        region: &str,
    ) -> Result<(), aws::Error> {
        let settings = &project.settings;
        let ssm = session.ssm(region);
        // Current values: one paged call per region for every channel.
        let current = ssm.by_path(&settings.publish.prefix).await?;
        for (name, ami) in &current {
            self.note(region, ami, format!("channel {name} (current)"));
        }
        // What rollback could restore: the last `rollback_depth` earlier values.
        let depth = settings.publish.rollback_depth as usize;
        let roles: Vec<String> = self.roles.iter().cloned().collect();
        for role in &roles {
            for channel in &settings.publish.channels {
                let name = publish::parameter(project, role, channel);
                if !current.contains_key(&name) {
                    continue;
                }
                let values = publish::distinct_values(&ssm.history(&name).await?);
                for ami in values.iter().rev().skip(1).take(depth) {
                    self.note(region, ami, format!("channel {name} (rollback)"));
                }
            }
        }
        let ec2 = session.ec2(region);
        let templates: BTreeSet<&String> = settings
            .publish
            .launch_templates
            .values()
            .flat_map(|m| m.values())
            .collect();
        for lt in templates {
            if let Some(t) = ec2.launch_template(lt).await? {
                for (ami, why) in template_references(&t, &current) {
                    self.note(region, &ami, why);
                }
            }
        }
        let ids: Vec<String> = self
            .by_ami
            .keys()
            .filter(|(r, _)| r == region)
            .map(|(_, a)| a.clone())
            .collect();
        for ami in ec2.images_in_use(&ids).await? {
            self.note(region, &ami, format!("instances in {region}"));
        }
        Ok(())
    }
}

/// The images a launch template's default and latest versions launch, one
/// reference per image (`launch template lt v3 (default, latest)`): a
/// version that resolves a channel parameter launches what `current` (the
/// region's channel values) holds.
fn template_references(
    t: &aws::LaunchTemplate,
    current: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut versions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut both = vec![(t.default_version, "default")];
    if t.latest_version != t.default_version {
        both.push((t.latest_version, "latest"));
    } else {
        both[0].1 = "default, latest";
    }
    for (v, which) in both {
        let (ami, via) = match t.source(v) {
            aws::Source::Ami(ami) => (ami.to_string(), String::new()),
            aws::Source::Parameter {
                name,
                selector: None,
                ..
            } => match current.get(name) {
                Some(ami) => (ami.clone(), format!(", resolves {name}")),
                None => continue,
            },
            _ => continue,
        };
        versions
            .entry(ami)
            .or_default()
            .push(format!("v{v} ({which}{via})"));
    }
    versions
        .into_iter()
        .map(|(ami, vs)| (ami, format!("launch template {} {}", t.name, vs.join(", "))))
        .collect()
}

/// What `prune` does with an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It stays.
    Keep,
    /// It is deregistered, with its snapshots, in every region.
    Delete,
}

/// The decision about one image.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The image.
    #[serde(flatten)]
    pub image: Image,
    /// What happens to it.
    pub action: Action,
    /// Why.
    pub reason: String,
    /// The regions where its deregistration protection is lifted before it
    /// is deleted (only ever for an image deleted, which nothing references).
    pub lift_protection: Vec<String>,
}

/// Decides, per role, which images go: all but the `keep` newest, except
/// those still referenced, and an image protected with a cooldown (which
/// imagectl never sets), since deregistering it would fail for a day.
pub fn plan(images: Vec<Image>, keep: usize) -> Vec<Decision> {
    let mut by_role: BTreeMap<String, Vec<Image>> = BTreeMap::new();
    for i in images {
        by_role.entry(i.role.clone()).or_default().push(i);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_role {
        list.sort_by(|a, b| b.created.cmp(&a.created).then(b.hash.cmp(&a.hash)));
        for (n, image) in list.into_iter().enumerate() {
            // Protected, but not as imagectl protects: with a cooldown.
            let cooldown: Vec<String> = image
                .infos
                .iter()
                .filter(|(_, i)| {
                    i.protected()
                        && i.deregistration_protection.as_deref()
                            != Some("enabled-without-cooldown")
                })
                .map(|(r, i)| {
                    format!(
                        "{r} {}",
                        i.deregistration_protection.as_deref().unwrap_or_default()
                    )
                })
                .collect();
            let (action, reason) = if n < keep {
                (Action::Keep, format!("among the {keep} newest"))
            } else if !image.references.is_empty() {
                (
                    Action::Keep,
                    format!("referenced: {}", image.references.join("; ")),
                )
            } else if !cooldown.is_empty() {
                (
                    Action::Keep,
                    format!(
                        "referenced by nothing, but deregistration protection with a cooldown holds it ({}), which imagectl never sets: prune deletes it once that protection is disabled and its 24-hour cooldown is over",
                        cooldown.join(", ")
                    ),
                )
            } else {
                (
                    Action::Delete,
                    format!("older than the {keep} newest and referenced by nothing"),
                )
            };
            let lift_protection = match action {
                Action::Delete => image.protected_in(),
                Action::Keep => Vec::new(),
            };
            out.push(Decision {
                image,
                action,
                reason,
                lift_protection,
            });
        }
    }
    out
}

/// Why prune may lift an image's protection: `no longer held by prod or
/// its rollback history`, for `protect_channels`.
pub fn why_unprotected(protect_channels: &[String]) -> String {
    match protect_channels {
        [] => "no longer held by any channel or its rollback history".to_string(),
        [one] => format!("no longer held by {one} or its rollback history"),
        many => format!(
            "no longer held by {} or their rollback history",
            many.join(" or ")
        ),
    }
}

/// Deregisters every image marked `delete`, with its snapshots, in every
/// region, lifting its deregistration protection first where it has one.
pub async fn delete(
    session: &Session,
    decisions: &[Decision],
    protect_channels: &[String],
) -> Result<(), aws::Error> {
    for d in decisions.iter().filter(|d| d.action == Action::Delete) {
        for (region, info) in &d.image.infos {
            if d.lift_protection.contains(region) {
                tracing::info!(
                    "{}: lifting the deregistration protection of {} in {region}: {}",
                    d.image.role,
                    info.id,
                    why_unprotected(protect_channels)
                );
                session.ec2(region).unprotect(&info.id).await?;
            }
            tracing::info!(
                "{}: deregistering {} in {region} and deleting its snapshots",
                d.image.role,
                info.id
            );
            session.ec2(region).delete_image(info).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(role: &str, hash: &str, created: &str, refs: &[&str]) -> Image {
        Image {
            role: role.into(),
            hash: hash.into(),
            build: hash.into(),
            created: created.into(),
            amis: BTreeMap::new(),
            references: refs.iter().map(|s| s.to_string()).collect(),
            deprecation_time: BTreeMap::new(),
            deregistration_protection: BTreeMap::new(),
            disk_sha256: None,
            infos: Vec::new(),
        }
    }

    #[test]
    fn keeps_the_newest_and_everything_referenced() {
        let decisions = plan(
            vec![
                image("web", "a", "2026-01-01", &[]),
                image(
                    "web",
                    "b",
                    "2026-02-01",
                    &["channel /imagectl/web/prod (current)"],
                ),
                image("web", "c", "2026-03-01", &[]),
                image("web", "d", "2026-04-01", &[]),
                image("worker", "e", "2026-01-01", &[]),
            ],
            1,
        );
        let got: Vec<(&str, Action)> = decisions
            .iter()
            .map(|d| (d.image.hash.as_str(), d.action))
            .collect();
        assert_eq!(
            got,
            [
                ("d", Action::Keep),
                ("c", Action::Delete),
                ("b", Action::Keep),
                ("a", Action::Delete),
                ("e", Action::Keep)
            ]
        );
        assert!(decisions[2].reason.contains("/imagectl/web/prod"));
    }

    fn info(region: &str, protection: &str) -> (String, ImageInfo) {
        let i = ImageInfo {
            id: format!("ami-{region}"),
            name: "n".into(),
            owner: "123456789012".into(),
            arch: "x86_64".into(),
            created: "2026-01-01T00:00:00.000Z".into(),
            state: "available".into(),
            tags: BTreeMap::new(),
            snapshots: Vec::new(),
            imds_support: None,
            deprecation_time: None,
            deregistration_protection: Some(protection.into()),
        };
        (region.to_string(), i)
    }

    #[test]
    fn protection_is_lifted_only_from_what_is_deleted() {
        let with = |hash, created, refs: &[&str], states: [&str; 2]| {
            let mut i = image("web", hash, created, refs);
            i.infos = vec![
                info("eu-west-1", states[0]),
                info("eu-central-1", states[1]),
            ];
            i
        };
        let p = "enabled-without-cooldown";
        let decisions = plan(
            vec![
                with("new", "2026-04-01", &[], [p, p]),
                with(
                    "held",
                    "2026-03-01",
                    &["channel /imagectl/web/prod (rollback)"],
                    [p, p],
                ),
                with("old", "2026-02-01", &[], [p, "disabled"]),
                with(
                    "cool",
                    "2026-01-01",
                    &[],
                    ["disabled", "disabled-until 2026-01-02T00:00:00.000Z"],
                ),
            ],
            1,
        );
        let got: Vec<(&str, Action, Vec<String>)> = decisions
            .iter()
            .map(|d| (d.image.hash.as_str(), d.action, d.lift_protection.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("new", Action::Keep, vec![]),
                ("held", Action::Keep, vec![]),
                ("old", Action::Delete, vec!["eu-west-1".to_string()]),
                ("cool", Action::Keep, vec![]),
            ]
        );
        assert!(
            decisions[3]
                .reason
                .contains("eu-central-1 disabled-until 2026-01-02T00:00:00.000Z")
                && !decisions[3].reason.contains("; "),
            "{}",
            decisions[3].reason
        );
        assert_eq!(
            why_unprotected(&["prod".to_string()]),
            "no longer held by prod or its rollback history"
        );
    }

    #[test]
    fn a_launch_template_references_each_image_once() {
        let lt = |default, latest, images: &[(i64, &str)]| aws::LaunchTemplate {
            id: "lt-0".into(),
            name: "app-prod".into(),
            default_version: default,
            latest_version: latest,
            images: images.iter().map(|(v, i)| (*v, i.to_string())).collect(),
            tags: BTreeMap::new(),
        };
        let current = BTreeMap::from([("/imagectl/app/prod".to_string(), "ami-c".to_string())]);
        let refs = |t| {
            template_references(&t, &current)
                .into_iter()
                .collect::<Vec<_>>()
        };
        let r = |ami: &str, why: &str| (ami.to_string(), why.to_string());
        assert_eq!(
            refs(lt(2, 2, &[(1, "ami-a"), (2, "ami-b")])),
            [r("ami-b", "launch template app-prod v2 (default, latest)")]
        );
        assert_eq!(
            refs(lt(2, 3, &[(2, "ami-b"), (3, "ami-b")])),
            [r(
                "ami-b",
                "launch template app-prod v2 (default), v3 (latest)"
            )]
        );
        assert_eq!(
            refs(lt(
                1,
                2,
                &[(1, "resolve:ssm:/imagectl/app/prod"), (2, "ami-b")]
            )),
            [
                r("ami-b", "launch template app-prod v2 (latest)"),
                r(
                    "ami-c",
                    "launch template app-prod v1 (default, resolves /imagectl/app/prod)"
                ),
            ]
        );
    }
}
