//! Rollouts against moto and the wrapper's instance refreshes
//! (tests/moto_autoscaling.py): `publish --roll` replaces a group's
//! instances with ones on the new image, a refresh that fails is reported
//! with its group and reason, `rollout status` shows both; results read
//! back with boto3.

use serde_json::Value;

use crate::aws::{build, change, project};
use crate::moto::Moto;
use crate::support::Test;

const GROUP: &str = "learn-app-prod";

/// A group of 3 instances in eu-west-1 launching `app-prod` version 1 (a
/// numbered version, so that refreshes roll back), tagged with its role;
/// configured for `app` `prod`, with `[rollout]` set for a quick test.
fn group(moto: &Moto, t: &Test, warmup: u32) {
    moto.boto3(&format!(
        r#"
asg = boto3.client("autoscaling", region_name="eu-west-1")
asg.create_auto_scaling_group(
    AutoScalingGroupName="{GROUP}",
    LaunchTemplate={{"LaunchTemplateName": "app-prod", "Version": "1"}},
    MinSize=3, MaxSize=3, DesiredCapacity=3,
    AvailabilityZones=["eu-west-1a"],
    Tags=[{{"Key": "imagectl:role", "Value": "app", "PropagateAtLaunch": True}}],
)
"#
    ));
    settings(t, warmup);
}

fn settings(t: &Test, warmup: u32) {
    let text = std::fs::read_to_string(t.path("imagectl.toml")).unwrap();
    let base = text
        .split("\n[publish.auto_scaling_groups.app]")
        .next()
        .unwrap();
    std::fs::write(
        t.path("imagectl.toml"),
        format!(
            "{base}\n[publish.auto_scaling_groups.app]\nprod = [\"{GROUP}\"]\n\n[rollout]\nmin_healthy_percentage = 50\ninstance_warmup_secs = {warmup}\npoll_secs = 1\n"
        ),
    )
    .unwrap();
}

/// The group's launch template version and the image of each instance.
fn fleet(moto: &Moto) -> Value {
    moto.boto3(&format!(
        r#"
asg = boto3.client("autoscaling", region_name="eu-west-1")
ec2 = boto3.client("ec2", region_name="eu-west-1")
g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["{GROUP}"])["AutoScalingGroups"][0]
ids = [i["InstanceId"] for i in g["Instances"]]
images = []
if ids:
    for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
        images += [i["ImageId"] for i in r["Instances"] if i["State"]["Name"] != "terminated"]
print(json.dumps({{"version": g["LaunchTemplate"]["Version"], "images": sorted(images), "instances": len(ids)}}))
"#
    ))
}

#[test]
fn publish_roll_replaces_the_fleet_and_a_failed_refresh_is_rolled_back_and_reported() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let (v1, _) = build(&mut t);

    // Without groups for the channel, --roll refuses before anything moves.
    let r = t.run_with(&["publish", "app", "--channel", "prod", "--roll"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("no Auto Scaling groups follow channel `prod` of `app`")
            && r.stderr.contains("[publish.auto_scaling_groups.app]"),
        "{}",
        r.stderr
    );
    let channel = moto.boto3(
        r#"print(json.dumps(boto3.client("ssm", region_name="eu-west-1").get_parameters(Names=["/imagectl/app/prod"])["Parameters"]))"#,
    );
    assert_eq!(channel, serde_json::json!([]), "nothing was published");

    group(&moto, &t, 1);
    let base = fleet(&moto);
    assert_eq!(base["instances"], 3, "{base}");

    // A successful rollout: every instance replaced by one on v1, the group
    // on the template version publishing made the default.
    let r = t.run_with(&["publish", "app", "--channel", "prod", "--roll"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("app-prod eu-west-1: version 2 is the default")
            && r.stdout
                .contains(&format!("rollout {GROUP} eu-west-1: Successful (")),
        "{}",
        r.stdout
    );
    assert!(
        r.stderr
            .contains(&format!("rollout: {GROUP} (eu-west-1): InProgress")),
        "progress on stderr:\n{}",
        r.stderr
    );
    let after = fleet(&moto);
    assert_eq!(after["version"], "2", "{after}");
    assert_eq!(after["images"], serde_json::json!([v1, v1, v1]), "{after}");
    let status = t.ok_with(&["rollout", "status", "app"]);
    assert!(
        status.contains(GROUP) && status.contains("Successful") && status.contains("100%"),
        "{status}"
    );

    // A bad image: the first new instance is marked unhealthy (as the agent
    // does after a failed boot) while it warms up. Auto Scaling rolls the
    // group back; imagectl names the group and reason and exits 1.
    settings(&t, 10);
    change(&t, 1);
    let (v2, _) = build(&mut t);
    let (run, marked) = std::thread::scope(|s| {
        let marker = s.spawn(|| {
            moto.boto3(&format!(
                r#"
import time
asg = boto3.client("autoscaling", region_name="eu-west-1")
ec2 = boto3.client("ec2", region_name="eu-west-1")
deadline = time.time() + 120
while time.time() < deadline:
    g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=["{GROUP}"])["AutoScalingGroups"][0]
    ids = [i["InstanceId"] for i in g["Instances"] if i["LifecycleState"] == "InService"]
    new = []
    if ids:
        for r in ec2.describe_instances(InstanceIds=ids)["Reservations"]:
            new += [i["InstanceId"] for i in r["Instances"] if i["ImageId"] == "{v2}"]
    if new:
        asg.set_instance_health(InstanceId=new[0], HealthStatus="Unhealthy", ShouldRespectGracePeriod=False)
        print(json.dumps(new[0]))
        break
    time.sleep(0.2)
"#
            ))
        });
        let run = t.run_with(&["publish", "app", "--channel", "prod", "--roll"]);
        (run, marker.join().unwrap())
    });
    let bad = marked
        .as_str()
        .expect("a new instance was marked unhealthy");
    assert_eq!(run.status, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "of `{GROUP}` in `eu-west-1` ended `RollbackSuccessful`"
        )) && run.stderr.contains(bad)
            && run.stderr.contains("imagectl rollback app --channel prod"),
        "{}",
        run.stderr
    );
    // The group is back on version 2 (v1) with instances on v1 only; the
    // channel and the template's default stay on v2, as documented.
    let back = fleet(&moto);
    assert_eq!(back["version"], "2", "{back}");
    assert_eq!(back["images"], serde_json::json!([v1, v1, v1]), "{back}");
    let channel = moto.boto3(
        r#"print(json.dumps(boto3.client("ssm", region_name="eu-west-1").get_parameter(Name="/imagectl/app/prod")["Parameter"]["Value"]))"#,
    );
    assert_eq!(channel, v2.as_str());

    let status = t.ok_with(&["rollout", "status", "app"]);
    assert!(
        status.contains("RollbackSuccessful") && status.contains(bad),
        "{status}"
    );
    let v: Value =
        serde_json::from_str(&t.ok_with(&["rollout", "status", "app", "--output", "json"]))
            .unwrap();
    assert_eq!(v[0]["group"], GROUP, "{v}");
    assert_eq!(v[0]["refresh"]["status"], "RollbackSuccessful", "{v}");

    // `rollout` by itself refreshes to what the channel holds: v2 again.
    settings(&t, 1);
    let out = t.ok_with(&["rollout", "app", "--channel", "prod"]);
    assert!(out.contains("Successful"), "{out}");
    let again = fleet(&moto);
    assert_eq!(again["version"], "3", "{again}");
    assert_eq!(again["images"], serde_json::json!([v2, v2, v2]), "{again}");
}

#[test]
fn doctor_checks_the_groups_a_channel_feeds() {
    let moto = Moto::start();
    let mut t = project(&moto);
    settings(&t, 1);
    let problems = |r: &crate::support::Run| -> Vec<String> {
        r.stdout
            .lines()
            .filter(|l| !l.starts_with("ok: "))
            .map(String::from)
            .collect()
    };
    // Configured, but nowhere.
    let r = t.run_with(&["doctor"]);
    assert_eq!(r.status, 2, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        problems(&r),
        [format!("missing: Auto Scaling group {GROUP} (app prod) — create it in one of eu-west-1, eu-central-1 (docs/rollout.md#the-terraform-side) or remove it from [publish.auto_scaling_groups.app]")]
    );
    // There, on `$Default` and untagged: two warnings, one at a time.
    moto.boto3(&format!(
        r#"
boto3.client("autoscaling", region_name="eu-west-1").create_auto_scaling_group(
    AutoScalingGroupName="{GROUP}",
    LaunchTemplate={{"LaunchTemplateName": "app-prod", "Version": "$Default"}},
    MinSize=1, MaxSize=1, DesiredCapacity=1, AvailabilityZones=["eu-west-1a"],
)
"#
    ));
    let r = t.run_with(&["doctor"]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(
        problems(&r),
        [format!("warn: Auto Scaling group {GROUP} (app prod) in eu-west-1: it is not tagged `imagectl:role = app` — tag it: the instance policy (`imagectl iam-policy instance app`) lets agents report only to groups of their role")]
    );
    moto.boto3(&format!(
        r#"
boto3.client("autoscaling", region_name="eu-west-1").create_or_update_tags(Tags=[{{"ResourceId": "{GROUP}", "ResourceType": "auto-scaling-group", "Key": "imagectl:role", "Value": "app", "PropagateAtLaunch": True}}])
"#
    ));
    let r = t.run_with(&["doctor"]);
    assert_eq!(
        problems(&r),
        [format!("warn: Auto Scaling group {GROUP} (app prod) in eu-west-1: it launches app-prod version `$Default` — its refreshes cannot roll back by themselves; launch a numbered version (docs/rollout.md#the-terraform-side)")]
    );
    moto.boto3(&format!(
        r#"
boto3.client("autoscaling", region_name="eu-west-1").update_auto_scaling_group(AutoScalingGroupName="{GROUP}", LaunchTemplate={{"LaunchTemplateName": "app-prod", "Version": "1"}})
"#
    ));
    let r = t.run_with(&["doctor"]);
    assert_eq!(problems(&r), Vec::<String>::new(), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("ok: Auto Scaling group {GROUP} (app prod) in eu-west-1: 1 instance, template app-prod version 1")),
        "{}",
        r.stdout
    );
}
