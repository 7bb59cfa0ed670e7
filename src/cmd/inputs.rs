//! `imagectl inputs ROLE`: everything the hash covers, to see why it moved.

use imagectl_core::hash::short;
use imagectl_core::target;

use super::print_json;
use crate::cli::{OutputFormat, RoleArg};
use crate::{Config, Error};

/// Prints the inputs of one role's hash.
pub fn run(config: &Config, args: &RoleArg) -> Result<(), Error> {
    let project = config.project()?;
    let h = target::resolve_one(&project, &args.role)?.hash;
    match config.output {
        OutputFormat::Json => print_json(&h),
        OutputFormat::Text => {
            println!("{}  {}", h.hash, h.role);
            for i in &h.inputs {
                let what = i.path.as_deref().or(i.name.as_deref()).unwrap_or("");
                let dest = match (&i.dest, &i.mode, &i.owner) {
                    (Some(d), Some(m), Some(o)) => format!("  -> {d} {m} {o}"),
                    (Some(d), None, Some(o)) => format!("  -> {d}/ {o}"),
                    _ => String::new(),
                };
                println!("{:<8} {}  {what}{dest}", i.kind, short(&i.sha256));
            }
        }
    }
    Ok(())
}
