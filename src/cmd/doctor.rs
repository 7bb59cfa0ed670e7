//! `imagectl doctor`: every preflight check, as a checklist on stdout.

use super::{aws_runtime, print_json};
use crate::cli::OutputFormat;
use crate::preflight::{self, Scope, Status};
use crate::{aws, Config, Error};

/// Checks everything builds and publications need; exit 2 when something
/// is missing, 1 when something could not be checked, else 0 (warnings
/// pass).
pub fn run(config: &Config) -> Result<(), Error> {
    let project = config.project()?;
    let checks = aws_runtime()?.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        preflight::run(&project, &session, &Scope::everything(&project)).await
    });
    match config.output {
        OutputFormat::Json => print_json(&checks),
        OutputFormat::Text => {
            for c in &checks {
                println!("{c}");
            }
        }
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    tracing::info!(
        "{} checks: {} ok, {} missing, {} warnings, {} not checked",
        checks.len(),
        count(Status::Ok),
        count(Status::Missing),
        count(Status::Warn),
        count(Status::Error)
    );
    match preflight::verdict(&checks) {
        Ok(()) => Ok(()),
        // Already on stdout, check by check.
        Err(e) => Err(Error::Exit(if e.is_usage() { 2 } else { 1 })),
    }
}
