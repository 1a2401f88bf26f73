//! Key vehicles' state from their terminals' positions: driving, stopped, stopped abnormally,
//! and the alerts a command centre acts on, each raised once per episode:
//! - **abnormal stop**: stopped (below `stopped_below_kmh`) for `abnormal_stop_after_s`
//!   outside every allowed place (depots, service areas, stations);
//! - **speeding**: above the limit (`speed_limit_kmh`, or that of the speed zone the fix is
//!   in) for `speeding_for_s` on end;
//! - **fatigue**: driving `fatigue_drive_s` (4 h) without a rest of `rest_s` (20 min);
//! - **night coach**: a coach driving between 02:00 and 05:00 local time;
//! - **terminal silent**: no report for `silent_after_s`;
//! - **off route**: a vehicle registered for a route (`routes`, by plate) farther than the
//!   route's corridor from it for `off_route_for_s`;
//! - **registry status**: a vehicle driving while the registry in force holds something
//!   against it (inspection overdue, hit-and-run, wanted...), once a local day.
//!
//! A stop on an expressway (`expressways`: polylines with their half-width) is abnormal
//! after `expressway_stop_after_s` (2 min), outside its service areas (allowed places).
//!
//! Pure: fixes in, states and alerts out; the JT/T 808 gateway feeds it.

use std::collections::HashMap;

use protocol::registry::Status;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    #[serde(default = "d_stopped_below")]
    pub stopped_below_kmh: f64,
    /// Below the speed this long is a stop.
    #[serde(default = "d_stop_after")]
    pub stop_after_s: i64,
    #[serde(default = "d_abnormal_after")]
    pub abnormal_stop_after_s: i64,
    /// Places a vehicle may stand (depots, service areas, stations).
    #[serde(default)]
    pub allowed_places: Vec<Place>,
    #[serde(default = "d_limit")]
    pub speed_limit_kmh: f64,
    /// Places with their own limit (a circle each), the first that holds the fix counts.
    #[serde(default)]
    pub speed_zones: Vec<SpeedZone>,
    #[serde(default = "d_speeding_for")]
    pub speeding_for_s: i64,
    #[serde(default = "d_fatigue")]
    pub fatigue_drive_s: i64,
    #[serde(default = "d_rest")]
    pub rest_s: i64,
    #[serde(default = "d_silent")]
    pub silent_after_s: i64,
    /// Local time is UTC plus this (480: China).
    #[serde(default = "d_offset")]
    pub utc_offset_minutes: i64,
    /// Expressways: a stop on one is abnormal sooner.
    #[serde(default)]
    pub expressways: Vec<Road>,
    #[serde(default = "d_expressway_stop")]
    pub expressway_stop_after_s: i64,
    /// Registered routes (coaches' licensed lines, hazardous goods' approved roads).
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default = "d_off_route_for")]
    pub off_route_for_s: i64,
}

/// A road as a polyline of `[lat, lon]` points, `half_width_m` either side.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Road {
    pub name: String,
    pub points: Vec<[f64; 2]>,
    #[serde(default = "d_half_width")]
    pub half_width_m: f64,
}

/// A route the vehicles with these plates must keep to, within `corridor_m`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub name: String,
    pub plates: Vec<String>,
    pub points: Vec<[f64; 2]>,
    #[serde(default = "d_corridor")]
    pub corridor_m: f64,
}

fn d_expressway_stop() -> i64 {
    120
}
fn d_off_route_for() -> i64 {
    120
}
fn d_half_width() -> f64 {
    50.0
}
fn d_corridor() -> f64 {
    500.0
}

/// Metres from `p` to the polyline `line` (`[lat, lon]` points), on a local flat projection
/// (good to a fraction of a percent over the tens of kilometres of a county).
pub fn distance_to_line_m(p: (f64, f64), line: &[[f64; 2]]) -> f64 {
    let k = p.0.to_radians().cos();
    let xy = |lat: f64, lon: f64| ((lon - p.1) * k * 111_320.0, (lat - p.0) * 110_574.0);
    match line {
        [] => f64::INFINITY,
        [a] => distance_m(p, (a[0], a[1])),
        _ => line
            .windows(2)
            .map(|w| {
                let (ax, ay) = xy(w[0][0], w[0][1]);
                let (bx, by) = xy(w[1][0], w[1][1]);
                let (dx, dy) = (bx - ax, by - ay);
                let len2 = dx * dx + dy * dy;
                let t = if len2 > 0.0 {
                    (-(ax * dx + ay * dy) / len2).clamp(0.0, 1.0)
                } else {
                    0.0
                };
                (ax + t * dx).hypot(ay + t * dy)
            })
            .fold(f64::INFINITY, f64::min),
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Place {
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SpeedZone {
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
    pub limit_kmh: f64,
}

fn d_stopped_below() -> f64 {
    5.0
}
fn d_stop_after() -> i64 {
    120
}
fn d_abnormal_after() -> i64 {
    1200
}
fn d_limit() -> f64 {
    100.0
}
fn d_speeding_for() -> i64 {
    30
}
fn d_fatigue() -> i64 {
    4 * 3600
}
fn d_rest() -> i64 {
    20 * 60
}
fn d_silent() -> i64 {
    600
}
fn d_offset() -> i64 {
    480
}

impl Default for StateConfig {
    fn default() -> Self {
        toml::from_str("").expect("every field has a default")
    }
}

/// Metres between two points (haversine).
pub fn distance_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6_371_000.0 * h.sqrt().asin()
}

/// One position of a vehicle.
pub use protocol::PositionFix as Fix;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Driving,
    Stopped,
    StoppedAbnormally,
}

/// What an alert is about.
pub use protocol::VehicleAlertKind as AlertKind;

/// What the registry in force says of a vehicle, for its rules.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Standing {
    /// A coach (use character B or E): the night-coach rule.
    pub coach: bool,
    /// What the registry holds against it (inspection overdue, hit-and-run...).
    pub statuses: Vec<Status>,
}

/// An alert with the fixes it rests on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub terminal: String,
    pub at_ms: i64,
    pub detail: String,
    pub fixes: Vec<Fix>,
    /// `registry_status`: what the registry holds against the vehicle.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<Status>,
}

#[derive(Debug, Default)]
struct Track {
    last: Option<Fix>,
    /// When the last report arrived (silence is measured on it, not on fix times: a
    /// terminal may send fixes it kept while out of coverage).
    seen_ms: i64,
    /// Since when below the stop speed (None: moving).
    slow_since: Option<Fix>,
    abnormal_alerted: bool,
    /// Since when over the limit, and the fixes over it.
    over: Vec<Fix>,
    speeding_alerted: bool,
    /// Start of the current driving stretch (no rest of `rest_s` since).
    driving_since: Option<i64>,
    fatigue_alerted: bool,
    /// The local date (days since the epoch) a night-coach alert was raised for.
    night_alerted_on: Option<i64>,
    silent_alerted: bool,
    /// The registered route (index into `routes`), from the vehicle's plate.
    route: Option<usize>,
    off_since: Option<Fix>,
    off_alerted: bool,
    /// The local date and the statuses registry-status alerts were raised for that day.
    standing_alerted: Option<(i64, Vec<Status>)>,
}

/// Every terminal's state.
#[derive(Default)]
pub struct Tracker {
    cfg: StateConfig,
    tracks: HashMap<String, Track>,
}

impl Tracker {
    pub fn new(cfg: StateConfig) -> Tracker {
        Tracker {
            cfg,
            tracks: HashMap::new(),
        }
    }

    fn limit_at(&self, f: &Fix) -> f64 {
        self.cfg
            .speed_zones
            .iter()
            .find(|z| distance_m((z.lat, z.lon), (f.lat, f.lon)) <= z.radius_m)
            .map_or(self.cfg.speed_limit_kmh, |z| z.limit_kmh)
    }

    /// Tells the tracker a terminal's plate (at registration): its route, if any.
    pub fn set_plate(&mut self, terminal: &str, plate: &str) {
        let bare = |p: &str| p.replace('·', "");
        let route = self
            .cfg
            .routes
            .iter()
            .position(|r| r.plates.iter().any(|x| bare(x) == bare(plate)));
        let t = self.tracks.entry(terminal.to_string()).or_default();
        if t.route != route {
            t.route = route;
            t.off_since = None;
            t.off_alerted = false;
        }
    }

    fn expressway(&self, f: &Fix) -> Option<&str> {
        self.cfg
            .expressways
            .iter()
            .find(|r| distance_to_line_m((f.lat, f.lon), &r.points) <= r.half_width_m)
            .map(|r| r.name.as_str())
    }

    fn allowed(&self, f: &Fix) -> Option<&str> {
        self.cfg
            .allowed_places
            .iter()
            .find(|p| distance_m((p.lat, p.lon), (f.lat, f.lon)) <= p.radius_m)
            .map(|p| p.name.as_str())
    }

    /// The state of a terminal now.
    pub fn state(&self, terminal: &str) -> Option<State> {
        let t = self.tracks.get(terminal)?;
        let last = t.last?;
        Some(match t.slow_since {
            Some(s) if last.time_ms - s.time_ms >= self.cfg.stop_after_s * 1000 => {
                if t.abnormal_alerted {
                    State::StoppedAbnormally
                } else {
                    State::Stopped
                }
            }
            _ => State::Driving,
        })
    }

    /// A fix of `terminal` received at `now_ms` (in time order; an older one than the last
    /// is ignored here): the alerts it raises. `coach`: the vehicle is a coach (night rule).
    pub fn on_fix(&mut self, terminal: &str, f: Fix, coach: bool, now_ms: i64) -> Vec<Alert> {
        let limit = self.limit_at(&f);
        let allowed = self.allowed(&f).map(str::to_string);
        let expressway = self.expressway(&f).map(str::to_string);
        let off_route = self.tracks.get(terminal).and_then(|t| t.route).map(|r| {
            let route = &self.cfg.routes[r];
            let d = distance_to_line_m((f.lat, f.lon), &route.points);
            (route.name.clone(), d, d > route.corridor_m)
        });
        let cfg = self.cfg.clone();
        let t = self.tracks.entry(terminal.to_string()).or_default();
        t.seen_ms = t.seen_ms.max(now_ms);
        t.silent_alerted = false;
        if t.last.is_some_and(|l| f.time_ms <= l.time_ms) {
            return vec![];
        }
        let mut out = Vec::new();
        let alert = |kind, detail: String, fixes: Vec<Fix>| Alert {
            kind,
            terminal: terminal.to_string(),
            at_ms: f.time_ms,
            detail,
            fixes,
            statuses: vec![],
        };
        // Stops.
        if f.speed_kmh < cfg.stopped_below_kmh {
            let since = *t.slow_since.get_or_insert(f);
            let stood = (f.time_ms - since.time_ms) / 1000;
            let after = if expressway.is_some() {
                cfg.expressway_stop_after_s
            } else {
                cfg.abnormal_stop_after_s
            };
            if !t.abnormal_alerted && stood >= after && allowed.is_none() {
                t.abnormal_alerted = true;
                out.push(alert(
                    AlertKind::AbnormalStop,
                    match &expressway {
                        Some(road) => format!("stopped {} s on expressway {road}", stood),
                        None => format!("stopped {} min outside any allowed place", stood / 60),
                    },
                    vec![since, f],
                ));
            }
        } else {
            t.slow_since = None;
            t.abnormal_alerted = false;
        }
        // Driving stretches: a stop of rest_s ends one.
        let resting = t
            .slow_since
            .is_some_and(|s| f.time_ms - s.time_ms >= cfg.rest_s * 1000);
        if resting {
            t.driving_since = None;
            t.fatigue_alerted = false;
        } else if f.speed_kmh >= cfg.stopped_below_kmh {
            let start = *t.driving_since.get_or_insert(f.time_ms);
            if !t.fatigue_alerted && f.time_ms - start >= cfg.fatigue_drive_s * 1000 {
                t.fatigue_alerted = true;
                out.push(alert(
                    AlertKind::Fatigue,
                    format!(
                        "driving {:.1} h without a {} min rest",
                        (f.time_ms - start) as f64 / 3.6e6,
                        cfg.rest_s / 60
                    ),
                    vec![f],
                ));
            }
        }
        // Speeding, sustained.
        if f.speed_kmh > limit {
            t.over.push(f);
            let first = t.over[0];
            if !t.speeding_alerted && f.time_ms - first.time_ms >= cfg.speeding_for_s * 1000 {
                t.speeding_alerted = true;
                let top = t.over.iter().map(|x| x.speed_kmh).fold(0.0, f64::max);
                out.push(alert(
                    AlertKind::Speeding,
                    format!(
                        "above {limit} km/h for {} s, up to {top:.0} km/h",
                        (f.time_ms - first.time_ms) / 1000
                    ),
                    t.over.clone(),
                ));
            }
        } else {
            t.over.clear();
            t.speeding_alerted = false;
        }
        // A coach on the road at night.
        let local = f.time_ms + cfg.utc_offset_minutes * 60_000;
        let (day, hour) = (
            local.div_euclid(86_400_000),
            local.rem_euclid(86_400_000) / 3_600_000,
        );
        if coach
            && (2..5).contains(&hour)
            && f.speed_kmh >= cfg.stopped_below_kmh
            && t.night_alerted_on != Some(day)
        {
            t.night_alerted_on = Some(day);
            out.push(alert(
                AlertKind::NightCoach,
                "coach driving between 02:00 and 05:00".into(),
                vec![f],
            ));
        }
        // Off its registered route, sustained.
        match off_route {
            Some((name, d, true)) => {
                let since = *t.off_since.get_or_insert(f);
                if !t.off_alerted && f.time_ms - since.time_ms >= cfg.off_route_for_s * 1000 {
                    t.off_alerted = true;
                    out.push(alert(
                        AlertKind::OffRoute,
                        format!(
                            "{d:.0} m off route {name} for {} s",
                            (f.time_ms - since.time_ms) / 1000
                        ),
                        vec![since, f],
                    ));
                }
            }
            _ => {
                t.off_since = None;
                t.off_alerted = false;
            }
        }
        t.last = Some(f);
        out
    }

    /// A fix of a vehicle the registry in force holds `statuses` against (none: nothing),
    /// after `on_fix` took it: one alert a local day while it drives, again the same day
    /// only for a status not alerted yet that day; none while it stands (parked in its
    /// depot is not on the road).
    pub fn on_standing(&mut self, terminal: &str, f: Fix, statuses: &[Status]) -> Option<Alert> {
        if statuses.is_empty() || f.speed_kmh < self.cfg.stopped_below_kmh {
            return None;
        }
        let day = (f.time_ms + self.cfg.utc_offset_minutes * 60_000).div_euclid(86_400_000);
        let mut statuses = statuses.to_vec();
        statuses.sort_by_key(|s| s.as_str());
        statuses.dedup();
        let t = self.tracks.entry(terminal.to_string()).or_default();
        // A fix older than the newest (a batch kept out of coverage) changes nothing.
        if t.last.is_some_and(|l| f.time_ms < l.time_ms) {
            return None;
        }
        if t.standing_alerted.as_ref().is_none_or(|(d, _)| *d != day) {
            t.standing_alerted = Some((day, Vec::new()));
        }
        let (_, alerted) = t.standing_alerted.as_mut().expect("set above");
        let new: Vec<Status> = statuses
            .iter()
            .filter(|s| !alerted.contains(s))
            .copied()
            .collect();
        if new.is_empty() {
            return None;
        }
        alerted.extend(new);
        let list: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
        Some(Alert {
            kind: AlertKind::RegistryStatus,
            terminal: terminal.to_string(),
            at_ms: f.time_ms,
            detail: format!("driving while the registry holds: {}", list.join(", ")),
            fixes: vec![f],
            statuses,
        })
    }

    /// Terminals no report came from for `silent_after_s` at `now_ms`, once per silence.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Alert> {
        let after = self.cfg.silent_after_s * 1000;
        let mut out = Vec::new();
        for (id, t) in &mut self.tracks {
            if let Some(l) = t.last {
                if !t.silent_alerted && now_ms - t.seen_ms >= after {
                    t.silent_alerted = true;
                    out.push(Alert {
                        kind: AlertKind::TerminalSilent,
                        terminal: id.clone(),
                        at_ms: now_ms,
                        detail: format!("no report for {} min", (now_ms - t.seen_ms) / 60_000),
                        fixes: vec![l],
                        statuses: vec![],
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_939_200_000; // 2026-11-29 16:00 Beijing time

    fn fix(min: f64, kmh: f64) -> Fix {
        Fix {
            time_ms: T0 + (min * 60_000.0) as i64,
            lat: 31.3 + min * 1e-4,
            lon: 120.6,
            speed_kmh: kmh,
        }
    }

    fn kinds(a: &[Alert]) -> Vec<AlertKind> {
        a.iter().map(|x| x.kind).collect()
    }

    #[test]
    fn abnormal_stop_once_and_not_in_an_allowed_place() {
        let mut t = Tracker::new(StateConfig::default());
        let mut all = Vec::new();
        for k in 0..60 {
            let kmh = if k < 10 { 60.0 } else { 0.0 };
            all.extend(t.on_fix("a", fix(k as f64, kmh), false, 0));
        }
        // Stopped from minute 10: 20 minutes later, one alert.
        assert_eq!(kinds(&all), [AlertKind::AbnormalStop]);
        assert_eq!(all[0].at_ms, fix(30.0, 0.0).time_ms);
        assert_eq!(t.state("a"), Some(State::StoppedAbnormally));
        // Moving again, then a new long stop: a new alert.
        all.clear();
        all.extend(t.on_fix("a", fix(61.0, 50.0), false, 0));
        assert_eq!(t.state("a"), Some(State::Driving));
        for k in 62..90 {
            all.extend(t.on_fix("a", fix(k as f64, 0.0), false, 0));
        }
        assert_eq!(kinds(&all), [AlertKind::AbnormalStop]);
        // The same stop inside a depot: nothing.
        let mut cfg = StateConfig::default();
        cfg.allowed_places.push(Place {
            name: "depot".into(),
            lat: 31.3,
            lon: 120.6,
            radius_m: 1000.0,
        });
        let mut t = Tracker::new(cfg);
        let n: usize = (0..60)
            .map(|k| t.on_fix("b", fix(k as f64, 0.0), false, 0).len())
            .sum();
        assert_eq!(n, 0);
        assert_eq!(t.state("b"), Some(State::Stopped));
    }

    #[test]
    fn a_stop_on_an_expressway_is_abnormal_sooner_but_not_in_its_service_area() {
        let mut cfg = StateConfig::default();
        // An expressway running north along 120.6 E; a service area on it.
        cfg.expressways.push(Road {
            name: "G2".into(),
            points: vec![[31.0, 120.6], [31.5, 120.6]],
            half_width_m: 50.0,
        });
        cfg.allowed_places.push(Place {
            name: "service area".into(),
            lat: 31.4,
            lon: 120.6,
            radius_m: 300.0,
        });
        let at = |s: i64, lat: f64, lon: f64| Fix {
            time_ms: T0 + s * 1000,
            lat,
            lon,
            speed_kmh: 0.0,
        };
        let mut t = Tracker::new(cfg);
        // On the expressway (20 m off its line): an alert after 2 minutes, once.
        let mut got = Vec::new();
        for s in (0..=300).step_by(30) {
            got.extend(t.on_fix("a", at(s, 31.2, 120.6002), false, 0));
        }
        assert_eq!(kinds(&got), [AlertKind::AbnormalStop]);
        assert_eq!(got[0].at_ms, T0 + 120_000);
        assert!(got[0].detail.contains("expressway G2"), "{}", got[0].detail);
        // In its service area, or 2 km off it for five minutes: nothing.
        for (id, lat, lon) in [("b", 31.4, 120.6), ("c", 31.2, 120.62)] {
            let n: usize = (0..=300)
                .step_by(30)
                .map(|s| t.on_fix(id, at(s, lat, lon), false, 0).len())
                .sum();
            assert_eq!(n, 0, "{id}");
        }
    }

    #[test]
    fn off_its_registered_route_for_two_minutes() {
        let mut cfg = StateConfig::default();
        cfg.routes.push(Route {
            name: "苏州-无锡".into(),
            plates: vec!["苏E·12345".into()],
            points: vec![[31.30, 120.60], [31.30, 120.80], [31.50, 120.80]],
            corridor_m: 500.0,
        });
        let mut t = Tracker::new(cfg);
        t.set_plate("a", "苏E12345");
        t.set_plate("b", "苏E99999"); // no route: never off it
        let at = |s: i64, lat: f64, lon: f64| Fix {
            time_ms: T0 + s * 1000,
            lat,
            lon,
            speed_kmh: 60.0,
        };
        let mut got = Vec::new();
        // Along the route (the corner too), then 2 km north of it for four minutes.
        for (s, lat, lon) in [
            (0, 31.30, 120.65),
            (60, 31.3003, 120.75),
            (120, 31.40, 120.801),
            (180, 31.32, 120.70),
            (240, 31.32, 120.70),
            (300, 31.32, 120.71),
            (360, 31.32, 120.72),
        ] {
            got.extend(t.on_fix("a", at(s, lat, lon), false, 0));
            got.extend(t.on_fix("b", at(s, lat, lon), false, 0));
        }
        assert_eq!(kinds(&got), [AlertKind::OffRoute], "{got:?}");
        assert_eq!(
            (got[0].terminal.as_str(), got[0].at_ms),
            ("a", T0 + 300_000)
        );
        assert!(got[0].detail.contains("苏州-无锡"), "{}", got[0].detail);
        let d = distance_to_line_m((31.32, 120.70), &[[31.30, 120.60], [31.30, 120.80]]);
        assert!((d - 2_211.0).abs() < 10.0, "{d}");
    }

    #[test]
    fn speeding_sustained_and_by_zone() {
        let mut cfg = StateConfig::default();
        cfg.speed_zones.push(SpeedZone {
            name: "school".into(),
            lat: 31.3,
            lon: 120.6,
            radius_m: 500.0,
            limit_kmh: 30.0,
        });
        let mut t = Tracker::new(cfg);
        // 110 km/h outside the zone for 20 s: not yet; for 40 s: once.
        let far = |s: f64, kmh: f64| Fix {
            time_ms: T0 + (s * 1000.0) as i64,
            lat: 31.5,
            lon: 120.6,
            speed_kmh: kmh,
        };
        assert!(t.on_fix("a", far(0.0, 110.0), false, 0).is_empty());
        assert!(t.on_fix("a", far(20.0, 112.0), false, 0).is_empty());
        let a = t.on_fix("a", far(40.0, 115.0), false, 0);
        assert_eq!(kinds(&a), [AlertKind::Speeding]);
        assert_eq!(a[0].fixes.len(), 3);
        assert!(t.on_fix("a", far(60.0, 118.0), false, 0).is_empty(), "once");
        // 45 km/h in the 30 km/h zone for a minute: an alert.
        let mut got = Vec::new();
        for s in 0..7 {
            got.extend(t.on_fix(
                "b",
                Fix {
                    time_ms: T0 + s * 10_000,
                    lat: 31.3,
                    lon: 120.6,
                    speed_kmh: 45.0,
                },
                false,
                0,
            ));
        }
        assert_eq!(kinds(&got), [AlertKind::Speeding]);
    }

    #[test]
    fn fatigue_after_four_hours_unless_rested() {
        let mut t = Tracker::new(StateConfig::default());
        let mut got = Vec::new();
        for k in 0..=250 {
            got.extend(t.on_fix("a", fix(k as f64, 80.0), false, 0));
        }
        assert_eq!(kinds(&got), [AlertKind::Fatigue]);
        assert_eq!(got[0].at_ms, fix(240.0, 0.0).time_ms);
        // Two hours, a 25-minute rest, three hours: no alert.
        let mut t = Tracker::new(StateConfig::default());
        let mut got = Vec::new();
        for k in 0..=300 {
            let kmh = if (120..145).contains(&k) { 0.0 } else { 80.0 };
            got.extend(t.on_fix("b", fix(k as f64, kmh), false, 0));
        }
        assert!(!kinds(&got).contains(&AlertKind::Fatigue), "{got:?}");
    }

    #[test]
    fn registry_status_once_a_day_while_driving() {
        let mut t = Tracker::new(StateConfig::default());
        let held = [Status::InspectionOverdue];
        // Parked (16:00 Beijing time): nothing; driving: one alert; driving on: no more.
        assert!(t.on_standing("a", fix(0.0, 0.0), &held).is_none());
        let first = t.on_standing("a", fix(1.0, 60.0), &held).expect("an alert");
        assert_eq!(first.kind, AlertKind::RegistryStatus);
        assert_eq!(first.statuses, held);
        assert_eq!(first.at_ms, fix(1.0, 60.0).time_ms);
        assert!(t.on_standing("a", fix(2.0, 60.0), &held).is_none());
        // A new status the same day (listed in one order whatever the registry's): again.
        let more = [Status::InspectionOverdue, Status::HitAndRun];
        let again = t.on_standing("a", fix(3.0, 60.0), &more).expect("an alert");
        assert_eq!(
            again.statuses,
            [Status::HitAndRun, Status::InspectionOverdue]
        );
        assert!(t.on_standing("a", fix(4.0, 60.0), &more[..]).is_none());
        // A status cleared that day: nothing new to say.
        assert!(t
            .on_standing("a", fix(5.0, 60.0), &[Status::HitAndRun])
            .is_none());
        // Past midnight Beijing time (16:00 + 8 h): once more; nothing held: nothing.
        assert!(t
            .on_standing("a", fix(8.0 * 60.0 + 1.0, 60.0), &more)
            .is_some());
        // An older fix sent late (the tracker has seen a newer one): nothing.
        t.on_fix("a", fix(8.0 * 60.0 + 2.0, 60.0), false, 0);
        assert!(t.on_standing("a", fix(7.0 * 60.0, 60.0), &held).is_none());
        assert!(t.on_standing("b", fix(5.0, 60.0), &[]).is_none());
    }

    #[test]
    fn night_coach_and_silence() {
        let mut t = Tracker::new(StateConfig::default());
        // 16:00 + 10.5 h = 02:30 Beijing time.
        let night = fix(630.0, 70.0);
        assert_eq!(
            kinds(&t.on_fix("coach", night, true, night.time_ms)),
            [AlertKind::NightCoach]
        );
        let later = fix(640.0, 70.0);
        assert!(
            t.on_fix("coach", later, true, later.time_ms).is_empty(),
            "once a night"
        );
        assert!(t.on_fix("truck", night, false, night.time_ms).is_empty());
        assert!(
            t.on_fix("coach2", fix(590.0, 70.0), true, later.time_ms)
                .is_empty(),
            "01:50"
        );
        // Silent ten minutes after its last fix: once.
        let last = fix(640.0, 70.0).time_ms;
        assert!(t
            .tick(last + 5 * 60_000)
            .iter()
            .all(|a| a.terminal != "coach"));
        let s = t.tick(last + 11 * 60_000);
        assert!(s
            .iter()
            .any(|a| a.terminal == "coach" && a.kind == AlertKind::TerminalSilent));
        assert!(t
            .tick(last + 20 * 60_000)
            .iter()
            .all(|a| a.terminal != "coach"));
        // An older fix than the last is no news.
        assert!(t.on_fix("coach", fix(1.0, 200.0), true, last).is_empty());
    }
}
