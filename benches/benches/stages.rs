//! Criterion benches of the synchronous stage cores, on real data where it matters:
//! letterbox of a real vtest.avi frame, YOLOv8 decode + NMS of the real model output for
//! that frame (when the model is installed), the tracker with 50 objects, event encoding.
//! Set-up happens outside the timed part.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use edge_node::config::{SourceConfig, TrackerConfig};
use edge_node::detect::{postprocess_yolov8, Detection, Detector};
use edge_node::events::EventFactory;
use edge_node::evidence::{picture, render_closeup, render_scene, Overlay};
use edge_node::manifest::ModelManifest;
use edge_node::preprocess::letterbox;
use edge_node::red_light::{Person, RedLightConfig, RedLightRule};
use edge_node::signal::Resolved;
use edge_node::track::Tracker;
use edge_node::zones::{ZoneConfig, ZoneMap};
use protocol::{BBox, DeviceId};

/// Frame 100 of vtest.avi (768x576), the frame every stage here is measured on.
fn vtest_frame_100() -> edge_node::frame::Frame {
    let mut src = edge_node::source::open(
        &SourceConfig::File {
            path: benches::vtest(),
            start_time: None,
            realtime: false,
        },
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let mut frame = src.next_frame().unwrap().unwrap();
    for _ in 0..100 {
        frame = src.next_frame().unwrap().unwrap();
    }
    frame
}

fn bench(c: &mut Criterion) {
    let manifest = ModelManifest::load(&benches::detector_manifest()).unwrap();
    let frame = vtest_frame_100();
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

    // The red-light rule with the demo's zones and 50 people walking across them.
    let demo: toml::Value = toml::from_str(
        &std::fs::read_to_string(benches::repo_root().join("configs/edge-demo.toml")).unwrap(),
    )
    .unwrap();
    let zones: Vec<ZoneConfig> = demo["cameras"][0]["zones"].clone().try_into().unwrap();
    let mut rule = RedLightRule::new(RedLightConfig::default(), ZoneMap::new(&zones));
    let red = Resolved {
        reading: Some(protocol::SignalReading {
            phase: "p".into(),
            state: protocol::LightState::Red,
            since_ms: 0,
            source: protocol::SignalSource::Plan,
            observed_ms: 0,
        }),
        age_ms: 0,
    };
    let people: Vec<Vec<Person>> = (0..300)
        .map(|f| {
            (0..50u64)
                .map(|i| {
                    let x = ((i * 37 + f * 3) % 768) as f32;
                    let y = 180.0 + (i % 10) as f32 * 25.0;
                    Person {
                        track_id: i,
                        bbox: BBox::new(x, y - 80.0, x + 30.0, y),
                        rider: false,
                    }
                })
                .collect()
        })
        .collect();
    let mut k = 0u64;
    c.bench_function("crossing/red-light rule, 50 people, one frame", |b| {
        b.iter(|| {
            k += 1;
            black_box(rule.evaluate(
                k,
                k as i64 * 100,
                768,
                576,
                &people[(k % 300) as usize],
                &red,
            ))
        })
    });

    // Evidence for one violation: three scene pictures and a close-up, JPEG and sha256.
    let shapes: Vec<edge_node::evidence::Shape> = ZoneMap::new(&zones)
        .crosswalks
        .iter()
        .map(|(_, p)| (p.to_pixels(768, 576), [255, 220, 0]))
        .collect();
    let font = edge_node::evidence::EvidenceConfig::default()
        .load_font()
        .expect("the CJK font scripts/setup.sh installs");
    let ov = Overlay {
        lines: vec![
            "2026-11-29 08:00:36.300 (UTC+8)  第 1/3 张".into(),
            "违法行为 行人不按交通信号灯指示通行（代码 3001）".into(),
            "卡口 32050500051210000001  设备 32050500051320000001".into(),
            "行人信号 红灯 自 08:00:24.000 起（配时方案，时延 0 毫秒）  轨迹 9".into(),
        ],
        zones: &shapes,
        person: BBox::new(528.0, 258.0, 568.0, 352.0),
        font: &font,
    };
    c.bench_function(
        "evidence/one violation: 3 scenes + close-up, JPEG q85 + sha256",
        |b| {
            b.iter(|| {
                let mut v = Vec::new();
                for role in ["stage1", "stage2", "stage3"] {
                    v.push(picture(role, render_scene(&frame, &ov, 85)));
                }
                v.push(picture("closeup", render_closeup(&frame, &ov, 85)));
                black_box(v)
            })
        },
    );
}

/// Why evidence JPEGs are written by `jpeg-encoder` and not by the `image` crate's encoder
/// (everything else about the pictures is `image` and `imageproc`): the same frame with its
/// banner, encoded by each, side by side.
fn bench_jpeg(c: &mut Criterion) {
    let frame = vtest_frame_100();
    let img = image::RgbImage::from_raw(frame.width, frame.height, frame.rgb.to_vec()).unwrap();
    let mut g = c.benchmark_group("evidence/JPEG q85 of a 768x576 frame");
    g.bench_function("jpeg-encoder", |b| {
        b.iter(|| black_box(edge_node::evidence::jpeg(&img, 85)))
    });
    g.bench_function("image JpegEncoder", |b| {
        b.iter(|| {
            let mut out = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
                .encode_image(&img)
                .unwrap();
            black_box(out)
        })
    });
    g.finish();
}

/// The live view's cost at a 1080p camera: the vtest frame scaled to 1920x1080, made into
/// the JPEG a viewer gets (what the node does per request, at most five a second per camera;
/// the request's way through zenoh and the aggregator, at 1080p, is measured by the
/// `live_view` bench).
fn bench_live(c: &mut Criterion) {
    let frame = vtest_frame_100();
    let big = edge_node::evidence::scaled(&frame.rgb, frame.width, frame.height, 1920, 1080);
    let snap = edge_node::live::Snapshot {
        frame: edge_node::frame::Frame {
            seq: 0,
            time_ms: 0,
            width: 1920,
            height: 1080,
            rgb: std::sync::Arc::new(big.into_raw()),
        },
        boxes: (0..8)
            .map(|i| edge_node::live::LiveBox {
                bbox: BBox::new(
                    100.0 + 200.0 * i as f32,
                    300.0,
                    180.0 + 200.0 * i as f32,
                    520.0,
                ),
                label: "person".into(),
                track_id: i,
            })
            .collect(),
    };
    let zones: Vec<edge_node::zones::ZoneConfig> = toml::from_str::<toml::Value>(
        "[[z]]\nname = \"xw\"\nkind = \"crosswalk\"\npolygon = [[0.1, 0.5], [0.9, 0.5], [0.9, 0.7], [0.1, 0.7]]\n",
    )
    .unwrap()["z"]
        .clone()
        .try_into()
        .unwrap();
    let font = edge_node::evidence::EvidenceConfig::default()
        .load_font()
        .ok();
    let mut g = c.benchmark_group("live/1080p frame to JPEG");
    g.bench_function("full size", |b| {
        b.iter(|| black_box(edge_node::live::render(&snap, None, None, 0)))
    });
    g.bench_function("1280 wide, boxes and zones", |b| {
        b.iter(|| {
            black_box(edge_node::live::render(
                &snap,
                Some(&zones),
                font.as_ref(),
                1280,
            ))
        })
    });
    g.finish();
    // What the camera's thread pays per frame whether or not anyone watches: the frame handed
    // over by pointer with its tracked boxes (the picture is made only when asked, elsewhere).
    let frames = edge_node::live::LiveFrames::default();
    let slot = frames.slot("cam");
    c.bench_function("live/offer a 1080p frame (camera thread, per frame)", |b| {
        b.iter(|| slot.offer(black_box(snap.clone())))
    });
}

criterion_group!(benches, bench, bench_jpeg, bench_live);
criterion_main!(benches);
