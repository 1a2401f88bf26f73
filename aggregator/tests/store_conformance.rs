//! One conformance suite, two backends: the embedded SQLite store and PostgreSQL on
//! 127.0.0.1:5432 (the server CI and every development machine run; `TRAFFIC_PG_URL`
//! overrides). The PostgreSQL run is never skipped: without a server it fails and says so.

use aggregator::config::RetentionConfig;
use aggregator::pg::PgStore;
use aggregator::retention::purge_once;
use aggregator::store::{
    AuditEntry, EventFilter, EventStore, EvidenceBlob, ExportStats, FlowQuery, FlowRow, Review,
    SqliteStore, StoreError,
};
use protocol::*;

mod common;

const CAM1: &str = "32050500051320000001";
const CAM2: &str = "32050500051320000002";
const T0: i64 = 1_790_000_000_000;

fn event(t: i64, camera: &str, class: &str) -> Event {
    let b = BBox::new(0.0, 0.0, 10.0, 10.0);
    Event {
        schema_version: SCHEMA_VERSION,
        event_id: ulid::Ulid::from_datetime(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(t as u64),
        )
        .to_string(),
        severity: Severity::Info,
        node_id: DeviceId::parse("32050500055050000001").unwrap(),
        checkpoint_id: DeviceId::parse("32050500051210000001").unwrap(),
        camera_id: DeviceId::parse(camera).unwrap(),
        lane: Some(2),
        frame_time_ms: t,
        detections: vec![Detection {
            class: class.into(),
            score: 0.5,
            bbox: b,
            track_id: Some(3),
        }],
        rule: Some(RuleRef {
            id: "object_track".into(),
            version: 1,
        }),
        evidence: vec![],
        review: ReviewState::NotRequired,
        clock: None,
        body: EventBody::ObjectTrack(ObjectTrack {
            phase: TrackPhase::End,
            track_id: 3,
            class: class.into(),
            mean_score: 0.5,
            max_score: 0.5,
            first_box: b,
            last_box: b,
            first_time_ms: t - 1000,
            last_time_ms: t,
            duration_ms: 1000,
            hits: 10,
            path: vec![PathPoint {
                t_ms: t,
                x: 5.0,
                y: 10.0,
            }],
            displacement_px: 0.0,
        }),
    }
}

/// The suite. `reopen` gives a second store on the same data, as after a restart.
fn conformance(store: &mut dyn EventStore, reopen: &dyn Fn() -> Box<dyn EventStore>) {
    let evs: Vec<Event> = (0..25)
        .map(|i| {
            event(
                T0 + i * 1000,
                if i % 2 == 0 { CAM1 } else { CAM2 },
                if i % 3 == 0 { "car" } else { "person" },
            )
        })
        .collect();
    // Idempotent upsert, also across batches and within one batch.
    assert_eq!(store.insert_batch(&evs[..20], 1).unwrap(), 20);
    let mut again = evs[15..].to_vec();
    again.push(evs[24].clone());
    assert_eq!(
        store.insert_batch(&again, 2).unwrap(),
        5,
        "5 new of 11, a duplicate inside the batch too"
    );
    assert_eq!(store.insert_batch(&evs, 3).unwrap(), 0);

    // Round trip, byte for byte equal events.
    assert_eq!(store.get(&evs[7].event_id).unwrap().unwrap(), evs[7]);
    assert!(store.get("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap().is_none());

    // Cursor pagination in frame-time order, under a filter.
    let mut f = EventFilter {
        camera_id: Some(CAM1.into()),
        limit: 4,
        ..Default::default()
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let p = store.list(&f).unwrap();
        pages += 1;
        seen.extend(p.events.iter().map(|e| e.frame_time_ms));
        match p.next_cursor {
            Some(c) => f.cursor = Some(c),
            None => break,
        }
    }
    let want: Vec<i64> = (0..25)
        .filter(|i| i % 2 == 0)
        .map(|i| T0 + i * 1000)
        .collect();
    assert_eq!(seen, want);
    assert_eq!(pages, 4, "13 events in pages of 4");

    // Time range (from inclusive, to exclusive), kind and class.
    let p = store
        .list(&EventFilter {
            kind: Some(EventKind::ObjectTrack),
            class: Some("car".into()),
            from_ms: Some(T0 + 3000),
            to_ms: Some(T0 + 12_000),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        p.events.iter().map(|e| e.frame_time_ms).collect::<Vec<_>>(),
        vec![T0 + 3000, T0 + 6000, T0 + 9000]
    );
    assert!(p.next_cursor.is_none());
    let none = store
        .list(&EventFilter {
            kind: Some(EventKind::PedestrianRedLight),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert!(none.events.is_empty());
    assert!(matches!(
        store.list(&EventFilter {
            cursor: Some("nope".into()),
            limit: 1,
            ..Default::default()
        }),
        Err(StoreError::Cursor(_))
    ));

    // Evidence: idempotent, bytes intact.
    let blob = EvidenceBlob {
        image_id: format!("{}-stage1", evs[0].event_id),
        checkpoint_id: "32050500051210000001".into(),
        camera_id: CAM1.into(),
        sha256: "ab".repeat(32),
        content_type: "image/jpeg".into(),
        bytes: (0..=255u8).cycle().take(70_000).collect(),
    };
    assert!(store.insert_evidence(&blob, 5).unwrap());
    assert!(!store.insert_evidence(&blob, 6).unwrap());
    assert_eq!(store.get_evidence(&blob.image_id).unwrap().unwrap(), blob);
    assert!(store.get_evidence("missing").unwrap().is_none());

    let st = store.stats(None).unwrap();
    assert_eq!(st.events_total, 25);
    assert_eq!(st.by_kind["object_track"], 25);
    assert_eq!(st.object_tracks_by_class["car"], 9);
    assert_eq!(st.evidence_images, 1);

    // Review: only events awaiting review, recorded in the event and the audit trail.
    let mut violation = event(T0 + 30_000, CAM1, "person");
    violation.review = ReviewState::Pending;
    store
        .insert_batch(std::slice::from_ref(&violation), 8)
        .unwrap();
    let r = Review {
        decision: ReviewState::Confirmed,
        reviewer: "officer 0451".into(),
        reason: "red signal and person visible in all three pictures".into(),
    };
    let reviewed = store.review(&violation.event_id, &r, T0 + 40_000).unwrap();
    assert_eq!(reviewed.review, ReviewState::Confirmed);
    assert_eq!(
        store.get(&violation.event_id).unwrap().unwrap().review,
        ReviewState::Confirmed
    );
    // A decision is final: a second one is refused, until the event is reopened.
    let rejected = Review {
        decision: ReviewState::Rejected,
        reviewer: "officer 0007".into(),
        reason: "it is a cyclist".into(),
    };
    let e = store
        .review(&violation.event_id, &rejected, T0 + 45_000)
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Review(m) if m.contains("already confirmed") && m.contains("reopen")),
        "{e}"
    );
    let reopening = Review {
        decision: ReviewState::Pending,
        reviewer: "admin".into(),
        reason: "the person pushes a bicycle".into(),
    };
    assert_eq!(
        store
            .review(&violation.event_id, &reopening, T0 + 48_000)
            .unwrap()
            .review,
        ReviewState::Pending
    );
    assert!(matches!(
        store.review(&violation.event_id, &reopening, T0 + 49_000),
        Err(StoreError::Review(_))
    ));
    store
        .review(&violation.event_id, &rejected, T0 + 50_000)
        .unwrap();
    let trail = store.audit_of(&violation.event_id).unwrap();
    assert_eq!(
        trail
            .iter()
            .map(|a| (a.action.as_str(), a.actor.as_str(), a.at_ms))
            .collect::<Vec<_>>(),
        [
            ("review", "officer 0451", T0 + 40_000),
            ("reopen", "admin", T0 + 48_000),
            ("review", "officer 0007", T0 + 50_000)
        ]
    );
    assert!(
        trail[2].detail.starts_with("rejected: it is a cyclist"),
        "{trail:?}"
    );
    assert!(
        matches!(
            store.review(&evs[0].event_id, &r, 0),
            Err(StoreError::Review(_))
        ),
        "object tracks need no review"
    );
    assert!(matches!(
        store.review("01ARZ3NDEKTSV4RRFFQ69G5FAV", &r, 0),
        Err(StoreError::NotFound(_))
    ));
    let bad = Review {
        decision: ReviewState::NotRequired,
        ..r.clone()
    };
    assert!(matches!(
        store.review(&violation.event_id, &bad, 0),
        Err(StoreError::Review(_))
    ));
    let pending = store
        .list(&EventFilter {
            review: Some(ReviewState::Rejected),
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(pending.events.len(), 1);
    store
        .audit(&AuditEntry {
            event_id: violation.event_id.clone(),
            action: "plate_query".into(),
            actor: "operator 12".into(),
            detail: "plate=苏E12345".into(),
            at_ms: T0 + 60_000,
        })
        .unwrap();
    assert_eq!(store.audit_of(&violation.event_id).unwrap().len(), 4);
    // The whole log, newest first (plate queries and logins have no event).
    store
        .audit(&AuditEntry {
            event_id: String::new(),
            action: "plate_query".into(),
            actor: "li".into(),
            detail: "trajectory?plate=苏E1234 from 10.0.0.9".into(),
            at_ms: T0 + 9,
        })
        .unwrap();
    let recent = store.audit_recent(2).unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].action, "plate_query");
    assert_eq!(
        recent[1],
        *store.audit_of(&violation.event_id).unwrap().last().unwrap()
    );
    // The rest of the suite counts 25 events.
    assert_eq!(
        store.purge(EventKind::ObjectTrack, T0 + 30_001).unwrap().0,
        26
    );
    store.insert_batch(&evs, 9).unwrap();
    assert!(
        store.insert_evidence(&blob, 10).unwrap(),
        "purged with its event, stored again"
    );

    // Plate queries, exact and with wildcards, on vehicle passes.
    let passes: Vec<Event> = ["苏E12345", "苏E12399", "苏EA1234", "浙A12345"]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut e = event(T0 + 100_000 + i as i64, CAM2, "car");
            e.body = EventBody::VehiclePass(VehiclePass {
                track_id: i as u64,
                plate: Some(p.to_string()),
                char_confidence: vec![],
                plate_colour: None,
                plate_class: None,
                vehicle_class: "car".into(),
                direction: None,
                first_seen_ms: None,
                last_seen_ms: None,
                plate_reads: 0,
                registry_version: None,
                plate_unsure: false,
            });
            e
        })
        .collect();
    store.insert_batch(&passes, 11).unwrap();
    let mut plates = |q: &str| -> Vec<i64> {
        let f = EventFilter {
            plate: Some(q.into()),
            limit: 10,
            ..Default::default()
        };
        store
            .list(&f)
            .unwrap()
            .events
            .iter()
            .map(|e| e.frame_time_ms - T0 - 100_000)
            .collect()
    };
    assert_eq!(plates("苏E·12345"), [0]);
    assert_eq!(plates("苏E123*"), [0, 1]);
    assert_eq!(plates("*12345"), [0, 3]);
    assert_eq!(plates("苏E?1234"), [2]);
    assert!(
        plates("苏E%").is_empty(),
        "SQL wildcards in the input are literal"
    );
    // Within one edit (replaced, dropped, added), across checkpoints and lanes.
    let ck2 = "32050500051210000002";
    let near: Vec<Event> = ["苏E12845", "苏E1234", "苏E123456", "苏E21345"]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut e = passes[0].clone();
            e.event_id = ulid::Ulid::from_parts((T0 + 200_000) as u64, i as u128 + 7).to_string();
            e.frame_time_ms = T0 + 200_000 + i as i64;
            // Lane 1, and one pass outside every lane.
            e.lane = (i != 3).then_some(1);
            if i == 1 {
                e.checkpoint_id = DeviceId::parse(ck2).unwrap();
            }
            if let EventBody::VehiclePass(v) = &mut e.body {
                v.plate = Some(p.to_string());
            }
            e
        })
        .collect();
    store.insert_batch(&near, 12).unwrap();
    fn plates_of(store: &mut dyn EventStore, f: EventFilter) -> Vec<String> {
        store
            .list(&EventFilter { limit: 20, ..f })
            .unwrap()
            .events
            .iter()
            .map(|e| match &e.body {
                EventBody::VehiclePass(v) => v.plate.clone().unwrap(),
                EventBody::PlateAnomaly(a) => a.plate.clone(),
                _ => String::new(),
            })
            .collect()
    }
    let near_of = |p: &str| EventFilter {
        plate: Some(p.into()),
        plate_near: true,
        ..Default::default()
    };
    assert_eq!(
        plates_of(store, near_of("苏E·12345")),
        ["苏E12345", "浙A12345", "苏E12845", "苏E1234", "苏E123456"]
            .iter()
            .filter(|p| **p != "浙A12345")
            .map(|p| p.to_string())
            .collect::<Vec<_>>(),
        "a swap (苏E21345) is two edits"
    );
    assert_eq!(
        plates_of(
            store,
            EventFilter {
                checkpoints: vec![ck2.into()],
                ..near_of("苏E12345")
            }
        ),
        ["苏E1234"]
    );
    assert_eq!(
        plates_of(
            store,
            EventFilter {
                checkpoints: vec![ck2.into(), "32050500051210000001".into()],
                plates: vec!["苏E1234".into(), "浙A12345".into()],
                ..Default::default()
            }
        ),
        ["浙A12345", "苏E1234"]
    );
    assert!(matches!(
        store.list(&near_of("苏E1234*")),
        Err(StoreError::Query(_))
    ));
    // Traffic flow per hour, checkpoint and lane (the first four passes are in lane 2).
    let hour = T0 - T0 % 3_600_000;
    let two_hours = FlowQuery {
        checkpoints: vec![],
        county: None,
        from_ms: hour,
        to_ms: hour + 2 * 3_600_000,
        bucket_ms: 3_600_000,
    };
    let flow = store.flow(&two_hours).unwrap();
    let row = |ck: &str, lane: Option<i64>, vehicles: i64| FlowRow {
        bucket_start_ms: hour,
        checkpoint_id: ck.into(),
        lane,
        vehicles,
    };
    let ck1 = "32050500051210000001";
    assert_eq!(
        flow,
        [
            row(ck1, None, 1),
            row(ck1, Some(1), 2),
            row(ck1, Some(2), 4),
            row(ck2, Some(1), 1)
        ]
    );
    let only2 = store
        .flow(&FlowQuery {
            checkpoints: vec![ck2.into()],
            county: None,
            from_ms: hour,
            to_ms: hour + 3_600_000,
            bucket_ms: 60_000,
        })
        .unwrap();
    assert_eq!(only2.iter().map(|r| r.vehicles).sum::<i64>(), 1);
    // Events per hour and kind: what a listing of the window counts.
    let counts = store.counts(&two_hours).unwrap();
    let mut want: std::collections::BTreeMap<(i64, String), i64> = Default::default();
    for e in store
        .list(&EventFilter {
            from_ms: Some(hour),
            to_ms: Some(hour + 2 * 3_600_000),
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .events
    {
        *want
            .entry((
                e.frame_time_ms - e.frame_time_ms % 3_600_000,
                e.kind().as_str().to_string(),
            ))
            .or_default() += 1;
    }
    let got: std::collections::BTreeMap<(i64, String), i64> = counts
        .iter()
        .map(|c| ((c.bucket_start_ms, c.kind.clone()), c.events))
        .collect();
    assert_eq!(got, want);
    assert!(got.len() >= 2, "{got:?}");
    // A county operator's view: the checkpoints of one county only.
    let county_of = |ck: &str| ck[..6].to_string();
    let in_county = store
        .flow(&FlowQuery {
            checkpoints: vec![],
            county: Some(county_of(ck2)),
            from_ms: hour,
            to_ms: hour + 2 * 3_600_000,
            bucket_ms: 3_600_000,
        })
        .unwrap();
    assert!(in_county
        .iter()
        .all(|r| r.checkpoint_id.starts_with(&county_of(ck2))));
    let page = store
        .list(&EventFilter {
            county: Some(county_of(ck2)),
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert!(!page.events.is_empty());
    assert!(page
        .events
        .iter()
        .all(|e| e.checkpoint_id.as_str().starts_with(&county_of(ck2))));
    let other = store
        .list(&EventFilter {
            county: Some("320599".into()),
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert!(other.events.is_empty());
    assert!(matches!(
        store.flow(&FlowQuery {
            checkpoints: vec![],
            county: None,
            from_ms: hour,
            to_ms: hour + 365 * 86_400_000,
            bucket_ms: 3_600_000,
        }),
        Err(StoreError::Query(_))
    ));
    // Plate anomalies by type.
    let anomalies: Vec<Event> = [AnomalyType::ClonedPlate, AnomalyType::WatchList]
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut e = event(T0 + 300_000 + i as i64, CAM2, "car");
            e.body = EventBody::PlateAnomaly(PlateAnomaly {
                anomaly: *a,
                plate: format!("苏E1111{i}"),
                passes: vec![],
                distance_km: None,
                interval_secs: None,
                implied_speed_kmh: None,
                detail: None,
            });
            e
        })
        .collect();
    store.insert_batch(&anomalies, 13).unwrap();
    assert_eq!(
        plates_of(
            store,
            EventFilter {
                anomaly: Some(AnomalyType::ClonedPlate),
                ..Default::default()
            }
        ),
        ["苏E11110"]
    );
    assert_eq!(store.purge(EventKind::PlateAnomaly, i64::MAX).unwrap().0, 2);
    assert_eq!(store.purge(EventKind::VehiclePass, i64::MAX).unwrap().0, 8);

    // After a restart: the same data, migrations not re-run.
    let mut other = reopen();
    assert_eq!(other.stats(None).unwrap().events_total, 25);
    assert_eq!(other.get(&evs[24].event_id).unwrap().unwrap(), evs[24]);
    assert_eq!(other.insert_batch(&evs[..3], 7).unwrap(), 0);

    // Retention: object tracks before T0 + 10 s go, and the image of the first one with it.
    assert_eq!(
        other.purge(EventKind::ObjectTrack, T0 + 10_000).unwrap(),
        (10, 1)
    );
    assert!(other.get(&evs[0].event_id).unwrap().is_none());
    assert!(other.get_evidence(&blob.image_id).unwrap().is_none());
    assert!(other.get(&evs[10].event_id).unwrap().is_some());
    assert_eq!(
        other
            .purge(EventKind::PedestrianRedLight, i64::MAX)
            .unwrap(),
        (0, 0)
    );
    // The purge job's pass: object tracks kept 1 day, everything else forever.
    let cfg = RetentionConfig {
        default_days: 0,
        days: [("object_track".to_string(), 1)].into(),
        purge_interval_secs: 60,
    };
    assert_eq!(cfg.days_for(EventKind::PedestrianRedLight), None);
    assert_eq!(
        purge_once(other.as_mut(), &cfg, T0 + 86_400_000 + 20_000).unwrap(),
        (10, 0)
    );
    assert_eq!(other.stats(None).unwrap().events_total, 5);

    // The export queue: new vehicle passes stored while it is on are queued in the same
    // transaction (duplicates and other kinds are not); results move them on.
    let mut q = reopen();
    assert_eq!(q.export_stats().unwrap(), ExportStats::default());
    q.insert_batch(&passes[..1], 20).unwrap();
    assert!(q.export_due(i64::MAX, 10).unwrap().is_empty(), "queue off");
    q.set_export_queue(true);
    let mut batch = passes.clone();
    batch.push(event(T0 + 500_000, CAM1, "car"));
    assert_eq!(q.insert_batch(&batch, 21).unwrap(), 4);
    assert_eq!(q.insert_batch(&batch, 22).unwrap(), 0);
    let due = q.export_due(21, 10).unwrap();
    let ids: Vec<&str> = due.iter().map(|d| d.event.event_id.as_str()).collect();
    let expected: Vec<&str> = passes[1..].iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(
        ids, expected,
        "passes[0] was stored before the queue was on"
    );
    assert_eq!(due[0].event, passes[1]);
    assert!(due.iter().all(|d| d.attempts == 0));
    assert!(
        q.export_due(20, 10).unwrap().is_empty(),
        "not due before they were stored"
    );
    q.export_result(ids[0], Ok(()), 30).unwrap();
    q.export_result(ids[1], Err(("7: busy".into(), false)), 1_000)
        .unwrap();
    q.export_result(ids[2], Err(("4: PlateNo".into(), true)), 1_000)
        .unwrap();
    assert!(q.export_due(999, 10).unwrap().is_empty());
    let again = q.export_due(1_000, 10).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].event.event_id.as_str(), again[0].attempts),
        (ids[1], 1)
    );
    assert_eq!(
        q.export_stats().unwrap(),
        ExportStats {
            queued: 1,
            failed: 1
        }
    );
    // Purged passes leave the queue with them.
    assert_eq!(q.purge(EventKind::VehiclePass, i64::MAX).unwrap().0, 4);
    assert_eq!(q.export_stats().unwrap(), ExportStats::default());
    drop(q);

    sync_conformance(reopen().as_mut());
    accidents_conformance(reopen().as_mut());
    sightings_conformance(reopen().as_mut());
}

/// Correlation's look-up: the passes of the plates asked for within the time range (the
/// end excluded), whatever their checkpoint; other plates and kinds are not among them.
fn sightings_conformance(s: &mut dyn EventStore) {
    let t = T0 + 50_000_000;
    let ck = |n: u32| format!("3205050005121000{n:04}");
    let passes = vec![
        common::pass(&ck(1), CAM1, "32050500055050000001", t, "苏E5S001", 1),
        common::pass(
            &ck(2),
            CAM2,
            "32050500055050000001",
            t + 60_000,
            "苏E5S001",
            1,
        ),
        common::pass(
            &ck(1),
            CAM1,
            "32050500055050000001",
            t + 120_000,
            "苏E5S002",
            1,
        ),
        common::pass(
            &ck(1),
            CAM1,
            "32050500055050000001",
            t + 180_000,
            "苏E5S003",
            1,
        ),
    ];
    s.insert_batch(&passes, 0).unwrap();
    let mut got = s
        .plate_sightings(&["苏E5S001".into(), "苏E5S002".into()], t, t + 120_000)
        .unwrap();
    got.sort_by_key(|g| g.frame_time_ms);
    let want: Vec<(String, String, String, i64)> = passes[..2]
        .iter()
        .map(|p| {
            (
                "苏E5S001".to_string(),
                p.event_id.clone(),
                p.checkpoint_id.to_string(),
                p.frame_time_ms,
            )
        })
        .collect();
    let got: Vec<(String, String, String, i64)> = got
        .into_iter()
        .map(|g| (g.plate, g.event_id, g.checkpoint_id, g.frame_time_ms))
        .collect();
    assert_eq!(got, want);
    assert!(s.plate_sightings(&[], t, t + 1).unwrap().is_empty());
}

/// What a county offers the city (issue 19): the nodes' events in store order after a
/// cursor and up to a settled time, paged; never what an aggregator derived. Which ids are
/// present; the city's marks per county.
fn sync_conformance(s: &mut dyn EventStore) {
    use aggregator::store::SyncCursor;
    let base = 9_000_000_000_000i64;
    let mut evs: Vec<Event> = (0..6)
        .map(|i| event(T0 + 900_000 + i, CAM2, "person"))
        .collect();
    // One derived by an aggregator (type code 503): not offered.
    evs[5].node_id = DeviceId::parse("32050500055030000001").unwrap();
    evs[2].evidence = vec![EvidenceRef {
        image_id: format!("{}-scene", evs[2].event_id),
        sha256: "x".into(),
        role: "scene".into(),
    }];
    // Stored at three times: 0 and 1 first, then 2..=3, then 4 and 5.
    s.insert_batch(&evs[..2], base).unwrap();
    s.insert_batch(&evs[2..4], base + 10).unwrap();
    s.insert_batch(&evs[4..], base + 20).unwrap();
    let ids = |r: &[aggregator::store::SyncRef]| -> Vec<String> {
        r.iter().map(|x| x.event_id.clone()).collect()
    };
    let start = SyncCursor {
        received_ms: base - 1,
        event_id: String::new(),
    };
    let all = s.sync_refs(&start, i64::MAX, 100).unwrap();
    let want: Vec<String> = evs[..5].iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(
        ids(&all),
        want,
        "store order, the aggregator's own left out"
    );
    assert_eq!(all[2].images, vec![format!("{}-scene", evs[2].event_id)]);
    assert!(!all[0].violation);
    // Paged: after the second, two at a time.
    let page = s.sync_refs(&all[1].cursor(), i64::MAX, 2).unwrap();
    assert_eq!(ids(&page), want[2..4].to_vec());
    // Only what is settled: nothing stored after `until`.
    let settled = s.sync_refs(&start, base + 10, 100).unwrap();
    assert_eq!(ids(&settled), want[..4].to_vec());
    // Same store time, later id: the cursor's tie-break.
    let tie = s.sync_refs(&all[2].cursor(), base + 10, 100).unwrap();
    assert_eq!(ids(&tie), want[3..4].to_vec());

    let asked = vec![want[0].clone(), "nope".to_string(), want[4].clone()];
    let present = s.present(&asked, false).unwrap();
    assert_eq!(present.len(), 2);
    assert!(present.contains(&want[0]) && present.contains(&want[4]));
    let image = EvidenceBlob {
        image_id: format!("{}-scene", evs[2].event_id),
        checkpoint_id: evs[2].checkpoint_id.to_string(),
        camera_id: evs[2].camera_id.to_string(),
        sha256: "x".into(),
        content_type: "image/jpeg".into(),
        bytes: vec![1, 2, 3],
    };
    s.insert_evidence(&image, base).unwrap();
    let present = s
        .present(&[image.image_id.clone(), want[0].clone()], true)
        .unwrap();
    assert_eq!(
        present.into_iter().collect::<Vec<_>>(),
        vec![image.image_id.clone()]
    );
    assert!(s.present(&[], true).unwrap().is_empty());

    assert_eq!(s.sync_mark("320505").unwrap(), None);
    s.set_sync_mark("320505", &all[1].cursor(), 1).unwrap();
    s.set_sync_mark("320506", &all[0].cursor(), 1).unwrap();
    s.set_sync_mark("320505", &all[3].cursor(), 2).unwrap();
    assert_eq!(s.sync_mark("320505").unwrap(), Some(all[3].cursor()));
    assert_eq!(s.sync_mark("320506").unwrap(), Some(all[0].cursor()));

    // Leases of once-only jobs, timed by the database's clock.
    assert!(s.lease("320505/export", "a", 5_000).unwrap());
    assert!(!s.lease("320505/export", "b", 5_000).unwrap(), "held by a");
    assert!(s.lease("320505/export", "a", 5_000).unwrap(), "a renews");
    assert!(s.lease("320505/retention", "b", 5_000).unwrap());
    let rows = s.leases().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| r.left_ms > 0 && r.left_ms <= 5_000),
        "{rows:?}"
    );
    // a's lease runs out (renewed to end at once): b takes it.
    assert!(s.lease("320505/export", "a", -1).unwrap());
    assert!(s.lease("320505/export", "b", 5_000).unwrap());
    assert!(!s.lease("320505/export", "a", 5_000).unwrap());
    s.release("320505/export", "a").unwrap();
    assert_eq!(s.leases().unwrap().len(), 2, "a cannot give up b's lease");
    s.release("320505/export", "b").unwrap();
    s.release("320505/retention", "b").unwrap();
    assert!(s.leases().unwrap().is_empty());
}

/// Accident records: kept once by id, read back whole in time order within the window.
fn accidents_conformance(s: &mut dyn EventStore) {
    use aggregator::accidents::Accident;
    let a = |id: &str, t: i64, lat: Option<f64>| Accident {
        id: id.into(),
        time_ms: t,
        place: "人民路, K3".into(),
        severity: "general".into(),
        kind: "追尾".into(),
        lat,
        lon: lat.map(|x| x + 89.0),
    };
    let rows = vec![
        a("b", 2_000, None),
        a("a", 1_000, Some(31.25)),
        a("c", 3_000, None),
    ];
    assert_eq!(s.accidents_put(&rows, 5).unwrap(), 3);
    assert_eq!(s.accidents_put(&rows[..2], 6).unwrap(), 0, "kept once");
    let got = s.accidents_in(1_000, 3_000).unwrap();
    assert_eq!(got, vec![rows[1].clone(), rows[0].clone()]);
    assert!(s.accidents_in(4_000, 5_000).unwrap().is_empty());
}

#[test]
fn sqlite_backend_conforms() {
    let dir = std::env::temp_dir().join(format!("conf-sqlite-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("events.db");
    let mut store = SqliteStore::open(&path).unwrap();
    conformance(&mut store, &|| Box::new(SqliteStore::open(&path).unwrap()));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn postgres_backend_conforms() {
    let url = std::env::var("TRAFFIC_PG_URL")
        .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
    let schema = format!("conf_{}", ulid::Ulid::new().to_string().to_lowercase());
    let mut store = PgStore::connect(&url, &schema).unwrap_or_else(|e| {
        panic!("PostgreSQL is part of the test environment (127.0.0.1:5432, database test): {e}")
    });
    conformance(&mut store, &|| {
        Box::new(PgStore::connect(&url, &schema).unwrap())
    });
    aggregator::store::pg::drop_schema(&url, &schema).unwrap();
}

#[test]
fn postgres_errors_are_clear() {
    let e = PgStore::connect(
        "host=127.0.0.1 port=1 user=postgres dbname=test connect_timeout=2",
        "x",
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        e.contains("port=1") && e.contains("storage.postgres_url"),
        "{e}"
    );
    let e = PgStore::connect("host=127.0.0.1", "bad;name")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("'bad;name'"), "{e}");
}
