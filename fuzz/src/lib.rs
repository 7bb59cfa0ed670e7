//! The role loader of `imagectl`, compiled from its own source files
//! without the rest of the crate (see `../Cargo.toml` for why): the same
//! paths (`imagectl::role`, `imagectl::diag`, ...) as in the real crate, so
//! `check.rs` compiles against either.

#[path = "../../src/diag.rs"]
pub mod diag;
#[path = "../../src/project.rs"]
pub mod project;
#[path = "../../src/role.rs"]
pub mod role;
#[path = "../../src/tomlfile.rs"]
pub mod tomlfile;
