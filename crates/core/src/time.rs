//! Dates, in the three forms imagectl meets them: seconds since the Unix
//! epoch, the `YYYYMMDDhhmmss` stamps of build IDs, and ISO 8601 in UTC as
//! EC2 writes creation dates (`2026-09-01T22:51:07.000Z`). One civil-date
//! conversion (Howard Hinnant's algorithms) serves all of them.

use std::time::SystemTime;

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Days since 1970-01-01 of a date in the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01: year, month, day.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A time split into its calendar fields, UTC.
fn fields(secs: i64) -> [i64; 6] {
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    let (y, m, d) = civil_from_days(days);
    [y, m, d, rem / 3600, rem % 3600 / 60, rem % 60]
}

/// Seconds since the epoch of calendar fields, if they make a time.
fn secs_of([y, m, d, hh, mm, ss]: [i64; 6]) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss)
}

/// `YYYYMMDDhhmmss` in UTC: the stamp of a build ID.
pub fn stamp(secs: i64) -> String {
    let [y, m, d, hh, mm, ss] = fields(secs);
    format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}")
}

/// The time a `YYYYMMDDhhmmss` stamp names; `None` for anything else.
pub fn stamp_secs(stamp: &str) -> Option<i64> {
    if stamp.len() != 14 || !stamp.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| stamp[r].parse::<i64>().ok();
    secs_of([
        n(0..4)?,
        n(4..6)?,
        n(6..8)?,
        n(8..10)?,
        n(10..12)?,
        n(12..14)?,
    ])
}

/// ISO 8601 in UTC to the second (`2026-11-26T10:54:54Z`), as OCI image
/// configs write creation times.
pub fn iso(secs: i64) -> String {
    let [y, m, d, hh, mm, ss] = fields(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// The time an ISO 8601 UTC time names, as EC2 writes it
/// (`2026-09-01T22:51:07.000Z`; fractions of a second are dropped).
pub fn iso_secs(iso: &str) -> Option<i64> {
    let (date, time) = iso.split_once('T')?;
    let time = time.strip_suffix('Z')?;
    let time = time.split_once('.').map_or(time, |(t, _)| t);
    let num = |s: &str, len: usize| {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<i64>().ok())
            .flatten()
    };
    let mut d = date.split('-');
    let mut t = time.split(':');
    let f = [
        num(d.next()?, 4)?,
        num(d.next()?, 2)?,
        num(d.next()?, 2)?,
        num(t.next()?, 2)?,
        num(t.next()?, 2)?,
        num(t.next()?, 2)?,
    ];
    if d.next().is_some() || t.next().is_some() {
        return None;
    }
    secs_of(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps() {
        assert_eq!(stamp(0), "19700101000000");
        assert_eq!(stamp(1_795_690_494), "20261126105454");
        assert_eq!(stamp(951_782_400), "20000229000000");
    }

    #[test]
    fn stamps_read_back() {
        for secs in [0, 951_782_400, 1_795_690_494, 4_102_444_799] {
            assert_eq!(stamp_secs(&stamp(secs)), Some(secs));
        }
        for bad in [
            "",
            "2026112610545",
            "20261326105454",
            "2026112610545x",
            "-0261126105454",
        ] {
            assert_eq!(stamp_secs(bad), None, "{bad}");
        }
    }

    #[test]
    fn iso_times() {
        assert_eq!(iso_secs("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(iso_secs("2026-11-26T10:54:54Z"), Some(1_795_690_494));
        assert_eq!(iso_secs("2000-02-29T00:00:00.000Z"), Some(951_782_400));
        assert_eq!(iso(1_795_690_494), "2026-11-26T10:54:54Z");
        for secs in [0, 951_782_400, 1_795_690_494] {
            assert_eq!(iso_secs(&iso(secs)), Some(secs));
        }
        for bad in [
            "yesterday",
            "2026-11-26",
            "2026-11-26T10:54:54",
            "2026-13-01T00:00:00Z",
            "2026-1-01T00:00:00Z",
        ] {
            assert_eq!(iso_secs(bad), None, "{bad}");
        }
    }
}
