//! Shared set-up for the benches: paths of the cached models and media, and a node config for
//! the sample video.

use std::path::{Path, PathBuf};

pub mod realplates;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn cache_dir() -> PathBuf {
    std::env::var_os("TRAFFIC_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"))
}

pub fn vtest() -> PathBuf {
    let p = cache_dir().join("media/vtest.avi");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh first",
        p.display()
    );
    p
}

pub fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("onnxruntime/libonnxruntime.so.1.32.0"))
}

pub fn models_dir() -> PathBuf {
    cache_dir().join("models")
}

pub fn detector_manifest() -> PathBuf {
    repo_root().join("models/yolov8n.toml")
}

/// The INT8 variant of the detector that setup makes (models/yolov8n-int8.toml).
pub fn detector_manifest_int8() -> PathBuf {
    repo_root().join("models/yolov8n-int8.toml")
}

/// Logs to stderr (`RUST_LOG`, default info): long benchmark runs show each camera's
/// progress every 10 % of the file, as the node does.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,ort=warn,zenoh=warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// A setting from the environment, or `default` when unset or not a number.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of measurements (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The first `frames` frames of vtest.avi, decoded and letterboxed for a model with input
/// `spec` (the model-only runs).
pub fn vtest_prepared(
    spec: &edge_node::manifest::InputSpec,
    frames: usize,
) -> Vec<edge_node::preprocess::Prepared> {
    let mut src = edge_node::source::open(
        &edge_node::config::SourceConfig::File {
            path: vtest(),
            start_time: None,
            realtime: false,
        },
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let mut prepared = Vec::with_capacity(frames);
    while prepared.len() < frames {
        match src.next_frame().unwrap() {
            Some(f) => prepared.push(edge_node::preprocess::letterbox(
                &f.rgb,
                f.width,
                f.height,
                f.stride(),
                spec,
            )),
            None => break,
        }
    }
    prepared
}

/// What the benches' cameras share: the demo's node and checkpoint ids, the cached models,
/// `threads` ONNX Runtime threads per model, events into `sink`.
pub fn camera_context(
    sink: std::sync::Arc<edge_node::camera::MemorySink>,
    threads: usize,
    engines: std::sync::Arc<edge_node::engine::Engines>,
    registry: edge_node::registry::RegistryStore,
) -> edge_node::camera::CameraContext {
    use std::sync::Arc;
    edge_node::camera::CameraContext {
        node_id: protocol::DeviceId::parse("32050500055050000001").unwrap(),
        checkpoint_id: protocol::DeviceId::parse("32050500051210000001").unwrap(),
        models_dir: models_dir(),
        ort_library: ort_library(),
        intra_threads: threads,
        engines,
        sink,
        shutdown: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        feed: Default::default(),
        metrics: Default::default(),
        registry: Arc::new(registry),
        live: Default::default(),
    }
}

/// Runs one of the plain Python peers (`benches/python/<script>`) in setup's venv with
/// `args`: its JSON output, or None (said on stderr) when the venv is missing or it failed.
pub fn python_peer(script: &str, args: &[&std::ffi::OsStr]) -> Option<serde_json::Value> {
    let py = cache_dir().join("venv/bin/python");
    if !py.exists() {
        // On stdout: the figures' reader learns why the peer is missing.
        println!(
            "  (the plain Python peer needs {}: run scripts/setup.sh)",
            py.display()
        );
        return None;
    }
    let out = std::process::Command::new(py)
        .arg(repo_root().join("benches/python").join(script))
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "the Python peer {script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An aggregator in this process on `rt`: logins off, SQLite in `dir`, HTTP on a free port,
/// zenoh on `zenoh_port`, `extra` appended to its config.
pub fn start_aggregator(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    zenoh_port: u16,
    extra: &str,
) -> aggregator::Running {
    let text = format!(
        "id = \"32050500055030000001\"\nscope = \"county:320505\"\n[auth]\nrequired = false\n[storage]\nsqlite_path = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[zenoh]\nlisten = [\"tcp/127.0.0.1:{zenoh_port}\"]\n{extra}",
        dir.join("agg.db").display()
    );
    let raw: aggregator::config::AggregatorConfig = toml::from_str(&text).unwrap();
    rt.block_on(aggregator::start(raw.validate(Path::new("bench")).unwrap()))
        .expect("the aggregator starts")
}
