//! Load: the aggregator binary fed at least ten times a busy county's event rate (normal:
//! 100 events/s, 40 checkpoints of four lanes at peak) with evidence images among the
//! events, from eight publishing nodes as fast as it lets them. Its memory stays bounded
//! (the ingest queue is limited in samples and bytes), back-pressure shows in its metrics
//! (the queue fills, zenoh's delivery and the publishers wait), and every event and image is
//! stored exactly once.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::*;
use zenoh::qos::CongestionControl;

mod common;
use common::*;

const NORMAL_PER_SEC: f64 = 100.0;
const EVENTS: usize = 160_000;
const IMAGE_EVERY: usize = 20;
const IMAGE_BYTES: usize = 32 * 1024;
const NODES: usize = 8;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
}

#[test]
fn ten_times_the_normal_rate_bounded_memory_backpressure_nothing_lost() {
    let dir = temp_dir("load");
    let zport = free_port();
    let cfg = dir.0.join("agg.toml");
    // `LOAD_PG_WRITERS=k` (by hand): the same on PostgreSQL with k writers.
    let pg_writers: Option<usize> = std::env::var("LOAD_PG_WRITERS")
        .ok()
        .and_then(|v| v.parse().ok());
    let schema = format!("load_{}", ulid::Ulid::new().to_string().to_lowercase());
    let storage = match pg_writers {
        Some(k) => format!(
            "backend = \"postgres\"\npostgres_url = \"{}\"\npostgres_schema = \"{schema}\"\nwriters = {k}\n",
            pg_url()
        ),
        None => format!("sqlite_path = \"{}\"\n", dir.0.join("agg.db").display()),
    };
    std::fs::write(
        &cfg,
        format!(
            "id = \"32050500055030000001\"\nscope = \"county:320505\"\n[auth]\nrequired = false\n[storage]\n{storage}[http]\nlisten = \"127.0.0.1:0\"\n[zenoh]\nlisten = [\"tcp/127.0.0.1:{zport}\"]\n[retention]\ndefault_days = 0\n"
        ),
    )
    .unwrap();
    let addr_file = dir.0.join("addr");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_aggregator"))
            .args(["run", "--config"])
            .arg(&cfg)
            .arg("--addr-file")
            .arg(&addr_file)
            .env(
                "RUST_LOG",
                std::env::var("LOAD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stderr(Stdio::from(
                std::fs::File::create(dir.0.join("agg.log")).unwrap(),
            ))
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    wait_until("the aggregator's address", Duration::from_secs(30), || {
        std::fs::read_to_string(&addr_file).is_ok_and(|s| !s.trim().is_empty())
    });
    let addr: std::net::SocketAddr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let get = |path: &str| aggregator::client::get(addr, path).unwrap().1;
    let health = || -> serde_json::Value { serde_json::from_str(&get("/health")).unwrap() };

    // Memory, sampled every 100 ms from before the load until everything is stored.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let baseline = rss_kib(pid);
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    let rt = runtime();
    let session = peer(&rt, zport);
    std::thread::sleep(Duration::from_secs(1));

    // Eight nodes (one checkpoint each), 4,000 plates, an image with every 20th event.
    let t0 = 1_795_000_000_000i64;
    let image = jpeg(64, 48, IMAGE_BYTES);
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for n in 0..NODES {
            let s = session.clone();
            let image = image.clone();
            tasks.push(tokio::spawn(async move {
                let ck = format!("3205050005121000{:04}", n + 1);
                let cam = format!("3205050005132000{:04}", n + 1);
                let ckid = DeviceId::parse(&ck).unwrap();
                let camid = DeviceId::parse(&cam).unwrap();
                for i in (n..EVENTS).step_by(NODES) {
                    let plate = format!("苏E{:05}", i % 4000);
                    let ev = pass(
                        &ck,
                        &cam,
                        "32050500055050000001",
                        t0 + i as i64 * 25,
                        &plate,
                        1 + (i % 4) as u32,
                    );
                    if i % IMAGE_EVERY == 0 {
                        let key = keys::evidence(&ckid, &camid, &format!("img-{i}"));
                        s.put(key, image.clone())
                            .attachment(integrity::attachment(&image))
                            .congestion_control(CongestionControl::Block)
                            .await
                            .unwrap();
                    }
                    let key =
                        keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
                    let body = ev.encode();
                    s.put(key, body.clone())
                        .attachment(integrity::attachment(&body))
                        .congestion_control(CongestionControl::Block)
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let send_secs = started.elapsed().as_secs_f64();
    let images = EVENTS.div_ceil(IMAGE_EVERY) as u64;
    wait_until(
        "every event and image stored",
        Duration::from_secs(300),
        || {
            let h = health();
            h["ingest"]["stored"].as_u64() == Some(EVENTS as u64)
                && h["ingest"]["evidence_stored"].as_u64() == Some(images)
        },
    );
    let all_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();

    let h = health();
    let m = get("/metrics");
    let rate = EVENTS as f64 / send_secs;
    let peak_mib = peak.load(Ordering::Relaxed) / 1024;
    let ledger = format!(
        "load ledger: produced {EVENTS} events + {images} images in {send_secs:.1} s ({rate:.0}/s = {:.0}x normal), all stored after {all_secs:.1} s | stored {} + {} images, duplicates {}, rejected {}, lost {} | queue peak {:.0}/{} samples, full {:.0} times, delivery waited {:.2} s | RSS baseline {} MiB, peak {peak_mib} MiB",
        rate / NORMAL_PER_SEC,
        h["ingest"]["stored"],
        h["ingest"]["evidence_stored"],
        h["ingest"]["duplicates"],
        h["ingest"]["rejected"],
        EVENTS as u64 - h["ingest"]["stored"].as_u64().unwrap(),
        metric(&m, "aggregator_ingest_queue_peak"),
        aggregator::ingest::INGEST_QUEUE,
        metric(&m, "aggregator_ingest_queue_full_total"),
        metric(&m, "aggregator_ingest_blocked_seconds_total"),
        baseline / 1024,
    );
    eprintln!("{ledger}");
    assert!(rate >= 10.0 * NORMAL_PER_SEC, "{ledger}");
    assert_eq!(h["ingest"]["duplicates"], 0, "{ledger}");
    assert_eq!(h["ingest"]["rejected"], 0, "{ledger}");
    assert!(
        metric(&m, "aggregator_ingest_queue_full_total") > 0.0,
        "no back-pressure: {ledger}"
    );
    // The queues, plus the one sample each of the two subscribers may be waiting to put in.
    let queues = pg_writers.unwrap_or(1) as f64;
    assert!(
        metric(&m, "aggregator_ingest_queue_peak")
            <= queues * aggregator::ingest::INGEST_QUEUE as f64 + 2.0,
        "{ledger}"
    );
    assert_eq!(metric(&m, "aggregator_ingest_queue_depth"), 0.0, "{ledger}");
    // Bounded: the queue's byte limit (256 MiB) plus the process's own working set.
    assert!(peak_mib < 640, "memory grew to {peak_mib} MiB: {ledger}");

    rt.block_on(async { session.close().await.unwrap() });
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = child.0.wait();
    let err = std::fs::read_to_string(dir.0.join("agg.log")).unwrap_or_default();
    assert!(!err.contains("panicked"), "{err}");
    if pg_writers.is_some() {
        drop_pg_schema(&schema);
    }
}
