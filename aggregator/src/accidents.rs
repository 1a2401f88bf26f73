//! Accident patterns: records imported from the traffic police's accident register (CSV),
//! then where and when accidents gather and how they move year by year.
//!
//! **Import** (`POST /api/v1/accidents`, CSV, UTF-8, a header line naming the columns in any
//! order): `time` (`2024-03-05 17:42[:00]` in the display time zone, or RFC 3339 with its
//! offset), `place` (the register's place: a road and kilometre post, a crossing's name),
//! `severity` (`轻微`/`minor`, `一般`/`general`, `重大`/`major`, `特大`/`severe`: the four
//! classes of the register), `kind` (as written: 追尾, 刮擦, 碰撞行人...), and optionally `id`
//! (the register's number; without it a record's id is a digest of its fields, so a file
//! imported twice is stored once), `lat`, `lon`. Every bad line is named with its number and
//! what is wrong; good lines are kept either way.
//!
//! **Hot spots by place.** A place is a hot spot when it holds more accidents than the
//! typical place would by chance: its count against a Poisson law whose mean is the median
//! count of the places in the window (the median, so that the hot spots themselves do not
//! raise the bar), significant at `alpha` after a Bonferroni correction for the number of
//! places (a city has hundreds: without it some would stand out by chance alone).
//! **Hot spots by hour of the week.** The same test for each of the 168 hours of the week,
//! against the mean of the same hour on the other six days: an hour that stands out from
//! its own time of day (accidents are fewer at night every day; that is no hot spot).
//! **Trends by year**: counts per year, by severity and kind, and each hot spot's count per
//! year.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// One accident record as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accident {
    pub id: String,
    pub time_ms: i64,
    pub place: String,
    pub severity: String,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lat: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lon: Option<f64>,
}

/// The register's four classes, by their English names.
pub const SEVERITIES: [&str; 4] = ["minor", "general", "major", "severe"];

fn severity(s: &str) -> Option<&'static str> {
    Some(match s.trim() {
        "minor" | "轻微" | "轻微事故" => "minor",
        "general" | "一般" | "一般事故" => "general",
        "major" | "重大" | "重大事故" => "major",
        "severe" | "特大" | "特大事故" => "severe",
        _ => return None,
    })
}

/// Splits CSV text into records (RFC 4180: quoted fields may hold commas, quotes doubled,
/// line breaks); each with the line it starts on.
fn records(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let (mut field, mut row) = (String::new(), Vec::new());
    let (mut quoted, mut line, mut start) = (false, 1usize, 1usize);
    let mut chars = text.trim_start_matches('\u{feff}').chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c);
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                if row.iter().any(|f| !f.trim().is_empty()) {
                    out.push((start, std::mem::take(&mut row)));
                }
                row.clear();
                line += 1;
                start = line;
            }
            (false, c) => field.push(c),
        }
    }
    row.push(field);
    if row.iter().any(|f| !f.trim().is_empty()) {
        out.push((start, row));
    }
    out
}

/// What an import made of a file: the records and each bad line's problem.
#[derive(Debug, Default)]
pub struct Parsed {
    pub accidents: Vec<Accident>,
    pub errors: Vec<String>,
}

/// Reads a CSV file of accident records; times without an offset are read in `tz`.
pub fn parse_csv(text: &str, tz: &jiff::tz::TimeZone) -> Result<Parsed, String> {
    let mut rows = records(text).into_iter();
    let (_, header) = rows
        .next()
        .ok_or("the file is empty; the first line names the columns: time,place,severity,kind[,id,lat,lon]")?;
    let col = |name: &str| {
        header
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(name))
    };
    let (Some(ct), Some(cp), Some(cs), Some(ck)) =
        (col("time"), col("place"), col("severity"), col("kind"))
    else {
        return Err(format!(
            "the header line '{}' must name the columns time, place, severity and kind (id, lat, lon optional)",
            header.join(",")
        ));
    };
    let (ci, clat, clon) = (col("id"), col("lat"), col("lon"));
    let mut p = Parsed::default();
    for (line, r) in rows {
        let get = |i: usize| r.get(i).map(|s| s.trim()).unwrap_or("");
        let mut bad = Vec::new();
        let time_ms = parse_time(get(ct), tz);
        if time_ms.is_none() {
            bad.push(format!(
                "time '{}' is not like 2024-03-05 17:42 or RFC 3339",
                get(ct)
            ));
        }
        let place = get(cp);
        if place.is_empty() || place.chars().count() > 200 {
            bad.push("place is empty or over 200 characters".to_string());
        }
        let sev = severity(get(cs));
        if sev.is_none() {
            bad.push(format!(
                "severity '{}' is none of 轻微/minor, 一般/general, 重大/major, 特大/severe",
                get(cs)
            ));
        }
        let kind = get(ck);
        if kind.chars().count() > 100 {
            bad.push("kind is over 100 characters".to_string());
        }
        let coord = |c: Option<usize>, lo: f64, hi: f64, name: &str, bad: &mut Vec<String>| {
            let s = c.map(get).unwrap_or("");
            if s.is_empty() {
                return None;
            }
            match s.parse::<f64>() {
                Ok(v) if (lo..=hi).contains(&v) => Some(v),
                _ => {
                    bad.push(format!("{name} '{s}' is not a number in {lo}..{hi}"));
                    None
                }
            }
        };
        let lat = coord(clat, -90.0, 90.0, "lat", &mut bad);
        let lon = coord(clon, -180.0, 180.0, "lon", &mut bad);
        let given_id = ci.map(get).unwrap_or("");
        if given_id.chars().count() > 64 {
            bad.push("id is over 64 characters".to_string());
        }
        if !bad.is_empty() {
            p.errors.push(format!("line {line}: {}", bad.join("; ")));
            continue;
        }
        let (t, sev) = (time_ms.expect("checked"), sev.expect("checked"));
        let id = if given_id.is_empty() {
            let h = Sha256::digest(format!("{t}|{place}|{sev}|{kind}").as_bytes());
            format!("sha256:{}", hex::encode(&h[..12]))
        } else {
            given_id.to_string()
        };
        p.accidents.push(Accident {
            id,
            time_ms: t,
            place: place.to_string(),
            severity: sev.to_string(),
            kind: kind.to_string(),
            lat,
            lon,
        });
    }
    Ok(p)
}

fn parse_time(s: &str, tz: &jiff::tz::TimeZone) -> Option<i64> {
    if let Some(ms) = protocol::time::parse_rfc3339_ms(s) {
        return Some(ms);
    }
    let s = s.replace('/', "-");
    let civil: jiff::civil::DateTime = s.parse().ok().or_else(|| format!("{s}:00").parse().ok())?;
    Some(
        civil
            .to_zoned(tz.clone())
            .ok()?
            .timestamp()
            .as_millisecond(),
    )
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9: about 15 digits).
fn ln_gamma(x: f64) -> f64 {
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + 7.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// P(X >= k) for X Poisson with mean `lambda`.
pub fn poisson_tail(k: u64, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if lambda <= 0.0 {
        return 0.0;
    }
    let ln_pmf = |i: f64| i * lambda.ln() - lambda - ln_gamma(i + 1.0);
    // Below the mean: one minus the (short) lower sum; above it: the upper sum, whose
    // terms fall fast.
    if (k as f64) <= lambda {
        let lower: f64 = (0..k).map(|i| ln_pmf(i as f64).exp()).sum();
        return (1.0 - lower).clamp(0.0, 1.0);
    }
    let mut sum = 0.0;
    let mut i = k as f64;
    loop {
        let term = ln_pmf(i).exp();
        sum += term;
        if term < sum * 1e-17 || i > k as f64 + 10_000.0 {
            break;
        }
        i += 1.0;
    }
    sum.min(1.0)
}

/// A place or an hour of the week that stands out.
#[derive(Debug, Clone, Serialize)]
pub struct PlaceSpot {
    pub place: String,
    pub count: u64,
    /// What the typical place had (the median) in the same window.
    pub expected: f64,
    /// P(count this high or more by chance), before the correction.
    pub p_value: f64,
    pub hot: bool,
    pub by_severity: BTreeMap<String, u64>,
    pub by_year: BTreeMap<i16, u64>,
    /// The hour of the day most of its accidents fell in (display time zone).
    pub worst_hour: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct HourSpot {
    /// 1 Monday .. 7 Sunday (ISO), display time zone.
    pub weekday: u8,
    pub hour: u8,
    pub count: u64,
    /// The mean of the same hour on the other six days.
    pub expected: f64,
    pub p_value: f64,
    pub hot: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Year {
    pub year: i16,
    pub count: u64,
    pub by_severity: BTreeMap<String, u64>,
    pub by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Patterns {
    pub accidents: u64,
    pub places: usize,
    pub alpha: f64,
    /// Places ranked by count (the hot ones first), at most `top`.
    pub places_ranked: Vec<PlaceSpot>,
    /// Every hour of the week that stands out, and the busiest ten.
    pub hours_hot: Vec<HourSpot>,
    pub hours_busiest: Vec<HourSpot>,
    pub years: Vec<Year>,
}

/// Hot spots and trends of `rows`; times in `tz`; significance `alpha` (corrected for the
/// number of tests); at most `top` places listed.
pub fn patterns(rows: &[Accident], tz: &jiff::tz::TimeZone, alpha: f64, top: usize) -> Patterns {
    struct Local {
        year: i16,
        weekday: u8,
        hour: u8,
    }
    let local = |ms: i64| {
        let z = jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned(tz.clone());
        Local {
            year: z.year(),
            weekday: z.weekday().to_monday_one_offset() as u8,
            hour: z.hour() as u8,
        }
    };
    let mut by_place: HashMap<&str, Vec<(&Accident, Local)>> = HashMap::new();
    let mut week = [[0u64; 24]; 7];
    let mut years: BTreeMap<i16, Year> = BTreeMap::new();
    for a in rows {
        let l = local(a.time_ms);
        week[l.weekday as usize - 1][l.hour as usize] += 1;
        let y = years.entry(l.year).or_insert_with(|| Year {
            year: l.year,
            count: 0,
            by_severity: BTreeMap::new(),
            by_kind: BTreeMap::new(),
        });
        y.count += 1;
        *y.by_severity.entry(a.severity.clone()).or_default() += 1;
        *y.by_kind.entry(a.kind.clone()).or_default() += 1;
        by_place.entry(a.place.as_str()).or_default().push((a, l));
    }
    // Places.
    let mut counts: Vec<u64> = by_place.values().map(|v| v.len() as u64).collect();
    counts.sort_unstable();
    let median = match counts.len() {
        0 => 0.0,
        n if n % 2 == 1 => counts[n / 2] as f64,
        n => (counts[n / 2 - 1] + counts[n / 2]) as f64 / 2.0,
    };
    let place_alpha = alpha / by_place.len().max(1) as f64;
    let mut spots: Vec<PlaceSpot> = by_place
        .iter()
        .map(|(place, v)| {
            let count = v.len() as u64;
            let p = poisson_tail(count, median);
            let mut by_severity = BTreeMap::new();
            let mut by_year = BTreeMap::new();
            let mut hours = [0u64; 24];
            for (a, l) in v {
                *by_severity.entry(a.severity.clone()).or_default() += 1;
                *by_year.entry(l.year).or_default() += 1;
                hours[l.hour as usize] += 1;
            }
            let worst_hour = (0..24)
                .max_by_key(|h| (hours[*h], std::cmp::Reverse(*h)))
                .unwrap_or(0) as u8;
            PlaceSpot {
                place: place.to_string(),
                count,
                expected: median,
                p_value: p,
                hot: p < place_alpha && count as f64 > median,
                by_severity,
                by_year,
                worst_hour,
            }
        })
        .collect();
    spots.sort_by(|a, b| {
        (b.hot, b.count)
            .cmp(&(a.hot, a.count))
            .then_with(|| a.place.cmp(&b.place))
    });
    spots.truncate(top);
    // Hours of the week, each against its own hour on the other days.
    let hour_alpha = alpha / 168.0;
    let mut hours: Vec<HourSpot> = Vec::with_capacity(168);
    for (d, day) in week.iter().enumerate() {
        for (h, &count) in day.iter().enumerate() {
            let others: u64 = (0..7).filter(|o| *o != d).map(|o| week[o][h]).sum();
            let expected = others as f64 / 6.0;
            let p = poisson_tail(count, expected);
            hours.push(HourSpot {
                weekday: d as u8 + 1,
                hour: h as u8,
                count,
                expected,
                p_value: p,
                hot: p < hour_alpha && count as f64 > expected,
            });
        }
    }
    let hours_hot: Vec<HourSpot> = hours.iter().filter(|h| h.hot).cloned().collect();
    hours.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then((a.weekday, a.hour).cmp(&(b.weekday, b.hour)))
    });
    hours.truncate(10);
    Patterns {
        accidents: rows.len() as u64,
        places: by_place.len(),
        alpha,
        places_ranked: spots,
        hours_hot,
        hours_busiest: hours,
        years: years.into_values().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_tail_against_known_values() {
        // P(X >= 1 | 1) = 1 - e^-1; P(X >= 3 | 1) = 1 - e^-1 (1 + 1 + 1/2).
        let e = (-1f64).exp();
        assert!((poisson_tail(1, 1.0) - (1.0 - e)).abs() < 1e-12);
        assert!((poisson_tail(3, 1.0) - (1.0 - e * 2.5)).abs() < 1e-12);
        // Far in the tail: P(X >= 200 | 100) = 9.343e-19 (the pmf summed from 200 on in
        // double precision with Python's math.lgamma).
        let p = poisson_tail(200, 100.0);
        assert!((p / 9.343_150e-19 - 1.0).abs() < 1e-5, "{p}");
        assert_eq!(poisson_tail(0, 5.0), 1.0);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-10);
    }

    #[test]
    fn csv_lines_are_read_or_named() {
        let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
        let text = "\u{feff}time,place,severity,kind,lat\r\n\
            2024-03-05 17:42,\"人民路, 3公里\",一般,追尾,31.3\n\
            2024-03-05T09:42:00Z,人民路 3公里,minor,\"刮擦\"\"\"\n\
            yesterday,人民路,一般,追尾,\n\
            2024-03-06 08:00,人民路,catastrophic,追尾,95\n";
        let p = parse_csv(text, &tz).unwrap();
        assert_eq!(p.accidents.len(), 2, "{:?}", p.errors);
        assert_eq!(p.accidents[0].place, "人民路, 3公里");
        assert_eq!(
            p.accidents[0].time_ms,
            protocol::time::parse_rfc3339_ms("2024-03-05T09:42:00Z").unwrap()
        );
        assert_eq!(p.accidents[0].time_ms, p.accidents[1].time_ms);
        assert_eq!(p.accidents[0].lat, Some(31.3));
        assert_eq!(p.accidents[1].kind, "刮擦\"");
        assert!(p.accidents[0].id.starts_with("sha256:"));
        assert_eq!(p.errors.len(), 2);
        assert!(
            p.errors[0].starts_with("line 4: time 'yesterday'"),
            "{:?}",
            p.errors
        );
        assert!(
            p.errors[1].contains("severity 'catastrophic'") && p.errors[1].contains("lat '95'"),
            "{:?}",
            p.errors
        );
        assert!(parse_csv("place,kind\n", &tz)
            .unwrap_err()
            .contains("time, place"));
    }
}
