//! Role files: their schema, loading with `extends` merged, and validation.
//!
//! A role file says what goes into an image. Loading reads the role and its
//! parents, merges them (parents first, in `extends` order, each ancestor
//! once) and validates the result, collecting every problem with the file,
//! line and column it comes from. What comes out is a [`Role`]: plain data in
//! a canonical order, ready to be hashed and staged.

use imagectl_image::config::Boot;
use serde::Serialize;

use crate::arch::Arch;

// One file per stage: `raw` is what serde reads (and the JSON Schema
// describes), `store` reads files from `roles/` or memory, `load` parses
// layers and linearises `extends`, `merge` lays each layer over its
// parents, and `entries`, `sources` and `validate` check single entries,
// the files they reference, and the merged role as a whole; `archive`
// reads the archives entries bake, entry by entry; `sandbox` knows
// what the agent can write at boot; `changes` says, key by key, what
// differs between two canonical forms (for `plan`); `params` checks the
// boot templates against the role's test parameters.
mod archive;
mod changes;
mod entries;
mod load;
mod merge;
mod params;
mod raw;
mod sandbox;
mod sources;
mod store;
mod validate;

#[cfg(test)]
mod archive_tests;
#[cfg(test)]
mod tests;

pub use changes::changes;
pub use load::{check, check_all, load, load_all, load_in_memory, role_names, Problem, Report};
pub use raw::schema;
pub use store::MemoryRoles;

pub use crate::project::ROLES_DIR;

/// Where the agent's own files live in every image; roles may not write there.
pub const AGENT_DIR: &str = "/etc/imagectl";

/// The largest role file read. Role files are written by hand and the
/// biggest in practice are a few kilobytes: the limit keeps a stray
/// multi-gigabyte file, or a link to `/dev/zero`, from being read whole.
pub const MAX_ROLE_BYTES: u64 = 1 << 20;

/// The largest boot template. The agent reads and renders every template in
/// memory on every boot; configuration files are far smaller.
pub const MAX_TEMPLATE_BYTES: u64 = 1 << 20;

/// The largest file `[[files]]` may bake. Baked files are read into the
/// staged context and uploaded by Packer over SSH; anything bigger belongs
/// in a package or a download during the build. Validation only looks at
/// the size, so a huge (even sparse) file is rejected without being read.
pub const MAX_FILE_BYTES: u64 = 100 << 20;

/// The largest `[[archives]]` tar: an application release with its vendored
/// gems and compiled assets. Archives are copied, not read, by staging, and
/// hashed by streaming.
pub const MAX_ARCHIVE_BYTES: u64 = 1 << 30;

/// How many roles deep `extends` may go. Real hierarchies are two or three
/// levels; the limit bounds the recursion that merges them, so a hostile
/// chain of thousands of roles is an error rather than a stack overflow.
pub const MAX_EXTENDS_DEPTH: usize = 64;

/// A validated role with its parents merged in.
///
/// Its serialized form is canonical: the same role written with other
/// formatting, comments or key order serializes to the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    /// The role's name: its file's stem.
    pub name: String,
    /// What the image is for; becomes the AMI's description.
    pub description: String,
    /// A role that only exists to be extended: never built itself.
    #[serde(rename = "abstract")]
    pub is_abstract: bool,
    /// The image to build.
    pub image: Image,
    /// Debian packages, sorted by name.
    pub packages: Vec<Package>,
    /// Users to create, in creation order (it decides their IDs).
    pub users: Vec<User>,
    /// Files baked into the image, sorted by destination.
    pub files: Vec<FileSpec>,
    /// Archives unpacked into the image (an application release), sorted
    /// by destination.
    pub archives: Vec<Archive>,
    /// Units whose state the image sets, sorted by name.
    pub services: Vec<Service>,
    /// Commands that must succeed at the end of every build, in order.
    pub checks: Vec<Check>,
    /// What the agent does on every boot.
    pub boot: Boot,
    /// What `imagectl test` runs beside the image. Not part of the
    /// canonical form: it never enters the image.
    #[serde(skip)]
    pub test: TestSpec,
    /// The role files this role was merged from, ancestors first, relative
    /// to the project root. Not part of the canonical form: moving a key
    /// from a child to its parent changes nothing in the image.
    #[serde(skip)]
    pub sources: Vec<String>,
}

/// `[image]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Image {
    /// A key of `[bases]` in `imagectl.toml`; `None` only in abstract roles.
    pub base: Option<String>,
    /// The EC2 instance type of the build instance.
    pub instance_type: String,
    /// Root volume size.
    pub volume_size_gb: u32,
    /// CPU architecture.
    pub arch: Arch,
    /// How its AMIs are made. Only `disk` enters the canonical form, so
    /// that Packer-built roles keep their hashes.
    #[serde(skip_serializing_if = "Method::is_packer")]
    pub method: Method,
    /// Extra kernel command line arguments of its disk image.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_cmdline: Vec<String>,
}

/// How a role's AMIs are made.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Packer launches a build instance from the base AMI and provisions it.
    #[default]
    Packer,
    /// imagectl builds a bootable disk on this machine (the one `test --vm`
    /// boots) and registers it as the AMI through an EBS snapshot.
    Disk,
}

impl Method {
    /// Whether this is the default.
    pub fn is_packer(&self) -> bool {
        *self == Method::Packer
    }

    /// Its name in role files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Packer => "packer",
            Method::Disk => "disk",
        }
    }
}

/// One Debian package, optionally pinned to a version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Package {
    /// Package name.
    pub name: String,
    /// Exact version to install (`apt-get install name=version`).
    pub version: Option<String>,
}

impl Package {
    /// The argument `apt-get install` takes.
    pub fn apt_arg(&self) -> String {
        match &self.version {
            Some(v) => format!("{}={}", self.name, v),
            None => self.name.clone(),
        }
    }
}

/// A user created in the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Login name.
    pub name: String,
    /// A system user (no aging, ID below 1000, no login shell by default).
    pub system: bool,
    /// Supplementary groups.
    pub groups: Vec<String>,
    /// Login shell.
    pub shell: Option<String>,
    /// Home directory.
    pub home: Option<String>,
}

/// A file baked into the image at build time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSpec {
    /// Path relative to `roles/`.
    pub source: String,
    /// Absolute destination in the image.
    pub dest: String,
    /// Four octal digits.
    pub mode: String,
    /// Owning user.
    pub owner: String,
    /// Owning group.
    pub group: String,
}

/// A tar archive unpacked into the image at build time: how an application
/// release, built and packed by the application's own CI, enters the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Archive {
    /// Path of a `.tar`, `.tar.gz` or `.tgz` file relative to `roles/`.
    pub source: String,
    /// Absolute directory it is unpacked into (replacing what was there).
    pub dest: String,
    /// Owning user of everything unpacked.
    pub owner: String,
    /// Owning group of everything unpacked.
    pub group: String,
    /// A symbolic link pointed at `dest` (like `/srv/learn/current`).
    pub link: Option<String>,
}

/// `[test]`: what `imagectl test` provides around the booted image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestSpec {
    /// Commands run on the test machine, on the booted image's own
    /// loopback network, for the backing services the role needs (Redis,
    /// say) and AWS provides in production.
    pub sidecars: Vec<String>,
}

/// A systemd unit the image enables or leaves disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    /// Unit name with its suffix (`sidekiq.service`).
    pub name: String,
    /// Enabled at boot by systemd itself (rather than started by the agent).
    pub enabled: bool,
}

/// A build-time image test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What it checks, shown when it fails.
    pub name: String,
    /// Shell command that must exit 0.
    pub run: String,
}
