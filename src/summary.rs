//! The Markdown summary GitHub Actions shows for a job: with
//! `GITHUB_STEP_SUMMARY` set, plan and build append a table to that file.

use std::io::Write;

use crate::build::Outcome;
use crate::plan::Row;

fn append(markdown: &str) {
    let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY") else {
        return;
    };
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(markdown.as_bytes()));
    if let Err(e) = result {
        tracing::warn!(
            "cannot append to GITHUB_STEP_SUMMARY ({}): {e}",
            std::path::Path::new(&path).display()
        );
    }
}

/// A cell's text with the characters that would break a table escaped.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Appends the outcome of a build.
pub fn append_builds(outcomes: &[Outcome]) {
    let mut md = String::from("### imagectl build\n\n| role | status | hash | AMI | duration |\n| --- | --- | --- | --- | --- |\n");
    for o in outcomes {
        let amis = o
            .amis
            .iter()
            .map(|(r, a)| format!("{r}: `{a}`"))
            .collect::<Vec<_>>()
            .join("<br>");
        md.push_str(&format!(
            "| {} | {} | `{}` | {} | {:.1} s |\n",
            cell(&o.role),
            o.status.as_str(),
            o.hash.short(),
            if amis.is_empty() { "-".into() } else { amis },
            o.duration_secs
        ));
    }
    md.push('\n');
    append(&md);
}

/// Appends a plan.
pub fn append_plan(rows: &[Row]) {
    let mut md = String::from(
        "### imagectl plan\n\n| role | status | hash | reasons |\n| --- | --- | --- | --- |\n",
    );
    for r in rows {
        let reasons = if r.reasons.is_empty() && r.notes.is_empty() {
            "-".to_string()
        } else {
            r.reasons
                .iter()
                .chain(&r.notes)
                .map(|x| cell(x))
                .collect::<Vec<_>>()
                .join("<br>")
        };
        md.push_str(&format!(
            "| {} | {} | `{}` | {} |\n",
            cell(&r.role),
            r.status.as_str(),
            r.hash.short(),
            reasons
        ));
    }
    md.push('\n');
    append(&md);
}
