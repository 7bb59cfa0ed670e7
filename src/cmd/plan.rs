//! `imagectl plan`: which roles need an image built, and why.

use serde_json::json;

use imagectl_core::hash::short;
use imagectl_core::target;

use super::{aws_runtime, print_json};
use crate::aws;
use crate::cli::{OutputFormat, PlanArgs, PlanFormat};
use crate::plan::{self, Row, Status};
use crate::{summary, Config, Error};

/// Prints the plan.
pub fn run(config: &Config, args: &PlanArgs) -> Result<(), Error> {
    let project = config.project()?;
    let targets = target::resolve(&project, &args.roles)?;
    let rows = if args.offline {
        plan::offline(&project, &targets).map_err(|e| Error::Failed(e.into()))?
    } else {
        let rt = aws_runtime()?;
        rt.block_on(async {
            let session = aws::Session::load(&project.settings.aws.region).await;
            plan::online(&project, &session, &targets).await
        })?
    };
    print(config, args, &rows);
    summary::append_plan(&rows);
    if args.detailed_exitcode && rows.iter().any(|r| r.status == Status::Build) {
        return Err(Error::Exit(2));
    }
    Ok(())
}

fn print(config: &Config, args: &PlanArgs, rows: &[Row]) {
    match (args.format, config.output) {
        (Some(PlanFormat::GithubMatrix), _) => {
            let include: Vec<_> = rows
                .iter()
                .filter(|r| r.status == Status::Build)
                .map(|r| json!({"role": r.role, "method": r.method}))
                .collect();
            println!("{}", json!({ "include": include }));
        }
        (None, OutputFormat::Json) => print_json(&json!({ "roles": rows })),
        (None, OutputFormat::Text) => {
            println!("{:<12} {:<12} {:<10} REASONS", "ROLE", "HASH", "STATUS");
            for r in rows {
                let why = if r.reasons.is_empty() && r.notes.is_empty() {
                    "-".to_string()
                } else {
                    r.reasons
                        .iter()
                        .chain(&r.notes)
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                println!(
                    "{:<12} {:<12} {:<10} {why}",
                    r.role,
                    short(r.hash.as_str()),
                    r.status.as_str()
                );
            }
        }
    }
}
