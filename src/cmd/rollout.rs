//! `imagectl rollout ROLE --channel C` (and `publish`/`promote --roll`):
//! refresh the channel's Auto Scaling groups; `imagectl rollout status`.

use serde_json::json;

use imagectl_core::project::Project;

use super::{aws_runtime, print_json};
use crate::cli::{OutputFormat, RolloutArgs, RolloutCommand};
use crate::{aws, publish, rollout, Config, Error};

/// Runs `rollout` or `rollout status`.
pub fn run(config: &Config, args: &RolloutArgs) -> Result<(), Error> {
    let project = config.project()?;
    let rt = aws_runtime()?;
    match (&args.command, &args.role, &args.channel) {
        (Some(RolloutCommand::Status { role, channel }), _, _) => {
            status(config, &project, &rt, role, channel.as_deref())
        }
        (None, Some(role), Some(channel)) => {
            publish::check_channel(&project, channel)?;
            imagectl_core::role::load(&project, std::slice::from_ref(role))?;
            let outcomes = rt.block_on(async {
                let session = aws::Session::load(&project.settings.aws.region).await;
                let located = rollout::locate(&project, &session, role, channel).await?;
                roll(&project, &session, role, channel, located).await
            })?;
            print_outcomes(config, &outcomes);
            Ok(rollout::verdict(&project, role, channel, &outcomes)?)
        }
        _ => Err(Error::Usage(
            "rollout needs ROLE --channel CHANNEL, or `status ROLE`".into(),
        )),
    }
}

/// Plans, starts and follows the refreshes of `located`.
pub async fn roll(
    project: &Project,
    session: &aws::Session,
    role: &str,
    channel: &str,
    located: Vec<rollout::Located>,
) -> Result<Vec<rollout::Outcome>, rollout::Error> {
    let planned = rollout::plan(project, session, role, channel, located).await?;
    let started = rollout::start(session, &planned).await?;
    rollout::follow(project, session, role, &started).await
}

/// The outcome of each refresh on stdout.
pub fn print_outcomes(config: &Config, outcomes: &[rollout::Outcome]) {
    match config.output {
        OutputFormat::Json => print_json(&json!({ "rollouts": outcomes })),
        OutputFormat::Text => {
            for o in outcomes {
                println!("{o}");
            }
        }
    }
}

fn status(
    config: &Config,
    project: &Project,
    rt: &tokio::runtime::Runtime,
    role: &str,
    channel: Option<&str>,
) -> Result<(), Error> {
    imagectl_core::role::load(project, &[role.to_string()])?;
    let rows = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        rollout::status(project, &session, role, channel).await
    })?;
    if config.output == OutputFormat::Json {
        print_json(&rows);
        return Ok(());
    }
    let dash = || "-".to_string();
    let mut table = vec![[
        "GROUP", "REGION", "CHANNEL", "STATUS", "DONE", "STARTED", "ENDED", "REFRESH",
    ]
    .map(String::from)];
    let mut reasons = Vec::new();
    for s in &rows {
        let r = s.refresh.as_ref();
        table.push([
            s.group.clone(),
            s.region.clone(),
            s.channel.clone(),
            r.map_or_else(|| "(never refreshed)".into(), |r| r.status.clone()),
            r.and_then(|r| r.percentage)
                .map_or_else(dash, |p| format!("{p}%")),
            r.and_then(|r| r.started.clone()).unwrap_or_else(dash),
            r.and_then(|r| r.ended.clone()).unwrap_or_else(dash),
            r.map_or_else(dash, |r| r.id.clone()),
        ]);
        let why = r.and_then(|r| match &r.rollback_reason {
            Some(rb) if r.status.starts_with("Rollback") => Some(format!("rolled back: {rb}")),
            _ => r.reason.clone(),
        });
        if let Some(reason) = why {
            reasons.push(format!("  {} ({}): {reason}", s.group, s.region));
        }
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| table.iter().map(|row| row[i].len()).max().unwrap_or(0))
        .collect();
    for row in &table {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    for r in reasons {
        println!("{r}");
    }
    Ok(())
}
