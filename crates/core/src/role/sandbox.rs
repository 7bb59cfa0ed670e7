//! What the agent can write at boot, so that a template it cannot write
//! fails validation rather than every boot: where its unit
//! (`crates/image/imagectl-agent.service`) lets it leave a file, which
//! modes it may set, and how long a file name its temporary file beside
//! the destination (`agent/src/files.rs`) leaves room for.

use super::load::{At, Loader};
use super::raw::Mode;
use crate::diag::Diagnostic;

/// The longest file or directory name Linux allows (`NAME_MAX`).
pub(super) const NAME_MAX: usize = 255;

/// What the agent adds to a template's file name for the temporary file it
/// writes beside it: `.NAME.imagectl-agent.tmp` (`temp_path` in
/// `agent/src/files.rs`).
const TEMP_NAME_EXTRA: usize = ".".len() + ".imagectl-agent.tmp".len();

/// How a directory looks from inside the agent's unit.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// Mounted read-only.
    ReadOnly,
    /// Replaced by an empty, inaccessible directory.
    Hidden,
    /// Replaced by the unit's own: what the agent writes there, no service
    /// sees.
    Private,
}

/// The directories the agent's unit keeps it from leaving a file in, with
/// the setting that does it (`systemd.exec(5)`). `ProtectSystem=yes` covers
/// `/usr`, `/boot` and `/efi` but not `/etc`; nothing reopens any of them
/// (no `ReadWritePaths=`): a test holds the unit to this list.
const SANDBOXED: [(&str, &str, Seen); 9] = [
    ("/usr", "ProtectSystem=yes", Seen::ReadOnly),
    ("/boot", "ProtectSystem=yes", Seen::ReadOnly),
    ("/efi", "ProtectSystem=yes", Seen::ReadOnly),
    ("/home", "ProtectHome=yes", Seen::Hidden),
    ("/root", "ProtectHome=yes", Seen::Hidden),
    ("/run/user", "ProtectHome=yes", Seen::Hidden),
    ("/tmp", "PrivateTmp=yes", Seen::Private),
    ("/var/tmp", "PrivateTmp=yes", Seen::Private),
    ("/dev", "PrivateDevices=yes", Seen::Private),
];

/// `path` for a message about a name too long: each name of more than 40
/// characters cut in the middle with a `…`, so that the message still
/// fits on a screen and says what is wrong.
pub(super) fn abbreviate(path: &str) -> String {
    path.split('/')
        .map(|name| {
            let chars: Vec<char> = name.chars().collect();
            if chars.len() <= 40 {
                return name.to_string();
            }
            let head: String = chars[..20].iter().collect();
            let tail: String = chars[chars.len() - 10..].iter().collect();
            format!("{head}…{tail}")
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// `path` is `dir` or below it.
pub(super) fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl Loader<'_> {
    /// Why the agent cannot write a template at `dest`, a normal absolute
    /// path: its unit keeps it out of there, or the name leaves no room for
    /// the agent's temporary file.
    pub(super) fn template_dest_problem(&self, dest: &At<String>) -> Option<Diagnostic> {
        let d = &dest.v;
        if let Some((dir, setting, seen)) = SANDBOXED.iter().find(|(dir, ..)| is_under(d, dir)) {
            let (message, help) = match seen {
                Seen::ReadOnly | Seen::Hidden => (
                    format!(
                        "template destination `{d}` is under `{dir}`, which the agent's unit {} (`{setting}`)",
                        if matches!(seen, Seen::ReadOnly) { "makes read-only" } else { "hides" }
                    ),
                    "the agent could not write it and every boot would fail: render it elsewhere, like `/etc/learn/app.env`, and point the service at it",
                ),
                Seen::Private => (
                    format!("template destination `{d}` is under `{dir}`, which is private to the agent's unit (`{setting}`): no service would see the file"),
                    "render it where the service reads it, like `/etc/learn/app.env`",
                ),
            };
            return Some(self.diag(dest, message).help(help));
        }
        let name = d.rsplit('/').next().unwrap_or_default();
        (name.len() + TEMP_NAME_EXTRA > NAME_MAX).then(|| {
            self.diag(
                dest,
                format!(
                    "template destination `{}` has a file name of {} bytes, too long for the agent's temporary file beside it (`.NAME.imagectl-agent.tmp`, at most {NAME_MAX} bytes)",
                    abbreviate(d),
                    name.len()
                ),
            )
            .help(format!(
                "shorten the file name to at most {} bytes",
                NAME_MAX - TEMP_NAME_EXTRA
            ))
        })
    }

    /// Why the agent cannot give a template `mode`: setuid and setgid are
    /// refused by its unit, and a sticky bit means nothing on a file.
    pub(super) fn template_mode_problem(&self, mode: &At<Mode>) -> Option<Diagnostic> {
        let m = &mode.v.0;
        let bits = u32::from_str_radix(m, 8).unwrap_or(0);
        let set: Vec<&str> = [(0o4000, "setuid"), (0o2000, "setgid"), (0o1000, "sticky")]
            .into_iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|(_, name)| name)
            .collect();
        let named = match set.as_slice() {
            [] => return None,
            [one] => format!("the {one} bit"),
            [a, b] => format!("the {a} and {b} bits"),
            [a, b, c, ..] => format!("the {a}, {b} and {c} bits"),
        };
        let d = self
            .diag(mode, format!("template mode `{m}` has {named}"))
            .help("the agent writes templates as plain files: its unit refuses setuid and setgid (`RestrictSUIDSGID=yes`), which would fail every boot, and a sticky bit means nothing on a file; use a mode like \"0640\"");
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit_settings() -> Vec<&'static str> {
        imagectl_image::UNIT
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#') && l.contains('='))
            .collect()
    }

    /// The list of directories is the unit's: every setting it relies on
    /// is there, with that value, and nothing reopens a directory or
    /// closes another one.
    #[test]
    fn the_sandboxed_directories_are_the_units() {
        let settings = unit_settings();
        for (_, setting, _) in SANDBOXED {
            assert!(settings.contains(&setting), "the unit lacks {setting}");
        }
        assert!(settings.contains(&"RestrictSUIDSGID=yes"));
        for (key, _) in SANDBOXED.iter().map(|(_, s, _)| s.split_once('=').unwrap()) {
            let values: Vec<_> = settings
                .iter()
                .filter(|l| l.starts_with(&format!("{key}=")))
                .collect();
            assert_eq!(values.len(), 1, "{key} set more than once: {values:?}");
        }
        for key in [
            "ReadWritePaths",
            "ReadOnlyPaths",
            "InaccessiblePaths",
            "BindPaths",
            "BindReadOnlyPaths",
            "TemporaryFileSystem",
            "ProtectSystem=full",
            "ProtectSystem=strict",
            "StateDirectory",
            "ConfigurationDirectory",
        ] {
            assert!(
                !settings.iter().any(|l| l.starts_with(key)),
                "the unit sets {key}: update SANDBOXED"
            );
        }
    }

    /// The agent names its temporary file as this module assumes.
    #[test]
    fn the_agents_temporary_name_is_the_one_assumed() {
        let files = concat!(env!("CARGO_MANIFEST_DIR"), "/../../agent/src/files.rs");
        let code = std::fs::read_to_string(files).unwrap();
        assert!(
            code.contains("let mut tmp = OsString::from(\".\");")
                && code.contains("tmp.push(\".imagectl-agent.tmp\");"),
            "temp_name in agent/src/files.rs changed: update TEMP_NAME_EXTRA"
        );
        assert_eq!(TEMP_NAME_EXTRA, 20);
    }

    #[test]
    fn long_names_are_cut_in_the_middle() {
        let long = format!("/etc/{}.conf/x", "n".repeat(300));
        assert_eq!(
            abbreviate(&long),
            format!("/etc/{}…nnnnn.conf/x", "n".repeat(20))
        );
        assert_eq!(abbreviate("/etc/app/app.env"), "/etc/app/app.env");
    }

    #[test]
    fn under_means_the_directory_or_below() {
        assert!(is_under("/tmp", "/tmp"));
        assert!(is_under("/tmp/x", "/tmp"));
        assert!(!is_under("/tmpfiles/x", "/tmp"));
        assert!(!is_under("/var/tmpx", "/var/tmp"));
    }
}
