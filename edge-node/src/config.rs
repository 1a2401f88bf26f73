//! Node configuration: serde data with a doc on every field, checked by [`NodeConfig::validate`],
//! which reports every problem at once.
//!
//! Static problems (bad ids, duplicate cameras, thresholds out of range) are config errors and
//! stop the node before it starts. Problems only the running camera can see (a missing video
//! file, a missing model) are per-camera failures: that camera retries, the others run on.

use std::path::{Path, PathBuf};

use protocol::{DeviceId, DeviceType};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's 20-digit device id (type code 505, video analysis device).
    pub node_id: String,
    /// The checkpoint this node serves (type code 121); all its cameras publish under it.
    pub checkpoint_id: String,
    /// Where the ONNX Runtime library and the models are.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// How the node joins the zenoh network.
    #[serde(default)]
    pub zenoh: ZenohConfig,
    /// Tracker settings shared by every camera unless a camera overrides them.
    #[serde(default)]
    pub tracker: TrackerConfig,
    /// The cameras this node watches; each runs isolated from the others.
    pub cameras: Vec<CameraConfig>,
    /// Prometheus metrics endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Vehicle registry and watch list (needed by the registry rules of `plates`).
    #[serde(default)]
    pub registry: Option<crate::registry::RegistryConfig>,
    /// The on-disk outbox: every event kept until an aggregator acknowledges it.
    #[serde(default)]
    pub outbox: crate::outbox::OutboxConfig,
    /// The node's clock: where its state is read and the error bound for trusted evidence.
    #[serde(default)]
    pub clock: crate::clock::ClockConfig,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `GET /metrics` on, e.g. `127.0.0.1:9464`; none = no endpoint.
    #[serde(default)]
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Path of libonnxruntime.so. The environment variable ORT_DYLIB_PATH overrides it;
    /// `scripts/setup.sh` installs 1.32.0 under `.cache/onnxruntime/`.
    #[serde(default)]
    pub onnxruntime_library: Option<PathBuf>,
    /// Folder the model files (`file` in each manifest) are looked up in. TRAFFIC_MODELS_DIR
    /// overrides it. Default `.cache/models`.
    #[serde(default)]
    pub models_dir: Option<PathBuf>,
    /// Threads ONNX Runtime may use inside one inference call: the size of the node's one
    /// pool (`thread_pool = "node"`), or of each model's (`"per_model"`). Each model is
    /// loaded once for the node and shared by its cameras (`engine.rs`), never per camera.
    /// Default: the machine's cores.
    #[serde(default = "default_intra_threads")]
    pub intra_threads: usize,
    /// Seconds to wait at start-up for an aggregator to be reachable before publishing.
    #[serde(default = "default_wait_aggregator_secs")]
    pub wait_for_aggregator_secs: u64,
    /// ONNX Runtime execution providers to try for every model, in order of preference:
    /// `tensorrt`, `cuda`, `cpu`. Each one the library has and that loads is registered (a
    /// model's nodes run on the first that supports them); the first is logged per model,
    /// exported in `/metrics` and the health report. A provider that cannot load is logged
    /// with the reason and skipped. Default `["cuda", "cpu"]`: the GPU where the library
    /// and the machine have one, else the CPU.
    #[serde(default = "default_providers")]
    pub providers: Vec<crate::detect::Provider>,
    /// Fail the node at start unless every model loaded on this provider (e.g. `"cuda"` on
    /// a GPU box, so that a missing driver is not silently run on the CPU).
    #[serde(default)]
    pub require: Option<crate::detect::Provider>,
    /// GPU the CUDA and TensorRT providers use.
    #[serde(default)]
    pub gpu_device: u32,
    /// TensorRT: folder of built engines (and timing cache), so that a restart does not
    /// build them again (minutes per model). Default `.cache/tensorrt`.
    #[serde(default)]
    pub tensorrt_cache_dir: Option<PathBuf>,
    /// TensorRT: build FP16 engines.
    #[serde(default = "yes")]
    pub tensorrt_fp16: bool,
    /// Video decoding: `auto` (a hardware decoder when its GStreamer plugin is there:
    /// NVIDIA NVDEC, then VA-API; else software), `software`, `nvidia` or `vaapi` (the node
    /// does not start without it). The choice is logged, and each camera logs the decoder
    /// it got.
    #[serde(default)]
    pub decoder: crate::source::DecoderChoice,
    /// ONNX Runtime threads: `node` (default: one pool of `intra_threads` for every model
    /// of the node) or `per_model` (each model's session its own pool of `intra_threads`).
    /// With the crossing and the plate camera of the demo on one 2-core box, one pool for
    /// the node processed 1.25x (crossing) and 1.21x (plates) the frames per second of a
    /// pool per model (README: One inference engine per model).
    #[serde(default)]
    pub thread_pool: ThreadPool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadPool {
    #[default]
    Node,
    PerModel,
}

fn yes() -> bool {
    true
}

fn default_providers() -> Vec<crate::detect::Provider> {
    vec![crate::detect::Provider::Cuda, crate::detect::Provider::Cpu]
}

fn default_intra_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}
fn default_wait_aggregator_secs() -> u64 {
    10
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            onnxruntime_library: None,
            models_dir: None,
            intra_threads: default_intra_threads(),
            wait_for_aggregator_secs: default_wait_aggregator_secs(),
            providers: default_providers(),
            require: None,
            gpu_device: 0,
            tensorrt_cache_dir: None,
            tensorrt_fp16: true,
            decoder: Default::default(),
            thread_pool: Default::default(),
        }
    }
}

impl RuntimeConfig {
    pub fn onnxruntime_library(&self) -> PathBuf {
        std::env::var_os("ORT_DYLIB_PATH")
            .map(PathBuf::from)
            .or_else(|| self.onnxruntime_library.clone())
            .unwrap_or_else(|| PathBuf::from(".cache/onnxruntime/libonnxruntime.so.1.32.0"))
    }

    /// The execution-provider settings every model of the node is opened with.
    pub fn providers(&self) -> crate::detect::ProviderSettings {
        crate::detect::ProviderSettings {
            order: self.providers.clone(),
            require: self.require,
            gpu_device: self.gpu_device,
            tensorrt_cache_dir: self
                .tensorrt_cache_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(".cache/tensorrt")),
            tensorrt_fp16: self.tensorrt_fp16,
            node_thread_pool: (self.thread_pool == ThreadPool::Node).then_some(self.intra_threads),
        }
    }

    pub fn models_dir(&self) -> PathBuf {
        std::env::var_os("TRAFFIC_MODELS_DIR")
            .map(PathBuf::from)
            .or_else(|| self.models_dir.clone())
            .unwrap_or_else(|| PathBuf::from(".cache/models"))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ZenohMode {
    Peer,
    Client,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZenohConfig {
    /// `peer` (default; connects directly to the aggregator or other peers) or `client`
    /// (through a zenoh router).
    #[serde(default = "default_mode")]
    pub mode: ZenohMode,
    /// Endpoints to connect to, e.g. `tcp/127.0.0.1:7447` (the aggregator's listener).
    #[serde(default)]
    pub connect: Vec<String>,
    /// Endpoints to listen on; usually none for an edge node.
    #[serde(default)]
    pub listen: Vec<String>,
    /// Multicast scouting finds peers on the LAN; off by default so that only the configured
    /// endpoints are used.
    #[serde(default)]
    pub multicast_scouting: bool,
    /// Mutual TLS (`ca`, `cert`, `key`, PEM; `scripts/certs.sh` issues them). The
    /// certificate's common name must be this node's `checkpoint_id`: the aggregator's
    /// access-control policy lets it publish only under that checkpoint. With it every
    /// endpoint must be `tls/...`.
    #[serde(default)]
    pub tls: Option<protocol::security::TlsFiles>,
    /// With `tls`: the certificate common names of the aggregators (and zenoh routers) this
    /// node exchanges messages with. Messages to and from any other peer are dropped, so
    /// only these can see its events and acknowledge (free) its outbox. Required with TLS.
    #[serde(default)]
    pub trusted_common_names: Vec<String>,
    /// Plain zenoh (no TLS) on a network address, or with multicast scouting, is refused
    /// unless this is true: without TLS there is no access control (anyone reaching the
    /// endpoint can read plates and publish or acknowledge events). Logged as a warning at
    /// every start.
    #[serde(default)]
    pub insecure: bool,
}

fn default_mode() -> ZenohMode {
    ZenohMode::Peer
}

impl Default for ZenohConfig {
    fn default() -> Self {
        ZenohConfig {
            mode: ZenohMode::Peer,
            connect: vec!["tcp/127.0.0.1:7447".into()],
            listen: vec![],
            multicast_scouting: false,
            tls: None,
            trusted_common_names: vec![],
            insecure: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// The camera's 20-digit device id (type code 132, network camera).
    pub id: String,
    /// A human-readable name for logs and the summary.
    #[serde(default)]
    pub name: Option<String>,
    /// Where the frames come from.
    pub source: SourceConfig,
    /// Path of the detector's model manifest, e.g. `models/yolov8n.toml`.
    #[serde(default = "default_detector")]
    pub detector: PathBuf,
    /// Lane number this camera watches, if it watches one lane.
    #[serde(default)]
    pub lane: Option<u32>,
    /// Object classes to track (detector label names). Others are detected but not tracked.
    #[serde(default = "default_classes")]
    pub classes: Vec<String>,
    /// Stop after this many frames; none = the whole file, or forever for a live stream.
    #[serde(default)]
    pub max_frames: Option<u64>,
    /// Process at most this many frames per second of video: an even subset, the rest
    /// dropped before any work and counted (reason `budget`). None: as many as the node can
    /// (a live camera, or a file played in real time, then processes the newest frame each
    /// time the engine is free, and counts the frames it skipped as `behind`).
    #[serde(default)]
    pub max_fps: Option<f64>,
    /// Retry policy when the source or the detector fails.
    #[serde(default)]
    pub retry: RetryConfig,
    /// A source that yields no frame for this long has failed (a dead camera, or a damaged
    /// file the demuxer waits on), seconds.
    #[serde(default = "default_stall_secs")]
    pub stall_timeout_secs: u64,
    /// Overrides of the node's tracker settings for this camera.
    #[serde(default)]
    pub tracker: Option<TrackerConfig>,
    /// Crosswalks and waiting areas, relative polygons.
    #[serde(default)]
    pub zones: Vec<crate::zones::ZoneConfig>,
    /// The pedestrian signal this camera's crossing follows.
    #[serde(default)]
    pub signal: Option<crate::signal::SignalConfig>,
    /// The pedestrian red-light rule; needs `zones` and `signal`.
    #[serde(default)]
    pub red_light: Option<crate::red_light::RedLightConfig>,
    /// Evidence pictures: ring buffer size, JPEG quality, local time shown.
    #[serde(default)]
    pub evidence: crate::evidence::EvidenceConfig,
    /// Vehicle passages: plate reading and the local plate-anomaly rules.
    #[serde(default)]
    pub plates: Option<crate::vehicles::PlatesConfig>,
}

fn default_stall_secs() -> u64 {
    10
}

fn default_detector() -> PathBuf {
    PathBuf::from("models/yolov8n.toml")
}

fn default_classes() -> Vec<String> {
    ["person", "bicycle", "car", "motorcycle", "bus", "truck"]
        .into_iter()
        .map(String::from)
        .collect()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// A video file in any container GStreamer can decode.
    File {
        /// Path of the file.
        path: PathBuf,
        /// UTC time of the file's first frame, RFC 3339 (e.g. `2026-11-29T08:00:00Z`); frame
        /// times are this plus each frame's timestamp. Default: the time the file is opened.
        #[serde(default)]
        start_time: Option<String>,
        /// Play at the file's own frame rate instead of as fast as possible.
        #[serde(default)]
        realtime: bool,
    },
    /// An RTSP stream; when inference falls behind, the newest frame is processed and the
    /// ones it replaced are dropped, counted.
    Rtsp {
        /// `rtsp://host:port/path`.
        url: String,
        /// Jitter-buffer latency in milliseconds.
        #[serde(default = "default_latency_ms")]
        latency_ms: u32,
    },
    /// A folder of still images (jpg, jpeg, png), taken in name order as frames.
    Images {
        /// Path of the folder.
        dir: PathBuf,
        /// Frame rate the images stand for, used for frame times.
        #[serde(default = "default_images_fps")]
        fps: f64,
        /// UTC time of the first image, RFC 3339; default: when the folder is opened.
        #[serde(default)]
        start_time: Option<String>,
    },
}

fn default_latency_ms() -> u32 {
    200
}
fn default_images_fps() -> f64 {
    10.0
}

impl SourceConfig {
    pub fn is_live(&self) -> bool {
        matches!(self, SourceConfig::Rtsp { .. })
    }
    /// Whether frame times come from this box's clock (a live stream, or a file or image
    /// folder without `start_time`): its events then carry the clock's state.
    pub fn timed_by_clock(&self) -> bool {
        match self {
            SourceConfig::Rtsp { .. } => true,
            SourceConfig::File { start_time, .. } | SourceConfig::Images { start_time, .. } => {
                start_time.is_none()
            }
        }
    }
    /// Whether frames arrive at the camera's own pace (live, or a file played in real
    /// time): they are then processed newest first, never queued behind inference.
    pub fn is_paced(&self) -> bool {
        matches!(
            self,
            SourceConfig::Rtsp { .. } | SourceConfig::File { realtime: true, .. }
        )
    }
    /// What to call the input in messages.
    pub fn describe(&self) -> String {
        match self {
            SourceConfig::File { path, .. } => format!("file '{}'", path.display()),
            SourceConfig::Rtsp { url, .. } => format!("rtsp stream '{url}'"),
            SourceConfig::Images { dir, .. } => format!("image folder '{}'", dir.display()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First wait after a failure, milliseconds; doubles on each further failure.
    #[serde(default = "default_initial_backoff_ms")]
    pub initial_backoff_ms: u64,
    /// Longest wait between attempts, milliseconds.
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
    /// Files and image folders: give up after this many failed attempts in a row (default
    /// 3). RTSP: a live camera is never given up; after this many failures in a row it is
    /// reported down (log, `edge_camera_failures_in_a_row`, health) and tried every
    /// `max_backoff_ms` until it answers.
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

fn default_initial_backoff_ms() -> u64 {
    500
}
fn default_max_backoff_ms() -> u64 {
    30_000
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            initial_backoff_ms: default_initial_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
            max_attempts: None,
        }
    }
}

pub use pipeline::track::TrackerConfig;

/// A config that passed validation, with its ids parsed.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    pub node_id: DeviceId,
    pub checkpoint_id: DeviceId,
    pub raw: NodeConfig,
    pub cameras: Vec<ValidCamera>,
}

#[derive(Debug, Clone)]
pub struct ValidCamera {
    pub id: DeviceId,
    pub label: String,
    pub tracker: TrackerConfig,
    pub retry: RetryConfig,
    pub raw: CameraConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config '{path}': {err}; pass an existing file with --config")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("config '{path}' is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config '{path}' has {} problem(s):\n  - {}", .errors.len(), .errors.join("\n  - "))]
    Invalid { path: PathBuf, errors: Vec<String> },
}

/// Settings that counted frames and now measure time: a node that skips frames when busy
/// must not change what a rule means. (old key, new key, how to convert.)
const RENAMED_KEYS: [(&str, &str, &str); 3] = [
    (
        "max_lost_frames",
        "max_lost_secs",
        "seconds of video time: frames / the camera's FPS (30 frames at 10 FPS = 3.0)",
    ),
    (
        "min_frames_inside",
        "min_inside_ms",
        "milliseconds from the first frame inside: (frames - 1) x 1000 / FPS (3 frames at 10 FPS = 200)",
    ),
    (
        "read_every",
        "read_interval_ms",
        "milliseconds between plate reads: frames x 1000 / FPS (2 frames at 10 FPS = 200)",
    ),
];

/// Finds keys of an older config that were renamed, anywhere in the file, and says how to
/// write each one now.
fn renamed_keys(v: &toml::Value, at: &str, errors: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                if let Some((old, new, how)) = RENAMED_KEYS.iter().find(|r| r.0 == k) {
                    errors.push(format!(
                        "{here} = {v} is a setting of an older version: {old} counted frames, which changes meaning when a busy node skips frames; write {new} instead, in {how}"
                    ));
                }
                renamed_keys(v, &here, errors);
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                renamed_keys(v, &format!("{at}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

impl NodeConfig {
    pub fn from_toml(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        if let Ok(value) = toml::from_str::<toml::Value>(text) {
            let mut errors = Vec::new();
            renamed_keys(&value, "", &mut errors);
            if !errors.is_empty() {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    errors,
                });
            }
        }
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    pub fn load(path: &Path) -> Result<ValidConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        Self::from_toml(&text, path)?.validate(path)
    }

    /// Checks everything that can be checked without opening cameras or models, and
    /// reports all problems at once.
    pub fn validate(self, path: &Path) -> Result<ValidConfig, ConfigError> {
        let mut errors = Vec::new();
        let node_id = DeviceId::parse_as(&self.node_id, DeviceType::AnalysisDevice)
            .map_err(|e| errors.push(format!("node_id: {e}")))
            .ok();
        let checkpoint_id = DeviceId::parse_as(&self.checkpoint_id, DeviceType::Checkpoint)
            .map_err(|e| errors.push(format!("checkpoint_id: {e}")))
            .ok();
        self.tracker.validate("tracker", &mut errors);
        self.clock.validate(&mut errors);
        let endpoints: Vec<String> = self
            .zenoh
            .connect
            .iter()
            .chain(&self.zenoh.listen)
            .cloned()
            .collect();
        if let Some(tls) = &self.zenoh.tls {
            errors.extend(tls.check(&endpoints));
            if self.zenoh.trusted_common_names.is_empty() {
                errors.push("zenoh.trusted_common_names is empty while [zenoh] tls is set: name the aggregators' (and routers') certificate common names, e.g. trusted_common_names = [\"aggregator\"]; only they may acknowledge this node's events".into());
            }
        } else if !self.zenoh.insecure {
            errors.extend(protocol::security::plain_transport_problems(
                &endpoints,
                self.zenoh.multicast_scouting,
            ));
        }
        if let Some(l) = &self.metrics.listen {
            if l.parse::<std::net::SocketAddr>().is_err() {
                errors.push(format!(
                    "metrics.listen '{l}' is not an address like 127.0.0.1:9464"
                ));
            }
        }
        if let Err(e) = self.runtime.providers().check() {
            errors.push(format!("runtime.{e}"));
        }
        if self.runtime.intra_threads == 0 {
            errors.push("runtime.intra_threads must be at least 1".into());
        }
        if self.cameras.is_empty() {
            errors.push("no cameras: add at least one [[cameras]] table".into());
        }
        let mut cameras = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, cam) in self.cameras.iter().enumerate() {
            let at = format!("cameras[{i}]");
            let id = match DeviceId::parse_as(&cam.id, DeviceType::Camera) {
                Ok(id) => Some(id),
                Err(e) => {
                    errors.push(format!("{at}.id: {e}"));
                    None
                }
            };
            if !seen.insert(cam.id.clone()) {
                errors.push(format!(
                    "{at}.id '{}' is used by an earlier camera; camera ids must be unique",
                    cam.id
                ));
            }
            if let (Some(id), Some(ck)) = (&id, &checkpoint_id) {
                if id.county6() != ck.county6() {
                    errors.push(format!(
                        "{at}.id '{id}' is in region {} but checkpoint_id '{ck}' is in region {}; a node's cameras belong to its checkpoint's county",
                        id.county6(),
                        ck.county6()
                    ));
                }
            }
            match &cam.source {
                SourceConfig::File {
                    path, start_time, ..
                } => {
                    if path.as_os_str().is_empty() {
                        errors.push(format!("{at}.source.path is empty"));
                    }
                    check_time(start_time, &at, &mut errors);
                }
                SourceConfig::Rtsp { url, .. } => {
                    if !(url.starts_with("rtsp://") || url.starts_with("rtsps://")) {
                        errors.push(format!("{at}.source.url '{url}' is not an rtsp:// URL"));
                    }
                }
                SourceConfig::Images {
                    dir,
                    fps,
                    start_time,
                } => {
                    if dir.as_os_str().is_empty() {
                        errors.push(format!("{at}.source.dir is empty"));
                    }
                    if !(*fps > 0.0 && fps.is_finite()) {
                        errors.push(format!("{at}.source.fps = {fps} must be above 0"));
                    }
                    check_time(start_time, &at, &mut errors);
                }
            }
            if let Some(f) = cam
                .max_fps
                .filter(|f| !(f.is_finite() && *f > 0.0 && *f <= 1000.0))
            {
                errors.push(format!(
                    "{at}.max_fps = {f} must be above 0 and at most 1000 (leave it out to process as many frames as the node can)"
                ));
            }
            if cam.stall_timeout_secs == 0 {
                errors.push(format!("{at}.stall_timeout_secs must be at least 1"));
            }
            if cam.classes.is_empty() {
                errors.push(format!(
                    "{at}.classes is empty; list the classes to track, e.g. [\"person\", \"car\"]"
                ));
            }
            if cam.retry.initial_backoff_ms == 0
                || cam.retry.initial_backoff_ms > cam.retry.max_backoff_ms
            {
                errors.push(format!(
                    "{at}.retry: initial_backoff_ms {} must be above 0 and at most max_backoff_ms {}",
                    cam.retry.initial_backoff_ms, cam.retry.max_backoff_ms
                ));
            }
            crate::zones::validate_zones(&cam.zones, &at, &mut errors);
            if let Some(sig) = &cam.signal {
                sig.validate(&format!("{at}.signal"), &mut errors);
            }
            if let Some(rl) = &cam.red_light {
                validate_red_light(cam, rl, &at, &mut errors);
            }
            if let Some(pl) = &cam.plates {
                pl.validate(&cam.zones, &format!("{at}.plates"), &mut errors);
                for c in &pl.vehicle_classes {
                    if !cam.classes.contains(c) {
                        errors.push(format!("{at}.plates.vehicle_classes has '{c}', which {at}.classes does not track; add it to classes"));
                    }
                }
            }
            if !(1..=100).contains(&cam.evidence.jpeg_quality) {
                errors.push(format!(
                    "{at}.evidence.jpeg_quality = {} must be 1..100",
                    cam.evidence.jpeg_quality
                ));
            }
            if cam.evidence.ring_buffer_mb < 8 {
                errors.push(format!("{at}.evidence.ring_buffer_mb = {} is too small to hold a second of video; use at least 8", cam.evidence.ring_buffer_mb));
            }
            if let Err(e) = cam.evidence.clock() {
                errors.push(format!("{at}.evidence.{e}"));
            }
            let clip = &cam.evidence.clip;
            if clip.enabled && cam.red_light.is_some() {
                if clip.before_ms < 0
                    || clip.after_ms < 0
                    || clip.before_ms + clip.after_ms > 30_000
                {
                    errors.push(format!("{at}.evidence.clip: before_ms = {} and after_ms = {} must not be negative and together at most 30000 (a clip is a few seconds around the violation)", clip.before_ms, clip.after_ms));
                }
                if !(clip.fps > 0.0 && clip.fps <= 60.0) {
                    errors.push(format!(
                        "{at}.evidence.clip.fps = {} must be above 0 and at most 60",
                        clip.fps
                    ));
                }
                if !(160..=3840).contains(&clip.max_width) {
                    errors.push(format!(
                        "{at}.evidence.clip.max_width = {} must be 160..3840",
                        clip.max_width
                    ));
                }
                if let Err(e) = crate::clip::encoder_for(clip) {
                    errors.push(format!("{at}.evidence.clip: {e}"));
                }
            }
            if cam.red_light.is_some() || cam.plates.is_some() {
                if let Err(e) = cam.evidence.load_font() {
                    errors.push(format!("{at}.evidence: {e}"));
                }
            }
            for (kind, o) in &cam.evidence.offences {
                if protocol::EventKind::parse(kind).is_none() {
                    errors.push(format!("{at}.evidence.offences names unknown event kind '{kind}'; violations are pedestrian_red_light"));
                }
                if o.code.trim().is_empty()
                    || !o.code.chars().all(|c| c.is_ascii_alphanumeric())
                    || o.name.trim().is_empty()
                {
                    errors.push(format!("{at}.evidence.offences.{kind} needs the table's code (digits) and name, e.g. code = \"3001\", name = \"行人不按交通信号灯指示通行\""));
                }
            }
            let tracker = cam.tracker.clone().unwrap_or_else(|| self.tracker.clone());
            tracker.validate(&format!("{at}.tracker"), &mut errors);
            let mut retry = cam.retry.clone();
            if retry.max_attempts.is_none() && !cam.source.is_live() {
                retry.max_attempts = Some(3);
            }
            if let Some(id) = id {
                cameras.push(ValidCamera {
                    label: cam.name.clone().unwrap_or_else(|| id.to_string()),
                    id,
                    tracker,
                    retry,
                    raw: cam.clone(),
                });
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                errors,
            });
        }
        Ok(ValidConfig {
            node_id: node_id.expect("checked"),
            checkpoint_id: checkpoint_id.expect("checked"),
            raw: self,
            cameras,
        })
    }
}

fn validate_red_light(
    cam: &CameraConfig,
    rl: &crate::red_light::RedLightConfig,
    at: &str,
    errors: &mut Vec<String>,
) {
    use crate::zones::ZoneKind;
    let names = |k: ZoneKind| -> Vec<&str> {
        cam.zones
            .iter()
            .filter(|z| z.kind == k)
            .map(|z| z.name.as_str())
            .collect()
    };
    let crosswalks = names(ZoneKind::Crosswalk);
    let waiting = names(ZoneKind::WaitingArea);
    if cam.signal.is_none() {
        errors.push(format!(
            "{at}.red_light needs a signal: add [cameras.signal] with a phase and a source"
        ));
    }
    if crosswalks.is_empty() || waiting.is_empty() {
        errors.push(format!("{at}.red_light needs at least one zone of kind crosswalk and one of kind waiting_area in {at}.zones"));
    }
    for (field, list, known, kind) in [
        ("crosswalks", &rl.crosswalks, &crosswalks, "crosswalks"),
        (
            "waiting_areas",
            &rl.waiting_areas,
            &waiting,
            "waiting areas",
        ),
    ] {
        for n in list {
            if !known.contains(&n.as_str()) {
                errors.push(format!(
                    "unknown zone '{n}' in {at}.red_light.{field}; {kind} defined: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            }
        }
    }
    if !cam.classes.iter().any(|c| c == "person") {
        errors.push(format!("{at}.red_light needs \"person\" in {at}.classes"));
    }
    if rl.min_inside_ms < 0 || rl.grace_ms < 0 || rl.max_gap_ms < 0 || rl.third_picture_after_ms < 0
    {
        errors.push(format!(
            "{at}.red_light: min_inside_ms, grace_ms, max_gap_ms and third_picture_after_ms must not be negative"
        ));
    }
}

fn check_time(t: &Option<String>, at: &str, errors: &mut Vec<String>) {
    if let Some(t) = t {
        if protocol::time::parse_rfc3339_ms(t).is_none() {
            errors.push(format!(
                "{at}.source.start_time '{t}' is not an RFC 3339 UTC time like 2026-11-29T08:00:00Z"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = "32050500055050000001"
checkpoint_id = "32050500051210000001"
[[cameras]]
id = "32050500051320000001"
source = { type = "file", path = "a.avi" }
"#;

    #[test]
    fn minimal_config_validates_with_defaults() {
        let c = NodeConfig::from_toml(GOOD, Path::new("t.toml"))
            .unwrap()
            .validate(Path::new("t.toml"))
            .unwrap();
        assert_eq!(c.cameras.len(), 1);
        assert_eq!(c.cameras[0].retry.max_attempts, Some(3));
        assert_eq!(c.cameras[0].tracker, TrackerConfig::default());
    }

    #[test]
    fn settings_that_counted_frames_are_refused_with_their_new_name_and_conversion() {
        let text = format!(
            "{GOOD}\n[tracker]\nmax_lost_frames = 30\n[cameras.red_light]\nmin_frames_inside = 3\n[cameras.plates]\nread_every = 2\n"
        );
        let err = NodeConfig::from_toml(&text, Path::new("old.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("old.toml") && err.contains("3 problem(s)"),
            "{err}"
        );
        for (old, new) in [
            ("tracker.max_lost_frames = 30", "write max_lost_secs"),
            (
                "cameras[0].red_light.min_frames_inside = 3",
                "write min_inside_ms",
            ),
            ("cameras[0].plates.read_every = 2", "write read_interval_ms"),
        ] {
            assert!(err.contains(old) && err.contains(new), "{old}: {err}");
        }
        assert!(err.contains("30 frames at 10 FPS = 3.0"), "{err}");
        // The new keys are taken.
        let text = format!("{GOOD}\nmax_fps = 5.0\n[cameras.tracker]\nmax_lost_secs = 1.5\n");
        let c = NodeConfig::from_toml(&text, Path::new("t.toml"))
            .unwrap()
            .validate(Path::new("t.toml"))
            .unwrap();
        assert_eq!(c.cameras[0].tracker.max_lost_secs, 1.5);
        assert_eq!(c.cameras[0].raw.max_fps, Some(5.0));
        let text = format!("{GOOD}\nmax_fps = 0.0\n[cameras.tracker]\nmax_lost_secs = -1\n");
        let err = NodeConfig::from_toml(&text, Path::new("t.toml"))
            .unwrap()
            .validate(Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_fps = 0 must be above 0"), "{err}");
        assert!(err.contains("max_lost_secs = -1 is outside"), "{err}");
    }

    #[test]
    fn all_errors_reported_at_once_naming_the_values() {
        let text = r#"
node_id = "123"
checkpoint_id = "32050500051210000001"
[tracker]
low_score = 0.9
[[cameras]]
id = "32050500051320000001"
source = { type = "rtsp", url = "http://x" }
[[cameras]]
id = "32050500051320000001"
classes = []
source = { type = "file", path = "a.avi", start_time = "yesterday" }
"#;
        let err = NodeConfig::from_toml(text, Path::new("bad.toml"))
            .unwrap()
            .validate(Path::new("bad.toml"))
            .unwrap_err()
            .to_string();
        for needle in [
            "'bad.toml'",
            "node_id",
            "'123'",
            "low_score 0.9",
            "'http://x'",
            "must be unique",
            "classes is empty",
            "'yesterday'",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in {err}");
        }
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = NodeConfig::from_toml(&format!("{GOOD}\nbogus = 1\n"), Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }
}

#[cfg(test)]
mod example_configs {
    use super::*;

    /// Every edge config shipped in configs/ parses and validates.
    #[test]
    fn shipped_edge_configs_validate() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        // The configs name files (certificates) relative to the repository root, where
        // the binaries run; no other test here depends on the working directory.
        std::env::set_current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("edge") && name.ends_with(".toml") {
                // Files under .cache/ are where TRAFFIC_CACHE puts them, as demo.sh does.
                let mut text = std::fs::read_to_string(&p).unwrap();
                if let Some(cache) = std::env::var_os("TRAFFIC_CACHE") {
                    text = text.replace("\".cache/", &format!("\"{}/", cache.to_string_lossy()));
                }
                NodeConfig::from_toml(&text, &p)
                    .and_then(|c| c.validate(&p))
                    .unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 1, "no edge configs found in {}", dir.display());
    }
}

#[cfg(test)]
mod crossing_config {
    use super::*;

    #[test]
    fn unknown_zone_references_name_both_ends() {
        let text = r#"
node_id = "32050500055050000001"
checkpoint_id = "32050500051210000001"
[[cameras]]
id = "32050500051320000001"
source = { type = "file", path = "a.avi" }
[[cameras.zones]]
name = "crossing_s"
kind = "crosswalk"
polygon = [[0.1, 0.4], [0.9, 0.4], [0.9, 0.6], [0.1, 0.6]]
[[cameras.zones]]
name = "wait_n"
kind = "waiting_area"
polygon = [[0.1, 0.2], [0.9, 0.2], [0.9, 0.4], [0.1, 1.4]]
[cameras.red_light]
crosswalks = ["crossing_n"]
waiting_areas = ["wait_n"]
"#;
        let err = NodeConfig::from_toml(text, Path::new("x.toml"))
            .unwrap()
            .validate(Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        for needle in [
            "unknown zone 'crossing_n' in cameras[0].red_light.crosswalks; crosswalks defined: crossing_s",
            "cameras[0].zones[1] 'wait_n': corner [0.1, 1.4] is outside the frame",
            "red_light needs a signal",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in\n{err}");
        }
    }

    /// A camera that draws evidence needs a CJK font; a missing one and a malformed offence
    /// are named with the fix before any camera starts.
    #[test]
    fn the_evidence_font_and_offences_are_checked() {
        let text = r#"
node_id = "32050500055050000001"
checkpoint_id = "32050500051210000001"
[[cameras]]
id = "32050500051320000001"
source = { type = "file", path = "a.avi" }
[[cameras.zones]]
name = "xw"
kind = "crosswalk"
polygon = [[0.1, 0.4], [0.9, 0.4], [0.9, 0.6], [0.1, 0.6]]
[[cameras.zones]]
name = "wait"
kind = "waiting_area"
polygon = [[0.1, 0.2], [0.9, 0.2], [0.9, 0.4], [0.1, 0.4]]
[cameras.red_light]
crosswalks = ["xw"]
waiting_areas = ["wait"]
[cameras.signal]
phase = "p1"
[cameras.signal.plan]
cycle_secs = 60
intervals = [{ state = "red", from_secs = 0, to_secs = 60 }]
[cameras.evidence]
font = "/nonexistent/cjk.ttc"
[cameras.evidence.offences.pedestrian_red_light]
code = ""
name = "行人不按交通信号灯指示通行"
[cameras.evidence.offences.jaywalk]
code = "3001"
name = "x"
"#;
        let err = NodeConfig::from_toml(text, Path::new("x.toml"))
            .unwrap()
            .validate(Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        for needle in [
            "cameras[0].evidence: evidence font /nonexistent/cjk.ttc",
            "apt install fonts-wqy-microhei",
            "cameras[0].evidence.offences.pedestrian_red_light needs the table's code",
            "unknown event kind 'jaywalk'",
        ] {
            assert!(err.contains(needle), "missing {needle:?} in\n{err}");
        }
    }
}
