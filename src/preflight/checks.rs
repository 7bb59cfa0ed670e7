//! The checks of the preflight, one function per kind of resource, each
//! answering a line per resource and region.

use imagectl_core::lock::Lock;
use imagectl_core::names::tags;
use imagectl_core::project::Project;

use super::{Check, Status};
use crate::aws::{self, Session};

const NETWORK_DOC: &str = "docs/aws-setup.md#network-for-builds";
const KMS_DOC: &str = "docs/aws-setup.md#kms";
const TEMPLATE_DOC: &str = "docs/aws-setup.md#a-launch-template-that-follows-a-channel";
/// The endpoint the SDK is pointed at, as a person names it.
pub(super) fn endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(url) => format!("AWS endpoint {url}"),
        None => "AWS endpoints".to_string(),
    }
}

pub(super) fn identity_problem(home: &str, e: &aws::IdentityError) -> Check {
    if e.unreachable {
        return Check::new("endpoint", Some(home), endpoint()).problem(
            Status::Missing,
            Some(e.error.message.clone()),
            "nothing else is checked until it answers",
        );
    }
    Check::new("credentials", None, "credentials").problem(
        Status::Missing,
        Some(e.error.to_string()),
        "configure credentials (AWS_PROFILE, `aws sso login`, or the CI role: docs/aws-setup.md#iam-roles-for-ci)",
    )
}

/// A setting the build cannot do without is not set.
fn unset(name: &'static str, key: &str, fix: &str) -> Check {
    Check::new(
        name,
        None,
        format!("setting `[aws].{key}` in imagectl.toml"),
    )
    .missing(format!("set it: {fix} ({NETWORK_DOC})"))
}

/// The build subnet and security group in the home region, by their
/// `Name` tags: found, the group without ingress, both in one VPC.
pub(super) async fn network(project: &Project, session: &Session, job: &str) -> Vec<Check> {
    let aws = &project.settings.aws;
    let home = aws.region.as_str();
    let ec2 = session.ec2(home);
    let mut out = Vec::new();
    let mut subnet_vpcs = Vec::new();
    match &aws.build_subnet {
        None => out.push(unset(
            "subnet",
            "build_subnet",
            "the Name tag of the private build subnet",
        )),
        Some(name) => {
            let c = Check::new("subnet", Some(home), format!("subnet tagged Name={name}"));
            out.push(match ec2.subnets_named(name).await {
                Ok(s) if s.is_empty() => c.missing(format!(
                    "create it ({NETWORK_DOC}) or set [aws].build_subnet"
                )),
                Ok(s) => {
                    subnet_vpcs = s.iter().map(|s| s.vpc.clone()).collect();
                    c.ok(ids(s.iter().map(|s| s.id.as_str())))
                }
                Err(e) => c.failed(&e, job),
            });
        }
    }
    match &aws.build_security_group {
        None => out.push(unset(
            "security-group",
            "build_security_group",
            "the Name tag of a security group without ingress",
        )),
        Some(name) => out.push(group(&ec2, name, &subnet_vpcs, job).await),
    }
    out
}

async fn group(ec2: &aws::Ec2, name: &str, subnet_vpcs: &[String], job: &str) -> Check {
    let c = Check::new(
        "security-group",
        Some(&ec2.region),
        format!("security group tagged Name={name}"),
    );
    let groups = match ec2.security_groups_named(name).await {
        Ok(g) => g,
        Err(e) => return c.failed(&e, job),
    };
    if groups.is_empty() {
        return c.missing(format!(
            "create it without ingress rules ({NETWORK_DOC}) or set [aws].build_security_group"
        ));
    }
    if let Some(g) = groups.iter().find(|g| g.ingress_rules > 0) {
        let n = g.ingress_rules;
        return c.problem(
            Status::Missing,
            Some(format!(
                "{} has {n} ingress rule{}",
                g.id,
                if n == 1 { "" } else { "s" }
            )),
            format!("remove them: Packer reaches the build instance through Session Manager, nothing may reach it ({NETWORK_DOC})"),
        );
    }
    let in_subnet_vpc = |g: &aws::Group| subnet_vpcs.is_empty() || subnet_vpcs.contains(&g.vpc);
    if !groups.iter().any(in_subnet_vpc) {
        return c.problem(
            Status::Missing,
            Some(format!(
                "it is in {}, the build subnet in {}",
                ids(groups.iter().map(|g| g.vpc.as_str())),
                ids(subnet_vpcs.iter().map(String::as_str))
            )),
            format!("tag a group in the build subnet's VPC ({NETWORK_DOC})"),
        );
    }
    c.ok(ids(groups.iter().map(|g| g.id.as_str())))
}

fn ids<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    ids.collect::<Vec<_>>().join(", ")
}

/// The build instance profile, with a role.
pub(super) async fn instance_profile(project: &Project, session: &Session, job: &str) -> Check {
    let aws = &project.settings.aws;
    let Some(name) = &aws.instance_profile else {
        return unset(
            "instance-profile",
            "instance_profile",
            "the build instance's profile, for Session Manager",
        );
    };
    let c = Check::new("instance-profile", None, format!("instance profile {name}"));
    match session.instance_profile_roles(&aws.region, name).await {
        Ok(None) => c.missing(format!(
            "create it with a role that has AmazonSSMManagedInstanceCore ({NETWORK_DOC}) or set [aws].instance_profile"
        )),
        Ok(Some(roles)) if roles.is_empty() => c.problem(
            Status::Missing,
            Some("it has no role".into()),
            format!("add a role that has AmazonSSMManagedInstanceCore ({NETWORK_DOC})"),
        ),
        Ok(Some(roles)) => c.ok(format!("role {}", roles.join(", "))),
        Err(e) => c.failed(&e, job),
    }
}

/// The images' KMS key in every region images are encrypted in.
pub(super) async fn kms_keys(project: &Project, session: &Session, job: &str) -> Vec<Check> {
    let aws = &project.settings.aws;
    let mut out = Vec::new();
    for region in aws.regions() {
        let Some(key) = aws.kms_key_in(region) else {
            break;
        };
        let c = Check::new("kms-key", Some(region), format!("KMS key {key}"));
        out.push(match session.kms_key(region, &key).await {
            Ok(None) => c.missing(format!("create it there ({KMS_DOC}) or set [aws].kms_key")),
            Ok(Some(k)) if k.state != "Enabled" => c.problem(
                Status::Missing,
                Some(format!("{} is {}", k.arn, k.state)),
                format!("enable it, or point the alias at an enabled key ({KMS_DOC})"),
            ),
            Ok(Some(k)) => c.ok(k.arn),
            Err(e) => c.failed(&e, job),
        });
    }
    out
}

/// The key builds sign their provenance with and publish verifies with
/// (`[provenance] kms_key`), in the home region: a bake that could not sign
/// would leave unsigned images behind.
pub(super) async fn provenance_key(project: &Project, session: &Session, job: &str) -> Vec<Check> {
    let Some(key) = project.settings.provenance.kms_key.as_deref() else {
        return Vec::new();
    };
    let home = &project.settings.aws.region;
    let c = Check::new("provenance-key", Some(home), format!("signing key {key}"));
    vec![match session.kms(home).signing_key(key).await {
        Ok(Ok(k)) => c.ok(format!("{} ({})", k.arn, k.algorithm)),
        Ok(Err(why)) => c.problem(
            Status::Missing,
            Some(why),
            "create an asymmetric SIGN_VERIFY key (ECC_NIST_P256) there, or point [provenance] kms_key at one (docs/provenance.md)".to_string(),
        ),
        Err(e) => c.failed(&e, job),
    }]
}

/// The locked base images, in every region they are locked for. Builds
/// start from the home region's: one missing elsewhere is a warning.
pub(super) async fn base_images(project: &Project, session: &Session, job: &str) -> Vec<Check> {
    let aws = &project.settings.aws;
    let lock = match Lock::load(project) {
        Ok(l) => l,
        Err(e) => {
            return vec![Check::new("base-image", None, "images/bases.lock").problem(
                Status::Missing,
                Some(e.to_string()),
                "run `imagectl bases update` and commit images/bases.lock",
            )]
        }
    };
    let mut out = Vec::new();
    for region in aws.regions() {
        let wanted: Vec<(&String, &String)> = project
            .settings
            .bases
            .keys()
            .filter_map(|b| Some((b, &lock.bases.get(b)?.get(region)?.ami)))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        let amis: Vec<String> = wanted.iter().map(|(_, a)| (*a).clone()).collect();
        let found = session.ec2(region).images_by_id(&amis).await;
        for (base, ami) in wanted {
            let c = Check::new(
                "base-image",
                Some(region),
                format!("base image {ami} ({base})"),
            );
            out.push(match &found {
                Err(e) => c.failed(e, job),
                Ok(images) => match images.iter().find(|i| &i.id == ami) {
                    Some(i) if i.state == "available" => c.ok(i.name.clone()),
                    other => {
                        let status = if region == aws.region {
                            Status::Missing
                        } else {
                            Status::Warn
                        };
                        c.problem(
                            status,
                            other.map(|i| format!("it is {}", i.state)),
                            "run `imagectl bases update` and commit images/bases.lock",
                        )
                    }
                },
            });
        }
    }
    out
}

/// The launch template that follows `channel` of `role`, in every region:
/// there and tagged with the channel, which publishing requires. Publish
/// refuses one missing in the home region and moves none where it is
/// missing elsewhere.
pub(super) async fn launch_templates(
    project: &Project,
    session: &Session,
    role: &str,
    channel: &str,
) -> Vec<Check> {
    let settings = &project.settings;
    let Some(name) = settings
        .publish
        .launch_templates
        .get(role)
        .and_then(|m| m.get(channel))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for region in settings.aws.regions() {
        let c = Check::new(
            "launch-template",
            Some(region),
            format!("launch template {name} ({role} {channel})"),
        );
        let tagged = format!("tagged `{} = {channel}`", tags::CHANNEL);
        out.push(match session.ec2(region).launch_template(name).await {
            Ok(None) => {
                let fix = format!("create it {tagged} ({TEMPLATE_DOC}) or remove it from [publish.launch_templates.{role}]");
                if region == settings.aws.region {
                    c.missing(fix)
                } else {
                    c.problem(Status::Warn, Some("publishing moves no template here".into()), fix)
                }
            }
            Ok(Some(t)) if t.tags.get(tags::CHANNEL).map(String::as_str) != Some(channel) => c
                .problem(
                    Status::Missing,
                    Some(format!("it is not {tagged}")),
                    format!("tag it: only the publish policy of `{channel}` may move it ({TEMPLATE_DOC})"),
                ),
            Ok(Some(t)) => c.ok(format!("default version {}", t.default_version)),
            Err(e) => c.failed(&e, "publish"),
        });
    }
    out
}

/// SSM answers under the prefix, in every region channels live in.
pub(super) async fn ssm(project: &Project, session: &Session, job: &str) -> Vec<Check> {
    let prefix = &project.settings.publish.prefix;
    let mut out = Vec::new();
    for region in project.settings.aws.regions() {
        let c = Check::new(
            "ssm",
            Some(region),
            format!("SSM parameters under {prefix}"),
        );
        out.push(match session.ssm(region).probe_path(prefix).await {
            Ok(()) => c.ok(""),
            Err(e) => c.failed(&e, job),
        });
    }
    out
}

/// The account's image block public access, per region: unblocked is a
/// warning (imagectl shares only with the accounts named, but anybody
/// with `ec2:ModifyImageAttribute` could make an image public).
pub(super) async fn block_public_access(project: &Project, session: &Session) -> Vec<Check> {
    let mut out = Vec::new();
    for region in project.settings.aws.regions() {
        let c = Check::new(
            "image-block-public-access",
            Some(region),
            "image block public access",
        );
        let enable = format!("turn it on: `aws ec2 enable-image-block-public-access --image-block-public-access-state block-new-sharing --region {region}`");
        out.push(
            match session.ec2(region).image_block_public_access().await {
                Ok(s) if s == "unblocked" || s.is_empty() => c.problem(
                    Status::Warn,
                    Some("unblocked: images can be made public".into()),
                    enable,
                ),
                Ok(s) => c.ok(s),
                Err(e) => c.problem(
                    Status::Warn,
                    Some(format!("could not be read: {e}")),
                    "check it in the EC2 console (Data protection and security)",
                ),
            },
        );
    }
    out
}

const ROLLOUT_DOC: &str = "docs/rollout.md#the-terraform-side";

/// The Auto Scaling groups of `channel` of `role` (`[publish.auto_scaling_groups]`):
/// each exists in some region, launches the channel's launch template,
/// on a numbered version (else its refreshes cannot roll back), and is
/// tagged with the role (else the instance policy lets no agent report to it).
pub(super) async fn auto_scaling_groups(
    project: &Project,
    session: &Session,
    role: &str,
    channel: &str,
) -> Vec<Check> {
    let settings = &project.settings;
    let Some(names) = settings
        .publish
        .auto_scaling_groups
        .get(role)
        .and_then(|m| m.get(channel))
    else {
        return Vec::new();
    };
    let expected = settings
        .publish
        .launch_templates
        .get(role)
        .and_then(|m| m.get(channel));
    let mut found: Vec<(String, aws::AsGroup)> = Vec::new();
    let mut out = Vec::new();
    for region in settings.aws.regions() {
        match session.autoscaling(region).groups(names).await {
            Ok(groups) => found.extend(groups.into_iter().map(|g| (region.to_string(), g))),
            Err(e) => {
                let c = Check::new(
                    "auto-scaling-group",
                    Some(region),
                    format!("Auto Scaling groups of {role} {channel}"),
                );
                out.push(c.failed(&e, "publish"));
            }
        }
    }
    for name in names {
        let resource = format!("Auto Scaling group {name} ({role} {channel})");
        if !found.iter().any(|(_, g)| &g.name == name) && out.is_empty() {
            out.push(Check::new("auto-scaling-group", None, resource.clone()).missing(format!(
                "create it in one of {} ({ROLLOUT_DOC}) or remove it from [publish.auto_scaling_groups.{role}]",
                settings.aws.regions().join(", ")
            )));
        }
        for (region, g) in found.iter().filter(|(_, g)| &g.name == name) {
            out.push(group_check(
                Check::new("auto-scaling-group", Some(region), resource.clone()),
                g,
                role,
                expected,
            ));
        }
    }
    out
}

fn group_check(c: Check, g: &aws::AsGroup, role: &str, expected: Option<&String>) -> Check {
    let Some(spec) = &g.launch_template else {
        return c.problem(
            Status::Missing,
            Some("it launches no launch template directly".into()),
            format!("give it a launch template ({ROLLOUT_DOC}); imagectl rolls out launch template versions only"),
        );
    };
    let template = spec.name.clone().or(spec.id.clone()).unwrap_or_default();
    if let Some(expected) = expected.filter(|e| **e != template) {
        return c.problem(
            Status::Missing,
            Some(format!(
                "it launches template {template}, not the channel's {expected}"
            )),
            "point it at the channel's template, or list it under the channel it follows",
        );
    }
    if g.tags.get(tags::ROLE).map(String::as_str) != Some(role) {
        return c.problem(
            Status::Warn,
            Some(format!("it is not tagged `{} = {role}`", tags::ROLE)),
            format!("tag it: the instance policy (`imagectl iam-policy instance {role}`) lets agents report only to groups of their role"),
        );
    }
    if spec.number().is_none() {
        return c.problem(
            Status::Warn,
            Some(format!("it launches {template} version `{}`", spec.version)),
            format!("its refreshes cannot roll back by themselves; launch a numbered version ({ROLLOUT_DOC})"),
        );
    }
    c.ok(format!(
        "{} instance{}, template {template} version {}",
        g.instances,
        if g.instances == 1 { "" } else { "s" },
        spec.version
    ))
}
