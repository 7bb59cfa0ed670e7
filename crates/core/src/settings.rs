//! `imagectl.toml`: the settings shared by every role, parsed and
//! validated with a diagnostic per problem.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::arch::Arch;
use crate::diag::{Diagnostic, Diagnostics};
use crate::kms;
use crate::names::{is_ami_id, is_region};
use crate::tomlfile::{self, Partial};

/// The settings file every project has at its root.
pub const SETTINGS_FILE: &str = "imagectl.toml";

/// `[aws]`: where and how images are built and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Aws {
    /// The home region: images are built here.
    pub region: String,
    /// Regions every image is copied to after the build: each once, never
    /// the home region (the settings check refuses it there).
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
    /// Auto Scaling group names per role and channel: `--roll` (and
    /// `imagectl rollout`) starts an instance refresh on each.
    pub auto_scaling_groups: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Days after which an image a publish takes out of its last channel
    /// is deprecated (`deprecate_after_days`, 1 to 3650, default
    /// [`DEFAULT_DEPRECATE_AFTER_DAYS`]); `None` when set to `0`, which
    /// turns deprecation off.
    pub deprecate_after_days: Option<u32>,
    /// Channels whose images, current and within their rollback history,
    /// have deregistration protection (`protect_channels`, default
    /// `["prod"]`, those of them that are channels).
    pub protect_channels: Vec<String>,
}

/// `[publish] deprecate_after_days` when it is not set.
pub const DEFAULT_DEPRECATE_AFTER_DAYS: u32 = 90;

/// The longest `[publish] deprecate_after_days`: EC2 deprecates at most 10
/// years ahead.
pub const MAX_DEPRECATE_AFTER_DAYS: u32 = 3650;

/// `[rollout]`: how an instance refresh replaces a group's instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// The share of the group that stays in service during the refresh
    /// (`MinHealthyPercentage`), 0 to 100.
    #[serde(default = "default_min_healthy")]
    pub min_healthy_percentage: u8,
    /// Seconds a new instance is given before it counts as ready
    /// (`InstanceWarmup`); the group's own default when unset.
    #[serde(default)]
    pub instance_warmup_secs: Option<u32>,
    /// How long imagectl follows a refresh before it gives up following
    /// (the refresh itself goes on).
    #[serde(default = "default_rollout_timeout")]
    pub timeout_minutes: u64,
    /// Seconds between two looks at a refresh's progress.
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
}

fn default_min_healthy() -> u8 {
    90
}

fn default_rollout_timeout() -> u64 {
    60
}

fn default_poll() -> u64 {
    15
}

impl Default for Rollout {
    fn default() -> Rollout {
        Rollout {
            min_healthy_percentage: default_min_healthy(),
            instance_warmup_secs: None,
            timeout_minutes: default_rollout_timeout(),
            poll_secs: default_poll(),
        }
    }
}

/// `[provenance]`: the keys builds sign their provenance with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The asymmetric KMS key (`SIGN_VERIFY`, ECC or RSA) in the home
    /// region that AWS builds sign with and `verify` checks against. Unset:
    /// AMIs are not signed, and `publish` says so instead of refusing.
    #[serde(default)]
    pub kms_key: Option<String>,
    /// The Ed25519 key (PKCS#8) local builds sign with, relative to the
    /// project root; made on first use, readable by its owner only.
    #[serde(default = "default_local_key")]
    pub local_key: String,
}

/// Where local builds keep their signing key unless told otherwise (not
/// committed: `.imagectl/` is the project's private state).
pub const DEFAULT_LOCAL_KEY: &str = ".imagectl/provenance.key";

fn default_local_key() -> String {
    DEFAULT_LOCAL_KEY.to_string()
}

impl Default for Provenance {
    fn default() -> Provenance {
        Provenance {
            kms_key: None,
            local_key: default_local_key(),
        }
    }
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
    /// `[rollout]`.
    pub rollout: Rollout,
    /// `[provenance]`.
    pub provenance: Provenance,
}

impl Aws {
    /// Every region images live in: the home region first, then the copy
    /// regions as written, each once.
    pub fn regions(&self) -> Vec<&str> {
        std::iter::once(self.region.as_str())
            .chain(self.copy_regions.iter().map(String::as_str))
            .collect()
    }

    /// The KMS key to encrypt with in `region`: the setting itself, or for
    /// an ARN of a multi-region key or an alias, the same ARN in `region`
    /// (the settings check refuses any other key with copy regions).
    pub fn kms_key_in(&self, region: &str) -> Option<String> {
        let key = self.kms_key.as_deref()?;
        Some(match kms::kind(key) {
            Some(kms::Kind::Arn {
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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    aws: Option<RawAws>,
    build: Option<Build>,
    bases: Option<BTreeMap<String, Spanned<Base>>>,
    publish: Option<RawPublish>,
    rollout: Option<Spanned<Rollout>>,
    provenance: Option<Spanned<Provenance>>,
}

impl Partial for RawSettings {
    fn absorb(&mut self, o: Self) {
        self.aws = o.aws.or(self.aws.take());
        self.build = o.build.or(self.build.take());
        self.bases = o.bases.or(self.bases.take());
        self.publish = o.publish.or(self.publish.take());
        self.rollout = o.rollout.or(self.rollout.take());
        self.provenance = o.provenance.or(self.provenance.take());
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
    #[serde(default)]
    auto_scaling_groups: BTreeMap<String, BTreeMap<Spanned<String>, Vec<Spanned<String>>>>,
    deprecate_after_days: Option<Spanned<i64>>,
    protect_channels: Option<Vec<Spanned<String>>>,
}

/// Parses and validates the text of `imagectl.toml`: every problem, each
/// with its line and column.
pub fn parse_settings(text: &str) -> Result<Settings, Diagnostics> {
    let (raw, diags): (RawSettings, _) = tomlfile::parse(SETTINGS_FILE, text);
    let mut ctx = Ctx {
        text,
        diags: Diagnostics(diags),
    };
    let aws = parse_aws(&mut ctx, raw.aws.unwrap_or_default());
    let bases = parse_bases(&mut ctx, raw.bases.unwrap_or_default());
    let publish = parse_publish(&mut ctx, raw.publish.unwrap_or_default());
    let rollout = parse_rollout(&mut ctx, raw.rollout);
    let provenance = parse_provenance(&mut ctx, raw.provenance);
    ctx.diags.into_result(Settings {
        aws,
        bases,
        build: raw.build.unwrap_or_default(),
        publish,
        rollout,
        provenance,
    })
}

/// The text being parsed and the problems found so far.
struct Ctx<'a> {
    text: &'a str,
    diags: Diagnostics,
}

impl Ctx<'_> {
    /// Reports `message` at `span` of `imagectl.toml`, with advice.
    fn error(&mut self, span: std::ops::Range<usize>, message: String, help: &str) {
        self.diags
            .push(Diagnostic::at(SETTINGS_FILE, self.text, span, message).help(help));
    }
}

fn parse_aws(ctx: &mut Ctx, raw: RawAws) -> Aws {
    let region = match raw.region {
        Some(r) => {
            if !is_region(r.get_ref()) {
                let msg = format!("`{}` is not an AWS region name", r.get_ref());
                ctx.error(r.span(), msg, "use a region such as `eu-west-1`");
            }
            r.into_inner()
        }
        None => {
            if ctx.diags.is_empty() {
                ctx.diags.push(
                    Diagnostic::file(SETTINGS_FILE, "missing key `region` in `[aws]`")
                        .help("add `[aws]` with `region = \"eu-west-1\"` (the home region images are built in)"),
                );
            }
            String::new()
        }
    };
    let copy_regions = parse_copy_regions(ctx, &region, raw.copy_regions);
    for a in &raw.share_accounts {
        if a.get_ref().len() != 12 || !a.get_ref().bytes().all(|b| b.is_ascii_digit()) {
            let msg = format!("`{}` is not an AWS account ID", a.get_ref());
            ctx.error(
                a.span(),
                msg,
                "an account ID is 12 digits, written as a string",
            );
        }
    }
    if let Some(key) = &raw.kms_key {
        let copies: Vec<&str> = copy_regions.iter().map(String::as_str).collect();
        if let Err((msg, help)) = kms::check(key.get_ref(), &region, &copies) {
            ctx.error(key.span(), msg, &help);
        }
    }
    Aws {
        region,
        copy_regions,
        share_accounts: raw
            .share_accounts
            .into_iter()
            .map(Spanned::into_inner)
            .collect(),
        build_subnet: raw.build_subnet,
        build_security_group: raw.build_security_group,
        instance_profile: raw.instance_profile,
        kms_key: raw.kms_key.map(Spanned::into_inner),
    }
}

/// The copy regions, each once and in the order written; the home region is
/// refused there (images are built there, a copy onto itself is a second
/// image of the same hash).
fn parse_copy_regions(ctx: &mut Ctx, home: &str, raw: Vec<Spanned<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in raw {
        let name = r.get_ref();
        if !is_region(name) {
            let msg = format!("`{name}` is not an AWS region name");
            ctx.error(r.span(), msg, "use a region such as `eu-central-1`");
        } else if name == home {
            let msg = format!("`{name}` is the home region (`region`), not a copy region");
            ctx.error(
                r.span(),
                msg,
                "images are built in the home region; list only the other regions they are copied to",
            );
        } else if out.contains(name) {
            let msg = format!("copy region `{name}` is listed twice");
            ctx.error(r.span(), msg, "list each region once");
        } else {
            out.push(r.into_inner());
        }
    }
    out
}

fn parse_bases(ctx: &mut Ctx, raw: BTreeMap<String, Spanned<Base>>) -> BTreeMap<String, Base> {
    let mut bases = BTreeMap::new();
    for (name, base) in raw {
        let span = base.span();
        let base = base.into_inner();
        let filter = !base.owners.is_empty() || base.name.is_some();
        let problem = match (&base.ami, filter) {
            (Some(_), true) => Some((
                format!("base `{name}` sets both `ami` and a filter"),
                "pin an image with `ami`, or find one with `owners` and `name`, not both",
            )),
            (None, false) => Some((
                format!("base `{name}` has neither `ami` nor a filter"),
                "add `owners = [...]` and `name = \"pattern-*\"`, or pin `ami = \"ami-...\"`",
            )),
            (None, true) if base.owners.is_empty() || base.name.is_none() => Some((
                format!("base `{name}` needs both `owners` and `name`"),
                "an image filter without an owner could match anybody's image",
            )),
            (Some(ami), false) if !is_ami_id(ami) => Some((
                format!("`{ami}` is not an AMI ID"),
                "an AMI ID looks like `ami-0123456789abcdef0`",
            )),
            _ => None,
        };
        if let Some((msg, help)) = problem {
            ctx.error(span, msg, help);
        }
        bases.insert(name, base);
    }
    bases
}

fn parse_publish(ctx: &mut Ctx, raw: RawPublish) -> Publish {
    let prefix = match raw.prefix {
        Some(p) => {
            let v = p.get_ref();
            if !v.starts_with('/') || v.ends_with('/') || v.contains("//") {
                let msg = format!("`{v}` is not an SSM parameter prefix");
                ctx.error(
                    p.span(),
                    msg,
                    "start it with `/` and do not end it with `/`, as in `/imagectl`",
                );
            }
            p.into_inner()
        }
        None => "/imagectl".to_string(),
    };
    let channels = match raw.channels {
        Some(cs) => {
            for c in &cs {
                if !is_name(c.get_ref()) {
                    let msg = format!("`{}` is not a valid channel name", c.get_ref());
                    ctx.error(c.span(), msg, "use lowercase letters, digits and `-`");
                }
            }
            cs.into_iter().map(Spanned::into_inner).collect()
        }
        None => vec!["dev".into(), "staging".into(), "prod".into()],
    };
    let auto_scaling_groups = parse_groups(ctx, &channels, raw.auto_scaling_groups);
    let deprecate_after_days = match raw.deprecate_after_days {
        None => Some(DEFAULT_DEPRECATE_AFTER_DAYS),
        Some(d) => match u32::try_from(*d.get_ref()) {
            Ok(0) => None,
            Ok(days) if days <= MAX_DEPRECATE_AFTER_DAYS => Some(days),
            _ => {
                let msg = format!(
                    "`deprecate_after_days = {}` is not a number of days from 0 to {MAX_DEPRECATE_AFTER_DAYS}",
                    d.get_ref()
                );
                ctx.error(
                    d.span(),
                    msg,
                    "EC2 deprecates an image at most 10 years ahead; `0` turns deprecation off (default 90)",
                );
                None
            }
        },
    };
    let protect_channels = match raw.protect_channels {
        // The default protects prod where there is a prod.
        None => channels.iter().filter(|c| *c == "prod").cloned().collect(),
        Some(cs) => {
            let mut out: Vec<String> = Vec::new();
            for c in cs {
                if !channels.contains(c.get_ref()) {
                    let msg = format!("`{}` in `protect_channels` is not a channel", c.get_ref());
                    let help = format!(
                        "the channels are {} (`[publish] channels`)",
                        channels.join(", ")
                    );
                    ctx.error(c.span(), msg, &help);
                } else if !out.contains(c.get_ref()) {
                    out.push(c.into_inner());
                }
            }
            out
        }
    };
    Publish {
        prefix,
        channels,
        rollback_depth: raw.rollback_depth.unwrap_or(5),
        launch_templates: raw.launch_templates,
        auto_scaling_groups,
        deprecate_after_days,
        protect_channels,
    }
}

/// `[publish.auto_scaling_groups.ROLE]`: `CHANNEL = ["group", ...]`, each
/// channel a configured one, each name one Auto Scaling accepts, each group
/// following one channel of one role.
fn parse_groups(
    ctx: &mut Ctx,
    channels: &[String],
    raw: BTreeMap<String, BTreeMap<Spanned<String>, Vec<Spanned<String>>>>,
) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut seen: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (role, by_channel) in raw {
        let mut groups = BTreeMap::new();
        for (channel, names) in by_channel {
            if !channels.contains(channel.get_ref()) {
                let msg = format!(
                    "`{}` in `[publish.auto_scaling_groups.{role}]` is not a channel",
                    channel.get_ref()
                );
                let help = format!(
                    "the channels are {} (`[publish] channels`)",
                    channels.join(", ")
                );
                ctx.error(channel.span(), msg, &help);
            }
            for n in &names {
                let name = n.get_ref();
                if !is_group_name(name) {
                    let msg = format!("`{name}` is not an Auto Scaling group name");
                    ctx.error(
                        n.span(),
                        msg,
                        "a group name is 1 to 255 characters, without `:` or control characters",
                    );
                } else if let Some((r, c)) = seen.get(name) {
                    let msg =
                        format!("Auto Scaling group `{name}` is also listed for `{r}` in `{c}`");
                    ctx.error(
                        n.span(),
                        msg,
                        "a group launches one role from one channel: list it once",
                    );
                } else {
                    seen.insert(name.clone(), (role.clone(), channel.get_ref().clone()));
                }
            }
            groups.insert(
                channel.into_inner(),
                names.into_iter().map(Spanned::into_inner).collect(),
            );
        }
        out.insert(role, groups);
    }
    out
}

/// What Auto Scaling accepts as a group name (and what a group ARN can
/// hold): 1 to 255 characters, no `:` and no control characters.
fn is_group_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s
            .chars()
            .any(|c| matches!(c, ':' | '*' | '?') || c.is_control())
}

fn parse_rollout(ctx: &mut Ctx, raw: Option<Spanned<Rollout>>) -> Rollout {
    let Some(raw) = raw else {
        return Rollout::default();
    };
    let span = raw.span();
    let r = raw.into_inner();
    if r.min_healthy_percentage > 100 {
        let msg = format!(
            "`min_healthy_percentage = {}` is over 100",
            r.min_healthy_percentage
        );
        ctx.error(
            span.clone(),
            msg,
            "give a percentage from 0 to 100 (default 90)",
        );
    }
    if r.poll_secs == 0 || r.timeout_minutes == 0 {
        ctx.error(
            span,
            "`[rollout]` `poll_secs` and `timeout_minutes` must be at least 1".to_string(),
            "leave them out for the defaults (15 s, 60 min)",
        );
    }
    r
}

fn parse_provenance(ctx: &mut Ctx, raw: Option<Spanned<Provenance>>) -> Provenance {
    let Some(raw) = raw else {
        return Provenance::default();
    };
    let span = raw.span();
    let p = raw.into_inner();
    if let Some(key) = p.kms_key.as_deref().filter(|k| kms::kind(k).is_none()) {
        ctx.error(
            span.clone(),
            format!("`kms_key = \"{key}\"` names no KMS key"),
            "give a key ID, a key ARN or `alias/NAME` of an asymmetric SIGN_VERIFY key in the home region",
        );
    }
    let local = std::path::Path::new(&p.local_key);
    if p.local_key.is_empty()
        || local.is_absolute()
        || local
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        ctx.error(
            span,
            format!(
                "`local_key = \"{}\"` is not a path inside the project",
                p.local_key
            ),
            "give a relative path without `..` (default `.imagectl/provenance.key`)",
        );
    }
    p
}

/// A lowercase name: letters, digits and `-`, starting with a letter.
pub fn is_name(s: &str) -> bool {
    s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
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
        assert_eq!(s.rollout, Rollout::default());
        assert!(s.publish.auto_scaling_groups.is_empty());
        assert_eq!(s.publish.deprecate_after_days, Some(90));
        assert_eq!(s.publish.protect_channels, ["prod"]);
    }

    #[test]
    fn lifecycle_settings_are_checked() {
        let with = |publish: &str| format!("{MINIMAL}[publish]\n{publish}");
        let s = parse_settings(&with(
            "deprecate_after_days = 0\nprotect_channels = [\"staging\", \"prod\", \"staging\"]\n",
        ))
        .unwrap();
        assert_eq!(s.publish.deprecate_after_days, None, "0 turns it off");
        assert_eq!(s.publish.protect_channels, ["staging", "prod"]);
        let s = parse_settings(&with(
            "deprecate_after_days = 3650\nprotect_channels = []\n",
        ))
        .unwrap();
        assert_eq!(s.publish.deprecate_after_days, Some(3650));
        assert!(s.publish.protect_channels.is_empty());
        // Without a prod channel the default protects nothing.
        let s = parse_settings(&with("channels = [\"dev\", \"live\"]\n")).unwrap();
        assert!(s.publish.protect_channels.is_empty());
        let d = parse_settings(&with(
            "channels = [\"dev\", \"live\"]\ndeprecate_after_days = 3651\nprotect_channels = [\"prod\"]\n",
        ))
        .unwrap_err();
        let msgs: Vec<String> =
            d.0.iter()
                .map(|d| format!("{} {}", d.position(), d.message))
                .collect();
        assert_eq!(
            msgs,
            [
                "imagectl.toml:10:24 `deprecate_after_days = 3651` is not a number of days from 0 to 3650",
                "imagectl.toml:11:21 `prod` in `protect_channels` is not a channel",
            ]
        );
        let d = parse_settings(&with("deprecate_after_days = -1\n")).unwrap_err();
        assert!(
            d.0[0].message.contains("from 0 to 3650"),
            "{:?}",
            d.0[0].message
        );
    }

    #[test]
    fn auto_scaling_groups_follow_known_channels_once() {
        let text = format!(
            "{MINIMAL}[publish.auto_scaling_groups.worker]\nprod = [\"w-prod\", \"a:b\"]\nqa = [\"w-qa\"]\n[publish.auto_scaling_groups.web]\nprod = [\"w-prod\"]\n[rollout]\nmin_healthy_percentage = 101\n"
        );
        let d = parse_settings(&text).unwrap_err();
        let msgs: Vec<String> =
            d.0.iter()
                .map(|d| format!("{} {}", d.position(), d.message))
                .collect();
        assert_eq!(
            msgs,
            [
                "imagectl.toml:9:9 Auto Scaling group `w-prod` is also listed for `web` in `prod`",
                "imagectl.toml:9:19 `a:b` is not an Auto Scaling group name",
                "imagectl.toml:10:1 `qa` in `[publish.auto_scaling_groups.worker]` is not a channel",
                "imagectl.toml:13:1 `min_healthy_percentage = 101` is over 100",
            ]
        );
        let ok = format!(
            "{MINIMAL}[publish.auto_scaling_groups.worker]\nprod = [\"w-prod\"]\n[rollout]\ninstance_warmup_secs = 30\npoll_secs = 1\n"
        );
        let s = parse_settings(&ok).unwrap();
        assert_eq!(s.publish.auto_scaling_groups["worker"]["prod"], ["w-prod"]);
        assert_eq!(s.rollout.instance_warmup_secs, Some(30));
        assert_eq!(s.rollout.min_healthy_percentage, 90);
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
    fn copy_regions_are_other_regions_each_once() {
        let text = MINIMAL.replace(
            "region = \"eu-west-1\"\n",
            "region = \"eu-west-1\"\ncopy_regions = [\"eu-central-1\", \"eu-west-1\", \"eu-central-1\", \"us-east-1\"]\n",
        );
        let d = parse_settings(&text).unwrap_err();
        let msgs: Vec<String> =
            d.0.iter()
                .map(|d| format!("{} {}", d.position(), d.message))
                .collect();
        assert_eq!(
            msgs,
            [
                "imagectl.toml:3:33 `eu-west-1` is the home region (`region`), not a copy region",
                "imagectl.toml:3:46 copy region `eu-central-1` is listed twice",
            ]
        );
        let ok = MINIMAL.replace(
            "region = \"eu-west-1\"\n",
            "region = \"eu-west-1\"\ncopy_regions = [\"us-east-1\", \"eu-central-1\"]\n",
        );
        let s = parse_settings(&ok).unwrap();
        assert_eq!(s.aws.regions(), ["eu-west-1", "us-east-1", "eu-central-1"]);
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
}
