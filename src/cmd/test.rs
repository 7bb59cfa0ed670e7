//! `imagectl test ROLE`: build the role locally if needed, boot it under
//! systemd-nspawn with harmless parameters, and check it.

use std::time::Duration;

use serde_json::json;

use crate::build::Target;
use crate::cli::{OutputFormat, TestArgs};
use crate::{local, stage, Config, Error};

/// Tests one role; exit 0 only when everything passed.
pub fn run(config: &Config, args: &TestArgs) -> Result<(), Error> {
    let project = config.project()?;
    let (lock, mut targets) = crate::load_targets(&project, std::slice::from_ref(&args.role))?;
    let Target { role, hash: h } = targets.remove(0);
    let params = args.params.clone().unwrap_or_else(|| {
        project
            .roles_dir()
            .join("params")
            .join(format!("{}.toml", role.name))
    });
    if !params.is_file() {
        return Err(Error::Usage(format!(
            "no parameters at `{}`; pass `--params FILE.toml` (shaped like the SSM tree below the role's path) or create that file",
            params.display()
        )));
    }
    let agent =
        stage::find_agent(args.agent.as_deref()).map_err(|e| Error::Usage(e.to_string()))?;
    let display = crate::progress::Display::new(config.quiet);
    let image = local::build(&project, &lock, &role, &h, &agent, &display)
        .map_err(crate::cmd::build::local_error)?;
    let report = local::test(
        &role,
        &image,
        &params,
        &args.env,
        Duration::from_secs(args.timeout),
        args.keep,
        &display,
    )
    .map_err(crate::cmd::build::local_error)?;
    display.finish();
    match config.output {
        OutputFormat::Json => crate::print_json(&json!(report)),
        OutputFormat::Text => {
            if !report.booted {
                println!("boot skipped: systemd-nspawn cannot run here; only the checks ran, in a chroot");
            }
            for r in &report.results {
                println!(
                    "{} {:<6} {:<44} {:>6} ms",
                    if r.passed { "pass" } else { "FAIL" },
                    r.kind,
                    r.name,
                    r.ms
                );
            }
            if let Some(agent) = &report.agent_report {
                println!(
                    "agent: {}",
                    serde_json::to_string(agent).unwrap_or_default()
                );
            }
            for (unit, lines) in &report.journals {
                println!("--- journal of {unit} ---\n{}", lines.trim_end());
            }
            println!(
                "{}: {} of {} passed, boot to checks {:.2} s",
                role.name,
                report.results.iter().filter(|r| r.passed).count(),
                report.results.len(),
                report.boot_to_checks_secs
            );
        }
    }
    if report.passed {
        Ok(())
    } else {
        let failed: Vec<String> = report
            .results
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("{} `{}`", r.kind, r.name))
            .collect();
        let what = if failed.is_empty() {
            "the boot did not finish its checks".to_string()
        } else {
            failed.join(", ")
        };
        Err(Error::Failed(anyhow::anyhow!(
            "test of `{}` failed: {what}",
            role.name
        )))
    }
}
