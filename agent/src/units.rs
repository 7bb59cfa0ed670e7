//! Starting the role's units with `systemctl start` and waiting for the
//! role's health check (an HTTP 200 or a command's exit 0).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::Health;

/// The environment variable naming the `systemctl` to run (tests point it
/// at a script); `systemctl` from `PATH` otherwise.
pub const SYSTEMCTL_ENV: &str = "IMAGECTL_AGENT_SYSTEMCTL";

/// Why starting units or the health check failed.
#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    /// `systemctl` could not be run at all.
    #[error("cannot run `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// `systemctl start` failed.
    #[error("`systemctl start {unit}` failed ({status}); see `journalctl -u {unit}`")]
    Start {
        /// The unit.
        unit: String,
        /// Its exit status.
        status: String,
    },
    /// The health URL is not a plain `http://host[:port]/path` URL.
    #[error("health URL `{0}` is not an http:// URL")]
    BadUrl(String),
    /// Health did not pass in time.
    #[error("not healthy within {within_secs}s ({check}): last result: {last}")]
    Unhealthy {
        /// Seconds allowed (the health timeout, or less when the boot
        /// deadline came first).
        within_secs: u64,
        /// The check, as configured.
        check: String,
        /// The last attempt's result.
        last: String,
    },
    /// The configuration has no check (neither `http` nor `command`).
    #[error("[boot.health] has neither `http` nor `command`")]
    NoCheck,
}

/// Starts each unit in order with `systemctl restart` (blocking until it is
/// started, as systemd defines it for the unit's type). Restart rather than
/// start: a unit that systemd already started (enabled in the image, or
/// socket-activated like rsyslog) must read the configuration just rendered.
pub fn start(units: &[String]) -> Result<(), UnitError> {
    let program = std::env::var(SYSTEMCTL_ENV).unwrap_or_else(|_| "systemctl".to_string());
    for unit in units {
        let status = Command::new(&program)
            .arg("restart")
            .arg("--")
            .arg(unit)
            .stdin(Stdio::null())
            .status()
            .map_err(|source| UnitError::Spawn {
                program: program.clone(),
                source,
            })?;
        if !status.success() {
            return Err(UnitError::Start {
                unit: unit.clone(),
                status: status.to_string(),
            });
        }
    }
    Ok(())
}

/// One health attempt, given how long it may take.
type Probe = dyn Fn(Duration) -> Result<(), String>;

/// Waits until `health` passes, trying every `interval`, for at most its
/// own timeout or `deadline`, whichever comes first.
pub fn wait_healthy(
    health: &Health,
    deadline: Instant,
    interval: Duration,
) -> Result<(), UnitError> {
    let started = Instant::now();
    let until = deadline.min(started + Duration::from_secs(health.timeout_secs));
    let (check, probe): (String, Box<Probe>) = match (&health.http, &health.command) {
        (Some(url), _) => {
            let target = parse_http_url(url).ok_or_else(|| UnitError::BadUrl(url.clone()))?;
            (format!("GET {url}"), Box::new(move |t| http_ok(&target, t)))
        }
        (None, Some(cmd)) => {
            let cmd = cmd.clone();
            (format!("`{cmd}`"), Box::new(move |_| command_ok(&cmd)))
        }
        (None, None) => return Err(UnitError::NoCheck),
    };
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let last = match probe(left.clamp(Duration::from_millis(100), Duration::from_secs(5))) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let now = Instant::now();
        if now + interval > until {
            return Err(UnitError::Unhealthy {
                within_secs: until.duration_since(started).as_secs_f64().ceil() as u64,
                check,
                last,
            });
        }
        std::thread::sleep(interval);
    }
}

fn command_ok(cmd: &str) -> Result<(), String> {
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run /bin/sh: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(status.to_string())
    }
}

/// Host, port and path of an `http://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HttpTarget {
    host: String,
    port: u16,
    path: String,
}

fn parse_http_url(url: &str) -> Option<HttpTarget> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (authority, 80),
    };
    Some(HttpTarget {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        path: path.to_string(),
    })
}

/// One `GET`; Ok when the status is 200. A health endpoint is local and
/// plain HTTP, so a dozen lines of HTTP/1.1 do instead of a client crate.
fn http_ok(t: &HttpTarget, timeout: Duration) -> Result<(), String> {
    let addr = (t.host.as_str(), t.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", t.host))?
        .next()
        .ok_or_else(|| format!("cannot resolve {}", t.host))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let host = if t.host.contains(':') {
        format!("[{}]", t.host)
    } else {
        t.host.clone()
    };
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: imagectl-agent\r\nConnection: close\r\n\r\n",
        t.path, host, t.port
    );
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = [0u8; 32];
    let mut n = 0;
    while n < 12 {
        let r = s.read(&mut head[n..]).map_err(|e| e.to_string())?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    let status = line.split_whitespace().nth(1).unwrap_or("");
    if line.starts_with("HTTP/1.") && status == "200" {
        Ok(())
    } else if status.is_empty() {
        Err("no HTTP status".to_string())
    } else {
        Err(format!("HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn parses_http_urls() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8080/health"),
            Some(HttpTarget {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/health".into()
            })
        );
        assert_eq!(
            parse_http_url("http://localhost"),
            Some(HttpTarget {
                host: "localhost".into(),
                port: 80,
                path: "/".into()
            })
        );
        assert_eq!(parse_http_url("http://[::1]:9/x").unwrap().host, "::1");
        assert_eq!(parse_http_url("https://x/"), None);
        assert_eq!(parse_http_url("http://u:p@x/"), None);
    }

    fn serve(status: &'static str) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let mut s = s;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 256];
                while !buf.ends_with(b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            }
        });
        port
    }

    #[test]
    fn http_health_needs_200() {
        let ok = serve("200 OK");
        let bad = serve("503 Service Unavailable");
        let t = |port| HttpTarget {
            host: "127.0.0.1".into(),
            port,
            path: "/".into(),
        };
        http_ok(&t(ok), Duration::from_secs(2)).unwrap();
        assert_eq!(
            http_ok(&t(bad), Duration::from_secs(2)).unwrap_err(),
            "HTTP 503"
        );
    }

    #[test]
    fn health_that_never_passes_times_out() {
        let h = Health {
            http: None,
            command: Some("exit 3".into()),
            timeout_secs: 1,
        };
        let start = Instant::now();
        let err = wait_healthy(
            &h,
            Instant::now() + Duration::from_secs(60),
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(3));
        assert_eq!(
            err.to_string(),
            "not healthy within 1s (`exit 3`): last result: exit status: 3"
        );
    }

    #[test]
    fn health_command_passes() {
        let h = Health {
            http: None,
            command: Some("true".into()),
            timeout_secs: 1,
        };
        wait_healthy(
            &h,
            Instant::now() + Duration::from_secs(5),
            Duration::from_millis(50),
        )
        .unwrap();
    }
}
