//! A role resolved once per command into everything a build of it needs:
//! the merged role, its locked base image, its Packer template, its build
//! context with the digest of every file, and the content hash over them.
//! Every command that hashes, renders, stages, builds or publishes takes
//! targets; nothing reloads the lock, re-renders the template or re-reads a
//! file's digest after this.

use std::path::Path;

use crate::agent::Agent;
use crate::context::{Context, ReadError};
use crate::diag::Diagnostics;
use crate::hash::{self, ContentHash};
use crate::hcl::{self, Body};
use crate::lock::{self, Lock};
use crate::packer;
use crate::project::Project;
use crate::role::{self, Role};
use crate::stage::{self, Staged};

/// Errors resolving a target.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Role files are invalid.
    #[error(transparent)]
    Invalid(#[from] Diagnostics),
    /// No role of that name (`role::load` reports unknown names itself;
    /// this guards the one-role case).
    #[error("unknown role `{0}`")]
    Unknown(String),
    /// The role is abstract and never built.
    #[error("role `{0}` is abstract: it is never built and has no image hash; use a role that extends it")]
    Abstract(String),
    /// The base image is not pinned, or its pin is stale.
    #[error(transparent)]
    Lock(#[from] lock::Error),
    /// The Packer template cannot be generated.
    #[error(transparent)]
    Template(#[from] packer::MissingSetting),
    /// A file of the role cannot be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl Error {
    /// Whether the user fixes it (exit 2): everything but a file that
    /// cannot be read.
    pub fn is_usage(&self) -> bool {
        match self {
            Error::Lock(e) => e.is_usage(),
            Error::Read(_) => false,
            _ => true,
        }
    }
}

/// One concrete role, resolved.
#[derive(Debug, Clone)]
pub struct Target {
    /// The role, merged and validated.
    pub role: Role,
    /// Its base image in the home region, from the lock.
    pub base: lock::Entry,
    /// Its Packer template, for current Packer (what `images/` holds).
    pub template: Body,
    /// The template's text: `images/ROLE.pkr.hcl`.
    pub template_text: String,
    /// Every file it bakes, with its digest.
    pub context: Context,
    /// The content hash over all of the above.
    pub hash: ContentHash,
}

impl Target {
    /// Resolves a concrete role on the locked base image.
    pub fn resolve(project: &Project, lock: &Lock, role: Role) -> Result<Target, Error> {
        if role.is_abstract {
            return Err(Error::Abstract(role.name));
        }
        let base_name = role.image.base.clone().unwrap_or_default();
        let base = lock.resolve(project, &base_name)?.clone();
        let template = packer::template(&project.settings, &role, &base)?;
        let template_text = hcl::render(&template);
        let context = Context::resolve(project, &role)?;
        let hash = hash::compute(&role, &base_name, &base, &template_text, &context);
        Ok(Target {
            role,
            base,
            template,
            template_text,
            context,
            hash,
        })
    }

    /// The role's name.
    pub fn name(&self) -> &str {
        &self.role.name
    }

    /// Writes the staged context with `agent` to `out` (see [`stage::stage`]).
    pub fn stage(&self, agent: &Agent, out: &Path) -> Result<Staged, stage::Error> {
        stage::stage(&self.role, &self.hash.hash, &self.context, agent, out)
    }

    /// Checks, just before the bake, that `staged` and the sources still hold
    /// what was hashed (see [`stage::verify`]).
    pub fn verify(&self, staged: &Staged) -> Result<(), stage::Error> {
        stage::verify(&self.context, staged)
    }

    /// `SOURCE_DATE_EPOCH` for builds of this target: its base image's
    /// creation time, so that the same inputs give the same timestamps.
    pub fn source_date_epoch(&self) -> Option<i64> {
        crate::time::iso_secs(&self.base.created)
    }
}

/// The named roles resolved, every concrete role when none is named; the
/// lock is read once for all of them.
pub fn resolve(project: &Project, names: &[String]) -> Result<Vec<Target>, Error> {
    resolve_as(project, names, None)
}

/// [`resolve`], with every role's AMIs made by `method` when one is given
/// (`build --target disk`, `--method`): the method enters the hash, so a
/// disk image never takes the name of a Packer-built one.
pub fn resolve_as(
    project: &Project,
    names: &[String],
    method: Option<role::Method>,
) -> Result<Vec<Target>, Error> {
    let mut roles = if names.is_empty() {
        role::load_all(project)?
            .into_iter()
            .filter(|r| !r.is_abstract)
            .collect()
    } else {
        role::load(project, names)?
    };
    if let Some(method) = method {
        for r in &mut roles {
            r.image.method = method;
        }
    }
    let lock = Lock::load(project)?;
    roles
        .into_iter()
        .map(|r| Target::resolve(project, &lock, r))
        .collect()
}

/// One named role, resolved.
pub fn resolve_one(project: &Project, name: &str) -> Result<Target, Error> {
    resolve_one_as(project, name, None)
}

/// One named role, resolved as [`resolve_as`] does.
pub fn resolve_one_as(
    project: &Project,
    name: &str,
    method: Option<role::Method>,
) -> Result<Target, Error> {
    resolve_as(project, std::slice::from_ref(&name.to_string()), method)?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Unknown(name.to_string()))
}
