//! The role's test parameters, `roles/params/ROLE.toml`, against its boot
//! templates: every `{{params...}}` path a template would fail to render
//! with them (a misspelt `{{params.report.emial}}`) is reported where the
//! template reads it, with the closest path the parameters have.

use imagectl_image::template::key_text;
use imagectl_image::template_paths::{missing_params, MissingParam};
use serde_json::Value;

use super::load::Loader;
use super::merge::Merged;
use super::store::{not_text, Unusable};
use super::{MAX_ROLE_BYTES, ROLES_DIR};
use crate::diag::{did_you_mean, Diagnostic};

/// The most missing paths reported for one template: past a few, the
/// parameters file is probably the wrong one, and each report costs a pass
/// over the template to place it.
const MAX_PER_TEMPLATE: usize = 20;

/// Where a role's test parameters live, relative to `roles/`.
pub(super) fn params_file(role: &str) -> String {
    format!("params/{role}.toml")
}

impl Loader<'_> {
    /// Checks the templates of role `name` (parents' included) against
    /// its test parameters, when it has a file of them.
    pub(super) fn check_params(&mut self, name: &str, m: &Merged) {
        if m.templates.iter().all(|t| t.v.text.is_none()) {
            return;
        }
        let Some(params) = self.read_params(name) else {
            return;
        };
        let shown = format!("{ROLES_DIR}/{}", params_file(name));
        for t in &m.templates {
            let Some(text) = &t.v.text else {
                continue;
            };
            let rel = format!("{ROLES_DIR}/{}", t.v.file.source);
            let missing = missing_params(text, &params);
            for miss in missing.iter().take(MAX_PER_TEMPLATE) {
                let d = missing_diag(&rel, text, &shown, miss);
                self.diags.push(d);
            }
            if missing.len() > MAX_PER_TEMPLATE {
                let d = Diagnostic::file(
                    &rel,
                    format!(
                        "{} more `params` paths are not in `{shown}`",
                        missing.len() - MAX_PER_TEMPLATE
                    ),
                )
                .help(format!(
                    "check that `{shown}` is the right file for this template"
                ));
                self.diags.push(d);
            }
        }
    }

    /// The parameters in `roles/params/NAME.toml` as the agent reads them
    /// (tables become objects), or `None` when there is no such file or it
    /// cannot be read (then that is reported).
    fn read_params(&mut self, name: &str) -> Option<Value> {
        let rel = params_file(name);
        let shown = format!("{ROLES_DIR}/{rel}");
        let bytes = match self.store.read(&rel, MAX_ROLE_BYTES) {
            Ok(b) => b,
            Err(Unusable::Missing) => return None,
            Err(why) => {
                let d = Diagnostic::file(&shown, format!("cannot read test parameters: {why}"))
                    .help(format!(
                        "make `{shown}` a regular file of TOML inside `{ROLES_DIR}/`, or remove it"
                    ));
                self.diags.push(d);
                return None;
            }
        };
        let text = match not_text(bytes) {
            Ok(t) => t,
            Err((text, at, what)) => {
                let d = Diagnostic::at(
                    &shown,
                    &text,
                    at..at + 1,
                    format!("test parameters file {what}"),
                )
                .help("save it as UTF-8 text");
                self.diags.push(d);
                return None;
            }
        };
        let table: toml::Table = match toml::from_str(&text) {
            Ok(t) => t,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                let d = Diagnostic::at(
                    &shown,
                    &text,
                    span,
                    format!("TOML syntax error: {}", e.message().trim()),
                )
                .help(
                    "fix the syntax at this point; the TOML format is described at https://toml.io",
                );
                self.diags.push(d);
                return None;
            }
        };
        serde_json::to_value(table).ok()
    }
}

/// `params.report.emial` in template `rel` (whose text is `text`) is not
/// in the parameters file `shown`.
fn missing_diag(rel: &str, text: &str, shown: &str, miss: &MissingParam) -> Diagnostic {
    let path = format!("params.{}", key_text(&miss.path));
    let at = miss.offset;
    let d = Diagnostic::at(
        rel,
        text,
        at..at + miss.written.len(),
        format!("`{path}` is not in `{shown}`"),
    );
    let segment = miss.path.get(miss.found).map(String::as_str).unwrap_or("");
    let near = did_you_mean(segment, miss.siblings.iter().map(String::as_str));
    match near {
        Some(s) => {
            let mut fixed = miss.path.clone();
            fixed[miss.found] = s.to_string();
            d.help(format!("did you mean `params.{}`?", key_text(&fixed)))
        }
        None => {
            let above = match miss.found {
                0 => "params".to_string(),
                n => format!("params.{}", key_text(&miss.path[..n])),
            };
            let has = if miss.siblings.is_empty() {
                format!("`{above}` has no keys below it")
            } else {
                format!(
                    "`{above}` has {}",
                    miss.siblings
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            d.help(format!(
                "add it to `{shown}` (and to the role's parameters in SSM), or fix the path: {has}"
            ))
        }
    }
}
