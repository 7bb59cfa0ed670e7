//! The on-boot agent's library: the boot flow, reading the instance's
//! identity and parameters, writing files (through directory handles that
//! no planted link redirects), starting units, telling EC2 Auto Scaling how
//! the boot went, verifying the baked files.
//!
//! The image contract it shares with `imagectl` (the configuration format,
//! template rendering, the unit, the identity) lives in `imagectl-image`;
//! `imagectl` does not depend on this crate, so the AWS SDK and the async
//! runtime the agent needs stay out of the pipeline's pure core.

pub mod autoscaling;
pub mod aws;
pub mod boot;
pub mod failpoint;
pub mod files;
pub mod log;
pub mod params;
pub mod safepath;
pub mod units;
pub mod verify;

pub use imagectl_image::{config, identity, template, UNIT};
