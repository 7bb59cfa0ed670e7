//! `imagectl hash ROLE`: the content hash, alone on a line.

use serde_json::json;

use crate::cli::{OutputFormat, RoleArg};
use crate::{Config, Error};

/// Prints the hash of one role.
pub fn run(config: &Config, args: &RoleArg) -> Result<(), Error> {
    let project = config.project()?;
    let h = crate::content_hash(&project, &args.role)?;
    match config.output {
        OutputFormat::Json => crate::print_json(&json!({"role": h.role, "hash": h.hash})),
        OutputFormat::Text => println!("{}", h.hash),
    }
    Ok(())
}
