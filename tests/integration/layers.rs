//! The layers stay visible: the pure core has no AWS SDK and no async
//! runtime, no module outside the command layer imports from it, and the
//! modules of each crate (one concept each) never import each other in a
//! cycle. Read from the sources, so a change that breaks a rule fails here
//! with the files that break it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::repo_root;

/// A crate's top-level modules and, for each, the crate's other top-level
/// modules its files name through `crate::`, with where.
struct Graph {
    modules: BTreeSet<String>,
    /// module → imported module → the files that do.
    edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src` belongs to (`aws/error.rs` → `aws`),
/// none for the crate root and binaries.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()?
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    match first.as_str() {
        "lib.rs" | "main.rs" | "bin" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Code without comments: `//` to the end of the line.
fn code(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segments of every path after `crate::`: in `use crate::{a,
/// b::c}` both `a` and `b`, in `crate::d::e()` `d`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        // `imagectl_core::` and the like end in `crate::` too: not ours.
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                if depth == 1 && (c.is_alphanumeric() || c == '_') {
                    name.push(c);
                } else if depth == 1
                    && !name.is_empty()
                    && (c == ',' || c == ':' || c.is_whitespace())
                {
                    out.insert(std::mem::take(&mut name));
                } else if depth > 1 {
                    name.clear();
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &files {
        let Some(from) = module_of(src, f) else {
            continue;
        };
        let text = code(&std::fs::read_to_string(f).unwrap());
        for to in crate_paths(&text) {
            if to != from && modules.contains(&to) {
                let shown = f
                    .strip_prefix(repo_root())
                    .unwrap_or(f)
                    .display()
                    .to_string();
                edges
                    .entry(from.clone())
                    .or_default()
                    .entry(to)
                    .or_default()
                    .insert(shown);
            }
        }
    }
    Graph { modules, edges }
}

/// Every cycle's modules, each cycle once (as found from its smallest
/// module).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let mut found = BTreeSet::new();
    for start in &g.modules {
        // Depth-first search for paths back to `start`.
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((at, path)) = stack.pop() {
            for next in g
                .edges
                .get(&at)
                .map(|e| e.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if &next == start {
                    let mut cycle = path.clone();
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, m)| (*m).clone())
                        .map(|(i, _)| i)
                        .unwrap();
                    cycle.rotate_left(min);
                    found.insert(cycle);
                } else if !path.contains(&next) && next > *start {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next, p));
                }
            }
        }
    }
    found.into_iter().collect()
}

fn crates() -> Vec<(&'static str, PathBuf)> {
    let root = repo_root();
    vec![
        ("imagectl", root.join("src")),
        ("imagectl-core", root.join("crates/core/src")),
        ("imagectl-image", root.join("crates/image/src")),
        ("imagectl-agent", root.join("agent/src")),
    ]
}

#[test]
fn no_module_outside_the_command_layer_imports_from_it() {
    let g = graph(&repo_root().join("src"));
    assert!(
        g.modules.contains("cmd") && g.modules.contains("build"),
        "{:?}",
        g.modules
    );
    let offenders: Vec<String> = g
        .edges
        .iter()
        .filter(|(from, _)| *from != "cmd")
        .filter_map(|(from, to)| to.get("cmd").map(|files| format!("{from}: {files:?}")))
        .collect();
    assert!(
        offenders.is_empty(),
        "modules importing the command layer: {offenders:?}"
    );
}

#[test]
fn the_modules_of_every_crate_import_each_other_without_a_cycle() {
    let mut all = Vec::new();
    for (name, src) in crates() {
        let g = graph(&src);
        assert!(g.modules.len() >= 3, "{name}: {:?}", g.modules);
        for c in cycles(&g) {
            let hops: Vec<String> = c
                .iter()
                .zip(c.iter().cycle().skip(1))
                .map(|(a, b)| format!("{a} -> {b} ({:?})", g.edges[a][b]))
                .collect();
            all.push(format!("{name}: {}", hops.join(", ")));
        }
    }
    assert!(all.is_empty(), "import cycles:\n{}", all.join("\n"));
}

#[test]
fn the_cycle_finder_finds_cycles() {
    // The rule above is only as good as its parser and search: a made-up
    // crate with a cycle, an import of the command layer and paths that
    // must not count.
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("cmd")).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "pub mod a; pub mod b; pub mod c; pub mod cmd;",
    )
    .unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::{b::X, Config};\n// crate::c in a comment\n",
    )
    .unwrap();
    std::fs::write(
        src.join("b.rs"),
        "fn f() { crate::c::g(); imagectl_core::a::h(); }",
    )
    .unwrap();
    std::fs::write(
        src.join("c.rs"),
        "use crate::{\n    a::{self, Y},\n    cmd,\n};",
    )
    .unwrap();
    std::fs::write(src.join("cmd/mod.rs"), "use crate::Config;").unwrap();
    let g = graph(src);
    assert_eq!(cycles(&g), [vec!["a".to_string(), "b".into(), "c".into()]]);
    assert!(g.edges["c"].contains_key("cmd"));
    assert!(!g.edges["b"].contains_key("a"), "{:?}", g.edges["b"]);
}

#[test]
fn the_core_crate_has_no_aws_sdk_and_no_async_runtime() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "-p",
            "imagectl-core",
            "--prefix",
            "none",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(
        tree.lines().any(|l| l.starts_with("imagectl-image ")),
        "{tree}"
    );
    let heavy: Vec<&str> = tree
        .lines()
        .filter(|l| l.starts_with("aws-") || l.starts_with("tokio ") || l.starts_with("hyper "))
        .collect();
    assert!(heavy.is_empty(), "imagectl-core depends on {heavy:?}");
}

#[test]
fn the_fuzz_crate_builds_on_the_core_crate_without_path_includes() {
    let fuzz = repo_root().join("fuzz");
    let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains("imagectl-core = { path = \"../crates/core\" }"),
        "{manifest}"
    );
    let mut files = Vec::new();
    rs_files(&fuzz, &mut files);
    for f in files.iter().filter(|f| !f.starts_with(fuzz.join("target"))) {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(
            !text.contains("#[path"),
            "{} includes a file by path",
            f.display()
        );
    }
}
