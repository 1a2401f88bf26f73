//! The node's clock: is it synchronised, and how far off can it be? Evidence of a violation is
//! only worth its timestamp, so the node reads its clock state every `check_interval_secs`
//! (chrony's `chronyc -c tracking`, or the kernel's NTP state through `adjtimex`, which
//! chronyd, ntpd, systemd-timesyncd and phc2sys keep), reports it in the health report and
//! `/metrics`, and stamps every event with the reading in force when its frame was taken:
//! `trusted: false` when the clock is unsynchronised or its error bound is over
//! `[clock] max_error_ms`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use protocol::health::ClockStatus;
use serde::Deserialize;

/// Where the clock state is read from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockSource {
    /// chrony when `chronyc` answers, else the kernel.
    #[default]
    Auto,
    Chrony,
    Kernel,
    /// Not read: events carry no clock mark.
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    #[serde(default)]
    pub source: ClockSource,
    /// The `chronyc` program (looked up on PATH unless a path is given).
    #[serde(default = "default_chronyc")]
    pub chronyc: PathBuf,
    /// The largest clock error evidence may carry and still be trusted, ms. China's
    /// traffic-enforcement equipment standards ask for the recorded time within 1 s of
    /// standard time; 100 ms leaves room for a red-light phase change.
    #[serde(default = "default_max_error_ms")]
    pub max_error_ms: f64,
    #[serde(default = "default_check_interval_secs")]
    pub check_interval_secs: u64,
}

fn default_chronyc() -> PathBuf {
    PathBuf::from("chronyc")
}
fn default_max_error_ms() -> f64 {
    100.0
}
fn default_check_interval_secs() -> u64 {
    10
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            source: ClockSource::default(),
            chronyc: default_chronyc(),
            max_error_ms: default_max_error_ms(),
            check_interval_secs: default_check_interval_secs(),
        }
    }
}

impl ClockConfig {
    pub fn validate(&self, errors: &mut Vec<String>) {
        if !(self.max_error_ms.is_finite() && self.max_error_ms > 0.0) {
            errors.push(format!(
                "clock.max_error_ms = {} must be a positive number of milliseconds",
                self.max_error_ms
            ));
        }
        if self.check_interval_secs == 0 {
            errors.push("clock.check_interval_secs must be at least 1".into());
        }
    }
}

/// One reading before the bound is applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub source: &'static str,
    pub synchronised: bool,
    pub offset_ms: Option<f64>,
    pub max_error_ms: Option<f64>,
}

impl Reading {
    pub fn status(self, bound_ms: f64, checked_ms: i64) -> ClockStatus {
        let trusted = self.synchronised && self.max_error_ms.is_some_and(|e| e <= bound_ms);
        ClockStatus {
            source: self.source.to_string(),
            synchronised: self.synchronised,
            offset_ms: self.offset_ms,
            max_error_ms: self.max_error_ms,
            bound_ms,
            trusted,
            checked_ms,
        }
    }
}

/// Parses `chronyc -c tracking` (one CSV line: reference id, name, stratum, reference time,
/// system time correction in seconds (positive: the clock is slow), last offset, RMS offset,
/// frequency, residual frequency, skew, root delay, root dispersion, update interval, leap
/// status).
pub fn parse_chrony_tracking(csv: &str) -> Result<Reading, String> {
    let line = csv.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let f: Vec<&str> = line.trim().split(',').collect();
    if f.len() < 14 {
        return Err(format!(
            "chronyc tracking gave {} fields, expected 14: '{line}'",
            f.len()
        ));
    }
    let num = |i: usize, what: &str| -> Result<f64, String> {
        f[i].trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("chronyc tracking: {what} '{}' is not a number", f[i]))
    };
    let correction = num(4, "system time")?;
    let root_delay = num(10, "root delay")?;
    let root_dispersion = num(11, "root dispersion")?;
    let stratum = num(2, "stratum")?;
    let leap = f[13].trim();
    // chronyd reports stratum 0 and "Not synchronised" until it has selected a source.
    let synchronised = leap != "Not synchronised" && stratum > 0.0;
    Ok(Reading {
        source: "chrony",
        synchronised,
        offset_ms: Some(-correction * 1000.0),
        max_error_ms: synchronised
            .then(|| (correction.abs() + root_dispersion + root_delay / 2.0) * 1000.0),
    })
}

/// The kernel's NTP state (`adjtimex` with no modes: read only, no privilege needed).
pub fn read_kernel() -> Result<Reading, String> {
    // SAFETY: timex is plain data; adjtimex with modes = 0 only fills it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state < 0 {
        return Err(format!("adjtimex: {}", std::io::Error::last_os_error()));
    }
    let unsync = state == libc::TIME_ERROR || tx.status & libc::STA_UNSYNC != 0;
    let nano = tx.status & libc::STA_NANO != 0;
    let offset_ms = if nano {
        tx.offset as f64 / 1e6
    } else {
        tx.offset as f64 / 1e3
    };
    Ok(Reading {
        source: "kernel",
        synchronised: !unsync,
        // The kernel's offset is the correction still to apply: the clock is that much slow.
        offset_ms: Some(-offset_ms),
        max_error_ms: (!unsync).then_some(tx.maxerror as f64 / 1e3),
    })
}

fn read_chrony(chronyc: &std::path::Path) -> Result<Reading, String> {
    let out = std::process::Command::new(chronyc)
        .args(["-c", "-n", "tracking"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", chronyc.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} tracking: {} {}",
            chronyc.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_chrony_tracking(&String::from_utf8_lossy(&out.stdout))
}

/// Reads the clock as configured; `None` when `source = "none"`.
pub fn read(cfg: &ClockConfig) -> Option<Result<Reading, String>> {
    match cfg.source {
        ClockSource::None => None,
        ClockSource::Chrony => Some(read_chrony(&cfg.chronyc)),
        ClockSource::Kernel => Some(read_kernel()),
        ClockSource::Auto => Some(read_chrony(&cfg.chronyc).or_else(|_| read_kernel())),
    }
}

/// The latest reading, shared by the cameras (events), the health report and `/metrics`.
#[derive(Clone, Default)]
pub struct ClockMonitor {
    latest: Arc<RwLock<Option<ClockStatus>>>,
}

impl ClockMonitor {
    pub fn latest(&self) -> Option<ClockStatus> {
        self.latest.read().expect("not poisoned").clone()
    }

    /// Reads the clock now and keeps the reading. A failed read counts as an untrusted,
    /// unsynchronised clock (logged), never as a good one.
    pub fn check(&self, cfg: &ClockConfig) {
        let Some(r) = read(cfg) else {
            return;
        };
        let reading = r.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Clock state unreadable: evidence marked untrusted until it is read");
            Reading {
                source: "none",
                synchronised: false,
                offset_ms: None,
                max_error_ms: None,
            }
        });
        let status = reading.status(cfg.max_error_ms, protocol::time::now_ms());
        let previous = self
            .latest
            .write()
            .expect("not poisoned")
            .replace(status.clone());
        if previous.as_ref().map(|p| p.trusted) != Some(status.trusted) {
            if status.trusted {
                tracing::info!(source = %status.source, offset_ms = ?status.offset_ms, max_error_ms = ?status.max_error_ms, "Clock synchronised: evidence time trusted");
            } else {
                tracing::warn!(source = %status.source, synchronised = status.synchronised, offset_ms = ?status.offset_ms, max_error_ms = ?status.max_error_ms, bound_ms = status.bound_ms, "Clock not synchronised or off by more than clock.max_error_ms: events marked untrusted (README: Time)");
            }
        }
    }

    /// Reads the clock once now, then every `check_interval_secs` on its own thread for
    /// as long as the monitor is kept (nothing with `source = "none"`).
    pub fn start(&self, cfg: ClockConfig) {
        if cfg.source == ClockSource::None {
            return;
        }
        self.check(&cfg);
        let weak = Arc::downgrade(&self.latest);
        std::thread::Builder::new()
            .name("clock".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(cfg.check_interval_secs));
                let Some(latest) = weak.upgrade() else {
                    return;
                };
                ClockMonitor { latest }.check(&cfg);
            })
            .expect("spawn the clock thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chrony_tracking_synchronised_and_not() {
        // A Debian 12 chronyd synchronised to a stratum-2 server: 12 us slow.
        let r = parse_chrony_tracking("C0A80001,192.168.0.1,3,1765000000.123456789,0.000012000,-0.000003,0.000020,-11.2,0.001,0.05,0.004000000,0.001000000,64.2,Normal\n").unwrap();
        assert!(r.synchronised);
        assert!((r.offset_ms.unwrap() + 0.012).abs() < 1e-9);
        // |0.012| + 1 + 4 / 2 ms
        assert!((r.max_error_ms.unwrap() - 3.012).abs() < 1e-9, "{r:?}");
        let s = r.status(100.0, 5);
        assert!(s.trusted);
        assert!(
            !parse_chrony_tracking(
                "C0A80001,192.168.0.1,3,1765000000.1,0.2,0,0,0,0,0,0.004,0.001,64,Normal"
            )
            .unwrap()
            .status(100.0, 5)
            .trusted,
            "200 ms slow is over the bound"
        );
        // Before chronyd selected a source.
        let r = parse_chrony_tracking(
            "00000000,,0,0.000000000,0.000000000,0,0,0,0,0,1,1,0,Not synchronised",
        )
        .unwrap();
        assert!(!r.synchronised);
        assert!(!r.status(100.0, 5).trusted);
        assert!(parse_chrony_tracking("506 Cannot talk to daemon").is_err());
        assert!(parse_chrony_tracking("A,b,3,1,x,0,0,0,0,0,0,0,0,Normal").is_err());
    }

    #[test]
    fn the_kernel_state_reads_without_privilege() {
        let r = read_kernel().unwrap();
        assert_eq!(r.source, "kernel");
        assert_eq!(r.max_error_ms.is_some(), r.synchronised);
    }

    #[test]
    fn an_unreadable_clock_is_not_trusted() {
        let m = ClockMonitor::default();
        m.check(&ClockConfig {
            source: ClockSource::Chrony,
            chronyc: "/nonexistent/chronyc".into(),
            ..ClockConfig::default()
        });
        let s = m.latest().unwrap();
        assert!(!s.trusted && !s.synchronised && s.source == "none", "{s:?}");
    }
}
