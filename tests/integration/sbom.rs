//! SBOMs and `imagectl diff`: the local `worker` image's SBOM (every
//! installed Debian package) is valid SPDX for `pyspdxtools`, the same
//! bytes when the image is built again, and `diff` between two builds
//! names exactly the package and the file that changed; an AMI build keeps
//! one too (the role's declared packages) and its images carry its digest,
//! read back with boto3. The local test builds the worker three times (as
//! root, from Debian's mirror); the AWS test runs against moto.

use std::process::Command;

use serde_json::Value;

use crate::moto::{python, Moto};
use crate::support::Test;

/// SHA-256 of a file, by `sha256sum`: not imagectl's own code.
fn sha256sum(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Runs `pyspdxtools -i` (from the venv scripts/setup makes) on `path`:
/// it parses the document and validates it against SPDX 2.3, exiting
/// non-zero with the problems when it is invalid.
fn assert_valid_spdx(path: &std::path::Path) {
    let tool = python().with_file_name("pyspdxtools");
    assert!(
        tool.is_file(),
        "pyspdxtools is not installed in the venv: run scripts/setup (tests/requirements.txt has spdx-tools)"
    );
    let out = Command::new(tool).arg("-i").arg(path).output().unwrap();
    assert!(
        out.status.success(),
        "pyspdxtools refused {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The packages of an SBOM by name: (version, purl, source, licence).
fn debs(sbom: &Value) -> std::collections::BTreeMap<String, Value> {
    sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["SPDXID"].as_str().unwrap().starts_with("SPDXRef-deb-"))
        .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
        .collect()
}

fn build_local(t: &mut Test, role: &str) -> (String, f64) {
    let start = std::time::Instant::now();
    let v: Value =
        serde_json::from_str(&t.ok_with(&["build", role, "--target", "local", "--output", "json"]))
            .unwrap();
    assert_eq!(v["images"][0]["built"], true, "{v}");
    (
        v["images"][0]["hash"].as_str().unwrap().to_string(),
        start.elapsed().as_secs_f64(),
    )
}

#[test]
fn the_local_worker_s_sbom_is_valid_reproducible_and_diffs_show_what_changed() {
    let mut t = Test::repo();
    let (h1, secs) = build_local(&mut t, "worker");
    eprintln!("worker build 1: {secs:.0} s");
    let tar1 = t.path(&format!("images/local/worker-{}.tar", &h1[..12]));
    let sbom1 = t.path(&format!("images/local/worker-{}.spdx.json", &h1[..12]));
    let bytes1 = std::fs::read(&sbom1).expect("the build keeps its SBOM beside the tarball");
    assert_valid_spdx(&sbom1);

    // `imagectl sbom` prints what the build kept; the record names it
    // with its digest.
    let r = t.run_with(&["sbom", "worker", "--target", "local"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(r.stdout.as_bytes(), bytes1.as_slice());
    let records: Value =
        serde_json::from_slice(&std::fs::read(t.path(".imagectl/builds.json")).unwrap()).unwrap();
    let rec = &records.as_array().unwrap()[0];
    assert_eq!(
        rec["sbom"]["path"],
        format!("images/local/worker-{}.spdx.json", &h1[..12])
    );
    assert_eq!(rec["sbom"]["sha256"], sha256sum(&sbom1).as_str());

    // The build signed its provenance with the local key: `verify`
    // accepts the tarball; one changed byte of the statement, or an SBOM
    // that is not the one signed, it refuses.
    let tar_name = format!("images/local/worker-{}.tar", &h1[..12]);
    let r = t.run_with(&["verify", &tar_name, "--output", "json"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v = json(r.stdout.as_bytes());
    assert_eq!(v["verified"][0]["hash"], h1.as_str(), "{v}");
    assert_eq!(v["verified"][0]["sbom_sha256"], sha256sum(&sbom1).as_str());
    let key = std::fs::metadata(t.path(".imagectl/provenance.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    let envelope = t.path(&format!("images/local/worker-{}.intoto.json", &h1[..12]));
    let kept = std::fs::read(&envelope).unwrap();
    let mut env = json(&kept);
    let statement = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        env["payload"].as_str().unwrap(),
    )
    .unwrap();
    let statement = json(&statement);
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        sha256sum(&tar1).as_str()
    );
    // The payload's last base64 group changed: the statement's last bytes.
    let payload = env["payload"].as_str().unwrap().to_string();
    let (head, tail) = payload.split_at(payload.len() - 4);
    let changed = if tail == "fQ==" { "fA==" } else { "fQ==" };
    env["payload"] = Value::String(format!("{head}{changed}"));
    std::fs::write(&envelope, env.to_string()).unwrap();
    let r = t.run_with(&["verify", &tar_name]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the signature does not verify with the local key"),
        "{}",
        r.stderr
    );
    std::fs::write(&envelope, &kept).unwrap();
    std::fs::write(&sbom1, b"{}").unwrap();
    let r = t.run_with(&["verify", &tar_name]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(r.stderr.contains("the statement says"), "{}", r.stderr);
    std::fs::write(&sbom1, &bytes1).unwrap();
    t.ok_with(&["verify", &tar_name]);

    // What it holds: every installed package with its purl, source and
    // licence, the baked files with both digests, the hash.
    let doc = json(&bytes1);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(
        doc["documentNamespace"]
            .as_str()
            .unwrap()
            .rsplit_once('-')
            .unwrap()
            .0,
        format!("https://imagectl.invalid/spdx/local/worker/{h1}")
    );
    let packages = debs(&doc);
    let installed = Command::new("tar")
        .args(["-xOf"])
        .arg(&tar1)
        .arg("./etc/imagectl/packages.tsv")
        .output()
        .unwrap();
    let inventory = String::from_utf8_lossy(&installed.stdout);
    assert_eq!(
        packages.len(),
        inventory.lines().count(),
        "the SBOM lists what the image's own inventory lists"
    );
    for line in inventory.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        let p = &packages[f[0]];
        assert_eq!(p["versionInfo"], f[1], "{line}");
        assert_eq!(
            p["externalRefs"][0]["referenceLocator"],
            format!(
                "pkg:deb/debian/{}@{}?arch={}",
                f[0].replace('+', "%2B"),
                f[1].replace('+', "%2B"),
                f[2]
            ),
            "{line}"
        );
    }
    let ruby = &packages["ruby3.1"];
    assert_eq!(
        ruby["sourceInfo"].as_str().unwrap(),
        format!(
            "built from Debian source package ruby3.1 {}",
            ruby["versionInfo"].as_str().unwrap()
        )
    );
    assert_eq!(packages["zlib1g"]["licenseDeclared"], "Zlib");
    assert_eq!(
        packages["libc6"]["licenseDeclared"], "NOASSERTION",
        "glibc's copyright file is not machine-readable"
    );
    let files: Vec<&Value> = doc["files"].as_array().unwrap().iter().collect();
    let unit = files
        .iter()
        .find(|f| f["fileName"] == "./etc/systemd/system/sidekiq.service")
        .unwrap();
    assert_eq!(
        unit["checksums"][1]["checksumValue"],
        sha256sum(&t.path("roles/files/worker/sidekiq.service")).as_str()
    );
    assert!(files
        .iter()
        .any(|f| f["fileName"] == "./usr/local/bin/imagectl-agent"));
    eprintln!(
        "worker SBOM: {} bytes, {} packages, {} files",
        bytes1.len(),
        packages.len(),
        files.len()
    );

    // The same image built again, from scratch: the same bytes.
    std::fs::remove_file(&tar1).unwrap();
    std::fs::remove_file(&sbom1).unwrap();
    let (again, secs) = build_local(&mut t, "worker");
    eprintln!("worker build 2: {secs:.0} s");
    assert_eq!(again, h1);
    assert_eq!(
        std::fs::read(&sbom1).unwrap(),
        bytes1,
        "two builds of the same worker image gave different SBOMs"
    );

    // One package and one file more.
    let role = std::fs::read_to_string(t.path("roles/worker.toml")).unwrap();
    std::fs::write(
        t.path("roles/worker.toml"),
        role.replacen("[[files]]", "[packages]\napt = [\"jq\"]\n\n[[files]]", 1),
    )
    .unwrap();
    let unit = t.path("roles/files/worker/sidekiq.service");
    let mut text = std::fs::read_to_string(&unit).unwrap();
    text.push_str("# changed for the diff test\n");
    std::fs::write(&unit, text).unwrap();
    let (h2, secs) = build_local(&mut t, "worker");
    eprintln!("worker build 3: {secs:.0} s");
    assert_ne!(h2, h1);

    let r = t.run_with(&["diff", "worker", &h1[..8], &h2[..12], "--target", "local"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let jq = |name: &str| {
        let p = &debs(&json(
            &std::fs::read(t.path(&format!("images/local/worker-{}.spdx.json", &h2[..12])))
                .unwrap(),
        ))[name];
        p["versionInfo"].as_str().unwrap().to_string()
    };
    let expected = format!(
        "\
worker: {} (local) -> {} (local)
packages: 3 added, 0 removed, 0 upgraded, 0 downgraded
  + jq        {:w$}  amd64
  + libjq1    {:w$}  amd64
  + libonig5  {:w$}  amd64
files: 1 changed
  ~ /etc/systemd/system/sidekiq.service: content
templates: none changed
archives: none changed
inputs (as plan says it):
  changed file roles/files/worker/sidekiq.service
  packages.apt + jq
",
        &h1[..12],
        &h2[..12],
        jq("jq"),
        jq("libjq1"),
        jq("libonig5"),
        w = ["jq", "libjq1", "libonig5"]
            .iter()
            .map(|p| jq(p).len())
            .max()
            .unwrap()
    );
    assert_eq!(r.stdout, expected);

    // The same as JSON, and with --exit-code: 1 when they differ, 0 when
    // they hold the same.
    let v: Value = serde_json::from_str(&t.ok_with(&[
        "diff", "worker", &h1, &h2, "--target", "local", "--output", "json",
    ]))
    .unwrap();
    let added: Vec<&str> = v["packages"]["added"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(added, ["jq", "libjq1", "libonig5"]);
    assert_eq!(v["files"][0]["path"], "/etc/systemd/system/sidekiq.service");
    assert_eq!(v["from"]["hash"], h1.as_str());
    let r = t.run_with(&[
        "diff",
        "worker",
        &h1,
        &h2,
        "--target",
        "local",
        "--exit-code",
    ]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    let r = t.run_with(&[
        "diff",
        "worker",
        &h2,
        &h2,
        "--target",
        "local",
        "--exit-code",
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("packages: 0 added, 0 removed"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.ends_with("inputs: the same\n"), "{}", r.stdout);

    // Tarballs named by path: the same packages and files, read from the
    // root filesystems themselves.
    let r = t.run_with(&[
        "diff",
        "worker",
        tar1.to_str().unwrap(),
        &format!("images/local/worker-{}.tar", &h2[..12]),
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("packages: 3 added, 0 removed, 0 upgraded, 0 downgraded\n"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("files: 1 changed\n  ~ /etc/systemd/system/sidekiq.service: content\n"),
        "{}",
        r.stdout
    );

    // Names that are none of the kinds `diff` takes, and a hash no build has.
    let r = t.run_with(&["diff", "worker", "nope", &h2]);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr.contains("error: `nope` is not a content hash"),
        "{}",
        r.stderr
    );
    let r = t.run_with(&["sbom", "worker", "--target", "local", "--hash", "ffffffff"]);
    assert_eq!(r.status, 2);
    assert!(
        r.stderr.contains(
            "error: no local build of `worker` has a hash starting with `ffffffff` (its builds: "
        ),
        "{}",
        r.stderr
    );
}

#[test]
fn an_ami_build_keeps_an_sbom_and_its_images_carry_its_digest() {
    let moto = Moto::start();
    let mut t = crate::aws::project(&moto);
    let (home, copy) = crate::aws::build(&mut t);
    let hash = t.hash("app");
    let records: Value =
        serde_json::from_slice(&std::fs::read(t.path(".imagectl/builds.json")).unwrap()).unwrap();
    let sbom = &records[0]["sbom"];
    let path = t.path(sbom["path"].as_str().unwrap());
    assert!(
        sbom["path"]
            .as_str()
            .unwrap()
            .starts_with(".imagectl/builds/app-")
            && sbom["path"].as_str().unwrap().ends_with("/sbom.spdx.json"),
        "{sbom}"
    );
    let digest = sha256sum(&path);
    assert_eq!(sbom["sha256"], digest.as_str());
    assert_valid_spdx(&path);

    // `imagectl sbom` (AMIs by default) prints those bytes.
    let r = t.run_with(&["sbom", "app"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout.as_bytes(),
        std::fs::read(&path).unwrap().as_slice()
    );

    // It lists the role's declared packages (the pinned one with its purl)
    // and says that is all it knows.
    let doc = json(r.stdout.as_bytes());
    assert!(doc["creationInfo"]["comment"]
        .as_str()
        .unwrap()
        .contains("only the role's [packages] apt list"));
    let packages = debs(&doc);
    assert_eq!(
        packages.keys().collect::<Vec<_>>(),
        ["ca-certificates", "curl", "nginx", "ruby"],
        "the packages of app and of base, which it extends: {doc}"
    );
    assert_eq!(
        packages["nginx"]["externalRefs"][0]["referenceLocator"],
        "pkg:deb/debian/nginx@1.22.1-9"
    );
    assert!(packages["ruby"].get("versionInfo").is_none());
    let annotation = doc["packages"][0]["annotations"][0]["comment"]
        .as_str()
        .unwrap();
    assert!(
        annotation.contains(&format!("imagectl:content-hash={hash}")),
        "{annotation}"
    );

    // Both regions' images carry its digest, read back with boto3.
    for (region, id) in [("eu-west-1", &home), ("eu-central-1", &copy)] {
        let tags = moto.boto3(&format!(
            r#"
ec2 = boto3.client("ec2", region_name="{region}")
i = ec2.describe_images(ImageIds=["{id}"])["Images"][0]
print(json.dumps({{t["Key"]: t["Value"] for t in i.get("Tags", [])}}))
"#
        ));
        assert_eq!(tags["imagectl:sbom-sha256"], digest.as_str(), "{region}");
    }

    // A change not built yet, as a pull request's plan shows it: dev's
    // image against the SBOM the build of the new hash will keep, made
    // from the staged context; the build then keeps exactly those bytes.
    t.ok_with(&["publish", "app", "--channel", "dev"]);
    crate::aws::change(&t, 1);
    let hash2 = t.hash("app");
    let planned = t.run_with(&["sbom", "app"]);
    assert_eq!(planned.status, 0, "{}", planned.stderr);
    assert!(
        planned.stderr.contains("no AMI build of")
            && planned.stderr.contains("the SBOM its build will keep"),
        "{}",
        planned.stderr
    );
    let planned_diff = t.run_with(&["diff", "app", "dev", &hash2]);
    assert_eq!(planned_diff.status, 0, "{}", planned_diff.stderr);
    assert!(
        planned_diff
            .stdout
            .contains("  ~ /etc/app/app.conf: content\n"),
        "{}",
        planned_diff.stdout
    );

    // The second build, compared by AMI and by channel.
    let (home2, _) = crate::aws::build(&mut t);
    assert_eq!(t.ok_with(&["sbom", "app"]), planned.stdout);
    t.ok_with(&["publish", "app", "--channel", "dev", "--ami", &home2]);
    let r = t.run_with(&["diff", "app", &home, "dev"]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!(
            "\
app: {} (aws, {home}) -> {} (aws, dev)
packages: 0 added, 0 removed, 0 upgraded, 0 downgraded
files: 1 changed
  ~ /etc/app/app.conf: content
templates: none changed
archives: none changed
inputs (as plan says it):
  changed file roles/files/app/app.conf
",
            &hash[..12],
            &hash2[..12]
        )
    );
    // Another machine (no build record, no build directories) reads both
    // SBOMs as the builds published them beside the channels: the same
    // diff, the same bytes; the parameter, read with boto3 and gunzipped,
    // holds exactly the build's file.
    let mut elsewhere = Test::from_tree(t.dir.path()).envs(moto.env());
    std::fs::remove_dir_all(elsewhere.path(".imagectl")).unwrap();
    let r2 = elsewhere.run_with(&["diff", "app", &home, "dev"]);
    assert_eq!((r2.status, &r2.stdout), (0, &r.stdout), "{}", r2.stderr);
    let r2 = elsewhere.run_with(&["sbom", "app", "--hash", &hash]);
    assert_eq!(r2.status, 0, "{}", r2.stderr);
    let kept = std::fs::read(&path).unwrap();
    assert_eq!(r2.stdout.as_bytes(), kept.as_slice());
    let published = moto.boto3(&format!(
        r#"
import base64, gzip
v = boto3.client("ssm", region_name="eu-west-1").get_parameter(Name="/imagectl/app/sbom/{hash}")["Parameter"]["Value"]
print(json.dumps(gzip.decompress(base64.b64decode(v)).decode()))
"#
    ));
    assert_eq!(published.as_str().unwrap().as_bytes(), kept.as_slice());

    // A kept SBOM that no longer matches the image's tag is refused.
    std::fs::write(&path, b"{}").unwrap();
    let r = t.run_with(&["diff", "app", &home, &home2]);
    assert_eq!(r.status, 1, "{}", r.stdout);
    assert!(
        r.stderr.contains("has changed since the build wrote it"),
        "{}",
        r.stderr
    );
}
