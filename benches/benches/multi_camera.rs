//! Many cameras on one node, side by side in one run: 1, 2, 4 and 8 cameras on the same
//! file (vtest.avi), each camera with the node's shared inference engine (one session per
//! model for the node, `edge_node::engine`) and, for comparison, each with a session of its
//! own (as every camera had before). Against the single-camera model-only rate measured in
//! the same round: total frames per second, the slowest and fastest camera, the worst
//! camera's p99 latency decoded -> published, and the process's peak RSS.
//!
//! `MC_FRAMES` (default 150) frames per camera, `MC_ROUNDS` (default 1), `MC_CAMERAS`
//! (default `1,2,4,8`), `MC_THREADS` (ONNX Runtime threads per session; default the
//! machine's cores). Results go to stdout and target/multi-camera-bench.json.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{env_usize, median};
use edge_node::camera::{run_camera, CameraSummary, MemorySink};
use edge_node::config::NodeConfig;
use edge_node::detect::Detector;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

struct Run {
    total_fps: f64,
    min_fps: f64,
    max_fps: f64,
    p99_ms: f64,
    peak_rss_mib: f64,
}

/// `n` cameras on the same file at once; `shared`: one engine set for all of them.
fn run_cameras(n: usize, frames: usize, threads: usize, shared: bool) -> Run {
    let vtest = benches::vtest();
    let manifest = benches::detector_manifest();
    let mut text = "node_id = \"32050500055050000001\"\ncheckpoint_id = \"32050500051210000001\"\n"
        .to_string();
    for i in 0..n {
        text += &format!(
            "[[cameras]]\nid = \"320505000513200000{:02}\"\nsource = {{ type = \"file\", path = \"{}\", start_time = \"2026-11-29T00:00:00Z\" }}\ndetector = \"{}\"\nmax_frames = {frames}\n",
            i + 1,
            vtest.display(),
            manifest.display()
        );
    }
    let cfg = NodeConfig::from_toml(&text, Path::new("multi"))
        .unwrap()
        .validate(Path::new("multi"))
        .unwrap();
    let engines: Arc<edge_node::engine::Engines> = Default::default();
    let sink = Arc::new(MemorySink::default());
    let ctx = |engines: Arc<edge_node::engine::Engines>| {
        benches::camera_context(
            sink.clone(),
            threads,
            engines,
            edge_node::registry::RegistryStore::empty(),
        )
    };
    let base = rss_kib();
    let peak = Arc::new(AtomicU64::new(base));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Relaxed) {
                peak.fetch_max(rss_kib(), Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let handles: Vec<_> = cfg
        .cameras
        .iter()
        .cloned()
        .map(|cam| {
            let c = ctx(if shared {
                engines.clone()
            } else {
                Default::default()
            });
            std::thread::spawn(move || run_camera(cam, c))
        })
        .collect();
    let summaries: Vec<CameraSummary> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, Relaxed);
    sampler.join().unwrap();
    for s in &summaries {
        assert!(!s.failed, "camera failed: {:?}", s.error);
        assert_eq!(s.frames_processed as usize, frames);
    }
    let wall = summaries
        .iter()
        .map(|s| s.streaming_secs)
        .fold(0.0f64, f64::max);
    let total: u64 = summaries.iter().map(|s| s.frames_processed).sum();
    let fps: Vec<f64> = summaries.iter().map(|s| s.fps).collect();
    let p99 = summaries
        .iter()
        .flat_map(|s| s.stages.iter())
        .filter(|st| st.stage.starts_with("frame (decoded"))
        .map(|st| st.p99_ms)
        .fold(0.0f64, f64::max);
    Run {
        total_fps: total as f64 / wall.max(1e-9),
        min_fps: fps.iter().copied().fold(f64::INFINITY, f64::min),
        max_fps: fps.iter().copied().fold(0.0, f64::max),
        p99_ms: p99,
        peak_rss_mib: (peak.load(Relaxed).saturating_sub(base)) as f64 / 1024.0,
    }
}

fn main() {
    benches::init_logging();
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let frames = env_usize("MC_FRAMES", 150);
    let rounds = env_usize("MC_ROUNDS", 1);
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = env_usize("MC_THREADS", cores);
    let counts: Vec<usize> = std::env::var("MC_CAMERAS")
        .unwrap_or_else(|_| "1,2,4,8".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();

    // The single-camera model-only rate: frames decoded and letterboxed ahead of time.
    let mut detector = Detector::load(
        &benches::detector_manifest(),
        &benches::models_dir(),
        &benches::ort_library(),
        threads,
    )
    .expect("detector");
    let prepared = benches::vtest_prepared(&detector.manifest().input.clone(), frames);
    for p in prepared.iter().take(5) {
        detector.run_raw(p).unwrap();
    }

    let mut model_fps = Vec::new();
    // (cameras, shared) -> per-round results
    let mut results: std::collections::BTreeMap<(usize, bool), Vec<Run>> = Default::default();
    for round in 1..=rounds {
        let t = Instant::now();
        for p in &prepared {
            std::hint::black_box(detector.run_raw(p).unwrap());
        }
        let m = prepared.len() as f64 / t.elapsed().as_secs_f64();
        model_fps.push(m);
        eprintln!("round {round}/{rounds}: model-only {m:.1} FPS");
        for &n in &counts {
            for shared in [true, false] {
                let r = run_cameras(n, frames, threads, shared);
                eprintln!(
                    "  {n} camera(s), {}: {:.1} FPS in all ({:.2} x model-only), cameras {:.1}-{:.1} FPS, p99 {:.0} ms, peak RSS +{:.0} MiB",
                    if shared { "shared engine" } else { "session per camera" },
                    r.total_fps,
                    r.total_fps / m,
                    r.min_fps,
                    r.max_fps,
                    r.p99_ms,
                    r.peak_rss_mib
                );
                results.entry((n, shared)).or_default().push(r);
            }
        }
    }
    let m = median(model_fps.clone());
    println!(
        "multi-camera benchmark on vtest.avi: {frames} frames per camera, {rounds} round(s), ORT intra threads {threads} per session, {cores} cores"
    );
    println!("  single-camera model-only: {m:.1} FPS (median)");
    println!("| cameras | inference | total FPS | x model-only | slowest / fastest camera FPS | worst p99 decoded -> published | peak RSS over baseline |");
    println!("|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for ((n, shared), runs) in &results {
        let med = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        let total = med(|r| r.total_fps);
        println!(
            "| {n} | {} | {total:.1} | {:.2} | {:.1} / {:.1} | {:.0} ms | {:.0} MiB |",
            if *shared {
                "shared engine"
            } else {
                "session per camera"
            },
            total / m,
            med(|r| r.min_fps),
            med(|r| r.max_fps),
            med(|r| r.p99_ms),
            med(|r| r.peak_rss_mib)
        );
        rows.push(serde_json::json!({
            "cameras": n, "shared": shared, "total_fps": total, "ratio": total / m,
            "min_fps": med(|r| r.min_fps), "max_fps": med(|r| r.max_fps),
            "p99_ms": med(|r| r.p99_ms), "peak_rss_mib": med(|r| r.peak_rss_mib),
        }));
    }
    let json = serde_json::json!({
        "frames": frames, "rounds": rounds, "intra_threads": threads, "cores": cores,
        "model_only_fps": model_fps, "rows": rows,
    });
    let out = benches::repo_root().join("target/multi-camera-bench.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    println!("  written to {}", out.display());
}
