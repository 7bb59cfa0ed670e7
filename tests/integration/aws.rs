//! `imagectl build`, channels and garbage collection against moto, with the
//! real Packer; results read back with boto3.

use serde_json::Value;

use crate::moto::Moto;
use crate::support::Test;

/// The fixture project, pointed at `moto`, with its AWS resources created.
pub(crate) fn project(moto: &Moto) -> Test {
    moto.setup_fixture();
    Test::new().envs(moto.env())
}

pub(crate) fn json(t: &mut Test, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    serde_json::from_str(&t.ok_with(&all)).unwrap()
}

/// Builds `app` and returns its AMI per region.
pub(crate) fn build(t: &mut Test) -> (String, String) {
    let v = json(t, &["build", "app"]);
    let b = &v["builds"][0];
    assert!(b["status"] == "built" || b["status"] == "reused", "{v}");
    (
        b["amis"]["eu-west-1"].as_str().unwrap().to_string(),
        b["amis"]["eu-central-1"].as_str().unwrap().to_string(),
    )
}

/// Changes a file of `app`, so that its hash moves.
pub(crate) fn change(t: &Test, n: u32) {
    std::fs::write(
        t.path("roles/files/app/app.conf"),
        format!("listen {}\n", 8080 + n),
    )
    .unwrap();
}

pub(crate) fn images(moto: &Moto, region: &str) -> Value {
    moto.boto3(&format!(
        r#"
ec2 = boto3.client("ec2", region_name="{region}")
images = ec2.describe_images(Owners=["self"], Filters=[{{"Name": "tag:imagectl:role", "Values": ["app"]}}])["Images"]
out = []
for i in images:
    snaps = [b["Ebs"]["SnapshotId"] for b in i.get("BlockDeviceMappings", []) if "Ebs" in b]
    snap_tags = {{}}
    shared = []
    for s in snaps:
        d = ec2.describe_snapshots(SnapshotIds=[s])["Snapshots"][0]
        snap_tags = {{t["Key"]: t["Value"] for t in d.get("Tags", [])}}
        perms = ec2.describe_snapshot_attribute(SnapshotId=s, Attribute="createVolumePermission")
        shared += [p.get("UserId") for p in perms.get("CreateVolumePermissions", [])]
    out.append({{
        "id": i["ImageId"],
        "state": i["State"],
        "description": i.get("Description"),
        "tags": {{t["Key"]: t["Value"] for t in i.get("Tags", [])}},
        "snapshot_tags": snap_tags,
        "snapshot_shared_with": shared,
        "imds": ec2.describe_image_attribute(ImageId=i["ImageId"], Attribute="imdsSupport").get("ImdsSupport", {{}}).get("Value"),
        "launch_permissions": [p.get("UserId") for p in ec2.describe_image_attribute(ImageId=i["ImageId"], Attribute="launchPermission")["LaunchPermissions"]],
    }})
print(json.dumps(sorted(out, key=lambda i: i["tags"].get("imagectl:build", ""))))
"#
    ))
}

pub(crate) fn parameter(moto: &Moto, region: &str, name: &str) -> Value {
    moto.boto3(&format!(
        r#"
ssm = boto3.client("ssm", region_name="{region}")
try:
    p = ssm.get_parameter(Name="{name}")["Parameter"]
    h = ssm.get_parameter_history(Name="{name}")["Parameters"]
    print(json.dumps({{"value": p["Value"], "type": p["Type"], "data_type": p.get("DataType"), "history": [v["Value"] for v in h]}}))
except ssm.exceptions.ParameterNotFound:
    print("null")
"#
    ))
}

#[test]
fn build_bakes_one_tagged_image_then_reuses_it_then_rebuilds_on_change() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let hash = t.hash("app");

    let v = json(&mut t, &["build", "app"]);
    let b = &v["builds"][0];
    assert_eq!(b["status"], "built", "{v}");
    assert_eq!(b["hash"], hash.as_str());
    let home = b["amis"]["eu-west-1"].as_str().unwrap().to_string();
    let copy = b["amis"]["eu-central-1"].as_str().unwrap().to_string();

    // Read back with boto3: one image per region, tagged, described,
    // IMDSv2 only, shared with the listed account (snapshots too).
    for (region, id) in [("eu-west-1", &home), ("eu-central-1", &copy)] {
        let list = images(&moto, region);
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 1, "{region}: {list:?}");
        let i = &list[0];
        assert_eq!(i["id"], id.as_str());
        assert_eq!(i["state"], "available");
        assert_eq!(i["description"], "An application server");
        assert_eq!(i["imds"], "v2.0", "{region}");
        assert_eq!(i["launch_permissions"], serde_json::json!(["111122223333"]));
        assert_eq!(
            i["snapshot_shared_with"],
            serde_json::json!(["111122223333"])
        );
        for tags in [&i["tags"], &i["snapshot_tags"]] {
            assert_eq!(tags["imagectl:role"], "app", "{region}: {tags}");
            assert_eq!(tags["imagectl:content-hash"], hash.as_str());
            assert_eq!(tags["imagectl:base-ami"], "ami-0d1e2b1200a900901");
            assert_eq!(tags["imagectl:version"], env!("CARGO_PKG_VERSION"));
            assert_eq!(
                tags["imagectl:commit"], "unknown",
                "the fixture is no git checkout"
            );
            assert!(tags["Name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("imagectl-app-{}-", &hash[..12])));
        }
    }

    // Again: reused, and Packer never runs (a `packer` that fails first on PATH).
    let fake = tempfile::tempdir().unwrap();
    let marker = fake.path().join("ran");
    std::fs::write(
        fake.path().join("packer"),
        format!("#!/bin/sh\ntouch {}\nexit 99\n", marker.display()),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(fake.path().join("packer"))
        .status()
        .unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap()
    );
    let mut again = Test::from_tree(t.dir.path())
        .envs(moto.env())
        .envs([("PATH", path)]);
    let r = again.run_with(&["build", "app"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains(&format!("app          reused       {}", &hash[..12])),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr.contains(&format!(
            "an image with hash {} exists: {home} (reused, nothing baked)",
            &hash[..12]
        )),
        "{}",
        r.stderr
    );
    assert!(!marker.exists(), "packer ran for an image that exists");
    assert_eq!(images(&moto, "eu-west-1").as_array().unwrap().len(), 1);

    // A changed role builds a new image.
    change(&t, 1);
    let v = json(&mut t, &["build", "app"]);
    assert_eq!(v["builds"][0]["status"], "built");
    assert_ne!(v["builds"][0]["hash"], hash.as_str());
    assert_eq!(images(&moto, "eu-west-1").as_array().unwrap().len(), 2);
    assert_eq!(images(&moto, "eu-central-1").as_array().unwrap().len(), 2);

    // --dry-run says so and changes nothing.
    change(&t, 2);
    let v = json(&mut t, &["build", "app", "--dry-run"]);
    assert_eq!(v["builds"][0]["status"], "would-build");
    assert_eq!(images(&moto, "eu-west-1").as_array().unwrap().len(), 2);
}

#[test]
fn an_emulator_build_says_it_provisions_nothing() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let r = t.run_with(&["build", "app"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("the EC2 endpoint {} is an emulator on this machine: building without a communicator or provisioners", moto.endpoint)),
        "{}",
        r.stderr
    );
}

#[test]
fn publish_promote_and_rollback_move_parameters_and_launch_templates() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let (v1, v1_copy) = build(&mut t);

    let out = t.ok_with(&["publish", "app", "--channel", "dev"]);
    assert_eq!(
        out,
        format!("/imagectl/app/dev: eu-central-1 (none) -> {v1_copy}, eu-west-1 (none) -> {v1}\n")
    );
    for (region, ami) in [("eu-west-1", &v1), ("eu-central-1", &v1_copy)] {
        let p = parameter(&moto, region, "/imagectl/app/dev");
        assert_eq!(p["value"], ami.as_str());
        assert_eq!(p["type"], "String");
        assert_eq!(p["data_type"], "aws:ec2:image");
    }
    assert_eq!(
        t.ok_with(&["publish", "app", "--channel", "dev"]),
        "/imagectl/app/dev: no changes necessary\n"
    );

    // Promote: exactly what dev holds, every region; the launch template
    // that follows prod (pinning an AMI) gets a new default version
    // requiring IMDSv2.
    let out = t.ok_with(&["promote", "app", "--from", "dev", "--to", "prod"]);
    assert!(
        out.contains(&format!(
            "app-prod eu-west-1: version 2 is the default ({v1})"
        )),
        "{out}"
    );
    assert_eq!(
        parameter(&moto, "eu-central-1", "/imagectl/app/prod")["value"],
        v1_copy.as_str()
    );
    let lt = moto.boto3(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
t = ec2.describe_launch_templates(LaunchTemplateNames=["app-prod"])["LaunchTemplates"][0]
v = ec2.describe_launch_template_versions(LaunchTemplateName="app-prod", Versions=["$Default"])["LaunchTemplateVersions"][0]
print(json.dumps({"default": t["DefaultVersionNumber"], "latest": t["LatestVersionNumber"], "data": v["LaunchTemplateData"]}))
"#,
    );
    assert_eq!(lt["default"], 2);
    assert_eq!(lt["data"]["ImageId"], v1.as_str());
    assert_eq!(lt["data"]["MetadataOptions"]["HttpTokens"], "required");

    // A newer image, then the older one again: refused without --allow-older.
    change(&t, 1);
    let (v2, _) = build(&mut t);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    assert_eq!(
        parameter(&moto, "eu-west-1", "/imagectl/app/dev")["value"],
        v2.as_str()
    );
    let r = t.run_with(&["publish", "app", "--channel", "dev", "--ami", &v1]);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr
            .contains("pass `--allow-older` to publish it anyway, or use `imagectl rollback`"),
        "{}",
        r.stderr
    );
    assert_eq!(
        parameter(&moto, "eu-west-1", "/imagectl/app/dev")["value"],
        v2.as_str(),
        "a refused publish changes nothing"
    );

    // Rollback: back to v1 from the parameter's own history, in every region.
    let out = t.ok_with(&["rollback", "app", "--channel", "dev"]);
    assert!(out.contains(&format!("eu-west-1 {v2} -> {v1}")), "{out}");
    let p = parameter(&moto, "eu-west-1", "/imagectl/app/dev");
    assert_eq!(p["value"], v1.as_str());
    assert_eq!(p["history"], serde_json::json!([v1, v2, v1]));
    assert_eq!(
        parameter(&moto, "eu-central-1", "/imagectl/app/dev")["value"],
        v1_copy.as_str()
    );
    let r = t.run_with(&["rollback", "app", "--channel", "prod"]);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr.contains("has 0 earlier values in its history"),
        "{}",
        r.stderr
    );

    // Refusals: an image that is missing, not imagectl's, or another role's.
    for (ami, why) in [
        ("ami-0123456789abcdef0", "does not exist"),
        ("ami-0d1e2b1200a900901", "was not built by imagectl"),
    ] {
        let r = t.run_with(&["publish", "app", "--channel", "staging", "--ami", ami]);
        assert_eq!(r.status, 2, "{ami}");
        assert!(r.stderr.contains(why), "{ami}: {}", r.stderr);
    }
    let r = t.run_with(&["publish", "app", "--channel", "nightly"]);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr
            .contains("unknown channel `nightly`; the channels are dev, staging, prod"),
        "{}",
        r.stderr
    );
    assert!(parameter(&moto, "eu-west-1", "/imagectl/app/staging").is_null());

    // A launch template pinning an AMI that does not say which channel it
    // follows is not moved, and nothing else either: that channel's publish
    // policy could not change it.
    moto.boto3(
        r#"
for region in ["eu-west-1", "eu-central-1"]:
    ec2 = boto3.client("ec2", region_name=region)
    ec2.create_launch_template(LaunchTemplateName="app-staging", LaunchTemplateData={"ImageId": "ami-0d1e2b1200a900901"})
"#,
    );
    let settings = std::fs::read_to_string(t.path("imagectl.toml")).unwrap();
    std::fs::write(
        t.path("imagectl.toml"),
        settings.replace(
            "prod = \"app-prod\"",
            "prod = \"app-prod\"\nstaging = \"app-staging\"",
        ),
    )
    .unwrap();
    // The preflight says so first; publish itself refuses it too.
    let r = t.run_with(&["publish", "app", "--channel", "staging", "--ami", &v2]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("  missing: launch template app-staging (app staging) in eu-west-1: it is not tagged `imagectl:channel = staging`"),
        "{}",
        r.stderr
    );
    let r = t.run_with(&[
        "publish",
        "app",
        "--channel",
        "staging",
        "--ami",
        &v2,
        "--no-preflight",
    ]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "launch template `app-staging` is not tagged `imagectl:channel = staging`, so the publish policy of `staging` may not change it"
        ),
        "{}",
        r.stderr
    );
    assert!(parameter(&moto, "eu-west-1", "/imagectl/app/staging").is_null());
    assert!(parameter(&moto, "eu-central-1", "/imagectl/app/staging").is_null());
}

#[test]
fn prune_never_removes_an_image_still_referenced() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let mut v = Vec::new();
    for n in 0..6 {
        change(&t, n);
        v.push(build(&mut t));
        // Creation times are whole seconds: keep the images in order.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    // v5 newest; v4 dev now, v3 dev before (rollback); v2 prod and its
    // launch template; v1 runs an instance; v0 nothing.
    for (i, channel) in [(3, "dev"), (4, "dev"), (2, "prod")] {
        t.ok_with(&[
            "publish",
            "app",
            "--channel",
            channel,
            "--ami",
            &v[i].0,
            "--allow-older",
        ]);
    }
    moto.boto3(&format!(
        r#"boto3.client("ec2", region_name="eu-west-1").run_instances(ImageId="{}", MinCount=1, MaxCount=1)"#,
        v[1].0
    ));

    let out = t.ok_with(&["prune", "--keep", "1", "--dry-run"]);
    let line = |ami: &str| block(&out, ami);
    assert!(line(&v[5].0).starts_with("keep") && line(&v[5].0).contains("among the 1 newest"));
    assert!(
        line(&v[4].0).contains("channel /imagectl/app/dev (current)"),
        "{out}"
    );
    assert!(
        line(&v[3].0).contains("channel /imagectl/app/dev (rollback)"),
        "{out}"
    );
    assert!(
        line(&v[2].0).contains("channel /imagectl/app/prod (current)"),
        "{out}"
    );
    assert!(
        line(&v[2].0).contains("launch template app-prod v2 (default, latest)"),
        "{out}"
    );
    assert!(line(&v[1].0).contains("instances in eu-west-1"), "{out}");
    assert!(line(&v[0].0).starts_with("would delete"), "{out}");
    assert_eq!(
        images(&moto, "eu-west-1").as_array().unwrap().len(),
        6,
        "dry run deletes nothing"
    );

    let out = t.ok_with(&["prune", "--keep", "1"]);
    assert!(line(&v[0].0).starts_with("would delete"));
    assert!(block(&out, &v[0].0).starts_with("deleted"), "{out}");
    for (region, pick) in [("eu-west-1", 0usize), ("eu-central-1", 1)] {
        let left: Vec<String> = images(&moto, region)
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(left.len(), 5, "{region}: {left:?}");
        let gone = if pick == 0 { &v[0].0 } else { &v[0].1 };
        assert!(!left.contains(gone), "{region}: {gone} still there");
    }
    // Its snapshots went with it.
    let snaps = moto.boto3(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
s = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{"Name": "tag:imagectl:role", "Values": ["app"]}])["Snapshots"]
print(json.dumps(len(s)))
"#,
    );
    assert_eq!(snaps, 5);
}

/// The block of `prune` or `images` output about the image `ami`: its head
/// line and the indented lines under it, joined.
pub(crate) fn block(out: &str, ami: &str) -> String {
    let mut blocks: Vec<String> = Vec::new();
    for l in out.lines() {
        match blocks.last_mut() {
            Some(b) if l.starts_with(' ') => b.push_str(&format!(" {}", l.trim())),
            _ => blocks.push(l.to_string()),
        }
    }
    blocks
        .into_iter()
        .find(|b| b.contains(ami))
        .unwrap_or_else(|| panic!("{ami} not in {out}"))
}

/// The policy `imagectl iam-policy JOB` prints, as moto can evaluate it:
/// actions kept, resources widened to `*` and conditions dropped (moto
/// cannot evaluate EC2 or SSM resource ARNs, nor tag conditions).
pub fn relaxed_policy(t: &mut Test, job: &str) -> String {
    let mut p: Value = serde_json::from_str(&t.ok_with(&["iam-policy", job])).unwrap();
    for st in p["Statement"].as_array_mut().unwrap() {
        st["Resource"] = Value::String("*".into());
        st.as_object_mut().unwrap().remove("Condition");
    }
    p.to_string()
}

#[test]
fn the_printed_iam_policies_are_enough_for_each_job() {
    let moto = Moto::start();
    // With signing on: the build signs with KMS, publish verifies.
    let mut t = crate::provenance::signing(&moto);
    let mut keys = std::collections::BTreeMap::new();
    for job in ["plan", "build", "publish", "prune"] {
        let policy = relaxed_policy(&mut t, job);
        let k = moto.boto3(&format!(
            r#"
iam = boto3.client("iam", region_name="eu-west-1")
iam.create_user(UserName="{job}")
arn = iam.create_policy(PolicyName="imagectl-{job}", PolicyDocument={policy:?})["Policy"]["Arn"]
iam.attach_user_policy(UserName="{job}", PolicyArn=arn)
k = iam.create_access_key(UserName="{job}")["AccessKey"]
print(json.dumps([k["AccessKeyId"], k["SecretAccessKey"]]))
"#
        ));
        keys.insert(
            job,
            (
                k[0].as_str().unwrap().to_string(),
                k[1].as_str().unwrap().to_string(),
            ),
        );
    }
    // From here on moto checks every request against IAM.
    moto.boto3(&format!(
        r#"
import urllib.request
urllib.request.urlopen(urllib.request.Request("{}/moto-api/reset-auth", data=b"0", method="POST", headers={{"Content-Type": "application/json"}})).read()
"#,
        moto.endpoint
    ));
    let as_user = |job: &str, args: &[&str]| {
        let (id, secret) = keys[job].clone();
        let mut u = Test::from_tree(t.dir.path())
            .envs(moto.env())
            .envs([("AWS_ACCESS_KEY_ID", id), ("AWS_SECRET_ACCESS_KEY", secret)]);
        let r = u.run_with(args);
        // Keep what the run wrote (the lock, the build record).
        crate::support::copy_tree(u.dir.path(), t.dir.path());
        r
    };
    let r = as_user("build", &["bases", "update"]);
    assert_eq!(r.status, 0, "bases update as the build user:\n{}", r.stderr);
    let r = as_user("build", &["build", "app"]);
    assert_eq!(
        r.status, 0,
        "build as the build user (imagectl and Packer):\n{}",
        r.stderr
    );
    assert!(r.stdout.contains("built"), "{}", r.stdout);
    let r = as_user("plan", &["plan", "--all"]);
    assert_eq!(r.status, 0, "plan as the plan user:\n{}", r.stderr);
    assert!(r.stdout.contains("up-to-date"), "{}", r.stdout);
    let r = as_user("publish", &["publish", "app", "--channel", "dev"]);
    assert_eq!(r.status, 0, "publish as the publish user:\n{}", r.stderr);
    let r = as_user(
        "publish",
        &["promote", "app", "--from", "dev", "--to", "prod"],
    );
    assert_eq!(r.status, 0, "promote as the publish user:\n{}", r.stderr);
    // A second image, and the first one's lifecycle, every call under the
    // policies: deprecated when prod lets go of it, undeprecated when
    // rolled back to, deprecated again, then unprotected and deleted by
    // prune (with no rollback history kept, nothing references it).
    let settings = std::fs::read_to_string(t.path("imagectl.toml")).unwrap();
    std::fs::write(
        t.path("imagectl.toml"),
        settings.replace(
            "[publish.launch_templates.app]",
            "[publish]\nrollback_depth = 0\n\n[publish.launch_templates.app]",
        ),
    )
    .unwrap();
    change(&t, 1);
    let r = as_user("build", &["build", "app"]);
    assert_eq!(r.status, 0, "a second build:\n{}", r.stderr);
    let mut logs = String::new();
    for args in [
        &["publish", "app", "--channel", "dev"][..],
        &["promote", "app", "--from", "dev", "--to", "prod"],
        &["rollback", "app", "--channel", "prod"],
        &["promote", "app", "--from", "dev", "--to", "prod"],
    ] {
        let r = as_user("publish", args);
        assert_eq!(r.status, 0, "{args:?} as the publish user:\n{}", r.stderr);
        logs.push_str(&r.stderr);
    }
    // EnableImageDeprecation, DisableImageDeprecation,
    // EnableImageDeregistrationProtection, each made.
    for said in [
        "any more: deprecated at",
        "its deprecation (at ",
        "is protected from deregistration",
    ] {
        assert!(logs.contains(said), "{said}: {logs}");
    }
    let r = as_user("prune", &["prune", "--keep", "1"]);
    assert_eq!(r.status, 0, "prune as the prune user:\n{}", r.stderr);
    assert!(
        r.stderr
            .contains("lifting the deregistration protection of")
            && r.stdout.contains("deleted"),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    // And the check is real: the prune user cannot publish. Its first
    // call, describing the provenance key to verify with, is denied (moto
    // answers KMS's JSON protocol with an XML AccessDenied the SDK cannot
    // read, so the message names the call, not the code).
    let r = as_user("prune", &["publish", "app", "--channel", "staging"]);
    assert_eq!(r.status, 1);
    assert!(
        r.stderr.contains("AWS DescribeKey in `eu-west-1` failed"),
        "{}",
        r.stderr
    );
}

#[test]
fn plan_lists_exactly_the_roles_to_build_with_reasons() {
    let moto = Moto::start();
    let t = project(&moto);
    let summary = t.path("summary.md");
    let mut t = t.envs([("GITHUB_STEP_SUMMARY", summary.to_str().unwrap().to_string())]);
    let hash = t.hash("app");

    let v = json(&mut t, &["plan", "--all"]);
    assert_eq!(
        v,
        serde_json::json!({"roles": [{
            "role": "app", "hash": hash, "method": "packer", "status": "build",
            "reasons": ["no image of this role yet"], "amis": {},
        }]})
    );
    assert_eq!(
        t.ok_with(&["plan", "--format", "github-matrix"]),
        "{\"include\":[{\"method\":\"packer\",\"role\":\"app\"}]}\n"
    );
    assert_eq!(t.run_with(&["plan", "--detailed-exitcode"]).status, 2);

    let (ami, _) = build(&mut t);
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    let v = json(&mut t, &["plan"]);
    assert_eq!(v["roles"][0]["status"], "up-to-date");
    assert_eq!(v["roles"][0]["reasons"], serde_json::json!([]));
    assert_eq!(v["roles"][0]["amis"]["eu-west-1"], ami.as_str());
    // Its channels are read, to say which hold another build: dev holds
    // this one.
    assert_eq!(v["roles"][0]["channels"], serde_json::json!({"dev": ami}));
    assert_eq!(v["roles"][0].get("notes"), None, "{v}");
    assert_eq!(
        t.ok_with(&["plan", "--format", "github-matrix"]),
        "{\"include\":[]}\n"
    );
    assert_eq!(t.run_with(&["plan", "--detailed-exitcode"]).status, 0);

    // Change one file: the plan says which, against what dev holds.
    change(&t, 7);
    let v = json(&mut t, &["plan"]);
    assert_eq!(v["roles"][0]["status"], "build");
    assert_eq!(v["roles"][0]["channels"]["dev"], ami.as_str());
    let reasons: Vec<&str> = v["roles"][0]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [format!(
            "changed file roles/files/app/app.conf (since dev {})",
            &hash[..12]
        )],
        "{v}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("| role | status | hash | reasons |"), "{md}");
    assert!(
        md.contains(&format!("| app | up-to-date | `{}` | - |", &hash[..12])),
        "{md}"
    );
    assert!(
        md.contains("| role | status | hash | AMI | duration |"),
        "{md}"
    );
}

/// Starts tests/fault_proxy.py in front of `moto`, holding `actions` for
/// `seconds` each; returns it and its URL.
pub(crate) fn slow_proxy(
    moto: &Moto,
    actions: &str,
    seconds: &str,
) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(crate::moto::python())
        .arg(crate::support::repo_root().join("tests/fault_proxy.py"))
        .args([&port.to_string(), &moto.endpoint, "--actions", actions])
        .args(["--delay", seconds])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "proxy did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    (child, format!("http://127.0.0.1:{port}"))
}

fn interrupt_build(signal: i32, expected_code: i32) {
    let moto = Moto::start();
    let t = project(&moto);
    // Packer waits for its instance with DescribeInstances: slowed, it is
    // mid-build long enough to be interrupted there.
    let (mut proxy, url) = slow_proxy(&moto, "DescribeInstances", "3");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_imagectl"))
        .args(["build", "app", "--publish", "dev"])
        .current_dir(t.dir.path())
        .envs(moto.env())
        .env("AWS_ENDPOINT_URL", &url)
        .env("IMAGECTL_AGENT_BIN", crate::support::agent_bin())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until Packer has launched its instance, then interrupt imagectl.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let n = moto.boto3(
            r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
r = ec2.describe_instances(Filters=[{"Name": "tag:imagectl:role", "Values": ["app"]}])["Reservations"]
print(json.dumps(sum(len(x["Instances"]) for x in r)))
"#,
        );
        if n.as_u64().unwrap_or(0) > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Packer never launched its instance"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // SAFETY: a signal to the child this test spawned.
    unsafe {
        libc::kill(child.id() as i32, signal);
    }
    let out = child.wait_with_output().unwrap();
    let _ = proxy.kill();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(expected_code), "{stderr}");
    // Mostly the signal lands while Packer runs; it may land just after.
    assert!(
        stderr.contains("Packer cleaned up its temporary resources, nothing was published")
            || stderr.contains("while completing the images; nothing was published"),
        "{stderr}"
    );
    // Packer's cleanup ran: its instance is terminated; no channel moved.
    // An image with the role's tags is complete or absent: Packer tags last,
    // so a later build either finds nothing or reuses a finished image.
    let state = moto.boto3(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
r = ec2.describe_instances(Filters=[{"Name": "tag:imagectl:role", "Values": ["app"]}])["Reservations"]
images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "tag:imagectl:role", "Values": ["app"]}])["Images"]
complete = all({"imagectl:content-hash", "imagectl:build", "imagectl:commit", "imagectl:base-ami", "imagectl:version", "Name"}
               <= {t["Key"] for t in i.get("Tags", [])} for i in images)
ssm = boto3.client("ssm", region_name="eu-west-1")
print(json.dumps({
    "instances": sorted(i["State"]["Name"] for x in r for i in x["Instances"]),
    "images": len(images),
    "complete": complete,
    "channel": len(ssm.get_parameters(Names=["/imagectl/app/dev"])["Parameters"]),
}))
"#,
    );
    assert_eq!(
        state["instances"],
        serde_json::json!(["terminated"]),
        "{state}"
    );
    assert_eq!(state["channel"], 0, "{state}");
    assert_eq!(state["complete"], true, "a half-tagged image: {state}");
    let mut again = Test::from_tree(t.dir.path()).envs(moto.env());
    let v = json(&mut again, &["build", "app"]);
    let expected = if state["images"] == 0 {
        "built"
    } else {
        "reused"
    };
    assert_eq!(v["builds"][0]["status"], expected, "{state}");
}

#[test]
fn ctrl_c_during_a_build_lets_packer_clean_up_and_publishes_nothing() {
    interrupt_build(libc::SIGINT, 130);
}

#[test]
fn sigterm_during_a_build_lets_packer_clean_up_and_publishes_nothing() {
    interrupt_build(libc::SIGTERM, 143);
}

#[test]
fn a_forced_rebuild_gets_its_own_copies_and_publishes_them_everywhere() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let (home1, copy1) = build(&mut t);
    let v = json(&mut t, &["build", "app", "--force"]);
    let b = &v["builds"][0];
    assert_eq!(b["status"], "built", "{v}");
    let home2 = b["amis"]["eu-west-1"].as_str().unwrap();
    let copy2 = b["amis"]["eu-central-1"].as_str().unwrap();
    assert_ne!(home2, home1);
    // Same hash, but a new bake: its copy is its own, never the first
    // build's copy (found by role and hash alone, it was).
    assert_ne!(
        copy2, copy1,
        "the forced build reused the first build's copy"
    );
    let copies = images(&moto, "eu-central-1");
    let copy = copies
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == copy2)
        .unwrap();
    let home = images(&moto, "eu-west-1");
    let home = home
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == home2)
        .unwrap();
    assert_eq!(
        copy["tags"]["imagectl:build"],
        home["tags"]["imagectl:build"]
    );
    // Publishing the new image moves both regions to it.
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    assert_eq!(
        parameter(&moto, "eu-west-1", "/imagectl/app/dev")["value"],
        home2
    );
    assert_eq!(
        parameter(&moto, "eu-central-1", "/imagectl/app/dev")["value"],
        copy2
    );
}
