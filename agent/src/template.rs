//! Handlebars rendering for configuration files: one registry, strict mode,
//! no HTML escaping, one table of helpers.

use handlebars::Handlebars;

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
    hb
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
}
