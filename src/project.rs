//! The project: where its root is (the directory holding `imagectl.toml`) and
//! the settings shared by every role.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::diag::{Diagnostic, Diagnostics};
use crate::tomlfile::{self, Partial};

/// The settings file every project has at its root.
pub const SETTINGS_FILE: &str = "imagectl.toml";

/// Errors finding or reading the project.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No `imagectl.toml` in the directory or any parent.
    #[error("could not find `{SETTINGS_FILE}` in `{}` or any parent directory; run imagectl inside a project, or name one with `-C DIR`", .0.display())]
    NotFound(PathBuf),
    /// The directory does not exist or cannot be read.
    #[error("cannot use directory `{}`: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The settings file cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The settings file is not valid.
    #[error(transparent)]
    Invalid(#[from] Diagnostics),
}

/// A CPU architecture of an image.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// 64-bit x86 (Debian's `amd64`).
    X86_64,
    /// 64-bit ARM (Graviton).
    Arm64,
}

impl Arch {
    /// The name EC2 uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// `[aws]`: where and how images are built and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Aws {
    /// The home region: images are built here.
    pub region: String,
    /// Regions every image is copied to after the build.
    pub copy_regions: Vec<String>,
    /// Accounts every image (and its snapshots) is shared with.
    pub share_accounts: Vec<String>,
    /// `Name` tag of the private subnet builds run in.
    pub build_subnet: Option<String>,
    /// `Name` tag of the security group of the build instance: no ingress
    /// at all, since the build is reached through Session Manager.
    pub build_security_group: Option<String>,
    /// Name of the IAM instance profile of the build instance.
    pub instance_profile: Option<String>,
    /// KMS key (ID, ARN or `alias/...`) encrypting the volumes.
    pub kms_key: Option<String>,
}

/// `[bases.NAME]`: a base image, found by filter or pinned by ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Account IDs (or aliases such as `amazon`) that own the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<String>,
    /// Image name pattern, `*` as wildcard (`debian-12-amd64-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A pinned AMI ID instead of a filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ami: Option<String>,
    /// Architecture of the image.
    pub architecture: Arch,
    /// The login user of the image (Debian's is `admin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_username: Option<String>,
    /// The Debian suite the local target bootstraps for this base (default:
    /// from the base's name, `debian-12` is `bookworm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suite: Option<String>,
}

impl Base {
    /// The Debian suite of this base, for local builds.
    pub fn suite(&self, name: &str) -> Option<String> {
        if let Some(s) = &self.suite {
            return Some(s.clone());
        }
        let known = [
            ("debian-11", "bullseye"),
            ("debian-12", "bookworm"),
            ("debian-13", "trixie"),
        ];
        known
            .iter()
            .find(|(prefix, _)| name.starts_with(prefix))
            .map(|(_, s)| s.to_string())
    }
}

/// `[publish]`: channels and launch templates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Publish {
    /// SSM parameter prefix of the channels.
    pub prefix: String,
    /// Channel names, in promotion order.
    pub channels: Vec<String>,
    /// How many previous values of a channel `rollback` can restore (and
    /// `prune` therefore keeps).
    pub rollback_depth: u32,
    /// Launch template name per role and channel: publishing to that
    /// channel adds a version with the new image and makes it the default.
    pub launch_templates: BTreeMap<String, BTreeMap<String, String>>,
}

/// `[build]`: limits of one image build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    /// The longest a Packer build may take before it is stopped (and
    /// cleans up).
    #[serde(default = "default_timeout")]
    pub timeout_minutes: u64,
    /// The longest imagectl waits for an image (or a copy) to become
    /// available.
    #[serde(default = "default_wait")]
    pub wait_minutes: u64,
}

fn default_timeout() -> u64 {
    120
}

fn default_wait() -> u64 {
    60
}

impl Default for Build {
    fn default() -> Build {
        Build {
            timeout_minutes: default_timeout(),
            wait_minutes: default_wait(),
        }
    }
}

/// Every setting of `imagectl.toml`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Settings {
    /// `[aws]`.
    pub aws: Aws,
    /// `[build]`.
    pub build: Build,
    /// `[bases]`, by name.
    pub bases: BTreeMap<String, Base>,
    /// `[publish]`.
    pub publish: Publish,
}

/// A project found on disk.
#[derive(Debug, Clone)]
pub struct Project {
    /// The directory holding `imagectl.toml`.
    pub root: PathBuf,
    /// Its settings.
    pub settings: Settings,
}

impl Project {
    /// Finds the project containing `dir` (walking up as cargo does) and
    /// reads its settings.
    pub fn discover(dir: &Path) -> Result<Project, Error> {
        let start = dir.canonicalize().map_err(|source| Error::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let root = start
            .ancestors()
            .find(|d| d.join(SETTINGS_FILE).is_file())
            .ok_or_else(|| Error::NotFound(start.clone()))?
            .to_path_buf();
        let path = root.join(SETTINGS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        let settings = parse_settings(&text)?;
        Ok(Project { root, settings })
    }

    /// The directory of the role files.
    pub fn roles_dir(&self) -> PathBuf {
        self.root.join("roles")
    }

    /// The directory of generated, committed files (templates, lock).
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    aws: Option<RawAws>,
    build: Option<Build>,
    bases: Option<BTreeMap<String, Spanned<Base>>>,
    publish: Option<RawPublish>,
}

impl Partial for RawSettings {
    fn absorb(&mut self, o: Self) {
        self.aws = o.aws.or(self.aws.take());
        self.build = o.build.or(self.build.take());
        self.bases = o.bases.or(self.bases.take());
        self.publish = o.publish.or(self.publish.take());
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: Option<Spanned<String>>,
    #[serde(default)]
    copy_regions: Vec<Spanned<String>>,
    #[serde(default)]
    share_accounts: Vec<Spanned<String>>,
    build_subnet: Option<String>,
    build_security_group: Option<String>,
    instance_profile: Option<String>,
    kms_key: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPublish {
    prefix: Option<Spanned<String>>,
    channels: Option<Vec<Spanned<String>>>,
    rollback_depth: Option<u32>,
    #[serde(default)]
    launch_templates: BTreeMap<String, BTreeMap<String, String>>,
}

/// Parses and validates the text of `imagectl.toml`.
pub fn parse_settings(text: &str) -> Result<Settings, Diagnostics> {
    let file = SETTINGS_FILE;
    let (raw, diags): (RawSettings, _) = tomlfile::parse(file, text);
    let mut diags = Diagnostics(diags);
    let at = |span: std::ops::Range<usize>, msg: String| Diagnostic::at(file, text, span, msg);

    let raw_aws = raw.aws.unwrap_or_default();
    let region = match raw_aws.region {
        Some(r) => {
            if !is_region(r.get_ref()) {
                diags.push(
                    at(
                        r.span(),
                        format!("`{}` is not an AWS region name", r.get_ref()),
                    )
                    .help("use a region such as `eu-west-1`"),
                );
            }
            r.into_inner()
        }
        None => {
            if diags.is_empty() {
                diags.push(
                    Diagnostic::file(file, "missing key `region` in `[aws]`")
                        .help("add `[aws]` with `region = \"eu-west-1\"` (the home region images are built in)"),
                );
            }
            String::new()
        }
    };
    for r in &raw_aws.copy_regions {
        if !is_region(r.get_ref()) {
            diags.push(
                at(
                    r.span(),
                    format!("`{}` is not an AWS region name", r.get_ref()),
                )
                .help("use a region such as `eu-central-1`"),
            );
        }
    }
    for a in &raw_aws.share_accounts {
        if a.get_ref().len() != 12 || !a.get_ref().bytes().all(|b| b.is_ascii_digit()) {
            diags.push(
                at(
                    a.span(),
                    format!("`{}` is not an AWS account ID", a.get_ref()),
                )
                .help("an account ID is 12 digits, written as a string"),
            );
        }
    }

    if let Some(key) = &raw_aws.kms_key {
        let copies: Vec<&str> = raw_aws
            .copy_regions
            .iter()
            .map(|r| r.get_ref().as_str())
            .collect();
        if let Err((msg, help)) = check_kms_key(key.get_ref(), &region, &copies) {
            diags.push(at(key.span(), msg).help(help));
        }
    }

    let mut bases = BTreeMap::new();
    for (name, base) in raw.bases.unwrap_or_default() {
        let span = base.span();
        let base = base.into_inner();
        let filter = !base.owners.is_empty() || base.name.is_some();
        match (&base.ami, filter) {
            (Some(_), true) => diags.push(
                at(
                    span.clone(),
                    format!("base `{name}` sets both `ami` and a filter"),
                )
                .help("pin an image with `ami`, or find one with `owners` and `name`, not both"),
            ),
            (None, false) => diags.push(
                at(
                    span.clone(),
                    format!("base `{name}` has neither `ami` nor a filter"),
                )
                .help(
                    "add `owners = [...]` and `name = \"pattern-*\"`, or pin `ami = \"ami-...\"`",
                ),
            ),
            (None, true) if base.owners.is_empty() || base.name.is_none() => diags.push(
                at(
                    span.clone(),
                    format!("base `{name}` needs both `owners` and `name`"),
                )
                .help("an image filter without an owner could match anybody's image"),
            ),
            (Some(ami), false) if !is_ami_id(ami) => diags.push(
                at(span.clone(), format!("`{ami}` is not an AMI ID"))
                    .help("an AMI ID looks like `ami-0123456789abcdef0`"),
            ),
            _ => {}
        }
        bases.insert(name, base);
    }

    let raw_publish = raw.publish.unwrap_or_default();
    let prefix = match raw_publish.prefix {
        Some(p) => {
            let v = p.get_ref();
            if !v.starts_with('/') || v.ends_with('/') || v.contains("//") {
                diags.push(
                    at(p.span(), format!("`{v}` is not an SSM parameter prefix"))
                        .help("start it with `/` and do not end it with `/`, as in `/imagectl`"),
                );
            }
            p.into_inner()
        }
        None => "/imagectl".to_string(),
    };
    let channels = match raw_publish.channels {
        Some(cs) => {
            for c in &cs {
                if !is_name(c.get_ref()) {
                    diags.push(
                        at(
                            c.span(),
                            format!("`{}` is not a valid channel name", c.get_ref()),
                        )
                        .help("use lowercase letters, digits and `-`"),
                    );
                }
            }
            cs.into_iter().map(Spanned::into_inner).collect()
        }
        None => vec!["dev".into(), "staging".into(), "prod".into()],
    };

    diags.into_result(Settings {
        aws: Aws {
            region,
            copy_regions: raw_aws
                .copy_regions
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            share_accounts: raw_aws
                .share_accounts
                .into_iter()
                .map(Spanned::into_inner)
                .collect(),
            build_subnet: raw_aws.build_subnet,
            build_security_group: raw_aws.build_security_group,
            instance_profile: raw_aws.instance_profile,
            kms_key: raw_aws.kms_key.map(Spanned::into_inner),
        },
        bases,
        build: raw.build.unwrap_or_default(),
        publish: Publish {
            prefix,
            channels,
            rollback_depth: raw_publish.rollback_depth.unwrap_or(5),
            launch_templates: raw_publish.launch_templates,
        },
    })
}

/// What a `kms_key` setting names, and so where it can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KmsKey<'a> {
    /// `alias/NAME`: the alias of that name in each region.
    Alias,
    /// `mrk-...`: a multi-region key, the same ID in every replica region.
    MultiRegionId,
    /// An ARN (`arn:PARTITION:kms:REGION:ACCOUNT:key/...` or `alias/...`):
    /// its region, and whether it names a multi-region key or an alias,
    /// which exist under the same name in other regions.
    Arn { region: &'a str, portable: bool },
    /// A key ID of a single-region key: that region only.
    KeyId,
}

fn kms_key_kind(key: &str) -> Option<KmsKey<'_>> {
    let is_key_id = |id: &str| {
        id.len() == 36
            && id
                .bytes()
                .all(|b| (b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) || b == b'-')
    };
    let is_mrk = |id: &str| {
        id.strip_prefix("mrk-")
            .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    let is_alias = |a: &str| {
        a.strip_prefix("alias/").is_some_and(|n| {
            !n.is_empty()
                && n.len() <= 250
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
        })
    };
    if is_alias(key) {
        return Some(KmsKey::Alias);
    }
    if is_mrk(key) {
        return Some(KmsKey::MultiRegionId);
    }
    if is_key_id(key) {
        return Some(KmsKey::KeyId);
    }
    let parts: Vec<&str> = key.splitn(6, ':').collect();
    match parts[..] {
        ["arn", partition, "kms", region, account, resource]
            if partition.starts_with("aws")
                && is_region(region)
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit()) =>
        {
            if let Some(id) = resource.strip_prefix("key/") {
                (is_mrk(id) || is_key_id(id)).then_some(KmsKey::Arn {
                    region,
                    portable: is_mrk(id),
                })
            } else {
                is_alias(resource).then_some(KmsKey::Arn {
                    region,
                    portable: true,
                })
            }
        }
        _ => None,
    }
}

/// Checks that `key` can encrypt images in the home region and in every
/// copy region: a key exists in one region only, so a single-region key ID
/// or ARN cannot encrypt the copies, and Packer would fail after the whole
/// bake. Err is the message and the advice.
fn check_kms_key(key: &str, home: &str, copies: &[&str]) -> Result<(), (String, String)> {
    let everywhere = "use an alias created in every region (`alias/imagectl-images`), or a multi-region key (`mrk-...`) replicated to them";
    match kms_key_kind(key) {
        None => Err((
            format!("`{key}` is not a KMS key ID, key ARN or alias"),
            "write `alias/NAME`, a key ID, or `arn:aws:kms:REGION:ACCOUNT:key/ID`".to_string(),
        )),
        Some(KmsKey::Arn { region, .. }) if region != home => Err((
            format!("`kms_key` is in `{region}`, but images are built in `{home}`"),
            format!("name a key in `{home}`; {everywhere}"),
        )),
        Some(
            KmsKey::KeyId
            | KmsKey::Arn {
                portable: false, ..
            },
        ) if !copies.is_empty() => {
            let regions: Vec<String> = copies.iter().map(|r| format!("`{r}`")).collect();
            let plural = if copies.len() == 1 { "" } else { "s" };
            Err((
                format!(
                    "`kms_key` names a single-region key, which does not exist in the copy region{plural} {}",
                    regions.join(", ")
                ),
                everywhere.to_string(),
            ))
        }
        Some(_) => Ok(()),
    }
}

impl Aws {
    /// The KMS key to encrypt with in `region`: the setting itself, or for
    /// an ARN of a multi-region key or an alias, the same ARN in `region`
    /// (the settings check refuses any other key with copy regions).
    pub fn kms_key_in(&self, region: &str) -> Option<String> {
        let key = self.kms_key.as_deref()?;
        Some(match kms_key_kind(key) {
            Some(KmsKey::Arn {
                region: at,
                portable: true,
            }) if at != region => {
                let parts: Vec<&str> = key.splitn(6, ':').collect();
                format!(
                    "{}:{}:{}:{region}:{}:{}",
                    parts[0], parts[1], parts[2], parts[4], parts[5]
                )
            }
            _ => key.to_string(),
        })
    }
}

/// A lowercase name: letters, digits and `-`, starting with a letter.
pub fn is_name(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// `ami-` followed by 8 or 17 hex digits.
pub fn is_ami_id(s: &str) -> bool {
    s.strip_prefix("ami-").is_some_and(|h| {
        (h.len() == 8 || h.len() == 17)
            && h.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[aws]\nregion = \"eu-west-1\"\n\n[bases.debian-12]\nowners = [\"136693071363\"]\nname = \"debian-12-amd64-*\"\narchitecture = \"x86_64\"\n";

    #[test]
    fn minimal_settings_get_defaults() {
        let s = parse_settings(MINIMAL).unwrap();
        assert_eq!(s.publish.prefix, "/imagectl");
        assert_eq!(s.publish.channels, ["dev", "staging", "prod"]);
        assert_eq!(s.publish.rollback_depth, 5);
        assert_eq!(s.bases["debian-12"].architecture, Arch::X86_64);
    }

    #[test]
    fn every_problem_is_reported() {
        let text = "[aws]\nregion = \"mars\"\nshare_accounts = [\"12\"]\n[publish]\nprefix = \"imagectl\"\n";
        let d = parse_settings(text).unwrap_err();
        let msgs: Vec<String> =
            d.0.iter()
                .map(|d| format!("{} {}", d.position(), d.message))
                .collect();
        assert_eq!(
            msgs,
            [
                "imagectl.toml:2:10 `mars` is not an AWS region name",
                "imagectl.toml:3:19 `12` is not an AWS account ID",
                "imagectl.toml:5:10 `imagectl` is not an SSM parameter prefix",
            ]
        );
    }

    #[test]
    fn kms_keys_must_exist_where_images_go() {
        let home = "eu-west-1";
        let copies = ["eu-central-1"];
        let id = "1234abcd-12ab-34cd-56ef-1234567890ab";
        let mrk = "mrk-1234abcd12ab34cd56ef1234567890ab";
        for ok in [
            "alias/imagectl-images".to_string(),
            mrk.to_string(),
            format!("arn:aws:kms:eu-west-1:111122223333:key/{mrk}"),
            "arn:aws:kms:eu-west-1:111122223333:alias/imagectl-images".to_string(),
        ] {
            assert_eq!(check_kms_key(&ok, home, &copies), Ok(()), "{ok}");
        }
        // A single-region key is fine without copies, not with them.
        let arn = format!("arn:aws:kms:eu-west-1:111122223333:key/{id}");
        for single in [id, arn.as_str()] {
            assert_eq!(check_kms_key(single, home, &[]), Ok(()));
            let (msg, _) = check_kms_key(single, home, &copies).unwrap_err();
            assert_eq!(msg, "`kms_key` names a single-region key, which does not exist in the copy region `eu-central-1`");
        }
        let (msg, _) = check_kms_key(
            &format!("arn:aws:kms:us-east-1:111122223333:key/{mrk}"),
            home,
            &[],
        )
        .unwrap_err();
        assert_eq!(
            msg,
            "`kms_key` is in `us-east-1`, but images are built in `eu-west-1`"
        );
        for bad in [
            "imagectl-images",
            "alias/",
            "arn:aws:kms:eu-west-1:1:key/x",
            "KEY",
        ] {
            let (msg, _) = check_kms_key(bad, home, &copies).unwrap_err();
            assert!(
                msg.ends_with("is not a KMS key ID, key ARN or alias"),
                "{bad}: {msg}"
            );
        }
    }

    #[test]
    fn a_portable_kms_arn_is_rewritten_for_each_region() {
        let mut s = parse_settings(MINIMAL).unwrap();
        let mrk = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab";
        s.aws.kms_key = Some(mrk.to_string());
        assert_eq!(s.aws.kms_key_in("eu-west-1").as_deref(), Some(mrk));
        assert_eq!(
            s.aws.kms_key_in("eu-central-1").as_deref(),
            Some("arn:aws:kms:eu-central-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab")
        );
        s.aws.kms_key = Some("alias/imagectl-images".to_string());
        assert_eq!(
            s.aws.kms_key_in("eu-central-1").as_deref(),
            Some("alias/imagectl-images")
        );
        s.aws.kms_key = None;
        assert_eq!(s.aws.kms_key_in("eu-central-1"), None);
    }

    #[test]
    fn ami_ids() {
        assert!(is_ami_id("ami-0123456789abcdef0"));
        assert!(is_ami_id("ami-12345678"));
        assert!(!is_ami_id("ami-123"));
        assert!(!is_ami_id("ami-0123456789ABCDEF0"));
    }

    #[test]
    fn regions() {
        assert!(is_region("eu-west-1"));
        assert!(is_region("us-gov-west-1"));
        assert!(!is_region("eu-west"));
    }
}
