//! The error of an AWS call, in one line a person can act on: the call, the
//! region, the resource, and AWS's own code and message (never the SDK's
//! debug dump).

use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use imagectl_image::error_chain as chain;

use super::retry::{attempt_timeout, max_attempts, MAX_ATTEMPTS_ENV};
use super::session::Endpoint;

/// An AWS call that failed.
#[derive(Debug, thiserror::Error)]
#[error("AWS {operation} in `{region}` failed{}: {message}", resource.as_deref().map(|r| format!(" for {r}")).unwrap_or_default())]
pub struct Error {
    /// The API operation (`DescribeImages`).
    pub operation: &'static str,
    /// The region it was sent to.
    pub region: String,
    /// What it was about, when it was about one thing, as the message
    /// names it (``parameter `/imagectl/app/dev` ``, ``images of role `app` ``).
    pub resource: Option<String>,
    /// The SDK's error with its causes.
    pub message: String,
}

impl Error {
    pub(super) fn new<E>(
        operation: &'static str,
        region: &str,
        resource: Option<&str>,
        e: SdkError<E, HttpResponse>,
    ) -> Error
    where
        E: std::error::Error + ProvideErrorMetadata + 'static,
    {
        let message = match &e {
            // The SDK's own words name a timeout kind and no call.
            SdkError::TimeoutError(_) => format!(
                "no answer within {} s; {}",
                attempt_timeout().as_secs(),
                gave_up()
            ),
            // No request reached AWS: no credentials to sign it with, or
            // no connection (refused, DNS, TLS).
            SdkError::DispatchFailure(_) => {
                if let Some(u) = find::<Unreachable>(&e) {
                    u.to_string()
                } else if let Some(c) = find::<CredentialsError>(&e) {
                    no_credentials(c)
                } else {
                    format!(
                        "cannot reach AWS: {}",
                        chain(&e).trim_start_matches("dispatch failure: ")
                    )
                }
            }
            // An answer the SDK could not read (moto's XML AccessDenied to
            // a JSON API, a proxy's HTML page): what it said, briefly.
            SdkError::ResponseError(r) => format!(
                "{}: HTTP {}: {}",
                chain(&e),
                r.raw().status().as_u16(),
                excerpt(r.raw().body().bytes().unwrap_or_default())
            ),
            _ => describe(&e),
        };
        Error {
            operation,
            region: region.to_string(),
            resource: resource.map(|r| format!("`{r}`")),
            message,
        }
    }

    /// An error that is not the SDK's (a wait that ran out, say).
    pub fn other(
        operation: &'static str,
        region: &str,
        resource: Option<&str>,
        message: String,
    ) -> Error {
        Error {
            operation,
            region: region.to_string(),
            resource: resource.map(|r| format!("`{r}`")),
            message,
        }
    }

    /// Names the resource when the call itself named none (a search by
    /// tag, say, that the caller knows was about one role).
    pub fn about(mut self, resource: impl Into<String>) -> Error {
        self.resource.get_or_insert_with(|| resource.into());
        self
    }
}

/// A connection to an endpoint that failed on every attempt.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach the {service} endpoint {} ({}): {reason}{}; {}",
    endpoint.url,
    endpoint.origin,
    if *attempts > 1 { format!(" ({attempts} attempts)") } else { String::new() },
    endpoint.origin.advice()
)]
pub(super) struct Unreachable {
    /// `EC2`, `SSM`.
    pub service: String,
    /// Where the calls went.
    pub endpoint: Endpoint,
    /// Why the last attempt failed (`connection refused`).
    pub reason: String,
    /// How many attempts were made.
    pub attempts: u32,
}

/// The first error of type `T` in `e`'s chain of causes.
fn find<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        next = err.source();
    }
    None
}

/// What to do without credentials.
const CREDENTIALS_ADVICE: &str = "to fix: `export AWS_PROFILE=NAME` to use a profile of ~/.aws/config \
     (and `aws sso login --profile NAME` when it uses SSO), or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";

/// The SDK's credential providers, as people know them.
const PROVIDERS: &[(&str, &str)] = &[
    (
        "Environment",
        "environment variables AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY",
    ),
    ("Profile", "profile"),
    (
        "WebIdentityToken",
        "web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)",
    ),
    ("EcsContainer", "ECS container credentials"),
    ("Ec2InstanceMetadata", "EC2 instance metadata (IMDS)"),
];

/// Credentials that could not be found or loaded: which providers were
/// tried and why each had none, and what to do. Nothing was sent, and
/// nothing retried: the SDK does not retry a missing credential.
fn no_credentials(e: &CredentialsError) -> String {
    let text = chain(e);
    let text = text.trim_end_matches('.');
    let headline = match e {
        CredentialsError::CredentialsNotLoaded(_) => "no AWS credentials found",
        _ => "cannot load AWS credentials",
    };
    let Some((_, tried)) = text.split_once("Attempted:") else {
        // One provider failed outright (an SSO session expired, IMDS
        // refused): its own words.
        return format!(
            "{headline}: {text}; not retried\n  tried in turn: {}\n  {CREDENTIALS_ADVICE}",
            PROVIDERS
                .iter()
                .map(|(_, label)| if *label == "profile" {
                    profile()
                } else {
                    label.to_string()
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let mut lines = Vec::new();
    for line in tried.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, why) = line.split_once(": ").unwrap_or((line, ""));
        let label = match PROVIDERS.iter().find(|(n, _)| *n == name) {
            Some((_, "profile")) => profile(),
            Some((_, label)) => label.to_string(),
            None => name.to_string(),
        };
        let why = why.trim_start_matches("the credential provider was not enabled: ");
        let why = match why {
            "" | "the credential provider was not enabled" => "none there",
            w => w,
        };
        lines.push(format!("  {label}: {why}"));
    }
    format!(
        "{headline}; not retried; tried:\n{}\n  {CREDENTIALS_ADVICE}",
        lines.join("\n")
    )
}

/// The profile the SDK read, and from which files.
fn profile() -> String {
    let var = |k: &str, default: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.into())
    };
    format!(
        "profile `{}` in {} and {}",
        var("AWS_PROFILE", "default"),
        var("AWS_CONFIG_FILE", "~/.aws/config"),
        var("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
    )
}

/// Error codes of credentials AWS refused: expired, revoked, unknown.
const CREDENTIALS_CODES: &[&str] = &[
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "InvalidAccessKeyId",
];

/// Error codes AWS answers when it throttles (EC2's query API, the JSON
/// APIs, and the older spellings some services still use).
const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "PriorRequestNotComplete",
];

/// Error codes of AWS failing on its side, which the SDK retries too.
const SERVER_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
    "RequestTimeout",
    "RequestTimeoutException",
];

/// What went wrong, in AWS's own words: the error code and message (not
/// the SDK's `service error` wrapper), and for the errors the SDK retries,
/// that it gave up after the bound.
fn describe<E: std::error::Error + ProvideErrorMetadata>(e: &E) -> String {
    let Some(code) = e.code() else {
        // Not an answer from AWS: a response the SDK could not read, say.
        // Its chain of causes says which.
        return chain(e);
    };
    let said = match e.message() {
        Some(m) if !m.is_empty() => format!("`{code}`: {m}"),
        _ => format!("`{code}`"),
    };
    // The standard retry strategy tries these up to the bound (its retry
    // quota, 100 failed retries per process, is never the limit for one
    // command); an error coming back here means every attempt failed.
    if CREDENTIALS_CODES.contains(&code) {
        format!(
            "AWS refused the credentials ({said}); renew them: `aws sso login` for an SSO profile, \
             else fresh AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN"
        )
    } else if THROTTLING_CODES.contains(&code) {
        format!("throttled ({said}); {}", gave_up())
    } else if SERVER_CODES.contains(&code) {
        format!("AWS failed on its side ({said}); {}", gave_up())
    } else {
        said
    }
}

/// The end of the message of an error the SDK retried to the bound.
fn gave_up() -> String {
    let n = max_attempts();
    format!(
        "gave up after {n} attempt{} (the bound: set {MAX_ATTEMPTS_ENV} to change it)",
        if n == 1 { "" } else { "s" }
    )
}

/// The start of a response body on one line: up to 300 characters, runs
/// of whitespace and control characters as one space.
fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out = String::new();
    for word in text.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.chars().count() > 300 {
            let cut: String = out.chars().take(300).collect();
            return format!("{cut}...");
        }
    }
    out
}

pub(super) fn err<E>(
    operation: &'static str,
    region: &str,
    resource: Option<&str>,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> Error
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
{
    let region = region.to_string();
    let resource = resource.map(String::from);
    move |e| Error::new(operation, &region, resource.as_deref(), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_endpoint_says_which_setting_chose_it_and_what_to_check() {
        let u = |origin, attempts| Unreachable {
            service: "EC2".into(),
            endpoint: Endpoint {
                url: "https://ec2.eu-west-1.amazonaws.com".into(),
                origin,
            },
            reason: "connection refused".into(),
            attempts,
        };
        assert_eq!(
            u(super::super::Origin::Default, 3).to_string(),
            "cannot reach the EC2 endpoint https://ec2.eu-west-1.amazonaws.com (the regional endpoint): \
             connection refused (3 attempts); check the network, DNS and any proxy (HTTPS_PROXY) between here and AWS"
        );
        assert_eq!(
            u(super::super::Origin::Env("AWS_ENDPOINT_URL".into()), 1).to_string(),
            "cannot reach the EC2 endpoint https://ec2.eu-west-1.amazonaws.com (from AWS_ENDPOINT_URL): \
             connection refused; check that the emulator or proxy it names is running, or `unset AWS_ENDPOINT_URL` to use AWS"
        );
    }

    #[test]
    fn missing_credentials_list_each_provider_and_why_it_had_none() {
        let e = CredentialsError::not_loaded(
            "no credentials found in chain. Attempted:\n  \
             Environment: the credential provider was not enabled: environment variable not set\n  \
             EcsContainer: the credential provider was not enabled: ECS provider not configured\n  \
             Custom: the credential provider was not enabled",
        );
        let text = no_credentials(&e);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            [
                "no AWS credentials found; not retried; tried:",
                "  environment variables AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY: environment variable not set",
                "  ECS container credentials: ECS provider not configured",
                "  Custom: none there",
                &format!("  {CREDENTIALS_ADVICE}"),
            ]
        );
        let e = CredentialsError::provider_error("the SSO session has expired.");
        let text = no_credentials(&e);
        assert!(
            text.starts_with(
                "cannot load AWS credentials: an error occurred while loading credentials: \
                 the SSO session has expired; not retried\n  tried in turn: environment variables"
            ),
            "{text}"
        );
    }

    #[test]
    fn an_unreadable_answer_is_quoted_briefly_on_one_line() {
        assert_eq!(
            excerpt(b"<?xml version=\"1.0\"?>\n  <ErrorResponse>\r\n\t<Code>AccessDenied</Code>"),
            "<?xml version=\"1.0\"?> <ErrorResponse> <Code>AccessDenied</Code>"
        );
        let long = excerpt("é".repeat(1000).as_bytes());
        assert_eq!(long.chars().count(), 303);
        assert!(long.ends_with("..."));
        assert_eq!(excerpt(b"\xff\x00ok"), "\u{fffd} ok");
    }
}
