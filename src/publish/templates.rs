//! The launch templates configured for a channel, in either style: one
//! whose default version pins an AMI ID gets a new version with the
//! channel's image; one whose default version resolves the channel's
//! parameter at launch (`resolve:ssm:<parameter>`) already follows the
//! channel and is left as it is. A template that resolves another
//! parameter is refused before anything is written: publishing would
//! either leave it launching another channel or replace its reference
//! with a pinned AMI, and neither is what its author meant.

use serde::Serialize;

use imagectl_core::names::tags;
use imagectl_core::project::Project;

use super::{Error, Region};
use crate::aws::{Session, Source};

/// A launch template of the channel in one region, as publish found it.
pub(super) struct Found {
    pub region: String,
    pub name: String,
    pub style: Style,
}

/// What publishing does with a template.
pub(super) enum Style {
    /// Its default version pins another AMI: a version with the channel's
    /// image is added on top of `latest` (the latest version when
    /// publishing looked) and made the default.
    Pin { latest: i64 },
    /// Its default version resolves the channel's parameter: nothing is
    /// added; publishing reports what the parameter holds afterwards.
    Resolves { version: i64 },
}

/// What publishing did to one launch template in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateChange {
    /// The region.
    pub region: String,
    /// The template's name.
    pub name: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What happened to a launch template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    /// A version launching `image` is the default.
    Version {
        /// The default version.
        version: i64,
        /// The image it launches.
        image: String,
    },
    /// Its default version resolves the channel's parameter: no version
    /// was added.
    Resolves {
        /// The parameter it resolves.
        #[serde(rename = "resolves")]
        parameter: String,
        /// Its default version, unchanged.
        version: i64,
        /// What the parameter holds in that region now.
        image: Option<String>,
    },
}

impl std::fmt::Display for TemplateChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (lt, region) = (&self.name, &self.region);
        match &self.outcome {
            Outcome::Version { version, image } => {
                write!(
                    f,
                    "{lt} {region}: version {version} is the default ({image})"
                )
            }
            Outcome::Resolves {
                parameter, image, ..
            } => write!(
                f,
                "{lt} {region}: resolves {parameter} (now {}), no new version",
                image.as_deref().unwrap_or("no value")
            ),
        }
    }
}

/// The launch templates configured for `channel` of `role` that either
/// resolve the channel parameter `name` or pin an AMI other than the
/// region's new image. Refused, before anything is written: a template
/// missing in the home region, one resolving another parameter, and a
/// pinned one that the channel's publish policy may not change.
pub(super) async fn survey(
    project: &Project,
    session: &Session,
    name: &str,
    role: &str,
    channel: &str,
    plan: &[Region],
) -> Result<Vec<Found>, Error> {
    let settings = &project.settings;
    let Some(lt) = settings
        .publish
        .launch_templates
        .get(role)
        .and_then(|m| m.get(channel))
    else {
        return Ok(Vec::new());
    };
    let refuse = |region: &str, reason: String| Error::Refused {
        parameter: name.to_string(),
        region: region.to_string(),
        reason,
    };
    let mut found = Vec::new();
    for r in plan {
        let Some(t) = session.ec2(&r.name).launch_template(lt).await? else {
            if r.name == settings.aws.region {
                return Err(refuse(&r.name, format!(
                    "launch template `{lt}` (configured for `{role}` `{channel}`) does not exist; create it (see the README) or remove it from `[publish.launch_templates]`"
                )));
            }
            tracing::debug!("no launch template `{lt}` in {}", r.name);
            continue;
        };
        let style = match t.default_source() {
            s if s.follows(name) => Style::Resolves {
                version: t.default_version,
            },
            Source::Parameter { written, .. } => {
                return Err(Error::OtherParameter {
                    template: lt.clone(),
                    region: r.name.clone(),
                    version: t.default_version,
                    resolves: written.to_string(),
                    parameter: name.to_string(),
                })
            }
            Source::Ami(ami) if ami == r.image.id => continue,
            // The publish policy of a channel may move only the templates
            // tagged with it: refused here, before anything is written,
            // rather than by IAM halfway through.
            _ if t.tags.get(tags::CHANNEL).map(String::as_str) != Some(channel) => {
                return Err(refuse(&r.name, format!(
                    "launch template `{lt}` is not tagged `{} = {channel}`, so the publish policy of `{channel}` may not change it; tag it (docs/aws-setup.md)",
                    tags::CHANNEL
                )));
            }
            _ => Style::Pin {
                latest: t.latest_version,
            },
        };
        found.push(Found {
            region: r.name.clone(),
            name: lt.clone(),
            style,
        });
    }
    Ok(found)
}
