//! Loading whole roles from memory: what validation refuses, in the exact
//! words it reports, and what it keeps accepting (the repository's own
//! roles among them).

use super::{load_all, load_in_memory, MemoryRoles};
use crate::diag::Diagnostics;
use crate::project::Project;
use crate::settings::{parse_settings, Settings};

/// The test fixture's `imagectl.toml`.
pub(super) fn settings() -> Settings {
    parse_settings(include_str!(
        "../../../../tests/fixtures/project/imagectl.toml"
    ))
    .unwrap()
}

/// Loads role `app` (extending the fixture's `base`) from `app_toml`, with
/// `files` beside it.
fn load(app_toml: &str, files: &[(&str, &[u8])]) -> Result<(), Diagnostics> {
    let mut roles = MemoryRoles::default();
    roles.files.insert(
        "base.toml".into(),
        include_bytes!("../../../../tests/fixtures/project/roles/base.toml").to_vec(),
    );
    roles
        .files
        .insert("app.toml".into(), app_toml.as_bytes().to_vec());
    for (path, body) in files {
        roles.files.insert(path.to_string(), body.to_vec());
    }
    load_in_memory(&settings(), &roles, &["app".to_string()]).map(|_| ())
}

/// The full report, as `imagectl validate` prints it, or "ok".
pub(super) fn report(app_toml: &str, files: &[(&str, &[u8])]) -> String {
    match load(app_toml, files) {
        Ok(()) => "ok".to_string(),
        Err(d) => d.to_string(),
    }
}

/// Each problem as `message | help`.
pub(super) fn problems(app_toml: &str, files: &[(&str, &[u8])]) -> Vec<String> {
    match load(app_toml, files) {
        Ok(()) => Vec::new(),
        Err(d) => {
            d.0.iter()
                .map(|d| format!("{} | {}", d.message, d.help.as_deref().unwrap_or("")))
                .collect()
        }
    }
}

#[test]
fn the_repositorys_roles_are_valid() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let project = Project::discover(std::path::Path::new(root)).unwrap();
    let roles = load_all(&project).unwrap_or_else(|d| panic!("{d}"));
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["base", "pushstream", "rails", "web", "worker"]);
    let web = &roles[3];
    assert_eq!(web.archives[0].source, "releases/learn-sample.tar.gz");
}
