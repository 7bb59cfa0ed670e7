//! The agent's identity: the digest of the sources and locked dependencies
//! the agent is built from (computed by `build.rs`), which names the agent
//! in every content hash and which every agent binary carries as a marker,
//! readable without running the binary (an arm64 agent cannot run on an
//! x86_64 build host). `imagectl` reads the marker before it stages a
//! binary, so that one hash never names two different agents.
//!
//! The marker is [`PREFIX`], the 64 lowercase hex digits of the identity,
//! and `;`. The agent binary holds it in a static it also prints
//! (`imagectl-agent --version`), so no linker drops it.

/// The identity of the agent built from this checkout.
pub const AGENT: &str = env!("IMAGECTL_AGENT_IDENTITY");

/// What precedes the identity in an agent binary. [`find`] never uses this
/// constant as one run of bytes, so a binary that only reads markers
/// (`imagectl` itself) does not carry one by accident.
pub const PREFIX: [&str; 2] = ["IMAGECTL-AGENT-", "IDENTITY:"];

const PREFIX_LEN: usize = PREFIX[0].len() + PREFIX[1].len();

/// The length of a marker: prefix, 64 hex digits, `;`.
pub const MARKER_LEN: usize = PREFIX_LEN + 64 + 1;

/// The marker the agent binary carries, built at compile time.
pub const fn marker() -> [u8; MARKER_LEN] {
    let mut out = [0u8; MARKER_LEN];
    let mut i = 0;
    let (a, b, id) = (PREFIX[0].as_bytes(), PREFIX[1].as_bytes(), AGENT.as_bytes());
    while i < a.len() {
        out[i] = a[i];
        i += 1;
    }
    while i < PREFIX_LEN {
        out[i] = b[i - a.len()];
        i += 1;
    }
    while i < PREFIX_LEN + 64 {
        // The build script always writes 64 digits; a shorter identity
        // leaves zeros, which `find` refuses.
        let j = i - PREFIX_LEN;
        out[i] = if j < id.len() { id[j] } else { 0 };
        i += 1;
    }
    out[i] = b';';
    out
}

/// What a binary says about its identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No marker at all: not an imagectl-agent of this kind.
    None,
    /// Exactly one identity (it may appear more than once).
    One(String),
    /// Markers naming different identities: not a binary to trust.
    Several(Vec<String>),
}

/// The identities the markers in `bytes` name.
pub fn find(bytes: &[u8]) -> Found {
    let prefix: Vec<u8> = PREFIX.concat().into_bytes();
    let mut found: Vec<String> = Vec::new();
    let mut at = 0;
    while let Some(i) = position(&bytes[at..], &prefix) {
        let start = at + i + prefix.len();
        at += i + 1;
        let Some(tail) = bytes.get(start..start + 65) else {
            continue;
        };
        let digits = &tail[..64];
        let ok = tail[64] == b';'
            && digits
                .iter()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
        if ok {
            let id = String::from_utf8_lossy(digits).into_owned();
            if !found.contains(&id) {
                found.push(id);
            }
        }
    }
    match found.len() {
        0 => Found::None,
        1 => Found::One(found.remove(0)),
        _ => Found::Several(found),
    }
}

fn position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut from = 0;
    while from + needle.len() <= haystack.len() {
        let i = haystack[from..].iter().position(|&b| b == first)? + from;
        if haystack.get(i..i + needle.len()) == Some(needle) {
            return Some(i);
        }
        from = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_is_a_sha256() {
        assert_eq!(AGENT.len(), 64);
        assert!(AGENT.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn a_marker_is_found_anywhere_in_a_binary() {
        let mut bin = b"\x7fELF junk IMAGECTL-AGENT-IDENTITY:short; more".to_vec();
        bin.extend_from_slice(&marker());
        bin.extend_from_slice(b"tail");
        assert_eq!(find(&bin), Found::One(AGENT.to_string()));
        // Twice the same: still one identity.
        bin.extend_from_slice(&marker());
        assert_eq!(find(&bin), Found::One(AGENT.to_string()));
    }

    #[test]
    fn no_marker_or_a_broken_one_is_none() {
        assert_eq!(find(b""), Found::None);
        assert_eq!(find(b"#!/bin/sh\necho hi\n"), Found::None);
        let mut cut = marker().to_vec();
        cut.truncate(MARKER_LEN - 1);
        assert_eq!(find(&cut), Found::None);
        let mut upper = marker();
        upper[PREFIX_LEN] = b'A';
        assert_eq!(find(&upper), Found::None);
    }

    #[test]
    fn two_identities_are_reported_as_such() {
        let mut other = marker();
        other[PREFIX_LEN] = if other[PREFIX_LEN] == b'0' {
            b'1'
        } else {
            b'0'
        };
        let mut bin = marker().to_vec();
        bin.extend_from_slice(&other);
        assert!(matches!(find(&bin), Found::Several(ids) if ids.len() == 2));
    }
}
