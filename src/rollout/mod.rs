//! Rollouts: an instance refresh on every Auto Scaling group a channel of a
//! role feeds (`[publish.auto_scaling_groups]`), followed to its end, so a
//! published image reaches the running fleet without hands.
//!
//! Each group is found by name in every region. Its launch template must be
//! the channel's (`[publish.launch_templates]`, when one is configured), and
//! that template's default version must launch what the channel holds: the
//! refresh then asks for exactly that version. A group on a numbered
//! version gets it as the refresh's desired configuration, with skip
//! matching and auto rollback on; a group on `$Default` or `$Latest`, or a
//! template that resolves the channel parameter at launch, already launches
//! the new image, so its refresh replaces every instance and cannot roll
//! back automatically (AWS refuses auto rollback there), which the plan says.
//!
//! A refresh that fails is rolled back by Auto Scaling itself (the group
//! returns to its previous launch template version); the channel and the
//! template's default version are left as publishing set them, and the
//! error says how to move them back (`imagectl rollback`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;

use imagectl_core::project::Project;

use crate::aws::{self, Refresh, RefreshRequest, Session, Source, StartError, TemplateSpec};
use crate::publish;

/// Why a rollout could not be done, or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No groups are configured for the role and channel.
    #[error("no Auto Scaling groups follow channel `{channel}` of `{role}`; list them in imagectl.toml: `[publish.auto_scaling_groups.{role}]` `{channel} = [\"group-name\"]`")]
    NoGroups {
        /// The role.
        role: String,
        /// The channel.
        channel: String,
    },
    /// No groups are configured for the role at all.
    #[error("no Auto Scaling groups are configured for `{0}`; list them in imagectl.toml: `[publish.auto_scaling_groups.{0}]` `CHANNEL = [\"group-name\"]`")]
    NoneConfigured(String),
    /// A configured group exists in no region.
    #[error("Auto Scaling group `{group}` (`[publish.auto_scaling_groups.{role}]` in imagectl.toml) exists in none of the regions {}; create it, or fix the name", regions.join(", "))]
    Missing {
        /// The role.
        role: String,
        /// The group.
        group: String,
        /// The regions searched.
        regions: Vec<String>,
    },
    /// A group launches no launch template directly.
    #[error("Auto Scaling group `{group}` in `{region}` launches no launch template directly (a launch configuration or a mixed instances policy); imagectl rolls out launch template versions only")]
    NoTemplate {
        /// The group.
        group: String,
        /// The region.
        region: String,
    },
    /// A group launches another template than the channel's.
    #[error("Auto Scaling group `{group}` in `{region}` launches template `{launches}`, not `{expected}`, the template of channel `{channel}` (`[publish.launch_templates]`); point the group at it, or list the group under the channel it follows")]
    OtherTemplate {
        /// The group.
        group: String,
        /// The region.
        region: String,
        /// The template it launches.
        launches: String,
        /// The channel's template.
        expected: String,
        /// The channel.
        channel: String,
    },
    /// The group's template does not launch what the channel holds: what
    /// it launches, and what to do.
    #[error("{0}")]
    Behind(String),
    /// A refresh could not start.
    #[error("{error}{}", if started.is_empty() { String::new() } else { format!(" (already started, and going on: {})", started.join(", ")) })]
    Start {
        /// Why.
        error: StartError,
        /// The groups whose refresh had started before it.
        started: Vec<String>,
    },
    /// An AWS call failed.
    #[error(transparent)]
    Aws(#[from] aws::Error),
    /// Publishing before the rollout failed.
    #[error(transparent)]
    Publish(#[from] publish::Error),
    /// A refresh ended other than `Successful`.
    #[error("{}", ended.iter().map(|o| o.failure(parameter, rollback)).collect::<Vec<_>>().join("\n"))]
    Ended {
        /// The refreshes that did not succeed.
        ended: Vec<Outcome>,
        /// The channel parameter.
        parameter: String,
        /// The command that moves the channel back.
        rollback: String,
    },
    /// Following took longer than `[rollout] timeout_minutes`.
    #[error("instance refresh of {} still running after {minutes} min (`[rollout] timeout_minutes`); it goes on in AWS: follow it with `imagectl rollout status {role}`", groups.join(", "))]
    Timeout {
        /// The role.
        role: String,
        /// `group (region)` of each refresh still running.
        groups: Vec<String>,
        /// The limit.
        minutes: u64,
    },
}

impl Error {
    /// Whether the user fixes it (exit 2): the configuration or the
    /// groups do not allow a rollout. A refresh that fails, or an AWS call,
    /// is a failure (exit 1).
    pub fn is_usage(&self) -> bool {
        match self {
            Error::NoGroups { .. }
            | Error::NoneConfigured(_)
            | Error::Missing { .. }
            | Error::NoTemplate { .. }
            | Error::OtherTemplate { .. }
            | Error::Behind(_) => true,
            Error::Publish(e) => e.is_usage(),
            _ => false,
        }
    }
}

/// A configured group found in a region, with the template it launches.
#[derive(Debug, Clone)]
pub struct Located {
    /// The region.
    pub region: String,
    /// The group.
    pub group: String,
    /// Its launch template and version, as the group names them.
    pub spec: TemplateSpec,
    /// The template's name.
    pub template: String,
}

/// The groups of `channel` of `role`, found in every region, each checked
/// to launch the channel's launch template. Reads only.
pub async fn locate(
    project: &Project,
    session: &Session,
    role: &str,
    channel: &str,
) -> Result<Vec<Located>, Error> {
    let names: Vec<String> = project
        .settings
        .publish
        .auto_scaling_groups
        .get(role)
        .and_then(|c| c.get(channel))
        .cloned()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::NoGroups {
            role: role.to_string(),
            channel: channel.to_string(),
        })?;
    let expected = project
        .settings
        .publish
        .launch_templates
        .get(role)
        .and_then(|c| c.get(channel));
    let regions = project.settings.aws.regions();
    let mut out = Vec::new();
    for region in &regions {
        for g in session.autoscaling(region).groups(&names).await? {
            let spec = g.launch_template.clone().ok_or_else(|| Error::NoTemplate {
                group: g.name.clone(),
                region: region.to_string(),
            })?;
            let template = match (&spec.name, &spec.id) {
                (Some(n), _) => n.clone(),
                (None, id) => id.clone().unwrap_or_default(),
            };
            if let Some(expected) = expected.filter(|e| **e != template) {
                return Err(Error::OtherTemplate {
                    group: g.name,
                    region: region.to_string(),
                    launches: template,
                    expected: expected.clone(),
                    channel: channel.to_string(),
                });
            }
            out.push(Located {
                region: region.to_string(),
                group: g.name,
                spec,
                template,
            });
        }
    }
    if let Some(missing) = names.iter().find(|n| !out.iter().any(|l| &l.group == *n)) {
        return Err(Error::Missing {
            role: role.to_string(),
            group: missing.clone(),
            regions: regions.iter().map(|r| r.to_string()).collect(),
        });
    }
    Ok(out)
}

/// A refresh to start: where, and what it asks for.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The group, where it is.
    pub located: Located,
    /// The request.
    pub request: RefreshRequest,
    /// The template version the group launches once refreshed.
    pub version: i64,
}

/// The refresh of each located group, once the channel holds its image:
/// each template's default version must launch what the channel holds.
pub async fn plan(
    project: &Project,
    session: &Session,
    role: &str,
    channel: &str,
    located: Vec<Located>,
) -> Result<Vec<Planned>, Error> {
    let parameter = publish::parameter(project, role, channel);
    let settings = &project.settings.rollout;
    let mut out = Vec::new();
    for l in located {
        let lt = session
            .ec2(&l.region)
            .launch_template(&l.template)
            .await?
            .ok_or_else(|| Error::NoTemplate {
                group: l.group.clone(),
                region: l.region.clone(),
            })?;
        let holds = session.ssm(&l.region).get(&parameter).await?;
        let source = lt.default_source();
        let pinned = match source {
            Source::Ami(ami) if Some(ami) == holds.as_deref() => true,
            s if s.follows(&parameter) => false,
            _ => {
                return Err(Error::Behind(format!(
                    "launch template `{}` in `{}` (of group `{}`) launches `{}` with its default version {}, but channel `{parameter}` holds `{}`; publish the channel first (`imagectl publish ... --roll`) so that the template follows it",
                    lt.name,
                    l.region,
                    l.group,
                    lt.images
                        .get(&lt.default_version)
                        .map_or("no image", String::as_str),
                    lt.default_version,
                    holds.as_deref().unwrap_or("nothing"),
                )))
            }
        };
        // A numbered group moves to the new version and can go back to
        // its old one; `$Default`/`$Latest` (or a parameter resolved at
        // launch) already launches the new image and cannot roll back.
        let numbered = pinned && l.spec.number().is_some();
        let spec = TemplateSpec {
            id: Some(lt.id.clone()).filter(|i| !i.is_empty()),
            name: Some(lt.name.clone()),
            version: lt.default_version.to_string(),
        };
        out.push(Planned {
            request: RefreshRequest {
                desired: numbered.then_some((spec, lt.default_version)),
                min_healthy_percentage: i32::from(settings.min_healthy_percentage),
                instance_warmup: settings
                    .instance_warmup_secs
                    .map(|s| i32::try_from(s).unwrap_or(i32::MAX)),
                skip_matching: numbered,
                auto_rollback: numbered,
            },
            version: lt.default_version,
            located: l,
        });
    }
    Ok(out)
}

/// A refresh that was started.
#[derive(Debug, Clone, Serialize)]
pub struct Started {
    /// The region.
    pub region: String,
    /// The group.
    pub group: String,
    /// The refresh's ID.
    pub id: String,
    /// The template version the group launches once refreshed.
    pub version: i64,
    /// Whether Auto Scaling rolls the group back if the refresh fails.
    pub auto_rollback: bool,
}

/// Starts every planned refresh.
pub async fn start(session: &Session, planned: &[Planned]) -> Result<Vec<Started>, Error> {
    let mut started: Vec<Started> = Vec::new();
    for p in planned {
        let l = &p.located;
        let id = session
            .autoscaling(&l.region)
            .start_refresh(&l.group, &p.request)
            .await
            .map_err(|error| Error::Start {
                error,
                started: started
                    .iter()
                    .map(|s| format!("{} ({})", s.group, s.region))
                    .collect(),
            })?;
        if !p.request.auto_rollback {
            tracing::warn!(
                "rollout: {} ({}) launches `{}` version `{}`: its refresh replaces every instance and cannot roll back by itself; pin the group to a numbered version for skip matching and auto rollback",
                l.group,
                l.region,
                l.template,
                l.spec.version
            );
        }
        tracing::info!(
            "rollout: {} ({}): instance refresh {id} started, to template `{}` version {}",
            l.group,
            l.region,
            l.template,
            p.version
        );
        started.push(Started {
            region: l.region.clone(),
            group: l.group.clone(),
            id,
            version: p.version,
            auto_rollback: p.request.auto_rollback,
        });
    }
    Ok(started)
}

/// How one refresh ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The region.
    pub region: String,
    /// The group.
    pub group: String,
    /// The refresh's ID.
    pub id: String,
    /// Its final status.
    pub status: String,
    /// Why, when AWS says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it was rolled back, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback_reason: Option<String>,
    /// Percentage of instances replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percentage: Option<i32>,
}

impl Outcome {
    fn of(s: &Started, r: &Refresh) -> Outcome {
        Outcome {
            region: s.region.clone(),
            group: s.group.clone(),
            id: s.id.clone(),
            status: r.status.clone(),
            reason: r.reason.clone(),
            rollback_reason: r.rollback_reason.clone(),
            percentage: r.percentage,
        }
    }

    /// Why it did not succeed: for a rollback, why it was rolled back
    /// (the status reason then speaks of the rollback itself).
    fn why(&self) -> Option<&str> {
        if self.status.starts_with("Rollback") {
            self.rollback_reason.as_deref().or(self.reason.as_deref())
        } else {
            self.reason.as_deref().or(self.rollback_reason.as_deref())
        }
    }

    /// Whether the refresh succeeded.
    pub fn succeeded(&self) -> bool {
        self.status == "Successful"
    }

    /// The error line of a refresh that did not succeed.
    fn failure(&self, parameter: &str, rollback: &str) -> String {
        let reason = self.why().unwrap_or("no reason given");
        let after = match self.status.as_str() {
            "RollbackSuccessful" => format!(
                "Auto Scaling rolled the group back to its previous launch template version; channel `{parameter}` and the template's default version still name the new image: `{rollback}` moves them back"
            ),
            "Cancelled" => format!(
                "instances replaced before the cancel keep the new image; `{rollback}` moves the channel back"
            ),
            _ => format!(
                "the group may run old and new images side by side; `{rollback}` moves the channel back, then `imagectl rollout` refreshes the group again"
            ),
        };
        format!(
            "instance refresh {} of `{}` in `{}` ended `{}`: {reason}; {after}",
            self.id, self.group, self.region, self.status
        )
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rollout {} {}: {} ({}",
            self.group, self.region, self.status, self.id
        )?;
        if let Some(p) = self.percentage {
            write!(f, ", {p}% replaced")?;
        }
        f.write_str(")")?;
        if !self.succeeded() {
            if let Some(r) = self.why() {
                write!(f, ": {r}")?;
            }
        }
        Ok(())
    }
}

/// One line of a refresh's progress, for stderr.
fn progress(r: &Refresh) -> String {
    let mut line = r.status.clone();
    if let Some(p) = r.percentage {
        line.push_str(&format!(", {p}% done"));
    }
    if let Some(n) = r.to_update {
        line.push_str(&format!(
            ", {n} instance{} to update",
            if n == 1 { "" } else { "s" }
        ));
    }
    if let Some(reason) = r.reason.as_deref().filter(|s| !s.is_empty()) {
        line.push_str(&format!(": {reason}"));
    }
    line
}

/// Follows every started refresh to its end, logging each change of its
/// progress on stderr; the outcome of each, in the order started.
pub async fn follow(
    project: &Project,
    session: &Session,
    role: &str,
    started: &[Started],
) -> Result<Vec<Outcome>, Error> {
    let settings = &project.settings.rollout;
    let deadline = Instant::now() + Duration::from_secs(settings.timeout_minutes * 60);
    let poll = Duration::from_secs(settings.poll_secs);
    let mut last: BTreeMap<&str, String> = BTreeMap::new();
    let mut done: BTreeMap<&str, Outcome> = BTreeMap::new();
    loop {
        for s in started {
            if done.contains_key(s.id.as_str()) {
                continue;
            }
            let found = session
                .autoscaling(&s.region)
                .refreshes(&s.group, Some(&s.id), 1)
                .await?;
            let Some(r) = found.into_iter().next() else {
                continue;
            };
            let line = progress(&r);
            if last.get(s.id.as_str()) != Some(&line) {
                tracing::info!("rollout: {} ({}): {line}", s.group, s.region);
                last.insert(&s.id, line);
            }
            if r.is_done() {
                done.insert(&s.id, Outcome::of(s, &r));
            }
        }
        if done.len() == started.len() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                role: role.to_string(),
                groups: started
                    .iter()
                    .filter(|s| !done.contains_key(s.id.as_str()))
                    .map(|s| format!("`{}` ({})", s.group, s.region))
                    .collect(),
                minutes: settings.timeout_minutes,
            });
        }
        tokio::time::sleep(poll).await;
    }
    Ok(started
        .iter()
        .filter_map(|s| done.remove(s.id.as_str()))
        .collect())
}

/// Fails, naming each group and reason, unless every refresh succeeded.
pub fn verdict(
    project: &Project,
    role: &str,
    channel: &str,
    outcomes: &[Outcome],
) -> Result<(), Error> {
    let ended: Vec<Outcome> = outcomes
        .iter()
        .filter(|o| !o.succeeded())
        .cloned()
        .collect();
    if ended.is_empty() {
        return Ok(());
    }
    Err(Error::Ended {
        ended,
        parameter: publish::parameter(project, role, channel),
        rollback: format!("imagectl rollback {role} --channel {channel}"),
    })
}

/// The last refresh of one group.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The channel the group follows.
    pub channel: String,
    /// The region.
    pub region: String,
    /// The group.
    pub group: String,
    /// Its last refresh, if it ever had one.
    pub refresh: Option<Refresh>,
}

/// The last refresh of every group of `role` (of `channel`, or of every
/// channel with groups).
pub async fn status(
    project: &Project,
    session: &Session,
    role: &str,
    channel: Option<&str>,
) -> Result<Vec<Status>, Error> {
    let configured = project.settings.publish.auto_scaling_groups.get(role);
    let channels: Vec<String> = match channel {
        Some(c) => {
            publish::check_channel(project, c)?;
            vec![c.to_string()]
        }
        None => configured
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default(),
    };
    if channels.is_empty() {
        return Err(Error::NoneConfigured(role.to_string()));
    }
    let mut out = Vec::new();
    for c in channels {
        for l in locate(project, session, role, &c).await? {
            let refresh = session
                .autoscaling(&l.region)
                .refreshes(&l.group, None, 1)
                .await?
                .into_iter()
                .next();
            out.push(Status {
                channel: c.clone(),
                region: l.region,
                group: l.group,
                refresh,
            });
        }
    }
    Ok(out)
}
