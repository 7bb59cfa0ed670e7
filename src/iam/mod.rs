//! Least-privilege IAM policies for the jobs that run imagectl: exactly the
//! actions imagectl and Packer call, no wildcard actions, every write scoped
//! by resource and by the conditions IAM evaluates for it (tags imagectl
//! puts on what it creates, the build network, IMDSv2, the KMS key), so
//! that a job can touch only what imagectl made for it. Checked by
//! `tests/integration/iam.rs` with IAM's own evaluation rules and with
//! cloudsplaining; moto proves the actions suffice.
//!
//! The build job's statements live in `iam/build.rs`, the instance
//! profile's in `iam/instance.rs`.

mod build;
mod instance;

pub use instance::Error;

use serde_json::{json, Value};

use imagectl_core::names::tags;
use imagectl_core::project::Project;
use imagectl_core::role::Role;

/// The jobs a policy can be printed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Job {
    /// Read-only, for pull requests: `plan`.
    Plan,
    /// `bases update` and `build`, imagectl and Packer; writes no channel.
    Build,
    /// `publish`, `promote`, `rollback`, `images`: the channels named with
    /// `--channel`, or every channel.
    Publish,
    /// `prune`: images imagectl built, never others.
    Prune,
    /// `sweep`: what builds left behind, found by imagectl's tags.
    Sweep,
    /// `sweep --untagged`, break-glass: images and snapshots of builds
    /// killed before they could tag them, which IAM cannot tell from
    /// anybody else's.
    SweepUntagged,
    /// Not a job: the instance profile of ROLE's instances, what
    /// `imagectl-agent` calls at boot (`--env` for one environment).
    Instance,
}

/// Every job.
pub const JOBS: [Job; 6] = [
    Job::Plan,
    Job::Build,
    Job::Publish,
    Job::Prune,
    Job::Sweep,
    Job::SweepUntagged,
];

/// What an instance policy is for: the role, and the environment (every
/// environment when `None`).
pub type Instance<'a> = (&'a Role, Option<&'a str>);

/// The policy document for `job`; `channels` limits `publish` to those
/// channels (every channel when empty); `instance` is the role (and
/// environment) of [`Job::Instance`], which needs one.
pub fn policy(
    project: &Project,
    job: Job,
    channels: &[String],
    instance: Option<Instance>,
) -> Result<Value, Error> {
    let n = Names::of(project);
    let statements = match job {
        Job::Plan => plan(&n),
        Job::Build => build::statements(project, &n),
        Job::Publish => {
            let all = &project.settings.publish.channels;
            let channels = if channels.is_empty() { all } else { channels };
            let mut st = publish(&n, channels);
            st.push(lifecycle(project, channels));
            // Publishing verifies each image against its signed
            // provenance (read with ReadChannels, below the prefix).
            st.extend(provenance_key(project, "VerifyProvenance", "kms:Verify"));
            st.extend(roll(project, channels));
            st
        }
        Job::Prune => prune(&n),
        Job::Sweep => sweep(),
        Job::SweepUntagged => sweep_untagged(),
        Job::Instance => {
            let (role, env) = instance.ok_or(Error::NoRole)?;
            instance::statements(role, env, &project.settings.aws.regions())?
        }
    };
    Ok(json!({"Version": "2012-10-17", "Statement": statements}))
}

/// Using the provenance key (`[provenance] kms_key`, in the home region
/// only) for `action` (`kms:Sign` or `kms:Verify`) of raw messages, and
/// describing it to learn its algorithm; nothing when no key is set.
fn provenance_key(project: &Project, sid: &str, action: &str) -> Option<Value> {
    let s = &project.settings;
    let key = s.provenance.kms_key.as_deref()?;
    let home = &s.aws.region;
    let actions = [action, "kms:DescribeKey"];
    Some(if key.starts_with("alias/") {
        // An alias's key has an ARN of its own, unknown here.
        allow_if(
            sid,
            &actions,
            format!("arn:aws:kms:{home}:*:key/*"),
            json!({"ForAnyValue:StringEquals": {"kms:ResourceAliases": key}}),
        )
    } else if key.starts_with("arn:") {
        allow(sid, &actions, key)
    } else {
        allow(sid, &actions, format!("arn:aws:kms:{home}:*:key/{key}"))
    })
}

/// A statement allowing `actions` on `resources`.
fn allow(sid: &str, actions: &[&str], resources: impl Into<Value>) -> Value {
    json!({"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources.into()})
}

/// A statement allowing `actions` on `resources` when `condition` holds.
fn allow_if(sid: &str, actions: &[&str], resources: impl Into<Value>, condition: Value) -> Value {
    let mut st = allow(sid, actions, resources);
    st["Condition"] = condition;
    st
}

/// Resources that carry imagectl's tag `key` (set, whatever its value).
fn tagged(key: &str) -> Value {
    json!({"Null": {format!("ec2:ResourceTag/{key}"): "false"}})
}

/// EC2 resource ARNs of `kinds` (`image`, `snapshot`: no account in their
/// ARN; the rest: any account of the partition's, since policies are
/// attached in one account anyway).
fn ec2_arns(kinds: &[&str]) -> Vec<String> {
    kinds
        .iter()
        .map(|k| match *k {
            "image" | "snapshot" => format!("arn:aws:ec2:*::{k}/*"),
            other => format!("arn:aws:ec2:*:*:{other}/*"),
        })
        .collect()
}

/// The parameter ARNs several jobs share.
struct Names {
    /// Every parameter below the prefix.
    parameters: String,
    /// The prefix itself (for `GetParametersByPath`).
    parameter_path: String,
    /// The prefix without its leading `/`.
    prefix: String,
}

impl Names {
    fn of(project: &Project) -> Names {
        let prefix = project
            .settings
            .publish
            .prefix
            .trim_start_matches('/')
            .to_string();
        Names {
            parameters: format!("arn:aws:ssm:*:*:parameter/{prefix}/*"),
            parameter_path: format!("arn:aws:ssm:*:*:parameter/{prefix}"),
            prefix,
        }
    }

    fn read_channels(&self) -> Value {
        allow(
            "ReadChannels",
            &[
                "ssm:GetParameter",
                "ssm:GetParameters",
                "ssm:GetParameterHistory",
                "ssm:GetParametersByPath",
            ],
            json!([self.parameters, self.parameter_path]),
        )
    }

    /// The recorded inputs, signed provenance and SBOM of builds,
    /// `PREFIX/ROLE/{inputs,provenance,sbom}/HASH`: never a channel.
    fn record_inputs(&self) -> Value {
        allow(
            "RecordInputs",
            &["ssm:PutParameter"],
            json!([
                format!("arn:aws:ssm:*:*:parameter/{}/*/inputs/*", self.prefix),
                format!("arn:aws:ssm:*:*:parameter/{}/*/provenance/*", self.prefix),
                format!("arn:aws:ssm:*:*:parameter/{}/*/sbom/*", self.prefix),
            ]),
        )
    }

    /// The parameters of `channel` of every role.
    fn channel(&self, channel: &str) -> String {
        format!("arn:aws:ssm:*:*:parameter/{}/*/{channel}", self.prefix)
    }
}

fn plan(n: &Names) -> Vec<Value> {
    vec![
        allow("Describe", &["ec2:DescribeImages"], "*"),
        allow("ReadChannels", &["ssm:GetParameters"], n.parameters.clone()),
    ]
}

/// Channels: reading all of them, writing only `channels`, and moving
/// only the launch templates tagged with one of them.
fn publish(n: &Names, channels: &[String]) -> Vec<Value> {
    let writable: Vec<String> = channels.iter().map(|c| n.channel(c)).collect();
    vec![
        n.read_channels(),
        allow("WriteChannels", &["ssm:PutParameter"], json!(writable)),
        allow(
            "Describe",
            &[
                "ec2:DescribeImages",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeLaunchTemplateVersions",
            ],
            "*",
        ),
        // Launch template ARNs hold IDs, not names: the template says
        // which channel it follows in its `imagectl:channel` tag.
        allow_if(
            "FollowChannels",
            &[
                "ec2:CreateLaunchTemplateVersion",
                "ec2:ModifyLaunchTemplate",
            ],
            "arn:aws:ec2:*:*:launch-template/*",
            json!({"StringEquals": {format!("aws:ResourceTag/{}", tags::CHANNEL): channels}}),
        ),
    ]
}

/// What publishing does to the images it moves a channel between (see
/// `publish/lifecycle.rs`), on imagectl's images only: deprecating the one
/// no channel holds any more (unless `deprecate_after_days = 0`),
/// cancelling the deprecation of one a channel holds again, and, when one
/// of `channels` is in `protect_channels`, protecting that channel's
/// images from deregistration.
fn lifecycle(project: &Project, channels: &[String]) -> Value {
    let publish = &project.settings.publish;
    let mut actions = vec!["ec2:DisableImageDeprecation"];
    if publish.deprecate_after_days.is_some() {
        actions.insert(0, "ec2:EnableImageDeprecation");
    }
    if channels
        .iter()
        .any(|c| publish.protect_channels.contains(c))
    {
        actions.push("ec2:EnableImageDeregistrationProtection");
    }
    allow_if(
        "LifecycleOfImagectlImages",
        &actions,
        json!(ec2_arns(&["image"])),
        tagged(tags::ROLE),
    )
}

/// `--roll` and `imagectl rollout`: instance refreshes of exactly the
/// groups configured for `channels` (none when no group is). Starting a
/// refresh with a desired configuration makes Auto Scaling check that the
/// caller may launch from that template (`ec2:RunInstances` on the
/// template only: no instance, volume or interface, so nothing can be
/// launched with it); launch templates say their channel in a tag.
fn roll(project: &Project, channels: &[String]) -> Vec<Value> {
    let groups: std::collections::BTreeSet<String> = project
        .settings
        .publish
        .auto_scaling_groups
        .values()
        .flat_map(|by_channel| {
            by_channel
                .iter()
                .filter(|(c, _)| channels.contains(c))
                .flat_map(|(_, names)| names.iter().cloned())
        })
        .collect();
    if groups.is_empty() {
        return Vec::new();
    }
    let arns: Vec<String> = groups
        .iter()
        .map(|g| format!("arn:aws:autoscaling:*:*:autoScalingGroup:*:autoScalingGroupName/{g}"))
        .collect();
    vec![
        allow(
            "ReadGroups",
            &[
                "autoscaling:DescribeAutoScalingGroups",
                "autoscaling:DescribeInstanceRefreshes",
            ],
            "*",
        ),
        allow(
            "RefreshChannelGroups",
            &["autoscaling:StartInstanceRefresh"],
            json!(arns),
        ),
        allow_if(
            "LaunchFromChannelTemplates",
            &["ec2:RunInstances"],
            "arn:aws:ec2:*:*:launch-template/*",
            json!({"StringEquals": {format!("aws:ResourceTag/{}", tags::CHANNEL): channels}}),
        ),
    ]
}

fn prune(n: &Names) -> Vec<Value> {
    vec![
        n.read_channels(),
        allow(
            "Describe",
            &[
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeLaunchTemplates",
                "ec2:DescribeLaunchTemplateVersions",
            ],
            "*",
        ),
        allow_if(
            "DeleteOnlyImagectlImages",
            &["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
            json!(ec2_arns(&["image", "snapshot"])),
            tagged(tags::ROLE),
        ),
        // Only from an image it deletes: one nothing references any more.
        allow_if(
            "UnprotectOnlyImagectlImages",
            &["ec2:DisableImageDeregistrationProtection"],
            json!(ec2_arns(&["image"])),
            tagged(tags::ROLE),
        ),
    ]
}

/// What a sweep reads to find orphans, in either mode.
const SWEEP_DESCRIBE: [&str; 6] = [
    "ec2:DescribeImages",
    "ec2:DescribeInstances",
    "ec2:DescribeKeyPairs",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSnapshots",
    "ec2:DescribeVolumes",
];

fn sweep() -> Vec<Value> {
    vec![
        allow("Describe", &SWEEP_DESCRIBE, "*"),
        allow_if(
            "RemoveWhatBuildsTagged",
            &[
                "ec2:TerminateInstances",
                "ec2:DeleteVolume",
                "ec2:DeleteSecurityGroup",
            ],
            json!(ec2_arns(&["instance", "volume", "security-group"])),
            tagged(tags::BUILD),
        ),
        allow_if(
            "RemoveImagesOfBuilds",
            &["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
            json!(ec2_arns(&["image", "snapshot"])),
            tagged(tags::ROLE),
        ),
        // Packer's key pairs carry no tags; their names are in their ARN.
        allow(
            "RemoveTemporaryKeyPairs",
            &["ec2:DeleteKeyPair"],
            "arn:aws:ec2:*:*:key-pair/imagectl-*",
        ),
    ]
}

/// Break-glass: an image a build was killed before tagging is known only by
/// its name, which IAM cannot match, so this removes any image and
/// snapshot. imagectl itself only ever removes images named
/// `imagectl-ROLE-HASH12-STAMP` with no imagectl tags, and their snapshots.
fn sweep_untagged() -> Vec<Value> {
    vec![
        allow("Describe", &SWEEP_DESCRIBE, "*"),
        allow(
            "RemoveUntaggedImagesOfKilledBuilds",
            &["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
            json!(ec2_arns(&["image", "snapshot"])),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        let settings = imagectl_core::settings::parse_settings(
            "[aws]\nregion = \"eu-west-1\"\ninstance_profile = \"imagectl-build\"\nkms_key = \"alias/k\"\nbuild_subnet = \"s\"\nbuild_security_group = \"g\"\n[bases.debian-12]\nowners = [\"136693071363\"]\nname = \"debian-12-amd64-*\"\narchitecture = \"x86_64\"\n",
        )
        .unwrap();
        Project {
            root: std::path::PathBuf::from("/nonexistent"),
            settings,
        }
    }

    #[test]
    fn no_wildcard_actions() {
        for job in JOBS {
            let p = policy(&project(), job, &[], None).unwrap();
            for st in p["Statement"].as_array().unwrap() {
                let actions: Vec<&str> = match &st["Action"] {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    other => panic!("{other}"),
                };
                for a in actions {
                    assert!(!a.contains('*'), "{job:?}: {a}");
                    assert!(
                        a.split_once(':')
                            .is_some_and(|(svc, act)| !svc.is_empty() && !act.is_empty()),
                        "{a}"
                    );
                }
            }
        }
    }

    #[test]
    fn publish_writes_only_the_channels_named() {
        let p = policy(&project(), Job::Publish, &["dev".to_string()], None).unwrap();
        let text = p.to_string();
        assert!(text.contains("parameter/imagectl/*/dev"), "{text}");
        assert!(!text.contains("parameter/imagectl/*/prod"), "{text}");
        let all = policy(&project(), Job::Publish, &[], None)
            .unwrap()
            .to_string();
        for c in ["dev", "staging", "prod"] {
            assert!(all.contains(&format!("parameter/imagectl/*/{c}")), "{all}");
        }
    }
}
