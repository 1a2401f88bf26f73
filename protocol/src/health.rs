//! A node's periodic health report, published on `keys::health(checkpoint)` and shown on the
//! operators' dashboard: per camera frames and rate, and the outbox backlog.

use serde::{Deserialize, Serialize};

/// Reports larger than this are refused.
pub const MAX_HEALTH_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraHealth {
    pub id: String,
    pub label: String,
    pub frames_decoded: u64,
    pub frames_processed: u64,
    pub frames_dropped: u64,
    /// Frames dropped by reason: behind, budget, inference_error, stopped.
    #[serde(default)]
    pub frames_dropped_by_reason: std::collections::BTreeMap<String, u64>,
    pub inference_errors: u64,
    /// Frames processed per second over the last interval.
    pub fps: f64,
    /// Failed attempts to run the camera since it last processed a frame (0: running); a
    /// live camera past its `max_attempts` is down and still tried.
    #[serde(default)]
    pub failures_in_a_row: u64,
}

/// What a node knows of its own clock: read from chrony (`chronyc tracking`) or from the
/// kernel's NTP state (`adjtimex`, which chronyd, ntpd, systemd-timesyncd and phc2sys keep).
/// The health report carries the latest reading; every event carries the one in force when
/// its frame was taken, so a reviewer sees whether its time can be trusted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClockStatus {
    /// Where the reading came from: `chrony`, `kernel`, or `none` (not read).
    pub source: String,
    /// The clock is disciplined by a time source (chrony: leap status normal; kernel: the
    /// unsynchronised flag is clear).
    pub synchronised: bool,
    /// The estimated offset from true time, ms (positive: the clock is fast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_ms: Option<f64>,
    /// The largest error the time source admits, ms (chrony: |offset| + root dispersion +
    /// half the root delay; kernel: maxerror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_ms: Option<f64>,
    /// The bound the node is configured with, ms (`[clock] max_error_ms`).
    pub bound_ms: f64,
    /// Synchronised and within the bound: times taken now can be trusted as evidence.
    pub trusted: bool,
    /// When it was read, UTC ms.
    pub checked_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeHealth {
    pub node_id: String,
    pub checkpoint_id: String,
    /// When the node sent it, UTC ms.
    pub sent_ms: i64,
    /// How often the node reports, ms.
    pub interval_ms: u64,
    pub cameras: Vec<CameraHealth>,
    pub outbox_backlog_items: u64,
    pub outbox_oldest_age_secs: f64,
    /// The ONNX Runtime execution provider each model loaded on (model file -> `cpu`,
    /// `cuda`, `tensorrt`).
    #[serde(default)]
    pub execution_providers: std::collections::BTreeMap<String, String>,
    /// The node's clock, as last read (absent from nodes that do not read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<ClockStatus>,
}

impl NodeHealth {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a health report serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<NodeHealth, String> {
        if bytes.len() > MAX_HEALTH_BYTES {
            return Err(format!(
                "health report of {} bytes exceeds {MAX_HEALTH_BYTES}",
                bytes.len()
            ));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("health report: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() {
        let h = NodeHealth {
            node_id: "32050500055050000001".into(),
            checkpoint_id: "32050500051210000001".into(),
            sent_ms: 1,
            interval_ms: 5000,
            cameras: vec![CameraHealth {
                id: "32050500051320000001".into(),
                label: "crossing".into(),
                frames_decoded: 10,
                frames_processed: 9,
                frames_dropped: 1,
                frames_dropped_by_reason: [("behind".to_string(), 1)].into(),
                inference_errors: 0,
                fps: 1.8,
                failures_in_a_row: 0,
            }],
            outbox_backlog_items: 3,
            outbox_oldest_age_secs: 0.5,
            execution_providers: [("yolov8n.onnx".to_string(), "cpu".to_string())].into(),
            clock: Some(ClockStatus {
                source: "chrony".into(),
                synchronised: true,
                offset_ms: Some(-0.4),
                max_error_ms: Some(3.1),
                bound_ms: 100.0,
                trusted: true,
                checked_ms: 1,
            }),
        };
        assert_eq!(NodeHealth::decode(&h.encode()).unwrap(), h);
        assert!(NodeHealth::decode(b"{").is_err());
        assert!(NodeHealth::decode(&vec![b' '; MAX_HEALTH_BYTES + 1]).is_err());
    }
}
