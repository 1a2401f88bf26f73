//! Runs the plate detector on growing windows around a point of one frame and prints the best
//! score of each (a tool for finding where the detector loses a plate).
//! `cargo run --release --example clp_probe -- CLIP.mp4 FRAME X Y`
use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_node::config::SourceConfig;
use edge_node::plate::geometry::Rgb;
use edge_node::plate::models::PlateDetector;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (n, cx, cy): (u64, usize, usize) = (
        a[2].parse().unwrap(),
        a[3].parse().unwrap(),
        a[4].parse().unwrap(),
    );
    let cache = PathBuf::from(std::env::var("TRAFFIC_CACHE").unwrap_or(".cache".into()));
    let ort = PathBuf::from(std::env::var("ORT_DYLIB_PATH").expect("source .cache/env.sh"));
    let mut det = PlateDetector::load(
        Path::new("models/clp_det.toml"),
        &cache.join("models"),
        &ort,
        2,
    )
    .unwrap();
    let mut src = edge_node::source::open(
        &SourceConfig::File {
            path: a[1].clone().into(),
            start_time: None,
            realtime: false,
        },
        Duration::from_secs(10),
    )
    .unwrap();
    let f = loop {
        let f = src.next_frame().unwrap().unwrap();
        if f.seq == n {
            break f;
        }
    };
    for half in [100usize, 150, 200, 250, 300, 400] {
        let (x0, y0) = (cx.saturating_sub(half), cy.saturating_sub(half * 2 / 3));
        let (x1, y1) = (
            (cx + half).min(f.width as usize),
            (cy + half * 2 / 3).min(f.height as usize),
        );
        let mut img = Rgb::new(x1 - x0, y1 - y0);
        for y in y0..y1 {
            for x in x0..x1 {
                let i = (y * f.width as usize + x) * 3;
                img.put(x - x0, y - y0, [f.rgb[i], f.rgb[i + 1], f.rgb[i + 2]]);
            }
        }
        let d = det.detect(&img).unwrap();
        println!(
            "window {}x{}: {:?}",
            x1 - x0,
            y1 - y0,
            d.first().map(|d| (d.score, d.bbox))
        );
    }
}
