//! The agent's log: plain lines on stderr, which journald stamps with the
//! time and the unit; no colours, no timestamps of its own.

/// Logs one plain line to stderr.
pub fn log(msg: &str) {
    eprintln!("imagectl-agent: {msg}");
}
