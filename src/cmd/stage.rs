//! `imagectl stage ROLE --out DIR`: write the staged build context.

use serde_json::json;

use crate::cli::{OutputFormat, StageArgs};
use crate::{stage, Config, Error};

/// Stages one role.
pub fn run(config: &Config, args: &StageArgs) -> Result<(), Error> {
    let project = config.project()?;
    let h = crate::content_hash(&project, &args.role)?;
    let role = crate::role::load(&project, std::slice::from_ref(&args.role))?.remove(0);
    let agent = stage::find_agent(args.agent.as_deref()).map_err(stage_error)?;
    let staged = stage::stage(&project, &role, &h, &agent, &args.out).map_err(stage_error)?;
    match config.output {
        OutputFormat::Json => crate::print_json(&json!({
            "role": role.name, "hash": h.hash, "dir": staged.dir, "manifest": staged.manifest,
        })),
        OutputFormat::Text => println!("{}", staged.dir.display()),
    }
    tracing::info!(
        "staged `{}` ({} files baked, hash {})",
        role.name,
        staged.manifest.len(),
        h.short()
    );
    Ok(())
}

fn stage_error(e: stage::Error) -> Error {
    match e {
        stage::Error::Io { .. } => Error::Failed(e.into()),
        other => Error::Usage(other.to_string()),
    }
}
