//! The node: every camera on its own threads, one zenoh session, one publisher. Threads,
//! tasks, channels and shutdown live here and nowhere else.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use protocol::keys;
use serde::Serialize;
use tracing::{info, warn};

use crate::camera::{run_camera, CameraContext, CameraSummary};
use crate::config::ValidConfig;
use crate::publish::{
    open_session, run_publisher, subscribe_signal_feed, wait_for_aggregator, PublishError,
};

/// Events buffered between the cameras and the publisher.
const EVENT_QUEUE: usize = 1024;
/// How often the node publishes its health report.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize)]
pub struct NodeSummary {
    pub node_id: String,
    pub checkpoint_id: String,
    pub aggregator_seen: bool,
    /// Where the metrics endpoint listened, if any.
    pub metrics_addr: Option<String>,
    pub events_published: u64,
    pub evidence_published: u64,
    pub events_failed: u64,
    /// The outbox: where it is, items acknowledged, published again, refused by the
    /// aggregator, dropped by its limits, and left for the next start.
    pub outbox: String,
    pub outbox_acked: u64,
    pub outbox_replayed: u64,
    pub outbox_rejected: u64,
    pub outbox_dropped: u64,
    pub outbox_left: u64,
    /// Writes the outbox's disk refused, and how long events waited for it.
    pub outbox_write_failures: u64,
    pub outbox_blocked_ms: u64,
    pub cameras: Vec<CameraSummary>,
    /// The ONNX Runtime execution provider each model loaded on.
    pub execution_providers: std::collections::BTreeMap<String, String>,
    /// The node's clock at the end of the run.
    pub clock: Option<protocol::health::ClockStatus>,
}

impl NodeSummary {
    pub fn any_camera_failed(&self) -> bool {
        self.cameras.iter().any(|c| c.failed)
    }
}

/// Runs the node until every camera has finished (files end; live streams run until
/// `shutdown` is raised).
///
/// With `config_file`, the file is watched and a changed, valid one applied live (see
/// [`crate::reload`]).
pub async fn run(
    cfg: ValidConfig,
    shutdown: Arc<AtomicBool>,
    config_file: Option<std::path::PathBuf>,
) -> Result<NodeSummary, PublishError> {
    let session = open_session(&cfg.raw.zenoh).await?;
    let wait = Duration::from_secs(cfg.raw.runtime.wait_for_aggregator_secs);
    let aggregator_seen = wait.is_zero() || wait_for_aggregator(&session, wait).await;
    if !aggregator_seen {
        warn!(
            waited_secs = wait.as_secs(),
            "No aggregator reachable; publishing anyway, events sent before one appears are lost"
        );
    }
    let _alive = session
        .liveliness()
        .declare_token(keys::alive(&cfg.checkpoint_id))
        .await
        .map_err(|e| PublishError::Open(e.to_string()))?;
    let metrics = Arc::new(crate::metrics::NodeMetrics::default());
    metrics.clock.start(cfg.raw.clock.clone());
    let mut metrics_addr = None;
    if let Some(listen) = &cfg.raw.metrics.listen {
        let addr: std::net::SocketAddr = listen.parse().expect("validated");
        match crate::metrics::serve(addr, metrics.clone()).await {
            Ok(a) => {
                info!(metrics = %a, "Serving Prometheus metrics at /metrics");
                metrics_addr = Some(a.to_string());
            }
            Err(e) => {
                warn!(listen = %addr, error = %e, "Metrics endpoint not served; pick another metrics.listen")
            }
        }
    }
    let registry = Arc::new(match &cfg.raw.registry {
        Some(rc) => crate::registry::RegistryStore::open(rc, cfg.node_id.as_str())?,
        None => crate::registry::RegistryStore::empty(),
    });
    let _watchlist = match &cfg.raw.registry {
        Some(rc) if rc.follow_updates => Some(
            crate::publish::follow_watchlist(&session, &cfg.checkpoint_id, registry.clone())
                .await?,
        ),
        _ => None,
    };
    let feed = crate::signal::FeedState::default();
    let _feed_sub = subscribe_signal_feed(&session, &cfg.checkpoint_id, feed.clone()).await?;
    let outbox_path = outbox_path(&cfg);
    let outbox = crate::outbox::Outbox::open(&outbox_path)?;
    let outbox = Arc::new(crate::publish::OutboxState::new(
        outbox,
        cfg.raw.outbox.clone(),
    ));
    *metrics.outbox.lock().expect("not poisoned") = Some(outbox.clone());
    let county = &cfg.checkpoint_id.as_str()[..6];
    let scopes = if cfg.raw.outbox.ack_scopes.is_empty() {
        vec![county.to_string(), "all".to_string()]
    } else {
        cfg.raw.outbox.ack_scopes.clone()
    };
    let _acks =
        crate::publish::follow_acks(&session, &cfg.checkpoint_id, outbox.clone(), scopes).await?;
    let _replay = crate::publish::replay_on_aggregator(&session, outbox.clone()).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let publisher = tokio::spawn(run_publisher(session.clone(), rx, outbox.clone()));
    // The cameras running now (id, label), for the health reports.
    let current: Arc<std::sync::Mutex<Vec<(String, String)>>> = Default::default();
    let health = tokio::spawn(publish_health(
        session.clone(),
        cfg.clone(),
        current.clone(),
        metrics.clone(),
        outbox.clone(),
    ));
    // The live view: the aggregators ask, the node answers with the latest frame.
    let live = Arc::new(crate::live::LiveFrames::default());
    let font = cfg
        .cameras
        .iter()
        .find_map(|c| c.raw.evidence.load_font().ok());
    let live_queryable = crate::live::serve(&session, &cfg.checkpoint_id, live.clone(), font)
        .await
        .map_err(|e| PublishError::Open(e.to_string()))?;
    // Zones drawn on the dashboard: the node saves them in its config file.
    let zones_queryable = crate::zone_edit::serve(
        &session,
        &cfg.checkpoint_id,
        live.clone(),
        config_file.clone(),
    )
    .await
    .map_err(|e| PublishError::Open(e.to_string()))?;
    let ctx = CameraContext {
        node_id: cfg.node_id.clone(),
        checkpoint_id: cfg.checkpoint_id.clone(),
        models_dir: cfg.raw.runtime.models_dir(),
        ort_library: cfg.raw.runtime.onnxruntime_library(),
        intra_threads: cfg.raw.runtime.intra_threads,
        engines: Default::default(),
        sink: Arc::new(tx),
        shutdown: shutdown.clone(),
        feed,
        metrics: metrics.clone(),
        registry,
        live: live.clone(),
    };
    info!(cameras = cfg.cameras.len(), node = %cfg.node_id, checkpoint = %cfg.checkpoint_id, "Node started");
    let watcher = match &config_file {
        Some(p) => std::fs::read_to_string(p)
            .ok()
            .map(|text| crate::reload::Watcher::new(p.clone(), text)),
        None => None,
    };
    let clock = metrics.clock.clone();
    let cameras = supervise(
        cfg.cameras.clone(),
        ctx,
        shutdown,
        watcher,
        current,
        metrics,
    )
    .await;
    let stats = publisher.await.expect("publisher task");
    health.abort();
    live_queryable.abort();
    zones_queryable.abort();
    // Let zenoh hand the last puts to the transport before the session closes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = session.close().await;
    Ok(NodeSummary {
        node_id: cfg.node_id.to_string(),
        checkpoint_id: cfg.checkpoint_id.to_string(),
        aggregator_seen,
        metrics_addr,
        events_published: stats.published,
        evidence_published: stats.evidence_published,
        events_failed: stats.failed,
        outbox: outbox_path.display().to_string(),
        outbox_acked: stats.acked,
        outbox_replayed: stats.replayed,
        outbox_rejected: stats.rejected,
        outbox_dropped: stats.dropped_evidence
            + stats.dropped_events
            + stats.expired
            + stats.lost_unwritable,
        outbox_write_failures: stats.write_failures,
        outbox_blocked_ms: stats.blocked_ms,
        outbox_left: stats.left,
        cameras,
        execution_providers: crate::detect::loaded_providers()
            .into_iter()
            .map(|(m, p)| (m, p.to_string()))
            .collect(),
        clock: clock.latest(),
    })
}

/// One camera's thread and its own stop flag.
struct RunningCamera {
    id: String,
    label: String,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<CameraSummary>,
}

fn spawn_camera(cam: crate::config::ValidCamera, ctx: &CameraContext) -> RunningCamera {
    let stop = Arc::new(AtomicBool::new(false));
    let mut ctx = ctx.clone();
    ctx.shutdown = stop.clone();
    let (id, label) = (cam.id.to_string(), cam.label.clone());
    let handle = std::thread::Builder::new()
        .name(format!("camera-{}", cam.id))
        .spawn(move || run_camera(cam, ctx))
        .expect("spawning a thread");
    RunningCamera {
        id,
        label,
        stop,
        handle,
    }
}

/// Runs the cameras until every one has finished: starts them, passes the node's shutdown
/// on to each, and applies config changes (cameras added, removed, restarted with new
/// settings) when the file is watched. Returns every camera's summary, in the order the
/// cameras were first configured.
async fn supervise(
    initial: Vec<crate::config::ValidCamera>,
    ctx: CameraContext,
    shutdown: Arc<AtomicBool>,
    mut watcher: Option<crate::reload::Watcher>,
    current: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    metrics: Arc<crate::metrics::NodeMetrics>,
) -> Vec<CameraSummary> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut order: Vec<String> = initial.iter().map(|c| c.id.to_string()).collect();
    let mut running: Vec<RunningCamera> =
        initial.into_iter().map(|c| spawn_camera(c, &ctx)).collect();
    // Cameras to start once their previous instance has stopped.
    let mut waiting: Vec<crate::config::ValidCamera> = Vec::new();
    let mut done: Vec<CameraSummary> = Vec::new();
    loop {
        *current.lock().expect("not poisoned") = running
            .iter()
            .map(|r| (r.id.clone(), r.label.clone()))
            .collect();
        let stopping = shutdown.load(Relaxed);
        if stopping {
            waiting.clear();
            for r in &running {
                r.stop.store(true, Relaxed);
            }
        }
        let (finished, still): (Vec<_>, Vec<_>) =
            running.into_iter().partition(|r| r.handle.is_finished());
        running = still;
        for r in finished {
            done.push(r.handle.join().unwrap_or_else(|_| CameraSummary {
                camera_id: r.id.clone(),
                label: r.label.clone(),
                failed: true,
                error: Some("camera thread panicked".into()),
                ..Default::default()
            }));
        }
        let (ready, later): (Vec<_>, Vec<_>) = waiting
            .into_iter()
            .partition(|c| !running.iter().any(|r| r.id == c.id.as_str()));
        waiting = later;
        for cam in ready {
            info!(camera = %cam.id, label = %cam.label, "Camera starting with its new settings");
            running.push(spawn_camera(cam, &ctx));
        }
        if running.is_empty() && waiting.is_empty() {
            break;
        }
        if let (Some(w), false) = (watcher.as_mut(), stopping) {
            match w.poll() {
                Some(Ok(plan)) => {
                    info!(change = %plan.describe(), "Config changed; applying it");
                    metrics.config_reloads_applied.fetch_add(1, Relaxed);
                    let stop: Vec<String> = plan
                        .removed
                        .iter()
                        .cloned()
                        .chain(plan.changed.iter().map(|c| c.id.to_string()))
                        .collect();
                    for id in &stop {
                        if let Some(r) = running.iter().find(|r| &r.id == id) {
                            r.stop.store(true, Relaxed);
                        }
                        waiting.retain(|c| c.id.as_str() != id.as_str());
                    }
                    for cam in plan.changed.into_iter().chain(plan.added) {
                        if !order.contains(&cam.id.to_string()) {
                            order.push(cam.id.to_string());
                        }
                        waiting.push(cam);
                    }
                }
                Some(Err(e)) => {
                    metrics.config_reloads_rejected.fetch_add(1, Relaxed);
                    warn!(error = %e, "New config refused; the running one stays");
                }
                None => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(ctx); // the cameras held the only other senders
    done.sort_by_key(|s| {
        order
            .iter()
            .position(|id| *id == s.camera_id)
            .unwrap_or(usize::MAX)
    });
    done
}

/// Publishes the node's health every [`HEALTH_INTERVAL`]: per camera frames and rate over the
/// interval, the outbox backlog. Lost reports are not resent: the next one replaces them.
async fn publish_health(
    session: zenoh::Session,
    cfg: ValidConfig,
    current: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    metrics: Arc<crate::metrics::NodeMetrics>,
    outbox: Arc<crate::publish::OutboxState>,
) {
    let key = keys::health(&cfg.checkpoint_id);
    let mut previous: std::collections::HashMap<String, (u64, std::time::Instant)> =
        Default::default();
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    loop {
        tick.tick().await;
        let now = std::time::Instant::now();
        let running = current.lock().expect("not poisoned").clone();
        let cameras = running
            .iter()
            .map(|(id, label)| {
                let m = metrics.camera(id);
                let processed = m
                    .frames_processed
                    .load(std::sync::atomic::Ordering::Relaxed);
                let (before, at) = previous
                    .insert(id.clone(), (processed, now))
                    .unwrap_or((processed, now));
                let secs = now.duration_since(at).as_secs_f64();
                protocol::health::CameraHealth {
                    id: id.clone(),
                    label: label.clone(),
                    frames_decoded: m.frames_decoded.load(std::sync::atomic::Ordering::Relaxed),
                    frames_processed: processed,
                    frames_dropped: m.dropped_total(),
                    frames_dropped_by_reason: m.dropped_by_reason(),
                    inference_errors: m
                        .inference_errors
                        .load(std::sync::atomic::Ordering::Relaxed),
                    failures_in_a_row: m
                        .failures_in_a_row
                        .load(std::sync::atomic::Ordering::Relaxed),
                    fps: if secs > 0.0 {
                        (processed - before) as f64 / secs
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        let b = *outbox.backlog.lock().expect("not poisoned");
        let report = protocol::health::NodeHealth {
            node_id: cfg.node_id.to_string(),
            checkpoint_id: cfg.checkpoint_id.to_string(),
            sent_ms: protocol::time::now_ms(),
            interval_ms: HEALTH_INTERVAL.as_millis() as u64,
            cameras,
            outbox_backlog_items: b.items,
            outbox_oldest_age_secs: b
                .oldest_ms
                .map(|t| (protocol::time::now_ms() - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
            execution_providers: crate::detect::loaded_providers()
                .into_iter()
                .map(|(m, p)| (m, p.to_string()))
                .collect(),
            clock: metrics.clock.latest(),
        };
        if let Err(e) = session.put(&key, report.encode()).await {
            tracing::debug!(error = %e, "Health report not sent");
        }
    }
}

/// The summary as a person reads it.
pub fn render_summary(s: &NodeSummary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "edge node {} at checkpoint {}\n",
        s.node_id, s.checkpoint_id
    ));
    if !s.execution_providers.is_empty() {
        out.push_str(&format!(
            "models on: {}\n",
            s.execution_providers
                .iter()
                .map(|(m, p)| format!("{m} {p}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for c in &s.cameras {
        out.push_str(&format!(
            "camera {} ({}) on {}\n",
            c.camera_id, c.label, c.input
        ));
        out.push_str(&format!(
            "  frames decoded {}, processed {}, dropped {}{}, mean {:.1} FPS over {:.1} s of video processing ({:.1} s with start-up)\n",
            c.frames_decoded,
            c.frames_processed,
            c.frames_dropped,
            if c.frames_dropped_by_reason.is_empty() {
                String::new()
            } else {
                format!(
                    " ({})",
                    c.frames_dropped_by_reason
                        .iter()
                        .map(|(r, n)| format!("{r} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            },
            c.fps,
            c.streaming_secs,
            c.processing_secs
        ));
        let fmt = |m: &std::collections::BTreeMap<String, u64>| {
            if m.is_empty() {
                "none".to_string()
            } else {
                m.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        out.push_str(&format!(
            "  detections per class: {}\n",
            fmt(&c.detections_per_class)
        ));
        out.push_str(&format!(
            "  confirmed tracks per class: {}\n",
            fmt(&c.confirmed_tracks_per_class)
        ));
        out.push_str(&format!("  events published: {}\n", c.events_published));
        if let Some(x) = &c.crossing {
            out.push_str(&format!(
                "  crossing: {} entries from a waiting area, {} red-light violations, {} in grace, {} with the signal unknown; signal unknown for {:.1} s; sources used (frames): {:?}; {} evidence pictures\n",
                x.rule.entries, x.rule.violations, x.rule.entries_in_grace, x.rule.entries_signal_unknown, x.signal_unknown_ms as f64 / 1000.0, x.frames_by_signal_source, x.evidence_pictures
            ));
        }
        if c.failed {
            out.push_str(&format!(
                "  FAILED after {} attempt(s): {}\n",
                c.attempts,
                c.error.as_deref().unwrap_or("?")
            ));
        }
        out.push_str("  stage                          mean ms    p50 ms    p99 ms\n");
        for st in &c.stages {
            if st.count > 0 {
                out.push_str(&format!(
                    "  {:<28} {:>9.2} {:>9.2} {:>9.2}\n",
                    st.stage, st.mean_ms, st.p50_ms, st.p99_ms
                ));
            }
        }
    }
    out.push_str(&format!(
        "events published over zenoh: {} (failed {})\n",
        s.events_published, s.events_failed
    ));
    out.push_str(&format!(
        "outbox {}: {} acknowledged, {} published again, {} refused, {} dropped by its limits, {} left for the next start\n",
        s.outbox, s.outbox_acked, s.outbox_replayed, s.outbox_rejected, s.outbox_dropped, s.outbox_left
    ));
    if s.outbox_write_failures > 0 {
        out.push_str(&format!(
            "outbox disk refused {} writes: events waited {:.1} s in memory for it (none published unkept)\n",
            s.outbox_write_failures,
            s.outbox_blocked_ms as f64 / 1000.0
        ));
    }
    out
}

/// The outbox file: `outbox.path`, else `outbox-NODE.db` in the registry's state folder.
pub fn outbox_path(cfg: &ValidConfig) -> std::path::PathBuf {
    cfg.raw.outbox.path.clone().unwrap_or_else(|| {
        cfg.raw
            .registry
            .as_ref()
            .map(|r| r.state_dir.clone())
            .unwrap_or_else(|| std::path::PathBuf::from(".cache/state"))
            .join(format!("outbox-{}.db", cfg.node_id))
    })
}
