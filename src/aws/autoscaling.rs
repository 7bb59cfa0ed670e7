//! EC2 Auto Scaling: the groups a channel's instances run in, and their
//! instance refreshes (start one, read its progress).

use std::collections::BTreeMap;

use aws_sdk_autoscaling::error::ProvideErrorMetadata;
use aws_sdk_autoscaling::types::{
    DesiredConfiguration, LaunchTemplateSpecification, RefreshPreferences, RefreshStrategy,
};

use super::error::err;
use super::Error;

/// Auto Scaling in one region.
#[derive(Debug, Clone)]
pub struct AutoScaling {
    pub(super) client: aws_sdk_autoscaling::Client,
    /// The region.
    pub region: String,
}

/// An Auto Scaling group as a rollout needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// The launch template it launches from, if it names one directly (not
    /// through a mixed instances policy).
    pub launch_template: Option<TemplateSpec>,
    /// How many instances it has.
    pub instances: usize,
    /// Its tags.
    pub tags: BTreeMap<String, String>,
}

/// A group's launch template: by ID or name, and a version (a number,
/// `$Default` or `$Latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// `lt-...`.
    pub id: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// The version as the group names it (`$Default` when unset).
    pub version: String,
}

impl TemplateSpec {
    /// The version number, when the group names one (not `$Default` or
    /// `$Latest`).
    pub fn number(&self) -> Option<i64> {
        self.version.parse().ok()
    }
}

/// What an instance refresh is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRequest {
    /// The launch template (ID or name) and version the group moves to;
    /// `None` keeps the group's own (a `$Default` group already launches
    /// the version publishing made the default).
    pub desired: Option<(TemplateSpec, i64)>,
    /// `MinHealthyPercentage`.
    pub min_healthy_percentage: i32,
    /// `InstanceWarmup`, seconds; the group's default when `None`.
    pub instance_warmup: Option<i32>,
    /// `SkipMatching`: instances already on the desired version stay.
    pub skip_matching: bool,
    /// `AutoRollback`.
    pub auto_rollback: bool,
}

/// An instance refresh as `DescribeInstanceRefreshes` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refresh {
    /// Its ID.
    pub id: String,
    /// `Pending`, `InProgress`, `Successful`, `Failed`, `Cancelling`,
    /// `Cancelled`, `RollbackInProgress`, `RollbackFailed`,
    /// `RollbackSuccessful`, `Baking`.
    pub status: String,
    /// Why it is in that status, when AWS says.
    pub reason: Option<String>,
    /// Percentage of instances replaced.
    pub percentage: Option<i32>,
    /// Instances still to replace.
    pub to_update: Option<i32>,
    /// When it started (RFC 3339).
    pub started: Option<String>,
    /// When it ended (RFC 3339).
    pub ended: Option<String>,
    /// Why it was rolled back, when it was.
    pub rollback_reason: Option<String>,
}

impl Refresh {
    /// Whether the refresh has ended (whatever the outcome).
    pub fn is_done(&self) -> bool {
        matches!(
            self.status.as_str(),
            "Successful" | "Failed" | "Cancelled" | "RollbackFailed" | "RollbackSuccessful"
        )
    }
}

/// Why a refresh could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another refresh of the group is under way.
    #[error("another instance refresh of `{group}` in `{region}` is in progress; wait for it to end (`imagectl rollout status`) or cancel it (`aws autoscaling cancel-instance-refresh --auto-scaling-group-name {group}`), then run this again")]
    InProgress {
        /// The group.
        group: String,
        /// The region.
        region: String,
    },
    /// Any other failure.
    #[error(transparent)]
    Aws(#[from] Error),
}

fn time(t: Option<&aws_smithy_types::DateTime>) -> Option<String> {
    t.and_then(|t| t.fmt(aws_smithy_types::date_time::Format::DateTime).ok())
}

impl AutoScaling {
    /// The groups among `names` that exist in this region.
    pub async fn groups(&self, names: &[String]) -> Result<Vec<Group>, Error> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(names.to_vec()))
                .set_next_token(token.take())
                .send()
                .await
                .map_err(err("DescribeAutoScalingGroups", &self.region, None))?;
            for g in page.auto_scaling_groups() {
                let launch_template = g.launch_template().map(|lt| TemplateSpec {
                    id: lt.launch_template_id().map(String::from),
                    name: lt.launch_template_name().map(String::from),
                    version: lt.version().unwrap_or("$Default").to_string(),
                });
                out.push(Group {
                    name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
                    launch_template,
                    instances: g.instances().len(),
                    tags: g
                        .tags()
                        .iter()
                        .map(|t| {
                            (
                                t.key().unwrap_or_default().to_string(),
                                t.value().unwrap_or_default().to_string(),
                            )
                        })
                        .collect(),
                });
            }
            match page.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => return Ok(out),
            }
        }
    }

    /// Starts a rolling instance refresh of `group`; its ID.
    pub async fn start_refresh(
        &self,
        group: &str,
        request: &RefreshRequest,
    ) -> Result<String, StartError> {
        let preferences = RefreshPreferences::builder()
            .min_healthy_percentage(request.min_healthy_percentage)
            .set_instance_warmup(request.instance_warmup)
            .skip_matching(request.skip_matching)
            .auto_rollback(request.auto_rollback)
            .build();
        let desired = request.desired.as_ref().map(|(spec, version)| {
            DesiredConfiguration::builder()
                .launch_template(
                    LaunchTemplateSpecification::builder()
                        .set_launch_template_id(spec.id.clone())
                        .set_launch_template_name(if spec.id.is_some() {
                            None
                        } else {
                            spec.name.clone()
                        })
                        .version(version.to_string())
                        .build(),
                )
                .build()
        });
        let out = self
            .client
            .start_instance_refresh()
            .auto_scaling_group_name(group)
            .strategy(RefreshStrategy::Rolling)
            .set_desired_configuration(desired)
            .preferences(preferences)
            .send()
            .await;
        match out {
            Ok(o) => Ok(o.instance_refresh_id().unwrap_or_default().to_string()),
            Err(e) if e.code() == Some("InstanceRefreshInProgress") => {
                Err(StartError::InProgress {
                    group: group.to_string(),
                    region: self.region.clone(),
                })
            }
            Err(e) => Err(err("StartInstanceRefresh", &self.region, Some(group))(e).into()),
        }
    }

    /// The refreshes of `group`, newest first: the one with `id`, or the
    /// newest `max` of them.
    pub async fn refreshes(
        &self,
        group: &str,
        id: Option<&str>,
        max: i32,
    ) -> Result<Vec<Refresh>, Error> {
        let out = self
            .client
            .describe_instance_refreshes()
            .auto_scaling_group_name(group)
            .set_instance_refresh_ids(id.map(|i| vec![i.to_string()]))
            .max_records(max)
            .send()
            .await
            .map_err(err("DescribeInstanceRefreshes", &self.region, Some(group)))?;
        Ok(out
            .instance_refreshes()
            .iter()
            .map(|r| Refresh {
                id: r.instance_refresh_id().unwrap_or_default().to_string(),
                status: r
                    .status()
                    .map(|s| s.as_str().to_string())
                    .unwrap_or_default(),
                reason: r.status_reason().map(String::from),
                percentage: r.percentage_complete(),
                to_update: r.instances_to_update(),
                started: time(r.start_time()),
                ended: time(r.end_time()),
                rollback_reason: r
                    .rollback_details()
                    .and_then(|d| d.rollback_reason())
                    .map(String::from),
            })
            .collect())
    }
}
