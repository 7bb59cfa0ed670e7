//! Publishing to launch templates of both styles (one that pins an AMI ID,
//! one that resolves the channel's parameter at launch), and the output of
//! `publish`, `promote`, `images` and `prune`, against moto; results read
//! back with boto3.

use serde_json::{json, Value};

use crate::aws::{build, change, parameter, project};
use crate::moto::Moto;
use crate::support::Test;

const REGIONS: [&str; 2] = ["eu-west-1", "eu-central-1"];

/// Creates launch template `name`, tagged with `channel`, launching
/// `image_id`, in both regions, and configures it for `app` `channel`.
fn template(moto: &Moto, t: &Test, name: &str, channel: &str, image_id: &str) {
    moto.boto3(&format!(
        r#"
for region in {REGIONS:?}:
    boto3.client("ec2", region_name=region).create_launch_template(
        LaunchTemplateName="{name}",
        LaunchTemplateData={{"ImageId": "{image_id}"}},
        TagSpecifications=[{{"ResourceType": "launch-template", "Tags": [{{"Key": "imagectl:channel", "Value": "{channel}"}}]}}],
    )
"#
    ));
    let settings = std::fs::read_to_string(t.path("imagectl.toml")).unwrap();
    std::fs::write(
        t.path("imagectl.toml"),
        settings.replace(
            "prod = \"app-prod\"",
            &format!("prod = \"app-prod\"\n{channel} = \"{name}\""),
        ),
    )
    .unwrap();
}

/// Launch template `name` in `region`: default and latest version, and
/// the default version's `ImageId` as written.
fn read_template(moto: &Moto, region: &str, name: &str) -> Value {
    moto.boto3(&format!(
        r#"
ec2 = boto3.client("ec2", region_name="{region}")
t = ec2.describe_launch_templates(LaunchTemplateNames=["{name}"])["LaunchTemplates"][0]
v = ec2.describe_launch_template_versions(LaunchTemplateName="{name}", Versions=["$Default"])["LaunchTemplateVersions"][0]
print(json.dumps({{"default": t["DefaultVersionNumber"], "latest": t["LatestVersionNumber"], "image": v["LaunchTemplateData"]["ImageId"]}}))
"#
    ))
}

#[test]
fn a_template_resolving_the_channel_is_left_resolving_it_and_a_pinned_one_moves() {
    let moto = Moto::start();
    let mut t = project(&moto);
    template(
        &moto,
        &t,
        "app-staging",
        "staging",
        "resolve:ssm:/imagectl/app/staging",
    );
    let (v1, v1_copy) = build(&mut t);
    let resolving =
        json!({"default": 1, "latest": 1, "image": "resolve:ssm:/imagectl/app/staging"});

    // publish, promote and rollback: no version on the resolving template,
    // and a line per region saying what it launches now.
    let out = t.ok_with(&["publish", "app", "--channel", "staging"]);
    assert_eq!(
        out,
        format!(
            "/imagectl/app/staging: eu-central-1 (none) -> {v1_copy}, eu-west-1 (none) -> {v1}\n\
             app-staging eu-west-1: resolves /imagectl/app/staging (now {v1}), no new version\n\
             app-staging eu-central-1: resolves /imagectl/app/staging (now {v1_copy}), no new version\n"
        )
    );
    change(&t, 1);
    let (v2, v2_copy) = build(&mut t);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    let out = t.ok_with(&["promote", "app", "--from", "dev", "--to", "staging"]);
    assert!(
        out.contains(&format!(
            "app-staging eu-west-1: resolves /imagectl/app/staging (now {v2}), no new version"
        )),
        "{out}"
    );
    let out = t.ok_with(&["rollback", "app", "--channel", "staging"]);
    assert!(
        out.contains(&format!("app-staging eu-central-1: resolves /imagectl/app/staging (now {v1_copy}), no new version")),
        "{out}"
    );
    for region in REGIONS {
        assert_eq!(
            read_template(&moto, region, "app-staging"),
            resolving,
            "{region}"
        );
    }
    let v = crate::aws::json(
        &mut t,
        &["publish", "app", "--channel", "staging", "--ami", &v2],
    );
    assert_eq!(
        v["launch_templates"][0],
        json!({"region": "eu-west-1", "name": "app-staging", "resolves": "/imagectl/app/staging", "version": 1, "image": v2})
    );

    // The fixture's app-prod pins an AMI: a new default version with the image.
    let out = t.ok_with(&["promote", "app", "--from", "staging", "--to", "prod"]);
    assert!(
        out.contains(&format!(
            "app-prod eu-west-1: version 2 is the default ({v2})"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "app-prod eu-central-1: version 2 is the default ({v2_copy})"
        )),
        "{out}"
    );
    assert_eq!(
        read_template(&moto, "eu-central-1", "app-prod"),
        json!({"default": 2, "latest": 2, "image": v2_copy})
    );
}

#[test]
fn a_template_resolving_another_parameter_is_refused_before_anything_is_written() {
    let moto = Moto::start();
    let mut t = project(&moto);
    template(
        &moto,
        &t,
        "app-staging",
        "staging",
        "resolve:ssm:/imagectl/app/prod",
    );
    build(&mut t);
    let r = t.run_with(&["publish", "app", "--channel", "staging"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "launch template `app-staging` in `eu-west-1` resolves `/imagectl/app/prod` (version 1, its default), not the channel `/imagectl/app/staging` being published"
        ),
        "{}",
        r.stderr
    );
    for region in REGIONS {
        assert!(
            parameter(&moto, region, "/imagectl/app/staging").is_null(),
            "{region}"
        );
        assert_eq!(
            read_template(&moto, region, "app-staging"),
            json!({"default": 1, "latest": 1, "image": "resolve:ssm:/imagectl/app/prod"})
        );
    }
}

#[test]
fn a_publish_that_moves_only_the_launch_template_says_so() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let (v1, _) = build(&mut t);
    t.ok_with(&["publish", "app", "--channel", "prod"]);
    // Someone puts the template back on its first version.
    moto.boto3(&format!(
        r#"
for region in {REGIONS:?}:
    boto3.client("ec2", region_name=region).modify_launch_template(LaunchTemplateName="app-prod", DefaultVersion="1")
"#
    ));
    let out = t.ok_with(&["publish", "app", "--channel", "prod"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "/imagectl/app/prod: already holds its image in every region",
        "{out}"
    );
    assert!(
        lines[1].starts_with("app-prod eu-west-1: version ")
            && lines[1].ends_with(&format!(" is the default ({v1})")),
        "{out}"
    );
    assert_eq!(lines.len(), 3, "{out}");
}

#[test]
fn promote_refuses_a_channel_to_itself() {
    let r = Test::new().run_with(&["promote", "app", "--from", "dev", "--to", "dev"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "`--from` and `--to` are both `dev`; promote copies one channel into another"
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn prune_keeps_three_by_default() {
    let help = Test::new().ok_with(&["prune", "--help"]);
    assert!(help.contains("[default: 3]"), "{help}");
}

#[test]
fn images_and_prune_name_each_reference_once_within_100_columns() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let mut v = Vec::new();
    for n in 0..4 {
        change(&t, n);
        v.push(build(&mut t));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    t.ok_with(&["publish", "app", "--channel", "prod", "--ami", &v[0].0]);
    for (cmd, args) in [
        ("images", vec!["images"]),
        ("prune", vec!["prune", "--dry-run"]),
    ] {
        let out = t.ok_with(&args);
        for l in out.lines() {
            assert!(l.len() <= 100, "{cmd}: {} columns: {l}", l.len());
        }
        assert_eq!(
            out.matches("launch template app-prod v2 (default, latest)")
                .count(),
            1,
            "{cmd}: {out}"
        );
        for (home, copy) in &v {
            assert_eq!(out.matches(home.as_str()).count(), 1, "{cmd}: {out}");
            assert_eq!(out.matches(copy.as_str()).count(), 1, "{cmd}: {out}");
        }
    }
    // The default keeps the three newest and the referenced oldest.
    let out = t.ok_with(&["prune", "--dry-run"]);
    assert!(!out.contains("would delete"), "{out}");
    assert_eq!(out.matches("among the 3 newest").count(), 3, "{out}");
}

/// Each image's deprecation (days from now; `null` without one) and
/// deregistration protection, as DescribeImages shows them to boto3.
fn lifecycle(moto: &Moto, region: &str, amis: &[&str]) -> Value {
    moto.boto3(&format!(
        r#"
from datetime import datetime, timezone
ec2 = boto3.client("ec2", region_name="{region}")
out = {{}}
for i in ec2.describe_images(ImageIds={amis:?})["Images"]:
    t = i.get("DeprecationTime")
    days = None if t is None else (datetime.fromisoformat(t.replace("Z", "+00:00")) - datetime.now(timezone.utc)).total_seconds() / 86400
    out[i["ImageId"]] = {{"deprecation_days": days, "protection": i.get("DeregistrationProtection")}}
print(json.dumps(out))
"#
    ))
}

/// Whether `v` says deprecated about `days` from now (EC2 rounds to the
/// minute).
fn deprecated_in(v: &Value, days: f64) -> bool {
    v["deprecation_days"]
        .as_f64()
        .is_some_and(|d| (d - days).abs() < 0.01)
}

#[test]
fn publishing_deprecates_what_no_channel_holds_and_protects_prod_until_prune_lets_go() {
    let moto = Moto::start();
    let mut t = project(&moto);
    // One value of rollback history, so that prod lets go of an image soon.
    let settings = std::fs::read_to_string(t.path("imagectl.toml")).unwrap();
    std::fs::write(
        t.path("imagectl.toml"),
        settings.replace(
            "[publish.launch_templates.app]",
            "[publish]\nrollback_depth = 1\n\n[publish.launch_templates.app]",
        ),
    )
    .unwrap();
    let mut v: Vec<(String, String)> = Vec::new();
    let mut next = |t: &mut Test, n: u32| {
        change(t, n);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        v.push(build(t));
        v.last().unwrap().clone()
    };
    let state = |which: &[&(String, String)]| -> Vec<Value> {
        let home: Vec<&str> = which.iter().map(|(h, _)| h.as_str()).collect();
        let copy: Vec<&str> = which.iter().map(|(_, c)| c.as_str()).collect();
        let (h, c) = (
            lifecycle(&moto, REGIONS[0], &home),
            lifecycle(&moto, REGIONS[1], &copy),
        );
        which
            .iter()
            .flat_map(|(a, b)| [h[a.as_str()].clone(), c[b.as_str()].clone()])
            .collect()
    };
    let protected = json!("enabled-without-cooldown");

    let v1 = next(&mut t, 0);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    t.ok_with(&["publish", "app", "--channel", "prod"]);
    for s in state(&[&v1]) {
        assert_eq!(
            s,
            json!({"deprecation_days": null, "protection": protected})
        );
    }

    // dev moves on; prod still holds v1: not deprecated.
    let v2 = next(&mut t, 1);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    for s in state(&[&v1]) {
        assert_eq!(s["deprecation_days"], Value::Null, "{s}");
    }
    for s in state(&[&v2]) {
        assert_eq!(
            s,
            json!({"deprecation_days": null, "protection": "disabled"})
        );
    }

    // prod moves on too: v1 is in no channel, deprecated in 90 days in both
    // regions, and stays protected (prod can roll back to it).
    let r = t.run_with(&["promote", "app", "--from", "dev", "--to", "prod"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!(
            "/imagectl/app/prod in eu-central-1: `{}` is in no channel of `app` any more: deprecated at",
            v1.1
        )),
        "{}",
        r.stderr
    );
    for s in state(&[&v1]) {
        assert!(deprecated_in(&s, 90.0), "{s}");
        assert_eq!(s["protection"], protected, "{s}");
    }
    for s in state(&[&v2]) {
        assert_eq!(
            s,
            json!({"deprecation_days": null, "protection": protected})
        );
    }
    // `images` says so.
    let out = t.ok_with(&["images"]);
    let b1 = crate::aws::block(&out, &v1.0);
    assert!(
        b1.contains("to be deprecated at") && b1.contains("protected from deregistration"),
        "{out}"
    );
    assert!(
        !crate::aws::block(&out, &v2.0).contains("deprecated"),
        "{out}"
    );
    let listed = crate::aws::json(&mut t, &["images"]);
    let i1 = listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["amis"]["eu-west-1"] == v1.0.as_str())
        .unwrap();
    assert_eq!(
        i1["deregistration_protection"],
        json!({"eu-central-1": protected, "eu-west-1": protected})
    );
    assert!(
        i1["deprecation_time"]["eu-central-1"]
            .as_str()
            .is_some_and(|t| t.ends_with(":00.000Z")),
        "{i1}"
    );

    // Rolled back to: no longer deprecated; v2 stays current in dev.
    t.ok_with(&["rollback", "app", "--channel", "prod"]);
    for s in state(&[&v1]) {
        assert_eq!(
            s,
            json!({"deprecation_days": null, "protection": protected})
        );
    }
    for s in state(&[&v2]) {
        assert_eq!(s["deprecation_days"], Value::Null, "{s}");
    }

    // Newer builds: dev v2 -> v3 -> v4, prod v1 -> v3. v2 is referenced by
    // nothing now (prod rolls back only to v1), but protected.
    let v3 = next(&mut t, 2);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    t.ok_with(&["publish", "app", "--channel", "prod"]);
    let v4 = next(&mut t, 3);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    for s in state(&[&v2]) {
        assert!(deprecated_in(&s, 90.0), "{s}");
        assert_eq!(s["protection"], protected, "{s}");
    }
    for s in state(&[&v3]) {
        assert_eq!(
            s,
            json!({"deprecation_days": null, "protection": protected})
        );
    }
    for s in state(&[&v4]) {
        assert_eq!(s["protection"], "disabled", "{s}");
    }

    // prune lifts the protection of v2 only, then deletes it; v1 (prod's
    // rollback) keeps its protection and stays.
    let out = t.ok_with(&["prune", "--keep", "1", "--dry-run"]);
    let b2 = crate::aws::block(&out, &v2.0);
    assert!(
        b2.starts_with("would delete")
            && b2.contains("would lift its deregistration protection first (no longer held by prod or its rollback history)"),
        "{out}"
    );
    let b1 = crate::aws::block(&out, &v1.0);
    assert!(
        b1.starts_with("keep")
            && b1.contains("channel /imagectl/app/prod (rollback)")
            && !b1.contains("lift"),
        "{out}"
    );
    for s in state(&[&v2]) {
        assert_eq!(s["protection"], protected, "a dry run changes nothing: {s}");
    }
    let r = t.run_with(&["prune", "--keep", "1"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    for (region, ami) in [(REGIONS[0], &v2.0), (REGIONS[1], &v2.1)] {
        assert!(
            r.stderr.contains(&format!(
                "app: lifting the deregistration protection of {ami} in {region}: no longer held by prod or its rollback history"
            )),
            "{}",
            r.stderr
        );
    }
    assert_eq!(
        r.stderr
            .matches("lifting the deregistration protection")
            .count(),
        2,
        "{}",
        r.stderr
    );
    assert!(
        crate::aws::block(&r.stdout, &v2.0).starts_with("deleted"),
        "{}",
        r.stdout
    );
    for (region, pick) in [(REGIONS[0], 0), (REGIONS[1], 1)] {
        let left: Vec<String> = crate::aws::images(&moto, region)
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        let ids = |x: &(String, String)| if pick == 0 { x.0.clone() } else { x.1.clone() };
        assert!(!left.contains(&ids(&v2)), "{region}: {left:?}");
        for kept in [&v1, &v3, &v4] {
            assert!(left.contains(&ids(kept)), "{region}: {left:?}");
        }
    }
    for s in state(&[&v1, &v3]) {
        assert_eq!(s["protection"], protected, "{s}");
    }
}
