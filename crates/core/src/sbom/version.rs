//! Debian version comparison, as dpkg does it (`lib/dpkg/version.c`):
//! `[epoch:]upstream[-revision]`, the epoch compared as a number, then the
//! upstream version and the revision each by dpkg's `verrevcmp`, where `~`
//! sorts before everything, even the end of the string, letters before
//! other characters, and runs of digits compare as numbers.

use std::cmp::Ordering;

/// A Debian version split into its three parts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts<'a> {
    epoch: u64,
    upstream: &'a str,
    revision: &'a str,
}

/// Splits `v` as dpkg and `Dpkg::Version` do: the epoch is the digits
/// before the first colon (0 when there is none, or when what is before it
/// is not a number), the revision what follows the last hyphen. Leading and
/// trailing whitespace is ignored. Invalid versions are split all the same:
/// an image's database holds what dpkg accepted.
fn parts(v: &str) -> Parts<'_> {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
            (e.parse().unwrap_or(u64::MAX), rest)
        }
        _ => (0, v),
    };
    let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
    Parts {
        epoch,
        upstream,
        revision,
    }
}

/// The weight of one character outside a run of digits: `~` first, then
/// the end of the string (and digits, which end the run), then letters,
/// then everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating runs of non-digits (compared character
/// by character with [`order`]) and digits (compared as numbers).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// Compares two Debian versions as `dpkg --compare-versions` does.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (a, b) = (parts(a), parts(b));
    a.epoch
        .cmp(&b.epoch)
        .then_with(|| verrevcmp(a.upstream, b.upstream))
        .then_with(|| verrevcmp(a.revision, b.revision))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The comparison table of dpkg's own tests (`scripts/t/Dpkg_Version.t`,
    /// its `__DATA__`): two versions and the expected sign.
    const DPKG_CASES: &str = "\
1.0-1 2.0-2 -1
2.2~rc-4 2.2-1 -1
2.2-1 2.2~rc-4 1
1.0000-1 1.0-1 0
1 0:1 0
0 0:0-0 0
2:2.5 1:7.5 1
1:0foo 0foo 1
0:0foo 0foo 0
0foo 0foo 0
0foo- 0foo 0
0foo- 0foo-0 0
0foo 0fo 1
0foo- 0foo+ -1
0foo~1 0foo -1
0foo~foo+Bar 0foo~foo+bar -1
0foo~~ 0foo~ -1
1~ 1 -1
12345+that-really-is-some-ver-0 12345+that-really-is-some-ver-10 -1
0foo-0 0foo-01 -1
0foo.bar 0foobar 1
0foo.bar 0foo1bar 1
0foo.bar 0foo0bar 1
0foo1bar-1 0foobar-1 -1
0foo2.0 0foo2 1
0foo2.0.0 0foo2.10.0 -1
0foo2.0 0foo2.0.0 -1
0foo2.0 0foo2.10 -1
0foo2.1 0foo2.10 -1
1.09 1.9 0
1.0.8+nmu1 1.0.8 1
3.11 3.10+nmu1 1
0.9j-20080306-4 0.9i-20070324-2 1
1.2.0~b7-1 1.2.0~b6-1 1
1.011-1 1.06-2 1
0.0.9+dfsg1-1 0.0.8+dfsg1-3 1
4.6.99+svn6582-1 4.6.99+svn6496-1 1
53 52 1
0.9.9~pre122-1 0.9.9~pre111-1 1
2:2.3.2-2+lenny2 2:2.3.2-2 1
1:3.8.1-1 3.8.GA-1 1
1.0.1+gpl-1 1.0.1-2 1
1a 1000a -1
-0.6.5 0.9.1 -1
";

    fn sign(o: Ordering) -> i32 {
        match o {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        }
    }

    #[test]
    fn dpkg_s_own_comparison_table() {
        for line in DPKG_CASES.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (a, b, want) = (f[0], f[1], f[2].parse::<i32>().unwrap());
            assert_eq!(sign(compare(a, b)), want, "{a} cmp {b}");
            assert_eq!(sign(compare(b, a)), -want, "{b} cmp {a}");
        }
    }

    /// The comparisons of dpkg's C tests (`lib/dpkg/t/t-version.c`), whose
    /// versions are given as (epoch, upstream, revision).
    #[test]
    fn dpkg_s_c_library_tests() {
        let v = |e: u64, u: &str, r: &str| {
            let mut s = String::new();
            if e > 0 {
                s.push_str(&format!("{e}:"));
            }
            s.push_str(u);
            s.push('-');
            s.push_str(r);
            s
        };
        assert_eq!(compare(&v(0, "1", "1"), &v(0, "2", "1")), Ordering::Less);
        assert_eq!(compare(&v(0, "1", "1"), &v(0, "1", "2")), Ordering::Less);
        assert_eq!(compare(&v(0, "0", "0"), &v(0, "0", "0")), Ordering::Equal);
        assert_eq!(compare(&v(0, "0", "00"), &v(0, "00", "0")), Ordering::Equal);
        assert_eq!(compare(&v(1, "2", "3"), &v(1, "2", "3")), Ordering::Equal);
        assert_eq!(compare(&v(0, "0", "0"), &v(1, "0", "0")), Ordering::Less);
        assert_eq!(compare(&v(0, "a", "0"), &v(0, "b", "0")), Ordering::Less);
        assert_eq!(compare(&v(0, "0", "a"), &v(0, "0", "b")), Ordering::Less);
        // Parsing: epochs, several hyphens and colons, surrounding blanks.
        assert_eq!(compare("0:0-", "0"), Ordering::Equal);
        assert_eq!(compare("0:0.0-0.0", "0.0-0.0"), Ordering::Equal);
        assert_eq!(compare("5:1", &v(5, "1", "")), Ordering::Equal);
        assert_eq!(
            parts("0:0-0-0"),
            Parts {
                epoch: 0,
                upstream: "0-0",
                revision: "0"
            }
        );
        assert_eq!(
            parts("0:0:0:0-0"),
            Parts {
                epoch: 0,
                upstream: "0:0:0",
                revision: "0"
            }
        );
        assert_eq!(compare("  \t0:0-1", "0:0-1\t  "), Ordering::Equal);
    }

    #[test]
    fn versions_seen_in_debian_12() {
        for (a, b) in [
            ("2.36-9+deb12u9", "2.36-9+deb12u10"),
            ("1:9.2p1-2+deb12u3", "1:9.2p1-2+deb12u4"),
            ("3.0.15-1~deb12u1", "3.0.15-1"),
            ("252.33-1~deb12u1", "252.36-1~deb12u1"),
            ("1.6-2.1", "1.7.1-3"),
            ("7.88.1-10+deb12u8", "8.0"),
        ] {
            assert_eq!(compare(a, b), Ordering::Less, "{a} < {b}");
        }
    }
}
