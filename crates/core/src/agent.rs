//! The agent binary a build bakes: found, read, and refused unless it is
//! the imagectl-agent the content hash names. The hash covers the agent's
//! identity (the digest of its sources and locked dependencies, see
//! `imagectl_image::identity`), so a binary that does not carry exactly that
//! identity would put a second image under the same hash.

use std::path::{Path, PathBuf};

use imagectl_image::identity::{self, Found};

use crate::arch::Arch;
use crate::role::Role;

/// How to build the agent the way CI ships it.
pub const BUILD_COMMAND: &str = "cargo build --profile release-agent -p imagectl-agent";

/// The profiles whose output directory discovery looks in, in order: the
/// one CI ships (small, optimised for size) before the workspace's own
/// builds, whose agent may carry features unified from imagectl's
/// dependencies.
pub const PROFILES: [&str; 1] = ["release-agent"];

/// Errors finding or checking the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binary could not be read.
    #[error("cannot read the agent binary `{}`: {source}", path.display())]
    Read {
        /// The binary.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The binary carries no agent identity.
    #[error("`{}` is not an imagectl-agent: it carries no agent identity; build the agent with `{BUILD_COMMAND}` and pass `--agent target/release-agent/imagectl-agent`", path.display())]
    NotAnAgent {
        /// The binary.
        path: PathBuf,
    },
    /// The binary is an agent built from other sources.
    #[error("`{}` is an imagectl-agent built from other sources (identity {}), but this imagectl bakes identity {}: images of one hash would differ; rebuild it from this checkout with `{BUILD_COMMAND}`", path.display(), short(found), short(want))]
    Foreign {
        /// The binary.
        path: PathBuf,
        /// The identity it carries.
        found: String,
        /// The identity this checkout's hash names.
        want: String,
    },
    /// The binary carries several identities.
    #[error("`{}` carries {} different agent identities; it is not a binary imagectl built; rebuild it with `{BUILD_COMMAND}`", path.display(), .found.len())]
    Several {
        /// The binary.
        path: PathBuf,
        /// What it carries.
        found: Vec<String>,
    },
    /// No candidate was an agent of this checkout.
    #[error("no imagectl-agent built from this checkout was found ({}); build it with `{BUILD_COMMAND}`, or pass `--agent PATH`", tried.iter().map(|(p, why)| format!("`{}` {why}", p.display())).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// Each place looked at, with why it was not taken.
        tried: Vec<(PathBuf, String)>,
    },
    /// The agent is for another architecture than the image.
    #[error("`{}` is {found}, but role `{role}` builds a {want} image; pass an agent built for {want} with `--agent PATH`", path.display())]
    Arch {
        /// The binary.
        path: PathBuf,
        /// What it is.
        found: String,
        /// What the image needs.
        want: &'static str,
        /// The role.
        role: String,
    },
}

impl Error {
    /// Whether the user fixes it (exit 2): every problem but an unreadable
    /// file.
    pub fn is_usage(&self) -> bool {
        !matches!(self, Error::Read { .. })
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// An agent binary of this checkout, read into memory.
#[derive(Debug, Clone)]
pub struct Agent {
    /// Where it was read from.
    pub path: PathBuf,
    /// Its bytes, as baked.
    pub bytes: Vec<u8>,
    /// Its architecture, when it is an ELF executable of one of ours.
    pub arch: Option<Arch>,
    /// How it was chosen, for the log (`--agent`, `release-agent build`, ...).
    pub origin: String,
}

impl Agent {
    /// Reads `path` and checks that it carries this checkout's identity.
    pub fn load(path: &Path, origin: &str) -> Result<Agent, Error> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        match identity::find(&bytes) {
            Found::One(id) if id == identity::AGENT => Ok(Agent {
                path: path.to_path_buf(),
                arch: Arch::of_elf(&bytes),
                bytes,
                origin: origin.to_string(),
            }),
            Found::One(id) => Err(Error::Foreign {
                path: path.to_path_buf(),
                found: id,
                want: identity::AGENT.to_string(),
            }),
            Found::None => Err(Error::NotAnAgent {
                path: path.to_path_buf(),
            }),
            Found::Several(found) => Err(Error::Several {
                path: path.to_path_buf(),
                found,
            }),
        }
    }

    /// Finds the agent: `explicit` (`--agent` or `IMAGECTL_AGENT_BIN`) when
    /// given, else the first of the builds beside the running `imagectl`
    /// (`exe`) that carries this checkout's identity: the `release-agent`
    /// build CI ships, then the one in `imagectl`'s own directory.
    pub fn discover(explicit: Option<&Path>, exe: Option<&Path>) -> Result<Agent, Error> {
        if let Some(path) = explicit {
            return Agent::load(path, "given");
        }
        let mut tried = Vec::new();
        for (path, origin) in candidates(exe) {
            if !path.is_file() {
                tried.push((path, "does not exist".to_string()));
                continue;
            }
            match Agent::load(&path, &origin) {
                Ok(agent) => return Ok(agent),
                Err(Error::Foreign { found, .. }) => tried.push((
                    path,
                    format!("is built from other sources (identity {})", short(&found)),
                )),
                Err(e) => tried.push((path, format!("cannot be used: {e}"))),
            }
        }
        Err(Error::NotFound { tried })
    }

    /// Refuses the agent for a role whose image has another architecture.
    pub fn check_arch(&self, role: &Role) -> Result<(), Error> {
        match self.arch {
            Some(a) if a == role.image.arch => Ok(()),
            found => Err(Error::Arch {
                path: self.path.clone(),
                found: found.map_or(
                    "not a Linux executable for x86_64 or arm64".to_string(),
                    |a| format!("an {} executable", a.as_str()),
                ),
                want: role.image.arch.as_str(),
                role: role.name.clone(),
            }),
        }
    }

    /// Its identity's first 12 digits, for the log.
    pub fn short_identity(&self) -> &str {
        short(identity::AGENT)
    }
}

/// Where discovery looks, with how each is described: for `imagectl` at
/// `target/PROFILE/imagectl`, `target/release-agent/imagectl-agent`, then
/// `target/PROFILE/imagectl-agent`.
fn candidates(exe: Option<&Path>) -> Vec<(PathBuf, String)> {
    let Some(dir) = exe.and_then(Path::parent) else {
        return vec![(PathBuf::from("imagectl-agent"), "found".into())];
    };
    let mut out = Vec::new();
    if let Some(target) = dir.parent() {
        for profile in PROFILES {
            let p = target.join(profile).join("imagectl-agent");
            if p.parent() != Some(dir) {
                out.push((p, format!("the {profile} build")));
            }
        }
    }
    let own = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    out.push((
        dir.join("imagectl-agent"),
        format!("the build beside imagectl ({own})"),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn agent_bytes(marker: [u8; identity::MARKER_LEN]) -> Vec<u8> {
        let mut b = b"\x7fELF".to_vec();
        b.resize(20, 0);
        b[18] = 0x3e;
        b.extend_from_slice(&marker);
        b
    }

    #[test]
    fn only_a_binary_of_this_checkout_is_accepted() {
        let d = tempfile::tempdir().unwrap();
        let ok = write(d.path(), "ok", &agent_bytes(identity::marker()));
        let agent = Agent::load(&ok, "given").unwrap();
        assert_eq!(agent.arch, Some(Arch::X86_64));

        let not = write(d.path(), "true", b"\x7fELF not an agent");
        assert!(matches!(
            Agent::load(&not, "given"),
            Err(Error::NotAnAgent { .. })
        ));

        let mut other = identity::marker();
        let at = identity::MARKER_LEN - 2;
        other[at] = if other[at] == b'0' { b'1' } else { b'0' };
        let foreign = write(d.path(), "foreign", &agent_bytes(other));
        let e = Agent::load(&foreign, "given").unwrap_err();
        assert!(matches!(e, Error::Foreign { .. }), "{e}");
        assert!(e.to_string().contains(BUILD_COMMAND), "{e}");
    }

    #[test]
    fn discovery_prefers_the_release_agent_build_and_skips_foreign_ones() {
        let d = tempfile::tempdir().unwrap();
        let exe = write(d.path(), "target/release/imagectl", b"");
        let beside = write(
            d.path(),
            "target/release/imagectl-agent",
            &agent_bytes(identity::marker()),
        );
        let found = Agent::discover(None, Some(&exe)).unwrap();
        assert_eq!(found.path, beside);
        assert_eq!(found.origin, "the build beside imagectl (release)");

        let shipped = write(
            d.path(),
            "target/release-agent/imagectl-agent",
            &agent_bytes(identity::marker()),
        );
        let found = Agent::discover(None, Some(&exe)).unwrap();
        assert_eq!(found.path, shipped);
        assert_eq!(found.origin, "the release-agent build");

        // A stale release-agent build is skipped, and said to be.
        let mut other = identity::marker();
        let at = identity::MARKER_LEN - 2;
        other[at] = if other[at] == b'0' { b'1' } else { b'0' };
        std::fs::write(&shipped, agent_bytes(other)).unwrap();
        assert_eq!(Agent::discover(None, Some(&exe)).unwrap().path, beside);
        std::fs::remove_file(&beside).unwrap();
        let e = Agent::discover(None, Some(&exe)).unwrap_err().to_string();
        assert!(
            e.contains("release-agent/imagectl-agent` is built from other sources"),
            "{e}"
        );
        assert!(e.contains("release/imagectl-agent` does not exist"), "{e}");
    }
}
