//! The instance metadata service `imagectl test --vm` serves its guest at
//! 169.254.169.254: IMDSv2 only (a session token from `PUT
//! /latest/api/token`, required on every `GET`), the instance identity
//! document, the user data and the instance's tags. QEMU starts
//! `imagectl imds-serve DIR` for each connection the guest opens (a
//! `guestfwd` with `cmd:`), on the connection's stdin and stdout; `DIR`
//! holds the answers and a log of the requests.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

/// The session token file in `DIR`.
pub const TOKEN: &str = "token";
/// The identity document file in `DIR`.
pub const IDENTITY: &str = "identity.json";
/// The user data file in `DIR`.
pub const USER_DATA: &str = "user-data";
/// The instance's `Name` tag file in `DIR`.
pub const NAME_TAG: &str = "tag-Name";
/// The request log in `DIR`: one line per request, method, path and
/// whether it carried the token.
pub const LOG: &str = "requests.log";

/// Serves the requests of one connection until the guest closes it.
pub fn serve(dir: &Path, input: impl Read, mut output: impl Write) -> std::io::Result<()> {
    let token = std::fs::read_to_string(dir.join(TOKEN))?.trim().to_string();
    let mut input = BufReader::new(input);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG))?;
    loop {
        let mut line = String::new();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = match (parts.next(), parts.next()) {
            (Some(m), Some(p)) => (m.to_string(), p.to_string()),
            _ => continue,
        };
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if input.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                if k == "content-length" {
                    length = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        let mut body = vec![0u8; length.min(1 << 20)];
        input.read_exact(&mut body)?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let with_token = header("x-aws-ec2-metadata-token") == Some(token.as_str());
        writeln!(log, "{method} {path} token={with_token}")?;
        let (status, text) = answer(dir, &method, &path, &token, with_token, header);
        // The token's answer says how long it lives, as IMDS does.
        let ttl = match (
            method.as_str(),
            header("x-aws-ec2-metadata-token-ttl-seconds"),
        ) {
            ("PUT", Some(ttl)) => format!("X-aws-ec2-metadata-token-ttl-seconds: {ttl}\r\n"),
            _ => String::new(),
        };
        write!(
            output,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n{ttl}Content-Length: {}\r\n\r\n",
            text.len()
        )?;
        output.write_all(text.as_bytes())?;
        output.flush()?;
    }
}

/// The status line's code and reason, and the body, of one request.
fn answer<'a>(
    dir: &Path,
    method: &str,
    path: &str,
    token: &str,
    with_token: bool,
    header: impl Fn(&str) -> Option<&'a str>,
) -> (&'static str, String) {
    let file = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    match (method, path) {
        ("PUT", "/latest/api/token") => {
            if header("x-aws-ec2-metadata-token-ttl-seconds").is_some() {
                ("200 OK", token.to_string())
            } else {
                ("400 Bad Request", String::new())
            }
        }
        // IMDSv2 only, as imagectl's launch templates require.
        ("GET", _) if !with_token => ("401 Unauthorized", String::new()),
        ("GET", p) => {
            let found = match p {
                "/latest/dynamic/instance-identity/document" => file(IDENTITY),
                "/latest/user-data" => file(USER_DATA),
                "/latest/meta-data/tags/instance" => file(NAME_TAG).map(|_| "Name".to_string()),
                "/latest/meta-data/tags/instance/Name" => file(NAME_TAG),
                _ => None,
            };
            match found {
                Some(body) => ("200 OK", body),
                None => ("404 Not Found", String::new()),
            }
        }
        _ => ("405 Method Not Allowed", String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imdsv2_token_then_documents_on_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(TOKEN), "tok\n").unwrap();
        std::fs::write(dir.path().join(USER_DATA), "env = \"dev\"\n").unwrap();
        let req = "PUT /latest/api/token HTTP/1.1\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n\
                   GET /latest/user-data HTTP/1.1\r\nx-aws-ec2-metadata-token: tok\r\n\r\n\
                   GET /latest/user-data HTTP/1.1\r\n\r\n\
                   GET /latest/meta-data/tags/instance HTTP/1.1\r\nx-aws-ec2-metadata-token: tok\r\n\r\n";
        let mut out = Vec::new();
        serve(dir.path(), req.as_bytes(), &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        // Bodies end without a line break: a status line follows them.
        let statuses: Vec<&str> = out
            .match_indices("HTTP/1.1 ")
            .filter_map(|(i, _)| out[i..].split("\r\n").next())
            .collect();
        assert_eq!(
            statuses,
            [
                "HTTP/1.1 200 OK",
                "HTTP/1.1 200 OK",
                "HTTP/1.1 401 Unauthorized",
                "HTTP/1.1 404 Not Found"
            ]
        );
        assert!(
            out.contains("X-aws-ec2-metadata-token-ttl-seconds: 60\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\n\r\ntok"), "{out}");
        assert!(out.contains("env = \"dev\""), "{out}");
        let log = std::fs::read_to_string(dir.path().join(LOG)).unwrap();
        assert_eq!(log.lines().count(), 4, "{log}");
        assert!(log.contains("GET /latest/user-data token=false"), "{log}");
    }
}
