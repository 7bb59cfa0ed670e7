//! The image configuration format: what `imagectl` bakes into `/etc/imagectl/`
//! and what the agent reads at boot.

use serde::{Deserialize, Serialize};

use crate::template::Multiline;

/// What the agent does on every boot; the `[boot]` section of a role once
/// validated and merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Boot {
    /// SSM Parameter Store path, a handlebars template over `env`, `role`
    /// and `instance.*` (for example `/learn/{{env}}/worker`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<String>,
    /// Units started, in order, once every template is rendered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub start: Vec<String>,
    /// Templates rendered from the parameters on every boot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub templates: Vec<BootTemplate>,
    /// How the agent decides that the instance is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// The Auto Scaling group's launch lifecycle hook the agent completes
    /// once the boot is over. Left out when unset, as is every new key with
    /// its default, so that the configuration (and the canonical form and
    /// content hash) of a role without it is unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_hook: Option<String>,
    /// What the agent tells Auto Scaling after a failed boot.
    #[serde(default, skip_serializing_if = "OnFailure::is_replace")]
    pub on_failure: OnFailure,
}

/// What the agent tells EC2 Auto Scaling when the boot fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Mark the instance unhealthy (and abandon its lifecycle hook), so
    /// that the group replaces it.
    #[default]
    Replace,
    /// Tell Auto Scaling nothing: the instance stays, for debugging.
    Stay,
}

impl OnFailure {
    /// Every value, as a role writes it.
    pub const NAMES: [&'static str; 2] = ["replace", "stay"];

    /// The value of `name`, as a role writes it.
    pub fn parse(name: &str) -> Option<OnFailure> {
        match name {
            "replace" => Some(OnFailure::Replace),
            "stay" => Some(OnFailure::Stay),
            _ => None,
        }
    }

    /// The value as a role writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Replace => "replace",
            OnFailure::Stay => "stay",
        }
    }

    /// The default (left out of the serialized configuration).
    pub fn is_replace(&self) -> bool {
        *self == OnFailure::Replace
    }
}

/// Whether `name` is a lifecycle hook name as Auto Scaling takes it: 1 to
/// 255 characters, each a letter, a digit, `-`, `_` or `/`.
pub fn is_lifecycle_hook_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'/')
}

/// One handlebars template rendered at boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootTemplate {
    /// Path of the template inside `roles/` (in the image: below
    /// `/etc/imagectl/templates/`).
    pub source: String,
    /// Absolute path the rendering is written to.
    pub dest: String,
    /// Octal file mode, four digits (`0600`).
    pub mode: String,
    /// Owner of the rendered file.
    pub owner: String,
    /// Group of the rendered file.
    pub group: String,
    /// Which printed values may hold control characters (line breaks);
    /// none by default, which is left out, so that the configuration (and
    /// a role's canonical form) of a template without it is unchanged.
    #[serde(default, skip_serializing_if = "Multiline::is_off")]
    pub multiline: Multiline,
}

/// The health check the agent waits for after starting the units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// A URL that must answer HTTP 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// A shell command that must exit 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// How long to wait for health before the boot fails.
    pub timeout_secs: u64,
}

/// Where the image configuration lives in every image.
pub const CONFIG_DIR: &str = "/etc/imagectl";

/// The file, below [`CONFIG_DIR`], holding [`ImageConfig`] as JSON.
pub const CONFIG_FILE: &str = "image.json";

/// The directory, below [`CONFIG_DIR`], holding the boot templates at their
/// paths inside `roles/` (`templates/worker/sidekiq.env.hbs`).
pub const TEMPLATES_DIR: &str = "templates";

/// Everything the agent knows about the image it runs in, baked at build
/// time into `/etc/imagectl/image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// Version of this format; the agent refuses a newer one.
    pub format: u32,
    /// The role the image was built from.
    pub role: String,
    /// The image's content hash (64 lowercase hex characters).
    pub hash: String,
    /// What to do at boot.
    pub boot: Boot,
    /// Every file imagectl baked, for `imagectl-agent verify`.
    pub manifest: Vec<ManifestEntry>,
}

/// The current version of [`ImageConfig`].
pub const FORMAT_VERSION: u32 = 1;

/// One baked file and what it must look like.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    /// Absolute path in the image.
    pub path: String,
    /// SHA-256 of its contents, lowercase hex.
    pub sha256: String,
    /// Octal mode, four digits.
    pub mode: String,
    /// Owning user.
    pub owner: String,
    /// Owning group.
    pub group: String,
}

/// Why the baked image configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read image configuration `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid [`ImageConfig`].
    #[error("image configuration `{path}` is not valid: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a newer imagectl.
    #[error("image configuration `{path}` has format {found}; this agent reads format {FORMAT_VERSION} at most")]
    TooNew {
        /// The file.
        path: String,
        /// The format it declares.
        found: u32,
    },
}

impl ImageConfig {
    /// Reads and checks `image.json` at `path` (on an instance
    /// `/etc/imagectl/image.json`).
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&shown, &text)
    }

    /// Checks and parses the contents of `image.json`, read elsewhere (the
    /// agent reads it through its own resolver); `shown` names the file in
    /// errors.
    pub fn parse(shown: &str, text: &[u8]) -> Result<Self, ConfigError> {
        let shown = shown.to_string();
        // The format first, so a newer file says so instead of failing on
        // a field this agent does not know.
        #[derive(Deserialize)]
        struct Format {
            format: u32,
        }
        if let Ok(Format { format }) = serde_json::from_slice::<Format>(text) {
            if format > FORMAT_VERSION {
                return Err(ConfigError::TooNew {
                    path: shown,
                    found: format,
                });
            }
        }
        serde_json::from_slice(text).map_err(|e| ConfigError::Invalid {
            path: shown,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_refuses_a_newer_format_by_name() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("image.json");
        std::fs::write(&p, r#"{"format": 99, "role": "r", "future": true}"#).unwrap();
        let err = ImageConfig::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("has format 99; this agent reads format 1 at most"),
            "{err}"
        );
    }

    #[test]
    fn load_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("image.json");
        let c = ImageConfig {
            format: FORMAT_VERSION,
            role: "worker".into(),
            hash: "0".repeat(64),
            boot: Boot::default(),
            manifest: vec![],
        };
        std::fs::write(&p, serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(ImageConfig::load(&p).unwrap(), c);
        std::fs::write(&p, "{").unwrap();
        assert!(matches!(
            ImageConfig::load(&p),
            Err(ConfigError::Invalid { .. })
        ));
    }

    #[test]
    fn auto_scaling_keys_are_left_out_at_their_defaults() {
        let mut b = Boot {
            parameters: Some("/learn/{{env}}/worker".into()),
            ..Boot::default()
        };
        let before = r#"{"parameters":"/learn/{{env}}/worker"}"#;
        assert_eq!(serde_json::to_string(&b).unwrap(), before);
        assert_eq!(serde_json::from_str::<Boot>(before).unwrap(), b);
        b.lifecycle_hook = Some("launch".into());
        b.on_failure = OnFailure::Stay;
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(
            json,
            r#"{"parameters":"/learn/{{env}}/worker","lifecycle_hook":"launch","on_failure":"stay"}"#
        );
        assert_eq!(serde_json::from_str::<Boot>(&json).unwrap(), b);
        let err = serde_json::from_str::<Boot>(r#"{"on_failure":"retry"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown variant `retry`"), "{err}");
    }

    #[test]
    fn lifecycle_hook_names_are_what_auto_scaling_takes() {
        for ok in ["launch", "a", "app/launch-hook_2", &"x".repeat(255)] {
            assert!(is_lifecycle_hook_name(ok), "{ok}");
        }
        for bad in [
            "",
            "with space",
            "a.b",
            "hook:1",
            "caf\u{e9}",
            &"x".repeat(256),
        ] {
            assert!(!is_lifecycle_hook_name(bad), "{bad}");
        }
        for name in OnFailure::NAMES {
            assert_eq!(OnFailure::parse(name).unwrap().as_str(), name);
        }
        assert_eq!(OnFailure::parse("Replace"), None);
    }

    #[test]
    fn multiline_is_left_out_unless_set() {
        let mut t = BootTemplate {
            source: "templates/w/a.hbs".into(),
            dest: "/etc/a".into(),
            mode: "0600".into(),
            owner: "root".into(),
            group: "root".into(),
            multiline: Multiline::Off,
        };
        let before = r#"{"source":"templates/w/a.hbs","dest":"/etc/a","mode":"0600","owner":"root","group":"root"}"#;
        assert_eq!(serde_json::to_string(&t).unwrap(), before);
        assert_eq!(serde_json::from_str::<BootTemplate>(before).unwrap(), t);
        t.multiline = Multiline::Keys(vec!["tls.cert".into()]);
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.ends_with(r#","multiline":["tls.cert"]}"#), "{json}");
        assert_eq!(serde_json::from_str::<BootTemplate>(&json).unwrap(), t);
        t.multiline = Multiline::All;
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.ends_with(r#","multiline":true}"#), "{json}");
    }
}
