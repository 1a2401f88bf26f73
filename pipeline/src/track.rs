//! Stage `track`: a ByteTrack-style multi-object tracker.
//!
//! Input: one frame's detections (frame pixels) and the frame time. Output: [`TrackEvent`]s,
//! a track starting (confirmed) or ending. Synchronous and model-free; tests and benches drive
//! it directly.
//!
//! Per frame: every track is predicted by a constant-velocity Kalman filter; detections at or
//! above `high_score` are associated with followed and lost tracks by IoU; tracks still
//! unmatched try the low-score detections (which rescue occluded objects without starting
//! tracks from noise); tentative tracks take what high-score detections are left; the rest
//! start tentative tracks. A tentative track is confirmed after `confirm_hits` consecutive
//! matches and gets the next stable id; a confirmed track unmatched for more than
//! `max_lost_secs` of video time ends. Detections only match tracks of their own class.
//!
//! Time, not frames: the filter predicts over the time since the previous frame, in units of
//! the source's frame interval ([`Tracker::set_frame_interval_ms`]), so a node that skips
//! frames when busy predicts as far as the objects moved; with every frame processed each
//! step is one interval, as in ByteTrack.
//!
//! Association is greedy by highest IoU rather than an optimal assignment: with the IoU gate
//! the two agree on all but crowded, heavily overlapping scenes, and greedy is simple and fast.

use protocol::{BBox, PathPoint};

use serde::Deserialize;

use crate::Detection;

/// ByteTrack-style tracker settings. Scores are detector confidences, IoUs in 0..1.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackerConfig {
    /// Detections at or above this score take part in the first association.
    #[serde(default = "d_high")]
    pub high_score: f32,
    /// Detections between this and `high_score` may only extend tracks already followed.
    #[serde(default = "d_low")]
    pub low_score: f32,
    /// An unmatched detection at or above this score starts a tentative track.
    #[serde(default = "d_new")]
    pub new_track_score: f32,
    /// Minimum IoU for the first (high score) association.
    #[serde(default = "d_match")]
    pub match_iou: f32,
    /// Minimum IoU for the second (low score) association.
    #[serde(default = "d_low_match")]
    pub low_match_iou: f32,
    /// Consecutive matched frames before a tentative track is confirmed.
    #[serde(default = "d_confirm")]
    pub confirm_hits: u32,
    /// How long a confirmed track may go unmatched before it ends, seconds of video time
    /// (not frames: a busy node that skips frames does not shorten it).
    #[serde(default = "d_lost")]
    pub max_lost_secs: f32,
}

fn d_high() -> f32 {
    0.5
}
fn d_low() -> f32 {
    0.1
}
fn d_new() -> f32 {
    0.6
}
fn d_match() -> f32 {
    0.2
}
fn d_low_match() -> f32 {
    0.5
}
fn d_confirm() -> u32 {
    3
}
fn d_lost() -> f32 {
    3.0
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            high_score: d_high(),
            low_score: d_low(),
            new_track_score: d_new(),
            match_iou: d_match(),
            low_match_iou: d_low_match(),
            confirm_hits: d_confirm(),
            max_lost_secs: d_lost(),
        }
    }
}

impl TrackerConfig {
    /// Checks the settings, adding each problem (naming `at`) to `errors`.
    pub fn validate(&self, at: &str, errors: &mut Vec<String>) {
        for (name, v) in [
            ("high_score", self.high_score),
            ("low_score", self.low_score),
            ("new_track_score", self.new_track_score),
            ("match_iou", self.match_iou),
            ("low_match_iou", self.low_match_iou),
        ] {
            if !(0.0..=1.0).contains(&v) {
                errors.push(format!("{at}.{name} = {v} is outside 0..1"));
            }
        }
        if self.low_score > self.high_score {
            errors.push(format!(
                "{at}.low_score {} is above high_score {}; low_score must be the lower one",
                self.low_score, self.high_score
            ));
        }
        if self.confirm_hits == 0 {
            errors.push(format!("{at}.confirm_hits must be at least 1"));
        }
        if !(0.0..=600.0).contains(&self.max_lost_secs) {
            errors.push(format!(
                "{at}.max_lost_secs = {} is outside 0..600 seconds",
                self.max_lost_secs
            ));
        }
    }
}

/// Longest path kept in memory per track before it is thinned.
const MAX_PATH_POINTS: usize = 512;
/// Points in the path summary an event carries.
pub const PATH_SUMMARY_POINTS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackState {
    Tentative,
    Confirmed,
    Lost,
}

/// Kalman filter over (cx, cy, aspect, height), each with its velocity. The process and
/// measurement noise are diagonal per coordinate, so the 8-state filter splits exactly into
/// four independent 2-state (position, velocity) filters.
#[derive(Debug, Clone)]
struct Kalman {
    x: [[f32; 2]; 4],
    p: [[f32; 3]; 4], // p00, p01, p11 per coordinate
}

const STD_POS: f32 = 1.0 / 20.0;
const STD_VEL: f32 = 1.0 / 160.0;

fn to_xyah(b: &BBox) -> [f32; 4] {
    let (cx, cy) = b.center();
    let h = b.height().max(1e-3);
    [cx, cy, b.width() / h, h]
}

impl Kalman {
    fn new(b: &BBox) -> Kalman {
        let z = to_xyah(b);
        let h = z[3];
        let sp = [
            2.0 * STD_POS * h,
            2.0 * STD_POS * h,
            1e-2,
            2.0 * STD_POS * h,
        ];
        let sv = [
            10.0 * STD_VEL * h,
            10.0 * STD_VEL * h,
            1e-5,
            10.0 * STD_VEL * h,
        ];
        Kalman {
            x: std::array::from_fn(|i| [z[i], 0.0]),
            p: std::array::from_fn(|i| [sp[i] * sp[i], 0.0, sv[i] * sv[i]]),
        }
    }

    /// Moves the state `dt` frame intervals ahead (1: the next frame). The process noise
    /// grows with the time stepped over.
    fn predict(&mut self, dt: f32) {
        let h = self.x[3][0].max(1e-3);
        let qp = [STD_POS * h, STD_POS * h, 1e-2, STD_POS * h];
        let qv = [STD_VEL * h, STD_VEL * h, 1e-5, STD_VEL * h];
        for i in 0..4 {
            let [p, v] = self.x[i];
            self.x[i] = [p + v * dt, v];
            let [p00, p01, p11] = self.p[i];
            self.p[i] = [
                p00 + 2.0 * dt * p01 + dt * dt * p11 + qp[i] * qp[i] * dt,
                p01 + dt * p11,
                p11 + qv[i] * qv[i] * dt,
            ];
        }
        // Height cannot go negative however fast a box was shrinking.
        if self.x[3][0] < 1.0 {
            self.x[3] = [1.0, 0.0];
        }
    }

    fn update(&mut self, b: &BBox) {
        let z = to_xyah(b);
        let h = self.x[3][0].max(1e-3);
        let r = [STD_POS * h, STD_POS * h, 1e-1, STD_POS * h];
        for i in 0..4 {
            let [p00, p01, p11] = self.p[i];
            let s = p00 + r[i] * r[i];
            let (k0, k1) = (p00 / s, p01 / s);
            let y = z[i] - self.x[i][0];
            self.x[i][0] += k0 * y;
            self.x[i][1] += k1 * y;
            self.p[i] = [(1.0 - k0) * p00, (1.0 - k0) * p01, p11 - k1 * p01];
        }
    }

    fn bbox(&self) -> BBox {
        let (cx, cy, a, h) = (
            self.x[0][0],
            self.x[1][0],
            self.x[2][0].max(0.0),
            self.x[3][0].max(0.0),
        );
        let w = a * h;
        BBox::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)
    }
}

#[derive(Debug, Clone)]
pub struct Track {
    /// Stable id, assigned at confirmation (0 while tentative).
    pub id: u64,
    pub class_id: usize,
    pub state: TrackState,
    kf: Kalman,
    /// Last matched detection box.
    pub bbox: BBox,
    pub score: f32,
    /// Consecutive frames matched.
    pub streak: u32,
    /// Frames matched in all.
    pub hits: u32,
    pub first_box: BBox,
    pub first_time_ms: i64,
    pub last_time_ms: i64,
    pub score_sum: f32,
    pub max_score: f32,
    path: Vec<PathPoint>,
    path_stride: usize,
    path_seen: usize,
    /// Whether the track was matched in the latest frame.
    pub matched_now: bool,
    /// Score summed per class over the matches (classes of one group can alternate, e.g. a
    /// van read as car or truck); `class_id` is the class with the most.
    pub class_votes: Vec<(usize, f32)>,
}

impl Track {
    fn new(d: &Detection, t: i64) -> Track {
        let mut tr = Track {
            id: 0,
            class_id: d.class_id,
            state: TrackState::Tentative,
            kf: Kalman::new(&d.bbox),
            bbox: d.bbox,
            score: d.score,
            streak: 1,
            hits: 1,
            first_box: d.bbox,
            first_time_ms: t,
            last_time_ms: t,
            score_sum: d.score,
            max_score: d.score,
            path: Vec::new(),
            path_stride: 1,
            path_seen: 0,
            matched_now: true,
            class_votes: vec![(d.class_id, d.score)],
        };
        tr.push_path(t);
        tr
    }

    fn push_path(&mut self, t: i64) {
        if self.path_seen.is_multiple_of(self.path_stride) {
            let (x, y) = self.bbox.foot();
            self.path.push(PathPoint { t_ms: t, x, y });
            if self.path.len() >= MAX_PATH_POINTS {
                // Thin to every other point and sample half as often from now on.
                let mut i = 0;
                self.path.retain(|_| {
                    i += 1;
                    i % 2 == 1
                });
                self.path_stride *= 2;
            }
        }
        self.path_seen += 1;
    }

    fn hit(&mut self, d: &Detection, t: i64) {
        self.kf.update(&d.bbox);
        self.bbox = d.bbox;
        self.score = d.score;
        self.streak += 1;
        self.hits += 1;
        self.last_time_ms = t;
        self.score_sum += d.score;
        match self.class_votes.iter_mut().find(|(c, _)| *c == d.class_id) {
            Some(v) => v.1 += d.score,
            None => self.class_votes.push((d.class_id, d.score)),
        }
        if let Some((c, _)) = self.class_votes.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            self.class_id = *c;
        }
        self.max_score = self.max_score.max(d.score);
        self.matched_now = true;
        self.push_path(t);
    }

    /// Predicted box for the current frame.
    pub fn predicted(&self) -> BBox {
        self.kf.bbox()
    }

    pub fn mean_score(&self) -> f32 {
        self.score_sum / self.hits.max(1) as f32
    }

    /// The foot-point path thinned to at most `n` points, first and last always kept.
    pub fn path_summary(&self, n: usize) -> Vec<PathPoint> {
        let mut pts = self.path.clone();
        let (x, y) = self.bbox.foot();
        if pts.last().is_none_or(|p| p.t_ms != self.last_time_ms) {
            pts.push(PathPoint {
                t_ms: self.last_time_ms,
                x,
                y,
            });
        }
        if pts.len() <= n || n < 2 {
            return pts;
        }
        (0..n).map(|i| pts[i * (pts.len() - 1) / (n - 1)]).collect()
    }

    pub fn displacement_px(&self) -> f32 {
        let (x0, y0) = self.first_box.foot();
        let (x1, y1) = self.bbox.foot();
        ((x1 - x0).powi(2) + (y1 - y0).powi(2)).sqrt()
    }
}

#[derive(Debug, Clone)]
pub enum TrackEvent {
    /// The track was confirmed in this frame.
    Started(Track),
    /// The track ended: lost for too long, or the stream ended.
    Ended(Track),
}

pub struct Tracker {
    cfg: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
    /// Class id -> association group; empty: every class is its own group.
    groups: Vec<usize>,
    /// The source's frame interval, ms: the filter's time step.
    frame_interval_ms: f32,
    /// Time of the previous update.
    last_ms: Option<i64>,
}

/// Frame interval assumed until the source reports one (10 FPS).
const DEFAULT_FRAME_INTERVAL_MS: f32 = 100.0;
/// Longest step the filter predicts over at once, frame intervals.
const MAX_STEP: f32 = 100.0;

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            tracks: Vec::new(),
            next_id: 1,
            groups: Vec::new(),
            frame_interval_ms: DEFAULT_FRAME_INTERVAL_MS,
            last_ms: None,
        }
    }

    /// The source's frame interval (ms between decoded frames, whether or not each is
    /// processed): the unit the motion model steps in. Ignored unless positive.
    pub fn set_frame_interval_ms(&mut self, ms: f32) {
        if ms.is_finite() && ms > 0.0 {
            self.frame_interval_ms = ms;
        }
    }

    /// Classes that may stand for one object (`groups[class] = group`): tracks follow
    /// detections of any class of their group, and of two detections of one group
    /// overlapping by IoU 0.7 or more only the higher-scoring one is kept.
    pub fn with_class_groups(mut self, groups: Vec<usize>) -> Tracker {
        self.groups = groups;
        self
    }

    fn group(&self, class: usize) -> usize {
        self.groups
            .get(class)
            .copied()
            .unwrap_or(usize::MAX - class)
    }

    /// All live tracks (tentative, confirmed and lost).
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Confirmed tracks matched in the latest frame.
    pub fn visible(&self) -> impl Iterator<Item = &Track> {
        self.tracks
            .iter()
            .filter(|t| t.state == TrackState::Confirmed && t.matched_now)
    }

    pub fn update(&mut self, dets: &[Detection], time_ms: i64) -> Vec<TrackEvent> {
        let deduped: Vec<Detection>;
        let dets = if self.groups.is_empty() {
            dets
        } else {
            let mut order: Vec<usize> = (0..dets.len()).collect();
            order.sort_by(|&a, &b| dets[b].score.total_cmp(&dets[a].score));
            let mut keep: Vec<usize> = Vec::new();
            for i in order {
                let g = self.group(dets[i].class_id);
                if !keep.iter().any(|&k| {
                    self.group(dets[k].class_id) == g
                        && dets[k].class_id != dets[i].class_id
                        && dets[k].bbox.iou(&dets[i].bbox) >= 0.7
                }) {
                    keep.push(i);
                }
            }
            keep.sort_unstable();
            deduped = keep.into_iter().map(|i| dets[i].clone()).collect();
            &deduped
        };
        // Frame intervals since the previous update (1 with every frame processed); a
        // clock that stood still or went back steps one interval.
        let dt = match self.last_ms {
            Some(prev) if time_ms > prev => {
                ((time_ms - prev) as f32 / self.frame_interval_ms).min(MAX_STEP)
            }
            _ => 1.0,
        };
        self.last_ms = Some(time_ms);
        let groups = &self.groups;
        let cfg = &self.cfg;
        for t in &mut self.tracks {
            t.kf.predict(dt);
            t.matched_now = false;
        }
        let high: Vec<usize> = (0..dets.len())
            .filter(|&i| dets[i].score >= cfg.high_score)
            .collect();
        let low: Vec<usize> = (0..dets.len())
            .filter(|&i| dets[i].score >= cfg.low_score && dets[i].score < cfg.high_score)
            .collect();

        // 1. Followed and lost tracks against high-score detections.
        let pool: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].state != TrackState::Tentative)
            .collect();
        let (m1, rest_tracks, rest_high) =
            greedy_match(&self.tracks, groups, &pool, dets, &high, cfg.match_iou);
        // 2. Tracks followed in the previous frame, still unmatched, against low-score ones.
        let followed: Vec<usize> = rest_tracks
            .into_iter()
            .filter(|&i| self.tracks[i].state == TrackState::Confirmed)
            .collect();
        let (m2, _, _) = greedy_match(
            &self.tracks,
            groups,
            &followed,
            dets,
            &low,
            cfg.low_match_iou,
        );
        // 3. Tentative tracks against the high-score detections left.
        let tentative: Vec<usize> = (0..self.tracks.len())
            .filter(|&i| self.tracks[i].state == TrackState::Tentative)
            .collect();
        let (m3, _, rest_high) = greedy_match(
            &self.tracks,
            groups,
            &tentative,
            dets,
            &rest_high,
            cfg.match_iou,
        );

        let mut events = Vec::new();
        for (ti, di) in m1.into_iter().chain(m2).chain(m3) {
            let t = &mut self.tracks[ti];
            t.hit(&dets[di], time_ms);
            match t.state {
                TrackState::Lost => t.state = TrackState::Confirmed,
                TrackState::Tentative if t.streak >= cfg.confirm_hits => {
                    t.state = TrackState::Confirmed;
                    t.id = self.next_id;
                    self.next_id += 1;
                    events.push(TrackEvent::Started(t.clone()));
                }
                _ => {}
            }
        }
        // Unmatched: tentative tracks die, confirmed ones are lost, long-lost ones end.
        let max_lost_ms = (cfg.max_lost_secs as f64 * 1000.0).round() as i64;
        let mut kept = Vec::with_capacity(self.tracks.len());
        for mut t in self.tracks.drain(..) {
            if t.matched_now {
                kept.push(t);
                continue;
            }
            t.streak = 0;
            match t.state {
                TrackState::Tentative => {}
                TrackState::Confirmed | TrackState::Lost => {
                    t.state = TrackState::Lost;
                    if time_ms - t.last_time_ms > max_lost_ms {
                        events.push(TrackEvent::Ended(t));
                    } else {
                        kept.push(t);
                    }
                }
            }
        }
        self.tracks = kept;
        for &di in &rest_high {
            if dets[di].score >= cfg.new_track_score {
                let mut t = Track::new(&dets[di], time_ms);
                if cfg.confirm_hits <= 1 {
                    t.state = TrackState::Confirmed;
                    t.id = self.next_id;
                    self.next_id += 1;
                    events.push(TrackEvent::Started(t.clone()));
                }
                self.tracks.push(t);
            }
        }
        events
    }

    /// Ends every confirmed track (end of stream); tentative ones are dropped.
    pub fn finish(&mut self) -> Vec<TrackEvent> {
        self.tracks
            .drain(..)
            .filter(|t| t.state != TrackState::Tentative)
            .map(TrackEvent::Ended)
            .collect()
    }
}

/// Greedy IoU association between `tracks[ti]` (predicted boxes) and `dets[di]` of the same
/// class. Returns matches and the unmatched track and detection indices, in input order.
fn greedy_match(
    tracks: &[Track],
    groups: &[usize],
    ti: &[usize],
    dets: &[Detection],
    di: &[usize],
    min_iou: f32,
) -> (Vec<(usize, usize)>, Vec<usize>, Vec<usize>) {
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    let predicted: Vec<BBox> = ti.iter().map(|&t| tracks[t].predicted()).collect();
    for (k, &t) in ti.iter().enumerate() {
        for &d in di {
            let group = |c: usize| groups.get(c).copied().unwrap_or(usize::MAX - c);
            if group(tracks[t].class_id) != group(dets[d].class_id) {
                continue;
            }
            let iou = predicted[k].iou(&dets[d].bbox);
            if iou >= min_iou && iou > 0.0 {
                pairs.push((iou, t, d));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut used_t = vec![false; tracks.len()];
    let mut used_d = vec![false; dets.len()];
    let mut matches = Vec::new();
    for (_, t, d) in pairs {
        if !used_t[t] && !used_d[d] {
            used_t[t] = true;
            used_d[d] = true;
            matches.push((t, d));
        }
    }
    let rest_t = ti.iter().copied().filter(|&t| !used_t[t]).collect();
    let rest_d = di.iter().copied().filter(|&d| !used_d[d]).collect();
    (matches, rest_t, rest_d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn det(class_id: usize, score: f32, x: f32, y: f32) -> Detection {
        Detection {
            class_id,
            score,
            bbox: BBox::new(x, y, x + 40.0, y + 100.0),
        }
    }

    fn run(tr: &mut Tracker, frames: &[Vec<Detection>]) -> Vec<TrackEvent> {
        let mut ev = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            ev.extend(tr.update(f, i as i64 * 100));
        }
        ev.extend(tr.finish());
        ev
    }

    fn ids(ev: &[TrackEvent]) -> (Vec<u64>, Vec<u64>) {
        let mut s = Vec::new();
        let mut e = Vec::new();
        for x in ev {
            match x {
                TrackEvent::Started(t) => s.push(t.id),
                TrackEvent::Ended(t) => e.push(t.id),
            }
        }
        (s, e)
    }

    #[test]
    fn one_walker_is_one_track_confirmed_after_three_hits() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let frames: Vec<Vec<Detection>> = (0..50)
            .map(|i| vec![det(0, 0.8, 10.0 + 4.0 * i as f32, 50.0)])
            .collect();
        let e1 = tr.update(&frames[0], 0);
        let e2 = tr.update(&frames[1], 100);
        assert!(e1.is_empty() && e2.is_empty());
        let e3 = tr.update(&frames[2], 200);
        assert!(matches!(&e3[..], [TrackEvent::Started(t)] if t.id == 1 && t.first_time_ms == 0));
        let mut ev = Vec::new();
        for (i, f) in frames.iter().enumerate().skip(3) {
            ev.extend(tr.update(f, i as i64 * 100));
        }
        ev.extend(tr.finish());
        match &ev[..] {
            [TrackEvent::Ended(t)] => {
                assert_eq!((t.id, t.hits), (1, 50));
                assert_eq!(t.last_time_ms, 4900);
                assert!((t.displacement_px() - 196.0).abs() < 1e-3);
                let p = t.path_summary(PATH_SUMMARY_POINTS);
                assert_eq!(p.len(), PATH_SUMMARY_POINTS);
                assert_eq!(p.first().unwrap().t_ms, 0);
                assert_eq!(p.last().unwrap().t_ms, 4900);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn low_score_detections_keep_a_track_but_never_start_one() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut frames: Vec<Vec<Detection>> = (0..5)
            .map(|i| vec![det(0, 0.9, 10.0 + 2.0 * i as f32, 50.0)])
            .collect();
        // Occluded: score drops to 0.3 for 10 frames; a lone 0.3 detection elsewhere.
        frames.extend((5..15).map(|i| {
            vec![
                det(0, 0.3, 10.0 + 2.0 * i as f32, 50.0),
                det(0, 0.3, 400.0, 300.0),
            ]
        }));
        frames.extend((15..20).map(|i| vec![det(0, 0.9, 10.0 + 2.0 * i as f32, 50.0)]));
        let ev = run(&mut tr, &frames);
        let (s, e) = ids(&ev);
        assert_eq!((s, e), (vec![1], vec![1]));
        if let TrackEvent::Ended(t) = &ev[1] {
            assert_eq!(t.hits, 20);
        }
    }

    #[test]
    fn short_gap_keeps_the_id_long_gap_ends_the_track() {
        let cfg = TrackerConfig {
            max_lost_secs: 0.5,
            ..TrackerConfig::default()
        };
        let mut tr = Tracker::new(cfg);
        let walker = |i: usize| vec![det(0, 0.9, 10.0 + 3.0 * i as f32, 50.0)];
        let mut frames: Vec<Vec<Detection>> = (0..10).map(walker).collect();
        frames.extend((10..14).map(|_| vec![])); // 4 missing frames: within max_lost
        frames.extend((14..24).map(walker));
        frames.extend((24..34).map(|_| vec![])); // 10 missing: ends
        frames.extend((34..40).map(walker));
        let (s, e) = ids(&run(&mut tr, &frames));
        assert_eq!(s, vec![1, 2]);
        assert_eq!(e, vec![1, 2]);
    }

    #[test]
    fn skipping_frames_changes_neither_the_motion_nor_how_long_a_lost_track_lives() {
        // A walker (8 px a frame at 10 FPS, a box 40 px wide) processed on every frame, on every third, and on
        // frames taken at uneven gaps (as a busy node takes the newest frame): the filter
        // steps over the frames skipped, the id holds, and the track ends on the first frame
        // more than max_lost_secs after it was last seen, whichever frames were processed.
        let cfg = TrackerConfig {
            max_lost_secs: 1.0,
            ..TrackerConfig::default()
        };
        let walker = |i: usize| vec![det(0, 0.9, 10.0 + 8.0 * i as f32, 50.0)];
        let uneven: Vec<usize> = [1usize, 4, 2, 1, 3, 5, 1, 2]
            .iter()
            .cycle()
            .scan(0, |at, g| {
                *at += g;
                Some(*at)
            })
            .take_while(|i| *i < 80)
            .collect();
        for (name, frames) in [
            ("every frame", (0..80).collect::<Vec<usize>>()),
            ("every third", (0..80).step_by(3).collect()),
            ("uneven", uneven),
        ] {
            let mut tr = Tracker::new(cfg.clone());
            tr.set_frame_interval_ms(100.0);
            let mut ev = Vec::new();
            let mut ended_at = None;
            let mut last_seen = 0;
            for &i in &frames {
                // Seen for 4 s, then gone.
                let dets = if i < 40 { walker(i) } else { vec![] };
                if i < 40 {
                    last_seen = i as i64 * 100;
                }
                for e in tr.update(&dets, i as i64 * 100) {
                    if matches!(e, TrackEvent::Ended(_)) {
                        ended_at = Some(i as i64 * 100);
                    }
                    ev.push(e);
                }
            }
            let (s, e) = ids(&ev);
            assert_eq!((s, e), (vec![1], vec![1]), "{name}");
            let ended = ended_at.unwrap();
            let first_after = frames
                .iter()
                .map(|&i| i as i64 * 100)
                .find(|t| *t > last_seen + 1000)
                .unwrap();
            assert_eq!(ended, first_after, "{name}");
        }
    }

    #[test]
    fn classes_do_not_mix_and_crossing_walkers_keep_ids() {
        let mut tr = Tracker::new(TrackerConfig::default());
        // Two people walking towards each other on different rows, a car parked.
        let frames: Vec<Vec<Detection>> = (0..40)
            .map(|i| {
                let i = i as f32;
                vec![
                    det(0, 0.9, 10.0 + 5.0 * i, 50.0),
                    det(0, 0.85, 210.0 - 5.0 * i, 120.0),
                    det(2, 0.9, 500.0, 400.0),
                ]
            })
            .collect();
        let ev = run(&mut tr, &frames);
        let ended: Vec<&Track> = ev
            .iter()
            .filter_map(|e| match e {
                TrackEvent::Ended(t) => Some(t),
                _ => None,
            })
            .collect();
        assert_eq!(ended.len(), 3);
        for t in ended {
            assert_eq!(t.hits, 40, "track {} class {} broke", t.id, t.class_id);
            let dx = t.bbox.x1 - t.first_box.x1;
            match t.class_id {
                2 => assert_eq!(dx, 0.0),
                _ => assert!((dx.abs() - 195.0).abs() < 1e-3, "id switch: dx {dx}"),
            }
        }
    }

    fn scene() -> impl Strategy<Value = Vec<Vec<Detection>>> {
        proptest::collection::vec(
            proptest::collection::vec(
                (0usize..2, 0.0f32..1.0, 0f32..600.0, 0f32..400.0)
                    .prop_map(|(c, s, x, y)| det(c, s, x, y)),
                0..8,
            ),
            1..40,
        )
    }

    proptest! {
        #[test]
        fn ids_unique_every_start_ends_once(frames in scene(), confirm in 1u32..4, lost in 0u32..6) {
            let cfg = TrackerConfig { confirm_hits: confirm, max_lost_secs: lost as f32 / 10.0, ..TrackerConfig::default() };
            let mut tr = Tracker::new(cfg);
            let mut started = HashSet::new();
            let mut ended = HashSet::new();
            let mut last_id = 0;
            let mut classes = HashMap::new();
            for (i, f) in frames.iter().enumerate() {
                for e in tr.update(f, i as i64 * 100) {
                    match e {
                        TrackEvent::Started(t) => {
                            prop_assert!(t.id > last_id, "ids increase");
                            last_id = t.id;
                            prop_assert!(started.insert(t.id));
                            classes.insert(t.id, t.class_id);
                        }
                        TrackEvent::Ended(t) => {
                            prop_assert!(started.contains(&t.id), "ended before started");
                            prop_assert!(ended.insert(t.id), "ended twice");
                            prop_assert_eq!(classes[&t.id], t.class_id);
                            prop_assert!(t.last_time_ms >= t.first_time_ms);
                        }
                    }
                }
                // Visible tracks were matched to distinct detections.
                prop_assert!(tr.visible().count() <= f.len());
            }
            for e in tr.finish() {
                if let TrackEvent::Ended(t) = e { prop_assert!(ended.insert(t.id)); }
            }
            prop_assert_eq!(started, ended);
        }
    }
}
