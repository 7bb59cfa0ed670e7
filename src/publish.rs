//! Channels: an SSM parameter `<prefix>/<role>/<channel>` in every region,
//! holding that region's AMI ID, and the launch template versions that
//! follow a channel. Publishing diffs first, refuses what would break a
//! launch, and re-reads what it wrote.

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
        let current = session.ssm(&region).get(&name).await?;
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
                Some(t) => {
                    templates.push((region.clone(), lt.clone(), t.latest_version, image.clone()))
                }
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
    if plan
        .iter()
        .all(|(_, image, current)| current.as_deref() == Some(image.id.as_str()))
        && templates.is_empty()
    {
        return Ok(Change::Unchanged { parameter: name });
    }

    // A channel never moves backwards by accident.
    if !allow_older {
        for (region, image, current) in &plan {
            let Some(current) = current.as_deref().filter(|c| *c != image.id) else {
                continue;
            };
            let ec2 = session.ec2(region);
            if let Some(cur) = ec2
                .images_by_id(&[current.to_string()])
                .await?
                .into_iter()
                .next()
            {
                if cur.created > image.created {
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
    for (region, image, current) in plan.iter().rev() {
        if current.as_deref() == Some(image.id.as_str()) {
            continue;
        }
        let ssm = session.ssm(region);
        ssm.put_image_id(&name, &image.id).await?;
        let read = ssm.get(&name).await?.unwrap_or_default();
        if read != image.id {
            return Err(Error::ReadBack {
                parameter: name,
                region: region.clone(),
                wrote: image.id.clone(),
                found: read,
            });
        }
        moved.insert(region.clone(), (current.clone(), image.id.clone()));
    }

    let mut launch_templates = Vec::new();
    for (region, lt, source, image) in templates {
        // No spaces: emulators re-encode them and then reject the signature.
        let description = format!(
            "imagectl:{role}:{channel}:{}",
            image.tag(tags::HASH).unwrap_or("").get(..12).unwrap_or("")
        );
        let v = session
            .ec2(&region)
            .launch_template_publish(&lt, source, &image.id, &description)
            .await?;
        launch_templates.push((region, lt, v));
    }
    Ok(Change::Moved {
        parameter: name,
        regions: moved,
        launch_templates,
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
