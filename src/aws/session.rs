//! One command's AWS configuration, and a client per service and region.

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig};

use super::retry::{
    attempt_timeout, attempt_timeout_from, max_attempts, max_attempts_from, Watch,
    ATTEMPT_TIMEOUT_ENV, CONNECT_TIMEOUT, MAX_ATTEMPTS_ENV, MAX_BACKOFF,
};
use super::{AutoScaling, Ec2, Ssm};

/// Credentials and settings from the default chain (environment, profiles,
/// SSO, web identity in CI, instance roles) with the SDK's standard retries
/// (throttling, 5xx, timeouts) up to [`max_attempts`], exponential backoff
/// with jitter from 1 s up to [`MAX_BACKOFF`], each attempt limited to
/// [`super::DEFAULT_ATTEMPT_TIMEOUT`]; `AWS_ENDPOINT_URL` points every client at
/// an emulator. Every client is watched: each retry is logged as it is
/// decided, a failed connection is tried at most [`super::CONNECT_ATTEMPTS`]
/// times and named with its [`Endpoint`].
#[derive(Debug, Clone)]
pub struct Session {
    config: SdkConfig,
}

impl Session {
    /// A session with a configuration loaded elsewhere, used as it is
    /// (none of [`Session::load`]'s retry and timeout settings are added):
    /// for tests that give the SDK an emulator's endpoint and credentials
    /// without changing their process's environment, which other tests share.
    pub fn from_config(config: SdkConfig) -> Session {
        Session { config }
    }

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
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(attempt_timeout())
                    .build(),
            )
            .load()
            .await;
        Session { config }
    }

    /// Where calls to `service` (`ec2`, `ssm`) in `region` go, and which
    /// setting sent them there: the service's own `AWS_ENDPOINT_URL_EC2`,
    /// then `AWS_ENDPOINT_URL`, then the profile's `endpoint_url` (the
    /// SDK's order), else the regional endpoint. (A profile's `services`
    /// section is not told apart from its `endpoint_url`.)
    pub fn endpoint(&self, service: &str, region: &str) -> Endpoint {
        let set = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let own = format!("AWS_ENDPOINT_URL_{}", service.to_ascii_uppercase());
        if let Some(url) = set(&own) {
            return Endpoint {
                url,
                origin: Origin::Env(own),
            };
        }
        if let Some(url) = set("AWS_ENDPOINT_URL") {
            return Endpoint {
                url,
                origin: Origin::Env("AWS_ENDPOINT_URL".into()),
            };
        }
        if let Some(url) = self.config.endpoint_url() {
            let profile = set("AWS_PROFILE").unwrap_or_else(|| "default".into());
            return Endpoint {
                url: url.to_string(),
                origin: Origin::Profile(profile),
            };
        }
        Endpoint {
            url: format!("https://{service}.{region}.amazonaws.com"),
            origin: Origin::Default,
        }
    }

    /// What watches the calls of one client: retries reported, connection
    /// failures retried briefly and named with their endpoint.
    pub(super) fn watch(&self, service: &'static str, region: &str) -> Watch {
        Watch::new(
            region,
            Arc::new(self.endpoint(service, region)),
            self.config.sleep_impl(),
        )
    }

    /// An EC2 client for `region`.
    pub fn ec2(&self, region: &str) -> Ec2 {
        let watch = self.watch("ec2", region);
        let conf = aws_sdk_ec2::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .sleep_impl(watch.sleep())
            .interceptor(watch)
            .build();
        Ec2 {
            client: aws_sdk_ec2::Client::from_conf(conf),
            region: region.to_string(),
        }
    }

    /// An SSM client for `region`.
    pub fn ssm(&self, region: &str) -> Ssm {
        let watch = self.watch("ssm", region);
        let conf = aws_sdk_ssm::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .sleep_impl(watch.sleep())
            .interceptor(watch)
            .build();
        Ssm {
            client: aws_sdk_ssm::Client::from_conf(conf),
            region: region.to_string(),
        }
    }
}

impl Session {
    /// A KMS client for `region`.
    pub fn kms(&self, region: &str) -> super::Kms {
        let watch = self.watch("kms", region);
        let conf = aws_sdk_kms::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .sleep_impl(watch.sleep())
            .interceptor(watch)
            .build();
        super::Kms {
            client: aws_sdk_kms::Client::from_conf(conf),
            region: region.to_string(),
        }
    }

    /// An EBS direct APIs client for `region`, with EC2 there beside it.
    pub fn ebs(&self, region: &str) -> super::Ebs {
        let watch = self.watch("ebs", region);
        let conf = aws_sdk_ebs::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .sleep_impl(watch.sleep())
            .interceptor(watch)
            .build();
        super::Ebs {
            client: aws_sdk_ebs::Client::from_conf(conf),
            ec2: self.ec2(region),
            region: region.to_string(),
        }
    }

    /// An Auto Scaling client for `region`.
    pub fn autoscaling(&self, region: &str) -> AutoScaling {
        let watch = self.watch("autoscaling", region);
        let conf = aws_sdk_autoscaling::config::Builder::from(&self.config)
            .region(Region::new(region.to_string()))
            .sleep_impl(watch.sleep())
            .interceptor(watch)
            .build();
        AutoScaling {
            client: aws_sdk_autoscaling::Client::from_conf(conf),
            region: region.to_string(),
        }
    }
}

/// Where a client's calls go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL.
    pub url: String,
    /// Which setting chose it.
    pub origin: Origin,
}

/// Which setting chose an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An environment variable (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_EC2`).
    Env(String),
    /// The `endpoint_url` of this profile.
    Profile(String),
    /// None: the service's regional endpoint.
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Env(var) => write!(f, "from {var}"),
            Origin::Profile(p) => write!(f, "from the `endpoint_url` of profile `{p}`"),
            Origin::Default => f.write_str("the regional endpoint"),
        }
    }
}

impl Origin {
    /// What to check when the endpoint cannot be reached.
    pub fn advice(&self) -> String {
        match self {
            Origin::Env(var) => format!(
                "check that the emulator or proxy it names is running, or `unset {var}` to use AWS"
            ),
            Origin::Profile(p) => format!(
                "check the `endpoint_url` of profile `{p}` in the AWS config file, or remove it to use AWS"
            ),
            Origin::Default => "check the network, DNS and any proxy (HTTPS_PROXY) between here and AWS".into(),
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
