//! The walking skeleton end to end: the edge-node binary on the first 300 frames of
//! vtest.avi with the real YOLOv8n model, publishing over a real zenoh session on loopback
//! to an aggregator storing in SQLite, checked through the HTTP API.
//!
//! Ground truth (frames looked at by eye, stored in tests/data/vtest_first300.toml): at
//! frame 0 three people are on the road, two cars are parked top right for the whole clip,
//! and between 3 and 7 people are visible at any time, with new people entering all along.

mod common;

use std::time::Duration;

use common::*;
use protocol::{EventBody, TrackPhase};

#[derive(serde::Deserialize)]
struct Truth {
    frames: u64,
    person_tracks_min: usize,
    person_tracks_max: usize,
    people_at_frame0: Vec<[f32; 4]>,
    parked: Vec<Parked>,
}

#[derive(serde::Deserialize)]
struct Parked {
    bbox: [f32; 4],
    classes: Vec<String>,
}

fn iou(a: [f32; 4], b: &protocol::BBox) -> f32 {
    protocol::BBox::new(a[0], a[1], a[2], a[3]).iou(b)
}

#[test]
fn first_300_frames_of_vtest_reach_the_aggregator() {
    let truth: Truth = toml::from_str(
        &std::fs::read_to_string(repo_root().join("edge-node/tests/data/vtest_first300.toml"))
            .unwrap(),
    )
    .unwrap();
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("vtest");
    let config = node_header(agg.zenoh_port)
        + &format!(
            r#"[[cameras]]
id = "32050500051320000001"
name = "vtest"
source = {{ type = "file", path = "{}", start_time = "2026-11-29T00:00:00Z" }}
detector = "models/yolov8n.toml"
max_frames = {}
"#,
            vtest().display(),
            truth.frames
        );
    let (out, summary) = run_edge(&config, &dir.0, Duration::from_secs(300));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "edge-node failed: {}\n{stderr}",
        out.status
    );
    let summary = summary.expect("summary written");
    let cam = &summary["cameras"][0];
    assert_eq!(
        cam["frames_processed"].as_u64(),
        Some(truth.frames),
        "{cam}"
    );
    let published = summary["events_published"].as_u64().unwrap();
    assert_eq!(
        agg.wait_stored(published, Duration::from_secs(20)),
        published,
        "every published event stored"
    );

    // Query through the API: every event is there, in frame-time order, none duplicated.
    let events = agg.all_events("kind=object_track&camera=32050500051320000001");
    assert_eq!(events.len() as u64, published);
    assert!(events
        .windows(2)
        .all(|w| (w[0].frame_time_ms, &w[0].event_id) < (w[1].frame_time_ms, &w[1].event_id)));
    let one = agg.get_json(&format!("/api/v1/events/{}", events[0].event_id));
    assert_eq!(one["event_id"], events[0].event_id.as_str());

    // Prometheus metrics: ingest counters and the latency of the routes just used.
    let (status, metrics) = aggregator::client::get(agg.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!("aggregator_events_stored_total {published}")),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("aggregator_http_request_duration_seconds_count{route=\"/api/v1/events\"}"),
        "{metrics}"
    );

    let t0 = protocol::time::parse_rfc3339_ms("2026-11-29T00:00:00Z").unwrap();
    let tracks: Vec<protocol::ObjectTrack> = events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ObjectTrack(t) if t.phase == TrackPhase::End => Some(t.clone()),
            _ => None,
        })
        .collect();
    let starts = events
        .iter()
        .filter(|e| matches!(&e.body, EventBody::ObjectTrack(t) if t.phase == TrackPhase::Start))
        .count();
    assert_eq!(
        starts,
        tracks.len(),
        "every confirmed track has a start and an end event"
    );
    let persons: Vec<&protocol::ObjectTrack> =
        tracks.iter().filter(|t| t.class == "person").collect();
    for t in &persons {
        eprintln!(
            "person track {:>3}: frames {:>3}..{:>3} hits {:>3} first {:?} last {:?}",
            t.track_id,
            (t.first_time_ms - t0) / 100,
            (t.last_time_ms - t0) / 100,
            t.hits,
            t.first_box,
            t.last_box
        );
    }
    assert!(
        (truth.person_tracks_min..=truth.person_tracks_max).contains(&persons.len()),
        "{} person tracks, expected {}..={}",
        persons.len(),
        truth.person_tracks_min,
        truth.person_tracks_max
    );
    // The three people on the road at frame 0 each start a track in the first frames.
    for person in &truth.people_at_frame0 {
        assert!(
            persons
                .iter()
                .any(|t| t.first_time_ms - t0 <= 300 && iou(*person, &t.first_box) >= 0.5),
            "no person track starting at {person:?}"
        );
    }
    // Parked vehicles: one track each, the whole clip long.
    for p in &truth.parked {
        let hit: Vec<_> = tracks
            .iter()
            .filter(|t| p.classes.contains(&t.class) && iou(p.bbox, &t.first_box) >= 0.5)
            .collect();
        assert_eq!(
            hit.len(),
            1,
            "parked vehicle at {:?}: {} tracks",
            p.bbox,
            hit.len()
        );
        assert!(
            hit[0].duration_ms >= (truth.frames as i64 - 10) * 100,
            "parked vehicle track too short: {} ms",
            hit[0].duration_ms
        );
    }
}
