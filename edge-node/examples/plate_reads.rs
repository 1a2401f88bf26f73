//! Prints every plate read on a clip, frame by frame (a tool for looking at the plate path).
//! `cargo run --release --example plate_reads -- CLIP.mp4 [every_nth_frame]`; with
//! `DUMP_CROPS=DIR` it writes each rectified crop to DIR (`FRAME_X_READ.jpg`) instead.
use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_node::config::SourceConfig;
use edge_node::detect::Detector;
use edge_node::plate::{PlatePipeline, ReadTimings};
use edge_node::preprocess::letterbox;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let every: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    // Optional frame range: `plate_reads CLIP EVERY FROM TO`.
    let from: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let to: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(u64::MAX);
    // Smeared crops read deblurred too: DEBLUR=1.
    let deblur = std::env::var_os("DEBLUR").is_some();
    let cache = PathBuf::from(std::env::var("TRAFFIC_CACHE").unwrap_or(".cache".into()));
    let ort = PathBuf::from(std::env::var("ORT_DYLIB_PATH").expect("source .cache/env.sh"));
    let models = cache.join("models");
    let mut det = Detector::load(Path::new("models/yolov8n.toml"), &models, &ort, 2).unwrap();
    let mut plates = PlatePipeline::load(
        Path::new("models/clp_det.toml"),
        &[
            "models/ppocrv4_rec.toml".into(),
            "models/clp_rec.toml".into(),
        ],
        &models,
        &ort,
        2,
    )
    .unwrap();
    let mut src = edge_node::source::open(
        &SourceConfig::File {
            path: args[1].clone().into(),
            start_time: None,
            realtime: false,
        },
        Duration::from_secs(10),
    )
    .unwrap();
    let labels = det.labels().to_vec();
    let mut t = ReadTimings::default();
    let mut n = 0;
    while let Some(f) = src.next_frame().unwrap() {
        if f.seq % every != 0 || f.seq < from {
            continue;
        }
        if f.seq > to {
            break;
        }
        // SCAN=1: plates found over the whole frame at full resolution (as the camera's
        // scan does), not inside vehicle boxes.
        let reads: Vec<(
            String,
            f32,
            protocol::BBox,
            Option<edge_node::plate::PlateRead>,
        )> = if std::env::var_os("SCAN").is_some() {
            let whole = protocol::BBox::new(0.0, 0.0, f.width as f32, f.height as f32);
            let found = plates.find(&f, &whole, (0.0, 0.0), Some(1.0)).unwrap();
            found
                .into_iter()
                .map(|p| {
                    let r = plates.read_found(&f, &p, deblur, &mut t).unwrap();
                    ("plate".to_string(), p.score, p.bbox(), r)
                })
                .collect()
        } else {
            let p = letterbox(&f.rgb, f.width, f.height, f.stride(), &det.manifest().input);
            let (dets, _) = det.detect(&p).unwrap();
            dets.into_iter()
                .filter(|d| {
                    ["car", "bus", "truck", "motorcycle"].contains(&labels[d.class_id].as_str())
                })
                .map(|d| {
                    let r = plates.read_vehicle(&f, &d.bbox, deblur, &mut t).unwrap();
                    (labels[d.class_id].clone(), d.score, d.bbox, r)
                })
                .collect()
        };
        for (l, score, bbox, r) in reads {
            let d = edge_node::detect::Detection {
                class_id: 0,
                score,
                bbox,
            };
            n += 1;
            match r {
                Some(r) if std::env::var_os("DUMP_CROPS").is_some() => {
                    let dir = std::path::PathBuf::from(std::env::var_os("DUMP_CROPS").unwrap());
                    let name = dir.join(format!("{}_{}_{}_{}.jpg", f.seq, d.bbox.x1 as u32, d.bbox.y2 as u32, r.text()));
                    jpeg_encoder::Encoder::new_file(name, 95)
                        .unwrap()
                        .encode(&r.crop.data, r.crop.width as u16, r.crop.height as u16, jpeg_encoder::ColorType::Rgb)
                        .unwrap();
                }
                Some(r) => println!(
                    "frame {:3} {l:6} {:.2} x {:4.0}-{:4.0}  {} ({:.2}) {:?} two_row={} det={:.2} conf={:?}{}",
                    f.seq, d.score, d.bbox.x1, d.bbox.x2, r.text(), r.mean_conf(), r.colour, r.two_row, r.det_score,
                    r.conf.iter().map(|c| (c * 100.0) as u32).collect::<Vec<_>>(),
                    r.deblurred.iter().map(|d| format!(" | smear {} px: {} {:.2}", d.length, d.chars.iter().collect::<String>(), d.conf.first().copied().unwrap_or(0.0))).collect::<String>()
                ),
                None => println!("frame {:3} {l:6} {:.2} x {:4.0}-{:4.0}  no plate", f.seq, d.score, d.bbox.x1, d.bbox.x2),
            }
        }
    }
    println!(
        "{n} vehicle reads; detect {:.1} ms, rectify {:.1} ms, read {:.1} ms per vehicle",
        t.detect.as_secs_f64() * 1e3 / n as f64,
        t.rectify.as_secs_f64() * 1e3 / n as f64,
        t.read.as_secs_f64() * 1e3 / n as f64
    );
}
