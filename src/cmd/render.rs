//! `imagectl render`: write each role's Packer template to `images/`.

use std::path::Path;

use serde_json::json;

use imagectl_core::project::Project;
use imagectl_core::{fsutil, hcl, packer, target};

use super::print_json;
use crate::cli::{OutputFormat, RenderArgs};
use crate::{Config, Error};

/// What happened to one template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    UpToDate,
    Written,
    Stale,
    Orphaned,
    Removed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::UpToDate => "up-to-date",
            Status::Written => "written",
            Status::Stale => "stale",
            Status::Orphaned => "orphaned",
            Status::Removed => "removed",
        }
    }
}

/// One template: the role, its path relative to the project, its status.
type Row = (String, String, Status);

/// Renders the templates (or, with `--check`, compares them).
pub fn run(config: &Config, args: &RenderArgs) -> Result<(), Error> {
    let project = config.project()?;
    let targets = target::resolve(&project, &args.roles)?;
    let images = args.out.clone().unwrap_or_else(|| project.images_dir());
    let mut rows: Vec<Row> = Vec::new();
    for t in &targets {
        let text = if args.packer_1_6 {
            hcl::render(&packer::for_packer_1_6(&t.template))
        } else {
            t.template_text.clone()
        };
        let path = images.join(format!("{}.pkr.hcl", t.name()));
        let status = write(&path, &text, args.check)?;
        rows.push((t.name().to_string(), shown(&path, &project.root), status));
    }
    // Templates of roles that no longer exist, when rendering every role.
    if args.roles.is_empty() && args.out.is_none() {
        let wanted: Vec<String> = targets
            .iter()
            .map(|t| format!("{}.pkr.hcl", t.name()))
            .collect();
        rows.extend(orphans(&project, &images, &wanted, args.check)?);
    }
    print(config, &rows);
    let stale: Vec<&str> = rows
        .iter()
        .filter(|(_, _, s)| matches!(s, Status::Stale | Status::Orphaned))
        .map(|(r, _, _)| r.as_str())
        .collect();
    if !stale.is_empty() {
        // A finding, not a failure of the tool: reported as every error is
        // (`error: ...`), exit 1 as documented.
        return Err(Error::Failed(anyhow::anyhow!(
            "stale templates: {}; run `imagectl render`",
            stale.join(", ")
        )));
    }
    Ok(())
}

/// Writes `text` to `path` unless it is there already (or, with `check`,
/// only says whether it is).
fn write(path: &Path, text: &str, check: bool) -> Result<Status, Error> {
    let current = std::fs::read_to_string(path).ok();
    Ok(match (current, check) {
        (Some(c), _) if c == text => Status::UpToDate,
        (_, true) => Status::Stale,
        (_, false) => {
            fsutil::write_atomic(path, text.as_bytes()).map_err(|e| {
                Error::Failed(anyhow::anyhow!("cannot write `{}`: {e}", path.display()))
            })?;
            Status::Written
        }
    })
}

/// The templates in `images` of roles that do not exist, removed (or,
/// with `check`, reported).
fn orphans(
    project: &Project,
    images: &Path,
    wanted: &[String],
    check: bool,
) -> Result<Vec<Row>, Error> {
    let mut found: Vec<String> = std::fs::read_dir(images)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.ends_with(".pkr.hcl") && !wanted.contains(n))
        .collect();
    found.sort();
    let mut rows = Vec::new();
    for file in found {
        let role = file.trim_end_matches(".pkr.hcl").to_string();
        let status = if check {
            Status::Orphaned
        } else {
            std::fs::remove_file(images.join(&file)).map_err(|e| {
                Error::Failed(anyhow::anyhow!("cannot remove `images/{file}`: {e}"))
            })?;
            Status::Removed
        };
        rows.push((role, shown(&images.join(&file), &project.root), status));
    }
    Ok(rows)
}

fn print(config: &Config, rows: &[Row]) {
    match config.output {
        OutputFormat::Json => print_json(&json!({
            "templates": rows.iter().map(|(role, path, status)| json!({"role": role, "path": path, "status": status.as_str()})).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            for (role, path, status) in rows {
                println!("{:<10} {role:<12} {path}", status.as_str());
            }
        }
    }
}

/// A path relative to the project when it is inside it.
fn shown(path: &Path, root: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
