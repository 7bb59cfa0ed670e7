//! Least-privilege IAM policies for the jobs that run imagectl: exactly the
//! actions imagectl and Packer call, no wildcard actions, scoped by resource
//! and tag conditions where AWS allows it.

use serde_json::{json, Value};

use imagectl_core::names::tags;
use imagectl_core::project::Project;

/// The jobs a policy can be printed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Job {
    /// Read-only, for pull requests: `plan`.
    Plan,
    /// `bases update` and `build`, imagectl and Packer.
    Build,
    /// `publish`, `promote`, `rollback`, `images`.
    Publish,
    /// `prune`.
    Prune,
    /// `sweep`.
    Sweep,
}

/// Every job.
pub const JOBS: [Job; 5] = [Job::Plan, Job::Build, Job::Publish, Job::Prune, Job::Sweep];

/// Actions that take no resource-level permissions: only `*` works.
const DESCRIBE: [&str; 10] = [
    "ec2:DescribeImages",
    "ec2:DescribeImageAttribute",
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeRegions",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSnapshots",
    "ec2:DescribeSubnets",
    "ec2:DescribeTags",
    "ec2:DescribeVolumes",
];

/// The policy document for `job`.
pub fn policy(project: &Project, job: Job) -> Value {
    let names = Names::of(project);
    let statements = match job {
        Job::Plan => plan(&names),
        Job::Build => build(project, &names),
        Job::Publish => publish(&names),
        Job::Prune => prune(&names),
        Job::Sweep => sweep(),
    };
    json!({"Version": "2012-10-17", "Statement": statements})
}

/// The resources and statements several jobs share.
struct Names {
    /// Every parameter below the prefix.
    parameters: String,
    /// The prefix itself (for `GetParametersByPath`).
    parameter_path: String,
    /// Only resources carrying imagectl's role tag.
    tagged: Value,
}

impl Names {
    fn of(project: &Project) -> Names {
        let prefix = project.settings.publish.prefix.trim_start_matches('/');
        Names {
            parameters: format!("arn:aws:ssm:*:*:parameter/{prefix}/*"),
            parameter_path: format!("arn:aws:ssm:*:*:parameter/{prefix}"),
            tagged: json!({"Null": {format!("ec2:ResourceTag/{}", tags::ROLE): "false"}}),
        }
    }

    fn read_channels(&self) -> Value {
        json!({
            "Sid": "ReadChannels",
            "Effect": "Allow",
            "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParameterHistory", "ssm:GetParametersByPath"],
            "Resource": [self.parameters, self.parameter_path],
        })
    }

    fn record_inputs(&self) -> Value {
        let prefix = self
            .parameter_path
            .trim_start_matches("arn:aws:ssm:*:*:parameter/");
        json!({
            "Sid": "RecordInputs",
            "Effect": "Allow",
            "Action": ["ssm:PutParameter"],
            "Resource": format!("arn:aws:ssm:*:*:parameter/{prefix}/*/inputs/*"),
        })
    }
}

fn plan(n: &Names) -> Vec<Value> {
    vec![
        json!({"Sid": "Describe", "Effect": "Allow", "Action": ["ec2:DescribeImages"], "Resource": "*"}),
        json!({"Sid": "ReadChannels", "Effect": "Allow", "Action": ["ssm:GetParameters"], "Resource": n.parameters}),
    ]
}

fn build(project: &Project, n: &Names) -> Vec<Value> {
    let s = &project.settings;
    let profile = s
        .aws
        .instance_profile
        .clone()
        .unwrap_or_else(|| "imagectl-build".into());
    let mut st = vec![
        json!({"Sid": "Describe", "Effect": "Allow", "Action": DESCRIBE, "Resource": "*"}),
        n.record_inputs(),
        json!({
            "Sid": "LaunchBuildInstance",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances"],
            "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
            "Condition": {"StringLike": {format!("aws:RequestTag/{}", tags::ROLE): "*"}},
        }),
        json!({
            "Sid": "LaunchFrom",
            "Effect": "Allow",
            "Action": ["ec2:RunInstances"],
            "Resource": [
                "arn:aws:ec2:*::image/*",
                "arn:aws:ec2:*:*:subnet/*",
                "arn:aws:ec2:*:*:security-group/*",
                "arn:aws:ec2:*:*:network-interface/*",
                "arn:aws:ec2:*:*:key-pair/*",
            ],
        }),
        json!({
            "Sid": "TemporaryKeyPair",
            "Effect": "Allow",
            "Action": ["ec2:CreateKeyPair", "ec2:DeleteKeyPair"],
            "Resource": "arn:aws:ec2:*:*:key-pair/imagectl-*",
        }),
        json!({
            "Sid": "TagOnCreate",
            "Effect": "Allow",
            "Action": ["ec2:CreateTags"],
            "Resource": "*",
            "Condition": {"StringEquals": {"ec2:CreateAction": ["RunInstances", "CreateImage", "CopyImage", "CreateSnapshot", "CreateVolume"]}},
        }),
        json!({
            "Sid": "OnlyImagectlResources",
            "Effect": "Allow",
            "Action": [
                "ec2:AttachVolume",
                "ec2:CreateTags",
                "ec2:DeleteSnapshot",
                "ec2:DeleteVolume",
                "ec2:DeregisterImage",
                "ec2:DetachVolume",
                "ec2:ModifyImageAttribute",
                "ec2:ModifyInstanceAttribute",
                "ec2:ModifyInstanceMetadataOptions",
                "ec2:ModifySnapshotAttribute",
                "ec2:StopInstances",
                "ec2:TerminateInstances",
            ],
            "Resource": "*",
            "Condition": n.tagged,
        }),
        json!({
            "Sid": "MakeImages",
            "Effect": "Allow",
            "Action": ["ec2:CopyImage", "ec2:CreateImage", "ec2:CreateSnapshot", "ec2:CreateVolume", "ec2:RegisterImage"],
            "Resource": "*",
        }),
        json!({
            "Sid": "PassBuildRole",
            "Effect": "Allow",
            "Action": ["iam:PassRole", "iam:GetInstanceProfile"],
            "Resource": [format!("arn:aws:iam::*:role/{profile}"), format!("arn:aws:iam::*:instance-profile/{profile}")],
        }),
        json!({
            "Sid": "SessionManagerToBuildInstance",
            "Effect": "Allow",
            "Action": ["ssm:StartSession"],
            "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ssm:*::document/AWS-StartPortForwardingSession"],
            "Condition": {"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}},
        }),
        json!({
            "Sid": "EndOwnSessions",
            "Effect": "Allow",
            "Action": ["ssm:TerminateSession"],
            "Resource": "arn:aws:ssm:*:*:session/${aws:userid}-*",
        }),
    ];
    if let Some(key) = &s.aws.kms_key {
        st.push(encrypt_images(key));
    }
    st
}

/// Using the images' KMS key, only that key where its alias says which.
fn encrypt_images(key: &str) -> Value {
    let alias_condition = key
        .starts_with("alias/")
        .then(|| json!({"ForAnyValue:StringEquals": {"kms:ResourceAliases": key}}));
    let mut kms = json!({
        "Sid": "EncryptImages",
        "Effect": "Allow",
        "Action": [
            "kms:CreateGrant",
            "kms:Decrypt",
            "kms:DescribeKey",
            "kms:Encrypt",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:ReEncryptFrom",
            "kms:ReEncryptTo",
        ],
        "Resource": "arn:aws:kms:*:*:key/*",
    });
    if let Some(c) = alias_condition {
        kms["Condition"] = c;
    }
    kms
}

fn publish(n: &Names) -> Vec<Value> {
    vec![
        n.read_channels(),
        json!({"Sid": "WriteChannels", "Effect": "Allow", "Action": ["ssm:PutParameter"], "Resource": n.parameters}),
        json!({
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": ["ec2:DescribeImages", "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions"],
            "Resource": "*",
        }),
        json!({
            "Sid": "FollowChannels",
            "Effect": "Allow",
            "Action": ["ec2:CreateLaunchTemplateVersion", "ec2:ModifyLaunchTemplate"],
            "Resource": "arn:aws:ec2:*:*:launch-template/*",
        }),
    ]
}

fn prune(n: &Names) -> Vec<Value> {
    vec![
        n.read_channels(),
        json!({
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": ["ec2:DescribeImages", "ec2:DescribeInstances", "ec2:DescribeLaunchTemplates", "ec2:DescribeLaunchTemplateVersions"],
            "Resource": "*",
        }),
        json!({
            "Sid": "DeleteOnlyImagectlImages",
            "Effect": "Allow",
            "Action": ["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
            "Resource": "*",
            "Condition": n.tagged,
        }),
    ]
}

fn sweep() -> Vec<Value> {
    vec![
        json!({
            "Sid": "Describe",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeImages",
                "ec2:DescribeInstances",
                "ec2:DescribeKeyPairs",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeSnapshots",
                "ec2:DescribeVolumes",
            ],
            "Resource": "*",
        }),
        json!({
            "Sid": "RemoveTaggedLeftovers",
            "Effect": "Allow",
            "Action": [
                "ec2:DeleteSecurityGroup",
                "ec2:DeleteSnapshot",
                "ec2:DeleteVolume",
                "ec2:DeregisterImage",
                "ec2:TerminateInstances",
            ],
            "Resource": "*",
            "Condition": {"Null": {format!("ec2:ResourceTag/{}", tags::BUILD): "false"}},
        }),
        // An image Packer had no time to tag is known only by its name,
        // which IAM cannot match: deregistering it and deleting its
        // snapshots cannot be scoped by tag. imagectl itself only ever
        // removes images named `imagectl-ROLE-HASH12-STAMP`.
        json!({
            "Sid": "RemoveUntaggedImagesOfKilledBuilds",
            "Effect": "Allow",
            "Action": ["ec2:DeregisterImage", "ec2:DeleteSnapshot"],
            "Resource": ["arn:aws:ec2:*::image/*", "arn:aws:ec2:*::snapshot/*"],
        }),
        json!({
            "Sid": "RemoveTemporaryKeyPairs",
            "Effect": "Allow",
            "Action": ["ec2:DeleteKeyPair"],
            "Resource": "arn:aws:ec2:*:*:key-pair/imagectl-*",
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        let settings = imagectl_core::settings::parse_settings(
            "[aws]\nregion = \"eu-west-1\"\ninstance_profile = \"imagectl-build\"\nkms_key = \"alias/k\"\n",
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
            let p = policy(&project(), job);
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
}
