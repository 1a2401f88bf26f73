//! Pedestrians crossing on red, end to end on vtest.avi with the demo configuration: the
//! edge-node binary with the real model and the fixed-time plan, evidence over zenoh, the
//! aggregator storing and serving it. Scored against ground truth established by eye
//! (tests/data/vtest_red_light.toml): precision and recall are printed and must be high.
//! A second test drives the signal from the controller's feed over zenoh instead.

mod common;

use std::time::Duration;

use common::*;
use protocol::{EventBody, EventKind, LightState, SignalSource};
use sha2::{Digest, Sha256};

#[derive(serde::Deserialize)]
struct Truth {
    frames: u64,
    violations: Vec<i64>,
    tolerance_frames: i64,
}

impl Truth {
    fn load() -> Truth {
        toml::from_str(
            &std::fs::read_to_string(repo_root().join("edge-node/tests/data/vtest_red_light.toml"))
                .unwrap(),
        )
        .unwrap()
    }

    /// Matches the entry frames found to the truth's, each at most once, within the
    /// tolerance plus `slack` frames: (entries matched, truth entries missed).
    fn score(&self, found: &[i64], slack: i64) -> (usize, Vec<i64>) {
        let mut unmatched = self.violations.clone();
        let mut matched = 0;
        for f in found {
            if let Some(i) = unmatched
                .iter()
                .position(|t| (t - f).abs() <= self.tolerance_frames + slack)
            {
                unmatched.remove(i);
                matched += 1;
            }
        }
        (matched, unmatched)
    }
}

/// The frames (at 10 FPS from the video's start) at which the stored violations' people
/// entered the crosswalk.
fn found_entries(agg: &TestAggregator) -> Vec<i64> {
    let t0 = protocol::time::parse_rfc3339_ms("2026-11-29T00:00:00Z").unwrap();
    agg.all_events("kind=pedestrian_red_light")
        .iter()
        .filter_map(|ev| match &ev.body {
            EventBody::PedestrianRedLight(b) => Some((b.entered_ms - t0) / 100),
            _ => None,
        })
        .collect()
}

/// The demo's edge config with the test's zenoh port, paths and frame limit.
fn demo_config(
    zenoh_port: u16,
    extra_connect: Option<u16>,
    max_frames: u64,
    edit: impl FnOnce(&mut toml::Value),
) -> String {
    let text = std::fs::read_to_string(repo_root().join("configs/edge-demo.toml")).unwrap();
    let mut v: toml::Value = toml::from_str(&text).unwrap();
    let header: toml::Value = toml::from_str(&node_header(zenoh_port)).unwrap();
    v["runtime"] = header["runtime"].clone();
    // Two tests run side by side: no fixed metrics port. Only the crossing camera; no
    // registry (the plate camera has its own test).
    v.as_table_mut().unwrap().remove("metrics");
    v.as_table_mut().unwrap().remove("registry");
    v["cameras"].as_array_mut().unwrap().truncate(1);
    let mut connect = vec![toml::Value::String(format!("tcp/127.0.0.1:{zenoh_port}"))];
    if let Some(p) = extra_connect {
        connect.push(toml::Value::String(format!("tcp/127.0.0.1:{p}")));
    }
    v["zenoh"]["connect"] = toml::Value::Array(connect);
    // The test aggregator listens on plain TCP.
    v["zenoh"].as_table_mut().unwrap().remove("tls");
    let cam = &mut v["cameras"][0];
    cam["source"]["path"] = toml::Value::String(vtest().display().to_string());
    cam.as_table_mut()
        .unwrap()
        .insert("max_frames".into(), toml::Value::Integer(max_frames as i64));
    edit(&mut v);
    toml::to_string(&v).unwrap()
}

/// The two tests take turns: the feed test plays the video in real time, and on a 2-core
/// machine a second node beside it would make it fall behind the feed.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn red_light_violations_on_vtest_match_ground_truth() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let truth = Truth::load();
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("redlight");
    let config = demo_config(agg.zenoh_port, None, truth.frames, |_| {});
    let summary = run_all_stored(&agg, &config, &dir.0, Duration::from_secs(400));

    let events = agg.all_events("kind=pedestrian_red_light");
    let t0 = protocol::time::parse_rfc3339_ms("2026-11-29T00:00:00Z").unwrap();
    let mut found: Vec<i64> = Vec::new();
    let mut clip_seconds: Vec<f64> = Vec::new();
    for ev in &events {
        assert_eq!(ev.kind(), EventKind::PedestrianRedLight);
        assert_eq!(ev.review, protocol::ReviewState::Pending);
        let EventBody::PedestrianRedLight(b) = &ev.body else {
            unreachable!()
        };
        assert_eq!(b.signal.state, LightState::Red);
        assert_eq!(b.signal.source, SignalSource::Plan);
        assert!(b.red_for_ms >= 2000, "inside the grace period: {b:?}");
        assert!(b.left_waiting_ms < b.entered_ms && b.entered_ms <= b.confirmed_ms);
        found.push((b.entered_ms - t0) / 100);
        // Three staged pictures, a close-up and the clip, each served by the aggregator
        // with the sha256 the event carries.
        let roles: Vec<&str> = ev.evidence.iter().map(|e| e.role.as_str()).collect();
        assert_eq!(
            roles,
            ["stage1", "stage2", "closeup", "stage3", "clip"],
            "{ev:?}"
        );
        for e in &ev.evidence {
            let (status, head, bytes) = aggregator::client::get_bytes(
                agg.http,
                &format!("/api/v1/evidence/{}", e.image_id),
            )
            .unwrap();
            assert_eq!(status, 200, "evidence {} missing", e.image_id);
            let mime = if e.role == "clip" {
                "video/mp4"
            } else {
                "image/jpeg"
            };
            assert!(head
                .to_ascii_lowercase()
                .contains(&format!("content-type: {mime}")));
            assert_eq!(hex::encode(Sha256::digest(&bytes)), e.sha256);
            if e.role == "clip" {
                // From 2 s before the person left the kerb to 2 s after the confirmation
                // (the demo's clip settings), unless the track ended sooner.
                let secs = mp4_seconds(&bytes);
                let from_kerb = (b.confirmed_ms - b.left_waiting_ms + 2000) as f64 / 1e3;
                let full = from_kerb + 2.0;
                assert!(
                    secs >= from_kerb - 0.3 && secs <= full + 0.3,
                    "clip of {secs:.2} s, expected {from_kerb:.1}..{full:.1} s"
                );
                clip_seconds.push(secs);
            }
        }
    }
    // A reviewer confirms the first violation; the decision is stored and audited. Object
    // tracks need no review.
    let first = &events[0].event_id;
    let (status, body) = aggregator::client::post_json(agg.http, &format!("/api/v1/events/{first}/review"), &serde_json::json!({"decision": "confirmed", "reviewer": "officer 0451", "reason": "red signal, person and crosswalk visible"})).unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        agg.get_json(&format!("/api/v1/events/{first}"))["review"],
        "confirmed"
    );
    let trail = agg.get_json(&format!("/api/v1/events/{first}/audit"));
    assert_eq!(trail["audit"][0]["actor"], "officer 0451", "{trail}");
    let track = &agg.all_events("kind=object_track")[0].event_id;
    let (status, body) = aggregator::client::post_json(
        agg.http,
        &format!("/api/v1/events/{track}/review"),
        &serde_json::json!({"decision": "confirmed", "reviewer": "x", "reason": "y"}),
    )
    .unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        agg.all_events("kind=pedestrian_red_light&review=pending")
            .len(),
        events.len() - 1
    );

    let (true_pos, unmatched_truth) = truth.score(&found, 0);
    let precision = true_pos as f64 / found.len().max(1) as f64;
    let recall = true_pos as f64 / truth.violations.len() as f64;
    eprintln!("red-light on vtest: found entries at frames {found:?}; truth {:?}; precision {precision:.2}, recall {recall:.2}", truth.violations);
    let crossing = &summary["cameras"][0]["crossing"];
    eprintln!("crossing summary: {crossing}; clips of {clip_seconds:.1?} s");
    assert_eq!(crossing["clips"].as_u64(), Some(events.len() as u64));
    assert!(
        precision >= 0.85 && recall >= 0.85,
        "precision {precision:.2} recall {recall:.2}; missed {unmatched_truth:?}"
    );
    assert_eq!(crossing["signal_unknown_ms"], 0);
}

#[test]
fn signal_from_the_controller_feed_over_zenoh() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("feed");
    // The test plays the signal controller: its own zenoh session, which the node connects to.
    let feed_port = free_port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let session = rt.block_on(async {
        let cfg = zenoh::Config::from_json5(&protocol::keys::zenoh_json5(
            "peer",
            &[],
            &[format!("tcp/127.0.0.1:{feed_port}")],
            false,
        ))
        .unwrap();
        zenoh::open(cfg).await.unwrap()
    });
    let checkpoint = protocol::DeviceId::parse("32050500051210000001").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let s2 = session.clone();
    // Red since a minute ago, repeated every 300 ms with the controller's current time.
    let publisher = rt.spawn(async move {
        let since = protocol::time::now_ms() - 60_000;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            let msg = protocol::SignalPhaseMsg {
                phase: "ped_plaza".into(),
                state: LightState::Red,
                since_ms: since,
                sent_ms: protocol::time::now_ms(),
                controller: "test-controller".into(),
            };
            s2.put(
                protocol::keys::signal(&checkpoint, "ped_plaza"),
                serde_json::to_vec(&msg).unwrap(),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    // Frames at the file's own rate, with wall-clock times, so that the feed is fresh; the
    // feed is the only source.
    let config = demo_config(agg.zenoh_port, Some(feed_port), 140, |v| {
        let cam = &mut v["cameras"][0];
        cam["source"] = toml::Value::try_from(std::collections::BTreeMap::from([
            ("type", toml::Value::String("file".into())),
            ("path", toml::Value::String(vtest().display().to_string())),
            ("realtime", toml::Value::Boolean(true)),
        ]))
        .unwrap();
        cam["signal"]["precedence"] = toml::Value::Array(vec![toml::Value::String("feed".into())]);
    });
    let (out, summary) = run_edge(&config, &dir.0, Duration::from_secs(120));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    rt.block_on(async {
        let _ = publisher.await;
        let _ = session.close().await;
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = summary.unwrap();
    let crossing = &summary["cameras"][0]["crossing"];
    eprintln!("crossing summary with the feed: {crossing}");
    // Every frame processed took its signal from the feed, except those processed before
    // the node had heard the controller once (it repeats every 300 ms and the node's session
    // must connect first: a frame or a few, at most the first 2 s of the clip). In real time
    // on a busy machine some frames are dropped as behind (how many is the machine's speed,
    // measured by the benchmarks), but most are processed.
    let processed = summary["cameras"][0]["frames_processed"].as_u64().unwrap();
    let unknown = crossing["rule"]["frames_signal_unknown"].as_u64().unwrap();
    assert!(
        unknown <= 20,
        "{unknown} frames before the feed: {crossing}"
    );
    assert_eq!(
        crossing["frames_by_signal_source"],
        serde_json::json!({ "feed": processed - unknown }),
        "{crossing}"
    );
    assert!(
        processed >= 70,
        "{processed} of 140 frames processed: {crossing}"
    );
    let published = summary["events_published"].as_u64().unwrap();
    assert_eq!(
        agg.wait_stored(published, Duration::from_secs(30)),
        published
    );
    let events = agg.all_events("kind=pedestrian_red_light");
    assert!(
        !events.is_empty(),
        "people enter the crosswalk from the kerbs in the first 14 s: {crossing}"
    );
    for ev in &events {
        let EventBody::PedestrianRedLight(b) = &ev.body else {
            unreachable!()
        };
        assert_eq!(b.signal.source, SignalSource::Feed);
        assert!(b.signal_age_ms <= 3000, "{b:?}");
    }
}

/// `edge_frames_processed_total` per camera, from the node's Prometheus endpoint.
fn processed_per_camera(metrics_port: u16) -> std::collections::BTreeMap<String, u64> {
    let Ok((200, body)) = aggregator::client::get(("127.0.0.1", metrics_port), "/metrics") else {
        return Default::default();
    };
    body.lines()
        .filter_map(|l| l.strip_prefix("edge_frames_processed_total{camera=\""))
        .filter_map(|l| {
            let (id, v) = l.split_once("\"} ")?;
            Some((id.to_string(), v.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// Four cameras on one node, more frames than its engine can take: the crossing camera and a
/// second file played in real time, and two RTSP streams from a loopback server, all at
/// 10 FPS on one shared detector. Each camera processes its newest frames and drops the
/// rest (counted), the engine's turns are shared fairly, and the crossing camera still
/// catches the people crossing on red.
#[test]
fn four_cameras_on_a_busy_node_share_fairly_and_still_catch_red_light_violations() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let truth = Truth::load();
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("busy");
    let server = RtspServer::start(0);
    let metrics_port = free_port();
    const CROSSING: &str = "32050500051320000001";
    let others = [
        ("32050500051320000002", "file".to_string()),
        (
            "32050500051320000004",
            format!("rtsp://127.0.0.1:{}/vtest", server.port),
        ),
        (
            "32050500051320000005",
            format!("rtsp://127.0.0.1:{}/vtest", server.port),
        ),
    ];
    let config = demo_config(agg.zenoh_port, None, truth.frames, |v| {
        v["cameras"][0]["source"]
            .as_table_mut()
            .unwrap()
            .insert("realtime".into(), toml::Value::Boolean(true));
        let mut metrics = toml::Table::new();
        metrics.insert(
            "listen".into(),
            toml::Value::String(format!("127.0.0.1:{metrics_port}")),
        );
        v.as_table_mut()
            .unwrap()
            .insert("metrics".into(), toml::Value::Table(metrics));
        for (id, source) in &others {
            let source = if source == "file" {
                format!(
                    "{{ type = \"file\", path = \"{}\", realtime = true }}",
                    vtest().display()
                )
            } else {
                format!("{{ type = \"rtsp\", url = \"{source}\", latency_ms = 100 }}")
            };
            let cam: toml::Value = toml::from_str(&format!(
                "id = \"{id}\"\nname = \"{id}\"\nclasses = [\"person\", \"car\"]\nmax_frames = 600\nsource = {source}\n"
            ))
            .unwrap();
            v["cameras"].as_array_mut().unwrap().push(cam);
        }
    });
    let run_dir = dir.0.clone();
    let node = std::thread::spawn(move || run_edge(&config, &run_dir, Duration::from_secs(300)));
    // The engine's turns while all four run: a 25 s window once each has processed frames.
    let ids: Vec<&str> = std::iter::once(CROSSING)
        .chain(others.iter().map(|o| o.0))
        .collect();
    let until = std::time::Instant::now() + Duration::from_secs(120);
    let before = loop {
        let p = processed_per_camera(metrics_port);
        if ids.iter().all(|id| p.get(*id).copied().unwrap_or(0) >= 5) {
            break p;
        }
        assert!(
            std::time::Instant::now() < until,
            "cameras not all running: {p:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::thread::sleep(Duration::from_secs(25));
    let after = processed_per_camera(metrics_port);
    let (out, summary) = node.join().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = summary.unwrap();
    let rates: Vec<f64> = ids
        .iter()
        .map(|id| (after[*id] - before[*id]) as f64 / 25.0)
        .collect();
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    eprintln!("busy node: frames processed per second in the window, crossing / file / rtsp / rtsp: {rates:.2?}, mean {mean:.2}");
    for (id, r) in ids.iter().zip(&rates) {
        assert!(
            *r >= 0.8 * mean,
            "camera {id} had {r:.2} FPS, under 0.8 x the mean {mean:.2}: {rates:?}"
        );
    }
    // Every decoded frame processed or dropped for a reason; the node was busy: frames were
    // dropped as behind, on every camera.
    for cam in summary["cameras"].as_array().unwrap() {
        let n = |k: &str| cam[k].as_u64().unwrap();
        eprintln!(
            "busy node: camera {} decoded {} processed {} dropped {} {}",
            cam["camera_id"],
            n("frames_decoded"),
            n("frames_processed"),
            n("frames_dropped"),
            cam["frames_dropped_by_reason"]
        );
        assert!(!cam["failed"].as_bool().unwrap(), "{cam}");
        assert_eq!(
            n("frames_processed") + n("frames_dropped"),
            n("frames_decoded"),
            "{cam}"
        );
        assert!(
            cam["frames_dropped_by_reason"]["behind"]
                .as_u64()
                .unwrap_or(0)
                > 0,
            "{cam}"
        );
    }
    let published = summary["events_published"].as_u64().unwrap();
    assert_eq!(
        agg.wait_stored(published, Duration::from_secs(30)),
        published
    );
    // The crossing camera on a fraction of its frames: the violations found still match the
    // ground truth.
    let found = found_entries(&agg);
    // A frame dropped can delay the first frame seen in the crosswalk.
    let (true_pos, _) = truth.score(&found, 5);
    let crossing = summary["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["camera_id"] == CROSSING)
        .unwrap();
    eprintln!(
        "busy node: red light on {} of {} frames: found {found:?}, truth {:?}, {true_pos} matched",
        crossing["frames_processed"], crossing["frames_decoded"], truth.violations
    );
    // Recall and precision rest on the rate the crossing got: at 3 frames/s or more (what
    // `a_third_of_the_frames_still_finds_every_violation` shows is enough, deterministically)
    // 3 in 4 are caught and 4 in 5 found are true. A machine too slow to give it that (the
    // engine shares fairly: a quarter of what it can do) samples the crosswalk too sparsely
    // (seen at 2 frames/s: 2 or 3 of 9 caught, and a false one) and then neither is asserted,
    // only the fairness and accounting above. The rate is the machine's, measured by the
    // multi-camera benchmark, not by this test.
    if rates[0] >= 3.0 {
        assert!(
            true_pos * 4 >= truth.violations.len() * 3,
            "fewer than 3 in 4 violations caught: found {found:?}, truth {:?}",
            truth.violations
        );
        assert!(
            true_pos as f64 >= 0.8 * found.len() as f64,
            "false violations: found {found:?}, truth {:?}",
            truth.violations
        );
    } else {
        eprintln!(
            "busy node: the crossing got {:.2} frames/s on this machine (under 3): its violations not scored",
            rates[0]
        );
    }
}

/// Time-based rules: the crossing camera processing a third of its frames (`max_fps = 3.4`,
/// an even subset, the rest dropped as `budget` before any work) still finds every
/// violation of the ground truth; the tracker's lost time, the rule's time inside the
/// crosswalk and the plan are all in video time.
#[test]
fn a_third_of_the_frames_still_finds_every_violation() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let truth = Truth::load();
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("budget");
    let config = demo_config(agg.zenoh_port, None, truth.frames, |v| {
        v["cameras"][0]
            .as_table_mut()
            .unwrap()
            .insert("max_fps".into(), toml::Value::Float(3.4));
    });
    let summary = run_all_stored(&agg, &config, &dir.0, Duration::from_secs(300));
    let cam = &summary["cameras"][0];
    let n = |k: &str| cam[k].as_u64().unwrap();
    // 620 frames at 10 FPS cut to 3.4: about 211 processed, the other 409 dropped as budget.
    assert_eq!(n("frames_decoded"), truth.frames, "{cam}");
    assert!((205..=215).contains(&n("frames_processed")), "{cam}");
    assert_eq!(
        n("frames_dropped"),
        cam["frames_dropped_by_reason"]["budget"].as_u64().unwrap(),
        "{cam}"
    );
    let found = found_entries(&agg);
    eprintln!(
        "red light at max_fps 3.4: {} of {} frames, found {found:?}, truth {:?}",
        n("frames_processed"),
        n("frames_decoded"),
        truth.violations
    );
    assert_every_violation_and_no_other(&truth, &found);
}

/// The INT8 detector (models/yolov8n-int8.toml, made by setup) on the demo crossing finds
/// every violation of the ground truth and no other: its accuracy on this real video, the
/// one the ground truth was drawn for, is the FP32 model's.
#[test]
fn the_int8_detector_finds_every_violation() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let truth = Truth::load();
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("int8");
    let manifest = repo_root().join("models/yolov8n-int8.toml");
    let config = demo_config(agg.zenoh_port, None, truth.frames, |v| {
        v["cameras"][0]["detector"] = toml::Value::String(manifest.display().to_string());
    });
    let summary = run_all_stored(&agg, &config, &dir.0, Duration::from_secs(400));
    assert_eq!(
        summary["cameras"][0]["frames_processed"].as_u64(),
        Some(truth.frames)
    );
    let found = found_entries(&agg);
    eprintln!(
        "red light with the INT8 detector: found {found:?}, truth {:?}",
        truth.violations
    );
    assert_every_violation_and_no_other(&truth, &found);
}

/// Runs a node on `config` to its end and waits until the aggregator stored every event it
/// published: its summary.
fn run_all_stored(
    agg: &TestAggregator,
    config: &str,
    dir: &std::path::Path,
    within: Duration,
) -> serde_json::Value {
    let (out, summary) = run_edge(config, dir, within);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = summary.unwrap();
    let published = summary["events_published"].as_u64().unwrap();
    assert_eq!(
        agg.wait_stored(published, Duration::from_secs(30)),
        published
    );
    summary
}

/// Every violation of the ground truth found, and no other.
fn assert_every_violation_and_no_other(truth: &Truth, found: &[i64]) {
    let (_, unmatched) = truth.score(found, 0);
    assert!(
        unmatched.is_empty(),
        "missed {unmatched:?}; found {found:?}"
    );
    assert_eq!(found.len(), truth.violations.len(), "{found:?}");
}

/// An MP4's duration from its movie header (`mvhd`), seconds.
fn mp4_seconds(b: &[u8]) -> f64 {
    assert_eq!(&b[4..8], b"ftyp", "not an MP4");
    let at = b
        .windows(4)
        .position(|w| w == b"mvhd")
        .expect("a movie header")
        + 4;
    let be32 = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as u64;
    let (scale, duration) = if b[at] == 1 {
        (
            be32(at + 20),
            u64::from_be_bytes(b[at + 24..at + 32].try_into().unwrap()),
        )
    } else {
        (be32(at + 12), be32(at + 16))
    };
    duration as f64 / scale as f64
}
