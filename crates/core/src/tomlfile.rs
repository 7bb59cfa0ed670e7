//! Reading TOML input files into typed values while keeping every problem,
//! not only the first, and turning serde's wording into ours.

use serde::de::DeserializeOwned;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

use crate::diag::{did_you_mean, Diagnostic};

/// A document type that is read one top-level key at a time, so that a
/// mistake under `[image]` does not hide another under `[[files]]`.
pub trait Partial: DeserializeOwned + Default {
    /// Takes every key `other` has (each part holds exactly one).
    fn absorb(&mut self, other: Self);
}

/// Parses `text` (the contents of `file`) into `T`, collecting every syntax
/// error, unknown key and wrong type with its location.
pub fn parse<T: Partial>(file: &str, text: &str) -> (T, Vec<Diagnostic>) {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return (T::default(), syntax_errors(file, text, &errors));
    }
    absorb(file, text, doc, |_| true)
}

/// [`parse`], but a document with syntax errors still gives the top-level
/// keys that read cleanly around them, so that what they reference can be
/// checked in the same run (a role file with a typo on one line and a
/// missing source file on another reports both). Only the syntax errors
/// are reported: what the parser recovered past one may be an artifact of
/// it, so its other problems are not, and a key whose value holds an error
/// is left out.
pub fn parse_salvaging<T: Partial>(file: &str, text: &str) -> (T, Vec<Diagnostic>) {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if errors.is_empty() {
        return absorb(file, text, doc, |_| true);
    }
    let at: Vec<usize> = errors
        .iter()
        .filter_map(|e| e.span())
        .map(|s| s.start)
        .collect();
    let clean = |span: &std::ops::Range<usize>| !at.iter().any(|a| span.contains(a));
    let (value, _) = absorb(file, text, doc, clean);
    (value, syntax_errors(file, text, &errors))
}

fn syntax_errors(file: &str, text: &str, errors: &[toml::de::Error]) -> Vec<Diagnostic> {
    errors
        .iter()
        .map(|e| {
            let d = to_diagnostic(file, text, e, 0..0, "TOML syntax error: ");
            d.help(syntax_help(e.message()))
        })
        .collect()
}

/// Reads `doc` one top-level key at a time, each whose value's span passes
/// `keep`, with a diagnostic for each that does not read.
fn absorb<T: Partial>(
    file: &str,
    text: &str,
    doc: Spanned<DeTable<'_>>,
    keep: impl Fn(&std::ops::Range<usize>) -> bool,
) -> (T, Vec<Diagnostic>) {
    let mut value = T::default();
    let mut diags = Vec::new();
    let doc_span = doc.span();
    for (key, item) in doc.into_inner() {
        if !keep(&item.span()) {
            continue;
        }
        let key_span = key.span();
        let mut single = DeTable::new();
        single.insert(key, item);
        let whole = Spanned::new(doc_span.clone(), DeValue::Table(single));
        match T::deserialize(ValueDeserializer::from(whole)) {
            Ok(part) => value.absorb(part),
            Err(e) => diags.push(to_diagnostic(file, text, &e, key_span, "")),
        }
    }
    (value, diags)
}

/// What to do about a syntax error: most need reading the TOML rules, a
/// few have one obvious fix.
fn syntax_help(message: &str) -> &'static str {
    if message.contains("duplicate key") {
        "a key may appear once per table: remove one of the two, or merge them"
    } else if message.contains("recurs") {
        "the value is nested too deeply: role files need a few levels at most"
    } else {
        "fix the syntax at this point; the TOML format is described at https://toml.io"
    }
}

fn to_diagnostic(
    file: &str,
    text: &str,
    err: &toml::de::Error,
    fallback: std::ops::Range<usize>,
    prefix: &str,
) -> Diagnostic {
    let span = err.span().unwrap_or(fallback);
    let (message, help) = humanize(err.message().trim());
    // Every problem says what to do; the schema lists what each key takes.
    let help = help.unwrap_or_else(|| "`imagectl schema` prints what each key takes".to_string());
    Diagnostic::at(file, text, span, format!("{prefix}{message}")).help(help)
}

/// Rewrites serde's messages into ours: "key" rather than "field", and a
/// suggestion for a misspelt key.
fn humanize(msg: &str) -> (String, Option<String>) {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected: Vec<&str> = tail
            .split('`')
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| s)
            .collect();
        let help = match did_you_mean(name, expected.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None if expected.is_empty() => "remove it".to_string(),
            None => format!(
                "remove it; the keys allowed here are {}",
                expected
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        return (format!("unknown key `{name}`"), Some(help));
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return (
            format!("missing key `{name}`"),
            Some(format!("add `{name} = ...` to this table")),
        );
    }
    let wrong = msg
        .strip_prefix("invalid type: ")
        .map(|r| ("type", r))
        .or_else(|| msg.strip_prefix("invalid value: ").map(|r| ("value", r)));
    if let Some((what, rest)) = wrong {
        if let Some((found, expected)) = rest.split_once(", expected ") {
            // serde says how it read a number too big for any integer type.
            let found = found
                .trim_end_matches(" as i128")
                .trim_end_matches(" as u128");
            let expected = match expected {
                "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (no quotes)",
                "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number (no quotes)",
                "a boolean" => "`true` or `false` (no quotes)",
                "a sequence" => "an array, like `[\"a\", \"b\"]`",
                e if e.starts_with("struct ") || e == "a map" => "a table",
                e => e,
            };
            return (
                format!("wrong {what}: expected {expected}, found {found}"),
                Some("change the value to the expected type".to_string()),
            );
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown variant `") {
        let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = tail
            .trim_start_matches(", expected ")
            .replace("one of ", "");
        return (
            format!("unknown value `{name}`"),
            Some(format!("use one of {expected}")),
        );
    }
    // Our own deserializers put their advice after a "\nhelp: ".
    match msg.split_once("\nhelp: ") {
        Some((m, h)) => (m.to_string(), Some(h.to_string())),
        None => (msg.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        a: Option<bool>,
        b: Option<String>,
        c: Option<u32>,
    }

    impl Partial for Doc {
        fn absorb(&mut self, o: Doc) {
            self.a = o.a.or(self.a.take());
            self.b = o.b.or(self.b.take());
            self.c = o.c.or(self.c.take());
        }
    }

    #[test]
    fn salvaging_keeps_the_keys_around_a_syntax_error_and_only_its_error() {
        let (doc, diags) = parse_salvaging::<Doc>("f.toml", "a = tru\nb = \"x\"\nc = \"wrong\"\n");
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].message.starts_with("TOML syntax error"),
            "{}",
            diags[0]
        );
        // `tru` is not read as anything; `c`'s wrong type is not reported.
        assert_eq!((doc.a, doc.b.as_deref(), doc.c), (None, Some("x"), None));
        let (doc, diags) = parse::<Doc>("f.toml", "a = tru\nb = \"x\"\n");
        assert_eq!((diags.len(), doc.b), (1, None));
    }

    #[test]
    fn unknown_field_gets_a_suggestion() {
        let (m, h) = humanize("unknown field `pakages`, expected one of `image`, `packages`");
        assert_eq!(m, "unknown key `pakages`");
        assert_eq!(h.as_deref(), Some("did you mean `packages`?"));
    }

    #[test]
    fn unknown_field_far_from_all_lists_them() {
        let (_, h) = humanize("unknown field `zzz`, expected `name` or `run`");
        assert_eq!(
            h.as_deref(),
            Some("remove it; the keys allowed here are `name`, `run`")
        );
    }

    #[test]
    fn invalid_type_reads_naturally() {
        let (m, _) = humanize("invalid type: integer `3`, expected a string");
        assert_eq!(m, "wrong type: expected a string, found integer `3`");
        let (m, _) = humanize("invalid value: integer `-8`, expected u32");
        assert_eq!(
            m,
            "wrong value: expected a whole number (no quotes), found integer `-8`"
        );
        let (m, _) = humanize("invalid type: string \"big\", expected u32");
        assert_eq!(
            m,
            "wrong type: expected a whole number (no quotes), found string \"big\""
        );
    }
}
