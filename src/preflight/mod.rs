//! The preflight: whether what a build or a publication needs is there
//! before anything starts (credentials, the build network, the instance
//! profile, the KMS key, the base images, the launch templates of the
//! channels, SSM), as one check per resource and region, each problem
//! with its fix. `imagectl doctor` prints every check; `build`, `publish`
//! and `promote` run the ones they need first and stop on a missing one,
//! so nothing is baked for a publication that would fail afterwards.

mod checks;

use serde::Serialize;

use imagectl_core::project::Project;

use crate::aws::{self, Session};

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
    /// The Auto Scaling groups of these (role, channel) pairs.
    pub groups: Vec<(String, String)>,
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
        let groups = project
            .settings
            .publish
            .auto_scaling_groups
            .iter()
            .flat_map(|(role, by)| by.keys().map(move |c| (role.clone(), c.clone())))
            .collect();
        Scope {
            bake: true,
            templates,
            groups,
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
            groups: Vec::new(),
        }
    }

    /// And the Auto Scaling groups of the same pairs (`--roll`).
    pub fn rolling(mut self) -> Scope {
        self.groups = self.templates.clone();
        self
    }
}

/// Runs the checks of `scope`: the credentials first (nothing else can be
/// checked without them), then each resource in each region.
pub async fn run(project: &Project, session: &Session, scope: &Scope) -> Vec<Check> {
    let home = project.settings.aws.region.as_str();
    let mut out = Vec::new();
    match session.identity(home).await {
        Ok(id) => {
            out.push(Check::new("endpoint", Some(home), checks::endpoint()).ok("answers"));
            out.push(
                Check::new("credentials", None, "credentials")
                    .ok(format!("{} (account {})", id.arn, id.account)),
            );
        }
        Err(e) => {
            out.push(checks::identity_problem(home, &e));
            return out;
        }
    }
    let job = if scope.bake { "build" } else { "publish" };
    if scope.bake {
        out.extend(checks::network(project, session, job).await);
        out.push(checks::instance_profile(project, session, job).await);
        out.extend(checks::kms_keys(project, session, job).await);
        out.extend(checks::base_images(project, session, job).await);
    }
    for (role, channel) in &scope.templates {
        out.extend(checks::launch_templates(project, session, role, channel).await);
    }
    for (role, channel) in &scope.groups {
        out.extend(checks::auto_scaling_groups(project, session, role, channel).await);
    }
    out.extend(checks::ssm(project, session, job).await);
    out.extend(checks::provenance_key(project, session, job).await);
    if scope.bake {
        out.extend(checks::block_public_access(project, session).await);
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
        assert!(verdict(std::slice::from_ref(&warn)).is_ok());
        let e = verdict(&[warn.clone(), failed.clone(), missing]).unwrap_err();
        assert!(e.is_usage());
        assert!(e
            .to_string()
            .starts_with("1 prerequisite missing before anything started"));
        let e = verdict(&[warn, failed]).unwrap_err();
        assert!(!e.is_usage());
    }
}
