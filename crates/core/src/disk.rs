//! The layout of a role's bootable disk image (`build --target disk`,
//! `--method disk`): its partitions, their UUIDs derived from the content
//! hash, the kernel packages, the boot loader entry, fstab and networking.
//! Pure data: `src/local/disk.rs` writes it; the content hash digests
//! [`description`], so that a change here rebuilds every disk image.

use sha2::{Digest, Sha256};

use crate::arch::Arch;
use crate::digest::hex;

/// Bump whenever anything below changes what a disk image holds.
pub const DISK_LAYOUT_VERSION: u32 = 1;

/// Sector size of the image (EBS volumes and virtio disks: 512 bytes).
pub const SECTOR: u64 = 512;
/// Where the first partition starts: 1 MiB, aligned for every device.
pub const ESP_START: u64 = 2048;
/// The EFI system partition's size in sectors (256 MiB): the boot loader,
/// one kernel and its initramfs, with room for a larger initramfs.
pub const ESP_SECTORS: u64 = 256 * 2048;
/// Where the root partition starts.
pub const ROOT_START: u64 = ESP_START + ESP_SECTORS;
/// Sectors kept free at the end for GPT's backup header and table.
pub const TAIL_SECTORS: u64 = 2048;
/// The snapshot block size of the EBS direct APIs, which the image size is a
/// multiple of (it is a multiple of 1 GiB).
pub const BLOCK: u64 = 512 * 1024;

/// The EFI system partition's type GUID.
pub const ESP_TYPE: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

/// The root partition's type GUID (the Discoverable Partitions
/// Specification's root of each architecture).
pub fn root_type(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        Arch::Arm64 => "b921b045-1df0-41c3-af44-4c6f280d3fae",
    }
}

/// The boot loader's file on the ESP: the removable-media path UEFI
/// firmware boots with no boot entries (EC2 and OVMF alike).
pub fn loader_path(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "/EFI/BOOT/BOOTX64.EFI",
        Arch::Arm64 => "/EFI/BOOT/BOOTAA64.EFI",
    }
}

/// systemd-boot's binary in the image (package `systemd-boot-efi`).
pub fn systemd_boot(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
        Arch::Arm64 => "usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
    }
}

/// The packages a disk image adds to the role's: a kernel for EC2 (Debian's
/// cloud kernel: ENA, NVMe, virtio), its initramfs, udev (devices by
/// partition UUID), the boot loader, name resolution over DHCP, and the CA
/// certificates the agent needs to reach SSM over TLS (Debian's cloud
/// images, Packer's base, have them; a bootstrap does not).
pub fn packages(arch: Arch) -> Vec<&'static str> {
    let kernel = match arch {
        Arch::X86_64 => "linux-image-cloud-amd64",
        Arch::Arm64 => "linux-image-cloud-arm64",
    };
    vec![
        kernel,
        "initramfs-tools",
        "udev",
        "systemd-boot-efi",
        "systemd-resolved",
        "ca-certificates",
    ]
}

/// A UUID derived from the content hash: the same hash gives the same
/// disk, and no two hashes share partition UUIDs.
pub fn uuid(hash: &str, what: &str) -> String {
    let d = Sha256::digest(format!("imagectl disk uuid\n{what}\n{hash}\n"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    // A version 4 (random) layout, variant 1, as tools expect.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Every identifier of one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    /// The GPT disk GUID.
    pub disk: String,
    /// The ESP's partition UUID.
    pub esp: String,
    /// The root partition's UUID.
    pub root: String,
    /// The root file system's UUID.
    pub root_fs: String,
    /// ext4's directory hash seed.
    pub hash_seed: String,
    /// The ESP's FAT volume ID (8 hex digits).
    pub esp_volume_id: String,
}

impl Ids {
    /// The identifiers of the disk of `hash`.
    pub fn of(hash: &str) -> Ids {
        Ids {
            disk: uuid(hash, "disk"),
            esp: uuid(hash, "esp"),
            root: uuid(hash, "root"),
            root_fs: uuid(hash, "root-fs"),
            hash_seed: uuid(hash, "hash-seed"),
            esp_volume_id: uuid(hash, "esp-volume")[..8].to_string(),
        }
    }
}

/// The kernel command line: the root partition by its UUID, read-only
/// until systemd remounts it, the serial console EC2 shows
/// (`get-console-output`) and `test --vm` keeps, NVMe I/O that never times
/// out (EBS's advice), then the role's own arguments.
pub fn cmdline(ids: &Ids, extra: &[String]) -> String {
    let mut args = vec![
        format!("root=PARTUUID={}", ids.root),
        "ro".to_string(),
        "console=tty0".to_string(),
        "console=ttyS0,115200".to_string(),
        "nvme_core.io_timeout=4294967295".to_string(),
    ];
    args.extend(extra.iter().cloned());
    args.join(" ")
}

/// `/etc/fstab`, written before the provisioning script runs (which may add
/// to it): the root by partition UUID, checked at boot, and the ESP, which
/// nothing on a running instance needs, mounted only on demand.
pub fn fstab(ids: &Ids) -> String {
    format!(
        "# Written by imagectl: the disk's partitions by their UUIDs.\n\
         PARTUUID={} / ext4 defaults,errors=remount-ro 0 1\n\
         PARTUUID={} /boot/efi vfat noauto,nofail,umask=0077 0 2\n",
        ids.root, ids.esp
    )
}

/// systemd-networkd's configuration: DHCP on every Ethernet NIC (ENA on
/// EC2, virtio in `test --vm`), which gives the route to the instance
/// metadata service at 169.254.169.254.
pub const NETWORK: &str = "# Written by imagectl: DHCP on every Ethernet NIC (ENA on EC2).\n\
[Match]\n\
Type=ether\n\
Name=en* eth*\n\
\n\
[Network]\n\
DHCP=yes\n\
\n\
[DHCPv4]\n\
UseDomains=yes\n";

/// Where [`NETWORK`] goes in the image.
pub const NETWORK_PATH: &str = "etc/systemd/network/80-imagectl-dhcp.network";

/// systemd-boot's `loader.conf`: the one entry, at once.
pub const LOADER_CONF: &str = "default imagectl.conf\ntimeout 0\neditor no\n";

/// The boot loader entry of the image's kernel.
pub fn entry(role: &str, kernel_version: &str, ids: &Ids, extra: &[String]) -> String {
    format!(
        "title imagectl {role} ({kernel_version})\nlinux /vmlinuz\ninitrd /initrd.img\noptions {}\n",
        cmdline(ids, extra)
    )
}

/// What the content hash digests of the layout: its version and everything
/// above that does not depend on the hash.
pub fn description(arch: Arch, extra: &[String]) -> String {
    format!(
        "imagectl-disk-{DISK_LAYOUT_VERSION}\nesp {ESP_START}+{ESP_SECTORS}\nroot-type {}\npackages {}\ncmdline-extra {}\nloader {}\n{LOADER_CONF}{NETWORK}{}",
        root_type(arch),
        packages(arch).join(","),
        extra.join(" "),
        loader_path(arch),
        fstab(&Ids::of("")),
    )
}

/// The `disk` input's digest for the content hash.
pub fn digest(arch: Arch, extra: &[String]) -> String {
    hex(&Sha256::digest(description(arch, extra)))
}

/// The size of a disk image for a root volume of `gib` GiB.
pub fn size_bytes(gib: u32) -> u64 {
    u64::from(gib) * 1024 * 1024 * 1024
}

/// The root partition's length in sectors, on a disk of `size` bytes.
pub fn root_sectors(size: u64) -> u64 {
    size / SECTOR - ROOT_START - TAIL_SECTORS
}

/// The `sfdisk` script of the partition table.
pub fn sfdisk_script(ids: &Ids, arch: Arch, size: u64) -> String {
    format!(
        "label: gpt\nlabel-id: {}\nunit: sectors\nfirst-lba: {ESP_START}\n\
         start={ESP_START}, size={ESP_SECTORS}, type={ESP_TYPE}, uuid={}, name=\"esp\"\n\
         start={ROOT_START}, size={}, type={}, uuid={}, name=\"root\"\n",
        ids.disk,
        ids.esp,
        root_sectors(size),
        root_type(arch),
        ids.root
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_lowercase_v4_and_differ_by_hash_and_use() {
        let a = Ids::of("aa");
        let b = Ids::of("bb");
        assert_ne!(a.root, b.root);
        assert_ne!(a.root, a.esp);
        assert_eq!(a, Ids::of("aa"));
        for u in [&a.disk, &a.esp, &a.root, &a.root_fs, &a.hash_seed] {
            assert_eq!(u.len(), 36, "{u}");
            assert_eq!(u.as_bytes()[14], b'4', "{u}");
            assert!(matches!(u.as_bytes()[19], b'8' | b'9' | b'a' | b'b'), "{u}");
            assert_eq!(u.to_lowercase(), *u);
        }
        assert_eq!(a.esp_volume_id.len(), 8);
    }

    #[test]
    fn the_command_line_names_the_root_partition_then_the_roles_arguments() {
        let ids = Ids::of("aa");
        let c = cmdline(&ids, &["quiet".into()]);
        assert!(
            c.starts_with(&format!("root=PARTUUID={} ro ", ids.root)),
            "{c}"
        );
        assert!(c.ends_with(" quiet"), "{c}");
        assert!(fstab(&ids).contains(&format!("PARTUUID={} / ext4", ids.root)));
    }

    #[test]
    fn the_partitions_fill_the_disk_but_its_tail() {
        let size = size_bytes(8);
        let end = ROOT_START + root_sectors(size) + TAIL_SECTORS;
        assert_eq!(end * SECTOR, size);
        assert_eq!(size % BLOCK, 0);
        assert_ne!(
            digest(Arch::X86_64, &[]),
            digest(Arch::X86_64, &["quiet".into()])
        );
    }
}
