//! `imagectl publish`, `promote` and `rollback`: move channels.

use std::collections::BTreeMap;

use serde_json::json;

use imagectl_core::project::Project;
use imagectl_core::{role, target};

use super::{aws_runtime, print_json};
use crate::cli::{OutputFormat, PromoteArgs, PublishArgs, RollbackArgs};
use crate::publish::{self, Change};
use crate::{artifacts, aws, preflight, rollout, Config, Error};

/// Prints what a publish did and, with `--roll`, how each group's refresh
/// ended: one JSON document, or lines of text.
fn report(config: &Config, change: &Change, rollouts: Option<&[rollout::Outcome]>) {
    match config.output {
        OutputFormat::Json => {
            let mut v = match change {
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
                    "launch_templates": launch_templates,
                }),
            };
            if let Some(r) = rollouts {
                v["rollouts"] = json!(r);
            }
            print_json(&v);
        }
        OutputFormat::Text => {
            println!("{change}");
            for o in rollouts.unwrap_or_default() {
                println!("{o}");
            }
        }
    }
}

/// The refreshes `--roll` asks for, once the channel moved: printed with
/// the publish's report, then judged.
fn finish(
    config: &Config,
    project: &Project,
    role: &str,
    channel: &str,
    change: &Change,
    rolled: Option<Result<Vec<rollout::Outcome>, rollout::Error>>,
) -> Result<(), Error> {
    match rolled {
        None => {
            report(config, change, None);
            Ok(())
        }
        Some(Ok(outcomes)) => {
            report(config, change, Some(&outcomes));
            Ok(rollout::verdict(project, role, channel, &outcomes)?)
        }
        Some(Err(e)) => {
            report(config, change, None);
            Err(e.into())
        }
    }
}

fn session(config: &Config) -> Result<(Project, tokio::runtime::Runtime), Error> {
    Ok((config.project()?, aws_runtime()?))
}

/// The preflight of publishing `role` to `channel`: the credentials, the
/// channel's launch templates, SSM; warnings are logged.
fn preflight(
    rt: &tokio::runtime::Runtime,
    project: &Project,
    role: &str,
    channel: &str,
    roll: bool,
) -> Result<(), Error> {
    let checks = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        let scope = preflight::Scope::publish([role], channel);
        let scope = if roll { scope.rolling() } else { scope };
        preflight::run(project, &session, &scope).await
    });
    for c in checks
        .iter()
        .filter(|c| c.status == preflight::Status::Warn)
    {
        tracing::warn!("preflight: {c}");
    }
    Ok(preflight::verdict(&checks)?)
}

/// The image `publish` is asked for.
enum Wanted {
    /// `--ami ID`.
    Ami(String),
    /// The image of the role's current hash.
    Current(Box<target::Target>),
}

/// `imagectl publish ROLE --channel C [--ami ID]`.
pub fn publish(config: &Config, args: &PublishArgs) -> Result<(), Error> {
    let (project, rt) = session(config)?;
    publish::check_channel(&project, &args.channel)?;
    // Without `--ami`, the image of the role's current hash.
    let wanted = match &args.ami {
        Some(id) => {
            role::load(&project, std::slice::from_ref(&args.role))?;
            Wanted::Ami(id.clone())
        }
        None => Wanted::Current(Box::new(target::resolve_one(&project, &args.role)?)),
    };
    if !args.no_preflight {
        preflight(&rt, &project, &args.role, &args.channel, args.roll)?;
    }
    let change = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        let home = &project.settings.aws.region;
        let ec2 = session.ec2(home);
        let home_image = match &wanted {
            Wanted::Ami(id) => ec2.images_by_id(std::slice::from_ref(id)).await?.into_iter().next().ok_or_else(|| {
                publish::Error::Refused {
                    parameter: publish::parameter(&project, &args.role, &args.channel),
                    region: home.clone(),
                    reason: format!("image `{id}` does not exist"),
                }
            })?,
            Wanted::Current(t) => {
                let found = artifacts::find_existing(&ec2, std::slice::from_ref(t)).await?;
                found.get(&args.role).cloned().ok_or_else(|| {
                    // A `--method disk` build has the hash of the role with
                    // that method, which only the role file makes current.
                    let disk = if t.role.image.method.is_packer() {
                        " (an image built with `--method disk` has another hash: set `[image] method = \"disk\"` in the role to make it current, or name it with --ami)"
                    } else {
                        ""
                    };
                    publish::Error::Nothing(format!(
                        "no image of `{}` has the current hash {}; build it first (`imagectl build {}`) or name one with --ami{disk}",
                        args.role,
                        t.hash.short(),
                        args.role
                    ))
                })?
            }
        };
        // The groups are found before anything moves: a misconfigured
        // rollout refuses the publish as a whole.
        let located = if args.roll {
            Some(rollout::locate(&project, &session, &args.role, &args.channel).await?)
        } else {
            None
        };
        let amis = publish::with_copies(&project, &session, &home_image).await?;
        let allow = publish::Allow { older: args.allow_older, unverified: args.allow_unverified };
        let change = publish::publish(&project, &session, &args.role, &args.channel, &amis, allow).await?;
        let rolled = match located {
            Some(l) => Some(super::rollout::roll(&project, &session, &args.role, &args.channel, l).await),
            None => None,
        };
        Ok::<_, Error>((change, rolled))
    })?;
    finish(
        config,
        &project,
        &args.role,
        &args.channel,
        &change.0,
        change.1,
    )
}

/// `imagectl promote ROLE --from A --to B`.
pub fn promote(config: &Config, args: &PromoteArgs) -> Result<(), Error> {
    let (project, rt) = session(config)?;
    publish::check_channel(&project, &args.from)?;
    publish::check_channel(&project, &args.to)?;
    // A usage mistake is said before any AWS call, the preflight's included.
    if args.from == args.to {
        return Err(publish::Error::SameChannel(args.to.clone()).into());
    }
    if !args.no_preflight {
        preflight(&rt, &project, &args.role, &args.to, args.roll)?;
    }
    let (change, rolled) = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        let located = if args.roll {
            Some(rollout::locate(&project, &session, &args.role, &args.to).await?)
        } else {
            None
        };
        let change = publish::promote(
            &project,
            &session,
            &args.role,
            &args.from,
            &args.to,
            publish::Allow {
                older: args.allow_older,
                unverified: args.allow_unverified,
            },
        )
        .await?;
        let rolled = match located {
            Some(l) => {
                Some(super::rollout::roll(&project, &session, &args.role, &args.to, l).await)
            }
            None => None,
        };
        Ok::<_, Error>((change, rolled))
    })?;
    finish(config, &project, &args.role, &args.to, &change, rolled)
}

/// `imagectl rollback ROLE --channel C [--steps N]`.
pub fn rollback(config: &Config, args: &RollbackArgs) -> Result<(), Error> {
    let (project, rt) = session(config)?;
    publish::check_channel(&project, &args.channel)?;
    let change = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        publish::rollback(
            &project,
            &session,
            &args.role,
            &args.channel,
            usize::from(args.steps),
            args.allow_unverified,
        )
        .await
    });
    report(config, &change?, None);
    Ok(())
}
