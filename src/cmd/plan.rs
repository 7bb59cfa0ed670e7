//! `imagectl plan`: which roles need an image built, and why.

use serde_json::json;

use crate::cli::{OutputFormat, PlanArgs};
use crate::{record, role, Config, Error};

/// Prints each concrete role, its hash and whether it was built.
pub fn run(config: &Config, args: &PlanArgs) -> Result<(), Error> {
    if !args.offline {
        return Err(Error::Usage(
            "this version of imagectl plans only against the local build record; run `imagectl plan --offline`".into(),
        ));
    }
    let project = config.project()?;
    let roles = if args.roles.is_empty() {
        role::load_all(&project)?
    } else {
        role::load(&project, &args.roles)?
    };
    let records = record::load(&project.root).map_err(|e| Error::Failed(e.into()))?;
    let lock = crate::lock::Lock::load(&project).map_err(crate::lock_error)?;
    let mut rows = Vec::new();
    for r in roles
        .iter()
        .filter(|r| !r.is_abstract || !args.roles.is_empty())
    {
        let h = crate::hash::compute(&project, &lock, r).map_err(crate::hash_error)?;
        let found = record::find(&records, &r.name, &h.hash);
        rows.push((r.name.clone(), h.hash, found.cloned()));
    }
    match config.output {
        OutputFormat::Json => {
            let list: Vec<_> = rows
                .iter()
                .map(|(role, hash, rec)| {
                    json!({
                        "role": role,
                        "hash": hash,
                        "status": if rec.is_some() { "up-to-date" } else { "build" },
                        "record": rec,
                    })
                })
                .collect();
            crate::print_json(&json!({ "roles": list }));
        }
        OutputFormat::Text => {
            println!("{:<12} {:<12} {:<10} ARTIFACT", "ROLE", "HASH", "STATUS");
            for (role, hash, rec) in &rows {
                let (status, artifact) = match rec {
                    Some(r) => ("up-to-date", format!("{} ({})", r.artifact, r.target)),
                    None => ("build", "-".to_string()),
                };
                println!("{role:<12} {:<12} {status:<10} {artifact}", &hash[..12]);
            }
        }
    }
    Ok(())
}
