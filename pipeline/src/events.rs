//! Stage `events`: tracker output into wire [`Event`]s.
//!
//! Input: [`TrackEvent`]s. Output: `object_track` events, one when a track is confirmed and
//! one when it ends. Event ids are ULIDs whose time part is the frame time, so that ids sort
//! in the order things were seen. Pure: it publishes nothing.

use protocol::{
    Detection as WireDetection, DeviceId, Event, EventBody, ObjectTrack, ReviewState, RuleRef,
    Severity, TrackPhase, SCHEMA_VERSION,
};

use crate::evidence::Picture;
use crate::red_light::Finding;
use crate::track::{Track, TrackEvent, PATH_SUMMARY_POINTS};

pub const RED_LIGHT_RULE: &str = "pedestrian_red_light";
pub const RED_LIGHT_RULE_VERSION: u32 = 1;

pub const OBJECT_TRACK_RULE: &str = "object_track";
pub const OBJECT_TRACK_RULE_VERSION: u32 = 1;

pub struct EventFactory {
    pub node_id: DeviceId,
    pub checkpoint_id: DeviceId,
    pub camera_id: DeviceId,
    pub lane: Option<u32>,
    /// The node's clock state in force for the frame being processed (set by the camera
    /// when its frame times come from the box's clock); every event made carries it.
    pub clock: Option<protocol::health::ClockStatus>,
    labels: Vec<String>,
    ulids: ulid::Generator,
}

impl EventFactory {
    pub fn new(
        node_id: DeviceId,
        checkpoint_id: DeviceId,
        camera_id: DeviceId,
        lane: Option<u32>,
        labels: Vec<String>,
    ) -> Self {
        EventFactory {
            node_id,
            checkpoint_id,
            camera_id,
            lane,
            clock: None,
            labels,
            ulids: ulid::Generator::new(),
        }
    }

    pub fn label(&self, class_id: usize) -> String {
        self.labels
            .get(class_id)
            .cloned()
            .unwrap_or_else(|| format!("class{class_id}"))
    }

    pub fn next_id(&mut self, time_ms: i64) -> String {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(time_ms.max(0) as u64);
        // The generator is monotonic within a millisecond; it only fails after 2^80 ids in
        // one millisecond, where a fresh random id is as good.
        self.ulids
            .generate_from_datetime(t)
            .unwrap_or_else(|_| ulid::Ulid::from_datetime(t))
            .to_string()
    }

    pub fn object_track(&mut self, ev: &TrackEvent) -> Event {
        let (phase, t): (TrackPhase, &Track) = match ev {
            TrackEvent::Started(t) => (TrackPhase::Start, t),
            TrackEvent::Ended(t) => (TrackPhase::End, t),
        };
        let class = self.label(t.class_id);
        let event_id = self.next_id(t.last_time_ms);
        Event {
            schema_version: SCHEMA_VERSION,
            event_id,
            severity: Severity::Info,
            node_id: self.node_id.clone(),
            checkpoint_id: self.checkpoint_id.clone(),
            camera_id: self.camera_id.clone(),
            lane: self.lane,
            frame_time_ms: t.last_time_ms,
            detections: vec![WireDetection {
                class: class.clone(),
                score: t.score,
                bbox: t.bbox,
                track_id: Some(t.id),
            }],
            rule: Some(RuleRef {
                id: OBJECT_TRACK_RULE.into(),
                version: OBJECT_TRACK_RULE_VERSION,
            }),
            evidence: vec![],
            review: ReviewState::NotRequired,
            clock: self.clock.clone(),
            body: EventBody::ObjectTrack(ObjectTrack {
                phase,
                track_id: t.id,
                class,
                mean_score: t.mean_score(),
                max_score: t.max_score,
                first_box: t.first_box,
                last_box: t.bbox,
                first_time_ms: t.first_time_ms,
                last_time_ms: t.last_time_ms,
                duration_ms: t.last_time_ms - t.first_time_ms,
                hits: t.hits,
                path: t.path_summary(PATH_SUMMARY_POINTS),
                displacement_px: t.displacement_px(),
            }),
        }
    }

    /// A `pedestrian_red_light` event; it awaits review.
    pub fn red_light(
        &mut self,
        event_id: String,
        f: &Finding,
        boxes: Vec<protocol::BBox>,
        pictures: &[Picture],
        offence: Option<protocol::Offence>,
    ) -> Event {
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: event_id.clone(),
            severity: Severity::Alert,
            node_id: self.node_id.clone(),
            checkpoint_id: self.checkpoint_id.clone(),
            camera_id: self.camera_id.clone(),
            lane: self.lane,
            frame_time_ms: f.confirmed.1,
            detections: vec![WireDetection {
                class: "person".into(),
                score: 1.0,
                bbox: f.confirmed.2,
                track_id: Some(f.track_id),
            }],
            rule: Some(RuleRef {
                id: RED_LIGHT_RULE.into(),
                version: RED_LIGHT_RULE_VERSION,
            }),
            evidence: pictures
                .iter()
                .map(|p| protocol::EvidenceRef {
                    image_id: format!("{event_id}-{}", p.role),
                    sha256: p.sha256.clone(),
                    role: p.role.clone(),
                })
                .collect(),
            review: ReviewState::Pending,
            clock: self.clock.clone(),
            body: EventBody::PedestrianRedLight(protocol::PedestrianRedLight {
                track_id: f.track_id,
                crosswalk: f.crosswalk.clone(),
                waiting_area: f.waiting_area.clone(),
                left_waiting_ms: f.left.1,
                entered_ms: f.entered.1,
                confirmed_ms: f.confirmed.1,
                red_for_ms: f.entered.1 - f.signal.since_ms,
                signal: f.signal.clone(),
                signal_age_ms: f.signal_age_ms,
                boxes,
                offence,
            }),
        }
    }
}
