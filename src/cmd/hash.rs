//! `imagectl hash ROLE`: the content hash, alone on a line.

use serde_json::json;

use imagectl_core::target;

use super::print_json;
use crate::cli::{OutputFormat, RoleArg};
use crate::{Config, Error};

/// Prints the hash of one role.
pub fn run(config: &Config, args: &RoleArg) -> Result<(), Error> {
    let project = config.project()?;
    let t = target::resolve_one(&project, &args.role)?;
    match config.output {
        OutputFormat::Json => print_json(&json!({"role": t.name(), "hash": t.hash.hash})),
        OutputFormat::Text => println!("{}", t.hash.hash),
    }
    Ok(())
}
