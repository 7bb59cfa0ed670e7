//! The image contract: what `imagectl` bakes into every image and the
//! on-boot agent reads there. The configuration format (`config`), the
//! handlebars rendering both use (`template`, so that a preview on a laptop
//! renders exactly what the box renders at boot), the agent's unit, and the
//! agent's identity (`identity`), which lets `imagectl` check, before it
//! bakes a binary, that it is the agent the content hash names.
//!
//! Both `imagectl-core` and `imagectl-agent` depend on this crate, and it on
//! neither: it has no AWS SDK and no async runtime.

pub mod config;
pub mod identity;
pub mod template;
pub mod template_paths;

/// The systemd unit that runs `imagectl-agent boot` on every boot; imagectl
/// bakes it at `/etc/systemd/system/imagectl-agent.service`.
pub const UNIT: &str = include_str!("../imagectl-agent.service");

/// An error with its sources, `: `-separated, each message once (the AWS
/// SDK's errors repeat their source in their own message).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        let msg = err.to_string();
        if !msg.is_empty() && !parts.last().is_some_and(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        next = err.source();
    }
    parts.join(": ")
}
