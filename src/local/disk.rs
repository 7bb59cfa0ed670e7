//! The disk target: the role's root filesystem (mmdebstrap, the same staged
//! context and provisioning script, plus a kernel and boot loader) laid out
//! as a bootable GPT disk image, with no loop device or mount: an EFI
//! system partition made with mkfs.fat and mtools, an ext4 root made by
//! `mke2fs -d` inside the image file. Every identifier comes from the
//! content hash and every timestamp from `SOURCE_DATE_EPOCH`, so the same
//! inputs give the same bytes. The layout itself is
//! [`imagectl_core::disk`]'s.

use std::collections::BTreeSet;
use std::fs::{File, FileTimes};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

use imagectl_core::disk::{self, Ids};
use imagectl_core::fsutil::io_error;
use imagectl_core::target::Target;

use super::bootstrap::Plan;
use super::{need, Error};
use crate::progress::Progress;

/// The tools a disk image needs beyond the local target's.
pub fn need_tools() -> Result<(), Error> {
    need("sfdisk", "fdisk")?;
    need("mkfs.fat", "dosfstools")?;
    need("mcopy", "mtools")?;
    need("mke2fs", "e2fsprogs")?;
    need("debugfs", "e2fsprogs")
}

fn epoch(t: &Target) -> i64 {
    t.source_date_epoch().unwrap_or(0)
}

/// The bootstrap with what a disk image adds: the kernel, its initramfs
/// and the boot loader's packages; fstab and DHCP networking written before
/// the provisioning script (which may add to them); and name resolution by
/// systemd-resolved once the build host's resolv.conf is gone.
pub fn extend(plan: Plan, t: &Target, work: &Path) -> Result<Plan, Error> {
    let ids = Ids::of(t.hash.hash.as_str());
    let files = work.join("disk-files");
    for (rel, text) in [
        ("etc/fstab", disk::fstab(&ids)),
        (disk::NETWORK_PATH, disk::NETWORK.to_string()),
    ] {
        write_dated(&files.join(rel), &text, epoch(t))?;
    }
    let q = files.display();
    Ok(plan.with(
        &disk::packages(t.role.image.arch),
        vec![
            format!("sync-in {q} /"),
            "chroot \"$1\" systemctl enable systemd-networkd.service systemd-resolved.service"
                .to_string(),
        ],
        vec!["ln -sf ../run/systemd/resolve/stub-resolv.conf \"$1\"/etc/resolv.conf".to_string()],
    ))
}

/// Lays the root filesystem in `rootfs_tar` out as the target's disk image
/// in `work`; returns its path.
pub fn assemble(
    t: &Target,
    rootfs_tar: &Path,
    work: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf, Error> {
    let role = t.name();
    let ids = Ids::of(t.hash.hash.as_str());
    let epoch = epoch(t);
    let root = work.join("root");
    std::fs::create_dir_all(&root).map_err(io_error("create", &root))?;
    progress.step(role, "disk: unpacking the root filesystem");
    run(
        Command::new("tar")
            .args(["-xpf"])
            .arg(rootfs_tar)
            .args(["--numeric-owner", "--xattrs", "--xattrs-include=*", "-C"])
            .arg(&root),
        "unpack the root filesystem",
    )?;
    let kernel = kernel_version(&root)?;
    progress.step(
        role,
        &format!("disk: EFI system partition (systemd-boot, kernel {kernel})"),
    );
    let esp = work.join("esp.img");
    make_esp(t, &ids, &root, &kernel, &esp, work, epoch)?;

    let size = disk::size_bytes(t.role.image.volume_size_gb);
    let image = work.join("disk.raw");
    let file = File::create(&image).map_err(io_error("create", &image))?;
    file.set_len(size).map_err(io_error("size", &image))?;
    let script = disk::sfdisk_script(&ids, t.role.image.arch, size);
    run_with_input(
        Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(&image),
        script.as_bytes(),
        "write the partition table",
    )?;
    copy_sparse(&esp, &file, disk::ESP_START * disk::SECTOR)?;
    drop(file);

    progress.step(role, "disk: ext4 root file system (mke2fs -d)");
    let offset = disk::ROOT_START * disk::SECTOR;
    let fs_kib = disk::root_sectors(size) * disk::SECTOR / 1024;
    run(
        Command::new("mke2fs")
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .args([
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                "root",
                "-U",
                &ids.root_fs,
                "-E",
            ])
            .arg(format!(
                "hash_seed={},lazy_itable_init=1,nodiscard,root_owner=0:0,offset={offset}",
                ids.hash_seed
            ))
            .arg("-d")
            .arg(&root)
            .arg(&image)
            .arg(format!("{fs_kib}k")),
        "make the root file system",
    )?;
    let dev = format!("{}?offset={offset}", image.display());
    settle_times(&dev, epoch, work)?;
    progress.step(role, "disk: checking the root file system (e2fsck -fn)");
    run(
        Command::new("e2fsck")
            .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
            .args(["-f", "-n"])
            .arg(&dev),
        "check the root file system",
    )?;
    Ok(image)
}

/// The one kernel the image installed (`/boot/vmlinuz-VERSION`).
fn kernel_version(root: &Path) -> Result<String, Error> {
    let boot = root.join("boot");
    let versions: BTreeSet<String> = std::fs::read_dir(&boot)
        .map_err(io_error("read", &boot))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .collect();
    let mut it = versions.into_iter();
    match (it.next(), it.next()) {
        (Some(v), None) if boot.join(format!("initrd.img-{v}")).is_file() => Ok(v),
        (Some(v), None) => Err(failed(
            "find the initramfs",
            format!("/boot/initrd.img-{v} is missing: is initramfs-tools installed?"),
        )),
        (None, _) => Err(failed(
            "find the kernel",
            "the image has no /boot/vmlinuz-*".into(),
        )),
        (Some(a), Some(b)) => Err(failed(
            "find the kernel",
            format!(
                "the image has more than one kernel ({a}, {b}); a role must not install another"
            ),
        )),
    }
}

/// The EFI system partition: systemd-boot as the removable-media loader,
/// one entry with the kernel, its initramfs and the command line.
fn make_esp(
    t: &Target,
    ids: &Ids,
    root: &Path,
    kernel: &str,
    esp: &Path,
    work: &Path,
    epoch: i64,
) -> Result<(), Error> {
    let arch = t.role.image.arch;
    let kib = disk::ESP_SECTORS * disk::SECTOR / 1024;
    run(
        Command::new("mkfs.fat")
            .args([
                "-C",
                "--invariant",
                "-F",
                "32",
                "-n",
                "ESP",
                "-i",
                &ids.esp_volume_id,
            ])
            .arg(esp)
            .arg(kib.to_string()),
        "make the EFI system partition",
    )?;
    let text = work.join("esp-files");
    let loader = text.join("loader.conf");
    write_dated(&loader, disk::LOADER_CONF, epoch)?;
    let entry = text.join("imagectl.conf");
    write_dated(
        &entry,
        &disk::entry(t.name(), kernel, ids, &t.role.image.kernel_cmdline),
        epoch,
    )?;
    let mtools = |args: &[&str]| {
        let mut c = Command::new(args[0]);
        c.env("SOURCE_DATE_EPOCH", epoch.to_string())
            .env("MTOOLS_SKIP_CHECK", "1")
            .arg("-i")
            .arg(esp)
            .args(&args[1..]);
        c
    };
    let loader_path = disk::loader_path(arch);
    let loader_dir = loader_path
        .rsplit_once('/')
        .map(|(d, _)| d)
        .unwrap_or("/EFI/BOOT");
    run(
        &mut mtools(&[
            "mmd",
            "::/EFI",
            &format!("::{loader_dir}"),
            "::/loader",
            "::/loader/entries",
        ]),
        "make the EFI system partition's directories",
    )?;
    let copies: [(PathBuf, String); 5] = [
        (
            root.join(disk::systemd_boot(arch)),
            format!("::{loader_path}"),
        ),
        (loader, "::/loader/loader.conf".into()),
        (entry, "::/loader/entries/imagectl.conf".into()),
        (
            root.join(format!("boot/vmlinuz-{kernel}")),
            "::/vmlinuz".into(),
        ),
        (
            root.join(format!("boot/initrd.img-{kernel}")),
            "::/initrd.img".into(),
        ),
    ];
    for (from, to) in copies {
        if !from.is_file() {
            return Err(failed(
                "fill the EFI system partition",
                format!("{} is missing from the image", from.display()),
            ));
        }
        let from_s = from.display().to_string();
        run(
            &mut mtools(&["mcopy", "-m", &from_s, &to]),
            "fill the EFI system partition",
        )?;
    }
    Ok(())
}

/// Writes `text` to `path` (making its directory) with `epoch` as its
/// modification and access times: what is copied into the image keeps them.
fn write_dated(path: &Path, text: &str, epoch: i64) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    }
    let when = UNIX_EPOCH + Duration::from_secs(epoch.max(0) as u64);
    let mut f = File::create(path).map_err(io_error("write", path))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.set_times(FileTimes::new().set_modified(when).set_accessed(when)))
        .map_err(io_error("write", path))?;
    Ok(())
}

/// Writes `src` into `dst` at `offset`, skipping all-zero chunks so the
/// disk image stays sparse.
fn copy_sparse(src: &Path, dst: &File, offset: u64) -> Result<(), Error> {
    let mut f = File::open(src).map_err(io_error("read", src))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_error("read", src))?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|b| *b != 0) {
            dst.write_all_at(&buf[..n], offset + at)
                .map_err(io_error("write the disk image from", src))?;
        }
        at += n as u64;
    }
}

/// `mke2fs -d` copies each file's change and access times from the
/// unpacked tree, which are the time it was unpacked: every inode in use
/// gets `epoch` instead (debugfs, by inode number, from dumpe2fs's bitmap).
fn settle_times(dev: &str, epoch: i64, work: &Path) -> Result<(), Error> {
    let out = Command::new("dumpe2fs")
        .arg(dev)
        .stderr(Stdio::null())
        .output()
        .map_err(io_error("run", Path::new("dumpe2fs")))?;
    if !out.status.success() {
        return Err(failed(
            "read the root file system",
            format!("dumpe2fs {}", out.status),
        ));
    }
    let used = used_inodes(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        failed(
            "read the root file system",
            "dumpe2fs printed no inode count".into(),
        )
    })?;
    let mut cmds = String::with_capacity(used.len() * 64);
    for ino in used {
        cmds.push_str(&format!(
            "sif <{ino}> ctime @{epoch}\nsif <{ino}> atime @{epoch}\n"
        ));
    }
    let script = work.join("settle-times.debugfs");
    std::fs::write(&script, cmds).map_err(io_error("write", &script))?;
    let out = Command::new("debugfs")
        .env("E2FSPROGS_FAKE_TIME", epoch.to_string())
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(dev)
        .stdout(Stdio::null())
        .output()
        .map_err(io_error("run", Path::new("debugfs")))?;
    let err = String::from_utf8_lossy(&out.stderr);
    // debugfs prints its banner on stderr and goes on past a failed command.
    let problems: Vec<&str> = err.lines().filter(|l| !l.starts_with("debugfs ")).collect();
    if !out.status.success() || !problems.is_empty() {
        return Err(failed(
            "set the root file system's times",
            problems.join("; "),
        ));
    }
    Ok(())
}

/// The inodes in use but the reserved ones (1, 3 to 10) from dumpe2fs's
/// listing: every inode not in a group's `Free inodes:` ranges.
fn used_inodes(dump: &str) -> Option<Vec<u64>> {
    let mut count = None;
    let mut free = Vec::new();
    for line in dump.lines() {
        if let Some(n) = line.strip_prefix("Inode count:") {
            count = n.trim().parse::<u64>().ok();
        } else if let Some(ranges) = line.trim_start().strip_prefix("Free inodes: ") {
            for r in ranges.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                let (a, b) = r.split_once('-').unwrap_or((r, r));
                free.push((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?));
            }
        }
    }
    free.sort_unstable();
    let count = count?;
    let mut used = Vec::new();
    let mut ranges = free.iter().peekable();
    for ino in (2..=count).filter(|i| *i == 2 || *i >= 11) {
        while ranges.peek().is_some_and(|(_, b)| *b < ino) {
            ranges.next();
        }
        if !ranges.peek().is_some_and(|(a, b)| *a <= ino && ino <= *b) {
            used.push(ino);
        }
    }
    Some(used)
}

fn failed(step: &str, reason: String) -> Error {
    Error::Disk {
        step: step.to_string(),
        reason,
    }
}

fn run(cmd: &mut Command, step: &str) -> Result<(), Error> {
    run_with_input(cmd, &[], step)
}

/// Runs a tool to its end; its stderr is the reason when it fails.
fn run_with_input(cmd: &mut Command, input: &[u8], step: &str) -> Result<(), Error> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_error("run", Path::new(&tool)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(io_error("write to", Path::new(&tool)))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_error("wait for", Path::new(&tool)))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(5).collect();
    Err(failed(
        step,
        format!(
            "{tool} {}: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("; ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_inodes_are_those_outside_every_free_range() {
        let dump = "Inode count:              40\nGroup 0:\n  Free inodes: \nGroup 1:\n  Free inodes: 15-20, 25-40\n";
        let used = used_inodes(dump).unwrap();
        assert_eq!(used, vec![2, 11, 12, 13, 14, 21, 22, 23, 24]);
        assert_eq!(used_inodes("nothing"), None);
    }
}
