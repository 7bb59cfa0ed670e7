//! How hard imagectl tries an AWS call: the retry bound and the time one
//! attempt may take, each overridable from the environment within reason;
//! each retry reported on stderr as it is decided; a connection that fails
//! retried briefly, then named with its endpoint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::config::interceptors::FinalizerInterceptorContextMut;
use aws_sdk_ec2::config::{
    AsyncSleep, ConfigBag, Intercept, RuntimeComponents, SharedAsyncSleep, Sleep,
};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::orchestrator::{HttpResponse, Metadata, OrchestratorError};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_types::retry::RetryConfig;

use super::error::Unreachable;
use super::session::Endpoint;

/// The environment variable that overrides the retry bound: the AWS SDKs'
/// and CLI's own name for it, so one setting covers every AWS tool a
/// pipeline runs.
pub const MAX_ATTEMPTS_ENV: &str = "AWS_MAX_ATTEMPTS";

/// Attempts per AWS call (the first and the retries) unless
/// `AWS_MAX_ATTEMPTS` says otherwise. Eight, where the SDK's default is
/// three: a build that fails on throttling costs a re-run of many minutes,
/// so imagectl rides out a busy account (~35 s of backoff on average,
/// 71 s at most) before giving up.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;

/// The longest single backoff between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(20);

/// The environment variable that overrides how long one attempt of an AWS
/// call may take, in seconds.
pub const ATTEMPT_TIMEOUT_ENV: &str = "IMAGECTL_AWS_ATTEMPT_TIMEOUT";

/// How long one attempt may take before it is abandoned and retried like a
/// throttled one. Without a limit, a connection that goes quiet (a NAT
/// gateway dropping state, a proxy holding the request) hangs a build
/// until CI's job timeout, hours later. EC2 and SSM answer in seconds,
/// creating calls included: they return before the work is done.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long to wait for a connection: the SDK's default, kept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// Attempts for a call whose connection failed (refused, name not found,
/// no connection within [`CONNECT_TIMEOUT`]), when `AWS_MAX_ATTEMPTS` is
/// higher: the SDK's own default. Waiting helps a throttled account, not an
/// endpoint that is wrong or a network that is down, which is what a
/// failed connection almost always is; a blip is over by the third try.
/// With [`CONNECT_MAX_BACKOFF`], a dead endpoint fails within ~3 s when
/// connections are refused and ~13 s when they time out, not the minute
/// and more the full bound takes.
pub const CONNECT_ATTEMPTS: u32 = 3;

/// The longest backoff between attempts of a call whose connection failed.
pub const CONNECT_MAX_BACKOFF: Duration = Duration::from_secs(2);

pub(super) fn attempt_timeout_from(value: Option<&str>) -> Result<Duration, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_ATTEMPT_TIMEOUT),
        Some(v) => match v.parse::<u64>() {
            Ok(n @ 1..=3600) => Ok(Duration::from_secs(n)),
            _ => Err(format!(
                "`{ATTEMPT_TIMEOUT_ENV}={v}` is not a number of seconds from 1 to 3600; using {}",
                DEFAULT_ATTEMPT_TIMEOUT.as_secs()
            )),
        },
    }
}

pub(super) fn max_attempts_from(value: Option<&str>) -> Result<u32, String> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_MAX_ATTEMPTS),
        Some(v) => match v.parse::<u32>() {
            Ok(n @ 1..=50) => Ok(n),
            _ => Err(format!(
                "`{MAX_ATTEMPTS_ENV}={v}` is not a number of attempts from 1 to 50; using {DEFAULT_MAX_ATTEMPTS}"
            )),
        },
    }
}

/// The time one attempt may take in effect: `IMAGECTL_AWS_ATTEMPT_TIMEOUT`
/// when it is a number of seconds from 1 to 3600, else
/// [`DEFAULT_ATTEMPT_TIMEOUT`].
pub fn attempt_timeout() -> Duration {
    attempt_timeout_from(std::env::var(ATTEMPT_TIMEOUT_ENV).ok().as_deref())
        .unwrap_or(DEFAULT_ATTEMPT_TIMEOUT)
}

/// The attempts per AWS call in effect: `AWS_MAX_ATTEMPTS` when it is a
/// number from 1 to 50, else [`DEFAULT_MAX_ATTEMPTS`]. Packer gets the same
/// bound (as `max_retries`, one less).
pub fn max_attempts() -> u32 {
    max_attempts_from(std::env::var(MAX_ATTEMPTS_ENV).ok().as_deref())
        .unwrap_or(DEFAULT_MAX_ATTEMPTS)
}

/// Watches the calls of one client (an interceptor of the SDK's): reports
/// each retry on stderr, retries failed connections briefly, and names the
/// endpoint when they fail for good.
#[derive(Debug, Clone)]
pub(super) struct Watch {
    region: String,
    endpoint: Arc<Endpoint>,
    /// The retry the last failed attempt may lead to, reported when the
    /// SDK asks for its backoff. Between the attempt's end and that request
    /// the SDK does not yield, so no other call of this client comes between.
    next: Arc<Mutex<Option<Retry>>>,
    sleep: Option<SharedAsyncSleep>,
}

/// A retry about to be made.
#[derive(Debug, Clone)]
struct Retry {
    operation: String,
    attempt: u32,
    of: u32,
    reason: String,
}

impl Watch {
    pub(super) fn new(
        region: &str,
        endpoint: Arc<Endpoint>,
        sleep: Option<SharedAsyncSleep>,
    ) -> Watch {
        Watch {
            region: region.to_string(),
            endpoint,
            next: Arc::default(),
            sleep,
        }
    }

    /// The client's sleep: the SDK's, telling of each retry's backoff.
    pub(super) fn sleep(&self) -> SharedAsyncSleep {
        SharedAsyncSleep::new(self.clone())
    }

    fn take_next(&self) -> Option<Retry> {
        self.next.lock().ok().and_then(|mut n| n.take())
    }
}

impl AsyncSleep for Watch {
    fn sleep(&self, duration: Duration) -> Sleep {
        // The SDK sleeps for backoffs and for timeouts; only a backoff
        // follows a failed attempt directly.
        if let Some(r) = self.take_next() {
            tracing::info!(
                "retrying {} in {}: attempt {} of {}, next in {:.1} s ({})",
                r.operation,
                self.region,
                r.attempt,
                r.of,
                duration.as_secs_f64(),
                r.reason
            );
        }
        match &self.sleep {
            Some(s) => s.sleep(duration),
            None => Sleep::new(tokio::time::sleep(duration)),
        }
    }
}

type Context<'a> = FinalizerInterceptorContextMut<'a>;

impl Intercept for Watch {
    fn name(&self) -> &'static str {
        "imagectl::aws::retry::Watch"
    }

    fn modify_before_attempt_completion(
        &self,
        ctx: &mut Context<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let Some(Err(e)) = ctx.output_or_error() else {
            return Ok(());
        };
        let connection = e
            .as_connector_error()
            .filter(|c| c.is_io() || c.is_timeout());
        let reason = match connection {
            Some(c) => connection_failure(c),
            None if e.is_timeout_error() => {
                format!("no answer within {} s", attempt_timeout().as_secs())
            }
            None => ctx
                .response()
                .map(answer)
                .unwrap_or_else(|| "failed".into()),
        };
        let Some(retry) = cfg.load::<RetryConfig>().cloned() else {
            return Ok(());
        };
        let mut of = retry.max_attempts();
        if connection.is_some() && of > CONNECT_ATTEMPTS {
            of = CONNECT_ATTEMPTS;
            cfg.interceptor_state().store_put(
                retry
                    .with_max_attempts(of)
                    .with_max_backoff(CONNECT_MAX_BACKOFF),
            );
        }
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts()) + 1;
        let operation = cfg.load::<Metadata>().map_or("call", |m| m.name());
        let next = (attempt <= of).then(|| Retry {
            operation: operation.to_string(),
            attempt,
            of,
            reason,
        });
        if let Ok(mut n) = self.next.lock() {
            *n = next;
        }
        Ok(())
    }

    fn modify_before_completion(
        &self,
        ctx: &mut Context<'_>,
        _: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        // No retry came of the last attempt.
        self.take_next();
        let attempts = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        let Some(Err(e)) = ctx.output_or_error_mut() else {
            return Ok(());
        };
        let Some(c) = e
            .as_connector_error()
            .filter(|c| c.is_io() || c.is_timeout())
        else {
            return Ok(());
        };
        let unreachable = Unreachable {
            service: cfg
                .load::<Metadata>()
                .map_or("AWS", |m| m.service())
                .to_string(),
            endpoint: (*self.endpoint).clone(),
            reason: connection_failure(c),
            attempts,
        };
        *e = OrchestratorError::connector(ConnectorError::io(Box::new(unreachable)));
        Ok(())
    }
}

/// Why a connection failed, in a few words: `connection refused`, or the
/// innermost cause (`failed to lookup address information: ...`).
fn connection_failure(e: &ConnectorError) -> String {
    if e.is_timeout() {
        return format!(
            "no connection within {:.1} s",
            CONNECT_TIMEOUT.as_secs_f64()
        );
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut last = String::new();
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            match io.kind() {
                ConnectionRefused => return "connection refused".into(),
                ConnectionReset => return "connection reset".into(),
                ConnectionAborted => return "connection aborted".into(),
                TimedOut => return "connection timed out".into(),
                _ => {}
            }
        }
        let text = err.to_string();
        if !text.is_empty() {
            last = text;
        }
        next = err.source();
    }
    last
}

/// What an error answer says: AWS's error code and the HTTP status.
fn answer(r: &HttpResponse) -> String {
    let status = r.status().as_u16();
    let header = r
        .headers()
        .get("x-amzn-errortype")
        .and_then(|t| t.split(':').next());
    let body = r.body().bytes().map(String::from_utf8_lossy);
    let code = header.map(str::to_string).or_else(|| {
        let body = body.as_deref()?;
        let between = |start: &str, end: &str| {
            let rest = &body[body.find(start)? + start.len()..];
            Some(rest[..rest.find(end)?].to_string())
        };
        between("<Code>", "</Code>").or_else(|| {
            between("\"__type\":\"", "\"").map(|t| t.rsplit('#').next().unwrap_or(&t).to_string())
        })
    });
    match code {
        Some(c) if !c.is_empty() => format!("{c}, HTTP {status}"),
        _ => format!("HTTP {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_timeout_is_overridable_within_reason() {
        let secs = |v| attempt_timeout_from(v).map(|d| d.as_secs());
        assert_eq!(secs(None), Ok(60));
        assert_eq!(secs(Some(" ")), Ok(60));
        assert_eq!(secs(Some("2")), Ok(2));
        for bad in ["0", "3601", "1.5", "soon"] {
            let e = secs(Some(bad)).unwrap_err();
            assert!(
                e.starts_with(&format!("`IMAGECTL_AWS_ATTEMPT_TIMEOUT={bad}` is not")),
                "{e}"
            );
        }
    }

    #[test]
    fn the_retry_bound_is_overridable_within_reason() {
        assert_eq!(max_attempts_from(None), Ok(DEFAULT_MAX_ATTEMPTS));
        assert_eq!(max_attempts_from(Some("")), Ok(DEFAULT_MAX_ATTEMPTS));
        assert_eq!(max_attempts_from(Some("3")), Ok(3));
        assert_eq!(max_attempts_from(Some(" 12 ")), Ok(12));
        for bad in ["0", "51", "-1", "many"] {
            let e = max_attempts_from(Some(bad)).unwrap_err();
            assert!(
                e.starts_with(&format!("`AWS_MAX_ATTEMPTS={bad}` is not a number")),
                "{e}"
            );
        }
    }
}
