//! Criterion benches of the synchronous stage cores, on real data where it matters:
//! letterbox of a real vtest.avi frame, YOLOv8 decode + NMS of the real model output for
//! that frame (when the model is installed), the tracker with 50 objects, event encoding.
//! Set-up happens outside the timed part.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use edge_node::config::{SourceConfig, TrackerConfig};
use edge_node::detect::{postprocess_yolov8, Detection, Detector};
use edge_node::events::EventFactory;
use edge_node::manifest::ModelManifest;
use edge_node::preprocess::letterbox;
use edge_node::evidence::{picture, render_closeup, render_scene, Overlay};
use edge_node::red_light::{Person, RedLightConfig, RedLightRule};
use edge_node::signal::Resolved;
use edge_node::track::Tracker;
use edge_node::zones::{ZoneConfig, ZoneMap};
use protocol::{BBox, DeviceId};

fn bench(c: &mut Criterion) {
    let manifest = ModelManifest::load(&benches::detector_manifest()).unwrap();
    let mut src = edge_node::source::open(&SourceConfig::File {
        path: benches::vtest(),
        start_time: None,
        realtime: false,
    })
    .unwrap();
    let mut frame = src.next_frame().unwrap().unwrap();
    for _ in 0..100 {
        frame = src.next_frame().unwrap().unwrap();
    }
    c.bench_function("preprocess/letterbox 768x576 -> 640", |b| {
        b.iter(|| {
            letterbox(
                black_box(&frame.rgb),
                frame.width,
                frame.height,
                frame.stride(),
                &manifest.input,
            )
        })
    });

    let prepared = letterbox(
        &frame.rgb,
        frame.width,
        frame.height,
        frame.stride(),
        &manifest.input,
    );
    let mut det = Detector::load(
        &benches::detector_manifest(),
        &benches::models_dir(),
        &benches::ort_library(),
        2,
    )
    .unwrap();
    let raw = det.run_raw(&prepared).unwrap();
    let classes = det.labels().len();
    let anchors = raw.len() / (4 + classes);
    c.bench_function("postprocess/yolov8 decode + nms (vtest frame 100)", |b| {
        b.iter(|| {
            postprocess_yolov8(
                black_box(&raw),
                classes,
                anchors,
                0.25,
                0.45,
                &prepared.letterbox,
            )
        })
    });

    // 50 people walking in a grid, each 2 px a frame; the tracker is warmed up first.
    let frames: Vec<Vec<Detection>> = (0..200)
        .map(|f| {
            (0..50)
                .map(|i| {
                    let x = (i % 10) as f32 * 70.0 + f as f32 * 2.0;
                    let y = (i / 10) as f32 * 110.0;
                    Detection {
                        class_id: 0,
                        score: 0.5 + (i % 5) as f32 * 0.1,
                        bbox: BBox::new(x, y, x + 40.0, y + 100.0),
                    }
                })
                .collect()
        })
        .collect();
    c.bench_function("track/update with 50 tracks", |b| {
        let mut tracker = Tracker::new(TrackerConfig::default());
        for (i, f) in frames.iter().take(10).enumerate() {
            tracker.update(f, i as i64 * 100);
        }
        let mut i = 10;
        b.iter(|| {
            let f = &frames[10 + i % 190];
            i += 1;
            black_box(tracker.update(f, i as i64 * 100))
        })
    });

    let mut tracker = Tracker::new(TrackerConfig::default());
    let mut started = Vec::new();
    for (i, f) in frames.iter().take(5).enumerate() {
        started.extend(tracker.update(f, i as i64 * 100));
    }
    let mut factory = EventFactory::new(
        DeviceId::parse("32050500055050000001").unwrap(),
        DeviceId::parse("32050500051210000001").unwrap(),
        DeviceId::parse("32050500051320000001").unwrap(),
        None,
        det.labels().to_vec(),
    );
    c.bench_function("events/object_track build + encode", |b| {
        b.iter(|| black_box(factory.object_track(&started[0]).encode()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
