//! Rule `pedestrian_red_light`: a confirmed person track whose foot point leaves a waiting
//! area and enters the crosswalk while the pedestrian signal is red (after a grace period at
//! red onset), and is still inside `min_inside_ms` after it entered, is one violation: exactly one per
//! person per crossing.
//!
//! Input: each frame's visible person tracks, the resolved signal, the frame time. Output:
//! [`Finding`]s. Synchronous and model-free. It must not raise anything while the signal is
//! unknown or stale: such entries are counted instead. People already on the crosswalk when
//! red begins are clearing; a track that first appears inside the crosswalk (a new track or an
//! id switch) never left a waiting area, so it cannot violate.

use std::collections::{HashMap, HashSet};

use protocol::{BBox, LightState, SignalReading};
use serde::Deserialize;

use crate::signal::Resolved;
use crate::zones::{Place, ZoneMap};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedLightConfig {
    /// Crosswalk zone names this rule watches (default: every crosswalk).
    #[serde(default)]
    pub crosswalks: Vec<String>,
    /// Waiting-area zone names a crossing starts from (default: every waiting area).
    #[serde(default)]
    pub waiting_areas: Vec<String>,
    /// No violation within this long after red begins, milliseconds.
    #[serde(default = "d_grace")]
    pub grace_ms: i64,
    /// How long the person must stay inside the crosswalk to confirm the violation,
    /// milliseconds of video time from the first frame inside (time, not frames: a busy node
    /// that skips frames keeps the rule's meaning).
    #[serde(default = "d_inside")]
    pub min_inside_ms: i64,
    /// Longest time between the last frame in a waiting area and the first in the crosswalk.
    #[serde(default = "d_gap")]
    pub max_gap_ms: i64,
    /// Count people riding a bicycle or motorcycle (person box over a two-wheeler box) as
    /// pedestrians.
    #[serde(default)]
    pub include_riders: bool,
    /// The third picture is taken this long after the violation is confirmed.
    #[serde(default = "d_third")]
    pub third_picture_after_ms: i64,
}

fn d_grace() -> i64 {
    2000
}
fn d_inside() -> i64 {
    200
}
fn d_gap() -> i64 {
    2000
}
fn d_third() -> i64 {
    1500
}

impl Default for RedLightConfig {
    fn default() -> Self {
        RedLightConfig {
            crosswalks: vec![],
            waiting_areas: vec![],
            grace_ms: d_grace(),
            min_inside_ms: d_inside(),
            max_gap_ms: d_gap(),
            include_riders: false,
            third_picture_after_ms: d_third(),
        }
    }
}

/// One person in one frame, as the rule sees them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Person {
    pub track_id: u64,
    pub bbox: BBox,
    /// Riding a bicycle or motorcycle.
    pub rider: bool,
}

/// A confirmed violation, with the frames to take the staged pictures from.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub track_id: u64,
    pub crosswalk: String,
    pub waiting_area: String,
    /// Last frame in the waiting area: (frame seq, time, box).
    pub left: (u64, i64, BBox),
    /// First frame in the crosswalk.
    pub entered: (u64, i64, BBox),
    /// Frame the violation was confirmed in (mid-crosswalk).
    pub confirmed: (u64, i64, BBox),
    pub signal: SignalReading,
    pub signal_age_ms: i64,
}

#[derive(Debug, Clone, Default)]
struct PersonState {
    place: Option<Place>,
    /// Last frame in a waiting area: (waiting index, seq, time, box).
    last_waiting: Option<(usize, u64, i64, BBox)>,
    /// Entered the crosswalk on red: (crosswalk index, seq, time, box, signal, age).
    candidate: Option<(usize, u64, i64, BBox, SignalReading, i64)>,
    reported: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleCounters {
    /// Entries into a crosswalk from a waiting area.
    pub entries: u64,
    /// Entries while red, inside the grace period.
    pub entries_in_grace: u64,
    /// Entries while the signal was unknown or stale: no decision possible.
    pub entries_signal_unknown: u64,
    pub violations: u64,
    /// Frames evaluated while the signal was unknown.
    pub frames_signal_unknown: u64,
}

pub struct RedLightRule {
    cfg: RedLightConfig,
    zones: ZoneMap,
    watched_crosswalks: Vec<bool>,
    watched_waiting: Vec<bool>,
    people: HashMap<u64, PersonState>,
    pub counters: RuleCounters,
}

impl RedLightRule {
    /// `zones` must already be validated; names in `cfg` are checked by the camera config.
    pub fn new(cfg: RedLightConfig, zones: ZoneMap) -> Self {
        let pick = |names: &[String], list: &[(String, crate::zones::Polygon)]| -> Vec<bool> {
            list.iter()
                .map(|(n, _)| names.is_empty() || names.contains(n))
                .collect()
        };
        RedLightRule {
            watched_crosswalks: pick(&cfg.crosswalks, &zones.crosswalks),
            watched_waiting: pick(&cfg.waiting_areas, &zones.waiting),
            cfg,
            zones,
            people: HashMap::new(),
            counters: RuleCounters::default(),
        }
    }

    pub fn config(&self) -> &RedLightConfig {
        &self.cfg
    }

    pub fn zones(&self) -> &ZoneMap {
        &self.zones
    }

    /// Evaluates one frame. `people` are the person tracks visible in it; tracks not listed
    /// keep their state until `forget` is called for them (they may reappear after a gap).
    pub fn evaluate(
        &mut self,
        seq: u64,
        t_ms: i64,
        width: u32,
        height: u32,
        people: &[Person],
        signal: &Resolved,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        if signal.reading.is_none() {
            self.counters.frames_signal_unknown += 1;
        }
        for p in people {
            if p.rider && !self.cfg.include_riders {
                continue;
            }
            let mut place = self.zones.place_of(&p.bbox, width, height);
            // Zones the rule does not watch count as outside.
            match place {
                Place::Crosswalk(i) if !self.watched_crosswalks[i] => place = Place::Outside,
                Place::Waiting(i) if !self.watched_waiting[i] => place = Place::Outside,
                _ => {}
            }
            let st = self.people.entry(p.track_id).or_default();
            let prev = st.place.replace(place);
            match place {
                Place::Waiting(i) => {
                    st.last_waiting = Some((i, seq, t_ms, p.bbox));
                    st.candidate = None;
                    st.reported = false; // back on a kerb: a new crossing may follow
                }
                Place::Outside => {
                    st.candidate = None;
                }
                Place::Crosswalk(c) => {
                    let entering = !matches!(prev, Some(Place::Crosswalk(_)));
                    if entering {
                        st.candidate = None;
                        let from_wait = st
                            .last_waiting
                            .filter(|w| t_ms - w.2 <= self.cfg.max_gap_ms);
                        if let (Some(w), false) = (from_wait, st.reported) {
                            self.counters.entries += 1;
                            tracing::debug!(
                                track = p.track_id,
                                frame = seq,
                                t_ms,
                                from = %self.zones.waiting[w.0].0,
                                signal = ?signal.reading.as_ref().map(|r| (r.state, t_ms - r.since_ms)),
                                "Person entered the crosswalk from a waiting area"
                            );
                            match &signal.reading {
                                None => self.counters.entries_signal_unknown += 1,
                                Some(r) if r.state == LightState::Red => {
                                    if t_ms - r.since_ms < self.cfg.grace_ms {
                                        self.counters.entries_in_grace += 1;
                                    } else {
                                        st.candidate =
                                            Some((c, seq, t_ms, p.bbox, r.clone(), signal.age_ms));
                                    }
                                }
                                Some(_) => {}
                            }
                        }
                    }
                    if let Some(entered_ms) = st.candidate.as_ref().map(|c| c.2) {
                        if t_ms - entered_ms >= self.cfg.min_inside_ms && !st.reported {
                            let (ci, eseq, et, eb, sig, age) =
                                st.candidate.clone().expect("checked");
                            let (wi, lseq, lt, lb) = st
                                .last_waiting
                                .expect("a candidate came from a waiting area");
                            st.reported = true;
                            self.counters.violations += 1;
                            out.push(Finding {
                                track_id: p.track_id,
                                crosswalk: self.zones.crosswalks[ci].0.clone(),
                                waiting_area: self.zones.waiting[wi].0.clone(),
                                left: (lseq, lt, lb),
                                entered: (eseq, et, eb),
                                confirmed: (seq, t_ms, p.bbox),
                                signal: sig,
                                signal_age_ms: age,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    /// Drops the state of tracks that ended.
    pub fn forget(&mut self, ended: &HashSet<u64>) {
        self.people.retain(|id, _| !ended.contains(id));
    }
}

/// Marks people whose box sits over a bicycle or motorcycle box as riders.
pub fn mark_riders(people: &mut [Person], two_wheelers: &[BBox]) {
    for p in people {
        let (fx, fy) = p.bbox.foot();
        p.rider = two_wheelers.iter().any(|b| {
            let overlap = p.bbox.iou(b) > 0.1;
            let foot_on = fx >= b.x1
                && fx <= b.x2
                && fy >= b.y1 - 0.2 * b.height()
                && fy <= b.y2 + 0.1 * b.height();
            overlap && foot_on
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zones::{ZoneConfig, ZoneKind};
    use protocol::SignalSource;

    // A 100x100 frame: north kerb y < 30, crosswalk 30..70, south kerb y > 70.
    fn rule(cfg: RedLightConfig) -> RedLightRule {
        let zones = vec![
            ZoneConfig {
                name: "wait_n".into(),
                kind: ZoneKind::WaitingArea,
                polygon: vec![[0.0, 0.0], [1.0, 0.0], [1.0, 0.3], [0.0, 0.3]],
                lane: None,
            },
            ZoneConfig {
                name: "cw".into(),
                kind: ZoneKind::Crosswalk,
                polygon: vec![[0.0, 0.3], [1.0, 0.3], [1.0, 0.7], [0.0, 0.7]],
                lane: None,
            },
            ZoneConfig {
                name: "wait_s".into(),
                kind: ZoneKind::WaitingArea,
                polygon: vec![[0.0, 0.7], [1.0, 0.7], [1.0, 1.0], [0.0, 1.0]],
                lane: None,
            },
        ];
        RedLightRule::new(cfg, ZoneMap::new(&zones))
    }

    fn at(id: u64, foot_y: f32) -> Person {
        Person {
            track_id: id,
            bbox: BBox::new(40.0, foot_y - 20.0, 50.0, foot_y),
            rider: false,
        }
    }

    fn red_since(since: i64) -> Resolved {
        Resolved {
            reading: Some(SignalReading {
                phase: "p".into(),
                state: LightState::Red,
                since_ms: since,
                source: SignalSource::Plan,
                observed_ms: 0,
            }),
            age_ms: 0,
        }
    }

    fn green() -> Resolved {
        Resolved {
            reading: Some(SignalReading {
                phase: "p".into(),
                state: LightState::Green,
                since_ms: 0,
                source: SignalSource::Plan,
                observed_ms: 0,
            }),
            age_ms: 0,
        }
    }

    fn unknown() -> Resolved {
        Resolved {
            reading: None,
            age_ms: 0,
        }
    }

    /// Walks person `id` from y=10 to y=90 in steps of 5, one frame each 100 ms from `t0`,
    /// with the signal `sig(t)`; returns the findings.
    fn walk(r: &mut RedLightRule, id: u64, t0: i64, sig: impl Fn(i64) -> Resolved) -> Vec<Finding> {
        let mut out = Vec::new();
        for (k, y) in (10..=90).step_by(5).enumerate() {
            let t = t0 + k as i64 * 100;
            out.extend(r.evaluate(k as u64, t, 100, 100, &[at(id, y as f32)], &sig(t)));
        }
        out
    }

    #[test]
    fn crossing_on_red_is_one_violation_with_its_frames() {
        let mut r = rule(RedLightConfig::default());
        let f = walk(&mut r, 7, 10_000, |_| red_since(0));
        assert_eq!(f.len(), 1);
        let f = &f[0];
        assert_eq!(
            (f.track_id, f.waiting_area.as_str(), f.crosswalk.as_str()),
            (7, "wait_n", "cw")
        );
        // Last in the kerb at y=25 (frame 3), entered at y=30..35, confirmed 3 frames in.
        assert_eq!(f.left.0, 3);
        assert_eq!(f.entered.0, 4);
        assert_eq!(f.confirmed.0, 6);
        assert_eq!(r.counters.violations, 1);
    }

    #[test]
    fn crossing_on_green_or_in_grace_is_not() {
        let mut r = rule(RedLightConfig::default());
        assert!(walk(&mut r, 1, 10_000, |_| green()).is_empty());
        // Red began 1 s before the person stepped in; grace is 2 s.
        assert!(walk(&mut r, 2, 10_000, |_| red_since(9_500)).is_empty());
        assert_eq!(r.counters.entries_in_grace, 1);
        // The same after the grace period is a violation.
        assert_eq!(walk(&mut r, 3, 10_000, |_| red_since(7_000)).len(), 1);
    }

    #[test]
    fn red_starting_mid_crossing_is_clearing() {
        let mut r = rule(RedLightConfig {
            grace_ms: 0,
            ..Default::default()
        });
        // Green until the person is in the middle (t0 + 800 ms), red afterwards.
        let f = walk(&mut r, 1, 10_000, |t| {
            if t < 10_800 {
                green()
            } else {
                red_since(10_800)
            }
        });
        assert!(f.is_empty(), "{f:?}");
    }

    #[test]
    fn flickering_signal_only_counts_steady_red_entries() {
        // The resolver's hysteresis removes flicker; here the rule sees a one-frame red at the
        // moment of entry with onset that frame: inside the grace period, so not a violation.
        let mut r = rule(RedLightConfig::default());
        let f = walk(&mut r, 1, 10_000, |t| {
            if t == 10_400 {
                red_since(10_400)
            } else {
                green()
            }
        });
        assert!(f.is_empty());
    }

    #[test]
    fn track_id_switch_mid_crossing_gives_no_second_violation() {
        let mut r = rule(RedLightConfig::default());
        let mut found = Vec::new();
        // Track 1 walks from the kerb to y=50 and is lost; track 2 continues from y=55.
        for (k, y) in (10..=50).step_by(5).enumerate() {
            found.extend(r.evaluate(
                k as u64,
                10_000 + k as i64 * 100,
                100,
                100,
                &[at(1, y as f32)],
                &red_since(0),
            ));
        }
        r.forget(&HashSet::from([1]));
        for (k, y) in (55..=90).step_by(5).enumerate() {
            found.extend(r.evaluate(
                20 + k as u64,
                11_000 + k as i64 * 100,
                100,
                100,
                &[at(2, y as f32)],
                &red_since(0),
            ));
        }
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].track_id, 1);
    }

    #[test]
    fn standing_on_the_kerb_is_not() {
        let mut r = rule(RedLightConfig::default());
        for k in 0..200 {
            // Swaying at the kerb's edge (y 25..29) on red.
            let y = 25.0 + (k % 5) as f32;
            assert!(r
                .evaluate(k, k as i64 * 100, 100, 100, &[at(1, y)], &red_since(0))
                .is_empty());
        }
        assert_eq!(r.counters.entries, 0);
    }

    #[test]
    fn unknown_signal_raises_nothing_and_is_counted() {
        let mut r = rule(RedLightConfig::default());
        assert!(walk(&mut r, 1, 10_000, |_| unknown()).is_empty());
        assert_eq!(r.counters.entries_signal_unknown, 1);
        assert!(r.counters.frames_signal_unknown >= 17);
    }

    #[test]
    fn stepping_in_and_back_out_quickly_is_not_confirmed() {
        let mut r = rule(RedLightConfig::default());
        let ys = [20.0, 25.0, 32.0, 34.0, 25.0, 20.0];
        let f: Vec<Finding> = ys
            .iter()
            .enumerate()
            .flat_map(|(k, y)| {
                r.evaluate(
                    k as u64,
                    10_000 + k as i64 * 100,
                    100,
                    100,
                    &[at(1, *y)],
                    &red_since(0),
                )
            })
            .collect();
        assert!(f.is_empty());
    }

    #[test]
    fn a_second_crossing_is_a_second_violation_riders_excluded() {
        let mut r = rule(RedLightConfig::default());
        assert_eq!(walk(&mut r, 1, 10_000, |_| red_since(0)).len(), 1);
        // Back north: from the south kerb into the crosswalk again.
        let mut f = Vec::new();
        for (k, y) in (75..=95)
            .rev()
            .step_by(5)
            .chain((10..=70).rev().step_by(5))
            .enumerate()
        {
            f.extend(r.evaluate(
                100 + k as u64,
                20_000 + k as i64 * 100,
                100,
                100,
                &[at(1, y as f32)],
                &red_since(0),
            ));
        }
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].waiting_area, "wait_s");
        let mut riders = rule(RedLightConfig::default());
        let mut g = Vec::new();
        for (k, y) in (10..=90).step_by(5).enumerate() {
            let mut p = [at(9, y as f32)];
            mark_riders(
                &mut p,
                &[BBox::new(38.0, y as f32 - 15.0, 52.0, y as f32 + 2.0)],
            );
            g.extend(riders.evaluate(
                k as u64,
                k as i64 * 100 + 10_000,
                100,
                100,
                &p,
                &red_since(0),
            ));
        }
        assert!(g.is_empty(), "riders are not pedestrians unless configured");
    }
}
