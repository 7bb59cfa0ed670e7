//! `imagectl validate`: every problem in one run (a role file that does not
//! parse, an unknown parent), boot templates against the role's test
//! parameters, the JSON report, and unknown roles.

use serde_json::Value;

use crate::support::Test;

/// The fixture with `roles/app.toml` baking a file that does not exist.
fn app_missing_file(t: Test) -> Test {
    let app = std::fs::read_to_string(t.path("roles/app.toml")).unwrap();
    let app = app.replace("files/app/app.conf", "files/app/nope.conf");
    t.write("roles/app.toml", app)
}

const MISSING_FILE: &str = "error: source file `roles/files/app/nope.conf` does not exist
  --> roles/app.toml:12:10
   |
12 | source = \"files/app/nope.conf\"
   |          ^^^^^^^^^^^^^^^^^^^^^
   = help: create `roles/files/app/nope.conf`, or fix the path (it is relative to `roles/`)
";

#[test]
fn a_role_file_that_does_not_parse_does_not_hide_another_roles_missing_file() {
    let t = app_missing_file(Test::new()).write("roles/broken.toml", "description = \"x\n");
    let r = t.args(&["validate"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        format!(
            "{MISSING_FILE}
error: TOML syntax error: invalid basic string, expected `\"`
 --> roles/broken.toml:1:17
  |
1 | description = \"x
  |                 ^
  = help: fix the syntax at this point; the TOML format is described at https://toml.io

error: 2 problems found
"
        )
    );
}

#[test]
fn a_syntax_error_does_not_hide_a_missing_file_in_the_same_role_file() {
    let t = app_missing_file(Test::new());
    let app = std::fs::read_to_string(t.path("roles/app.toml")).unwrap();
    let t = t.write("roles/app.toml", app.replace("[image]", "[image"));
    let r = t.args(&["validate"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        format!(
            "error: TOML syntax error: unclosed table, expected `]`
 --> roles/app.toml:4:7
  |
4 | [image
  |       ^
  = help: fix the syntax at this point; the TOML format is described at https://toml.io

{MISSING_FILE}
error: 2 problems found
"
        )
    );
}

#[test]
fn an_unknown_parent_does_not_hide_the_childs_own_missing_file() {
    let t = app_missing_file(Test::new());
    let app = std::fs::read_to_string(t.path("roles/app.toml")).unwrap();
    let t = t.write("roles/app.toml", app.replace("[\"base\"]", "[\"bsae\"]"));
    let r = t.args(&["validate", "app"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        format!(
            "error: unknown parent role `bsae`
 --> roles/app.toml:2:12
  |
2 | extends = [\"bsae\"]
  |            ^^^^^^
  = help: did you mean `base`?

{MISSING_FILE}
error: 2 problems found
"
        )
    );
}

/// The fixture with test parameters for `app` and `template` as its boot
/// template.
fn with_params(template: &str) -> Test {
    Test::new()
        .write(
            "roles/params/app.toml",
            "[db]\nurl = \"postgres://127.0.0.1/app\"\n\n[report]\nemail = \"ops@example.test\"\nto = \"ops\"\n",
        )
        .write("roles/templates/app/app.env.hbs", template)
}

#[test]
fn a_misspelt_parameter_in_a_template_is_caught_with_a_suggestion() {
    let t =
        with_params("DATABASE_URL={{params.db.url}}\nREPORT_TO={{shell params.report.emial}}\n");
    let r = t.args(&["validate"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        "error: `params.report.emial` is not in `roles/params/app.toml`
 --> roles/templates/app/app.env.hbs:2:19
  |
2 | REPORT_TO={{shell params.report.emial}}
  |                   ^^^^^^^^^^^^^^^^^^^
  = help: did you mean `params.report.email`?

error: 1 problem found
"
    );
}

#[test]
fn a_parameter_with_no_near_name_lists_what_is_there() {
    let t = with_params("{{#with params.report}}TO={{too}}{{/with}}\nX={{params.zzz}}\n");
    let r = t.args(&["validate"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        "error: `params.report.too` is not in `roles/params/app.toml`
 --> roles/templates/app/app.env.hbs:1:29
  |
1 | {{#with params.report}}TO={{too}}{{/with}}
  |                             ^^^
  = help: did you mean `params.report.to`?

error: `params.zzz` is not in `roles/params/app.toml`
 --> roles/templates/app/app.env.hbs:2:5
  |
2 | X={{params.zzz}}
  |     ^^^^^^^^^^
  = help: add it to `roles/params/app.toml` (and to the role's parameters in SSM), or fix the path: `params` has `db`, `report`

error: 2 problems found
"
    );
}

#[test]
fn parameters_the_file_has_and_each_bodies_and_optional_ones_pass() {
    let t = with_params(
        "DATABASE_URL={{shell params.db.url}}
{{#each params.report}}
{{@key}}={{this}} {{@root.params.db.url}}
{{/each}}
{{#each params.report as |value key|}}{{key}}={{value}}{{/each}}
{{#if params.tls}}
CERT={{params.tls.cert}}
{{/if}}
LEVEL={{default params.log_level \"info\"}}
",
    );
    let out = t.args(&["validate"]).ok();
    assert!(out.starts_with("ok  app"), "{out}");
}

#[test]
fn without_test_parameters_templates_are_not_checked() {
    Test::new()
        .write("roles/templates/app/app.env.hbs", "X={{params.anything}}\n")
        .args(&["validate"])
        .ok();
}

#[test]
fn json_on_failure_lists_every_diagnostic_on_stdout() {
    let t = app_missing_file(with_params("X={{params.db.ur}}\n"));
    let r = t.args(&["validate", "--output", "json"]).run();
    assert_eq!(r.status, 2);
    // The human report still goes to stderr.
    assert!(
        r.stderr.ends_with("error: 2 problems found\n"),
        "{}",
        r.stderr
    );
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(
        v["roles"],
        serde_json::json!([
            {"role": "app", "valid": false},
            {"role": "base", "abstract": true, "valid": true},
        ])
    );
    assert_eq!(
        v["diagnostics"],
        serde_json::json!([
            {
                "role": "app",
                "file": "roles/app.toml",
                "line": 12,
                "column": 10,
                "message": "source file `roles/files/app/nope.conf` does not exist",
                "help": "create `roles/files/app/nope.conf`, or fix the path (it is relative to `roles/`)",
            },
            {
                "role": "app",
                "file": "roles/templates/app/app.env.hbs",
                "line": 1,
                "column": 5,
                "message": "`params.db.ur` is not in `roles/params/app.toml`",
                "help": "did you mean `params.db.url`?",
            },
        ])
    );
}

#[test]
fn json_on_success_has_no_diagnostics() {
    let out = Test::new().args(&["validate", "--output", "json"]).ok();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["diagnostics"], serde_json::json!([]));
    assert_eq!(
        v["roles"][0],
        serde_json::json!({"role": "app", "abstract": false, "valid": true})
    );
}

#[test]
fn json_for_an_unknown_role_and_a_bad_settings_file() {
    let r = Test::new()
        .args(&["validate", "cronn", "--output", "json"])
        .run();
    assert_eq!(r.status, 2);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let d = &v["diagnostics"][0];
    assert_eq!(
        (&d["role"], &d["file"], &d["line"]),
        (&"cronn".into(), &"roles/".into(), &Value::Null)
    );

    let t = Test::new().write("imagectl.toml", "[aws]\nregoin = \"eu-west-1\"\n");
    let r = t.args(&["validate", "--output", "json"]).run();
    assert_eq!(r.status, 2);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let d = &v["diagnostics"][0];
    assert_eq!(
        (&d["role"], &d["file"], &d["line"]),
        (&Value::Null, &"imagectl.toml".into(), &2.into())
    );
    assert_eq!(d["message"], "unknown key `regoin`");
}

#[test]
fn an_unknown_role_points_at_roles_and_names_the_roles() {
    let r = Test::new().args(&["validate", "cronn", "ap"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(r.stdout, "");
    assert_eq!(
        r.stderr,
        "error: unknown role `cronn`: there is no `roles/cronn.toml`
  --> roles/
   = help: the roles are: app, base; create `roles/cronn.toml` to add `cronn`

error: unknown role `ap`: there is no `roles/ap.toml`
  --> roles/
   = help: did you mean `app`? the roles are: app, base

error: 2 problems found
"
    );
}
