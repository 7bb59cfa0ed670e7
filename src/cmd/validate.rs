//! `imagectl validate`: every role and the settings, every problem at once.

use serde_json::json;

use imagectl_core::role;

use super::print_json;
use crate::cli::{OutputFormat, RolesArgs};
use crate::{Config, Error};

/// Loads the named roles (or all) and prints one line per valid role.
pub fn run(config: &Config, args: &RolesArgs) -> Result<(), Error> {
    let project = config.project()?;
    let roles = if args.roles.is_empty() {
        role::load_all(&project)?
    } else {
        role::load(&project, &args.roles)?
    };
    match config.output {
        OutputFormat::Json => {
            let list: Vec<_> = roles
                .iter()
                .map(|r| json!({"role": r.name, "abstract": r.is_abstract, "valid": true}))
                .collect();
            print_json(&json!({ "roles": list }));
        }
        OutputFormat::Text => {
            for r in &roles {
                let kind = if r.is_abstract { "abstract" } else { "role" };
                println!(
                    "ok  {:<12} {kind:<8} {} packages, {} files, {} templates, {} checks{}",
                    r.name,
                    r.packages.len(),
                    r.files.len(),
                    r.boot.templates.len(),
                    r.checks.len(),
                    match r.archives.len() {
                        0 => String::new(),
                        1 => ", 1 archive".to_string(),
                        n => format!(", {n} archives"),
                    }
                );
            }
        }
    }
    tracing::info!("{} role(s) valid", roles.len());
    Ok(())
}
