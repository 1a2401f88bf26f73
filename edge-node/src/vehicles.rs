//! Stage `plates`: one camera's vehicle passages. For each vehicle track: read its plate on
//! some of its frames, note its lane and any restricted zone it enters; when the track ends,
//! fuse the reads, build the `vehicle_pass` event with its pictures, and check the local
//! plate-anomaly rules (format, registry, watch list, class/colour, night coach, restricted
//! zone), each a `plate_anomaly` event.
//!
//! Input: the frame, the camera's visible tracks, the tracks that ended. Output:
//! [`Outgoing`] pictures and events, pictures first. Synchronous; the camera thread calls it.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use protocol::plate::{self, Mode, PlateColor};
use protocol::{
    AnomalyType, BBox, Detection as WireDetection, Event, EventBody, EvidenceRef, PlateAnomaly,
    ReviewState, RuleRef, Severity, VehiclePass, SCHEMA_VERSION,
};
use serde::{Deserialize, Serialize};

use crate::crossing::Outgoing;
use crate::events::EventFactory;
use crate::evidence::{local_time_label, picture, render_closeup, BannerFont, Overlay};
use crate::frame::Frame;
use crate::plate::fusion::{fuse, Fused};
use crate::plate::{PlateRead, ReadTimings};
use crate::registry::{Registry, RegistryStore, VehicleRecord};
use crate::track::Track;
use crate::zones::{Polygon, ZoneConfig, ZoneKind};

pub const RULE_VERSION: u32 = 1;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlatesConfig {
    /// Plate detector manifest.
    #[serde(default = "d_detector")]
    pub detector: PathBuf,
    /// Plate reader manifests, in the order they are asked: the next reader reads a plate
    /// only when the reads so far fit no GA 36 grammar or are unsure of a character.
    #[serde(default = "d_readers")]
    pub readers: Vec<PathBuf>,
    /// Replaced by `readers`; kept only to say so.
    #[serde(default)]
    pub reader: Option<PathBuf>,
    /// Measure the horizontal motion smear on each single-row plate crop, and read a crop
    /// smeared past its characters' strokes again deblurred for it (`plate::deblur`).
    #[serde(default = "yes")]
    pub deblur: bool,
    /// Replaced by `deblur`; kept only to say so.
    #[serde(default)]
    pub deblur_px: Option<toml::Value>,
    /// Detector classes that are vehicles with plates.
    #[serde(default = "d_vehicle_classes")]
    pub vehicle_classes: Vec<String>,
    /// Look for plates over the camera's lanes (the whole frame when it has no `lane`
    /// zones) every `read_interval_ms`, not only inside vehicle boxes: a plate is found
    /// whether or not the vehicle detector boxed its vehicle (a close view of a car's rear,
    /// a box scoring below `new_track_score`). A plate no vehicle box holds is followed on
    /// its own and makes a pass with vehicle class `unknown`; once its vehicle is tracked,
    /// what it gathered goes to the vehicle. false: plates are looked for inside vehicle
    /// boxes only.
    #[serde(default = "yes")]
    pub scan: bool,
    /// The narrowest plate (pixels of the frame) the scan must find. The plate detector
    /// finds plates from about 40 px wide, so the frame is shrunk by at most
    /// 40 / min_plate_width_px (40: the frame at full resolution).
    #[serde(default = "d_min_plate_width")]
    pub min_plate_width_px: f32,
    /// Vehicles whose box is lower than this (pixels) are too far away to read.
    #[serde(default = "d_min_height")]
    pub min_vehicle_height_px: f32,
    /// Read a vehicle's plate at most this often, milliseconds of video time (time, not
    /// frames: a busy node that skips frames reads as often)...
    #[serde(default = "d_read_interval")]
    pub read_interval_ms: i64,
    /// ...at most this many times per vehicle.
    #[serde(default = "d_max_reads")]
    pub max_reads: u32,
    /// Stop reading a vehicle once this many reads agree on the whole plate.
    #[serde(default = "d_enough")]
    pub enough_agreeing: u32,
    /// A plate fitting no grammar is a suspected fake only after this many reads, at least
    /// two of them agreeing on the whole text.
    #[serde(default = "d_fake_reads")]
    pub fake_min_reads: u32,
    /// A track whose foot point moves less than this share of the frame width is a parked
    /// vehicle, not a passage.
    #[serde(default = "d_min_travel")]
    pub min_travel: f32,
    /// Names of the directions of travel.
    #[serde(default)]
    pub directions: Directions,
    /// Long-distance coaches between these local times (rule 凌晨 2-5).
    #[serde(default)]
    pub night_coach: NightCoachConfig,
    /// Zones closed to trucks and hazardous goods during some hours.
    #[serde(default)]
    pub restricted: Vec<RestrictedConfig>,
    /// Raise `not_registered` for valid plates missing from a loaded registry.
    #[serde(default = "yes")]
    pub not_registered: bool,
    /// A pass whose fused plate has a character below this confidence (0..1) is stored as
    /// read unsure (`plate_unsure`): no plate rule (format, registry, watch list, colour,
    /// night coach) rests on it, and the aggregator correlates nothing on it. A misread
    /// plate would otherwise become a false alarm an operator must chase.
    #[serde(default = "d_min_char_conf")]
    pub min_char_confidence: f32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Directions {
    #[serde(default = "d_ltr")]
    pub left_to_right: String,
    #[serde(default = "d_rtl")]
    pub right_to_left: String,
    #[serde(default = "d_ttb")]
    pub top_to_bottom: String,
    #[serde(default = "d_btt")]
    pub bottom_to_top: String,
}

impl Default for Directions {
    fn default() -> Self {
        Directions {
            left_to_right: d_ltr(),
            right_to_left: d_rtl(),
            top_to_bottom: d_ttb(),
            bottom_to_top: d_btt(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NightCoachConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Local time window, `HH:MM` (may wrap midnight).
    #[serde(default = "d_night_from")]
    pub from: String,
    #[serde(default = "d_night_to")]
    pub to: String,
    #[serde(default = "d_offset")]
    pub utc_offset_minutes: i32,
    /// Plates exempt besides registry records marked `short_route`.
    #[serde(default)]
    pub exempt_plates: Vec<String>,
}

impl Default for NightCoachConfig {
    fn default() -> Self {
        NightCoachConfig {
            enabled: true,
            from: d_night_from(),
            to: d_night_to(),
            utc_offset_minutes: d_offset(),
            exempt_plates: vec![],
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestrictedConfig {
    /// A zone of kind `restricted` in the camera's zones.
    pub zone: String,
    /// Local time window, `HH:MM` (may wrap midnight).
    pub from: String,
    pub to: String,
    #[serde(default = "d_offset")]
    pub utc_offset_minutes: i32,
    /// Detector classes barred (the registry's H*, Q* and use R vehicles always are).
    #[serde(default = "d_trucks")]
    pub vehicle_classes: Vec<String>,
}

fn d_detector() -> PathBuf {
    "models/clp_det.toml".into()
}
fn d_readers() -> Vec<PathBuf> {
    vec![
        "models/ppocrv4_rec.toml".into(),
        "models/clp_rec.toml".into(),
    ]
}
fn d_min_plate_width() -> f32 {
    DETECTABLE_PLATE_PX
}
fn d_min_char_conf() -> f32 {
    MIN_CHAR_CONFIDENCE
}
fn d_vehicle_classes() -> Vec<String> {
    ["car", "bus", "truck", "motorcycle"]
        .map(String::from)
        .to_vec()
}
fn d_min_height() -> f32 {
    48.0
}
fn d_read_interval() -> i64 {
    200
}
fn d_max_reads() -> u32 {
    10
}
fn d_enough() -> u32 {
    5
}
fn d_fake_reads() -> u32 {
    3
}
fn d_min_travel() -> f32 {
    0.1
}
fn d_ltr() -> String {
    "left_to_right".into()
}
fn d_rtl() -> String {
    "right_to_left".into()
}
fn d_ttb() -> String {
    "towards_camera".into()
}
fn d_btt() -> String {
    "away_from_camera".into()
}
fn d_night_from() -> String {
    "02:00".into()
}
fn d_night_to() -> String {
    "05:00".into()
}
fn d_offset() -> i32 {
    480
}
fn d_trucks() -> Vec<String> {
    vec!["truck".into()]
}
fn yes() -> bool {
    true
}

/// `HH:MM` into minutes after midnight.
pub fn parse_hhmm(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some(h * 60 + m)
}

/// Whether UTC time `t_ms` falls in the local window [from, to) (minutes after midnight; a
/// window with from > to wraps midnight).
pub fn in_window(t_ms: i64, offset_min: i32, from: u32, to: u32) -> bool {
    let local_min = (t_ms.div_euclid(60_000) + offset_min as i64).rem_euclid(1440) as u32;
    if from <= to {
        (from..to).contains(&local_min)
    } else {
        local_min >= from || local_min < to
    }
}

impl PlatesConfig {
    pub fn validate(&self, zones: &[ZoneConfig], at: &str, errors: &mut Vec<String>) {
        if let Some(r) = &self.reader {
            errors.push(format!(
                "{at}.reader is replaced by {at}.readers, a list asked in order: write readers = [\"{}\", \"models/clp_rec.toml\"] (or only [\"{}\"])",
                r.display(),
                r.display()
            ));
        }
        if self.readers.is_empty() {
            errors.push(format!(
                "{at}.readers is empty: name at least one plate reader manifest, e.g. [\"models/ppocrv4_rec.toml\", \"models/clp_rec.toml\"]"
            ));
        }
        if self.max_reads == 0 || self.fake_min_reads == 0 {
            errors.push(format!(
                "{at}: max_reads and fake_min_reads must be at least 1"
            ));
        }
        if !(0..=60_000).contains(&self.read_interval_ms) {
            errors.push(format!(
                "{at}.read_interval_ms = {} is outside 0..60000 ms",
                self.read_interval_ms
            ));
        }
        if let Some(old) = &self.deblur_px {
            let on = old.as_array().is_none_or(|l| !l.is_empty());
            errors.push(format!(
                "{at}.deblur_px is replaced by {at}.deblur: the smear is now measured on each plate crop and deblurred for that length; write deblur = {on} in place of deblur_px = {old}"
            ));
        }
        if self.min_plate_width_px.is_nan() || self.min_plate_width_px < 8.0 {
            errors.push(format!(
                "{at}.min_plate_width_px = {} must be at least 8 (pixels of the frame; 40 scans at full resolution)",
                self.min_plate_width_px
            ));
        }
        if !(0.0..=1.0).contains(&self.min_char_confidence) {
            errors.push(format!(
                "{at}.min_char_confidence = {} must be 0..1 (0 judges every read plate)",
                self.min_char_confidence
            ));
        }
        if !(0.0..=1.0).contains(&self.min_travel) {
            errors.push(format!(
                "{at}.min_travel = {} must be 0..1 (share of the frame width)",
                self.min_travel
            ));
        }
        let nc = &self.night_coach;
        for (field, v) in [("night_coach.from", &nc.from), ("night_coach.to", &nc.to)] {
            if parse_hhmm(v).is_none() {
                errors.push(format!("{at}.{field} '{v}' is not a local time like 02:00"));
            }
        }
        let restricted: Vec<&str> = zones
            .iter()
            .filter(|z| z.kind == ZoneKind::Restricted)
            .map(|z| z.name.as_str())
            .collect();
        for (i, r) in self.restricted.iter().enumerate() {
            if !restricted.contains(&r.zone.as_str()) {
                errors.push(format!(
                    "unknown zone '{}' in {at}.restricted[{i}]; zones of kind restricted: {}",
                    r.zone,
                    if restricted.is_empty() {
                        "none".to_string()
                    } else {
                        restricted.join(", ")
                    }
                ));
            }
            for (field, v) in [("from", &r.from), ("to", &r.to)] {
                if parse_hhmm(v).is_none() {
                    errors.push(format!(
                        "{at}.restricted[{i}].{field} '{v}' is not a local time like 07:00"
                    ));
                }
            }
        }
    }
}

/// What one vehicle track gathered.
struct Vehicle {
    first_ms: i64,
    last_ms: i64,
    first_foot: (f32, f32),
    last_foot: (f32, f32),
    last_box: BBox,
    /// Detector class; None for a plate no vehicle track held.
    class_id: Option<usize>,
    score: f32,
    frames: u32,
    /// Video time of the last read of its plate.
    last_read_ms: Option<i64>,
    attempts: u32,
    reads: Vec<PlateRead>,
    /// Frame and box of the most confident read (or the largest box before any read).
    best: Option<(Frame, BBox, f32)>,
    lanes: HashMap<u32, u32>,
    /// Restricted zones entered during their hours: (rule index, first time).
    restricted: Vec<(usize, i64)>,
}

/// Whether `interval_ms` of video time passed since `last_ms` (never: yes). A clock that
/// went back (a camera's time reset) counts as passed.
fn interval_passed(last_ms: Option<i64>, now_ms: i64, interval_ms: i64) -> bool {
    last_ms.is_none_or(|t| now_ms - t >= interval_ms || now_ms < t)
}

impl Vehicle {
    fn new(frame: &Frame, b: BBox, class_id: Option<usize>, score: f32) -> Vehicle {
        Vehicle {
            first_ms: frame.time_ms,
            last_ms: frame.time_ms,
            first_foot: b.foot(),
            last_foot: b.foot(),
            last_box: b,
            class_id,
            score,
            frames: 0,
            last_read_ms: None,
            attempts: 0,
            reads: Vec::new(),
            best: None,
            lanes: HashMap::new(),
            restricted: Vec::new(),
        }
    }

    /// Seen in this frame at box `b` (foot point `rel` in relative coordinates).
    fn seen(
        &mut self,
        frame: &Frame,
        b: BBox,
        rel: (f32, f32),
        lanes: &[(u32, Polygon)],
        restricted: &[Restricted],
    ) {
        self.last_ms = frame.time_ms;
        self.last_foot = b.foot();
        self.last_box = b;
        self.frames += 1;
        if let Some((lane, _)) = lanes.iter().find(|(_, p)| p.contains(rel.0, rel.1)) {
            *self.lanes.entry(*lane).or_default() += 1;
        }
        for i in restricted_hits(restricted, rel, frame.time_ms) {
            if !self.restricted.iter().any(|(j, _)| *j == i) {
                self.restricted.push((i, frame.time_ms));
            }
        }
    }

    /// Whether another read is wanted: reads left, and not yet enough agreeing.
    fn wants_read(&self, cfg: &PlatesConfig) -> bool {
        let agreeing = fuse(&self.reads).map(|f| f.agreeing).unwrap_or(0);
        self.attempts < cfg.max_reads && (agreeing as u32) < cfg.enough_agreeing
    }

    fn best_box_read(&mut self, frame: &Frame, b: BBox, r: PlateRead) {
        let c = r.mean_conf();
        if self.best.as_ref().is_none_or(|x| c > x.2) {
            self.best = Some((frame.clone(), b, c));
        }
        self.reads.push(r);
    }

    /// Takes in what a plate followed alone gathered before its vehicle was tracked.
    fn absorb(&mut self, alone: Vehicle) {
        if alone.first_ms < self.first_ms {
            self.first_ms = alone.first_ms;
            self.first_foot = alone.first_foot;
        }
        self.attempts += alone.attempts;
        let alone_best = alone.best.filter(|b| b.2 > 0.0);
        if let Some(b) = alone_best {
            if self.best.as_ref().is_none_or(|x| b.2 > x.2) {
                self.best = Some(b);
            }
        }
        let mut reads = alone.reads;
        reads.append(&mut self.reads);
        self.reads = reads;
    }
}

/// Whether a point lies in a box grown by `share` of its size on every side.
fn contains_grown(b: &BBox, x: f32, y: f32, share: f32) -> bool {
    let (mx, my) = (b.width() * share, b.height() * share);
    x >= b.x1 - mx && x <= b.x2 + mx && y >= b.y1 - my && y <= b.y2 + my
}

/// Whether a plate box found now is the plate seen before at `prev`: overlapping, or its
/// centre within a plate width of the last one (a plate moves between scans).
fn same_plate(prev: &BBox, now: &BBox) -> bool {
    let (a, b) = (prev.center(), now.center());
    let d = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
    prev.iou(now) > 0.1 || d <= prev.width().max(now.width())
}

/// The picture's box for a plate no vehicle track holds: the plate with the car's rear
/// around it (three plate widths across, eight plate heights up), inside the frame.
fn around_plate(p: &BBox, frame: &Frame) -> BBox {
    let (w, h) = (p.width(), p.height());
    BBox::new(
        (p.x1 - w).max(0.0),
        (p.y1 - 8.0 * h).max(0.0),
        (p.x2 + w).min(frame.width as f32),
        (p.y2 + 2.0 * h).min(frame.height as f32),
    )
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PlatesSummary {
    pub passes: u64,
    pub plates_read: u64,
    /// Plates read with a character below the confidence floor (counted in `plates_read`).
    pub plates_unsure: u64,
    pub unread: u64,
    pub parked_tracks: u64,
    pub read_attempts: u64,
    pub reads: u64,
    pub anomalies: std::collections::BTreeMap<String, u64>,
}

pub struct VehicleWatch {
    cfg: PlatesConfig,
    /// The node's plate models, shared by its plate cameras (one read at a time).
    pipeline: crate::engine::SharedPlates,
    vehicle_class: Vec<bool>,
    labels: Vec<String>,
    registry: Arc<RegistryStore>,
    lanes: Vec<(u32, Polygon)>,
    restricted: Vec<Restricted>,
    night: (u32, u32),
    quality: u8,
    clock: crate::evidence::BannerClock,
    font: BannerFont,
    /// Vehicle tracks by tracker id, and plates no vehicle track holds (ids from
    /// [`PLATE_TRACK_BASE`]).
    vehicles: HashMap<u64, Vehicle>,
    /// The part of the frame the scan looks at (lanes' bounding box; None: the whole frame),
    /// relative coordinates.
    scan_area: Option<BBox>,
    /// Video time of the last scan.
    last_scan_ms: Option<i64>,
    next_plate_track: u64,
    pub summary: PlatesSummary,
    /// Time spent per read, by part, since the last drain.
    pub timings: ReadTimings,
    /// Durations of whole reads (detect + rectify + read), since the last drain.
    pub read_times: Vec<Duration>,
    /// Durations of plate scans (the plate detector over the scan area), since the last drain.
    pub scan_times: Vec<Duration>,
}

/// Vehicle class of a pass whose plate no vehicle track held.
pub const UNKNOWN_CLASS: &str = "unknown";

/// Ids of plates followed without a vehicle track start here (tracker ids stay far below).
pub const PLATE_TRACK_BASE: u64 = 1 << 48;

/// Width (pixels in the detector's input) from which the plate detector finds plates: on
/// the 16 real CCPD photos shrunk so that their plates were 60 / 48 / 40 / 32 / 26 px wide,
/// it found 14 / 14 / 15 / 5 / 2 of them.
pub const DETECTABLE_PLATE_PX: f32 = 40.0;

/// A plate followed without a vehicle track ends when no scan has seen it for this long.
const PLATE_TRACK_GAP_MS: i64 = 1000;

impl VehicleWatch {
    pub fn new(
        cfg: PlatesConfig,
        pipeline: crate::engine::SharedPlates,
        labels: &[String],
        zones: &[ZoneConfig],
        registry: Arc<RegistryStore>,
        evidence: &crate::evidence::EvidenceConfig,
        font: BannerFont,
    ) -> VehicleWatch {
        let poly = |z: &ZoneConfig| Polygon(z.polygon.iter().map(|[x, y]| (*x, *y)).collect());
        let lanes = zones
            .iter()
            .filter(|z| z.kind == ZoneKind::Lane)
            .filter_map(|z| Some((z.lane?, poly(z))))
            .collect();
        let restricted = cfg
            .restricted
            .iter()
            .filter_map(|r| {
                let z = zones.iter().find(|z| z.name == r.zone)?;
                Some((r.clone(), poly(z), parse_hhmm(&r.from)?, parse_hhmm(&r.to)?))
            })
            .collect();
        // The scan looks at the lanes (where plates pass), or the whole frame without them.
        let scan_area = zones
            .iter()
            .filter(|z| z.kind == ZoneKind::Lane)
            .flat_map(|z| z.polygon.iter())
            .fold(None, |b: Option<BBox>, [x, y]| {
                Some(match b {
                    None => BBox::new(*x, *y, *x, *y),
                    Some(b) => BBox::new(b.x1.min(*x), b.y1.min(*y), b.x2.max(*x), b.y2.max(*y)),
                })
            });
        let night = (
            parse_hhmm(&cfg.night_coach.from).unwrap_or(120),
            parse_hhmm(&cfg.night_coach.to).unwrap_or(300),
        );
        VehicleWatch {
            vehicle_class: labels
                .iter()
                .map(|l| cfg.vehicle_classes.contains(l))
                .collect(),
            labels: labels.to_vec(),
            cfg,
            pipeline,
            registry,
            lanes,
            restricted,
            night,
            quality: evidence.jpeg_quality,
            // Checked when the config was validated.
            clock: evidence.clock().unwrap_or_default(),
            font,
            vehicles: HashMap::new(),
            scan_area,
            last_scan_ms: None,
            next_plate_track: PLATE_TRACK_BASE,
            summary: PlatesSummary::default(),
            timings: ReadTimings::default(),
            read_times: Vec::new(),
            scan_times: Vec::new(),
        }
    }

    /// Gives the models back (kept across a camera's retries).
    pub fn into_pipeline(self) -> crate::engine::SharedPlates {
        self.pipeline
    }

    pub fn is_vehicle(&self, class_id: usize) -> bool {
        self.vehicle_class.get(class_id).copied().unwrap_or(false)
    }

    /// One frame: follow the visible vehicle tracks, find and read plates, close the tracks
    /// (and the plates followed alone) that ended.
    pub fn on_frame(
        &mut self,
        frame: &Frame,
        visible: &[&Track],
        ended: &HashSet<u64>,
        factory: &mut EventFactory,
    ) -> Result<Vec<Outgoing>, crate::detect::DetectError> {
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        let vehicle_class = self.vehicle_class.clone();
        let vehicles: Vec<&Track> = visible
            .iter()
            .copied()
            .filter(|t| vehicle_class.get(t.class_id).copied().unwrap_or(false))
            .collect();
        for t in &vehicles {
            let foot = t.bbox.foot();
            let v = self
                .vehicles
                .entry(t.id)
                .or_insert_with(|| Vehicle::new(frame, t.bbox, Some(t.class_id), t.score));
            v.seen(
                frame,
                t.bbox,
                (foot.0 / fw, foot.1 / fh),
                &self.lanes,
                &self.restricted,
            );
            v.class_id = Some(t.class_id);
            v.score = v.score.max(t.score);
            if v.best.is_none()
                || (v.reads.is_empty()
                    && t.bbox.area() > v.best.as_ref().map(|b| b.1.area()).unwrap_or(0.0))
            {
                v.best = Some((frame.clone(), t.bbox, 0.0));
            }
        }
        // Tracked vehicles: their plate is looked for inside their box, on their own
        // schedule.
        for t in &vehicles {
            let v = self.vehicles.get_mut(&t.id).expect("seen above");
            let due = t.bbox.height() >= self.cfg.min_vehicle_height_px
                && interval_passed(v.last_read_ms, frame.time_ms, self.cfg.read_interval_ms)
                && v.wants_read(&self.cfg);
            if !due {
                continue;
            }
            v.last_read_ms = Some(frame.time_ms);
            v.attempts += 1;
            self.summary.read_attempts += 1;
            let t0 = std::time::Instant::now();
            let read = self
                .pipeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read_vehicle(frame, &t.bbox, self.cfg.deblur, &mut self.timings)?;
            self.read_times.push(t0.elapsed());
            if let Some(r) = read {
                self.summary.reads += 1;
                let v = self.vehicles.get_mut(&t.id).expect("seen above");
                v.best_box_read(frame, t.bbox, r);
            }
        }
        // The scan: plates no vehicle box holds (the vehicle detector missed or under-scored
        // the vehicle, or sees only a close view of its rear).
        if self.cfg.scan
            && interval_passed(self.last_scan_ms, frame.time_ms, self.cfg.read_interval_ms)
        {
            self.last_scan_ms = Some(frame.time_ms);
            self.scan(frame, &vehicles)?;
        }
        let mut out = Vec::new();
        let mut done: Vec<u64> = self
            .vehicles
            .iter()
            .filter(|(id, v)| {
                ended.contains(id)
                    || (**id >= PLATE_TRACK_BASE && frame.time_ms - v.last_ms > PLATE_TRACK_GAP_MS)
            })
            .map(|(id, _)| *id)
            .collect();
        done.sort_unstable();
        for id in done {
            let v = self.vehicles.remove(&id).expect("listed");
            out.extend(self.close(id, v, frame.width, factory));
        }
        Ok(out)
    }

    /// Runs the plate detector over the scanned area and follows the plates no vehicle box
    /// holds: each is matched to a plate followed alone before (or starts one), read when
    /// it wants reads, and handed to its vehicle once the vehicle is tracked.
    fn scan(
        &mut self,
        frame: &Frame,
        vehicles: &[&Track],
    ) -> Result<(), crate::detect::DetectError> {
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        let area = self.scan_box(frame);
        let t0 = std::time::Instant::now();
        let found = self
            .pipeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .find(
                frame,
                &area,
                (0.0, 0.0),
                Some((DETECTABLE_PLATE_PX / self.cfg.min_plate_width_px).min(1.0)),
            )?;
        let took = t0.elapsed();
        self.timings.detect += took;
        self.scan_times.push(took);
        let scan_share = took / found.len().max(1) as u32;
        let mut held: HashSet<u64> = HashSet::new();
        for plate in found {
            let pb = plate.bbox();
            let (cx, cy) = pb.center();
            let owner = vehicles
                .iter()
                .filter(|t| contains_grown(&t.bbox, cx, cy, 0.05))
                .min_by(|a, b| a.bbox.area().total_cmp(&b.bbox.area()))
                .map(|t| t.id);
            // A plate followed alone so far, seen here again.
            let alone = self
                .vehicles
                .iter()
                .filter(|(id, v)| {
                    **id >= PLATE_TRACK_BASE
                        && !held.contains(id)
                        && v.last_ms < frame.time_ms
                        && same_plate(&v.last_box, &pb)
                })
                .max_by(|a, b| a.1.last_box.iou(&pb).total_cmp(&b.1.last_box.iou(&pb)))
                .map(|(id, _)| *id);
            let id = match (owner, alone) {
                (Some(owner), Some(alone)) => {
                    // Its vehicle is tracked now: what the plate gathered goes to it.
                    let a = self.vehicles.remove(&alone).expect("listed");
                    self.vehicles
                        .get_mut(&owner)
                        .expect("seen this frame")
                        .absorb(a);
                    continue;
                }
                // Inside a vehicle box: the vehicle's own reads cover it.
                (Some(_), None) => continue,
                (None, Some(alone)) => alone,
                (None, None) => {
                    let id = self.next_plate_track;
                    self.next_plate_track += 1;
                    self.vehicles
                        .insert(id, Vehicle::new(frame, pb, None, plate.score));
                    id
                }
            };
            held.insert(id);
            let v = self.vehicles.get_mut(&id).expect("inserted");
            let foot = pb.foot();
            v.seen(
                frame,
                pb,
                (foot.0 / fw, foot.1 / fh),
                &self.lanes,
                &self.restricted,
            );
            v.score = v.score.max(plate.score);
            if !v.wants_read(&self.cfg) {
                continue;
            }
            v.attempts += 1;
            self.summary.read_attempts += 1;
            let t0 = std::time::Instant::now();
            let read = self
                .pipeline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .read_found(frame, &plate, self.cfg.deblur, &mut self.timings)?;
            self.read_times.push(t0.elapsed() + scan_share);
            if let Some(r) = read {
                self.summary.reads += 1;
                let b = around_plate(&pb, frame);
                self.vehicles
                    .get_mut(&id)
                    .expect("inserted")
                    .best_box_read(frame, b, r);
            }
        }
        Ok(())
    }

    /// The scanned part of the frame, in pixels.
    fn scan_box(&self, frame: &Frame) -> BBox {
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        match self.scan_area {
            Some(a) => BBox::new(a.x1 * fw, a.y1 * fh, a.x2 * fw, a.y2 * fh),
            None => BBox::new(0.0, 0.0, fw, fh),
        }
    }

    /// End of stream: every vehicle still followed passes now.
    pub fn finish(&mut self, frame_width: u32, factory: &mut EventFactory) -> Vec<Outgoing> {
        let mut ids: Vec<u64> = self.vehicles.keys().copied().collect();
        ids.sort_unstable();
        let mut out = Vec::new();
        for id in ids {
            let v = self.vehicles.remove(&id).expect("listed");
            out.extend(self.close(id, v, frame_width, factory));
        }
        out
    }

    fn close(
        &mut self,
        track_id: u64,
        v: Vehicle,
        frame_width: u32,
        factory: &mut EventFactory,
    ) -> Vec<Outgoing> {
        // A plate followed alone that never gave a read was no plate to speak of.
        if v.class_id.is_none() && v.reads.is_empty() {
            return vec![];
        }
        let (dx, dy) = (
            v.last_foot.0 - v.first_foot.0,
            v.last_foot.1 - v.first_foot.1,
        );
        if (dx * dx + dy * dy).sqrt() < self.cfg.min_travel * frame_width as f32 {
            self.summary.parked_tracks += 1;
            return vec![];
        }
        let registry = self.registry.current();
        let fused = fuse(&v.reads);
        if tracing::enabled!(tracing::Level::DEBUG) {
            let texts: Vec<String> = v
                .reads
                .iter()
                .map(|r| {
                    let mut t = format!("{} {:.2}", r.text(), r.conf.first().unwrap_or(&0.0));
                    if let Some(d) = &r.deblurred {
                        let first = d.conf.first().unwrap_or(&0.0);
                        t += &format!(
                            " / smear {} px: {} {first:.2}",
                            d.length,
                            d.chars.iter().collect::<String>()
                        );
                    }
                    t
                })
                .collect();
            tracing::debug!(fused = ?fused.as_ref().map(|f| f.text()), reads = ?texts, "Plate reads of a pass fused");
        }
        let pass = judge(fused.as_ref(), &v.reads, &self.cfg);
        let direction = if dx.abs() >= dy.abs() {
            if dx >= 0.0 {
                &self.cfg.directions.left_to_right
            } else {
                &self.cfg.directions.right_to_left
            }
        } else if dy >= 0.0 {
            &self.cfg.directions.top_to_bottom
        } else {
            &self.cfg.directions.bottom_to_top
        }
        .clone();
        let lane = v
            .lanes
            .iter()
            .max_by_key(|(l, n)| (**n, std::cmp::Reverse(**l)))
            .map(|(l, _)| *l)
            .or(factory.lane);
        let vehicle_class = v
            .class_id
            .and_then(|c| self.labels.get(c).cloned())
            .unwrap_or_else(|| UNKNOWN_CLASS.into());
        let (best_frame, best_box, _) = v.best.clone().expect("set on the first frame");
        let pass_time = best_frame.time_ms;
        let event_id = factory.next_id(pass_time);
        // Pictures: the vehicle at the best read, and the rectified plate.
        let plate_label = match (&pass.text, pass.unsure) {
            (Some(t), false) => t.clone(),
            (Some(t), true) => format!("{t}（不确定）"),
            (None, _) => "未识别".into(),
        };
        let mut plate_line = format!("号牌 {plate_label}");
        if let Some(c) = pass.colour {
            plate_line.push_str(&format!("  {}", colour_zh(c)));
        }
        let lines = vec![
            format!("{}  车辆通行", self.clock.label(pass_time)),
            format!("卡口 {}  设备 {}", factory.checkpoint_id, factory.camera_id),
            format!(
                "{plate_line}  {}  车道 {}  方向 {}",
                class_zh(&vehicle_class),
                lane.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
                direction_zh(&direction)
            ),
        ];
        let ov = Overlay {
            lines,
            zones: &[],
            person: best_box,
            font: &self.font,
        };
        let mut pictures = vec![picture(
            "vehicle",
            render_closeup(&best_frame, &ov, self.quality),
        )];
        if let Some(best) = fused.as_ref().map(|f| &v.reads[f.best]) {
            pictures.push(picture("plate", plate_jpeg(&best.crop, self.quality)));
        }
        let refs: Vec<EvidenceRef> = pictures
            .iter()
            .map(|p| EvidenceRef {
                image_id: format!("{event_id}-{}", p.role),
                sha256: p.sha256.clone(),
                role: p.role.clone(),
            })
            .collect();
        let detection = WireDetection {
            class: vehicle_class.clone(),
            score: v.score,
            bbox: best_box,
            track_id: Some(track_id),
        };
        let (node_id, checkpoint_id, camera_id) = (
            factory.node_id.clone(),
            factory.checkpoint_id.clone(),
            factory.camera_id.clone(),
        );
        let clock_state = factory.clock.clone();
        let base =
            |event_id: String, severity: Severity, rule: Option<&str>, body: EventBody| Event {
                schema_version: SCHEMA_VERSION,
                event_id,
                severity,
                node_id: node_id.clone(),
                checkpoint_id: checkpoint_id.clone(),
                camera_id: camera_id.clone(),
                lane,
                frame_time_ms: pass_time,
                detections: vec![detection.clone()],
                rule: rule.map(|id| RuleRef {
                    id: id.into(),
                    version: RULE_VERSION,
                }),
                evidence: refs.clone(),
                review: if severity == Severity::Info {
                    ReviewState::NotRequired
                } else {
                    ReviewState::Pending
                },
                clock: clock_state.clone(),
                body,
            };
        let pass_event = base(
            event_id.clone(),
            Severity::Info,
            Some("vehicle_pass"),
            EventBody::VehiclePass(VehiclePass {
                track_id,
                plate: pass.text.clone(),
                char_confidence: pass.conf.clone(),
                plate_colour: pass.colour,
                plate_class: pass.class,
                vehicle_class: vehicle_class.clone(),
                direction: Some(direction),
                first_seen_ms: Some(v.first_ms),
                last_seen_ms: Some(v.last_ms),
                plate_reads: fused.as_ref().map(|f| f.reads as u32).unwrap_or(0),
                registry_version: registry.is_loaded().then_some(registry.version),
                plate_unsure: pass.unsure,
            }),
        );
        self.summary.passes += 1;
        if pass.text.is_some() {
            self.summary.plates_read += 1;
            if pass.unsure {
                self.summary.plates_unsure += 1;
            }
        } else {
            self.summary.unread += 1;
        }
        // A plate read unsure is nobody's: no registry record rests on it.
        let record = pass
            .valid_text
            .as_deref()
            .filter(|_| !pass.unsure)
            .and_then(|t| registry.get(t))
            .cloned();
        let findings = check_rules(
            &pass,
            record.as_ref(),
            &registry,
            &self.cfg,
            self.night,
            &v,
            &self.restricted,
            &vehicle_class,
            pass_time,
        );
        let mut out: Vec<Outgoing> = pictures
            .iter()
            .map(|p| Outgoing::Evidence {
                checkpoint: factory.checkpoint_id.clone(),
                camera: factory.camera_id.clone(),
                image_id: format!("{event_id}-{}", p.role),
                jpeg: p.jpeg.clone(),
            })
            .collect();
        out.push(Outgoing::Event(Box::new(pass_event)));
        for f in findings {
            *self
                .summary
                .anomalies
                .entry(f.anomaly.as_str().to_string())
                .or_default() += 1;
            let id = factory.next_id(pass_time);
            out.push(Outgoing::Event(Box::new(base(
                id,
                f.severity,
                Some(f.rule),
                EventBody::PlateAnomaly(PlateAnomaly {
                    anomaly: f.anomaly,
                    plate: pass.text.clone().unwrap_or_default(),
                    passes: vec![event_id.clone()],
                    distance_km: None,
                    interval_secs: None,
                    implied_speed_kmh: None,
                    detail: Some(f.detail),
                }),
            ))));
        }
        out
    }
}

/// A restricted zone with its polygon and its window (minutes after local midnight).
pub type Restricted = (RestrictedConfig, Polygon, u32, u32);

/// The restricted zones a foot point (relative coordinates) is in at UTC time `t_ms`, during
/// their restricted hours.
pub fn restricted_hits(zones: &[Restricted], rel: (f32, f32), t_ms: i64) -> Vec<usize> {
    zones
        .iter()
        .enumerate()
        .filter(|(_, (r, p, from, to))| {
            p.contains(rel.0, rel.1) && in_window(t_ms, r.utc_offset_minutes, *from, *to)
        })
        .map(|(i, _)| i)
        .collect()
}

/// The plate of a pass, as judged from its fused reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassPlate {
    /// Plate text (normalised when it fits a grammar), None when unread.
    pub text: Option<String>,
    /// The text when it fits a GA 36 grammar (lenient mode).
    pub valid_text: Option<String>,
    pub conf: Vec<f32>,
    pub colour: Option<PlateColor>,
    pub class: Option<plate::PlateClass>,
    /// Fits no grammar, confirmed over enough agreeing reads.
    pub confirmed_invalid: bool,
    /// Reads agreeing with the fused text.
    pub agreeing: usize,
    /// Read, but a character is below `min_char_confidence`: no plate rule rests on it.
    pub unsure: bool,
}

/// Mean confidence below which a fused plate counts as unread.
const MIN_PLATE_CONF: f32 = 0.4;

/// Default per-character confidence floor below which a read plate raises no alarm.
pub const MIN_CHAR_CONFIDENCE: f32 = 0.5;

pub fn judge(fused: Option<&Fused>, reads: &[PlateRead], cfg: &PlatesConfig) -> PassPlate {
    let Some(f) = fused else {
        return PassPlate::default();
    };
    let mean = f.conf.iter().sum::<f32>() / f.conf.len().max(1) as f32;
    // Longer than any plate (the aggregator refuses such an event): no plate was read.
    if f.chars.len() < 5
        || f.chars.len() > protocol::event::MAX_PLATE_CHARS
        || mean < MIN_PLATE_CONF
    {
        return PassPlate {
            colour: f.colour,
            ..Default::default()
        };
    }
    let raw = f.text();
    let parsed = plate::parse(&raw, f.colour, Mode::Lenient).ok();
    let _ = reads;
    PassPlate {
        text: Some(parsed.as_ref().map(|p| p.text.clone()).unwrap_or(raw)),
        valid_text: parsed.as_ref().map(|p| p.text.clone()),
        conf: f.conf.clone(),
        colour: f.colour,
        class: parsed.as_ref().map(|p| p.class),
        confirmed_invalid: parsed.is_none()
            && f.reads >= cfg.fake_min_reads as usize
            && f.agreeing >= 2,
        agreeing: f.agreeing,
        unsure: f.min_conf() < cfg.min_char_confidence,
    }
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub anomaly: AnomalyType,
    pub rule: &'static str,
    pub severity: Severity,
    pub detail: String,
}

#[allow(clippy::too_many_arguments)]
fn check_rules(
    pass: &PassPlate,
    record: Option<&VehicleRecord>,
    registry: &Registry,
    cfg: &PlatesConfig,
    night: (u32, u32),
    v: &Vehicle,
    restricted: &[Restricted],
    vehicle_class: &str,
    pass_time: i64,
) -> Vec<Finding> {
    let mut out = plate_rules(pass, record, registry, cfg, night, pass_time);
    let is_truck = record.is_some_and(|r| r.is_truck());
    for (i, first) in &v.restricted {
        let (r, _, _, _) = &restricted[*i];
        if r.vehicle_classes.iter().any(|c| c == vehicle_class) || is_truck {
            out.push(Finding {
                anomaly: AnomalyType::RestrictedZone,
                rule: "vehicle.restricted_zone",
                severity: Severity::Warning,
                detail: format!(
                    "{vehicle_class} in zone '{}' at {} (restricted {}-{} local)",
                    r.zone,
                    local_time_label(*first, r.utc_offset_minutes),
                    r.from,
                    r.to
                ),
            });
        }
    }
    out
}

/// The rules that need only the plate, its record and the time.
pub fn plate_rules(
    pass: &PassPlate,
    record: Option<&VehicleRecord>,
    registry: &Registry,
    cfg: &PlatesConfig,
    night: (u32, u32),
    pass_time: i64,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let Some(text) = &pass.text else {
        return out;
    };
    // A plate read unsure is not evidence of anything: no alarm rests on it.
    if pass.unsure {
        return out;
    }
    if pass.confirmed_invalid {
        out.push(Finding {
            anomaly: AnomalyType::FormatInvalid,
            rule: "plate.format_invalid",
            severity: Severity::Alert,
            detail: format!(
                "'{text}' fits no GA 36 plate grammar ({} reads agree)",
                pass.agreeing
            ),
        });
    }
    let Some(valid) = &pass.valid_text else {
        return out;
    };
    match record {
        None => {
            // A misread is not an unregistered car: only plates read the same at least twice.
            if cfg.not_registered && registry.is_loaded() && pass.agreeing >= 2 {
                out.push(Finding {
                    anomaly: AnomalyType::NotRegistered,
                    rule: "plate.not_registered",
                    severity: Severity::Warning,
                    detail: format!("'{valid}' is not in registry version {}", registry.version),
                });
            }
        }
        Some(r) => {
            if !r.status.is_empty() {
                let list: Vec<&str> = r.status.iter().map(|s| s.as_str()).collect();
                out.push(Finding {
                    anomaly: AnomalyType::WatchList,
                    rule: "plate.watch_list",
                    severity: Severity::Alert,
                    detail: format!(
                        "watch list: {} (registry version {})",
                        list.join(", "),
                        registry.version
                    ),
                });
            }
            if let (Some(reg), Some(seen)) = (r.plate_colour, pass.colour) {
                if reg != seen {
                    out.push(Finding {
                        anomaly: AnomalyType::ClassMismatch,
                        rule: "plate.class_mismatch",
                        severity: Severity::Alert,
                        detail: format!(
                            "registered {} plate{}, camera sees {} (suspected clone)",
                            colour_name(reg),
                            r.plate_class
                                .map(|c| format!(" class {}", c.code()))
                                .unwrap_or_default(),
                            colour_name(seen)
                        ),
                    });
                }
            }
            let nc = &cfg.night_coach;
            if nc.enabled
                && r.is_coach()
                && !r.short_route
                && !nc
                    .exempt_plates
                    .iter()
                    .any(|p| plate::normalise(p) == *valid)
                && in_window(pass_time, nc.utc_offset_minutes, night.0, night.1)
            {
                out.push(Finding {
                    anomaly: AnomalyType::NightCoach,
                    rule: "vehicle.night_coach",
                    severity: Severity::Warning,
                    detail: format!(
                        "coach {} (use {}) at {}; not allowed {}-{} local",
                        r.vehicle_class.as_deref().unwrap_or("?"),
                        r.use_character.as_deref().unwrap_or("?"),
                        local_time_label(pass_time, nc.utc_offset_minutes),
                        nc.from,
                        nc.to
                    ),
                });
            }
        }
    }
    out
}

fn colour_name(c: PlateColor) -> &'static str {
    match c {
        PlateColor::Blue => "blue",
        PlateColor::Yellow => "yellow",
        PlateColor::Green => "green",
        PlateColor::YellowGreen => "yellow-green",
        PlateColor::White => "white",
        PlateColor::Black => "black",
    }
}

/// The plate's colour as the banner says it.
fn colour_zh(c: PlateColor) -> &'static str {
    match c {
        PlateColor::Blue => "蓝牌",
        PlateColor::Yellow => "黄牌",
        PlateColor::Green => "绿牌",
        PlateColor::YellowGreen => "黄绿牌",
        PlateColor::White => "白牌",
        PlateColor::Black => "黑牌",
    }
}

/// The detector's class as the banner says it (the label itself when it has no name here).
fn class_zh(class: &str) -> &str {
    match class {
        "car" => "小型车",
        "bus" => "客车",
        "truck" => "货车",
        "motorcycle" => "摩托车",
        "bicycle" => "自行车",
        UNKNOWN_CLASS => "未知车型",
        other => other,
    }
}

/// The direction as the banner says it (the configured word itself otherwise).
fn direction_zh(d: &str) -> &str {
    match d {
        "inbound" => "进城",
        "outbound" => "出城",
        "northbound" => "北向",
        "southbound" => "南向",
        "eastbound" => "东向",
        "westbound" => "西向",
        other => other,
    }
}

/// The rectified plate, doubled in size.
fn plate_jpeg(crop: &crate::plate::geometry::Rgb, quality: u8) -> Vec<u8> {
    let (w, h) = (crop.width as u32, crop.height as u32);
    crate::evidence::jpeg(
        &crate::evidence::scaled(&crop.data, w, h, w * 2, h * 2),
        quality,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plate::geometry::Rgb;
    use crate::registry::Status;
    use protocol::plate::PlateClass;

    fn cfg() -> PlatesConfig {
        toml::from_str("").unwrap()
    }

    /// UTC ms of a local (UTC+8) time on 2026-11-29.
    fn local(h: i64, m: i64) -> i64 {
        protocol::time::parse_rfc3339_ms("2026-11-29T00:00:00Z").unwrap()
            + ((h - 8) * 60 + m) * 60_000
    }

    fn read(text: &str, conf: f32, colour: PlateColor) -> PlateRead {
        let chars: Vec<char> = text.chars().collect();
        PlateRead {
            conf: vec![conf; chars.len()],
            chars,
            colour: Some(colour),
            two_row: false,
            det_score: 0.9,
            corners: [(0.0, 0.0); 4],
            crop: Rgb::new(1, 1),
            frame_seq: 0,
            deblurred: None,
        }
    }

    fn pass(reads: &[PlateRead]) -> PassPlate {
        judge(fuse(reads).as_ref(), reads, &cfg())
    }

    fn coach(plate: &str) -> VehicleRecord {
        VehicleRecord {
            plate: plate.into(),
            plate_class: Some(PlateClass::LargeVehicle),
            plate_colour: Some(PlateColor::Yellow),
            vehicle_class: Some("K11".into()),
            use_character: Some("B".into()),
            status: vec![],
            short_route: false,
        }
    }

    fn registry(records: &[VehicleRecord]) -> Registry {
        Registry {
            version: 4,
            issued_by: "t".into(),
            by_plate: records
                .iter()
                .map(|r| (r.plate.clone(), r.clone()))
                .collect(),
        }
    }

    fn kinds(f: &[Finding]) -> Vec<AnomalyType> {
        f.iter().map(|f| f.anomaly).collect()
    }

    #[test]
    fn windows_and_times() {
        assert_eq!(parse_hhmm("02:00"), Some(120));
        assert_eq!(parse_hhmm("2:00"), None);
        assert_eq!(parse_hhmm("24:00"), None);
        let (from, to) = (120, 300);
        assert!(!in_window(local(1, 59), 480, from, to));
        assert!(in_window(local(2, 0), 480, from, to));
        assert!(in_window(local(4, 59), 480, from, to));
        assert!(!in_window(local(5, 0), 480, from, to));
        // A window across midnight.
        assert!(in_window(local(23, 30), 480, 22 * 60, 6 * 60));
        assert!(in_window(local(0, 10), 480, 22 * 60, 6 * 60));
        assert!(!in_window(local(12, 0), 480, 22 * 60, 6 * 60));
    }

    #[test]
    fn night_coach_around_two_and_five_with_exemptions() {
        let c = cfg();
        let night = (120, 300);
        let p = pass(&[
            read("苏E12345", 0.95, PlateColor::Yellow),
            read("苏E12345", 0.9, PlateColor::Yellow),
        ]);
        let r = coach("苏E12345");
        let reg = registry(&[r.clone()]);
        let at = |t| kinds(&plate_rules(&p, Some(&r), &reg, &c, night, t));
        assert_eq!(at(local(1, 59)), vec![]);
        assert_eq!(at(local(2, 0)), vec![AnomalyType::NightCoach]);
        assert_eq!(at(local(4, 59)), vec![AnomalyType::NightCoach]);
        assert_eq!(at(local(5, 0)), vec![]);
        // Short routes (registry) and listed plates are exempt.
        let short = VehicleRecord {
            short_route: true,
            ..r.clone()
        };
        assert_eq!(
            kinds(&plate_rules(&p, Some(&short), &reg, &c, night, local(3, 0))),
            vec![]
        );
        let mut listed = c.clone();
        listed.night_coach.exempt_plates = vec!["苏E·12345".into()];
        assert_eq!(
            kinds(&plate_rules(
                &p,
                Some(&r),
                &reg,
                &listed,
                night,
                local(3, 0)
            )),
            vec![]
        );
        // A coach used as a private bus (use A) is not a long-distance coach.
        let private = VehicleRecord {
            use_character: Some("A".into()),
            ..r.clone()
        };
        assert_eq!(
            kinds(&plate_rules(
                &p,
                Some(&private),
                &reg,
                &c,
                night,
                local(3, 0)
            )),
            vec![]
        );
        let off = PlatesConfig {
            night_coach: NightCoachConfig {
                enabled: false,
                ..c.night_coach.clone()
            },
            ..c.clone()
        };
        assert_eq!(
            kinds(&plate_rules(&p, Some(&r), &reg, &off, night, local(3, 0))),
            vec![]
        );
    }

    #[test]
    fn fake_plates_need_agreeing_reads() {
        let c = cfg();
        let reg = Registry::default();
        let one = pass(&[read("中A12345", 0.95, PlateColor::Blue)]);
        assert!(!one.confirmed_invalid, "one read is not enough");
        let three = pass(&[
            read("中A12345", 0.95, PlateColor::Blue),
            read("中A12345", 0.9, PlateColor::Blue),
            read("中A12845", 0.2, PlateColor::Blue),
        ]);
        assert!(three.confirmed_invalid && !three.unsure);
        assert_eq!(
            kinds(&plate_rules(
                &three,
                None,
                &reg,
                &c,
                (120, 300),
                local(12, 0)
            )),
            vec![AnomalyType::FormatInvalid]
        );
        // A character the reads dispute (two sure reads against one fairly sure) leaves the
        // plate unsure: no alarm rests on it.
        let disputed = pass(&[
            read("中A12345", 0.95, PlateColor::Blue),
            read("中A12345", 0.9, PlateColor::Blue),
            read("中A12845", 0.6, PlateColor::Blue),
        ]);
        assert!(disputed.confirmed_invalid && disputed.unsure);
        assert_eq!(
            plate_rules(&disputed, None, &reg, &c, (120, 300), local(12, 0)),
            vec![]
        );
        // A valid plate is never a fake, however often it is read.
        let valid = pass(&vec![read("苏E12345", 0.9, PlateColor::Blue); 3]);
        assert!(!valid.confirmed_invalid);
        // Weak reads are "unread", not fakes.
        let weak = pass(&vec![read("中A12345", 0.2, PlateColor::Blue); 4]);
        assert_eq!(weak.text, None);
    }

    #[test]
    fn registry_rules() {
        let c = cfg();
        let night = (120, 300);
        let noon = local(12, 0);
        let blue = pass(&vec![read("苏E12345", 0.95, PlateColor::Blue); 2]);
        // Not in a loaded registry (and read the same twice): not registered.
        let other = registry(&[coach("苏A00001")]);
        assert_eq!(
            kinds(&plate_rules(&blue, None, &other, &c, night, noon)),
            vec![AnomalyType::NotRegistered]
        );
        // No registry loaded: nothing to say; rule switched off: nothing either.
        assert_eq!(
            kinds(&plate_rules(
                &blue,
                None,
                &Registry::default(),
                &c,
                night,
                noon
            )),
            vec![]
        );
        let off = PlatesConfig {
            not_registered: false,
            ..c.clone()
        };
        assert_eq!(
            kinds(&plate_rules(&blue, None, &other, &off, night, noon)),
            vec![]
        );
        // A single read is not trusted for not-registered.
        let once = pass(&[read("苏E12345", 0.95, PlateColor::Blue)]);
        assert_eq!(
            kinds(&plate_rules(&once, None, &other, &c, night, noon)),
            vec![]
        );
        // Watch list: every status in one finding.
        let wanted = VehicleRecord {
            plate: "苏E12345".into(),
            plate_class: Some(PlateClass::SmallCar),
            plate_colour: Some(PlateColor::Blue),
            vehicle_class: Some("K33".into()),
            use_character: Some("A".into()),
            status: vec![Status::Wanted, Status::InspectionOverdue],
            short_route: false,
        };
        let f = plate_rules(
            &blue,
            Some(&wanted),
            &registry(&[wanted.clone()]),
            &c,
            night,
            noon,
        );
        assert_eq!(kinds(&f), vec![AnomalyType::WatchList]);
        assert!(
            f[0].detail.contains("wanted, inspection_overdue"),
            "{}",
            f[0].detail
        );
        // Registered blue, seen yellow: suspected clone.
        let yellow = pass(&vec![read("苏E12345", 0.95, PlateColor::Yellow); 2]);
        let clean = VehicleRecord {
            status: vec![],
            ..wanted
        };
        let f = plate_rules(
            &yellow,
            Some(&clean),
            &registry(&[clean.clone()]),
            &c,
            night,
            noon,
        );
        assert_eq!(kinds(&f), vec![AnomalyType::ClassMismatch]);
        assert!(
            f[0].detail
                .contains("registered blue plate class 02, camera sees yellow"),
            "{}",
            f[0].detail
        );
    }

    #[test]
    fn config_validation_names_zones_and_times() {
        let mut c = cfg();
        c.restricted = vec![RestrictedConfig {
            zone: "nowhere".into(),
            from: "7:00".into(),
            to: "09:00".into(),
            utc_offset_minutes: 480,
            vehicle_classes: vec![],
        }];
        c.night_coach.from = "xx".into();
        c.deblur_px = Some(toml::Value::Array(vec![3.into(), 5.into()]));
        let mut e = Vec::new();
        c.validate(&[], "cameras[0].plates", &mut e);
        let all = e.join("\n");
        assert!(
            all.contains("cameras[0].plates.deblur_px is replaced by cameras[0].plates.deblur")
                && all.contains("write deblur = true in place of deblur_px = [3, 5]"),
            "{all}"
        );
        assert!(
            all.contains("unknown zone 'nowhere' in cameras[0].plates.restricted[0]"),
            "{all}"
        );
        assert!(all.contains("restricted[0].from '7:00'"), "{all}");
        assert!(all.contains("night_coach.from 'xx'"), "{all}");
    }

    #[test]
    fn restricted_zone_edges_in_space_and_time() {
        let zone = RestrictedConfig {
            zone: "street".into(),
            from: "22:00".into(),
            to: "06:00".into(),
            utc_offset_minutes: 480,
            vehicle_classes: vec!["truck".into()],
        };
        // The lower half of the frame, 22:00-06:00 local.
        let z: Vec<Restricted> = vec![(
            zone,
            Polygon(vec![(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]),
            22 * 60,
            6 * 60,
        )];
        let night = local(23, 0);
        assert_eq!(restricted_hits(&z, (0.5, 0.51), night), vec![0]);
        assert!(
            restricted_hits(&z, (0.5, 0.49), night).is_empty(),
            "just outside"
        );
        assert_eq!(restricted_hits(&z, (0.5, 0.9), local(5, 59)), vec![0]);
        assert!(
            restricted_hits(&z, (0.5, 0.9), local(6, 0)).is_empty(),
            "hours over"
        );
        assert_eq!(restricted_hits(&z, (0.5, 0.9), local(22, 0)), vec![0]);
        assert!(
            restricted_hits(&z, (0.5, 0.9), local(21, 59)).is_empty(),
            "not yet"
        );
    }

    #[test]
    fn plates_followed_alone_are_matched_by_overlap_or_nearness() {
        let a = BBox::new(100.0, 100.0, 180.0, 125.0);
        // Moved half a plate to the left between scans: the same plate.
        assert!(same_plate(&a, &BBox::new(60.0, 102.0, 140.0, 127.0)));
        // Moved a whole plate width, not overlapping: still within reach.
        assert!(same_plate(&a, &BBox::new(20.0, 100.0, 100.0, 125.0)));
        // Two plate widths away: another plate.
        assert!(!same_plate(&a, &BBox::new(-100.0, 100.0, -20.0, 125.0)));
        assert!(contains_grown(&a, 182.0, 112.0, 0.05));
        assert!(!contains_grown(&a, 190.0, 112.0, 0.05));
        // The picture around a plate alone stays inside the frame.
        let frame = Frame {
            seq: 0,
            time_ms: 0,
            width: 200,
            height: 200,
            rgb: std::sync::Arc::new(vec![0; 200 * 200 * 3]),
        };
        let b = around_plate(&a, &frame);
        assert_eq!((b.x1, b.y1, b.x2, b.y2), (20.0, 0.0, 200.0, 175.0));
    }

    #[test]
    fn ascii_banner_plate() {}
}
