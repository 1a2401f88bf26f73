//! End-to-end benchmark on vtest.avi, in one run:
//! - model-only: inference FPS over frames decoded and letterboxed ahead of time;
//! - full pipeline: decode -> preprocess -> infer -> postprocess -> track -> events, with the
//!   camera's own threads, to an in-memory sink (zenoh publishing is measured by its own
//!   stage timing in the demo; here it would only add loopback noise);
//! - their ratio, and per-stage mean and p99 ms;
//! - the plain Python peer (`benches/python/plain_detect.py`: the same model and ONNX
//!   Runtime, OpenCV decoding, one sequential loop, an IoU tracker) on the same frames, when
//!   setup installed its venv: its FPS beside ours and the confirmed tracks per class of
//!   each.
//!
//! - the same model-only and pipeline runs with the INT8 detector (models/yolov8n-int8.toml)
//!   side by side: its FPS over the FP32 one's, over the Python peer's, and its confirmed
//!   tracks per class and red-light violations beside the FP32 model's.
//!
//! Rounds alternate model-only and pipeline so that both see the same machine load; medians
//! are reported. `E2E_FRAMES` (default 620, which takes in nine red-light violations of the demo crossing) and `E2E_ROUNDS` (default 3) size the run.
//! Results go to stdout and target/e2e-bench.json.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use benches::{env_usize, median};
use edge_node::camera::{run_camera, CameraSummary, MemorySink};
use edge_node::config::{NodeConfig, ValidConfig};
use edge_node::detect::Detector;

fn main() {
    benches::init_logging();
    // `cargo test --benches` runs bench targets with --test-ish flags: do nothing then.
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let frames = env_usize("E2E_FRAMES", 620);
    let rounds = env_usize("E2E_ROUNDS", 3);
    let vtest = benches::vtest();
    let manifest_path = benches::detector_manifest();
    let threads = env_usize("E2E_THREADS", 2);

    // Frames decoded and letterboxed ahead of time for the model-only runs.
    let mut detector = Detector::load(
        &manifest_path,
        &benches::models_dir(),
        &benches::ort_library(),
        threads,
    )
    .expect("detector");
    let prepared = benches::vtest_prepared(&detector.manifest().input.clone(), frames);
    let n = prepared.len();
    // Warm-up: the first runs allocate ORT's buffers.
    for p in prepared.iter().take(5) {
        detector.run_raw(p).unwrap();
    }

    // The INT8 detector, its frames prepared the same way (its input is the FP32 model's).
    let manifest_int8 = benches::detector_manifest_int8();
    let mut detector_int8 = Detector::load(
        &manifest_int8,
        &benches::models_dir(),
        &benches::ort_library(),
        threads,
    )
    .expect("INT8 detector (models/yolov8n-int8.toml; scripts/setup.sh makes it)");
    for p in prepared.iter().take(5) {
        detector_int8.run_raw(p).unwrap();
    }
    let (cfg, with_rule) = camera_configs(&vtest, &manifest_path, n);
    let (cfg_int8, with_rule_int8) = camera_configs(&vtest, &manifest_int8, n);

    let run = |cam: edge_node::config::ValidCamera| -> (CameraSummary, usize) {
        let sink = Arc::new(MemorySink::default());
        let ctx = benches::camera_context(
            sink.clone(),
            threads,
            Default::default(),
            edge_node::registry::RegistryStore::empty(),
        );
        let s = run_camera(cam, ctx);
        assert!(!s.failed, "pipeline failed: {:?}", s.error);
        assert_eq!(s.frames_processed as usize, n);
        let events = sink.events().len();
        (s, events)
    };
    // INT8, per round: model-only FPS, pipeline FPS, its ratios to FP32's and to Python's.
    let mut i8_model_fps = Vec::new();
    let mut i8_pipe_fps = Vec::new();
    let mut i8_over_fp32 = Vec::new();
    let mut i8_model_over_fp32 = Vec::new();
    let mut i8_over_python = Vec::new();
    let mut last_int8: Option<CameraSummary> = None;
    let mut last_rule_int8: Option<CameraSummary> = None;
    let mut model_fps = Vec::new();
    let mut pipe_fps = Vec::new();
    let mut ratios = Vec::new();
    let mut rule_fps = Vec::new();
    let mut rule_ratios = Vec::new();
    let mut python_fps = Vec::new();
    let mut python_ratios = Vec::new();
    let mut python_last: Option<serde_json::Value> = None;
    let mut last: Option<CameraSummary> = None;
    let mut last_rule: Option<CameraSummary> = None;
    for round in 1..=rounds {
        let t = Instant::now();
        for p in &prepared {
            std::hint::black_box(detector.run_raw(p).unwrap());
        }
        let m = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for p in &prepared {
            std::hint::black_box(detector_int8.run_raw(p).unwrap());
        }
        let m8 = n as f64 / t.elapsed().as_secs_f64();
        let (s, events) = run(cfg.cameras[0].clone());
        let (s8, _) = run(cfg_int8.cameras[0].clone());
        let (r, rule_events) = run(with_rule.cameras[0].clone());
        let (r8, _) = run(with_rule_int8.cameras[0].clone());
        eprintln!(
            "round {round}/{rounds}: INT8 model-only {m8:.1} FPS (x {:.3} FP32), pipeline {:.1} FPS (x {:.3} FP32)",
            m8 / m,
            s8.fps,
            s8.fps / s.fps
        );
        i8_model_fps.push(m8);
        i8_pipe_fps.push(s8.fps);
        i8_model_over_fp32.push(m8 / m);
        i8_over_fp32.push(s8.fps / s.fps);
        eprintln!(
            "round {round}/{rounds}: model-only {m:.1} FPS, pipeline {:.1} FPS (ratio {:.3}, {events} events), with the red-light rule {:.1} FPS (rule on / off {:.3}, {rule_events} events)",
            s.fps,
            s.fps / m,
            r.fps,
            r.fps / s.fps
        );
        if let Some(py) = python_peer(&vtest, &benches::models_dir(), n, threads) {
            let f = py["fps"].as_f64().unwrap_or(0.0);
            eprintln!(
                "round {round}/{rounds}: plain Python peer {f:.1} FPS (ours / Python {:.3})",
                s.fps / f
            );
            python_fps.push(f);
            python_ratios.push(s.fps / f);
            i8_over_python.push(s8.fps / f);
            python_last = Some(py);
        }
        model_fps.push(m);
        pipe_fps.push(s.fps);
        ratios.push(s.fps / m);
        rule_fps.push(r.fps);
        rule_ratios.push(r.fps / s.fps);
        last = Some(s);
        last_rule = Some(r);
        last_int8 = Some(s8);
        last_rule_int8 = Some(r8);
    }
    let (s8, r8) = (last_int8.unwrap(), last_rule_int8.unwrap());
    let s = last.unwrap();
    let (m, p, r) = (
        median(model_fps.clone()),
        median(pipe_fps.clone()),
        median(ratios.clone()),
    );
    println!(
        "e2e benchmark on vtest.avi: {n} frames x {rounds} rounds, ORT intra threads {threads}"
    );
    println!("  model-only inference      {m:>7.1} FPS (median)");
    println!("  full pipeline             {p:>7.1} FPS (median)");
    println!("  pipeline / model-only     {r:>7.3} (median of per-round ratios; goal >= 0.9)");
    let (rf, rr) = (median(rule_fps.clone()), median(rule_ratios.clone()));
    println!("  pipeline with red-light   {rf:>7.1} FPS (median)");
    println!("  rule on / rule off        {rr:>7.3} (median of per-round ratios)");
    if let Some(x) = last_rule.as_ref().and_then(|r| r.crossing.as_ref()) {
        println!(
            "  red-light violations      {:>7} (evidence pictures {})",
            x.rule.violations, x.evidence_pictures
        );
    }
    if let Some(py) = &python_last {
        println!(
            "  plain Python peer         {:>7.1} FPS (median; same model, ORT threads {threads})",
            median(python_fps.clone())
        );
        println!(
            "  ours / Python             {:>7.3} (median of per-round ratios; goal >= 1.5)",
            median(python_ratios.clone())
        );
        println!(
            "  INT8 pipeline / Python    {:>7.3} (median of per-round ratios; goal >= 1.5)",
            median(i8_over_python.clone())
        );
        println!("  confirmed tracks per class, ours FP32 / ours INT8 / Python:");
        let theirs = &py["confirmed_tracks_per_class"];
        let mut classes: Vec<String> = s.confirmed_tracks_per_class.keys().cloned().collect();
        classes.extend(s8.confirmed_tracks_per_class.keys().cloned());
        if let Some(o) = theirs.as_object() {
            classes.extend(o.keys().cloned());
        }
        classes.sort();
        classes.dedup();
        for c in classes {
            println!(
                "    {c:<12} {:>5} / {:>5} / {:>5}",
                s.confirmed_tracks_per_class.get(&c).copied().unwrap_or(0),
                s8.confirmed_tracks_per_class.get(&c).copied().unwrap_or(0),
                theirs[&c].as_u64().unwrap_or(0)
            );
        }
    }
    println!(
        "  INT8 model-only           {:>7.1} FPS (median; x {:.3} FP32, median of per-round ratios)",
        median(i8_model_fps.clone()),
        median(i8_model_over_fp32.clone())
    );
    println!(
        "  INT8 full pipeline        {:>7.1} FPS (median; x {:.3} FP32)",
        median(i8_pipe_fps.clone()),
        median(i8_over_fp32.clone())
    );
    let violations = |r: &CameraSummary| r.crossing.as_ref().map_or(0, |x| x.rule.violations);
    println!(
        "  red-light violations      {:>7} FP32 / {} INT8",
        violations(last_rule.as_ref().unwrap()),
        violations(&r8)
    );
    println!("  stage (last round, rule on)       mean ms    p99 ms");
    for st in &last_rule.as_ref().unwrap().stages {
        println!("  {:<32} {:>9.2} {:>9.2}", st.stage, st.mean_ms, st.p99_ms);
    }
    let json = serde_json::json!({
        "frames": n, "rounds": rounds, "intra_threads": threads,
        "model_only_fps": model_fps, "pipeline_fps": pipe_fps, "ratios": ratios,
        "median": { "model_only_fps": m, "pipeline_fps": p, "ratio": r, "pipeline_with_rule_fps": rf, "rule_on_off_ratio": rr },
        "pipeline_with_rule_fps": rule_fps, "rule_on_off_ratios": rule_ratios,
        "stages_with_rule": last_rule.as_ref().map(|r| r.stages.clone()),
        "stages": s.stages,
        "confirmed_tracks_per_class": s.confirmed_tracks_per_class,
        "python": python_last.as_ref().map(|py| serde_json::json!({
            "fps": python_fps, "ours_over_python": python_ratios,
            "median_fps": median(python_fps.clone()),
            "median_ours_over_python": median(python_ratios.clone()),
            "confirmed_tracks_per_class": py["confirmed_tracks_per_class"],
            "int8_over_python": i8_over_python,
            "median_int8_over_python": median(i8_over_python.clone()),
        })),
        "int8": {
            "model_only_fps": i8_model_fps, "pipeline_fps": i8_pipe_fps,
            "model_only_over_fp32": i8_model_over_fp32, "pipeline_over_fp32": i8_over_fp32,
            "median": {
                "model_only_fps": median(i8_model_fps.clone()),
                "pipeline_fps": median(i8_pipe_fps.clone()),
                "model_only_over_fp32": median(i8_model_over_fp32.clone()),
                "pipeline_over_fp32": median(i8_over_fp32.clone()),
            },
            "confirmed_tracks_per_class": s8.confirmed_tracks_per_class,
            "red_light_violations": violations(&r8),
        },
    });
    let out = benches::repo_root().join("target/e2e-bench.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    println!("  written to {}", out.display());
}

/// The camera on `frames` frames of `vtest` with the detector of `manifest`: plain, and with
/// the demo's crossing (zones, fixed-time plan, red-light rule).
fn camera_configs(vtest: &Path, manifest: &Path, frames: usize) -> (ValidConfig, ValidConfig) {
    let cfg_text = format!(
        "node_id = \"32050500055050000001\"\ncheckpoint_id = \"32050500051210000001\"\n[[cameras]]\nid = \"32050500051320000001\"\nsource = {{ type = \"file\", path = \"{}\", start_time = \"2026-11-29T00:00:00Z\" }}\ndetector = \"{}\"\nmax_frames = {frames}\n",
        vtest.display(),
        manifest.display()
    );
    let cfg = NodeConfig::from_toml(&cfg_text, Path::new("e2e"))
        .unwrap()
        .validate(Path::new("e2e"))
        .unwrap();
    let mut demo: toml::Value = toml::from_str(
        &std::fs::read_to_string(benches::repo_root().join("configs/edge-demo.toml")).unwrap(),
    )
    .unwrap();
    demo["zenoh"].as_table_mut().unwrap().remove("tls");
    {
        let cam = &mut demo["cameras"][0];
        cam["source"]["path"] = toml::Value::String(vtest.display().to_string());
        cam["detector"] = toml::Value::String(manifest.display().to_string());
        cam.as_table_mut()
            .unwrap()
            .insert("max_frames".into(), toml::Value::Integer(frames as i64));
    }
    let with_rule = NodeConfig::from_toml(&toml::to_string(&demo).unwrap(), Path::new("e2e-rule"))
        .unwrap()
        .validate(Path::new("e2e-rule"))
        .unwrap();
    (cfg, with_rule)
}

/// The plain Python pipeline on the first `frames` frames of `video`, when setup installed
/// its venv: its JSON (fps, detections and confirmed tracks per class).
fn python_peer(
    video: &Path,
    models: &Path,
    frames: usize,
    threads: usize,
) -> Option<serde_json::Value> {
    let model = models.join("yolov8n.onnx");
    let (frames, threads) = (frames.to_string(), threads.to_string());
    benches::python_peer(
        "plain_detect.py",
        &[
            "--video".as_ref(),
            video.as_os_str(),
            "--model".as_ref(),
            model.as_os_str(),
            "--frames".as_ref(),
            frames.as_ref(),
            "--threads".as_ref(),
            threads.as_ref(),
        ],
    )
}
