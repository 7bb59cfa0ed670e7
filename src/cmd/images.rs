//! `imagectl images` and `imagectl prune`: what exists, what references it,
//! and removing what nothing needs.
//!
//! The text output is a block per image that fits in 100 columns: a
//! head line (role, hash, creation time, AMIs), the AMIs that do not fit
//! wrapped under the first, then the references or the reason, indented;
//! `images` adds when the image is deprecated and where it is protected
//! from deregistration.

use std::collections::BTreeMap;

use serde_json::json;

use imagectl_core::hash::short;
use imagectl_core::time;

use super::{aws_runtime, print_json};
use crate::cli::{ImagesArgs, OutputFormat, PruneArgs};
use crate::gc::Action;
use crate::{aws, gc, Config, Error};

/// The width the text output fits in.
const WIDTH: usize = 100;

/// How far notes (references, reasons) are indented.
const NOTE_INDENT: usize = 4;

/// Lays `items` out after `first`, separated by `sep`, starting a line
/// indented by `indent` whenever the next item would pass [`WIDTH`]. An
/// item longer than a line gets one to itself.
fn pack(first: String, items: &[String], sep: &str, indent: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = first;
    let mut empty = true;
    for item in items {
        if empty {
            line.push_str(item);
        } else if line.len() + sep.trim_end().len() + 1 + item.len() <= WIDTH {
            line.push_str(sep);
            line.push_str(item);
        } else {
            line.push_str(sep.trim_end());
            lines.push(line);
            line = format!("{:indent$}{item}", "");
        }
        empty = false;
    }
    lines.push(line);
    lines
}

/// The creation time to the second, as `2026-12-02 15:40:26`.
fn created(i: &gc::Image) -> String {
    i.created
        .get(..19)
        .unwrap_or(&i.created)
        .replacen('T', " ", 1)
}

/// An EC2 time to the minute, as `2027-03-02 15:40`.
fn minute(t: &str) -> String {
    t.get(..16).unwrap_or(t).replacen('T', " ", 1)
}

/// The regions of a per-region map, by value.
fn group(m: &BTreeMap<String, String>) -> BTreeMap<&str, Vec<&str>> {
    let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (region, v) in m {
        by.entry(v.as_str()).or_default().push(region.as_str());
    }
    by
}

/// The notes on an image's lifecycle, each value once with the regions
/// that have it (none named when every region of the image does): when it
/// is or was deprecated, where deregistration protection holds it.
fn lifecycle_notes(i: &gc::Image, now: i64) -> Vec<String> {
    let place = |regions: &[&str]| {
        if regions.len() == i.amis.len() {
            String::new()
        } else {
            format!(" in {}", regions.join(", "))
        }
    };
    let mut notes = Vec::new();
    for (at, regions) in group(&i.deprecation_time) {
        let past = time::iso_secs(at).is_some_and(|t| t <= now);
        let verb = if past {
            "deprecated since"
        } else {
            "to be deprecated at"
        };
        notes.push(format!("{verb} {}{}", minute(at), place(&regions)));
    }
    for (state, regions) in group(&i.deregistration_protection) {
        let what = match state {
            "disabled" => continue,
            "enabled-without-cooldown" => "protected from deregistration".to_string(),
            "enabled-with-cooldown" => "protected from deregistration (with cooldown)".to_string(),
            other => match other.strip_prefix("disabled-until ") {
                Some(t) => format!("protected from deregistration until {}", minute(t)),
                None => format!("deregistration protection {other}"),
            },
        };
        notes.push(format!("{what}{}", place(&regions)));
    }
    notes
}

/// One image's block: `lead` (the action, for prune), the head line with
/// the AMIs wrapped under the first, then `notes` indented.
fn block(lead: &str, i: &gc::Image, notes: &[String]) -> Vec<String> {
    let head = format!(
        "{lead}{:<12} {:<12}  {:<19}  ",
        i.role,
        short(&i.hash),
        created(i)
    );
    let indent = head.len();
    let amis: Vec<String> = i.amis.iter().map(|(r, a)| format!("{r} {a}")).collect();
    let mut lines = pack(head, &amis, "  ", indent);
    if !notes.is_empty() {
        lines.extend(pack(" ".repeat(NOTE_INDENT), notes, "; ", NOTE_INDENT));
    }
    lines
        .into_iter()
        .map(|l| l.trim_end().to_string())
        .collect()
}

/// Lists every imagectl image with its references.
pub fn images(config: &Config, args: &ImagesArgs) -> Result<(), Error> {
    let project = config.project()?;
    let rt = aws_runtime()?;
    let list = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        gc::inventory(&project, &session, &args.roles).await
    })?;
    match config.output {
        OutputFormat::Json => print_json(&json!({ "images": list })),
        OutputFormat::Text => {
            println!("{:<12} {:<12}  {:<19}  AMIS", "ROLE", "HASH", "CREATED");
            for i in &list {
                let mut notes = if i.references.is_empty() {
                    vec!["referenced by nothing".to_string()]
                } else {
                    let mut notes = i.references.clone();
                    notes[0] = format!("referenced by {}", notes[0]);
                    notes
                };
                notes.extend(lifecycle_notes(i, time::now_secs()));
                if let Some(sha) = &i.disk_sha256 {
                    notes.push(format!("registered from disk image sha256 {sha}"));
                }
                for line in block("", i, &notes) {
                    println!("{line}");
                }
            }
        }
    }
    Ok(())
}

/// Deletes old, unreferenced images (or, with `--dry-run`, says which).
pub fn prune(config: &Config, args: &PruneArgs) -> Result<(), Error> {
    let project = config.project()?;
    let rt = aws_runtime()?;
    let decisions = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        let list = gc::inventory(&project, &session, &args.roles).await?;
        let decisions = gc::plan(list, usize::from(args.keep));
        if !args.dry_run {
            gc::delete(
                &session,
                &decisions,
                &project.settings.publish.protect_channels,
            )
            .await?;
        }
        Ok::<_, aws::Error>(decisions)
    })?;
    match config.output {
        OutputFormat::Json => print_json(&json!({ "dry_run": args.dry_run, "images": decisions })),
        OutputFormat::Text => {
            for d in &decisions {
                let action = match (d.action, args.dry_run) {
                    (Action::Delete, true) => "would delete",
                    (Action::Delete, false) => "deleted",
                    _ => "keep",
                };
                let mut reason: Vec<String> = d.reason.split("; ").map(String::from).collect();
                if !d.lift_protection.is_empty() {
                    let verb = if args.dry_run { "would lift" } else { "lifted" };
                    let place = if d.lift_protection.len() == d.image.amis.len() {
                        String::new()
                    } else {
                        format!(" in {}", d.lift_protection.join(", "))
                    };
                    let why = gc::why_unprotected(&project.settings.publish.protect_channels);
                    reason.push(format!(
                        "{verb} its deregistration protection first{place} ({why})"
                    ));
                }
                for line in block(&format!("{action:<12}  "), &d.image, &reason) {
                    println!("{line}");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_wraps_at_the_width_under_the_indent() {
        let items: Vec<String> = (0..8)
            .map(|n| format!("eu-west-{n} ami-0123456789abcdef{n}"))
            .collect();
        let lines = pack(format!("{:<40}", "app"), &items, "  ", 40);
        assert!(lines.len() > 1, "{lines:?}");
        for l in &lines {
            assert!(l.len() <= WIDTH, "{l:?}");
        }
        assert!(
            lines[1].starts_with(&format!("{:40}eu-west-", "")),
            "{lines:?}"
        );
        let all = lines.join(" ");
        for item in &items {
            assert_eq!(all.matches(item.as_str()).count(), 1, "{item}");
        }
        // A note list ends each wrapped line with its separator.
        let notes: Vec<String> = (0..6)
            .map(|n| format!("channel /imagectl/app/c{n} (current)"))
            .collect();
        let lines = pack("    ".into(), &notes, "; ", 4);
        assert!(
            lines[0].ends_with(';') && lines[1].starts_with("    channel"),
            "{lines:?}"
        );
    }
}
