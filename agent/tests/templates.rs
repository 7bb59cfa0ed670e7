//! Golden templates: `templates/succeeds/NN_name.template` rendered with the
//! parameters in `NN_name.toml` must give `NN_name.expected` exactly, and
//! handlebars.js must give the same bytes (or `NN_name.js-expected`, which
//! documents a difference); `templates/fails/NN_name.template` must fail
//! with the error in `NN_name.error`. `NN_name.entry.toml`, when there is
//! one, holds the keys of the template's `[[boot.templates]]` entry that
//! change rendering (`multiline = ...`). `IMAGECTL_BLESS=1` rewrites the
//! expected files from the agent's output.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use imagectl_agent::template::Multiline;
use imagectl_agent::{params, template};
use serde_json::{json, Value};

struct Case {
    name: String,
    template: String,
    context: Value,
    multiline: Multiline,
    dir: PathBuf,
}

/// `NN_name.entry.toml`: what of a `[[boot.templates]]` entry rendering uses.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Entry {
    #[serde(default)]
    multiline: Multiline,
}

fn cases(kind: &str) -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/templates")
        .join(kind);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let n = e.ok()?.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".template").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no cases in {}", dir.display());
    names
        .into_iter()
        .map(|name| {
            let template = fs::read_to_string(dir.join(format!("{name}.template"))).unwrap();
            let params_path = dir.join(format!("{name}.toml"));
            let params = if params_path.exists() {
                params::from_toml_file(&params_path).unwrap()
            } else {
                json!({})
            };
            let entry_path = dir.join(format!("{name}.entry.toml"));
            let entry: Entry = match fs::read_to_string(&entry_path) {
                Ok(text) => toml::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", entry_path.display())),
                Err(_) => Entry::default(),
            };
            Case {
                context: context(params),
                name,
                template,
                multiline: entry.multiline,
                dir: dir.clone(),
            }
        })
        .collect()
}

/// The context every golden case renders in, as the agent builds it.
fn context(params: Value) -> Value {
    json!({
        "params": params,
        "env": "prod",
        "role": "worker",
        "instance": {"id": "i-0123456789abcdef0", "region": "eu-west-1", "az": "eu-west-1a"},
        "image": {"hash": "ab".repeat(32)},
    })
}

fn bless() -> bool {
    std::env::var_os("IMAGECTL_BLESS").is_some()
}

fn render(c: &Case) -> Result<String, template::RenderError> {
    let mut hb = template::registry();
    template::render(
        &mut hb,
        &format!("{}.template", c.name),
        &c.template,
        &c.context,
        &c.multiline,
    )
}

#[test]
fn golden_templates_render_exactly() {
    let mut failures = Vec::new();
    for c in cases("succeeds") {
        let expected_path = c.dir.join(format!("{}.expected", c.name));
        match render(&c) {
            Err(e) => failures.push(format!("{}: failed: {e}", c.name)),
            Ok(out) if bless() => fs::write(&expected_path, out).unwrap(),
            Ok(out) => {
                let expected = fs::read_to_string(&expected_path).unwrap_or_default();
                if out != expected {
                    failures.push(format!("{}: got\n{out:?}\nexpected\n{expected:?}", c.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn golden_failures_fail_with_their_error() {
    let mut failures = Vec::new();
    for c in cases("fails") {
        let error_path = c.dir.join(format!("{}.error", c.name));
        match render(&c) {
            Ok(out) => failures.push(format!("{}: rendered {out:?}", c.name)),
            Err(e) if bless() => fs::write(&error_path, format!("{e}\n")).unwrap(),
            Err(e) => {
                let expected = fs::read_to_string(&error_path).unwrap_or_default();
                if e.to_string() != expected.trim_end() {
                    failures.push(format!("{}: got\n{e}\nexpected\n{expected}", c.name));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Where handlebars.js is installed: `IMAGECTL_NODE_DIR`, or
/// `~/.cache/imagectl/node`, installed there from `tests/js/package-lock.json`
/// (npm registry) when missing.
fn handlebars_js() -> PathBuf {
    let dir = std::env::var_os("IMAGECTL_NODE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/imagectl/node")
        });
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
    let installed = dir.join("node_modules/handlebars/package.json");
    let lock = fs::read(js.join("package-lock.json")).unwrap();
    if !installed.exists() || fs::read(dir.join("package-lock.json")).ok() != Some(lock.clone()) {
        fs::create_dir_all(&dir).unwrap();
        fs::copy(js.join("package.json"), dir.join("package.json")).unwrap();
        fs::write(dir.join("package-lock.json"), &lock).unwrap();
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--silent"])
            .current_dir(&dir)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `npm` ({e}): the handlebars.js cross-check needs Node.js and npm \
                     (Debian: apt-get install nodejs npm; scripts/setup does not install them yet)"
                )
            });
        assert!(status.success(), "`npm ci` in {} failed", dir.display());
    }
    dir.join("node_modules")
}

#[test]
fn golden_templates_match_handlebars_js() {
    let node_modules = handlebars_js();
    let cases = cases("succeeds");
    let input: Vec<Value> = cases
        .iter()
        .map(|c| json!({"name": c.name, "template": c.template, "context": c.context}))
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js/render.js");
    let mut child = Command::new("node")
        .arg(&script)
        .env("NODE_PATH", &node_modules)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run `node` ({e}): the handlebars.js cross-check needs Node.js (Debian: apt-get install nodejs)")
        });
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(serde_json::to_string(&input).unwrap().as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "node {} failed", script.display());
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut failures = Vec::new();
    for (c, r) in cases.iter().zip(&results) {
        let js_path = c.dir.join(format!("{}.js-expected", c.name));
        let expected_path = c.dir.join(format!("{}.expected", c.name));
        let Some(js) = r["output"].as_str() else {
            failures.push(format!("{}: handlebars.js failed: {}", c.name, r["error"]));
            continue;
        };
        let rust = fs::read_to_string(&expected_path).unwrap_or_default();
        if js_path.exists() {
            let documented = fs::read_to_string(&js_path).unwrap();
            if js != documented {
                failures.push(format!(
                    "{}: handlebars.js gives\n{js:?}\nbut {} says\n{documented:?}",
                    c.name,
                    js_path.display()
                ));
            }
            if documented == rust {
                failures.push(format!(
                    "{}: {} equals the .expected file; delete it",
                    c.name,
                    js_path.display()
                ));
            }
        } else if js != rust {
            failures.push(format!(
                "{}: handlebars.js gives\n{js:?}\nthe agent gives\n{rust:?}",
                c.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The repository's own boot templates render with its example parameters
/// (`roles/params/ROLE.toml`, what `imagectl test` boots with), print no
/// value unquoted, and the env files read back in `sh` as the parameters.
#[test]
fn the_repository_templates_render_with_their_example_parameters() {
    let roles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../roles");
    for (source, role, expect) in [
        (
            "templates/base/forward.conf.hbs",
            "worker",
            "*.* action(type=\"omfwd\" target=\"127.0.0.1\" port=\"10514\" protocol=\"tcp\"\n",
        ),
        (
            "templates/pushstream/origin.conf.hbs",
            "pushstream",
            "nchan_access_control_allow_origin \"https://learn.example.test\";\n",
        ),
        ("templates/web/web.env.hbs", "web", "RAILS_ENV='prod'\n"),
        (
            "templates/worker/sidekiq.env.hbs",
            "worker",
            "RAILS_ENV='prod'\n",
        ),
    ] {
        let params = params::from_toml_file(&roles.join(format!("params/{role}.toml"))).unwrap();
        let ctx = context(params);
        let text = fs::read_to_string(roles.join(source)).unwrap();
        let out = template::render(
            &mut template::registry(),
            source,
            &text,
            &ctx,
            &Multiline::Off,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(out.contains(expect), "{source}:\n{out}");
        for line in text.lines().filter(|l| l.contains("{{")) {
            if line.starts_with('#') {
                continue;
            }
            // Every parameter goes through a quoting helper.
            assert!(
                !line.contains("{{params.") && !line.contains("{{{"),
                "{source}: unquoted: {line}"
            );
        }
        if !source.ends_with(".env.hbs") {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        fs::write(&file, &out).unwrap();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (key, rest) = line
                .split_once("={{shell ")
                .unwrap_or_else(|| panic!("{line}"));
            let path = rest.trim_end_matches("}}");
            let pointer = format!("/{}", path.replace('.', "/"));
            let want = ctx.pointer(&pointer).and_then(Value::as_str).unwrap();
            let got = Command::new("/bin/sh")
                .arg("-c")
                .arg(format!(". \"$1\" && printf %s \"${key}\""))
                .arg("sh")
                .arg(&file)
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8(got.stdout).unwrap(),
                want,
                "{source}: {key}"
            );
        }
    }
}
