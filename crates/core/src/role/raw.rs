//! The role file format as serde reads it: every value still carries its
//! span, for diagnostics. The same types give the JSON Schema of role files
//! (`imagectl schema`), so editors check what imagectl reads.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::Method;
use crate::arch::Arch;
use crate::tomlfile::Partial;

/// A role file: `roles/NAME.toml`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "imagectl role", rename = "Role")]
pub(super) struct RawRole {
    /// The role's name; optional, and must then match the file's stem.
    #[schemars(with = "Option<String>")]
    pub(super) name: Option<Spanned<String>>,
    /// What the image is for; becomes the AMI's description.
    #[schemars(with = "Option<String>")]
    pub(super) description: Option<Spanned<String>>,
    /// Roles merged first, in order (each ancestor once).
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) extends: Option<Vec<Spanned<String>>>,
    /// Only exists to be extended: never built itself.
    #[serde(rename = "abstract")]
    pub(super) is_abstract: Option<bool>,
    /// The image to build.
    pub(super) image: Option<RawImage>,
    /// Packages to install.
    pub(super) packages: Option<RawPackages>,
    /// Users to create, in order.
    #[schemars(with = "Option<Vec<RawUser>>")]
    pub(super) users: Option<Vec<Spanned<RawUser>>>,
    /// Files baked into the image at build time.
    #[schemars(with = "Option<Vec<RawFile>>")]
    pub(super) files: Option<Vec<Spanned<RawFile>>>,
    /// Tar archives unpacked into the image at build time (application releases).
    #[schemars(with = "Option<Vec<RawArchive>>")]
    pub(super) archives: Option<Vec<Spanned<RawArchive>>>,
    /// Units the image enables or leaves disabled.
    #[schemars(with = "Option<Vec<RawService>>")]
    pub(super) services: Option<Vec<Spanned<RawService>>>,
    /// Image tests, run at the end of every build.
    #[schemars(with = "Option<Vec<RawCheck>>")]
    pub(super) checks: Option<Vec<Spanned<RawCheck>>>,
    /// What the on-boot agent does on every boot.
    pub(super) boot: Option<RawBoot>,
    /// What `imagectl test` runs beside the image; never enters the image.
    pub(super) test: Option<RawTest>,
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
pub(super) struct RawImage {
    /// A key of `[bases]` in imagectl.toml.
    #[schemars(with = "Option<String>")]
    pub(super) base: Option<Spanned<String>>,
    /// EC2 instance type of the build instance (default t3.small, t4g.small on arm64).
    #[schemars(with = "Option<String>")]
    pub(super) instance_type: Option<Spanned<String>>,
    /// Root volume size in GiB, 8 to 16384 (default 8).
    #[schemars(with = "Option<u32>")]
    pub(super) volume_size_gb: Option<Spanned<u32>>,
    /// CPU architecture (default: the base's).
    #[schemars(with = "Option<Arch>")]
    pub(super) arch: Option<Spanned<Arch>>,
    /// How AMIs of the role are made: `packer` (a build instance, the
    /// default) or `disk` (the disk `build --target disk` makes and
    /// `test --vm` boots, uploaded as a snapshot).
    #[schemars(with = "Option<Method>")]
    pub(super) method: Option<Spanned<Method>>,
    /// Arguments added to the kernel command line of disk images (after
    /// imagectl's own `root=`, `ro` and serial console).
    #[schemars(with = "Option<Vec<String>>")]
    pub(super) kernel_cmdline: Option<Vec<Spanned<String>>>,
}

/// `[packages]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Packages")]
pub(super) struct RawPackages {
    /// Debian packages, optionally pinned as `name=version`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) apt: Vec<Spanned<String>>,
}

/// `[[users]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "User")]
pub(super) struct RawUser {
    /// Login name.
    #[schemars(with = "String")]
    pub(super) name: Spanned<String>,
    /// A system user (no login shell by default).
    #[serde(default)]
    pub(super) system: bool,
    /// Supplementary groups, created when missing.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) groups: Vec<Spanned<String>>,
    /// Login shell.
    #[schemars(with = "Option<String>")]
    pub(super) shell: Option<Spanned<String>>,
    /// Home directory, created.
    #[schemars(with = "Option<String>")]
    pub(super) home: Option<Spanned<String>>,
}

/// `[[files]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "File")]
pub(super) struct RawFile {
    /// Path relative to `roles/`, inside it.
    #[schemars(with = "String")]
    pub(super) source: Spanned<String>,
    /// Absolute path in the image.
    #[schemars(with = "String")]
    pub(super) dest: Spanned<String>,
    /// Quoted octal mode (default "0644").
    #[schemars(with = "Option<Mode>")]
    pub(super) mode: Option<Spanned<Mode>>,
    /// Owning user (default root).
    #[schemars(with = "Option<String>")]
    pub(super) owner: Option<Spanned<String>>,
    /// Owning group (default root).
    #[schemars(with = "Option<String>")]
    pub(super) group: Option<Spanned<String>>,
}

/// `[[boot.templates]]`: a file rendered at boot, with what its values may hold.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Template")]
pub(super) struct RawTemplate {
    /// Handlebars template, relative to `roles/`, inside it.
    #[schemars(with = "String")]
    pub(super) source: Spanned<String>,
    /// Absolute path in the image the rendering is written to.
    #[schemars(with = "String")]
    pub(super) dest: Spanned<String>,
    /// Quoted octal mode (default "0600").
    #[schemars(with = "Option<Mode>")]
    pub(super) mode: Option<Spanned<Mode>>,
    /// Owning user (default root).
    #[schemars(with = "Option<String>")]
    pub(super) owner: Option<Spanned<String>>,
    /// Owning group (default root).
    #[schemars(with = "Option<String>")]
    pub(super) group: Option<Spanned<String>>,
    /// Values that may hold line breaks and other control characters, which fail the boot by default: `true` for every value the template prints, or parameter paths below `params` (`["tls.cert"]`), each with what is below it.
    #[schemars(with = "Option<RawMultiline>")]
    pub(super) multiline: Option<Spanned<RawMultiline>>,
}

impl RawTemplate {
    /// The keys it shares with `[[files]]`, checked the same way.
    pub(super) fn file(&self) -> RawFile {
        RawFile {
            source: self.source.clone(),
            dest: self.dest.clone(),
            mode: self.mode.clone(),
            owner: self.owner.clone(),
            group: self.group.clone(),
        }
    }
}

/// `multiline`: `true`, `false`, or parameter paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RawMultiline {
    All(bool),
    Keys(Vec<Spanned<String>>),
}

impl JsonSchema for RawMultiline {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Multiline".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                {"type": "boolean"},
                {"type": "array", "items": {"type": "string"}}
            ],
            "description": "`true` (every printed value), or parameter paths below `params`, like [\"tls.cert\"]."
        })
    }
}

impl<'de> Deserialize<'de> for RawMultiline {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = RawMultiline;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`true` or a list of parameter paths like `[\"tls.cert\"]`")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<RawMultiline, E> {
                Ok(RawMultiline::All(b))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawMultiline, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = seq.next_element::<Spanned<String>>()? {
                    keys.push(k);
                }
                Ok(RawMultiline::Keys(keys))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[[archives]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Archive")]
pub(super) struct RawArchive {
    /// A `.tar`, `.tar.gz` or `.tgz` file, relative to `roles/`, inside it.
    #[schemars(with = "String")]
    pub(super) source: Spanned<String>,
    /// Absolute directory in the image it is unpacked into, replacing what was there.
    #[schemars(with = "String")]
    pub(super) dest: Spanned<String>,
    /// Owning user of everything unpacked (default root).
    #[schemars(with = "Option<String>")]
    pub(super) owner: Option<Spanned<String>>,
    /// Owning group of everything unpacked (default root).
    #[schemars(with = "Option<String>")]
    pub(super) group: Option<Spanned<String>>,
    /// Absolute path of a symbolic link made to point at `dest`, like `/srv/learn/current`.
    #[schemars(with = "Option<String>")]
    pub(super) link: Option<Spanned<String>>,
}

/// `[test]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Test")]
pub(super) struct RawTest {
    /// Commands `imagectl test` runs on the test machine, on the booted image's loopback, for backing services (like `redis-server --port 6379`).
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) sidecars: Vec<Spanned<String>>,
}

/// `[[services]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Service")]
pub(super) struct RawService {
    /// Unit name with its suffix (`sidekiq.service`).
    #[schemars(with = "String")]
    pub(super) name: Spanned<String>,
    /// Enabled at boot by systemd (false: only the agent starts it).
    #[serde(default = "yes")]
    pub(super) enabled: bool,
}

fn yes() -> bool {
    true
}

/// `[[checks]]`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Check")]
pub(super) struct RawCheck {
    /// What it checks, shown when it fails.
    #[schemars(with = "String")]
    pub(super) name: Spanned<String>,
    /// Shell command that must exit 0.
    #[schemars(with = "String")]
    pub(super) run: Spanned<String>,
}

/// `[boot]`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Boot")]
pub(super) struct RawBoot {
    /// SSM Parameter Store path; may use {{env}}, {{role}}, {{instance.id}}, {{instance.region}}, {{instance.az}}.
    #[schemars(with = "Option<String>")]
    pub(super) parameters: Option<Spanned<String>>,
    /// Units the agent starts, in order, once the templates are written.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) start: Vec<Spanned<String>>,
    /// Handlebars templates rendered from the parameters.
    #[serde(default)]
    #[schemars(with = "Vec<RawTemplate>")]
    pub(super) templates: Vec<Spanned<RawTemplate>>,
    /// What the agent waits for after starting the units.
    #[schemars(with = "Option<RawHealth>")]
    pub(super) health: Option<Spanned<RawHealth>>,
    /// Name of the Auto Scaling group's launch lifecycle hook, 1 to 255 of `A-Za-z0-9-_/`: the agent completes it with CONTINUE after a healthy boot (ABANDON after a failed one, with `on_failure = "replace"`).
    #[schemars(with = "Option<String>")]
    pub(super) lifecycle_hook: Option<Spanned<String>>,
    /// What the agent tells Auto Scaling after a failed boot: `replace` (default: the instance is marked unhealthy and replaced) or `stay` (nothing: the instance stays for debugging).
    #[schemars(with = "Option<OnFailureSchema>")]
    pub(super) on_failure: Option<Spanned<String>>,
}

/// The schema of `[boot] on_failure`; the value itself is read as a string
/// and checked as the role merges, so that a typo is reported with its
/// line and the closest value.
pub(super) struct OnFailureSchema;

impl JsonSchema for OnFailureSchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OnFailure".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": ["replace", "stay"],
            "description": "`replace` (mark the instance unhealthy so that Auto Scaling replaces it) or `stay` (leave it in service for debugging)."
        })
    }
}

/// `[boot.health]`: exactly one of `http` and `command`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Health")]
pub(super) struct RawHealth {
    /// A URL that must answer HTTP 200.
    #[schemars(with = "Option<String>")]
    pub(super) http: Option<Spanned<String>>,
    /// A shell command that must exit 0.
    #[schemars(with = "Option<String>")]
    pub(super) command: Option<Spanned<String>>,
    /// Seconds to wait, 1 to 3600 (default 60).
    #[schemars(with = "Option<u64>")]
    pub(super) timeout_secs: Option<Spanned<u64>>,
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
pub(super) struct Mode(pub(super) String);

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
