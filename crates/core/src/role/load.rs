//! Loading: the `load*` entry points, the `Loader` that reads and parses
//! each role file once, and the linearisation of `extends` into the list of
//! layers a role is merged from.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use toml::Spanned;

use super::archive::Scan;
use super::merge::Merged;
use super::raw::RawRole;
use super::store::{disk, human_size, not_text, Store, Unusable};
use super::{MemoryRoles, Role, MAX_EXTENDS_DEPTH, MAX_ROLE_BYTES, ROLES_DIR};
use crate::diag::{did_you_mean, Diagnostic, Diagnostics};
use crate::project::Project;
use crate::settings::{is_name, Base, Settings};
use crate::tomlfile;

/// A value with the file and span it was read from.
#[derive(Debug, Clone)]
pub(super) struct At<T> {
    pub(super) v: T,
    pub(super) file: usize,
    pub(super) span: Range<usize>,
}

/// One role file, parsed.
pub(super) struct Layer {
    pub(super) file: usize,
    pub(super) raw: RawRole,
    /// Some keys did not parse: what did is still checked, so that one run
    /// reports every problem, but the role is not produced.
    pub(super) broken: bool,
}

/// The text of a file read during loading, for diagnostics.
pub(super) struct Source {
    pub(super) rel: String,
    pub(super) text: String,
}

/// Reads role files, caching each one, and collects every problem.
pub(super) struct Loader<'p> {
    pub(super) store: &'p dyn Store,
    pub(super) bases: &'p BTreeMap<String, Base>,
    pub(super) sources: Vec<Source>,
    layers: HashMap<String, Option<Layer>>,
    pub(super) diags: Diagnostics,
    /// Every role name that has a file, for lookups and suggestions.
    known: BTreeSet<String>,
    /// Archives read so far, by path: each is read once per run.
    pub(super) scans: HashMap<String, Scan>,
}

/// Lists the roles that have a file in `roles/`, sorted.
pub fn role_names(project: &Project) -> Vec<String> {
    disk(project).role_names()
}

/// Loads every role in `roles/`.
pub fn load_all(project: &Project) -> Result<Vec<Role>, Diagnostics> {
    check_all(project).into_result()
}

/// Loads the named roles, each with its parents merged in.
pub fn load(project: &Project, names: &[String]) -> Result<Vec<Role>, Diagnostics> {
    check(project, names).into_result()
}

/// What loading some roles found: the roles that are valid, and every
/// problem with the role whose loading found it. `imagectl validate`
/// reports it whole; [`load`] keeps only the roles, or the problems.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The valid roles, in the order they were asked for.
    pub roles: Vec<Role>,
    /// Every problem, each once, in the order found.
    pub problems: Vec<Problem>,
}

/// One problem and the role whose loading found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The role being loaded when it was found (a problem in a parent is
    /// reported once, with the first role that found it); `None` when no
    /// role was being loaded.
    pub role: Option<String>,
    /// What is wrong and where.
    pub diagnostic: Diagnostic,
}

impl Report {
    /// The roles when there is no problem, else every problem.
    pub fn into_result(self) -> Result<Vec<Role>, Diagnostics> {
        Diagnostics(self.problems.into_iter().map(|p| p.diagnostic).collect())
            .into_result(self.roles)
    }
}

/// Checks every role in `roles/`, as [`check`] does.
pub fn check_all(project: &Project) -> Report {
    let names = role_names(project);
    if names.is_empty() {
        let d = Diagnostic::file(ROLES_DIR, "no role files found")
            .help("add a role as `roles/NAME.toml`");
        return Report {
            roles: Vec::new(),
            problems: vec![Problem {
                role: None,
                diagnostic: d,
            }],
        };
    }
    check(project, &names)
}

/// Loads the named roles and reports every problem found on the way: a
/// role that fails does not stop the others from being checked.
pub fn check(project: &Project, names: &[String]) -> Report {
    check_from(&disk(project), &project.settings.bases, names)
}

/// Loads the named roles from role files held in memory, exactly as
/// [`load`] does from `roles/`, with `settings` standing for
/// `imagectl.toml`. Every error is a [`Diagnostic`]; it never panics.
pub fn load_in_memory(
    settings: &Settings,
    roles: &MemoryRoles,
    names: &[String],
) -> Result<Vec<Role>, Diagnostics> {
    check_from(roles, &settings.bases, names).into_result()
}

fn check_from(store: &dyn Store, bases: &BTreeMap<String, Base>, names: &[String]) -> Report {
    let mut loader = Loader {
        store,
        bases,
        sources: Vec::new(),
        layers: HashMap::new(),
        diags: Diagnostics::default(),
        known: store.role_names().into_iter().collect(),
        scans: HashMap::new(),
    };
    let mut roles = Vec::new();
    let mut owners: Vec<(usize, &String)> = Vec::new();
    for name in names {
        let before = loader.diags.0.len();
        if !loader.known.contains(name) {
            let d = loader.unknown_role(name);
            loader.diags.push(d);
        } else if let Some(role) = loader.role(name) {
            roles.push(role);
        }
        owners.push((loader.diags.0.len() - before, name));
    }
    let mut found = loader.diags.0.into_iter();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for (count, name) in owners {
        for d in found.by_ref().take(count) {
            if seen.insert(d.to_string()) {
                problems.push(Problem {
                    role: Some(name.clone()),
                    diagnostic: d,
                });
            }
        }
    }
    Report { roles, problems }
}

/// How much of a role's `extends` chain could be laid out, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Chain {
    /// Every ancestor is there.
    Whole,
    /// Some ancestors are missing or unreadable, or form a cycle.
    Gaps,
    /// The chain goes past [`MAX_EXTENDS_DEPTH`].
    TooDeep,
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
    pub(super) fn diag<T>(&self, at: &At<T>, message: impl Into<String>) -> Diagnostic {
        let s = &self.sources[at.file];
        Diagnostic::at(&s.rel, &s.text, at.span.clone(), message)
    }

    pub(super) fn at<T>(file: usize, s: Spanned<T>) -> At<T> {
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
        // The role has no file, so the report points at the directory the
        // roles are in rather than at a file that does not exist.
        let d = Diagnostic::file(
            format!("{ROLES_DIR}/"),
            format!("unknown role `{name}`: there is no `{rel}`"),
        );
        let roles = if self.known.is_empty() {
            "there are no roles yet".to_string()
        } else {
            format!(
                "the roles are: {}",
                self.known.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        };
        match did_you_mean(name, self.known.iter().map(String::as_str)) {
            Some(s) => d.help(format!("did you mean `{s}`? {roles}")),
            None if is_name(name) => d.help(format!("{roles}; create `{rel}` to add `{name}`")),
            None => d.help(roles),
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
        let (raw, diags): (RawRole, _) = tomlfile::parse_salvaging(&rel, &text);
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
    ) -> Chain {
        if seen.contains(name) {
            return Chain::Whole;
        }
        let Some(layer) = self.layer(name) else {
            return Chain::Gaps;
        };
        let file = layer.file;
        let parents: Vec<Spanned<String>> = layer.raw.extends.clone().unwrap_or_default();
        stack.push(name.to_string());
        let mut chain = Chain::Whole;
        for parent in parents {
            let at = Self::at(file, parent);
            if let Some(d) = self.bad_parent(&at, stack) {
                self.diags.push(d);
                chain = chain.max(Chain::Gaps);
                continue;
            }
            if stack.len() >= MAX_EXTENDS_DEPTH {
                // Every other parent is as deep: one report is enough.
                let d = self.too_deep(&at, stack);
                self.diags.push(d);
                chain = Chain::TooDeep;
                break;
            }
            chain = chain.max(self.linearize(&at.v, stack, out, seen));
        }
        stack.pop();
        seen.insert(name.to_string());
        out.push(name.to_string());
        chain
    }

    /// Why `at`, in the `extends` of the role on top of `stack`, cannot be
    /// merged: a cycle, not a role name, or no such role.
    fn bad_parent(&self, at: &At<String>, stack: &[String]) -> Option<Diagnostic> {
        let p = &at.v;
        if stack.contains(p) {
            let cycle = stack[stack.iter().position(|s| s == p).unwrap_or(0)..].join(" -> ");
            let d = self
                .diag(at, format!("`extends` cycle: {cycle} -> {p}"))
                .help(
                    "a role cannot extend itself, directly or through its parents: remove one link",
                );
            return Some(d);
        }
        if !is_name(p) {
            let d = self
                .diag(at, format!("`{p}` is not a role name"))
                .help(format!("`extends` lists roles by name, the stem of their file in `{ROLES_DIR}/`, like `base` for `{ROLES_DIR}/base.toml`"));
            return Some(d);
        }
        if !self.known.contains(p) {
            let d = self.diag(at, format!("unknown parent role `{p}`"));
            let d = match did_you_mean(p, self.known.iter().map(String::as_str)) {
                Some(s) => d.help(format!("did you mean `{s}`?")),
                None => d.help(format!(
                    "there is no `{ROLES_DIR}/{p}.toml`; create it or remove `{p}` from `extends`"
                )),
            };
            return Some(d);
        }
        None
    }

    /// Parent `at` would take `extends` past [`MAX_EXTENDS_DEPTH`].
    fn too_deep(&self, at: &At<String>, stack: &[String]) -> Diagnostic {
        let mut chain = stack.to_vec();
        chain.push(at.v.clone());
        self.diag(
            at,
            format!(
                "`extends` goes more than {MAX_EXTENDS_DEPTH} roles deep: {}",
                show_chain(&chain)
            ),
        )
        .help(format!(
            "flatten the hierarchy: merge some of these roles into their parents, so that no chain is longer than {MAX_EXTENDS_DEPTH}"
        ))
    }

    fn role(&mut self, name: &str) -> Option<Role> {
        let mut chain = Vec::new();
        let linear = self.linearize(name, &mut Vec::new(), &mut chain, &mut BTreeSet::new());
        // A parent that is missing, unreadable or part of a cycle leaves a
        // gap: the layers that are there are still merged and checked, so
        // that one run also reports the role's own mistakes (its missing
        // files), and the role is not produced. A chain past the depth
        // limit is not merged at all: a hostile one holds thousands.
        if linear == Chain::TooDeep || !chain.iter().any(|n| n == name) {
            return None;
        }
        let mut m = Merged {
            broken: linear == Chain::Gaps,
            ..Merged::default()
        };
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

    pub(super) fn line_of<T>(&self, at: &At<T>) -> usize {
        let text = &self.sources[at.file].text;
        text[..at.span.start.min(text.len())].matches('\n').count() + 1
    }
}
