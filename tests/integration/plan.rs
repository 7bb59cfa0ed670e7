//! `imagectl plan` against moto and the real Packer: the keys of a role
//! that changed since the image its first channel holds, and the channels
//! that hold another build than the current one.

use crate::aws::{build, json, project};
use crate::moto::Moto;
use crate::support::{repo_root, Test};

/// Replaces `from` (which must be there) with `to` in `roles/app.toml`.
fn edit(t: &Test, from: &str, to: &str) {
    let path = t.path("roles/app.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{from:?} is not in:\n{text}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// The text plan of `app` alone: its short hash, status and reasons.
fn table(hash: &str, status: &str, why: &str) -> String {
    format!(
        "ROLE         HASH         STATUS     REASONS\napp          {} {status:<10} {why}\n",
        &hash[..12]
    )
}

/// The scenario's state: the project, the hashes before and after the
/// role edit, and the images of each.
struct Scenario {
    moto: Moto,
    t: Test,
    old: String,
    new: String,
    v1: String,
    v2: String,
}

#[test]
fn plan_names_the_role_keys_that_changed_and_the_channels_that_hold_older_builds() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let old = t.hash("app");
    let (v1, _) = build(&mut t);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    t.ok_with(&["promote", "app", "--from", "dev", "--to", "prod"]);
    assert_eq!(t.ok_with(&["plan"]), table(&old, "up-to-date", "-"));
    let mut s = Scenario {
        moto,
        t,
        old,
        new: String::new(),
        v1,
        v2: String::new(),
    };
    role_keys_that_changed(&mut s);
    a_record_without_the_canonical_form(&mut s);
    (s.v2, _) = build(&mut s.t);
    channels_that_hold_older_builds(&mut s);
    a_channel_that_holds_a_newer_build(&mut s);
}

/// One package added and one removed, a scalar changed, a table removed:
/// each named, online against what dev holds and offline against the
/// local build record.
fn role_keys_that_changed(s: &mut Scenario) {
    let t = &mut s.t;
    edit(
        t,
        r#"apt = ["nginx=1.22.1-9", "ruby"]"#,
        r#"apt = ["jq", "nginx=1.22.1-9"]"#,
    );
    edit(
        t,
        r#"instance_type = "t3.medium""#,
        r#"instance_type = "t3.large""#,
    );
    edit(
        t,
        "[boot.health]\nhttp = \"http://127.0.0.1:8080/health\"\ntimeout_secs = 30\n",
        "",
    );
    s.new = t.hash("app");
    let since = format!(" (since dev {})", &s.old[..12]);
    // The instance type is in the Packer template too.
    let reasons: Vec<String> = [
        "changed the Packer template (images/app.pkr.hcl)",
        "boot.health.http http://127.0.0.1:8080/health -> (none)",
        "boot.health.timeout_secs 30 -> (none)",
        "image.instance_type t3.medium -> t3.large",
        "packages.apt - ruby",
        "packages.apt + jq",
    ]
    .iter()
    .map(|r| format!("{r}{since}"))
    .collect();
    assert_eq!(
        t.ok_with(&["plan"]),
        table(&s.new, "build", &reasons.join("; "))
    );
    let v = json(t, &["plan"]);
    assert_eq!(v["roles"][0]["reasons"], serde_json::json!(reasons));
    let local: Vec<String> = reasons
        .iter()
        .map(|r| r.replace(&since, &format!(" (since local build {})", &s.old[..12])))
        .collect();
    let v = json(t, &["plan", "--offline"]);
    assert_eq!(v["roles"][0]["reasons"], serde_json::json!(local));
}

/// A record without the role's canonical form (written by an older
/// imagectl, or of a role too big to keep it): one line, as before.
fn a_record_without_the_canonical_form(s: &mut Scenario) {
    let inputs = format!("/imagectl/app/inputs/{}", s.old);
    s.moto.boto3(&format!(
        r#"
ssm = boto3.client("ssm", region_name="eu-west-1")
record = ssm.get_parameter(Name="{inputs}")["Parameter"]["Value"]
assert "\nrole-json\t" in record, record
older = "\n".join(l for l in record.split("\n") if not l.startswith("role-json\t"))
ssm.put_parameter(Name="{inputs}", Value=older, Type="String", Overwrite=True)
print("null")
"#
    ));
    let since = format!(" (since dev {})", &s.old[..12]);
    assert_eq!(
        s.t.ok_with(&["plan"]),
        table(
            &s.new,
            "build",
            &format!(
                "changed the Packer template (images/app.pkr.hcl){since}; \
                 changed the role definition of `roles/app.toml` (its file or a parent's){since}"
            )
        )
    );
}

/// The edit built and published to dev: prod still holds the first build.
/// Then dev rolled back: it holds the first build too.
fn channels_that_hold_older_builds(s: &mut Scenario) {
    let t = &mut s.t;
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    let held = |c: &str, how: &str| {
        format!(
            "`{c}` holds an older build ({}, hash {}); `imagectl {how}` moves it to this one",
            s.v1,
            &s.old[..12]
        )
    };
    assert_eq!(
        t.ok_with(&["plan"]),
        table(
            &s.new,
            "up-to-date",
            &held("prod", "promote app --from dev --to prod")
        )
    );
    t.ok_with(&["rollback", "app", "--channel", "dev"]);
    let notes = [
        held("dev", "publish app --channel dev"),
        held("prod", "publish app --channel prod"),
    ];
    assert_eq!(
        t.ok_with(&["plan"]),
        table(&s.new, "up-to-date", &notes.join("; "))
    );
    let v = json(t, &["plan"]);
    assert_eq!(v["roles"][0]["notes"], serde_json::json!(notes));
    assert_eq!(v["roles"][0]["amis"]["eu-west-1"], s.v2.as_str());
    assert_eq!(
        v["roles"][0]["channels"],
        serde_json::json!({"dev": s.v1, "prod": s.v1})
    );
    assert_eq!(t.run_with(&["plan", "--detailed-exitcode"]).status, 0);
}

/// A checkout behind the build dev holds: a newer build, no command.
fn a_channel_that_holds_a_newer_build(s: &mut Scenario) {
    let t = &mut s.t;
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    std::fs::copy(
        repo_root().join("tests/fixtures/project/roles/app.toml"),
        t.path("roles/app.toml"),
    )
    .unwrap();
    assert_eq!(t.hash("app"), s.old);
    assert_eq!(
        t.ok_with(&["plan"]),
        table(
            &s.old,
            "up-to-date",
            &format!(
                "`dev` holds a newer build ({}, hash {})",
                s.v2,
                &s.new[..12]
            )
        )
    );
}
