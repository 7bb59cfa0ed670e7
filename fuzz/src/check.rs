//! One fuzz input, loaded and validated as an in-memory project of role
//! files. Shared by the fuzz target (`fuzz_targets/roles.rs`) and the
//! stable replay test (`tests/integration/fuzz_corpus.rs`), so that both
//! hold the loader to the same promises: it never panics, and every
//! rejection is a diagnostic that names a file under `roles/`, says what is
//! wrong and what to do.
//!
//! An input is the text of `roles/app.toml`, followed by any number of
//! other files, each introduced by a line `%%% PATH` (PATH relative to
//! `roles/`); an input that starts with such a line has no `app.toml`:
//!
//! ```text
//! extends = ["base"]
//! %%% base.toml
//! abstract = true
//! %%% templates/app.hbs
//! X={{x}}
//! ```

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use imagectl_core::diag::Diagnostic;
use imagectl_core::role::{load_in_memory, MemoryRoles, Role};
use imagectl_core::settings::{parse_settings, Settings};

/// What introduces each file after the first.
pub const MARKER: &[u8] = b"%%% ";

/// The settings every input is checked against: the test fixture's.
fn settings() -> &'static Settings {
    static SETTINGS: OnceLock<Settings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        parse_settings(include_str!("../../tests/fixtures/project/imagectl.toml"))
            .expect("the fixture's imagectl.toml is valid")
    })
}

/// The files of an input, by path relative to `roles/`.
pub fn split(data: &[u8]) -> MemoryRoles {
    let mut files = BTreeMap::new();
    let mut sep = b"\n".to_vec();
    sep.extend_from_slice(MARKER);
    let (first, mut rest) = match data.strip_prefix(MARKER) {
        Some(after) => (None, Some(after)),
        None => match find(data, &sep) {
            Some(i) => (Some(&data[..i]), Some(&data[i + sep.len()..])),
            None => (Some(data), None),
        },
    };
    if let Some(app) = first {
        files.insert("app.toml".to_string(), app.to_vec());
    }
    while let Some(part) = rest {
        let (this, next) = match find(part, &sep) {
            Some(i) => (&part[..i], Some(&part[i + sep.len()..])),
            None => (part, None),
        };
        let (name, body) = match this.iter().position(|&b| b == b'\n') {
            Some(i) => (&this[..i], &this[i + 1..]),
            None => (this, &[][..]),
        };
        files.insert(file_name(name), body.to_vec());
        rest = next;
    }
    MemoryRoles { files }
}

/// A path as the filesystem could hold it: no NUL, and each component at
/// most 255 bytes (Linux's limit), cut on a character boundary.
fn file_name(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw).replace('\0', "");
    text.split('/')
        .map(|c| {
            let mut end = c.len().min(255);
            while !c.is_char_boundary(end) {
                end -= 1;
            }
            &c[..end]
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The inverse of [`split`]: one input holding `files`, `app.toml` first.
pub fn join(files: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(app) = files.get("app.toml") {
        out.extend_from_slice(app);
    }
    for (path, body) in files.iter().filter(|(p, _)| *p != "app.toml") {
        if !out.is_empty() || files.contains_key("app.toml") {
            out.push(b'\n');
        }
        out.extend_from_slice(MARKER);
        out.extend_from_slice(path.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(body);
    }
    out
}

/// Loads every role of the input and checks what comes out. Panics (which
/// the fuzzer reports as a crash) when a promise is broken.
pub fn check(data: &[u8]) {
    let roles = split(data);
    let names = roles.role_names();
    match load_in_memory(settings(), &roles, &names) {
        Ok(loaded) => {
            assert_eq!(loaded.len(), names.len(), "one role per name");
            for r in &loaded {
                check_role(r);
            }
        }
        Err(diags) => {
            assert!(!diags.0.is_empty(), "a rejection says why");
            for d in &diags.0 {
                check_diagnostic(d);
            }
            let report = diags.to_string();
            assert!(report.ends_with(" found"), "{report}");
        }
    }
}

/// A valid role holds only what validation promises.
fn check_role(r: &Role) {
    assert!(imagectl_core::settings::is_name(&r.name), "{}", r.name);
    let files = r.files.iter().map(|f| (&f.source, &f.dest));
    let templates = r.boot.templates.iter().map(|t| (&t.source, &t.dest));
    for (source, dest) in files.chain(templates) {
        assert!(!source.is_empty() && !source.starts_with('/'), "{source}");
        assert!(
            source
                .split('/')
                .all(|c| !c.is_empty() && c != ".." && c != "."),
            "source escapes: {source}"
        );
        assert!(dest.starts_with('/') && !dest.contains(".."), "{dest}");
        assert!(!dest.starts_with(imagectl_core::role::AGENT_DIR), "{dest}");
    }
    // The canonical form (what the content hash covers) serializes.
    serde_json::to_string(r).expect("a role serializes");
}

/// Every rejection names a file under `roles/`, says what and what to do.
fn check_diagnostic(d: &Diagnostic) {
    let shown = d.to_string();
    assert!(!d.message.trim().is_empty(), "empty message: {shown}");
    assert!(
        d.file == "roles" || d.file.starts_with("roles/"),
        "not a role file: {shown}"
    );
    let help = d.help.as_deref().unwrap_or("");
    assert!(!help.trim().is_empty(), "no advice: {shown}");
    assert!(
        shown.starts_with("error: ") && shown.contains("--> roles"),
        "{shown}"
    );
    assert!(
        shown.lines().all(|l| l.chars().count() <= 400),
        "a line too long to read: {shown}"
    );
    if let Some(l) = &d.location {
        assert!(l.line >= 1 && l.column >= 1, "{shown}");
        assert!(
            l.source_line.chars().count() <= 130,
            "line not cut: {shown}"
        );
        assert!(
            !l.source_line.chars().any(|c| c.is_control() && c != '\t'),
            "raw control character: {shown:?}"
        );
    }
}

/// The seed inputs: every role of the repository alone, the repository's
/// `roles/` as one input, every case of `tests/bad-roles`, and every input
/// in `tests/fuzz-regressions` (crashes the fuzzer found that cannot be a
/// bad-role case, such as a file name longer than a filesystem allows).
/// Named for where they come from.
pub fn seeds(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let roles = read_tree(&repo.join("roles"));
    for (path, body) in &roles {
        if let Some(stem) = path.strip_suffix(".toml").filter(|s| !s.contains('/')) {
            out.push((format!("role-{stem}"), body.clone()));
        }
    }
    out.push(("project".to_string(), join(&roles)));
    let mut cases: Vec<_> = std::fs::read_dir(repo.join("tests/bad-roles"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    cases.sort();
    for case in cases {
        let name = case.file_name().unwrap_or_default().to_string_lossy();
        let files = read_tree(&case.join("roles"));
        if !files.is_empty() {
            out.push((format!("bad-{name}"), join(&files)));
        }
    }
    for (name, bytes) in read_tree(&repo.join("tests/fuzz-regressions")) {
        out.push((format!("regression-{name}"), bytes));
    }
    out
}

/// Every regular file below `dir`, by path relative to it.
pub fn read_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(p);
            } else if t.is_file() {
                if let (Ok(rel), Ok(bytes)) = (p.strip_prefix(dir), std::fs::read(&p)) {
                    out.insert(rel.to_string_lossy().into_owned(), bytes);
                }
            }
        }
    }
    out
}

/// Writes the seeds into the directory `IMAGECTL_FUZZ_SEEDS_TO` names, if
/// set: `scripts/fuzz` has the fuzz target do it at start-up, before
/// libFuzzer reads its corpus, so the seeds are built in one place.
pub fn write_seeds_from_env() {
    let Some(dir) = std::env::var_os("IMAGECTL_FUZZ_SEEDS_TO") else {
        return;
    };
    let dir = Path::new(&dir);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    for (name, bytes) in seeds(&repo) {
        std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write a seed");
    }
}
