//! The disk target (`build --target disk`) and `test --vm`: a real GPT disk
//! image from Debian's mirror, read back with the tools that did not make it
//! (sfdisk, mtools, cmp, OpenSSL's SHA-256), booted in QEMU with OVMF the
//! way an instance boots, and boots that cannot finish, named with the
//! guest's console. The worker's disk is then shipped to moto with
//! `build --method disk` and read back with boto3 (`disk_aws::read_back`).
//! Needs root, qemu-system-x86 and ovmf (as CI runs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

use crate::disk_aws::{assert_uploaded, launch_template, published, read_back};
use crate::moto::Moto;
use crate::support::{repo_root, Test};

/// What `test --vm` is given for a boot that fails: the kernel panic or
/// emergency mode stop it long before this.
const VM_TIMEOUT: &str = "240";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// A path `imagectl` printed, with the project's `[ROOT]` put back.
fn unroot(t: &Test, printed: &str) -> PathBuf {
    PathBuf::from(printed.replace("[ROOT]", &t.dir.path().to_string_lossy()))
}

/// Runs `f`, printing how long `what` took (to the test's output: the slow
/// steps of these tests are worth seeing in CI's log).
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    eprintln!("{what}: {:.0} s", start.elapsed().as_secs_f64());
    out
}

/// Runs a tool that must succeed; returns its stdout.
fn tool(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (scripts/setup installs it)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An mtools command on the EFI system partition of `disk` (which starts
/// at 1 MiB), with its arguments.
fn mtools(name: &str, disk: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(name);
    c.env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(format!("{}@@1M", disk.display()))
        .args(args);
    c
}

/// SHA-256 of a file by OpenSSL (through Python's hashlib): not the code
/// imagectl hashes with, and several times faster than coreutils'
/// sha256sum over a 16 GiB image.
fn openssl_sha256(path: &Path) -> String {
    tool(Command::new("python3").arg("-c").arg(
        "import hashlib, sys\nwith open(sys.argv[1], 'rb') as f:\n    print(hashlib.file_digest(f, 'sha256').hexdigest())",
    ).arg(path))
    .trim()
    .to_string()
}

/// `build ROLE --target disk --output json`: the one image it printed.
fn build_disk(t: &mut Test, role: &str) -> Value {
    let v = timed(&format!("build {role} --target disk"), || {
        json(&t.ok_with(&["build", role, "--target", "disk", "--output", "json"]))
    });
    assert_eq!(v["images"].as_array().map(Vec::len), Some(1), "{v}");
    let image = v["images"][0].clone();
    assert_eq!(image["role"], role, "{v}");
    assert_eq!(image["built"], true, "{v}");
    for key in ["hash", "path", "sha256"] {
        assert!(image[key].is_string(), "no `{key}` in {v}");
    }
    assert!(image["duration_secs"].as_f64().is_some(), "{v}");
    image
}

/// (kind, name) of each result of a `test --output json` report, in order,
/// without the note a unit skipped under systemd-nspawn gets (chrony needs
/// CAP_SYS_TIME, which a container lacks, and runs in the VM).
fn checked(report: &Value) -> Vec<(String, String)> {
    report["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {report}"))
        .iter()
        .map(|r| {
            let name = r["name"].as_str().unwrap();
            let name = name
                .strip_suffix(" (skipped: its conditions do not hold here)")
                .unwrap_or(name);
            (r["kind"].as_str().unwrap().to_string(), name.to_string())
        })
        .collect()
}

/// The in-toto statement a DSSE envelope carries (base64).
fn statement_of(envelope: &Value) -> Value {
    let payload = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        envelope["payload"].as_str().expect("a DSSE envelope"),
    )
    .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// The partition table as sfdisk reads it.
fn partition_table(disk: &Path) -> Value {
    json(&tool(Command::new("sfdisk").arg("--json").arg(disk)))["partitiontable"].clone()
}

#[test]
fn the_worker_disk_is_reproducible_and_boots_as_the_container_does() {
    let mut t = Test::repo();
    let packer_hash = t.hash("worker");
    let image = build_disk(&mut t, "worker");
    let hash = image["hash"].as_str().unwrap().to_string();
    let sha256 = image["sha256"].as_str().unwrap().to_string();
    assert_ne!(
        hash, packer_hash,
        "the disk method enters the content hash: a disk never takes a Packer build's name"
    );
    let name = format!("worker-{}.raw", &hash[..12]);
    assert_eq!(image["path"], format!("[ROOT]/images/local/{name}"));
    let raw = t.path(&format!("images/local/{name}"));
    let meta = std::fs::metadata(&raw).unwrap();
    assert_eq!(
        meta.len(),
        16 << 30,
        "the role's volume_size_gb (16), to the byte"
    );
    let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    assert!(
        allocated < meta.len() / 4,
        "the image is sparse: {allocated} bytes allocated of {}",
        meta.len()
    );
    let built_at = meta.modified().unwrap();

    // Its SHA-256, recomputed once by other code, is the one the build
    // printed, that SHA256SUMS holds (in the form `sha256sum -c` reads)
    // and that the signed provenance names.
    assert_eq!(
        timed("SHA-256 of 16 GiB", || openssl_sha256(&raw)),
        sha256,
        "the build printed another SHA-256"
    );
    let sums = std::fs::read_to_string(t.path("images/local/SHA256SUMS")).unwrap();
    assert!(
        sums.lines().any(|l| l == format!("{sha256}  {name}")),
        "SHA256SUMS: {sums}"
    );
    // The provenance beside it, signed with the local key, names the disk
    // by its file name and SHA-256. (`imagectl verify` of a disk image:
    // `a_disk_image_verifies_against_its_signed_provenance`.)
    let envelope = json(
        &std::fs::read_to_string(
            t.path(&format!("images/local/worker-{}.intoto.json", &hash[..12])),
        )
        .expect("a signed provenance beside the disk image"),
    );
    let statement = statement_of(&envelope);
    assert_eq!(
        statement["subject"][0]["name"],
        name.as_str(),
        "{statement}"
    );
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        sha256.as_str(),
        "{statement}"
    );
    // The SBOM beside it lists what the disk adds: the kernel and the boot
    // loader.
    let sbom = json(
        &std::fs::read_to_string(t.path(&format!("images/local/worker-{}.spdx.json", &hash[..12])))
            .expect("an SBOM beside the disk image"),
    );
    let packages: Vec<&str> = sbom["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in ["linux-image-cloud-amd64", "systemd-boot-efi", "ruby"] {
        assert!(packages.contains(&p), "{p} not in the SBOM: {packages:?}");
    }

    // The partition table: GPT, the ESP at 1 MiB (256 MiB), the x86-64 root
    // after it to the backup table; UUIDs that udev's by-partuuid names
    // (lowercase) are the ones the boot loader entry uses.
    let pt = partition_table(&raw);
    assert_eq!(pt["label"], "gpt", "{pt}");
    assert_eq!(pt["unit"], "sectors", "{pt}");
    assert_eq!(pt["sectorsize"], 512, "{pt}");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{pt}");
    let (esp, root) = (&parts[0], &parts[1]);
    assert_eq!(esp["start"], 2048, "{pt}");
    assert_eq!(esp["size"], 256 * 2048, "{pt}");
    assert_eq!(esp["name"], "esp", "{pt}");
    assert_eq!(
        esp["type"].as_str().unwrap().to_lowercase(),
        "c12a7328-f81f-11d2-ba4b-00a0c93ec93b",
        "the EFI System type: {pt}"
    );
    assert_eq!(root["start"], 2048 + 256 * 2048, "{pt}");
    assert_eq!(
        root["start"].as_u64().unwrap() + root["size"].as_u64().unwrap(),
        (16u64 << 30) / 512 - 2048,
        "the root fills the disk but GPT's tail: {pt}"
    );
    assert_eq!(root["name"], "root", "{pt}");
    assert_eq!(
        root["type"].as_str().unwrap().to_lowercase(),
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        "the Discoverable Partitions root (x86-64) type: {pt}"
    );
    let root_uuid = root["uuid"].as_str().unwrap().to_lowercase();
    let esp_uuid = esp["uuid"].as_str().unwrap().to_lowercase();
    assert_ne!(root_uuid, esp_uuid);
    for u in [&root_uuid, &esp_uuid] {
        assert_eq!(u.len(), 36, "{u}");
    }

    // The ESP, read by mtools: systemd-boot where firmware looks for a
    // removable disk's loader, the one entry, the kernel and initramfs.
    let listing = tool(&mut mtools("mdir", &raw, &["-/", "-b", "::/"]));
    for f in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/loader/loader.conf",
        "::/loader/entries/imagectl.conf",
        "::/vmlinuz",
        "::/initrd.img",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.trim_end().eq_ignore_ascii_case(f)),
            "{f} not on the ESP:\n{listing}"
        );
    }
    let loader = Command::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args([
            "-i",
            &format!("{}@@1M", raw.display()),
            "::/EFI/BOOT/BOOTX64.EFI",
        ])
        .output()
        .unwrap();
    assert!(loader.status.success());
    assert!(
        loader.stdout.starts_with(b"MZ") && loader.stdout.len() > 50_000,
        "BOOTX64.EFI is no PE image ({} bytes)",
        loader.stdout.len()
    );
    let entry = tool(&mut mtools(
        "mtype",
        &raw,
        &["::/loader/entries/imagectl.conf"],
    ));
    let options = entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap_or_else(|| panic!("no options line:\n{entry}"));
    assert!(
        options.starts_with(&format!("root=PARTUUID={root_uuid} ro ")),
        "the entry boots another root than the partition table's: {options}"
    );
    assert!(
        options.split(' ').any(|a| a == "console=ttyS0,115200"),
        "{options}"
    );
    assert!(entry.lines().any(|l| l == "linux /vmlinuz"), "{entry}");
    assert!(entry.lines().any(|l| l == "initrd /initrd.img"), "{entry}");
    let loader_conf = tool(&mut mtools("mtype", &raw, &["::/loader/loader.conf"]));
    assert!(
        loader_conf.lines().any(|l| l == "default imagectl.conf"),
        "{loader_conf}"
    );

    // Reproducible: another checkout, with an empty package cache, makes
    // the same disk (compared byte for byte below, after the boot).
    let cache = tempfile::tempdir().unwrap();
    let mut again = Test::repo().envs([(
        "IMAGECTL_APT_CACHE",
        cache.path().to_str().unwrap().to_string(),
    )]);
    let image2 = build_disk(&mut again, "worker");
    assert_eq!(image2["hash"], hash.as_str());
    assert_eq!(
        image2["sha256"],
        sha256.as_str(),
        "two builds of one hash differ"
    );
    let raw2 = again.path(&format!("images/local/{name}"));
    // `[image] method = "disk"` in the role names the same hash as
    // `--target disk`: `imagectl hash` shows what a disk will be called.
    let role = std::fs::read_to_string(again.path("roles/worker.toml")).unwrap();
    let with_method = role.replacen("[image]\n", "[image]\nmethod = \"disk\"\n", 1);
    assert_ne!(with_method, role, "roles/worker.toml has no [image] table");
    std::fs::write(again.path("roles/worker.toml"), with_method).unwrap();
    assert_eq!(again.hash("worker"), hash);

    // The VM boots the disk (not rebuilt, and left as it was) with the
    // agent reading IMDSv2, and every check, unit and the agent pass.
    let r = timed("test worker --vm", || {
        t.run_with(&["test", "worker", "--vm", "--output", "json"])
    });
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    let vm = json(&r.stdout);
    assert_eq!(vm["passed"], true, "{vm}");
    assert_eq!(vm["role"], "worker", "{vm}");
    assert!(
        vm.get("console").is_none(),
        "a console for a boot that passed: {vm}"
    );
    assert!(
        vm["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["passed"] == true),
        "{vm}"
    );
    assert_eq!(
        vm["agent_report"]["status"], "ok",
        "the agent's report: {vm}"
    );
    assert!(vm["boot_to_checks_secs"].as_f64().unwrap() > 0.0, "{vm}");
    assert!(!r.stderr.contains("mmdebstrap"), "rebuilt: {}", r.stderr);
    assert_eq!(
        std::fs::metadata(&raw).unwrap().modified().unwrap(),
        built_at,
        "the test wrote to the disk image"
    );
    let leftovers: Vec<String> = std::fs::read_dir(t.path("images/local"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".vm-") || n.ends_with(".console.log"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // Byte for byte: the two builds, and the disk after its boot.
    let cmp = timed("cmp of two 16 GiB images", || {
        Command::new("cmp").arg(&raw).arg(&raw2).output().unwrap()
    });
    assert!(
        cmp.status.success(),
        "the two builds differ: {}",
        String::from_utf8_lossy(&cmp.stdout)
    );

    // The same checks and units as under systemd-nspawn, which passes too.
    let r = timed("test worker (nspawn)", || {
        t.run_with(&["test", "worker", "--output", "json"])
    });
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    let nspawn = json(&r.stdout);
    assert_eq!(nspawn["passed"], true, "{nspawn}");
    assert_eq!(
        nspawn["booted"], true,
        "systemd-nspawn could not boot here: only the checks ran, nothing to compare the units with"
    );
    assert_eq!(vm["booted"], true, "{vm}");
    let names = checked(&vm);
    assert!(
        names.contains(&("unit".to_string(), "sidekiq.service".to_string()))
            && names.contains(&("agent".to_string(), "imagectl-agent.service".to_string())),
        "{names:?}"
    );
    assert_eq!(
        names,
        checked(&nspawn),
        "the VM and the container check different things"
    );

    // Shipped: the checkout whose role says `method = "disk"` builds for
    // AWS (moto) from the disk it has, with no Packer and no second disk
    // build. boto3 reads the snapshot back: the disk's non-zero blocks,
    // byte for byte; the image and its copy carry the tags.
    let moto = Moto::start();
    moto.setup_fixture();
    launch_template(&moto, "learn-worker-staging", "staging");
    let mut aws = again.envs(moto.env());
    let r = timed("build worker --method disk (to moto)", || {
        aws.run_with(&["build", "worker", "--output", "json"])
    });
    assert_eq!(r.status, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("mmdebstrap"), "rebuilt: {}", r.stderr);
    let built = json(&r.stdout);
    let b = &built["builds"][0];
    assert_eq!(b["status"], "built", "{built}");
    assert_eq!(b["hash"], hash.as_str(), "{built}");
    let home = b["amis"]["eu-west-1"].as_str().unwrap().to_string();
    let copy = b["amis"]["eu-central-1"].as_str().unwrap().to_string();
    let back = read_back(&moto, "worker", &home, "eu-central-1", &copy, &raw2);
    assert_uploaded(&back, "worker", &hash, &sha256, 16, 1000);
    // Published as a Packer-built image is: the role's current hash is the
    // disk's, so a plain publish finds it; the channel and the launch
    // template's new default name it. The same hash again is reused.
    aws.ok_with(&["publish", "worker", "--channel", "staging"]);
    let published = published(&moto, "worker", "staging", "learn-worker-staging");
    assert_eq!(published["channel"], home.as_str(), "{published}");
    assert_eq!(published["template"], home.as_str(), "{published}");
    let rebuilt = json(&aws.ok_with(&["build", "worker", "--output", "json"]));
    assert_eq!(rebuilt["builds"][0]["status"], "reused", "{rebuilt}");
    assert_eq!(rebuilt["builds"][0]["amis"]["eu-west-1"], home.as_str());
}

fn broken() -> Test {
    Test::from_tree(&repo_root().join("tests/fixtures/disk-broken"))
}

/// `test ROLE --vm` of a boot that cannot finish, on the disk `raw` built
/// for it: exit 1, the report and the error naming why it stopped (the
/// console, well before the time limit), the console's last lines in the
/// error and the whole log kept beside the disk. Returns stderr, the
/// console's tail and the whole log.
fn vm_fails(t: &mut Test, role: &str, raw: &Path) -> (String, String, String) {
    let r = timed(&format!("test {role} --vm (fails)"), || {
        t.run_with(&[
            "test",
            role,
            "--vm",
            "--timeout",
            VM_TIMEOUT,
            "--output",
            "json",
        ])
    });
    assert_eq!(r.status, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("mmdebstrap"), "rebuilt: {}", r.stderr);
    let report = json(&r.stdout);
    assert_eq!(report["passed"], false, "{report}");
    assert_eq!(
        report["results"],
        serde_json::json!([]),
        "no check ran: {report}"
    );
    let console = &report["console"];
    let stopped = console["stopped"].as_str().unwrap_or_default();
    assert!(
        stopped.starts_with("the console says \""),
        "stopped by the console, not by the time limit: {report}"
    );
    assert!(
        r.stderr.contains(&format!(
            "test of `{role}` failed: the boot did not finish its checks\n{stopped}; the guest's console ended with:\n"
        )),
        "{}",
        r.stderr
    );
    let tail = console["tail"].as_str().unwrap().to_string();
    assert!(
        tail.lines().count() > 5 && r.stderr.contains(&tail),
        "the console's last lines in the error: {}",
        r.stderr
    );
    let log = console["log"].as_str().unwrap();
    assert!(
        r.stderr.contains(&format!("(the whole log: {log})")),
        "{}",
        r.stderr
    );
    let log = unroot(t, log);
    assert_eq!(log, raw.with_extension("console.log"));
    let whole = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("the console log {}: {e}", log.display()))
        .replace('\r', "");
    assert!(
        !std::fs::read_dir(t.path("images/local"))
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".vm-")),
        "the booted copy was left behind"
    );
    (r.stderr, tail, whole)
}

#[test]
fn a_broken_fstab_stops_the_vm_test_in_emergency_mode_with_the_console_log() {
    let mut t = broken();
    let image = build_disk(&mut t, "broken-fstab");
    let raw = unroot(&t, image["path"].as_str().unwrap());
    let (stderr, tail, log) = vm_fails(&mut t, "broken-fstab", &raw);
    assert!(
        stderr.contains("the console says \"You are in emergency mode\"")
            || stderr.contains(
                "the console says \"Cannot open access to console, the root account is locked\""
            ),
        "{stderr}"
    );
    assert!(
        tail.contains("emergency"),
        "the console's tail shows emergency mode:\n{tail}"
    );
    assert!(
        log.contains("Failed to mount") && log.contains("/srv/broken"),
        "the console log names the mount that failed:\n{log}"
    );
}

#[test]
fn a_kernel_panic_stops_the_vm_test_with_the_console_log() {
    let mut t = broken();
    let image = build_disk(&mut t, "broken-init");
    // The role's argument is on the kernel command line, after imagectl's.
    let raw = unroot(&t, image["path"].as_str().unwrap());
    let entry = tool(&mut mtools(
        "mtype",
        &raw,
        &["::/loader/entries/imagectl.conf"],
    ));
    assert!(
        entry
            .lines()
            .any(|l| l.starts_with("options root=PARTUUID=") && l.ends_with(" init=/bin/false")),
        "{entry}"
    );
    let (stderr, tail, log) = vm_fails(&mut t, "broken-init", &raw);
    assert!(
        stderr.contains("the console says \"Kernel panic\""),
        "{stderr}"
    );
    assert!(
        tail.contains("Kernel panic - not syncing: Attempted to kill init!"),
        "{tail}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("Kernel command line: ") && l.ends_with(" init=/bin/false")),
        "the kernel was given the role's argument:\n{log}"
    );
}

/// `imagectl verify images/local/ROLE-HASH12.raw`: the local key's
/// signature, the statement naming these bytes, the SBOM beside them.
#[test]
fn a_disk_image_verifies_against_its_signed_provenance() {
    let mut t = broken();
    let image = build_disk(&mut t, "broken-init");
    let raw = unroot(&t, image["path"].as_str().unwrap());
    let name = raw.file_name().unwrap().to_string_lossy().into_owned();
    let r = t.run_with(&[
        "verify",
        &format!("images/local/{name}"),
        "--output",
        "json",
    ]);
    assert_eq!(r.status, 0, "{}", r.stderr);
    let v = json(&r.stdout);
    assert_eq!(v["verified"][0]["hash"], image["hash"], "{v}");
    // One changed byte of the disk, and it no longer verifies.
    let f = std::fs::OpenOptions::new().write(true).open(&raw).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"x", 4 << 20).unwrap();
    drop(f);
    let r = t.run_with(&["verify", &format!("images/local/{name}")]);
    assert_eq!(r.status, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("the statement does not name these bytes"),
        "{}",
        r.stderr
    );
}

#[test]
fn method_is_refused_with_a_local_or_disk_target() {
    for target in ["local", "disk"] {
        let r = Test::repo()
            .args(&["build", "worker", "--target", target, "--method", "disk"])
            .run();
        assert_eq!(r.status, 2, "--target {target}: {}", r.stderr);
        assert_eq!(
            r.stderr,
            "error: `--method` is for `--target aws`: `--target disk` makes the disk image, `--target local` the tarball\n",
            "--target {target}"
        );
        assert_eq!(r.stdout, "");
    }
}

/// worker.toml with `args` as its `[image] kernel_cmdline` (line 5).
fn worker_with_kernel_args(args: &str) -> Test {
    let t = Test::repo();
    let role = std::fs::read_to_string(t.path("roles/worker.toml")).unwrap();
    let role = role.replacen(
        "[image]\n",
        &format!("[image]\nkernel_cmdline = {args}\n"),
        1,
    );
    let t = t.write("roles/worker.toml", role);
    let line = std::fs::read_to_string(t.path("roles/worker.toml"))
        .unwrap()
        .lines()
        .position(|l| l.starts_with("kernel_cmdline"))
        .unwrap();
    assert_eq!(line + 1, 5, "roles/worker.toml's [image] moved");
    t
}

#[test]
fn a_kernel_argument_naming_the_root_is_refused_at_its_line() {
    let r = worker_with_kernel_args(r#"["quiet", "root=/dev/sda1"]"#)
        .args(&["validate"])
        .run();
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert_eq!(
        r.stderr,
        "error: `root=` is imagectl's: the disk's root partition, by its UUID
 --> roles/worker.toml:5:28
  |
5 | kernel_cmdline = [\"quiet\", \"root=/dev/sda1\"]
  |                            ^^^^^^^^^^^^^^^^
  = help: remove it; the root file system is always the disk's second partition

error: 1 problem found
"
    );
    let r = worker_with_kernel_args(r#"["loglevel=3 quiet"]"#)
        .args(&["validate"])
        .run();
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stderr.starts_with(
            "error: a kernel argument must be one word of printable ASCII\n --> roles/worker.toml:5:19\n"
        ),
        "{}",
        r.stderr
    );
}

/// A role's `console=tty1` would come last, so /dev/console would no
/// longer be the serial port: systemd's status lines (emergency mode, the
/// targets `test --vm` shows) would leave the console EC2 and `test --vm`
/// read. It is refused at its line.
#[test]
fn a_kernel_argument_naming_the_console_is_refused_at_its_line() {
    let r = worker_with_kernel_args(r#"["console=tty1"]"#)
        .args(&["validate"])
        .run();
    assert_eq!(r.status, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("console=") && r.stderr.contains(" --> roles/worker.toml:5:19\n"),
        "{}",
        r.stderr
    );
}

#[test]
fn the_disk_method_and_its_kernel_arguments_enter_the_hash() {
    let mut t = Test::repo();
    let packer = t.hash("worker");
    let inputs = t.ok_with(&["inputs", "worker"]);
    assert!(!inputs.lines().any(|l| l.starts_with("disk ")), "{inputs}");
    let role = std::fs::read_to_string(t.path("roles/worker.toml")).unwrap();
    let disk_role = role.replacen("[image]\n", "[image]\nmethod = \"disk\"\n", 1);
    let mut t = t.write("roles/worker.toml", &disk_role);
    let disk = t.hash("worker");
    assert_ne!(disk, packer);
    let inputs = t.ok_with(&["inputs", "worker"]);
    assert!(
        inputs
            .lines()
            .any(|l| l.starts_with("disk ") && l.ends_with("imagectl-disk-1")),
        "{inputs}"
    );
    let t = t.write(
        "roles/worker.toml",
        disk_role.replacen("[image]\n", "[image]\nkernel_cmdline = [\"quiet\"]\n", 1),
    );
    let quiet = t.hash("worker");
    assert_ne!(quiet, disk);
    assert_ne!(quiet, packer);
}
