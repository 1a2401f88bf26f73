//! Small UTC time helpers (no time-zone database needed: frame times are UTC milliseconds).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses an RFC 3339 time, `YYYY-MM-DDThh:mm:ss[.fff]` followed by `Z` or an offset
/// `+hh:mm` / `-hh:mm` (Beijing time is `+08:00`), into UTC milliseconds since the epoch. A
/// space where the offset's `+` belongs is taken as `+`: an unescaped `+` in a URL's query
/// arrives as a space.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let (local, offset_min) = split_offset(s)?;
    parse_local_ms(local).map(|ms| ms - offset_min * 60_000)
}

/// Splits the zone designator off an RFC 3339 time: the rest and the offset in minutes.
fn split_offset(s: &str) -> Option<(&str, i64)> {
    if let Some(rest) = s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        return Some((rest, 0));
    }
    let cut = s.len().checked_sub(6)?;
    let (rest, zone) = (s.get(..cut)?, s.get(cut..)?);
    let z = zone.as_bytes();
    let sign = match z[0] {
        b'+' | b' ' => 1,
        b'-' => -1,
        _ => return None,
    };
    if z[3] != b':' || !z[1..3].iter().chain(&z[4..6]).all(u8::is_ascii_digit) {
        return None;
    }
    let (h, m): (i64, i64) = (zone[1..3].parse().ok()?, zone[4..6].parse().ok()?);
    if h > 23 || m > 59 {
        return None;
    }
    Some((rest, sign * (h * 60 + m)))
}

/// Parses `YYYY-MM-DDThh:mm:ss[.fff]` (no zone) as milliseconds since the epoch.
fn parse_local_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b'T' && b[10] != b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut ms = 0;
    let rest = &s[19..];
    if !rest.is_empty() {
        let frac = rest.strip_prefix('.')?;
        if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let padded = format!("{frac:0<3}");
        ms = padded[..3].parse::<i64>().ok()?;
    }
    Some((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se) * 1000 + ms)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats milliseconds since the epoch as `YYYY-MM-DDThh:mm:ss.fffZ`.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let frac = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_times() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T08:00:00.5Z"),
            Some(1_795_939_200_500)
        );
        // Beijing time, and the same with its `+` decoded to a space from a URL.
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T16:00:00.5+08:00"),
            Some(1_795_939_200_500)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T16:00:00 08:00"),
            Some(1_795_939_200_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-11-29T03:30:00-04:30"),
            Some(1_795_939_200_000)
        );
        assert_eq!(parse_rfc3339_ms("2026-11-29T08:00:00+8:00"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-29T08:00:00+24:00"), None);
        assert_eq!(parse_rfc3339_ms("2026-11-29T08:00:00"), None);
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
        assert_eq!(
            format_rfc3339_ms(1_795_939_200_500),
            "2026-11-29T08:00:00.500Z"
        );
    }

    proptest! {
        #[test]
        fn round_trip(ms in 0i64..4_102_444_800_000) {
            prop_assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Some(ms));
        }
        #[test]
        fn any_offset_names_the_same_instant(ms in 0i64..4_102_444_800_000, off in -23i64 * 60..=23 * 60) {
            let local = format_rfc3339_ms(ms + off * 60_000);
            let sign = if off < 0 { '-' } else { '+' };
            let zone = format!("{sign}{:02}:{:02}", off.abs() / 60, off.abs() % 60);
            let text = format!("{}{zone}", &local[..local.len() - 1]);
            prop_assert_eq!(parse_rfc3339_ms(&text), Some(ms));
        }
        #[test]
        fn never_panics(s in "\\PC{0,30}") { let _ = parse_rfc3339_ms(&s); }
    }
}
