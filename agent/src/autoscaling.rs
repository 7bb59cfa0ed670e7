//! Telling EC2 Auto Scaling how the boot went, once it is over: find the
//! instance's group (instance metadata tags, else
//! `DescribeAutoScalingInstances`), then, as the role's `[boot] on_failure`
//! and `lifecycle_hook` say, mark a failed instance unhealthy, abandon or
//! continue its launch lifecycle hook, or leave it alone.
//!
//! Without this, a failed boot only fails a unit nobody looks at: the group
//! sees a running instance (EC2 status checks pass), keeps it in service,
//! and a launch hook times out into its default result.

use std::future::Future;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_sdk_autoscaling::error::{ProvideErrorMetadata, SdkError};
use serde::Serialize;
use tokio::time::Instant;

use crate::aws::{self, AwsError, MAX_ATTEMPTS};
use crate::config::OnFailure;
use crate::log::log;

/// The IMDS path listing the instance's tag keys, one a line, when the
/// launch template enables instance metadata tags (404 otherwise).
pub const TAGS_PATH: &str = "/latest/meta-data/tags/instance";

/// The tag Auto Scaling puts on each instance of a group: its name.
pub const GROUP_TAG: &str = "aws:autoscaling:groupName";

/// How long the step may take after a failed boot when less than that is
/// left of the boot deadline (or the deadline is what failed it): a failed
/// instance must still be reported. The unit's `TimeoutStartSec` (330 s)
/// leaves 30 s beyond the default deadline (300 s).
pub const AFTER_FAILURE: Duration = Duration::from_secs(20);

/// How the group was found, as the report says.
pub const BY_TAGS: &str = "instance metadata tags";
/// How the group was found, as the report says.
pub const BY_API: &str = "DescribeAutoScalingInstances";

/// The result a lifecycle action is completed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifecycleResult {
    /// The instance goes into service.
    Continue,
    /// The instance is terminated (and replaced).
    Abandon,
}

/// One thing the agent tells Auto Scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `SetInstanceHealth` `Unhealthy`, not waiting for the grace period.
    SetUnhealthy,
    /// `CompleteLifecycleAction` with this result.
    Complete(LifecycleResult),
}

impl Action {
    /// The call as the report lists it.
    pub fn describe(self) -> &'static str {
        match self {
            Action::SetUnhealthy => "SetInstanceHealth Unhealthy",
            Action::Complete(LifecycleResult::Continue) => "CompleteLifecycleAction CONTINUE",
            Action::Complete(LifecycleResult::Abandon) => "CompleteLifecycleAction ABANDON",
        }
    }
}

/// What to tell Auto Scaling about an instance in a group, in order.
pub fn plan(boot_ok: bool, on_failure: OnFailure, hook: Option<&str>) -> Vec<Action> {
    use Action::*;
    use LifecycleResult::*;
    match (boot_ok, on_failure, hook) {
        (true, _, Some(_)) => vec![Complete(Continue)],
        (true, _, None) => vec![],
        (false, OnFailure::Stay, _) => vec![],
        (false, OnFailure::Replace, Some(_)) => vec![SetUnhealthy, Complete(Abandon)],
        (false, OnFailure::Replace, None) => vec![SetUnhealthy],
    }
}

/// What the listing of the instance's tags in IMDS leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterTags {
    /// The group's tag is listed: read it.
    ReadGroupTag,
    /// Tags are listed, the group's is not: the instance is in no group,
    /// and no API call is needed to know it.
    NoGroup,
    /// No listing: instance metadata tags are not enabled (404) or IMDS
    /// failed. The Auto Scaling API knows.
    AskAutoScaling,
}

/// Decides from the answer to `GET /latest/meta-data/tags/instance`.
pub fn after_tag_listing(listing: Result<&str, &AwsError>) -> AfterTags {
    match listing {
        Ok(keys) if keys.lines().any(|k| k.trim() == GROUP_TAG) => AfterTags::ReadGroupTag,
        Ok(_) => AfterTags::NoGroup,
        Err(_) => AfterTags::AskAutoScaling,
    }
}

/// Why telling Auto Scaling failed. Carries no parameter value: only the
/// instance, group and hook names and what the service answered.
#[derive(Debug, thiserror::Error)]
pub enum AutoScalingError {
    /// A call failed after the SDK's retries.
    #[error("EC2 Auto Scaling {call} for instance `{instance}`{target} failed after up to {MAX_ATTEMPTS} attempts: {reason}{help}")]
    Call {
        /// The call (`SetInstanceHealth Unhealthy`, ...).
        call: &'static str,
        /// The instance ID.
        instance: String,
        /// ` (group `g`, hook `h`)`, when the call names them.
        target: String,
        /// The service's error code and message, or the transport error.
        reason: String,
        /// What to do, when the error code says.
        help: String,
    },
    /// The hook cannot be completed without the group's name.
    #[error("cannot complete lifecycle hook `{hook}`: the instance's Auto Scaling group is not known (the lookup failed)")]
    NoGroup {
        /// The hook.
        hook: String,
    },
    /// The time bound passed.
    #[error("{bound} passed during {what}")]
    Timeout {
        /// Which bound: the boot deadline, or the bound after a failed boot.
        bound: String,
        /// What was under way.
        what: String,
    },
}

/// The `autoscaling` object of the boot report: what the agent found and
/// told, never a parameter value.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AutoScalingReport {
    /// The instance's group; `null` when it is in none, or the lookup failed.
    pub group: Option<String>,
    /// How the group (or its absence) was found: `instance metadata tags`
    /// or `DescribeAutoScalingInstances`; `null` when the lookup failed.
    pub found_by: Option<&'static str>,
    /// `[boot] lifecycle_hook`.
    pub lifecycle_hook: Option<String>,
    /// `[boot] on_failure`: `replace` or `stay`.
    pub on_failure: &'static str,
    /// The calls Auto Scaling accepted, in order
    /// (`SetInstanceHealth Unhealthy`, `CompleteLifecycleAction ABANDON`).
    pub told: Vec<&'static str>,
    /// What that amounts to, in a sentence.
    pub outcome: String,
    /// What went wrong: a failed lookup (a warning when nothing had to be
    /// told), failed calls.
    pub errors: Vec<String>,
}

/// What the step is asked to do.
pub struct Request<'a> {
    /// The instance ID.
    pub instance: &'a str,
    /// Whether every earlier step passed.
    pub boot_ok: bool,
    /// `[boot] lifecycle_hook`.
    pub hook: Option<&'a str>,
    /// `[boot] on_failure`.
    pub on_failure: OnFailure,
    /// When the step must be over.
    pub until: Instant,
    /// That bound in words, for the error when it passes.
    pub bound: String,
}

/// The Auto Scaling client, built on first use from the boot's AWS
/// configuration (loaded then, when the parameters step did not need it).
/// A boot whose group IMDS names, with nothing to tell, builds none.
pub struct Api {
    sdk: Option<SdkConfig>,
    region: String,
    client: Option<aws_sdk_autoscaling::Client>,
}

impl Api {
    /// `sdk`: the configuration the parameters step loaded, if it did.
    pub fn new(sdk: Option<SdkConfig>, region: &str) -> Api {
        Api {
            sdk,
            region: region.to_string(),
            client: None,
        }
    }

    async fn client(&mut self) -> aws_sdk_autoscaling::Client {
        if let Some(c) = &self.client {
            return c.clone();
        }
        let config = match &self.sdk {
            Some(c) => c.clone(),
            None => {
                let c = aws::sdk_config(&self.region).await;
                self.sdk = Some(c.clone());
                c
            }
        };
        let client = aws::autoscaling(&config);
        self.client = Some(client.clone());
        client
    }
}

/// The group as the lookup found it.
enum Group {
    In(String),
    NotInAny,
    Unknown,
}

/// Finds the group and tells Auto Scaling what `req` calls for. Returns
/// the report and `Err` when something the agent had to tell was not told
/// (for a healthy boot, that fails the boot).
pub async fn tell(
    req: &Request<'_>,
    imds: &aws_config::imds::Client,
    api: &mut Api,
) -> (AutoScalingReport, Result<(), AutoScalingError>) {
    let mut report = AutoScalingReport {
        group: None,
        found_by: None,
        lifecycle_hook: req.hook.map(str::to_string),
        on_failure: req.on_failure.as_str(),
        told: Vec::new(),
        outcome: String::new(),
        errors: Vec::new(),
    };
    let actions = plan(req.boot_ok, req.on_failure, req.hook);
    let lookup = bounded(
        req,
        "the Auto Scaling group lookup",
        find_group(imds, api, req.instance),
    )
    .await;
    let group = match lookup {
        Ok((Some(g), by)) => {
            log(&format!("autoscaling: in group `{g}` (from {by})"));
            report.group = Some(g.clone());
            report.found_by = Some(by);
            Group::In(g)
        }
        Ok((None, by)) => {
            log(&format!(
                "autoscaling: not in an Auto Scaling group (from {by})"
            ));
            report.found_by = Some(by);
            Group::NotInAny
        }
        Err(e) => {
            // After a healthy boot without a hook nothing depended on it.
            let kind = if actions.is_empty() {
                "warning"
            } else {
                "error"
            };
            log(&format!(
                "autoscaling: {kind}: cannot find the Auto Scaling group: {e}"
            ));
            report
                .errors
                .push(format!("cannot find the Auto Scaling group: {e}"));
            Group::Unknown
        }
    };
    if matches!(group, Group::NotInAny) {
        report.outcome = "not in an Auto Scaling group: nothing to tell".to_string();
        return (report, Ok(()));
    }
    if !req.boot_ok && req.on_failure == OnFailure::Stay {
        report.outcome = match req.hook {
            Some(h) => format!("the boot failed and `on_failure` is `stay`: Auto Scaling was told nothing and the instance is left alone for debugging; lifecycle hook `{h}` times out with its default result"),
            None => "the boot failed and `on_failure` is `stay`: Auto Scaling was told nothing and the instance is left alone for debugging".to_string(),
        };
        log(&format!("autoscaling: {}", report.outcome));
        return (report, Ok(()));
    }
    if actions.is_empty() {
        report.outcome = "healthy, no lifecycle hook: nothing to tell".to_string();
        return (report, Ok(()));
    }
    let mut first_error = None;
    for action in actions {
        let r = bounded(req, action.describe(), call(action, req, &group, api)).await;
        match r {
            Ok(()) => {
                log(&format!("autoscaling: told {}", action.describe()));
                report.told.push(action.describe());
            }
            Err(e) => {
                log(&format!("autoscaling: error: {e}"));
                report.errors.push(e.to_string());
                first_error.get_or_insert(e);
            }
        }
    }
    report.outcome = outcome(req, &report, first_error.is_none());
    match first_error {
        Some(e) => (report, Err(e)),
        None => (report, Ok(())),
    }
}

fn outcome(req: &Request<'_>, report: &AutoScalingReport, all_told: bool) -> String {
    match (req.boot_ok, all_told) {
        (true, true) => format!(
            "healthy: lifecycle hook `{}` continued",
            req.hook.unwrap_or_default()
        ),
        (true, false) => "healthy, but the lifecycle hook was not completed, so the boot fails: Auto Scaling was not told the instance is unhealthy; the hook times out with its default result".to_string(),
        (false, true) => "the boot failed: marked unhealthy, so that Auto Scaling replaces the instance".to_string(),
        (false, false) if report.told.is_empty() => "the boot failed, and Auto Scaling could not be told".to_string(),
        (false, false) => format!(
            "the boot failed, and Auto Scaling was told only: {}",
            report.told.join(", ")
        ),
    }
}

/// Runs `fut` until the request's bound.
async fn bounded<T>(
    req: &Request<'_>,
    what: &str,
    fut: impl Future<Output = Result<T, AutoScalingError>>,
) -> Result<T, AutoScalingError> {
    tokio::time::timeout_at(req.until, fut)
        .await
        .unwrap_or_else(|_| {
            Err(AutoScalingError::Timeout {
                bound: req.bound.clone(),
                what: what.to_string(),
            })
        })
}

/// The instance's group (`None`: in none) and how that was found.
async fn find_group(
    imds: &aws_config::imds::Client,
    api: &mut Api,
    instance: &str,
) -> Result<(Option<String>, &'static str), AutoScalingError> {
    let listing = aws::imds_get(imds, TAGS_PATH).await;
    match after_tag_listing(listing.as_deref()) {
        AfterTags::NoGroup => return Ok((None, BY_TAGS)),
        AfterTags::ReadGroupTag => {
            let path = format!("{TAGS_PATH}/{GROUP_TAG}");
            match aws::imds_get(imds, &path).await {
                Ok(name) if !name.trim().is_empty() => {
                    return Ok((Some(name.trim().to_string()), BY_TAGS))
                }
                Ok(_) => log(&format!(
                    "autoscaling: instance metadata tag `{GROUP_TAG}` is empty; asking {BY_API}"
                )),
                Err(e) => log(&format!("autoscaling: {e}; asking {BY_API}")),
            }
        }
        AfterTags::AskAutoScaling => match &listing {
            Err(AwsError::Status { status: 404, .. }) => log(&format!(
                "autoscaling: instance metadata tags are not enabled; asking {BY_API}"
            )),
            Err(e) => log(&format!("autoscaling: {e}; asking {BY_API}")),
            Ok(_) => {}
        },
    }
    let out = api
        .client()
        .await
        .describe_auto_scaling_instances()
        .instance_ids(instance)
        .send()
        .await
        .map_err(|e| call_error(BY_API, instance, String::new(), &e))?;
    let group = out
        .auto_scaling_instances()
        .iter()
        .find(|i| i.instance_id() == Some(instance))
        .and_then(|i| i.auto_scaling_group_name())
        .map(str::to_string);
    Ok((group, BY_API))
}

/// Makes one call.
async fn call(
    action: Action,
    req: &Request<'_>,
    group: &Group,
    api: &mut Api,
) -> Result<(), AutoScalingError> {
    let instance = req.instance;
    match action {
        Action::SetUnhealthy => {
            // Only the instance is named: it is worth trying when the
            // lookup failed, since a failed instance left in service is
            // the outcome to avoid.
            api.client()
                .await
                .set_instance_health()
                .instance_id(instance)
                .health_status("Unhealthy")
                .should_respect_grace_period(false)
                .send()
                .await
                .map_err(|e| call_error(action.describe(), instance, String::new(), &e))?;
        }
        Action::Complete(result) => {
            let hook = req.hook.unwrap_or_default();
            let Group::In(group) = group else {
                return Err(AutoScalingError::NoGroup {
                    hook: hook.to_string(),
                });
            };
            let result = match result {
                LifecycleResult::Continue => "CONTINUE",
                LifecycleResult::Abandon => "ABANDON",
            };
            api.client()
                .await
                .complete_lifecycle_action()
                .auto_scaling_group_name(group)
                .lifecycle_hook_name(hook)
                .instance_id(instance)
                .lifecycle_action_result(result)
                .send()
                .await
                .map_err(|e| {
                    call_error(
                        action.describe(),
                        instance,
                        format!(" (group `{group}`, hook `{hook}`)"),
                        &e,
                    )
                })?;
        }
    }
    Ok(())
}

fn call_error<E, R>(
    call: &'static str,
    instance: &str,
    target: String,
    e: &SdkError<E, R>,
) -> AutoScalingError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    let operation = call.split(' ').next().unwrap_or(call);
    let help = match e.code() {
        Some(c) if c.starts_with("AccessDenied") || c == "UnauthorizedOperation" => format!(
            "; the instance profile's role needs `autoscaling:{operation}` (see agent/README.md)"
        ),
        Some("ValidationError") if operation == "CompleteLifecycleAction" => "; check that `[boot] lifecycle_hook` names the group's launch lifecycle hook and that its heartbeat timeout is longer than a boot".to_string(),
        _ => String::new(),
    };
    AutoScalingError::Call {
        call,
        instance: instance.to_string(),
        target,
        reason: aws::reason(e),
        help,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use LifecycleResult::*;

    #[test]
    fn tags_listing_decides_whether_to_ask_the_api() {
        let listed = "Name\naws:autoscaling:groupName\naws:ec2launchtemplate:id\n";
        assert_eq!(after_tag_listing(Ok(listed)), AfterTags::ReadGroupTag);
        assert_eq!(
            after_tag_listing(Ok("aws:autoscaling:groupName")),
            AfterTags::ReadGroupTag
        );
        // Listed, without the group's tag: in no group, no API call.
        assert_eq!(after_tag_listing(Ok("Name\nteam")), AfterTags::NoGroup);
        assert_eq!(after_tag_listing(Ok("")), AfterTags::NoGroup);
        // A tag whose name only starts like it is not it.
        assert_eq!(
            after_tag_listing(Ok("aws:autoscaling:groupNameX")),
            AfterTags::NoGroup
        );
        // Tags not enabled in instance metadata, or IMDS failing: ask.
        let not_enabled = AwsError::Status {
            path: TAGS_PATH.to_string(),
            status: 404,
        };
        assert_eq!(
            after_tag_listing(Err(&not_enabled)),
            AfterTags::AskAutoScaling
        );
        let failing = AwsError::Imds {
            path: TAGS_PATH.to_string(),
            reason: "timeout".to_string(),
        };
        assert_eq!(after_tag_listing(Err(&failing)), AfterTags::AskAutoScaling);
    }

    #[test]
    fn what_to_tell_follows_the_boot_and_the_role() {
        let (r, s) = (OnFailure::Replace, OnFailure::Stay);
        assert_eq!(plan(true, r, None), []);
        assert_eq!(plan(true, s, None), []);
        assert_eq!(plan(true, r, Some("launch")), [Complete(Continue)]);
        assert_eq!(plan(true, s, Some("launch")), [Complete(Continue)]);
        assert_eq!(plan(false, r, None), [SetUnhealthy]);
        assert_eq!(
            plan(false, r, Some("launch")),
            [SetUnhealthy, Complete(Abandon)]
        );
        assert_eq!(plan(false, s, None), []);
        assert_eq!(plan(false, s, Some("launch")), []);
    }

    #[test]
    fn calls_are_listed_as_the_report_says() {
        assert_eq!(SetUnhealthy.describe(), "SetInstanceHealth Unhealthy");
        assert_eq!(
            Complete(Abandon).describe(),
            "CompleteLifecycleAction ABANDON"
        );
        assert_eq!(
            Complete(Continue).describe(),
            "CompleteLifecycleAction CONTINUE"
        );
    }
}
