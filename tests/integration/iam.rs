//! Least privilege, probed with IAM's own rules. moto enforces actions only
//! (`aws::the_printed_iam_policies_are_enough_for_each_job` shows they
//! suffice); here every policy `imagectl iam-policy` prints is evaluated by
//! `tests/iam_eval.py` (explicit deny wins, wildcards, condition operators,
//! missing keys) against requests with the context AWS gives them: the
//! calls each job really makes must be allowed, and what it must not be
//! able to do must be denied. Every condition key is checked against the
//! Service Authorization Reference, and cloudsplaining finds nothing.

use std::process::Command;

use serde_json::{json, Value};

use crate::moto::python;
use crate::support::{repo_root, Test};

const ACCOUNT: &str = "111122223333";
const HOME: &str = "eu-west-1";
const BUILD_TAG: &str = "imagectl:build";
const ROLE_TAG: &str = "imagectl:role";

/// A request: one action on resources, each with its own context, and the
/// context of the whole request.
struct Probe {
    name: String,
    action: &'static str,
    resources: Vec<(String, Value)>,
    context: Value,
    expect: &'static str,
}

fn probe(name: &str, action: &'static str, expect: &'static str) -> Probe {
    Probe {
        name: name.to_string(),
        action,
        resources: Vec::new(),
        context: json!({"ec2:Region": HOME}),
        expect,
    }
}

impl Probe {
    fn on(mut self, arn: impl Into<String>, context: Value) -> Probe {
        self.resources.push((arn.into(), context));
        self
    }

    fn with(mut self, context: Value) -> Probe {
        for (k, v) in context.as_object().unwrap() {
            self.context[k] = v.clone();
        }
        self
    }

    fn json(&self) -> Value {
        json!({
            "name": self.name,
            "action": self.action,
            "resources": self.resources.iter().map(|(arn, c)| json!({"arn": arn, "context": c})).collect::<Vec<_>>(),
            "context": self.context,
            "expect": self.expect,
        })
    }
}

fn ec2(kind: &str, id: &str) -> String {
    match kind {
        "image" | "snapshot" => format!("arn:aws:ec2:{HOME}::{kind}/{id}"),
        _ => format!("arn:aws:ec2:{HOME}:{ACCOUNT}:{kind}/{id}"),
    }
}

fn parameter(name: &str) -> String {
    format!("arn:aws:ssm:{HOME}:{ACCOUNT}:parameter{name}")
}

fn printed(t: &mut Test, args: &[&str]) -> Value {
    let mut all = vec!["iam-policy"];
    all.extend(args);
    serde_json::from_str(&t.ok_with(&all)).unwrap()
}

/// Evaluates `probes` against `policy`; panics naming every probe decided
/// otherwise and every condition key no action of its statement has.
fn check(what: &str, policy: &Value, probes: &[Probe]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    let spec =
        json!({"policy": policy, "probes": probes.iter().map(Probe::json).collect::<Vec<_>>()});
    std::fs::write(file.path(), spec.to_string()).unwrap();
    let out = Command::new(python())
        .arg(repo_root().join("tests/iam_eval.py"))
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["probes"], probes.len());
    assert_eq!(
        (&report["wrong"], &report["invalid_keys"]),
        (&json!([]), &json!([])),
        "{what}: {policy:#}"
    );
}

/// A build instance launch as current Packer sends it, with `changes` to
/// the context of the resource of `kind`.
fn launch(name: &str, expect: &'static str, kind: &str, changes: Value) -> Probe {
    let build = json!({format!("aws:RequestTag/{BUILD_TAG}"): "0123456789ab-20261126080000", format!("aws:RequestTag/{ROLE_TAG}"): "app"});
    let mut contexts = vec![
        ("instance", "*", {
            let mut c = build.clone();
            c["ec2:MetadataHttpTokens"] = json!("required");
            c["ec2:InstanceProfile"] = json!(format!(
                "arn:aws:iam::{ACCOUNT}:instance-profile/imagectl-build"
            ));
            c
        }),
        ("volume", "*", {
            let mut c = build.clone();
            c["ec2:Encrypted"] = json!("true");
            c
        }),
        (
            "subnet",
            "subnet-1",
            json!({"ec2:ResourceTag/Name": "imagectl-build-private"}),
        ),
        (
            "security-group",
            "sg-1",
            json!({"ec2:ResourceTag/Name": "imagectl-build"}),
        ),
        (
            "network-interface",
            "*",
            json!({"ec2:AssociatePublicIpAddress": "false"}),
        ),
        (
            "key-pair",
            "imagectl-app-0123456789ab-20261126080000",
            json!({}),
        ),
        ("image", "ami-debian", json!({"ec2:Owner": "136693071363"})),
    ];
    for (k, _, c) in contexts.iter_mut() {
        if *k == kind {
            for (key, v) in changes.as_object().unwrap() {
                if v.is_null() {
                    c.as_object_mut().unwrap().remove(key);
                } else {
                    c[key] = v.clone();
                }
            }
        }
    }
    let mut p = probe(name, "ec2:RunInstances", expect);
    for (k, id, c) in contexts {
        p = p.on(ec2(k, id), c);
    }
    p
}

fn build_probes() -> Vec<Probe> {
    let tagged = json!({format!("ec2:ResourceTag/{ROLE_TAG}"): "app", format!("ec2:ResourceTag/{BUILD_TAG}"): "0123456789ab-20261126080000"});
    let requested = json!({format!("aws:RequestTag/{ROLE_TAG}"): "app"});
    let via_ec2 = json!({"kms:ViaService": "ec2.eu-west-1.amazonaws.com", "kms:ResourceAliases": ["alias/imagectl-images"]});
    let key = format!("arn:aws:kms:{HOME}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab");
    vec![
        // What a build does.
        launch("launch a build instance as Packer does", "allow", "", json!({})),
        probe("image the build instance", "ec2:CreateImage", "allow")
            .on(ec2("instance", "i-build"), tagged.clone())
            .on(ec2("image", "*"), requested.clone())
            .on(ec2("snapshot", "*"), requested.clone()),
        probe("tag what is created with the role's tags", "ec2:CreateTags", "allow")
            .on(ec2("image", "ami-new"), json!({}))
            .with(json!({"ec2:CreateAction": "CreateImage", format!("aws:RequestTag/{ROLE_TAG}"): "app"})),
        probe("copy an imagectl image, tagged as it is made", "ec2:CopyImage", "allow")
            .on(ec2("image", "ami-home"), tagged.clone())
            .on(ec2("image", "*"), requested.clone())
            .on(ec2("snapshot", "*"), requested.clone()),
        probe("share and require IMDSv2 on an imagectl image", "ec2:ModifyImageAttribute", "allow")
            .on(ec2("image", "ami-home"), tagged.clone()),
        probe("share an imagectl snapshot", "ec2:ModifySnapshotAttribute", "allow")
            .on(ec2("snapshot", "snap-home"), tagged.clone()),
        probe("complete the tags of an imagectl image", "ec2:CreateTags", "allow")
            .on(ec2("image", "ami-home"), tagged.clone()),
        probe("stop and terminate the build instance", "ec2:TerminateInstances", "allow")
            .on(ec2("instance", "i-build"), tagged.clone()),
        probe("Session Manager to the build instance", "ssm:StartSession", "allow")
            .on(ec2("instance", "i-build"), json!({format!("ssm:resourceTag/{BUILD_TAG}"): "x"}))
            .on(format!("arn:aws:ssm:{HOME}::document/AWS-StartPortForwardingSession"), json!({"ssm:SessionDocumentAccessCheck": "true"})),
        probe("pass the build role to EC2", "iam:PassRole", "allow")
            .on(format!("arn:aws:iam::{ACCOUNT}:role/imagectl-build"), json!({"iam:PassedToService": "ec2.amazonaws.com"})),
        probe("EC2 makes a grant on the images' key", "kms:CreateGrant", "allow")
            .on(key.clone(), json!({"kms:GrantIsForAWSResource": "true"}))
            .with(via_ec2.clone()),
        probe("EC2 decrypts with the images' key", "kms:Decrypt", "allow")
            .on(key.clone(), json!({}))
            .with(via_ec2.clone()),
        probe("record the build's inputs", "ssm:PutParameter", "allow")
            .on(parameter("/imagectl/app/inputs/0123"), json!({})),
        // The preflight, before a bake.
        probe("the preflight describes the images' key", "kms:DescribeKey", "allow")
            .on(key.clone(), json!({"kms:ResourceAliases": ["alias/imagectl-images"]})),
        probe("the preflight reaches SSM at the prefix", "ssm:GetParametersByPath", "allow")
            .on(parameter("/imagectl"), json!({})),
        probe("the preflight reads image block public access", "ec2:GetImageBlockPublicAccessState", "allow")
            .on("*", json!({})),
        probe("the preflight reads the build instance profile", "iam:GetInstanceProfile", "allow")
            .on(format!("arn:aws:iam::{ACCOUNT}:instance-profile/imagectl-build"), json!({})),
        // What it must not do.
        probe("image a production instance", "ec2:CreateImage", "deny")
            .on(ec2("instance", "i-prod"), json!({"ec2:ResourceTag/Name": "learn-web-prod"}))
            .on(ec2("image", "*"), requested.clone())
            .on(ec2("snapshot", "*"), requested.clone()),
        probe("tag a production instance as a build", "ec2:CreateTags", "deny")
            .on(ec2("instance", "i-prod"), json!({}))
            .with(json!({format!("aws:RequestTag/{BUILD_TAG}"): "x", format!("aws:RequestTag/{ROLE_TAG}"): "app"})),
        probe("copy an image imagectl did not make", "ec2:CopyImage", "deny")
            .on(ec2("image", "ami-other"), json!({}))
            .on(ec2("image", "*"), requested.clone()),
        probe("share an image imagectl did not make", "ec2:ModifyImageAttribute", "deny")
            .on(ec2("image", "ami-other"), json!({})),
        probe("snapshot a production volume", "ec2:CreateSnapshot", "deny")
            .on(ec2("volume", "vol-prod"), json!({}))
            .on(ec2("snapshot", "*"), requested.clone()),
        probe("make a volume", "ec2:CreateVolume", "deny").on(ec2("volume", "*"), requested.clone()),
        probe("register an image", "ec2:RegisterImage", "deny")
            .on(ec2("image", "*"), requested.clone())
            .on(ec2("snapshot", "snap-prod"), json!({})),
        launch("launch with a public IP", "deny", "network-interface", json!({"ec2:AssociatePublicIpAddress": "true"})),
        launch("launch with IMDSv1", "deny", "instance", json!({"ec2:MetadataHttpTokens": "optional"})),
        launch("launch with another instance profile", "deny", "instance", json!({"ec2:InstanceProfile": format!("arn:aws:iam::{ACCOUNT}:instance-profile/admin")})),
        launch("launch without the build tag", "deny", "instance", json!({format!("aws:RequestTag/{BUILD_TAG}"): null})),
        launch("launch into another subnet", "deny", "subnet", json!({"ec2:ResourceTag/Name": "prod-public"})),
        launch("launch with another security group", "deny", "security-group", json!({"ec2:ResourceTag/Name": "default"})),
        launch("launch from anybody's image", "deny", "image", json!({"ec2:Owner": "999988887777"})),
        launch("launch with an unencrypted volume", "deny", "volume", json!({"ec2:Encrypted": "false"})),
        probe("Session Manager to any instance", "ssm:StartSession", "deny")
            .on(ec2("instance", "i-prod"), json!({}))
            .on(format!("arn:aws:ssm:{HOME}::document/AWS-StartPortForwardingSession"), json!({})),
        probe("a shell through Session Manager", "ssm:StartSession", "deny")
            .on(ec2("instance", "i-build"), json!({format!("ssm:resourceTag/{BUILD_TAG}"): "x"}))
            .on(format!("arn:aws:ssm:{HOME}:{ACCOUNT}:document/SSM-SessionManagerRunShell"), json!({})),
        probe("pass the build role to another service", "iam:PassRole", "deny")
            .on(format!("arn:aws:iam::{ACCOUNT}:role/imagectl-build"), json!({"iam:PassedToService": "lambda.amazonaws.com"})),
        probe("pass another role", "iam:PassRole", "deny")
            .on(format!("arn:aws:iam::{ACCOUNT}:role/admin"), json!({"iam:PassedToService": "ec2.amazonaws.com"})),
        probe("a grant on the key not for an AWS resource", "kms:CreateGrant", "deny")
            .on(key.clone(), json!({"kms:GrantIsForAWSResource": "false"}))
            .with(via_ec2.clone()),
        probe("decrypt with the key directly", "kms:Decrypt", "deny")
            .on(key.clone(), json!({"kms:ResourceAliases": ["alias/imagectl-images"]})),
        probe("decrypt with another key", "kms:Decrypt", "deny")
            .on(key.clone(), json!({}))
            .with(json!({"kms:ViaService": "ec2.eu-west-1.amazonaws.com", "kms:ResourceAliases": ["alias/prod-secrets"]})),
        probe("write a channel", "ssm:PutParameter", "deny").on(parameter("/imagectl/app/dev"), json!({})),
        probe("describe another key", "kms:DescribeKey", "deny")
            .on(key, json!({"kms:ResourceAliases": ["alias/prod-secrets"]})),
        probe("read a role's channels by path", "ssm:GetParametersByPath", "deny")
            .on(parameter("/imagectl/app"), json!({})),
        probe("read parameters outside the prefix", "ssm:GetParametersByPath", "deny")
            .on(parameter("/learn/prod/web"), json!({})),
        probe("read another instance profile", "iam:GetInstanceProfile", "deny")
            .on(format!("arn:aws:iam::{ACCOUNT}:instance-profile/admin"), json!({})),
        probe("deregister an image imagectl did not make", "ec2:DeregisterImage", "deny")
            .on(ec2("image", "ami-other"), json!({})),
    ]
}

/// What publishing does to the images of a move: deprecation (and its
/// cancelling) on imagectl's images; deregistration protection too when a
/// protected channel (prod, by default) is writable; never on other images,
/// and never lifting protection (prune's job).
fn lifecycle_probes(protects: bool) -> Vec<Probe> {
    let ours = json!({format!("ec2:ResourceTag/{ROLE_TAG}"): "app"});
    let (protect, other) = (
        "ec2:EnableImageDeregistrationProtection",
        ec2("image", "ami-other"),
    );
    vec![
        probe(
            "deprecate an imagectl image",
            "ec2:EnableImageDeprecation",
            "allow",
        )
        .on(ec2("image", "ami-old"), ours.clone()),
        probe(
            "cancel the deprecation of an imagectl image",
            "ec2:DisableImageDeprecation",
            "allow",
        )
        .on(ec2("image", "ami-old"), ours.clone()),
        probe(
            "protect an imagectl image",
            protect,
            if protects { "allow" } else { "deny" },
        )
        .on(ec2("image", "ami-new"), ours.clone()),
        probe(
            "deprecate an image imagectl did not make",
            "ec2:EnableImageDeprecation",
            "deny",
        )
        .on(other.clone(), json!({})),
        probe(
            "cancel the deprecation of an image imagectl did not make",
            "ec2:DisableImageDeprecation",
            "deny",
        )
        .on(other.clone(), json!({})),
        probe("protect an image imagectl did not make", protect, "deny").on(other, json!({})),
        probe(
            "lift the protection of an imagectl image",
            "ec2:DisableImageDeregistrationProtection",
            "deny",
        )
        .on(ec2("image", "ami-new"), ours),
    ]
}

fn channel_probes(writable: &[&str], all: &[&str]) -> Vec<Probe> {
    let mut out = lifecycle_probes(writable.contains(&"prod"));
    out.extend([
        probe("read every channel", "ssm:GetParameterHistory", "allow")
            .on(parameter("/imagectl/app/prod"), json!({})),
        probe(
            "write a parameter outside the prefix",
            "ssm:PutParameter",
            "deny",
        )
        .on(parameter("/learn/prod/web/db_password"), json!({})),
        probe(
            "move a launch template that follows no channel",
            "ec2:CreateLaunchTemplateVersion",
            "deny",
        )
        .on(ec2("launch-template", "lt-1"), json!({})),
    ]);
    for c in all {
        let expect = if writable.contains(c) {
            "allow"
        } else {
            "deny"
        };
        out.push(
            probe(&format!("write channel {c}"), "ssm:PutParameter", expect)
                .on(parameter(&format!("/imagectl/app/{c}")), json!({})),
        );
        out.push(
            probe(
                &format!("move the launch template of channel {c}"),
                "ec2:CreateLaunchTemplateVersion",
                expect,
            )
            .on(
                ec2("launch-template", "lt-1"),
                json!({"aws:ResourceTag/imagectl:channel": c}),
            ),
        );
    }
    out
}

fn cleanup_probes(tag: &str) -> Vec<Probe> {
    vec![
        probe(
            "deregister an imagectl image",
            "ec2:DeregisterImage",
            "allow",
        )
        .on(
            ec2("image", "ami-old"),
            json!({format!("ec2:ResourceTag/{tag}"): "x"}),
        ),
        probe("delete an imagectl snapshot", "ec2:DeleteSnapshot", "allow").on(
            ec2("snapshot", "snap-old"),
            json!({format!("ec2:ResourceTag/{tag}"): "x"}),
        ),
        probe(
            "deregister an image imagectl did not make",
            "ec2:DeregisterImage",
            "deny",
        )
        .on(ec2("image", "ami-other"), json!({})),
        probe(
            "delete a snapshot imagectl did not make",
            "ec2:DeleteSnapshot",
            "deny",
        )
        .on(ec2("snapshot", "snap-other"), json!({})),
    ]
}

#[test]
fn each_job_can_make_its_calls_and_nothing_it_must_not() {
    let mut t = Test::new();
    check("build", &printed(&mut t, &["build"]), &build_probes());
    let all = ["dev", "staging", "prod"];
    check(
        "publish",
        &printed(&mut t, &["publish"]),
        &channel_probes(&all, &all),
    );
    check(
        "publish --channel dev",
        &printed(&mut t, &["publish", "--channel", "dev"]),
        &channel_probes(&["dev"], &all),
    );
    check(
        "publish --channel dev --channel staging",
        &printed(
            &mut t,
            &["publish", "--channel", "dev", "--channel", "staging"],
        ),
        &channel_probes(&["dev", "staging"], &all),
    );
    let mut prune = cleanup_probes(ROLE_TAG);
    prune.extend([
        probe(
            "lift the protection of an imagectl image",
            "ec2:DisableImageDeregistrationProtection",
            "allow",
        )
        .on(
            ec2("image", "ami-old"),
            json!({format!("ec2:ResourceTag/{ROLE_TAG}"): "app"}),
        ),
        probe(
            "lift the protection of an image imagectl did not make",
            "ec2:DisableImageDeregistrationProtection",
            "deny",
        )
        .on(ec2("image", "ami-other"), json!({})),
        probe(
            "protect an image",
            "ec2:EnableImageDeregistrationProtection",
            "deny",
        )
        .on(
            ec2("image", "ami-old"),
            json!({format!("ec2:ResourceTag/{ROLE_TAG}"): "app"}),
        ),
    ]);
    check("prune", &printed(&mut t, &["prune"]), &prune);
    let mut sweep = cleanup_probes(ROLE_TAG);
    sweep.extend([
        probe(
            "lift the protection of an imagectl image",
            "ec2:DisableImageDeregistrationProtection",
            "deny",
        )
        .on(
            ec2("image", "ami-old"),
            json!({format!("ec2:ResourceTag/{ROLE_TAG}"): "app"}),
        ),
        probe(
            "terminate a build instance",
            "ec2:TerminateInstances",
            "allow",
        )
        .on(
            ec2("instance", "i-build"),
            json!({format!("ec2:ResourceTag/{BUILD_TAG}"): "x"}),
        ),
        probe("terminate any instance", "ec2:TerminateInstances", "deny")
            .on(ec2("instance", "i-prod"), json!({})),
        probe("delete a build's key pair", "ec2:DeleteKeyPair", "allow").on(
            ec2("key-pair", "imagectl-app-0123456789ab-20261126080000"),
            json!({}),
        ),
        probe("delete any key pair", "ec2:DeleteKeyPair", "deny")
            .on(ec2("key-pair", "ops"), json!({})),
        probe("delete any volume", "ec2:DeleteVolume", "deny")
            .on(ec2("volume", "vol-prod"), json!({})),
    ]);
    check("sweep", &printed(&mut t, &["sweep"]), &sweep);
    check(
        "sweep-untagged",
        &printed(&mut t, &["sweep-untagged"]),
        &[
            probe(
                "deregister an untagged image (break-glass)",
                "ec2:DeregisterImage",
                "allow",
            )
            .on(ec2("image", "ami-untagged"), json!({})),
            probe("terminate an instance", "ec2:TerminateInstances", "deny")
                .on(ec2("instance", "i-prod"), json!({})),
            probe("write a channel", "ssm:PutParameter", "deny")
                .on(parameter("/imagectl/app/prod"), json!({})),
        ],
    );
    check(
        "plan",
        &printed(&mut t, &["plan"]),
        &[
            probe("read channels", "ssm:GetParameters", "allow")
                .on(parameter("/imagectl/app/dev"), json!({})),
            probe("write anything", "ssm:PutParameter", "deny")
                .on(parameter("/imagectl/app/dev"), json!({})),
            probe("touch an image", "ec2:CreateTags", "deny").on(ec2("image", "ami-1"), json!({})),
        ],
    );
}

#[test]
fn the_evaluator_decides_as_iam_does() {
    // The probes are only as good as the evaluator: IAM's documented
    // behaviour on a few policies of its own.
    let policy = json!({"Statement": [
        {"Sid": "A", "Effect": "Allow", "Action": "ec2:Create*", "Resource": "*", "Condition": {"StringNotEquals": {"ec2:ResourceTag/env": "prod"}}},
        {"Sid": "D", "Effect": "Deny", "Action": "ec2:CreateTags", "Resource": "arn:aws:ec2:*:*:instance/*"},
        {"Sid": "B", "Effect": "Allow", "Action": "ssm:PutParameter", "Resource": "arn:aws:ssm:*:*:parameter/a/*", "Condition": {"StringEqualsIfExists": {"aws:RequestTag/x": "y"}}},
    ]});
    check(
        "the evaluator's own policy",
        &policy,
        &[
            // A negated operator holds when the key is missing.
            probe("negated, key missing", "ec2:CreateImage", "allow")
                .on(ec2("instance", "i-1"), json!({})),
            probe("negated, key matches", "ec2:CreateImage", "deny").on(
                ec2("instance", "i-1"),
                json!({"ec2:ResourceTag/env": "prod"}),
            ),
            // An explicit deny wins over an allow.
            probe("explicit deny wins", "ec2:CreateTags", "deny")
                .on(ec2("instance", "i-1"), json!({})),
            probe("allowed elsewhere", "ec2:CreateTags", "allow")
                .on(ec2("image", "ami-1"), json!({})),
            // Actions are case-insensitive, wildcards span `/`.
            probe("case-insensitive action", "EC2:createimage", "allow")
                .on(ec2("image", "ami-1"), json!({})),
            probe("wildcard across slashes", "ssm:PutParameter", "allow")
                .on(parameter("/a/b/c"), json!({})),
            probe(
                "IfExists, key present and wrong",
                "ssm:PutParameter",
                "deny",
            )
            .on(parameter("/a/b"), json!({"aws:RequestTag/x": "z"})),
            probe("no statement", "ssm:GetParameter", "deny").on(parameter("/a/b"), json!({})),
        ],
    );
}

/// What `cloudsplaining scan-policy-file` (from the venv scripts/setup
/// makes) says of `policy`, trimmed.
fn scan(policy: &Value) -> String {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), policy.to_string()).unwrap();
    let out = Command::new(python().with_file_name("cloudsplaining"))
        .args(["scan-policy-file", "--input-file"])
        .arg(file.path())
        .output()
        .expect("cloudsplaining is installed by scripts/setup");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn cloudsplaining_finds_nothing_in_any_job_and_would_find_the_old_build_policy() {
    let mut t = Test::new();
    for args in [
        vec!["plan"],
        vec!["build"],
        vec!["publish"],
        vec!["publish", "--channel", "dev"],
        vec!["prune"],
        vec!["sweep"],
    ] {
        let policy = printed(&mut t, &args);
        assert_eq!(scan(&policy), "There were no results found.", "{args:?}");
    }
    // The instance profile of the example.
    let mut repo = Test::repo();
    let policy = printed(&mut repo, &["instance", "worker", "--env", "prod"]);
    assert_eq!(scan(&policy), "There were no results found.", "{policy:#}");
    // The statement the build policy had before: cloudsplaining sees it.
    let old = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["ec2:CopyImage", "ec2:CreateImage"], "Resource": "*"}]});
    assert!(
        scan(&old).contains("Unrestricted Infrastructure Modification"),
        "{}",
        scan(&old)
    );
}

fn group_arn(name: &str) -> String {
    format!("arn:aws:autoscaling:{HOME}:{ACCOUNT}:autoScalingGroup:0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0:autoScalingGroupName/{name}")
}

/// What `imagectl-agent` asks for at boot as SSM decrypts a SecureString of
/// `param` for it: the key, through SSM, with the parameter's ARN as its
/// encryption context.
fn decrypt(name: &str, expect: &'static str, param: &str, via: Option<&str>) -> Probe {
    let mut context = json!({"kms:EncryptionContext:PARAMETER_ARN": parameter(param)});
    if let Some(via) = via {
        context["kms:ViaService"] = json!(via);
    }
    probe(name, "kms:Decrypt", expect)
        .on(
            format!("arn:aws:kms:{HOME}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
            json!({}),
        )
        .with(context)
}

#[test]
fn the_instance_policy_reads_only_its_own_configuration_and_reports_only_to_its_own_groups() {
    let mut t = Test::repo();
    let ssm = "ssm.eu-west-1.amazonaws.com";
    let role_tag = format!("autoscaling:ResourceTag/{ROLE_TAG}");
    let policy = printed(&mut t, &["instance", "worker", "--env", "prod"]);
    let tell = |name: &str, action: &'static str, expect: &'static str, tag: Option<&str>| {
        let context = tag.map_or(json!({}), |v| json!({role_tag.clone(): v}));
        probe(name, action, expect).on(group_arn("learn-worker-prod"), context)
    };
    check(
        "instance worker --env prod",
        &policy,
        &[
            probe("read its configuration", "ssm:GetParametersByPath", "allow")
                .on(parameter("/learn/prod/worker"), json!({})),
            decrypt(
                "decrypt its secrets through SSM",
                "allow",
                "/learn/prod/worker/db/url",
                Some(ssm),
            ),
            probe(
                "find its group",
                "autoscaling:DescribeAutoScalingInstances",
                "allow",
            )
            .on("*", json!({})),
            tell(
                "mark itself unhealthy",
                "autoscaling:SetInstanceHealth",
                "allow",
                Some("worker"),
            ),
            tell(
                "complete its launch hook",
                "autoscaling:CompleteLifecycleAction",
                "allow",
                Some("worker"),
            ),
            // Denied: another role's, another environment's, a look-alike
            // path's parameters; a channel; a single parameter by name.
            probe(
                "read another role's configuration",
                "ssm:GetParametersByPath",
                "deny",
            )
            .on(parameter("/learn/prod/web"), json!({})),
            probe(
                "read another environment's configuration",
                "ssm:GetParametersByPath",
                "deny",
            )
            .on(parameter("/learn/staging/worker"), json!({})),
            probe(
                "read a path that only starts the same",
                "ssm:GetParametersByPath",
                "deny",
            )
            .on(parameter("/learn/prod/worker-old"), json!({})),
            probe("read a channel", "ssm:GetParameter", "deny")
                .on(parameter("/imagectl/worker/prod"), json!({})),
            probe("write its configuration", "ssm:PutParameter", "deny")
                .on(parameter("/learn/prod/worker/db/url"), json!({})),
            decrypt(
                "decrypt with the key directly",
                "deny",
                "/learn/prod/worker/db/url",
                None,
            ),
            decrypt(
                "decrypt another role's secret through SSM",
                "deny",
                "/learn/prod/web/db/url",
                Some(ssm),
            ),
            decrypt(
                "decrypt through another service",
                "deny",
                "/learn/prod/worker/db/url",
                Some("s3.eu-west-1.amazonaws.com"),
            ),
            tell(
                "set the health of another role's group",
                "autoscaling:SetInstanceHealth",
                "deny",
                Some("web"),
            ),
            tell(
                "set the health of an untagged group",
                "autoscaling:SetInstanceHealth",
                "deny",
                None,
            ),
            tell(
                "abandon another role's launch",
                "autoscaling:CompleteLifecycleAction",
                "deny",
                Some("web"),
            ),
            tell(
                "change its group",
                "autoscaling:UpdateAutoScalingGroup",
                "deny",
                Some("worker"),
            ),
            tell(
                "terminate through its group",
                "autoscaling:TerminateInstanceInAutoScalingGroup",
                "deny",
                Some("worker"),
            ),
        ],
    );
    // Without --env: every environment's configuration of the role, still
    // no other role's.
    check(
        "instance worker",
        &printed(&mut t, &["instance", "worker"]),
        &[
            probe(
                "read staging's configuration",
                "ssm:GetParametersByPath",
                "allow",
            )
            .on(parameter("/learn/staging/worker"), json!({})),
            probe(
                "read another role's configuration",
                "ssm:GetParametersByPath",
                "deny",
            )
            .on(parameter("/learn/prod/web"), json!({})),
        ],
    );
    // Usage mistakes exit 2.
    for args in [
        vec!["iam-policy", "instance"],
        vec!["iam-policy", "build", "worker"],
        vec!["iam-policy", "instance", "worker", "--env", "../prod"],
        vec!["iam-policy", "instance", "worker", "--channel", "prod"],
    ] {
        let r = t.run_with(&args);
        assert_eq!(r.status, 2, "{args:?}: {}", r.stderr);
    }
}

#[test]
fn with_groups_the_publish_policy_refreshes_only_the_channels_groups() {
    let mut t = Test::new();
    let settings = std::fs::read_to_string(t.path("imagectl.toml")).unwrap();
    std::fs::write(
        t.path("imagectl.toml"),
        format!("{settings}\n[publish.auto_scaling_groups.app]\ndev = [\"app-dev\"]\nprod = [\"app-prod\"]\n"),
    )
    .unwrap();
    let template = |channel: &str| {
        (
            format!("arn:aws:ec2:{HOME}:{ACCOUNT}:launch-template/lt-0123456789abcdef0"),
            json!({format!("aws:ResourceTag/imagectl:channel"): channel}),
        )
    };
    let probes = |policy: &str| {
        let dev_only = policy == "dev";
        let (lt, dev) = template("dev");
        let (_, prod) = template("prod");
        vec![
            probe(
                "refresh a dev group",
                "autoscaling:StartInstanceRefresh",
                "allow",
            )
            .on(group_arn("app-dev"), json!({})),
            probe(
                "refresh a prod group",
                "autoscaling:StartInstanceRefresh",
                if dev_only { "deny" } else { "allow" },
            )
            .on(group_arn("app-prod"), json!({})),
            probe(
                "refresh any other group",
                "autoscaling:StartInstanceRefresh",
                "deny",
            )
            .on(group_arn("billing"), json!({})),
            probe(
                "follow refreshes",
                "autoscaling:DescribeInstanceRefreshes",
                "allow",
            )
            .on("*", json!({})),
            probe(
                "use a dev template for the refresh",
                "ec2:RunInstances",
                "allow",
            )
            .on(lt.clone(), dev),
            probe(
                "use a prod template for the refresh",
                "ec2:RunInstances",
                if dev_only { "deny" } else { "allow" },
            )
            .on(lt.clone(), prod),
            // RunInstances needs the instance too: not allowed, so the
            // template grant launches nothing.
            probe(
                "launch an instance from a channel's template",
                "ec2:RunInstances",
                "deny",
            )
            .on(lt, template("dev").1)
            .on(ec2("instance", "*"), json!({})),
            probe(
                "cancel a refresh",
                "autoscaling:CancelInstanceRefresh",
                "deny",
            )
            .on(group_arn("app-dev"), json!({})),
            probe(
                "change a group",
                "autoscaling:UpdateAutoScalingGroup",
                "deny",
            )
            .on(group_arn("app-dev"), json!({})),
        ]
    };
    let all = printed(&mut t, &["publish"]);
    check("publish with groups", &all, &probes("all"));
    let dev = printed(&mut t, &["publish", "--channel", "dev"]);
    check("publish --channel dev with groups", &dev, &probes("dev"));
    for policy in [all, dev] {
        assert_eq!(scan(&policy), "There were no results found.", "{policy:#}");
    }
}

/// With `[provenance] kms_key`: the build signs with that key only, raw
/// messages, and records the statement beside the inputs; publish only
/// verifies with it and reads statements; neither can sign with another
/// key, nor publish sign anything. cloudsplaining finds nothing.
#[test]
fn with_a_provenance_key_build_signs_and_publish_verifies_with_it_only() {
    let mut t = Test::new();
    let settings = std::fs::read_to_string(t.path("imagectl.toml")).unwrap();
    std::fs::write(
        t.path("imagectl.toml"),
        format!("{settings}\n[provenance]\nkms_key = \"alias/imagectl-provenance\"\n"),
    )
    .unwrap();
    let key = |id: &str, aliases: &[&str]| {
        (
            format!("arn:aws:kms:{HOME}:{ACCOUNT}:key/{id}"),
            json!({"kms:ResourceAliases": aliases}),
        )
    };
    let (signing, signing_ctx) = key(
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        &["alias/imagectl-provenance"],
    );
    let (images, images_ctx) = key(
        "0000abcd-12ab-34cd-56ef-1234567890ab",
        &["alias/imagectl-images"],
    );
    let statement = parameter("/imagectl/app/provenance/0123");
    let build = vec![
        probe("sign with the provenance key", "kms:Sign", "allow")
            .on(signing.clone(), signing_ctx.clone()),
        probe("sign with the images' key", "kms:Sign", "deny")
            .on(images.clone(), images_ctx.clone()),
        probe("describe the provenance key", "kms:DescribeKey", "allow")
            .on(signing.clone(), signing_ctx.clone()),
        probe("keep the statement", "ssm:PutParameter", "allow").on(statement.clone(), json!({})),
        probe("write a channel", "ssm:PutParameter", "deny")
            .on(parameter("/imagectl/app/prod"), json!({})),
    ];
    check(
        "build with a provenance key",
        &printed(&mut t, &["build"]),
        &build,
    );
    let publish = vec![
        probe("verify with the provenance key", "kms:Verify", "allow")
            .on(signing.clone(), signing_ctx.clone()),
        probe("verify with the images' key", "kms:Verify", "deny").on(images, images_ctx),
        probe("sign in publish", "kms:Sign", "deny").on(signing, signing_ctx),
        probe("read a statement", "ssm:GetParameter", "allow").on(statement.clone(), json!({})),
        probe("forge a statement", "ssm:PutParameter", "deny").on(statement, json!({})),
    ];
    let policy = printed(&mut t, &["publish"]);
    check("publish with a provenance key", &policy, &publish);
    for policy in [policy, printed(&mut t, &["build"])] {
        assert_eq!(scan(&policy), "There were no results found.", "{policy:#}");
    }
}

/// The disk method's calls (`build --method disk`): snapshots only with
/// imagectl's role tag, written only when they carry it, images registered
/// only from them; nothing reads a snapshot's blocks.
#[test]
fn the_build_policy_uploads_and_registers_only_imagectl_disks() {
    let mut t = Test::new();
    let role = |v: &str| json!({format!("aws:RequestTag/{ROLE_TAG}"): v});
    let resource = json!({format!("aws:ResourceTag/{ROLE_TAG}"): "app"});
    let snap = ec2("snapshot", "snap-disk");
    let probes = vec![
        probe("start a tagged snapshot", "ebs:StartSnapshot", "allow")
            .with(role("app"))
            .on(ec2("snapshot", "*"), json!({})),
        probe("start an untagged snapshot", "ebs:StartSnapshot", "deny")
            .on(ec2("snapshot", "*"), json!({})),
        probe(
            "write a block of imagectl's snapshot",
            "ebs:PutSnapshotBlock",
            "allow",
        )
        .on(snap.clone(), resource.clone()),
        probe(
            "write a block of another snapshot",
            "ebs:PutSnapshotBlock",
            "deny",
        )
        .on(ec2("snapshot", "snap-other"), json!({})),
        probe(
            "complete imagectl's snapshot",
            "ebs:CompleteSnapshot",
            "allow",
        )
        .on(snap.clone(), resource.clone()),
        probe("complete another snapshot", "ebs:CompleteSnapshot", "deny")
            .on(ec2("snapshot", "snap-other"), json!({})),
        probe(
            "read a block of any snapshot",
            "ebs:GetSnapshotBlock",
            "deny",
        )
        .on(snap.clone(), resource),
        probe(
            "register from imagectl's snapshot",
            "ec2:RegisterImage",
            "allow",
        )
        .with(role("app"))
        .on(ec2("image", "*"), json!({}))
        .on(
            snap.clone(),
            json!({format!("ec2:ResourceTag/{ROLE_TAG}"): "app"}),
        ),
        probe(
            "register from another snapshot",
            "ec2:RegisterImage",
            "deny",
        )
        .with(role("app"))
        .on(ec2("image", "*"), json!({}))
        .on(ec2("snapshot", "snap-other"), json!({})),
        probe("register an untagged image", "ec2:RegisterImage", "deny")
            .on(ec2("image", "*"), json!({}))
            .on(snap, json!({format!("ec2:ResourceTag/{ROLE_TAG}"): "app"})),
        probe("tag the image it registers", "ec2:CreateTags", "allow")
            .with(role("app"))
            .with(json!({"ec2:CreateAction": "RegisterImage"}))
            .on(ec2("image", "ami-new"), json!({})),
    ];
    check("build (disk)", &printed(&mut t, &["build"]), &probes);
}
