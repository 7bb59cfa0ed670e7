//! `imagectl validate`: every role and the settings, every problem at once.

use serde_json::{json, Value};

use imagectl_core::diag::Diagnostic;
use imagectl_core::role::{self, Problem, Report};

use super::print_json;
use crate::cli::{OutputFormat, RolesArgs};
use crate::{Config, Error};

/// Loads the named roles (or all) and prints one line per valid role; with
/// `--output json`, one document with every role and every problem, also
/// when there are problems (then the human report still goes to stderr and
/// the exit code is 2).
pub fn run(config: &Config, args: &RolesArgs) -> Result<(), Error> {
    let json = matches!(config.output, OutputFormat::Json);
    let project = match config.project() {
        Ok(p) => p,
        Err(Error::Invalid(d)) if json => {
            let problems: Vec<Value> = d.0.iter().map(|d| diagnostic_json(None, d)).collect();
            print_json(&json!({"valid": false, "roles": [], "diagnostics": problems}));
            return Err(Error::Invalid(d));
        }
        Err(e) => return Err(e),
    };
    let (names, report) = if args.roles.is_empty() {
        (role::role_names(&project), role::check_all(&project))
    } else {
        (args.roles.clone(), role::check(&project, &args.roles))
    };
    if json {
        print_json(&report_json(&names, &report));
    } else if report.problems.is_empty() {
        print_text(&report);
    }
    let n = report.roles.len();
    report.into_result()?;
    tracing::info!("{n} role(s) valid");
    Ok(())
}

/// `{"valid", "roles": [{"role", "abstract", "valid"}], "diagnostics": [...]}`:
/// each role asked for, and each problem with where it is.
fn report_json(names: &[String], report: &Report) -> Value {
    let roles: Vec<Value> = names
        .iter()
        .map(|name| match report.roles.iter().find(|r| &r.name == name) {
            Some(r) => json!({"role": r.name, "abstract": r.is_abstract, "valid": true}),
            None => json!({"role": name, "valid": false}),
        })
        .collect();
    let problems: Vec<Value> = report
        .problems
        .iter()
        .map(|p: &Problem| diagnostic_json(p.role.as_deref(), &p.diagnostic))
        .collect();
    json!({
        "valid": report.problems.is_empty(),
        "roles": roles,
        "diagnostics": problems,
    })
}

/// One problem: the role that found it, the file, line and column (null
/// when the problem is the file as a whole), what is wrong, what to do.
fn diagnostic_json(role: Option<&str>, d: &Diagnostic) -> Value {
    json!({
        "role": role,
        "file": d.file,
        "line": d.location.as_ref().map(|l| l.line),
        "column": d.location.as_ref().map(|l| l.column),
        "message": d.message,
        "help": d.help,
    })
}

/// One line per role on stdout, when all are valid; the problems go to
/// stderr when the error is printed.
fn print_text(report: &Report) {
    for r in &report.roles {
        let kind = if r.is_abstract { "abstract" } else { "role" };
        let mut counts = vec![
            count(r.packages.len(), "package"),
            count(r.files.len(), "file"),
            count(r.boot.templates.len(), "template"),
            count(r.checks.len(), "check"),
        ];
        if !r.archives.is_empty() {
            counts.push(count(r.archives.len(), "archive"));
        }
        println!("ok  {:<12} {kind:<8} {}", r.name, counts.join(", "));
    }
}

/// `1 file`, `2 files`, `0 files`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
