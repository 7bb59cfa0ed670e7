//! The files entries reference: baked files, templates and archives must
//! be regular files inside `roles/` no bigger than their kind allows, and
//! a template must also be UTF-8 text that parses as handlebars and prints
//! no value with `{{{x}}}`, and the parameters its `multiline` names must be
//! ones it prints.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use imagectl_image::template::{self, Multiline};
use toml::Spanned;

use super::load::{At, Loader};
use super::raw::{RawFile, RawMultiline};
use super::store::{human_size, not_text, Unusable};
use super::{FileSpec, MAX_ARCHIVE_BYTES, MAX_FILE_BYTES, MAX_TEMPLATE_BYTES, ROLES_DIR};
use crate::diag::Diagnostic;

/// What a `source` is read as.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
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

impl Loader<'_> {
    /// A source must be a regular file inside `roles/`, also once symlinks
    /// are resolved (a role must not bake the build machine's files), and
    /// no bigger than its kind allows. Only its metadata is read. Returns
    /// the problem, if any.
    pub(super) fn check_source(&self, source: &At<String>, kind: Kind) -> Option<Diagnostic> {
        self.source_path_problem(source)
            .or_else(|| self.source_file_problem(source, kind))
    }

    /// What is wrong with the path as written, before anything is read.
    fn source_path_problem(&self, source: &At<String>) -> Option<Diagnostic> {
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
        None
    }

    /// What is wrong with the file the path names, from its metadata.
    fn source_file_problem(&self, source: &At<String>, kind: Kind) -> Option<Diagnostic> {
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

    /// A boot template must be UTF-8 text and parse as handlebars, and
    /// may not print with `{{{x}}}`; the error points into the template
    /// file itself. Returns its text when it parses.
    pub(super) fn check_template(&mut self, spec: &FileSpec, at: &At<RawFile>) -> Option<String> {
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
                return None;
            }
        };
        let text = match not_text(bytes) {
            Ok(t) => t,
            Err((text, offset, what)) => {
                let d = Diagnostic::at(&rel, &text, offset..offset + 1, format!("template {what}"))
                    .help("templates render to text files: save it as UTF-8 text");
                self.diags.push(d);
                return None;
            }
        };
        if let Err(e) = template::check(&text) {
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
            return None;
        }
        if let Some(e) = template::unchecked_print(&text) {
            let offset = match (e.line, e.column) {
                (Some(l), Some(c)) => offset_of(&text, l, c),
                _ => 0,
            };
            let d = Diagnostic::at(
                &rel,
                &text,
                offset..offset + 3,
                "template prints a value with `{{{...}}}` or `{{&...}}`, which skips the check for control characters",
            )
            .help("write `{{...}}`: it prints the same, since nothing is HTML-escaped");
            self.diags.push(d);
        }
        Some(text)
    }

    /// The `multiline` key of a template entry: `true`, or parameter paths
    /// below `params` that the template may print, in canonical order.
    pub(super) fn multiline(
        &mut self,
        file: usize,
        raw: Option<&Spanned<RawMultiline>>,
        spec: &FileSpec,
        text: Option<&str>,
    ) -> Multiline {
        let keys = match raw.map(Spanned::get_ref) {
            None | Some(RawMultiline::All(false)) => return Multiline::Off,
            Some(RawMultiline::All(true)) => return Multiline::All,
            Some(RawMultiline::Keys(keys)) => keys,
        };
        let mut out = BTreeSet::new();
        for k in keys {
            let at = Self::at(file, k.clone());
            let segments = match template::parse_key(&at.v) {
                Ok(s) => s,
                Err(why) => {
                    let d = self
                        .diag(&at, format!("`{}` is not a parameter path: it {why}", at.v))
                        .help(MULTILINE_HELP);
                    self.diags.push(d);
                    continue;
                }
            };
            if segments.len() > 1 && segments[0] == "params" {
                let d = self
                    .diag(&at, format!("`{}` starts with `params`", at.v))
                    .help(format!(
                        "multiline paths are below `params`: write `{}`",
                        template::key_text(&segments[1..])
                    ));
                self.diags.push(d);
                continue;
            }
            if let Some(text) = text {
                if !template::can_reach(text, &segments) {
                    let d = self
                        .diag(
                            &at,
                            format!(
                                "template `{ROLES_DIR}/{}` never prints `params.{}`",
                                spec.source,
                                template::key_text(&segments)
                            ),
                        )
                        .help(MULTILINE_HELP);
                    self.diags.push(d);
                    continue;
                }
            }
            out.insert(template::key_text(&segments));
        }
        if out.is_empty() {
            Multiline::Off
        } else {
            Multiline::Keys(out.into_iter().collect())
        }
    }
}

const MULTILINE_HELP: &str = "list the parameters whose values may span lines as the template names them below `params`, like `multiline = [\"tls.cert\"]` for `{{params.tls.cert}}`; `multiline = true` allows every value it prints";

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
    fn offsets_from_line_and_column() {
        let t = "ab\ncdé\nf";
        assert_eq!(offset_of(t, 1, 1), 0);
        assert_eq!(offset_of(t, 2, 3), 5);
        assert_eq!(offset_of(t, 3, 1), 8);
    }

    use crate::role::{load_in_memory, MemoryRoles, Role};
    use crate::settings::parse_settings;
    use imagectl_image::template::Multiline;

    const SETTINGS: &str = "[aws]\nregion = \"eu-west-1\"\nbuild_subnet = \"s\"\nbuild_security_group = \"g\"\ninstance_profile = \"p\"\n\n[bases.debian-12]\nowners = [\"136693071363\"]\nname = \"debian-12-amd64-*\"\narchitecture = \"x86_64\"\n";

    const TEMPLATE: &str =
        "{{params.tls.cert}}\n{{shell params.tls.key}}\nHOST={{dquote params.host}}\n";

    /// Loads role `app` whose only template entry ends with `entry`.
    fn load_app(entry: &str, template: &str) -> Result<Role, String> {
        let settings = parse_settings(SETTINGS).unwrap();
        let role = format!(
            "[image]\nbase = \"debian-12\"\n\n[[boot.templates]]\nsource = \"templates/app/tls.hbs\"\ndest = \"/etc/app/tls.pem\"\n{entry}"
        );
        let roles = MemoryRoles {
            files: [
                ("app.toml".to_string(), role.into_bytes()),
                (
                    "templates/app/tls.hbs".to_string(),
                    template.as_bytes().to_vec(),
                ),
            ]
            .into(),
        };
        load_in_memory(&settings, &roles, &["app".to_string()])
            .map(|mut r| r.remove(0))
            .map_err(|d| d.to_string())
    }

    fn multiline(entry: &str) -> Multiline {
        load_app(entry, TEMPLATE).unwrap().boot.templates[0]
            .multiline
            .clone()
    }

    #[test]
    fn multiline_is_true_or_parameter_paths_in_canonical_order() {
        assert_eq!(multiline(""), Multiline::Off);
        assert_eq!(multiline("multiline = false\n"), Multiline::Off);
        assert_eq!(multiline("multiline = []\n"), Multiline::Off);
        assert_eq!(multiline("multiline = true\n"), Multiline::All);
        assert_eq!(
            multiline("multiline = [\"tls.key\", \"tls.cert\", \"tls.key\"]\n"),
            Multiline::Keys(vec!["tls.cert".into(), "tls.key".into()])
        );
        // A parent allows what is below it.
        assert_eq!(
            multiline("multiline = [\"tls\"]\n"),
            Multiline::Keys(vec!["tls".into()])
        );
    }

    #[test]
    fn without_multiline_the_canonical_form_is_unchanged() {
        let role = load_app("", TEMPLATE).unwrap();
        let canonical = serde_json::to_string(&role.boot.templates).unwrap();
        assert_eq!(
            canonical,
            r#"[{"source":"templates/app/tls.hbs","dest":"/etc/app/tls.pem","mode":"0600","owner":"root","group":"root"}]"#
        );
        let role = load_app("multiline = [\"tls.cert\"]\n", TEMPLATE).unwrap();
        let canonical = serde_json::to_string(&role.boot.templates).unwrap();
        assert!(
            canonical.ends_with(r#""group":"root","multiline":["tls.cert"]}]"#),
            "{canonical}"
        );
    }

    #[test]
    fn a_multiline_that_is_neither_true_nor_paths_points_at_itself() {
        let err = load_app("multiline = \"tls.cert\"\n", TEMPLATE).unwrap_err();
        assert_eq!(
            err,
            "error: wrong type: expected `true` or a list of parameter paths like `[\"tls.cert\"]`, found string \"tls.cert\"\n --> roles/app.toml:7:13\n  |\n7 | multiline = \"tls.cert\"\n  |             ^^^^^^^^^^\n  = help: change the value to the expected type\n\nerror: 1 problem found"
        );
        let err = load_app("multiline = [1]\n", TEMPLATE).unwrap_err();
        assert!(err.contains("--> roles/app.toml:7:"), "{err}");
        assert!(
            err.contains("expected a string, found integer `1`"),
            "{err}"
        );
    }

    #[test]
    fn a_multiline_path_must_parse_sit_below_params_and_be_printed() {
        let err = load_app(
            "multiline = [\"tls..cert\", \"params.tls.cert\", \"tls.certs\", \"tls.cert\"]\n",
            TEMPLATE,
        )
        .unwrap_err();
        assert_eq!(
            err,
            "error: `tls..cert` is not a parameter path: it has an empty segment
 --> roles/app.toml:7:14
  |
7 | multiline = [\"tls..cert\", \"params.tls.cert\", \"tls.certs\", \"tls.cert\"]
  |              ^^^^^^^^^^^
  = help: list the parameters whose values may span lines as the template names them below `params`, like `multiline = [\"tls.cert\"]` for `{{params.tls.cert}}`; `multiline = true` allows every value it prints

error: `params.tls.cert` starts with `params`
 --> roles/app.toml:7:27
  |
7 | multiline = [\"tls..cert\", \"params.tls.cert\", \"tls.certs\", \"tls.cert\"]
  |                           ^^^^^^^^^^^^^^^^^
  = help: multiline paths are below `params`: write `tls.cert`

error: template `roles/templates/app/tls.hbs` never prints `params.tls.certs`
 --> roles/app.toml:7:46
  |
7 | multiline = [\"tls..cert\", \"params.tls.cert\", \"tls.certs\", \"tls.cert\"]
  |                                              ^^^^^^^^^^^
  = help: list the parameters whose values may span lines as the template names them below `params`, like `multiline = [\"tls.cert\"]` for `{{params.tls.cert}}`; `multiline = true` allows every value it prints

error: 3 problems found"
        );
    }

    #[test]
    fn multiline_is_for_templates_only() {
        let settings = parse_settings(SETTINGS).unwrap();
        let roles = MemoryRoles {
            files: [
                (
                    "app.toml".to_string(),
                    b"[image]\nbase = \"debian-12\"\n\n[[files]]\nsource = \"a.conf\"\ndest = \"/etc/a.conf\"\nmultiline = true\n".to_vec(),
                ),
                ("a.conf".to_string(), b"a\n".to_vec()),
            ]
            .into(),
        };
        let err = load_in_memory(&settings, &roles, &["app".to_string()])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("error: unknown key `multiline`\n --> roles/app.toml:7:1\n"),
            "{err}"
        );
    }

    #[test]
    fn a_template_printing_with_three_braces_is_refused_where_it_does() {
        let err = load_app("", "A={{params.a}}\nB={{{params.b}}}\n").unwrap_err();
        assert_eq!(
            err,
            "error: template prints a value with `{{{...}}}` or `{{&...}}`, which skips the check for control characters
 --> roles/templates/app/tls.hbs:2:3
  |
2 | B={{{params.b}}}
  |   ^^^
  = help: write `{{...}}`: it prints the same, since nothing is HTML-escaped

error: 1 problem found"
        );
    }
}
