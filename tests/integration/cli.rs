//! The command line: exit codes, output streams, project discovery.

use crate::support::Test;

#[test]
fn the_repository_roles_are_valid() {
    let out = Test::repo().args(&["validate"]).ok();
    let names: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(names, ["base", "pushstream", "rails", "web", "worker"]);
    assert!(out.lines().next().unwrap().contains("abstract"));
}

#[test]
fn the_repository_roles_hash() {
    let t = Test::repo();
    for role in ["web", "worker", "pushstream"] {
        t.hash(role);
    }
}

#[test]
fn validate_json_lists_roles() {
    let out = Test::new().args(&["validate", "--output", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["roles"][0]["role"], "app");
    assert_eq!(v["roles"][1]["role"], "base");
    assert_eq!(v["roles"][1]["abstract"], true);
}

#[test]
fn results_go_to_stdout_and_logs_to_stderr() {
    let r = Test::new().args(&["validate"]).run();
    assert_eq!(r.status, 0);
    assert!(r.stdout.starts_with("ok  app"), "{}", r.stdout);
    assert!(r.stderr.contains("2 role(s) valid"), "{}", r.stderr);
    let r = Test::new().args(&["-q", "validate"]).run();
    assert_eq!(r.stderr, "");
}

#[test]
fn dash_c_names_the_project() {
    let t = Test::new();
    let dir = t.dir.path().to_string_lossy().into_owned();
    let elsewhere = Test::empty().args(&["-C", &dir, "hash", "app"]);
    assert_eq!(elsewhere.ok().trim_end(), t.hash("app"));
}

#[test]
fn no_project_is_a_usage_error() {
    let r = Test::empty().args(&["validate"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        "error: could not find `imagectl.toml` in `[ROOT]` or any parent directory; run imagectl inside a project, or name one with `-C DIR`\n"
    );
    assert_eq!(r.stdout, "");
}

#[test]
fn an_unknown_role_is_named_with_a_suggestion() {
    let r = Test::new().args(&["hash", "ap"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        "error: unknown role `ap`: there is no `roles/ap.toml`\n  --> roles/\n   = help: did you mean `app`? the roles are: app, base\n\nerror: 1 problem found\n"
    );
}

#[test]
fn an_abstract_role_has_no_hash() {
    let r = Test::new().args(&["hash", "base"]).run();
    assert_eq!(r.status, 2);
    assert_eq!(
        r.stderr,
        "error: role `base` is abstract: it is never built and has no image hash; use a role that extends it\n"
    );
}

#[test]
fn bad_usage_exits_2() {
    let r = Test::new().args(&["frobnicate"]).run();
    assert_eq!(r.status, 2);
    assert!(
        r.stderr.contains("unrecognized subcommand 'frobnicate'"),
        "{}",
        r.stderr
    );
    let r = Test::new().args(&["hash"]).run();
    assert_eq!(r.status, 2);
}

#[test]
fn plan_offline_lists_concrete_roles_and_their_status() {
    let t = Test::new();
    let hash = t.hash("app");
    let out = t.args(&["plan", "--offline", "--output", "json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let roles = v["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 1, "the abstract base is not listed: {out}");
    assert_eq!(roles[0]["role"], "app");
    assert_eq!(roles[0]["hash"], hash.as_str());
    assert_eq!(roles[0]["status"], "build");
}

#[test]
fn plan_offline_reads_the_local_record() {
    let t = Test::new();
    let hash = t.hash("app");
    let record = serde_json::json!([{
        "role": "app", "hash": hash, "target": "local",
        "artifact": "images/local/app.tar", "built_at": 1,
    }]);
    let mut t = t.write(".imagectl/builds.json", record.to_string());
    let out = t.ok_with(&["plan", "--offline"]);
    assert_eq!(
        out,
        format!(
            "ROLE         HASH         STATUS     REASONS\napp          {} up-to-date -\n",
            &hash[..12]
        )
    );
    let v: serde_json::Value =
        serde_json::from_str(&t.ok_with(&["plan", "--offline", "--output", "json"])).unwrap();
    assert_eq!(v["roles"][0]["amis"]["local"], "images/local/app.tar");
}

#[test]
fn the_committed_release_is_packed_from_apps_learn_sample() {
    // roles/releases/learn-sample.tar.gz is what the images bake; it must be
    // exactly what scripts/sample-release packs from the reviewed sources.
    let out =
        std::process::Command::new(crate::support::repo_root().join("scripts/sample-release"))
            .arg("--check")
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A KMS key exists in one region: a single-region key with copy regions
/// would fail Packer's copy after the whole bake, so it is refused up
/// front, with where and what to use instead. A multi-region key's ARN is
/// rewritten for each copy region.
#[test]
fn a_kms_key_must_exist_in_every_region_images_go_to() {
    let key = |t: &Test, key: &str| {
        let settings = std::fs::read_to_string(t.path("imagectl.toml"))
            .unwrap()
            .replace("\"alias/imagectl-images\"", &format!("\"{key}\""));
        std::fs::write(t.path("imagectl.toml"), settings).unwrap();
    };
    let t = Test::new();
    key(
        &t,
        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    );
    let t = t.args(&["render"]);
    let r = t.run();
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "error: `kms_key` names a single-region key, which does not exist in the copy region `eu-central-1`\n \
         --> imagectl.toml:8:11\n  |\n\
         8 | kms_key = \"arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab\"\n  \
         |           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n  \
         = help: use an alias created in every region (`alias/imagectl-images`), or a multi-region key (`mrk-...`) replicated to them\n\n\
         error: 1 problem found; nothing was written\n"
    );
    assert!(!t.path("images/app.pkr.hcl").exists());

    let t = Test::new();
    let mrk = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";
    key(&t, mrk);
    let t = t.args(&["render"]);
    assert_eq!(t.run().status, 0);
    let hcl = std::fs::read_to_string(t.path("images/app.pkr.hcl")).unwrap();
    assert!(hcl.contains(&format!("kms_key_id   = \"{mrk}\"")), "{hcl}");
    // Packer makes the home image only; imagectl copies it, with the key's
    // ARN in the copy region, which the build policy lets EC2 use there.
    assert!(!hcl.contains("region_kms_key_ids"), "{hcl}");
    let t = t.with_args(&["iam-policy", "build"]);
    let policy = t.ok();
    for region in ["eu-west-1", "eu-central-1"] {
        let arn =
            format!("arn:aws:kms:{region}:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab");
        assert!(policy.contains(&arn), "{policy}");
    }
}
