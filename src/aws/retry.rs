//! How hard imagectl tries an AWS call: the retry bound and the time one
//! attempt may take, each overridable from the environment within reason.

use std::time::Duration;

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
