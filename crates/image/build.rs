//! Computes the agent's identity, the digest that names the agent in every
//! content hash and that every agent binary carries (see `src/identity.rs`):
//! the sources of every crate of this workspace the agent is built from, and
//! the locked versions of every other crate it is built from. Not the
//! binary's bytes: they vary with the profile, the compiler and the build
//! path, while an agent built from the same sources is the same agent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    // crates/image -> the workspace root.
    let root = manifest
        .ancestors()
        .nth(2)
        .expect("crates/image is two levels below the workspace root")
        .to_path_buf();
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    let lock = fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let local = workspace_crates(&root);

    let mut h = Sha256::new();
    for line in lock_closure(&lock, "imagectl-agent") {
        match line.local {
            // A crate of this workspace: its files, not its lock line (a
            // path dependency has no checksum there).
            true => {
                let Some(dir) = local.get(&line.name) else {
                    panic!(
                        "the agent depends on workspace crate `{}`, which is not under agent/ or crates/: \
                         teach crates/image/build.rs where it is",
                        line.name
                    );
                };
                println!("cargo:rerun-if-changed={}", dir.display());
                let mut files = Vec::new();
                collect(dir, dir, &mut files);
                files.sort();
                for f in &files {
                    let rel = f
                        .strip_prefix(&root)
                        .unwrap_or(f)
                        .to_string_lossy()
                        .replace('\\', "/");
                    let bytes = fs::read(f).unwrap_or_default();
                    h.update(format!("file {rel} {}\n", bytes.len()));
                    h.update(&bytes);
                }
            }
            false => h.update(format!("lock {}\n", line.text)),
        }
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=IMAGECTL_AGENT_IDENTITY={digest}");
}

/// The crates of this workspace that can be compiled into the agent: the
/// agent itself and every crate under `crates/`, by package name.
fn workspace_crates(root: &Path) -> BTreeMap<String, PathBuf> {
    let mut dirs = vec![root.join("agent")];
    if let Ok(entries) = fs::read_dir(root.join("crates")) {
        dirs.extend(entries.flatten().map(|e| e.path()));
    }
    dirs.into_iter()
        .filter_map(|d| {
            let text = fs::read_to_string(d.join("Cargo.toml")).ok()?;
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("name = "))?
                .trim()
                .trim_matches('"')
                .to_string();
            Some((name, d))
        })
        .collect()
}

/// Whether a file of a workspace crate is compiled into it: tests,
/// benchmarks and documentation are not, so editing them moves no hash.
fn compiled(rel: &Path) -> bool {
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned());
    !matches!(
        first.as_deref(),
        Some("tests" | "bench" | "benches" | "target" | "README.md")
    )
}

fn collect(crate_dir: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if !compiled(p.strip_prefix(crate_dir).unwrap_or(&p)) {
            continue;
        }
        if p.is_dir() {
            collect(crate_dir, &p, out);
        } else {
            out.push(p);
        }
    }
}

/// One package of `Cargo.lock` in the agent's closure.
struct Locked {
    name: String,
    /// `name version source checksum`.
    text: String,
    /// A path dependency (no `source`): a crate of this workspace.
    local: bool,
}

/// The packages of `Cargo.lock` that `start` is built from (itself
/// included), sorted: a dependency bump of `imagectl` alone leaves every
/// image's hash as it was.
fn lock_closure(lock: &str, start: &str) -> Vec<Locked> {
    struct Pkg {
        name: String,
        version: String,
        source: String,
        line: String,
        deps: Vec<String>,
    }
    let mut pkgs: Vec<Pkg> = Vec::new();
    for block in lock.split("[[package]]").skip(1) {
        let mut fields: HashMap<&str, String> = HashMap::new();
        let mut deps = Vec::new();
        let mut in_deps = false;
        for line in block.lines() {
            let line = line.trim();
            if in_deps {
                if line.starts_with(']') {
                    in_deps = false;
                } else {
                    deps.push(line.trim_matches(|c| c == '"' || c == ',').to_string());
                }
                continue;
            }
            if line.starts_with("dependencies = [") {
                in_deps = !line.ends_with(']');
                continue;
            }
            if let Some((k, v)) = line.split_once(" = ") {
                fields.insert(k, v.trim_matches('"').to_string());
            }
        }
        let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
        pkgs.push(Pkg {
            name: get("name"),
            version: get("version"),
            source: get("source"),
            line: format!(
                "{} {} {} {}",
                get("name"),
                get("version"),
                get("source"),
                get("checksum")
            ),
            deps,
        });
    }
    let mut seen = BTreeSet::new();
    let mut todo = vec![start.to_string()];
    while let Some(dep) = todo.pop() {
        let mut parts = dep.split(' ');
        let name = parts.next().unwrap_or("");
        let version = parts.next();
        for (i, p) in pkgs.iter().enumerate() {
            if p.name == name
                && version.is_none_or(|v| v == p.version)
                && seen.insert((p.line.clone(), i))
            {
                todo.extend(p.deps.iter().cloned());
            }
        }
    }
    seen.into_iter()
        .map(|(_, i)| Locked {
            name: pkgs[i].name.clone(),
            text: pkgs[i].line.clone(),
            local: pkgs[i].source.is_empty(),
        })
        .collect()
}
