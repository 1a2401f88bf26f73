//! Prometheus metrics at `GET /metrics` (text exposition format): ingest counters, rejects by
//! reason, and the latency of every API route as a histogram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use protocol::metrics::{counter, family, Histogram};

use crate::ingest::IngestSnapshot;

/// Request latency per route template.
#[derive(Default)]
pub struct HttpMetrics {
    routes: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
}

impl HttpMetrics {
    pub fn observe(&self, route: &str, d: Duration) {
        let h = self
            .routes
            .lock()
            .expect("not poisoned")
            .entry(route.to_string())
            .or_default()
            .clone();
        h.observe(d);
    }
}

pub fn render(
    ingest: &IngestSnapshot,
    http: &HttpMetrics,
    conns: &crate::http_server::ConnMetrics,
) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::new();
    counter(
        &mut out,
        "aggregator_events_received_total",
        "Events received over zenoh.",
        ingest.received,
    );
    counter(
        &mut out,
        "aggregator_events_stored_total",
        "Events stored (new).",
        ingest.stored,
    );
    counter(
        &mut out,
        "aggregator_events_duplicate_total",
        "Events received again and absorbed by event_id.",
        ingest.duplicates,
    );
    counter(
        &mut out,
        "aggregator_evidence_stored_total",
        "Evidence images stored.",
        ingest.evidence_stored,
    );
    counter(
        &mut out,
        "aggregator_anomalies_raised_total",
        "Plate anomalies raised by correlation.",
        ingest.anomalies_raised,
    );
    counter(
        &mut out,
        "aggregator_store_errors_total",
        "Failed store transactions (retried).",
        ingest.store_errors,
    );
    counter(
        &mut out,
        "aggregator_purged_events_total",
        "Events deleted past their retention period.",
        ingest.purged_events,
    );
    family(
        &mut out,
        "aggregator_ingest_queue_depth",
        "gauge",
        "Samples waiting for the writer now.",
    );
    let _ = writeln!(out, "aggregator_ingest_queue_depth {}", ingest.queued);
    family(
        &mut out,
        "aggregator_ingest_queue_bytes",
        "gauge",
        "Bytes waiting for the writer now (bounded by the ingest queue's byte limit).",
    );
    let _ = writeln!(out, "aggregator_ingest_queue_bytes {}", ingest.queued_bytes);
    family(
        &mut out,
        "aggregator_ingest_queue_peak",
        "gauge",
        "The most samples that have waited for the writer at once (with those zenoh waits to put in).",
    );
    let _ = writeln!(out, "aggregator_ingest_queue_peak {}", ingest.queue_peak);
    counter(
        &mut out,
        "aggregator_ingest_queue_full_total",
        "Samples that found the ingest queue full: zenoh's delivery, and the publishers, waited (back-pressure).",
        ingest.queue_full,
    );
    counter(
        &mut out,
        "aggregator_ingest_damaged_total",
        "Samples whose payload did not match the digest its publisher attached (damaged on the way): dropped unacknowledged, the node sends them again.",
        ingest.damaged,
    );
    family(
        &mut out,
        "aggregator_ingest_blocked_seconds_total",
        "counter",
        "Time zenoh's delivery waited for room in the ingest queue.",
    );
    let _ = writeln!(
        out,
        "aggregator_ingest_blocked_seconds_total {:.6}",
        ingest.blocked_seconds
    );
    family(
        &mut out,
        "aggregator_events_rejected_total",
        "counter",
        "Payloads rejected, by reason.",
    );
    for (reason, n) in &ingest.rejected_by_reason {
        let _ = writeln!(
            out,
            "aggregator_events_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    family(
        &mut out,
        "aggregator_events_held_total",
        "counter",
        "Events not acknowledged (held at their node) because their checkpoint is not in [[checkpoints]], by checkpoint.",
    );
    for (checkpoint, n) in &ingest.held_unregistered {
        let _ = writeln!(
            out,
            "aggregator_events_held_total{{checkpoint=\"{checkpoint}\"}} {n}"
        );
    }
    family(
        &mut out,
        "aggregator_http_connections_open",
        "gauge",
        "HTTP connections open now.",
    );
    let _ = writeln!(
        out,
        "aggregator_http_connections_open {}",
        conns.open.load(Relaxed)
    );
    counter(
        &mut out,
        "aggregator_http_connections_accepted_total",
        "HTTP connections accepted.",
        conns.accepted.load(Relaxed),
    );
    family(
        &mut out,
        "aggregator_http_connections_refused_total",
        "counter",
        "HTTP connections refused at once: http.max_connections (total) or http.max_connections_per_address (per_address) open.",
    );
    for (reason, n) in [
        ("total", conns.refused_total_limit.load(Relaxed)),
        ("per_address", conns.refused_address_limit.load(Relaxed)),
    ] {
        let _ = writeln!(
            out,
            "aggregator_http_connections_refused_total{{reason=\"{reason}\"}} {n}"
        );
    }
    counter(
        &mut out,
        "aggregator_http_header_timeouts_total",
        "HTTP connections closed because a request header (or TLS handshake) did not arrive within http.header_read_timeout_s.",
        conns.header_timeouts.load(Relaxed),
    );
    counter(
        &mut out,
        "aggregator_http_tls_failures_total",
        "TLS handshakes that failed.",
        conns.tls_failures.load(Relaxed),
    );
    family(
        &mut out,
        "aggregator_http_request_duration_seconds",
        "histogram",
        "API latency by route.",
    );
    for (route, h) in http.routes.lock().expect("not poisoned").iter() {
        h.render(
            &mut out,
            "aggregator_http_request_duration_seconds",
            &format!("route=\"{route}\""),
        );
    }
    out
}
