//! What needs building, and why: each target against the images AWS has
//! (or, offline, the local build record), with the reasons a role must be
//! built in words (what changed since the image its first channel holds),
//! and, for a role that is up to date, the channels that hold another
//! build of it (after a rollback, say).

use std::collections::BTreeMap;

use imagectl_core::hash::{self, Hash};
use imagectl_core::names::{channel_parameter, inputs_parameter, tags};
use imagectl_core::project::Project;
use imagectl_core::record;
use imagectl_core::role::Method;
use imagectl_core::target::Target;
use serde::Serialize;

use crate::artifacts;
use crate::aws::{self, ImageInfo, Session};
use crate::inputs;

/// Whether a role needs an image built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// No image has its hash.
    Build,
    /// An image has its hash.
    UpToDate,
}

impl Status {
    /// The name in tables (`up-to-date`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Build => "build",
            Status::UpToDate => "up-to-date",
        }
    }
}

/// One role in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The role.
    pub role: String,
    /// Its content hash.
    pub hash: Hash,
    /// How its image is made (`packer` or `disk`): CI's build job installs
    /// the disk target's tools and runs as root for `disk`.
    pub method: Method,
    /// Whether it needs building.
    pub status: Status,
    /// Why it needs building.
    pub reasons: Vec<String>,
    /// For a role that needs no build: the channels holding another build
    /// than this hash's image, and how to move them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The image with this hash, per region (home region), if any.
    pub amis: BTreeMap<String, String>,
    /// What each channel holds in the home region, for the roles built
    /// before (a role never built has no channel to read).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, String>,
}

/// The plan from the local build record (`.imagectl/builds.json`).
pub fn offline(project: &Project, targets: &[Target]) -> Result<Vec<Row>, record::Error> {
    let records = record::load(&project.root)?;
    Ok(targets
        .iter()
        .map(|t| {
            let found = record::find(&records, t.name(), t.hash.hash.as_str());
            Row {
                role: t.name().to_string(),
                hash: t.hash.hash.clone(),
                method: t.role.image.method,
                status: if found.is_some() {
                    Status::UpToDate
                } else {
                    Status::Build
                },
                reasons: if found.is_some() {
                    vec![]
                } else {
                    offline_reasons(&records, t)
                },
                notes: vec![],
                amis: found
                    .map(|r| BTreeMap::from([(r.target.as_str().to_string(), r.artifact.clone())]))
                    .unwrap_or_default(),
                channels: BTreeMap::new(),
            }
        })
        .collect())
}

/// Why `t` has no build in the local record: what changed since the
/// newest build of the role that recorded its inputs, if any.
fn offline_reasons(records: &[record::Record], t: &Target) -> Vec<String> {
    let previous = record::latest_with_inputs(records, t.name());
    let changes = previous
        .and_then(|r| r.inputs.as_deref().map(|i| (r, t.hash.changes_since(i))))
        .filter(|(_, c)| !c.is_empty());
    match changes {
        Some((r, c)) => c
            .into_iter()
            .map(|c| format!("{c} (since local build {})", hash::short(&r.hash)))
            .collect(),
        None => vec!["no build of this hash in the local record".into()],
    }
}

/// What AWS says about the roles that were built before: what their
/// channels hold and, for those to build, the hash the first channel's
/// image has and the inputs recorded for that hash.
struct History {
    /// The first channel (`dev`), the one changes are compared against.
    first: String,
    /// Roles with images, none of them of the current hash.
    changed: Vec<String>,
    /// Parameter name → value, for the channels of the roles with images.
    channels: BTreeMap<String, String>,
    /// Role → the hash of the image its first channel holds.
    first_hash: BTreeMap<String, String>,
    /// Inputs parameter name → recorded inputs.
    records: BTreeMap<String, String>,
}

/// Against AWS: one DescribeImages for every role's images, then, for the
/// roles built before, GetParameters (ten names a call) for their channels
/// (to say which hold another build), and for the roles to build the
/// recorded inputs of what their first channel holds, to say what changed.
/// New roles cost no further call.
pub async fn online(
    project: &Project,
    session: &Session,
    targets: &[Target],
) -> Result<Vec<Row>, aws::Error> {
    let home = &project.settings.aws.region;
    let roles: Vec<String> = targets.iter().map(|t| t.name().to_string()).collect();
    let images = artifacts::role_images(&session.ec2(home), &roles).await?;
    let existing = artifacts::existing_of(&images, targets);
    let history = history(project, session, targets, &images, &existing).await?;
    Ok(targets
        .iter()
        .map(|t| match existing.get(t.name()) {
            Some(image) => Row {
                role: t.name().to_string(),
                hash: t.hash.hash.clone(),
                method: t.role.image.method,
                status: Status::UpToDate,
                reasons: vec![],
                notes: history.notes(project, t, image, &images),
                amis: BTreeMap::from([(home.clone(), image.id.clone())]),
                channels: history.channels_of(project, t.name()),
            },
            None => Row {
                role: t.name().to_string(),
                hash: t.hash.hash.clone(),
                method: t.role.image.method,
                status: Status::Build,
                reasons: history.reasons(project, t),
                notes: vec![],
                amis: BTreeMap::new(),
                channels: history.channels_of(project, t.name()),
            },
        })
        .collect())
}

async fn history(
    project: &Project,
    session: &Session,
    targets: &[Target],
    images: &[ImageInfo],
    existing: &BTreeMap<String, ImageInfo>,
) -> Result<History, aws::Error> {
    let settings = &project.settings;
    let ssm = session.ssm(&settings.aws.region);
    let first = settings
        .publish
        .channels
        .first()
        .cloned()
        .unwrap_or_default();
    let built: Vec<String> = targets
        .iter()
        .map(|t| t.name().to_string())
        .filter(|r| images.iter().any(|i| i.tag(tags::ROLE) == Some(r)))
        .collect();
    let changed: Vec<String> = built
        .iter()
        .filter(|r| !existing.contains_key(*r))
        .cloned()
        .collect();
    let names: Vec<String> = built
        .iter()
        .flat_map(|r| {
            settings
                .publish
                .channels
                .iter()
                .map(move |c| channel_parameter(&settings.publish.prefix, r, c))
        })
        .collect();
    let channels = ssm.get_many(&names).await?;
    let mut first_hash = BTreeMap::new();
    for role in &changed {
        let held = channels.get(&channel_parameter(&settings.publish.prefix, role, &first));
        let hash = held
            .and_then(|ami| images.iter().find(|i| &i.id == ami))
            .and_then(|i| i.tag(tags::HASH));
        if let Some(h) = hash {
            first_hash.insert(role.clone(), h.to_string());
        }
    }
    let builds: Vec<(String, String)> = first_hash
        .iter()
        .map(|(r, h)| (r.clone(), h.clone()))
        .collect();
    let records = inputs::read(project, &ssm, &builds).await?;
    Ok(History {
        first,
        changed,
        channels,
        first_hash,
        records,
    })
}

impl History {
    /// What each channel of `role` holds, as far as it was read.
    fn channels_of(&self, project: &Project, role: &str) -> BTreeMap<String, String> {
        let p = &project.settings.publish;
        p.channels
            .iter()
            .filter_map(|c| {
                self.channels
                    .get(&channel_parameter(&p.prefix, role, c))
                    .map(|v| (c.clone(), v.clone()))
            })
            .collect()
    }

    /// What the channels of `t` hold other than `current`, its hash's
    /// image, in channel order: an older build (after a rollback, or not
    /// yet promoted) with the command that moves the channel, a newer one,
    /// or an image that is not one of the role's.
    fn notes(
        &self,
        project: &Project,
        t: &Target,
        current: &ImageInfo,
        images: &[ImageInfo],
    ) -> Vec<String> {
        let p = &project.settings.publish;
        let role = t.name();
        let mut holds_current: Option<&str> = None;
        let mut out = Vec::new();
        for c in &p.channels {
            let Some(ami) = self.channels.get(&channel_parameter(&p.prefix, role, c)) else {
                continue;
            };
            let Some(image) = images.iter().find(|i| &i.id == ami) else {
                out.push(format!("`{c}` holds {ami}, no available image of `{role}`"));
                continue;
            };
            let held = hash::short(image.tag(tags::HASH).unwrap_or_default());
            if image.tag(tags::HASH) == Some(t.hash.hash.as_str()) {
                holds_current.get_or_insert(c);
            } else if image.created > current.created {
                out.push(format!("`{c}` holds a newer build ({ami}, hash {held})"));
            } else {
                let how = match holds_current {
                    Some(from) => format!("imagectl promote {role} --from {from} --to {c}"),
                    None => format!("imagectl publish {role} --channel {c}"),
                };
                out.push(format!(
                    "`{c}` holds an older build ({ami}, hash {held}); `{how}` moves it to this one"
                ));
            }
        }
        out
    }

    /// Why `t`, which has no image of its hash, must be built.
    fn reasons(&self, project: &Project, t: &Target) -> Vec<String> {
        let first = &self.first;
        let Some(h) = self.first_hash.get(t.name()) else {
            return vec![if self.changed.iter().any(|c| c == t.name()) {
                format!(
                    "no image has hash {}, and channel `{first}` holds none to compare with",
                    t.hash.short()
                )
            } else {
                "no image of this role yet".to_string()
            }];
        };
        let record = self.records.get(&inputs_parameter(
            &project.settings.publish.prefix,
            t.name(),
            h,
        ));
        match record {
            Some(rec) => {
                let mut changes = t.hash.changes_since(rec);
                if changes.is_empty() {
                    changes.push(format!("no image has hash {}", t.hash.short()));
                }
                changes
                    .iter()
                    .map(|c| format!("{c} (since {first} {})", hash::short(h)))
                    .collect()
            }
            None => vec![format!(
                "no image has hash {}; the inputs of channel `{first}`'s image ({}) were not recorded",
                t.hash.short(),
                hash::short(h)
            )],
        }
    }
}
