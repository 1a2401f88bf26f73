//! The live view of a 1080p camera, end to end on loopback: a real aggregator and a real
//! edge node in this process, the camera playing vtest.avi scaled to 1920x1080 (H.264, 5 FPS,
//! made once with GStreamer into target/bench-media/) in real time with the real YOLOv8n
//! model, and an operator's requests through the aggregator's HTTP API
//! (`GET /api/v1/cameras/{id}/live`), as the dashboard makes them: the frame at full size,
//! and 1280 wide with boxes and zones.
//!
//! It reports the answer time (median and slowest, per view) and what watching costs the
//! camera: its frames decoded, processed and dropped (by reason) from its node's health
//! reports, over a period nobody watched and over a period an operator watched at two
//! requests a second.
//!
//! `LV_SECS` (default 15): the length of each period. Results go to stdout and
//! target/live-view-bench.json.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{env_usize, median};
use serde_json::{json, Value};

const CAMERA: &str = "32050500051320000001";

/// vtest.avi at 1920x1080, 5 FPS, H.264 in MP4; made once.
fn video_1080p() -> PathBuf {
    let out = benches::repo_root().join("target/bench-media/vtest-1080p-5fps.mp4");
    if out.is_file() {
        return out;
    }
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let part = out.with_extension("part.mp4");
    let ok = std::process::Command::new("gst-launch-1.0")
        .args(["-q", "filesrc"])
        .arg(format!("location={}", benches::vtest().display()))
        .args([
            "!",
            "decodebin",
            "!",
            "videorate",
            "!",
            "video/x-raw,framerate=5/1",
            "!",
            "videoscale",
            "!",
            "video/x-raw,width=1920,height=1080",
            "!",
            "videoconvert",
            "!",
            "x264enc",
            "speed-preset=ultrafast",
            "key-int-max=10",
            "!",
            "h264parse",
            "!",
            "mp4mux",
            "!",
            "filesink",
        ])
        .arg(format!("location={}", part.display()))
        .status()
        .expect("gst-launch-1.0 (scripts/setup.sh installs it)");
    assert!(ok.success(), "the 1080p clip was not made");
    std::fs::rename(&part, &out).unwrap();
    out
}

/// The camera's counters in the latest health report: (sent_ms, decoded, processed,
/// dropped by reason).
fn counters(http: std::net::SocketAddr) -> Option<(i64, u64, u64, Value)> {
    let (status, _, body) = aggregator::client::get_bytes(http, "/api/v1/nodes").ok()?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_slice(&body).ok()?;
    for n in v["nodes"].as_array()? {
        let h = &n["report"];
        for c in h["cameras"].as_array().into_iter().flatten() {
            if c["id"] == CAMERA {
                return Some((
                    h["sent_ms"].as_i64()?,
                    c["frames_decoded"].as_u64()?,
                    c["frames_processed"].as_u64()?,
                    c["frames_dropped_by_reason"].clone(),
                ));
            }
        }
    }
    None
}

/// Waits for a health report newer than `after_ms`.
fn next_report(http: std::net::SocketAddr, after_ms: i64) -> (i64, u64, u64, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(c) = counters(http) {
            if c.0 > after_ms {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "no health report from the node");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn dropped(a: &Value, b: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in b.as_object().into_iter().flatten() {
        let d = v.as_u64().unwrap_or(0) - a[k].as_u64().unwrap_or(0);
        if d > 0 {
            out.insert(k.clone(), json!(d));
        }
    }
    Value::Object(out)
}

fn main() {
    benches::init_logging();
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let secs = env_usize("LV_SECS", 15) as u64;
    let video = video_1080p();
    let dir = std::env::temp_dir().join(format!("live-view-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let zport = benches::free_port();
    let agg = benches::start_aggregator(&rt, &dir, zport, "");
    let http = agg.http_addr;

    // Frames for (5 * 2 * LV_SECS + 60) s: both periods and the wait for the first reports.
    let frames = 5 * (2 * secs + 60);
    let node_text = format!(
        r#"node_id = "32050500055050000001"
checkpoint_id = "32050500051210000001"
[runtime]
onnxruntime_library = "{ort}"
models_dir = "{models}"
wait_for_aggregator_secs = 20
[zenoh]
connect = ["tcp/127.0.0.1:{zport}"]
[outbox]
path = "{outbox}"
[[cameras]]
id = "{CAMERA}"
name = "vtest 1080p"
source = {{ type = "file", path = "{video}", realtime = true }}
detector = "{detector}"
max_frames = {frames}
[[cameras.zones]]
name = "road"
kind = "crosswalk"
polygon = [[0.05, 0.45], [0.95, 0.45], [0.95, 0.75], [0.05, 0.75]]
"#,
        ort = benches::ort_library().display(),
        models = benches::models_dir().display(),
        outbox = dir.join("outbox.db").display(),
        video = video.display(),
        detector = benches::detector_manifest().display(),
    );
    let cfg = edge_node::config::NodeConfig::from_toml(&node_text, Path::new("bench"))
        .unwrap()
        .validate(Path::new("bench"))
        .unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let node = {
        let shutdown = shutdown.clone();
        rt.spawn(async move { edge_node::node::run(cfg, shutdown, None).await })
    };

    // Nobody watches: three reports' worth of the camera running.
    let mut r0 = next_report(http, 0);
    while r0.2 == 0 {
        r0 = next_report(http, r0.0);
    }
    let t_a = Instant::now();
    let mut r1 = next_report(http, r0.0);
    while t_a.elapsed() < Duration::from_secs(secs) {
        r1 = next_report(http, r1.0);
    }
    // An operator watches: two requests a second, alternately the full frame and the
    // dashboard's view (1280 wide, boxes and zones).
    let path = format!("/api/v1/cameras/{CAMERA}/live");
    let (mut full, mut view) = (Vec::new(), Vec::new());
    let mut size = (0, 0);
    let t_b = Instant::now();
    let mut i = 0;
    while t_b.elapsed() < Duration::from_secs(secs) {
        let q = if i % 2 == 0 {
            path.clone()
        } else {
            format!("{path}?overlay=1&width=1280")
        };
        let t = Instant::now();
        let (status, _, body) = aggregator::client::get_bytes(http, &q).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        if i % 2 == 0 {
            full.push(ms);
            if size == (0, 0) {
                let img = image::load_from_memory(&body).unwrap();
                size = (img.width(), img.height());
            }
        } else {
            view.push(ms);
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(500).saturating_sub(t.elapsed()));
    }
    let r2 = next_report(http, r1.0 + 1);
    let r2 = if r2.0 < r1.0 + (secs as i64 * 1000) {
        next_report(http, r2.0)
    } else {
        r2
    };
    shutdown.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = rt.block_on(node);
    rt.block_on(agg.stop());
    let _ = std::fs::remove_dir_all(&dir);

    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    let period = |a: &(i64, u64, u64, Value), b: &(i64, u64, u64, Value)| {
        json!({
            "secs": (b.0 - a.0) as f64 / 1e3,
            "decoded": b.1 - a.1,
            "processed": b.2 - a.2,
            "dropped_by_reason": dropped(&a.3, &b.3),
        })
    };
    let out = json!({
        "camera": {"width": size.0, "height": size.1, "fps": 5, "source": "vtest.avi scaled to 1920x1080, H.264, real time"},
        "full_frame_ms": {"median": median(full.clone()), "max": max(&full), "n": full.len()},
        "view_1280_overlay_ms": {"median": median(view.clone()), "max": max(&view), "n": view.len()},
        "nobody_watching": period(&r0, &r1),
        "watched_2_per_s": period(&r1, &r2),
    });
    println!(
        "live view of a {}x{} camera through the aggregator on loopback: full frame median {:.1} ms (max {:.1}, n {}); 1280 wide with overlay median {:.1} ms (max {:.1}, n {})",
        size.0,
        size.1,
        median(full.clone()),
        max(&full),
        full.len(),
        median(view.clone()),
        max(&view),
        view.len()
    );
    println!("camera while nobody watched: {}", out["nobody_watching"]);
    println!("camera while watched at 2/s: {}", out["watched_2_per_s"]);
    let path = benches::repo_root().join("target/live-view-bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("written to {}", path.display());
}
