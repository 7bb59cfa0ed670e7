//! The build job's policy: launch a build instance only the way imagectl's
//! templates do (the build subnet and group, no public IP, IMDSv2, the one
//! instance profile, from a base image, tagged as a build), image only
//! such instances, copy, tag, share and clean up only imagectl's images,
//! reach only build instances through Session Manager, use the KMS key only
//! through EC2. It writes no channel. It reads what the preflight checks
//! (`crate::preflight`): the images' key, SSM at the prefix, the account's
//! image block public access.
//!
//! This is for current Packer with the amazon plugin, which tags images and
//! snapshots as it creates them and asks for IMDSv2 at launch. Debian's
//! Packer 1.6.6 does neither: under this policy its launch (no
//! `MetadataOptions`) and its tagging of a new image are denied.

use serde_json::{json, Value};

use imagectl_core::names::{tags, IMAGE_NAME_PREFIX};
use imagectl_core::project::Project;
use imagectl_core::settings::Settings;

use super::{allow, allow_if, ec2_arns, tagged, Names};

/// Actions that take no resource-level permissions: only `*` works.
const DESCRIBE: [&str; 11] = [
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
    // The preflight's advice on the account's image block public access.
    "ec2:GetImageBlockPublicAccessState",
];

/// Every statement of the build job.
pub(super) fn statements(project: &Project, n: &Names) -> Vec<Value> {
    let s = &project.settings;
    let mut st = vec![
        allow("Describe", &DESCRIBE, "*"),
        n.record_inputs(),
        // The preflight asks SSM under the prefix itself: no parameter is
        // there, so this reads nothing.
        allow(
            "PreflightReachesSsm",
            &["ssm:GetParametersByPath"],
            n.parameter_path.clone(),
        ),
        allow(
            "TemporaryKeyPair",
            &["ec2:CreateKeyPair", "ec2:DeleteKeyPair"],
            format!("arn:aws:ec2:*:*:key-pair/{IMAGE_NAME_PREFIX}*"),
        ),
    ];
    st.extend(launch(s));
    st.extend(images());
    st.extend(disk_images());
    st.extend(instance_profile(s));
    st.extend(session_manager());
    if let Some(key) = &s.aws.kms_key {
        st.extend(encrypt_images(s, key));
    }
    st.extend(super::provenance_key(project, "SignProvenance", "kms:Sign"));
    st
}

/// Only in the build subnet, with the build group and no public IP, with
/// IMDSv2 and the build's instance profile, from a base image, tagged as a
/// build.
fn launch(s: &Settings) -> Vec<Value> {
    let profile = s.aws.instance_profile.clone().unwrap_or_default();
    let requested_build = json!({"Null": {format!("aws:RequestTag/{}", tags::BUILD): "false"}});
    let mut instance = requested_build.clone();
    instance["StringEquals"] = json!({"ec2:MetadataHttpTokens": "required"});
    instance["ArnLike"] =
        json!({"ec2:InstanceProfile": format!("arn:aws:iam::*:instance-profile/{profile}")});
    let mut volume = requested_build;
    volume["Bool"] = json!({"ec2:Encrypted": "true"});
    let name_is = |name: &Option<String>| json!({"StringEquals": {format!("ec2:ResourceTag/{}", tags::NAME): name.clone().unwrap_or_default()}});
    let run = &["ec2:RunInstances"];
    let mut st = vec![
        allow_if(
            "LaunchBuildInstance",
            run,
            "arn:aws:ec2:*:*:instance/*",
            instance,
        ),
        allow_if("LaunchBuildVolume", run, "arn:aws:ec2:*:*:volume/*", volume),
        allow_if(
            "LaunchInBuildSubnet",
            run,
            "arn:aws:ec2:*:*:subnet/*",
            name_is(&s.aws.build_subnet),
        ),
        allow_if(
            "LaunchWithBuildGroup",
            run,
            "arn:aws:ec2:*:*:security-group/*",
            name_is(&s.aws.build_security_group),
        ),
        allow_if(
            "LaunchWithoutPublicIp",
            run,
            "arn:aws:ec2:*:*:network-interface/*",
            json!({"Bool": {"ec2:AssociatePublicIpAddress": "false"}}),
        ),
        allow(
            "LaunchWithTemporaryKeyPair",
            run,
            format!("arn:aws:ec2:*:*:key-pair/{IMAGE_NAME_PREFIX}*"),
        ),
    ];
    st.extend(base_images(s));
    st
}

/// The images a build instance may start from: those of the `[bases]`
/// owners, the pinned base IDs, and imagectl's own images.
fn base_images(s: &Settings) -> Vec<Value> {
    let run = &["ec2:RunInstances"];
    let mut owners: Vec<String> = s.bases.values().flat_map(|b| b.owners.clone()).collect();
    owners.sort();
    owners.dedup();
    let pinned: Vec<String> = s
        .bases
        .values()
        .filter_map(|b| b.ami.as_ref().map(|a| format!("arn:aws:ec2:*::image/{a}")))
        .collect();
    let mut st = vec![allow_if(
        "LaunchFromImagectlImages",
        run,
        "arn:aws:ec2:*::image/*",
        tagged(tags::ROLE),
    )];
    if !owners.is_empty() {
        st.push(allow_if(
            "LaunchFromBaseOwners",
            run,
            "arn:aws:ec2:*::image/*",
            json!({"StringEquals": {"ec2:Owner": owners}}),
        ));
    }
    if !pinned.is_empty() {
        st.push(allow("LaunchFromPinnedBases", run, json!(pinned)));
    }
    st
}

/// Images: made only from build instances, copied only from imagectl's
/// images, tagged with imagectl's tags as they are created; everything
/// else only on what already carries them.
fn images() -> Vec<Value> {
    let requested_role = json!({"Null": {format!("aws:RequestTag/{}", tags::ROLE): "false"}});
    let new_image = json!(ec2_arns(&["image", "snapshot"]));
    vec![
        allow_if(
            "ImageOnlyBuildInstances",
            &["ec2:CreateImage"],
            "arn:aws:ec2:*:*:instance/*",
            tagged(tags::BUILD),
        ),
        allow_if(
            "CopyOnlyImagectlImages",
            &["ec2:CopyImage"],
            new_image.clone(),
            tagged(tags::ROLE),
        ),
        allow_if(
            "NewImagesTaggedAsCreated",
            &["ec2:CreateImage", "ec2:CopyImage"],
            new_image,
            requested_role.clone(),
        ),
        {
            let mut c = requested_role;
            c["StringEquals"] =
                json!({"ec2:CreateAction": ["RunInstances", "CreateImage", "CopyImage"]});
            allow_if("TagOnCreate", &["ec2:CreateTags"], "*", c)
        },
        allow_if(
            "OnlyImagectlResources",
            &[
                "ec2:CreateTags",
                "ec2:DeleteSnapshot",
                "ec2:DeleteVolume",
                "ec2:DeregisterImage",
                "ec2:ModifyImageAttribute",
                "ec2:ModifyInstanceMetadataOptions",
                "ec2:ModifySnapshotAttribute",
                "ec2:StopInstances",
                "ec2:TerminateInstances",
            ],
            json!(ec2_arns(&["image", "snapshot", "instance", "volume"])),
            tagged(tags::ROLE),
        ),
    ]
}

/// The disk method (`--method disk`): snapshots started only with
/// imagectl's role tag, written and completed only when they carry it,
/// images registered only from such snapshots and tagged as registered.
fn disk_images() -> Vec<Value> {
    let requested_role = json!({"Null": {format!("aws:RequestTag/{}", tags::ROLE): "false"}});
    vec![
        allow_if(
            "StartOnlyTaggedSnapshots",
            &["ebs:StartSnapshot"],
            "arn:aws:ec2:*::snapshot/*",
            requested_role.clone(),
        ),
        allow_if(
            "WriteOnlyImagectlSnapshots",
            &["ebs:PutSnapshotBlock", "ebs:CompleteSnapshot"],
            "arn:aws:ec2:*::snapshot/*",
            json!({"Null": {format!("aws:ResourceTag/{}", tags::ROLE): "false"}}),
        ),
        allow_if(
            "RegisterFromImagectlSnapshots",
            &["ec2:RegisterImage"],
            "arn:aws:ec2:*::snapshot/*",
            tagged(tags::ROLE),
        ),
        allow_if(
            "RegisterImagesTaggedAsCreated",
            &["ec2:RegisterImage"],
            "arn:aws:ec2:*::image/*",
            requested_role.clone(),
        ),
        {
            let mut c = requested_role;
            c["StringEquals"] = json!({"ec2:CreateAction": "RegisterImage"});
            allow_if("TagOnRegister", &["ec2:CreateTags"], "*", c)
        },
    ]
}

/// Passing the build role to EC2, and only it.
fn instance_profile(s: &Settings) -> Vec<Value> {
    let profile = s.aws.instance_profile.clone().unwrap_or_default();
    vec![
        allow_if(
            "PassBuildRoleToEc2",
            &["iam:PassRole"],
            format!("arn:aws:iam::*:role/{profile}"),
            json!({"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}),
        ),
        allow(
            "ReadBuildInstanceProfile",
            &["iam:GetInstanceProfile"],
            format!("arn:aws:iam::*:instance-profile/{profile}"),
        ),
    ]
}

/// Packer's SSH over Session Manager: only to build instances, only
/// port forwarding, and ending only its own sessions.
fn session_manager() -> Vec<Value> {
    vec![
        allow_if(
            "SessionToBuildInstances",
            &["ssm:StartSession"],
            "arn:aws:ec2:*:*:instance/*",
            json!({"Null": {format!("ssm:resourceTag/{}", tags::BUILD): "false"}}),
        ),
        allow_if(
            "PortForwardingOnly",
            &["ssm:StartSession"],
            "arn:aws:ssm:*::document/AWS-StartPortForwardingSession",
            json!({"BoolIfExists": {"ssm:SessionDocumentAccessCheck": "true"}}),
        ),
        allow(
            "EndOwnSessions",
            &["ssm:TerminateSession"],
            "arn:aws:ssm:*:*:session/${aws:userid}-*",
        ),
    ]
}

/// The images' KMS key, and only it, only through EC2; grants only for
/// AWS resources.
fn encrypt_images(s: &Settings, key: &str) -> Vec<Value> {
    let (resources, alias) = key_resources(s, key);
    let through_ec2 = |extra: Option<Value>| {
        let mut c = json!({"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}});
        if let Some(a) = &alias {
            c["ForAnyValue:StringEquals"] = json!({"kms:ResourceAliases": a});
        }
        if let Some(Value::Object(m)) = extra {
            for (k, v) in m {
                c[k] = v;
            }
        }
        c
    };
    // The preflight describes the key itself (not through EC2) in every
    // region, to say before a bake whether it is usable there.
    let describe = match &alias {
        Some(a) => allow_if(
            "PreflightDescribesImagesKey",
            &["kms:DescribeKey"],
            resources.clone(),
            json!({"ForAnyValue:StringEquals": {"kms:ResourceAliases": a}}),
        ),
        None => allow(
            "PreflightDescribesImagesKey",
            &["kms:DescribeKey"],
            resources.clone(),
        ),
    };
    vec![
        describe,
        allow_if(
            "EncryptImagesThroughEc2",
            &[
                "kms:Decrypt",
                "kms:DescribeKey",
                "kms:Encrypt",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo",
            ],
            resources.clone(),
            through_ec2(None),
        ),
        // The EBS direct APIs encrypt a disk image's snapshot as it is
        // written (`--method disk`).
        allow_if(
            "EncryptDiskSnapshotsThroughEbs",
            &[
                "kms:Decrypt",
                "kms:DescribeKey",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo",
            ],
            resources.clone(),
            {
                let mut c = through_ec2(None);
                c["StringLike"] = json!({"kms:ViaService": "ebs.*.amazonaws.com"});
                c
            },
        ),
        allow_if(
            "GrantsForEc2Volumes",
            &["kms:CreateGrant"],
            resources,
            through_ec2(Some(json!({"Bool": {"kms:GrantIsForAWSResource": "true"}}))),
        ),
    ]
}

/// The key ARNs `key` stands for in every region images go to, and the
/// alias when it is one (an alias's key has an ARN of its own, unknown
/// here: it is matched through `kms:ResourceAliases`).
fn key_resources(s: &Settings, key: &str) -> (Value, Option<String>) {
    if key.starts_with("alias/") {
        return (json!("arn:aws:kms:*:*:key/*"), Some(key.to_string()));
    }
    let regions = s.aws.regions();
    let arns: Vec<String> = regions
        .iter()
        .filter_map(|r| s.aws.kms_key_in(r))
        .map(|k| {
            if k.starts_with("arn:") {
                k
            } else {
                // A key ID (or multi-region key ID): the same ID in each
                // region.
                format!("arn:aws:kms:*:*:key/{k}")
            }
        })
        .collect();
    let mut arns = arns;
    arns.sort();
    arns.dedup();
    (json!(arns), None)
}
