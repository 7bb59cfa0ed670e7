//! The agent's network calls: the instance identity and user data from
//! IMDSv2, the role's parameters from SSM Parameter Store, and the AWS
//! configuration every client is built from (Auto Scaling's calls are in
//! `autoscaling`). All go through the AWS SDK, which retries with backoff;
//! the caller bounds the whole with the boot deadline.

use std::time::Duration;

use imagectl_image::error_chain as chain;

use aws_config::imds::client::error::{ImdsError, TokenError};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ssm::config::http::HttpResponse;
use aws_sdk_ssm::config::interceptors::InterceptorContext;
use aws_sdk_ssm::config::retry::{ClassifyRetry, RetryAction};
use aws_sdk_ssm::config::IntoShared;
use aws_sdk_ssm::error::{ProvideErrorMetadata, SdkError};
use serde::Deserialize;

use crate::params::line_of;

/// Attempts per call (first try included), for IMDS and SSM alike.
pub const MAX_ATTEMPTS: u32 = 5;

/// Why a network call failed. Never carries a value: IMDS answers and
/// parameter values stay out of errors.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// IMDS did not issue a session token (IMDSv2 off, or no IMDS).
    #[error("instance metadata service: cannot get an IMDSv2 session token after up to {MAX_ATTEMPTS} attempts ({0})")]
    Token(String),
    /// IMDS answered an error status.
    #[error("instance metadata service: `{path}` answered HTTP {status}")]
    Status {
        /// The metadata path.
        path: String,
        /// The HTTP status.
        status: u16,
    },
    /// IMDS could not be reached or answered something unexpected.
    #[error("instance metadata service: `{path}`: {reason}")]
    Imds {
        /// The metadata path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The instance identity document is not what IMDS documents.
    #[error("instance metadata service: the instance identity document is not valid: {0}")]
    Identity(String),
    /// The instance has no user data.
    #[error("user data is missing: the launch template must set user data with `env = \"...\"`")]
    NoUserData,
    /// The user data is not the expected TOML document.
    #[error("user data is not valid{}: {message}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    UserData {
        /// 1-based line of the problem, when known.
        line: Option<usize>,
        /// What is wrong (never the text itself).
        message: String,
    },
    /// SSM Parameter Store failed (after retries).
    #[error(
        "SSM GetParametersByPath `{path}` failed after up to {MAX_ATTEMPTS} attempts: {reason}"
    )]
    Ssm {
        /// The parameter path.
        path: String,
        /// The service's error code and message, or the transport error.
        reason: String,
    },
}

/// Who and where this instance is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Instance ID (`i-...`).
    pub id: String,
    /// Region (`eu-west-1`).
    pub region: String,
    /// Availability zone (`eu-west-1a`).
    pub az: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityDocument {
    instance_id: String,
    region: String,
    availability_zone: String,
}

/// The user data the launch template sets: a small TOML document.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct UserData {
    /// The environment (`dev`, `staging`, `prod`).
    pub env: String,
    /// Parameters given with the instance instead of SSM's, shaped like the
    /// tree below the role's path: what `imagectl test --vm` gives a test
    /// boot, which has no SSM. User data is readable by every process on
    /// the instance and by whoever may describe it: never for secrets.
    #[serde(default)]
    pub parameters: Option<toml::Table>,
}

/// Parses and checks user data. Other keys are allowed (a newer launch
/// template must not break an older image); `env` must be a short name.
pub fn parse_user_data(text: &str) -> Result<UserData, AwsError> {
    if text.trim().is_empty() {
        return Err(AwsError::NoUserData);
    }
    let ud: UserData = toml::from_str(text).map_err(|e| AwsError::UserData {
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().to_string(),
    })?;
    check_env(&ud.env).map_err(|message| AwsError::UserData {
        line: None,
        message,
    })?;
    Ok(ud)
}

/// An environment name goes into an SSM path: letters, digits, `-`, `_`.
pub fn check_env(env: &str) -> Result<(), String> {
    let ok = !env.is_empty()
        && env.len() <= 64
        && env
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("`env` must be 1 to 64 letters, digits, `-` or `_`".to_string())
    }
}

/// An IMDSv2 client; honours `AWS_EC2_METADATA_SERVICE_ENDPOINT` as every
/// SDK does.
///
/// The SDK's IMDS client retries only HTTP 5xx and 401 by default, not a
/// connection that fails or times out: that default suits a credential
/// chain trying IMDS on a laptop, not an instance whose boot depends on
/// IMDS, where a refused or dropped connection early in boot is worth the
/// same retries as a 500.
pub fn imds() -> aws_config::imds::Client {
    aws_config::imds::Client::builder()
        .max_attempts(MAX_ATTEMPTS)
        .retry_classifier(ImdsRetry.into_shared())
        .connect_timeout(Duration::from_secs(1))
        .read_timeout(Duration::from_secs(2))
        // One attempt of a read includes loading the token, itself up to
        // MAX_ATTEMPTS tries with backoff (at most 5 x 3 s + 1+2+4+8 s =
        // 30 s). The SDK's default 10 s attempt timeout cut that short now
        // and then, and the read's retry began a second round of token
        // requests: 9 where 5 was the bound. The boot deadline bounds the
        // whole operation.
        .operation_attempt_timeout(Duration::from_secs(45))
        .operation_timeout(Duration::from_secs(600))
        .build()
}

/// Which IMDS failures are retried: an HTTP 5xx or 401 (an expired token),
/// as the SDK's own rule, and also a connection that fails or times out.
/// Not an error raised before a request went out (no token: its own request
/// was already retried, and retrying around it multiplies the attempts).
#[derive(Debug)]
struct ImdsRetry;

impl ClassifyRetry for ImdsRetry {
    fn name(&self) -> &'static str {
        "imagectl-agent IMDS"
    }

    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        if let Some(response) = ctx.response() {
            let status = response.status();
            return if status.is_server_error() || status.as_u16() == 401 {
                RetryAction::server_error()
            } else {
                RetryAction::NoActionIndicated
            };
        }
        match ctx.output_or_error() {
            Some(Err(e)) if e.is_connector_error() || e.is_timeout_error() => {
                RetryAction::transient_error()
            }
            _ => RetryAction::NoActionIndicated,
        }
    }
}

pub(crate) async fn imds_get(
    client: &aws_config::imds::Client,
    path: &str,
) -> Result<String, AwsError> {
    match client.get(path).await {
        Ok(s) => Ok(s.into()),
        Err(e @ ImdsError::FailedToLoadToken(_)) => {
            // The SDK reads an error status as a token without a TTL
            // header; the status is what says what happened.
            let sdk = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<SdkError<TokenError, HttpResponse>>());
            let status = sdk
                .and_then(|s| s.raw_response())
                .map(|r| r.status().as_u16())
                .filter(|s| *s >= 300);
            Err(AwsError::Token(match (status, sdk) {
                (Some(status), _) => {
                    format!("`PUT /latest/api/token` answered HTTP {status}")
                }
                (None, Some(sdk)) => chain(sdk),
                (None, None) => chain(&e),
            }))
        }
        Err(ImdsError::ErrorResponse(r)) => Err(AwsError::Status {
            path: path.to_string(),
            status: r.response().status().as_u16(),
        }),
        Err(e) => Err(AwsError::Imds {
            path: path.to_string(),
            reason: chain(&e),
        }),
    }
}

/// Reads the instance identity document.
pub async fn identity(client: &aws_config::imds::Client) -> Result<Identity, AwsError> {
    let doc = imds_get(client, "/latest/dynamic/instance-identity/document").await?;
    let d: IdentityDocument =
        serde_json::from_str(&doc).map_err(|e| AwsError::Identity(e.to_string()))?;
    Ok(Identity {
        id: d.instance_id,
        region: d.region,
        az: d.availability_zone,
    })
}

/// Reads and parses the user data.
pub async fn user_data(client: &aws_config::imds::Client) -> Result<UserData, AwsError> {
    match imds_get(client, "/latest/user-data").await {
        Ok(text) => parse_user_data(&text),
        Err(AwsError::Status { status: 404, .. }) => Err(AwsError::NoUserData),
        Err(e) => Err(e),
    }
}

/// The AWS configuration the agent's clients (SSM, Auto Scaling) are built
/// from, loaded once per boot: credentials from the standard chain (the
/// instance profile on EC2), the instance's region, `AWS_ENDPOINT_URL`
/// honoured, standard retries with exponential backoff.
pub async fn sdk_config(region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await
}

/// An SSM client from the agent's configuration.
pub fn ssm(config: &SdkConfig) -> aws_sdk_ssm::Client {
    aws_sdk_ssm::Client::new(config)
}

/// An EC2 Auto Scaling client from the agent's configuration.
pub fn autoscaling(config: &SdkConfig) -> aws_sdk_autoscaling::Client {
    aws_sdk_autoscaling::Client::new(config)
}

/// What an AWS service answered, for an error: its code and message, or
/// the transport error.
pub fn reason<E: ProvideErrorMetadata + std::error::Error + 'static>(e: &E) -> String {
    match (e.code(), e.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        _ => chain(e),
    }
}

/// Every parameter below `path`, recursively and decrypted, following
/// `NextToken` through every page: `(name, value)` pairs.
pub async fn parameters_by_path(
    client: &aws_sdk_ssm::Client,
    path: &str,
) -> Result<Vec<(String, String)>, AwsError> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .get_parameters_by_path()
            .path(path)
            .recursive(true)
            .with_decryption(true)
            .max_results(10)
            .set_next_token(token.take())
            .send()
            .await
            .map_err(|e| AwsError::Ssm {
                path: path.to_string(),
                reason: reason(&e),
            })?;
        for p in page.parameters() {
            if let (Some(name), Some(value)) = (p.name(), p.value()) {
                out.push((name.to_string(), value.to_string()));
            }
        }
        match page.next_token() {
            Some(t) if !t.is_empty() => token = Some(t.to_string()),
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_needs_env() {
        assert_eq!(parse_user_data("env = \"prod\"\n").unwrap().env, "prod");
        assert_eq!(
            parse_user_data("env = \"prod\"\n").unwrap().parameters,
            None
        );
        let ud = parse_user_data("env = \"test\"\n[parameters.db]\nurl = \"x\"\n").unwrap();
        assert_eq!(ud.parameters.unwrap()["db"]["url"].as_str(), Some("x"));
        assert_eq!(
            parse_user_data("env = \"dev\"\nother = 1\n").unwrap().env,
            "dev"
        );
        assert!(matches!(parse_user_data(""), Err(AwsError::NoUserData)));
        assert!(matches!(parse_user_data("  \n"), Err(AwsError::NoUserData)));
        let err = parse_user_data("flavour = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `env`"), "{err}");
        let err = parse_user_data("#cloud-config\nenv: prod\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("user data is not valid (line 2)"),
            "{err}"
        );
        let err = parse_user_data("env = \"../prod\"\n").unwrap_err();
        assert!(err.to_string().contains("`env` must be"), "{err}");
    }
}
