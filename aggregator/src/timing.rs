//! Flow figures traffic engineers time signals with: the peak hour and its peak-hour factor
//! from binned counts, and Webster's optimum cycle and green splits from the critical flows
//! of a crossing's phases (`[[crossings]]`), per hour of the day, beside the plan in force.
//!
//! Webster (1958): with `y_i` the critical flow ratio of phase `i` (its critical lane's flow
//! over that lane's saturation flow), `Y = sum(y_i)` and `L` the lost time of a cycle, the
//! delay-minimising cycle is `C0 = (1.5 L + 5) / (1 - Y)`, and each phase's effective green is
//! `(C0 - L) * y_i / Y`. Near saturation (`Y` close to 1) `C0` grows without bound: it is
//! capped at `max_cycle_s` and the answer says so.

use serde::{Deserialize, Serialize};

/// The busiest hour of a run of bins.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Peak {
    pub start_ms: i64,
    pub vehicles: i64,
    /// Peak-hour factor: the hour's volume over (bins an hour) x (its busiest bin); 1 when
    /// the hour is even, lower when traffic bunches. None with hour-long bins.
    pub phf: Option<f64>,
}

/// The busiest 60 minutes of `bins` (start UTC ms, vehicles; any order, gaps are zero),
/// `bucket_ms` long each; None when the bins do not divide an hour or hold no vehicle.
pub fn peak_hour(bins: &[(i64, i64)], bucket_ms: i64) -> Option<Peak> {
    if bucket_ms <= 0 || 3_600_000 % bucket_ms != 0 {
        return None;
    }
    let per_hour = (3_600_000 / bucket_ms) as usize;
    let mut sorted: Vec<(i64, i64)> = bins.to_vec();
    sorted.sort();
    let (first, last) = (sorted.first()?.0, sorted.last()?.0);
    let n = ((last - first) / bucket_ms) as usize + 1;
    let mut v = vec![0i64; n];
    for (t, c) in &sorted {
        v[((t - first) / bucket_ms) as usize] += c;
    }
    let windows = n.saturating_sub(per_hour) + 1;
    let (best, sum) = (0..windows)
        .map(|i| (i, v[i..(i + per_hour).min(n)].iter().sum::<i64>()))
        .max_by_key(|(i, s)| (*s, std::cmp::Reverse(*i)))?;
    if sum == 0 {
        return None;
    }
    let max_bin = *v[best..(best + per_hour).min(n)].iter().max()?;
    Some(Peak {
        start_ms: first + best as i64 * bucket_ms,
        vehicles: sum,
        phf: (per_hour > 1).then(|| sum as f64 / (per_hour as f64 * max_bin as f64)),
    })
}

/// `[[crossings]]`: a signalised crossing watched by a checkpoint's cameras, its phases and
/// the plan in force.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CrossingConfig {
    pub name: String,
    /// The checkpoint whose lanes the phases name.
    pub checkpoint: String,
    /// Saturation flow of one lane, vehicles per hour of green (default 1800).
    #[serde(default = "d_saturation")]
    pub saturation_flow: f64,
    /// Lost time per phase, s (start-up and clearance; default 4).
    #[serde(default = "d_lost")]
    pub lost_time_s: f64,
    #[serde(default = "d_min_cycle")]
    pub min_cycle_s: f64,
    #[serde(default = "d_max_cycle")]
    pub max_cycle_s: f64,
    pub phases: Vec<PhaseConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PhaseConfig {
    pub name: String,
    /// The lanes (numbers at the crossing's checkpoint) that move in this phase.
    pub lanes: Vec<i64>,
    /// The plan in force: this phase's green, s.
    #[serde(default)]
    pub green_s: Option<f64>,
}

fn d_saturation() -> f64 {
    1800.0
}
fn d_lost() -> f64 {
    4.0
}
fn d_min_cycle() -> f64 {
    30.0
}
fn d_max_cycle() -> f64 {
    180.0
}

impl CrossingConfig {
    pub fn check(&self, known: &dyn Fn(&str) -> bool, at: &str, errors: &mut Vec<String>) {
        if !known(&self.checkpoint) {
            errors.push(format!(
                "{at}.checkpoint = '{}' is not in [[checkpoints]]",
                self.checkpoint
            ));
        }
        if self.phases.len() < 2 {
            errors.push(format!(
                "{at}: a signalised crossing has two phases or more"
            ));
        }
        if self.phases.iter().any(|p| p.lanes.is_empty()) {
            errors.push(format!("{at}: every phase names its lanes"));
        }
        if !(self.saturation_flow > 0.0 && self.lost_time_s >= 0.0) {
            errors.push(format!(
                "{at}: saturation_flow must be above 0 and lost_time_s not negative"
            ));
        }
        if !(self.min_cycle_s > 0.0 && self.min_cycle_s < self.max_cycle_s) {
            errors.push(format!(
                "{at}: min_cycle_s must be above 0 and below max_cycle_s"
            ));
        }
    }
}

/// Webster's timing for critical flow ratios `y` and lost time `lost_s` per cycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// Sum of the critical flow ratios.
    pub y_total: f64,
    pub cycle_s: f64,
    /// Effective green per phase, s.
    pub greens_s: Vec<f64>,
    /// Why the cycle is not Webster's own: `oversaturated` (Y >= 1), `max_cycle`, `min_cycle`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capped: Option<&'static str>,
}

pub fn webster(y: &[f64], lost_s: f64, min_cycle_s: f64, max_cycle_s: f64) -> Timing {
    let y_total: f64 = y.iter().sum();
    let (cycle, capped) = if y_total >= 1.0 {
        (max_cycle_s, Some("oversaturated"))
    } else {
        let c0 = (1.5 * lost_s + 5.0) / (1.0 - y_total);
        if c0 > max_cycle_s {
            (max_cycle_s, Some("max_cycle"))
        } else if c0 < min_cycle_s {
            (min_cycle_s, Some("min_cycle"))
        } else {
            (c0, None)
        }
    };
    let green_time = (cycle - lost_s).max(0.0);
    let greens = y
        .iter()
        .map(|yi| {
            if y_total > 0.0 {
                green_time * yi / y_total
            } else {
                green_time / y.len() as f64
            }
        })
        .collect();
    Timing {
        y_total,
        cycle_s: cycle,
        greens_s: greens,
        capped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_hour_and_its_factor() {
        let q = 900_000; // 15 minutes
                         // 07:00-09:00 in 15-minute bins; the busiest hour is 07:30-08:30.
        let counts = [50, 80, 120, 150, 130, 100, 60, 40];
        let bins: Vec<(i64, i64)> = counts
            .iter()
            .enumerate()
            .map(|(i, c)| (i as i64 * q, *c))
            .collect();
        let p = peak_hour(&bins, q).unwrap();
        assert_eq!((p.start_ms, p.vehicles), (2 * q, 500));
        assert!((p.phf.unwrap() - 500.0 / 600.0).abs() < 1e-12);
        // A gap counts as no vehicles; hourly bins have no factor; odd bins none at all.
        let p = peak_hour(&[(0, 10), (3 * q, 10)], q).unwrap();
        assert_eq!(p.vehicles, 20);
        assert_eq!(peak_hour(&[(0, 10)], 3_600_000).unwrap().phf, None);
        assert!(peak_hour(&bins, 7 * 60_000).is_none());
        assert!(peak_hour(&[], q).is_none());
    }

    #[test]
    fn webster_cycle_and_splits() {
        // Two phases, critical flows 540 and 360 veh/h on lanes saturating at 1800: y = 0.3
        // and 0.2, Y = 0.5; lost time 2 x 4 = 8 s. C0 = (1.5 * 8 + 5) / 0.5 = 34 s; greens
        // (34 - 8) * 0.3 / 0.5 = 15.6 s and 10.4 s.
        let t = webster(&[540.0 / 1800.0, 360.0 / 1800.0], 8.0, 30.0, 180.0);
        assert!((t.cycle_s - 34.0).abs() < 1e-9, "{t:?}");
        assert!((t.greens_s[0] - 15.6).abs() < 1e-9 && (t.greens_s[1] - 10.4).abs() < 1e-9);
        assert_eq!(t.capped, None);
        // Three phases, Y = 0.85, L = 12: C0 = 23 / 0.15 = 153.3 s.
        let t = webster(&[0.35, 0.3, 0.2], 12.0, 30.0, 180.0);
        assert!((t.cycle_s - 153.333_333).abs() < 1e-3, "{t:?}");
        let sum: f64 = t.greens_s.iter().sum();
        assert!((sum + 12.0 - t.cycle_s).abs() < 1e-9);
        assert_eq!(
            webster(&[0.6, 0.5], 8.0, 30.0, 180.0).capped,
            Some("oversaturated")
        );
        assert_eq!(
            webster(&[0.47, 0.47], 8.0, 30.0, 180.0).capped,
            Some("max_cycle")
        );
        assert_eq!(
            webster(&[0.05, 0.05], 8.0, 30.0, 180.0).capped,
            Some("min_cycle")
        );
    }
}
