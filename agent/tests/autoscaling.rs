//! `imagectl-agent boot` telling EC2 Auto Scaling how the boot went: the
//! real binary against moto (`tests/moto_server.py`), with an Auto Scaling
//! group of one instance made by boto3, and the test IMDSv2 server serving
//! that instance's ID (and, when a test asks, its tags). What the agent
//! told is read back from moto with boto3.

mod common;

use std::process::Output;

use common::*;
use imagectl_agent::config::{Boot, OnFailure};
use serde_json::{json, Value};

const GROUP: &str = "web-asg";
const HOOK: &str = "launch";

/// An image whose health check passes or fails (within 1 s), with the
/// role's Auto Scaling keys. No parameter path unless `parameters`: the
/// Auto Scaling client then loads the AWS configuration itself.
fn image(healthy: bool, hook: Option<&str>, on_failure: OnFailure, parameters: bool) -> Image {
    Image::new(
        Boot {
            parameters: parameters.then(|| "/learn/{{env}}/{{role}}".to_string()),
            start: vec![],
            templates: vec![template(
                "templates/a.conf.hbs",
                "/etc/learn/a.conf",
                "0644",
                "root",
            )],
            health: health_command(if healthy { "true" } else { "false" }, 1),
            lifecycle_hook: hook.map(str::to_string),
            on_failure,
        },
        &[("templates/a.conf.hbs", "instance={{instance.id}}\n")],
    )
}

/// The test IMDS for `instance`, with instance metadata tags when `tags`.
fn imds_for(instance: &str, tags: Option<&[(&str, &str)]>) -> Server {
    imds(ImdsBehaviour {
        user_data: Some("env = \"prod\"\n".to_string()),
        instance_id: Some(instance.to_string()),
        tags: tags.map(|t| {
            t.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..Default::default()
    })
}

fn boot(image: &Image, imds: &Server, aws: &str, args: &[&str]) -> (Output, Value) {
    let mut all = vec!["boot"];
    all.extend(args);
    let out = image
        .agent(&all, Some(&imds.url()), Some(aws))
        .output()
        .unwrap();
    let report = image.report();
    (out, report)
}

fn health_of(moto: &Moto, instance: &str) -> String {
    let found = moto.auto_scaling_instance(instance);
    // moto keeps the case it was given (`Unhealthy`); AWS answers
    // `UNHEALTHY`.
    found["HealthStatus"]
        .as_str()
        .unwrap_or_else(|| panic!("{instance} is in no group: {found}"))
        .to_uppercase()
}

fn last_step(report: &Value) -> (String, String) {
    let s = report["steps"].as_array().unwrap().last().unwrap();
    (
        s["name"].as_str().unwrap().to_string(),
        s["status"].as_str().unwrap().to_string(),
    )
}

fn step(name: &str, status: &str) -> (String, String) {
    (name.to_string(), status.to_string())
}

fn expect_exit(out: &Output, code: i32) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "{err}");
    err
}

#[test]
fn a_failed_health_check_marks_the_instance_unhealthy_and_exits_1() {
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, None);
    assert_eq!(health_of(&moto, &instance), "HEALTHY");
    let imds = imds_for(&instance, None);
    let image = image(false, None, OnFailure::Replace, false);

    let (out, report) = boot(&image, &imds, &moto.url, &[]);
    let err = expect_exit(&out, 1);
    assert_eq!(health_of(&moto, &instance), "UNHEALTHY");
    assert_eq!(report["status"], "failed");
    // The boot's own failure is the one reported.
    assert_eq!(report["failed_step"], "health");
    assert!(
        err.contains("imagectl-agent: error: boot failed at step `health`: not healthy within 1s"),
        "{err}"
    );
    assert_eq!(report["instance"], instance.as_str());
    assert_eq!(last_step(&report), step("autoscaling", "ok"));
    assert_eq!(
        report["autoscaling"],
        json!({
            "group": GROUP,
            "found_by": "DescribeAutoScalingInstances",
            "lifecycle_hook": null,
            "on_failure": "replace",
            "told": ["SetInstanceHealth Unhealthy"],
            "outcome": "the boot failed: marked unhealthy, so that Auto Scaling replaces the instance",
            "errors": [],
        })
    );
    assert!(
        err.contains(&format!(
            "imagectl-agent: autoscaling: instance metadata tags are not enabled; asking DescribeAutoScalingInstances\n\
             imagectl-agent: autoscaling: in group `{GROUP}` (from DescribeAutoScalingInstances)\n\
             imagectl-agent: autoscaling: told SetInstanceHealth Unhealthy\n\
             imagectl-agent: step autoscaling: ok ("
        )),
        "{err}"
    );
}

#[test]
fn a_healthy_boot_leaves_the_instance_healthy_and_exits_0() {
    let moto = Moto::start();
    moto.put_parameters(&[("/learn/prod/worker/a".to_string(), "1".to_string())]);
    let instance = moto.auto_scaling_group(GROUP, None);
    let imds = imds_for(&instance, None);
    // With a parameter path: SSM and Auto Scaling share one configuration.
    let image = image(true, None, OnFailure::Replace, true);

    let (out, report) = boot(&image, &imds, &moto.url, &[]);
    expect_exit(&out, 0);
    assert_eq!(health_of(&moto, &instance), "HEALTHY");
    assert_eq!(report["status"], "ok");
    assert_eq!(report["parameters"], 1);
    assert_eq!(last_step(&report), step("autoscaling", "ok"));
    assert_eq!(report["autoscaling"]["group"], GROUP);
    assert_eq!(report["autoscaling"]["told"], json!([]));
    assert_eq!(
        report["autoscaling"]["outcome"],
        "healthy, no lifecycle hook: nothing to tell"
    );
    assert_eq!(
        image.read("/etc/learn/a.conf"),
        format!("instance={instance}\n")
    );
}

#[test]
fn an_instance_in_no_group_boots_as_before() {
    let moto = Moto::start();
    // A group exists, but not with this instance.
    moto.auto_scaling_group(GROUP, None);
    let imds = imds_for(INSTANCE_ID, None);
    let no_group = json!({
        "group": null,
        "found_by": "DescribeAutoScalingInstances",
        "lifecycle_hook": null,
        "on_failure": "replace",
        "told": [],
        "outcome": "not in an Auto Scaling group: nothing to tell",
        "errors": [],
    });

    let healthy = image(true, None, OnFailure::Replace, false);
    let (out, report) = boot(&healthy, &imds, &moto.url, &[]);
    let err = expect_exit(&out, 0);
    assert_eq!(report["status"], "ok");
    assert_eq!(report["autoscaling"], no_group);
    assert!(
        err.contains(
            "autoscaling: not in an Auto Scaling group (from DescribeAutoScalingInstances)"
        ),
        "{err}"
    );

    // A failed boot outside any group: nothing to tell either.
    let failing = image(false, None, OnFailure::Replace, false);
    let (out, report) = boot(&failing, &imds, &moto.url, &[]);
    expect_exit(&out, 1);
    assert_eq!(report["failed_step"], "health");
    assert_eq!(report["autoscaling"], no_group);
}

#[test]
fn on_failure_stay_tells_auto_scaling_nothing() {
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, None);
    let imds = imds_for(&instance, None);
    let image = image(false, None, OnFailure::Stay, false);

    let (out, report) = boot(&image, &imds, &moto.url, &[]);
    let err = expect_exit(&out, 1);
    assert_eq!(health_of(&moto, &instance), "HEALTHY");
    assert_eq!(report["failed_step"], "health");
    let outcome = "the boot failed and `on_failure` is `stay`: Auto Scaling was told nothing and the instance is left alone for debugging";
    assert_eq!(
        report["autoscaling"],
        json!({
            "group": GROUP,
            "found_by": "DescribeAutoScalingInstances",
            "lifecycle_hook": null,
            "on_failure": "stay",
            "told": [],
            "outcome": outcome,
            "errors": [],
        })
    );
    assert!(err.contains(&format!("autoscaling: {outcome}\n")), "{err}");
}

/// A proxy in front of moto that fails nothing and logs each action.
fn logging_proxy(moto: &Moto) -> FaultProxy {
    FaultProxy::start(&moto.url, &["--actions", "NoActionIsFaulted"])
}

#[test]
fn the_group_is_found_through_instance_metadata_tags_without_an_api_call() {
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, None);
    let proxy = logging_proxy(&moto);
    let tags = [
        ("Name", "web"),
        ("aws:autoscaling:groupName", GROUP),
        ("aws:ec2launchtemplate:id", "lt-0123"),
    ];
    let imds = imds_for(&instance, Some(&tags));
    let image = image(false, None, OnFailure::Replace, false);

    let (out, report) = boot(&image, &imds, &proxy.url, &[]);
    let err = expect_exit(&out, 1);
    assert_eq!(health_of(&moto, &instance), "UNHEALTHY");
    assert_eq!(report["autoscaling"]["group"], GROUP);
    assert_eq!(report["autoscaling"]["found_by"], "instance metadata tags");
    assert_eq!(
        report["autoscaling"]["told"],
        json!(["SetInstanceHealth Unhealthy"])
    );
    assert!(
        err.contains(&format!(
            "autoscaling: in group `{GROUP}` (from instance metadata tags)"
        )),
        "{err}"
    );
    // The only call to AWS: no DescribeAutoScalingInstances.
    assert_eq!(proxy.requests(), ["SetInstanceHealth pass"]);
    let log = imds.log.lock().unwrap().clone();
    assert!(
        log.contains(&"GET /latest/meta-data/tags/instance token=true".to_string())
            && log.contains(
                &"GET /latest/meta-data/tags/instance/aws:autoscaling:groupName token=true"
                    .to_string()
            ),
        "{log:?}"
    );
}

#[test]
fn tags_without_the_group_tag_mean_no_group_and_no_api_call() {
    let moto = Moto::start();
    let proxy = logging_proxy(&moto);
    let imds = imds_for(INSTANCE_ID, Some(&[("Name", "standalone")]));
    let image = image(false, None, OnFailure::Replace, false);

    let (out, report) = boot(&image, &imds, &proxy.url, &[]);
    expect_exit(&out, 1);
    assert_eq!(report["autoscaling"]["group"], Value::Null);
    assert_eq!(report["autoscaling"]["found_by"], "instance metadata tags");
    assert_eq!(
        report["autoscaling"]["outcome"],
        "not in an Auto Scaling group: nothing to tell"
    );
    assert_eq!(proxy.requests(), Vec::<String>::new());
}

/// An Auto Scaling endpoint in front of moto that answers `action` with
/// AccessDenied, as AWS does when the instance profile lacks it, and
/// passes everything else on.
fn denying(moto: &Moto, action: &'static str) -> Server {
    let port = moto.port;
    Server::start(move |req, _| {
        let body = String::from_utf8_lossy(&req.body);
        if body.split('&').any(|kv| kv == format!("Action={action}")) {
            let xml = format!(
                "<ErrorResponse xmlns=\"http://autoscaling.amazonaws.com/doc/2011-01-01/\"><Error><Type>Sender</Type>\
                 <Code>AccessDenied</Code><Message>User: arn:aws:sts::123456789012:assumed-role/web/i-0 is not authorized to perform: autoscaling:{action}</Message>\
                 </Error><RequestId>denied</RequestId></ErrorResponse>"
            );
            return (
                "403 Forbidden".to_string(),
                vec![("Content-Type".to_string(), "text/xml".to_string())],
                xml.into_bytes(),
            );
        }
        forward(port, req)
    })
}

#[test]
fn a_lookup_denied_after_a_healthy_boot_is_a_warning() {
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, None);
    let endpoint = denying(&moto, "DescribeAutoScalingInstances");
    let imds = imds_for(&instance, None);
    let image = image(true, None, OnFailure::Replace, false);

    let (out, report) = boot(&image, &imds, &endpoint.url(), &[]);
    let err = expect_exit(&out, 0);
    assert_eq!(report["status"], "ok");
    assert_eq!(report["failed_step"], Value::Null);
    assert_eq!(last_step(&report), step("autoscaling", "ok"));
    let denied =
        "cannot find the Auto Scaling group: EC2 Auto Scaling DescribeAutoScalingInstances \
                  for instance `ID` failed after up to 5 attempts: AccessDenied: User: \
                  arn:aws:sts::123456789012:assumed-role/web/i-0 is not authorized to perform: \
                  autoscaling:DescribeAutoScalingInstances; the instance profile's role needs \
                  `autoscaling:DescribeAutoScalingInstances` (see agent/README.md)"
            .replace("ID", &instance);
    assert_eq!(report["autoscaling"]["errors"], json!([denied]));
    assert_eq!(report["autoscaling"]["group"], Value::Null);
    assert!(
        err.contains(&format!("imagectl-agent: autoscaling: warning: {denied}\n")),
        "{err}"
    );
    // Not retried: AccessDenied is not transient.
    assert_eq!(endpoint.hits(), 1);
}

#[test]
fn a_lookup_denied_after_a_failed_boot_still_marks_the_instance_unhealthy() {
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, None);
    let endpoint = denying(&moto, "DescribeAutoScalingInstances");
    let imds = imds_for(&instance, None);
    let image = image(false, None, OnFailure::Replace, false);

    let (out, report) = boot(&image, &imds, &endpoint.url(), &[]);
    let err = expect_exit(&out, 1);
    assert_eq!(report["failed_step"], "health");
    assert_eq!(health_of(&moto, &instance), "UNHEALTHY");
    assert_eq!(
        report["autoscaling"]["told"],
        json!(["SetInstanceHealth Unhealthy"])
    );
    assert_eq!(report["autoscaling"]["errors"].as_array().unwrap().len(), 1);
    assert!(
        err.contains("autoscaling: error: cannot find the Auto Scaling group"),
        "{err}"
    );
}

#[test]
fn a_failed_boot_past_the_deadline_still_tells_auto_scaling() {
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, None);
    let imds = imds_for(&instance, None);
    let failing = image(true, None, OnFailure::Replace, false);
    // A unit whose start outlasts the 1 s deadline: the boot fails with
    // the deadline passed, and the step still gets its own 20 s.
    let config_path = failing.path("/etc/imagectl/image.json");
    let mut config: imagectl_agent::config::ImageConfig =
        serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config.boot.start = vec!["slow.service".to_string()];
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    std::fs::write(
        failing.root().join("systemctl"),
        "#!/bin/sh\nsleep 2\nexit 0\n",
    )
    .unwrap();

    let started = std::time::Instant::now();
    let (out, report) = boot(&failing, &imds, &moto.url, &["--deadline", "1"]);
    expect_exit(&out, 1);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert_eq!(report["failed_step"], "health");
    assert_eq!(
        report["error"],
        "the boot deadline (1s) passed during step `health`"
    );
    assert_eq!(health_of(&moto, &instance), "UNHEALTHY");
    assert_eq!(last_step(&report), step("autoscaling", "ok"));
    assert_eq!(
        report["autoscaling"]["told"],
        json!(["SetInstanceHealth Unhealthy"])
    );
}

// The lifecycle hook. moto 5.2 has no CompleteLifecycleAction and no
// `Pending:Wait`: tests/moto_server.py adds both.

fn lifecycle_state(moto: &Moto, instance: &str) -> Value {
    moto.auto_scaling_instance(instance)["LifecycleState"].clone()
}

#[test]
fn a_healthy_boot_continues_the_lifecycle_hook() {
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, Some(HOOK));
    assert_eq!(lifecycle_state(&moto, &instance), "Pending:Wait");
    let imds = imds_for(&instance, None);
    let image = image(true, Some(HOOK), OnFailure::Replace, false);

    let (out, report) = boot(&image, &imds, &moto.url, &[]);
    let err = expect_exit(&out, 0);
    assert_eq!(report["status"], "ok");
    assert_eq!(
        report["autoscaling"],
        json!({
            "group": GROUP,
            "found_by": "DescribeAutoScalingInstances",
            "lifecycle_hook": HOOK,
            "on_failure": "replace",
            "told": ["CompleteLifecycleAction CONTINUE"],
            "outcome": "healthy: lifecycle hook `launch` continued",
            "errors": [],
        })
    );
    assert!(
        err.contains("autoscaling: told CompleteLifecycleAction CONTINUE\n"),
        "{err}"
    );
    assert_eq!(lifecycle_state(&moto, &instance), "InService");
    assert_eq!(health_of(&moto, &instance), "HEALTHY");
}

#[test]
fn a_failed_boot_abandons_the_lifecycle_hook() {
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, Some(HOOK));
    assert_eq!(lifecycle_state(&moto, &instance), "Pending:Wait");
    let imds = imds_for(&instance, None);
    let image = image(false, Some(HOOK), OnFailure::Replace, false);

    let (out, report) = boot(&image, &imds, &moto.url, &[]);
    expect_exit(&out, 1);
    assert_eq!(report["failed_step"], "health");
    assert_eq!(
        report["autoscaling"]["told"],
        json!([
            "SetInstanceHealth Unhealthy",
            "CompleteLifecycleAction ABANDON"
        ]),
        "{report}"
    );
    assert_eq!(report["autoscaling"]["errors"], json!([]));
    // Abandoned: out of the group (terminated), and a replacement waits
    // on the hook in its place.
    assert_eq!(moto.auto_scaling_instance(&instance), Value::Null);
    let group = moto.python(
        "import boto3, json, os, sys\n\
         asg = boto3.client('autoscaling', endpoint_url=os.environ['MOTO_URL'])\n\
         g = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[sys.argv[1]])['AutoScalingGroups'][0]\n\
         print(json.dumps([i['InstanceId'] for i in g['Instances']]))\n",
        &[GROUP],
    );
    let others = group.as_array().unwrap();
    assert_eq!(others.len(), 1, "{group}");
    assert_ne!(others[0], instance.as_str());
}

#[test]
fn on_failure_stay_leaves_the_lifecycle_hook_to_time_out() {
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, Some(HOOK));
    let proxy = logging_proxy(&moto);
    let imds = imds_for(&instance, None);
    let image = image(false, Some(HOOK), OnFailure::Stay, false);

    let (out, report) = boot(&image, &imds, &proxy.url, &[]);
    expect_exit(&out, 1);
    assert_eq!(report["autoscaling"]["told"], json!([]));
    assert!(
        report["autoscaling"]["outcome"]
            .as_str()
            .unwrap()
            .ends_with("lifecycle hook `launch` times out with its default result"),
        "{report}"
    );
    assert_eq!(proxy.requests(), ["DescribeAutoScalingInstances pass"]);
    assert_eq!(health_of(&moto, &instance), "HEALTHY");
    assert_eq!(lifecycle_state(&moto, &instance), "Pending:Wait");
}

#[test]
fn a_hook_that_cannot_be_completed_fails_a_healthy_boot_without_marking_it_unhealthy() {
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, Some(HOOK));
    let endpoint = denying(&moto, "CompleteLifecycleAction");
    let imds = imds_for(&instance, None);
    let image = image(true, Some(HOOK), OnFailure::Replace, false);

    let (out, report) = boot(&image, &imds, &endpoint.url(), &[]);
    let err = expect_exit(&out, 1);
    assert_eq!(report["status"], "failed");
    assert_eq!(report["failed_step"], "autoscaling");
    assert_eq!(last_step(&report), step("autoscaling", "failed"));
    let error = format!(
        "EC2 Auto Scaling CompleteLifecycleAction CONTINUE for instance `{instance}` (group `{GROUP}`, hook `{HOOK}`) \
         failed after up to 5 attempts: AccessDenied: User: arn:aws:sts::123456789012:assumed-role/web/i-0 is not \
         authorized to perform: autoscaling:CompleteLifecycleAction; the instance profile's role needs \
         `autoscaling:CompleteLifecycleAction` (see agent/README.md)"
    );
    assert_eq!(report["error"], error.as_str());
    assert!(
        err.contains(&format!(
            "imagectl-agent: error: boot failed at step `autoscaling`: {error}\n"
        )),
        "{err}"
    );
    assert_eq!(report["autoscaling"]["told"], json!([]));
    assert_eq!(report["autoscaling"]["errors"], json!([error]));
    // Only reported: the instance is not marked unhealthy on top.
    assert_eq!(health_of(&moto, &instance), "HEALTHY");
    assert_eq!(lifecycle_state(&moto, &instance), "Pending:Wait");
}

#[test]
fn a_lookup_denied_after_a_healthy_boot_with_a_hook_fails_the_boot() {
    // Without the group's name the hook cannot be continued: the instance
    // would be abandoned when it times out, as after a refused CONTINUE.
    let moto = Moto::start();
    let instance = moto.auto_scaling_group(GROUP, Some(HOOK));
    let endpoint = denying(&moto, "DescribeAutoScalingInstances");
    let imds = imds_for(&instance, None);
    let image = image(true, Some(HOOK), OnFailure::Replace, false);

    let (out, report) = boot(&image, &imds, &endpoint.url(), &[]);
    let err = expect_exit(&out, 1);
    assert_eq!(report["failed_step"], "autoscaling");
    let error = format!(
        "cannot complete lifecycle hook `{HOOK}`: the instance's Auto Scaling group is not known (the lookup failed)"
    );
    assert_eq!(report["error"], error.as_str());
    assert!(
        err.contains("imagectl-agent: autoscaling: error: cannot find the Auto Scaling group: "),
        "{err}"
    );
    let errors = report["autoscaling"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{report}");
    assert_eq!(errors[1], error.as_str());
    assert_eq!(report["autoscaling"]["told"], json!([]));
    assert_eq!(health_of(&moto, &instance), "HEALTHY");
    assert_eq!(lifecycle_state(&moto, &instance), "Pending:Wait");
}
