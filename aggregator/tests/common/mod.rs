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
