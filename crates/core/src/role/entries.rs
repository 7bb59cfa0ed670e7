//! Validation of single entries as they are merged: packages, users,
//! files, templates, archives, boot parameters and health, each problem
//! reported where the entry was written.

use std::path::{Component, Path};

use imagectl_image::config::Health;
use toml::Spanned;

use super::load::{At, Loader};
use super::raw::{RawArchive, RawFile, RawHealth, RawUser};
use super::sandbox::{abbreviate, is_under, NAME_MAX};
use super::sources::Kind;
use super::{Archive, FileSpec, Package, User, AGENT_DIR};
use crate::diag::Diagnostic;

impl Loader<'_> {
    pub(super) fn package(&mut self, at: &At<String>) -> Option<Package> {
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

    pub(super) fn user(&mut self, at: &At<RawUser>) -> Option<User> {
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
                    .diag(&p, format!("`{}` {why}", shown(&p.v, why)))
                    .help(dest_help(
                        why,
                        "write an absolute path such as `/srv/learn`",
                    ));
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
    pub(super) fn file_spec(
        &mut self,
        at: &At<RawFile>,
        default_mode: &str,
        kind: Kind,
    ) -> Option<FileSpec> {
        let f = at.file;
        let raw = &at.v;
        let source = Self::at(f, raw.source.clone());
        let dest = Self::at(f, raw.dest.clone());
        let mut ok = true;
        if let Some(d) = self.check_source(&source, kind) {
            self.diags.push(d);
            ok = false;
        }
        if let Some(d) = self.dest_problem(&dest, kind) {
            self.diags.push(d);
            ok = false;
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
        if let (Kind::Template, Some(m)) = (kind, &raw.mode) {
            if let Some(d) = self.template_mode_problem(&Self::at(f, m.clone())) {
                self.diags.push(d);
                ok = false;
            }
        }
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

    /// What is wrong with the destination of a file or template, if
    /// anything.
    fn dest_problem(&self, dest: &At<String>, kind: Kind) -> Option<Diagnostic> {
        match check_dest(&dest.v) {
            Err(why) => Some(
                self.diag(dest, format!("destination `{}` {why}", shown(&dest.v, why)))
                    .help(dest_help(why, "write the absolute path the file takes in the image, like `/etc/learn/app.env`")),
            ),
            Ok(()) if is_under(&dest.v, AGENT_DIR) => Some(
                self.diag(dest, format!("destination `{}` is inside `{AGENT_DIR}`, which imagectl owns", dest.v))
                    .help("put the file somewhere else; imagectl writes the agent's configuration there"),
            ),
            Ok(()) if matches!(kind, Kind::Template) => self.template_dest_problem(dest),
            Ok(()) => None,
        }
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
    pub(super) fn archive(&mut self, at: &At<RawArchive>) -> Option<Archive> {
        let f = at.file;
        let raw = &at.v;
        let source = Self::at(f, raw.source.clone());
        let mut ok = self.archive_source(&source);
        let mut path = |p: &Spanned<String>, what: &str| -> String {
            let p = Self::at(f, p.clone());
            let bad = match check_dest(&p.v) {
                Err(why) => Some(why),
                Ok(()) if p.v == "/" => Some("is the root directory"),
                Ok(()) if is_under(&p.v, AGENT_DIR) => {
                    Some("is inside `/etc/imagectl`, which imagectl owns")
                }
                Ok(()) => None,
            };
            if let Some(why) = bad {
                let d = self
                    .diag(&p, format!("archive {what} `{}` {why}", shown(&p.v, why)))
                    .help(dest_help(
                        why,
                        if what == "link" {
                            "write the absolute path of the link, like `/srv/learn/current`"
                        } else {
                            "write an absolute directory of its own, like `/srv/learn/releases/2026.11.1`"
                        },
                    ));
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

    pub(super) fn check_parameters(&mut self, at: &At<String>) {
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

    pub(super) fn health(&mut self, at: &At<RawHealth>) -> Option<Health> {
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
                if let Some(d) = self.health_url_problem(&Self::at(at.file, url.clone())) {
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

    /// What is wrong with a health URL, if anything: the agent checks
    /// health with one plain HTTP request.
    fn health_url_problem(&self, u: &At<String>) -> Option<Diagnostic> {
        if !(u.v.starts_with("http://") || u.v.starts_with("https://")) || u.v.len() < 10 {
            let d = self
                .diag(u, format!("`{}` is not an http(s) URL", u.v))
                .help("write it like `http://127.0.0.1:8080/health`");
            return Some(d);
        }
        u.v.starts_with("https://").then(|| {
            self.diag(u, format!("health URL `{}` uses https, but the agent checks health over plain http", u.v))
                .help("check the application's own port on the instance, like `http://127.0.0.1:8080/health`, or use `command = \"...\"` for anything else")
        })
    }

    /// Whether an archive's `source` names a tar that may be unpacked: a
    /// file inside `roles/`, named like a tar, holding nothing refused.
    /// Problems are reported.
    fn archive_source(&mut self, source: &At<String>) -> bool {
        if let Some(d) = self.check_source(source, Kind::Archive) {
            self.diags.push(d);
            return false;
        }
        if ![".tar", ".tar.gz", ".tgz"]
            .iter()
            .any(|ext| source.v.ends_with(ext))
        {
            let d = self
                .diag(source, format!("archive `{}` is not a tar archive", source.v))
                .help("name a `.tar`, `.tar.gz` or `.tgz` file, as the application's CI packs its release");
            self.diags.push(d);
            return false;
        }
        self.check_archive_entries(source)
    }
}

const PARAM_HELP: &str = "write an SSM path such as `/learn/{{env}}/worker`; it may use `env`, `role`, `instance.id`, `instance.region` and `instance.az`";

/// Why a path has a name too long for Linux.
const NAME_TOO_LONG: &str =
    "has a file or directory name longer than 255 bytes, the most Linux allows";

/// A path [`check_dest`] refused for `why`, for its message: as written,
/// unless a name in it is too long to show whole.
fn shown<'a>(path: &'a str, why: &str) -> std::borrow::Cow<'a, str> {
    if why == NAME_TOO_LONG {
        abbreviate(path).into()
    } else {
        path.into()
    }
}

/// The advice for a path [`check_dest`] refused for `why`: `usual`, unless
/// a name in it is too long.
fn dest_help(why: &str, usual: &'static str) -> &'static str {
    if why == NAME_TOO_LONG {
        "shorten each file and directory name in it to at most 255 bytes"
    } else {
        usual
    }
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
    if dest.split('/').any(|name| name.len() > NAME_MAX) {
        return Err(NAME_TOO_LONG);
    }
    Ok(())
}

fn is_account_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

pub(super) fn is_unit_name(s: &str) -> bool {
    const SUFFIXES: [&str; 7] = [
        ".service", ".socket", ".timer", ".target", ".path", ".mount", ".slice",
    ];
    SUFFIXES
        .iter()
        .any(|suf| s.len() > suf.len() && s.ends_with(suf))
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":-_.@\\".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dest_rules() {
        assert!(check_dest("/etc/learn/app.env").is_ok());
        assert!(check_dest("etc/x").is_err());
        assert!(check_dest("/etc/../x").is_err());
        assert!(check_dest("/etc/x/").is_err());
        assert!(check_dest("/etc//x").is_err());
        assert!(check_dest(&format!("/etc/{}/x", "n".repeat(255))).is_ok());
        assert_eq!(
            check_dest(&format!("/etc/{}/x", "n".repeat(256))),
            Err(NAME_TOO_LONG)
        );
    }

    #[test]
    fn unit_names() {
        assert!(is_unit_name("sidekiq.service"));
        assert!(is_unit_name("getty@tty1.service"));
        assert!(!is_unit_name("sidekiq"));
        assert!(!is_unit_name(".service"));
    }
}
