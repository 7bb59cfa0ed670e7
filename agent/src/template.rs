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
pub fn check(source: &str) -> Result<(), SyntaxError> {
    handlebars::Template::compile(source)
        .map(|_| ())
        .map_err(|e| SyntaxError {
            reason: e.reason().to_string(),
            line: e.pos().map(|p| p.0),
            column: e.pos().map(|p| p.1),
        })
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
    fn check_accepts_valid_template() {
        check("DATABASE_URL={{params.db.url}}\n{{#each params}}{{@key}}{{/each}}\n").unwrap();
    }
}
