//! `imagectl render`: write each role's Packer template to `images/`.

use serde_json::json;

use crate::cli::{OutputFormat, RenderArgs};
use crate::lock::Lock;
use crate::{fsutil, hcl, packer, role, Config, Error};

/// Renders the templates (or, with `--check`, compares them).
pub fn run(config: &Config, args: &RenderArgs) -> Result<(), Error> {
    let project = config.project()?;
    let roles = if args.roles.is_empty() {
        role::load_all(&project)?
    } else {
        role::load(&project, &args.roles)?
    };
    let lock = Lock::load(&project).map_err(crate::lock_error)?;
    let images = args.out.clone().unwrap_or_else(|| project.images_dir());

    // (role, path relative to the project, status)
    let mut rows: Vec<(String, String, &str)> = Vec::new();
    let mut wanted = Vec::new();
    for r in roles.iter().filter(|r| !r.is_abstract) {
        let base = lock
            .resolve(&project, r.image.base.as_deref().unwrap_or(""))
            .map_err(crate::lock_error)?;
        let mut body = packer::template(&project.settings, r, base)
            .map_err(|e| Error::Usage(e.to_string()))?;
        if args.packer_1_6 {
            body = packer::for_packer_1_6(&body);
        }
        let text = hcl::render(&body);
        let file = format!("{}.pkr.hcl", r.name);
        wanted.push(file.clone());
        let path = images.join(&file);
        let current = std::fs::read_to_string(&path).ok();
        let status = match (&current, args.check) {
            (Some(c), _) if *c == text => "up-to-date",
            (_, true) => "stale",
            (_, false) => {
                fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| {
                    Error::Failed(anyhow::anyhow!("cannot write `{}`: {e}", path.display()))
                })?;
                "written"
            }
        };
        rows.push((r.name.clone(), shown(&path, &project.root), status));
    }
    // Templates of roles that no longer exist, when rendering every role.
    if args.roles.is_empty() && args.out.is_none() {
        let mut orphans: Vec<String> = std::fs::read_dir(&images)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| n.ends_with(".pkr.hcl") && !wanted.contains(n))
            .collect();
        orphans.sort();
        for file in orphans {
            let role = file.trim_end_matches(".pkr.hcl").to_string();
            let status = if args.check {
                "orphaned"
            } else {
                std::fs::remove_file(images.join(&file)).map_err(|e| {
                    Error::Failed(anyhow::anyhow!("cannot remove `images/{file}`: {e}"))
                })?;
                "removed"
            };
            rows.push((role, format!("images/{file}"), status));
        }
    }
    match config.output {
        OutputFormat::Json => crate::print_json(&json!({
            "templates": rows.iter().map(|(role, path, status)| json!({"role": role, "path": path, "status": status})).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            for (role, path, status) in &rows {
                println!("{status:<10} {role:<12} {path}");
            }
        }
    }
    let stale: Vec<&str> = rows
        .iter()
        .filter(|(_, _, s)| *s == "stale" || *s == "orphaned")
        .map(|(r, _, _)| r.as_str())
        .collect();
    if !stale.is_empty() {
        tracing::error!(
            "stale templates: {}; run `imagectl render`",
            stale.join(", ")
        );
        return Err(Error::Exit(1));
    }
    Ok(())
}

/// A path relative to the project when it is inside it.
fn shown(path: &std::path::Path, root: &std::path::Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
