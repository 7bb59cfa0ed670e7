//! `imagectl sweep`: remove what builds that died left behind.

use std::time::Duration;

use serde_json::json;

use imagectl_core::time::now_secs;

use super::{aws_runtime, print_json};
use crate::cli::{OutputFormat, SweepArgs};
use crate::{aws, sweep, Config, Error};

/// An age the way `--older-than` takes it, to the largest whole unit.
fn age(secs: u64) -> String {
    match secs {
        s if s >= 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Finds the orphans and removes them (or, with `--dry-run`, says which).
pub fn run(config: &Config, args: &SweepArgs) -> Result<(), Error> {
    let project = config.project()?;
    let now = now_secs();
    let mode = if args.untagged {
        sweep::Mode::Untagged
    } else {
        sweep::Mode::Tagged
    };
    let wait = Duration::from_secs(project.settings.build.wait_minutes * 60);
    let rt = aws_runtime()?;
    let (orphans, errors) = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        let mut orphans = sweep::find(&project, &session, mode, now, args.older_than).await?;
        let errors = if args.dry_run {
            Vec::new()
        } else {
            sweep::remove(&session, &mut orphans, wait).await
        };
        Ok::<_, aws::Error>((orphans, errors))
    })?;
    let older_than = age(args.older_than.as_secs());
    match config.output {
        OutputFormat::Json => print_json(&json!({
            "dry_run": args.dry_run,
            "older_than_secs": args.older_than.as_secs(),
            "orphans": orphans,
        })),
        OutputFormat::Text if orphans.is_empty() => {
            println!("no orphans at least {older_than} old");
        }
        OutputFormat::Text => {
            for o in &orphans {
                let age = o.age_secs.map_or("-".into(), |s| age(s as u64));
                let name = if o.name.is_empty() || o.name == o.id {
                    String::new()
                } else {
                    format!("{}  ", o.name)
                };
                println!(
                    "{:<12} {:<14} {:<12} {:<40} {age:>4}  {name}({})",
                    o.status.as_str(),
                    o.kind.as_str(),
                    o.region,
                    o.id,
                    o.reason
                );
            }
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
    Err(Error::Failed(anyhow::anyhow!(
        "could not remove {} of {} orphans:\n{}",
        errors.len(),
        orphans.len(),
        list.join("\n")
    )))
}
