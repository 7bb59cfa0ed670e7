//! `imagectl bases update`: pin the newest base image per region.

use serde_json::json;

use imagectl_core::fsutil;
use imagectl_core::lock::{self, Lock, LOCK_FILE};

use super::{aws_runtime, print_json};
use crate::cli::{BasesUpdateArgs, OutputFormat};
use crate::{aws, bases, Config, Error};

/// Resolves every base and writes the lock (or, with `--check`, compares).
pub fn update(config: &Config, args: &BasesUpdateArgs) -> Result<(), Error> {
    let project = config.project()?;
    let rt = aws_runtime()?;
    let fresh = rt.block_on(async {
        let session = aws::Session::load(&project.settings.aws.region).await;
        bases::resolve_all(&project, &session).await
    })?;
    let current = match Lock::load(&project) {
        Ok(l) => Some(l),
        Err(lock::Error::Missing) | Err(lock::Error::Invalid(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let changes = diff(current.as_ref(), &fresh);
    match config.output {
        OutputFormat::Json => print_json(&json!({
            "changes": changes.iter().map(|c| json!({
                "base": c.base, "region": c.region, "from": c.from, "to": c.to, "name": c.name,
            })).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            if changes.is_empty() {
                println!("no changes: every base image is the newest match");
            }
            for c in &changes {
                println!(
                    "{:<16} {:<14} {} -> {}  {}",
                    c.base,
                    c.region,
                    c.from.as_deref().unwrap_or("(none)"),
                    c.to.as_deref().unwrap_or("(removed)"),
                    c.name
                );
            }
        }
    }
    if args.check {
        return if changes.is_empty() {
            Ok(())
        } else {
            Err(Error::Exit(1))
        };
    }
    if !changes.is_empty() || current.is_none() {
        fsutil::write_atomic(&project.root.join(LOCK_FILE), fresh.render().as_bytes())
            .map_err(lock::Error::Write)?;
        tracing::info!("wrote {LOCK_FILE}");
    }
    Ok(())
}

/// One base in one region whose pin moves.
struct Change {
    base: String,
    region: String,
    from: Option<String>,
    to: Option<String>,
    name: String,
}

fn diff(current: Option<&Lock>, fresh: &Lock) -> Vec<Change> {
    let empty = Lock::default();
    let current = current.unwrap_or(&empty);
    let mut keys: Vec<(&String, &String)> = Vec::new();
    for lock in [current, fresh] {
        for (base, regions) in &lock.bases {
            for region in regions.keys() {
                keys.push((base, region));
            }
        }
    }
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|(base, region)| {
            let get = |l: &Lock| l.bases.get(base).and_then(|r| r.get(region)).cloned();
            let (old, new) = (get(current), get(fresh));
            (old != new).then(|| Change {
                base: base.clone(),
                region: region.clone(),
                from: old.map(|e| e.ami),
                to: new.as_ref().map(|e| e.ami.clone()),
                name: new.map(|e| e.name).unwrap_or_default(),
            })
        })
        .collect()
}
