//! Thin calls to the AWS SDK. Every error names the operation, the region
//! and the resource; nothing here decides anything.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::types::Filter;

/// An AWS call that failed.
#[derive(Debug, thiserror::Error)]
#[error("AWS {operation} in `{region}` failed{}: {message}", resource.as_deref().map(|r| format!(" for `{r}`")).unwrap_or_default())]
pub struct Error {
    /// The API operation (`DescribeImages`).
    pub operation: &'static str,
    /// The region it was sent to.
    pub region: String,
    /// What it was about, when it was about one thing.
    pub resource: Option<String>,
    /// The SDK's error with its causes.
    pub message: String,
}

impl Error {
    fn new<E: std::error::Error>(
        operation: &'static str,
        region: &str,
        resource: Option<&str>,
        e: E,
    ) -> Error {
        Error {
            operation,
            region: region.to_string(),
            resource: resource.map(String::from),
            message: aws_sdk_ec2::error::DisplayErrorContext(e).to_string(),
        }
    }
}

/// Credentials and settings from the default chain (environment, profiles,
/// SSO, web identity in CI, instance roles); `AWS_ENDPOINT_URL` points every
/// client at an emulator.
#[derive(Debug, Clone)]
pub struct Session {
    config: SdkConfig,
}

impl Session {
    /// Loads the default configuration with `region` as the home region.
    pub async fn load(region: &str) -> Session {
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .load()
            .await;
        Session { config }
    }

    /// An EC2 client for `region`.
    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let conf = aws_sdk_ec2::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .build();
        aws_sdk_ec2::Client::from_conf(conf)
    }
}

/// What imagectl needs to know about an AMI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    /// `ami-...`.
    pub id: String,
    /// The image name.
    pub name: String,
    /// The owning account.
    pub owner: String,
    /// `x86_64` or `arm64`.
    pub arch: String,
    /// ISO 8601 creation time, as EC2 reports it.
    pub created: String,
    /// `available`, `pending`, ...
    pub state: String,
}

/// All images matching `owners` and the `filters` (name, values), every page.
pub async fn describe_images(
    client: &aws_sdk_ec2::Client,
    region: &str,
    owners: &[String],
    filters: &[(&str, Vec<String>)],
) -> Result<Vec<ImageInfo>, Error> {
    let mut req = client
        .describe_images()
        .set_owners((!owners.is_empty()).then(|| owners.to_vec()));
    for (name, values) in filters {
        req = req.filters(
            Filter::builder()
                .name(*name)
                .set_values(Some(values.clone()))
                .build(),
        );
    }
    let mut pages = req.into_paginator().items().send();
    let mut out = Vec::new();
    while let Some(item) = pages.next().await {
        let image = item.map_err(|e| Error::new("DescribeImages", region, None, e))?;
        out.push(ImageInfo {
            id: image.image_id().unwrap_or_default().to_string(),
            name: image.name().unwrap_or_default().to_string(),
            owner: image.owner_id().unwrap_or_default().to_string(),
            arch: image
                .architecture()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default(),
            created: image.creation_date().unwrap_or_default().to_string(),
            state: image
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// A runtime for one command's AWS calls.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
