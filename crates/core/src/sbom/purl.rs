//! Package URLs of Debian packages, `pkg:deb/debian/NAME@VERSION?arch=ARCH`,
//! encoded as the purl specification says: in the name, the version and
//! qualifier values every character but letters, digits, `.-_~` and `:`
//! is percent-encoded (`1:2.36-9+deb12u1` becomes `1:2.36-9%2Bdeb12u1`).

/// Whether the purl specification leaves `b` as it is in a component.
fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':')
}

/// `s` percent-encoded for a purl component.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `s` with its percent-encoded octets decoded; `None` when one is
/// malformed or the result is not UTF-8.
pub fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The purl of a Debian binary package (names are lowercase in Debian, as
/// the `deb` type wants them); without the `arch` qualifier when the
/// architecture is not known.
pub fn deb(name: &str, version: &str, arch: Option<&str>) -> String {
    let purl = format!("pkg:deb/debian/{}@{}", encode(name), encode(version));
    match arch {
        Some(a) => format!("{purl}?arch={}", encode(a)),
        None => purl,
    }
}

/// Name, version and architecture of a `pkg:deb/debian/` purl.
pub fn parse_deb(purl: &str) -> Option<(String, String, Option<String>)> {
    let rest = purl.strip_prefix("pkg:deb/debian/")?;
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (name, version) = path.split_once('@')?;
    let arch = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("arch="))
        .and_then(decode);
    Some((decode(name)?, decode(version)?, arch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_encoded_as_the_spec_says() {
        // The examples of the purl specification's `deb` type.
        assert_eq!(
            deb("attr", "1:2.4.47-2+b1", Some("amd64")),
            "pkg:deb/debian/attr@1:2.4.47-2%2Bb1?arch=amd64"
        );
        assert_eq!(
            deb("curl", "7.50.3-1", Some("i386")),
            "pkg:deb/debian/curl@7.50.3-1?arch=i386"
        );
        assert_eq!(
            deb("libstdc++6", "12.2.0-14+deb12u1", Some("amd64")),
            "pkg:deb/debian/libstdc%2B%2B6@12.2.0-14%2Bdeb12u1?arch=amd64"
        );
        assert_eq!(encode("2.2~rc1 x"), "2.2~rc1%20x");
        assert_eq!(
            deb("nginx", "1.22.1-9", None),
            "pkg:deb/debian/nginx@1.22.1-9"
        );
    }

    #[test]
    fn purls_read_back() {
        let p = deb("libstdc++6", "1:12.2.0-14+deb12u1", Some("amd64"));
        assert_eq!(
            parse_deb(&p),
            Some((
                "libstdc++6".to_string(),
                "1:12.2.0-14+deb12u1".to_string(),
                Some("amd64".to_string())
            ))
        );
        assert_eq!(parse_deb("pkg:npm/x@1"), None);
        assert_eq!(parse_deb("pkg:deb/debian/x@%zz"), None);
    }
}
