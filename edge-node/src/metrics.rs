//! Prometheus metrics of the node, served at `GET /metrics` when `[metrics] listen` is set:
//! frames decoded, processed and dropped, inference failures, events by kind, and latency
//! histograms per stage (inference time among them), each per camera.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use protocol::metrics::{family, Histogram};

/// Stages with a latency histogram, in pipeline order.
pub const STAGES: [&str; 12] = [
    "decode",
    "preprocess",
    "infer",
    "postprocess",
    "track",
    "publish",
    "crossing",
    "evidence",
    "plate_read",
    "plate_scan",
    "plates",
    "frame",
];

/// Why a decoded frame was not processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A newer frame replaced it while the inference engine was busy (live or paced
    /// sources: the newest frame is processed first).
    Behind = 0,
    /// Over the camera's `max_fps`.
    Budget = 1,
    /// Its inference failed.
    InferenceError = 2,
    /// Still queued when the camera stopped (shutdown, a new config, a failure).
    Stopped = 3,
}

impl DropReason {
    pub const ALL: [DropReason; 4] = [
        DropReason::Behind,
        DropReason::Budget,
        DropReason::InferenceError,
        DropReason::Stopped,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Behind => "behind",
            DropReason::Budget => "budget",
            DropReason::InferenceError => "inference_error",
            DropReason::Stopped => "stopped",
        }
    }
}

#[derive(Default)]
pub struct CameraMetrics {
    pub frames_decoded: AtomicU64,
    pub frames_processed: AtomicU64,
    /// Frames not processed, by [`DropReason`].
    frames_dropped: [AtomicU64; 4],
    pub inference_errors: AtomicU64,
    /// Failed attempts to run the camera since it last processed a frame.
    pub failures_in_a_row: AtomicU64,
    events: Mutex<BTreeMap<String, u64>>,
    stages: [Arc<Histogram>; 12],
}

impl CameraMetrics {
    pub fn dropped(&self, reason: DropReason, n: u64) {
        self.frames_dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Frames dropped for `reason`.
    pub fn dropped_for(&self, reason: DropReason) -> u64 {
        self.frames_dropped[reason as usize].load(Ordering::Relaxed)
    }

    /// Frames dropped for any reason.
    pub fn dropped_total(&self) -> u64 {
        DropReason::ALL.iter().map(|r| self.dropped_for(*r)).sum()
    }

    /// Frames dropped per reason, those with none left out.
    pub fn dropped_by_reason(&self) -> BTreeMap<String, u64> {
        DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), self.dropped_for(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    pub fn stage(&self, name: &str) -> Arc<Histogram> {
        let i = STAGES
            .iter()
            .position(|s| *s == name)
            .expect("a known stage");
        self.stages[i].clone()
    }

    pub fn event(&self, kind: &str) {
        *self
            .events
            .lock()
            .expect("not poisoned")
            .entry(kind.to_string())
            .or_default() += 1;
    }
}

#[derive(Default)]
pub struct NodeMetrics {
    cameras: Mutex<BTreeMap<String, Arc<CameraMetrics>>>,
    /// The outbox, once open: backlog, oldest age and what happened to items.
    pub outbox: Mutex<Option<Arc<crate::publish::OutboxState>>>,
    /// Config files applied live, and refused (the running config stayed).
    pub config_reloads_applied: AtomicU64,
    pub config_reloads_rejected: AtomicU64,
    /// The node's clock state, read by `crate::clock`.
    pub clock: crate::clock::ClockMonitor,
}

impl NodeMetrics {
    /// The metrics of one camera, created on first use (kept across its restarts).
    pub fn camera(&self, id: &str) -> Arc<CameraMetrics> {
        self.cameras
            .lock()
            .expect("not poisoned")
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    pub fn render(&self) -> String {
        let cams = self.cameras.lock().expect("not poisoned");
        let mut out = String::new();
        for (name, help, get) in [
            (
                "edge_frames_decoded_total",
                "Frames decoded.",
                (|c: &CameraMetrics| c.frames_decoded.load(Ordering::Relaxed))
                    as fn(&CameraMetrics) -> u64,
            ),
            (
                "edge_frames_processed_total",
                "Frames through the whole pipeline.",
                |c| c.frames_processed.load(Ordering::Relaxed),
            ),
            (
                "edge_inference_errors_total",
                "Frames whose inference failed.",
                |c| c.inference_errors.load(Ordering::Relaxed),
            ),
        ] {
            family(&mut out, name, "counter", help);
            for (id, c) in cams.iter() {
                let _ = writeln!(out, "{name}{{camera=\"{id}\"}} {}", get(c));
            }
        }
        family(
            &mut out,
            "edge_frames_dropped_total",
            "counter",
            "Decoded frames not processed, by reason: behind (a newer frame replaced it while the engine was busy), budget (over max_fps), inference_error, stopped (queued when the camera stopped).",
        );
        for (id, c) in cams.iter() {
            for r in DropReason::ALL {
                let _ = writeln!(
                    out,
                    "edge_frames_dropped_total{{camera=\"{id}\",reason=\"{}\"}} {}",
                    r.as_str(),
                    c.dropped_for(r)
                );
            }
        }
        family(
            &mut out,
            "edge_camera_failures_in_a_row",
            "gauge",
            "Failed attempts to run the camera since it last processed a frame (0: running).",
        );
        for (id, c) in cams.iter() {
            let _ = writeln!(
                out,
                "edge_camera_failures_in_a_row{{camera=\"{id}\"}} {}",
                c.failures_in_a_row.load(Ordering::Relaxed)
            );
        }
        family(
            &mut out,
            "edge_events_total",
            "counter",
            "Events handed to the publisher, by kind.",
        );
        for (id, c) in cams.iter() {
            for (kind, n) in c.events.lock().expect("not poisoned").iter() {
                let _ = writeln!(
                    out,
                    "edge_events_total{{camera=\"{id}\",kind=\"{kind}\"}} {n}"
                );
            }
        }
        family(
            &mut out,
            "edge_stage_duration_seconds",
            "histogram",
            "Latency per pipeline stage (infer: model inference).",
        );
        for (id, c) in cams.iter() {
            for (i, stage) in STAGES.iter().enumerate() {
                c.stages[i].render(
                    &mut out,
                    "edge_stage_duration_seconds",
                    &format!("camera=\"{id}\",stage=\"{stage}\""),
                );
            }
        }
        family(
            &mut out,
            "edge_model_execution_provider",
            "gauge",
            "1 for the ONNX Runtime execution provider each model loaded on (cpu, cuda, tensorrt).",
        );
        for (model, p) in crate::detect::loaded_providers() {
            let _ = writeln!(
                out,
                "edge_model_execution_provider{{model=\"{model}\",provider=\"{p}\"}} 1"
            );
        }
        family(
            &mut out,
            "edge_config_reloads_total",
            "counter",
            "Changed config files applied live, and refused (the running config stayed).",
        );
        for (result, n) in [
            ("applied", &self.config_reloads_applied),
            ("rejected", &self.config_reloads_rejected),
        ] {
            let _ = writeln!(
                out,
                "edge_config_reloads_total{{result=\"{result}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        if let Some(c) = self.clock.latest() {
            for (name, help, v) in [
                (
                    "edge_clock_synchronised",
                    "1 when the clock is disciplined by a time source (chrony, or the kernel's NTP state).",
                    c.synchronised as u8 as f64,
                ),
                (
                    "edge_clock_trusted",
                    "1 when the clock is synchronised and its error bound within clock.max_error_ms: evidence time trusted.",
                    c.trusted as u8 as f64,
                ),
                (
                    "edge_clock_offset_seconds",
                    "Estimated offset from true time (positive: fast); NaN when unknown.",
                    c.offset_ms.map_or(f64::NAN, |v| v / 1000.0),
                ),
                (
                    "edge_clock_max_error_seconds",
                    "The largest error the time source admits; NaN when unsynchronised.",
                    c.max_error_ms.map_or(f64::NAN, |v| v / 1000.0),
                ),
            ] {
                family(&mut out, name, "gauge", help);
                let _ = writeln!(out, "{name}{{source=\"{}\"}} {v}", c.source);
            }
        }
        if let Some(o) = self.outbox.lock().expect("not poisoned").as_ref() {
            let b = *o.backlog.lock().expect("not poisoned");
            let age = b
                .oldest_ms
                .map(|t| (protocol::time::now_ms() - t).max(0) as f64 / 1000.0)
                .unwrap_or(0.0);
            for (name, kind, help, v) in [
                (
                    "edge_outbox_backlog_items",
                    "gauge",
                    "Items in the outbox waiting for an acknowledgement.",
                    b.items as f64,
                ),
                (
                    "edge_outbox_backlog_bytes",
                    "gauge",
                    "Payload bytes in the outbox.",
                    b.bytes as f64,
                ),
                (
                    "edge_outbox_oldest_age_seconds",
                    "gauge",
                    "Age of the oldest item in the outbox.",
                    age,
                ),
                (
                    "edge_outbox_acked_total",
                    "counter",
                    "Items acknowledged by an aggregator.",
                    o.acked.load(Ordering::Relaxed) as f64,
                ),
                (
                    "edge_outbox_replayed_total",
                    "counter",
                    "Items published again (not acknowledged in time, or left by an earlier run).",
                    o.replayed.load(Ordering::Relaxed) as f64,
                ),
                (
                    "edge_outbox_rejected_total",
                    "counter",
                    "Items an aggregator refused as invalid.",
                    o.rejected.load(Ordering::Relaxed) as f64,
                ),
                (
                    "edge_outbox_dropped_evidence_total",
                    "counter",
                    "Evidence images dropped because the outbox was full.",
                    o.dropped_evidence.load(Ordering::Relaxed) as f64,
                ),
                (
                    "edge_outbox_write_failures_total",
                    "counter",
                    "Outbox writes the disk refused (full, read-only); the events wait in memory.",
                    o.write_failures.load(Ordering::Relaxed) as f64,
                ),
                (
                    "edge_outbox_blocked_seconds_total",
                    "counter",
                    "Time the cameras' events waited for the outbox's disk.",
                    o.blocked_ms.load(Ordering::Relaxed) as f64 / 1000.0,
                ),
                (
                    "edge_outbox_lost_unwritable_total",
                    "counter",
                    "Events lost: the node stopped while the outbox's disk still refused them.",
                    o.lost_unwritable.load(Ordering::Relaxed) as f64,
                ),
                (
                    "edge_outbox_dropped_events_total",
                    "counter",
                    "Events dropped because the outbox was full (policy drop_oldest).",
                    o.dropped_events.load(Ordering::Relaxed) as f64,
                ),
                (
                    "edge_outbox_expired_total",
                    "counter",
                    "Items dropped past their time to live.",
                    o.expired.load(Ordering::Relaxed) as f64,
                ),
            ] {
                family(&mut out, name, kind, help);
                let _ = writeln!(out, "{name} {v}");
            }
        }
        out
    }
}

/// Serves `GET /metrics` until the process ends.
pub async fn serve(
    listen: std::net::SocketAddr,
    metrics: Arc<NodeMetrics>,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    m.render(),
                )
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}
