//! What references each imagectl image (channels and their rollback
//! history, launch templates, instances), for `imagectl images`, and the
//! garbage collection that never removes an image still referenced.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::aws::{self, ImageInfo, Session};
use crate::build::tags;
use crate::project::Project;
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
    #[serde(skip)]
    infos: Vec<(String, ImageInfo)>,
}

/// Every imagectl image of `roles` (all when empty), with what references it.
pub async fn inventory(
    project: &Project,
    session: &Session,
    roles: &[String],
) -> Result<Vec<Image>, aws::Error> {
    let settings = &project.settings;
    let regions = publish::regions(project);
    let mut images: BTreeMap<(String, String), Image> = BTreeMap::new();
    for region in &regions {
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
                    infos: Vec::new(),
                });
            if region == &settings.aws.region || info.created < entry.created {
                entry.created = info.created.clone();
            }
            entry.amis.insert(region.clone(), info.id.clone());
            entry.infos.push((region.clone(), info));
        }
    }
    let by_ami: BTreeMap<(String, String), (String, String)> = images
        .values()
        .flat_map(|i| {
            i.amis
                .iter()
                .map(move |(r, a)| ((r.clone(), a.clone()), (i.role.clone(), i.build.clone())))
        })
        .collect();
    let mut refs: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let mut note = |region: &str, ami: &str, why: String| {
        if let Some(key) = by_ami.get(&(region.to_string(), ami.to_string())) {
            refs.entry(key.clone()).or_default().insert(why);
        }
    };

    let role_names: BTreeSet<String> = images.keys().map(|(r, _)| r.clone()).collect();
    let depth = settings.publish.rollback_depth as usize;
    for region in &regions {
        let ssm = session.ssm(region);
        // Current values: one paged call per region for every channel.
        let current = ssm.by_path(&settings.publish.prefix).await?;
        for (name, ami) in &current {
            note(region, ami, format!("channel {name} (current)"));
        }
        // What rollback could restore: the last `rollback_depth` earlier values.
        for role in &role_names {
            for channel in &settings.publish.channels {
                let name = publish::parameter(project, role, channel);
                if !current.contains_key(&name) {
                    continue;
                }
                let values = publish::distinct_values(&ssm.history(&name).await?);
                for ami in values.iter().rev().skip(1).take(depth) {
                    note(region, ami, format!("channel {name} (rollback)"));
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
                for (which, v) in [("default", t.default_version), ("latest", t.latest_version)] {
                    if let Some(ami) = t.images.get(&v) {
                        note(region, ami, format!("launch template {lt} v{v} ({which})"));
                    }
                }
            }
        }
        let ids: Vec<String> = by_ami
            .keys()
            .filter(|(r, _)| r == region)
            .map(|(_, a)| a.clone())
            .collect();
        for ami in ec2.images_in_use(&ids).await? {
            note(region, &ami, format!("instances in {region}"));
        }
    }
    let mut out: Vec<Image> = images
        .into_iter()
        .map(|(key, mut img)| {
            img.references = refs
                .remove(&key)
                .map(|s| s.into_iter().collect())
                .unwrap_or_default();
            img
        })
        .collect();
    out.sort_by(|a, b| (&a.role, &b.created).cmp(&(&b.role, &a.created)));
    Ok(out)
}

/// The decision about one image.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The image.
    #[serde(flatten)]
    pub image: Image,
    /// `keep` or `delete`.
    pub action: &'static str,
    /// Why.
    pub reason: String,
}

/// Decides, per role, which images go: all but the `keep` newest, except
/// those still referenced.
pub fn plan(images: Vec<Image>, keep: usize) -> Vec<Decision> {
    let mut by_role: BTreeMap<String, Vec<Image>> = BTreeMap::new();
    for i in images {
        by_role.entry(i.role.clone()).or_default().push(i);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_role {
        list.sort_by(|a, b| b.created.cmp(&a.created).then(b.hash.cmp(&a.hash)));
        for (n, image) in list.into_iter().enumerate() {
            let (action, reason) = if n < keep {
                ("keep", format!("among the {keep} newest"))
            } else if !image.references.is_empty() {
                (
                    "keep",
                    format!("referenced: {}", image.references.join("; ")),
                )
            } else {
                (
                    "delete",
                    "older than the newest and referenced by nothing".to_string(),
                )
            };
            out.push(Decision {
                image,
                action,
                reason,
            });
        }
    }
    out
}

/// Deregisters every image marked `delete`, with its snapshots, in every region.
pub async fn delete(session: &Session, decisions: &[Decision]) -> Result<(), aws::Error> {
    for d in decisions.iter().filter(|d| d.action == "delete") {
        for (region, info) in &d.image.infos {
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
        let got: Vec<(&str, &str)> = decisions
            .iter()
            .map(|d| (d.image.hash.as_str(), d.action))
            .collect();
        assert_eq!(
            got,
            [
                ("d", "keep"),
                ("c", "delete"),
                ("b", "keep"),
                ("a", "delete"),
                ("e", "keep")
            ]
        );
        assert!(decisions[2].reason.contains("/imagectl/web/prod"));
    }
}
