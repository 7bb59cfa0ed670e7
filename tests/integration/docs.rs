//! Generated documentation: the role JSON Schema, shell completions and the
//! man page come from the same definitions as the program.

use crate::moto::python_json;
use crate::support::{repo_root, Test};

#[test]
fn the_committed_role_schema_is_current() {
    let out = Test::new().args(&["schema"]).ok();
    let committed = std::fs::read_to_string(repo_root().join("docs/role.schema.json")).unwrap();
    assert_eq!(
        out, committed,
        "docs/role.schema.json is stale: run `imagectl schema > docs/role.schema.json`"
    );
}

#[test]
fn every_role_file_satisfies_the_schema_and_a_typo_does_not() {
    // jsonschema (Python) checks the TOML files as data, independently of
    // imagectl's own parser.
    let script = r#"
import glob, json, sys, tomllib, jsonschema
schema = json.load(open("docs/role.schema.json"))
bad = {}
for path in sorted(glob.glob("roles/*.toml")) + sorted(glob.glob("tests/fixtures/project/roles/*.toml")):
    errors = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(tomllib.load(open(path, "rb")))]
    if errors:
        bad[path] = errors
typo = [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors({"pakages": {"apt": ["x"]}, "files": [{"source": "a", "dest": "/a", "mode": 644}]})]
print(json.dumps({"bad": bad, "typo": typo}))
"#;
    let v = python_json(script);
    assert_eq!(v["bad"], serde_json::json!({}));
    let typo = v["typo"].to_string();
    assert!(typo.contains("pakages"), "{typo}");
    assert!(typo.contains("644"), "{typo}");
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let bash = Test::empty().args(&["completions", "bash"]).ok();
    // roff writes a hyphen as `\-`.
    let man = Test::empty().args(&["man"]).ok().replace("\\-", "-");
    for command in [
        "validate",
        "hash",
        "inputs",
        "plan",
        "render",
        "stage",
        "bases",
        "build",
        "publish",
        "promote",
        "rollback",
        "images",
        "prune",
        "sweep",
        "iam-policy",
        "doctor",
    ] {
        assert!(bash.contains(command), "completions lack {command}");
        assert!(man.contains(command), "man page lacks {command}");
    }
    assert!(man.starts_with(".ie"), "roff");
}
