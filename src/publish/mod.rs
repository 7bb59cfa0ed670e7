//! Channels: an SSM parameter `<prefix>/<role>/<channel>` in every region,
//! holding that region's AMI ID, and the launch template versions that
//! follow a channel. Publishing diffs first, refuses what would break a
//! launch, and re-reads what it wrote.
//!
//! Two publishes to one channel may run at once (two CI pipelines, say),
//! and SSM has no compare-and-swap. Each publisher therefore writes its
//! image, then reads the parameter's history: among the values written
//! since it looked (its own included), the newest image must be the
//! current value, or it writes that one again. Whoever writes last has
//! every earlier write in the history before it, so the channel settles on
//! the newest image whatever the order, and the history holds every
//! image that was published. Launch templates that pin an AMI then follow
//! the settled channel value the same way; those that resolve the channel
//! parameter at launch are left alone (see `templates.rs`).
//!
//! Once a channel moved, the images on either side of the move are
//! deprecated, undeprecated and protected from deregistration as
//! `lifecycle.rs` says.

mod lifecycle;
mod settle;
mod templates;

use std::collections::BTreeMap;
use std::fmt;

use imagectl_core::names::{self, channel_parameter, tags};
use imagectl_core::project::Project;

use crate::artifacts;
use crate::aws::{self, ImageInfo, Session};

pub use templates::{Outcome as TemplateOutcome, TemplateChange};

/// Errors publishing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] aws::Error),
    /// An image does not verify against its signed provenance.
    #[error(
        "refusing to publish: {0}\n(`--allow-unverified` publishes it all the same, saying so)"
    )]
    Unverified(#[source] crate::provenance::Error),
    /// Verifying could not be done (a call failed, the key is unusable).
    #[error(transparent)]
    Verify(crate::provenance::Error),
    /// The channel is not one of `[publish] channels`.
    #[error("unknown channel `{channel}`; the channels are {} (`[publish] channels` in imagectl.toml)", known.join(", "))]
    UnknownChannel {
        /// The channel asked for.
        channel: String,
        /// The configured channels.
        known: Vec<String>,
    },
    /// The image may not be published.
    #[error("refusing to publish to `{parameter}` in `{region}`: {reason}")]
    Refused {
        /// The channel parameter.
        parameter: String,
        /// The region.
        region: String,
        /// Why, and what to do.
        reason: String,
    },
    /// A value read back is not what was written.
    #[error("`{parameter}` in `{region}` reads `{found}` after writing `{wrote}`; another publish may be running")]
    ReadBack {
        /// The channel parameter.
        parameter: String,
        /// The region.
        region: String,
        /// What was written.
        wrote: String,
        /// What was read.
        found: String,
    },
    /// An explicit step back (a rollback, `--allow-older`) was overwritten
    /// by a publish that ran at the same time.
    #[error("`{parameter}` in `{region}` holds `{found}`, written by another publish after this one wrote `{wrote}`; run this again once that publish is done")]
    Superseded {
        /// The channel parameter.
        parameter: String,
        /// The region.
        region: String,
        /// What this publish wrote.
        wrote: String,
        /// What was written after it.
        found: String,
    },
    /// Concurrent publishes kept moving the channel or launch template.
    #[error("`{what}` in `{region}` did not settle after {rounds} rounds of concurrent writes; run the publish again")]
    Unsettled {
        /// The parameter or launch template.
        what: String,
        /// The region.
        region: String,
        /// How often it was read and rewritten.
        rounds: usize,
    },
    /// A launch template configured for the channel resolves another
    /// parameter (or a fixed version or label of the channel's).
    #[error("launch template `{template}` in `{region}` resolves `{resolves}` (version {version}, its default), not the channel `{parameter}` being published; make it resolve `resolve:ssm:{parameter}`, pin an AMI ID, or configure it for the channel it follows in `[publish.launch_templates]`")]
    OtherParameter {
        /// The launch template.
        template: String,
        /// The region.
        region: String,
        /// Its default version.
        version: i64,
        /// What it resolves, after `resolve:ssm:`.
        resolves: String,
        /// The channel parameter being published.
        parameter: String,
    },
    /// `promote` from a channel to itself.
    #[error("`--from` and `--to` are both `{0}`; promote copies one channel into another (`imagectl publish` or `imagectl rollback` move a channel by itself)")]
    SameChannel(String),
    /// Nothing to roll back to, or nothing to promote.
    #[error("{0}")]
    Nothing(String),
    /// The channel moved, but deprecating or protecting its images failed.
    #[error("`{parameter}` moved, but the lifecycle of its images could not be updated (deprecation, deregistration protection): {source}")]
    Lifecycle {
        /// The channel parameter.
        parameter: String,
        /// The call that failed.
        source: aws::Error,
    },
}

impl Error {
    /// Whether the user fixes it (exit 2): a channel, image or history that
    /// does not allow the move asked for. A failed call, or a publish
    /// racing this one, is a failure (exit 1).
    pub fn is_usage(&self) -> bool {
        if let Error::Unverified(e) | Error::Verify(e) = self {
            return e.is_usage();
        }
        !matches!(
            self,
            Error::Aws(_)
                | Error::Lifecycle { .. }
                | Error::ReadBack { .. }
                | Error::Superseded { .. }
                | Error::Unsettled { .. }
        )
    }
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Every region already held these images.
    Unchanged {
        /// The parameter.
        parameter: String,
    },
    /// The channel moved.
    Moved {
        /// The parameter.
        parameter: String,
        /// Region → (old value, new value).
        regions: BTreeMap<String, (Option<String>, String)>,
        /// The launch templates of the channel: the version each pinned
        /// one now defaults to, or the parameter each resolving one follows.
        launch_templates: Vec<TemplateChange>,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Unchanged { parameter } => write!(f, "{parameter}: no changes necessary"),
            Change::Moved {
                parameter,
                regions,
                launch_templates,
            } => {
                let moves: Vec<String> = regions
                    .iter()
                    .map(|(r, (old, new))| {
                        format!("{r} {} -> {new}", old.as_deref().unwrap_or("(none)"))
                    })
                    .collect();
                if moves.is_empty() {
                    // Only launch templates moved.
                    write!(f, "{parameter}: already holds its image in every region")?;
                } else {
                    write!(f, "{parameter}: {}", moves.join(", "))?;
                }
                for lt in launch_templates {
                    write!(f, "\n{lt}")?;
                }
                Ok(())
            }
        }
    }
}

/// Fails unless `channel` is configured.
pub fn check_channel(project: &Project, channel: &str) -> Result<(), Error> {
    let known = &project.settings.publish.channels;
    if known.iter().any(|c| c == channel) {
        Ok(())
    } else {
        Err(Error::UnknownChannel {
            channel: channel.to_string(),
            known: known.clone(),
        })
    }
}

/// The parameter of a channel.
pub fn parameter(project: &Project, role: &str, channel: &str) -> String {
    channel_parameter(&project.settings.publish.prefix, role, channel)
}

/// How publishing orders a role's images, oldest first: by the build's
/// time stamp (the `imagectl:build` tag, the same on every region's copy,
/// so all regions agree even when a copy was made late), then by creation
/// time. Equal keys are the same build.
fn age(image: &ImageInfo) -> (String, String) {
    let stamp = image
        .tag(tags::BUILD)
        .and_then(names::build_stamp)
        .unwrap_or_default()
        .to_string();
    (stamp, image.created.clone())
}

/// How often a publisher re-reads and rewrites before it gives up: each
/// round needs another publish to have written in between, so more than a
/// few means something keeps writing.
const ROUNDS: usize = 8;

/// One region of a publish, as it was before anything moved: the image to
/// publish there and what the channel held.
struct Region {
    name: String,
    image: ImageInfo,
    current: Option<aws::ParamVersion>,
}

impl Region {
    /// Whether the channel already holds the image here.
    fn holds(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.value == self.image.id)
    }
}

/// What a publish lets through that it otherwise refuses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Allow {
    /// An image older than the channel's current one.
    pub older: bool,
    /// An image that does not verify against its signed provenance.
    pub unverified: bool,
}

/// Points `channel` of `role` at `amis` (one per region). Refuses an AMI
/// that is missing, not available, or not an imagectl image of the role,
/// one that does not verify against its signed provenance, and one older
/// than the channel's current image, unless `allow` lets them through.
pub async fn publish(
    project: &Project,
    session: &Session,
    role: &str,
    channel: &str,
    amis: &BTreeMap<String, String>,
    allow: Allow,
) -> Result<Change, Error> {
    check_channel(project, channel)?;
    let name = parameter(project, role, channel);
    // Look before touching anything: every region's image and value, the
    // launch templates that follow the channel.
    let plan = survey(project, session, &name, role, amis).await?;
    let templates = templates::survey(project, session, &name, role, channel, &plan).await?;
    let pinned_to_move = templates
        .iter()
        .any(|t| matches!(t.style, templates::Style::Pin { .. }));
    if plan.iter().all(Region::holds) && !pinned_to_move {
        return Ok(Change::Unchanged { parameter: name });
    }
    let images: Vec<(String, ImageInfo)> = plan
        .iter()
        .map(|r| (r.name.clone(), r.image.clone()))
        .collect();
    crate::provenance::require(project, session, &images, allow.unverified)
        .await
        .map_err(|e| match e {
            e @ crate::provenance::Error::Unverified { .. } => Error::Unverified(e),
            e => Error::Verify(e),
        })?;
    // A channel never moves backwards by accident.
    if !allow.older {
        refuse_older(session, &name, &plan).await?;
    }
    // Copy regions first, the home region last: the home value is what
    // `promote` and `rollback` read, so it moves only once every region has.
    let mut moved = BTreeMap::new();
    let mut settled = BTreeMap::new();
    for r in plan.iter().rev() {
        if r.holds() {
            settled.insert(r.name.clone(), r.image.clone());
            continue;
        }
        let since = r.current.as_ref().map_or(0, |c| c.version);
        let w = settle::Write {
            session,
            region: &r.name,
            name: &name,
            role,
        };
        let last = w.write(&r.image, since, allow.older).await?;
        if last.id != r.image.id {
            tracing::warn!(
                "{name} in {}: `{}`, a newer image of `{role}`, was published at the same time; the channel stays on it",
                r.name,
                last.id
            );
        }
        let old = r.current.as_ref().map(|c| c.value.clone());
        moved.insert(r.name.clone(), (old, last.id.clone()));
        settled.insert(r.name.clone(), last);
    }
    let launch_templates =
        follow_templates(session, &name, role, channel, templates, &settled).await?;
    let after = lifecycle::Moved {
        project,
        session,
        role,
        channel,
        name: &name,
    };
    for (region, (old, _)) in &moved {
        let Some(new) = settled.get(region) else {
            continue;
        };
        after
            .region(region, old.as_deref(), new)
            .await
            .map_err(|source| Error::Lifecycle {
                parameter: name.clone(),
                source,
            })?;
    }
    Ok(Change::Moved {
        parameter: name,
        regions: moved,
        launch_templates,
    })
}

/// Moves each launch template that pins an AMI to the image the channel
/// settled on in its region (`settled`), and reads back, for each that
/// resolves the channel, what the parameter holds there now.
async fn follow_templates(
    session: &Session,
    name: &str,
    role: &str,
    channel: &str,
    templates: Vec<templates::Found>,
    settled: &BTreeMap<String, ImageInfo>,
) -> Result<Vec<TemplateChange>, Error> {
    let mut out = Vec::new();
    for t in templates {
        let outcome = match t.style {
            templates::Style::Pin { latest } => {
                let Some(want) = settled.get(&t.region) else {
                    continue;
                };
                let w = settle::Write {
                    session,
                    region: &t.region,
                    name,
                    role,
                };
                match w.follow(channel, &t.name, latest, want).await? {
                    Some((version, image)) => TemplateOutcome::Version { version, image },
                    None => continue,
                }
            }
            // Left resolving the channel: what it launches now is what the
            // parameter holds, read back.
            templates::Style::Resolves { version } => TemplateOutcome::Resolves {
                parameter: name.to_string(),
                version,
                image: session.ssm(&t.region).get(name).await?,
            },
        };
        out.push(TemplateChange {
            region: t.region,
            name: t.name,
            outcome,
        });
    }
    Ok(out)
}

/// Every region's image (refused unless it is an available imagectl image
/// of `role`) and what the channel `name` holds there.
async fn survey(
    project: &Project,
    session: &Session,
    name: &str,
    role: &str,
    amis: &BTreeMap<String, String>,
) -> Result<Vec<Region>, Error> {
    let refuse = |region: &str, reason: String| Error::Refused {
        parameter: name.to_string(),
        region: region.to_string(),
        reason,
    };
    let mut plan = Vec::new();
    for region in project.settings.aws.regions() {
        let ami = amis.get(region).ok_or_else(|| {
            refuse(
                region,
                format!("there is no image of `{role}` in this region; build (or copy) it first"),
            )
        })?;
        let image = session
            .ec2(region)
            .images_by_id(std::slice::from_ref(ami))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| refuse(region, format!("image `{ami}` does not exist")))?;
        if image.state != "available" {
            return Err(refuse(
                region,
                format!("image `{ami}` is {}, not available", image.state),
            ));
        }
        if image.tag(tags::ROLE) != Some(role) {
            let reason = match image.tag(tags::ROLE) {
                Some(other) => {
                    format!("image `{ami}` is an imagectl image of role `{other}`, not `{role}`")
                }
                None => format!(
                    "image `{ami}` was not built by imagectl (it has no `{}` tag)",
                    tags::ROLE
                ),
            };
            return Err(refuse(region, reason));
        }
        let current = session.ssm(region).current(name).await?;
        plan.push(Region {
            name: region.to_string(),
            image,
            current,
        });
    }
    Ok(plan)
}

/// Refuses to replace a channel's image with an older one.
async fn refuse_older(session: &Session, name: &str, plan: &[Region]) -> Result<(), Error> {
    for r in plan {
        let Some(current) = r
            .current
            .as_ref()
            .map(|c| c.value.as_str())
            .filter(|c| *c != r.image.id)
        else {
            continue;
        };
        let held = session
            .ec2(&r.name)
            .images_by_id(&[current.to_string()])
            .await?
            .into_iter()
            .next();
        if let Some(cur) = held.filter(|cur| age(cur) > age(&r.image)) {
            return Err(Error::Refused {
                parameter: name.to_string(),
                region: r.name.clone(),
                reason: format!(
                    "the channel holds `{}` (created {}), newer than `{}` (created {}); pass `--allow-older` to publish it anyway, or use `imagectl rollback`",
                    cur.id, cur.created, r.image.id, r.image.created
                ),
            });
        }
    }
    Ok(())
}

/// What a channel holds in every region; regions without a value are left out.
pub async fn read_channel(
    project: &Project,
    session: &Session,
    role: &str,
    channel: &str,
) -> Result<BTreeMap<String, String>, Error> {
    check_channel(project, channel)?;
    let name = parameter(project, role, channel);
    let mut out = BTreeMap::new();
    for region in project.settings.aws.regions() {
        if let Some(v) = session.ssm(region).get(&name).await? {
            out.insert(region.to_string(), v);
        }
    }
    Ok(out)
}

/// Copies exactly what `from` points to into `to`, in every region.
pub async fn promote(
    project: &Project,
    session: &Session,
    role: &str,
    from: &str,
    to: &str,
    allow: Allow,
) -> Result<Change, Error> {
    if from == to {
        return Err(Error::SameChannel(to.to_string()));
    }
    check_channel(project, to)?;
    let amis = read_channel(project, session, role, from).await?;
    if amis.is_empty() {
        return Err(Error::Nothing(format!(
            "channel `{from}` of `{role}` holds no image yet; publish to it first"
        )));
    }
    publish(project, session, role, to, &amis, allow).await
}

/// The distinct values a parameter held, oldest first, consecutive repeats
/// collapsed.
pub fn distinct_values(history: &[aws::ParamVersion]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in history {
        if out.last() != Some(&h.value) {
            out.push(h.value.clone());
        }
    }
    out
}

/// Points a channel back `steps` values, from the home region parameter's
/// own history; other regions get the copies of that image (found by its
/// role and hash tags).
pub async fn rollback(
    project: &Project,
    session: &Session,
    role: &str,
    channel: &str,
    steps: usize,
    allow_unverified: bool,
) -> Result<Change, Error> {
    check_channel(project, channel)?;
    let name = parameter(project, role, channel);
    let home = project.settings.aws.region.clone();
    let history = session.ssm(&home).history(&name).await?;
    let values = distinct_values(&history);
    if values.len() <= steps {
        return Err(Error::Nothing(format!(
            "`{name}` has {} earlier value{} in its history; cannot go back {steps}",
            values.len().saturating_sub(1),
            if values.len() == 2 { "" } else { "s" }
        )));
    }
    let target = &values[values.len() - 1 - steps];
    let image: ImageInfo = session
        .ec2(&home)
        .images_by_id(std::slice::from_ref(target))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::Nothing(format!(
                "`{name}` held `{target}`, which no longer exists; roll back further with --steps"
            ))
        })?;
    let amis = with_copies(project, session, &image).await?;
    let allow = Allow {
        older: true,
        unverified: allow_unverified,
    };
    publish(project, session, role, channel, &amis, allow).await
}

/// The AMI per region of `image` (in the home region) and its copies,
/// found by its role, hash and build tags.
pub async fn with_copies(
    project: &Project,
    session: &Session,
    image: &ImageInfo,
) -> Result<BTreeMap<String, String>, aws::Error> {
    let home = &project.settings.aws.region;
    let mut amis = BTreeMap::from([(home.clone(), image.id.clone())]);
    let others: Vec<&str> = project
        .settings
        .aws
        .copy_regions
        .iter()
        .map(String::as_str)
        .collect();
    for (region, copy) in artifacts::copies(session, &others, image).await? {
        amis.insert(region, copy.id);
    }
    Ok(amis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_collapses_repeats() {
        let h: Vec<aws::ParamVersion> = ["a", "b", "b", "c", "a"]
            .iter()
            .enumerate()
            .map(|(i, v)| aws::ParamVersion {
                version: i as i64 + 1,
                value: v.to_string(),
            })
            .collect();
        assert_eq!(distinct_values(&h), ["a", "b", "c", "a"]);
    }
}
