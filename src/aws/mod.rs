//! Thin calls to the AWS SDK: images, snapshots written with the EBS direct
//! APIs, parameters, launch templates. Every error names the operation, the
//! region and the resource; nothing here decides anything.

mod autoscaling;
mod ebs;
mod error;
mod images;
mod instances;
mod kms;
mod launch_templates;
mod preflight;
mod retry;
mod session;
mod ssm;

use std::collections::BTreeMap;

use aws_sdk_ec2::types::Tag;

pub use autoscaling::{
    AutoScaling, Group as AsGroup, Refresh, RefreshRequest, StartError, TemplateSpec,
};
pub use ebs::{Ebs, Upload, UploadError, UploadReport, BLOCK_SIZE, MAX_VOLUME_GIB};
pub use error::Error;
pub use images::{ImageInfo, Registration};
pub use instances::Resource;
pub use kms::{Kms, SigningKey};
pub use launch_templates::{LaunchTemplate, Source};
pub use preflight::{Group, Identity, IdentityError, Key, Subnet};
pub use retry::{
    attempt_timeout, max_attempts, ATTEMPT_TIMEOUT_ENV, CONNECT_ATTEMPTS, CONNECT_MAX_BACKOFF,
    CONNECT_TIMEOUT, DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_ENV, MAX_BACKOFF,
};
pub use session::{Endpoint, Origin, Session};
pub use ssm::{ParamVersion, Ssm};

/// EC2 in one region.
#[derive(Debug, Clone)]
pub struct Ec2 {
    client: aws_sdk_ec2::Client,
    /// The region.
    pub region: String,
}

/// A resource's tags as a map.
fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_string(),
                t.value().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// A runtime for one command's AWS calls.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// The EC2 endpoint override in effect (`AWS_ENDPOINT_URL_EC2`, then
/// `AWS_ENDPOINT_URL`), if any.
pub fn ec2_endpoint_override() -> Option<String> {
    ["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// Whether an endpoint URL names this machine (an emulator such as moto or
/// LocalStack). Real AWS endpoints, VPC endpoints included, never do.
pub fn is_loopback_endpoint(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_is_an_emulator() {
        for url in [
            "http://127.0.0.1:5000",
            "http://localhost:4566/",
            "http://[::1]:5000",
            "http://127.8.9.1",
            "https://user@127.0.0.1:1/x",
        ] {
            assert!(is_loopback_endpoint(url), "{url}");
        }
        for url in [
            "https://ec2.eu-west-1.amazonaws.com",
            "https://vpce-0123-abcd.ec2.eu-west-1.vpce.amazonaws.com",
            "http://10.0.0.5:5000",
            "http://127.0.0.1.example.com",
            "http://localhost.evil.com",
        ] {
            assert!(!is_loopback_endpoint(url), "{url}");
        }
    }
}
