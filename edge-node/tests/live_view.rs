//! The live view end to end: the edge-node binary on vtest.avi played in real time with the
//! real YOLOv8n model, an aggregator on loopback, and the operator's request through the
//! aggregator's HTTP API (`GET /api/v1/cameras/{id}/live`): the node answers the zenoh query
//! with a JPEG of its latest frame, plain or with the zones and tracked boxes drawn, scaled
//! when asked; an unknown camera is named.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::*;

const CAMERA: &str = "32050500051320000001";

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    aggregator::client::get_bytes(addr, path).unwrap()
}

#[test]
fn an_operator_sees_what_the_camera_sees() {
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("live");
    let config = node_header(agg.zenoh_port)
        + &format!(
            r#"[[cameras]]
id = "{CAMERA}"
name = "vtest"
source = {{ type = "file", path = "{}", realtime = true }}
detector = "models/yolov8n.toml"
max_frames = 400
[[cameras.zones]]
name = "road"
kind = "crosswalk"
polygon = [[0.05, 0.45], [0.95, 0.45], [0.95, 0.75], [0.05, 0.75]]
"#,
            vtest().display(),
        );
    let (mut child, _) = spawn_edge(&config, &dir.0);
    let _node = KillOnPanic(child.id());
    // Drained, so that a chatty node never blocks on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let _stdout = child.stdout.take();

    // The camera is known once its node has reported its health.
    let path = format!("/api/v1/cameras/{CAMERA}/live");
    let deadline = Instant::now() + Duration::from_secs(90);
    let first = loop {
        let (status, _, body) = get(agg.http, &path);
        if status == 200 {
            break body;
        }
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "no live view: {status} {}",
            String::from_utf8_lossy(&body)
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    let img = image::load_from_memory_with_format(&first, image::ImageFormat::Jpeg)
        .expect("a JPEG")
        .to_rgb8();
    assert_eq!(
        (img.width(), img.height()),
        (768, 576),
        "the frame at full size"
    );

    // The frame moves on; each answer says its frame's time; the latency of ten answers.
    let mut times = Vec::new();
    let mut took = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let (status, head, body) = get(agg.http, &path);
        took.push(t.elapsed());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: image/jpeg"),
            "{head}"
        );
        let time: i64 = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("x-frame-time-ms: ")
                    .map(|v| v.trim().to_string())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no frame time in {head}"));
        times.push(time);
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        times.last() > times.first(),
        "the live view follows the video: {times:?}"
    );
    took.sort();
    eprintln!(
        "live view through the aggregator, 768x576 on loopback: median {:.1} ms, max {:.1} ms",
        took[5].as_secs_f64() * 1e3,
        took[9].as_secs_f64() * 1e3
    );

    // The debug view, scaled: the zone drawn in yellow, people boxed in red (counted against
    // the plain view at the same size).
    let view = |query: &str| {
        let (status, _, body) = get(agg.http, &format!("{path}?{query}"));
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        image::load_from_memory_with_format(&body, image::ImageFormat::Jpeg)
            .unwrap()
            .to_rgb8()
    };
    let count = |img: &image::RgbImage, f: &dyn Fn(&image::Rgb<u8>) -> bool| {
        img.pixels().filter(|p| f(p)).count()
    };
    let yellow = |p: &image::Rgb<u8>| p.0[0] > 180 && p.0[1] > 160 && p.0[2] < 110;
    let red = |p: &image::Rgb<u8>| p.0[0] > 180 && p.0[1] < 110 && p.0[2] < 110;
    let plain = view("width=384");
    let dbg = view("overlay=1&width=384");
    assert_eq!((dbg.width(), dbg.height()), (384, 288));
    let (y0, y1) = (count(&plain, &yellow), count(&dbg, &yellow));
    let (r0, r1) = (count(&plain, &red), count(&dbg, &red));
    assert!(
        y1 > y0 + 200,
        "the zone outlined: {y0} -> {y1} yellow pixels"
    );
    assert!(
        r1 > r0 + 100,
        "tracked people boxed: {r0} -> {r1} red pixels"
    );

    // Bad requests are named.
    let (status, _, body) = get(agg.http, "/api/v1/cameras/32050500051320000099/live");
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("GET /api/v1/nodes"));
    let (status, _, _) = get(agg.http, &format!("{path}?width=5"));
    assert_eq!(status, 400);

    let _ = child.kill();
    let _ = child.wait();
    let _ = log.join();
}
