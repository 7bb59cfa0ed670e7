//! Handlebars rendering for configuration files: one registry, strict mode,
//! no HTML escaping, one table of helpers, and render errors that name the
//! template, the line and the missing value (never a value itself).
//!
//! # Differences from handlebars.js
//!
//! On the constructs both implement (standalone lines, `~`, comments,
//! `each` over objects, `if`/`else`/`unless`/`with`, `../`, `@index`,
//! `@key`, `@first`, `@last`, `lookup`, `[segment]`, CRLF line endings,
//! any bytes in values) the output is byte-identical to handlebars.js
//! 4.7.8: `tests/templates.rs` renders every golden template in
//! `tests/templates/succeeds/` with both. Where they differ, the golden
//! case says so: a `.js-expected` file holds what handlebars.js prints, or
//! the case is in `tests/templates/fails/` because only handlebars.js
//! accepts it.
//!
//! - `each` over an object visits keys in byte order; handlebars.js
//!   visits integer-like keys (`2`, `10`) first, in numeric order
//!   (`succeeds/11_integer_like_keys`).
//! - raw blocks `{{{{raw}}}}...{{{{/raw}}}}` print their contents here;
//!   handlebars.js needs a `raw` helper and prints nothing without one
//!   (`succeeds/14_raw_block`).
//! - `{{.}}` is a syntax error here; write `{{this}}`
//!   (`fails/11_dot_is_not_a_path`).
//! - `.length` of a string is not set here (handlebars.js prints the
//!   string's length) (`fails/12_string_length`).
//! - numbers: a float with no fraction prints as `1.0` here and `1` in
//!   handlebars.js. Parameters are always strings, so only a helper's
//!   result could show it (unit test `numbers_print_as_serde_json_does`).
//! - strict mode: handlebars.js with `strict: true` also fails a missing
//!   value tested by `{{#if}}`; here `if`, `unless` and `default` may test a
//!   missing value, which optional parameters need, and only printing one
//!   fails.

use base64::Engine as _;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderErrorReason, ScopedJson,
};
use serde_json::Value;

/// A template that does not parse, with its position inside the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct SyntaxError {
    /// What is wrong, in handlebars' words.
    pub reason: String,
    /// 1-based line inside the template, when handlebars knows it.
    pub line: Option<usize>,
    /// 1-based column inside the template, when handlebars knows it.
    pub column: Option<usize>,
}

/// The registry every rendering goes through.
///
/// Strict mode turns a missing value into an error instead of an empty
/// string: a config file with a silently blank database URL is worse than an
/// instance that fails its boot and is replaced. Escaping is off because
/// config files are not HTML: `a&b` must stay `a&b`.
pub fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    for (name, f) in HELPERS {
        hb.register_helper(name, Box::new(Fn(*f)));
    }
    hb
}

/// A helper: its arguments (missing ones included) to a value.
type HelperFn = fn(&[Arg]) -> Result<Value, HelperError>;

/// One helper argument: the path it was read from, when it was a path, and
/// its value (`None` when the path is not set).
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    /// The path the argument was read from (`params.db.url`); `None` for a
    /// literal.
    pub path: Option<String>,
    /// The value; `None` when the path is not set.
    pub value: Option<Value>,
}

/// Why a helper refused its arguments. Never carries a value: values may be
/// secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelperError {
    /// A required value is not set.
    #[error("`{0}` is not set")]
    Missing(String),
    /// The helper was called with the wrong number of arguments.
    #[error("takes {expected} argument(s), got {got}")]
    Arity {
        /// How many it takes.
        expected: usize,
        /// How many it got.
        got: usize,
    },
    /// The argument is not valid for this helper (named by position).
    #[error("argument {0} {1}")]
    Invalid(usize, &'static str),
}

/// The helpers config files need, in one table; each is unit-tested below.
///
/// - `default VALUE FALLBACK`: VALUE, or FALLBACK when VALUE is not set,
///   null or the empty string.
/// - `json VALUE`: VALUE as JSON (a string comes out quoted and escaped).
/// - `shell VALUE`: VALUE as one POSIX shell word, in single quotes.
/// - `base64 VALUE`: the standard base64 (with padding) of VALUE's text.
/// - `base64_decode VALUE`: the text whose base64 is VALUE (must be UTF-8).
pub const HELPERS: &[(&str, HelperFn)] = &[
    ("default", default_helper),
    ("json", json_helper),
    ("shell", shell_helper),
    ("base64", base64_helper),
    ("base64_decode", base64_decode_helper),
];

/// Adapts a [`HelperFn`] to handlebars: missing arguments reach the helper
/// (strict mode would otherwise reject `default` on an unset value) and the
/// result is a value, so helpers compose as subexpressions.
struct Fn(HelperFn);

impl HelperDef for Fn {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, handlebars::RenderError> {
        let args: Vec<Arg> = h
            .params()
            .iter()
            .map(|p| Arg {
                path: p.relative_path().cloned(),
                value: (!p.is_value_missing()).then(|| p.value().clone()),
            })
            .collect();
        match (self.0)(&args) {
            Ok(v) => Ok(ScopedJson::Derived(v)),
            Err(HelperError::Missing(path)) => {
                Err(RenderErrorReason::MissingVariable(Some(path)).into())
            }
            Err(e) => Err(RenderErrorReason::Other(format!("helper `{}`: {e}", h.name())).into()),
        }
    }
}

fn arity(args: &[Arg], expected: usize) -> Result<(), HelperError> {
    if args.len() == expected {
        Ok(())
    } else {
        Err(HelperError::Arity {
            expected,
            got: args.len(),
        })
    }
}

/// The value of a required argument.
fn required(arg: &Arg) -> Result<&Value, HelperError> {
    arg.value
        .as_ref()
        .ok_or_else(|| HelperError::Missing(arg.path.clone().unwrap_or_default()))
}

/// The text of a value as handlebars would print it.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn default_helper(args: &[Arg]) -> Result<Value, HelperError> {
    arity(args, 2)?;
    match &args[0].value {
        None | Some(Value::Null) => required(&args[1]).cloned(),
        Some(Value::String(s)) if s.is_empty() => required(&args[1]).cloned(),
        Some(v) => Ok(v.clone()),
    }
}

fn json_helper(args: &[Arg]) -> Result<Value, HelperError> {
    arity(args, 1)?;
    let v = required(&args[0])?;
    serde_json::to_string(v)
        .map(Value::String)
        .map_err(|_| HelperError::Invalid(1, "cannot be written as JSON"))
}

fn shell_helper(args: &[Arg]) -> Result<Value, HelperError> {
    arity(args, 1)?;
    let s = text(required(&args[0])?);
    Ok(Value::String(format!("'{}'", s.replace('\'', "'\\''"))))
}

fn base64_helper(args: &[Arg]) -> Result<Value, HelperError> {
    arity(args, 1)?;
    let s = text(required(&args[0])?);
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(s),
    ))
}

fn base64_decode_helper(args: &[Arg]) -> Result<Value, HelperError> {
    arity(args, 1)?;
    let s = text(required(&args[0])?);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|_| HelperError::Invalid(1, "is not valid base64"))?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| HelperError::Invalid(1, "does not decode to UTF-8 text"))
}

/// A template that failed to render, with where and why; never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// The template does not parse.
    #[error("template `{template}`{}: not valid handlebars: {}", at(.source.line, .source.column), .source.reason)]
    Syntax {
        /// The template's name (its source path).
        template: String,
        /// What is wrong and where.
        source: SyntaxError,
    },
    /// The template uses a value that is not set.
    #[error("template `{template}`{}: `{name}` is not set", at(*.line, *.column))]
    Missing {
        /// The template's name (its source path).
        template: String,
        /// 1-based line of the expression, when known.
        line: Option<usize>,
        /// 1-based column of the expression, when known.
        column: Option<usize>,
        /// The missing value's path (`params.db.url`).
        name: String,
    },
    /// Any other rendering failure (a helper's refusal, a missing partial).
    #[error("template `{template}`{}: {reason}", at(*.line, *.column))]
    Failed {
        /// The template's name (its source path).
        template: String,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// What went wrong.
        reason: String,
    },
}

fn at(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(", line {l}, column {c}"),
        (Some(l), None) => format!(", line {l}"),
        _ => String::new(),
    }
}

/// Renders one template (named `name` in errors) against `context`,
/// registering it in `hb` under that name.
///
/// The template is checked with [`check`] first so that a syntax error
/// points at the block that is wrong; a missing value names itself with
/// its line and column. Errors never contain a value.
pub fn render(
    hb: &mut Handlebars<'_>,
    name: &str,
    source: &str,
    context: &Value,
) -> Result<String, RenderError> {
    let syntax = |source: SyntaxError| RenderError::Syntax {
        template: name.to_string(),
        source,
    };
    check(source).map_err(syntax)?;
    hb.register_template_string(name, source).map_err(|e| {
        syntax(SyntaxError {
            reason: e.reason().to_string(),
            line: e.pos().map(|p| p.0),
            column: e.pos().map(|p| p.1),
        })
    })?;
    hb.render(name, context).map_err(|e| render_error(name, &e))
}

fn render_error(name: &str, e: &handlebars::RenderError) -> RenderError {
    match e.reason() {
        RenderErrorReason::MissingVariable(path) => RenderError::Missing {
            template: name.to_string(),
            line: e.line_no,
            column: e.column_no,
            name: path.clone().unwrap_or_else(|| "a value".to_string()),
        },
        reason => RenderError::Failed {
            template: name.to_string(),
            line: e.line_no,
            column: e.column_no,
            reason: reason.to_string(),
        },
    }
}

/// Parses `source` as a template without rendering it.
///
/// Handlebars reports an unclosed block at the end of the file with a list
/// of grammar rules; a person wants to know which block and where it opened,
/// so blocks are matched here first.
pub fn check(source: &str) -> Result<(), SyntaxError> {
    let Err(e) = handlebars::Template::compile(source) else {
        return Ok(());
    };
    if let Some(better) = unbalanced_block(source) {
        return Err(better);
    }
    let reason = e.reason().to_string();
    let reason = match reason.split_once(": expected ") {
        Some((head, _)) => format!("{head} here"),
        None => reason,
    };
    Err(SyntaxError {
        reason,
        line: e.pos().map(|p| p.0),
        column: e.pos().map(|p| p.1),
    })
}

/// Finds the first block that is closed by the wrong name or never closed.
fn unbalanced_block(source: &str) -> Option<SyntaxError> {
    let mut open: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while let Some(found) = source[i..].find("{{") {
        let start = i + found;
        let rest = &source[start + 2..];
        // Comments may contain anything, braces included.
        let end_marker = if rest.starts_with("!--") || rest.starts_with("~!--") {
            "--}}"
        } else {
            "}}"
        };
        let Some(len) = rest.find(end_marker) else {
            break;
        };
        i = start + 2 + len + end_marker.len();
        let tag = rest[..len].trim_start_matches('~').trim_start_matches('{');
        let name = |t: &str| -> String {
            t.trim_start_matches(['>', '*'])
                .split(|c: char| c.is_whitespace() || c == '~' || c == '}')
                .next()
                .unwrap_or("")
                .to_string()
        };
        if let Some(t) = tag.strip_prefix('#') {
            open.push((name(t), start));
        } else if let Some(t) = tag.strip_prefix('/') {
            let closing = name(t);
            match open.pop() {
                Some((opened, _)) if opened == closing => {}
                Some((opened, at)) => {
                    let (line, _) = position(source, at);
                    let (l, c) = position(source, start);
                    return Some(SyntaxError {
                        reason: format!("`{{{{/{closing}}}}}` closes `{{{{#{opened}}}}}`, opened on line {line}"),
                        line: Some(l),
                        column: Some(c),
                    });
                }
                None => {
                    let (l, c) = position(source, start);
                    return Some(SyntaxError {
                        reason: format!(
                            "`{{{{/{closing}}}}}` closes a block that was never opened"
                        ),
                        line: Some(l),
                        column: Some(c),
                    });
                }
            }
        }
    }
    let (opened, at) = open.pop()?;
    let (l, c) = position(source, at);
    Some(SyntaxError {
        reason: format!("block `{{{{#{opened}}}}}` is never closed; add `{{{{/{opened}}}}}`"),
        line: Some(l),
        column: Some(c),
    })
}

/// 1-based line and column of a byte offset.
fn position(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_without_html_escaping() {
        let hb = registry();
        let out = hb
            .render_template("{{v}}", &serde_json::json!({"v": "a&b<c>\"d\""}))
            .unwrap();
        assert_eq!(out, "a&b<c>\"d\"");
    }

    #[test]
    fn missing_value_is_an_error() {
        let hb = registry();
        let err = hb
            .render_template("{{params.db.url}}", &serde_json::json!({"params": {}}))
            .unwrap_err();
        assert!(err.to_string().contains("params.db.url"), "{err}");
    }

    #[test]
    fn check_reports_position_of_unclosed_block() {
        let err = check("line one\n{{#if x}}\nno end\n").unwrap_err();
        assert!(err.line.is_some(), "{err:?}");
    }

    #[test]
    fn check_names_the_unclosed_block_where_it_opens() {
        let err = check("A=1\nB={{#if params.b}}yes\nC=3\n").unwrap_err();
        assert_eq!(err.reason, "block `{{#if}}` is never closed; add `{{/if}}`");
        assert_eq!((err.line, err.column), (Some(2), Some(3)));
    }

    #[test]
    fn check_names_a_mismatched_close() {
        let err = check("{{#each xs}}\n{{#if y}}a{{/each}}\n{{/if}}").unwrap_err();
        assert_eq!(err.reason, "`{{/each}}` closes `{{#if}}`, opened on line 2");
        assert_eq!((err.line, err.column), (Some(2), Some(11)));
    }

    #[test]
    fn check_ignores_braces_in_comments() {
        check("{{!-- {{#if x}} --}}ok").unwrap();
    }

    #[test]
    fn check_accepts_valid_template() {
        check("DATABASE_URL={{params.db.url}}\n{{#each params}}{{@key}}{{/each}}\n").unwrap();
    }

    fn arg(path: &str, value: Option<serde_json::Value>) -> Arg {
        Arg {
            path: Some(path.to_string()),
            value,
        }
    }

    fn lit(v: serde_json::Value) -> Arg {
        Arg {
            path: None,
            value: Some(v),
        }
    }

    #[test]
    fn every_helper_is_registered() {
        let mut hb = registry();
        for (name, _) in HELPERS {
            // Called without arguments, a registered helper refuses by name;
            // an unknown name would be a missing value instead.
            let err = render(&mut hb, "t", &format!("{{{{{name}}}}}"), &json!({})).unwrap_err();
            assert!(
                err.to_string().contains(&format!("helper `{name}`")),
                "{err}"
            );
        }
    }

    #[test]
    fn default_falls_back_on_missing_null_and_empty() {
        let fallback = lit(json!("fb"));
        for v in [None, Some(json!(null)), Some(json!(""))] {
            assert_eq!(
                default_helper(&[arg("params.x", v), fallback.clone()]).unwrap(),
                json!("fb")
            );
        }
        assert_eq!(
            default_helper(&[arg("params.x", Some(json!("set"))), fallback.clone()]).unwrap(),
            json!("set")
        );
        assert_eq!(
            default_helper(&[arg("params.x", None), arg("params.y", None)]).unwrap_err(),
            HelperError::Missing("params.y".into())
        );
        assert_eq!(
            default_helper(&[fallback]).unwrap_err(),
            HelperError::Arity {
                expected: 2,
                got: 1
            }
        );
    }

    #[test]
    fn json_quotes_and_escapes() {
        assert_eq!(
            json_helper(&[lit(json!("a\"b\\c\n\u{e9}<&>"))]).unwrap(),
            json!("\"a\\\"b\\\\c\\n\u{e9}<&>\"")
        );
        assert_eq!(
            json_helper(&[lit(json!({"k": [1]}))]).unwrap(),
            json!("{\"k\":[1]}")
        );
        assert_eq!(
            json_helper(&[arg("params.missing", None)]).unwrap_err(),
            HelperError::Missing("params.missing".into())
        );
    }

    #[test]
    fn shell_quotes_one_word() {
        assert_eq!(
            shell_helper(&[lit(json!("plain"))]).unwrap(),
            json!("'plain'")
        );
        assert_eq!(
            shell_helper(&[lit(json!("it's $HOME `x` \"q\""))]).unwrap(),
            json!("'it'\\''s $HOME `x` \"q\"'")
        );
        assert_eq!(shell_helper(&[lit(json!(""))]).unwrap(), json!("''"));
    }

    #[test]
    fn shell_quoting_survives_a_real_shell() {
        let nasty = "a'b\"c$d`e\\f\ng h;i&j|k*";
        let quoted = shell_helper(&[lit(json!(nasty))]).unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf %s {}", quoted.as_str().unwrap()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }

    #[test]
    fn base64_round_trips() {
        assert_eq!(
            base64_helper(&[lit(json!("a&b\u{e9}"))]).unwrap(),
            json!("YSZiw6k=")
        );
        assert_eq!(
            base64_decode_helper(&[lit(json!("YSZiw6k=\n"))]).unwrap(),
            json!("a&b\u{e9}")
        );
        assert_eq!(
            base64_decode_helper(&[lit(json!("not base64!"))]).unwrap_err(),
            HelperError::Invalid(1, "is not valid base64")
        );
        assert_eq!(
            base64_decode_helper(&[lit(json!("//79"))]).unwrap_err(),
            HelperError::Invalid(1, "does not decode to UTF-8 text")
        );
    }

    #[test]
    fn render_names_template_line_and_parameter() {
        let mut hb = registry();
        let err = render(
            &mut hb,
            "templates/w/a.hbs",
            "A=1\nB={{params.db.url}}\n",
            &json!({"params": {"db": {}}}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "template `templates/w/a.hbs`, line 2, column 3: `params.db.url` is not set"
        );
    }

    #[test]
    fn helper_errors_never_show_values() {
        let mut hb = registry();
        let err = render(
            &mut hb,
            "t",
            "{{base64_decode params.secret}}",
            &json!({"params": {"secret": "hunter2-not-base64"}}),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(
            msg.contains("helper `base64_decode`: argument 1 is not valid base64"),
            "{msg}"
        );
    }

    #[test]
    fn helpers_compose() {
        let mut hb = registry();
        let out = render(
            &mut hb,
            "t",
            "{{shell (default params.x \"it's\")}} {{json (default params.y params.z)}}",
            &json!({"params": {"z": "v"}}),
        )
        .unwrap();
        assert_eq!(out, "'it'\\''s' \"v\"");
    }

    #[test]
    fn numbers_print_as_serde_json_does() {
        let mut hb = registry();
        let out = render(
            &mut hb,
            "t",
            "{{a}} {{b}} {{c}}",
            &json!({"a": 1.0, "b": 2, "c": 0.5}),
        )
        .unwrap();
        assert_eq!(out, "1.0 2 0.5");
    }
}
