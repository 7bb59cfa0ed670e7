//! The files entries reference: baked files, templates and archives must
//! be regular files inside `roles/` no bigger than their kind allows, and
//! a template must also be UTF-8 text that parses as handlebars.

use std::path::{Component, Path};

use super::load::{At, Loader};
use super::raw::RawFile;
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

    /// A boot template must be UTF-8 text and parse as handlebars; the
    /// error points into the template file itself.
    pub(super) fn check_template(&mut self, spec: &FileSpec, at: &At<RawFile>) {
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
    fn offsets_from_line_and_column() {
        let t = "ab\ncdé\nf";
        assert_eq!(offset_of(t, 1, 1), 0);
        assert_eq!(offset_of(t, 2, 3), 5);
        assert_eq!(offset_of(t, 3, 1), 8);
    }
}
