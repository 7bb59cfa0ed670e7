//! `imagectl sbom ROLE [--target local|aws] [--hash H]`: the SBOM of a
//! build of the role, SPDX 2.3 JSON on stdout, byte for byte what the
//! build kept (a local tarball built before builds kept one has it made
//! from the tarball).

use std::io::Write;

use imagectl_core::project::Project;
use imagectl_core::record::Kind;
use imagectl_core::role::Method;
use imagectl_core::sbom::{self, store};
use imagectl_core::target::{self, Target};

use crate::cli::{BuildTarget, SbomArgs};
use crate::{local, Config, Error};

/// A store error as the command's error, keeping whose it is to fix.
pub(super) fn store_error(e: store::Error) -> Error {
    Error::Layer {
        usage: e.is_usage(),
        source: Box::new(e),
    }
}

/// The kind of build a `--target` names.
pub(super) fn kind(t: BuildTarget) -> Kind {
    match t {
        BuildTarget::Local | BuildTarget::Disk => Kind::Local,
        BuildTarget::Aws => Kind::Aws,
    }
}

/// The method a `--target` resolves the role with: a disk image has the
/// hash of the role made by the disk method.
pub(super) fn method(t: BuildTarget) -> Option<Method> {
    (t == BuildTarget::Disk).then_some(Method::Disk)
}

/// A content hash prefix as typed: 4 to 64 lowercase hex digits.
pub(super) fn is_hash_prefix(s: &str) -> bool {
    (4..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The SBOM of the build of `role` of kind `kind` whose hash starts with
/// `prefix`, as bytes; `current` is the role resolved now, whose release
/// archives and time complete an SBOM made from a tarball of its hash.
pub(super) fn kept(
    project: &Project,
    role: &str,
    kind: Kind,
    prefix: &str,
    current: Option<&Target>,
) -> Result<Vec<u8>, Error> {
    let builds = store::builds(&project.root, local::LOCAL_DIR, role, kind).map_err(store_error)?;
    let b = store::find(builds, role, kind, prefix).map_err(store_error)?;
    let (archives, created) = match current {
        Some(t) if t.hash.hash.as_str().starts_with(&b.hash) => {
            (Some(sbom::archives_of(t)), Some(sbom::created_of(t)))
        }
        _ => (None, None),
    };
    store::document_of(&b, archives, created).map_err(store_error)
}

/// The SBOM of the build of `role` of kind `kind` whose hash starts with
/// `prefix`: the one this machine's build kept; for AMIs, else the one the
/// build published beside the channels, else, for the role's current hash
/// not built yet, the one its build will keep, made now from the staged
/// context (what a pull request's plan compares).
pub(super) fn find(
    project: &Project,
    role: &str,
    kind: Kind,
    prefix: &str,
    current: Option<&Target>,
) -> Result<Vec<u8>, Error> {
    let not_here = match kept(project, role, kind, prefix, current) {
        Err(e @ Error::Layer { usage: true, .. }) if kind == Kind::Aws => e,
        other => return other,
    };
    let current_hash = current
        .map(|t| t.hash.hash.as_str())
        .filter(|h| h.starts_with(prefix));
    let Some(full) = (prefix.len() == 64).then_some(prefix).or(current_hash) else {
        return Err(not_here);
    };
    let published = super::aws_runtime()?.block_on(published(project, role, full));
    let unbuilt = current.filter(|t| t.hash.hash.as_str() == full);
    match (published, unbuilt) {
        (Ok(bytes), _) => Ok(bytes),
        (Err(e), Some(t)) => {
            tracing::debug!("{e}");
            planned(t)
        }
        (Err(Error::Usage(_)), None) => Err(not_here),
        (Err(e), None) => Err(e),
    }
}

/// The SBOM an AMI build of `t` will keep: staged now (with the agent
/// `build` would bake), its declared packages and staged files.
fn planned(t: &Target) -> Result<Vec<u8>, Error> {
    let explicit = std::env::var_os("IMAGECTL_AGENT_BIN").map(std::path::PathBuf::from);
    let agent = super::agent(explicit.as_deref())?;
    agent.check_arch(&t.role)?;
    let dir =
        std::env::temp_dir().join(format!("imagectl-sbom-{}-{}", t.name(), std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = (|| {
        let staged = t.stage(&agent, &dir.join("stage"))?;
        let inv = sbom::Inventory::declared(t, &staged).map_err(|e| store_error(e.into()))?;
        Ok::<_, Error>(sbom::spdx::render(&sbom::spdx::document(&inv)))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    tracing::info!(
        "{}: no AMI build of {} yet: the SBOM its build will keep, from the staged context",
        t.name(),
        t.hash.short()
    );
    result
}

/// The SBOM the AMI build of `hash` (all 64 digits) of `role` published
/// at `PREFIX/ROLE/sbom/HASH` (read with GetParameters, which the plan job
/// may call), for a machine that did not run that build.
pub(super) async fn published(project: &Project, role: &str, hash: &str) -> Result<Vec<u8>, Error> {
    let home = &project.settings.aws.region;
    let session = crate::aws::Session::load(home).await;
    let name = imagectl_core::names::sbom_parameter(&project.settings.publish.prefix, role, hash);
    let found = session
        .ssm(home)
        .get_many(std::slice::from_ref(&name))
        .await?;
    let text = found.get(&name).ok_or_else(|| {
        Error::Usage(format!(
            "no SBOM of the `{role}` build {} on this machine, and none at {name} in {home} (a build before SBOMs were published, or one too large for a parameter)",
            imagectl_core::hash::short(hash)
        ))
    })?;
    store::unpack(text).ok_or_else(|| {
        Error::Failed(anyhow::anyhow!(
            "{name} in {home} holds no packed SBOM (gzip, base64)"
        ))
    })
}

/// Prints the SBOM.
pub fn run(config: &Config, args: &SbomArgs) -> Result<(), Error> {
    let project = config.project()?;
    let (current, prefix) = match &args.hash {
        // The role as it is now matters only when it names the build.
        Some(h) => (
            target::resolve_one_as(&project, &args.role, method(args.target)).ok(),
            h.clone(),
        ),
        None => {
            let t = target::resolve_one_as(&project, &args.role, method(args.target))?;
            let hash = t.hash.hash.to_string();
            (Some(t), hash)
        }
    };
    if !is_hash_prefix(&prefix) {
        return Err(Error::Usage(format!(
            "--hash `{prefix}` is not a content hash: 4 to 64 lowercase hex digits"
        )));
    }
    let kind = kind(args.target);
    let bytes = match find(&project, &args.role, kind, &prefix, current.as_ref()) {
        Err(Error::Layer { usage: true, .. }) if args.hash.is_none() => {
            let how = match kind {
                Kind::Local if args.target == BuildTarget::Disk => {
                    format!("imagectl build {} --target disk", args.role)
                }
                Kind::Local => format!("imagectl build {} --target local", args.role),
                Kind::Aws => format!("imagectl build {}", args.role),
            };
            return Err(Error::Usage(format!(
                "`{}` has no {} build of its current hash {} on this machine; `{how}` builds it, `--hash` names another build",
                args.role,
                kind.as_str(),
                imagectl_core::hash::short(&prefix)
            )));
        }
        other => other?,
    };
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| Error::Failed(anyhow::anyhow!("cannot write the SBOM to stdout: {e}")))
}
