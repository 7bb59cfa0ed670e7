//! `imagectl images` and `imagectl prune`: what exists, what references it,
//! and removing what nothing needs.

use serde_json::json;

use imagectl_core::hash::short;

use super::{aws_runtime, print_json};
use crate::cli::{ImagesArgs, OutputFormat, PruneArgs};
use crate::gc::Action;
use crate::{aws, gc, Config, Error};

fn amis(i: &gc::Image) -> String {
    i.amis
        .iter()
        .map(|(r, a)| format!("{r}={a}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Lists every imagectl image with its references.
pub fn images(config: &Config, args: &ImagesArgs) -> Result<(), Error> {
    let project = config.project()?;
    let rt = aws_runtime()?;
    let list = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        gc::inventory(&project, &session, &args.roles).await
    })?;
    match config.output {
        OutputFormat::Json => print_json(&json!({ "images": list })),
        OutputFormat::Text => {
            println!(
                "{:<12} {:<12} {:<24} {:<60} REFERENCED BY",
                "ROLE", "HASH", "CREATED", "AMIS"
            );
            for i in &list {
                let refs = if i.references.is_empty() {
                    "-".to_string()
                } else {
                    i.references.join("; ")
                };
                println!(
                    "{:<12} {:<12} {:<24} {:<60} {refs}",
                    i.role,
                    short(&i.hash),
                    i.created,
                    amis(i)
                );
            }
        }
    }
    Ok(())
}

/// Deletes old, unreferenced images (or, with `--dry-run`, says which).
pub fn prune(config: &Config, args: &PruneArgs) -> Result<(), Error> {
    let project = config.project()?;
    let rt = aws_runtime()?;
    let decisions = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        let list = gc::inventory(&project, &session, &args.roles).await?;
        let decisions = gc::plan(list, usize::from(args.keep));
        if !args.dry_run {
            gc::delete(&session, &decisions).await?;
        }
        Ok::<_, aws::Error>(decisions)
    })?;
    match config.output {
        OutputFormat::Json => print_json(&json!({ "dry_run": args.dry_run, "images": decisions })),
        OutputFormat::Text => {
            for d in &decisions {
                let action = match (d.action, args.dry_run) {
                    (Action::Delete, true) => "would delete",
                    (Action::Delete, false) => "deleted",
                    _ => "keep",
                };
                println!(
                    "{action:<12} {:<12} {:<12} {:<24} {}  ({})",
                    d.image.role,
                    short(&d.image.hash),
                    d.image.created,
                    amis(&d.image),
                    d.reason
                );
            }
        }
    }
    Ok(())
}
