//! GA/T 1400 export against a small upstream platform that enforces the conformance rules of
//! STANDARDS.md: Register with HTTP Digest, keepalive, `application/VIID+JSON` and
//! `User-Identify` on every request, Tollgate and MotorVehicle objects checked field by field
//! (ids 41/48 characters built from the device id and a 14-digit time, code lists, box,
//! sub-images), one status per item.
//!
//! The platform misbehaves the way real ones do: it refuses some items once (busy), forgets
//! the registration (a restart), and is down for a while; the aggregator retries the refused
//! items, registers again, and exports what was queued while the platform was down, also
//! across its own restart.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::*;
use serde_json::Value;

mod common;
#[path = "common/viid_platform.rs"]
mod viid_platform;
use viid_platform::*;

const CK: &str = "32050500051210000001";
const CAM: &str = "32050500051320000002";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A whole JPEG of 320x240.
fn jpeg() -> Vec<u8> {
    common::jpeg(320, 240, 0)
}

fn pass(i: u64, t: i64, plate: Option<&str>) -> Event {
    let id = ulid::Ulid::from_parts(t as u64, 0xABCD_0000 + i as u128).to_string();
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: id.clone(),
        severity: Severity::Info,
        node_id: DeviceId::parse("32050500055050000001").unwrap(),
        checkpoint_id: DeviceId::parse(CK).unwrap(),
        camera_id: DeviceId::parse(CAM).unwrap(),
        lane: Some(1 + (i % 3) as u32),
        frame_time_ms: t,
        detections: vec![Detection {
            class: "car".into(),
            score: 0.9,
            bbox: BBox::new(100.0, 200.0, 420.0, 460.0),
            track_id: Some(i),
        }],
        rule: None,
        evidence: ["vehicle", "plate"]
            .iter()
            .map(|role| EvidenceRef {
                image_id: format!("{id}-{role}"),
                sha256: String::new(),
                role: role.to_string(),
            })
            .collect(),
        review: ReviewState::NotRequired,
        clock: None,
        body: EventBody::VehiclePass(VehiclePass {
            track_id: i,
            plate: plate.map(String::from),
            char_confidence: if plate.is_some() {
                vec![0.97; 7]
            } else {
                vec![]
            },
            plate_colour: plate.map(|_| plate::PlateColor::Blue),
            plate_class: plate.map(|_| plate::PlateClass::SmallCar),
            vehicle_class: "car".into(),
            direction: Some("inbound".into()),
            first_seen_ms: None,
            last_seen_ms: None,
            plate_reads: 3,
            registry_version: None,
            plate_unsure: false,
        }),
    }
}

struct Agg {
    running: aggregator::Running,
    zenoh_port: u16,
}

fn start_aggregator(rt: &tokio::runtime::Runtime, dir: &Path, platform: u16) -> Agg {
    let zenoh_port = free_port();
    let text = format!(
        r#"id = "32050500055030000001"
scope = "county:320505"
[auth]
required = false
[storage]
sqlite_path = "{db}"
[http]
listen = "127.0.0.1:0"
[zenoh]
listen = ["tcp/127.0.0.1:{zenoh_port}"]
[export]
enabled = true
endpoint = "http://127.0.0.1:{platform}"
user_identify = "{PLATFORM_ID}"
username = "{USER}"
password = "{PASSWORD}"
keepalive_secs = 1
batch = 4
poll_ms = 100
retry_secs = 1
[[checkpoints]]
id = "{CK}"
name = "Wuzhong Rd checkpoint"
lon = 120.6312345678
lat = 31.26
"#,
        db = dir.join("agg.db").display()
    );
    let raw: aggregator::config::AggregatorConfig = toml::from_str(&text).unwrap();
    let cfg = raw.validate(Path::new("test")).unwrap();
    let running = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), aggregator::start(cfg))
            .await
            .unwrap()
            .unwrap()
    });
    Agg {
        running,
        zenoh_port,
    }
}

fn publish(rt: &tokio::runtime::Runtime, port: u16, events: &[Event]) {
    rt.block_on(async {
        let text = keys::zenoh_json5("peer", &[format!("tcp/127.0.0.1:{port}")], &[], false);
        let s = zenoh::open(zenoh::Config::from_json5(&text).unwrap())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let image = jpeg();
        for ev in events {
            common::put_with_evidence(&s, ev, &image).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        s.close().await.unwrap();
    });
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn passes_reach_a_conformant_platform_with_retries_and_restarts() {
    let dir = std::env::temp_dir().join(format!("viid-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let shared: Shared = Arc::default();
    shared.lock().unwrap().refuse_once = ["苏E10001".to_string(), "苏E10004".to_string()].into();
    let port = free_port();
    serve(&rt, &shared, port);

    // Phase 1: six passes (one unread), two refused once by a busy platform.
    let t0 = protocol::time::parse_rfc3339_ms("2026-11-28T18:30:00Z").unwrap();
    let plates = ["苏E10001", "苏E10002", "苏E10003", "苏E10004", "苏E10005"];
    let mut events: Vec<Event> = plates
        .iter()
        .enumerate()
        .map(|(i, p)| pass(i as u64, t0 + i as i64 * 1500, Some(p)))
        .collect();
    events.push(pass(5, t0 + 9_000, None));
    let agg = start_aggregator(&rt, &dir, port);
    publish(&rt, agg.zenoh_port, &events);
    wait_until(
        "6 passes accepted upstream",
        Duration::from_secs(30),
        || shared.lock().unwrap().vehicles.len() == 6,
    );
    {
        let p = shared.lock().unwrap();
        assert!(p.violations.is_empty(), "{:#?}", p.violations);
        assert_eq!(
            p.refused.len(),
            2,
            "the busy items were refused once, then retried"
        );
        assert_eq!(p.registrations, 1);
        assert_eq!(p.tollgates.len(), 1);
        let gate = &p.tollgates[CK];
        assert_eq!(gate["Longitude"], 120.631235);
        let o = p
            .vehicles
            .values()
            .find(|o| o["PlateNo"] == "苏E10003")
            .unwrap();
        assert_eq!(o["PassTime"].as_str().unwrap(), "20261129023003");
        assert_eq!(o["PlateClass"], "02");
        assert_eq!(o["PlateColor"], "5");
        assert_eq!(o["HasPlate"], "1");
        assert_eq!(o["PlateReliability"], 97);
        assert_eq!(o["LaneNo"], 3);
        assert_eq!(
            (o["LeftTopX"].as_i64(), o["RightBtmY"].as_i64()),
            (Some(100), Some(460))
        );
        let subs = o["SubImageList"]["SubImageInfoObject"].as_array().unwrap();
        let types: Vec<&str> = subs.iter().map(|s| s["Type"].as_str().unwrap()).collect();
        assert_eq!(types, ["01", "02"]);
        assert_eq!(subs[0]["Width"], 320);
        assert_eq!(subs[0]["Height"], 240);
        // The image the platform is pointed to is served by the aggregator.
        let url = o["StorageUrl1"].as_str().unwrap().to_string();
        let path = &url[url.find("/api/").unwrap()..];
        let (code, _, bytes) = aggregator::client::get_bytes(agg.running.http_addr, path).unwrap();
        assert_eq!((code, bytes), (200, jpeg()));
        let unread = p.vehicles.values().find(|o| o["HasPlate"] == "0").unwrap();
        assert_eq!(unread["PlateNo"], "无车牌");
    }
    let health = |a: &Agg| -> Value {
        let (_, b) = aggregator::client::get(a.running.http_addr, "/health").unwrap();
        serde_json::from_str(&b).unwrap()
    };
    assert_eq!(health(&agg)["export"]["exported"], 6);
    assert_eq!(health(&agg)["export"]["refused"], 2);

    // The platform restarts and forgets us: the next keepalive fails, we register again.
    shared.lock().unwrap().registered.clear();
    wait_until("a second registration", Duration::from_secs(15), || {
        shared.lock().unwrap().registrations >= 2
    });
    assert!(shared.lock().unwrap().keepalives >= 1);

    // Phase 2: the platform goes down; passes queue up; the aggregator itself restarts.
    shared.lock().unwrap().down = true;
    let more: Vec<Event> = (0..5)
        .map(|i| {
            pass(
                10 + i,
                t0 + 60_000 + i as i64 * 1000,
                Some(&format!("苏E2000{i}")),
            )
        })
        .collect();
    publish(&rt, agg.zenoh_port, &more);
    wait_until("the new passes stored", Duration::from_secs(15), || {
        health(&agg)["ingest"]["stored"].as_u64() >= Some(11)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(health(&agg)["export"]["queued"], 5);
    rt.block_on(agg.running.stop());
    shared.lock().unwrap().down = false;
    let agg = start_aggregator(&rt, &dir, port);
    wait_until(
        "the queued passes exported after the restart",
        Duration::from_secs(30),
        || shared.lock().unwrap().vehicles.len() == 11,
    );
    assert!(shared.lock().unwrap().violations.is_empty());
    wait_until("an empty queue", Duration::from_secs(5), || {
        health(&agg)["export"]["queued"] == 0
    });
    rt.block_on(agg.running.stop());
    std::fs::remove_dir_all(&dir).ok();
}
