//! The staged build context: exactly what goes into an image, as a
//! directory that every target uses (Packer uploads it, the local target
//! copies it into a root filesystem), with the one provisioning script that
//! installs it.
//!
//! Layout of a staged context:
//!
//! ```text
//! provision.sh                         installs everything below, then runs the checks
//! archives/<n>-<name>                  every `[[archives]]` tar, unpacked by provision.sh
//! rootfs/<dest>                        every role file at its destination
//! rootfs/usr/local/bin/imagectl-agent  the agent
//! rootfs/etc/systemd/system/imagectl-agent.service
//! rootfs/etc/imagectl/image.json       role, hash, [boot], manifest of baked files
//! rootfs/etc/imagectl/templates/...    the boot templates
//! ```

use std::path::{Path, PathBuf};

use imagectl_agent::config::{
    ImageConfig, ManifestEntry, CONFIG_DIR, CONFIG_FILE, FORMAT_VERSION, TEMPLATES_DIR,
};
use sha2::{Digest, Sha256};

use crate::hash::{hex, ContentHash, LAYOUT_VERSION};
use crate::project::{Arch, Project};
use crate::role::Role;

/// Where the agent binary lives in every image.
pub const AGENT_BIN: &str = "/usr/local/bin/imagectl-agent";
/// The agent's unit in every image.
pub const AGENT_UNIT: &str = "/etc/systemd/system/imagectl-agent.service";
/// The package inventory the provisioning script writes into every image.
pub const INVENTORY: &str = "/etc/imagectl/packages.tsv";

/// Errors staging a build context.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The agent binary is not where it was looked for.
    #[error("the imagectl-agent binary was not found at `{}`; build it with `cargo build --release -p imagectl-agent` and pass `--agent PATH` (or set IMAGECTL_AGENT_BIN)", .0.display())]
    AgentNotFound(PathBuf),
    /// The agent binary is for another architecture than the image.
    #[error("`{}` is {found}, but role `{role}` builds a {want} image; pass an agent built for {want} with `--agent PATH`", path.display())]
    AgentArch {
        /// The binary.
        path: PathBuf,
        /// What it is.
        found: String,
        /// What the image needs.
        want: &'static str,
        /// The role.
        role: String,
    },
    /// The output directory is in the way.
    #[error("`{}` exists and is not empty; stage writes a new directory", .0.display())]
    Exists(PathBuf),
    /// Reading or writing a file failed.
    #[error("cannot {action} `{}`: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// One file placed in the image, with where its bytes come from.
#[derive(Debug, Clone)]
struct Placed {
    bytes: Vec<u8>,
    entry: ManifestEntry,
}

/// What a stage wrote.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The staged directory.
    pub dir: PathBuf,
    /// Every baked file.
    pub manifest: Vec<ManifestEntry>,
}

/// Finds the agent binary: the one given, else `imagectl-agent` next to the
/// running `imagectl`.
pub fn find_agent(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("imagectl-agent")))
            .unwrap_or_else(|| PathBuf::from("imagectl-agent")),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::AgentNotFound(path))
    }
}

/// The architecture of an ELF executable, if it is one of ours.
pub fn elf_arch(bytes: &[u8]) -> Option<Arch> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return None;
    }
    match u16::from_le_bytes([bytes[18], bytes[19]]) {
        0x3e => Some(Arch::X86_64),
        0xb7 => Some(Arch::Arm64),
        _ => None,
    }
}

/// Writes the staged context of `role` to `out`, all or nothing: it is
/// assembled beside `out` and renamed into place.
pub fn stage(
    project: &Project,
    role: &Role,
    hash: &ContentHash,
    agent: &Path,
    out: &Path,
) -> Result<Staged, Error> {
    let agent_bytes = std::fs::read(agent).map_err(io("read", agent))?;
    match elf_arch(&agent_bytes) {
        Some(a) if a == role.image.arch => {}
        found => {
            return Err(Error::AgentArch {
                path: agent.to_path_buf(),
                found: found.map_or(
                    "not a Linux executable for x86_64 or arm64".to_string(),
                    |a| format!("an {} executable", a.as_str()),
                ),
                want: role.image.arch.as_str(),
                role: role.name.clone(),
            })
        }
    }

    let mut placed = Vec::new();
    let roles_dir = project.roles_dir();
    for f in &role.files {
        let src = roles_dir.join(&f.source);
        let bytes = std::fs::read(&src).map_err(io("read", &src))?;
        placed.push(place(bytes, &f.dest, &f.mode, &f.owner, &f.group));
    }
    for t in &role.boot.templates {
        let src = roles_dir.join(&t.source);
        let bytes = std::fs::read(&src).map_err(io("read", &src))?;
        let dest = format!("{CONFIG_DIR}/{TEMPLATES_DIR}/{}", t.source);
        placed.push(place(bytes, &dest, "0644", "root", "root"));
    }
    placed.push(place(agent_bytes, AGENT_BIN, "0755", "root", "root"));
    placed.push(place(
        imagectl_agent::UNIT.as_bytes().to_vec(),
        AGENT_UNIT,
        "0644",
        "root",
        "root",
    ));
    placed.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));

    let manifest: Vec<ManifestEntry> = placed.iter().map(|p| p.entry.clone()).collect();
    let config = ImageConfig {
        format: FORMAT_VERSION,
        role: role.name.clone(),
        hash: hash.hash.clone(),
        boot: role.boot.clone(),
        manifest: manifest.clone(),
    };
    let mut config_json = serde_json::to_vec_pretty(&config).unwrap_or_default();
    config_json.push(b'\n');
    let config_path = format!("{CONFIG_DIR}/{CONFIG_FILE}");
    placed.push(place(config_json, &config_path, "0644", "root", "root"));

    // Archives keep their bytes as they are; provision.sh unpacks them.
    let archives: Vec<(String, PathBuf)> = role
        .archives
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let name = Path::new(&a.source)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (format!("{i}-{name}"), roles_dir.join(&a.source))
        })
        .collect();
    let archive_names: Vec<&str> = archives.iter().map(|(n, _)| n.as_str()).collect();
    let script = provision_script(role, hash, &placed, &archive_names);

    // Assemble next to the destination, then rename: never half a context.
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(io("read", out))?
            .next()
            .is_none();
        if !empty {
            return Err(Error::Exists(out.to_path_buf()));
        }
        std::fs::remove_dir(out).map_err(io("replace", out))?;
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stage".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        for p in &placed {
            let path = tmp
                .join("rootfs")
                .join(p.entry.path.trim_start_matches('/'));
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io("create", dir))?;
            }
            std::fs::write(&path, &p.bytes).map_err(io("write", &path))?;
        }
        for (name, src) in &archives {
            let dir = tmp.join("archives");
            std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            std::fs::copy(src, dir.join(name)).map_err(io("copy", src))?;
        }
        let script_path = tmp.join("provision.sh");
        std::fs::write(&script_path, script.as_bytes()).map_err(io("write", &script_path))?;
        set_mode(&script_path, 0o755)?;
        std::fs::rename(&tmp, out).map_err(io("rename into", out))
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result?;
    Ok(Staged {
        dir: out.to_path_buf(),
        manifest,
    })
}

fn set_mode(path: &Path, mode: u32) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io("set the mode of", path))
}

fn place(bytes: Vec<u8>, dest: &str, mode: &str, owner: &str, group: &str) -> Placed {
    let entry = ManifestEntry {
        path: dest.to_string(),
        sha256: hex(&Sha256::digest(&bytes)),
        mode: mode.to_string(),
        owner: owner.to_string(),
        group: group.to_string(),
    };
    Placed { bytes, entry }
}

/// Quotes `s` for bash: single quotes, with `'` written as `'\''`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The provisioning script: packages, users, files, services, checks and
/// the package inventory, in that order. Idempotent; stops at the first
/// failure, naming it.
fn provision_script(
    role: &Role,
    hash: &ContentHash,
    placed: &[Placed],
    archives: &[&str],
) -> String {
    let q = |s: &str| sh_quote(s);
    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    line("#!/bin/bash");
    line(&format!(
        "# Generated by imagectl (layout {LAYOUT_VERSION}) for role `{}`, content hash {}.",
        role.name, hash.hash
    ));
    line("# Installs the staged context around it into this system; run as root.");
    line("# Idempotent: running it again changes nothing.");
    line("set -euo pipefail");
    line("umask 022");
    line("export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8");
    line("stage=$(cd -- \"$(dirname -- \"${BASH_SOURCE[0]}\")\" && pwd)");
    line("rootfs=\"$stage/rootfs\"");
    line("");
    line("step() { printf 'imagectl: %s\\n' \"$*\" >&2; }");
    line("");

    line("step 'packages'");
    line("packages=(");
    for p in &role.packages {
        line(&format!("  {}", q(&p.apt_arg())));
    }
    line(")");
    line("missing=()");
    line("for spec in \"${packages[@]}\"; do");
    line("  name=${spec%%=*}");
    line("  # shellcheck disable=SC2016 # dpkg-query's own ${...} fields");
    line("  have=$(dpkg-query -W -f='${Status} ${Version}' \"$name\" 2>/dev/null || true)");
    line("  case \"$have\" in");
    line("    \"install ok installed \"*)");
    line("      if [ \"$spec\" = \"$name\" ] || [ \"$name=${have##* }\" = \"$spec\" ]; then continue; fi ;;");
    line("  esac");
    line("  missing+=(\"$spec\")");
    line("done");
    line("if [ ${#missing[@]} -gt 0 ]; then");
    line("  step \"installing ${missing[*]}\"");
    line("  apt-get update -q");
    line("  apt-get install -y -q --no-install-recommends --allow-downgrades \"${missing[@]}\"");
    line("fi");
    line("");

    line("step 'users'");
    for u in &role.users {
        let mut args = vec!["useradd".to_string(), "--user-group".to_string()];
        if u.system {
            args.push("--system".into());
        }
        match &u.home {
            Some(h) => args.extend(["--home-dir".into(), q(h), "--create-home".into()]),
            None if u.system => args.extend([
                "--home-dir".into(),
                "/nonexistent".into(),
                "--no-create-home".into(),
            ]),
            None => args.push("--create-home".into()),
        }
        let shell = u.shell.clone().unwrap_or_else(|| {
            if u.system {
                "/usr/sbin/nologin".into()
            } else {
                "/bin/bash".into()
            }
        });
        args.extend(["--shell".into(), q(&shell), q(&u.name)]);
        line(&format!("if ! id -u {} >/dev/null 2>&1; then", q(&u.name)));
        line(&format!("  {}", args.join(" ")));
        line("fi");
        for g in &u.groups {
            line(&format!(
                "getent group {g} >/dev/null || groupadd --system {g}",
                g = q(g)
            ));
        }
        if !u.groups.is_empty() {
            line(&format!(
                "usermod --append --groups {} {}",
                q(&u.groups.join(",")),
                q(&u.name)
            ));
        }
    }
    line("");

    line("step 'archives'");
    if !role.archives.is_empty() {
        line("# Unpacked beside the destination, then moved into place: a build");
        line("# never leaves half a release behind.");
        line("unpack() {");
        line("  local archive=$1 dest=$2 owner=$3 group=$4 link=$5");
        line("  local new=\"$dest.imagectl-new\"");
        line("  rm -rf -- \"$new\"");
        line("  mkdir -p -- \"$new\"");
        line("  tar --extract --file=\"$stage/archives/$archive\" --directory=\"$new\" --no-same-owner");
        line("  chown -R -h -- \"$owner:$group\" \"$new\"");
        line("  rm -rf -- \"$dest\"");
        line("  mv -T -- \"$new\" \"$dest\"");
        line("  if [ -n \"$link\" ]; then");
        line("    mkdir -p -- \"$(dirname -- \"$link\")\"");
        line("    ln -sfn -- \"$dest\" \"$link\"");
        line("  fi");
        line("}");
    }
    for (a, name) in role.archives.iter().zip(archives) {
        line(&format!(
            "unpack {} {} {} {} {}",
            q(name),
            q(&a.dest),
            q(&a.owner),
            q(&a.group),
            q(a.link.as_deref().unwrap_or(""))
        ));
    }
    line("");

    line("step 'files'");
    for p in placed {
        let e = &p.entry;
        line(&format!(
            "install -D -T -m {} -o {} -g {} \"$rootfs\"{} {}",
            q(&e.mode),
            q(&e.owner),
            q(&e.group),
            q(&e.path),
            q(&e.path)
        ));
    }
    line("");

    line("step 'services'");
    for svc in &role.services {
        let verb = if svc.enabled { "enable" } else { "disable" };
        line(&format!("systemctl {verb} {}", q(&svc.name)));
    }
    line("systemctl enable imagectl-agent.service");
    line("");

    line("step 'checks'");
    line("check() {");
    line("  step \"check: $1\"");
    line("  if ! bash -c \"$2\"; then");
    line("    printf 'imagectl: check failed: %s\\n' \"$1\" >&2");
    line("    exit 1");
    line("  fi");
    line("}");
    for c in &role.checks {
        line(&format!("check {} {}", q(&c.name), q(&c.run)));
    }
    line("");

    line("step 'package inventory'");
    line("# shellcheck disable=SC2016 # dpkg-query's own ${...} fields");
    line(&format!(
        "dpkg-query -W -f='${{Package}}\\t${{Version}}\\t${{Architecture}}\\n' | LC_ALL=C sort > {}",
        q(INVENTORY)
    ));
    line(&format!("chmod 0644 {}", q(INVENTORY)));
    line("");

    line("step 'cleanup'");
    line("apt-get clean");
    line("# Every instance gets its own machine ID on its first boot.");
    line("if [ -s /etc/machine-id ]; then truncate -s 0 /etc/machine-id; fi");
    line("step 'done'");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_bash() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote("$(x) `y` \"z\""), "'$(x) `y` \"z\"'");
    }

    #[test]
    fn elf_headers() {
        let mut x86 = vec![0u8; 64];
        x86[..4].copy_from_slice(b"\x7fELF");
        x86[18] = 0x3e;
        assert_eq!(elf_arch(&x86), Some(Arch::X86_64));
        x86[18] = 0xb7;
        assert_eq!(elf_arch(&x86), Some(Arch::Arm64));
        assert_eq!(elf_arch(b"#!/bin/sh\n"), None);
    }
}
