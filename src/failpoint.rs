//! Pause points for the tests, compiled into debug builds only: a release
//! build has no hook at all.
//!
//! `IMAGECTL_FAILPOINT=NAME` makes imagectl stop itself (SIGSTOP) when it
//! reaches the point called `NAME`, after saying so on stderr, so that a
//! test can change the world at that exact place (edit a source between
//! staging and baking, say) and let it go on with SIGCONT.

/// Names of the points.
pub const POINTS: &[&str] = &["after-stage"];

/// Stops here until SIGCONT when `IMAGECTL_FAILPOINT` names `point`.
#[cfg(debug_assertions)]
pub fn hit(point: &'static str) {
    debug_assert!(POINTS.contains(&point), "unknown failpoint `{point}`");
    if std::env::var_os("IMAGECTL_FAILPOINT").is_some_and(|v| v == point) {
        eprintln!("failpoint `{point}` reached: stopped until SIGCONT");
        // SAFETY: raise(3) with a valid signal number; the process stops
        // here and resumes on SIGCONT.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}

/// Release builds: no hook, nothing read from the environment.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_point: &'static str) {}
