//! The plate path on real photographs: exact-read rate, character accuracy, detector recall
//! and corner error (CCPD scenes), misses by kind, false `format_invalid` alarms, colour,
//! and per-plate latency p50 / p99, for each reader order; beside it, the plain Python
//! pipeline with the same models (`benches/python/plain_plates.py`), run in the same
//! process tree on the same files.
//!
//! `cargo bench -p benches --bench plates_real`. The data: `REAL_PLATES_DIR` or
//! `../shared/data/real-plates` (crops/ and scenes/); any folder of photos with a
//! `labels.tsv` in `REAL_PLATES_LABELLED` (several separated by `:`). `PLATE_THREADS`
//! (default 1) sets ONNX Runtime's threads on both sides; `PLATE_READERS=clp_rec,ppocrv4_rec`
//! runs one reader order only. `PLATE_ROUNDS` (default 5): each photo is detected and read
//! that many times on both sides and its median time kept (crops are many and timed once).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use benches::realplates::{self, LabelledPhoto, Miss};
use edge_node::frame::Frame;
use edge_node::plate::fusion::fuse;
use edge_node::plate::geometry::Rgb;
use edge_node::plate::{PlatePipeline, PlateRead, ReadTimings};
use edge_node::registry::Registry;
use edge_node::vehicles::{judge, plate_rules, PlatesConfig};
use protocol::plate::PlateColor;
use protocol::AnomalyType;

/// How one reader order did on one set.
#[derive(Default)]
struct Score {
    plates: usize,
    exact: usize,
    chars: usize,
    chars_right: usize,
    misses: std::collections::BTreeMap<Miss, usize>,
    /// Plates read and not sure enough to raise an alarm.
    unsure: usize,
    false_format_invalid: usize,
    colour_right: usize,
    colour_known: usize,
    latency: Vec<Duration>,
    /// Photos: the detector's share of each plate's latency, and the reading's.
    detect: Vec<Duration>,
    read: Vec<Duration>,
    /// Reader passes, all plates together.
    reader_runs: u64,
    /// Scenes: plates found where the label says, and their corner error (pixels).
    detected: usize,
    corner_errors: Vec<f32>,
    /// labels.tsv photos with no readable plate in which a plate was read anyway.
    false_reads: usize,
    notes: Vec<String>,
}

impl Score {
    fn add(&mut self, label: &str, read: Option<&PlateRead>, cfg: &PlatesConfig) {
        let text = read.map(|r| r.text()).unwrap_or_default();
        self.plates += 1;
        self.chars += label.chars().count();
        self.chars_right += realplates::chars_right(label, &text);
        let expected_two_row = false; // every plate of these sets is a single-row one
        let layout_wrong = read.is_some_and(|r| r.two_row != expected_two_row);
        match realplates::classify(label, &text, layout_wrong) {
            None => self.exact += 1,
            Some(m) => {
                *self.misses.entry(m).or_default() += 1;
                self.notes.push(format!("{label} read {text:?}"));
            }
        }
        if let Some(r) = read {
            let expected = expected_colour(label);
            if let Some(e) = expected {
                self.colour_known += 1;
                if r.colour == Some(e) {
                    self.colour_right += 1;
                } else {
                    self.notes
                        .push(format!("{label} colour {:?}, not {e:?}", r.colour));
                }
            }
            // A vehicle passing slowly gives the same read in every frame: the pass as the
            // rules would judge it after `fake_min_reads` such reads.
            let reads: Vec<PlateRead> = (0..cfg.fake_min_reads.max(2)).map(|_| r.clone()).collect();
            let fused = fuse(&reads);
            let pass = judge(fused.as_ref(), &reads, cfg);
            if pass.unsure {
                self.unsure += 1;
            }
            let findings = plate_rules(&pass, None, &Registry::default(), cfg, (120, 300), 0);
            if findings
                .iter()
                .any(|f| f.anomaly == AnomalyType::FormatInvalid)
            {
                self.false_format_invalid += 1;
                self.notes
                    .push(format!("{label} read {text:?}: false format_invalid"));
            }
        }
    }
}

/// Real sets here: blue single-row plates of 7 characters, green new-energy ones of 8.
fn expected_colour(label: &str) -> Option<PlateColor> {
    match label.chars().count() {
        7 => Some(PlateColor::Blue),
        8 => Some(PlateColor::Green),
        _ => None,
    }
}

fn frame_of(path: &Path) -> Result<Frame, String> {
    let (w, h, rgb) = realplates::decode_jpeg(path)?;
    Ok(Frame {
        seq: 0,
        time_ms: 0,
        width: w as u32,
        height: h as u32,
        rgb: std::sync::Arc::new(rgb),
    })
}

fn crop_of(path: &Path) -> Result<Rgb, String> {
    let (width, height, data) = realplates::decode_jpeg(path)?;
    Ok(Rgb {
        width,
        height,
        data,
    })
}

fn load(readers: &[&str], threads: usize) -> PlatePipeline {
    let root = benches::repo_root();
    let manifests: Vec<PathBuf> = readers
        .iter()
        .map(|r| root.join(format!("models/{r}.toml")))
        .collect();
    PlatePipeline::load(
        &root.join("models/clp_det.toml"),
        &manifests,
        &benches::models_dir(),
        &benches::ort_library(),
        threads,
    )
    .expect("loading the plate models (run scripts/setup.sh first)")
}

fn run_crops(
    p: &mut PlatePipeline,
    crops: &[realplates::LabelledCrop],
    cfg: &PlatesConfig,
) -> Score {
    let mut s = Score::default();
    let mut t = ReadTimings::default();
    for c in crops {
        let img = match crop_of(&c.path) {
            Ok(i) => i,
            Err(e) => {
                eprintln!("plates_real: skipping {e}");
                continue;
            }
        };
        let t0 = Instant::now();
        let read = p.read_crop(&img, &mut t).expect("reading a crop");
        s.latency.push(t0.elapsed());
        s.add(&c.text, read.as_ref(), cfg);
    }
    s.reader_runs = t.reader_runs;
    s
}

/// Whole photos: the plate detector over the whole photo at full resolution (a 40 px plate
/// must stay findable), every plate found read; each labelled plate scored by the read of
/// the plate found where it is (or, without corners, the read equal to it, else the surest).
/// The median of a few durations (`benches::median`).
fn median(d: &[Duration]) -> Duration {
    Duration::from_secs_f64(benches::median(
        d.iter().map(Duration::as_secs_f64).collect(),
    ))
}

/// Photos are few (16 CCPD scenes), so each is detected and read `rounds` times and its
/// median time kept: one slow moment of a shared machine moves a p50 over 16 plates.
fn run_photos(
    p: &mut PlatePipeline,
    photos: &[LabelledPhoto],
    cfg: &PlatesConfig,
    rounds: usize,
) -> Score {
    let mut s = Score::default();
    let mut t = ReadTimings::default();
    for photo in photos {
        let frame = match frame_of(&photo.path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("plates_real: skipping {e}");
                continue;
            }
        };
        let whole = protocol::BBox::new(0.0, 0.0, frame.width as f32, frame.height as f32);
        let t0 = Instant::now();
        let found = p
            .find(&frame, &whole, (0.0, 0.0), Some(1.0))
            .expect("detecting");
        let mut detect = vec![t0.elapsed()];
        let mut reads = Vec::new();
        let mut read_times = Vec::new();
        for (i, f) in found.iter().enumerate() {
            let t1 = Instant::now();
            let runs = t.reader_runs;
            let r = p
                .read_found(&frame, f, cfg.deblur, &mut t)
                .expect("reading");
            s.notes.push(format!(
                "{}: {} reader passes, {:.1} ms, least sure character {:.2}",
                r.as_ref().map(|r| r.text()).unwrap_or_default(),
                t.reader_runs - runs,
                t1.elapsed().as_secs_f64() * 1000.0,
                r.as_ref()
                    .map(|r| r.conf.iter().copied().fold(1.0, f32::min))
                    .unwrap_or(0.0)
            ));
            read_times.push(vec![t1.elapsed()]);
            reads.push((i, r));
        }
        // The same work again, timed only (the pipeline keeps nothing between photos).
        let mut again = ReadTimings::default();
        for _ in 1..rounds {
            let t0 = Instant::now();
            let found_again = p
                .find(&frame, &whole, (0.0, 0.0), Some(1.0))
                .expect("detecting");
            detect.push(t0.elapsed());
            for (f, times) in found_again.iter().zip(read_times.iter_mut()) {
                let t1 = Instant::now();
                p.read_found(&frame, f, cfg.deblur, &mut again)
                    .expect("reading");
                times.push(t1.elapsed());
            }
        }
        // Per plate: its read, and the photo's detection shared among its plates.
        let share = median(&detect) / found.len().max(1) as u32;
        for times in read_times {
            let read = median(&times);
            s.latency.push(read + share);
            s.detect.push(share);
            s.read.push(read);
        }
        if photo.plates.is_empty() {
            let sure = reads
                .iter()
                .filter_map(|(_, r)| r.as_ref())
                .filter(|r| !judge(fuse(std::slice::from_ref(*r)).as_ref(), &[], cfg).unsure)
                .count();
            if sure > 0 {
                s.false_reads += 1;
                s.notes.push(format!(
                    "{}: no readable plate, {sure} read",
                    photo.path.display()
                ));
            }
            continue;
        }
        for label in &photo.plates {
            let chosen = match label.corners {
                Some(lc) => {
                    let hit = found
                        .iter()
                        .enumerate()
                        .map(|(i, f)| {
                            let iou = f.bbox().iou(&realplates::corners_box(&lc));
                            (i, iou)
                        })
                        .filter(|(_, iou)| *iou >= 0.3)
                        .max_by(|a, b| a.1.total_cmp(&b.1));
                    hit.map(|(i, _)| {
                        s.detected += 1;
                        s.corner_errors
                            .push(realplates::corner_error(&found[i].corners, &lc));
                        i
                    })
                }
                None => {
                    let equal = reads
                        .iter()
                        .find(|(_, r)| r.as_ref().is_some_and(|r| r.text() == label.text));
                    let surest = reads.iter().filter(|(_, r)| r.is_some()).max_by(|a, b| {
                        let m = |r: &Option<PlateRead>| r.as_ref().map(|r| r.mean_conf());
                        m(&a.1).partial_cmp(&m(&b.1)).unwrap()
                    });
                    let pick = equal.or(surest).map(|(i, _)| *i);
                    if pick.is_some() {
                        s.detected += 1;
                    }
                    pick
                }
            };
            match chosen {
                Some(i) => s.add(&label.text, reads[i].1.as_ref(), cfg),
                None => {
                    s.plates += 1;
                    s.chars += label.text.chars().count();
                    *s.misses.entry(Miss::NoDetection).or_default() += 1;
                    s.notes.push(format!("{} not found", label.text));
                }
            }
        }
    }
    s.reader_runs = t.reader_runs;
    s
}

fn print_score(set: &str, readers: &str, s: &Score) {
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
    let misses: Vec<String> = s
        .misses
        .iter()
        .map(|(m, n)| format!("{} {n}", m.name()))
        .collect();
    println!(
        "  {set:8} {readers:24} exact {:4}/{:<4} {:5.1} %  chars {:5.1} %  colour {}/{}  unsure {}  false format_invalid {}  latency p50 {:.1} ms p99 {:.1} ms  reader passes {:.2} a plate",
        s.exact,
        s.plates,
        pct(s.exact, s.plates),
        pct(s.chars_right, s.chars),
        s.colour_right,
        s.colour_known,
        s.unsure,
        s.false_format_invalid,
        realplates::percentile_ms(&s.latency, 50.0),
        realplates::percentile_ms(&s.latency, 99.0),
        s.reader_runs as f64 / s.plates.max(1) as f64,
    );
    if !s.corner_errors.is_empty() || s.detected > 0 {
        let mean = s.corner_errors.iter().sum::<f32>() / s.corner_errors.len().max(1) as f32;
        let max = s.corner_errors.iter().copied().fold(0.0, f32::max);
        println!(
            "  {:33} detected {}/{}, corner error mean {mean:.1} px, max {max:.1} px; photos without a plate read anyway: {}",
            "", s.detected, s.plates, s.false_reads
        );
    }
    if !s.detect.is_empty() {
        println!(
            "  {:33} of which detection p50 {:.1} ms, reading p50 {:.1} ms",
            "",
            realplates::percentile_ms(&s.detect, 50.0),
            realplates::percentile_ms(&s.read, 50.0),
        );
    }
    if !misses.is_empty() {
        println!("  {:33} misses: {}", "", misses.join(", "));
    }
    if std::env::var_os("PLATE_VERBOSE").is_some() {
        for n in &s.notes {
            println!("  {:33}   {n}", "");
        }
    }
}

/// The plain Python pipeline on the same sets, when setup installed its venv: its JSON.
fn python_side(dir: &Path, threads: usize, rounds: usize) -> Option<serde_json::Value> {
    let (models, threads, rounds) = (
        benches::models_dir(),
        threads.to_string(),
        rounds.to_string(),
    );
    benches::python_peer(
        "plain_plates.py",
        &[
            "--data".as_ref(),
            dir.as_os_str(),
            "--models".as_ref(),
            models.as_os_str(),
            "--threads".as_ref(),
            threads.as_ref(),
            "--rounds".as_ref(),
            rounds.as_ref(),
        ],
    )
}

fn main() {
    benches::init_logging();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(dir) = realplates::data_dir() else {
        println!(
            "plates_real: no real plates found: set REAL_PLATES_DIR to a folder with crops/ and scenes/ (the project's copy is ../shared/data/real-plates beside the repository); nothing measured"
        );
        return;
    };
    let threads: usize = std::env::var("PLATE_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let rounds = benches::env_usize("PLATE_ROUNDS", 5).max(1);
    let cfg: PlatesConfig = toml::from_str("").expect("default plate settings");
    let crops = realplates::crops(&dir.join("crops")).expect("reading the crops folder");
    let scenes = realplates::ccpd_photos(&dir.join("scenes")).unwrap_or_default();
    let labelled: Vec<(PathBuf, Vec<LabelledPhoto>)> = std::env::var("REAL_PLATES_LABELLED")
        .ok()
        .map(|v| {
            v.split(':')
                .filter(|s| !s.is_empty())
                .map(|d| {
                    let d = PathBuf::from(d);
                    let photos = realplates::tsv_photos(&d).unwrap_or_else(|e| panic!("{e}"));
                    (d, photos)
                })
                .collect()
        })
        .unwrap_or_default();
    let orders: Vec<Vec<String>> = match std::env::var("PLATE_READERS") {
        Ok(v) => vec![v.split(',').map(String::from).collect()],
        Err(_) => [
            &["clp_rec", "ppocrv4_rec"][..],
            &["ppocrv4_rec", "clp_rec"],
            &["ppocrv4_rec"],
            &["clp_rec"],
        ]
        .iter()
        .map(|o| o.iter().map(|s| s.to_string()).collect())
        .collect(),
    };
    println!(
        "real plates ({}): {} crops, {} CCPD scenes{}; ONNX Runtime on {threads} thread(s); deblurring of smeared crops {}; unsure below {:.2} per character",
        dir.display(),
        crops.len(),
        scenes.len(),
        labelled
            .iter()
            .map(|(d, p)| format!(", {} photos in {}", p.len(), d.display()))
            .collect::<String>(),
        if cfg.deblur { "on" } else { "off" },
        cfg.min_char_confidence,
    );
    let python_before = python_side(&dir, threads, rounds);
    for order in &orders {
        let names: Vec<&str> = order.iter().map(|s| s.as_str()).collect();
        let mut p = load(&names, threads);
        let label = names
            .iter()
            .map(|n| n.trim_end_matches("_rec"))
            .collect::<Vec<_>>()
            .join(" > ");
        print_score("crops", &label, &run_crops(&mut p, &crops, &cfg));
        if !scenes.is_empty() {
            print_score("scenes", &label, &run_photos(&mut p, &scenes, &cfg, rounds));
        }
        for (d, photos) in &labelled {
            let name = d.file_name().map(|n| n.to_string_lossy().to_string());
            print_score(
                name.as_deref().unwrap_or("labelled"),
                &label,
                &run_photos(&mut p, photos, &cfg, rounds),
            );
        }
    }
    let python_after = python_side(&dir, threads, rounds);
    if let (Some(a), Some(b)) = (python_before, python_after) {
        println!("plain Python pipeline (clp_det + PP-OCRv4 at height 48, greedy CTC, no rules), run before and after the above:");
        for set in ["crops", "scenes"] {
            let f = |v: &serde_json::Value, k: &str| v[set][k].as_f64().unwrap_or(0.0);
            println!(
                "  {set:8} {:24} exact {:4}/{:<4} {:5.1} %  latency p50 {:.1} ms / {:.1} ms (median {:.1}) p99 {:.1} / {:.1} ms",
                "python",
                f(&a, "exact"),
                f(&a, "total"),
                100.0 * f(&a, "exact") / f(&a, "total").max(1.0),
                f(&a, "p50_ms"),
                f(&b, "p50_ms"),
                (f(&a, "p50_ms") + f(&b, "p50_ms")) / 2.0,
                f(&a, "p99_ms"),
                f(&b, "p99_ms"),
            );
        }
    }
}
