//! `imagectl preview ROLE`: what the agent would render at boot, from a
//! local parameter file, without a bake, root or AWS.
//!
//! The staged rootfs has no `/etc/passwd`: `provision.sh` creates the role's
//! users during the bake. The agent resolves owners in the image's own
//! databases (never the host's), so the preview gives it what the image will
//! hold: Debian's static accounts (`base-passwd`, the same package the image
//! installs) and the role's users and groups, allocated the way
//! `useradd --system` and `groupadd --system` do (from 999 down). The IDs of
//! the role's accounts are therefore the preview's guess; names, paths,
//! modes and contents are exactly what the agent renders.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use imagectl_core::{fsutil, target};

use super::print_json;
use crate::cli::{OutputFormat, PreviewArgs};
use crate::{Config, Error};

/// Debian's canonical static accounts, as `base-passwd` installs them.
const BASE_PASSWD: &str = "/usr/share/base-passwd/passwd.master";
const BASE_GROUP: &str = "/usr/share/base-passwd/group.master";

/// Previews one role.
pub fn run(config: &Config, args: &PreviewArgs) -> Result<(), Error> {
    let project = config.project()?;
    let t = target::resolve_one(&project, &args.role)?;
    let params = match &args.params {
        Some(p) => p.clone(),
        None => project
            .root
            .join("roles/params")
            .join(format!("{}.toml", t.name())),
    };
    if !params.is_file() {
        return Err(Error::Usage(format!(
            "no parameter file `{}`; write one shaped like the SSM tree below the role's \
             parameters path (see docs/local-testing.md), or pass --params FILE.toml",
            params.display()
        )));
    }
    let out = out_dir(args.out.as_deref(), t.name(), t.hash.short())?;
    let agent = super::agent(args.agent.as_deref())?;
    let staged = t.stage(&agent, &out.join("context"))?;
    let root = out.join("root");
    copy_dir(&staged.dir.join("rootfs"), &root)?;
    write_accounts(&root, &t.role)?;
    render(&agent.path, &root, &params, &args.env)?;
    let rendered: Vec<(String, PathBuf)> = t
        .role
        .boot
        .templates
        .iter()
        .map(|tpl| {
            (
                tpl.dest.clone(),
                root.join(tpl.dest.trim_start_matches('/')),
            )
        })
        .collect();
    match config.output {
        OutputFormat::Json => print_json(&json!({
            "role": t.name(), "hash": t.hash.hash, "root": root, "params": params, "env": args.env,
            "rendered": rendered.iter().map(|(d, p)| json!({"dest": d, "path": p})).collect::<Vec<_>>(),
        })),
        OutputFormat::Text => {
            for (_, path) in &rendered {
                println!("{}", path.display());
            }
        }
    }
    tracing::info!(
        "previewed `{}` (env {}): {} template(s) rendered below {}",
        t.name(),
        args.env,
        rendered.len(),
        root.display()
    );
    Ok(())
}

/// `--out`, which must not exist or be empty, or a new directory under the
/// system's temporary directory.
fn out_dir(explicit: Option<&Path>, role: &str, hash: &str) -> Result<PathBuf, Error> {
    let dir = match explicit {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!(
            "imagectl-preview-{role}-{hash}-{}",
            std::process::id()
        )),
    };
    let empty = std::fs::read_dir(&dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    if !empty {
        return Err(Error::Usage(format!(
            "`{}` is not empty; name a new directory with --out",
            dir.display()
        )));
    }
    std::fs::create_dir_all(&dir).map_err(|e| failed(&dir, "create", e))?;
    Ok(dir)
}

/// A copy of the staged rootfs (files, directories and links as staged).
fn copy_dir(from: &Path, to: &Path) -> Result<(), Error> {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .map_err(|e| failed(to, "copy the staged rootfs to", e))?;
    if !status.success() {
        return Err(Error::Failed(anyhow::anyhow!(
            "cannot copy `{}` to `{}`: cp exited with {status}",
            from.display(),
            to.display()
        )));
    }
    Ok(())
}

/// `etc/passwd` and `etc/group` below `root`: Debian's static accounts, then
/// the role's users (each with its own group) and supplementary groups.
fn write_accounts(root: &Path, role: &imagectl_core::role::Role) -> Result<(), Error> {
    let mut passwd = std::fs::read_to_string(BASE_PASSWD).unwrap_or_else(|_| {
        "root:*:0:0:root:/root:/bin/sh\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            .into()
    });
    let mut group = std::fs::read_to_string(BASE_GROUP)
        .unwrap_or_else(|_| "root:*:0:\nnogroup:*:65534:\n".into());
    let mut taken: BTreeSet<String> = group
        .lines()
        .filter_map(|l| l.split(':').next().map(String::from))
        .collect();
    let mut next_id = 999u32;
    for u in &role.users {
        let home = u.home.as_deref().unwrap_or("/nonexistent");
        let shell = u.shell.as_deref().unwrap_or("/usr/sbin/nologin");
        passwd.push_str(&format!(
            "{n}:x:{next_id}:{next_id}::{home}:{shell}\n",
            n = u.name
        ));
        group.push_str(&format!("{}:x:{next_id}:\n", u.name));
        taken.insert(u.name.clone());
        next_id -= 1;
    }
    for g in role.users.iter().flat_map(|u| &u.groups) {
        if taken.insert(g.clone()) {
            group.push_str(&format!("{g}:x:{next_id}:\n"));
            next_id -= 1;
        }
    }
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc).map_err(|e| failed(&etc, "create", e))?;
    for (name, text) in [("passwd", passwd), ("group", group)] {
        let path = etc.join(name);
        fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| failed(&path, "write", e))?;
    }
    Ok(())
}

/// Runs the agent that would be baked: `render` from the parameter file.
fn render(agent: &Path, root: &Path, params: &Path, env: &str) -> Result<(), Error> {
    let status = Command::new(agent)
        .arg("render")
        .arg("--root")
        .arg(root)
        .arg("--params")
        .arg(params)
        .arg("--env")
        .arg(env)
        .status()
        .map_err(|e| failed(agent, "run", e))?;
    if !status.success() {
        // The agent has said why on stderr, naming the template and the
        // parameter; the parameter file or the template is the user's.
        return Err(Error::Usage(format!(
            "the agent could not render the templates (see its error above); \
             fix the template or `{}`",
            params.display()
        )));
    }
    Ok(())
}

fn failed(path: &Path, what: &str, e: std::io::Error) -> Error {
    Error::Failed(anyhow::anyhow!("cannot {what} `{}`: {e}", path.display()))
}
