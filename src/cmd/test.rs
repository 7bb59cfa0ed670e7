//! `imagectl test ROLE`: build the role locally if needed, boot it under
//! systemd-nspawn with harmless parameters, and check it.

use std::time::Duration;

use serde_json::json;

use imagectl_core::role::Method;
use imagectl_core::target;

use super::print_json;
use crate::cli::{OutputFormat, TestArgs};
use crate::local::boot::{Boot, TestReport};
use crate::local::vm::VmBoot;
use crate::progress::Display;
use crate::{local, Config, Error};

/// Tests one role; exit 0 only when everything passed.
pub fn run(config: &Config, args: &TestArgs) -> Result<(), Error> {
    let project = config.project()?;
    let method = args.vm.then_some(Method::Disk);
    let t = target::resolve_one_as(&project, &args.role, method)?;
    let params = args.params.clone().unwrap_or_else(|| {
        project
            .roles_dir()
            .join("params")
            .join(format!("{}.toml", t.name()))
    });
    if !params.is_file() {
        return Err(Error::Usage(format!(
            "no parameters at `{}`; pass `--params FILE.toml` (shaped like the SSM tree below the role's path) or create that file",
            params.display()
        )));
    }
    let agent = super::agent(args.agent.as_deref())?;
    let display = Display::new(config.quiet);
    let format = if args.vm {
        local::Format::Disk
    } else {
        local::Format::Tar
    };
    let image = local::build_as(&project, &t, &agent, &display, format)?;
    let boot = Boot {
        role: &t.role,
        image: &image,
        params: &params,
        env: &args.env,
        timeout: Duration::from_secs(args.timeout),
        keep: args.keep,
    };
    let report = if args.vm {
        VmBoot {
            boot,
            region: &project.settings.aws.region,
        }
        .test(&display)
    } else {
        boot.test(&display)
    }?;
    display.finish();
    print(config, &report);
    if report.passed {
        return Ok(());
    }
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
    let console = report
        .console
        .as_ref()
        .map(|c| {
            format!(
                "{}; the guest's console ended with:\n{}\n(the whole log: {})",
                c.stopped.as_deref().unwrap_or("the boot ended"),
                c.tail,
                c.log.display()
            )
        })
        .map(|c| format!("\n{c}"))
        .unwrap_or_default();
    Err(Error::Failed(anyhow::anyhow!(
        "test of `{}` failed: {what}{console}",
        t.name()
    )))
}

fn print(config: &Config, report: &TestReport) {
    match config.output {
        OutputFormat::Json => print_json(&json!(report)),
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
                report.role,
                report.results.iter().filter(|r| r.passed).count(),
                report.results.len(),
                report.boot_to_checks_secs
            );
        }
    }
}
