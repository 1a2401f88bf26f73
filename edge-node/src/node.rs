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
    pub cameras: Vec<CameraSummary>,
}

impl NodeSummary {
    pub fn any_camera_failed(&self) -> bool {
        self.cameras.iter().any(|c| c.failed)
    }
}

/// Runs the node until every camera has finished (files end; live streams run until
/// `shutdown` is raised).
pub async fn run(cfg: ValidConfig, shutdown: Arc<AtomicBool>) -> Result<NodeSummary, PublishError> {
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
    let outbox_path = cfg.raw.outbox.path.clone().unwrap_or_else(|| {
        cfg.raw
            .registry
            .as_ref()
            .map(|r| r.state_dir.clone())
            .unwrap_or_else(|| std::path::PathBuf::from(".cache/state"))
            .join(format!("outbox-{}.db", cfg.node_id))
    });
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
    let ctx = CameraContext {
        node_id: cfg.node_id.clone(),
        checkpoint_id: cfg.checkpoint_id.clone(),
        models_dir: cfg.raw.runtime.models_dir(),
        ort_library: cfg.raw.runtime.onnxruntime_library(),
        intra_threads: cfg.raw.runtime.intra_threads,
        sink: Arc::new(tx),
        shutdown,
        feed,
        metrics,
        registry,
    };
    info!(cameras = cfg.cameras.len(), node = %cfg.node_id, checkpoint = %cfg.checkpoint_id, "Node started");
    let handles: Vec<_> = cfg
        .cameras
        .iter()
        .cloned()
        .map(|cam| {
            let ctx = ctx.clone();
            std::thread::Builder::new()
                .name(format!("camera-{}", cam.id))
                .spawn(move || run_camera(cam, ctx))
                .expect("spawning a thread")
        })
        .collect();
    drop(ctx); // the cameras hold the only senders now
    let cameras = tokio::task::spawn_blocking(move || {
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| CameraSummary {
                    failed: true,
                    error: Some("camera thread panicked".into()),
                    ..Default::default()
                })
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("joining camera threads");
    let stats = publisher.await.expect("publisher task");
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
        outbox_dropped: stats.dropped_evidence + stats.dropped_events + stats.expired,
        outbox_left: stats.left,
        cameras,
    })
}

/// The summary as a person reads it.
pub fn render_summary(s: &NodeSummary) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "edge node {} at checkpoint {}\n",
        s.node_id, s.checkpoint_id
    ));
    for c in &s.cameras {
        out.push_str(&format!(
            "camera {} ({}) on {}\n",
            c.camera_id, c.label, c.input
        ));
        out.push_str(&format!(
            "  frames decoded {}, processed {}, dropped {}, mean {:.1} FPS over {:.1} s of video processing ({:.1} s with start-up)\n",
            c.frames_decoded, c.frames_processed, c.frames_dropped, c.fps, c.streaming_secs, c.processing_secs
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
    out
}
