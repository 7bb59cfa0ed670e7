//! `imagectl doctor` and the preflight of `build` against moto: every
//! check ok on the complete fixture, then each resource taken away in turn
//! is named with its region and fix; a build whose publication would fail
//! stops before Packer starts.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::aws::project;
use crate::moto::Moto;
use crate::support::{marking_packer, Test};

/// Every check on the fixture, as `doctor` prints it.
const ALL_OK: [&str; 17] = [
    "ok: AWS endpoint ENDPOINT in eu-west-1: answers",
    "ok: credentials: arn:aws:sts::123456789012:user/moto (account 123456789012)",
    "ok: subnet tagged Name=imagectl-build-private in eu-west-1: SUBNET",
    "ok: security group tagged Name=imagectl-build in eu-west-1: GROUP",
    "ok: instance profile imagectl-build: role imagectl-build",
    "ok: KMS key alias/imagectl-images in eu-west-1: KEY",
    "ok: KMS key alias/imagectl-images in eu-central-1: KEY",
    "ok: base image ami-0d1e2b1200a900901 (debian-12) in eu-west-1: debian-12-amd64-20260901-2230",
    "ok: base image ami-0d1e2b1200b900901 (debian-12-arm64) in eu-west-1: debian-12-arm64-20260901-2230",
    "ok: base image ami-0d1e2b1200a900901 (debian-12) in eu-central-1: debian-12-amd64-20260901-2230",
    "ok: base image ami-0d1e2b1200b900901 (debian-12-arm64) in eu-central-1: debian-12-arm64-20260901-2230",
    "ok: launch template app-prod (app prod) in eu-west-1: default version 1",
    "ok: launch template app-prod (app prod) in eu-central-1: default version 1",
    "ok: SSM parameters under /imagectl in eu-west-1",
    "ok: SSM parameters under /imagectl in eu-central-1",
    "ok: image block public access in eu-west-1: block-new-sharing",
    "ok: image block public access in eu-central-1: block-new-sharing",
];

/// The lines of `doctor`'s output with the IDs moto made up replaced.
fn normalised(moto: &Moto, stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| {
            let l = l.replace(&moto.endpoint, "ENDPOINT");
            let masked = |l: &str, prefix: &str, what: &str| match l.find(prefix) {
                Some(i) if l.starts_with("ok: ") => format!("{}{what}", &l[..i]),
                _ => l.to_string(),
            };
            let l = masked(&l, "subnet-", "SUBNET");
            let l = masked(&l, "sg-", "GROUP");
            masked(&l, "arn:aws:kms:", "KEY")
        })
        .collect()
}

/// Runs `doctor`; asserts its exit code and that every line but `problem`
/// is ok, and that `problem` is there.
fn doctor_finds(t: &mut Test, moto: &Moto, status: i32, problem: &str) {
    let r = t.run_with(&["doctor"]);
    assert_eq!(r.status, status, "{problem}\n{}\n{}", r.stdout, r.stderr);
    let lines = normalised(moto, &r.stdout);
    let not_ok: Vec<&String> = lines.iter().filter(|l| !l.starts_with("ok: ")).collect();
    assert_eq!(not_ok, [problem], "{}", r.stdout);
}

#[test]
fn doctor_finds_everything_then_names_each_missing_resource_with_its_region_and_fix() {
    let moto = Moto::start();
    let mut t = project(&moto);
    let r = t.run_with(&["doctor"]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(normalised(&moto, &r.stdout), ALL_OK);

    let v: Value = serde_json::from_str(&t.ok_with(&["doctor", "--output", "json"])).unwrap();
    let checks = v.as_array().unwrap();
    assert_eq!(checks.len(), ALL_OK.len());
    for c in checks {
        assert_eq!(c["status"], "ok", "{c}");
        assert_eq!(c["fix"], Value::Null, "{c}");
        assert!(c["name"].is_string() && c["resource"].is_string(), "{c}");
    }
    assert_eq!(checks[2]["name"], "subnet");
    assert_eq!(checks[2]["region"], "eu-west-1");
    assert_eq!(checks[4]["region"], Value::Null, "IAM is global");

    // The subnet, then the security group, lose their Name tags.
    let untag = |what: &str, key: &str, id: &str, name: &str| {
        moto.boto3(&format!(
            r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
ids = [x["{id}"] for x in ec2.describe_{what}(Filters=[{{"Name": "tag:Name", "Values": ["{name}"]}}])["{key}"]]
ec2.delete_tags(Resources=ids, Tags=[{{"Key": "Name", "Value": "{name}"}}])
"#
        ))
    };
    untag("subnets", "Subnets", "SubnetId", "imagectl-build-private");
    doctor_finds(&mut t, &moto, 2, "missing: subnet tagged Name=imagectl-build-private in eu-west-1 — create it (docs/aws-setup.md#network-for-builds) or set [aws].build_subnet");
    moto.boto3(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
s = ec2.describe_subnets(Filters=[{"Name": "cidr-block", "Values": ["10.20.1.0/24"]}])["Subnets"][0]["SubnetId"]
ec2.create_tags(Resources=[s], Tags=[{"Key": "Name", "Value": "imagectl-build-private"}])
"#,
    );
    untag(
        "security_groups",
        "SecurityGroups",
        "GroupId",
        "imagectl-build",
    );
    doctor_finds(&mut t, &moto, 2, "missing: security group tagged Name=imagectl-build in eu-west-1 — create it without ingress rules (docs/aws-setup.md#network-for-builds) or set [aws].build_security_group");
    let group = moto.boto3(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
g = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["imagectl-build"]}])["SecurityGroups"][0]["GroupId"]
ec2.create_tags(Resources=[g], Tags=[{"Key": "Name", "Value": "imagectl-build"}])
ec2.authorize_security_group_ingress(GroupId=g, IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
print(json.dumps(g))
"#,
    );
    let group = group.as_str().unwrap().to_string();
    doctor_finds(&mut t, &moto, 2, &format!("missing: security group tagged Name=imagectl-build in eu-west-1: {group} has 1 ingress rule — remove them: Packer reaches the build instance through Session Manager, nothing may reach it (docs/aws-setup.md#network-for-builds)"));
    moto.boto3(&format!(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
ec2.revoke_security_group_ingress(GroupId="{group}", IpPermissions=[{{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{{"CidrIp": "0.0.0.0/0"}}]}}])
"#
    ));

    // The instance profile.
    moto.boto3(
        r#"
iam = boto3.client("iam", region_name="eu-west-1")
iam.remove_role_from_instance_profile(InstanceProfileName="imagectl-build", RoleName="imagectl-build")
iam.delete_instance_profile(InstanceProfileName="imagectl-build")
"#,
    );
    doctor_finds(&mut t, &moto, 2, "missing: instance profile imagectl-build — create it with a role that has AmazonSSMManagedInstanceCore (docs/aws-setup.md#network-for-builds) or set [aws].instance_profile");
    moto.boto3(
        r#"
iam = boto3.client("iam", region_name="eu-west-1")
iam.create_instance_profile(InstanceProfileName="imagectl-build")
"#,
    );
    doctor_finds(&mut t, &moto, 2, "missing: instance profile imagectl-build: it has no role — add a role that has AmazonSSMManagedInstanceCore (docs/aws-setup.md#network-for-builds)");
    moto.boto3(
        r#"
iam = boto3.client("iam", region_name="eu-west-1")
iam.add_role_to_instance_profile(InstanceProfileName="imagectl-build", RoleName="imagectl-build")
"#,
    );

    // The KMS alias in the copy region.
    moto.boto3(
        r#"
boto3.client("kms", region_name="eu-central-1").delete_alias(AliasName="alias/imagectl-images")
"#,
    );
    doctor_finds(&mut t, &moto, 2, "missing: KMS key alias/imagectl-images in eu-central-1 — create it there (docs/aws-setup.md#kms) or set [aws].kms_key");
    moto.boto3(
        r#"
kms = boto3.client("kms", region_name="eu-central-1")
kms.create_alias(AliasName="alias/imagectl-images", TargetKeyId=kms.list_keys()["Keys"][0]["KeyId"])
"#,
    );

    // A locked base image that is gone.
    let lock = std::fs::read_to_string(t.path("images/bases.lock")).unwrap();
    let (before, after) = lock.split_once("[debian-12.eu-west-1]").unwrap();
    let gone = format!(
        "{before}[debian-12.eu-west-1]{}",
        after.replacen("ami-0d1e2b1200a900901", "ami-0123456789abcdef0", 1)
    );
    std::fs::write(t.path("images/bases.lock"), gone).unwrap();
    doctor_finds(&mut t, &moto, 2, "missing: base image ami-0123456789abcdef0 (debian-12) in eu-west-1 — run `imagectl bases update` and commit images/bases.lock");
    std::fs::write(t.path("images/bases.lock"), &lock).unwrap();

    // The launch template of a channel.
    delete_launch_template(&moto, "eu-west-1");
    doctor_finds(&mut t, &moto, 2, "missing: launch template app-prod (app prod) in eu-west-1 — create it tagged `imagectl:channel = prod` (docs/aws-setup.md#a-launch-template-that-follows-a-channel) or remove it from [publish.launch_templates.app]");
    moto.boto3(
        r#"
boto3.client("ec2", region_name="eu-west-1").create_launch_template(LaunchTemplateName="app-prod", LaunchTemplateData={"ImageId": "resolve:ssm:/imagectl/app/prod"})
"#,
    );
    doctor_finds(&mut t, &moto, 2, "missing: launch template app-prod (app prod) in eu-west-1: it is not tagged `imagectl:channel = prod` — tag it: only the publish policy of `prod` may move it (docs/aws-setup.md#a-launch-template-that-follows-a-channel)");
    delete_launch_template(&moto, "eu-west-1");
    create_launch_template(&moto, "eu-west-1");

    // Image block public access off: a warning, which does not fail.
    moto.boto3(
        r#"
boto3.client("ec2", region_name="eu-central-1").disable_image_block_public_access()
"#,
    );
    doctor_finds(&mut t, &moto, 0, "warn: image block public access in eu-central-1: unblocked: images can be made public — turn it on: `aws ec2 enable-image-block-public-access --image-block-public-access-state block-new-sharing --region eu-central-1`");
}

fn delete_launch_template(moto: &Moto, region: &str) {
    moto.boto3(&format!(
        r#"
boto3.client("ec2", region_name="{region}").delete_launch_template(LaunchTemplateName="app-prod")
"#
    ));
}

fn create_launch_template(moto: &Moto, region: &str) {
    moto.boto3(&format!(
        r#"
boto3.client("ec2", region_name="{region}").create_launch_template(
    LaunchTemplateName="app-prod",
    LaunchTemplateData={{"ImageId": "resolve:ssm:/imagectl/app/prod"}},
    TagSpecifications=[{{"ResourceType": "launch-template", "Tags": [{{"Key": "imagectl:channel", "Value": "prod"}}]}}],
)
"#
    ));
}

#[test]
fn an_unreachable_endpoint_is_one_missing_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut t = Test::new().envs([
        ("AWS_ENDPOINT_URL", endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_EC2_METADATA_DISABLED", "true".into()),
        ("AWS_CONFIG_FILE", "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null".into()),
        ("AWS_MAX_ATTEMPTS", "1".into()),
    ]);
    let r = t.run_with(&["doctor"]);
    assert_eq!(r.status, 2, "{}\n{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    // Named with the setting that chose it, as every unreachable endpoint.
    assert_eq!(
        r.stdout,
        format!(
            "missing: AWS endpoint {endpoint} in eu-west-1: cannot reach the STS endpoint {endpoint} \
             (from AWS_ENDPOINT_URL): connection refused; check that the emulator or proxy it names \
             is running, or `unset AWS_ENDPOINT_URL` to use AWS — nothing else is checked until it answers\n"
        )
    );
}

#[test]
fn a_build_whose_publication_would_fail_stops_before_packer_unless_told_not_to_check() {
    let moto = Moto::start();
    let t = project(&moto);
    let (path, mark) = marking_packer(&t.path("fake"));
    let mut t = t.envs([("PATH", path)]);
    delete_launch_template(&moto, "eu-west-1");

    let start = Instant::now();
    let r = t.run_with(&["build", "app", "--publish", "prod"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("error: 1 prerequisite missing before anything started (`imagectl doctor` lists every check; `--no-preflight` skips them):\n  missing: launch template app-prod (app prod) in eu-west-1 — create it tagged `imagectl:channel = prod`"),
        "{}",
        r.stderr
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    assert!(!mark.exists(), "Packer ran");
    assert!(!t.path(".imagectl/builds").exists(), "a bake started");

    // A dry run says what it would do, and what is missing.
    let r = t.run_with(&["build", "app", "--publish", "prod", "--dry-run"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(r.stdout.contains("would-build"), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("  missing: launch template app-prod (app prod) in eu-west-1"),
        "{}",
        r.stderr
    );
    assert!(!mark.exists(), "Packer ran");

    // Without the preflight, the bake starts (and this Packer fails it).
    let r = t.run_with(&["build", "app", "--publish", "prod", "--no-preflight"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("prerequisite"), "{}", r.stderr);
    assert!(mark.exists(), "Packer did not run:\n{}", r.stderr);
}
