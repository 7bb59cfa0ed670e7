//! What changed between two canonical forms of a role, key by key, in the
//! words a plan prints: `packages.apt + jq`, `image.instance_type t3.small
//! -> t3.medium`, `services."cron.service".enabled true -> false`.
//!
//! Lists of names (packages, `boot.start`, groups) differ as sets: what was
//! added and what was removed. Lists of tables are matched by their `name`
//! or `dest`, so an entry added or removed is named and an entry changed
//! shows its keys by dotted path. Scalars show the old and the new value,
//! cut short when long, and never a value that looks like a secret: that
//! only says `changed`. Files' contents never appear here; they are inputs
//! of their own, reported by path.

use serde_json::{Map, Value};

/// The most characters of a value a change shows.
const MAX_SHOWN: usize = 40;

/// Names of keys whose values are never shown.
const SECRET_KEYS: [&str; 6] = [
    "password",
    "passwd",
    "secret",
    "token",
    "credential",
    "private",
];

/// What differs between the canonical JSON forms `old` and `new` of a role
/// ([`super::Role`] serialized), one change a line; empty when either does
/// not parse or no key differs (an order that changed shows as
/// `PATH reordered`).
pub fn changes(old: &str, new: &str) -> Vec<String> {
    let parse = |s: &str| serde_json::from_str::<Value>(s).ok().map(with_apt_names);
    let (Some(old), Some(new)) = (parse(old), parse(new)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    diff("", &old, &new, &mut out);
    out
}

/// The role's packages as the role file writes them: `packages.apt`, a
/// list of `name` or `name=version`.
fn with_apt_names(mut role: Value) -> Value {
    if let Some(packages) = role.get_mut("packages") {
        let names: Vec<Value> = packages
            .as_array()
            .map(|all| {
                all.iter()
                    .map(|p| {
                        let name = p["name"].as_str().unwrap_or_default();
                        Value::String(match p["version"].as_str() {
                            Some(v) => format!("{name}={v}"),
                            None => name.to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        *packages = Value::Object(Map::from_iter([("apt".to_string(), Value::Array(names))]));
    }
    role
}

fn diff(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if old == new {
        return;
    }
    let empty = Map::new();
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => objects(path, a, b, out),
        (Value::Object(a), Value::Null) => objects(path, a, &empty, out),
        (Value::Null, Value::Object(b)) => objects(path, &empty, b, out),
        (Value::Array(a), Value::Array(b)) => arrays(path, a, b, out),
        (Value::Array(a), Value::Null) => arrays(path, a, &[], out),
        (Value::Null, Value::Array(b)) => arrays(path, &[], b, out),
        _ => out.push(scalar(path, old, new)),
    }
}

fn objects(path: &str, a: &Map<String, Value>, b: &Map<String, Value>, out: &mut Vec<String>) {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (old, new) = (
            a.get(k).unwrap_or(&Value::Null),
            b.get(k).unwrap_or(&Value::Null),
        );
        diff(&child(path, k), old, new, out);
    }
}

fn arrays(path: &str, a: &[Value], b: &[Value], out: &mut Vec<String>) {
    let scalars = |l: &[Value]| l.iter().all(|v| !v.is_object() && !v.is_array());
    if let Some(field) = key_field(a, b) {
        keyed(path, field, a, b, out);
    } else if scalars(a) && scalars(b) {
        sets(path, a, b, out);
    } else {
        for i in 0..a.len().max(b.len()) {
            let (old, new) = (
                a.get(i).unwrap_or(&Value::Null),
                b.get(i).unwrap_or(&Value::Null),
            );
            diff(&format!("{path}[{i}]"), old, new, out);
        }
    }
}

/// The field that names each table of both lists (`name`, else `dest`):
/// one every entry has, as a string, different in every entry of a list.
fn key_field(a: &[Value], b: &[Value]) -> Option<&'static str> {
    ["name", "dest"].into_iter().find(|f| {
        [a, b].iter().all(|list| {
            let mut names: Vec<&str> = list.iter().filter_map(|v| v[*f].as_str()).collect();
            let every = names.len() == list.len();
            names.sort_unstable();
            names.dedup();
            every && names.len() == list.len()
        }) && !(a.is_empty() && b.is_empty())
    })
}

fn keyed(path: &str, field: &str, a: &[Value], b: &[Value], out: &mut Vec<String>) {
    let name = |v: &Value| v[field].as_str().unwrap_or_default().to_string();
    let find = |list: &[Value], n: &str| list.iter().find(|v| name(v) == n).cloned();
    let before = out.len();
    for old in a.iter().filter(|v| find(b, &name(v)).is_none()) {
        out.push(item(path, '-', &Value::String(name(old))));
    }
    for new in b {
        match find(a, &name(new)) {
            None => out.push(item(path, '+', &Value::String(name(new)))),
            Some(old) => diff(&child(path, &name(new)), &old, new, out),
        }
    }
    if out.len() == before && a != b {
        out.push(format!("{path} reordered"));
    }
}

fn sets(path: &str, a: &[Value], b: &[Value], out: &mut Vec<String>) {
    let before = out.len();
    out.extend(
        a.iter()
            .filter(|v| !b.contains(v))
            .map(|v| item(path, '-', v)),
    );
    out.extend(
        b.iter()
            .filter(|v| !a.contains(v))
            .map(|v| item(path, '+', v)),
    );
    out.dedup();
    if out.len() == before && a != b {
        out.push(format!("{path} reordered"));
    }
}

/// `PATH + VALUE` (or `-`), or `PATH changed` for a value not to show.
fn item(path: &str, sign: char, v: &Value) -> String {
    match shown(path, v) {
        Some(s) => format!("{path} {sign} {s}"),
        None => format!("{path} changed"),
    }
}

fn scalar(path: &str, old: &Value, new: &Value) -> String {
    match (shown(path, old), shown(path, new)) {
        (Some(a), Some(b)) if a != b => format!("{path} {a} -> {b}"),
        _ => format!("{path} changed"),
    }
}

/// A value as a change shows it: cut at `MAX_SHOWN` characters or its
/// first line break; `None` for tables, lists and what may be a secret.
fn shown(path: &str, v: &Value) -> Option<String> {
    let s = match v {
        Value::Null => return Some("(none)".into()),
        Value::Bool(b) => return Some(b.to_string()),
        Value::Number(n) => return Some(n.to_string()),
        Value::String(s) => s,
        Value::Array(_) | Value::Object(_) => return None,
    };
    let key = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
    let secret = s.split_whitespace().any(looks_secret) || s.contains("-----BEGIN");
    if SECRET_KEYS.iter().any(|k| key.contains(k)) || key.ends_with("key") || secret {
        return None;
    }
    if s.is_empty() {
        return Some("\"\"".into());
    }
    let line = s.lines().next().unwrap_or_default();
    let cut: String = line.chars().take(MAX_SHOWN).collect();
    Some(if cut.len() < s.len() {
        format!("{cut}...")
    } else {
        cut
    })
}

/// A token, a key or a password: a word of 16 characters or more, of
/// letters, digits and the characters of base64, not a path, that mixes
/// cases and digits (`ghp_...`, an AWS secret key), is a fifth digits or
/// more (hex), or is an AWS access key ID. Package names
/// (`python3-requests-toolbelt`) are none of these.
fn looks_secret(word: &str) -> bool {
    let count = |f: fn(&char) -> bool| word.chars().filter(f).count();
    let charset = word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "+/=_-".contains(c));
    let (digits, upper, lower) = (
        count(char::is_ascii_digit),
        count(char::is_ascii_uppercase),
        count(char::is_ascii_lowercase),
    );
    let access_key = word.len() == 20 && (word.starts_with("AKIA") || word.starts_with("ASIA"));
    word.len() >= 16
        && charset
        && !word.starts_with('/')
        && ((digits > 0 && upper > 0 && lower > 0) || digits * 5 >= word.len() || access_key)
}

/// `path.key`, quoting a key that is not a bare TOML key
/// (`services."cron.service"`).
fn child(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        Value::String(key.to_string()).to_string()
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn role(packages: &[&str], instance_type: &str) -> Value {
        json!({
            "name": "cron", "description": "Cron jobs", "abstract": false,
            "image": {"base": "debian-12", "instance_type": instance_type, "volume_size_gb": 16, "arch": "x86_64"},
            "packages": packages.iter().map(|p| json!({"name": p, "version": null})).collect::<Vec<_>>(),
            "users": [{"name": "learn", "system": true, "groups": [], "shell": null, "home": "/srv/learn"}],
            "files": [], "archives": [],
            "services": [{"name": "cron.service", "enabled": true}],
            "checks": [{"name": "crontab is valid", "run": "crontab -T /etc/crontab"}],
            "boot": {"parameters": "/learn/{{env}}/cron", "start": ["cron.service"]},
        })
    }

    fn between(old: &Value, new: &Value) -> Vec<String> {
        changes(&old.to_string(), &new.to_string())
    }

    #[test]
    fn packages_differ_as_sets_and_scalars_show_both_values() {
        let old = role(&["cron", "curl"], "t3.small");
        let new = role(&["cron", "jq"], "t3.medium");
        assert_eq!(
            between(&old, &new),
            [
                "image.instance_type t3.small -> t3.medium",
                "packages.apt - curl",
                "packages.apt + jq",
            ]
        );
        assert_eq!(between(&old, &old), Vec::<String>::new());
    }

    #[test]
    fn tables_in_lists_are_matched_by_name_and_keys_added_or_removed_show_none() {
        let old = role(&["cron"], "t3.small");
        let mut new = old.clone();
        new["services"] = json!([
            {"name": "cron.service", "enabled": false},
            {"name": "atd.service", "enabled": true},
        ]);
        new["users"][0]["home"] = Value::Null;
        new["boot"]["health"] = json!({"command": "true", "timeout_secs": 30});
        new["boot"].as_object_mut().unwrap().remove("parameters");
        new["checks"][0]["run"] = json!("crontab -T /etc/crontab && test -d /etc/cron.d/learn");
        assert_eq!(
            between(&old, &new),
            [
                "boot.health.command (none) -> true",
                "boot.health.timeout_secs (none) -> 30",
                "boot.parameters /learn/{{env}}/cron -> (none)",
                "checks.\"crontab is valid\".run crontab -T /etc/crontab -> crontab -T /etc/crontab && test -d /etc/...",
                "services.\"cron.service\".enabled true -> false",
                "services + atd.service",
                "users.learn.home /srv/learn -> (none)",
            ]
        );
    }

    #[test]
    fn order_long_values_and_secrets() {
        let old = role(&["cron"], "t3.small");
        let mut new = old.clone();
        new["boot"]["start"] = json!(["atd.service", "cron.service"]);
        new["checks"] = json!([{"name": "crontab is valid", "run": "x".repeat(50)}]);
        new["description"] = json!("token ghp_0123456789abcdefABCDEF0123456789abcd");
        assert_eq!(
            between(&old, &new),
            [
                "boot.start + atd.service",
                format!(
                    "checks.\"crontab is valid\".run crontab -T /etc/crontab -> {}...",
                    "x".repeat(40)
                )
                .as_str(),
                "description changed",
            ]
        );
        let mut reordered = old.clone();
        reordered["users"] = json!([{"name": "a"}, {"name": "b"}]);
        let mut swapped = old.clone();
        swapped["users"] = json!([{"name": "b"}, {"name": "a"}]);
        assert_eq!(between(&reordered, &swapped), ["users reordered"]);
        let mut secret = old.clone();
        secret["boot"]["parameters"] = json!("ghp_0123456789abcdefABCDEF0123456789abcd");
        assert_eq!(between(&old, &secret), ["boot.parameters changed"]);
        secret["users"][0]["api_key"] = json!("short");
        assert_eq!(
            between(&old, &secret),
            ["boot.parameters changed", "users.learn.api_key changed"]
        );
        assert_eq!(changes("{", "{}"), Vec::<String>::new());
    }

    #[test]
    fn what_looks_like_a_secret() {
        for secret in [
            "ghp_0123456789abcdefABCDEF0123456789abcd",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "AKIAIOSFODNN7EXAMPLE",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(looks_secret(secret), "{secret}");
        }
        for plain in [
            "python3-requests-toolbelt",
            "libnginx-mod-http-headers-more-filter",
            "/srv/learn/releases/2026-11-26T120000",
            "nginx=1.22.1-9",
            "t3.medium",
        ] {
            assert!(!looks_secret(plain), "{plain}");
        }
    }
}
