//! The node's shared inference engine with the real detector: cameras that name the same
//! model get one engine (one ONNX Runtime session), each camera gets the detections of its own
//! frame back, however many submit at once, none gets fewer runs than the others, and the
//! engine is closed when the last camera lets go.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use edge_node::config::SourceConfig;
use edge_node::detect::Detector;
use edge_node::engine::Engines;
use edge_node::preprocess::{letterbox, Prepared};

fn ort() -> std::path::PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join(".cache/onnxruntime/libonnxruntime.so.1.32.0"))
}

fn models() -> std::path::PathBuf {
    std::env::var_os("TRAFFIC_MODELS_DIR")
        .map(Into::into)
        .unwrap_or_else(|| repo_root().join(".cache/models"))
}

/// Frames 0, 100, 200 and 300 of vtest.avi, letterboxed for the detector.
fn frames(spec: &edge_node::manifest::InputSpec) -> Vec<Prepared> {
    let mut src = edge_node::source::open(
        &SourceConfig::File {
            path: vtest(),
            start_time: None,
            realtime: false,
        },
        Duration::from_secs(10),
    )
    .unwrap();
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < 4 {
        let f = src.next_frame().unwrap().expect("vtest.avi has 300 frames");
        if i % 100 == 0 {
            out.push(letterbox(&f.rgb, f.width, f.height, f.stride(), spec));
        }
        i += 1;
    }
    out
}

#[test]
fn cameras_share_one_engine_get_their_own_results_and_equal_turns() {
    let manifest = repo_root().join("models/yolov8n.toml");
    let engines = Engines::default();
    let a = engines.detector(&manifest, &models(), &ort(), 2).unwrap();
    let b = engines.detector(&manifest, &models(), &ort(), 2).unwrap();
    assert!(
        Arc::ptr_eq(&a, &b),
        "two cameras, two sessions of one model"
    );
    assert_eq!(engines.loaded(), 1);
    drop(b);

    // What each frame gives on a detector of its own.
    let mut plain = Detector::load(&manifest, &models(), &ort(), 2).unwrap();
    let frames = frames(&plain.manifest().input.clone());
    let expected: Vec<Vec<(usize, [i32; 4])>> = frames
        .iter()
        .map(|p| {
            plain
                .detect(p)
                .unwrap()
                .0
                .iter()
                .map(|d| {
                    (
                        d.class_id,
                        [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2].map(|v| v.round() as i32),
                    )
                })
                .collect()
        })
        .collect();
    assert!(expected.iter().all(|e| !e.is_empty()));

    // Four cameras submit their own frame again and again for three seconds.
    let until = Instant::now() + Duration::from_secs(3);
    let handles: Vec<_> = (0..4)
        .map(|cam| {
            let (engine, frame, want) = (a.clone(), frames[cam].clone(), expected[cam].clone());
            std::thread::spawn(move || {
                let mut runs = 0u32;
                while Instant::now() < until {
                    let (dets, _) = engine.detect(frame.clone()).unwrap();
                    let got: Vec<(usize, [i32; 4])> = dets
                        .iter()
                        .map(|d| {
                            (
                                d.class_id,
                                [d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2]
                                    .map(|v| v.round() as i32),
                            )
                        })
                        .collect();
                    assert_eq!(got, want, "camera {cam} got another frame's detections");
                    runs += 1;
                }
                runs
            })
        })
        .collect();
    let runs: Vec<u32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mean = runs.iter().sum::<u32>() as f64 / runs.len() as f64;
    println!("runs per camera in 3 s on one shared engine: {runs:?}");
    for r in &runs {
        assert!(
            *r as f64 >= 0.8 * mean,
            "a camera got {r} runs against a mean of {mean:.1}: {runs:?}"
        );
    }

    // The last camera lets go: the engine closes; the next camera loads it again.
    drop(a);
    assert_eq!(engines.loaded(), 0);
    let c = engines.detector(&manifest, &models(), &ort(), 2).unwrap();
    assert!(c.alive());
    assert_eq!(engines.loaded(), 1);
}
