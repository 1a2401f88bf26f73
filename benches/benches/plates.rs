//! Plate reading on the generated checkpoint clip: exact-plate read rate per plate style
//! against the ground truth, per-plate latency (detect + rectify + read), vehicle passes per
//! second and frames per second of the whole camera path with plates on.
//!
//! `cargo bench -p benches --bench plates` (PLATE_VEHICLES=60, PLATE_SEED=7 by default; the
//! clip is generated once into .cache/bench/; PLATE_NO_DEBLUR=1 reads the crops as they are
//! only).

use std::path::Path;
use std::sync::Arc;

use edge_node::camera::{run_camera, MemorySink};
use edge_node::config::NodeConfig;
use edge_node::plategen::{self, GenConfig, Truth};
use edge_node::registry::{RegistryConfig, RegistryStore};

const START: &str = "2026-11-28T18:30:00Z";

fn main() {
    benches::init_logging();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: usize = std::env::var("PLATE_VEHICLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("PLATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let scripted = std::env::var_os("PLATE_SCRIPTED").is_some();
    let dir = benches::cache_dir().join(format!(
        "bench/plates-v{}-{n}-{seed}{}{}",
        plategen::GENERATOR_VERSION,
        if scripted { "-scripted" } else { "" },
        plategen::PlateFont::default_path()
            .file_stem()
            .map(|s| format!("-{}", s.to_string_lossy()))
            .unwrap_or_default()
    ));
    let truth_path = dir.join("clip.truth.json");
    let truth = match Truth::load(&truth_path) {
        Ok(t) => t,
        Err(_) => {
            eprintln!(
                "plates: generating a {n}-vehicle clip into {}",
                dir.display()
            );
            let mut gen = GenConfig::new(n, seed, benches::cache_dir().join("media"));
            gen.scripted = scripted;
            let mut last = 0;
            let t = plategen::generate(&gen, &dir, "clip", |done, total| {
                let pct = done * 100 / total;
                if pct >= last + 10 {
                    last = pct;
                    eprintln!("plates: generated {done}/{total} frames");
                }
            })
            .expect("generating the clip");
            t
        }
    };
    let mut demo: toml::Value = toml::from_str(
        &std::fs::read_to_string(benches::repo_root().join("configs/edge-demo.toml")).unwrap(),
    )
    .unwrap();
    let t = demo.as_table_mut().unwrap();
    t.remove("registry");
    t.remove("metrics");
    t["zenoh"].as_table_mut().unwrap().remove("tls");
    let cams = t["cameras"].as_array_mut().unwrap();
    cams.remove(0);
    let cam = cams[0].as_table_mut().unwrap();
    let src = cam["source"].as_table_mut().unwrap();
    src.insert(
        "path".into(),
        dir.join("clip.mp4").display().to_string().into(),
    );
    src.insert("start_time".into(), START.into());
    let root = benches::repo_root();
    for key in ["detector"] {
        cam.insert(
            key.into(),
            root.join("models/yolov8n.toml")
                .display()
                .to_string()
                .into(),
        );
    }
    let plates = cam["plates"].as_table_mut().unwrap();
    plates.insert(
        "detector".into(),
        root.join("models/clp_det.toml")
            .display()
            .to_string()
            .into(),
    );
    plates.insert(
        "readers".into(),
        toml::Value::Array(
            ["models/ppocrv4_rec.toml", "models/clp_rec.toml"]
                .iter()
                .map(|m| root.join(m).display().to_string().into())
                .collect(),
        ),
    );
    // PLATE_NO_DEBLUR=1: the crops read as they are only, for comparing.
    if std::env::var_os("PLATE_NO_DEBLUR").is_some() {
        plates.insert("deblur".into(), false.into());
    }
    let cfg = NodeConfig::from_toml(&toml::to_string(&demo).unwrap(), Path::new("plates"))
        .unwrap()
        .validate(Path::new("plates"))
        .unwrap();
    let state = std::env::temp_dir().join(format!("plates-bench-{}", std::process::id()));
    let registry = RegistryStore::open(
        &RegistryConfig {
            file: Some(dir.join("clip.registry.json")),
            state_dir: state.clone(),
            follow_updates: false,
        },
        "bench",
    )
    .unwrap();
    let sink = Arc::new(MemorySink::default());
    let ctx = benches::camera_context(sink.clone(), 2, Default::default(), registry);
    eprintln!(
        "plates: running the camera path on {} frames ({} vehicles)",
        truth.frames,
        truth.vehicles.len()
    );
    let summary = run_camera(cfg.cameras[0].clone(), ctx);
    let _ = std::fs::remove_dir_all(&state);
    assert!(!summary.failed, "camera failed: {:?}", summary.error);
    let events = sink.events();
    let passes: Vec<protocol::Event> = events
        .iter()
        .filter(|e| e.kind() == protocol::EventKind::VehiclePass)
        .cloned()
        .collect();
    let score = plategen::score(
        &truth,
        &passes,
        protocol::time::parse_rfc3339_ms(START).unwrap(),
    );
    println!(
        "plate read rate on the generated clip ({} vehicles, seed {seed}, {} frames):",
        truth.vehicles.len(),
        truth.frames
    );
    for (style, exact, total) in score.by_style() {
        println!(
            "  {style:15} {exact:3}/{total:3}  {:.1} %",
            100.0 * exact as f64 / total as f64
        );
    }
    println!(
        "  {:15} {:3}/{:3}  {:.1} %",
        "all",
        score.exact(),
        score.vehicles.len(),
        100.0 * score.rate()
    );
    let blur: Vec<String> = score
        .by_blur()
        .into_iter()
        .map(|(b, e, t)| format!("{b} px {e}/{t}"))
        .collect();
    println!("  by motion blur: {}", blur.join(", "));
    let (right, chars) = score.characters();
    println!(
        "  characters     {right}/{chars}  {:.2} %; misses differing in the province alone: {}",
        100.0 * right as f64 / chars.max(1) as f64,
        score.province_only_misses()
    );
    for s in score.vehicles.iter().filter(|s| !s.exact) {
        println!(
            "  missed: vehicle {} {:?} {} (lane {}, frames {}-{}) read {:?}",
            s.vehicle.index,
            s.vehicle.style,
            s.vehicle.plate,
            s.vehicle.lane,
            s.vehicle.first_frame,
            s.vehicle.last_frame,
            s.read
        );
    }
    if std::env::var_os("PLATE_VERBOSE").is_some() {
        for e in &events {
            if let protocol::EventBody::ObjectTrack(t) = &e.body {
                println!(
                    "  track {} {:?} {} {:?}..{:?} ({}..{}) displacement {:.0}",
                    t.track_id,
                    t.phase,
                    t.class,
                    t.first_box,
                    t.last_box,
                    (t.first_time_ms - protocol::time::parse_rfc3339_ms(START).unwrap()) / 100,
                    (t.last_time_ms - protocol::time::parse_rfc3339_ms(START).unwrap()) / 100,
                    t.displacement_px
                );
            }
        }
        for p in &passes {
            if let protocol::EventBody::VehiclePass(vp) = &p.body {
                println!(
                    "  pass track {} {:?} {:?} reads {} seen {}..{} {:?}",
                    vp.track_id,
                    vp.plate,
                    vp.plate_colour,
                    vp.plate_reads,
                    (vp.first_seen_ms.unwrap_or(0)
                        - protocol::time::parse_rfc3339_ms(START).unwrap())
                        / 100,
                    (vp.last_seen_ms.unwrap_or(0)
                        - protocol::time::parse_rfc3339_ms(START).unwrap())
                        / 100,
                    vp.char_confidence
                );
            }
        }
    }
    println!(
        "  passes not matching a vehicle: {}, vehicles passed twice: {}",
        score.unmatched_passes.len(),
        score.duplicated.len()
    );
    let stage = |name: &str| {
        summary
            .stages
            .iter()
            .find(|s| s.stage.starts_with(name))
            .cloned()
    };
    if let Some(s) = stage("plate read") {
        println!("per-plate latency (detect + rectify + read): mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms over {} reads", s.mean_ms, s.p50_ms, s.p99_ms, s.count);
    }
    if let Some(s) = stage("plate scan") {
        println!(
            "plate scan (the plate detector over the lanes): mean {:.1} ms, p50 {:.1} ms, p99 {:.1} ms over {} scans",
            s.mean_ms, s.p50_ms, s.p99_ms, s.count
        );
    }
    if let Some(s) = stage("infer") {
        println!(
            "detector inference: mean {:.1} ms, p99 {:.1} ms",
            s.mean_ms, s.p99_ms
        );
    }
    let p = summary.plates.clone().unwrap_or_default();
    println!(
        "camera path with plates: {:.1} FPS, {} passes in {:.1} s = {:.2} passes/s ({} reads of {} attempts); anomalies {:?}",
        summary.fps,
        p.passes,
        summary.streaming_secs,
        p.passes as f64 / summary.streaming_secs,
        p.reads,
        p.read_attempts,
        p.anomalies
    );
}
