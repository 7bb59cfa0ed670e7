//! Packer templates: one HCL2 template per role, pure and deterministic,
//! with secure defaults; and the reduced form Debian's Packer 1.6.6 accepts.
//!
//! Everything that varies per build (content hash, build ID, commit, staged
//! context path, manifest path) is a variable, so the template is stable,
//! reviewed in pull requests and hashed as an input of the image.

use crate::arch::Arch;
use crate::hcl::{Body, Expr, Part};
use crate::lock::Entry;
use crate::names::{tags, IMAGE_NAME_PREFIX, INSTANCE_NAME_PREFIX};
use crate::role::Role;
use crate::settings::Settings;

/// Settings current Packer (with the amazon plugin) understands but Debian's
/// Packer 1.6.6 rejects. The committed templates use them; a build with the
/// old Packer removes exactly these and has imagectl enforce the same
/// through the EC2 API instead (see [`enforced_after_build`]).
pub const NOT_IN_PACKER_1_6: [&str; 4] = [
    "required_plugins",
    "metadata_options",
    "imds_support",
    "temporary_security_group_source_public_ip",
];

/// What the settings in [`NOT_IN_PACKER_1_6`] secure, which imagectl then
/// enforces through the EC2 API when the Packer in use cannot.
pub fn enforced_after_build(setting: &str) -> Option<&'static str> {
    match setting {
        "imds_support" => Some("ModifyImageAttribute ImdsSupport=v2.0 on every AMI"),
        "metadata_options" => {
            Some("ModifyInstanceMetadataOptions HttpTokens=required on the build instance")
        }
        _ => None,
    }
}

/// Where the staged context is uploaded on the build instance.
pub const REMOTE_STAGE: &str = "/tmp/imagectl-stage";

/// The amazon plugin, pinned to one version: it runs with the build's
/// credentials, so a new release reaches builds only through a reviewed
/// change of this line (docs/aws-setup.md, "Upgrading the amazon plugin").
/// 1.8.2 tags images and snapshots as it creates them, which the build
/// policy requires.
pub const AMAZON_PLUGIN: &str = "= 1.8.2";

/// A setting a template needs is not in `imagectl.toml`.
#[derive(Debug, thiserror::Error)]
#[error("`[aws] {key}` is not set in imagectl.toml: {why}")]
pub struct MissingSetting {
    /// The key.
    pub key: &'static str,
    /// Why it is required.
    pub why: &'static str,
}

/// The variables every template declares, set per build by `imagectl build`.
pub const VARIABLES: [(&str, &str); 6] = [
    (
        "content_hash",
        "The image's content hash (imagectl hash ROLE).",
    ),
    (
        "build_id",
        "Unique per build: names the AMI and tags temporary resources.",
    ),
    (
        "commit",
        "Git commit the image was built from, with -dirty for local changes.",
    ),
    (
        "imagectl_version",
        "Version of imagectl that ran the build.",
    ),
    (
        "stage_dir",
        "Local directory holding the staged build context.",
    ),
    (
        "manifest_path",
        "Where Packer writes its manifest of built AMIs.",
    ),
];

/// The template of `role`, built on the locked base image `base`.
pub fn template(settings: &Settings, role: &Role, base: &Entry) -> Result<Body, MissingSetting> {
    let net = BuildNetwork::of(settings)?;
    let mut body = header(role);
    for (v, description) in VARIABLES {
        body = body.blank().block(
            "variable",
            &[v],
            Body::new()
                .attr("type", Expr::Raw("string".into()))
                .attr("description", Expr::str(description)),
        );
    }
    Ok(body
        .blank()
        .block("locals", &[], locals(role, base))
        .blank()
        .block(
            "source",
            &["amazon-ebs", &role.name],
            source(settings, role, base, &net),
        )
        .blank()
        .block("build", &[], build(&role.name)))
}

/// Where a build instance runs and what it runs as: required settings.
struct BuildNetwork<'a> {
    subnet: &'a str,
    group: &'a str,
    profile: &'a str,
}

impl<'a> BuildNetwork<'a> {
    fn of(settings: &'a Settings) -> Result<BuildNetwork<'a>, MissingSetting> {
        let aws = &settings.aws;
        let subnet = aws.build_subnet.as_deref().ok_or(MissingSetting {
            key: "build_subnet",
            why: "builds run only in a private subnet, found by its Name tag",
        })?;
        let group = aws.build_security_group.as_deref().ok_or(MissingSetting {
            key: "build_security_group",
            why: "the build instance needs a security group without ingress, found by its Name tag",
        })?;
        let profile = aws.instance_profile.as_deref().ok_or(MissingSetting {
            key: "instance_profile",
            why: "the build instance reaches Session Manager through its instance profile",
        })?;
        if !aws.share_accounts.is_empty() && aws.kms_key.is_none() {
            return Err(MissingSetting {
                key: "kms_key",
                why:
                    "images encrypted with the default EBS key cannot be shared with other accounts",
            });
        }
        Ok(BuildNetwork {
            subnet,
            group,
            profile,
        })
    }
}

fn var(v: &str) -> Expr {
    Expr::Raw(format!("var.{v}"))
}

/// `PREFIX${var.build_id}`.
fn with_build_id(prefix: &str) -> Expr {
    Expr::Template(vec![
        Part::Lit(prefix.to_string()),
        Part::Interp("var.build_id".into()),
    ])
}

fn tag_map(pairs: Vec<(&str, Expr)>) -> Expr {
    Expr::Map(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// The comment saying where the template comes from, and the plugin it needs.
fn header(role: &Role) -> Body {
    Body::new()
        .comment(&format!(
            "Generated by `imagectl render` from {}; do not edit.\n\
             Per-build values are variables that `imagectl build` sets.",
            role.sources.join(", ")
        ))
        .blank()
        .block(
            "packer",
            &[],
            Body::new().block(
                "required_plugins",
                &[],
                Body::new().attr(
                    "amazon",
                    Expr::Map(vec![
                        ("source".into(), Expr::str("github.com/hashicorp/amazon")),
                        ("version".into(), Expr::str(AMAZON_PLUGIN)),
                    ]),
                ),
            ),
        )
}

/// The description and the tags of images and of temporary resources.
fn locals(role: &Role, base: &Entry) -> Body {
    let name = &role.name;
    let image_tags = tag_map(vec![
        (
            tags::NAME,
            with_build_id(&format!("{IMAGE_NAME_PREFIX}{name}-")),
        ),
        (tags::ROLE, Expr::str(name)),
        (tags::HASH, var("content_hash")),
        (tags::BUILD, var("build_id")),
        (tags::COMMIT, var("commit")),
        (tags::BASE_AMI, Expr::str(&base.ami)),
        (tags::VERSION, var("imagectl_version")),
    ]);
    // Temporary resources (instance, volumes) carry the role and build, so
    // an interrupted build's leftovers can be found and swept.
    let run_tags = tag_map(vec![
        (
            tags::NAME,
            with_build_id(&format!("{INSTANCE_NAME_PREFIX}{name}-")),
        ),
        (tags::ROLE, Expr::str(name)),
        (tags::BUILD, var("build_id")),
    ]);
    Body::new()
        .attr("description", Expr::str(&role.description))
        .attr("tags", image_tags)
        .attr("run_tags", run_tags)
}

/// The `amazon-ebs` source: where and how the build instance runs, and
/// what the images are like.
fn source(settings: &Settings, role: &Role, base: &Entry, net: &BuildNetwork) -> Body {
    let aws = &settings.aws;
    let name = &role.name;
    let ssh_user = settings
        .bases
        .get(role.image.base.as_deref().unwrap_or(""))
        .and_then(|b| b.ssh_username.clone())
        .unwrap_or_else(|| "admin".to_string());
    Body::new()
        .attr("region", Expr::str(&aws.region))
        .attr("source_ami", Expr::str(&base.ami))
        .attr("instance_type", Expr::str(&role.image.instance_type))
        .attr("ami_name", with_build_id(&format!("{IMAGE_NAME_PREFIX}{name}-")))
        .attr("ami_description", Expr::Raw("local.description".into()))
        .attr("tags", Expr::Raw("local.tags".into()))
        .attr("snapshot_tags", Expr::Raw("local.tags".into()))
        .attr("run_tags", Expr::Raw("local.run_tags".into()))
        .attr("run_volume_tags", Expr::Raw("local.run_tags".into()))
        .blank()
        .comment("Private subnet, no public IP, no SSH ingress: Packer reaches the\ninstance over SSH tunnelled through Session Manager.")
        .attr("associate_public_ip_address", Expr::Bool(false))
        .attr("communicator", Expr::str("ssh"))
        .attr("ssh_interface", Expr::str("session_manager"))
        .attr("ssh_username", Expr::str(ssh_user))
        .attr("ssh_timeout", Expr::str("20m"))
        .attr("temporary_key_pair_name", with_build_id(&format!("{IMAGE_NAME_PREFIX}{name}-")))
        .attr("iam_instance_profile", Expr::str(net.profile))
        .attr("user_data", Expr::str(ssm_agent_user_data(&aws.region, role.image.arch)))
        .block("subnet_filter", &[], Body::new().attr("filters", tag_map(vec![("tag:Name", Expr::str(net.subnet))])))
        .block("security_group_filter", &[], Body::new().attr("filters", tag_map(vec![("tag:Name", Expr::str(net.group))])))
        .blank()
        .comment("Instance metadata only with IMDSv2 tokens, on the build instance and on\nevery instance launched from the image.")
        .block(
            "metadata_options",
            &[],
            Body::new()
                .attr("http_endpoint", Expr::str("enabled"))
                .attr("http_tokens", Expr::str("required"))
                .attr("http_put_response_hop_limit", Expr::Int(1)),
        )
        .attr("imds_support", Expr::str("v2.0"))
        .blank()
        .comment("Encrypted volumes; a private image, in this region only: imagectl copies it\nto the other regions and shares it, tagged, once it is complete.")
        .attr("encrypt_boot", Expr::Bool(true))
        .attr_opt("kms_key_id", aws.kms_key.clone().map(Expr::Str))
        .block("launch_block_device_mappings", &[], block_device(settings, role))
}

/// The root volume: gp3, encrypted, deleted with the instance.
fn block_device(settings: &Settings, role: &Role) -> Body {
    Body::new()
        .attr("device_name", Expr::str("/dev/xvda"))
        .attr(
            "volume_size",
            Expr::Int(i64::from(role.image.volume_size_gb)),
        )
        .attr("volume_type", Expr::str("gp3"))
        .attr("iops", Expr::Int(3000))
        .attr("throughput", Expr::Int(125))
        .attr("encrypted", Expr::Bool(true))
        .attr_opt("kms_key_id", settings.aws.kms_key.clone().map(Expr::Str))
        .attr("delete_on_termination", Expr::Bool(true))
}

/// The build: upload the staged context, run its provisioning script,
/// write the manifest of images.
fn build(name: &str) -> Body {
    Body::new()
        .attr("sources", Expr::strs([format!("source.amazon-ebs.{name}")]))
        .blank()
        .block(
            "provisioner",
            &["shell"],
            Body::new().attr("inline", Expr::strs([format!("mkdir -p {REMOTE_STAGE}")])),
        )
        .blank()
        .block(
            "provisioner",
            &["file"],
            Body::new()
                .attr(
                    "source",
                    Expr::Template(vec![
                        Part::Interp("var.stage_dir".into()),
                        Part::Lit("/".into()),
                    ]),
                )
                .attr("destination", Expr::str(REMOTE_STAGE)),
        )
        .blank()
        .block(
            "provisioner",
            &["shell"],
            Body::new().attr(
                "inline",
                Expr::strs([
                    format!("sudo bash {REMOTE_STAGE}/provision.sh"),
                    format!("rm -rf {REMOTE_STAGE}"),
                ]),
            ),
        )
        .blank()
        .block(
            "post-processor",
            &["manifest"],
            Body::new()
                .attr("output", var("manifest_path"))
                .attr("strip_path", Expr::Bool(true))
                .attr(
                    "custom_data",
                    Expr::Map(vec![
                        ("role".into(), Expr::str(name)),
                        ("content_hash".into(), var("content_hash")),
                        ("build_id".into(), var("build_id")),
                    ]),
                ),
        )
}

/// The template for Debian's Packer 1.6.6: the same, less the settings it
/// rejects.
pub fn for_packer_1_6(body: &Body) -> Body {
    body.without(&NOT_IN_PACKER_1_6)
}

/// Settings of the SSH communicator, left out with `communicator = "none"`.
/// `temporary_key_pair_name` stays: Packer 1.6.6 creates a key pair even
/// without a communicator, and without the name it would be an anonymous
/// `packer_UUID` that `imagectl sweep` could not tell from anyone else's.
const COMMUNICATOR_SETTINGS: [&str; 5] = [
    "communicator",
    "ssh_interface",
    "ssh_username",
    "ssh_timeout",
    "provisioner",
];

/// The template for a build against an AWS emulator on this machine (moto,
/// LocalStack): Packer talks to `endpoint` (it ignores `AWS_ENDPOINT_URL`)
/// and, since an emulator runs no instance to provision, uses no
/// communicator and no provisioners. Only ever for a loopback endpoint, and
/// never written to `images/`.
pub fn for_emulator(body: &Body, endpoint: &str) -> Body {
    body.without(&COMMUNICATOR_SETTINGS)
        .map_blocks("source", |b| {
            b.clone()
                .blank()
                .comment("Emulator build: no instance to reach, nothing provisioned.")
                .attr("communicator", Expr::str("none"))
                .attr("custom_endpoint_ec2", Expr::str(endpoint))
                .attr("skip_region_validation", Expr::Bool(true))
        })
}

/// The template with Packer's EC2 calls retried `retries` times on
/// throttling and 5xx answers (its own default is 3), so that Packer and
/// imagectl give up at the same bound. Added when building, as the
/// emulator settings are: the template under `images/` stays the role's.
pub fn with_max_retries(body: &Body, retries: u32) -> Body {
    body.map_blocks("source", |b| {
        b.clone().attr("max_retries", Expr::Int(i64::from(retries)))
    })
}

/// User data of the build instance. Packer reaches it through Session
/// Manager, which needs the SSM agent; Debian's images do not ship it, so it
/// is installed from the region's own bucket (reachable from a private
/// subnet through an S3 gateway endpoint).
fn ssm_agent_user_data(region: &str, arch: Arch) -> String {
    let deb_arch = arch.debian();
    format!(
        "#!/bin/sh\n\
         # Installs the SSM agent: Packer reaches this build instance through\n\
         # Session Manager (no SSH ingress, no public IP).\n\
         set -eu\n\
         url=https://s3.{region}.amazonaws.com/amazon-ssm-{region}/latest/debian_{deb_arch}/amazon-ssm-agent.deb\n\
         python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \"$url\" /tmp/amazon-ssm-agent.deb\n\
         dpkg -i /tmp/amazon-ssm-agent.deb\n\
         systemctl enable --now amazon-ssm-agent\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_left_out_for_old_packer_is_one_the_template_may_use() {
        // metadata_options and imds_support are always there; the others
        // belong to the list because Packer 1.6.6 rejects them (tested
        // against the real binary in the integration tests).
        for s in ["metadata_options", "imds_support"] {
            assert!(NOT_IN_PACKER_1_6.contains(&s));
            assert!(
                enforced_after_build(s).is_some(),
                "{s} must be enforced some other way"
            );
        }
    }
}
