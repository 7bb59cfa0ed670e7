//! Signed provenance against moto: a build signs an in-toto statement
//! (SLSA provenance v1) with the KMS key of `[provenance] kms_key` and keeps
//! it beside the role's channels; `verify` accepts the image, and a changed
//! tag or one changed byte of the statement makes `verify` fail and
//! `publish`/`promote` refuse, unless `--allow-unverified`. The statement
//! and the tags are read back with boto3, and the signature checked by
//! moto's KMS `Verify`, not by imagectl's code.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

use crate::aws::{build, json, project};
use crate::moto::Moto;
use crate::support::Test;

/// The fixture project with signing on (the key aws_setup.py makes).
pub(crate) fn signing(moto: &Moto) -> Test {
    let t = project(moto);
    let settings = t.path("imagectl.toml");
    let mut text = std::fs::read_to_string(&settings).unwrap();
    text.push_str("\n[provenance]\nkms_key = \"alias/imagectl-provenance\"\n");
    std::fs::write(&settings, text).unwrap();
    t
}

/// The statement kept for `app`'s image `ami`, its tags, and whether
/// moto's KMS finds the envelope's signature valid over DSSE's encoding.
fn read_back(moto: &Moto, ami: &str) -> Value {
    moto.boto3(&format!(
        r#"
import base64
ec2 = boto3.client("ec2", region_name="eu-west-1")
image = ec2.describe_images(ImageIds=["{ami}"])["Images"][0]
tags = {{t["Key"]: t["Value"] for t in image.get("Tags", [])}}
ssm = boto3.client("ssm", region_name="eu-west-1")
name = "/imagectl/app/provenance/" + tags["imagectl:content-hash"]
env = json.loads(ssm.get_parameter(Name=name)["Parameter"]["Value"])
payload = base64.b64decode(env["payload"])
pae = b"DSSEv1 %d %s %d " % (len(env["payloadType"]), env["payloadType"].encode(), len(payload)) + payload
kms = boto3.client("kms", region_name="eu-west-1")
valid = kms.verify(KeyId="alias/imagectl-provenance", Message=pae, MessageType="RAW",
                   Signature=base64.b64decode(env["signatures"][0]["sig"]),
                   SigningAlgorithm="ECDSA_SHA_256")["SignatureValid"]
print(json.dumps({{"tags": tags, "name": name, "envelope": env,
                   "statement": json.loads(payload), "valid": valid}}))
"#
    ))
}

/// Overwrites the statement of `name` with `statement`, keeping the
/// signature: what someone with write access to the parameter could do.
fn forge(moto: &Moto, name: &str, envelope: &Value, statement: &[u8]) {
    let mut env = envelope.clone();
    env["payload"] = Value::String(B64.encode(statement));
    moto.boto3(&format!(
        r#"
ssm = boto3.client("ssm", region_name="eu-west-1")
ssm.put_parameter(Name="{name}", Value=json.dumps(json.loads({env})), Type="String", Overwrite=True, Tier="Intelligent-Tiering")
"#,
        env = serde_json::to_string(&env.to_string()).unwrap()
    ));
}

fn set_tag(moto: &Moto, region: &str, ami: &str, key: &str, value: &str) {
    moto.boto3(&format!(
        r#"
boto3.client("ec2", region_name="{region}").create_tags(Resources=["{ami}"], Tags=[{{"Key": "{key}", "Value": "{value}"}}])
"#
    ));
}

fn channel(moto: &Moto, name: &str) -> Value {
    moto.boto3(&format!(
        r#"
ssm = boto3.client("ssm", region_name="eu-west-1")
try:
    print(json.dumps(ssm.get_parameter(Name="{name}")["Parameter"]["Value"]))
except ssm.exceptions.ParameterNotFound:
    print("null")
"#
    ))
}

#[test]
fn a_signed_build_verifies_and_a_changed_tag_or_statement_is_refused() {
    let moto = Moto::start();
    let mut t = signing(&moto);
    let (home, copy) = build(&mut t);

    // What was kept, read back with boto3; moto's KMS finds it signed.
    let kept = read_back(&moto, &home);
    assert_eq!(kept["valid"], true, "{kept}");
    let s = &kept["statement"];
    assert_eq!(s["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(s["predicateType"], "https://slsa.dev/provenance/v1");
    let hash = kept["tags"]["imagectl:content-hash"].as_str().unwrap();
    let subjects: Vec<&str> = s["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        subjects,
        [
            format!("arn:aws:ec2:eu-central-1::image/{copy}"),
            format!("arn:aws:ec2:eu-west-1::image/{home}")
        ]
    );
    for subject in s["subject"].as_array().unwrap() {
        assert_eq!(subject["digest"]["imagectlContentHash"], hash);
    }
    let p = &s["predicate"];
    assert_eq!(
        p["buildDefinition"]["externalParameters"]["contentHash"],
        hash
    );
    assert_eq!(
        p["runDetails"]["byproducts"][0]["digest"]["sha256"],
        kept["tags"]["imagectl:sbom-sha256"]
    );
    assert_eq!(
        p["runDetails"]["metadata"]["invocationId"],
        kept["tags"]["imagectl:build"]
    );
    assert_eq!(p["runDetails"]["builder"]["version"]["packer"], "1.6.6");
    // The build keeps the envelope beside its SBOM too (for CI to upload).
    let builds: Vec<_> = std::fs::read_dir(t.path(".imagectl/builds"))
        .unwrap()
        .map(|e| e.unwrap().path().join("provenance.intoto.json"))
        .filter(|p| p.is_file())
        .collect();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let beside: Value = serde_json::from_slice(&std::fs::read(&builds[0]).unwrap()).unwrap();
    assert_eq!(beside, kept["envelope"]);
    // Every input the content hash covers, with its full digest.
    let inputs = json(&mut t, &["inputs", "app"]);
    let deps = p["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    for input in inputs["inputs"].as_array().unwrap() {
        assert!(
            deps.iter()
                .any(|d| d["digest"]["sha256"] == input["sha256"]),
            "{input} not in {deps:?}"
        );
    }

    // verify: the AMI, and a channel in every region once published.
    let v = json(&mut t, &["verify", &home]);
    assert_eq!(
        v["verified"][0]["image"],
        format!("eu-west-1/{home}"),
        "{v}"
    );
    assert_eq!(v["failed"], serde_json::json!([]));
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    let v = json(&mut t, &["verify", "app", "--channel", "dev"]);
    assert_eq!(v["verified"].as_array().unwrap().len(), 2, "{v}");

    // A changed tag on the copy: verify names it, promote refuses.
    set_tag(&moto, "eu-central-1", &copy, "imagectl:commit", "0000000");
    let r = t.run_with(&["verify", &copy, "--region", "eu-central-1"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("tag `imagectl:commit` is `0000000`, the statement says"),
        "{}",
        r.stderr
    );
    let r = t.run_with(&["promote", "app", "--from", "dev", "--to", "prod"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("refusing to publish"), "{}", r.stderr);
    assert!(r.stderr.contains("--allow-unverified"), "{}", r.stderr);
    assert_eq!(channel(&moto, "/imagectl/app/prod"), Value::Null);
    let original = kept["tags"]["imagectl:commit"].as_str().unwrap();
    set_tag(&moto, "eu-central-1", &copy, "imagectl:commit", original);
    t.ok_with(&["verify", &copy, "--region", "eu-central-1"]);

    // One byte of the statement changed, the signature kept.
    let name = kept["name"].as_str().unwrap();
    let mut statement = serde_json::to_vec(&kept["statement"]).unwrap();
    let at = statement.iter().position(|&b| b == b'1').unwrap();
    statement[at] = b'2';
    forge(&moto, name, &kept["envelope"], &statement);
    assert_eq!(read_back(&moto, &home)["valid"], false);
    let r = t.run_with(&["verify", "app", "--channel", "dev"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("does not verify with arn:aws:kms:eu-west-1:"),
        "{}",
        r.stderr
    );
    let r = t.run_with(&["promote", "app", "--from", "dev", "--to", "prod"]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert_eq!(channel(&moto, "/imagectl/app/prod"), Value::Null);
    // Deliberately, and said.
    let r = t.run_with(&[
        "promote",
        "app",
        "--from",
        "dev",
        "--to",
        "prod",
        "--allow-unverified",
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(r.stderr.contains("--allow-unverified:"), "{}", r.stderr);
    assert_eq!(channel(&moto, "/imagectl/app/prod"), Value::String(home));
}

/// The signing key is a prerequisite like the images' key: `doctor` shows
/// it with its algorithm, and a build whose key cannot sign (here, the
/// images' ENCRYPT_DECRYPT key) stops before anything is baked, naming
/// why, instead of leaving unsigned images behind.
#[test]
fn doctor_and_the_build_preflight_check_the_signing_key() {
    let moto = Moto::start();
    let mut t = signing(&moto);
    let r = t.run_with(&["doctor"]);
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("signing key alias/imagectl-provenance"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(
        line.contains("arn:aws:kms:eu-west-1:") && line.contains("(ECDSA_SHA_256)"),
        "{line}"
    );
    let settings = t.path("imagectl.toml");
    let text = std::fs::read_to_string(&settings).unwrap();
    std::fs::write(
        &settings,
        text.replace(
            "kms_key = \"alias/imagectl-provenance\"",
            "kms_key = \"alias/imagectl-images\"",
        ),
    )
    .unwrap();
    let r = t.run_with(&["build", "app"]);
    assert_eq!(r.status, 2, "{}", r.stderr);
    // AWS describes the key's usage (ENCRYPT_DECRYPT); moto leaves it out
    // of a default key's description, so it is told by its algorithms.
    assert!(
        r.stderr
            .contains("missing: signing key alias/imagectl-images")
            && (r.stderr.contains("is for ENCRYPT_DECRYPT, not SIGN_VERIFY")
                || r.stderr.contains("signs with none of ECDSA_SHA_256")),
        "{}",
        r.stderr
    );
    assert!(!t.path(".imagectl/builds").exists(), "a bake started");
}
