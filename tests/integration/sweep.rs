//! `imagectl sweep` against moto: leftovers of a build killed with SIGKILL
//! mid-flight and of others made with boto3, next to decoys that are not
//! imagectl's and a complete image; everything read back with boto3.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;

use crate::moto::Moto;
use crate::support::Test;

/// Every resource in both regions, as `kind id` strings (live instances
/// only: terminated ones are gone as far as anyone cares).
fn everything(moto: &Moto) -> BTreeSet<String> {
    let v = moto.boto3(
        r#"
out = []
for region in ["eu-west-1", "eu-central-1"]:
    ec2 = boto3.client("ec2", region_name=region)
    for r in ec2.describe_instances()["Reservations"]:
        out += ["instance " + i["InstanceId"] for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")]
    out += ["image " + i["ImageId"] for i in ec2.describe_images(Owners=["self"])["Images"]]
    out += ["snapshot " + s["SnapshotId"] for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]]
    # Attached volumes go with their instances.
    out += ["volume " + v["VolumeId"] for v in ec2.describe_volumes()["Volumes"] if v["State"] == "available"]
    out += ["key-pair " + k["KeyName"] for k in ec2.describe_key_pairs()["KeyPairs"]]
    out += ["security-group " + g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]]
print(json.dumps(out))
"#,
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The PIDs of `pid`'s descendants.
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// Starts `imagectl build app` and SIGKILLs it and Packer (with its
/// plugins) once Packer has made the AMI but not tagged it yet: the worst
/// moment, which leaves a stopped build instance, Packer's key pair, an
/// untagged image named like imagectl's with snapshots.
/// Returns the build instance's ID.
fn killed_build(moto: &Moto, t: &Test) -> String {
    // Packer waits for instances and images with these calls: slowed, the
    // moment between CreateImage and CreateTags lasts seconds.
    let (mut proxy, url) = crate::aws::slow_proxy(moto, "DescribeInstances,DescribeImages", "2");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_imagectl"))
        .args(["build", "app"])
        .current_dir(t.dir.path())
        .envs(moto.env())
        .env("AWS_ENDPOINT_URL", &url)
        .env("IMAGECTL_AGENT_BIN", crate::support::agent_bin())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let seen = moto.boto3(
        r#"
import time
ec2 = boto3.client("ec2", region_name="eu-west-1")
deadline = time.time() + 120
while time.time() < deadline:
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["imagectl-app-*"]}])["Images"]
    if any(not any(t["Key"] == "imagectl:role" for t in i.get("Tags", [])) for i in images):
        print(json.dumps(True))
        break
    time.sleep(0.1)
else:
    print(json.dumps(False))
"#,
    );
    // Everything at once, so nobody cleans up: imagectl and Packer's tree.
    for pid in descendants(child.id()).into_iter().chain([child.id()]) {
        // SAFETY: kill(2) on processes this test started.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    let _ = child.wait();
    let _ = proxy.kill();
    let _ = proxy.wait();
    assert_eq!(seen, true, "Packer never created its image");
    let v = moto.boto3(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
r = ec2.describe_instances(Filters=[{"Name": "tag-key", "Values": ["imagectl:build"]}])["Reservations"]
print(json.dumps([[i["InstanceId"], i["State"]["Name"]] for x in r for i in x["Instances"] if i["State"]["Name"] != "terminated"]))
"#,
    );
    // The first build's instance is terminated; this one is not.
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 1, "Packer cleaned up, or more than one: {v}");
    list[0][0].as_str().unwrap().to_string()
}

/// Orphans the way other deaths leave them, and decoys; returns the
/// orphans as `kind id`: those carrying imagectl's tags (and the key pair
/// named after a build), and those only `sweep --untagged` removes (an
/// image with an untagged snapshot).
fn boto3_orphans_and_decoys(moto: &Moto) -> (BTreeSet<String>, BTreeSet<String>) {
    let v = moto.boto3(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
import time
base = "ami-0d1e2b1200a900901"
# A build of now: a group's age is its build's (groups have no creation time).
build = "0123456789ab-" + time.strftime("%Y%m%d%H%M%S", time.gmtime())
def tags(kind, pairs):
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in pairs.items()]}]
orphans = []
untagged = []
# A temporary key pair, a group and a volume of a dead build.
ec2.create_key_pair(KeyName="imagectl-app-" + build)
orphans.append("key-pair imagectl-app-" + build)
vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
g = ec2.create_security_group(GroupName="packer_orphan", Description="x", VpcId=vpc,
                              TagSpecifications=tags("security-group", {"imagectl:build": build}))["GroupId"]
orphans.append("security-group " + g)
v = ec2.create_volume(Size=1, AvailabilityZone="eu-west-1a",
                      TagSpecifications=tags("volume", {"imagectl:role": "app", "imagectl:build": build}))["VolumeId"]
orphans.append("volume " + v)
# A snapshot imagectl tagged whose image is gone (prune deregistered it
# and died before deleting the snapshot).
s = ec2.create_snapshot(VolumeId=v, TagSpecifications=tags("snapshot", {"imagectl:role": "app", "imagectl:build": build}))["SnapshotId"]
orphans.append("snapshot " + s)

# Decoys: an untagged instance, one with the role's tag but launched by
# someone (no build tag), someone else's Packer key pair and group, an
# untagged snapshot, an image tagged differently.
i = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1,
                  TagSpecifications=tags("instance", {"imagectl:role": "app", "Name": "imagectl-build-app-prod"}))
ec2.create_key_pair(KeyName="packer_6409a1f2-0000-4000-8000-000000000000")
ec2.create_key_pair(KeyName="imagectl-deploy")
ec2.create_security_group(GroupName="packer_6409a1f2", Description="x", VpcId=vpc)
d = ec2.create_volume(Size=1, AvailabilityZone="eu-west-1a")["VolumeId"]
ec2.create_snapshot(VolumeId=d)
ec2.create_image(InstanceId=i, Name="web-2026", TagSpecifications=tags("image", {"team": "web", "Name": "imagectl-web"}))
# A half-tagged image: the role, nothing else, and its snapshots untagged.
h = ec2.create_image(InstanceId=i, Name="half", TagSpecifications=tags("image", {"imagectl:role": "app"}))["ImageId"]
untagged.append("image " + h)
untagged += ["snapshot " + b["Ebs"]["SnapshotId"] for b in ec2.describe_images(ImageIds=[h])["Images"][0]["BlockDeviceMappings"] if "Ebs" in b]
print(json.dumps([orphans, untagged]))
"#,
    );
    let set = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    (set(&v[0]), set(&v[1]))
}

/// The untagged images named like imagectl's in both regions, with their
/// snapshots, and Packer's key pair: what a build killed before tagging
/// leaves besides its instance.
fn untagged_build_images(moto: &Moto) -> BTreeSet<String> {
    let v = moto.boto3(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
out = ["key-pair " + k["KeyName"] for k in ec2.describe_key_pairs(Filters=[{"Name": "key-name", "Values": ["imagectl-app-*"]}])["KeyPairs"]]
assert len(out) == 1, out
for region in ["eu-west-1", "eu-central-1"]:
    ec2 = boto3.client("ec2", region_name=region)
    for i in ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": ["imagectl-app-*"]}])["Images"]:
        if not any(t["Key"] == "imagectl:role" for t in i.get("Tags", [])):
            out.append("image " + i["ImageId"])
            out += ["snapshot " + b["Ebs"]["SnapshotId"] for b in i["BlockDeviceMappings"] if "Ebs" in b]
print(json.dumps(out))
"#,
    );
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn removed(v: &Value, status: &str) -> BTreeSet<String> {
    v["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["status"], status, "{o}");
            format!(
                "{} {}",
                o["kind"].as_str().unwrap(),
                o["id"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn sweep_removes_exactly_what_a_killed_build_left_and_nothing_else() {
    let moto = Moto::start();
    moto.setup_fixture();
    let mut t = Test::new().envs(moto.env());
    // A complete image (and its copy): never an orphan.
    let v: Value = serde_json::from_str(&t.ok_with(&["build", "app", "--output", "json"])).unwrap();
    assert_eq!(v["builds"][0]["status"], "built", "{v}");
    let complete = v["builds"][0]["amis"]["eu-west-1"]
        .as_str()
        .unwrap()
        .to_string();

    // A new hash, built and killed mid-flight.
    std::fs::write(t.path("roles/files/app/app.conf"), "listen 9090\n").unwrap();
    let instance = killed_build(&moto, &t);
    let mut untagged = untagged_build_images(&moto);
    assert!(!untagged.is_empty());
    let (mut tagged, more) = boto3_orphans_and_decoys(&moto);
    tagged.insert(format!("instance {instance}"));
    // Packer's key pair is named after the build: the sweep policy covers it.
    let keys: Vec<String> = untagged
        .iter()
        .filter(|x| x.starts_with("key-pair "))
        .cloned()
        .collect();
    for k in keys {
        untagged.remove(&k);
        tagged.insert(k);
    }
    untagged.extend(more);
    let before = everything(&moto);
    assert!(tagged.is_subset(&before), "{tagged:?}");
    assert!(untagged.is_subset(&before), "{untagged:?}");

    // Everything is minutes old at most: the default threshold keeps it.
    assert_eq!(t.ok_with(&["sweep"]), "no orphans at least 2h old\n");
    assert_eq!(everything(&moto), before);

    // A dry run lists exactly the orphans carrying imagectl's tags, and
    // `--untagged` exactly the rest; neither changes anything.
    let out = t.ok_with(&["sweep", "--older-than", "0s", "--dry-run"]);
    assert_eq!(out.lines().count(), tagged.len(), "{out}");
    assert!(out.lines().all(|l| l.starts_with("would remove")), "{out}");
    assert!(
        out.lines().any(|l| l.contains(&instance)
            && l.contains("instance")
            && l.contains("build instance left stopped")),
        "{out}"
    );
    let out = t.ok_with(&["sweep", "--untagged", "--older-than", "0s", "--dry-run"]);
    assert_eq!(out.lines().count(), untagged.len(), "{out}\n{untagged:?}");
    assert!(
        out.contains("never tagged: the build died before completing it"),
        "{out}"
    );
    assert!(
        out.contains("half-tagged: no imagectl:content-hash, imagectl:build"),
        "{out}"
    );
    for (args, want) in [(vec![], &tagged), (vec!["--untagged"], &untagged)] {
        let mut all = vec![
            "sweep",
            "--older-than",
            "0s",
            "--dry-run",
            "--output",
            "json",
        ];
        all.extend(args);
        let v: Value = serde_json::from_str(&t.ok_with(&all)).unwrap();
        assert_eq!(v["dry_run"], true);
        assert_eq!(&removed(&v, "would remove"), want);
    }
    assert_eq!(everything(&moto), before, "a dry run changes nothing");

    // The real runs remove exactly those, instances first.
    let r = t.run_with(&["sweep", "--older-than", "0s", "--output", "json"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(removed(&v, "removed"), tagged);
    let west: Vec<&Value> = v["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["region"] == "eu-west-1")
        .collect();
    assert_eq!(west[0]["kind"], "instance", "removed first: {v}");
    assert!(
        r.stderr
            .contains(&format!("removing instance {instance} in eu-west-1")),
        "{}",
        r.stderr
    );
    let r = t.run_with(&[
        "sweep",
        "--untagged",
        "--older-than",
        "0s",
        "--output",
        "json",
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(removed(&v, "removed"), untagged);
    let after = everything(&moto);
    let expected: BTreeSet<String> = before
        .difference(&tagged)
        .filter(|x| !untagged.contains(*x))
        .cloned()
        .collect();
    assert_eq!(after, expected);
    assert!(after.contains(&format!("image {complete}")));

    // The build instance is terminated, not merely gone from the list.
    let state = moto.boto3(&format!(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
print(json.dumps(ec2.describe_instances(InstanceIds=["{instance}"])["Reservations"][0]["Instances"][0]["State"]["Name"]))
"#
    ));
    assert_eq!(state, "terminated");

    // Nothing left to do; the build of the killed hash now starts afresh.
    for untagged in [false, true] {
        let mut args = vec!["sweep", "--older-than", "0s"];
        if untagged {
            args.push("--untagged");
        }
        assert_eq!(t.ok_with(&args), "no orphans at least 0s old\n");
    }
    let v: Value = serde_json::from_str(&t.ok_with(&["build", "app", "--output", "json"])).unwrap();
    assert_eq!(v["builds"][0]["status"], "built", "{v}");
}

#[test]
fn sweep_keeps_what_is_younger_than_the_threshold() {
    let moto = Moto::start();
    moto.setup_fixture();
    let mut t = Test::new().envs(moto.env());
    let launch = |build: &str| {
        moto.boto3(&format!(
            r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
t = [{{"Key": "Name", "Value": "imagectl-build-app-{build}"}}, {{"Key": "imagectl:role", "Value": "app"}}, {{"Key": "imagectl:build", "Value": "{build}"}}]
i = ec2.run_instances(ImageId="ami-0d1e2b1200a900901", MinCount=1, MaxCount=1, TagSpecifications=[{{"ResourceType": "instance", "Tags": t}}])
print(json.dumps(i["Instances"][0]["InstanceId"]))
"#
        ))
        .as_str()
        .unwrap()
        .to_string()
    };
    // Instances are aged by their launch time, not by the build's name.
    let old = launch("0123456789ab-20260101000000");
    std::thread::sleep(Duration::from_secs(10));
    let young = launch("0123456789ab-20260101000100");
    let out = t.ok_with(&["sweep", "--older-than", "6s"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("removed") && out.contains(&old), "{out}");
    let states = moto.boto3(&format!(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
r = ec2.describe_instances(InstanceIds=["{old}", "{young}"])["Reservations"]
print(json.dumps({{i["InstanceId"]: i["State"]["Name"] for x in r for i in x["Instances"]}}))
"#
    ));
    assert_eq!(states[&old], "terminated");
    assert_eq!(states[&young], "running");

    // A bad age is a usage error.
    let r = t.run_with(&["sweep", "--older-than", "2 hours"]);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr
            .contains("`2 hours` is not an age such as `30m`, `2h` or `1d12h`"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_sweep_policies_are_enough_to_sweep() {
    let moto = Moto::start();
    moto.setup_fixture();
    let mut t = Test::new().envs(moto.env());
    let (tagged, untagged) = boto3_orphans_and_decoys(&moto);
    let mut keys = Vec::new();
    for job in ["sweep", "sweep-untagged"] {
        let policy = crate::aws::relaxed_policy(&mut t, job);
        keys.push(moto.boto3(&format!(
            r#"
iam = boto3.client("iam", region_name="eu-west-1")
iam.create_user(UserName="{job}")
arn = iam.create_policy(PolicyName="imagectl-{job}", PolicyDocument={policy:?})["Policy"]["Arn"]
iam.attach_user_policy(UserName="{job}", PolicyArn=arn)
k = iam.create_access_key(UserName="{job}")["AccessKey"]
print(json.dumps([k["AccessKeyId"], k["SecretAccessKey"]]))
"#
        )));
    }
    moto.boto3(&format!(
        r#"
import urllib.request
urllib.request.urlopen(urllib.request.Request("{}/moto-api/reset-auth", data=b"0", method="POST", headers={{"Content-Type": "application/json"}})).read()
"#,
        moto.endpoint
    ));
    let user = |k: &Value| {
        Test::from_tree(t.dir.path()).envs(moto.env()).envs([
            ("AWS_ACCESS_KEY_ID", k[0].as_str().unwrap().to_string()),
            ("AWS_SECRET_ACCESS_KEY", k[1].as_str().unwrap().to_string()),
        ])
    };
    let mut u = user(&keys[0]);
    let r = u.run_with(&["sweep", "--older-than", "0s", "--output", "json"]);
    assert_eq!(r.status, 0, "sweep as the sweep user:\n{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(removed(&v, "removed"), tagged);
    let mut b = user(&keys[1]);
    let r = b.run_with(&[
        "sweep",
        "--untagged",
        "--older-than",
        "0s",
        "--output",
        "json",
    ]);
    assert_eq!(
        r.status, 0,
        "sweep --untagged as the sweep-untagged user:\n{}",
        r.stderr
    );
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(removed(&v, "removed"), untagged);
    // And the check is real: the sweep user cannot read channels.
    let r = u.run_with(&["images"]);
    assert_eq!(r.status, 1);
    assert!(r.stderr.contains("AccessDenied"), "{}", r.stderr);
}
