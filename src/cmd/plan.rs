//! `imagectl plan`: which roles need an image built, and why.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;

use crate::build::{self, tags, Target};
use crate::cli::{OutputFormat, PlanArgs};
use crate::{aws, hash, publish, record, Config, Error};

/// One role in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The role.
    pub role: String,
    /// Its content hash.
    pub hash: String,
    /// `build` or `up-to-date`.
    pub status: &'static str,
    /// Why it needs building.
    pub reasons: Vec<String>,
    /// The image with this hash, per region (home region), if any.
    pub amis: BTreeMap<String, String>,
    /// What each channel holds in the home region, for the roles to build
    /// that were built before (the plan reads no more than it needs).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, String>,
}

/// The parameter holding the inputs of the build of `hash`, beside the
/// role's channels, so a later plan can say what changed (see README).
pub fn inputs_parameter(prefix: &str, role: &str, hash: &str) -> String {
    format!("{prefix}/{role}/inputs/{hash}")
}

/// Prints the plan.
pub fn run(config: &Config, args: &PlanArgs) -> Result<(), Error> {
    let project = config.project()?;
    let (_, targets) = crate::load_targets(&project, &args.roles)?;
    let rows = if args.offline {
        offline(&project, &targets)?
    } else {
        let rt = aws::runtime().map_err(|e| Error::Failed(e.into()))?;
        rt.block_on(online(&project, &targets))
            .map_err(|e| Error::Failed(e.into()))?
    };

    match (args.format.as_deref(), config.output) {
        (Some(_), _) => {
            let include: Vec<_> = rows
                .iter()
                .filter(|r| r.status == "build")
                .map(|r| json!({"role": r.role}))
                .collect();
            println!("{}", json!({ "include": include }));
        }
        (None, OutputFormat::Json) => crate::print_json(&json!({ "roles": rows })),
        (None, OutputFormat::Text) => {
            println!("{:<12} {:<12} {:<10} REASONS", "ROLE", "HASH", "STATUS");
            for r in &rows {
                let why = if r.reasons.is_empty() {
                    "-".to_string()
                } else {
                    r.reasons.join("; ")
                };
                println!(
                    "{:<12} {:<12} {:<10} {why}",
                    r.role,
                    &r.hash[..12],
                    r.status
                );
            }
        }
    }
    crate::summary::append_plan(&rows);
    if args.detailed_exitcode && rows.iter().any(|r| r.status == "build") {
        return Err(Error::Exit(2));
    }
    Ok(())
}

fn offline(project: &crate::project::Project, targets: &[Target]) -> Result<Vec<Row>, Error> {
    let records = record::load(&project.root).map_err(|e| Error::Failed(e.into()))?;
    Ok(targets
        .iter()
        .map(|t| {
            let found = record::find(&records, &t.role.name, &t.hash.hash);
            Row {
                role: t.role.name.clone(),
                hash: t.hash.hash.clone(),
                status: if found.is_some() {
                    "up-to-date"
                } else {
                    "build"
                },
                reasons: if found.is_some() {
                    vec![]
                } else {
                    vec!["no build of this hash in the local record".into()]
                },
                amis: found
                    .map(|r| BTreeMap::from([(r.target.clone(), r.artifact.clone())]))
                    .unwrap_or_default(),
                channels: BTreeMap::new(),
            }
        })
        .collect())
}

/// Against AWS: one DescribeImages for every role's images, then, for the
/// roles to build that were built before, GetParameters (ten names a call)
/// for their channels and recorded inputs, to say what changed.
async fn online(
    project: &crate::project::Project,
    targets: &[Target],
) -> Result<Vec<Row>, aws::Error> {
    let settings = &project.settings;
    let home = &settings.aws.region;
    let session = aws::Session::load(home).await;
    let ec2 = session.ec2(home);
    let ssm = session.ssm(home);
    let roles: Vec<String> = targets.iter().map(|t| t.role.name.clone()).collect();
    let images = build::role_images(&ec2, &roles).await?;
    let existing = build::existing_of(&images, targets);

    // Only the roles to build that were built before need more: what their
    // channels hold, and the inputs recorded for the hash the first channel
    // (dev) holds, to say what changed. Unchanged and new roles cost no
    // further call, so the plan's calls grow with the changes, not the roles.
    let first = settings
        .publish
        .channels
        .first()
        .cloned()
        .unwrap_or_default();
    let changed: Vec<&Target> = targets
        .iter()
        .filter(|t| !existing.contains_key(&t.role.name))
        .filter(|t| {
            images
                .iter()
                .any(|i| i.tag(tags::ROLE) == Some(&t.role.name))
        })
        .collect();
    let mut names = Vec::new();
    for t in &changed {
        for c in &settings.publish.channels {
            names.push(publish::parameter(project, &t.role.name, c));
        }
    }
    let values = ssm.get_many(&names).await?;
    let channels = |role: &str| -> BTreeMap<String, String> {
        settings
            .publish
            .channels
            .iter()
            .filter_map(|c| {
                values
                    .get(&publish::parameter(project, role, c))
                    .map(|v| (c.clone(), v.clone()))
            })
            .collect()
    };
    let mut dev_hash = BTreeMap::new();
    for t in &changed {
        if let Some(ami) = channels(&t.role.name).get(&first) {
            if let Some(h) = images
                .iter()
                .find(|i| &i.id == ami)
                .and_then(|i| i.tag(tags::HASH))
            {
                dev_hash.insert(t.role.name.clone(), h.to_string());
            }
        }
    }
    let record_names: Vec<String> = dev_hash
        .iter()
        .map(|(role, h)| inputs_parameter(&settings.publish.prefix, role, h))
        .collect();
    let records = ssm.get_many(&record_names).await?;

    Ok(targets
        .iter()
        .map(|t| {
            let role = &t.role.name;
            let (status, reasons, amis) = match existing.get(role) {
                Some(image) => ("up-to-date", vec![], BTreeMap::from([(home.clone(), image.id.clone())])),
                None => {
                    let reasons = match dev_hash.get(role) {
                        None if !changed.iter().any(|c| &c.role.name == role) => vec!["no image of this role yet".to_string()],
                        None => vec![format!("no image has hash {}, and channel `{first}` holds none to compare with", t.hash.short())],
                        Some(h) => match records.get(&inputs_parameter(&settings.publish.prefix, role, h)) {
                            Some(rec) => {
                                let mut changes = t.hash.changes_since(rec);
                                if changes.is_empty() {
                                    changes.push(format!("no image has hash {}", t.hash.short()));
                                }
                                changes.iter().map(|c| format!("{c} (since {first} {})", &h[..12.min(h.len())])).collect()
                            }
                            None => vec![format!(
                                "no image has hash {}; the inputs of channel `{first}`'s image ({}) were not recorded",
                                t.hash.short(),
                                &h[..12.min(h.len())]
                            )],
                        },
                    };
                    ("build", reasons, BTreeMap::new())
                }
            };
            Row { role: role.clone(), hash: t.hash.hash.clone(), status, reasons, amis, channels: channels(role) }
        })
        .collect())
}

/// Writes the inputs of a build next to its role's channels.
pub async fn record_inputs(
    project: &crate::project::Project,
    session: &aws::Session,
    h: &hash::ContentHash,
) -> Result<(), aws::Error> {
    let name = inputs_parameter(&project.settings.publish.prefix, &h.role, &h.hash);
    session
        .ssm(&project.settings.aws.region)
        .put_string(&name, &h.record())
        .await
}
