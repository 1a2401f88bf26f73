//! Wire types shared by the edge node and the aggregator.
//!
//! Input: nothing; this crate only defines data and pure functions over it.
//! Output: device ids ([`DeviceId`]), events ([`Event`]) and zenoh key expressions ([`keys`]).
//! It must not depend on tokio, GStreamer, ort or zenoh: both sides, tests and benches use it.
#![forbid(unsafe_code)]

pub mod event;
pub mod health;
pub mod ids;
pub mod integrity;
pub mod jt808;
pub mod keys;
pub mod metrics;
pub mod plate;
pub mod registry;
pub mod security;
pub mod sqlite_file;
pub mod time;

pub use event::{
    AckMsg, AnomalyType, BBox, Detection, Event, EventBody, EventError, EventKind, EvidenceRef,
    LightState, ObjectTrack, Offence, PathPoint, PedestrianRedLight, PlateAnomaly, PositionFix,
    ReviewState, RuleRef, Severity, SignalPhaseMsg, SignalReading, SignalSource, TrackPhase,
    VehicleAlert, VehicleAlertKind, VehiclePass, VehiclePosition, MAX_EVENT_BYTES, SCHEMA_VERSION,
};
pub use ids::{DeviceId, DeviceIdError, DeviceType};
