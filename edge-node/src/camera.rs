//! One camera's path, top to bottom: decode -> preprocess (decode thread) -> infer ->
//! track -> events -> publish (inference thread, which owns the ONNX Runtime session).
//!
//! The decode thread runs ahead of inference through a bounded channel of
//! [`FRAME_QUEUE`] frames, so decoding and letterboxing the next frame overlap with inference
//! of this one. Overflow policy: files block the decoder (every frame is processed); live
//! streams drop the oldest queued frame, counted. Events are never dropped.
//!
//! A failure (source cannot open, stream breaks, model missing) is retried with exponential
//! backoff; after `retry.max_attempts` failures in a row a file camera gives up and reports
//! why, and a live camera is reported down and tried on at the longest backoff. A file that
//! ends short of the length its header names is a failure (cut short), not a success.
//! Nothing here can stop another camera.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{RecvTimeoutError, SyncSender, TrySendError};
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
use crate::metrics::{CameraMetrics, NodeMetrics};
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
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct CameraSummary {
    pub camera_id: String,
    pub label: String,
    pub input: String,
    pub frames_decoded: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
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
}

struct Decoded {
    frame: Frame,
    prepared: Prepared,
    decode: Duration,
    preprocess: Duration,
    ready_at: Instant,
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
        timers.decode.summary("decode"),
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

    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Decoded, SourceError>>(FRAME_QUEUE);
    let shutdown = ctx.shutdown.clone();
    let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let dropped_in_thread = dropped.clone();
    let decode_span = info_span!("decode");
    let decoder = std::thread::Builder::new()
        .name(format!("decode-{}", cam.id))
        .spawn(move || {
            let _e = decode_span.enter();
            decode_loop(
                &mut *src,
                &spec,
                &tx,
                &shutdown,
                live,
                max_frames,
                &dropped_in_thread,
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
    let mut crossing = CrossingWatch::new(&cam.raw, ctx.feed.clone(), &labels);
    let mut vehicles = match (&cam.raw.plates, plates_slot.take()) {
        (Some(pc), Some(models)) => Some(crate::vehicles::VehicleWatch::new(
            pc.clone(),
            models,
            &labels,
            &cam.raw.zones,
            ctx.registry.clone(),
            &cam.raw.evidence,
        )),
        _ => None,
    };
    let mut frame_width = 0u32;
    let mut consecutive_errors = 0u32;
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
            summary.frames_decoded += 1;
            m.frames_decoded.fetch_add(1, Ordering::Relaxed);
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
            if let Some(cw) = &mut crossing {
                let t_cross = Instant::now();
                let n_evidence = cw.evidence_time.len();
                let out = cw.on_frame(&d.frame, &visible, &dets, &ended, &mut factory);
                send_all(out, ctx, summary)?;
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
            timers
                .frame
                .record(d.ready_at.elapsed() + d.decode + d.preprocess);
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
    drop(rx);
    let _ = decoder.join();
    summary.frames_dropped += dropped.load(Ordering::Relaxed);
    m.frames_dropped
        .fetch_add(dropped.load(Ordering::Relaxed), Ordering::Relaxed);
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

fn decode_loop(
    src: &mut dyn source::FrameSource,
    spec: &crate::manifest::InputSpec,
    tx: &SyncSender<Result<Decoded, SourceError>>,
    shutdown: &AtomicBool,
    live: bool,
    max_frames: Option<u64>,
    dropped: &std::sync::atomic::AtomicU64,
) {
    let mut n = 0u64;
    // A live stream's frame that could not be queued waits here; the next frame replaces it
    // (the oldest is dropped, counted).
    let mut pending: Option<Decoded> = None;
    // Files report progress every 10 % of their duration (or of max_frames).
    let mut first_ms: Option<i64> = None;
    let mut duration: Option<i64> = None;
    let mut next_pct = 10;
    let started = Instant::now();
    while !shutdown.load(Ordering::Relaxed) && max_frames.is_none_or(|m| n < m) {
        let t0 = Instant::now();
        let frame = match src.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        let decode = t0.elapsed();
        if !live {
            let first = *first_ms.get_or_insert(frame.time_ms);
            if duration.is_none() {
                duration = src.duration_ms().filter(|d| *d > 0);
            }
            let pct = match (max_frames, duration) {
                (Some(m), _) => (n + 1) * 100 / m.max(1),
                (None, Some(d)) => ((frame.time_ms - first).max(0) * 100 / d) as u64,
                _ => 0,
            };
            if pct >= next_pct {
                let secs = started.elapsed().as_secs_f64();
                info!(
                    frames = n + 1,
                    percent = pct.min(100),
                    fps = format!("{:.1}", (n + 1) as f64 / secs.max(1e-3)),
                    "Progress"
                );
                next_pct = (pct / 10 + 1) * 10;
            }
        }
        let t1 = Instant::now();
        let prepared = letterbox(&frame.rgb, frame.width, frame.height, frame.stride(), spec);
        let d = Decoded {
            frame,
            prepared,
            decode,
            preprocess: t1.elapsed(),
            ready_at: Instant::now(),
        };
        n += 1;
        if live {
            if pending.take().is_some() {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            match tx.try_send(Ok(d)) {
                Ok(()) => {}
                Err(TrySendError::Full(Ok(d))) => pending = Some(d),
                Err(_) => return,
            }
        } else if tx.send(Ok(d)).is_err() {
            return;
        }
    }
    if let Some(d) = pending {
        let _ = tx.send(Ok(d));
    }
}
