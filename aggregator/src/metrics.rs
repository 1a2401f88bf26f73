//! Prometheus metrics at `GET /metrics` (text exposition format): ingest counters, rejects by
//! reason, and the latency of every API route as a histogram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::ingest::IngestSnapshot;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; 12],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

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

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

pub fn render(ingest: &IngestSnapshot, http: &HttpMetrics) -> String {
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
    let _ = writeln!(out, "# HELP aggregator_events_rejected_total Payloads rejected, by reason.\n# TYPE aggregator_events_rejected_total counter");
    for (reason, n) in &ingest.rejected_by_reason {
        let _ = writeln!(
            out,
            "aggregator_events_rejected_total{{reason=\"{reason}\"}} {n}"
        );
    }
    let _ = writeln!(out, "# HELP aggregator_http_request_duration_seconds API latency by route.\n# TYPE aggregator_http_request_duration_seconds histogram");
    for (route, h) in http.routes.lock().expect("not poisoned").iter() {
        h.render(
            &mut out,
            "aggregator_http_request_duration_seconds",
            &format!("route=\"{route}\""),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(5));
        let mut s = String::new();
        h.render(&mut s, "x", "route=\"/a\"");
        assert!(s.contains("x_bucket{route=\"/a\",le=\"0.0005\"} 1"), "{s}");
        assert!(s.contains("x_bucket{route=\"/a\",le=\"0.005\"} 2"), "{s}");
        assert!(s.contains("x_bucket{route=\"/a\",le=\"2.5\"} 2"), "{s}");
        assert!(s.contains("x_bucket{route=\"/a\",le=\"+Inf\"} 3"), "{s}");
        assert!(s.contains("x_count{route=\"/a\"} 3"), "{s}");
    }
}
