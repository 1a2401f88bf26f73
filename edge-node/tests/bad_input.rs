//! Bad input: a corrupt video file, a missing model file, a model of the wrong shape and an
//! invalid config each give a clear error naming the input, and the other cameras keep
//! running.

mod common;

use std::time::Duration;

use common::*;
use gstreamer as gst;
use gstreamer::prelude::*;

/// The first `frames` frames of vtest.avi as an H.264 MP4 with its index (`moov`) in front,
/// as cameras' recorders and `ffmpeg -movflags faststart` write them.
fn mp4_of_vtest(path: &std::path::Path, frames: u32) {
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! decodebin ! videoconvert ! identity eos-after={frames} ! openh264enc ! h264parse ! mp4mux faststart=true ! filesink location={}",
        vtest().display(),
        path.display()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    assert!(matches!(msg.view(), gst::MessageView::Eos(_)), "{msg:?}");
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn corrupt_video_and_missing_model_fail_alone_while_the_good_camera_runs() {
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("bad");
    // Corrupt: an AVI header followed by garbage; truncated: the first 64 KiB of vtest.avi
    // cut mid-frame is still playable, so it is the garbage file that must fail.
    let corrupt = dir.0.join("corrupt.avi");
    let mut bytes = b"RIFF\x00\x10\x00\x00AVI LIST".to_vec();
    bytes.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&corrupt, bytes).unwrap();
    // Cut short: the first half of a 10 s MP4 plays to the cut and ends as if whole (its
    // index names the whole length); issue 18, row 10.
    let mp4 = dir.0.join("whole.mp4");
    mp4_of_vtest(&mp4, 100);
    let whole = std::fs::read(&mp4).unwrap();
    let cut = dir.0.join("cut.mp4");
    std::fs::write(&cut, &whole[..whole.len() / 2]).unwrap();
    // A manifest whose model file does not exist.
    let manifest = std::fs::read_to_string(repo_root().join("models/yolov8n.toml"))
        .unwrap()
        .replace("file = \"yolov8n.onnx\"", "file = \"missing-model.onnx\"");
    let manifest_path = dir.0.join("missing.toml");
    std::fs::write(&manifest_path, manifest).unwrap();
    // A model of the wrong shape: the detector's manifest naming the plate reader's file (a
    // real model taking [N, 3, 48, W]) and its input.
    let yolo = std::fs::read_to_string(repo_root().join("models/yolov8n.toml")).unwrap();
    let ocr = std::fs::read_to_string(repo_root().join("models/ppocrv4_rec.toml")).unwrap();
    let line = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap()
            .to_string()
    };
    let wrong = yolo
        .replace(&line(&yolo, "file = "), &line(&ocr, "file = "))
        .replace(&line(&yolo, "sha256 = "), &line(&ocr, "sha256 = "))
        .replace("name = \"images\"", "name = \"x\"");
    let wrong_path = dir.0.join("wrong-shape.toml");
    std::fs::write(&wrong_path, wrong).unwrap();

    let config = node_header(agg.zenoh_port)
        + &format!(
            r#"[[cameras]]
id = "32050500051320000001"
name = "good"
source = {{ type = "file", path = "{vtest}" }}
max_frames = 40
[[cameras]]
id = "32050500051320000002"
name = "corrupt"
source = {{ type = "file", path = "{corrupt}" }}
stall_timeout_secs = 3
retry = {{ initial_backoff_ms = 100, max_backoff_ms = 200, max_attempts = 2 }}
[[cameras]]
id = "32050500051320000003"
name = "no-model"
source = {{ type = "file", path = "{vtest}" }}
detector = "{manifest}"
retry = {{ initial_backoff_ms = 100, max_backoff_ms = 200, max_attempts = 2 }}
[[cameras]]
id = "32050500051320000005"
name = "wrong-shape"
source = {{ type = "file", path = "{vtest}" }}
detector = "{wrong}"
retry = {{ initial_backoff_ms = 100, max_backoff_ms = 200, max_attempts = 2 }}
[[cameras]]
id = "32050500051320000006"
name = "cut"
source = {{ type = "file", path = "{cut}" }}
[[cameras]]
id = "32050500051320000004"
name = "no-file"
source = {{ type = "file", path = "{dir}/does-not-exist.mp4" }}
retry = {{ initial_backoff_ms = 100, max_backoff_ms = 200, max_attempts = 2 }}
"#,
            vtest = vtest().display(),
            corrupt = corrupt.display(),
            cut = cut.display(),
            manifest = manifest_path.display(),
            wrong = wrong_path.display(),
            dir = dir.0.display(),
        );
    let (out, summary) = run_edge(&config, &dir.0, Duration::from_secs(240));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "failed cameras give exit code 3\n{stderr}"
    );
    let summary = summary.expect("summary written even when cameras fail");
    let cams = summary["cameras"].as_array().unwrap();
    let by_name = |n: &str| {
        cams.iter()
            .find(|c| c["label"] == n)
            .unwrap_or_else(|| panic!("camera {n} in summary"))
    };

    let good = by_name("good");
    assert_eq!(good["failed"], false, "{good}");
    // The good and the cut camera name the same detector: the node loads it once.
    assert_eq!(
        stderr
            .matches("Detector loaded; shared by every camera")
            .count(),
        1,
        "{stderr}"
    );
    assert_eq!(good["frames_processed"], 40);
    let published = good["events_published"].as_u64().unwrap();
    assert!(published > 0);
    // What the cut file published up to its cut is kept too.
    let published = published + by_name("cut")["events_published"].as_u64().unwrap();
    assert_eq!(
        agg.wait_stored(published, Duration::from_secs(20)),
        published
    );

    let corrupt_err = by_name("corrupt")["error"].as_str().unwrap().to_string();
    assert!(corrupt_err.contains("corrupt.avi"), "{corrupt_err}");
    assert_eq!(by_name("corrupt")["attempts"], 2);

    // The cut file: its frames up to the cut processed and published, then a failure that
    // names the file and says it was cut short.
    let cut_cam = by_name("cut");
    assert_eq!(cut_cam["failed"], true, "{cut_cam}");
    assert_eq!(
        cut_cam["attempts"], 1,
        "a file that broke part-way is not replayed: {cut_cam}"
    );
    assert!(
        cut_cam["frames_processed"].as_u64().unwrap() > 10,
        "{cut_cam}"
    );
    let cut_err = cut_cam["error"].as_str().unwrap();
    assert!(
        cut_err.contains("cut.mp4") && cut_err.contains("cut short"),
        "{cut_err}"
    );
    let model_err = by_name("no-model")["error"].as_str().unwrap().to_string();
    assert!(
        model_err.contains("missing-model.onnx") && model_err.contains("setup.sh"),
        "{model_err}"
    );

    let shape_err = by_name("wrong-shape")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        shape_err.contains("ch_PP-OCRv4_rec_infer.onnx")
            && shape_err.contains("wrong-shape.toml")
            && shape_err.contains("shape"),
        "{shape_err}"
    );

    let file_err = by_name("no-file")["error"].as_str().unwrap().to_string();
    assert!(
        file_err.contains("does-not-exist.mp4") && file_err.contains("No such file"),
        "{file_err}"
    );

    // The operator sees the same in the log and in the printed summary.
    for needle in [
        "corrupt.avi",
        "missing-model.onnx",
        "does-not-exist.mp4",
        "cut short",
    ] {
        assert!(
            stderr.contains(needle),
            "{needle} missing from stderr:\n{stderr}"
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("FAILED after 2 attempt(s)"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn invalid_config_names_file_and_every_problem() {
    let dir = common::tempdir::Dir::new("cfg");
    let config = r#"node_id = "32050500055050000001"
checkpoint_id = "320505000512100000"
[[cameras]]
id = "32050500051320000001"
source = { type = "rtsp", url = "http://camera/stream" }
[[cameras]]
id = "32050500051320000001"
source = { type = "file", path = "x.avi" }
"#;
    let (out, summary) = run_edge(config, &dir.0, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(summary.is_none());
    for needle in [
        "edge.toml",
        "3 problem(s)",
        "checkpoint_id",
        "'320505000512100000'",
        "'http://camera/stream'",
        "must be unique",
    ] {
        assert!(stderr.contains(needle), "{needle} missing:\n{stderr}");
    }

    let (out, _) = run_edge("node_id = 5\n", &dir.0, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("edge.toml") && stderr.contains("node_id"),
        "{stderr}"
    );
}
