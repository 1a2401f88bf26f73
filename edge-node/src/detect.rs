//! Stage `infer`: the object detector.
//!
//! Input: a [`Prepared`] tensor. Output: [`Detection`]s in frame pixels with class names from
//! the model. The ONNX Runtime session is owned by the camera's inference thread; nothing else
//! touches it. Output decoding and NMS are pure functions, tested and benched without a model.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::TensorRef;
use protocol::BBox;

use crate::manifest::{parse_names_metadata, Decoder, ManifestError, ModelManifest};
use crate::preprocess::{Letterbox, Prepared};

pub use pipeline::Detection;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot load ONNX Runtime from '{path}': {message}; run scripts/setup.sh or set ORT_DYLIB_PATH to libonnxruntime.so 1.31 or newer")]
    Runtime { path: PathBuf, message: String },
    #[error("cannot load model '{path}': {message}")]
    Load { path: PathBuf, message: String },
    #[error("model '{path}' does not match its manifest '{manifest}': {message}")]
    Shape {
        path: PathBuf,
        manifest: PathBuf,
        message: String,
    },
    #[error("inference failed: {0}")]
    Run(String),
    #[error("{what}: {message}")]
    Provider { what: String, message: String },
}

/// An ONNX Runtime execution provider a model can run on.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Tensorrt,
    Cuda,
    Cpu,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Tensorrt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which execution providers the node's models are opened with (`[runtime]`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// In order of preference.
    pub order: Vec<Provider>,
    /// Every model must load on this one, else the node does not start.
    pub require: Option<Provider>,
    pub gpu_device: u32,
    pub tensorrt_cache_dir: PathBuf,
    pub tensorrt_fp16: bool,
    /// One ONNX Runtime thread pool of this many threads for every model of the process,
    /// instead of a pool per model (set before the first model is opened).
    pub node_thread_pool: Option<usize>,
}

impl Default for ProviderSettings {
    /// The CPU alone (benches and tests that open models directly).
    fn default() -> Self {
        ProviderSettings {
            order: vec![Provider::Cpu],
            require: None,
            gpu_device: 0,
            tensorrt_cache_dir: PathBuf::from(".cache/tensorrt"),
            tensorrt_fp16: true,
            node_thread_pool: None,
        }
    }
}

impl ProviderSettings {
    /// The settings' own consistency; the error starts with the key it is about.
    pub fn check(&self) -> Result<(), String> {
        if self.order.is_empty() {
            return Err("providers is empty: list at least one of \"tensorrt\", \"cuda\", \"cpu\" (e.g. [\"cuda\", \"cpu\"])".into());
        }
        let mut seen = self.order.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.order.len() {
            return Err(format!(
                "providers lists a provider twice: {:?}",
                self.order
            ));
        }
        if let Some(i) = self.order.iter().position(|p| *p == Provider::Cpu) {
            if i + 1 < self.order.len() {
                return Err(format!(
                    "providers lists {:?} after \"cpu\", which runs every node it is given: put the GPU providers first (e.g. [\"cuda\", \"cpu\"])",
                    self.order[i + 1..].iter().map(|p| p.as_str()).collect::<Vec<_>>()
                ));
            }
        }
        if let Some(r) = self.require {
            if !self.order.contains(&r) {
                return Err(format!(
                    "require = \"{r}\" is not in providers {:?}; add it to providers",
                    self.order.iter().map(|p| p.as_str()).collect::<Vec<_>>()
                ));
            }
        }
        Ok(())
    }
}

/// The node's provider settings, set once at start ([`set_providers`]); ONNX Runtime's
/// environment is per process, and so is this.
static PROVIDERS: std::sync::RwLock<Option<ProviderSettings>> = std::sync::RwLock::new(None);
/// The provider each model file loaded on, by file name.
static LOADED_ON: std::sync::Mutex<std::collections::BTreeMap<String, Provider>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// Sets the execution providers every model opened from now on tries.
pub fn set_providers(settings: ProviderSettings) {
    *PROVIDERS.write().unwrap_or_else(|e| e.into_inner()) = Some(settings);
}

/// The provider each model loaded on so far (model file name -> provider).
pub fn loaded_providers() -> std::collections::BTreeMap<String, Provider> {
    LOADED_ON.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Registers the providers of `settings` on `builder`, in order: each one the library has
/// and that loads. Returns the builder, the first provider that loaded (the CPU when none
/// did and the CPU is listed) and why each skipped one was skipped.
fn register_providers(
    mut builder: ort::session::builder::SessionBuilder,
    settings: &ProviderSettings,
) -> (
    ort::session::builder::SessionBuilder,
    Option<Provider>,
    Vec<String>,
) {
    use ort::ep::ExecutionProvider;
    let mut first: Option<Provider> = None;
    let mut skipped = Vec::new();
    for &p in &settings.order {
        let (available, dispatch) = match p {
            Provider::Cpu => {
                first.get_or_insert(Provider::Cpu);
                // The CPU always runs what the providers before it cannot; nothing after
                // it would get a node.
                break;
            }
            Provider::Cuda => (
                ort::ep::CUDA::is_available(),
                ort::ep::CUDA::default()
                    .with_device_id(settings.gpu_device as i32)
                    .build()
                    .error_on_failure(),
            ),
            Provider::Tensorrt => {
                if let Err(e) = std::fs::create_dir_all(&settings.tensorrt_cache_dir) {
                    skipped.push(format!(
                        "tensorrt: cannot create its engine cache '{}': {e}",
                        settings.tensorrt_cache_dir.display()
                    ));
                    continue;
                }
                let cache = settings.tensorrt_cache_dir.display().to_string();
                (
                    ort::ep::TensorRT::is_available(),
                    ort::ep::TensorRT::default()
                        .with_device_id(settings.gpu_device as i32)
                        .with_fp16(settings.tensorrt_fp16)
                        .with_engine_cache(true)
                        .with_engine_cache_path(&cache)
                        .with_timing_cache(true)
                        .with_timing_cache_path(&cache)
                        .build()
                        .error_on_failure(),
                )
            }
        };
        match available {
            Ok(true) => {}
            Ok(false) => {
                skipped.push(format!(
                    "{p}: {NOT_IN_LIBRARY}; install the GPU build (scripts/setup.sh does where an NVIDIA driver is present) and point runtime.onnxruntime_library at it"
                ));
                continue;
            }
            Err(e) => {
                skipped.push(format!("{p}: {e}"));
                continue;
            }
        }
        match builder.with_execution_providers([dispatch]) {
            Ok(b) => {
                builder = b;
                first.get_or_insert(p);
            }
            Err(e) => {
                skipped.push(format!("{p}: {}", tidy_provider_error(&e.to_string())));
                builder = e.recover();
            }
        }
    }
    (builder, first, skipped)
}

/// Why a provider the library lacks was skipped (expected on a CPU box: logged at info).
const NOT_IN_LIBRARY: &str = "not in this ONNX Runtime library (a CPU build)";

/// Whether a skip is worth a warning: a provider the library has that failed to load.
pub fn skip_is_a_fault(reason: &str) -> bool {
    !reason.contains(NOT_IN_LIBRARY)
}

/// ONNX Runtime's message without its source location, with what to do when a GPU library
/// is missing.
fn tidy_provider_error(message: &str) -> String {
    let m = message
        .rsplit_once("FAIL : ")
        .map_or(message, |(_, m)| m)
        .trim();
    if m.contains("cannot open shared object file") {
        format!("{m}; the CUDA 13 runtime, cuBLAS, cuRAND and cuDNN 9 libraries (and TensorRT 10 for tensorrt) must be on the library path (README: GPU boxes)")
    } else {
        m.to_string()
    }
}

/// The provider models run on, given what registered: Err when none did, or when
/// `settings.require` names another one. `what` names the model or the setting.
fn accepted(
    settings: &ProviderSettings,
    first: Option<Provider>,
    skipped: &[String],
    what: &str,
) -> Result<Provider, DetectError> {
    let fail = |message: String| DetectError::Provider {
        what: what.to_string(),
        message,
    };
    let Some(loaded) = first else {
        return Err(fail(format!(
            "none of runtime.providers {:?} loaded ({}); add \"cpu\" to run on the CPU",
            settings
                .order
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>(),
            skipped.join("; ")
        )));
    };
    match settings.require {
        Some(required) if required != loaded => Err(fail(format!(
            "runtime.require = \"{required}\" but only {loaded} loaded ({}); fix the GPU set-up, or remove require to run on {loaded}",
            if skipped.is_empty() {
                "nothing before it was skipped".to_string()
            } else {
                skipped.join("; ")
            }
        ))),
        _ => Ok(loaded),
    }
}

/// Start-up check of the providers `settings` asks for, before any camera starts: which one
/// models will load on first, and why the ones before it were skipped. Err when none loads
/// or `require` is not met.
pub fn probe_providers(
    ort_library: &Path,
    settings: &ProviderSettings,
) -> Result<(Provider, Vec<String>), DetectError> {
    let env = environment(ort_library)?;
    let builder = Session::builder(env).map_err(|e| DetectError::Load {
        path: ort_library.to_path_buf(),
        message: e.to_string(),
    })?;
    let (_, first, skipped) = register_providers(builder, settings);
    let first = accepted(settings, first, &skipped, "runtime.providers")?;
    Ok((first, skipped))
}

/// The ONNX Runtime library is loaded once per process; every camera shares it.
static ORT_ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

pub(crate) fn environment(
    lib: &Path,
) -> Result<&'static ort::environment::Environment, DetectError> {
    ORT_ENV
        .get_or_init(|| {
            if !lib.exists() {
                return Err("no such file".to_string());
            }
            let mut builder = ort::init_from(lib)
                .map_err(|e| e.to_string())?
                .with_name("edge-node");
            let pool = PROVIDERS
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .and_then(|s| s.node_thread_pool);
            if let Some(threads) = pool {
                // One pool for every model of the node: sessions made from now on use it
                // instead of a pool each (ort disables per-session threads).
                let options = ort::environment::GlobalThreadPoolOptions::default()
                    .with_intra_threads(threads)
                    .and_then(|o| o.with_inter_threads(1))
                    .and_then(|o| o.with_spin_control(true))
                    .map_err(|e| e.to_string())?;
                builder = builder.with_global_thread_pool(options);
                tracing::info!(
                    threads,
                    "ONNX Runtime: one thread pool for every model of the node"
                );
            }
            builder.build().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|message| DetectError::Runtime {
            path: lib.to_path_buf(),
            message: message.clone(),
        })
}

/// An ONNX Runtime session for a verified model file: `threads` intra-op threads, one
/// inter-op thread; `spin`: whether idle threads spin (fast for a model run back to back,
/// wasteful for one run now and then beside others).
pub(crate) fn open_model(
    ort_library: &Path,
    model_path: &Path,
    threads: usize,
    spin: bool,
) -> Result<Session, DetectError> {
    let env = environment(ort_library)?;
    let load_err = |e: ort::Error| DetectError::Load {
        path: model_path.to_path_buf(),
        message: e.to_string(),
    };
    let settings = PROVIDERS
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .unwrap_or_default();
    let builder = Session::builder(env)
        .map_err(load_err)?
        .with_intra_threads(threads)
        .map_err(|e| load_err(ort::Error::from(e)))?
        .with_inter_threads(1)
        .map_err(|e| load_err(ort::Error::from(e)))?
        .with_intra_op_spinning(spin)
        .map_err(|e| load_err(ort::Error::from(e)))?;
    let (mut builder, provider, skipped) = register_providers(builder, &settings);
    let model = model_path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let provider = accepted(&settings, provider, &skipped, &format!("model '{model}'"))?;
    let session = builder.commit_from_file(model_path).map_err(load_err)?;
    if skipped.is_empty() {
        tracing::info!(model = %model, provider = %provider, "Model loaded");
    } else if skipped.iter().any(|s| skip_is_a_fault(s)) {
        tracing::warn!(model = %model, provider = %provider, skipped = %skipped.join("; "), "Model loaded on a fallback execution provider");
    } else {
        tracing::info!(model = %model, provider = %provider, skipped = %skipped.join("; "), "Model loaded on a fallback execution provider");
    }
    LOADED_ON
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(model, provider);
    Ok(session)
}

pub struct Detector {
    session: Session,
    manifest: ModelManifest,
    labels: Vec<String>,
    num_anchors: usize,
}

impl Detector {
    /// Loads the model a manifest describes, checking its sha256, its input and output
    /// names and shapes against the manifest, and reading its labels.
    pub fn load(
        manifest_path: &Path,
        models_dir: &Path,
        ort_library: &Path,
        intra_threads: usize,
    ) -> Result<Detector, DetectError> {
        let manifest = ModelManifest::load(manifest_path)?;
        let model_path = manifest.verified_file(models_dir, manifest_path)?;
        let session = open_model(ort_library, &model_path, intra_threads, true)?;
        let shape_err = |message: String| DetectError::Shape {
            path: model_path.clone(),
            manifest: manifest_path.to_path_buf(),
            message,
        };
        let input = session
            .inputs()
            .iter()
            .find(|i| i.name() == manifest.input.name)
            .ok_or_else(|| shape_err(format!("no input named '{}'", manifest.input.name)))?;
        let in_shape: Vec<i64> = input
            .dtype()
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let want = [
            1,
            3,
            manifest.input.height as i64,
            manifest.input.width as i64,
        ];
        if in_shape.len() != 4
            || in_shape
                .iter()
                .zip(want)
                .any(|(&got, w)| got >= 0 && got != w)
        {
            return Err(shape_err(format!(
                "input '{}' has shape {in_shape:?}, manifest says {want:?}",
                input.name()
            )));
        }
        let output = session
            .outputs()
            .iter()
            .find(|o| o.name() == manifest.output.name)
            .ok_or_else(|| shape_err(format!("no output named '{}'", manifest.output.name)))?;
        let out_shape: Vec<i64> = output
            .dtype()
            .tensor_shape()
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        let labels = match (&manifest.labels.names, &manifest.labels.metadata_key) {
            (Some(n), _) => n.clone(),
            (None, Some(key)) => {
                let raw = session
                    .metadata()
                    .ok()
                    .and_then(|m| m.custom(key))
                    .ok_or_else(|| {
                        shape_err(format!("no metadata key '{key}' with class names"))
                    })?;
                parse_names_metadata(&raw)
                    .ok_or_else(|| shape_err(format!("metadata '{key}' is not a class-name map")))?
            }
            (None, None) => unreachable!("manifest validation requires labels"),
        };
        let num_anchors = match manifest.output.decoder {
            Decoder::Yolov8 => {
                if out_shape.len() != 3
                    || (out_shape[1] >= 0 && out_shape[1] as usize != 4 + labels.len())
                {
                    return Err(shape_err(format!(
                        "output '{}' has shape {out_shape:?}; yolov8 expects [1, {}, anchors] for {} labels",
                        manifest.output.name,
                        4 + labels.len(),
                        labels.len()
                    )));
                }
                out_shape[2].max(0) as usize
            }
        };
        Ok(Detector {
            session,
            manifest,
            labels,
            num_anchors,
        })
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn class_id(&self, name: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == name)
    }

    /// Runs the model only and returns the raw output (used by the benchmark).
    pub fn run_raw(&mut self, prepared: &Prepared) -> Result<Vec<f32>, DetectError> {
        let (h, w) = (
            self.manifest.input.height as usize,
            self.manifest.input.width as usize,
        );
        let input = TensorRef::from_array_view(([1usize, 3, h, w], prepared.tensor.as_slice()))
            .map_err(|e| DetectError::Run(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.manifest.input.name.as_str() => input])
            .map_err(|e| DetectError::Run(e.to_string()))?;
        let (_, data) = outputs[self.manifest.output.name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| DetectError::Run(e.to_string()))?;
        Ok(data.to_vec())
    }

    /// Model inference, then decode and NMS; boxes come back in frame pixels.
    pub fn detect(
        &mut self,
        prepared: &Prepared,
    ) -> Result<(Vec<Detection>, InferTimings), DetectError> {
        let t0 = std::time::Instant::now();
        let raw = self.run_raw(prepared)?;
        let t1 = std::time::Instant::now();
        let num_anchors = if self.num_anchors > 0 {
            self.num_anchors
        } else {
            raw.len() / (4 + self.labels.len())
        };
        let dets = match self.manifest.output.decoder {
            Decoder::Yolov8 => postprocess_yolov8(
                &raw,
                self.labels.len(),
                num_anchors,
                self.manifest.thresholds.score,
                self.manifest.thresholds.nms_iou,
                &prepared.letterbox,
            ),
        };
        Ok((
            dets,
            InferTimings {
                infer: t1 - t0,
                postprocess: t1.elapsed(),
            },
        ))
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct InferTimings {
    pub infer: std::time::Duration,
    pub postprocess: std::time::Duration,
}

/// Decode + per-class NMS + unmap to frame pixels.
pub fn postprocess_yolov8(
    raw: &[f32],
    num_classes: usize,
    num_anchors: usize,
    score_threshold: f32,
    nms_iou: f32,
    letterbox: &Letterbox,
) -> Vec<Detection> {
    let mut dets = decode_yolov8(raw, num_classes, num_anchors, score_threshold);
    dets = nms_per_class(dets, nms_iou);
    for d in &mut dets {
        d.bbox = letterbox.unmap(&d.bbox);
    }
    dets.retain(|d| d.bbox.area() > 0.0);
    dets
}

/// Decodes a `[4 + C, A]` (attribute-major) YOLOv8 output into boxes in input pixels,
/// keeping each anchor's best class when it reaches `score_threshold`.
pub fn decode_yolov8(
    raw: &[f32],
    num_classes: usize,
    num_anchors: usize,
    score_threshold: f32,
) -> Vec<Detection> {
    let attrs = 4 + num_classes;
    if raw.len() < attrs * num_anchors {
        return Vec::new();
    }
    let mut best = vec![(0usize, f32::MIN); num_anchors];
    // Attribute-major: walk each class row once, contiguous in memory.
    for c in 0..num_classes {
        let row = &raw[(4 + c) * num_anchors..(5 + c) * num_anchors];
        for (a, &s) in row.iter().enumerate() {
            if s > best[a].1 {
                best[a] = (c, s);
            }
        }
    }
    let mut out = Vec::new();
    for (a, &(class_id, score)) in best.iter().enumerate() {
        if score < score_threshold || !score.is_finite() {
            continue;
        }
        let cx = raw[a];
        let cy = raw[num_anchors + a];
        let w = raw[2 * num_anchors + a];
        let h = raw[3 * num_anchors + a];
        out.push(Detection {
            class_id,
            score,
            bbox: BBox::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0),
        });
    }
    out
}

/// Greedy non-maximum suppression within each class: highest score first, dropping boxes of
/// the same class that overlap a kept one by more than `iou_threshold`.
pub fn nms_per_class(mut dets: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<Detection> = Vec::with_capacity(dets.len());
    for d in dets {
        if keep
            .iter()
            .all(|k| k.class_id != d.class_id || k.bbox.iou(&d.bbox) <= iou_threshold)
        {
            keep.push(d);
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn det(c: usize, s: f32, x: f32) -> Detection {
        Detection {
            class_id: c,
            score: s,
            bbox: BBox::new(x, 0.0, x + 10.0, 10.0),
        }
    }

    #[test]
    fn nms_suppresses_within_class_only() {
        let out = nms_per_class(
            vec![
                det(0, 0.5, 1.0),
                det(0, 0.9, 0.0),
                det(1, 0.8, 0.0),
                det(0, 0.7, 50.0),
            ],
            0.45,
        );
        let got: Vec<(usize, f32)> = out.iter().map(|d| (d.class_id, d.score)).collect();
        assert_eq!(got, vec![(0, 0.9), (1, 0.8), (0, 0.7)]);
    }

    #[test]
    fn decode_picks_best_class_and_thresholds() {
        // 2 classes, 3 anchors.
        let a = 3;
        let mut raw = vec![0f32; 6 * a];
        let set =
            |raw: &mut Vec<f32>, attr: usize, anchor: usize, v: f32| raw[attr * a + anchor] = v;
        for (anchor, (cx, s0, s1)) in [(100.0, 0.9, 0.1), (200.0, 0.2, 0.24), (300.0, 0.1, 0.6)]
            .into_iter()
            .enumerate()
        {
            set(&mut raw, 0, anchor, cx);
            set(&mut raw, 1, anchor, 50.0);
            set(&mut raw, 2, anchor, 20.0);
            set(&mut raw, 3, anchor, 40.0);
            set(&mut raw, 4, anchor, s0);
            set(&mut raw, 5, anchor, s1);
        }
        let d = decode_yolov8(&raw, 2, a, 0.25);
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].class_id, d[0].bbox),
            (0, BBox::new(90.0, 30.0, 110.0, 70.0))
        );
        assert_eq!(d[1].class_id, 1);
        assert!(decode_yolov8(&raw[..5], 2, a, 0.25).is_empty());
    }

    fn arb_dets() -> impl Strategy<Value = Vec<Detection>> {
        proptest::collection::vec(
            (
                0usize..3,
                0f32..1.0,
                0f32..200.0,
                0f32..200.0,
                1f32..60.0,
                1f32..60.0,
            )
                .prop_map(|(c, s, x, y, w, h)| Detection {
                    class_id: c,
                    score: s,
                    bbox: BBox::new(x, y, x + w, y + h),
                }),
            0..40,
        )
    }

    proptest! {
        #[test]
        fn nms_invariants(dets in arb_dets(), thr in 0.1f32..0.9) {
            let out = nms_per_class(dets.clone(), thr);
            // No two kept boxes of one class overlap above the threshold.
            for (i, a) in out.iter().enumerate() {
                for b in &out[i + 1..] {
                    prop_assert!(a.class_id != b.class_id || a.bbox.iou(&b.bbox) <= thr);
                }
            }
            // Every dropped box is covered by a kept box of its class with a higher or equal score.
            for d in &dets {
                if !out.contains(d) {
                    prop_assert!(out.iter().any(|k| k.class_id == d.class_id && k.score >= d.score && k.bbox.iou(&d.bbox) > thr));
                }
            }
            // The best box of each class survives.
            if let Some(best) = dets.iter().max_by(|a, b| a.score.total_cmp(&b.score)) {
                prop_assert!(out.iter().any(|k| k.score == best.score));
            }
        }
    }
}
