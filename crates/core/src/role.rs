//! Role files: their schema, loading with `extends` merged, and validation.
//!
//! A role file says what goes into an image. Loading reads the role and its
//! parents, merges them (parents first, in `extends` order, each ancestor
//! once) and validates the result, collecting every problem with the file,
//! line and column it comes from. What comes out is a [`Role`]: plain data in
//! a canonical order, ready to be hashed and staged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use imagectl_image::config::{Boot, BootTemplate, Health};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

use crate::arch::Arch;
use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::project::Project;
use crate::settings::{is_name, Base, Settings};
use crate::tomlfile::{self, Partial};

/// The directory, below the project root, holding role files and everything
/// they reference.
pub const ROLES_DIR: &str = "roles";

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

// ---------------------------------------------------------------------------
// The file format, as serde reads it. The same types give the JSON Schema
// of role files (`imagectl schema`), so editors check what imagectl reads.

/// A role file: `roles/NAME.toml`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "imagectl role", rename = "Role")]
struct RawRole {
    /// The role's name; optional, and must then match the file's stem.
    #[schemars(with = "Option<String>")]
    name: Option<Spanned<String>>,
    /// What the image is for; becomes the AMI's description.
    #[schemars(with = "Option<String>")]
    description: Option<Spanned<String>>,
    /// Roles merged first, in order (each ancestor once).
    #[schemars(with = "Option<Vec<String>>")]
    extends: Option<Vec<Spanned<String>>>,
    /// Only exists to be extended: never built itself.
    #[serde(rename = "abstract")]
    is_abstract: Option<bool>,
    /// The image to build.
    image: Option<RawImage>,
    /// Packages to install.
    packages: Option<RawPackages>,
    /// Users to create, in order.
    #[schemars(with = "Option<Vec<RawUser>>")]
    users: Option<Vec<Spanned<RawUser>>>,
    /// Files baked into the image at build time.
    #[schemars(with = "Option<Vec<RawFile>>")]
    files: Option<Vec<Spanned<RawFile>>>,
    /// Tar archives unpacked into the image at build time (application releases).
    #[schemars(with = "Option<Vec<RawArchive>>")]
    archives: Option<Vec<Spanned<RawArchive>>>,
    /// Units the image enables or leaves disabled.
    #[schemars(with = "Option<Vec<RawService>>")]
    services: Option<Vec<Spanned<RawService>>>,
    /// Image tests, run at the end of every build.
    #[schemars(with = "Option<Vec<RawCheck>>")]
    checks: Option<Vec<Spanned<RawCheck>>>,
    /// What the on-boot agent does on every boot.
    boot: Option<RawBoot>,
    /// What `imagectl test` runs beside the image; never enters the image.
    test: Option<RawTest>,
}

impl Partial for RawRole {
    fn absorb(&mut self, o: Self) {
        macro_rules! take {
            ($($f:ident),*) => { $( if o.$f.is_some() { self.$f = o.$f; } )* };
        }
        take!(
            name,
            description,
            extends,
            is_abstract,
            image,
            packages,
            users,
            files,
            archives,
            services,
            checks,
            boot,
            test
        );
    }
}

/// `[image]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Image")]
struct RawImage {
    /// A key of `[bases]` in imagectl.toml.
    #[schemars(with = "Option<String>")]
    base: Option<Spanned<String>>,
    /// EC2 instance type of the build instance (default t3.small, t4g.small on arm64).
    #[schemars(with = "Option<String>")]
    instance_type: Option<Spanned<String>>,
    /// Root volume size in GiB, 8 to 16384 (default 8).
    #[schemars(with = "Option<u32>")]
    volume_size_gb: Option<Spanned<u32>>,
    /// CPU architecture (default: the base's).
    #[schemars(with = "Option<Arch>")]
    arch: Option<Spanned<Arch>>,
}

/// `[packages]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Packages")]
struct RawPackages {
    /// Debian packages, optionally pinned as `name=version`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    apt: Vec<Spanned<String>>,
}

/// `[[users]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "User")]
struct RawUser {
    /// Login name.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// A system user (no login shell by default).
    #[serde(default)]
    system: bool,
    /// Supplementary groups, created when missing.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    groups: Vec<Spanned<String>>,
    /// Login shell.
    #[schemars(with = "Option<String>")]
    shell: Option<Spanned<String>>,
    /// Home directory, created.
    #[schemars(with = "Option<String>")]
    home: Option<Spanned<String>>,
}

/// `[[files]]` and `[[boot.templates]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "File")]
struct RawFile {
    /// Path relative to `roles/`, inside it.
    #[schemars(with = "String")]
    source: Spanned<String>,
    /// Absolute path in the image.
    #[schemars(with = "String")]
    dest: Spanned<String>,
    /// Quoted octal mode (default "0644" for files, "0600" for templates).
    #[schemars(with = "Option<Mode>")]
    mode: Option<Spanned<Mode>>,
    /// Owning user (default root).
    #[schemars(with = "Option<String>")]
    owner: Option<Spanned<String>>,
    /// Owning group (default root).
    #[schemars(with = "Option<String>")]
    group: Option<Spanned<String>>,
}

/// `[[archives]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Archive")]
struct RawArchive {
    /// A `.tar`, `.tar.gz` or `.tgz` file, relative to `roles/`, inside it.
    #[schemars(with = "String")]
    source: Spanned<String>,
    /// Absolute directory in the image it is unpacked into, replacing what was there.
    #[schemars(with = "String")]
    dest: Spanned<String>,
    /// Owning user of everything unpacked (default root).
    #[schemars(with = "Option<String>")]
    owner: Option<Spanned<String>>,
    /// Owning group of everything unpacked (default root).
    #[schemars(with = "Option<String>")]
    group: Option<Spanned<String>>,
    /// Absolute path of a symbolic link made to point at `dest`, like `/srv/learn/current`.
    #[schemars(with = "Option<String>")]
    link: Option<Spanned<String>>,
}

/// `[test]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Test")]
struct RawTest {
    /// Commands `imagectl test` runs on the test machine, on the booted image's loopback, for backing services (like `redis-server --port 6379`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    sidecars: Vec<Spanned<String>>,
}

/// `[[services]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Service")]
struct RawService {
    /// Unit name with its suffix (`sidekiq.service`).
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// Enabled at boot by systemd (false: only the agent starts it).
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

/// `[[checks]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Check")]
struct RawCheck {
    /// What it checks, shown when it fails.
    #[schemars(with = "String")]
    name: Spanned<String>,
    /// Shell command that must exit 0.
    #[schemars(with = "String")]
    run: Spanned<String>,
}

/// `[boot]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Boot")]
struct RawBoot {
    /// SSM Parameter Store path; may use {{env}}, {{role}}, {{instance.id}}, {{instance.region}}, {{instance.az}}.
    #[schemars(with = "Option<String>")]
    parameters: Option<Spanned<String>>,
    /// Units the agent starts, in order, once the templates are written.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    start: Vec<Spanned<String>>,
    /// Handlebars templates rendered from the parameters.
    #[serde(default)]
    #[schemars(with = "Vec<RawFile>")]
    templates: Vec<Spanned<RawFile>>,
    /// What the agent waits for after starting the units.
    #[schemars(with = "Option<RawHealth>")]
    health: Option<Spanned<RawHealth>>,
}

/// `[boot.health]`: exactly one of `http` and `command`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Health")]
struct RawHealth {
    /// A URL that must answer HTTP 200.
    #[schemars(with = "Option<String>")]
    http: Option<Spanned<String>>,
    /// A shell command that must exit 0.
    #[schemars(with = "Option<String>")]
    command: Option<Spanned<String>>,
    /// Seconds to wait, 1 to 3600 (default 60).
    #[schemars(with = "Option<u64>")]
    timeout_secs: Option<Spanned<u64>>,
}

/// The JSON Schema of role files.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(RawRole)).unwrap_or_default()
}

impl JsonSchema for Mode {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Mode".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-7]{3,4}$",
            "description": "A quoted octal file mode, like \"0644\"."
        })
    }
}

/// A file mode: four octal digits, normalised from three or four.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mode(String);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a quoted octal file mode, like \"0644\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Mode, E> {
                let octal =
                    (3..=4).contains(&s.len()) && s.bytes().all(|b| (b'0'..=b'7').contains(&b));
                if octal {
                    Ok(Mode(format!("{s:0>4}")))
                } else {
                    Err(E::custom(format!(
                        "`{s}` is not an octal file mode\nhelp: write three or four digits 0-7, like \"0644\""
                    )))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Mode, E> {
                Err(E::custom(format!(
                    "file mode {n} is a number, not an octal string\nhelp: quote it, as in `mode = \"0644\"`: unquoted, TOML reads {n} as a decimal number"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Loading and merging.

/// A value with the file and span it was read from.
#[derive(Debug, Clone)]
struct At<T> {
    v: T,
    file: usize,
    span: Range<usize>,
}

/// One role file, parsed.
struct Layer {
    file: usize,
    raw: RawRole,
    /// Some keys did not parse: what did is still checked, so that one run
    /// reports every problem, but the role is not produced.
    broken: bool,
}

/// The text of a file read during loading, for diagnostics.
struct Source {
    rel: String,
    text: String,
}

/// Why a file below `roles/` cannot be used.
#[derive(Debug)]
enum Unusable {
    /// Nothing there.
    Missing,
    /// A symbolic link to nothing.
    Dangling,
    /// A directory, device, FIFO or socket.
    NotFile,
    /// A symbolic link leading outside `roles/`.
    Outside,
    /// A regular file larger than allowed: its size.
    TooBig(u64),
    /// Reading failed.
    Io(String),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Missing => f.write_str("it does not exist"),
            Unusable::Dangling => f.write_str("it is a symbolic link to nothing"),
            Unusable::NotFile => f.write_str("it is not a regular file"),
            Unusable::Outside => {
                write!(f, "it is a symbolic link that leads outside `{ROLES_DIR}/`")
            }
            Unusable::TooBig(n) => write!(f, "it is {}", human_size(*n)),
            Unusable::Io(e) => f.write_str(e),
        }
    }
}

/// Where role files and the files they reference come from: the project's
/// `roles/` directory, or memory. Paths are relative to `roles/` and made
/// of normal components only.
trait Store {
    /// Every role that has a file, sorted.
    fn role_names(&self) -> Vec<String>;
    /// The size of a regular file inside `roles/`.
    fn stat(&self, rel: &str) -> Result<u64, Unusable>;
    /// The bytes of a regular file inside `roles/`, at most `max` of them.
    fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>, Unusable>;
}

/// `roles/` on disk.
struct Disk {
    dir: PathBuf,
    /// `dir` with symlinks resolved, to catch links leading out of it.
    real: Option<PathBuf>,
}

impl Store for Disk {
    fn role_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                (p.extension()? == "toml" && p.is_file())
                    .then(|| p.file_stem()?.to_str().map(String::from))?
            })
            .collect();
        names.sort();
        names
    }

    fn stat(&self, rel: &str) -> Result<u64, Unusable> {
        let full = self.dir.join(rel);
        match std::fs::metadata(&full) {
            Err(_) if std::fs::symlink_metadata(&full).is_ok() => Err(Unusable::Dangling),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                Err(Unusable::Missing)
            }
            Err(e) => Err(Unusable::Io(e.to_string())),
            Ok(m) if !m.is_file() => Err(Unusable::NotFile),
            Ok(m) => {
                let inside = match (full.canonicalize(), &self.real) {
                    (Ok(r), Some(root)) => r.starts_with(root),
                    _ => false,
                };
                if inside {
                    Ok(m.len())
                } else {
                    Err(Unusable::Outside)
                }
            }
        }
    }

    fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>, Unusable> {
        use std::io::Read;
        let len = self.stat(rel)?;
        if len > max {
            return Err(Unusable::TooBig(len));
        }
        // The file may grow between the check and the read: never read
        // more than one byte past the limit.
        let mut bytes = Vec::new();
        std::fs::File::open(self.dir.join(rel))
            .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
            .map_err(|e| Unusable::Io(e.to_string()))?;
        if bytes.len() as u64 > max {
            return Err(Unusable::TooBig(bytes.len() as u64));
        }
        Ok(bytes)
    }
}

/// Role files and the files they reference, held in memory: loads roles
/// with [`load_in_memory`] without touching the filesystem. The fuzzer and
/// unit tests use it; `imagectl` itself always reads `roles/`.
#[derive(Debug, Clone, Default)]
pub struct MemoryRoles {
    /// Contents by path relative to `roles/`: `app.toml` is role `app`,
    /// `files/app/app.conf` a file it may reference.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl MemoryRoles {
    /// The roles that have a file, sorted.
    pub fn role_names(&self) -> Vec<String> {
        self.files
            .keys()
            .filter(|k| !k.contains('/'))
            .filter_map(|k| k.strip_suffix(".toml"))
            .map(String::from)
            .collect()
    }
}

impl Store for MemoryRoles {
    fn role_names(&self) -> Vec<String> {
        MemoryRoles::role_names(self)
    }

    fn stat(&self, rel: &str) -> Result<u64, Unusable> {
        match self.files.get(rel) {
            Some(b) => Ok(b.len() as u64),
            None => {
                let dir = format!("{rel}/");
                if self.files.keys().any(|k| k.starts_with(&dir)) {
                    Err(Unusable::NotFile)
                } else {
                    Err(Unusable::Missing)
                }
            }
        }
    }

    fn read(&self, rel: &str, max: u64) -> Result<Vec<u8>, Unusable> {
        let len = self.stat(rel)?;
        if len > max {
            return Err(Unusable::TooBig(len));
        }
        Ok(self.files.get(rel).cloned().unwrap_or_default())
    }
}

/// Reads role files, caching each one, and collects every problem.
struct Loader<'p> {
    store: &'p dyn Store,
    bases: &'p BTreeMap<String, Base>,
    sources: Vec<Source>,
    layers: HashMap<String, Option<Layer>>,
    diags: Diagnostics,
    /// Every role name that has a file, for lookups and suggestions.
    known: BTreeSet<String>,
}

fn disk(project: &Project) -> Disk {
    let dir = project.roles_dir();
    Disk {
        real: dir.canonicalize().ok(),
        dir,
    }
}

/// Lists the roles that have a file in `roles/`, sorted.
pub fn role_names(project: &Project) -> Vec<String> {
    disk(project).role_names()
}

/// Loads every role in `roles/`.
pub fn load_all(project: &Project) -> Result<Vec<Role>, Diagnostics> {
    let names = role_names(project);
    if names.is_empty() {
        return Err(Diagnostics(vec![Diagnostic::file(
            ROLES_DIR,
            "no role files found",
        )
        .help("add a role as `roles/NAME.toml`")]));
    }
    load(project, &names)
}

/// Loads the named roles, each with its parents merged in.
pub fn load(project: &Project, names: &[String]) -> Result<Vec<Role>, Diagnostics> {
    load_from(&disk(project), &project.settings.bases, names)
}

/// Loads the named roles from role files held in memory, exactly as
/// [`load`] does from `roles/`, with `settings` standing for
/// `imagectl.toml`. Every error is a [`Diagnostic`]; it never panics.
pub fn load_in_memory(
    settings: &Settings,
    roles: &MemoryRoles,
    names: &[String],
) -> Result<Vec<Role>, Diagnostics> {
    load_from(roles, &settings.bases, names)
}

fn load_from(
    store: &dyn Store,
    bases: &BTreeMap<String, Base>,
    names: &[String],
) -> Result<Vec<Role>, Diagnostics> {
    let mut loader = Loader {
        store,
        bases,
        sources: Vec::new(),
        layers: HashMap::new(),
        diags: Diagnostics::default(),
        known: store.role_names().into_iter().collect(),
    };
    let mut roles = Vec::new();
    for name in names {
        if !loader.known.contains(name) {
            let d = loader.unknown_role(name);
            loader.diags.push(d);
            continue;
        }
        if let Some(role) = loader.role(name) {
            roles.push(role);
        }
    }
    let mut seen = BTreeSet::new();
    let unique: Vec<Diagnostic> = loader
        .diags
        .0
        .into_iter()
        .filter(|d| seen.insert(d.to_string()))
        .collect();
    Diagnostics(unique).into_result(roles)
}

/// A size for messages: bytes up to a KiB, else KiB, MiB or GiB.
fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A chain of role names for a message, shortened in the middle when long.
fn show_chain(chain: &[String]) -> String {
    if chain.len() <= 6 {
        return chain.join(" -> ");
    }
    format!(
        "{} -> ... -> {} ({} roles)",
        chain[..3].join(" -> "),
        chain[chain.len() - 2..].join(" -> "),
        chain.len()
    )
}

/// `text` is binary or not UTF-8: where, for a diagnostic, and the text
/// to show it in.
fn not_text(bytes: Vec<u8>) -> Result<String, (String, usize, &'static str)> {
    if bytes.starts_with(&[0xff, 0xfe]) || bytes.starts_with(&[0xfe, 0xff]) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        return Err((text, 0, "is UTF-16 text, not UTF-8"));
    }
    match String::from_utf8(bytes) {
        Ok(t) => match t.find('\0') {
            Some(at) => Err((t, at, "contains a NUL byte")),
            None => Ok(t),
        },
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let text = String::from_utf8_lossy(e.as_bytes()).into_owned();
            Err((text, valid, "is not UTF-8 text"))
        }
    }
}

/// A role file that exists but cannot be read as one.
fn unusable_role_file(rel: &str, why: Unusable) -> Diagnostic {
    let (message, help) = match why {
        Unusable::Missing => (
            "role file does not exist".to_string(),
            format!("create `{rel}`"),
        ),
        Unusable::Dangling => (
            "role file is a symbolic link to nothing".to_string(),
            format!("point it at a role file inside `{ROLES_DIR}/`, or remove it"),
        ),
        Unusable::NotFile => (
            "role file is not a regular file".to_string(),
            format!("make `{rel}` a regular file holding the role, or remove it"),
        ),
        Unusable::Outside => (
            format!("role file is a symbolic link that leads outside `{ROLES_DIR}/`"),
            format!("copy the role into `{ROLES_DIR}/` instead of linking to it: an image must not depend on the build machine"),
        ),
        Unusable::TooBig(n) => (
            format!(
                "role file is {}, more than the {} a role file may be",
                human_size(n),
                human_size(MAX_ROLE_BYTES)
            ),
            "a role file only lists what goes into the image: move large content into a file under `roles/files/` and bake it with `[[files]]`".to_string(),
        ),
        Unusable::Io(e) => (
            format!("cannot read role file: {e}"),
            format!("check that `{rel}` is readable"),
        ),
    };
    Diagnostic::file(rel, message).help(help)
}

impl Loader<'_> {
    fn diag<T>(&self, at: &At<T>, message: impl Into<String>) -> Diagnostic {
        let s = &self.sources[at.file];
        Diagnostic::at(&s.rel, &s.text, at.span.clone(), message)
    }

    fn at<T>(file: usize, s: Spanned<T>) -> At<T> {
        let span = s.span();
        At {
            v: s.into_inner(),
            file,
            span,
        }
    }

    /// Reads and parses one role file, once.
    fn layer(&mut self, name: &str) -> Option<&Layer> {
        if !self.layers.contains_key(name) {
            let parsed = self.parse_layer(name);
            self.layers.insert(name.to_string(), parsed);
        }
        self.layers.get(name).and_then(Option::as_ref)
    }

    /// Why `name` is not a role: usually a typo, sometimes a file that is
    /// there but cannot be a role file.
    fn unknown_role(&self, name: &str) -> Diagnostic {
        let rel = format!("{ROLES_DIR}/{name}.toml");
        if is_name(name) {
            if let Err(why @ (Unusable::NotFile | Unusable::Dangling | Unusable::Outside)) =
                self.store.stat(&format!("{name}.toml"))
            {
                return unusable_role_file(&rel, why);
            }
        }
        let d = Diagnostic::file(rel, format!("unknown role `{name}`"));
        match did_you_mean(name, self.known.iter().map(String::as_str)) {
            Some(s) => d.help(format!("did you mean `{s}`?")),
            None => d.help(format!(
                "the roles are: {}",
                if self.known.is_empty() {
                    "(none)".to_string()
                } else {
                    self.known.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            )),
        }
    }

    fn parse_layer(&mut self, name: &str) -> Option<Layer> {
        let rel = format!("{ROLES_DIR}/{name}.toml");
        let bytes = match self.store.read(&format!("{name}.toml"), MAX_ROLE_BYTES) {
            Ok(b) => b,
            Err(why) => {
                self.diags.push(unusable_role_file(&rel, why));
                return None;
            }
        };
        let text = match not_text(bytes) {
            Ok(t) => t,
            Err((text, at, what)) => {
                let help = if what.contains("NUL") {
                    "a role file is TOML text and this looks like a binary file; write the role as UTF-8 text"
                } else {
                    "TOML files must be UTF-8; re-save the file as UTF-8"
                };
                let d =
                    Diagnostic::at(&rel, &text, at..at + 1, format!("role file {what}")).help(help);
                self.diags.push(d);
                return None;
            }
        };
        let (raw, diags): (RawRole, _) = tomlfile::parse(&rel, &text);
        let failed = !diags.is_empty();
        for d in diags {
            self.diags.push(d);
        }
        let file = self.sources.len();
        self.sources.push(Source {
            rel: rel.clone(),
            text,
        });
        if !is_name(name) {
            let d = Diagnostic::file(&rel, format!("`{name}` is not a valid role name"))
                .help("rename the file: lowercase letters, digits and `-`, starting with a letter");
            self.diags.push(d);
            return None;
        }
        if let Some(n) = &raw.name {
            if n.get_ref() != name {
                let at = Self::at(file, n.clone());
                let d = self
                    .diag(&at, format!("role name `{}` does not match its file `{rel}`", n.get_ref()))
                    .help(format!("a role is named after its file: write `name = \"{name}\"`, or rename the file"));
                self.diags.push(d);
            }
        }
        Some(Layer {
            file,
            raw,
            broken: failed,
        })
    }

    /// The ancestors of `name` and `name` itself, each once, parents first.
    /// `stack` is the path of `extends` from the role being loaded; `seen`
    /// mirrors `out`, so that wide hierarchies stay linear.
    fn linearize(
        &mut self,
        name: &str,
        stack: &mut Vec<String>,
        out: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        if seen.contains(name) {
            return true;
        }
        let Some(layer) = self.layer(name) else {
            return false;
        };
        let file = layer.file;
        let parents: Vec<Spanned<String>> = layer.raw.extends.clone().unwrap_or_default();
        stack.push(name.to_string());
        let mut ok = true;
        for parent in parents {
            let at = Self::at(file, parent);
            let p = at.v.clone();
            if stack.contains(&p) {
                let cycle = stack[stack.iter().position(|s| *s == p).unwrap_or(0)..].join(" -> ");
                let d = self
                    .diag(&at, format!("`extends` cycle: {cycle} -> {p}"))
                    .help(
                    "a role cannot extend itself, directly or through its parents: remove one link",
                );
                self.diags.push(d);
                ok = false;
                continue;
            }
            if !is_name(&p) {
                let d = self
                    .diag(&at, format!("`{p}` is not a role name"))
                    .help(format!("`extends` lists roles by name, the stem of their file in `{ROLES_DIR}/`, like `base` for `{ROLES_DIR}/base.toml`"));
                self.diags.push(d);
                ok = false;
                continue;
            }
            if !self.known.contains(&p) {
                let mut d = self.diag(&at, format!("unknown parent role `{p}`"));
                d = match did_you_mean(&p, self.known.iter().map(String::as_str)) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(format!("there is no `{ROLES_DIR}/{p}.toml`; create it or remove `{p}` from `extends`")),
                };
                self.diags.push(d);
                ok = false;
                continue;
            }
            if stack.len() >= MAX_EXTENDS_DEPTH {
                let mut chain = stack.clone();
                chain.push(p.clone());
                let d = self
                    .diag(
                        &at,
                        format!(
                            "`extends` goes more than {MAX_EXTENDS_DEPTH} roles deep: {}",
                            show_chain(&chain)
                        ),
                    )
                    .help(format!(
                        "flatten the hierarchy: merge some of these roles into their parents, so that no chain is longer than {MAX_EXTENDS_DEPTH}"
                    ));
                self.diags.push(d);
                ok = false;
                break;
            }
            ok &= self.linearize(&p, stack, out, seen);
        }
        stack.pop();
        seen.insert(name.to_string());
        out.push(name.to_string());
        ok
    }

    fn role(&mut self, name: &str) -> Option<Role> {
        let mut chain = Vec::new();
        if !self.linearize(name, &mut Vec::new(), &mut chain, &mut BTreeSet::new()) {
            return None;
        }
        let mut m = Merged::default();
        for layer_name in &chain {
            let layer = self.layers.remove(layer_name).flatten()?;
            m.broken |= layer.broken;
            self.merge(&mut m, &layer);
            self.layers.insert(layer_name.clone(), Some(layer));
        }
        let is_abstract = self
            .layers
            .get(name)
            .and_then(Option::as_ref)
            .and_then(|l| l.raw.is_abstract)
            .unwrap_or(false);
        let sources = chain
            .iter()
            .map(|n| format!("{ROLES_DIR}/{n}.toml"))
            .collect();
        self.finish(name, is_abstract, m, sources)
    }

    /// Adds one layer on top of what its parents gave.
    fn merge(&mut self, m: &mut Merged, layer: &Layer) {
        let f = layer.file;
        let r = &layer.raw;
        if let Some(d) = &r.description {
            m.description = Some(Self::at(f, d.clone()));
        }
        if let Some(img) = &r.image {
            macro_rules! over {
                ($($k:ident),*) => { $( if let Some(v) = &img.$k { m.$k = Some(Self::at(f, v.clone())); } )* };
            }
            over!(base, instance_type, volume_size_gb, arch);
        }
        if let Some(p) = &r.packages {
            let mut here: BTreeMap<String, At<Package>> = BTreeMap::new();
            for spec in &p.apt {
                let at = Self::at(f, spec.clone());
                let Some(pkg) = self.package(&at) else {
                    continue;
                };
                if let Some(prev) = here.get(&pkg.name) {
                    let d = self
                        .diag(&at, format!("package `{}` is listed twice", pkg.name))
                        .help(format!(
                            "keep one entry; the other is at line {}",
                            self.line_of(prev)
                        ));
                    self.diags.push(d);
                    continue;
                }
                here.insert(
                    pkg.name.clone(),
                    At {
                        v: pkg,
                        file: f,
                        span: at.span,
                    },
                );
            }
            // A child's entry replaces its parent's: that is how a child pins
            // a package the parent installs unpinned.
            m.packages.extend(here);
        }
        for u in r.users.iter().flatten() {
            let at = Self::at(f, u.clone());
            if let Some(user) = self.user(&at) {
                let pos = m.users.iter().position(|x| x.v.name == user.name);
                let entry = At {
                    v: user,
                    file: f,
                    span: at.span,
                };
                match pos {
                    Some(i) => m.users[i] = entry,
                    None => m.users.push(entry),
                }
            }
        }
        for x in r.files.iter().flatten() {
            let at = Self::at(f, x.clone());
            if let Some(spec) = self.file_spec(&at, "0644", Kind::File) {
                m.files.push(At {
                    v: spec,
                    file: f,
                    span: at.span,
                });
            }
        }
        for x in r.archives.iter().flatten() {
            let at = Self::at(f, x.clone());
            if let Some(a) = self.archive(&at) {
                m.archives.push(At {
                    v: a,
                    file: f,
                    span: at.span,
                });
            }
        }
        if let Some(t) = &r.test {
            m.sidecars = Vec::new();
            for c in &t.sidecars {
                let at = Self::at(f, c.clone());
                if at.v.trim().is_empty() {
                    let d = self.diag(&at, "sidecar runs nothing").help(
                        "give each sidecar a command, like `redis-server --port 6379 --save ''`",
                    );
                    self.diags.push(d);
                    continue;
                }
                m.sidecars.push(at.v);
            }
        }
        for s in r.services.iter().flatten() {
            let at = Self::at(f, s.clone());
            let name = Self::at(f, at.v.name.clone());
            if !is_unit_name(&name.v) {
                let d = self
                    .diag(&name, format!("`{}` is not a systemd unit name", name.v))
                    .help("name the unit with its suffix, like `nginx.service` or `backup.timer`");
                self.diags.push(d);
                continue;
            }
            m.services.insert(
                name.v.clone(),
                At {
                    v: Service {
                        name: name.v,
                        enabled: at.v.enabled,
                    },
                    file: f,
                    span: name.span,
                },
            );
        }
        for c in r.checks.iter().flatten() {
            let name = Self::at(f, c.get_ref().name.clone());
            let run = Self::at(f, c.get_ref().run.clone());
            if let Some(prev) = m.checks.iter().find(|x| x.v.name == name.v) {
                let d = self
                    .diag(&name, format!("check `{}` is defined twice", name.v))
                    .help(format!(
                        "check names must be unique; the other is in `{}`",
                        self.sources[prev.file].rel
                    ));
                self.diags.push(d);
                continue;
            }
            if run.v.trim().is_empty() {
                let d = self
                    .diag(&run, format!("check `{}` runs nothing", name.v))
                    .help("give `run` a command");
                self.diags.push(d);
                continue;
            }
            m.checks.push(At {
                v: Check {
                    name: name.v,
                    run: run.v,
                },
                file: f,
                span: name.span,
            });
        }
        if let Some(b) = &r.boot {
            if let Some(p) = &b.parameters {
                let at = Self::at(f, p.clone());
                self.check_parameters(&at);
                m.parameters = Some(at);
            }
            for s in &b.start {
                let at = Self::at(f, s.clone());
                if !m.start.iter().any(|x| x.v == at.v) {
                    m.start.push(at);
                }
            }
            for t in &b.templates {
                let at = Self::at(f, t.clone());
                if let Some(spec) = self.file_spec(&at, "0600", Kind::Template) {
                    self.check_template(&spec, &at);
                    m.templates.push(At {
                        v: spec,
                        file: f,
                        span: at.span,
                    });
                }
            }
            if let Some(h) = &b.health {
                let at = Self::at(f, h.clone());
                if let Some(health) = self.health(&at) {
                    m.health = Some(health);
                }
            }
        }
    }

    fn line_of<T>(&self, at: &At<T>) -> usize {
        let text = &self.sources[at.file].text;
        text[..at.span.start.min(text.len())].matches('\n').count() + 1
    }

    fn package(&mut self, at: &At<String>) -> Option<Package> {
        let (name, version) = match at.v.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (at.v.as_str(), None),
        };
        let name_ok = name.len() >= 2
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
        if !name_ok {
            let d = self
                .diag(at, format!("`{}` is not a Debian package name", name))
                .help("package names are lowercase letters, digits and `+-.`; pin a version as `name=version`");
            self.diags.push(d);
            return None;
        }
        if let Some(v) = version {
            let ok = v.starts_with(|c: char| c.is_ascii_digit())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".+~:-".contains(&b));
            if !ok {
                let d = self
                    .diag(at, format!("`{v}` is not a Debian version for package `{name}`"))
                    .help("pin an exact version as `apt-cache policy` shows it, like `nginx=1.22.1-9`");
                self.diags.push(d);
                return None;
            }
        }
        Some(Package {
            name: name.to_string(),
            version: version.map(String::from),
        })
    }

    fn user(&mut self, at: &At<RawUser>) -> Option<User> {
        let u = &at.v;
        let name = Self::at(at.file, u.name.clone());
        let mut ok = true;
        if !is_account_name(&name.v) {
            let d = self
                .diag(&name, format!("`{}` is not a valid user name", name.v))
                .help("use lowercase letters, digits, `_` and `-`, starting with a letter or `_`, at most 32 characters");
            self.diags.push(d);
            ok = false;
        }
        for g in &u.groups {
            let g = Self::at(at.file, g.clone());
            if !is_account_name(&g.v) {
                let d = self
                    .diag(&g, format!("`{}` is not a valid group name", g.v))
                    .help(
                        "use lowercase letters, digits, `_` and `-`, starting with a letter or `_`",
                    );
                self.diags.push(d);
                ok = false;
            }
        }
        for p in [&u.shell, &u.home].into_iter().flatten() {
            let p = Self::at(at.file, p.clone());
            if let Err(why) = check_dest(&p.v) {
                let d = self
                    .diag(&p, format!("`{}` {why}", p.v))
                    .help("write an absolute path such as `/srv/learn`");
                self.diags.push(d);
                ok = false;
            }
        }
        ok.then(|| User {
            name: name.v,
            system: u.system,
            groups: u.groups.iter().map(|g| g.get_ref().clone()).collect(),
            shell: u.shell.as_ref().map(|s| s.get_ref().clone()),
            home: u.home.as_ref().map(|s| s.get_ref().clone()),
        })
    }

    /// Validates a `[[files]]` or `[[boot.templates]]` entry.
    fn file_spec(&mut self, at: &At<RawFile>, default_mode: &str, kind: Kind) -> Option<FileSpec> {
        let f = at.file;
        let raw = &at.v;
        let source = Self::at(f, raw.source.clone());
        let dest = Self::at(f, raw.dest.clone());
        let mut ok = true;
        if let Some(d) = self.check_source(&source, kind) {
            self.diags.push(d);
            ok = false;
        }
        match check_dest(&dest.v) {
            Err(why) => {
                let d = self
                    .diag(&dest, format!("destination `{}` {why}", dest.v))
                    .help("write the absolute path the file takes in the image, like `/etc/learn/app.env`");
                self.diags.push(d);
                ok = false;
            }
            Ok(()) if dest.v == AGENT_DIR || dest.v.starts_with(&format!("{AGENT_DIR}/")) => {
                let d = self
                    .diag(&dest, format!("destination `{}` is inside `{AGENT_DIR}`, which imagectl owns", dest.v))
                    .help("put the file somewhere else; imagectl writes the agent's configuration there");
                self.diags.push(d);
                ok = false;
            }
            Ok(()) => {}
        }
        let owner = self.account(f, &raw.owner, "owner");
        let group = self.account(f, &raw.group, "group");
        let (owner, group) = match (owner, group) {
            (Some(o), Some(g)) => (o, g),
            _ => {
                ok = false;
                Default::default()
            }
        };
        let mode = raw
            .mode
            .as_ref()
            .map_or_else(|| default_mode.to_string(), |m| m.get_ref().0.clone());
        ok.then_some(FileSpec {
            source: source.v,
            dest: dest.v,
            mode,
            owner,
            group,
        })
    }

    /// An owner or group name (root when not given); None, with the problem
    /// reported, when it is not a valid account name.
    fn account(&mut self, file: usize, v: &Option<Spanned<String>>, what: &str) -> Option<String> {
        let Some(s) = v else {
            return Some("root".to_string());
        };
        let a = Self::at(file, s.clone());
        if is_account_name(&a.v) {
            return Some(a.v);
        }
        let d = self
            .diag(&a, format!("`{}` is not a valid {what} name", a.v))
            .help("use lowercase letters, digits, `_` and `-`, starting with a letter or `_`");
        self.diags.push(d);
        None
    }

    /// Validates an `[[archives]]` entry.
    fn archive(&mut self, at: &At<RawArchive>) -> Option<Archive> {
        let f = at.file;
        let raw = &at.v;
        let source = Self::at(f, raw.source.clone());
        let mut ok = true;
        if let Some(d) = self.check_source(&source, Kind::Archive) {
            self.diags.push(d);
            ok = false;
        } else if ![".tar", ".tar.gz", ".tgz"]
            .iter()
            .any(|ext| source.v.ends_with(ext))
        {
            let d = self
                .diag(&source, format!("archive `{}` is not a tar archive", source.v))
                .help("name a `.tar`, `.tar.gz` or `.tgz` file, as the application's CI packs its release");
            self.diags.push(d);
            ok = false;
        }
        let mut path = |p: &Spanned<String>, what: &str| -> String {
            let p = Self::at(f, p.clone());
            let bad = match check_dest(&p.v) {
                Err(why) => Some(why),
                Ok(()) if p.v == "/" => Some("is the root directory"),
                Ok(()) if p.v == AGENT_DIR || p.v.starts_with(&format!("{AGENT_DIR}/")) => {
                    Some("is inside `/etc/imagectl`, which imagectl owns")
                }
                Ok(()) => None,
            };
            if let Some(why) = bad {
                let d = self
                    .diag(&p, format!("archive {what} `{}` {why}", p.v))
                    .help(if what == "link" {
                        "write the absolute path of the link, like `/srv/learn/current`"
                    } else {
                        "write an absolute directory of its own, like `/srv/learn/releases/2026.11.1`"
                    });
                self.diags.push(d);
                ok = false;
            }
            p.v
        };
        let dest = path(&raw.dest, "destination");
        let link = raw.link.as_ref().map(|l| path(l, "link"));
        let owner = self.account(f, &raw.owner, "owner");
        let group = self.account(f, &raw.group, "group");
        let (owner, group) = match (owner, group) {
            (Some(o), Some(g)) => (o, g),
            _ => {
                ok = false;
                Default::default()
            }
        };
        ok.then_some(Archive {
            source: source.v,
            dest,
            owner,
            group,
            link,
        })
    }

    /// A source must be a regular file inside `roles/`, also once symlinks
    /// are resolved (a role must not bake the build machine's files), and
    /// no bigger than its kind allows. Only its metadata is read. Returns
    /// the problem, if any.
    fn check_source(&self, source: &At<String>, kind: Kind) -> Option<Diagnostic> {
        let p = Path::new(&source.v);
        let fix = "write a path relative to `roles/`, like `files/worker/app.conf`, to a file inside `roles/`";
        if source.v.is_empty() || p.is_absolute() {
            return Some(
                self.diag(
                    source,
                    format!("source `{}` is not a relative path", source.v),
                )
                .help(fix),
            );
        }
        if p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
            || source.v.contains('\\')
        {
            return Some(
                self.diag(
                    source,
                    format!("source `{}` escapes `{ROLES_DIR}/`", source.v),
                )
                .help(format!("remove `..` and `.`: {fix}")),
            );
        }
        // `Path` reads `a/./b`, `a//b` and `a/b/` as `a/b`: the text, which
        // the hash and the staged paths use, must already be that.
        if source.v.split('/').any(|c| c.is_empty() || c == ".") {
            return Some(
                self.diag(source, format!("source `{}` is not a plain path", source.v))
                    .help(format!(
                        "write it without `.`, `//` or a trailing `/`: {fix}"
                    )),
            );
        }
        if source.v.chars().any(char::is_control) {
            return Some(
                self.diag(
                    source,
                    format!(
                        "source `{}` contains a control character",
                        source.v.escape_debug()
                    ),
                )
                .help(fix),
            );
        }
        let shown = format!("{ROLES_DIR}/{}", source.v);
        let (message, help) = match self.store.stat(&source.v) {
            Ok(len) if len <= kind.max() => return None,
            Ok(len) => (
                format!(
                    "{} `{shown}` is {}, more than the {} {} may be",
                    kind.noun(),
                    human_size(len),
                    human_size(kind.max()),
                    kind.article_noun()
                ),
                kind.too_big_help().to_string(),
            ),
            Err(Unusable::TooBig(_)) | Err(Unusable::Missing) => (
                format!("source file `{shown}` does not exist"),
                format!("create `{shown}`, or fix the path (it is relative to `{ROLES_DIR}/`)"),
            ),
            Err(Unusable::Dangling) => (
                format!("source file `{shown}` does not exist"),
                format!("`{shown}` is a symbolic link to nothing; point it at a file inside `{ROLES_DIR}/`"),
            ),
            Err(Unusable::NotFile) => (
                format!("source `{shown}` is not a regular file"),
                "list each file to bake as its own `[[files]]` entry".to_string(),
            ),
            Err(Unusable::Outside) => (
                format!("source `{shown}` is a symbolic link that leads outside `{ROLES_DIR}/`"),
                "copy the file into `roles/` instead of linking to it: an image must not depend on the build machine".to_string(),
            ),
            Err(Unusable::Io(e)) => (
                format!("cannot read source `{shown}`: {e}"),
                format!("check that `{shown}` is readable"),
            ),
        };
        Some(self.diag(source, message).help(help))
    }

    /// A boot template must be UTF-8 text and parse as handlebars; the
    /// error points into the template file itself.
    fn check_template(&mut self, spec: &FileSpec, at: &At<RawFile>) {
        let rel = format!("{ROLES_DIR}/{}", spec.source);
        let bytes = match self.store.read(&spec.source, MAX_TEMPLATE_BYTES) {
            Ok(b) => b,
            Err(why) => {
                // check_source has seen this very file a moment ago: it
                // changed since, or cannot be read.
                let src = Self::at(at.file, at.v.source.clone());
                let d = self
                    .diag(&src, format!("cannot read template `{rel}`: {why}"))
                    .help(format!("check that `{rel}` is a readable file"));
                self.diags.push(d);
                return;
            }
        };
        let text = match not_text(bytes) {
            Ok(t) => t,
            Err((text, offset, what)) => {
                let d = Diagnostic::at(&rel, &text, offset..offset + 1, format!("template {what}"))
                    .help("templates render to text files: save it as UTF-8 text");
                self.diags.push(d);
                return;
            }
        };
        if let Err(e) = imagectl_image::template::check(&text) {
            let offset = match (e.line, e.column) {
                (Some(l), Some(c)) => offset_of(&text, l, c),
                _ => 0,
            };
            let d = Diagnostic::at(
                &rel,
                &text,
                offset..offset + 1,
                format!("template is not valid handlebars: {}", e.reason),
            )
            .help("fix the template; see https://handlebarsjs.com/guide/ for the syntax");
            self.diags.push(d);
        }
    }

    fn check_parameters(&mut self, at: &At<String>) {
        let p = &at.v;
        if imagectl_image::template::check(p).is_err() {
            let d = self
                .diag(at, format!("parameter path `{p}` is not a valid template"))
                .help(PARAM_HELP);
            self.diags.push(d);
            return;
        }
        let sample = serde_json::json!({
            "env": "prod", "role": "role",
            "instance": {"id": "i-0", "region": "eu-west-1", "az": "eu-west-1a"},
        });
        match imagectl_image::template::registry().render_template(p, &sample) {
            Err(_) => {
                let d = self
                    .diag(
                        at,
                        format!("parameter path `{p}` uses a value that is not known at boot"),
                    )
                    .help(PARAM_HELP);
                self.diags.push(d);
            }
            Ok(path) => {
                let ok = path.starts_with('/')
                    && !path.ends_with('/')
                    && !path.contains("//")
                    && path
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b));
                if !ok {
                    let d = self
                        .diag(
                            at,
                            format!("parameter path `{p}` is not an SSM parameter path"),
                        )
                        .help(PARAM_HELP);
                    self.diags.push(d);
                }
            }
        }
    }

    fn health(&mut self, at: &At<RawHealth>) -> Option<Health> {
        let h = &at.v;
        let timeout = h
            .timeout_secs
            .as_ref()
            .map(|t| Self::at(at.file, t.clone()));
        let mut ok = true;
        match (&h.http, &h.command) {
            (Some(_), Some(_)) | (None, None) => {
                let d = self
                    .diag(at, "`[boot.health]` needs exactly one of `http` and `command`")
                    .help("set `http = \"http://127.0.0.1:PORT/health\"` (must answer 200) or `command = \"...\"` (must exit 0)");
                self.diags.push(d);
                ok = false;
            }
            (Some(url), None) => {
                let u = Self::at(at.file, url.clone());
                if !(u.v.starts_with("http://") || u.v.starts_with("https://")) || u.v.len() < 10 {
                    let d = self
                        .diag(&u, format!("`{}` is not an http(s) URL", u.v))
                        .help("write it like `http://127.0.0.1:8080/health`");
                    self.diags.push(d);
                    ok = false;
                }
            }
            (None, Some(cmd)) => {
                let c = Self::at(at.file, cmd.clone());
                if c.v.trim().is_empty() {
                    let d = self
                        .diag(&c, "health `command` is empty")
                        .help("give a command that exits 0 when the instance is healthy");
                    self.diags.push(d);
                    ok = false;
                }
            }
        }
        if let Some(t) = &timeout {
            if t.v == 0 || t.v > 3600 {
                let d = self
                    .diag(
                        t,
                        format!("health timeout of {} seconds is out of range", t.v),
                    )
                    .help("use 1 to 3600 seconds");
                self.diags.push(d);
                ok = false;
            }
        }
        ok.then(|| Health {
            http: h.http.as_ref().map(|s| s.get_ref().clone()),
            command: h.command.as_ref().map(|s| s.get_ref().clone()),
            timeout_secs: timeout.map_or(60, |t| t.v),
        })
    }

    /// Checks the merged role as a whole and turns it into plain data.
    fn finish(
        &mut self,
        name: &str,
        is_abstract: bool,
        m: Merged,
        sources: Vec<String>,
    ) -> Option<Role> {
        let before = self.diags.0.len();
        let bases = self.bases;

        let mut arch = m.arch.as_ref().map(|a| a.v);
        let base = match &m.base {
            Some(b) => match bases.get(&b.v) {
                Some(found) => {
                    if let Some(a) = &m.arch {
                        if a.v != found.architecture {
                            let d = self
                                .diag(a, format!("role asks for {} but base `{}` is {}", a.v.as_str(), b.v, found.architecture.as_str()))
                                .help("pick a base of that architecture in `imagectl.toml`, or remove `arch`");
                            self.diags.push(d);
                        }
                    }
                    arch = Some(found.architecture);
                    Some(b.v.clone())
                }
                None => {
                    let mut d = self.diag(b, format!("unknown base `{}`", b.v));
                    d = match did_you_mean(&b.v, bases.keys().map(String::as_str)) {
                        Some(s) => d.help(format!("did you mean `{s}`?")),
                        None => d.help(format!(
                            "add `[bases.{}]` to `imagectl.toml`, or use one of: {}",
                            b.v,
                            bases.keys().cloned().collect::<Vec<_>>().join(", ")
                        )),
                    };
                    self.diags.push(d);
                    None
                }
            },
            None => {
                if !is_abstract && !m.broken {
                    let file = format!("{ROLES_DIR}/{name}.toml");
                    self.diags.push(
                        Diagnostic::file(file, format!("role `{name}` has no base image"))
                            .help("set `[image] base = \"...\"` here or in a parent role, or mark the role `abstract = true`"),
                    );
                }
                None
            }
        };
        let arch = arch.unwrap_or(Arch::X86_64);

        let instance_type = match &m.instance_type {
            Some(t) => {
                if !is_instance_type(&t.v) {
                    let d = self
                        .diag(t, format!("`{}` is not an EC2 instance type", t.v))
                        .help("write it like `t3.medium` or `m7g.large`");
                    self.diags.push(d);
                } else if instance_arch(&t.v) != arch {
                    let d = self
                        .diag(
                            t,
                            format!(
                                "instance type `{}` is {} but the image is {}",
                                t.v,
                                instance_arch(&t.v).as_str(),
                                arch.as_str()
                            ),
                        )
                        .help(match arch {
                            Arch::Arm64 => "use a Graviton type such as `t4g.medium`",
                            Arch::X86_64 => "use an x86_64 type such as `t3.medium`",
                        });
                    self.diags.push(d);
                }
                t.v.clone()
            }
            None => match arch {
                Arch::X86_64 => "t3.small".into(),
                Arch::Arm64 => "t4g.small".into(),
            },
        };
        let volume_size_gb = match &m.volume_size_gb {
            Some(v) => {
                if !(8..=16384).contains(&v.v) {
                    let d = self
                        .diag(v, format!("volume size of {} GiB is out of range", v.v))
                        .help("use 8 to 16384 GiB; Debian's cloud images need at least 8");
                    self.diags.push(d);
                }
                v.v
            }
            None => 8,
        };

        // Two things may not land on the same path: the build would keep
        // whichever came last, silently.
        let mut dests: BTreeMap<String, (usize, Range<usize>)> = BTreeMap::new();
        let at = |kind: &'static str, path: &String, file: usize, span: &Range<usize>| {
            let v = path.clone();
            (
                kind,
                At {
                    v,
                    file,
                    span: span.clone(),
                },
            )
        };
        let mut paths: Vec<(&str, At<String>)> = Vec::new();
        for x in &m.files {
            paths.push(at("file", &x.v.dest, x.file, &x.span));
        }
        for x in &m.templates {
            paths.push(at("template", &x.v.dest, x.file, &x.span));
        }
        for x in &m.archives {
            paths.push(at("archive", &x.v.dest, x.file, &x.span));
            if let Some(l) = &x.v.link {
                paths.push(at("archive link", l, x.file, &x.span));
            }
        }
        for (kind, item) in &paths {
            if let Some((pf, ps)) = dests.get(&item.v) {
                let prev = At {
                    v: (),
                    file: *pf,
                    span: ps.clone(),
                };
                let where_ = format!("{}:{}", self.sources[*pf].rel, self.line_of(&prev));
                let d = self
                    .diag(
                        item,
                        format!("{kind} destination `{}` is used twice", item.v),
                    )
                    .help(format!(
                        "the other entry is at {where_}; give each file its own `dest`"
                    ));
                self.diags.push(d);
            } else {
                dests.insert(item.v.clone(), (item.file, item.span.clone()));
            }
        }

        // The agent can only start what the image has: a unit the role
        // declares, or a unit file it bakes.
        for s in &m.start {
            let declared = m.services.contains_key(&s.v);
            let baked = m.files.iter().any(|f| {
                [
                    "/etc/systemd/system/",
                    "/lib/systemd/system/",
                    "/usr/lib/systemd/system/",
                ]
                .iter()
                .any(|dir| f.v.dest == format!("{dir}{}", s.v))
            });
            if !is_unit_name(&s.v) {
                let d = self
                    .diag(s, format!("`{}` is not a systemd unit name", s.v))
                    .help("name the unit with its suffix, like `nginx.service`");
                self.diags.push(d);
            } else if !declared && !baked && !m.broken {
                let d = self
                    .diag(s, format!("boot starts `{}`, which the image neither enables nor installs", s.v))
                    .help(format!(
                        "declare it with `[[services]] name = \"{}\"` (`enabled = false` if only the agent starts it), or bake its unit file with `[[files]]`",
                        s.v
                    ));
                self.diags.push(d);
            }
        }

        if self.diags.0.len() > before || m.broken {
            return None;
        }
        let mut files: Vec<FileSpec> = m.files.into_iter().map(|x| x.v).collect();
        files.sort_by(|a, b| a.dest.cmp(&b.dest));
        let mut archives: Vec<Archive> = m.archives.into_iter().map(|x| x.v).collect();
        archives.sort_by(|a, b| a.dest.cmp(&b.dest));
        let mut templates: Vec<BootTemplate> = m
            .templates
            .into_iter()
            .map(|t| BootTemplate {
                source: t.v.source,
                dest: t.v.dest,
                mode: t.v.mode,
                owner: t.v.owner,
                group: t.v.group,
            })
            .collect();
        templates.sort_by(|a, b| a.dest.cmp(&b.dest));
        Some(Role {
            name: name.to_string(),
            description: m.description.map(|d| d.v).unwrap_or_default(),
            is_abstract,
            image: Image {
                base,
                instance_type,
                volume_size_gb,
                arch,
            },
            packages: m.packages.into_values().map(|p| p.v).collect(),
            users: m.users.into_iter().map(|u| u.v).collect(),
            files,
            archives,
            services: m.services.into_values().map(|s| s.v).collect(),
            checks: m.checks.into_iter().map(|c| c.v).collect(),
            boot: Boot {
                parameters: m.parameters.map(|p| p.v),
                start: m.start.into_iter().map(|s| s.v).collect(),
                templates,
                health: m.health,
            },
            test: TestSpec {
                sidecars: m.sidecars,
            },
            sources,
        })
    }
}

/// What a `source` is read as.
#[derive(Debug, Clone, Copy)]
enum Kind {
    File,
    Template,
    Archive,
}

impl Kind {
    fn max(self) -> u64 {
        match self {
            Kind::File => MAX_FILE_BYTES,
            Kind::Template => MAX_TEMPLATE_BYTES,
            Kind::Archive => MAX_ARCHIVE_BYTES,
        }
    }

    fn noun(self) -> &'static str {
        match self {
            Kind::File => "source",
            Kind::Template => "template",
            Kind::Archive => "archive",
        }
    }

    fn article_noun(self) -> &'static str {
        match self {
            Kind::File => "a baked file",
            Kind::Template => "a template",
            Kind::Archive => "an archive",
        }
    }

    fn too_big_help(self) -> &'static str {
        match self {
            Kind::File => "install large content from a package, or download it in a build step: baked files are copied through the staged context and uploaded over SSH",
            Kind::Template => "the agent renders every template in memory at each boot: keep templates to configuration files, and bake large static content with `[[files]]`",
            Kind::Archive => "archives are copied through the staged context and uploaded to the build instance: ship what makes a release this big as a Debian package, or slim the release",
        }
    }
}

const PARAM_HELP: &str = "write an SSM path such as `/learn/{{env}}/worker`; it may use `env`, `role`, `instance.id`, `instance.region` and `instance.az`";

/// A role while its layers are merged, every item still knowing where it came from.
#[derive(Default)]
struct Merged {
    broken: bool,
    description: Option<At<String>>,
    base: Option<At<String>>,
    instance_type: Option<At<String>>,
    volume_size_gb: Option<At<u32>>,
    arch: Option<At<Arch>>,
    packages: BTreeMap<String, At<Package>>,
    users: Vec<At<User>>,
    files: Vec<At<FileSpec>>,
    archives: Vec<At<Archive>>,
    sidecars: Vec<String>,
    services: BTreeMap<String, At<Service>>,
    checks: Vec<At<Check>>,
    parameters: Option<At<String>>,
    start: Vec<At<String>>,
    templates: Vec<At<FileSpec>>,
    health: Option<Health>,
}

/// Why `dest` is not an absolute, normal path, if it is not.
fn check_dest(dest: &str) -> Result<(), &'static str> {
    let p = Path::new(dest);
    if !p.is_absolute() {
        return Err("is not an absolute path");
    }
    if dest.len() > 1 && dest.ends_with('/') {
        return Err("ends with `/` but must name a file");
    }
    if dest.contains("//")
        || p.components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err("contains `..`, `.` or `//`");
    }
    if dest.chars().any(|c| c.is_control()) {
        return Err("contains a control character");
    }
    Ok(())
}

fn is_account_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_unit_name(s: &str) -> bool {
    const SUFFIXES: [&str; 7] = [
        ".service", ".socket", ".timer", ".target", ".path", ".mount", ".slice",
    ];
    SUFFIXES
        .iter()
        .any(|suf| s.len() > suf.len() && s.ends_with(suf))
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.@\\".contains(&b))
}

fn is_instance_type(s: &str) -> bool {
    match s.split_once('.') {
        Some((family, size)) => {
            !family.is_empty()
                && !size.is_empty()
                && family.starts_with(|c: char| c.is_ascii_lowercase())
                && family
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && size
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }
        None => false,
    }
}

/// The architecture of an instance family: Graviton families carry a `g`
/// right after their generation (`t4g`, `m7gd`, `c6gn`), and `a1` is ARM.
fn instance_arch(instance_type: &str) -> Arch {
    let family = instance_type.split('.').next().unwrap_or("");
    if family == "a1" {
        return Arch::Arm64;
    }
    let rest = family.trim_start_matches(|c: char| c.is_ascii_lowercase());
    let after_digits = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    if rest.len() != after_digits.len() && after_digits.starts_with('g') {
        Arch::Arm64
    } else {
        Arch::X86_64
    }
}

/// The byte offset of a 1-based line and column in `text`.
fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let line_text = text[start.min(text.len())..]
        .split('\n')
        .next()
        .unwrap_or("");
    let col: usize = line_text
        .chars()
        .take(column.saturating_sub(1))
        .map(char::len_utf8)
        .sum();
    (start + col).min(text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graviton_families_are_arm() {
        for t in [
            "t4g.small",
            "m7gd.large",
            "c6gn.xlarge",
            "a1.medium",
            "im4gn.large",
        ] {
            assert_eq!(instance_arch(t), Arch::Arm64, "{t}");
        }
        for t in ["t3.medium", "g5.xlarge", "inf2.xlarge", "m5.large"] {
            assert_eq!(instance_arch(t), Arch::X86_64, "{t}");
        }
    }

    #[test]
    fn dest_rules() {
        assert!(check_dest("/etc/learn/app.env").is_ok());
        assert!(check_dest("etc/x").is_err());
        assert!(check_dest("/etc/../x").is_err());
        assert!(check_dest("/etc/x/").is_err());
        assert!(check_dest("/etc//x").is_err());
    }

    #[test]
    fn unit_names() {
        assert!(is_unit_name("sidekiq.service"));
        assert!(is_unit_name("getty@tty1.service"));
        assert!(!is_unit_name("sidekiq"));
        assert!(!is_unit_name(".service"));
    }

    #[test]
    fn offsets_from_line_and_column() {
        let t = "ab\ncdé\nf";
        assert_eq!(offset_of(t, 1, 1), 0);
        assert_eq!(offset_of(t, 2, 3), 5);
        assert_eq!(offset_of(t, 3, 1), 8);
    }
}
