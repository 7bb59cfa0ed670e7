//! `imagectl publish`, `promote` and `rollback`: move channels.

use std::collections::BTreeMap;

use serde_json::json;

use crate::build::{self, Target};
use crate::cli::{OutputFormat, PromoteArgs, PublishArgs, RollbackArgs};
use crate::lock::Lock;
use crate::publish::{self, Change};
use crate::{aws, hash, role, Config, Error};

fn report(config: &Config, change: &Change) {
    match config.output {
        OutputFormat::Json => {
            let v = match change {
                Change::Unchanged { parameter } => {
                    json!({"parameter": parameter, "changed": false})
                }
                Change::Moved {
                    parameter,
                    regions,
                    launch_templates,
                } => json!({
                    "parameter": parameter,
                    "changed": true,
                    "regions": regions.iter().map(|(r, (old, new))| (r.clone(), json!({"from": old, "to": new}))).collect::<BTreeMap<_, _>>(),
                    "launch_templates": launch_templates.iter().map(|(r, n, v)| json!({"region": r, "name": n, "version": v})).collect::<Vec<_>>(),
                }),
            };
            crate::print_json(&v);
        }
        OutputFormat::Text => println!("{change}"),
    }
}

fn failed(e: publish::Error) -> Error {
    match e {
        publish::Error::Aws(_)
        | publish::Error::ReadBack { .. }
        | publish::Error::Superseded { .. }
        | publish::Error::Unsettled { .. } => Error::Failed(e.into()),
        other => Error::Usage(other.to_string()),
    }
}

fn session(config: &Config) -> Result<(crate::project::Project, tokio::runtime::Runtime), Error> {
    let project = config.project()?;
    let rt = aws::runtime().map_err(|e| Error::Failed(e.into()))?;
    Ok((project, rt))
}

/// `imagectl publish ROLE --channel C [--ami ID]`.
pub fn publish(config: &Config, args: &PublishArgs) -> Result<(), Error> {
    let (project, rt) = session(config)?;
    publish::check_channel(&project, &args.channel).map_err(failed)?;
    let roles = role::load(&project, std::slice::from_ref(&args.role))?;
    let change = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        let home = project.settings.aws.region.clone();
        let ec2 = session.ec2(&home);
        let home_image = match &args.ami {
            Some(id) => ec2.images_by_id(std::slice::from_ref(id)).await?.into_iter().next().ok_or_else(|| {
                publish::Error::Refused {
                    parameter: publish::parameter(&project, &args.role, &args.channel),
                    region: home.clone(),
                    reason: format!("image `{id}` does not exist"),
                }
            })?,
            None => {
                let lock = Lock::load(&project).map_err(|e| publish::Error::Nothing(e.to_string()))?;
                let h = hash::compute(&project, &lock, &roles[0]).map_err(|e| publish::Error::Nothing(e.to_string()))?;
                let target = Target { role: roles[0].clone(), hash: h };
                let found = build::find_existing(&ec2, std::slice::from_ref(&target)).await?;
                found.get(&args.role).cloned().ok_or_else(|| {
                    publish::Error::Nothing(format!(
                        "no image of `{}` has the current hash {}; build it first (`imagectl build {}`) or name one with --ami",
                        args.role,
                        target.hash.short(),
                        args.role
                    ))
                })?
            }
        };
        let mut amis = BTreeMap::from([(home.clone(), home_image.id.clone())]);
        // The same image's copies, by role and hash.
        if let Some(hash) = home_image.tag(build::tags::HASH) {
            for region in publish::regions(&project).into_iter().filter(|r| *r != home) {
                let copies = session.ec2(&region).imagectl_images(std::slice::from_ref(&args.role)).await?;
                if let Some(c) = copies.iter().find(|i| i.tag(build::tags::HASH) == Some(hash) && i.state == "available") {
                    amis.insert(region, c.id.clone());
                }
            }
        }
        publish::publish(&project, &session, &args.role, &args.channel, &amis, args.allow_older).await
    });
    report(config, &change.map_err(failed)?);
    Ok(())
}

/// `imagectl promote ROLE --from A --to B`.
pub fn promote(config: &Config, args: &PromoteArgs) -> Result<(), Error> {
    let (project, rt) = session(config)?;
    publish::check_channel(&project, &args.from).map_err(failed)?;
    publish::check_channel(&project, &args.to).map_err(failed)?;
    let change = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        publish::promote(
            &project,
            &session,
            &args.role,
            &args.from,
            &args.to,
            args.allow_older,
        )
        .await
    });
    report(config, &change.map_err(failed)?);
    Ok(())
}

/// `imagectl rollback ROLE --channel C [--steps N]`.
pub fn rollback(config: &Config, args: &RollbackArgs) -> Result<(), Error> {
    let (project, rt) = session(config)?;
    publish::check_channel(&project, &args.channel).map_err(failed)?;
    let change = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        publish::rollback(
            &project,
            &session,
            &args.role,
            &args.channel,
            usize::from(args.steps),
        )
        .await
    });
    report(config, &change.map_err(failed)?);
    Ok(())
}
