//! `imagectl build`: bake what is missing, reuse what exists, optionally
//! publish to a channel.

use std::sync::Arc;

use serde_json::json;

use imagectl_core::agent::Agent;
use imagectl_core::project::Project;
use imagectl_core::role::Method;
use imagectl_core::target::{self, Target};

use super::{aws_runtime, print_json};
use crate::build::{self, Options, Outcome, Status};
use crate::cli::{BuildArgs, BuildMethod, BuildTarget, LocalFormat, OutputFormat};
use crate::progress::Display;
use crate::{artifacts, aws, local, preflight, publish, summary, Config, Error};

/// Builds the requested roles.
pub fn run(config: &Config, args: &BuildArgs) -> Result<(), Error> {
    let project = config.project()?;
    if let Some(channel) = &args.publish {
        publish::check_channel(&project, channel)?;
    }
    if args.format == LocalFormat::Oci && args.target != BuildTarget::Local {
        return Err(Error::Usage(
            "`--format oci` is for `--target local`; AMIs have no other format".into(),
        ));
    }
    if args.method.is_some() && args.target != BuildTarget::Aws {
        return Err(Error::Usage(
            "`--method` is for `--target aws`: `--target disk` makes the disk image, `--target local` the tarball".into(),
        ));
    }
    let method = match (args.target, args.method) {
        (BuildTarget::Disk, _) | (_, Some(BuildMethod::Disk)) => Some(Method::Disk),
        (_, Some(BuildMethod::Packer)) => Some(Method::Packer),
        _ => None,
    };
    // --all and --changed name no role: every concrete one.
    let targets = target::resolve_as(&project, &args.roles, method)?;
    let agent = super::agent(args.agent.as_deref())?;
    if args.target != BuildTarget::Aws {
        let format = match args.target {
            BuildTarget::Disk => local::Format::Disk,
            _ => local::Format::Tar,
        };
        return local(
            config,
            &project,
            &targets,
            &agent,
            format,
            args.format == LocalFormat::Oci,
        );
    }
    let options = Options {
        force: args.force,
        dry_run: args.dry_run,
        changed_only: args.changed,
        jobs: usize::from(args.jobs),
        agent,
    };
    let rt = aws_runtime()?;
    let verdict = gate(&rt, &project, &targets, args)?;
    let display = Arc::new(Display::new(config.quiet));
    let result = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        let outcomes = build::run(&project, &session, targets, &options, display.clone()).await?;
        let mut published = Vec::new();
        if let (Some(channel), false) = (&args.publish, args.dry_run) {
            for o in outcomes.iter().filter(|o| o.status.has_image()) {
                let change = publish::publish(
                    &project,
                    &session,
                    &o.role,
                    channel,
                    &o.amis,
                    publish::Allow::default(),
                )
                .await;
                published.push((o.role.clone(), change));
            }
        }
        Ok::<_, build::Error>((outcomes, published))
    });
    display.finish();
    let (outcomes, published) = result.map_err(|e| match e.signal() {
        Some(sig) => Error::Interrupted(e.to_string(), if sig == "SIGINT" { 130 } else { 143 }),
        None => e.into(),
    })?;
    print(config, &outcomes);
    let mut failed: Vec<String> = outcomes
        .iter()
        .filter(|o| o.status == Status::Failed)
        .map(|o| format!("{}: {}", o.role, o.error.as_deref().unwrap_or("failed")))
        .collect();
    for (role, change) in published {
        match change {
            Ok(c) => tracing::info!("{role}: {c}"),
            Err(e) => failed.push(format!("{role}: publishing failed: {e}")),
        }
    }
    summary::append_builds(&outcomes);
    verdict?;
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Error::Failed(anyhow::anyhow!("{}", failed.join("\n"))))
    }
}

/// Runs the preflight unless `--no-preflight`: a problem stops the build
/// here, before Packer; a dry run goes on to say what it would do and
/// returns the problems for the end.
fn gate(
    rt: &tokio::runtime::Runtime,
    project: &Project,
    targets: &[Target],
    args: &BuildArgs,
) -> Result<Result<(), preflight::Error>, Error> {
    if args.no_preflight {
        return Ok(Ok(()));
    }
    let verdict = rt.block_on(preflight(project, targets, args))?;
    if args.dry_run {
        return Ok(verdict);
    }
    verdict?;
    Ok(Ok(()))
}

/// The preflight of a build, before Packer starts: what a bake needs when
/// something will be baked (and always on a dry run), and the launch
/// templates of the `--publish` channel. Warnings are logged.
async fn preflight(
    project: &Project,
    targets: &[Target],
    args: &BuildArgs,
) -> Result<Result<(), preflight::Error>, Error> {
    let home = &project.settings.aws.region;
    let session = aws::Session::load(home).await;
    let existing = artifacts::find_existing(&session.ec2(home), targets).await?;
    let bakes = args.force || targets.iter().any(|t| !existing.contains_key(t.name()));
    let mut scope = match &args.publish {
        Some(channel) => preflight::Scope::publish(targets.iter().map(Target::name), channel),
        None => preflight::Scope::default(),
    };
    scope.bake = bakes || args.dry_run;
    if !scope.bake && scope.templates.is_empty() {
        return Ok(Ok(()));
    }
    let checks = preflight::run(project, &session, &scope).await;
    for c in checks
        .iter()
        .filter(|c| c.status == preflight::Status::Warn)
    {
        tracing::warn!("preflight: {c}");
    }
    tracing::info!("preflight: {} checks", checks.len());
    Ok(preflight::verdict(&checks))
}

fn print(config: &Config, outcomes: &[Outcome]) {
    match config.output {
        OutputFormat::Json => print_json(&json!({ "builds": outcomes })),
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
                    o.status.as_str(),
                    o.hash.short(),
                    o.duration_secs
                );
            }
        }
    }
}

/// `--target local`: a root filesystem tarball per role, in images/local/.
fn local(
    config: &Config,
    project: &Project,
    targets: &[Target],
    agent: &Agent,
    format: local::Format,
    oci: bool,
) -> Result<(), Error> {
    let display = Display::new(config.quiet);
    let mut images = Vec::new();
    for t in targets {
        let image = local::build_as(project, t, agent, &display, format)?;
        if oci {
            let out = local::oci::write(t, &image)?;
            tracing::info!("{}: OCI image archive {}", t.name(), out.display());
        }
        if !image.built {
            tracing::info!(
                "{}: {} exists: the same hash is not built twice",
                t.name(),
                image.path.display()
            );
        }
        images.push(image);
    }
    display.finish();
    match config.output {
        OutputFormat::Json => print_json(&json!({ "images": images })),
        OutputFormat::Text => {
            println!(
                "{:<12} {:<8} {:<12} {:>8}  {}",
                "ROLE",
                "STATUS",
                "HASH",
                "TIME",
                if format == local::Format::Disk {
                    "DISK"
                } else {
                    "TARBALL"
                }
            );
            for i in &images {
                let tar = i.path.strip_prefix(&project.root).unwrap_or(&i.path);
                let status = if i.built { "built" } else { "exists" };
                println!(
                    "{:<12} {status:<8} {:<12} {:>7.1}s  {}",
                    i.role,
                    i.hash.short(),
                    i.duration_secs,
                    tar.display()
                );
            }
        }
    }
    Ok(())
}
