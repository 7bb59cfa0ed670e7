//! Pause points for the fault tests, compiled into debug builds only: a
//! release build (every image's agent) has no hook at all.
//!
//! `IMAGECTL_AGENT_FAILPOINT=NAME` makes the agent stop at the point called
//! `NAME`: it logs `failpoint `NAME` reached: waiting to be killed` and
//! sleeps until a test kills it (SIGKILL), so a test can cut the agent off
//! at an exact place instead of hoping a timed kill lands there.

/// Names of the points, in the order a boot reaches them.
pub const POINTS: &[&str] = &["before-rename", "between-renames"];

/// Stops here for good when `IMAGECTL_AGENT_FAILPOINT` names `point`.
#[cfg(debug_assertions)]
pub fn hit(point: &'static str) {
    debug_assert!(POINTS.contains(&point), "unknown failpoint `{point}`");
    if std::env::var_os("IMAGECTL_AGENT_FAILPOINT").is_some_and(|v| v == point) {
        crate::log::log(&format!(
            "failpoint `{point}` reached: waiting to be killed"
        ));
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Release builds: no hook, nothing read from the environment.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_point: &'static str) {}
