//! zenoh key expressions. Every key the system uses is built here, never with an inline
//! `format!` elsewhere, so that publishers, subscribers and access rules agree.
//!
//! ```text
//! ckpt/<city6>/<county6>/<checkpoint-id>/<camera-id>/event/<kind>/<event-id>
//! ckpt/<city6>/<county6>/<checkpoint-id>/health
//! ckpt/<city6>/<county6>/<checkpoint-id>/alive
//! ```

use crate::event::EventKind;
use crate::ids::DeviceId;

pub const ROOT: &str = "ckpt";

/// Prefix of everything one checkpoint publishes.
pub fn checkpoint_prefix(checkpoint: &DeviceId) -> String {
    format!(
        "{ROOT}/{}/{}/{}",
        checkpoint.city6(),
        checkpoint.county6(),
        checkpoint
    )
}

/// Key of one event.
pub fn event(checkpoint: &DeviceId, camera: &DeviceId, kind: EventKind, event_id: &str) -> String {
    format!(
        "{}/{}/event/{}/{}",
        checkpoint_prefix(checkpoint),
        camera,
        kind.as_str(),
        event_id
    )
}

/// Periodic node status of one checkpoint.
pub fn health(checkpoint: &DeviceId) -> String {
    format!("{}/health", checkpoint_prefix(checkpoint))
}

/// Liveliness token of one checkpoint's node.
pub fn alive(checkpoint: &DeviceId) -> String {
    format!("{}/alive", checkpoint_prefix(checkpoint))
}

/// Signal-controller feed of one phase at a checkpoint.
pub fn signal(checkpoint: &DeviceId, phase: &str) -> String {
    format!("{}/signal/{phase}", checkpoint_prefix(checkpoint))
}

/// The versioned registry and watch list for the checkpoints of one county (the county of
/// `checkpoint`), published by aggregators and followed by edge nodes.
pub fn watchlist(checkpoint: &DeviceId) -> String {
    format!(
        "{ROOT}/{}/{}/watchlist",
        checkpoint.city6(),
        checkpoint.county6()
    )
}

/// One evidence image (JPEG bytes), published before the event that references it.
pub fn evidence(checkpoint: &DeviceId, camera: &DeviceId, image_id: &str) -> String {
    format!(
        "{}/{}/evidence/{image_id}",
        checkpoint_prefix(checkpoint),
        camera
    )
}

/// The live view of one camera: an aggregator's query, answered by the camera's node with a
/// JPEG of the latest frame.
pub fn camera_live(checkpoint: &DeviceId, camera: &DeviceId) -> String {
    format!("{}/{}/live", checkpoint_prefix(checkpoint), camera)
}

/// Every camera's live view at one checkpoint (the node's queryable).
pub fn live_of(checkpoint: &DeviceId) -> String {
    format!("{}/*/live", checkpoint_prefix(checkpoint))
}

/// The zones of one camera: an aggregator's query without a payload is answered with the
/// zones the camera runs with; one with a payload (`{"zones": [...]}`) asks the node to save
/// them in its config file, which it then applies live.
pub fn camera_zones(checkpoint: &DeviceId, camera: &DeviceId) -> String {
    format!("{}/{}/zones", checkpoint_prefix(checkpoint), camera)
}

/// Every camera's zones at one checkpoint (the node's queryable).
pub fn zones_of(checkpoint: &DeviceId) -> String {
    format!("{}/*/zones", checkpoint_prefix(checkpoint))
}

/// The health reports of every node in `scope`.
pub fn health_in(scope: &Scope) -> String {
    match scope {
        Scope::County(c) => format!("{ROOT}/{}00/{c}/*/health", &c[..4]),
        Scope::City(c) => format!("{ROOT}/{c}/*/*/health"),
        Scope::All => format!("{ROOT}/*/*/*/health"),
    }
}

/// Scope an aggregator subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Six-digit county region code, e.g. `320505`.
    County(String),
    /// Six-digit city region code, county digits 00, e.g. `320500`.
    City(String),
    /// Everything (a single-site demo).
    All,
}

/// Wildcard selecting every event in a scope.
pub fn events_in(scope: &Scope) -> String {
    match scope {
        Scope::County(c) => format!("{ROOT}/{}00/{c}/*/*/event/**", &c[..4]),
        Scope::City(c) => format!("{ROOT}/{c}/*/*/*/event/**"),
        Scope::All => format!("{ROOT}/*/*/*/*/event/**"),
    }
}

/// Wildcard selecting every evidence image in a scope.
pub fn evidence_in(scope: &Scope) -> String {
    events_in(scope).replace("/event/**", "/evidence/*")
}

/// The parts of an evidence key: (checkpoint, camera, image id).
pub fn parse_evidence_key(key: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [ROOT, _city, _county, checkpoint, camera, "evidence", image_id] => {
            Some((checkpoint, camera, image_id))
        }
        _ => None,
    }
}

/// The parts of an event key, parsed back. Used by the aggregator to check that an event
/// arrived under the key its own ids imply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventKey<'a> {
    /// The key's city and county segments: a checkpoint's own are its id's first four digits
    /// and `00`, and its first six.
    pub city: &'a str,
    pub county: &'a str,
    pub checkpoint: &'a str,
    pub camera: &'a str,
    pub kind: &'a str,
    pub event_id: &'a str,
}

pub fn parse_event_key(key: &str) -> Option<EventKey<'_>> {
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [ROOT, city, county, checkpoint, camera, "event", kind, event_id] => Some(EventKey {
            city,
            county,
            checkpoint,
            camera,
            kind,
            event_id,
        }),
        _ => None,
    }
}

/// Where aggregators acknowledge what they stored from a checkpoint's nodes (events and
/// evidence images by id). Per checkpoint, not per node: evidence keys carry no node id,
/// and a node ignores ids it does not hold.
pub fn ack(checkpoint: &DeviceId) -> String {
    format!("{}/ack", checkpoint_prefix(checkpoint))
}

/// Liveliness token an aggregator holds while it is subscribed and storing; `scope_label` is
/// its region code or `all`.
pub fn aggregator_alive(scope_label: &str, aggregator_id: &DeviceId) -> String {
    format!("{ROOT}/agg/{scope_label}/{aggregator_id}")
}

/// Where an aggregator answers query `name` (`events`, `trajectory`, `flow`, ...); `*` in
/// place of the id or the name selects every aggregator of the scope or every query.
pub fn aggregator_query(scope_label: &str, aggregator_id: &DeviceId, name: &str) -> String {
    format!("{ROOT}/agg/{scope_label}/{aggregator_id}/query/{name}")
}

/// Where a county aggregator answers the city's pull (`refs`, `events`, `evidence`); `*` in
/// place of the id asks every aggregator of the county.
pub fn aggregator_sync(scope_label: &str, aggregator_id: &str, name: &str) -> String {
    format!("{ROOT}/agg/{scope_label}/{aggregator_id}/sync/{name}")
}

/// Matches every aggregator's liveliness token.
pub const ANY_AGGREGATOR_ALIVE: &str = "ckpt/agg/**";

/// zenoh session settings both binaries share, without TLS or access control (see
/// [`crate::security::zenoh_json5`] for those).
pub fn zenoh_json5(
    mode: &str,
    connect: &[String],
    listen: &[String],
    multicast_scouting: bool,
) -> String {
    crate::security::zenoh_json5(mode, connect, listen, multicast_scouting, None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_key_round_trips() {
        let ck = DeviceId::parse("32050500051210000001").unwrap();
        let cam = DeviceId::parse("32050500051320000001").unwrap();
        let k = event(
            &ck,
            &cam,
            EventKind::ObjectTrack,
            "01J0000000000000000000000A",
        );
        assert_eq!(k, "ckpt/320500/320505/32050500051210000001/32050500051320000001/event/object_track/01J0000000000000000000000A");
        let p = parse_event_key(&k).unwrap();
        assert_eq!(p.checkpoint, ck.as_str());
        assert_eq!(p.kind, "object_track");
        assert!(parse_event_key("ckpt/a/b").is_none());
    }

    #[test]
    fn scopes() {
        assert_eq!(
            events_in(&Scope::County("320505".into())),
            "ckpt/320500/320505/*/*/event/**"
        );
        assert_eq!(
            events_in(&Scope::City("320500".into())),
            "ckpt/320500/*/*/*/event/**"
        );
    }
}
