//! One camera's path, top to bottom: decode -> preprocess (decode thread) -> infer ->
//! track -> events -> publish (inference thread, which owns the ONNX Runtime session).
//!
//! The decode thread runs ahead of inference, so decoding and letterboxing the next frame
//! overlap with inference of this one. Two policies:
//! - files (not played in real time) go through a bounded channel of [`FRAME_QUEUE`] frames
//!   that blocks the decoder: every frame is processed;
//! - live streams and files played in real time go through a one-frame mailbox: the decoder
//!   never waits, a newer frame replaces the one waiting, and inference always takes the
//!   newest. When the node's engine is shared by more cameras than it can keep up with, each
//!   camera so processes an even subset of its frames, each as fresh as it can be, and the
//!   latency stays one inference period plus the wait for the engine.
//!
//! `max_fps` drops frames before any work to an even subset of that rate. Every decoded
//! frame is either processed or dropped for a [`DropReason`], counted per camera (summary,
//! `/metrics`, health). Events are never dropped.
//!
//! A failure (source cannot open, stream breaks, model missing) is retried with exponential
//! backoff; after `retry.max_attempts` failures in a row a file camera gives up and reports
//! why, and a live camera is reported down and tried on at the longest backoff. A file that
//! ends short of the length its header names is a failure (cut short), not a success.
//! Nothing here can stop another camera.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::{DeviceId, Event};
use serde::Serialize;
use tracing::{debug, error, info, info_span, warn};

use crate::config::ValidCamera;
pub use crate::crossing::Outgoing;
use crate::crossing::{CrossingSummary, CrossingWatch};
use crate::detect::{DetectError, Detection};
use crate::engine::DetectorEngine;
use crate::events::EventFactory;
use crate::frame::Frame;
use crate::metrics::{CameraMetrics, DropReason, NodeMetrics};
use crate::preprocess::{letterbox, Prepared};
use crate::signal::FeedState;
use crate::source::{self, SourceError};
use crate::stats::{StageSummary, StageTimer};
use crate::track::Track;
use crate::track::{TrackEvent, Tracker};
use std::collections::HashSet;

/// Frames queued between the decode thread and the inference thread.
pub const FRAME_QUEUE: usize = 2;
/// Consecutive inference failures after which the camera restarts.
const MAX_CONSECUTIVE_INFER_ERRORS: u32 = 10;

/// Where events and evidence go. The node's publisher implements it; tests collect them in
/// memory.
pub trait EventSink: Send + Sync {
    /// Hands an event or image on, waiting if the sink is full. Err only when it is closed.
    fn send(&self, out: Outgoing) -> Result<(), String>;
}

impl EventSink for tokio::sync::mpsc::Sender<Outgoing> {
    fn send(&self, out: Outgoing) -> Result<(), String> {
        self.blocking_send(out)
            .map_err(|_| "the publisher has stopped".to_string())
    }
}

/// Collects events and evidence in memory (tests, benches).
#[derive(Default)]
pub struct MemorySink(pub Mutex<Vec<Outgoing>>);

impl MemorySink {
    pub fn events(&self) -> Vec<Event> {
        self.0
            .lock()
            .expect("not poisoned")
            .iter()
            .filter_map(|o| match o {
                Outgoing::Event(e) => Some((**e).clone()),
                _ => None,
            })
            .collect()
    }
}

impl EventSink for MemorySink {
    fn send(&self, out: Outgoing) -> Result<(), String> {
        self.0.lock().expect("not poisoned").push(out);
        Ok(())
    }
}

/// What every camera of a node shares.
#[derive(Clone)]
pub struct CameraContext {
    pub node_id: DeviceId,
    pub checkpoint_id: DeviceId,
    pub models_dir: PathBuf,
    pub ort_library: PathBuf,
    /// ONNX Runtime threads of each model's session (one session per model for the node).
    pub intra_threads: usize,
    /// The node's inference engines: one per model, shared by the cameras.
    pub engines: Arc<crate::engine::Engines>,
    pub sink: Arc<dyn EventSink>,
    pub shutdown: Arc<AtomicBool>,
    /// Latest signal-controller readings, shared by the cameras of the node.
    pub feed: FeedState,
    /// Prometheus metrics of the node.
    pub metrics: Arc<NodeMetrics>,
    /// The vehicle registry and watch list in force.
    pub registry: Arc<crate::registry::RegistryStore>,
    /// Each camera's latest frame, for the live view.
    pub live: Arc<crate::live::LiveFrames>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct CameraSummary {
    pub camera_id: String,
    pub label: String,
    pub input: String,
    pub frames_decoded: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
    /// Frames dropped per reason (behind, budget, inference_error, stopped).
    pub frames_dropped_by_reason: BTreeMap<String, u64>,
    /// Wall time from start to end, model loading and retries included.
    pub processing_secs: f64,
    /// Wall time with a source open (what the FPS is measured over).
    pub streaming_secs: f64,
    /// Frames processed per second of streaming time.
    pub fps: f64,
    pub detections_per_class: BTreeMap<String, u64>,
    pub confirmed_tracks_per_class: BTreeMap<String, u64>,
    pub events_published: u64,
    pub inference_errors: u64,
    pub attempts: u32,
    /// Pedestrian crossing: rule counters, signal coverage, evidence pictures.
    pub crossing: Option<CrossingSummary>,
    /// Vehicle passages: passes, plates read, anomalies.
    pub plates: Option<crate::vehicles::PlatesSummary>,
    pub failed: bool,
    pub error: Option<String>,
    pub stages: Vec<StageSummary>,
}

/// A stage's timing: kept for the end-of-run summary and exported as a histogram.
struct Stage {
    timer: StageTimer,
    hist: Arc<protocol::metrics::Histogram>,
}

impl Stage {
    fn record(&mut self, d: Duration) {
        self.timer.record(d);
        self.hist.observe(d);
    }
    fn summary(&self, name: &str) -> StageSummary {
        self.timer.summary(name)
    }
}

struct Timers {
    decode: Stage,
    preprocess: Stage,
    infer: Stage,
    postprocess: Stage,
    track: Stage,
    publish: Stage,
    crossing: Stage,
    evidence: Stage,
    plate_read: Stage,
    plate_scan: Stage,
    plates: Stage,
    frame: Stage,
}

impl Timers {
    fn new(m: &CameraMetrics) -> Timers {
        let st = |name: &str| Stage {
            timer: StageTimer::default(),
            hist: m.stage(name),
        };
        Timers {
            decode: st("decode"),
            preprocess: st("preprocess"),
            infer: st("infer"),
            postprocess: st("postprocess"),
            track: st("track"),
            publish: st("publish"),
            crossing: st("crossing"),
            evidence: st("evidence"),
            plate_read: st("plate_read"),
            plate_scan: st("plate_scan"),
            plates: st("plates"),
            frame: st("frame"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum CameraError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Detector(#[from] DetectError),
    #[error(
        "class '{class}' in `classes` is not a label of model '{model}'; labels include: {known}"
    )]
    UnknownClass {
        class: String,
        model: String,
        known: String,
    },
    #[error("{0} inferences in a row failed, last: {1}")]
    Inference(u32, String),
    #[error("{0}")]
    Sink(String),
    #[error("{0}")]
    Evidence(String),
}

struct Decoded {
    frame: Frame,
    prepared: Prepared,
    /// Time in `next_frame`: decoding a file's frame, or waiting for a live one.
    decode: Duration,
    preprocess: Duration,
    /// When GStreamer handed the frame over: the frame latency counts from here (a live
    /// camera's wait for its next frame is not latency).
    arrived: Instant,
    /// The source's frame interval (median of the latest gaps between decoded frames), ms.
    interval_ms: f32,
}

type Item = Result<Decoded, SourceError>;

/// A run's frame counts, kept for the summary and added to the camera's metrics as they
/// happen.
struct FrameCounts {
    metrics: Arc<CameraMetrics>,
    decoded: std::sync::atomic::AtomicU64,
    dropped: [std::sync::atomic::AtomicU64; 4],
}

impl FrameCounts {
    fn new(metrics: Arc<CameraMetrics>) -> FrameCounts {
        FrameCounts {
            metrics,
            decoded: Default::default(),
            dropped: Default::default(),
        }
    }
    fn decoded(&self) {
        self.decoded.fetch_add(1, Ordering::Relaxed);
        self.metrics.frames_decoded.fetch_add(1, Ordering::Relaxed);
    }
    fn dropped(&self, reason: DropReason) {
        self.dropped[reason as usize].fetch_add(1, Ordering::Relaxed);
        self.metrics.dropped(reason, 1);
    }
    /// Adds this run's counts to the camera's summary.
    fn add_to(&self, summary: &mut CameraSummary) {
        summary.frames_decoded += self.decoded.load(Ordering::Relaxed);
        for r in DropReason::ALL {
            let n = self.dropped[r as usize].load(Ordering::Relaxed);
            summary.frames_dropped += n;
            if n > 0 {
                *summary
                    .frames_dropped_by_reason
                    .entry(r.as_str().to_string())
                    .or_default() += n;
            }
        }
    }
}

/// The newest decoded frame waiting for inference (live and paced sources): putting a frame
/// replaces the one waiting.
#[derive(Default)]
struct Mailbox {
    state: Mutex<MailboxState>,
    ready: std::sync::Condvar,
}

/// What became of a frame put in the mailbox.
enum Put {
    Left,
    /// Left, replacing this one.
    Replaced(Item),
    /// Not left: the inference side has gone.
    Gone(Item),
}

#[derive(Default)]
struct MailboxState {
    item: Option<Item>,
    /// The decoder finished (nothing more will come).
    closed: bool,
    /// The inference side left (the decoder should stop).
    gone: bool,
}

impl Mailbox {
    /// Leaves `item` for inference.
    fn put(&self, item: Item) -> Put {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.gone {
            return Put::Gone(item);
        }
        let old = st.item.replace(item);
        self.ready.notify_one();
        match old {
            Some(old) => Put::Replaced(old),
            None => Put::Left,
        }
    }
    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
        self.ready.notify_all();
    }
    /// Takes the waiting frame, waiting up to `timeout` for one.
    fn take(&self, timeout: Duration) -> Result<Item, RecvTimeoutError> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (mut st, _) = self
            .ready
            .wait_timeout_while(st, timeout, |s| s.item.is_none() && !s.closed)
            .unwrap_or_else(|e| e.into_inner());
        match st.item.take() {
            Some(item) => Ok(item),
            None if st.closed => Err(RecvTimeoutError::Disconnected),
            None => Err(RecvTimeoutError::Timeout),
        }
    }
    /// The inference side leaves; returns the frame left waiting.
    fn leave(&self) -> Option<Item> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.gone = true;
        st.item.take()
    }
}

/// The decoder's end of the frame queue.
enum FrameTx {
    /// Every frame, the decoder waiting for room.
    All(SyncSender<Item>),
    /// The newest frame.
    Newest(Arc<Mailbox>),
}

/// The inference end of the frame queue.
enum FrameRx {
    All(std::sync::mpsc::Receiver<Item>),
    Newest(Arc<Mailbox>),
}

impl FrameTx {
    /// Hands a frame on; false when inference has left. A frame it replaced is counted.
    fn send(&self, item: Item, counts: &FrameCounts) -> bool {
        match self {
            FrameTx::All(tx) => match tx.send(item) {
                Ok(()) => true,
                Err(std::sync::mpsc::SendError(item)) => {
                    if item.is_ok() {
                        counts.dropped(DropReason::Stopped);
                    }
                    false
                }
            },
            FrameTx::Newest(mb) => match mb.put(item) {
                Put::Replaced(Ok(_)) => {
                    counts.dropped(DropReason::Behind);
                    true
                }
                Put::Left | Put::Replaced(Err(_)) => true,
                Put::Gone(item) => {
                    if item.is_ok() {
                        counts.dropped(DropReason::Stopped);
                    }
                    false
                }
            },
        }
    }
}

impl Drop for FrameTx {
    fn drop(&mut self) {
        if let FrameTx::Newest(mb) = self {
            mb.close();
        }
    }
}

impl FrameRx {
    fn recv_timeout(&self, timeout: Duration) -> Result<Item, RecvTimeoutError> {
        match self {
            FrameRx::All(rx) => rx.recv_timeout(timeout),
            FrameRx::Newest(mb) => mb.take(timeout),
        }
    }
    /// Stops taking frames; returns how many decoded frames were left unprocessed.
    fn leave(self) -> u64 {
        match self {
            FrameRx::All(rx) => {
                let n = rx.try_iter().filter(|i| i.is_ok()).count() as u64;
                drop(rx);
                n
            }
            FrameRx::Newest(mb) => mb.leave().is_some_and(|i| i.is_ok()) as u64,
        }
    }
}

fn frame_queue(paced: bool) -> (FrameTx, FrameRx) {
    if paced {
        let mb = Arc::new(Mailbox::default());
        (FrameTx::Newest(mb.clone()), FrameRx::Newest(mb))
    } else {
        let (tx, rx) = std::sync::mpsc::sync_channel(FRAME_QUEUE);
        (FrameTx::All(tx), FrameRx::All(rx))
    }
}

/// Runs one camera until its source ends, it gives up, or shutdown is raised.
pub fn run_camera(cam: ValidCamera, ctx: CameraContext) -> CameraSummary {
    let span =
        info_span!("camera", checkpoint = %ctx.checkpoint_id, camera = %cam.id, name = %cam.label);
    let _enter = span.enter();
    let mut summary = CameraSummary {
        camera_id: cam.id.to_string(),
        label: cam.label.clone(),
        input: cam.raw.source.describe(),
        ..Default::default()
    };
    let metrics = ctx.metrics.camera(cam.id.as_str());
    let mut timers = Timers::new(&metrics);
    let mut detector: Option<Arc<DetectorEngine>> = None;
    let mut plate_models: Option<crate::engine::SharedPlates> = None;
    let mut failures = 0u32;
    let mut backoff = Duration::from_millis(cam.retry.initial_backoff_ms);
    let started = Instant::now();
    loop {
        if ctx.shutdown.load(Ordering::Relaxed) {
            break;
        }
        summary.attempts += 1;
        let frames_before = summary.frames_processed;
        let result = run_once(
            &cam,
            &ctx,
            &mut detector,
            &mut plate_models,
            &mut summary,
            &mut timers,
        );
        let progressed = summary.frames_processed > frames_before;
        if progressed {
            if failures > 0 {
                info!(after_failures = failures, "Camera back");
            }
            failures = 0;
            backoff = Duration::from_millis(cam.retry.initial_backoff_ms);
        }
        match result {
            Ok(()) => {
                summary.error = None;
                break;
            }
            Err(e) => {
                summary.error = Some(e.to_string());
                failures += 1;
                metrics
                    .failures_in_a_row
                    .store(failures as u64, Ordering::Relaxed);
                let live = cam.raw.source.is_live();
                let exhausted = cam.retry.max_attempts.is_some_and(|m| failures >= m);
                // A file that broke part-way is not replayed: that would publish its events
                // twice. A live camera is never given up: a dead camera comes back (power,
                // network); after `max_attempts` it is reported down and tried at the
                // longest backoff.
                let give_up = !live && (exhausted || progressed);
                if give_up || matches!(e, CameraError::Sink(_)) {
                    error!(error = %e, attempts = summary.attempts, "Camera stopped; fix the input and restart the node");
                    summary.failed = true;
                    break;
                }
                if live && exhausted {
                    backoff = Duration::from_millis(cam.retry.max_backoff_ms);
                    if cam.retry.max_attempts == Some(failures) {
                        error!(error = %e, failures, retry_every_ms = cam.retry.max_backoff_ms, "Camera down; still trying it (a live camera is never given up)");
                    }
                }
                warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, attempt = summary.attempts, "Camera failed; retrying");
                sleep_unless_shutdown(backoff, &ctx.shutdown);
                backoff = (backoff * 2).min(Duration::from_millis(cam.retry.max_backoff_ms));
            }
        }
    }
    summary.processing_secs = started.elapsed().as_secs_f64();
    summary.fps = if summary.streaming_secs > 0.0 {
        summary.frames_processed as f64 / summary.streaming_secs
    } else {
        0.0
    };
    summary.stages = vec![
        timers
            .decode
            .summary("decode (live: incl. the wait for a frame)"),
        timers.preprocess.summary("preprocess"),
        timers.infer.summary("infer"),
        timers.postprocess.summary("postprocess"),
        timers.track.summary("track"),
        timers.crossing.summary("crossing rule"),
        timers.evidence.summary("evidence (per violation)"),
        timers
            .plate_read
            .summary("plate read (per plate read: detect + rectify + read)"),
        timers.plate_scan.summary("plate scan (per scan)"),
        timers.plates.summary("plates (per frame)"),
        timers.publish.summary("publish"),
        timers.frame.summary("frame (decoded -> published)"),
    ];
    info!(
        frames = summary.frames_processed,
        fps = format!("{:.1}", summary.fps),
        events = summary.events_published,
        "Camera finished"
    );
    summary
}

fn sleep_unless_shutdown(d: Duration, shutdown: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
    }
}

fn run_once(
    cam: &ValidCamera,
    ctx: &CameraContext,
    detector_slot: &mut Option<Arc<DetectorEngine>>,
    plates_slot: &mut Option<crate::engine::SharedPlates>,
    summary: &mut CameraSummary,
    timers: &mut Timers,
) -> Result<(), CameraError> {
    let m = ctx.metrics.camera(cam.id.as_str());
    // The banners' font, for a camera that draws evidence (loaded once per process; checked
    // when the configuration loaded). A camera that only tracks needs none.
    let font = if cam.raw.red_light.is_some() || cam.raw.plates.is_some() {
        Some(
            cam.raw
                .evidence
                .load_font()
                .map_err(CameraError::Evidence)?,
        )
    } else {
        None
    };
    if detector_slot.as_ref().is_none_or(|d| !d.alive()) {
        *detector_slot = Some(ctx.engines.detector(
            &cam.raw.detector,
            &ctx.models_dir,
            &ctx.ort_library,
            ctx.intra_threads,
        )?);
    }
    if let (Some(pc), None) = (&cam.raw.plates, &plates_slot) {
        *plates_slot = Some(ctx.engines.plates(
            &pc.detector,
            &pc.readers,
            &ctx.models_dir,
            &ctx.ort_library,
            ctx.intra_threads,
        )?);
    }
    let detector = detector_slot.clone().expect("just loaded");
    let labels = detector.labels().to_vec();
    let mut tracked = vec![false; labels.len()];
    for class in &cam.raw.classes {
        match detector.class_id(class) {
            Some(i) => tracked[i] = true,
            None => {
                return Err(CameraError::UnknownClass {
                    class: class.clone(),
                    model: detector.manifest().name.clone(),
                    known: labels
                        .iter()
                        .take(12)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                        + ", ...",
                })
            }
        }
    }
    let spec = detector.manifest().input.clone();
    let streaming_since = Instant::now();
    let mut src = source::open(
        &cam.raw.source,
        Duration::from_secs(cam.raw.stall_timeout_secs),
    )?;
    let live = cam.raw.source.is_live();
    let max_frames = cam.raw.max_frames;
    let max_fps = cam.raw.max_fps;

    let (tx, rx) = frame_queue(cam.raw.source.is_paced());
    let shutdown = ctx.shutdown.clone();
    let counts = Arc::new(FrameCounts::new(m.clone()));
    let counts_in_thread = counts.clone();
    let decode_span = info_span!("decode");
    let decoder = std::thread::Builder::new()
        .name(format!("decode-{}", cam.id))
        .spawn(move || {
            let _e = decode_span.enter();
            decode_loop(
                &mut *src,
                &spec,
                tx,
                &shutdown,
                live,
                max_frames,
                max_fps,
                &counts_in_thread,
            )
        })
        .expect("spawning a thread");

    let mut factory = EventFactory::new(
        ctx.node_id.clone(),
        ctx.checkpoint_id.clone(),
        cam.id.clone(),
        cam.raw.lane,
        labels.clone(),
    );
    // A vehicle's class may flip between car, bus and truck from frame to frame: one group.
    let groups: Vec<usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            if ["car", "bus", "truck"].contains(&l.as_str()) {
                usize::MAX / 2
            } else {
                i
            }
        })
        .collect();
    let mut tracker = Tracker::new(cam.tracker.clone()).with_class_groups(groups);
    let mut crossing = font
        .clone()
        .and_then(|f| CrossingWatch::new(&cam.raw, ctx.feed.clone(), &labels, f));
    // The violations' clips are encoded off this thread.
    let clips = crossing
        .as_ref()
        .filter(|_| cam.raw.evidence.clip.enabled)
        .map(|_| {
            crate::clip::ClipMaker::spawn(
                cam.raw.evidence.clip.clone(),
                ctx.sink.clone(),
                &cam.label,
            )
        });
    let live = ctx.live.slot(cam.id.as_str());
    live.set_zones(&cam.raw.zones);
    let mut vehicles = match (&cam.raw.plates, plates_slot.take(), font) {
        (Some(pc), Some(models), Some(font)) => Some(crate::vehicles::VehicleWatch::new(
            pc.clone(),
            models,
            &labels,
            &cam.raw.zones,
            ctx.registry.clone(),
            &cam.raw.evidence,
            font,
        )),
        _ => None,
    };
    let mut frame_width = 0u32;
    let mut consecutive_errors = 0u32;
    let timed_by_clock = cam.raw.source.timed_by_clock();
    let result = (|| -> Result<(), CameraError> {
        loop {
            let item = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(item) => item,
                Err(RecvTimeoutError::Timeout) => {
                    if ctx.shutdown.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return Ok(()), // end of source
            };
            let d = item?;
            // The clock's state when this frame was taken, on every event it gives.
            if timed_by_clock {
                factory.clock = ctx.metrics.clock.latest();
            }
            timers.decode.record(d.decode);
            timers.preprocess.record(d.preprocess);
            let (dets, t) = match detector.detect(d.prepared) {
                Ok(x) => {
                    consecutive_errors = 0;
                    x
                }
                Err(e) => {
                    summary.inference_errors += 1;
                    m.inference_errors.fetch_add(1, Ordering::Relaxed);
                    counts.dropped(DropReason::InferenceError);
                    consecutive_errors += 1;
                    if consecutive_errors == 1 {
                        warn!(error = %e, frame = d.frame.seq, "Inference failed; frame skipped");
                    }
                    if consecutive_errors >= MAX_CONSECUTIVE_INFER_ERRORS {
                        return Err(CameraError::Inference(consecutive_errors, e.to_string()));
                    }
                    continue;
                }
            };
            timers.infer.record(t.infer);
            timers.postprocess.record(t.postprocess);
            for det in &dets {
                *summary
                    .detections_per_class
                    .entry(factory.label(det.class_id))
                    .or_default() += 1;
            }
            let t_track = Instant::now();
            let dets: Vec<Detection> = dets.into_iter().filter(|d| tracked[d.class_id]).collect();
            tracker.set_frame_interval_ms(d.interval_ms);
            let track_events = tracker.update(&dets, d.frame.time_ms);
            timers.track.record(t_track.elapsed());
            let t_pub = Instant::now();
            publish(&track_events, &mut factory, ctx, summary)?;
            timers.publish.record(t_pub.elapsed());
            // What the rules see: the tracks matched in this frame, the ones that ended.
            let ended: HashSet<u64> = track_events
                .iter()
                .filter_map(|e| match e {
                    TrackEvent::Ended(t) => Some(t.id),
                    _ => None,
                })
                .collect();
            let visible: Vec<&Track> = tracker.visible().collect();
            // The live view's latest frame: a pointer swap, nothing encoded.
            live.offer(crate::live::Snapshot {
                frame: d.frame.clone(),
                boxes: visible
                    .iter()
                    .map(|t| crate::live::LiveBox {
                        bbox: t.bbox,
                        label: labels.get(t.class_id).cloned().unwrap_or_default(),
                        track_id: t.id,
                    })
                    .collect(),
            });
            if let Some(cw) = &mut crossing {
                let t_cross = Instant::now();
                let n_evidence = cw.evidence_time.len();
                let out = cw.on_frame(&d.frame, &visible, &dets, &ended, &mut factory);
                send_all(out, ctx, summary)?;
                send_clip_jobs(cw, clips.as_ref(), ctx, summary)?;
                for t in cw.evidence_time.drain(n_evidence..) {
                    timers.evidence.record(t);
                }
                timers.crossing.record(t_cross.elapsed());
            }
            frame_width = d.frame.width;
            if let Some(vw) = &mut vehicles {
                let t_pl = Instant::now();
                let out = match vw.on_frame(&d.frame, &visible, &ended, &mut factory) {
                    Ok(out) => out,
                    Err(e) => {
                        summary.inference_errors += 1;
                        m.inference_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(error = %e, frame = d.frame.seq, "Plate reading failed; frame skipped");
                        vec![]
                    }
                };
                send_all(out, ctx, summary)?;
                for t in vw.read_times.drain(..) {
                    timers.plate_read.record(t);
                }
                for t in vw.scan_times.drain(..) {
                    timers.plate_scan.record(t);
                }
                timers.plates.record(t_pl.elapsed());
            }
            timers.frame.record(d.arrived.elapsed());
            summary.frames_processed += 1;
            m.frames_processed.fetch_add(1, Ordering::Relaxed);
            m.failures_in_a_row.store(0, Ordering::Relaxed);
            debug!(
                frame = d.frame.seq,
                time_ms = d.frame.time_ms,
                detections = dets.len(),
                decode_ms = d.decode.as_secs_f64() * 1e3,
                preprocess_ms = d.preprocess.as_secs_f64() * 1e3,
                infer_ms = t.infer.as_secs_f64() * 1e3,
                postprocess_ms = t.postprocess.as_secs_f64() * 1e3,
                "Frame processed"
            );
        }
    })();
    // Whatever happened, tracks still open end here: their end events are real, and so are
    // violations waiting for their last picture.
    let ended = tracker.finish();
    let mut flushed = publish(&ended, &mut factory, ctx, summary);
    if let Some(cw) = &mut crossing {
        let out = cw.finish(&mut factory);
        flushed = flushed.and(send_all(out, ctx, summary));
        flushed = flushed.and(send_clip_jobs(cw, clips.as_ref(), ctx, summary));
        if let Some(c) = clips {
            let counts = c.counts.clone();
            c.finish();
            let cs = &mut cw.summary;
            cs.clips += counts.made.load(Ordering::Relaxed);
            cs.clips_failed += counts.failed.load(Ordering::Relaxed);
            cs.clip_bytes += counts.bytes.load(Ordering::Relaxed);
            cs.clip_encode_ms += counts.encode_ms.load(Ordering::Relaxed);
        }
        let mut cs = cw.summary.clone();
        cs.rule = cw.counters();
        summary.crossing = Some(cs);
    }
    if let Some(mut vw) = vehicles {
        let out = vw.finish(frame_width, &mut factory);
        flushed = flushed.and(send_all(out, ctx, summary));
        let prev = summary.plates.take().unwrap_or_default();
        let mut s = vw.summary.clone();
        s.passes += prev.passes;
        s.plates_read += prev.plates_read;
        s.unread += prev.unread;
        s.parked_tracks += prev.parked_tracks;
        s.read_attempts += prev.read_attempts;
        s.reads += prev.reads;
        for (k, v) in prev.anomalies {
            *s.anomalies.entry(k).or_default() += v;
        }
        summary.plates = Some(s);
        *plates_slot = Some(vw.into_pipeline());
    }
    for _ in 0..rx.leave() {
        counts.dropped(DropReason::Stopped);
    }
    let _ = decoder.join();
    counts.add_to(summary);
    summary.streaming_secs += streaming_since.elapsed().as_secs_f64();
    result.and(flushed)
}

fn publish(
    events: &[TrackEvent],
    factory: &mut EventFactory,
    ctx: &CameraContext,
    summary: &mut CameraSummary,
) -> Result<(), CameraError> {
    for te in events {
        if let TrackEvent::Started(t) = te {
            *summary
                .confirmed_tracks_per_class
                .entry(factory.label(t.class_id))
                .or_default() += 1;
        }
        let ev = factory.object_track(te);
        ctx.sink
            .send(Outgoing::Event(Box::new(ev)))
            .map_err(CameraError::Sink)?;
        summary.events_published += 1;
        ctx.metrics
            .camera(factory.camera_id.as_str())
            .event("object_track");
    }
    Ok(())
}

/// Hands the violations waiting for a clip to the clip worker (which sends each event once
/// its clip is made); without a worker, or with its queue full, the event goes at once
/// without a clip.
fn send_clip_jobs(
    cw: &mut CrossingWatch,
    clips: Option<&crate::clip::ClipMaker>,
    ctx: &CameraContext,
    summary: &mut CameraSummary,
) -> Result<(), CameraError> {
    for job in std::mem::take(&mut cw.clip_jobs) {
        let kind = job.event.kind();
        let camera = job.camera.clone();
        let job = match clips {
            Some(c) => match c.submit(job) {
                Ok(()) => {
                    summary.events_published += 1;
                    ctx.metrics.camera(camera.as_str()).event(kind.as_str());
                    continue;
                }
                Err(job) => {
                    warn!(event = %job.event.event_id, "Clip worker behind; the violation goes without its clip");
                    cw.summary.clips_skipped += 1;
                    job
                }
            },
            None => job,
        };
        send_all(vec![job.without_clip()], ctx, summary)?;
    }
    Ok(())
}

fn send_all(
    out: Vec<Outgoing>,
    ctx: &CameraContext,
    summary: &mut CameraSummary,
) -> Result<(), CameraError> {
    for o in out {
        if let Outgoing::Event(e) = &o {
            summary.events_published += 1;
            ctx.metrics
                .camera(e.camera_id.as_str())
                .event(e.kind().as_str());
        }
        ctx.sink.send(o).map_err(CameraError::Sink)?;
    }
    Ok(())
}

/// Gaps between decoded frames kept to estimate the source's frame interval.
const INTERVAL_WINDOW: usize = 15;

#[allow(clippy::too_many_arguments)]
fn decode_loop(
    src: &mut dyn source::FrameSource,
    spec: &crate::manifest::InputSpec,
    tx: FrameTx,
    shutdown: &AtomicBool,
    live: bool,
    max_frames: Option<u64>,
    max_fps: Option<f64>,
    counts: &FrameCounts,
) {
    let mut n = 0u64;
    // Files report progress every 10 % of their duration (or of max_frames).
    let mut first_ms: Option<i64> = None;
    let mut duration: Option<i64> = None;
    let mut next_pct = 10;
    let started = Instant::now();
    let mut gaps: std::collections::VecDeque<i64> = Default::default();
    let mut last_ms: Option<i64> = None;
    let mut budget = max_fps.map(FrameBudget::new);
    while !shutdown.load(Ordering::Relaxed) && max_frames.is_none_or(|m| n < m) {
        let t0 = Instant::now();
        let frame = match src.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tx.send(Err(e), counts);
                return;
            }
        };
        let decode = t0.elapsed();
        let arrived = Instant::now();
        counts.decoded();
        n += 1;
        if let Some(prev) = last_ms.replace(frame.time_ms) {
            if frame.time_ms > prev {
                if gaps.len() == INTERVAL_WINDOW {
                    gaps.pop_front();
                }
                gaps.push_back(frame.time_ms - prev);
            }
        }
        let interval_ms = median_gap(&gaps);
        if !live {
            let first = *first_ms.get_or_insert(frame.time_ms);
            if duration.is_none() {
                duration = src.duration_ms().filter(|d| *d > 0);
            }
            let pct = match (max_frames, duration) {
                (Some(m), _) => n * 100 / m.max(1),
                (None, Some(d)) => ((frame.time_ms - first).max(0) * 100 / d) as u64,
                _ => 0,
            };
            if pct >= next_pct {
                let secs = started.elapsed().as_secs_f64();
                info!(
                    frames = n,
                    percent = pct.min(100),
                    fps = format!("{:.1}", n as f64 / secs.max(1e-3)),
                    "Progress"
                );
                next_pct = (pct / 10 + 1) * 10;
            }
        }
        if let Some(b) = &mut budget {
            if !b.admit(frame.time_ms, interval_ms) {
                counts.dropped(DropReason::Budget);
                continue;
            }
        }
        let t1 = Instant::now();
        let prepared = letterbox(&frame.rgb, frame.width, frame.height, frame.stride(), spec);
        let d = Decoded {
            frame,
            prepared,
            decode,
            preprocess: t1.elapsed(),
            arrived,
            interval_ms,
        };
        if !tx.send(Ok(d), counts) {
            return;
        }
    }
}

/// Median of the gaps, ms (0 while none is known: the tracker keeps its default).
fn median_gap(gaps: &std::collections::VecDeque<i64>) -> f32 {
    if gaps.is_empty() {
        return 0.0;
    }
    let mut v: Vec<i64> = gaps.iter().copied().collect();
    v.sort_unstable();
    v[v.len() / 2] as f32
}

/// `max_fps`: admits an even subset of the frames, by video time.
struct FrameBudget {
    period_ms: f64,
    /// Video time the next frame is due at.
    due_ms: Option<f64>,
}

impl FrameBudget {
    fn new(max_fps: f64) -> FrameBudget {
        FrameBudget {
            period_ms: 1000.0 / max_fps,
            due_ms: None,
        }
    }

    /// Whether the frame at `t_ms` is processed. A frame up to half a source interval early
    /// counts as on time, so that 30 FPS cut to 10 takes every third frame however the
    /// timestamps round; the schedule keeps its own pace rather than the admitted frames'.
    fn admit(&mut self, t_ms: i64, source_interval_ms: f32) -> bool {
        let t = t_ms as f64;
        let slack = source_interval_ms as f64 / 2.0;
        match self.due_ms {
            Some(due) if t + slack < due && t + self.period_ms * 4.0 >= due => false,
            Some(due) if t + slack >= due && t - due < self.period_ms => {
                self.due_ms = Some(due + self.period_ms);
                true
            }
            _ => {
                // The first frame, a gap in the stream, or a clock that went back.
                self.due_ms = Some(t + self.period_ms);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(fps_in: f64, max_fps: f64, secs: f64, jitter: bool) -> Vec<i64> {
        let mut b = FrameBudget::new(max_fps);
        let interval = 1000.0 / fps_in;
        (0..(secs * fps_in) as usize)
            .map(|i| {
                // Timestamps rounded to ms, as a source gives them (33, 67, 100, ...).
                let t = (i as f64 * interval).round() as i64;
                if jitter && i % 2 == 1 {
                    t + 3
                } else {
                    t
                }
            })
            .filter(|t| b.admit(*t, interval as f32))
            .collect()
    }

    #[test]
    fn the_budget_takes_an_even_subset_at_the_rate_asked() {
        // 30 FPS cut to 10: every third frame, 100 ms apart, however the times round.
        for jitter in [false, true] {
            let a = admitted(30.0, 10.0, 10.0, jitter);
            assert_eq!(a.len(), 100, "jitter {jitter}");
            for w in a.windows(2) {
                assert!((w[1] - w[0] - 100).abs() <= 4, "{w:?} jitter {jitter}");
            }
        }
        // 25 FPS cut to 10: 40 ms frames, 10 a second, gaps of 80 or 120 ms.
        let a = admitted(25.0, 10.0, 10.0, false);
        assert!((99..=101).contains(&a.len()), "{}", a.len());
        assert!(a.windows(2).all(|w| [80, 120].contains(&(w[1] - w[0]))));
        // Asking for more than the source gives takes every frame.
        assert_eq!(admitted(10.0, 25.0, 10.0, false).len(), 100);
        // A gap in the stream or a clock that went back starts the schedule again.
        let mut b = FrameBudget::new(10.0);
        assert!(b.admit(0, 40.0));
        assert!(!b.admit(40, 40.0));
        assert!(b.admit(5_000, 40.0));
        assert!(b.admit(1_000, 40.0));
        assert!(!b.admit(1_040, 40.0));
    }

    fn item(seq: u64) -> Item {
        Ok(Decoded {
            frame: Frame {
                seq,
                time_ms: seq as i64 * 100,
                width: 1,
                height: 1,
                rgb: Arc::new(vec![0; 3]),
            },
            prepared: Prepared {
                tensor: vec![],
                letterbox: crate::preprocess::Letterbox::new(1, 1, 1, 1),
            },
            decode: Duration::ZERO,
            preprocess: Duration::ZERO,
            arrived: Instant::now(),
            interval_ms: 100.0,
        })
    }

    fn seq(i: Item) -> u64 {
        i.map(|d| d.frame.seq).unwrap_or(u64::MAX)
    }

    #[test]
    fn a_paced_source_gives_inference_the_newest_frame_and_counts_the_rest() {
        let counts = FrameCounts::new(Arc::new(CameraMetrics::default()));
        let (tx, rx) = frame_queue(true);
        for i in 0..5 {
            assert!(tx.send(item(i), &counts));
        }
        // Five frames while inference was busy: it gets the newest, four were behind.
        assert_eq!(seq(rx.recv_timeout(Duration::from_millis(10)).unwrap()), 4);
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(RecvTimeoutError::Timeout)
        ));
        // A frame from another thread wakes the waiting side.
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let c = FrameCounts::new(Arc::new(CameraMetrics::default()));
            tx.send(item(9), &c);
            // The decoder ends: the queue closes once the last frame is taken.
        });
        assert_eq!(seq(rx.recv_timeout(Duration::from_secs(5)).unwrap()), 9);
        sender.join().unwrap();
        assert!(matches!(
            rx.recv_timeout(Duration::from_millis(10)),
            Err(RecvTimeoutError::Disconnected)
        ));
        let mut s = CameraSummary::default();
        counts.add_to(&mut s);
        assert_eq!(s.frames_dropped, 4);
        assert_eq!(s.frames_dropped_by_reason["behind"], 4);
    }

    #[test]
    fn frames_left_when_inference_stops_are_counted_stopped() {
        for paced in [false, true] {
            let counts = FrameCounts::new(Arc::new(CameraMetrics::default()));
            let (tx, rx) = frame_queue(paced);
            assert!(tx.send(item(0), &counts));
            assert_eq!(rx.leave(), 1, "paced {paced}");
            // The decoder learns that inference left; the frame it holds is counted.
            assert!(!tx.send(item(1), &counts), "paced {paced}");
            assert_eq!(counts.metrics.dropped_for(DropReason::Stopped), 1);
        }
    }
}
