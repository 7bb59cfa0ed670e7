//! `imagectl build`: bake what is missing, reuse what exists, optionally
//! publish to a channel.

use std::sync::Arc;

use serde_json::json;

use crate::build::{self, Options, Outcome, Target};
use crate::cli::{BuildArgs, OutputFormat};
use crate::lock::Lock;
use crate::{aws, publish, stage, Config, Error};

/// Builds the requested roles.
pub fn run(config: &Config, args: &BuildArgs) -> Result<(), Error> {
    let project = config.project()?;
    if let Some(channel) = &args.publish {
        publish::check_channel(&project, channel).map_err(|e| Error::Usage(e.to_string()))?;
    }
    // --all and --changed name no role: every concrete one.
    let (lock, targets) = crate::load_targets(&project, &args.roles)?;
    let agent =
        stage::find_agent(args.agent.as_deref()).map_err(|e| Error::Usage(e.to_string()))?;
    if args.format == "oci" && args.target != "local" {
        return Err(Error::Usage(
            "`--format oci` is for `--target local`; AMIs have no other format".into(),
        ));
    }
    if args.target == "local" {
        return local(
            config,
            &project,
            &lock,
            targets,
            &agent,
            args.format == "oci",
        );
    }
    let options = Options {
        force: args.force,
        dry_run: args.dry_run,
        changed_only: args.changed,
        jobs: usize::from(args.jobs),
        agent,
    };

    let rt = aws::runtime().map_err(|e| Error::Failed(e.into()))?;
    let display = Arc::new(crate::progress::Display::new(config.quiet));
    let result = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        let outcomes = build::run(&project, &session, targets, &options, display.clone()).await?;
        let mut published = Vec::new();
        if let (Some(channel), false) = (&args.publish, args.dry_run) {
            for o in outcomes
                .iter()
                .filter(|o| o.status == "built" || o.status == "reused")
            {
                let change =
                    publish::publish(&project, &session, &o.role, channel, &o.amis, false).await;
                published.push((o.role.clone(), change));
            }
        }
        Ok::<_, build::Error>((outcomes, published))
    });
    display.finish();
    let (outcomes, published) = match result {
        Ok(r) => r,
        Err(e) => {
            return Err(match e.signal() {
                Some(sig) => {
                    Error::Interrupted(e.to_string(), if sig == "SIGINT" { 130 } else { 143 })
                }
                None => Error::Failed(e.into()),
            })
        }
    };
    print(config, &outcomes);
    let mut failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status == "failed")
        .map(|o| format!("{}: {}", o.role, o.error.as_deref().unwrap_or("failed")))
        .collect();
    for (role, change) in published {
        match change {
            Ok(c) => tracing::info!("{role}: {c}"),
            Err(e) => failed.push(format!("{role}: publishing failed: {e}")),
        }
    }
    crate::summary::append_builds(&outcomes);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed(anyhow::anyhow!("{}", failed.join("\n"))))
    }
}

fn print(config: &Config, outcomes: &[Outcome]) {
    match config.output {
        OutputFormat::Json => crate::print_json(&json!({ "builds": outcomes })),
        OutputFormat::Text => {
            if outcomes.is_empty() {
                println!("nothing to build");
                return;
            }
            println!(
                "{:<12} {:<12} {:<12} {:>8}  AMIS",
                "ROLE", "STATUS", "HASH", "TIME"
            );
            for o in outcomes {
                let amis = if o.amis.is_empty() {
                    "-".to_string()
                } else {
                    o.amis
                        .iter()
                        .map(|(r, a)| format!("{r}={a}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                println!(
                    "{:<12} {:<12} {:<12} {:>7.1}s  {amis}",
                    o.role,
                    o.status,
                    &o.hash[..12],
                    o.duration_secs
                );
            }
        }
    }
}

/// `--target local`: a root filesystem tarball per role, in images/local/.
fn local(
    config: &Config,
    project: &crate::project::Project,
    lock: &Lock,
    targets: Vec<Target>,
    agent: &std::path::Path,
    oci: bool,
) -> Result<(), Error> {
    let display = crate::progress::Display::new(config.quiet);
    let mut images = Vec::new();
    for t in &targets {
        let image = crate::local::build(project, lock, &t.role, &t.hash, agent, &display)
            .map_err(local_error)?;
        if oci {
            let out =
                crate::local::write_oci(project, lock, &t.role, &image).map_err(local_error)?;
            tracing::info!("{}: OCI image archive {}", t.role.name, out.display());
        }
        if !image.built {
            tracing::info!(
                "{}: {} exists: the same hash is not built twice",
                t.role.name,
                image.tar.display()
            );
        }
        images.push(image);
    }
    display.finish();
    match config.output {
        OutputFormat::Json => crate::print_json(&json!({ "images": images })),
        OutputFormat::Text => {
            println!(
                "{:<12} {:<8} {:<12} {:>8}  TARBALL",
                "ROLE", "STATUS", "HASH", "TIME"
            );
            for i in &images {
                let tar = i.tar.strip_prefix(&project.root).unwrap_or(&i.tar);
                let status = if i.built { "built" } else { "exists" };
                println!(
                    "{:<12} {status:<8} {:<12} {:>7.1}s  {}",
                    i.role,
                    &i.hash[..12],
                    i.duration_secs,
                    tar.display()
                );
            }
        }
    }
    Ok(())
}

/// Missing tools, root or a suite are for the user to fix (exit 2).
pub fn local_error(e: crate::local::Error) -> Error {
    use crate::local::Error as L;
    match e {
        L::NotRoot | L::Missing { .. } | L::NoSuite(_) | L::Arch { .. } => {
            Error::Usage(e.to_string())
        }
        other => Error::Failed(other.into()),
    }
}
