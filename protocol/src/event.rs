//! Events: what the edge node publishes and the aggregator stores.
//!
//! Every event has a ULID `event_id` (the idempotency key end to end), a schema version, device
//! ids, the frame time it was observed at (UTC ms, from the frame, never the wall clock), the
//! detections involved, the rule that produced it, evidence references and a review state.
//! The kind-specific part is [`EventBody`], tagged by `kind` on the wire.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, DeviceType};

/// Version of the wire schema. The aggregator refuses other versions with a clear error.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest encoded event accepted (evidence images travel separately).
pub const MAX_EVENT_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ObjectTrack,
    VehiclePass,
    PlateAnomaly,
    PedestrianRedLight,
    NodeHealth,
    /// A key vehicle's position, reported by its JT/T 808 terminal.
    VehiclePosition,
    /// What a key vehicle's positions show: an abnormal stop, speeding, fatigue...
    VehicleAlert,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::ObjectTrack,
        EventKind::VehiclePass,
        EventKind::PlateAnomaly,
        EventKind::PedestrianRedLight,
        EventKind::NodeHealth,
        EventKind::VehiclePosition,
        EventKind::VehicleAlert,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ObjectTrack => "object_track",
            EventKind::VehiclePass => "vehicle_pass",
            EventKind::PlateAnomaly => "plate_anomaly",
            EventKind::PedestrianRedLight => "pedestrian_red_light",
            EventKind::NodeHealth => "node_health",
            EventKind::VehiclePosition => "vehicle_position",
            EventKind::VehicleAlert => "vehicle_alert",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The review state an event of this kind starts in: violations and plate anomalies
    /// wait for a reviewer, the rest need none. The aggregator sets it at ingest whatever a
    /// node sent (a node cannot publish a violation already confirmed).
    pub fn initial_review(self) -> ReviewState {
        match self {
            EventKind::PedestrianRedLight | EventKind::PlateAnomaly | EventKind::VehicleAlert => {
                ReviewState::Pending
            }
            EventKind::ObjectTrack
            | EventKind::VehiclePass
            | EventKind::NodeHealth
            | EventKind::VehiclePosition => ReviewState::NotRequired,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Alert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewState {
    /// Informational events need no review.
    NotRequired,
    Pending,
    Confirmed,
    Rejected,
}

/// Axis-aligned box in frame pixels (x1, y1) top-left, (x2, y2) bottom-right.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        BBox { x1, y1, x2, y2 }
    }
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
    pub fn center(&self) -> (f32, f32) {
        ((self.x1 + self.x2) * 0.5, (self.y1 + self.y2) * 0.5)
    }
    /// Bottom centre: where a person or vehicle touches the ground.
    pub fn foot(&self) -> (f32, f32) {
        ((self.x1 + self.x2) * 0.5, self.y2)
    }
    /// Intersection over union; 0 for empty boxes.
    pub fn iou(&self, o: &BBox) -> f32 {
        let iw = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let ih = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
}

/// One detection as it appears in an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class: String,
    pub score: f32,
    pub bbox: BBox,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    pub id: String,
    pub version: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceRef {
    pub image_id: String,
    pub sha256: String,
    /// What the picture shows, e.g. `scene`, `closeup`, `plate`.
    pub role: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackPhase {
    /// The track was just confirmed.
    Start,
    /// The track ended (lost for too long, or the stream ended).
    End,
}

/// A point of a track's path, frame pixels, foot point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PathPoint {
    pub t_ms: i64,
    pub x: f32,
    pub y: f32,
}

/// Start or end of one confirmed track.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectTrack {
    pub phase: TrackPhase,
    pub track_id: u64,
    pub class: String,
    /// Mean detection score over the frames the track was matched in.
    pub mean_score: f32,
    pub max_score: f32,
    pub first_box: BBox,
    pub last_box: BBox,
    pub first_time_ms: i64,
    pub last_time_ms: i64,
    pub duration_ms: i64,
    /// Frames in which a detection was matched to the track.
    pub hits: u32,
    /// Foot-point path, down-sampled to at most a few dozen points.
    pub path: Vec<PathPoint>,
    /// Straight-line distance from the first to the last foot point, pixels.
    pub displacement_px: f32,
}

/// State of a signal head as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LightState {
    Red,
    Green,
    /// Flashing green or amber: the end of the walk phase; not red.
    Flashing,
    Unknown,
}

impl LightState {
    pub fn as_str(self) -> &'static str {
        match self {
            LightState::Red => "red",
            LightState::Green => "green",
            LightState::Flashing => "flashing",
            LightState::Unknown => "unknown",
        }
    }
}

/// Where a signal reading came from, in the usual order of trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalSource {
    /// The signal controller's phase feed over zenoh.
    Feed,
    /// A fixed-time plan from the configuration.
    Plan,
    /// The colour of the light seen by the camera.
    Vision,
}

impl SignalSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SignalSource::Feed => "feed",
            SignalSource::Plan => "plan",
            SignalSource::Vision => "vision",
        }
    }
}

/// One signal reading: state, since when, where from, and how old it was when used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalReading {
    pub phase: String,
    pub state: LightState,
    /// When the current state began, UTC ms.
    pub since_ms: i64,
    pub source: SignalSource,
    /// When this reading was observed (feed: the controller's time; vision: the frame's).
    pub observed_ms: i64,
}

impl SignalReading {
    pub fn age_ms(&self, now_ms: i64) -> i64 {
        now_ms - self.observed_ms
    }
}

/// What an aggregator publishes on `keys::ack(checkpoint)` after a transaction commits:
/// the ids it now holds (stored now or before), and the event ids it refused (a malformed
/// or invalid payload: sending it again cannot help).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AckMsg {
    pub aggregator: String,
    /// The aggregator's scope: a county or city region code, or `all`.
    pub scope: String,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub evidence: Vec<String>,
    #[serde(default)]
    pub rejected: Vec<String>,
}

/// What a signal controller publishes on `keys::signal(checkpoint, phase)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalPhaseMsg {
    pub phase: String,
    pub state: LightState,
    pub since_ms: i64,
    /// The controller's time when it sent this, UTC ms.
    pub sent_ms: i64,
    /// The controller's id or name.
    pub controller: String,
}

/// A pedestrian who left a waiting area and entered the crosswalk on red.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PedestrianRedLight {
    pub track_id: u64,
    pub crosswalk: String,
    pub waiting_area: String,
    /// Last frame time in the waiting area.
    pub left_waiting_ms: i64,
    /// First frame time in the crosswalk.
    pub entered_ms: i64,
    /// Frame time the violation was confirmed (after the required frames inside).
    pub confirmed_ms: i64,
    /// The signal when the person entered.
    pub signal: SignalReading,
    /// How long the signal had been red when the person entered.
    pub red_for_ms: i64,
    /// Age of the signal reading when used.
    pub signal_age_ms: i64,
    /// The person's box in each staged picture (leaving, mid-crosswalk, further on).
    pub boxes: Vec<BBox>,
    /// The offence as the node's pictures name it (absent from nodes of earlier releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offence: Option<Offence>,
}

/// An offence as the violation-code table in force names it (GA 408.1: four digits, the
/// first the class, 3 for pedestrians).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offence {
    /// The table's code, e.g. `3001`.
    pub code: String,
    /// The offence in Chinese, as the table words it.
    pub name: String,
}

/// One vehicle passing a checkpoint camera, plate read or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VehiclePass {
    pub track_id: u64,
    /// Normalised plate text, or None when unread.
    pub plate: Option<String>,
    /// Confidence of each plate character, 0..1.
    #[serde(default)]
    pub char_confidence: Vec<f32>,
    pub plate_colour: Option<crate::plate::PlateColor>,
    pub plate_class: Option<crate::plate::PlateClass>,
    /// Detector class: car, bus, truck, motorcycle.
    pub vehicle_class: String,
    /// Direction of travel, e.g. `inbound` / `outbound`, where configured.
    #[serde(default)]
    pub direction: Option<String>,
    /// When the vehicle was first and last seen, UTC ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<i64>,
    /// Plate reads fused into `plate`.
    #[serde(default)]
    pub plate_reads: u32,
    /// The registry version the node checked the plate against; absent when it had none.
    /// The aggregator checks passes against newer versions itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_version: Option<u64>,
    /// The plate was read, but some character below the node's confidence floor: stored
    /// and searchable, but no plate rule (format, registry, watch list, clone) rests on it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub plate_unsure: bool,
}

/// Why a plate is anomalous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyType {
    /// The read fits no GA 36 grammar (suspected fake).
    FormatInvalid,
    NotRegistered,
    WatchList,
    /// Registered class or colour contradicts what the camera sees.
    ClassMismatch,
    /// The same plate at two checkpoints too far apart for the time between (套牌).
    ClonedPlate,
    /// Long-distance coach between 02:00 and 05:00 local time.
    NightCoach,
    /// Truck or hazardous goods inside a restricted zone during restricted hours.
    RestrictedZone,
    /// Average speed over a section between two checkpoints above its limit (区间测速).
    SectionSpeeding,
}

impl AnomalyType {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyType::FormatInvalid => "format_invalid",
            AnomalyType::NotRegistered => "not_registered",
            AnomalyType::WatchList => "watch_list",
            AnomalyType::ClassMismatch => "class_mismatch",
            AnomalyType::ClonedPlate => "cloned_plate",
            AnomalyType::NightCoach => "night_coach",
            AnomalyType::RestrictedZone => "restricted_zone",
            AnomalyType::SectionSpeeding => "section_speeding",
        }
    }
}

/// A plate anomaly: its type, the plate, the passes it rests on and what was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlateAnomaly {
    pub anomaly: AnomalyType,
    pub plate: String,
    /// The `vehicle_pass` events this anomaly rests on.
    pub passes: Vec<String>,
    /// Cloned plate: road distance between the two checkpoints, km.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
    /// Cloned plate: time between the two passes, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<f64>,
    /// Cloned plate: the speed the two passes imply, km/h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implied_speed_kmh: Option<f64>,
    /// Free-form detail, e.g. the watch-list status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// One position of a key vehicle (JT/T 808 0x0200 / 0x0704). The event's `node_id` and
/// `camera_id` are the gateway's id (type 209), its `checkpoint_id` the place the gateway
/// stands for in the county's key space, its `frame_time_ms` the fix's time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VehiclePosition {
    /// The terminal's phone number, its id in JT/T 808.
    pub terminal: String,
    /// The plate it registered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub speed_kmh: f64,
    /// 0-359, clockwise from north.
    pub heading: u16,
    pub altitude_m: u16,
    /// JT/T 808 alarm and status bits as sent.
    pub alarm: u32,
    pub status: u32,
}

/// A point of a key vehicle's track an alert rests on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PositionFix {
    pub time_ms: i64,
    pub lat: f64,
    pub lon: f64,
    pub speed_kmh: f64,
}

/// What a key vehicle's positions show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VehicleAlertKind {
    /// Stopped longer than allowed outside every allowed place.
    AbnormalStop,
    /// Over the road's limit for a while.
    Speeding,
    /// Driving hours on end without the rest the rules ask.
    Fatigue,
    /// A coach driving between 02:00 and 05:00 local time.
    NightCoach,
    /// The terminal stopped reporting.
    TerminalSilent,
    /// Away from the route it is registered for.
    OffRoute,
    /// On the road while the registry holds something against it (inspection overdue,
    /// hit-and-run, wanted...): its `statuses`.
    RegistryStatus,
}

impl VehicleAlertKind {
    pub const ALL: [VehicleAlertKind; 7] = [
        VehicleAlertKind::AbnormalStop,
        VehicleAlertKind::Speeding,
        VehicleAlertKind::Fatigue,
        VehicleAlertKind::NightCoach,
        VehicleAlertKind::TerminalSilent,
        VehicleAlertKind::OffRoute,
        VehicleAlertKind::RegistryStatus,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VehicleAlertKind::AbnormalStop => "abnormal_stop",
            VehicleAlertKind::Speeding => "speeding",
            VehicleAlertKind::Fatigue => "fatigue",
            VehicleAlertKind::NightCoach => "night_coach",
            VehicleAlertKind::TerminalSilent => "terminal_silent",
            VehicleAlertKind::OffRoute => "off_route",
            VehicleAlertKind::RegistryStatus => "registry_status",
        }
    }
}

/// An alert on a key vehicle, with the fixes it rests on (and their position events' ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VehicleAlert {
    pub alert: VehicleAlertKind,
    pub terminal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plate: Option<String>,
    /// What was measured, in words (duration, speed and limit...).
    pub detail: String,
    /// The fixes that show it (at most a few dozen: first, last and some between).
    pub fixes: Vec<PositionFix>,
    /// The `vehicle_position` events of those fixes.
    #[serde(default)]
    pub positions: Vec<String>,
    /// `registry_status`: what the registry in force holds against the vehicle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<crate::registry::Status>,
}

/// The kind-specific part of an event. New kinds add variants here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum EventBody {
    ObjectTrack(ObjectTrack),
    PedestrianRedLight(PedestrianRedLight),
    VehiclePass(VehiclePass),
    PlateAnomaly(PlateAnomaly),
    VehiclePosition(VehiclePosition),
    VehicleAlert(VehicleAlert),
}

impl EventBody {
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::ObjectTrack(_) => EventKind::ObjectTrack,
            EventBody::PedestrianRedLight(_) => EventKind::PedestrianRedLight,
            EventBody::VehiclePass(_) => EventKind::VehiclePass,
            EventBody::PlateAnomaly(_) => EventKind::PlateAnomaly,
            EventBody::VehiclePosition(_) => EventKind::VehiclePosition,
            EventBody::VehicleAlert(_) => EventKind::VehicleAlert,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub schema_version: u32,
    pub event_id: String,
    pub severity: Severity,
    pub node_id: DeviceId,
    pub checkpoint_id: DeviceId,
    pub camera_id: DeviceId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<u32>,
    /// Frame time, UTC milliseconds since the Unix epoch.
    pub frame_time_ms: i64,
    pub detections: Vec<Detection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    #[serde(default)]
    pub evidence: Vec<EvidenceRef>,
    pub review: ReviewState,
    /// The node's clock when the frame was taken (absent where the event does not come from
    /// a camera, or from a node that does not read its clock). `trusted: false` marks the
    /// event's time and evidence as taken on an unsynchronised clock, or off by more than
    /// the node's bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<crate::health::ClockStatus>,
    #[serde(flatten)]
    pub body: EventBody,
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("event payload of {0} bytes exceeds the {MAX_EVENT_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("event payload is not valid event JSON: {0}")]
    Malformed(String),
    #[error("event schema version {found} is not supported (this build speaks {SCHEMA_VERSION}); upgrade the older side")]
    Version { found: u64 },
    #[error("event_id '{0}' is not a ULID (26 Crockford base32 characters)")]
    EventId(String),
    #[error("event {event_id}: {field} '{id}' is not a {expected:?} id")]
    IdType {
        event_id: String,
        field: &'static str,
        id: String,
        expected: DeviceType,
    },
    #[error("event {event_id}: frame_time_ms {t} is outside 2000..2100")]
    Time { event_id: String, t: i64 },
    #[error(
        "event {event_id}: plate of {chars} characters; a plate has at most {MAX_PLATE_CHARS}"
    )]
    PlateLength { event_id: String, chars: usize },
}

/// Longest plate text an event may carry, in characters (GA 36 plates have 7 or 8; a
/// misread may add a few). Longer is no plate, and would cost every query of it.
pub const MAX_PLATE_CHARS: usize = 16;

impl Event {
    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("events always serialise")
    }

    /// Decodes and validates an event from the wire: size, schema version first (so a
    /// newer peer gets a version error, not a field error), then shape, then ids and time.
    pub fn decode(bytes: &[u8]) -> Result<Event, EventError> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge(bytes.len()));
        }
        #[derive(Deserialize)]
        struct VersionOnly {
            schema_version: u64,
        }
        let v: VersionOnly =
            serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
        if v.schema_version != SCHEMA_VERSION as u64 {
            return Err(EventError::Version {
                found: v.schema_version,
            });
        }
        let ev: Event =
            serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
        ev.validate()?;
        Ok(ev)
    }

    pub fn validate(&self) -> Result<(), EventError> {
        if ulid::Ulid::from_string(&self.event_id).is_err() {
            return Err(EventError::EventId(self.event_id.clone()));
        }
        // A key vehicle's events come from the JT/T 808 gateway, the rest from edge nodes.
        let (node, camera) = match self.kind() {
            EventKind::VehiclePosition | EventKind::VehicleAlert => {
                (DeviceType::AccessGateway, DeviceType::AccessGateway)
            }
            _ => (DeviceType::AnalysisDevice, DeviceType::Camera),
        };
        for (field, id, expected) in [
            ("node_id", &self.node_id, node),
            ("checkpoint_id", &self.checkpoint_id, DeviceType::Checkpoint),
            ("camera_id", &self.camera_id, camera),
        ] {
            if id.device_type() != expected {
                return Err(EventError::IdType {
                    event_id: self.event_id.clone(),
                    field,
                    id: id.to_string(),
                    expected,
                });
            }
        }
        // 2000-01-01 .. 2100-01-01
        if !(946_684_800_000..4_102_444_800_000).contains(&self.frame_time_ms) {
            return Err(EventError::Time {
                event_id: self.event_id.clone(),
                t: self.frame_time_ms,
            });
        }
        let plate = match &self.body {
            EventBody::VehiclePass(v) => v.plate.as_deref(),
            EventBody::PlateAnomaly(a) => Some(a.plate.as_str()),
            EventBody::VehiclePosition(p) => p.plate.as_deref(),
            EventBody::VehicleAlert(a) => a.plate.as_deref(),
            _ => None,
        };
        if let Some(chars) = plate
            .map(|p| p.chars().count())
            .filter(|n| *n > MAX_PLATE_CHARS)
        {
            return Err(EventError::PlateLength {
                event_id: self.event_id.clone(),
                chars,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn sample() -> Event {
        let b = BBox::new(10.0, 20.0, 50.0, 120.0);
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: ulid::Ulid::new().to_string(),
            severity: Severity::Info,
            node_id: DeviceId::parse("32050500055050000001").unwrap(),
            checkpoint_id: DeviceId::parse("32050500051210000001").unwrap(),
            camera_id: DeviceId::parse("32050500051320000001").unwrap(),
            lane: None,
            frame_time_ms: 1_780_000_000_000,
            detections: vec![Detection {
                class: "person".into(),
                score: 0.9,
                bbox: b,
                track_id: Some(1),
            }],
            rule: None,
            evidence: vec![],
            review: ReviewState::NotRequired,
            clock: None,
            body: EventBody::ObjectTrack(ObjectTrack {
                phase: TrackPhase::End,
                track_id: 1,
                class: "person".into(),
                mean_score: 0.8,
                max_score: 0.9,
                first_box: b,
                last_box: b,
                first_time_ms: 1_780_000_000_000,
                last_time_ms: 1_780_000_001_000,
                duration_ms: 1000,
                hits: 10,
                path: vec![],
                displacement_px: 0.0,
            }),
        }
    }

    #[test]
    fn round_trip_and_kind_tag() {
        let e = sample();
        let bytes = e.encode();
        let s = std::str::from_utf8(&bytes).unwrap();
        assert!(s.contains("\"kind\":\"object_track\""), "{s}");
        assert_eq!(Event::decode(&bytes).unwrap(), e);
    }

    #[test]
    fn wrong_version_is_named() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        v["schema_version"] = 7.into();
        let err = Event::decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(err, EventError::Version { found: 7 }), "{err}");
    }

    #[test]
    fn wrong_id_type_and_bad_ulid_rejected() {
        let mut e = sample();
        e.camera_id = DeviceId::parse("32050500051210000009").unwrap();
        assert!(matches!(
            Event::decode(&e.encode()),
            Err(EventError::IdType {
                field: "camera_id",
                ..
            })
        ));
        let mut e = sample();
        e.event_id = "nope".into();
        assert!(matches!(
            Event::decode(&e.encode()),
            Err(EventError::EventId(_))
        ));
    }

    #[test]
    fn oversized_rejected() {
        let big = vec![b' '; MAX_EVENT_BYTES + 1];
        assert!(matches!(Event::decode(&big), Err(EventError::TooLarge(_))));
    }

    #[test]
    fn iou_basics() {
        let a = BBox::new(0.0, 0.0, 10.0, 10.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        assert_eq!(a.iou(&BBox::new(20.0, 20.0, 30.0, 30.0)), 0.0);
        let half = BBox::new(5.0, 0.0, 15.0, 10.0);
        assert!((a.iou(&half) - 50.0 / 150.0).abs() < 1e-6);
    }

    fn bbox() -> impl Strategy<Value = BBox> {
        (0f32..1000.0, 0f32..1000.0, 0f32..300.0, 0f32..300.0)
            .prop_map(|(x, y, w, h)| BBox::new(x, y, x + w, y + h))
    }

    proptest! {
        #[test]
        fn iou_is_symmetric_and_bounded(a in bbox(), b in bbox()) {
            let i = a.iou(&b);
            prop_assert!((0.0..=1.0 + 1e-5).contains(&i));
            prop_assert!((i - b.iou(&a)).abs() < 1e-5);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Event::decode(&bytes);
        }
    }
}
