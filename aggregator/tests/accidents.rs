//! Accident patterns through a running aggregator: a generated five-year register (made by
//! this test: 2021-2025, Beijing time) with planted hot spots is imported as CSV over the
//! API, then the patterns must name exactly what was planted.
//!
//! The register: 20,000 accidents at 300 places, each place equally likely, times spread
//! over the years (more each year: weights 1.0 ... 1.4) and over the day (few at night, many
//! at the rush hours). Planted on top: 60 more at each of three places (about 127 against
//! the typical 67: hot spots by place), and 150 more on Fridays between 17:00 and 18:00
//! (an hour of the week that stands out from the same hour on other days). Every other
//! place and hour is only chance, and must not be called a hot spot.

mod common;

use common::*;
use serde_json::Value;

/// xorshift64*: the same register on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// An index drawn with the given weights.
    fn weighted(&mut self, w: &[f64]) -> usize {
        let total: f64 = w.iter().sum();
        let mut x = (self.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        for (i, wi) in w.iter().enumerate() {
            if x < *wi {
                return i;
            }
            x -= wi;
        }
        w.len() - 1
    }
}

const HOT_PLACES: [&str; 3] = [
    "人民路与解放路交叉口",
    "G312 K1021+300",
    "苏嘉杭高速 K35+500",
];

/// Place `i` of 300: the first three are the hot spots-to-be, as ordinary as the rest
/// until the planted accidents.
fn place(i: u64) -> String {
    match HOT_PLACES.get(i as usize) {
        Some(p) => p.to_string(),
        None => format!("S{:03} 道路 K{}+{:03}", i % 30, i, (i * 37) % 1000),
    }
}

#[test]
fn planted_hot_spots_are_found_in_five_years_of_records() {
    let tz = jiff::tz::TimeZone::get("Asia/Shanghai").unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let hour_w: Vec<f64> = (0..24)
        .map(|h| match h {
            0..=5 => 0.3,
            7..=9 | 17..=19 => 2.0,
            _ => 1.0,
        })
        .collect();
    let years = [2021i16, 2022, 2023, 2024, 2025];
    let year_w = [1.0, 1.1, 1.2, 1.3, 1.4];
    let kinds = ["追尾", "刮擦", "侧面碰撞", "碰撞行人", "撞固定物"];
    let severities = ["轻微", "一般", "重大", "特大"];
    let sev_w = [70.0, 25.0, 4.5, 0.5];
    let mut per_year = std::collections::BTreeMap::new();
    let mut csv = String::from("time,place,severity,kind\n");
    let mut line = |rng: &mut Rng, place: &str, date: jiff::civil::Date, hour: i8| {
        let t = date.at(hour, rng.below(60) as i8, 0, 0);
        *per_year.entry(date.year()).or_insert(0u64) += 1;
        csv.push_str(&format!(
            "{},{place},{},{}\n",
            t.strftime("%Y-%m-%d %H:%M"),
            severities[rng.weighted(&sev_w)],
            kinds[rng.below(kinds.len() as u64) as usize]
        ));
    };
    let day_in = |rng: &mut Rng, year: i16| {
        let first = jiff::civil::date(year, 1, 1);
        first
            .checked_add(jiff::Span::new().days(rng.below(365) as i64))
            .unwrap()
    };
    for _ in 0..20_000 {
        let y = years[rng.weighted(&year_w)];
        let p = place(rng.below(300));
        let d = day_in(&mut rng, y);
        let h = rng.weighted(&hour_w) as i8;
        line(&mut rng, &p, d, h);
    }
    for hot in HOT_PLACES {
        for _ in 0..60 {
            let y = years[rng.weighted(&year_w)];
            let d = day_in(&mut rng, y);
            let h = rng.weighted(&hour_w) as i8;
            line(&mut rng, hot, d, h);
        }
    }
    // Fridays, 17:00-18:00, anywhere.
    for _ in 0..150 {
        let y = years[rng.below(5) as usize];
        let mut d = day_in(&mut rng, y);
        while d.weekday() != jiff::civil::Weekday::Friday {
            d = d.tomorrow().unwrap();
        }
        let p = place(rng.below(300));
        line(&mut rng, &p, d, 17);
    }
    let total: u64 = per_year.values().sum();
    // A bad line among them: named, the rest kept.
    csv.push_str("2024-02-30 08:00,人民路,一般,追尾\n");

    let rt = runtime();
    let dir = temp_dir("accidents");
    let text = county_config(&dir.0, free_port(), "");
    let agg = start_aggregator(&rt, &text);
    let post = |body: &str| -> (u16, Value) {
        let (status, _, b) = aggregator::client::request_with(
            agg.http_addr,
            "POST",
            "/api/v1/accidents",
            &[("Content-Type", "text/csv".to_string())],
            body.as_bytes(),
        )
        .unwrap();
        (status, serde_json::from_slice(&b).unwrap())
    };
    let started = std::time::Instant::now();
    let (status, r) = post(&csv);
    let import_secs = started.elapsed().as_secs_f64();
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["imported"], total, "{r}");
    assert_eq!(r["refused"], 1);
    assert!(
        r["errors"][0]
            .as_str()
            .unwrap()
            .contains(&format!("line {}", total + 2)),
        "{r}"
    );
    // The same file again: nothing new.
    let (_, again) = post(&csv);
    assert_eq!(again["imported"], 0, "{again}");
    assert_eq!(again["already_kept"], total);
    let (status, r) = post("place,kind\nx,y\n");
    assert_eq!(status, 400, "{r}");
    assert!(r["error"]
        .as_str()
        .unwrap()
        .contains("time, place, severity and kind"));

    let started = std::time::Instant::now();
    let (status, _, body) =
        aggregator::client::get_bytes(agg.http_addr, "/api/v1/accidents/patterns?top=10").unwrap();
    let query_secs = started.elapsed().as_secs_f64();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let p = &v["patterns"];
    assert_eq!(p["accidents"], total);
    assert_eq!(p["places"], 300);
    let ranked = p["places_ranked"].as_array().unwrap();
    let hot: Vec<&str> = ranked
        .iter()
        .filter(|s| s["hot"] == true)
        .map(|s| s["place"].as_str().unwrap())
        .collect();
    let mut want: Vec<&str> = HOT_PLACES.to_vec();
    want.sort();
    let mut got = hot.clone();
    got.sort();
    assert_eq!(
        got,
        want,
        "exactly the planted places: {}",
        serde_json::to_string_pretty(ranked).unwrap()
    );
    for s in &ranked[..3] {
        let by_year = s["by_year"].as_object().unwrap();
        assert_eq!(
            by_year.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
            s["count"].as_u64().unwrap()
        );
    }
    let hours: Vec<(u64, u64)> = p["hours_hot"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["weekday"].as_u64().unwrap(), h["hour"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        hours,
        vec![(5, 17)],
        "Friday 17:00 only: {}",
        p["hours_hot"]
    );
    let years_got: Vec<(i64, u64)> = p["years"]
        .as_array()
        .unwrap()
        .iter()
        .map(|y| (y["year"].as_i64().unwrap(), y["count"].as_u64().unwrap()))
        .collect();
    let years_want: Vec<(i64, u64)> = per_year.iter().map(|(y, n)| (*y as i64, *n)).collect();
    assert_eq!(years_got, years_want);
    assert!(
        years_got.windows(2).all(|w| w[1].1 > w[0].1),
        "the planted rise, year by year: {years_got:?}"
    );
    // A window: 2025 alone.
    let (_, _, body) = aggregator::client::get_bytes(
        agg.http_addr,
        "/api/v1/accidents/patterns?from=2025-01-01T00:00:00%2B08:00&to=2026-01-01T00:00:00%2B08:00",
    )
    .unwrap();
    let y25: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(y25["patterns"]["accidents"], per_year[&2025]);
    let _ = tz;
    eprintln!(
        "{total} accidents over 5 years imported in {import_secs:.2} s; patterns in {query_secs:.3} s; hot places {hot:?}; hot hours {hours:?}; years {years_got:?}"
    );
    rt.block_on(agg.stop());
}
