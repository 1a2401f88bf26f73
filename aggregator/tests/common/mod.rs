//! What the aggregator's integration tests share: ports, temporary folders, a vehicle pass,
//! waiting.
#![allow(dead_code)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use protocol::*;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary folder removed when dropped.
pub struct Dir(pub std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A vehicle pass of `plate` at `ck` at time `t`, its id derived from both.
pub fn pass(ck: &str, cam: &str, node: &str, t: i64, plate: &str, lane: u32) -> Event {
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: ulid::Ulid::from_parts(t as u64, rand_part(ck, plate)).to_string(),
        severity: Severity::Info,
        node_id: DeviceId::parse(node).unwrap(),
        checkpoint_id: DeviceId::parse(ck).unwrap(),
        camera_id: DeviceId::parse(cam).unwrap(),
        lane: Some(lane),
        frame_time_ms: t,
        detections: vec![],
        rule: None,
        evidence: vec![],
        review: ReviewState::NotRequired,
        clock: None,
        body: EventBody::VehiclePass(VehiclePass {
            track_id: 1,
            plate: Some(plate.into()),
            char_confidence: vec![0.99; 7],
            plate_colour: Some(plate::PlateColor::Blue),
            plate_class: Some(plate::PlateClass::SmallCar),
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

pub fn rand_part(ck: &str, plate: &str) -> u128 {
    let mut h: u128 = 1469598103934665603;
    for b in ck.bytes().chain(plate.bytes()) {
        h = (h ^ b as u128).wrapping_mul(1099511628211);
    }
    h & ((1u128 << 80) - 1)
}

pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A new temporary folder `<tag>-<ulid>`, removed when dropped.
pub fn temp_dir(tag: &str) -> Dir {
    let d = Dir(std::env::temp_dir().join(format!("{tag}-{}", ulid::Ulid::new())));
    std::fs::create_dir_all(&d.0).unwrap();
    d
}

/// The tests' runtime: two workers, timers and I/O.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Starts an aggregator from the text of its config.
pub fn start_aggregator(rt: &tokio::runtime::Runtime, text: &str) -> aggregator::Running {
    let raw: aggregator::config::AggregatorConfig =
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let cfg = raw.validate(std::path::Path::new("test")).unwrap();
    rt.block_on(async { aggregator::start(cfg).await.unwrap() })
}

/// A zenoh peer session connected to `tcp/127.0.0.1:<port>`.
pub fn peer(rt: &tokio::runtime::Runtime, port: u16) -> zenoh::Session {
    let text = keys::zenoh_json5("peer", &[format!("tcp/127.0.0.1:{port}")], &[], false);
    rt.block_on(async {
        zenoh::open(zenoh::Config::from_json5(&text).unwrap())
            .await
            .unwrap()
    })
}

/// A whole JPEG of `w` x `h` grey pixels, padded with comment segments to at least
/// `min_bytes` (ingest takes only images that parse and end with their end marker).
pub fn jpeg(w: u16, h: u16, min_bytes: usize) -> Vec<u8> {
    let mut small = Vec::new();
    let pixels = vec![128u8; w as usize * h as usize * 3];
    jpeg_encoder::Encoder::new(&mut small, 80)
        .encode(&pixels, w, h, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let mut out = small[..2].to_vec();
    let mut missing = min_bytes.saturating_sub(small.len());
    while missing > 0 {
        let n = missing.clamp(4, 60_000);
        let len = (n - 2) as u16;
        out.extend_from_slice(&[0xFF, 0xFE, (len >> 8) as u8, len as u8]);
        out.extend(std::iter::repeat_n(b' ', n - 4));
        missing = missing.saturating_sub(n);
    }
    out.extend_from_slice(&small[2..]);
    out
}

/// A county aggregator's config (320505, logins off, SQLite in `dir`, HTTP on a free port,
/// zenoh listening on `zenoh_port`) with `extra` after it.
pub fn county_config(dir: &std::path::Path, zenoh_port: u16, extra: &str) -> String {
    format!(
        "id = \"32050500055030000001\"\nscope = \"county:320505\"\n[auth]\nrequired = false\n[storage]\nsqlite_path = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[zenoh]\nlisten = [\"tcp/127.0.0.1:{zenoh_port}\"]\n{extra}",
        dir.join("agg.db").display()
    )
}

/// Publishes `ev` on its key as its node would, waiting (not dropping) when the link is
/// busy: every event a test sends arrives.
pub fn put_event(rt: &tokio::runtime::Runtime, session: &zenoh::Session, ev: &Event) {
    let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
    rt.block_on(async {
        session
            .put(key, ev.encode())
            .congestion_control(zenoh::qos::CongestionControl::Block)
            .await
            .unwrap()
    });
}

/// A pedestrian red-light violation at `t`, pending review, with one evidence picture.
pub fn red_light(ck: &str, cam: &str, node: &str, t: i64, image: &str, sha: &str) -> Event {
    let mut ev = pass(ck, cam, node, t, "苏E00000", 1);
    ev.event_id = ulid::Ulid::from_parts(t as u64, 42).to_string();
    ev.lane = None;
    ev.severity = Severity::Alert;
    ev.review = ReviewState::Pending;
    ev.rule = Some(RuleRef {
        id: "pedestrian_red_light".into(),
        version: 1,
    });
    ev.evidence = vec![EvidenceRef {
        image_id: image.into(),
        sha256: sha.into(),
        role: "scene".into(),
    }];
    ev.body = EventBody::PedestrianRedLight(PedestrianRedLight {
        track_id: 7,
        crosswalk: "crossing_s".into(),
        waiting_area: "kerb_w".into(),
        left_waiting_ms: t - 400,
        entered_ms: t - 300,
        confirmed_ms: t,
        signal: SignalReading {
            phase: "ped_s".into(),
            state: LightState::Red,
            since_ms: t - 20_000,
            source: SignalSource::Plan,
            observed_ms: t,
        },
        red_for_ms: 19_700,
        signal_age_ms: 0,
        boxes: vec![],
        offence: Some(Offence {
            code: "3001".into(),
            name: "行人不按交通信号灯指示通行".into(),
        }),
    });
    ev
}

/// The PostgreSQL server the tests use (`TRAFFIC_PG_URL`, default the local one).
pub fn pg_url() -> String {
    std::env::var("TRAFFIC_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into())
}

/// Drops a test's PostgreSQL schema and everything in it.
pub fn drop_pg_schema(schema: &str) {
    aggregator::store::pg::drop_schema(&pg_url(), schema).unwrap();
}

/// Issues certificates with `scripts/certs.sh` into `dir` for `names`.
pub fn certs(dir: &std::path::Path, names: &[&str]) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/certs.sh");
    let out = std::process::Command::new(script)
        .arg(dir)
        .args(names)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "certs.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ids of every event an aggregator's `/api/v1/events?<query>` lists, all pages.
pub fn event_ids(addr: std::net::SocketAddr, query: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/events?{query}&limit=1000&cursor={c}"),
            None => format!("/api/v1/events?{query}&limit=1000"),
        };
        let (status, body) = aggregator::client::get(addr, &path).unwrap();
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for e in v["events"].as_array().unwrap() {
            ids.push(e["event_id"].as_str().unwrap().to_string());
        }
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return ids,
        }
    }
}

/// Publishes an event as a node does: its evidence pictures (`image` each) first.
pub async fn put_with_evidence(s: &zenoh::Session, ev: &Event, image: &[u8]) {
    for r in &ev.evidence {
        s.put(
            keys::evidence(&ev.checkpoint_id, &ev.camera_id, &r.image_id),
            image.to_vec(),
        )
        .await
        .unwrap();
    }
    s.put(
        keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id),
        ev.encode(),
    )
    .await
    .unwrap();
}

/// A child process (an aggregator run as its binary), killed and reaped when dropped.
pub struct Child(pub std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
