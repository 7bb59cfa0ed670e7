//! Computes the agent's identity for the content hash: a digest of the
//! agent's sources and of the locked versions of exactly the crates it is
//! built from. Not of the binary: its bytes vary with the build path.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let agent = root.join("agent");
    println!("cargo:rerun-if-changed=agent/Cargo.toml");
    println!("cargo:rerun-if-changed=agent/imagectl-agent.service");
    println!("cargo:rerun-if-changed=agent/src");
    println!("cargo:rerun-if-changed=Cargo.lock");

    let mut files = Vec::new();
    collect(&agent.join("src"), &mut files);
    files.push(agent.join("Cargo.toml"));
    // The unit is baked too (include_str! in the agent's library).
    files.push(agent.join("imagectl-agent.service"));
    files.sort();
    let mut h = Sha256::new();
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
    let lock = fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    for line in lock_closure(&lock, "imagectl-agent") {
        h.update(format!("lock {line}\n"));
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=IMAGECTL_AGENT_DIGEST={digest}");
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The `name version source checksum` lines of `Cargo.lock` for `start` and
/// everything it depends on, sorted: a dependency bump of `imagectl` alone
/// leaves every image's hash as it was.
fn lock_closure(lock: &str, start: &str) -> Vec<String> {
    struct Pkg {
        name: String,
        version: String,
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
        for p in pkgs
            .iter()
            .filter(|p| p.name == name && version.is_none_or(|v| v == p.version))
        {
            if seen.insert(p.line.clone()) {
                todo.extend(p.deps.iter().cloned());
            }
        }
    }
    seen.into_iter().collect()
}
