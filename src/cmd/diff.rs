//! `imagectl diff ROLE A B`: what differs between two images of a role,
//! read from their SBOMs. Each of A and B is, in this order: the path of a
//! local tarball or of an SBOM; an AMI ID or a channel of `imagectl.toml`
//! (the image's content hash read from AWS, its SBOM from the build record
//! of this machine, checked against the image's `imagectl:sbom-sha256`
//! tag); or a content hash prefix (`--target` says which builds).

use std::path::{Path, PathBuf};

use imagectl_core::hash;
use imagectl_core::names::{channel_parameter, inputs_parameter, is_ami_id, tags};
use imagectl_core::project::Project;
use imagectl_core::record::{self, Kind};
use imagectl_core::sbom::{self, diff, store, Inventory};
use imagectl_core::target::{self, Target};

use super::sbom::{is_hash_prefix, kind, store_error};
use super::{aws_runtime, print_json};
use crate::cli::{DiffArgs, OutputFormat};
use crate::{aws, Config, Error};

/// One side as typed, once told apart.
enum Named {
    /// A tarball or an SBOM on this machine.
    Path(PathBuf),
    /// An AMI.
    Ami(String),
    /// A channel.
    Channel(String),
    /// A content hash prefix.
    Hash(String),
}

fn classify(config: &Config, project: &Project, s: &str) -> Result<Named, Error> {
    let path = if Path::new(s).is_absolute() {
        PathBuf::from(s)
    } else {
        config.dir.join(s)
    };
    let looks_like_path = s.contains('/') || s.ends_with(".tar") || s.ends_with(".json");
    if path.is_file() || looks_like_path {
        return Ok(Named::Path(path));
    }
    if is_ami_id(s) {
        return Ok(Named::Ami(s.to_string()));
    }
    if project.settings.publish.channels.iter().any(|c| c == s) {
        return Ok(Named::Channel(s.to_string()));
    }
    if is_hash_prefix(s) {
        return Ok(Named::Hash(s.to_string()));
    }
    Err(Error::Usage(format!(
        "`{s}` is not a content hash (4 to 64 lowercase hex digits), the path of a tarball or an SBOM, an AMI ID, or a channel of imagectl.toml ({})",
        project.settings.publish.channels.join(", ")
    )))
}

/// The image an AMI or a channel holds: its content hash, and the
/// `imagectl:sbom-sha256` it carries.
async fn from_aws(
    project: &Project,
    role: &str,
    named: &Named,
) -> Result<(String, Option<String>), Error> {
    let home = &project.settings.aws.region;
    let session = aws::Session::load(home).await;
    let ami = match named {
        Named::Ami(a) => a.clone(),
        Named::Channel(c) => {
            let name = channel_parameter(&project.settings.publish.prefix, role, c);
            // GetParameters, which the plan job may call.
            let found = session
                .ssm(home)
                .get_many(std::slice::from_ref(&name))
                .await?;
            found.get(&name).cloned().ok_or_else(|| {
                Error::Usage(format!(
                    "channel `{c}` of `{role}` holds no image (`{name}` does not exist in {home})"
                ))
            })?
        }
        _ => return Err(Error::Usage("not an AMI or a channel".into())),
    };
    let found = session
        .ec2(home)
        .images_by_id(std::slice::from_ref(&ami))
        .await?;
    let image = found
        .first()
        .ok_or_else(|| Error::Usage(format!("no image {ami} in {home}")))?;
    if image.tag(tags::ROLE) != Some(role) {
        return Err(Error::Usage(format!(
            "{ami} is not an image of `{role}` (its imagectl:role tag is {})",
            image
                .tag(tags::ROLE)
                .map(|r| format!("`{r}`"))
                .unwrap_or_else(|| "missing".into())
        )));
    }
    let hash = image
        .tag(tags::HASH)
        .ok_or_else(|| Error::Usage(format!("{ami} has no imagectl:content-hash tag")))?;
    Ok((hash.to_string(), image.tag(tags::SBOM).map(String::from)))
}

/// The inventory of one side.
fn inventory(
    config: &Config,
    project: &Project,
    args: &DiffArgs,
    name: &str,
    current: Option<&Target>,
) -> Result<Inventory, Error> {
    let named = classify(config, project, name)?;
    match &named {
        Named::Path(path) => {
            if !path.is_file() {
                return Err(Error::Usage(format!("`{}` does not exist", path.display())));
            }
            let is_json = path.extension().is_some_and(|e| e == "json");
            if is_json {
                let bytes = std::fs::read(path).map_err(|e| {
                    Error::Failed(anyhow::anyhow!("cannot read `{}`: {e}", path.display()))
                })?;
                store::from_document(path, &bytes).map_err(store_error)
            } else {
                // The tarball's own digest is no difference between images:
                // not taken.
                sbom::rootfs::inventory(path, None, None, None).map_err(|e| store_error(e.into()))
            }
        }
        Named::Hash(prefix) => {
            let bytes = super::sbom::find(project, &args.role, kind(args.target), prefix, current)?;
            store::from_document(Path::new(prefix), &bytes).map_err(store_error)
        }
        Named::Ami(_) | Named::Channel(_) => {
            let rt = aws_runtime()?;
            let (hash, tagged) = rt.block_on(from_aws(project, &args.role, &named))?;
            let bytes = super::sbom::find(project, &args.role, Kind::Aws, &hash, current)?;
            let digest = imagectl_core::digest::sha256(&bytes);
            if let Some(t) = tagged.filter(|t| *t != digest) {
                return Err(Error::Failed(anyhow::anyhow!(
                    "the SBOM kept for `{}` {} (SHA-256 {}) is not the one {name} carries (imagectl:sbom-sha256 {})",
                    args.role,
                    hash::short(&hash),
                    hash::short(&digest),
                    hash::short(&t)
                )));
            }
            store::from_document(Path::new(name), &bytes).map_err(store_error)
        }
    }
}

/// The recorded inputs of the build of `hash`: the role as it is now when
/// that is its hash, else the build record's.
fn inputs_of(
    records: &[record::Record],
    current: Option<&Target>,
    role: &str,
    hash: &str,
) -> Option<String> {
    if let Some(t) = current.filter(|t| t.hash.hash.as_str() == hash) {
        return Some(t.hash.record());
    }
    records
        .iter()
        .rev()
        .find(|r| r.role == role && r.hash == hash && r.inputs.is_some())
        .and_then(|r| r.inputs.clone())
}

/// The recorded inputs of each side's build: the role as it is now or this
/// machine's build record, else, for an AMI build, the record beside the
/// channels (as `plan` reads it); `None` where none is found.
fn recorded_inputs(
    project: &Project,
    current: Option<&Target>,
    role: &str,
    sides: [&Inventory; 2],
) -> [Option<String>; 2] {
    let records = record::load(&project.root).unwrap_or_default();
    let mut known = sides.map(|i| inputs_of(&records, current, role, &i.hash));
    let elsewhere: Vec<(String, String)> = sides
        .iter()
        .zip(&known)
        .filter(|(i, k)| k.is_none() && i.target == Kind::Aws && i.hash.len() == 64)
        .map(|(i, _)| (role.to_string(), i.hash.clone()))
        .collect();
    if elsewhere.is_empty() {
        return known;
    }
    let read = aws_runtime().map_err(|e| e.to_string()).and_then(|rt| {
        rt.block_on(async {
            let home = &project.settings.aws.region;
            let session = aws::Session::load(home).await;
            crate::inputs::read(project, &session.ssm(home), &elsewhere).await
        })
        .map_err(|e| e.to_string())
    });
    let found = match read {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!("cannot read the builds' recorded inputs: {e}");
            return known;
        }
    };
    for (slot, i) in known.iter_mut().zip(sides) {
        if slot.is_none() {
            let name = inputs_parameter(&project.settings.publish.prefix, role, &i.hash);
            *slot = found.get(&name).cloned();
        }
    }
    known
}

/// Prints what differs.
pub fn run(config: &Config, args: &DiffArgs) -> Result<(), Error> {
    let project = config.project()?;
    // The role as it is now: its inputs and release archives, when one
    // side is its current hash. A role that does not resolve now can still
    // be compared from what its builds kept.
    let current =
        match target::resolve_one_as(&project, &args.role, super::sbom::method(args.target)) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::debug!("{}: {e}", args.role);
                None
            }
        };
    let a = inventory(config, &project, args, &args.from, current.as_ref())?;
    let b = inventory(config, &project, args, &args.to, current.as_ref())?;
    for (name, i) in [(&args.from, &a), (&args.to, &b)] {
        if i.role != args.role {
            return Err(Error::Usage(format!(
                "`{name}` is an image of `{}`, not of `{}`",
                i.role, args.role
            )));
        }
    }
    let [old, new] = recorded_inputs(&project, current.as_ref(), &args.role, [&a, &b]);
    let reasons = match (old, new) {
        (Some(old), Some(new)) => Some(hash::changes_between(&old, &new)),
        _ => None,
    };
    let d = diff::diff((&args.from, &a), (&args.to, &b), reasons);
    match config.output {
        OutputFormat::Json => print_json(&d),
        OutputFormat::Text => print!("{}", diff::text(&d)),
    }
    if args.exit_code && d.differs() {
        return Err(Error::Exit(1));
    }
    Ok(())
}
