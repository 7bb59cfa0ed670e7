//! `imagectl_agent::config` and `imagectl_agent::template`, from the
//! agent's own files.

#[path = "../../../agent/src/config.rs"]
pub mod config;
#[path = "../../../agent/src/template.rs"]
pub mod template;
