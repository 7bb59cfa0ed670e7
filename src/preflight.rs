//! The preflight: whether what a build or a publication needs is there
//! before anything starts (credentials, the build network, the instance
//! profile, the KMS key, the base images, the launch templates of the
//! channels, SSM), as one check per resource and region, each problem
//! with its fix. `imagectl doctor` prints every check; `build`, `publish`
//! and `promote` run the ones they need first and stop on a missing one,
//! so nothing is baked for a publication that would fail afterwards.

use serde::Serialize;

use imagectl_core::lock::Lock;
use imagectl_core::names::tags;
use imagectl_core::project::Project;

use crate::aws::{self, Session};

const NETWORK_DOC: &str = "docs/aws-setup.md#network-for-builds";
const KMS_DOC: &str = "docs/aws-setup.md#kms";
const TEMPLATE_DOC: &str = "docs/aws-setup.md#a-launch-template-that-follows-a-channel";

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// There, as needed.
    Ok,
    /// Missing or unusable: the work would fail.
    Missing,
    /// Works, but should be looked at.
    Warn,
    /// Could not be checked (AWS refused or failed the call).
    Error,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Warn => "warn",
            Status::Error => "error",
        }
    }
}

/// One resource, in one region, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What kind of check (`subnet`, `launch-template`).
    pub name: &'static str,
    /// The region, or none for what is global (IAM, credentials).
    pub region: Option<String>,
    /// The resource, as a person names it.
    pub resource: String,
    /// What was found.
    pub status: Status,
    /// What was found, or what is wrong with it.
    pub detail: Option<String>,
    /// What to do about it.
    pub fix: Option<String>,
}

impl Check {
    fn new(name: &'static str, region: Option<&str>, resource: impl Into<String>) -> Check {
        Check {
            name,
            region: region.map(String::from),
            resource: resource.into(),
            status: Status::Ok,
            detail: None,
            fix: None,
        }
    }

    fn ok(mut self, detail: impl Into<String>) -> Check {
        self.detail = Some(detail.into()).filter(|d: &String| !d.is_empty());
        self
    }

    fn problem(mut self, status: Status, detail: Option<String>, fix: impl Into<String>) -> Check {
        self.status = status;
        self.detail = detail;
        self.fix = Some(fix.into());
        self
    }

    fn missing(self, fix: impl Into<String>) -> Check {
        self.problem(Status::Missing, None, fix)
    }

    /// The call to check it failed: not known either way.
    fn failed(self, e: &aws::Error, job: &str) -> Check {
        self.problem(
            Status::Error,
            Some(e.to_string()),
            format!("check the credentials' permissions (`imagectl iam-policy {job}`)"),
        )
    }
}

impl std::fmt::Display for Check {
    /// `missing: subnet tagged Name=x in eu-west-1 — create it ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status.as_str(), self.resource)?;
        if let Some(r) = &self.region {
            write!(f, " in {r}")?;
        }
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        if let Some(fix) = &self.fix {
            write!(f, " — {fix}")?;
        }
        Ok(())
    }
}

/// What a preflight found in the way.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Something the work needs is missing.
    #[error("{}", lines("missing before anything started", .0))]
    Missing(Vec<Check>),
    /// Something could not be checked.
    #[error("{}", lines("could not be checked before anything started", .0))]
    Unchecked(Vec<Check>),
}

impl Error {
    /// Whether the user fixes it (exit 2): a missing resource is theirs to
    /// create; a check AWS failed is not.
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Missing(_))
    }
}

fn lines(what: &str, checks: &[Check]) -> String {
    let mut s = format!(
        "{} {what} (`imagectl doctor` lists every check; `--no-preflight` skips them):",
        if checks.len() == 1 {
            "1 prerequisite".to_string()
        } else {
            format!("{} prerequisites", checks.len())
        }
    );
    for c in checks {
        s.push_str(&format!("\n  {c}"));
    }
    s
}

/// The outcome of checks: an error naming every missing (else every
/// unchecked) resource; warnings pass.
pub fn verdict(checks: &[Check]) -> Result<(), Error> {
    let of =
        |s: Status| -> Vec<Check> { checks.iter().filter(|c| c.status == s).cloned().collect() };
    let missing = of(Status::Missing);
    if !missing.is_empty() {
        return Err(Error::Missing(missing));
    }
    let unchecked = of(Status::Error);
    if !unchecked.is_empty() {
        return Err(Error::Unchecked(unchecked));
    }
    Ok(())
}

/// What to check.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// What a bake needs: the build network, instance profile, KMS key,
    /// base images, image block public access.
    pub bake: bool,
    /// The launch templates of these (role, channel) pairs.
    pub templates: Vec<(String, String)>,
}

impl Scope {
    /// Everything: what a bake needs and every launch template configured.
    pub fn everything(project: &Project) -> Scope {
        let templates = project
            .settings
            .publish
            .launch_templates
            .iter()
            .flat_map(|(role, by)| by.keys().map(move |c| (role.clone(), c.clone())))
            .collect();
        Scope {
            bake: true,
            templates,
        }
    }

    /// Publishing `roles` to `channel`.
    pub fn publish<'a>(roles: impl IntoIterator<Item = &'a str>, channel: &str) -> Scope {
        Scope {
            bake: false,
            templates: roles
                .into_iter()
                .map(|r| (r.to_string(), channel.to_string()))
                .collect(),
        }
    }
}

/// Runs the checks of `scope`: the credentials first (nothing else can be
/// checked without them), then each resource in each region.
pub async fn run(project: &Project, session: &Session, scope: &Scope) -> Vec<Check> {
    let home = project.settings.aws.region.as_str();
    let mut checks = Vec::new();
    match session.identity(home).await {
        Ok(id) => {
            checks.push(Check::new("endpoint", Some(home), endpoint()).ok("answers"));
            checks.push(
                Check::new("credentials", None, "credentials")
                    .ok(format!("{} (account {})", id.arn, id.account)),
            );
        }
        Err(e) => {
            checks.push(identity_problem(home, &e));
            return checks;
        }
    }
    let job = if scope.bake { "build" } else { "publish" };
    if scope.bake {
        checks.extend(network(project, session, job).await);
        checks.push(instance_profile(project, session, job).await);
        checks.extend(kms_keys(project, session, job).await);
        checks.extend(base_images(project, session, job).await);
    }
    for (role, channel) in &scope.templates {
        checks.extend(launch_templates(project, session, role, channel).await);
    }
    checks.extend(ssm(project, session, job).await);
    if scope.bake {
        checks.extend(block_public_access(project, session).await);
    }
    checks
}

/// The endpoint the SDK is pointed at, as a person names it.
fn endpoint() -> String {
    match std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .filter(|v| !v.is_empty())
    {
        Some(url) => format!("AWS endpoint {url}"),
        None => "AWS endpoints".to_string(),
    }
}

fn identity_problem(home: &str, e: &aws::IdentityError) -> Check {
    if e.unreachable {
        return Check::new("endpoint", Some(home), endpoint()).problem(
            Status::Missing,
            Some(e.error.message.clone()),
            "check the network, the proxy and AWS_ENDPOINT_URL",
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
async fn network(project: &Project, session: &Session, job: &str) -> Vec<Check> {
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
async fn instance_profile(project: &Project, session: &Session, job: &str) -> Check {
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
async fn kms_keys(project: &Project, session: &Session, job: &str) -> Vec<Check> {
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

/// The locked base images, in every region they are locked for. Builds
/// start from the home region's: one missing elsewhere is a warning.
async fn base_images(project: &Project, session: &Session, job: &str) -> Vec<Check> {
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
async fn launch_templates(
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
async fn ssm(project: &Project, session: &Session, job: &str) -> Vec<Check> {
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
async fn block_public_access(project: &Project, session: &Session) -> Vec<Check> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_one_line_with_its_region_and_fix() {
        let c = Check::new("subnet", Some("eu-west-1"), "subnet tagged Name=x")
            .missing("create it (docs/aws-setup.md#network-for-builds) or set [aws].build_subnet");
        assert_eq!(
            c.to_string(),
            "missing: subnet tagged Name=x in eu-west-1 — create it (docs/aws-setup.md#network-for-builds) or set [aws].build_subnet"
        );
        assert_eq!(
            Check::new("instance-profile", None, "instance profile p")
                .ok("role r")
                .to_string(),
            "ok: instance profile p: role r"
        );
    }

    #[test]
    fn missing_wins_over_unchecked_and_warnings_pass() {
        let warn = Check::new("a", None, "a").problem(Status::Warn, None, "x");
        let missing = Check::new("b", None, "b").missing("y");
        let failed = Check::new("c", None, "c").problem(Status::Error, None, "z");
        assert!(verdict(&[warn.clone()]).is_ok());
        let e = verdict(&[warn.clone(), failed.clone(), missing]).unwrap_err();
        assert!(e.is_usage());
        assert!(e
            .to_string()
            .starts_with("1 prerequisite missing before anything started"));
        let e = verdict(&[warn, failed]).unwrap_err();
        assert!(!e.is_usage());
    }
}
