//! `build --method disk` against moto: the disk image `build --target disk`
//! makes (and `test --vm` boots) is uploaded with the EBS direct APIs and
//! registered as the AMI, with no Packer. The snapshot's blocks are read
//! back with boto3's `ebs` client and compared with the disk's bytes; the
//! tags, the copy, the channel and the launch template are read back with
//! boto3 too. The same disk boots in QEMU (`test --vm`) with no sidecars.
//! Needs root (the disk is built with mmdebstrap) and QEMU.

use serde_json::Value;

use std::path::Path;

use crate::moto::Moto;
use crate::support::{repo_root, Test};

/// The tiny role's project, pointed at moto, with a copy region, the
/// images' KMS key, a shared account and a launch template for `dev`.
fn project(moto: &Moto) -> Test {
    moto.setup_fixture();
    let t = Test::from_tree(&repo_root().join("tests/fixtures/local")).envs(moto.env());
    let settings = t.path("imagectl.toml");
    let mut text = std::fs::read_to_string(&settings).unwrap();
    text = text.replace(
        "region = \"eu-west-1\"\n",
        "region = \"eu-west-1\"\ncopy_regions = [\"eu-central-1\"]\nkms_key = \"alias/imagectl-images\"\nshare_accounts = [\"111122223333\"]\n",
    );
    text.push_str("\n[publish.launch_templates.tiny]\ndev = \"tiny-dev\"\n");
    std::fs::write(&settings, text).unwrap();
    launch_template(moto, "tiny-dev", "dev");
    t
}

fn json(t: &mut Test, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    serde_json::from_str(&t.ok_with(&all)).unwrap()
}

#[test]
fn a_disk_build_registers_the_disk_as_the_ami_and_a_rebuild_reuses_it() {
    let moto = Moto::start();
    let mut t = project(&moto);

    let v = json(&mut t, &["build", "tiny", "--method", "disk"]);
    let b = &v["builds"][0];
    assert_eq!(b["status"], "built", "{v}");
    let home = b["amis"]["eu-west-1"].as_str().unwrap().to_string();
    let copy = b["amis"]["eu-central-1"].as_str().unwrap().to_string();
    let hash = b["hash"].as_str().unwrap().to_string();
    // The disk it uploaded is the one `build --target disk` keeps: the
    // same hash, no second build.
    let d = json(&mut t, &["build", "tiny", "--target", "disk"]);
    let disk = &d["images"][0];
    assert_eq!(disk["built"], false, "{d}");
    assert_eq!(disk["hash"], hash.as_str());
    let name = format!("images/local/tiny-{}.raw", &hash[..12]);
    assert!(disk["path"].as_str().unwrap().ends_with(&name), "{d}");
    let raw = t.path(&name);
    let sha = disk["sha256"].as_str().unwrap().to_string();
    // And it boots: a role with no sidecars gets a network namespace of its
    // own for QEMU, where the guest reaches the metadata service, and the
    // agent configures and starts the role's unit.
    let r = t.run_with(&["test", "tiny", "--vm", "--output", "json"]);
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    let vm: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(vm["passed"], true, "{vm}");
    assert_eq!(vm["agent_report"]["status"], "ok", "{vm}");
    assert_eq!(
        vm["agent_report"]["instance"], "i-0123456789abcdef0",
        "the identity served at 169.254.169.254: {vm}"
    );
    assert_eq!(
        vm["agent_report"]["started"],
        serde_json::json!(["tiny.service"]),
        "{vm}"
    );

    // Read back with boto3: the snapshot's blocks are the disk's non-zero
    // blocks, byte for byte; the image and its copy carry the tags.
    let back = read_back(&moto, "tiny", &home, "eu-central-1", &copy, &raw);
    assert_uploaded(&back, "tiny", &hash, &sha, 8, 10);
    assert!(back["tags"]["imagectl:sbom-sha256"].is_string(), "{back}");

    // Published like a Packer-built image: the channel and the launch
    // template's new default version name it.
    // The role's own method is Packer's: its current hash is not the disk
    // build's, and publish says how to get there.
    let refused = t.run_with(&["publish", "tiny", "--channel", "dev"]);
    assert_ne!(refused.status, 0, "{}", refused.stderr);
    let refused = refused.stderr;
    assert!(
        refused.contains("set `[image] method = \"disk\"` in the role"),
        "{refused}"
    );
    t.ok_with(&["publish", "tiny", "--channel", "dev", "--ami", &home]);
    let published = published(&moto, "tiny", "dev", "tiny-dev");
    assert_eq!(published["channel"], home.as_str(), "{published}");
    assert_eq!(published["template"], home.as_str(), "{published}");

    // The same hash again: the AMI is reused, nothing is uploaded.
    let again = json(&mut t, &["build", "tiny", "--method", "disk"]);
    assert_eq!(again["builds"][0]["status"], "reused", "{again}");
    assert_eq!(again["builds"][0]["amis"]["eu-west-1"], home.as_str());
    // `images` shows the disk's SHA-256.
    let images = t.ok_with(&["images", "tiny"]);
    assert!(
        images.contains(&format!("registered from disk image sha256 {sha}")),
        "{images}"
    );
}

/// What boto3 reads back of the AMI `home` that `build ROLE --method disk`
/// registered from the disk image `raw`, and of its copy `copy` in
/// `copy_region`: the image's and the uploaded snapshot's tags, the
/// snapshot's size in GiB, the indexes of the blocks the snapshot lists and
/// of the disk's non-zero 512 KiB blocks, the listed blocks whose bytes
/// differ from the disk's (none, if the upload is right), and the copy's
/// tags.
pub fn read_back(
    moto: &Moto,
    role: &str,
    home: &str,
    copy_region: &str,
    copy: &str,
    raw: &Path,
) -> Value {
    let raw = raw.display();
    moto.boto3(&format!(
        r#"
import os
ec2 = boto3.client("ec2", region_name="eu-west-1")
image = ec2.describe_images(ImageIds=["{home}"])["Images"][0]
tags = {{t["Key"]: t["Value"] for t in image.get("Tags", [])}}
snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
    {{"Name": "tag:imagectl:build", "Values": [tags["imagectl:build"]]}}])["Snapshots"]
# moto's RegisterImage makes a snapshot of its own and drops the mapping:
# the uploaded one is found by the build's tag.
uploaded = [s for s in snaps if s.get("Description", "").startswith("imagectl {role} ")]
snap = uploaded[0]
ebs = boto3.client("ebs", region_name="eu-west-1")
listed, token = [], None
while True:
    kw = {{"SnapshotId": snap["SnapshotId"], "MaxResults": 1000}}
    if token:
        kw["NextToken"] = token
    page = ebs.list_snapshot_blocks(**kw)
    listed += page["Blocks"]
    token = page.get("NextToken")
    if not token:
        break
size = 512 * 1024
fd = os.open("{raw}", os.O_RDONLY)
end = os.fstat(fd).st_size
nonzero, off = [], 0
while off < end:
    try:
        off = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(fd, off, os.SEEK_HOLE)
    i = off // size
    while i * size < hole:
        data = os.pread(fd, size, i * size)
        if data.strip(b"\0"):
            nonzero.append(i)
        i += 1
    off = i * size
mismatched = []
for b in listed:
    got = ebs.get_snapshot_block(SnapshotId=snap["SnapshotId"], BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])["BlockData"].read()
    if got != os.pread(fd, size, b["BlockIndex"] * size):
        mismatched.append(b["BlockIndex"])
copy = boto3.client("ec2", region_name="{copy_region}").describe_images(ImageIds=["{copy}"])["Images"][0]
print(json.dumps({{"tags": tags, "snapshot_tags": {{t["Key"]: t["Value"] for t in snap.get("Tags", [])}},
    "volume_size": snap["VolumeSize"], "listed": sorted(b["BlockIndex"] for b in listed), "nonzero": nonzero,
    "mismatched": mismatched, "copy_tags": {{t["Key"]: t["Value"] for t in copy.get("Tags", [])}}}}))
"#
    ))
}

/// Makes launch template `name` in the home region, tagged as following
/// `channel` (as docs/aws-setup.md has them), pinning the base image.
pub fn launch_template(moto: &Moto, name: &str, channel: &str) {
    moto.boto3(&format!(
        r#"
ec2 = boto3.client("ec2", region_name="eu-west-1")
ec2.create_launch_template(
    LaunchTemplateName="{name}",
    LaunchTemplateData={{"ImageId": "ami-0d1e2b1200a900901", "InstanceType": "t3.small"}},
    TagSpecifications=[{{"ResourceType": "launch-template", "Tags": [{{"Key": "imagectl:channel", "Value": "{channel}"}}]}}],
)
"#
    ));
}

/// What boto3 reads of a publication: the AMI `channel`'s parameter of
/// `role` holds and the one launch template `template`'s default version
/// launches, as `{"channel": ..., "template": ...}`.
pub fn published(moto: &Moto, role: &str, channel: &str, template: &str) -> Value {
    moto.boto3(&format!(
        r#"
ssm = boto3.client("ssm", region_name="eu-west-1")
ec2 = boto3.client("ec2", region_name="eu-west-1")
v = ec2.describe_launch_template_versions(LaunchTemplateName="{template}", Versions=["$Default"])["LaunchTemplateVersions"][0]
print(json.dumps({{"channel": ssm.get_parameter(Name="/imagectl/{role}/{channel}")["Parameter"]["Value"],
                  "template": v["LaunchTemplateData"]["ImageId"]}}))
"#
    ))
}

/// Asserts what `read_back` read: the image of `role` and `hash`, its
/// snapshot of `gib` GiB and its copy carry the tags naming the disk of
/// SHA-256 `sha`; the snapshot holds exactly the disk's non-zero blocks
/// (more than `min_blocks`), each equal to the disk's.
pub fn assert_uploaded(
    back: &Value,
    role: &str,
    hash: &str,
    sha: &str,
    gib: u64,
    min_blocks: usize,
) {
    let tags = &back["tags"];
    assert_eq!(tags["imagectl:role"], role, "{back}");
    assert_eq!(tags["imagectl:content-hash"], hash);
    assert_eq!(tags["imagectl:disk-sha256"], sha);
    assert_eq!(back["snapshot_tags"]["imagectl:disk-sha256"], sha);
    assert_eq!(back["volume_size"], gib, "{back}");
    let blocks = back["nonzero"].as_array().unwrap().len();
    assert!(
        blocks > min_blocks,
        "the disk has {blocks} blocks of data: {back}"
    );
    assert_eq!(
        back["listed"], back["nonzero"],
        "only the non-zero blocks, all of them"
    );
    assert_eq!(
        back["mismatched"],
        serde_json::json!([]),
        "every block equals the disk's"
    );
    for key in [
        "imagectl:role",
        "imagectl:content-hash",
        "imagectl:disk-sha256",
    ] {
        assert_eq!(back["copy_tags"][key], tags[key], "the copy's {key}");
    }
}
