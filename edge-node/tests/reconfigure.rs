//! Live reconfiguration of a running edge node (the binary, the real model, vtest.avi): its
//! config file is rewritten while it runs. A bad file is refused and the running camera goes
//! on; a good one adds a camera and restarts a changed one; removing the last camera running
//! ends the node. Observed through the node's Prometheus endpoint, its summary and the
//! aggregator.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CAM_A: &str = "32050500051320000001";
const CAM_B: &str = "32050500051320000002";

fn camera(id: &str, name: &str, max_frames: u32) -> String {
    format!(
        "[[cameras]]\nid = \"{id}\"\nname = \"{name}\"\nsource = {{ type = \"file\", path = \"{}\" }}\nmax_frames = {max_frames}\n",
        vtest().display()
    )
}

fn metric(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn config_changes_apply_live_and_bad_ones_are_refused() {
    let agg = TestAggregator::start();
    let dir = common::tempdir::Dir::new("reconf");
    let mport = free_port();
    let head = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:{mport}\"\n[outbox]\npath = \"{}\"\n",
        node_header(agg.zenoh_port),
        dir.0.join("outbox.db").display()
    );
    let cfg = dir.0.join("edge.toml");
    std::fs::write(&cfg, head.clone() + &camera(CAM_A, "a", 500)).unwrap();
    let summary = dir.0.join("summary.json");
    let log = dir.0.join("edge.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-node"))
        .arg("--config")
        .arg(&cfg)
        .arg("--summary-json")
        .arg(&summary)
        .current_dir(repo_root())
        .env("RUST_LOG", "info,zenoh=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let metrics = || {
        aggregator::client::get(("127.0.0.1", mport), "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    };
    let wait = |what: &str, secs: u64, f: &dyn Fn(&str) -> bool| {
        let until = Instant::now() + Duration::from_secs(secs);
        loop {
            let m = metrics();
            if f(&m) {
                return m;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let frames = |m: &str, cam: &str| {
        metric(
            m,
            "edge_frames_processed_total",
            &format!("camera=\"{cam}\""),
        )
    };
    wait("camera a running", 60, &|m| frames(m, CAM_A) >= 10.0);

    // A bad file: a camera id that is no id. Refused; camera a goes on.
    std::fs::write(
        &cfg,
        head.clone() + &camera(CAM_A, "a", 500) + &camera("123", "b", 60),
    )
    .unwrap();
    let m = wait("the refusal", 20, &|m| {
        metric(m, "edge_config_reloads_total", "rejected") >= 1.0
    });
    let before = frames(&m, CAM_A);
    wait("camera a still running", 20, &|m| {
        frames(m, CAM_A) >= before + 5.0
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("New config refused") && text.contains("123"),
        "{text}"
    );

    // A good file: camera b added, camera a changed (it restarts with its new settings).
    std::fs::write(
        &cfg,
        head.clone() + &camera(CAM_A, "a", 450) + &camera(CAM_B, "b", 60),
    )
    .unwrap();
    wait("the change applied", 20, &|m| {
        metric(m, "edge_config_reloads_total", "applied") >= 1.0
    });
    wait("camera b done", 120, &|m| frames(m, CAM_B) >= 60.0);

    // Camera a removed: b has finished, so nothing runs and the node ends.
    std::fs::write(&cfg, head.clone() + &camera(CAM_B, "b", 60)).unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < until,
            "the node did not end after its last camera was removed"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "exit {status}; log:\n{text}");
    assert!(!text.contains("panicked"), "{text}");
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    let runs: Vec<(String, u64)> = s["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["label"].as_str().unwrap().to_string(),
                c["frames_processed"].as_u64().unwrap(),
            )
        })
        .collect();
    eprintln!("camera runs (label, frames): {runs:?}");
    // a: stopped to restart, then stopped when removed, each before its file ended; b: 60.
    assert_eq!(runs.len(), 3, "{runs:?}");
    assert!(
        runs.iter().filter(|(l, _)| l == "a").all(|(_, n)| *n < 450),
        "{runs:?}"
    );
    assert!(runs.iter().any(|(l, n)| l == "b" && *n == 60), "{runs:?}");
    // Camera b's events reached the aggregator.
    let published = s["events_published"].as_u64().unwrap();
    assert_eq!(
        agg.wait_stored(published, Duration::from_secs(30)),
        published
    );
    let b_events = agg.all_events(&format!("camera={CAM_B}"));
    assert!(!b_events.is_empty(), "no events from the camera added live");
}
