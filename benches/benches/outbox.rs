//! The edge node's outbox under the load of many cameras: every item is written and synced
//! to disk (`synchronous = FULL`) before it is published, then marked sent and dropped when
//! acknowledged; this measures that whole cycle (put, due, mark_sent, ack) in items and MB
//! per second, on the disk that holds `target/`, and sets it against what 8 busy cameras
//! produce.
//!
//! Items: a real vehicle-pass event (its JSON, about 0.7 KB) and evidence pictures of 60 KiB
//! (random bytes: the outbox never looks inside). Batches: 1 item per transaction (a quiet
//! node: each event written on its own, one sync each) and 8 (eight cameras' items waiting
//! together; the publisher writes whatever is queued in one transaction, up to its batch).
//! Mixes: events only, and one picture per event (a checkpoint's pass with its scene).
//!
//! Demand: `OUTBOX_CAMERA_ITEMS_PER_S` items a second per camera (default 10: a busy
//! checkpoint lane, a pass and its pictures every 0.3 s, or a crowded crossing: the demo
//! camera on vtest.avi published 2.4 events a second at 10 FPS) times `OUTBOX_CAMERAS` (8).
//! `OUTBOX_ITEMS` (default 2000) items per round, 5 rounds, medians.

use std::time::Instant;

use benches::median;
use edge_node::outbox::{ItemKind, NewItem, Outbox};
use protocol::*;

fn event_json(i: u64) -> (String, Vec<u8>) {
    let t = 1_795_000_000_000i64 + i as i64 * 100;
    let id = ulid::Ulid::from_parts(t as u64, i as u128).to_string();
    let ev = Event {
        schema_version: SCHEMA_VERSION,
        event_id: id.clone(),
        severity: Severity::Info,
        node_id: DeviceId::parse("32050500055050000001").unwrap(),
        checkpoint_id: DeviceId::parse("32050500051210000001").unwrap(),
        camera_id: DeviceId::parse("32050500051320000001").unwrap(),
        lane: Some(1),
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
            plate: Some("苏E12345".into()),
            char_confidence: vec![0.99; 7],
            plate_colour: Some(plate::PlateColor::Blue),
            plate_class: Some(plate::PlateClass::SmallCar),
            vehicle_class: "car".into(),
            direction: None,
            first_seen_ms: Some(t - 2_000),
            last_seen_ms: Some(t),
            plate_reads: 6,
            registry_version: Some(3),
            plate_unsure: false,
        }),
    };
    (id, ev.encode())
}

fn items(n: usize, with_pictures: bool, start: u64) -> Vec<NewItem> {
    let mut out = Vec::new();
    let mut noise = 0x9e37_79b9_7f4a_7c15u64;
    let mut picture = || {
        (0..60 * 1024)
            .map(|_| {
                noise ^= noise << 13;
                noise ^= noise >> 7;
                noise ^= noise << 17;
                noise as u8
            })
            .collect::<Vec<u8>>()
    };
    let mut i = start;
    while out.len() < n {
        let (id, payload) = event_json(i);
        if with_pictures {
            out.push(NewItem {
                key: format!("ckpt/320500/320505/32050500051210000001/32050500051320000001/evidence/{id}-scene"),
                kind: ItemKind::Evidence,
                id: format!("{id}-scene"),
                payload: picture(),
            });
        }
        out.push(NewItem {
            key: format!("ckpt/320500/320505/32050500051210000001/32050500051320000001/event/vehicle_pass/{id}"),
            kind: ItemKind::Event,
            id,
            payload,
        });
        i += 1;
    }
    out.truncate(n);
    out
}

/// One round: every item through put (in batches), due, mark_sent and ack; items/s, MB/s.
fn round(outbox: &mut Outbox, all: &[NewItem], batch: usize) -> (f64, f64) {
    let bytes: usize = all.iter().map(|i| i.payload.len()).sum();
    let t0 = Instant::now();
    for chunk in all.chunks(batch) {
        let now = protocol::time::now_ms();
        outbox.put(chunk, now).unwrap();
        let due = outbox.due(now, 5_000, 256).unwrap();
        let seqs: Vec<i64> = due.iter().map(|i| i.seq).collect();
        outbox.mark_sent(&seqs, now).unwrap();
        let ids: Vec<String> = due.into_iter().map(|i| i.id).collect();
        outbox.ack(&ids).unwrap();
    }
    let s = t0.elapsed().as_secs_f64();
    (all.len() as f64 / s, bytes as f64 / s / 1e6)
}

fn main() {
    let n: usize = std::env::var("OUTBOX_ITEMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let per_camera: f64 = std::env::var("OUTBOX_CAMERA_ITEMS_PER_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let cameras: f64 = std::env::var("OUTBOX_CAMERAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8.0);
    let demand = per_camera * cameras;
    let dir = benches::repo_root().join(format!("target/outbox-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    println!(
        "outbox: {n} items a round, 5 rounds, medians; demand {cameras} cameras x {per_camera} items/s = {demand} items/s; file under {}",
        dir.display()
    );
    println!("| mix | items a transaction | items/s | MB/s | x the demand |");
    println!("|---|---|---|---|---|");
    let mut start = 0u64;
    for (mix, pictures) in [
        ("events (0.7 KB)", false),
        ("events + 60 KiB pictures", true),
    ] {
        for batch in [1usize, 8] {
            let path = dir.join(format!("outbox-{pictures}-{batch}.db"));
            let _ = std::fs::remove_file(&path);
            let mut outbox = Outbox::open(&path).unwrap();
            let (mut rates, mut mbs) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let all = items(n, pictures, start);
                start += n as u64;
                let (r, mb) = round(&mut outbox, &all, batch);
                rates.push(r);
                mbs.push(mb);
            }
            let r = median(rates);
            println!(
                "| {mix} | {batch} | {r:.0} | {:.1} | {:.0}x |",
                median(mbs),
                r / demand
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
