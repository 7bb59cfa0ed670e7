//! The parameter tree templates see as `params`: SSM parameter names nested
//! by path segment below the role's parameter path, or a local TOML file of
//! the same shape. Values are always strings, as in Parameter Store.

use std::path::Path;

use serde_json::{Map, Value};

/// Why parameters could not be turned into a tree. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    /// A parameter is not below the path it was fetched from.
    #[error("parameter `{name}` is not below `{path}`")]
    OutsidePath {
        /// The parameter's full name.
        name: String,
        /// The path the parameters were fetched from.
        path: String,
    },
    /// A name is both a value and a prefix of other names.
    #[error("parameter `{name}` is both a value and a path of other parameters (`{other}`)")]
    Conflict {
        /// The parameter that could not be placed.
        name: String,
        /// A parameter in its way.
        other: String,
    },
    /// The local parameter file could not be read.
    #[error("cannot read parameter file `{path}`: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The local parameter file is not valid TOML.
    #[error("parameter file `{path}` is not valid TOML{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Toml {
        /// The file.
        path: String,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// What is wrong (the parser's message, without the offending text).
        message: String,
    },
    /// A value of the local parameter file has a type Parameter Store cannot
    /// hold.
    #[error("parameter file `{path}`: `{key}` must be a string, number, boolean, array of those, or table")]
    Type {
        /// The file.
        path: String,
        /// The dotted key.
        key: String,
    },
}

/// Nests `(name, value)` pairs fetched below `path` into a tree:
/// `/learn/prod/worker/db/url` below `/learn/prod/worker` is `db.url`.
pub fn nest<'a>(
    path: &str,
    parameters: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Value, ParamsError> {
    let prefix = path.trim_end_matches('/');
    let mut root = Map::new();
    // Sorted, so that a conflict is reported the same way whatever order
    // Parameter Store answers in.
    let mut sorted: Vec<(&str, &str)> = parameters.into_iter().collect();
    sorted.sort_unstable();
    for (name, value) in sorted {
        let outside = || ParamsError::OutsidePath {
            name: name.to_string(),
            path: path.to_string(),
        };
        let rest = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(outside)?;
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let Some((last, parents)) = segments.split_last() else {
            return Err(outside());
        };
        let mut node = &mut root;
        let mut so_far = prefix.to_string();
        for seg in parents {
            so_far = format!("{so_far}/{seg}");
            let entry = node
                .entry(seg.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            node = match entry {
                Value::Object(m) => m,
                _ => {
                    return Err(ParamsError::Conflict {
                        name: name.to_string(),
                        other: so_far,
                    })
                }
            };
        }
        if node.contains_key(*last) {
            return Err(ParamsError::Conflict {
                name: name.to_string(),
                other: format!("{name}/..."),
            });
        }
        node.insert(last.to_string(), Value::String(value.to_string()));
    }
    Ok(Value::Object(root))
}

/// Reads a local parameter file: nested TOML tables of the same shape as
/// the Parameter Store tree (`[db]` `url = "..."` is `params.db.url`).
///
/// Every scalar becomes a string, as Parameter Store would hold it (`5`
/// is `"5"`, `true` is `"true"`), and an array becomes its items joined by
/// commas, as a `StringList` parameter, so a preview renders exactly what
/// a boot renders.
pub fn from_toml_file(path: &Path) -> Result<Value, ParamsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ParamsError::Read {
        path: shown.clone(),
        source,
    })?;
    from_toml(&shown, &text)
}

/// [`from_toml_file`] on text already read; `path` names it in errors.
pub fn from_toml(path: &str, text: &str) -> Result<Value, ParamsError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ParamsError::Toml {
        path: path.to_string(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().to_string(),
    })?;
    from_table(path, table)
}

/// [`from_toml`] on a table already parsed (user data's `[parameters]`).
pub fn from_table(path: &str, table: toml::Table) -> Result<Value, ParamsError> {
    let mut out = Map::new();
    for (k, v) in table {
        out.insert(k.clone(), convert(path, &k, v)?);
    }
    Ok(Value::Object(out))
}

fn convert(path: &str, key: &str, v: toml::Value) -> Result<Value, ParamsError> {
    let bad = || ParamsError::Type {
        path: path.to_string(),
        key: key.to_string(),
    };
    Ok(match v {
        toml::Value::Table(t) => {
            let mut m = Map::new();
            for (k, v) in t {
                let dotted = format!("{key}.{k}");
                m.insert(k, convert(path, &dotted, v)?);
            }
            Value::Object(m)
        }
        toml::Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match convert(path, key, item)? {
                    Value::String(s) => parts.push(s),
                    _ => return Err(bad()),
                }
            }
            Value::String(parts.join(","))
        }
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::String(i.to_string()),
        toml::Value::Float(f) => Value::String(f.to_string()),
        toml::Value::Boolean(b) => Value::String(b.to_string()),
        toml::Value::Datetime(_) => return Err(bad()),
    })
}

/// 1-based line of byte `offset` in `text` (bytes, so any offset is safe).
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nests_by_segment() {
        let tree = nest(
            "/learn/prod/worker",
            [
                ("/learn/prod/worker/db/url", "postgres://x"),
                ("/learn/prod/worker/redis/url", "redis://y"),
                ("/learn/prod/worker/top", "t"),
            ],
        )
        .unwrap();
        assert_eq!(
            tree,
            json!({"db": {"url": "postgres://x"}, "redis": {"url": "redis://y"}, "top": "t"})
        );
    }

    #[test]
    fn a_value_that_is_also_a_path_is_an_error_without_values() {
        let err = nest("/p", [("/p/db", "secret-one"), ("/p/db/url", "secret-two")]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/p/db"), "{msg}");
        assert!(!msg.contains("secret"), "{msg}");
    }

    #[test]
    fn a_name_outside_the_path_is_an_error() {
        let err = nest("/p", [("/q/x", "v")]).unwrap_err();
        assert_eq!(err.to_string(), "parameter `/q/x` is not below `/p`");
        let err = nest("/p", [("/pq/x", "v")]).unwrap_err();
        assert!(matches!(err, ParamsError::OutsidePath { .. }));
    }

    #[test]
    fn toml_scalars_become_strings() {
        let v = from_toml(
            "p.toml",
            "[db]\nurl = \"u\"\npool = 5\n[flags]\non = true\nhosts = [\"a\", \"b\"]\n",
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"db": {"url": "u", "pool": "5"}, "flags": {"on": "true", "hosts": "a,b"}})
        );
    }

    #[test]
    fn toml_errors_name_the_line_not_the_text() {
        let err = from_toml("p.toml", "a = \"x\"\nb = = \"hunter2\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("parameter file `p.toml` is not valid TOML (line 2)"),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
    }

    #[test]
    fn toml_datetimes_are_refused() {
        let err = from_toml("p.toml", "[a]\nwhen = 1979-05-27\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "parameter file `p.toml`: `a.when` must be a string, number, boolean, array of those, or table"
        );
    }
}
