//! One conformance suite, two backends: the embedded SQLite store and PostgreSQL on
//! 127.0.0.1:5432 (the server CI and every development machine run; `TRAFFIC_PG_URL`
//! overrides). The PostgreSQL run is never skipped: without a server it fails and says so.

use aggregator::config::RetentionConfig;
use aggregator::pg::PgStore;
use aggregator::retention::purge_once;
use aggregator::store::{
    AuditEntry, EventFilter, EventStore, EvidenceBlob, Review, SqliteStore, StoreError,
};
use protocol::*;

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

    let st = store.stats().unwrap();
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
    let rejected = Review {
        decision: ReviewState::Rejected,
        reviewer: "officer 0007".into(),
        reason: "it is a cyclist".into(),
    };
    store
        .review(&violation.event_id, &rejected, T0 + 50_000)
        .unwrap();
    let trail = store.audit_of(&violation.event_id).unwrap();
    assert_eq!(
        trail
            .iter()
            .map(|a| (a.actor.as_str(), a.at_ms))
            .collect::<Vec<_>>(),
        [("officer 0451", T0 + 40_000), ("officer 0007", T0 + 50_000)]
    );
    assert!(
        trail[1].detail.starts_with("rejected: it is a cyclist"),
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
        decision: ReviewState::Pending,
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
    assert_eq!(store.audit_of(&violation.event_id).unwrap().len(), 3);
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
    assert_eq!(store.purge(EventKind::VehiclePass, i64::MAX).unwrap().0, 4);

    // After a restart: the same data, migrations not re-run.
    let mut other = reopen();
    assert_eq!(other.stats().unwrap().events_total, 25);
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
    assert_eq!(other.stats().unwrap().events_total, 5);
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
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .unwrap();
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
