//! Per-stage timing: every sample is logged at DEBUG by the caller and summarised here
//! (mean, p50, p99) at the end of a run.

use std::time::Duration;

use serde::Serialize;

/// Samples kept per stage; beyond this the mean stays exact and percentiles use the first
/// `MAX_SAMPLES`.
const MAX_SAMPLES: usize = 200_000;

#[derive(Debug, Clone, Default)]
pub struct StageTimer {
    samples_ms: Vec<f32>,
    count: u64,
    sum_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageSummary {
    pub stage: String,
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl StageTimer {
    pub fn record(&mut self, d: Duration) {
        let ms = d.as_secs_f64() * 1000.0;
        self.count += 1;
        self.sum_ms += ms;
        if self.samples_ms.len() < MAX_SAMPLES {
            self.samples_ms.push(ms as f32);
        }
    }

    pub fn summary(&self, stage: &str) -> StageSummary {
        let mut s = self.samples_ms.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| -> f64 {
            if s.is_empty() {
                0.0
            } else {
                s[((s.len() - 1) as f64 * p).round() as usize] as f64
            }
        };
        StageSummary {
            stage: stage.to_string(),
            count: self.count,
            mean_ms: if self.count == 0 {
                0.0
            } else {
                self.sum_ms / self.count as f64
            },
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut t = StageTimer::default();
        for i in 1..=100 {
            t.record(Duration::from_millis(i));
        }
        let s = t.summary("x");
        assert_eq!(s.count, 100);
        assert!((s.mean_ms - 50.5).abs() < 1e-6);
        assert!((s.p50_ms - 51.0).abs() < 1e-3 || (s.p50_ms - 50.0).abs() < 1e-3);
        assert!((s.p99_ms - 99.0).abs() < 1.01);
    }
}
