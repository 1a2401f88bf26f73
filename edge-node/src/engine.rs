//! One inference engine per model per node, shared by every camera that uses it.
//!
//! Each camera used to open its own ONNX Runtime session with its own thread pool: N cameras
//! ran 2N spinning threads on a 2-core box, and the total frame rate fell as cameras were
//! added (23.5 / 15.9 / 14.9 FPS in all for 1 / 2 / 4 cameras). Now the node loads a model
//! once; one thread owns its session (with `runtime.intra_threads` threads, for the node, not
//! per camera) and runs the frames the cameras submit, in the order they come. A camera waits
//! for its frame's result before it submits the next, so with first-come-first-served every
//! camera gets one run per round: no camera can starve another.
//!
//! The plate models (plate detector and readers) are shared the same way, one read or scan at
//! a time behind a lock: a camera reads plates between its own detector runs, so they rarely
//! wait on each other.
//!
//! Engines are kept by manifest (its path and text) as long as a camera holds one: a camera
//! restarted with the same model reuses the loaded session, a changed manifest loads anew,
//! and the last camera to let go closes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, Weak};

use crate::detect::{DetectError, Detection, Detector, InferTimings};
use crate::manifest::ModelManifest;
use crate::plate::PlatePipeline;
use crate::preprocess::Prepared;

type Reply = Result<(Vec<Detection>, InferTimings), DetectError>;

struct Job {
    prepared: Prepared,
    reply: mpsc::SyncSender<Reply>,
}

/// A detector model loaded once for the node; cameras call [`DetectorEngine::detect`].
pub struct DetectorEngine {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    manifest: ModelManifest,
    labels: Vec<String>,
}

impl DetectorEngine {
    fn start(detector: Detector, name: String) -> DetectorEngine {
        let manifest = detector.manifest().clone();
        let labels = detector.labels().to_vec();
        let (tx, rx) = mpsc::channel::<Job>();
        let worker = std::thread::Builder::new()
            .name(format!("infer-{name}"))
            .spawn(move || {
                let mut detector = detector;
                // Until every camera has let go (the sender is dropped).
                while let Ok(job) = rx.recv() {
                    let _ = job.reply.send(detector.detect(&job.prepared));
                }
            })
            .expect("spawning a thread");
        DetectorEngine {
            jobs: Mutex::new(Some(tx)),
            worker: Mutex::new(Some(worker)),
            manifest,
            labels,
        }
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// Whether its inference thread still runs (it ends only if the runtime panicked).
    pub fn alive(&self) -> bool {
        self.worker
            .lock()
            .expect("not poisoned")
            .as_ref()
            .is_some_and(|w| !w.is_finished())
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    pub fn class_id(&self, name: &str) -> Option<usize> {
        self.labels.iter().position(|l| l == name)
    }

    /// Runs the model on one prepared frame, after the frames other cameras submitted
    /// before it; the detections come back in frame pixels.
    pub fn detect(
        &self,
        prepared: Prepared,
    ) -> Result<(Vec<Detection>, InferTimings), DetectError> {
        let stopped = || {
            DetectError::Run(format!(
                "the inference thread of {} has stopped",
                self.manifest.name
            ))
        };
        let (reply, answer) = mpsc::sync_channel(1);
        let tx = self
            .jobs
            .lock()
            .expect("not poisoned")
            .clone()
            .ok_or_else(stopped)?;
        tx.send(Job { prepared, reply }).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
    }
}

impl Drop for DetectorEngine {
    fn drop(&mut self) {
        // Closing the queue ends the worker; the session is freed with it.
        self.jobs.lock().expect("not poisoned").take();
        if let Some(w) = self.worker.lock().expect("not poisoned").take() {
            let _ = w.join();
        }
    }
}

/// The plate models (plate detector and readers) of a node, shared by its plate cameras:
/// one read or scan at a time, each camera locking them for its call.
pub type SharedPlates = Arc<Mutex<PlatePipeline>>;

/// A model's identity: its manifest's path and text.
type ModelKey = (PathBuf, String);

fn manifest_key(path: &Path) -> ModelKey {
    (
        path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
        std::fs::read_to_string(path).unwrap_or_default(),
    )
}

/// The node's engines, by manifest: shared while some camera holds one.
#[derive(Default)]
pub struct Engines {
    detectors: Mutex<HashMap<ModelKey, Weak<DetectorEngine>>>,
    plates: Mutex<HashMap<Vec<ModelKey>, Weak<Mutex<PlatePipeline>>>>,
}

impl Engines {
    /// The engine of the detector `manifest_path` describes: the one already loaded, or a
    /// new one (its model checked against the manifest). A load that fails is not kept: the
    /// camera's next attempt tries again.
    pub fn detector(
        &self,
        manifest_path: &Path,
        models_dir: &Path,
        ort_library: &Path,
        intra_threads: usize,
    ) -> Result<Arc<DetectorEngine>, DetectError> {
        let key = manifest_key(manifest_path);
        // Held while loading, so that two cameras starting together load the model once.
        let mut map = self.detectors.lock().expect("not poisoned");
        if let Some(e) = map.get(&key).and_then(Weak::upgrade).filter(|e| e.alive()) {
            return Ok(e);
        }
        map.retain(|_, w| w.strong_count() > 0);
        let detector = Detector::load(manifest_path, models_dir, ort_library, intra_threads)?;
        let name = detector.manifest().name.clone();
        tracing::info!(model = %name, threads = intra_threads, "Detector loaded; shared by every camera that uses it");
        let engine = Arc::new(DetectorEngine::start(detector, name));
        map.insert(key, Arc::downgrade(&engine));
        Ok(engine)
    }

    /// The plate models of `detector` and `readers`: the ones already loaded, or new ones.
    pub fn plates(
        &self,
        detector: &Path,
        readers: &[PathBuf],
        models_dir: &Path,
        ort_library: &Path,
        intra_threads: usize,
    ) -> Result<SharedPlates, DetectError> {
        let key: Vec<ModelKey> = std::iter::once(detector)
            .chain(readers.iter().map(PathBuf::as_path))
            .map(manifest_key)
            .collect();
        let mut map = self.plates.lock().expect("not poisoned");
        if let Some(p) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(p);
        }
        map.retain(|_, w| w.strong_count() > 0);
        let p = Arc::new(Mutex::new(PlatePipeline::load(
            detector,
            readers,
            models_dir,
            ort_library,
            intra_threads,
        )?));
        tracing::info!(
            threads = intra_threads,
            "Plate models loaded; shared by every plate camera that uses them"
        );
        map.insert(key, Arc::downgrade(&p));
        Ok(p)
    }

    /// How many detector engines are loaded now.
    pub fn loaded(&self) -> usize {
        self.detectors
            .lock()
            .expect("not poisoned")
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }
}
