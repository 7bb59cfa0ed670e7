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
//! - `{{{x}}}` and `{{&x}}` are refused here (see below); handlebars.js
//!   prints them as `{{x}}` when escaping is off (`fails/13_triple_stash`).
//!
//! # Control characters
//!
//! A parameter printed into a configuration file must not be able to add
//! lines to it (a `logs.host` of `127.0.0.1")` and a newline followed by a
//! second `action(...)` would give rsyslog, running as root, an action of
//! the parameter's choosing). So a render fails when a printed value holds
//! a control character ([`is_refused_control`]: every C0 control but tab,
//! which is line feed, carriage return, escape and NUL among others; DEL;
//! and the C1 controls, NEL among them), naming the parameter's path and
//! never its value (the agent then writes no file). A template allows them where
//! values are meant to span lines (certificates), for every value or for
//! some parameters: [`Multiline`], the `multiline` key of its
//! `[[boot.templates]]` entry. A value quoted by `json` holds no control
//! character (they come out as `\n`, `\u001b`), so it always passes.
//!
//! How: the registry's escape function does not escape but records each
//! printed string that holds a control character, and [`render`] matches
//! those against the parameters (a helper's result is traced back to the
//! parameters among its arguments, so `{{shell params.tls.cert}}` is
//! `tls.cert`'s). Handlebars skips the escape function for `{{{x}}}` and
//! `{{&x}}`, so templates may not use them: with escaping off, `{{x}}`
//! prints the same.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, PathSeg, RenderContext, RenderErrorReason, ScopedJson,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
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
/// config files are not HTML: `a&b` must stay `a&b`. The escape function
/// prints every value unchanged, and during [`render`] it records the
/// values that hold control characters.
pub fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(watch_print);
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
/// - `json VALUE`: VALUE as JSON (a string comes out quoted and escaped;
///   DEL and the C1 controls too, as `\u007f` to `\u009f`, so that no
///   control character is printed). Also a YAML double-quoted string.
/// - `shell VALUE`: VALUE in single quotes, each `'` in it written `'"'"'`:
///   one POSIX shell word, and a value systemd's `EnvironmentFile=` reads
///   back exactly (it does not take the shorter `'\''`).
/// - `dquote VALUE`: VALUE in double quotes, each `\` and `"` in it behind
///   a backslash: a string for nginx and for rsyslog's `name="value"`
///   parameters. Nothing else is escaped: `$` stays (nginx expands
///   variables in some directives and has no escape for it).
/// - `base64 VALUE`: the standard base64 (with padding) of VALUE's text.
/// - `base64_decode VALUE`: the text whose base64 is VALUE (must be UTF-8).
pub const HELPERS: &[(&str, HelperFn)] = &[
    ("default", default_helper),
    ("json", json_helper),
    ("shell", shell_helper),
    ("dquote", dquote_helper),
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
            Ok(v) => {
                WATCH.with(|w| {
                    if let Some(w) = w.borrow_mut().as_mut() {
                        w.helper_result(&args, &v);
                    }
                });
                Ok(ScopedJson::Derived(v))
            }
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
    let json = serde_json::to_string(v)
        .map_err(|_| HelperError::Invalid(1, "cannot be written as JSON"))?;
    // serde_json escapes C0 controls only, as JSON requires; DEL and the
    // C1 controls may be escaped too, and are, so that JSON never prints a
    // control character. Outside strings JSON has none of them.
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if is_refused_control(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    Ok(Value::String(out))
}

fn shell_helper(args: &[Arg]) -> Result<Value, HelperError> {
    arity(args, 1)?;
    let s = text(required(&args[0])?);
    // `'"'"'` rather than the usual `'\''`: systemd's `EnvironmentFile=`
    // parser keeps a backslash-escaped quote but then reads the next `'`
    // literally, while after a closing quote it opens the next quoted part.
    Ok(Value::String(format!("'{}'", s.replace('\'', "'\"'\"'"))))
}

fn dquote_helper(args: &[Arg]) -> Result<Value, HelperError> {
    arity(args, 1)?;
    let s = text(required(&args[0])?);
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(Value::String(out))
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

/// Whether a printed value may not hold `c` unless its template allows it:
/// every C0 control but tab (line feed, carriage return, escape, NUL...),
/// DEL, and the C1 controls (U+0080 to U+009F, NEL among them). These are
/// what `char::is_control` names, tab aside.
pub fn is_refused_control(c: char) -> bool {
    c.is_control() && c != '\t'
}

/// Which printed values a template allows to hold control characters: the
/// `multiline` key of its `[[boot.templates]]` entry. In TOML and in the
/// image configuration, `false` (the default, left out), `true`, or a list
/// of parameter paths below `params`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Multiline {
    /// No printed value may hold one.
    #[default]
    Off,
    /// Every printed value may (`multiline = true`).
    All,
    /// The values of these parameters and of those below them may, and
    /// what helpers make of them (`multiline = ["tls.cert"]`): paths below
    /// `params` as [`parse_key`] reads them.
    Keys(Vec<String>),
}

impl Multiline {
    /// True when no value may hold a control character: the default, which
    /// the image configuration and a role's canonical form leave out.
    pub fn is_off(&self) -> bool {
        match self {
            Multiline::Off => true,
            Multiline::All => false,
            Multiline::Keys(k) => k.is_empty(),
        }
    }
}

impl Serialize for Multiline {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Multiline::Off => s.serialize_bool(false),
            Multiline::All => s.serialize_bool(true),
            Multiline::Keys(keys) => keys.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Multiline {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            All(bool),
            Keys(Vec<String>),
        }
        Ok(match Repr::deserialize(d)? {
            Repr::All(true) => Multiline::All,
            Repr::All(false) => Multiline::Off,
            Repr::Keys(keys) => Multiline::Keys(keys),
        })
    }
}

/// The segments of a parameter path below `params`, as `multiline` lists
/// it and errors name it: segments joined by `.`, a segment that is not
/// letters, digits, `_` and `-` in brackets as handlebars writes it
/// (`tls.cert`, `[cert.pem]`, `certs.[web 1]`).
pub fn parse_key(key: &str) -> Result<Vec<String>, &'static str> {
    if key.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    let mut segments = Vec::new();
    let mut rest = key;
    loop {
        let (segment, after) = if let Some(inner) = rest.strip_prefix('[') {
            let end = inner.find(']').ok_or("has a `[` without its `]`")?;
            (&inner[..end], &inner[end + 1..])
        } else {
            let end = rest.find(['.', '[', ']']).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        if segment.is_empty() {
            return Err("has an empty segment");
        }
        segments.push(segment.to_string());
        if after.is_empty() {
            return Ok(segments);
        }
        rest = after
            .strip_prefix('.')
            .ok_or("needs a `.` between segments")?;
    }
}

/// A parameter path below `params` as [`parse_key`] reads it back.
pub fn key_text<S: AsRef<str>>(segments: &[S]) -> String {
    segments
        .iter()
        .map(|s| {
            let s = s.as_ref();
            let plain = !s.is_empty()
                && s.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
            if plain {
                s.to_string()
            } else {
                format!("[{s}]")
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// What one [`render`] has seen printed, kept where the escape function and
/// the helpers can reach it: handlebars gives neither a way to the other.
struct Watch {
    /// The text of each parameter value, and of each helper result made
    /// from one, with the parameters (paths below `params`) it comes from.
    sources: HashMap<String, BTreeSet<Vec<String>>>,
    /// The parameters whose own values hold a control character.
    tainted: BTreeSet<Vec<String>>,
    /// The parameters allowed to, with everything below them.
    allowed: Vec<Vec<String>>,
    /// Parameters whose printed values held a control character without
    /// being allowed to.
    refused: BTreeSet<Vec<String>>,
    /// A printed value held one and comes from no parameter.
    stray: bool,
}

thread_local! {
    /// Set by [`render`] for the length of one rendering.
    static WATCH: RefCell<Option<Watch>> = const { RefCell::new(None) };
}

impl Watch {
    fn new(params: Option<&Value>, allowed: &[String]) -> Watch {
        let mut w = Watch {
            sources: HashMap::new(),
            tainted: BTreeSet::new(),
            allowed: allowed.iter().filter_map(|k| parse_key(k).ok()).collect(),
            refused: BTreeSet::new(),
            stray: false,
        };
        if let Some(p) = params {
            w.add_leaves(p, &mut Vec::new());
        }
        w
    }

    fn add_leaves(&mut self, v: &Value, path: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    path.push(k.clone());
                    self.add_leaves(child, path);
                    path.pop();
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    path.push(i.to_string());
                    self.add_leaves(child, path);
                    path.pop();
                }
            }
            leaf => {
                let t = text(leaf);
                if t.chars().any(is_refused_control) {
                    self.tainted.insert(path.clone());
                }
                self.sources.entry(t).or_default().insert(path.clone());
            }
        }
    }

    /// A helper made `result` from `args`: it comes from what they come
    /// from. A result equal to an argument is that argument passed on
    /// (`default`), which is already known.
    fn helper_result(&mut self, args: &[Arg], result: &Value) {
        let out = text(result);
        let ins: Vec<String> = args
            .iter()
            .filter_map(|a| a.value.as_ref())
            .map(text)
            .collect();
        if ins.contains(&out) {
            return;
        }
        let from: BTreeSet<Vec<String>> = ins
            .iter()
            .filter_map(|t| self.sources.get(t))
            .flatten()
            .cloned()
            .collect();
        if !from.is_empty() {
            self.sources.entry(out).or_default().extend(from);
        }
    }

    /// `s` is printed.
    fn printed(&mut self, s: &str) {
        if !s.chars().any(is_refused_control) {
            return;
        }
        let Some(from) = self.sources.get(s) else {
            self.stray = true;
            return;
        };
        // The parameters holding a control character themselves, or, when
        // a helper made it (`base64_decode`), those it was made from.
        let tainted: BTreeSet<Vec<String>> = from.intersection(&self.tainted).cloned().collect();
        let culprits = if tainted.is_empty() {
            from.clone()
        } else {
            tainted
        };
        for c in culprits {
            if !self.allowed.iter().any(|a| c.starts_with(a)) {
                self.refused.insert(c);
            }
        }
    }
}

/// The registry's escape function: prints `s` unchanged, and records it
/// when a [`render`] is under way.
fn watch_print(s: &str) -> String {
    WATCH.with(|w| {
        if let Some(w) = w.borrow_mut().as_mut() {
            w.printed(s);
        }
    });
    s.to_string()
}

/// Clears the watch when a rendering ends, even by a panic.
struct Watching;

impl Watching {
    fn start(w: Option<Watch>) -> Watching {
        WATCH.with(|cell| *cell.borrow_mut() = w);
        Watching
    }

    fn finish(self) -> Option<Watch> {
        WATCH.with(|cell| cell.borrow_mut().take())
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        WATCH.with(|cell| cell.borrow_mut().take());
    }
}

/// The message of [`RenderError::ControlCharacter`].
fn control_message(params: &[String], stray: bool) -> String {
    let quoted = |p: &String| format!("`params.{p}`");
    match params {
        [] if stray => "a printed value holds a control character (a line break, say) and comes from no parameter (a helper's result, or a key); allow it with `multiline = true` in the template's `[[boot.templates]]` entry".to_string(),
        [] => "a printed value holds a control character".to_string(),
        [one] => format!(
            "the value printed from {} holds a control character (a line break, say); fix the parameter, or, where it is meant to span lines, allow it with `multiline = [\"{one}\"]` in the template's `[[boot.templates]]` entry",
            quoted(one)
        ),
        many => {
            let (last, rest) = many.split_last().unwrap_or((&many[0], &[]));
            let names = format!(
                "{} and {}",
                rest.iter().map(quoted).collect::<Vec<_>>().join(", "),
                quoted(last)
            );
            let keys = many
                .iter()
                .map(|k| format!("\"{k}\""))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "the values printed from {names} hold control characters (line breaks, say); fix the parameters, or, where they are meant to span lines, allow them with `multiline = [{keys}]` in the template's `[[boot.templates]]` entry"
            )
        }
    }
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
    /// Printed values hold control characters the template does not allow
    /// ([`Multiline`]).
    #[error("template `{template}`: {}", control_message(.params, *.stray))]
    ControlCharacter {
        /// The template's name (its source path).
        template: String,
        /// The parameters the values come from, as paths below `params`
        /// ([`key_text`]), sorted.
        params: Vec<String>,
        /// Some value comes from no parameter (a helper made the control
        /// character from a literal, or a key holds one).
        stray: bool,
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
/// registering it in `hb` under that name, which must come from
/// [`registry`].
///
/// The template is checked with [`check`] first so that a syntax error
/// points at the block that is wrong, and with [`unchecked_print`]; a
/// missing value names itself with its line and column. A printed value
/// holding a control character fails the render unless `multiline` allows
/// it (see the module documentation). Errors never contain a value.
pub fn render(
    hb: &mut Handlebars<'_>,
    name: &str,
    source: &str,
    context: &Value,
    multiline: &Multiline,
) -> Result<String, RenderError> {
    let syntax = |source: SyntaxError| RenderError::Syntax {
        template: name.to_string(),
        source,
    };
    check(source).map_err(syntax)?;
    if let Some(e) = unchecked_print(source) {
        return Err(RenderError::Failed {
            template: name.to_string(),
            line: e.line,
            column: e.column,
            reason: e.reason,
        });
    }
    hb.register_template_string(name, source).map_err(|e| {
        syntax(SyntaxError {
            reason: e.reason().to_string(),
            line: e.pos().map(|p| p.0),
            column: e.pos().map(|p| p.1),
        })
    })?;
    let watch = match multiline {
        Multiline::All => None,
        Multiline::Off => Some(Watch::new(context.get("params"), &[])),
        Multiline::Keys(keys) => Some(Watch::new(context.get("params"), keys)),
    };
    let watching = Watching::start(watch);
    let out = hb
        .render(name, context)
        .map_err(|e| render_error(name, &e))?;
    if let Some(w) = watching.finish() {
        if !w.refused.is_empty() || w.stray {
            return Err(RenderError::ControlCharacter {
                template: name.to_string(),
                params: w.refused.iter().map(|k| key_text(k)).collect(),
                stray: w.stray,
            });
        }
    }
    Ok(out)
}

/// The first `{{{x}}}` or `{{&x}}` in `source`, as an error to report.
///
/// Handlebars prints those without calling the escape function, so the
/// control-character check would never see what they print; escaping is
/// off, so `{{x}}` prints the same and is what to write instead.
pub fn unchecked_print(source: &str) -> Option<SyntaxError> {
    let template = handlebars::Template::compile(source).ok()?;
    if !any_element(&template, &mut |e| {
        matches!(e, TemplateElement::HtmlExpression(_))
    }) {
        return None;
    }
    let (line, column) = match triple_stash_offset(source) {
        Some(offset) => {
            let (l, c) = position(source, offset);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    Some(SyntaxError {
        reason: "`{{{...}}}` and `{{&...}}` print a value without the check for control characters; write `{{...}}`, which prints the same (nothing is HTML-escaped)".to_string(),
        line,
        column,
    })
}

/// Whether `f` holds for an element of `t`, blocks and subexpressions
/// included. A stack rather than recursion: a template may nest blocks
/// deeper than a thread's stack would go.
fn any_element(t: &handlebars::Template, f: &mut dyn FnMut(&TemplateElement) -> bool) -> bool {
    let mut todo: Vec<&TemplateElement> = t.elements.iter().collect();
    while let Some(e) = todo.pop() {
        if f(e) {
            return true;
        }
        let (params, templates) = parts(e);
        for p in params {
            if let Parameter::Subexpression(sub) = p {
                todo.push(&sub.element);
            }
        }
        for t in templates {
            todo.extend(t.elements.iter());
        }
    }
    false
}

/// The parameters of an element (its name, arguments and hash values) and
/// the templates inside it (a block's body and its `else`).
fn parts(e: &TemplateElement) -> (Vec<&Parameter>, Vec<&handlebars::Template>) {
    match e {
        TemplateElement::Expression(h)
        | TemplateElement::HtmlExpression(h)
        | TemplateElement::HelperBlock(h) => (
            std::iter::once(&h.name)
                .chain(&h.params)
                .chain(h.hash.values())
                .collect(),
            h.template.iter().chain(h.inverse.iter()).collect(),
        ),
        TemplateElement::DecoratorExpression(d)
        | TemplateElement::DecoratorBlock(d)
        | TemplateElement::PartialExpression(d)
        | TemplateElement::PartialBlock(d) => (
            std::iter::once(&d.name)
                .chain(&d.params)
                .chain(d.hash.values())
                .collect(),
            d.template.iter().collect(),
        ),
        _ => (Vec::new(), Vec::new()),
    }
}

/// Where the first `{{{` (not a raw block's `{{{{`) or `{{&` opens,
/// outside comments, raw blocks and `\{{` escapes.
fn triple_stash_offset(source: &str) -> Option<usize> {
    let mut i = 0;
    while let Some(found) = source[i..].find("{{") {
        let start = i + found;
        let rest = &source[start + 2..];
        if source[..start].ends_with('\\') {
            i = start + 2;
            continue;
        }
        if rest.starts_with("{{") {
            // A raw block: its contents are printed as they are written.
            let close = rest.strip_prefix("{{/").is_none();
            let after = start + 4;
            i = match (close, source[after..].find("{{{{/")) {
                (true, Some(end)) => after + end + 5,
                _ => after,
            };
            continue;
        }
        let end_marker = if rest.starts_with("!--") || rest.starts_with("~!--") {
            "--}}"
        } else {
            "}}"
        };
        let tag = rest.trim_start_matches('~');
        if tag.starts_with('{') || tag.starts_with('&') {
            return Some(start);
        }
        i = match rest.find(end_marker) {
            Some(len) => start + 2 + len + end_marker.len(),
            None => return None,
        };
    }
    None
}

/// Whether a path in template `source` could lead to the parameter at
/// `key` (segments below `params`) or one below it: a path naming it, a
/// parameter above it or one below it, in full or relative to a block
/// (`{{#with params.tls}}{{cert}}`), or a path naming nothing (`this`,
/// `..`), which could be anything. False only when no path of the
/// template could print it; true for a template that does not parse.
pub fn can_reach(source: &str, key: &[String]) -> bool {
    let Ok(template) = handlebars::Template::compile(source) else {
        return true;
    };
    let full: Vec<&str> = std::iter::once("params")
        .chain(key.iter().map(String::as_str))
        .collect();
    let mut reach = |e: &TemplateElement| -> bool {
        parts(e).0.into_iter().any(|p| match named_segments(p) {
            None => false,
            Some(segs) if segs.is_empty() => true,
            // Laid on the parameter's path at some depth, it agrees with
            // it as far as both go: `tls.cert` below `params`, `cert` in
            // a `with`, or `tls.cert.x` past a `multiline` parent `tls`.
            Some(segs) => (0..full.len()).any(|i| full[i..].iter().zip(&segs).all(|(a, b)| a == b)),
        })
    };
    any_element(&template, &mut reach)
}

/// The named segments of a path parameter (none for `this` or `..`), or
/// `None` for what is not a path into the context (a literal, a local
/// like `@key`, a subexpression, whose own paths are visited apart).
fn named_segments(p: &Parameter) -> Option<Vec<&str>> {
    match p {
        Parameter::Name(n) => Some(vec![n.as_str()]),
        Parameter::Path(handlebars::Path::Relative((segs, _))) => Some(
            segs.iter()
                .filter_map(|s| match s {
                    PathSeg::Named(n) if n != "this" => Some(n.as_str()),
                    _ => None,
                })
                .collect(),
        ),
        _ => None,
    }
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
            let err = render(
                &mut hb,
                "t",
                &format!("{{{{{name}}}}}"),
                &json!({}),
                &Multiline::Off,
            )
            .unwrap_err();
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
            json!("'it'\"'\"'s $HOME `x` \"q\"'")
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
            &Multiline::Off,
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
            &Multiline::Off,
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
            &Multiline::Off,
        )
        .unwrap();
        assert_eq!(out, "'it'\"'\"'s' \"v\"");
    }

    #[test]
    fn numbers_print_as_serde_json_does() {
        let mut hb = registry();
        let out = render(
            &mut hb,
            "t",
            "{{a}} {{b}} {{c}}",
            &json!({"a": 1.0, "b": 2, "c": 0.5}),
            &Multiline::Off,
        )
        .unwrap();
        assert_eq!(out, "1.0 2 0.5");
    }

    /// The rsyslog injection of the issue: a host that closes the string
    /// and adds an action writing root's authorized keys.
    const INJECTED_HOST: &str = "127.0.0.1\")\n*.* action(type=\"omfile\" file=\"/root/.ssh/authorized_keys\" template=\"key\")";

    fn render_params(
        template: &str,
        params: Value,
        multiline: &Multiline,
    ) -> Result<String, RenderError> {
        render(
            &mut registry(),
            "templates/base/forward.conf.hbs",
            template,
            &json!({"params": params, "env": "prod"}),
            multiline,
        )
    }

    #[test]
    fn a_control_character_in_a_printed_value_fails_naming_the_path_not_the_value() {
        for c in ['\n', '\r', '\u{1b}', '\0', '\u{7f}', '\u{85}', '\u{1}'] {
            let value = format!("hunter2{c}hunter3");
            let err = render_params(
                "# {{env}}\nA={{params.a}}\nB={{params.db.url}}\n",
                json!({"a": "plain", "db": {"url": value}}),
                &Multiline::Off,
            )
            .unwrap_err();
            let msg = err.to_string();
            assert!(!msg.contains("hunter"), "{c:?}: {msg}");
            assert_eq!(
                err,
                RenderError::ControlCharacter {
                    template: "templates/base/forward.conf.hbs".into(),
                    params: vec!["db.url".into()],
                    stray: false,
                },
                "{c:?}"
            );
        }
    }

    #[test]
    fn the_injected_rsyslog_host_fails_with_this_message() {
        let err = render_params(
            "*.* action(type=\"omfwd\" target=\"{{params.logs.host}}\" port=\"{{params.logs.port}}\")\n",
            json!({"logs": {"host": INJECTED_HOST, "port": "10514"}}),
            &Multiline::Off,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "template `templates/base/forward.conf.hbs`: the value printed from `params.logs.host` holds a control character (a line break, say); fix the parameter, or, where it is meant to span lines, allow it with `multiline = [\"logs.host\"]` in the template's `[[boot.templates]]` entry"
        );
        // Quoting does not help: the value still breaks the line.
        let err = render_params(
            "target={{dquote params.logs.host}}\n",
            json!({"logs": {"host": INJECTED_HOST}}),
            &Multiline::Off,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`params.logs.host`"), "{err}");
        assert!(!err.to_string().contains("authorized_keys"), "{err}");
    }

    #[test]
    fn several_parameters_are_named_together_sorted() {
        let err = render_params(
            "{{params.b}}{{params.a}}{{params.c}}{{params.b}}\n",
            json!({"a": "1\n", "b": "2\r", "c": "fine"}),
            &Multiline::Off,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "template `templates/base/forward.conf.hbs`: the values printed from `params.a` and `params.b` hold control characters (line breaks, say); fix the parameters, or, where they are meant to span lines, allow them with `multiline = [\"a\", \"b\"]` in the template's `[[boot.templates]]` entry"
        );
    }

    #[test]
    fn tab_passes_and_unprinted_values_do_not_matter() {
        let out = render_params(
            "{{params.a}}|{{#if params.b}}set{{/if}}\n",
            json!({"a": "x\ty", "b": "line\nbreak"}),
            &Multiline::Off,
        )
        .unwrap();
        assert_eq!(out, "x\ty|set\n");
    }

    #[test]
    fn a_template_or_a_key_may_allow_line_breaks() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let params = json!({"tls": {"cert": cert, "key": "k\r\n"}, "host": "h\n"});
        let t = "{{params.tls.cert}}{{params.tls.key}}";
        render_params(t, params.clone(), &Multiline::All).unwrap();
        render_params(
            t,
            params.clone(),
            &Multiline::Keys(vec!["tls.cert".into(), "tls.key".into()]),
        )
        .unwrap();
        // A path allows what is below it.
        let out = render_params(t, params.clone(), &Multiline::Keys(vec!["tls".into()])).unwrap();
        assert_eq!(out, format!("{cert}k\r\n"));
        // Only those keys.
        let err = render_params(
            "{{params.tls.cert}}{{params.host}}",
            params.clone(),
            &Multiline::Keys(vec!["tls.cert".into()]),
        )
        .unwrap_err();
        assert!(
            matches!(&err, RenderError::ControlCharacter { params, stray: false, .. } if params == &["host"]),
            "{err:?}"
        );
        // `tls.certs` is not `tls.cert`, nor `tls.ce` its parent.
        for other in ["tls.certs", "tls.ce", "cert"] {
            render_params(
                "{{params.tls.cert}}",
                params.clone(),
                &Multiline::Keys(vec![other.into()]),
            )
            .unwrap_err();
        }
    }

    #[test]
    fn json_prints_a_multi_line_value_safely_without_opting_in() {
        let out = render_params(
            "{\"cert\": {{json params.cert}}, \"odd\": {{json params.odd}}}",
            json!({"cert": "a\nb\r\n\u{1b}[0m", "odd": "del\u{7f} nel\u{85}"}),
            &Multiline::Off,
        )
        .unwrap();
        assert_eq!(
            out,
            "{\"cert\": \"a\\nb\\r\\n\\u001b[0m\", \"odd\": \"del\\u007f nel\\u0085\"}"
        );
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(back["odd"], "del\u{7f} nel\u{85}");
    }

    #[test]
    fn a_helper_result_is_traced_to_its_parameters() {
        // `b64` is "c\nd" in base64.
        let params = json!({"cert": "a\nb", "b64": "Ywpk", "x": "plain"});
        // Quoted, the value still holds its line break: it is the
        // parameter's, and allowing the parameter allows it.
        for t in [
            "{{shell params.cert}}",
            "{{dquote (default params.none params.cert)}}",
        ] {
            let err = render_params(t, params.clone(), &Multiline::Off).unwrap_err();
            assert!(
                matches!(&err, RenderError::ControlCharacter { params, stray: false, .. } if params == &["cert"]),
                "{t}: {err:?}"
            );
            render_params(t, params.clone(), &Multiline::Keys(vec!["cert".into()])).unwrap();
        }
        // A helper that makes one out of a parameter names that parameter.
        let t = "{{shell (base64_decode params.b64)}}";
        let err = render_params(t, params.clone(), &Multiline::Off).unwrap_err();
        assert!(
            matches!(&err, RenderError::ControlCharacter { params, stray: false, .. } if params == &["b64"]),
            "{err:?}"
        );
        render_params(t, params.clone(), &Multiline::Keys(vec!["b64".into()])).unwrap();
        // Each over a subtree: `this` is the parameter it visits.
        let certs = json!({"certs": {"a": "1\n", "b": "2\n"}});
        let t = "{{#each params.certs}}{{this}}{{/each}}";
        let err = render_params(t, certs.clone(), &Multiline::Off).unwrap_err();
        assert!(
            matches!(&err, RenderError::ControlCharacter { params, .. } if params == &["certs.a", "certs.b"]),
            "{err:?}"
        );
        render_params(t, certs, &Multiline::Keys(vec!["certs".into()])).unwrap();
    }

    #[test]
    fn a_control_character_from_no_parameter_needs_the_whole_template_allowed() {
        let t = "{{base64_decode \"YQpi\"}}";
        let err = render_params(t, json!({}), &Multiline::Keys(vec!["x".into()])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "template `templates/base/forward.conf.hbs`: a printed value holds a control character (a line break, say) and comes from no parameter (a helper's result, or a key); allow it with `multiline = true` in the template's `[[boot.templates]]` entry"
        );
        assert_eq!(
            render_params(t, json!({}), &Multiline::All).unwrap(),
            "a\nb"
        );
        // The parameter path of `[boot] parameters` renders without params.
        let mut hb = registry();
        render(
            &mut hb,
            "p",
            "/x/{{env}}",
            &json!({"env": "a\nb"}),
            &Multiline::Off,
        )
        .unwrap_err();
    }

    #[test]
    fn rendering_without_render_checks_nothing() {
        // `registry()` alone (validation's sample render) prints as before.
        let out = registry()
            .render_template("{{v}}", &json!({"v": "a\nb"}))
            .unwrap();
        assert_eq!(out, "a\nb");
    }

    #[test]
    fn triple_stash_and_ampersand_are_refused_where_they_are() {
        for (t, line, column) in [
            ("A={{{params.a}}}\n", 1, 3),
            ("A=1\n{{#if x}}\n  B={{~{params.a}~}}\n{{/if}}\n", 3, 5),
            ("{{#each params}}{{&this}}{{/each}}", 1, 17),
            (
                "{{!-- {{{x}}} --}}{{{{raw}}}}{{{x}}}{{{{/raw}}}}{{{y}}}",
                1,
                49,
            ),
        ] {
            let e = unchecked_print(t).unwrap_or_else(|| panic!("{t:?}"));
            assert_eq!((e.line, e.column), (Some(line), Some(column)), "{t:?}");
            let err = render_params(t, json!({"a": "v"}), &Multiline::All).unwrap_err();
            assert!(
                err.to_string()
                    .contains("print a value without the check for control characters"),
                "{err}"
            );
        }
        for t in [
            "{{a}} {{json a}} {{#if a}}{{b}}{{/if}}",
            "{{{{raw}}}}{{{x}}}{{{{/raw}}}}",
            "\\{{{x}}}",
            "{{!-- {{{x}}} --}}",
        ] {
            assert_eq!(unchecked_print(t), None, "{t:?}");
        }
    }

    #[test]
    fn dquote_escapes_backslash_and_double_quote_only() {
        assert_eq!(
            dquote_helper(&[lit(json!("plain"))]).unwrap(),
            json!("\"plain\"")
        );
        assert_eq!(
            dquote_helper(&[lit(json!("a\"b\\c'd$e;f{g}#h"))]).unwrap(),
            json!("\"a\\\"b\\\\c'd$e;f{g}#h\"")
        );
        assert_eq!(dquote_helper(&[lit(json!(""))]).unwrap(), json!("\"\""));
        assert_eq!(
            dquote_helper(&[lit(json!("line\nbreak"))]).unwrap(),
            json!("\"line\nbreak\"")
        );
        assert_eq!(
            dquote_helper(&[arg("params.missing", None)]).unwrap_err(),
            HelperError::Missing("params.missing".into())
        );
    }

    /// What nginx's configuration parser makes of a double-quoted string
    /// (ngx_conf_read_token): `\"`, `\'`, `\\` give the character, `\t`,
    /// `\r`, `\n` the control, any other backslash stays.
    fn nginx_unquote(s: &str) -> String {
        let inner = &s[1..s.len() - 1];
        let mut out = String::new();
        let mut chars = inner.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.peek() {
                    Some('"' | '\'' | '\\') => out.push(chars.next().unwrap()),
                    Some('t') => {
                        chars.next();
                        out.push('\t')
                    }
                    Some('r') => {
                        chars.next();
                        out.push('\r')
                    }
                    Some('n') => {
                        chars.next();
                        out.push('\n')
                    }
                    _ => out.push(c),
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    #[test]
    fn dquote_round_trips_through_nginx_and_rsyslog_string_rules() {
        for v in [
            "https://learn.example.test",
            "a\"b",
            "back\\slash",
            "\\n not a newline",
            "it's",
            "$host ;{}#",
        ] {
            let q = dquote_helper(&[lit(json!(v))]).unwrap();
            let q = q.as_str().unwrap();
            assert_eq!(nginx_unquote(q), v, "{q}");
            // rsyslog's lexer takes a parameter string as
            // "([^"\\]|\\['"?\\abfnrtv]|\\[0-7]{1,3})*": only `\"` and `\\`
            // are ever written, so every backslash starts one of those.
            let inner = &q[1..q.len() - 1];
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                assert_ne!(c, '"', "{q}");
                if c == '\\' {
                    assert!(matches!(chars.next(), Some('"' | '\\')), "{q}");
                }
            }
        }
    }

    #[test]
    fn keys_parse_and_print_as_handlebars_writes_paths() {
        assert_eq!(parse_key("tls.cert").unwrap(), ["tls", "cert"]);
        assert_eq!(parse_key("[cert.pem]").unwrap(), ["cert.pem"]);
        assert_eq!(
            parse_key("certs.[web 1].pem").unwrap(),
            ["certs", "web 1", "pem"]
        );
        for bad in ["", "a..b", ".a", "a.", "[a", "a[b]", "a]", "[]", "a\nb"] {
            assert!(parse_key(bad).is_err(), "{bad:?}");
        }
        assert_eq!(key_text(&["tls", "cert"]), "tls.cert");
        assert_eq!(key_text(&["cert.pem"]), "[cert.pem]");
        assert_eq!(key_text(&["a-b_c9", "x y"]), "a-b_c9.[x y]");
        for k in ["tls.cert", "[cert.pem]", "a.[b c].d"] {
            assert_eq!(key_text(&parse_key(k).unwrap()), k);
        }
    }

    #[test]
    fn a_dotted_parameter_name_is_named_in_brackets() {
        let err = render_params(
            "{{params.[cert.pem]}}",
            json!({"cert.pem": "a\nb"}),
            &Multiline::Off,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`params.[cert.pem]`"), "{err}");
        assert!(
            err.to_string().contains("multiline = [\"[cert.pem]\"]"),
            "{err}"
        );
        render_params(
            "{{params.[cert.pem]}}",
            json!({"cert.pem": "a\nb"}),
            &Multiline::Keys(vec!["[cert.pem]".into()]),
        )
        .unwrap();
    }

    #[test]
    fn can_reach_finds_every_path_that_may_lead_to_a_parameter() {
        let key = |k: &str| parse_key(k).unwrap();
        let yes = [
            ("{{params.tls.cert}}", "tls.cert"),
            ("{{shell params.tls.cert}}", "tls.cert"),
            ("{{shell (default params.x params.tls.cert)}}", "tls.cert"),
            ("{{#with params.tls}}{{cert}}{{/with}}", "tls.cert"),
            ("{{#each params.tls}}{{this}}{{/each}}", "tls.cert"),
            (
                "{{#each params}}{{#each this}}{{this}}{{/each}}{{/each}}",
                "tls.cert",
            ),
            ("{{lookup params.tls \"cert\"}}", "tls.cert"),
            (
                "{{#if x}}{{else}}{{params.[cert.pem]}}{{/if}}",
                "[cert.pem]",
            ),
            ("{{params.tls}}", "tls.cert"),
            ("{{params.tls.cert}}", "tls"),
            ("{{#with params}}{{tls.cert}}{{/with}}", "tls"),
            ("not handlebars {{#if", "x"),
        ];
        for (t, k) in yes {
            assert!(can_reach(t, &key(k)), "{t} should reach {k}");
        }
        let no = [
            ("{{params.tls.key}}", "tls.cert"),
            ("{{params.tls.cert}}", "tls.certs"),
            ("{{params.tls.cert}}", "tl"),
            ("DATABASE_URL={{params.db.url}}\n", "db.password"),
            ("{{env}} {{role}}", "tls.cert"),
        ];
        for (t, k) in no {
            assert!(!can_reach(t, &key(k)), "{t} should not reach {k}");
        }
    }

    #[test]
    fn multiline_reads_and_writes_false_true_or_keys() {
        let read = |s: &str| serde_json::from_str::<Multiline>(s).unwrap();
        assert_eq!(read("false"), Multiline::Off);
        assert_eq!(read("true"), Multiline::All);
        assert_eq!(
            read("[\"tls.cert\"]"),
            Multiline::Keys(vec!["tls.cert".into()])
        );
        assert!(serde_json::from_str::<Multiline>("\"yes\"").is_err());
        assert_eq!(serde_json::to_string(&Multiline::All).unwrap(), "true");
        assert_eq!(
            serde_json::to_string(&Multiline::Keys(vec!["a".into()])).unwrap(),
            "[\"a\"]"
        );
        assert!(Multiline::Off.is_off());
        assert!(Multiline::Keys(vec![]).is_off());
        assert!(!Multiline::All.is_off());
    }
}
