//! The fuzz target's checks on the stable toolchain: every seed of the
//! fuzzer (the repository's roles, each case of `tests/bad-roles`, where
//! every crash the fuzzer found is added as a case) is replayed through
//! `fuzz/src/check.rs`, the very code the fuzz target runs. CI catches a
//! regression here without nightly or libFuzzer.

#[path = "../../fuzz/src/check.rs"]
mod check;

use imagectl_core::project::Project;
use imagectl_core::role::{load, load_in_memory, MemoryRoles};

use crate::support::repo_root;

#[test]
fn every_fuzz_seed_replays_without_a_panic_and_with_clear_errors() {
    let seeds = check::seeds(&repo_root());
    assert!(seeds.len() >= 50, "the seeds are there: {}", seeds.len());
    let mut failed = Vec::new();
    for (name, input) in &seeds {
        if std::panic::catch_unwind(|| check::check(input)).is_err() {
            failed.push(name.clone());
        }
    }
    assert!(failed.is_empty(), "seeds that fail: {failed:?}");
}

#[test]
fn loading_from_memory_gives_what_loading_from_disk_gives() {
    let fixture = repo_root().join("tests/fixtures/project");
    let project = Project::discover(&fixture).unwrap();
    let roles = MemoryRoles {
        files: check::read_tree(&fixture.join("roles")),
    };
    let names = roles.role_names();
    assert_eq!(names, ["app", "base"]);
    let from_disk = load(&project, &names).unwrap();
    let from_memory = load_in_memory(&project.settings, &roles, &names).unwrap();
    assert_eq!(from_disk, from_memory);
}

#[test]
fn an_input_splits_into_files_and_joins_back() {
    let input = b"extends = [\"base\"]\n%%% base.toml\nabstract = true\n%%% t/a.hbs\nX={{x}}\n";
    let files = check::split(input).files;
    assert_eq!(
        files.keys().collect::<Vec<_>>(),
        ["app.toml", "base.toml", "t/a.hbs"]
    );
    assert_eq!(files["base.toml"], b"abstract = true");
    assert_eq!(check::join(&files), input.to_vec());
    let no_app = check::split(b"%%% base.toml\nabstract = true\n").files;
    assert_eq!(no_app.keys().collect::<Vec<_>>(), ["base.toml"]);
}

#[test]
fn a_deep_chain_in_memory_is_an_error_not_a_stack_overflow() {
    let mut input = Vec::new();
    for i in 0..10_000 {
        input.extend_from_slice(format!("%%% r{i}.toml\nextends = [\"r{}\"]\n", i + 1).as_bytes());
    }
    input.extend_from_slice(b"%%% r10000.toml\nabstract = true\n");
    // `check` loads all 10,001 roles and checks every diagnostic.
    check::check(&input);
}
