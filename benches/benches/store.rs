//! Storage benchmark, both backends side by side: ingest rate of vehicle passes (batches of
//! 1000, then the same passes again to measure the idempotent path) and query latency (exact
//! plate, one checkpoint over one hour) at the stored size. `STORE_ROWS` (default 200000)
//! sizes it; the target is 10 million; `STORE_BATCH` sets the batch (default 1000).
//! PostgreSQL is the server on 127.0.0.1:5432 (`TRAFFIC_PG_URL`), in a schema of its own
//! that is dropped afterwards. `STORE_BACKENDS` picks one (`sqlite` or `postgres`).
//! `STORE_SYNC_COMPARE=1` runs SQLite a second time with commits not synced (`NORMAL`).
//! `STORE_KEEP=1` keeps the SQLite database. `STORE_DAYS` (default 30) spreads the passes
//! from 2026-07-01 UTC; last, July's passes are purged by retention (on PostgreSQL a month is
//! a partition: dropped whole when the passes span more than 31 days). `STORE_WRITERS=k`
//! measures PostgreSQL's ingest alone with k connections writing side by side.

use std::time::Instant;

use aggregator::pg::PgStore;
use aggregator::store::{EventFilter, EventStore, SqliteStore};
use protocol::*;

/// 2026-07-01T00:00:00Z: the passes start at a month's start.
const T0: i64 = 1_782_864_000_000;
/// 2026-08-01T00:00:00Z: retention drops July.
const AUGUST: i64 = 1_785_542_400_000;

/// `STORE_DAYS` (default 30) the passes spread over.
fn days() -> i64 {
    static DAYS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *DAYS.get_or_init(|| {
        std::env::var("STORE_DAYS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30)
    })
}

fn pass(i: u64, n: u64) -> Event {
    // Spread over `days()` from T0; 20 checkpoints; plates drawn from a pool of n/20.
    let t = T0 + (i as i128 * days() as i128 * 86_400_000 / n as i128) as i64;
    let ck = format!("320505000512100000{:02}", i % 20);
    let plate = format!(
        "苏E{:05}",
        (i.wrapping_mul(2_654_435_761)) % (n / 20).max(1)
    );
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: ulid::Ulid::from_parts(t as u64, i as u128).to_string(),
        severity: Severity::Info,
        node_id: DeviceId::parse("32050500055050000001").unwrap(),
        checkpoint_id: DeviceId::parse(&ck).unwrap(),
        camera_id: DeviceId::parse("32050500051320000001").unwrap(),
        lane: Some((i % 4) as u32 + 1),
        frame_time_ms: t,
        detections: vec![Detection {
            class: "car".into(),
            score: 0.9,
            bbox: BBox::new(10.0, 10.0, 200.0, 150.0),
            track_id: Some(i),
        }],
        rule: None,
        evidence: vec![],
        review: ReviewState::NotRequired,
        clock: None,
        body: EventBody::VehiclePass(VehiclePass {
            track_id: i,
            plate: Some(plate),
            char_confidence: vec![0.99; 7],
            plate_colour: Some(plate::PlateColor::Blue),
            plate_class: Some(plate::PlateClass::SmallCar),
            vehicle_class: "car".into(),
            direction: None,
            first_seen_ms: None,
            last_seen_ms: None,
            plate_reads: 0,
            registry_version: None,
            plate_unsure: false,
        }),
    }
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn run(name: &str, store: &mut dyn EventStore, n: u64) {
    let batch: u64 = std::env::var("STORE_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let t = Instant::now();
    let mut i = 0;
    // The rate over each tenth, to show how it changes as the table grows.
    let tenth = (n / 10).max(1);
    let (mut mark, mut mark_t) = (0u64, Instant::now());
    while i < n {
        let evs: Vec<Event> = (i..(i + batch).min(n)).map(|k| pass(k, n)).collect();
        store.insert_batch(&evs, 0).unwrap();
        i = (i + batch).min(n);
        if i - mark >= tenth || i == n {
            let rate = (i - mark) as f64 / mark_t.elapsed().as_secs_f64();
            eprintln!("{name}: {i}/{n} stored, {rate:.0} passes/s since {mark}");
            (mark, mark_t) = (i, Instant::now());
        }
    }
    let ingest = n as f64 / t.elapsed().as_secs_f64();
    let again = n.min(100_000);
    let t = Instant::now();
    let mut i = 0;
    while i < again {
        let evs: Vec<Event> = (i..(i + batch).min(again)).map(|k| pass(k, n)).collect();
        assert_eq!(store.insert_batch(&evs, 0).unwrap(), 0);
        i += batch;
    }
    let dup = again as f64 / t.elapsed().as_secs_f64();
    // The retention job's upkeep (PostgreSQL: a vacuum, so that the plate searches are
    // answered from their indexes alone), as it runs every purge interval.
    let t = Instant::now();
    store.maintain().unwrap();
    let upkeep_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut plate_ms = Vec::new();
    let mut range_ms = Vec::new();
    let mut traj_ms = Vec::new();
    let mut near_ms = Vec::new();
    let mut time_ms = Vec::new();
    let mut flow_ms = Vec::new();
    let mut prefix_ms = Vec::new();
    for q in 0..200u64 {
        let p = pass(q * 7919 % n, n);
        let EventBody::VehiclePass(v) = &p.body else {
            unreachable!()
        };
        let t = Instant::now();
        let r = store
            .list(&EventFilter {
                plate: v.plate.clone(),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        plate_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(!r.events.is_empty());
        let t = Instant::now();
        store
            .list(&EventFilter {
                checkpoints: vec![p.checkpoint_id.to_string()],
                from_ms: Some(p.frame_time_ms),
                to_ms: Some(p.frame_time_ms + 3_600_000),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        range_ms.push(t.elapsed().as_secs_f64() * 1e3);
        // A trajectory: the plate's passes over a day, in time order, every page.
        let t = Instant::now();
        let mut cursor = None;
        loop {
            let page = store
                .list(&EventFilter {
                    kind: Some(EventKind::VehiclePass),
                    plate: v.plate.clone(),
                    from_ms: Some(p.frame_time_ms - 43_200_000),
                    to_ms: Some(p.frame_time_ms + 43_200_000),
                    limit: 1000,
                    cursor: cursor.take(),
                    ..Default::default()
                })
                .unwrap();
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        traj_ms.push(t.elapsed().as_secs_f64() * 1e3);
        // Within one edit of the plate: its keys in `plate_keys`, then the plates found.
        let t = Instant::now();
        store
            .list(&EventFilter {
                plate: v.plate.clone(),
                plate_near: true,
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        near_ms.push(t.elapsed().as_secs_f64() * 1e3);
        // A prefix wildcard: the plate's first six characters and `*` (a hundred plates of
        // the pool), first page.
        let prefix: String = v.plate.as_deref().unwrap().chars().take(6).collect();
        let t = Instant::now();
        let r = store
            .list(&EventFilter {
                plate: Some(format!("{prefix}*")),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        prefix_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(!r.events.is_empty());
        // Every event in a one-minute window, first page.
        let t = Instant::now();
        store
            .list(&EventFilter {
                from_ms: Some(p.frame_time_ms),
                to_ms: Some(p.frame_time_ms + 60_000),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        time_ms.push(t.elapsed().as_secs_f64() * 1e3);
        // Traffic flow: one day of hours, every checkpoint and lane.
        if q < 20 {
            let t = Instant::now();
            store
                .flow(&aggregator::store::FlowQuery {
                    checkpoints: vec![],
                    county: None,
                    from_ms: p.frame_time_ms,
                    to_ms: p.frame_time_ms + 86_400_000,
                    bucket_ms: 3_600_000,
                })
                .unwrap();
            flow_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    eprintln!();
    // Retention of July's passes (a whole month when the passes span more than 31 days).
    let t = Instant::now();
    let (purged, _) = store.purge(EventKind::VehiclePass, AUGUST).unwrap();
    let retention_ms = t.elapsed().as_secs_f64() * 1e3;
    let q = |v: Vec<f64>| format!("{:.2} / {:.2}", pct(v.clone(), 0.5), pct(v, 0.99));
    println!(
        "{name:<10} {n:>9} rows  ingest {ingest:>8.0} passes/s  idempotent re-ingest {dup:>8.0}/s\n  p50 / p99 ms: plate {}  trajectory {}  within-one-edit {}  prefix wildcard {}  checkpoint-hour {}  minute of all events {}  flow (day, all checkpoints) {}\n  upkeep (vacuum) after ingest {upkeep_ms:.0} ms; retention of July: {purged} passes in {retention_ms:.0} ms",
        q(plate_ms),
        q(traj_ms),
        q(near_ms),
        q(prefix_ms),
        q(range_ms),
        q(time_ms),
        q(flow_ms)
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let n: u64 = std::env::var("STORE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // `STORE_BACKENDS=sqlite` or `postgres` runs one of them.
    let backends = std::env::var("STORE_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let dir = std::env::temp_dir().join(format!("store-bench-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    if backends.contains("sqlite") {
        let mut sqlite = SqliteStore::open(&dir.join("bench.db")).unwrap();
        run("sqlite", &mut sqlite, n);
        drop(sqlite);
        // `STORE_SYNC_COMPARE=1`: the same again with commits not synced to disk
        // (`synchronous=NORMAL`, as before acknowledgements meant durable), side by side.
        if std::env::var("STORE_SYNC_COMPARE").is_ok() {
            let mut sqlite = SqliteStore::open(&dir.join("bench-normal.db"))
                .and_then(|s| s.with_synchronous("NORMAL"))
                .unwrap();
            run("sqlite, commits not synced (NORMAL)", &mut sqlite, n);
            drop(sqlite);
        }
    }
    // `STORE_KEEP=1` keeps the SQLite database (and the PostgreSQL schema) for a look afterwards.
    if std::env::var("STORE_KEEP").is_ok() {
        eprintln!("kept {}", dir.display());
    } else {
        std::fs::remove_dir_all(&dir).ok();
    }
    if !backends.contains("postgres") {
        return;
    }

    let url = std::env::var("TRAFFIC_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
    let schema = format!("bench_{}", ulid::Ulid::new().to_string().to_lowercase());
    // `STORE_WRITERS=k` (k > 1): ingest alone, batches dealt round to k connections, each on
    // a thread of its own; what more writers would give (the aggregator has one).
    let writers: u64 = std::env::var("STORE_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    if writers > 1 {
        let batch: u64 = std::env::var("STORE_BATCH")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        PgStore::connect(&url, &schema).expect("PostgreSQL on 127.0.0.1:5432");
        let t = Instant::now();
        std::thread::scope(|sc| {
            for w in 0..writers {
                let (url, schema) = (&url, &schema);
                sc.spawn(move || {
                    let mut pg = PgStore::connect(url, schema).unwrap();
                    let mut start = w * batch;
                    while start < n {
                        let evs: Vec<Event> = (start..(start + batch).min(n))
                            .map(|k| pass(k, n))
                            .collect();
                        pg.insert_batch(&evs, 0).unwrap();
                        start += writers * batch;
                    }
                });
            }
        });
        println!(
            "postgres, {writers} writers: {n} passes stored at {:.0} passes/s",
            n as f64 / t.elapsed().as_secs_f64()
        );
    } else {
        let mut pg = PgStore::connect(&url, &schema).expect("PostgreSQL on 127.0.0.1:5432");
        run("postgres", &mut pg, n);
    }
    // `STORE_KEEP=1` keeps the PostgreSQL schema too.
    if std::env::var("STORE_KEEP").is_ok() {
        eprintln!("kept schema {schema}");
        return;
    }
    aggregator::store::pg::drop_schema(&url, &schema).unwrap();
}
