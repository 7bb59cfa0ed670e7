//! The on-boot agent's library: the image configuration format baked into
//! every image, the template rendering both the agent and `imagectl` use,
//! and the agent's boot flow.
//!
//! `imagectl` depends on this crate (and not the other way round) so that a
//! preview on a laptop renders exactly what the box renders at boot.

pub mod aws;
pub mod boot;
pub mod config;
pub mod failpoint;
pub mod files;
pub mod params;
pub mod template;
pub mod units;
pub mod verify;

/// The systemd unit that runs `imagectl-agent boot` on every boot; imagectl
/// bakes it at `/etc/systemd/system/imagectl-agent.service`.
pub const UNIT: &str = include_str!("../imagectl-agent.service");
