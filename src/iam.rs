//! Least-privilege IAM policies for the jobs that run imagectl: exactly the
//! actions imagectl and Packer call, no wildcard actions, scoped by resource
//! and tag conditions where AWS allows it.

use serde_json::{json, Value};

use crate::project::Project;

/// The jobs a policy can be printed for.
pub const JOBS: [&str; 5] = ["plan", "build", "publish", "prune", "sweep"];

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

/// The policy document for `job`, or `None` for an unknown job.
pub fn policy(project: &Project, job: &str) -> Option<Value> {
    let s = &project.settings;
    let prefix = s.publish.prefix.trim_start_matches('/');
    let parameters = format!("arn:aws:ssm:*:*:parameter/{prefix}/*");
    let parameter_path = format!("arn:aws:ssm:*:*:parameter/{prefix}");
    let tagged = json!({"Null": {"ec2:ResourceTag/imagectl:role": "false"}});
    let read_channels = json!({
        "Sid": "ReadChannels",
        "Effect": "Allow",
        "Action": ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParameterHistory", "ssm:GetParametersByPath"],
        "Resource": [parameters, parameter_path],
    });
    let record_inputs = json!({
        "Sid": "RecordInputs",
        "Effect": "Allow",
        "Action": ["ssm:PutParameter"],
        "Resource": format!("arn:aws:ssm:*:*:parameter/{prefix}/*/inputs/*"),
    });
    let statements = match job {
        "plan" => vec![
            json!({"Sid": "Describe", "Effect": "Allow", "Action": ["ec2:DescribeImages"], "Resource": "*"}),
            json!({"Sid": "ReadChannels", "Effect": "Allow", "Action": ["ssm:GetParameters"], "Resource": parameters.clone()}),
        ],
        "build" => {
            let profile = s
                .aws
                .instance_profile
                .clone()
                .unwrap_or_else(|| "imagectl-build".into());
            let mut st = vec![
                json!({"Sid": "Describe", "Effect": "Allow", "Action": DESCRIBE, "Resource": "*"}),
                record_inputs,
                json!({
                    "Sid": "LaunchBuildInstance",
                    "Effect": "Allow",
                    "Action": ["ec2:RunInstances"],
                    "Resource": ["arn:aws:ec2:*:*:instance/*", "arn:aws:ec2:*:*:volume/*"],
                    "Condition": {"StringLike": {"aws:RequestTag/imagectl:role": "*"}},
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
                    "Condition": tagged,
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
                st.push(kms);
            }
            st
        }
        "publish" => vec![
            read_channels,
            json!({"Sid": "WriteChannels", "Effect": "Allow", "Action": ["ssm:PutParameter"], "Resource": parameters}),
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
        ],
        "prune" => vec![
            read_channels,
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
                "Condition": tagged,
            }),
        ],
        "sweep" => vec![
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
                "Condition": {"Null": {"ec2:ResourceTag/imagectl:build": "false"}},
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
        ],
        _ => return None,
    };
    Some(json!({"Version": "2012-10-17", "Statement": statements}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        let settings = crate::project::parse_settings(
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
            let p = policy(&project(), job).unwrap();
            for st in p["Statement"].as_array().unwrap() {
                let actions: Vec<&str> = match &st["Action"] {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    other => panic!("{other}"),
                };
                for a in actions {
                    assert!(!a.contains('*'), "{job}: {a}");
                    assert!(
                        a.split_once(':')
                            .is_some_and(|(svc, act)| !svc.is_empty() && !act.is_empty()),
                        "{a}"
                    );
                }
            }
        }
        assert!(policy(&project(), "deploy").is_none());
    }
}
