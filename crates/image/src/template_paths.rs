//! Which `params` paths a template reads that a set of parameters lacks:
//! what `imagectl validate` checks against `roles/params/ROLE.toml`, so that
//! `{{params.report.emial}}` is caught on a laptop and not at boot.
//!
//! The template is walked as handlebars parses it, following the context
//! the way the renderer does: `{{#with params.tls}}{{cert}}` reads
//! `params.tls.cert`; inside `{{#each ...}}` a relative path reads the item
//! (unknown here, so never reported) while `@root.params.x` and `../x` still
//! read the parameters. Only what would fail the render in strict mode is
//! reported: the value tested by `if` and `unless` and the first argument of
//! `default` may be missing (that is how a template reads an optional
//! parameter), and what is inside a block that renders only when a missing
//! value is set (`{{#if params.tls}}{{params.tls.cert}}{{/if}}`) is not
//! reported either.

use std::rc::Rc;

use handlebars::template::{HelperTemplate, Parameter, TemplateElement};
use handlebars::{Path, PathSeg, Template};
use serde_json::Value;

use crate::template::HELPERS;

/// A path below `params` that a template reads and the parameters lack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingParam {
    /// Its segments below `params`, resolved against enclosing blocks.
    pub path: Vec<String>,
    /// How many leading segments the parameters have.
    pub found: usize,
    /// The keys the parameters have where the path leaves them, sorted:
    /// what a misspelt segment was probably meant to be.
    pub siblings: Vec<String>,
    /// Byte offset of the path in the template.
    pub offset: usize,
    /// 1-based line of the path in the template.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The path as written (`params.tls.cert`, `cert` in a `with`), to
    /// underline.
    pub written: String,
}

/// Handlebars' own helpers: a name among these (or [`HELPERS`]) is a helper
/// call, not a value.
const BUILTIN_HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "log", "eq", "ne", "gt", "gte", "lt", "lte", "and",
    "or", "not", "len",
];

/// The context a block renders in: a path from the root, or unknown (an
/// `each` item, a helper's block), with the block around it for `../`.
struct Scope {
    context: Option<Vec<String>>,
    parent: Option<Rc<Scope>>,
    /// The block names its items (`as |item|`): a path may start with a
    /// local rather than a key of the context.
    block_params: bool,
}

/// A template to walk: its scope, whether it renders only when a missing
/// value is set (then nothing in it is reported), and where its enclosing
/// tag is, for elements that have no position of their own.
struct Todo<'t> {
    template: &'t Template,
    scope: Rc<Scope>,
    excused: bool,
    at: (usize, usize),
}

/// Every path below `params` that `source` reads and `params` lacks, in
/// the order they are written. Empty for a template that does not parse
/// (its syntax error is reported apart).
pub fn missing_params(source: &str, params: &Value) -> Vec<MissingParam> {
    let Ok(template) = Template::compile(source) else {
        return Vec::new();
    };
    let root = Rc::new(Scope {
        context: Some(Vec::new()),
        parent: None,
        block_params: false,
    });
    let mut walk = Walk {
        source,
        line_starts: std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect(),
        params,
        out: Vec::new(),
    };
    // A stack rather than recursion: blocks may nest deeper than a
    // thread's stack would go.
    let mut todo = vec![Todo {
        template: &template,
        scope: root,
        excused: false,
        at: (1, 1),
    }];
    while let Some(t) = todo.pop() {
        let aligned = t.template.mapping.len() == t.template.elements.len();
        for (i, e) in t.template.elements.iter().enumerate().rev() {
            let at = match t.template.mapping.get(i) {
                Some(m) if aligned => (m.0, m.1),
                _ => t.at,
            };
            walk.element(e, &t, at, &mut todo);
        }
    }
    walk.out.sort_by_key(|m| (m.line, m.column));
    walk.out.dedup();
    walk.out
}

struct Walk<'a> {
    source: &'a str,
    /// Where each line starts, to turn positions into offsets and back
    /// without rereading the template for each path.
    line_starts: Vec<usize>,
    params: &'a Value,
    out: Vec<MissingParam>,
}

impl<'a> Walk<'a> {
    fn element<'t>(
        &mut self,
        e: &'t TemplateElement,
        t: &Todo<'t>,
        at: (usize, usize),
        todo: &mut Vec<Todo<'t>>,
    ) {
        match e {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                self.call(h, &t.scope, t.excused, at, false);
            }
            TemplateElement::HelperBlock(h) => self.block(h, t, at, todo),
            _ => {}
        }
    }

    /// `{{name args...}}`, a subexpression or a block's opening tag: a
    /// value when it has no arguments and is not a helper, else a helper
    /// call whose arguments are read. `optional` says the first argument
    /// may be missing.
    fn call(
        &mut self,
        h: &HelperTemplate,
        scope: &Rc<Scope>,
        excused: bool,
        at: (usize, usize),
        optional: bool,
    ) {
        let name = h.name.as_name().unwrap_or("");
        let is_helper = HELPERS.iter().any(|(n, _)| *n == name) || BUILTIN_HELPERS.contains(&name);
        if h.params.is_empty() && h.hash.is_empty() && !is_helper {
            self.read(&h.name, scope, excused, at);
        }
        for (i, p) in h.params.iter().enumerate() {
            // `default` exists to read a value that may be missing.
            let optional = i == 0 && (optional || name == "default");
            self.read(p, scope, excused || optional, at);
        }
        for p in h.hash.values() {
            self.read(p, scope, excused, at);
        }
    }

    /// A block: its arguments are read like a call's, then its body and
    /// its `else` are walked in the scope and with the excuses they render
    /// with.
    fn block<'t>(
        &mut self,
        h: &'t HelperTemplate,
        t: &Todo<'t>,
        at: (usize, usize),
        todo: &mut Vec<Todo<'t>>,
    ) {
        let name = h.name.as_name().unwrap_or("");
        // `if` and `unless` test a value that may be missing; `each` and
        // `with` render their `else` for one, so with an `else` the author
        // expects it may be.
        let optional = match name {
            "if" | "unless" => true,
            "each" | "with" => h.inverse.is_some(),
            _ => false,
        };
        self.call(h, &t.scope, t.excused, at, optional);
        let first = h.params.first().and_then(|p| self.resolve(p, &t.scope));
        // A value the block tests or walks that the parameters lack: the
        // part of the block that needs it never renders.
        let lacks = first
            .as_ref()
            .is_some_and(|(abs, _)| abs.first().is_some_and(|s| s == "params") && self.lacks(abs));
        let block_params = h.block_param.is_some();
        let (body_scope, body_excused, inverse_excused) = match name {
            "if" => (t.scope.clone(), lacks, false),
            "unless" => (t.scope.clone(), false, lacks),
            "with" | "each" => {
                let context = if name == "with" && h.block_param.is_none() {
                    first.map(|(abs, _)| abs)
                } else {
                    None
                };
                let scope = Rc::new(Scope {
                    context,
                    parent: Some(t.scope.clone()),
                    block_params,
                });
                (scope, lacks, false)
            }
            _ => {
                let scope = Rc::new(Scope {
                    context: None,
                    parent: Some(t.scope.clone()),
                    block_params,
                });
                (scope, false, false)
            }
        };
        if let Some(inverse) = &h.inverse {
            todo.push(Todo {
                template: inverse,
                scope: t.scope.clone(),
                excused: t.excused || inverse_excused,
                at,
            });
        }
        if let Some(body) = &h.template {
            todo.push(Todo {
                template: body,
                scope: body_scope,
                excused: t.excused || body_excused,
                at,
            });
        }
    }

    /// Reports `p` when it is a `params` path the parameters lack (unless
    /// `excused`), and reads the arguments of a subexpression.
    fn read(&mut self, p: &Parameter, scope: &Rc<Scope>, excused: bool, at: (usize, usize)) {
        if let Parameter::Subexpression(sub) = p {
            if let TemplateElement::Expression(h) = sub.element.as_ref() {
                self.call(h, scope, excused, at, false);
            }
            return;
        }
        if excused {
            return;
        }
        let Some((abs, written)) = self.resolve(p, scope) else {
            return;
        };
        if abs.first().map(String::as_str) != Some("params") || !self.lacks(&abs) {
            return;
        }
        let (found, siblings) = self.divergence(&abs[1..]);
        let offset = self.locate(at, &written);
        let (line, column) = self.position(offset);
        self.out.push(MissingParam {
            path: abs[1..].to_vec(),
            found,
            siblings,
            offset,
            line,
            column,
            written,
        });
    }

    /// The path from the root that `p` reads, and how it is written; `None`
    /// for a literal, a local (`@index`), a block parameter, or a path
    /// relative to a context that is not known.
    fn resolve(&self, p: &Parameter, scope: &Rc<Scope>) -> Option<(Vec<String>, String)> {
        let (segs, written): (Vec<PathSeg>, String) = match p {
            Parameter::Name(n) => (vec![PathSeg::Named(n.clone())], n.clone()),
            Parameter::Path(Path::Relative((segs, raw))) => (segs.clone(), raw.clone()),
            _ => return None,
        };
        let mut scope = scope.clone();
        let mut named = Vec::new();
        let mut from_root = false;
        for (i, s) in segs.iter().enumerate() {
            match s {
                PathSeg::Ruled(r) if i == 0 && format!("{r:?}") == "path_root" => from_root = true,
                PathSeg::Ruled(r) if format!("{r:?}") == "path_up" => {
                    scope = scope.parent.clone().unwrap_or(scope);
                }
                PathSeg::Named(n) => named.push(n.clone()),
                _ => return None,
            }
        }
        if from_root {
            return Some((named, written));
        }
        if scope.block_params {
            // `as |item|` names locals; which names is not kept apart from
            // the context's own, so nothing here is judged.
            return None;
        }
        let mut abs = scope.context.clone()?;
        abs.extend(named);
        Some((abs, written))
    }

    /// True when the parameters lack the value at `abs` (`params`, then
    /// segments below it).
    fn lacks(&self, abs: &[String]) -> bool {
        self.divergence(&abs[1..]).0 < abs.len() - 1
    }

    /// How many leading segments of `path` the parameters have, and the
    /// keys where the next one is not found.
    fn divergence(&self, path: &[String]) -> (usize, Vec<String>) {
        let mut v = self.params;
        for (i, seg) in path.iter().enumerate() {
            let next = match v {
                Value::Object(m) => m.get(seg),
                Value::Array(a) => seg.parse::<usize>().ok().and_then(|n| a.get(n)),
                _ => None,
            };
            match next {
                Some(n) => v = n,
                None => {
                    let keys = match v {
                        Value::Object(m) => m.keys().cloned().collect(),
                        _ => Vec::new(),
                    };
                    return (i, keys);
                }
            }
        }
        (path.len(), Vec::new())
    }

    /// The byte offset of `written`, looked for from the tag at `at` on
    /// (the tag itself when it is not found).
    fn locate(&self, at: (usize, usize), written: &str) -> usize {
        let start = self.offset(at.0, at.1);
        match self.source[start..].find(written) {
            Some(i) => start + i,
            None => start,
        }
    }

    /// The byte offset of a 1-based line and column (in characters).
    fn offset(&self, line: usize, column: usize) -> usize {
        let Some(&start) = self.line_starts.get(line.saturating_sub(1)) else {
            return self.source.len();
        };
        let col: usize = self.source[start..]
            .chars()
            .take_while(|c| *c != '\n')
            .take(column.saturating_sub(1))
            .map(char::len_utf8)
            .sum();
        start + col
    }

    /// 1-based line and column (in characters) of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset);
        let start = self.line_starts[line - 1];
        (line, self.source[start..offset].chars().count() + 1)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::template::{self, Multiline};

    fn params() -> Value {
        json!({
            "report": {"email": "ops@example.test", "to": "x"},
            "logs": {"host": "127.0.0.1"},
            "servers": ["a", "b"],
            "tls": {"cert": "c"},
        })
    }

    /// The paths `source` lacks, as `path@line:column`; and the renderer
    /// agrees: the render fails exactly when one is reported.
    fn lacks(source: &str) -> Vec<String> {
        let found: Vec<String> = missing_params(source, &params())
            .iter()
            .map(|m| format!("{}@{}:{}", m.path.join("."), m.line, m.column))
            .collect();
        let context = json!({"params": params(), "env": "test"});
        let rendered = template::render(
            &mut template::registry(),
            "t",
            source,
            &context,
            &Multiline::All,
        );
        assert_eq!(
            rendered.is_err(),
            !found.is_empty(),
            "{source}: {rendered:?}"
        );
        found
    }

    #[test]
    fn a_misspelt_path_is_reported_with_the_keys_beside_it() {
        let m = missing_params("To: {{params.report.emial}}\n", &params());
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].path, ["report", "emial"]);
        assert_eq!((m[0].found, m[0].line, m[0].column), (1, 1, 7));
        assert_eq!(m[0].offset, 6);
        assert_eq!(m[0].siblings, ["email", "to"]);
        assert_eq!(m[0].written, "params.report.emial");
        assert_eq!(lacks("a\n  {{params.nope}}\n"), ["nope@2:5"]);
        assert_eq!(lacks("é\n{{params.é}} {{params.x}}"), ["é@2:3", "x@2:16"]);
    }

    #[test]
    fn paths_the_parameters_have_pass() {
        assert!(lacks("{{params.report.email}} {{shell params.logs.host}} {{env}}").is_empty());
        assert!(lacks("{{params.servers.[1]}}").is_empty());
        assert_eq!(lacks("{{params.servers.[2]}}"), ["servers.2@1:3"]);
    }

    #[test]
    fn each_bodies_read_their_item_not_the_parameters() {
        assert!(lacks("{{#each params.servers}}{{this}} {{@index}}{{/each}}").is_empty());
        assert!(lacks("{{#each params.report}}{{@key}}={{this}}{{/each}}").is_empty());
        assert!(lacks("{{#each params.servers as |s|}}{{s}}{{/each}}").is_empty());
        assert_eq!(
            lacks("{{#each params.servers}}{{@root.params.logs.hots}}{{/each}}"),
            ["logs.hots@1:27"]
        );
    }

    #[test]
    fn with_blocks_resolve_relative_paths() {
        assert_eq!(
            lacks("{{#with params.logs}}{{host}}:{{port}}{{/with}}"),
            ["logs.port@1:33"]
        );
        assert!(lacks("{{#with params.logs}}{{../params.report.email}}{{/with}}").is_empty());
        assert_eq!(
            lacks("{{#with params.logs}}{{../params.report.x}}{{/with}}"),
            ["report.x@1:24"]
        );
    }

    #[test]
    fn optional_parameters_may_be_missing() {
        assert!(lacks("{{#if params.opt}}{{params.opt.x}}{{/if}}").is_empty());
        assert!(lacks("{{default params.opt \"x\"}}").is_empty());
        assert!(lacks("{{shell (default params.opt params.report.email)}}").is_empty());
        assert!(lacks("{{#with params.opt}}{{x}}{{else}}none{{/with}}").is_empty());
        assert_eq!(
            lacks("{{#if params.report}}{{params.report.emial}}{{/if}}"),
            ["report.emial@1:24"]
        );
        assert_eq!(
            lacks(
                "{{#unless params.tls}}-{{else}}{{params.tls.cert}}{{params.tls.key}}{{/unless}}"
            ),
            ["tls.key@1:53"]
        );
        assert_eq!(lacks("{{shell params.opt}}"), ["opt@1:9"]);
    }

    #[test]
    fn a_walked_section_without_else_must_exist() {
        // It renders nothing rather than failing, which is as wrong.
        let m = missing_params("{{#each params.servrs}}{{this}}{{/each}}", &params());
        assert_eq!(m[0].path, ["servrs"]);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_template_that_does_not_parse_has_no_paths() {
        assert!(missing_params("{{#if params.x}}", &params()).is_empty());
    }
}
