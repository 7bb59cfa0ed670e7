//! The on-boot agent's library: the image configuration format baked into
//! every image and the template rendering both the agent and `imagectl` use.
//!
//! `imagectl` depends on this crate (and not the other way round) so that a
//! preview on a laptop renders exactly what the box renders at boot.

pub mod config;
pub mod template;

/// The systemd unit that runs `imagectl-agent boot` on every boot; imagectl
/// bakes it at `/etc/systemd/system/imagectl-agent.service`.
pub const UNIT: &str = include_str!("../imagectl-agent.service");
