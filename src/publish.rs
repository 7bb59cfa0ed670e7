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
//! image that was published. Launch templates then follow the settled
//! channel value the same way.

use std::collections::BTreeMap;
use std::fmt;

use crate::aws::{self, ImageInfo, Session};
use crate::build::tags;
use crate::project::Project;

/// Errors publishing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] aws::Error),
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
    /// Nothing to roll back to, or nothing to promote.
    #[error("{0}")]
    Nothing(String),
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
        /// Launch template versions created: (region, template, version).
        launch_templates: Vec<(String, String, i64)>,
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
                write!(f, "{parameter}: {}", moves.join(", "))?;
                for (r, lt, v) in launch_templates {
                    write!(
                        f,
                        "; launch template {lt} in {r}: version {v} is the default"
                    )?;
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
    format!("{}/{role}/{channel}", project.settings.publish.prefix)
}

/// Every region a channel lives in: home first.
pub fn regions(project: &Project) -> Vec<String> {
    let aws = &project.settings.aws;
    let mut out = vec![aws.region.clone()];
    out.extend(
        aws.copy_regions
            .iter()
            .filter(|r| **r != aws.region)
            .cloned(),
    );
    out
}

/// How publishing orders a role's images, oldest first: by the build's
/// time stamp (the `imagectl:build` tag, the same on every region's copy,
/// so all regions agree even when a copy was made late), then by creation
/// time. Equal keys are the same build.
fn age(image: &ImageInfo) -> (String, String) {
    let stamp = image
        .tag(tags::BUILD)
        .and_then(crate::build::build_stamp)
        .unwrap_or_default()
        .to_string();
    (stamp, image.created.clone())
}

/// How often a publisher re-reads and rewrites before it gives up: each
/// round needs another publish to have written in between, so more than a
/// few means something keeps writing.
const ROUNDS: usize = 8;

/// Points `channel` of `role` at `amis` (one per region). Refuses an AMI
/// that is missing, not available, or not an imagectl image of the role,
/// and one older than the channel's current image unless `allow_older`.
pub async fn publish(
    project: &Project,
    session: &Session,
    role: &str,
    channel: &str,
    amis: &BTreeMap<String, String>,
    allow_older: bool,
) -> Result<Change, Error> {
    check_channel(project, channel)?;
    let name = parameter(project, role, channel);
    let refuse = |region: &str, reason: String| Error::Refused {
        parameter: name.clone(),
        region: region.to_string(),
        reason,
    };

    // Look before touching anything: every region's image and value.
    let mut plan = Vec::new();
    for region in regions(project) {
        let ami = amis.get(&region).ok_or_else(|| {
            refuse(
                &region,
                format!("there is no image of `{role}` in this region; build (or copy) it first"),
            )
        })?;
        let ec2 = session.ec2(&region);
        let image = ec2
            .images_by_id(std::slice::from_ref(ami))
            .await?
            .into_iter()
            .next();
        let image =
            image.ok_or_else(|| refuse(&region, format!("image `{ami}` does not exist")))?;
        if image.state != "available" {
            return Err(refuse(
                &region,
                format!("image `{ami}` is {}, not available", image.state),
            ));
        }
        if image.tag(tags::ROLE) != Some(role) {
            return Err(refuse(
                &region,
                match image.tag(tags::ROLE) {
                    Some(other) => format!(
                        "image `{ami}` is an imagectl image of role `{other}`, not `{role}`"
                    ),
                    None => format!(
                        "image `{ami}` was not built by imagectl (it has no `{}` tag)",
                        tags::ROLE
                    ),
                },
            ));
        }
        let current = session.ssm(&region).current(&name).await?;
        plan.push((region, image, current));
    }
    // Launch templates that follow this channel, checked before any write.
    let mut templates = Vec::new();
    if let Some(lt) = project
        .settings
        .publish
        .launch_templates
        .get(role)
        .and_then(|m| m.get(channel))
    {
        for (region, image, _) in &plan {
            match session.ec2(region).launch_template(lt).await? {
                Some(t) if t.images.get(&t.default_version) == Some(&image.id) => {}
                Some(t) => templates.push((region.clone(), lt.clone(), t.latest_version)),
                None if *region == project.settings.aws.region => {
                    return Err(refuse(
                        region,
                        format!(
                            "launch template `{lt}` (configured for `{role}` `{channel}`) does not exist; create it (see the README) or remove it from `[publish.launch_templates]`"
                        ),
                    ));
                }
                None => tracing::debug!("no launch template `{lt}` in {region}"),
            }
        }
    }
    let holds = |current: &Option<aws::ParamVersion>, image: &ImageInfo| {
        current.as_ref().is_some_and(|c| c.value == image.id)
    };
    if plan.iter().all(|(_, image, current)| holds(current, image)) && templates.is_empty() {
        return Ok(Change::Unchanged { parameter: name });
    }

    // A channel never moves backwards by accident.
    if !allow_older {
        for (region, image, current) in &plan {
            let Some(current) = current
                .as_ref()
                .map(|c| c.value.as_str())
                .filter(|c| *c != image.id)
            else {
                continue;
            };
            let ec2 = session.ec2(region);
            if let Some(cur) = ec2
                .images_by_id(&[current.to_string()])
                .await?
                .into_iter()
                .next()
            {
                if age(&cur) > age(image) {
                    return Err(refuse(
                        region,
                        format!(
                            "the channel holds `{}` (created {}), newer than `{}` (created {}); pass `--allow-older` to publish it anyway, or use `imagectl rollback`",
                            cur.id, cur.created, image.id, image.created
                        ),
                    ));
                }
            }
        }
    }

    // Copy regions first, the home region last: the home value is what
    // `promote` and `rollback` read, so it moves only once every region has.
    let mut moved = BTreeMap::new();
    let mut settled = BTreeMap::new();
    for (region, image, current) in plan.iter().rev() {
        if holds(current, image) {
            settled.insert(region.clone(), image.clone());
            continue;
        }
        let since = current.as_ref().map_or(0, |c| c.version);
        let last = write(session, region, &name, role, image, since, allow_older).await?;
        if last.id != image.id {
            tracing::warn!(
                "{name} in {region}: `{}`, a newer image of `{role}`, was published at the same time; the channel stays on it",
                last.id
            );
        }
        moved.insert(
            region.clone(),
            (current.as_ref().map(|c| c.value.clone()), last.id.clone()),
        );
        settled.insert(region.clone(), last);
    }

    let mut launch_templates = Vec::new();
    for (region, lt, latest) in templates {
        let Some(want) = settled.get(&region) else {
            continue;
        };
        let v = follow(session, &region, &name, role, channel, &lt, latest, want).await?;
        if let Some(v) = v {
            launch_templates.push((region, lt, v));
        }
    }
    Ok(Change::Moved {
        parameter: name,
        regions: moved,
        launch_templates,
    })
}

/// Writes `image` to the channel `name` in `region`, whose version was
/// `since` when this publish looked, and returns the image the channel
/// settles on: the newest among what was written since, so that racing
/// publishes end on the same one (see the module documentation). An
/// explicit step back (`allow_older`) stands unless something is written
/// after it.
async fn write(
    session: &Session,
    region: &str,
    name: &str,
    role: &str,
    image: &ImageInfo,
    since: i64,
    allow_older: bool,
) -> Result<ImageInfo, Error> {
    let ssm = session.ssm(region);
    let ec2 = session.ec2(region);
    let ours = ssm.put_image_id(name, &image.id).await?;
    let mut known: BTreeMap<String, ImageInfo> =
        BTreeMap::from([(image.id.clone(), image.clone())]);
    for _ in 0..ROUNDS {
        let history = ssm.history(name).await?;
        let Some(latest) = history.last() else {
            return Err(Error::ReadBack {
                parameter: name.to_string(),
                region: region.to_string(),
                wrote: image.id.clone(),
                found: "(no value)".into(),
            });
        };
        if allow_older {
            return match history.iter().find(|h| h.version > ours) {
                None => Ok(image.clone()),
                Some(_) => Err(Error::Superseded {
                    parameter: name.to_string(),
                    region: region.to_string(),
                    wrote: image.id.clone(),
                    found: latest.value.clone(),
                }),
            };
        }
        let mut written: Vec<String> = history
            .iter()
            .filter(|h| h.version > since)
            .map(|h| h.value.clone())
            .collect();
        written.sort();
        written.dedup();
        let unknown: Vec<String> = written
            .iter()
            .filter(|v| !known.contains_key(*v))
            .cloned()
            .collect();
        for i in ec2.images_by_id(&unknown).await? {
            known.insert(i.id.clone(), i);
        }
        // Only this role's available images count: a value anything else
        // wrote is no image to settle on. Ties (one build) go to the ID,
        // so every publisher picks the same.
        let newest = written
            .iter()
            .filter_map(|v| known.get(v))
            .filter(|i| i.tag(tags::ROLE) == Some(role) && i.state == "available")
            .max_by(|a, b| (age(a), &a.id).cmp(&(age(b), &b.id)))
            .unwrap_or(image)
            .clone();
        if latest.value == newest.id {
            return Ok(newest);
        }
        tracing::info!(
            "{name} in {region}: `{}` was written meanwhile, older than `{}`: writing `{}` again",
            latest.value,
            newest.id,
            newest.id
        );
        ssm.put_image_id(name, &newest.id).await?;
    }
    Err(Error::Unsettled {
        what: name.to_string(),
        region: region.to_string(),
        rounds: ROUNDS,
    })
}

/// Makes the default version of launch template `lt` in `region` launch
/// what the channel `name` holds (`want`, as this publish settled it),
/// adding a version on top of the latest. A publish running at the same
/// time may move the default after this one: every publisher re-reads the
/// channel and the template after its change, and a version another
/// publisher added since `latest` (this publish's first look) for the
/// channel's image is reused rather than added again. Returns the default
/// version, or `None` when the template is gone.
#[allow(clippy::too_many_arguments)]
async fn follow(
    session: &Session,
    region: &str,
    name: &str,
    role: &str,
    channel: &str,
    lt: &str,
    latest: i64,
    want: &ImageInfo,
) -> Result<Option<i64>, Error> {
    let ec2 = session.ec2(region);
    let ssm = session.ssm(region);
    let mut want = want.clone();
    for _ in 0..ROUNDS {
        let Some(t) = ec2.launch_template(lt).await? else {
            return Ok(None);
        };
        if let Some(now) = ssm.get(name).await?.filter(|v| *v != want.id) {
            // Another publish moved the channel after this one settled it.
            match ec2.images_by_id(std::slice::from_ref(&now)).await?.pop() {
                Some(i) => want = i,
                None => {
                    return Err(Error::Refused {
                        parameter: name.to_string(),
                        region: region.to_string(),
                        reason: format!("it now holds `{now}`, which does not exist"),
                    })
                }
            }
        }
        if t.images.get(&t.default_version) == Some(&want.id) {
            return Ok(Some(t.default_version));
        }
        let added = t
            .images
            .iter()
            .filter(|(v, image)| **v > latest && **image == want.id)
            .map(|(v, _)| *v)
            .max();
        match added {
            Some(v) => ec2.launch_template_default(lt, v).await?,
            None => {
                // No spaces: emulators re-encode them and then reject the signature.
                let description = format!(
                    "imagectl:{role}:{channel}:{}",
                    want.tag(tags::HASH).unwrap_or("").get(..12).unwrap_or("")
                );
                ec2.launch_template_publish(lt, t.latest_version, &want.id, &description)
                    .await?;
            }
        }
    }
    Err(Error::Unsettled {
        what: lt.to_string(),
        region: region.to_string(),
        rounds: ROUNDS,
    })
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
    for region in regions(project) {
        if let Some(v) = session.ssm(&region).get(&name).await? {
            out.insert(region, v);
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
    allow_older: bool,
) -> Result<Change, Error> {
    check_channel(project, to)?;
    let amis = read_channel(project, session, role, from).await?;
    if amis.is_empty() {
        return Err(Error::Nothing(format!(
            "channel `{from}` of `{role}` holds no image yet; publish to it first"
        )));
    }
    publish(project, session, role, to, &amis, allow_older).await
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
    let ec2 = session.ec2(&home);
    let image: ImageInfo = ec2
        .images_by_id(std::slice::from_ref(target))
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::Nothing(format!(
                "`{name}` held `{target}`, which no longer exists; roll back further with --steps"
            ))
        })?;
    let hash = image.tag(tags::HASH).unwrap_or_default().to_string();
    let mut amis = BTreeMap::from([(home.clone(), image.id.clone())]);
    for region in regions(project).into_iter().filter(|r| *r != home) {
        let copies = session
            .ec2(&region)
            .imagectl_images(&[role.to_string()])
            .await?;
        if let Some(c) = copies
            .iter()
            .find(|i| i.tag(tags::HASH) == Some(hash.as_str()) && i.state == "available")
        {
            amis.insert(region, c.id.clone());
        }
    }
    publish(project, session, role, channel, &amis, true).await
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
