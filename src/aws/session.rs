//! One command's AWS configuration, and a client per service and region.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};

use super::retry::{
    attempt_timeout, attempt_timeout_from, max_attempts, max_attempts_from, ATTEMPT_TIMEOUT_ENV,
    MAX_ATTEMPTS_ENV, MAX_BACKOFF,
};
use super::{Ec2, Ssm};

/// Credentials and settings from the default chain (environment, profiles,
/// SSO, web identity in CI, instance roles) with the SDK's standard retries
/// (throttling, 5xx, timeouts) up to [`max_attempts`], exponential backoff
/// with jitter from 1 s up to [`MAX_BACKOFF`], each attempt limited to
/// [`super::DEFAULT_ATTEMPT_TIMEOUT`]; `AWS_ENDPOINT_URL` points every client at
/// an emulator.
#[derive(Debug, Clone)]
pub struct Session {
    config: SdkConfig,
}

impl Session {
    /// Loads the default configuration with `region` as the home region.
    pub async fn load(region: &str) -> Session {
        if let Err(warning) = max_attempts_from(std::env::var(MAX_ATTEMPTS_ENV).ok().as_deref()) {
            tracing::warn!("{warning}");
        }
        if let Err(warning) =
            attempt_timeout_from(std::env::var(ATTEMPT_TIMEOUT_ENV).ok().as_deref())
        {
            tracing::warn!("{warning}");
        }
        // Set explicitly, the retry configuration wins over aws-config's own
        // reading of AWS_MAX_ATTEMPTS: max_attempts() reads it instead.
        let retry = aws_config::retry::RetryConfig::standard()
            .with_max_attempts(max_attempts())
            .with_max_backoff(MAX_BACKOFF);
        let config = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .retry_config(retry)
            .timeout_config(
                // Replaces the SDK's defaults: its 3.1 s to connect kept.
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(3100))
                    .operation_attempt_timeout(attempt_timeout())
                    .build(),
            )
            .load()
            .await;
        Session { config }
    }

    /// An EC2 client for `region`.
    pub fn ec2(&self, region: &str) -> Ec2 {
        let conf = aws_sdk_ec2::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .build();
        Ec2 {
            client: aws_sdk_ec2::Client::from_conf(conf),
            region: region.to_string(),
        }
    }

    /// An SSM client for `region`.
    pub fn ssm(&self, region: &str) -> Ssm {
        let conf = aws_sdk_ssm::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .build();
        Ssm {
            client: aws_sdk_ssm::Client::from_conf(conf),
            region: region.to_string(),
        }
    }
}

impl Session {
    /// The loaded configuration, for clients of services only the
    /// preflight uses (`super::preflight`).
    pub(super) fn sdk_config(&self) -> &SdkConfig {
        &self.config
    }
}
