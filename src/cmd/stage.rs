//! `imagectl stage ROLE --out DIR`: write the staged build context.

use serde_json::json;

use imagectl_core::target;

use super::print_json;
use crate::cli::{OutputFormat, StageArgs};
use crate::{Config, Error};

/// Stages one role.
pub fn run(config: &Config, args: &StageArgs) -> Result<(), Error> {
    let project = config.project()?;
    let t = target::resolve_one(&project, &args.role)?;
    let agent = super::agent(args.agent.as_deref())?;
    let staged = t.stage(&agent, &args.out)?;
    match config.output {
        OutputFormat::Json => print_json(&json!({
            "role": t.name(), "hash": t.hash.hash, "dir": staged.dir, "manifest": staged.manifest,
        })),
        OutputFormat::Text => println!("{}", staged.dir.display()),
    }
    tracing::info!(
        "staged `{}` ({} files baked, hash {})",
        t.name(),
        staged.manifest.len(),
        t.hash.short()
    );
    Ok(())
}
