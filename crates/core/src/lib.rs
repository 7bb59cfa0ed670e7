//! imagectl's pure pipeline, from a role file to the bytes that enter an
//! image: everything here is deterministic and touches nothing but files.
//!
//! A role is a TOML file in `roles/` saying what goes into an image:
//!
//! ```toml
//! description = "Background job workers"
//! extends = ["base"]
//!
//! [image]
//! base = "debian-12"            # a key of [bases] in imagectl.toml
//! instance_type = "t3.medium"
//!
//! [packages]
//! apt = ["ruby", "libpq5"]
//!
//! [[files]]
//! source = "files/worker/sidekiq.service"
//! dest = "/etc/systemd/system/sidekiq.service"
//!
//! [[services]]
//! name = "sidekiq.service"
//! enabled = false               # started by the agent once config is rendered
//!
//! [boot]
//! parameters = "/learn/{{env}}/worker"
//! start = ["sidekiq.service"]
//! ```
//!
//! Data flows one way: role file → validated [`role::Role`] → resolved
//! [`target::Target`] (the role, its locked base, its Packer template, its
//! staged context and the content hash over them) → staged directory. The
//! `imagectl` crate takes a target from there: build, artifact,
//! publication.

pub mod agent;
pub mod arch;
pub mod context;
pub mod diag;
pub mod digest;
pub mod disk;
pub mod fsutil;
pub mod hash;
pub mod hcl;
pub mod kms;
pub mod lock;
pub mod names;
pub mod packer;
pub mod project;
pub mod provenance;
pub mod provision;
pub mod record;
pub mod role;
pub mod sbom;
pub mod settings;
pub mod stage;
pub mod target;
pub mod time;
pub mod tomlfile;
