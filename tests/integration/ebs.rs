//! Raw disk images uploaded into EBS snapshots with the EBS direct APIs, and
//! AMIs registered from them, against moto, read back with boto3. These
//! call the library: there is no command for them yet. The SDK gets moto's
//! endpoint and credentials in its configuration, not from the environment
//! the other tests share.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use imagectl::aws::{Ebs, Registration, Session, Upload, UploadError, BLOCK_SIZE};
use imagectl_core::arch::Arch;
use imagectl_core::digest::sha256;
use serde_json::{json, Value};
use sha2::Digest;

use crate::moto::Moto;

const REGION: &str = "eu-west-1";

/// Runs `f` with EBS and a session on moto.
fn on_moto<T>(moto: &Moto, f: impl AsyncFnOnce(Ebs, Session) -> T) -> T {
    let rt = imagectl::aws::runtime().unwrap();
    rt.block_on(async {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(aws_credential_types::Credentials::new(
                "testing", "testing", None, None, "moto",
            ))
            .load()
            .await;
        let session = Session::from_config(config);
        f(session.ebs(REGION), session).await
    })
}

/// Block `index` of the image at `path`, as it is sent: 512 KiB, the last
/// one padded with zeros.
fn block_of(path: &Path, index: u64) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let start = (index * BLOCK_SIZE) as usize;
    let mut block = bytes[start..bytes.len().min(start + BLOCK_SIZE as usize)].to_vec();
    block.resize(BLOCK_SIZE as usize, 0);
    block
}

#[test]
fn a_sparse_image_uploads_only_its_data_blocks_and_registers_as_an_image() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let b = BLOCK_SIZE;
    // Six blocks, the last one short: data in 0, 2 (a little) and 5;
    // zeros written in 1; holes in 3 and 4.
    let size = 6 * b - 100 * 1024;
    let f = File::create(&path).unwrap();
    f.set_len(size).unwrap();
    f.write_all_at(&vec![0x5a; b as usize], 0).unwrap();
    f.write_all_at(&vec![0; b as usize], b).unwrap();
    f.write_all_at(b"two", 2 * b + 4096).unwrap();
    f.write_all_at(&vec![0xa5; 4096], size - 4096).unwrap();
    drop(f);
    let tags = BTreeMap::from([
        ("imagectl:role".to_string(), "worker".to_string()),
        ("Name".to_string(), "worker disk".to_string()),
    ]);
    let calls = Mutex::new(Vec::new());
    let progress = |written, total| calls.lock().unwrap().push((written, total));
    let upload = Upload {
        path: &path,
        sha256: None,
        volume_size_gib: None,
        description: "worker disk",
        tags: &tags,
        encrypted: true,
        kms_key_arn: None,
        timeout_minutes: 60,
    };
    let (report, image) = on_moto(&moto, async |ebs, session| {
        let report = ebs.upload(&upload, &progress).await.unwrap();
        ebs.wait_completed(&report.snapshot_id, Duration::from_secs(30))
            .await
            .unwrap();
        let image = session
            .ec2(REGION)
            .register_image(&Registration {
                name: "worker-0123456789ab",
                description: "role worker",
                arch: Arch::X86_64,
                snapshot_id: &report.snapshot_id,
                volume_size_gib: 8,
                tags: &tags,
            })
            .await
            .unwrap();
        (report, image)
    });
    assert!(report.snapshot_id.starts_with("snap-"), "{report:?}");
    assert_eq!(
        (
            report.volume_size_gib,
            report.blocks_total,
            report.blocks_written,
            report.bytes_written
        ),
        (1, 6, 3, 3 * b)
    );
    assert_eq!(
        calls.into_inner().unwrap(),
        [(0, 3), (1, 3), (2, 3), (3, 3)]
    );

    let read_back = moto.boto3(&format!(
        r#"
import hashlib
snap = "{snap}"
ebs = boto3.client("ebs", region_name="{REGION}")
ec2 = boto3.client("ec2", region_name="{REGION}")
blocks = {{}}
for b in ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]:
    got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])
    data = got["BlockData"].read()
    blocks[str(b["BlockIndex"])] = {{
        "sha256": hashlib.sha256(data).hexdigest(),
        "length": got["DataLength"],
        "checksum": got["Checksum"],
        "algorithm": got["ChecksumAlgorithm"],
    }}
s = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"][0]
i = ec2.describe_images(ImageIds=["{image}"])["Images"][0]
print(json.dumps({{
    "blocks": blocks,
    "snapshot": {{
        "state": s["State"],
        "size": s["VolumeSize"],
        "description": s["Description"],
        "tags": {{t["Key"]: t["Value"] for t in s.get("Tags", [])}},
    }},
    "image": {{"name": i["Name"], "description": i["Description"], "state": i["State"]}},
}}))
"#,
        snap = report.snapshot_id,
    ));
    let expected: BTreeMap<String, Value> = [0, 2, 5]
        .into_iter()
        .map(|i| {
            let block = block_of(&path, i);
            let digest = sha2::Sha256::digest(&block);
            let value = json!({
                "sha256": sha256(&block),
                "length": BLOCK_SIZE,
                "checksum": aws_smithy_types::base64::encode(digest),
                "algorithm": "SHA256",
            });
            (i.to_string(), value)
        })
        .collect();
    assert_eq!(read_back["blocks"], json!(expected));
    assert_eq!(
        read_back["snapshot"],
        json!({
            "state": "completed",
            "size": 1,
            "description": "worker disk",
            "tags": {"imagectl:role": "worker", "Name": "worker disk"},
        })
    );
    // moto 5.2.5 keeps only these of RegisterImage (it makes up its own
    // root device, snapshot and mapping, and drops the tags): the rest of
    // the request is checked in src/aws/images.rs.
    assert_eq!(
        read_back["image"],
        json!({"name": "worker-0123456789ab", "description": "role worker", "state": "available"})
    );
}

#[test]
fn an_upload_that_fails_after_starting_deletes_its_snapshot() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    let b = BLOCK_SIZE;
    let f = File::create(&path).unwrap();
    for i in 0..20 {
        f.write_all_at(&vec![i as u8 + 1; b as usize], i * b)
            .unwrap();
    }
    drop(f);
    let tags = BTreeMap::from([("imagectl:test".to_string(), "changed".to_string())]);
    // Once the snapshot is started, before any block is read again, the
    // last block changes under the upload.
    let progress = |written, _| {
        if written == 0 {
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all_at(b"changed", 19 * b + 10).unwrap();
        }
    };
    let upload = Upload {
        path: &path,
        sha256: None,
        volume_size_gib: Some(2),
        description: "changing disk",
        tags: &tags,
        encrypted: false,
        kms_key_arn: None,
        timeout_minutes: 10,
    };
    let err = on_moto(&moto, async |ebs, _| {
        ebs.upload(&upload, &progress).await.unwrap_err()
    });
    assert!(
        matches!(err, UploadError::Changed { block: 19, .. }),
        "{err:?}"
    );
    assert!(!err.is_usage());
    assert_eq!(
        err.to_string(),
        format!(
            "the disk image `{}` changed while it was being uploaded (block 19); \
             build it again and let nothing else write it",
            path.display()
        )
    );
    let left = moto.boto3(&format!(
        r#"
ec2 = boto3.client("ec2", region_name="{REGION}")
snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{{"Name": "tag:imagectl:test", "Values": ["changed"]}}])
print(json.dumps([s["SnapshotId"] for s in snaps["Snapshots"]]))
"#
    ));
    assert_eq!(left, json!([]));
}

#[test]
fn a_volume_too_small_for_the_image_is_refused_before_anything_starts() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.raw");
    File::create(&path).unwrap().set_len((1 << 30) + 1).unwrap();
    let tags = BTreeMap::new();
    let upload = Upload {
        path: &path,
        sha256: None,
        volume_size_gib: Some(1),
        description: "too big",
        tags: &tags,
        encrypted: false,
        kms_key_arn: None,
        timeout_minutes: 10,
    };
    let err = on_moto(&moto, async |ebs, _| {
        ebs.upload(&upload, &|_, _| {}).await.unwrap_err()
    });
    assert!(err.is_usage());
    assert_eq!(
        err.to_string(),
        format!(
            "the disk image `{}` needs a volume of at least 2 GiB, not 1 GiB",
            path.display()
        )
    );
    let snapshots = moto.boto3(&format!(
        r#"
ec2 = boto3.client("ec2", region_name="{REGION}")
snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[{{"Name": "description", "Values": ["too big"]}}])
print(json.dumps(len(snaps["Snapshots"])))
"#
    ));
    assert_eq!(snapshots, json!(0));
}
