//! Stage `correlate`: cross-checkpoint checks on vehicle passes, run at ingest on committed
//! rows. Cloned plates (套牌): the same plate at two checkpoints whose road distance cannot be
//! covered in the time between (implied speed above `max_speed_kmh`) gives a `plate_anomaly`
//! of type `cloned_plate` that references both passes. Every pass is compared with the passes
//! of its plate before and after it, so the order passes arrive in does not matter; anomaly
//! ids derive from the pair of passes, so replays and re-correlation store each anomaly once.
//!
//! Section speed (区间测速): for each configured section (an entry checkpoint, an exit
//! checkpoint, the road length between them and a limit), a plate's pass at the exit and its
//! latest pass at the entry before it give the average speed over the section; above the
//! limit by more than the tolerance, a `plate_anomaly` of type `section_speeding` references
//! both passes. No event when either pass is missing or either plate read is unsure.

use protocol::{
    AnomalyType, DeviceId, Event, EventBody, EventKind, PlateAnomaly, ReviewState, RuleRef,
    Severity, SCHEMA_VERSION,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::checkpoints::Registry;
use crate::store::{EventStore, StoreError};

pub const CLONED_PLATE_RULE: &str = "cloned_plate";
pub const SECTION_SPEED_RULE: &str = "section_speed";

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorrelationConfig {
    /// Passes implying a speed above this between two checkpoints are a cloned plate, km/h.
    #[serde(default = "d_speed")]
    pub max_speed_kmh: f64,
    /// How far apart in time two passes of a plate are compared, hours.
    #[serde(default = "d_window")]
    pub window_hours: f64,
    /// Sections between two checkpoints whose average speed is enforced (区间测速).
    #[serde(default)]
    pub sections: Vec<SectionConfig>,
}

/// One section of road between two checkpoints, in the direction of travel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SectionConfig {
    /// The name its events carry, e.g. `吴中大道东行 K3-K5`.
    pub name: String,
    /// The checkpoint a vehicle enters the section at.
    pub from: String,
    /// The checkpoint it leaves at.
    pub to: String,
    /// Road length between the two, metres.
    pub length_m: f64,
    /// Speed limit over the section, km/h.
    pub limit_kmh: f64,
    /// An average speed above the limit by more than this many percent is an event
    /// (default 10).
    #[serde(default = "d_tolerance")]
    pub tolerance_pct: f64,
}

fn d_tolerance() -> f64 {
    10.0
}

impl SectionConfig {
    /// What is wrong with it, if anything (checkpoints must be in the registry).
    pub fn check(&self, known: &dyn Fn(&str) -> bool, at: &str, errors: &mut Vec<String>) {
        if self.name.trim().is_empty() {
            errors.push(format!("{at}: name is empty"));
        }
        for (k, id) in [("from", &self.from), ("to", &self.to)] {
            if !known(id) {
                errors.push(format!("{at}.{k} = '{id}' is not a checkpoint in [[checkpoints]]; add it there or correct the id"));
            }
        }
        if self.from == self.to {
            errors.push(format!(
                "{at}: from and to are the same checkpoint; a section runs between two"
            ));
        }
        if !(self.length_m > 0.0 && self.length_m <= 200_000.0) {
            errors.push(format!(
                "{at}.length_m = {} must be above 0 and at most 200000",
                self.length_m
            ));
        }
        if !(self.limit_kmh > 0.0 && self.limit_kmh <= 200.0) {
            errors.push(format!(
                "{at}.limit_kmh = {} must be above 0 and at most 200",
                self.limit_kmh
            ));
        }
        if !(0.0..=100.0).contains(&self.tolerance_pct) {
            errors.push(format!(
                "{at}.tolerance_pct = {} must be 0..100",
                self.tolerance_pct
            ));
        }
    }
}

fn d_speed() -> f64 {
    180.0
}
fn d_window() -> f64 {
    6.0
}

impl Default for CorrelationConfig {
    fn default() -> Self {
        CorrelationConfig {
            max_speed_kmh: d_speed(),
            window_hours: d_window(),
            sections: Vec::new(),
        }
    }
}

/// The plate a pass can be correlated on: none when unread or read unsure.
fn plate_of(ev: &Event) -> Option<&str> {
    match &ev.body {
        EventBody::VehiclePass(v) if !v.plate_unsure => v.plate.as_deref(),
        _ => None,
    }
}

/// A ULID whose time is `t_ms` and whose random part is fixed by `key`.
pub(crate) fn derived_id(t_ms: i64, key: &str) -> String {
    let h = Sha256::digest(key.as_bytes());
    let mut r = [0u8; 16];
    r[6..].copy_from_slice(&h[..10]);
    ulid::Ulid::from_parts(t_ms.max(0) as u64, u128::from_be_bytes(r)).to_string()
}

/// Two passes (checkpoint, frame time) too far apart for the time between: the road
/// distance, the interval and the implied speed. None for a checkpoint outside the registry
/// (no distance, no verdict) or a speed within `max_speed_kmh`.
fn too_fast(
    reg: &Registry,
    cfg: &CorrelationConfig,
    a: (&str, i64),
    b: (&str, i64),
) -> Option<(f64, i64, f64)> {
    let km = reg.distance_km(a.0, b.0)?;
    let dt_ms = (a.1 - b.1).abs();
    let speed = if dt_ms == 0 {
        f64::INFINITY
    } else {
        km / (dt_ms as f64 / 3_600_000.0)
    };
    (speed > cfg.max_speed_kmh).then_some((km, dt_ms, speed))
}

/// Cloned-plate anomalies between `pass` and `others` (passes of the same plate).
pub fn cloned_plate(
    reg: &Registry,
    cfg: &CorrelationConfig,
    aggregator: &DeviceId,
    pass: &Event,
    others: &[Event],
) -> Vec<Event> {
    let Some(plate) = plate_of(pass) else {
        return vec![];
    };
    let mut out = Vec::new();
    for other in others {
        if other.event_id == pass.event_id
            || plate_of(other) != Some(plate)
            || other.checkpoint_id == pass.checkpoint_id
        {
            continue;
        }
        let Some((km, dt_ms, speed)) = too_fast(
            reg,
            cfg,
            (pass.checkpoint_id.as_str(), pass.frame_time_ms),
            (other.checkpoint_id.as_str(), other.frame_time_ms),
        ) else {
            continue;
        };
        let (first, later) =
            if (other.frame_time_ms, &other.event_id) < (pass.frame_time_ms, &pass.event_id) {
                (other, pass)
            } else {
                (pass, other)
            };
        out.push(Event {
            schema_version: SCHEMA_VERSION,
            event_id: derived_id(
                later.frame_time_ms,
                &format!("{CLONED_PLATE_RULE}|{}|{}", first.event_id, later.event_id),
            ),
            severity: Severity::Alert,
            node_id: aggregator.clone(),
            checkpoint_id: later.checkpoint_id.clone(),
            camera_id: later.camera_id.clone(),
            lane: later.lane,
            frame_time_ms: later.frame_time_ms,
            detections: vec![],
            rule: Some(RuleRef {
                id: CLONED_PLATE_RULE.into(),
                version: 1,
            }),
            evidence: later
                .evidence
                .iter()
                .chain(first.evidence.iter())
                .cloned()
                .collect(),
            review: ReviewState::Pending,
            clock: None,
            body: EventBody::PlateAnomaly(PlateAnomaly {
                anomaly: AnomalyType::ClonedPlate,
                plate: plate.to_string(),
                passes: vec![first.event_id.clone(), later.event_id.clone()],
                distance_km: Some(km),
                interval_secs: Some(dt_ms as f64 / 1000.0),
                implied_speed_kmh: Some(if speed.is_finite() { speed } else { f64::MAX }),
                detail: None,
            }),
        });
    }
    out
}

/// Section-speed events `pass` completes: as the exit, with the latest entry pass of its
/// plate before it; as the entry, with each later exit pass it is the latest entry of
/// (`sightings`: the plate's passes around it, `pass` among them). The other pass is read
/// whole only when the pair is too fast.
fn section_speeding(
    store: &mut dyn EventStore,
    cfg: &CorrelationConfig,
    aggregator: &DeviceId,
    pass: &Event,
    sightings: &[&crate::store::Sighting],
) -> Result<Vec<Event>, StoreError> {
    let Some(plate) = plate_of(pass) else {
        return Ok(vec![]);
    };
    let (ck, t) = (pass.checkpoint_id.as_str(), pass.frame_time_ms);
    let latest_entry_before = |sec: &SectionConfig, before: i64| {
        sightings
            .iter()
            .filter(|s| s.checkpoint_id == sec.from && s.frame_time_ms < before)
            .max_by_key(|s| (s.frame_time_ms, s.event_id.as_str()))
    };
    let mut out = Vec::new();
    for sec in &cfg.sections {
        // (entry id, entry time, exit id, exit time)
        let mut pairs: Vec<(&str, i64, &str, i64)> = Vec::new();
        if ck == sec.to {
            if let Some(e) = latest_entry_before(sec, t) {
                pairs.push((&e.event_id, e.frame_time_ms, &pass.event_id, t));
            }
        }
        if ck == sec.from {
            for x in sightings
                .iter()
                .filter(|s| s.checkpoint_id == sec.to && s.frame_time_ms > t)
            {
                if latest_entry_before(sec, x.frame_time_ms).map(|e| e.event_id.as_str())
                    == Some(pass.event_id.as_str())
                {
                    pairs.push((&pass.event_id, t, &x.event_id, x.frame_time_ms));
                }
            }
        }
        for (entry_id, entry_t, exit_id, exit_t) in pairs {
            let secs = (exit_t - entry_t) as f64 / 1000.0;
            let kmh = sec.length_m / 1000.0 / (secs / 3600.0);
            if kmh <= sec.limit_kmh * (1.0 + sec.tolerance_pct / 100.0) {
                continue;
            }
            let other_id = if entry_id == pass.event_id {
                exit_id
            } else {
                entry_id
            };
            let Some(other) = store.get(other_id)? else {
                continue;
            };
            // Both reads sure and the same plate, or no verdict.
            if plate_of(&other) != Some(plate) {
                continue;
            }
            let (entry, exit) = if entry_id == pass.event_id {
                (pass, &other)
            } else {
                (&other, pass)
            };
            out.push(Event {
                schema_version: SCHEMA_VERSION,
                event_id: derived_id(
                    exit.frame_time_ms,
                    &format!(
                        "{SECTION_SPEED_RULE}|{}|{}|{}",
                        sec.name, entry.event_id, exit.event_id
                    ),
                ),
                severity: Severity::Alert,
                node_id: aggregator.clone(),
                checkpoint_id: exit.checkpoint_id.clone(),
                camera_id: exit.camera_id.clone(),
                lane: exit.lane,
                frame_time_ms: exit.frame_time_ms,
                detections: vec![],
                rule: Some(RuleRef {
                    id: SECTION_SPEED_RULE.into(),
                    version: 1,
                }),
                evidence: exit
                    .evidence
                    .iter()
                    .chain(entry.evidence.iter())
                    .cloned()
                    .collect(),
                review: ReviewState::Pending,
                clock: None,
                body: EventBody::PlateAnomaly(PlateAnomaly {
                    anomaly: AnomalyType::SectionSpeeding,
                    plate: plate.to_string(),
                    passes: vec![entry.event_id.clone(), exit.event_id.clone()],
                    distance_km: Some(sec.length_m / 1000.0),
                    interval_secs: Some(secs),
                    implied_speed_kmh: Some(kmh),
                    detail: Some(format!(
                        "section '{}': limit {} km/h, tolerance {} %",
                        sec.name, sec.limit_kmh, sec.tolerance_pct
                    )),
                }),
            });
        }
    }
    Ok(out)
}

pub const WATCH_LIST_RULE: &str = "aggregator.watch_list";

/// The watch list in force, indexed by plate, for checks at ingest.
pub struct WatchIndex {
    pub version: u64,
    by_plate: std::collections::HashMap<String, Vec<protocol::registry::Status>>,
}

impl WatchIndex {
    pub fn new(f: &protocol::registry::RegistryFile) -> WatchIndex {
        WatchIndex {
            version: f.version,
            by_plate: f
                .vehicles
                .iter()
                .filter(|r| !r.status.is_empty())
                .map(|r| (r.plate.clone(), r.status.clone()))
                .collect(),
        }
    }
}

/// Watch-list hits the node could not raise: passes it checked against an older registry
/// version than the one in force here, or against none. One anomaly per pass (its id derives
/// from the pass), so replays and later versions do not repeat it.
pub fn watch_list_hits(w: &WatchIndex, aggregator: &DeviceId, pass: &Event) -> Option<Event> {
    let EventBody::VehiclePass(v) = &pass.body else {
        return None;
    };
    let plate = plate_of(pass)?;
    if v.registry_version.is_some_and(|n| n >= w.version) {
        return None; // the node checked it against this version or a newer one
    }
    let status = w.by_plate.get(plate)?;
    let list: Vec<&str> = status.iter().map(|s| s.as_str()).collect();
    Some(Event {
        schema_version: SCHEMA_VERSION,
        event_id: derived_id(
            pass.frame_time_ms,
            &format!("{WATCH_LIST_RULE}|{}", pass.event_id),
        ),
        severity: Severity::Alert,
        node_id: aggregator.clone(),
        checkpoint_id: pass.checkpoint_id.clone(),
        camera_id: pass.camera_id.clone(),
        lane: pass.lane,
        frame_time_ms: pass.frame_time_ms,
        detections: pass.detections.clone(),
        rule: Some(RuleRef {
            id: WATCH_LIST_RULE.into(),
            version: 1,
        }),
        evidence: pass.evidence.clone(),
        review: ReviewState::Pending,
        clock: None,
        body: EventBody::PlateAnomaly(PlateAnomaly {
            anomaly: AnomalyType::WatchList,
            plate: plate.to_string(),
            passes: vec![pass.event_id.clone()],
            distance_km: None,
            interval_secs: None,
            implied_speed_kmh: None,
            detail: Some(format!(
                "watch list: {} (registry version {} at the aggregator; the node checked {})",
                list.join(", "),
                w.version,
                v.registry_version
                    .map(|n| format!("version {n}"))
                    .unwrap_or_else(|| "none".into())
            )),
        }),
    })
}

/// Correlates stored passes of `batch` against the passes of the same plates and stores the
/// anomalies; returns how many new anomalies were stored.
pub fn correlate_batch(
    store: &mut dyn EventStore,
    reg: &Registry,
    cfg: &CorrelationConfig,
    aggregator: &DeviceId,
    watch: Option<&WatchIndex>,
    batch: &[Event],
    live: Option<&crate::live::Live>,
) -> Result<usize, StoreError> {
    let window_ms = (cfg.window_hours * 3_600_000.0) as i64;
    let mut anomalies = Vec::new();
    let mut plated = Vec::new();
    for pass in batch.iter().filter(|e| e.kind() == EventKind::VehiclePass) {
        if let Some(hit) = watch.and_then(|w| watch_list_hits(w, aggregator, pass)) {
            anomalies.push(hit);
        }
        if let Some(plate) = plate_of(pass) {
            plated.push((pass, plate));
        }
    }
    // The batch's plates' passes within the window of any of its passes, in one look-up
    // (ids, checkpoints and times); a whole event is read only for a pair too fast.
    if let (Some(first), Some(last)) = (
        plated.iter().map(|(p, _)| p.frame_time_ms).min(),
        plated.iter().map(|(p, _)| p.frame_time_ms).max(),
    ) {
        let mut plates: Vec<String> = plated.iter().map(|(_, p)| p.to_string()).collect();
        plates.sort();
        plates.dedup();
        let sightings = store.plate_sightings(&plates, first - window_ms, last + window_ms + 1)?;
        let mut by_plate: std::collections::HashMap<&str, Vec<&crate::store::Sighting>> =
            std::collections::HashMap::new();
        for s in &sightings {
            by_plate.entry(s.plate.as_str()).or_default().push(s);
        }
        for (pass, plate) in plated {
            if !cfg.sections.is_empty() {
                let mine: &[&crate::store::Sighting] =
                    by_plate.get(plate).map(Vec::as_slice).unwrap_or(&[]);
                anomalies.extend(section_speeding(store, cfg, aggregator, pass, mine)?);
            }
            for s in by_plate.get(plate).into_iter().flatten() {
                if s.event_id == pass.event_id
                    || s.checkpoint_id == pass.checkpoint_id.as_str()
                    || (s.frame_time_ms - pass.frame_time_ms).abs() > window_ms
                    || too_fast(
                        reg,
                        cfg,
                        (pass.checkpoint_id.as_str(), pass.frame_time_ms),
                        (&s.checkpoint_id, s.frame_time_ms),
                    )
                    .is_none()
                {
                    continue;
                }
                if let Some(other) = store.get(&s.event_id)? {
                    anomalies.extend(cloned_plate(reg, cfg, aggregator, pass, &[other]));
                }
            }
        }
    }
    // A pair whose two passes came in one batch is found from both ends: once is enough.
    let mut seen = std::collections::HashSet::new();
    anomalies.retain(|e| seen.insert(e.event_id.clone()));
    if anomalies.is_empty() {
        return Ok(0);
    }
    let new = store.insert_batch(&anomalies, protocol::time::now_ms())?;
    if let Some(l) = live {
        l.publish(&anomalies);
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoints::{CheckpointConfig, RoadDistanceConfig};
    use crate::store::{EventFilter, SqliteStore};
    use protocol::BBox;

    const A: &str = "32050500051210000001";
    const B: &str = "32050500051210000002";
    const C: &str = "32050500051210000003";

    fn registry() -> Registry {
        let cp = |id: &str, lon| CheckpointConfig {
            id: id.into(),
            name: id.into(),
            lon,
            lat: 31.3,
        };
        let mut e = vec![];
        let r = Registry::build(
            &[cp(A, 120.60), cp(B, 120.70), cp(C, 120.61)],
            &[RoadDistanceConfig {
                from: A.into(),
                to: B.into(),
                km: 60.0,
            }],
            1.3,
            None,
            &mut e,
        );
        assert!(e.is_empty());
        r
    }

    fn pass(ck: &str, t: i64, plate: &str) -> Event {
        let _ = BBox::default();
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: ulid::Ulid::from_datetime(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(t as u64),
            )
            .to_string(),
            severity: Severity::Info,
            node_id: DeviceId::parse("32050500055050000001").unwrap(),
            checkpoint_id: DeviceId::parse(ck).unwrap(),
            camera_id: DeviceId::parse("32050500051320000001").unwrap(),
            lane: Some(1),
            frame_time_ms: t,
            detections: vec![],
            rule: None,
            evidence: vec![],
            review: ReviewState::NotRequired,
            clock: None,
            body: crate::store::tests::pass_body(1, plate),
        }
    }

    fn agg() -> DeviceId {
        DeviceId::parse("32050500055030000001").unwrap()
    }

    #[test]
    fn too_fast_between_checkpoints_is_a_clone_in_either_order() {
        let reg = registry();
        let cfg = CorrelationConfig::default();
        let t0 = 1_790_000_000_000;
        // 60 km in 10 minutes: 360 km/h.
        let a = pass(A, t0, "苏E12345");
        let b = pass(B, t0 + 600_000, "苏E12345");
        let x = cloned_plate(&reg, &cfg, &agg(), &b, std::slice::from_ref(&a));
        let y = cloned_plate(&reg, &cfg, &agg(), &a, std::slice::from_ref(&b));
        assert_eq!(x.len(), 1);
        assert_eq!(
            x[0].event_id, y[0].event_id,
            "the same anomaly whichever pass arrives last"
        );
        let EventBody::PlateAnomaly(an) = &x[0].body else {
            panic!()
        };
        assert_eq!(an.passes, vec![a.event_id.clone(), b.event_id.clone()]);
        assert!((an.implied_speed_kmh.unwrap() - 360.0).abs() < 1e-6);
        // 60 km in 30 minutes: 120 km/h, plausible.
        let slow = pass(B, t0 + 1_800_000, "苏E12345");
        assert!(cloned_plate(&reg, &cfg, &agg(), &slow, std::slice::from_ref(&a)).is_empty());
        // Same checkpoint, other plate, unknown checkpoint: nothing.
        for other in [
            pass(A, t0 + 1, "苏E12345"),
            pass(B, t0 + 1, "苏E99999"),
            pass("32050500051210000009", t0 + 1, "苏E12345"),
        ] {
            assert!(cloned_plate(&reg, &cfg, &agg(), &other, std::slice::from_ref(&a)).is_empty());
        }
    }

    #[test]
    fn at_ingest_out_of_order_and_idempotent() {
        let reg = registry();
        let cfg = CorrelationConfig::default();
        let mut store = SqliteStore::open_in_memory().unwrap();
        let t0 = 1_790_000_000_000;
        let a = pass(A, t0, "苏E12345");
        let c = pass(C, t0 + 60_000, "苏E12345"); // ~1.2 km in a minute: fine
        let b = pass(B, t0 + 300_000, "苏E12345"); // 60 km from A in 5 minutes: clone
                                                   // The later pass arrives first.
        for batch in [vec![b.clone()], vec![c.clone()], vec![a.clone()]] {
            store.insert_batch(&batch, 0).unwrap();
            correlate_batch(&mut store, &reg, &cfg, &agg(), None, &batch, None).unwrap();
        }
        let anomalies = store
            .list(&EventFilter {
                kind: Some(EventKind::PlateAnomaly),
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .events;
        // A-B: 60 km by road in 5 minutes. C-B: no road distance configured, 8.6 km straight
        // times 1.3 = 11.1 km in 4 minutes, 167 km/h: under the limit.
        assert_eq!(anomalies.len(), 1, "{anomalies:#?}");
        assert!(anomalies.iter().all(
            |e| matches!(&e.body, EventBody::PlateAnomaly(p) if p.passes.contains(&b.event_id))
        ));
        // Replaying every pass stores nothing new.
        assert_eq!(
            correlate_batch(&mut store, &reg, &cfg, &agg(), None, &[a, b, c], None).unwrap(),
            0
        );
        let by_plate = store
            .list(&EventFilter {
                plate: Some("苏E·12345".into()),
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .events;
        assert_eq!(
            by_plate.len(),
            4,
            "3 passes and the anomaly under the plate"
        );
    }

    #[test]
    fn section_speed_from_the_entry_and_exit_passes() {
        let reg = registry();
        let cfg = CorrelationConfig {
            sections: vec![SectionConfig {
                name: "A-C".into(),
                from: A.into(),
                to: C.into(),
                length_m: 2500.0,
                limit_kmh: 80.0,
                tolerance_pct: 10.0,
            }],
            ..CorrelationConfig::default()
        };
        let mut errors = vec![];
        cfg.sections[0].check(
            &|id: &str| reg.get(id).is_some(),
            "correlation.sections[0]",
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let t0 = 1_790_000_000_000;
        let stored = |store: &mut SqliteStore| {
            store
                .list(&EventFilter {
                    kind: Some(EventKind::PlateAnomaly),
                    limit: 20,
                    ..Default::default()
                })
                .unwrap()
                .events
        };
        let mut store = SqliteStore::open_in_memory().unwrap();
        // 2.5 km in 100 s: 90 km/h, over 80 + 10 %. The exit arrives before the entry, and
        // an earlier entry pass (the latest entry counts) and a slow plate are around.
        let early = pass(A, t0 - 600_000, "苏E12345");
        let entry = pass(A, t0, "苏E12345");
        let exit = pass(C, t0 + 100_000, "苏E12345");
        let slow_in = pass(A, t0, "苏E54321");
        let slow_out = pass(C, t0 + 120_000, "苏E54321"); // 75 km/h
        let edge_in = pass(A, t0 + 1, "苏E66666");
        let edge_out = pass(C, t0 + 1 + 102_273, "苏E66666"); // 88.0 km/h: within tolerance
        for batch in [
            vec![exit.clone(), slow_out.clone(), edge_out.clone()],
            vec![early.clone()],
            vec![entry.clone(), slow_in.clone(), edge_in.clone()],
        ] {
            store.insert_batch(&batch, 0).unwrap();
            correlate_batch(&mut store, &reg, &cfg, &agg(), None, &batch, None).unwrap();
        }
        let found = stored(&mut store);
        assert_eq!(found.len(), 1, "{found:#?}");
        let EventBody::PlateAnomaly(an) = &found[0].body else {
            panic!()
        };
        assert_eq!(an.anomaly, AnomalyType::SectionSpeeding);
        assert_eq!(
            an.passes,
            vec![entry.event_id.clone(), exit.event_id.clone()]
        );
        assert!((an.implied_speed_kmh.unwrap() - 90.0).abs() < 1e-9);
        assert_eq!(found[0].checkpoint_id, exit.checkpoint_id);
        assert_eq!(found[0].review, ReviewState::Pending);
        // Replayed: nothing new. Both ends in one batch: one event.
        assert_eq!(
            correlate_batch(&mut store, &reg, &cfg, &agg(), None, &[entry, exit], None).unwrap(),
            0
        );
        let mut other = SqliteStore::open_in_memory().unwrap();
        let (a, b) = (pass(A, t0, "苏E77777"), pass(C, t0 + 60_000, "苏E77777"));
        other.insert_batch(&[a.clone(), b.clone()], 0).unwrap();
        assert_eq!(
            correlate_batch(&mut other, &reg, &cfg, &agg(), None, &[a, b], None).unwrap(),
            1
        );
        // An unsure read at either end, or no entry pass: no event.
        let mut third = SqliteStore::open_in_memory().unwrap();
        let mut unsure = pass(A, t0, "苏E88888");
        if let EventBody::VehiclePass(v) = &mut unsure.body {
            v.plate_unsure = true;
        }
        let fast_out = pass(C, t0 + 30_000, "苏E88888");
        let lone = pass(C, t0 + 30_000, "苏E99999");
        for batch in [vec![unsure], vec![fast_out, lone]] {
            third.insert_batch(&batch, 0).unwrap();
            correlate_batch(&mut third, &reg, &cfg, &agg(), None, &batch, None).unwrap();
        }
        assert!(stored(&mut third).is_empty());
        // A section naming an unknown checkpoint or no length is refused at load.
        let bad = SectionConfig {
            name: "x".into(),
            from: A.into(),
            to: "32050500051210000099".into(),
            length_m: 0.0,
            limit_kmh: 80.0,
            tolerance_pct: 10.0,
        };
        let mut errors = vec![];
        bad.check(&|id: &str| reg.get(id).is_some(), "s", &mut errors);
        assert_eq!(errors.len(), 2, "{errors:?}");
    }

    #[test]
    fn watch_list_checked_here_when_the_node_had_an_older_version_or_none() {
        use protocol::registry::{RegistryFile, Status, VehicleRecord};
        let rec = |plate: &str, status: Vec<Status>| VehicleRecord {
            plate: plate.into(),
            plate_class: None,
            plate_colour: None,
            vehicle_class: None,
            use_character: None,
            status,
            short_route: false,
        };
        let w = WatchIndex::new(&RegistryFile {
            version: 5,
            issued_by: "city".into(),
            vehicles: vec![
                rec("苏E12345", vec![Status::Scrapped, Status::Wanted]),
                rec("苏E00001", vec![]),
            ],
        });
        let mut p = pass(A, 1_790_000_000_000, "苏E12345");
        let hit = watch_list_hits(&w, &agg(), &p).expect("no registry at the node: checked here");
        let EventBody::PlateAnomaly(a) = &hit.body else {
            panic!()
        };
        assert_eq!(a.anomaly, AnomalyType::WatchList);
        assert_eq!(a.passes, vec![p.event_id.clone()]);
        assert!(a.detail.as_deref().unwrap().contains("scrapped, wanted"));
        assert_eq!(hit.review, ReviewState::Pending);
        // The same pass gives the same anomaly id (idempotent across replays).
        assert_eq!(
            watch_list_hits(&w, &agg(), &p).unwrap().event_id,
            hit.event_id
        );
        if let EventBody::VehiclePass(v) = &mut p.body {
            v.registry_version = Some(4);
        }
        assert!(
            watch_list_hits(&w, &agg(), &p).is_some(),
            "older version at the node"
        );
        if let EventBody::VehiclePass(v) = &mut p.body {
            v.registry_version = Some(5);
        }
        assert!(
            watch_list_hits(&w, &agg(), &p).is_none(),
            "the node checked this version"
        );
        // Listed without a status, or not listed: nothing.
        assert!(watch_list_hits(&w, &agg(), &pass(A, 1, "苏E00001")).is_none());
        assert!(watch_list_hits(&w, &agg(), &pass(A, 1, "苏E99999")).is_none());
    }
}
