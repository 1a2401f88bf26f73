//! The SQL both backends share: the schema as numbered migrations with the dialects' few
//! differences, and the statements and query builders with placeholders each backend fills
//! in its own style (`?n` for SQLite, `$n` for PostgreSQL).

use protocol::{Event, EventBody, EventKind};
use serde::Serialize;

use super::*;

/// The schema both backends share, as numbered migrations. Integers are `BIGINT` (64-bit in
/// both); `{blob}` is the binary type (`BLOB` in SQLite, `BYTEA` in PostgreSQL).
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE events (
    event_id      TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,
    severity      TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    camera_id     TEXT NOT NULL,
    frame_time_ms BIGINT NOT NULL,
    received_ms   BIGINT NOT NULL,
    review        TEXT NOT NULL,
    class         TEXT,
    phase         TEXT,
    json          TEXT NOT NULL
);
CREATE INDEX events_time ON events (frame_time_ms, event_id);
CREATE INDEX events_checkpoint_time ON events (checkpoint_id, frame_time_ms, event_id);
CREATE INDEX events_camera_time ON events (camera_id, frame_time_ms, event_id);
CREATE INDEX events_kind_time ON events (kind, frame_time_ms, event_id);
"#,
    r#"
CREATE TABLE evidence (
    image_id      TEXT PRIMARY KEY,
    checkpoint_id TEXT NOT NULL,
    camera_id     TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    bytes         {blob} NOT NULL,
    received_ms   BIGINT NOT NULL
);
"#,
    r#"
ALTER TABLE events ADD COLUMN plate TEXT;
CREATE INDEX events_plate_time ON events (plate, frame_time_ms);
"#,
    r#"
CREATE TABLE audit (
    id        {serial},
    event_id  TEXT NOT NULL,
    action    TEXT NOT NULL,
    actor     TEXT NOT NULL,
    detail    TEXT NOT NULL,
    at_ms     BIGINT NOT NULL
);
CREATE INDEX audit_event ON audit (event_id, id);
CREATE INDEX events_review_time ON events (review, frame_time_ms, event_id);
"#,
    // The kind index grows checkpoint and lane: traffic flow is counted from the index
    // alone, and kind queries keep their order (one index more would slow every insert).
    r#"
ALTER TABLE events ADD COLUMN lane BIGINT;
UPDATE events SET lane = {lane_of_json};
DROP INDEX events_kind_time;
CREATE INDEX events_kind_time ON events (kind, frame_time_ms, event_id, checkpoint_id, lane);
"#,
    // The GA/T 1400 export queue, filled in the transaction that stores each new pass.
    r#"
CREATE TABLE export_queue (
    event_id    TEXT PRIMARY KEY,
    state       TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    next_try_ms BIGINT NOT NULL,
    last_error  TEXT,
    enqueued_ms BIGINT NOT NULL
);
CREATE INDEX export_due ON export_queue (state, next_try_ms, event_id);
"#,
    // SQLite's plate index in generations (see `PLATE_GEN_ENTRIES`); PostgreSQL keeps its
    // plate index.
    "{plate_generations}",
    // Only events that need (or had) a review are in the review index: vehicle passes, the
    // bulk, need none, and one index fewer is one B-tree fewer per pass stored.
    r#"
DROP INDEX events_review_time;
CREATE INDEX events_review_time ON events (review, frame_time_ms, event_id)
    WHERE review <> 'not_required';
"#,
    // Completeness across levels (issue 19): a county serves its events to the city in the
    // order it stored them (an append at the end of this index), and the city keeps, per
    // county, how far it has pulled.
    r#"
CREATE INDEX events_received ON events (received_ms, event_id);
CREATE TABLE sync_marks (
    county      TEXT PRIMARY KEY,
    received_ms BIGINT NOT NULL,
    event_id    TEXT NOT NULL,
    updated_ms  BIGINT NOT NULL
);
"#,
    // Aggregators side by side on one database: the once-only jobs (export, retention, the
    // city's pull) are held by one of them at a time (see `crate::lease`).
    r#"
CREATE TABLE leases (
    job        TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
"#,
    // Plates within one edit, found by key (a deletion neighbourhood): each distinct plate
    // is stored under itself and under each string it makes with one character dropped; two
    // plates within one edit share a key. A search looks up the 8-9 keys of the plate asked
    // for (instead of ~1,300-2,700 spellings of it) and checks the few plates found.
    r#"
CREATE TABLE plate_keys (
    key   TEXT NOT NULL,
    plate TEXT NOT NULL,
    PRIMARY KEY (key, plate)
);
INSERT INTO plate_keys (key, plate)
    SELECT DISTINCT plate, plate FROM events WHERE plate IS NOT NULL;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 32)
INSERT INTO plate_keys (key, plate)
    SELECT DISTINCT substr(k.plate, 1, n.i - 1) || substr(k.plate, n.i + 1), k.plate
    FROM plate_keys AS k JOIN n ON n.i <= length(k.plate)
    WHERE k.key = k.plate AND length(k.plate) > 1
    ON CONFLICT DO NOTHING;
{plate_bytewise}
"#,
    // PostgreSQL's plate index covers the page's order (time, id): a plate search takes its
    // page from the index alone and reads only that page's rows.
    "{plate_index_covering}",
    // PostgreSQL for years of passes (issue 19): events partitioned by kind, then by month
    // of frame time, made on demand; retention drops a kind's whole months. Bodies typed
    // `json` on PostgreSQL (see `POSTGRES_PARTITIONED`).
    "{partitioned}",
    // Aggregators side by side: the watch list in force per scope, in the database they
    // share (see `crate::watchlist::share`).
    r#"
CREATE TABLE watchlists (
    scope   TEXT PRIMARY KEY,
    version BIGINT NOT NULL,
    body    {blob} NOT NULL,
    at_ms   BIGINT NOT NULL
);
"#,
    // Evidence images out of the row store on PostgreSQL (large objects; see
    // `POSTGRES_EVIDENCE_OUTSIDE`); SQLite keeps them in its one file.
    "{evidence_outside}",
    // Accident records imported from the police register (`crate::accidents`).
    r#"
CREATE TABLE accidents (
    id          TEXT PRIMARY KEY,
    time_ms     BIGINT NOT NULL,
    place       TEXT NOT NULL,
    severity    TEXT NOT NULL,
    kind        TEXT NOT NULL,
    lat         DOUBLE PRECISION,
    lon         DOUBLE PRECISION,
    imported_ms BIGINT NOT NULL
);
CREATE INDEX accidents_time ON accidents (time_ms);
"#,
];

/// Migration 15 on PostgreSQL: an image's bytes leave the `evidence` table for a large
/// object (`lo`, its size in `size`); the table keeps what a query reads (ids, sha256, type).
/// Large objects rather than a folder of files named by sha256: every aggregator of a scope
/// shares one database (issue 19's failover) and none needs a shared file system for it; an
/// image is written in the same transaction as its row (no row without its picture, no
/// picture without a row, whatever crashes); `pg_dump` and a restore carry the images with
/// their events, as evidence must be kept. The table's rows stay a few hundred bytes, so its
/// scans, vacuum and index stay small; the bytes are read only when a picture is asked for.
/// A trigger unlinks an image's object when its row is deleted (retention, by any path).
const POSTGRES_EVIDENCE_OUTSIDE: &str = r#"
ALTER TABLE evidence ADD COLUMN lo OID, ADD COLUMN size BIGINT;
UPDATE evidence SET lo = lo_from_bytea(0, bytes), size = length(bytes);
ALTER TABLE evidence DROP COLUMN bytes;
ALTER TABLE evidence ALTER COLUMN size SET NOT NULL;
CREATE FUNCTION evidence_unlink() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    PERFORM lo_unlink(OLD.lo);
    RETURN OLD;
END
$f$;
CREATE TRIGGER evidence_unlink AFTER DELETE ON evidence
    FOR EACH ROW WHEN (OLD.lo IS NOT NULL) EXECUTE FUNCTION evidence_unlink();
"#;

/// Migration 13 on PostgreSQL: `events` becomes a table partitioned by kind (LIST), each
/// kind by month of frame time (RANGE, UTC months), the rows of the old table moved into it.
/// A partition is made by `events_partition(kind, frame_time_ms)` when the first row of its
/// kind and month arrives (one creator at a time, by an advisory lock). The key holds the
/// partition columns, as PostgreSQL requires: an event sent again has the same kind and
/// frame time, so duplicates are still found. Within a kind the time index carries the
/// checkpoint and lane (flow is counted from it alone) and replaces the kind index.
///
/// The body is PostgreSQL's `json`, not `jsonb`: validated on the way in, queried with the
/// same operators (`json ->> 'plate_colour'`), kept byte for byte as the node sent it; the
/// columns every query of ours filters on are extracted anyway. Measured on this server
/// (2 cores, PostgreSQL 15), 200,000 stored pass bodies into a bare table: text 0.65-0.79 s,
/// `json` 1.39 s, `jsonb` 4.50-5.06 s and 37 % more space: about 20 µs of the server's CPU
/// per pass more, most of the 33 µs a pass may take at 30,000 passes/s.
const POSTGRES_PARTITIONED: &str = r#"
ALTER TABLE events RENAME TO events_v12;
ALTER TABLE events_v12 RENAME CONSTRAINT events_pkey TO events_v12_pkey;
DROP INDEX events_time, events_checkpoint_time, events_camera_time, events_kind_time,
    events_plate_time, events_review_time, events_received;
CREATE TABLE events (
    event_id      TEXT NOT NULL,
    kind          TEXT NOT NULL,
    severity      TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    camera_id     TEXT NOT NULL,
    frame_time_ms BIGINT NOT NULL,
    received_ms   BIGINT NOT NULL,
    review        TEXT NOT NULL,
    class         TEXT,
    phase         TEXT,
    json          JSON NOT NULL,
    plate         TEXT COLLATE "C",
    lane          BIGINT,
    PRIMARY KEY (event_id, kind, frame_time_ms)
) PARTITION BY LIST (kind);
CREATE FUNCTION events_partition(k TEXT, t BIGINT, OUT child TEXT, OUT lo BIGINT, OUT hi BIGINT)
LANGUAGE plpgsql AS $f$
DECLARE
    m      TIMESTAMP := date_trunc('month', to_timestamp(t / 1000.0) AT TIME ZONE 'UTC');
    parent TEXT := 'events_' || k;
BEGIN
    lo := (extract(epoch FROM m) * 1000)::bigint;
    hi := (extract(epoch FROM m + interval '1 month') * 1000)::bigint;
    child := 'events_' || k || '_' || to_char(m, 'YYYYMM');
    IF k !~ '^[a-z][a-z0-9_]{0,40}$' THEN
        RAISE EXCEPTION 'event kind "%" cannot name a partition', k USING ERRCODE = '22023';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.events_partition'));
    IF to_regclass(parent) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF events FOR VALUES IN (%L) PARTITION BY RANGE (frame_time_ms)', parent, k);
    END IF;
    IF to_regclass(child) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)', child, parent, lo, hi);
    END IF;
END
$f$;
SELECT events_partition(kind, min(frame_time_ms)) FROM events_v12
    GROUP BY kind, date_trunc('month', to_timestamp(frame_time_ms / 1000.0) AT TIME ZONE 'UTC');
INSERT INTO events (event_id, kind, severity, node_id, checkpoint_id, camera_id, frame_time_ms,
        received_ms, review, class, phase, json, plate, lane)
    SELECT event_id, kind, severity, node_id, checkpoint_id, camera_id, frame_time_ms,
        received_ms, review, class, phase, json::json, plate, lane FROM events_v12;
DROP TABLE events_v12;
CREATE INDEX events_time ON events (frame_time_ms, event_id) INCLUDE (checkpoint_id, lane);
CREATE INDEX events_checkpoint_time ON events (checkpoint_id, frame_time_ms, event_id);
CREATE INDEX events_camera_time ON events (camera_id, frame_time_ms, event_id);
CREATE INDEX events_plate_time ON events (plate, frame_time_ms, event_id);
CREATE INDEX events_review_time ON events (review, frame_time_ms, event_id)
    WHERE review <> 'not_required';
CREATE INDEX events_received ON events (received_ms, event_id);
"#;

/// SQLite's plate index, in generations. One B-tree keyed by plate takes each new pass at a
/// random place, so a batch of N passes rewrites about N pages of it once it is larger than
/// N pages: at 10 million rows the plate index was three quarters of all pages written and
/// ingest fell from 50,000 to 17,000 passes/s. Here each entry goes into the newest
/// generation, `(gen, plate, time, rowid)`, which holds at most `PLATE_GEN_ENTRIES`: a batch
/// rewrites only that small subtree. Every `PLATE_GENS_PER_MERGE` full generations are merged
/// into one, written in key order (an append), in one transaction. A plate lookup seeks
/// each generation (about 18 at 10 million rows). Entries leave with their events (trigger).
const SQLITE_PLATE_GENERATIONS: &str = r#"
CREATE TABLE plate_gens (
    gen     INTEGER PRIMARY KEY,
    level   INTEGER NOT NULL,
    entries INTEGER NOT NULL,
    lo_rid  INTEGER NOT NULL,
    hi_rid  INTEGER NOT NULL
);
CREATE TABLE plate_idx (
    gen           INTEGER NOT NULL,
    plate         TEXT NOT NULL,
    frame_time_ms INTEGER NOT NULL,
    rid           INTEGER NOT NULL,
    PRIMARY KEY (gen, plate, frame_time_ms, rid)
) WITHOUT ROWID;
INSERT INTO plate_gens (gen, level, entries, lo_rid, hi_rid)
    SELECT 1, 1, count(*), min(rowid), max(rowid) FROM events WHERE plate IS NOT NULL
    HAVING count(*) > 0;
INSERT INTO plate_idx (gen, plate, frame_time_ms, rid)
    SELECT 1, plate, frame_time_ms, rowid FROM events WHERE plate IS NOT NULL
    ORDER BY plate, frame_time_ms, rowid;
DROP INDEX events_plate_time;
CREATE TRIGGER plate_idx_forget AFTER DELETE ON events WHEN old.plate IS NOT NULL BEGIN
    DELETE FROM plate_idx
    WHERE gen IN (SELECT gen FROM plate_gens WHERE old.rowid BETWEEN lo_rid AND hi_rid)
      AND plate = old.plate AND frame_time_ms = old.frame_time_ms AND rid = old.rowid;
END;
"#;

/// What differs between the backends' SQL, for [`MIGRATIONS`].
pub(crate) struct Dialect {
    /// Binary type.
    pub blob: &'static str,
    /// Auto-increment primary key.
    pub serial: &'static str,
    /// The event JSON's `lane` as an integer.
    pub lane_of_json: &'static str,
    /// Migration 7: SQLite's plate index in generations; nothing in PostgreSQL.
    pub plate_generations: &'static str,
    /// Migration 11: plates compared byte by byte (PostgreSQL: collation "C"), so that a
    /// plate prefix is a range of the plate index whatever the database's collation.
    pub plate_bytewise: &'static str,
    /// Migration 12: PostgreSQL's plate index with the event id (SQLite: nothing).
    pub plate_index_covering: &'static str,
    /// Migration 13: PostgreSQL's events partitioned by kind and month (SQLite: nothing).
    pub partitioned: &'static str,
    /// Migration 15: PostgreSQL's images as large objects (SQLite: nothing).
    pub evidence_outside: &'static str,
    /// The database's clock, milliseconds since the epoch (leases are timed by it, so that
    /// the aggregators' own clocks need not agree).
    pub now_ms: &'static str,
}

pub(crate) const SQLITE: Dialect = Dialect {
    blob: "BLOB",
    serial: "INTEGER PRIMARY KEY AUTOINCREMENT",
    lane_of_json: "json_extract(json, '$.lane')",
    plate_generations: SQLITE_PLATE_GENERATIONS,
    now_ms: "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
    plate_bytewise: "",
    plate_index_covering: "SELECT 1;",
    partitioned: "SELECT 1;",
    evidence_outside: "SELECT 1;",
};

pub(crate) const POSTGRES: Dialect = Dialect {
    blob: "BYTEA",
    serial: "BIGSERIAL PRIMARY KEY",
    lane_of_json: "(json::jsonb ->> 'lane')::bigint",
    plate_generations: "SELECT 1;",
    now_ms: "(extract(epoch from clock_timestamp()) * 1000)::bigint",
    plate_bytewise: "ALTER TABLE events ALTER COLUMN plate TYPE text COLLATE \"C\";",
    plate_index_covering: "DROP INDEX events_plate_time;
CREATE INDEX events_plate_time ON events (plate, frame_time_ms, event_id);",
    partitioned: POSTGRES_PARTITIONED,
    evidence_outside: POSTGRES_EVIDENCE_OUTSIDE,
};

pub(crate) fn dialect(m: &str, d: &Dialect) -> String {
    m.replace("{blob}", d.blob)
        .replace("{serial}", d.serial)
        .replace("{lane_of_json}", d.lane_of_json)
        .replace("{plate_generations}", d.plate_generations)
        .replace("{now_ms}", d.now_ms)
        .replace("{plate_bytewise}", d.plate_bytewise)
        .replace("{plate_index_covering}", d.plate_index_covering)
        .replace("{partitioned}", d.partitioned)
        .replace("{evidence_outside}", d.evidence_outside)
}

/// Checks a review before it is applied; the event's current review state decides.
/// A decision (confirmed, rejected) is taken once, on an event awaiting review; `pending`
/// reopens a decided event (the API lets administrators only). Every one needs a reviewer
/// and a reason.
pub(crate) fn check_review(ev: &Event, r: &Review) -> Result<(), StoreError> {
    use protocol::ReviewState::*;
    if r.reviewer.trim().is_empty() || r.reason.trim().is_empty() {
        return Err(StoreError::Review(
            "a review needs a reviewer and a reason".into(),
        ));
    }
    if ev.review == NotRequired {
        return Err(StoreError::Review(format!(
            "event {} ({}) needs no review",
            ev.event_id,
            ev.kind().as_str()
        )));
    }
    match (r.decision, ev.review) {
        (Confirmed | Rejected, Pending) | (Pending, Confirmed | Rejected) => Ok(()),
        (Confirmed | Rejected, done) => Err(StoreError::Review(format!(
            "event {} is already {}: a decision is final unless an administrator reopens it (POST /api/v1/events/{}/reopen)",
            ev.event_id,
            json_str(&done),
            ev.event_id
        ))),
        (Pending, _) => Err(StoreError::Review(format!(
            "event {} awaits review already; there is nothing to reopen",
            ev.event_id
        ))),
        (NotRequired, _) => Err(StoreError::Review(
            "decision must be confirmed or rejected".into(),
        )),
    }
}

/// The audit action a review writes: `review` for a decision, `reopen` for a reopening.
pub(crate) fn review_action(r: &Review) -> &'static str {
    if r.decision == protocol::ReviewState::Pending {
        "reopen"
    } else {
        "review"
    }
}

/// The sync statements both backends run, placeholders `{n}`. Only the nodes' events are
/// offered (node ids have type code 505): what aggregators derive (cloned-plate alerts)
/// each level derives itself.
pub(crate) const SYNC_REFS: &str = "SELECT event_id, received_ms, json FROM events
     WHERE (received_ms, event_id) > ({1}, {2}) AND received_ms <= {3}
       AND substr(node_id, 11, 3) <> '503'
     ORDER BY received_ms, event_id LIMIT {4}";
pub(crate) const SYNC_MARK: &str =
    "SELECT received_ms, event_id FROM sync_marks WHERE county = {1}";
pub(crate) const SET_SYNC_MARK: &str =
    "INSERT INTO sync_marks (county, received_ms, event_id, updated_ms)
     VALUES ({1}, {2}, {3}, {4})
     ON CONFLICT (county) DO UPDATE SET received_ms = excluded.received_ms,
       event_id = excluded.event_id, updated_ms = excluded.updated_ms";

/// Takes job {1} for holder {2} for {3} ms, or renews it: only when free, expired or held by
/// the same holder. A row back: held.
pub(crate) const LEASE: &str =
    "INSERT INTO leases (job, holder, expires_ms) VALUES ({1}, {2}, {now_ms} + {3})
     ON CONFLICT (job) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms
     WHERE leases.holder = excluded.holder OR leases.expires_ms < {now_ms}
     RETURNING holder";
/// The watch list of scope {1}: version {2}, body {3}, at {4}, kept only when newer.
pub(crate) const WATCHLIST_PUT: &str =
    "INSERT INTO watchlists (scope, version, body, at_ms) VALUES ({1}, {2}, {3}, {4})
     ON CONFLICT (scope) DO UPDATE SET version = excluded.version, body = excluded.body,
       at_ms = excluded.at_ms
     WHERE watchlists.version < excluded.version";
pub(crate) const WATCHLIST_GET: &str = "SELECT version, body FROM watchlists WHERE scope = {1}";
/// One accident record, kept once by its id.
pub(crate) const ACCIDENT_PUT: &str =
    "INSERT INTO accidents (id, time_ms, place, severity, kind, lat, lon, imported_ms)
     VALUES ({1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}) ON CONFLICT (id) DO NOTHING";
pub(crate) const ACCIDENTS_IN: &str =
    "SELECT id, time_ms, place, severity, kind, lat, lon FROM accidents
     WHERE time_ms >= {1} AND time_ms < {2} ORDER BY time_ms, id";
pub(crate) const RELEASE: &str = "DELETE FROM leases WHERE job = {1} AND holder = {2}";
pub(crate) const LEASES: &str =
    "SELECT job, holder, expires_ms - {now_ms} FROM leases WHERE expires_ms >= {now_ms} ORDER BY job";

/// A plate's keys in `plate_keys` other than itself: the plate with each one character
/// dropped (none for a one-character plate).
pub(crate) fn deletion_keys(plate: &str) -> Vec<String> {
    let c: Vec<char> = plate.chars().collect();
    if c.len() < 2 {
        return vec![];
    }
    let mut out: Vec<String> = (0..c.len())
        .map(|i| c[..i].iter().chain(&c[i + 1..]).collect())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The plates this connection knows are in `plate_keys`, at most [`KnownPlates::MAX`] (then
/// it starts again): most passes are of plates seen before, and skip the lookup. Rows of
/// `plate_keys` are never deleted, so a plate once known stays there.
#[derive(Debug, Default)]
pub(crate) struct KnownPlates(std::collections::HashSet<String>);

impl KnownPlates {
    const MAX: usize = 1_000_000;

    /// The plates of `plates` not known yet (sorted, once each).
    pub(crate) fn unknown<'a>(&self, plates: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
        let set: std::collections::BTreeSet<&str> =
            plates.filter(|p| !self.0.contains(*p)).collect();
        set.into_iter().collect()
    }

    /// Remembers plates now in `plate_keys` (after the transaction that put them there).
    pub(crate) fn learn<'a>(&mut self, plates: impl Iterator<Item = &'a str>) {
        for p in plates {
            if self.0.len() >= Self::MAX {
                self.0.clear();
            }
            self.0.insert(p.to_string());
        }
    }
}

/// Registers a plate under its own key; a row back (SQLite: one change) means it is new.
pub(crate) const PLATE_KEY_SELF: &str =
    "INSERT INTO plate_keys (key, plate) VALUES ({1}, {1}) ON CONFLICT DO NOTHING";
pub(crate) const PLATE_KEY: &str =
    "INSERT INTO plate_keys (key, plate) VALUES ({1}, {2}) ON CONFLICT DO NOTHING";

/// The stored plates sharing a key with `plate`, SQL and arguments: candidates for
/// [`near_plates`].
pub(crate) fn near_candidates_sql(
    plate: &str,
    ph: impl Fn(usize) -> String,
) -> (String, Vec<String>) {
    let p = protocol::plate::normalise(plate);
    let mut keys = deletion_keys(&p);
    keys.push(p);
    let list: Vec<String> = (1..=keys.len()).map(ph).collect();
    (
        format!(
            "SELECT DISTINCT plate FROM plate_keys WHERE key IN ({})",
            list.join(", ")
        ),
        keys,
    )
}

/// For a search within one edit: the stored plates it covers, found with `query` (SQL with
/// `ph` placeholders and its text arguments -> the first column). None when the filter is
/// no such search; an empty list when no stored plate is that near.
pub(crate) fn near_for(
    f: &EventFilter,
    ph: impl Fn(usize) -> String,
    query: impl FnOnce(&str, &[String]) -> Result<Vec<String>, StoreError>,
) -> Result<Option<Vec<String>>, StoreError> {
    let (Some(p), true) = (&f.plate, f.plate_near) else {
        return Ok(None);
    };
    check_filter_size(f)?;
    if p.contains(['*', '?']) {
        return Err(StoreError::Query(format!(
            "plate '{p}': a search within one edit takes a whole plate, not wildcards"
        )));
    }
    let (sql, keys) = near_candidates_sql(p, ph);
    Ok(Some(near_plates(p, query(&sql, &keys)?)))
}

/// Of the candidates, the plates within one edit of `plate` (sorted).
pub(crate) fn near_plates(plate: &str, candidates: Vec<String>) -> Vec<String> {
    let p = protocol::plate::normalise(plate);
    let mut out: Vec<String> = candidates
        .into_iter()
        .filter(|c| protocol::plate::edit_distance(&p, c) <= 1)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// `SELECT <col> FROM <table> WHERE <col> IN (<n placeholders>)`.
pub(crate) fn present_sql(
    table: &str,
    col: &str,
    n: usize,
    ph: impl Fn(usize) -> String,
) -> String {
    let list: Vec<String> = (1..=n).map(ph).collect();
    format!(
        "SELECT {col} FROM {table} WHERE {col} IN ({})",
        list.join(", ")
    )
}

/// A row of [`SYNC_REFS`] as offered.
pub(crate) fn sync_ref(
    event_id: String,
    received_ms: i64,
    json: &str,
) -> Result<SyncRef, StoreError> {
    let ev = decode_row(&event_id, json)?;
    Ok(SyncRef {
        violation: ev.kind().initial_review() != protocol::ReviewState::NotRequired,
        images: ev.evidence.into_iter().map(|e| e.image_id).collect(),
        event_id,
        received_ms,
    })
}

/// The three queries of [`EventStore::stats`] (events per kind, ended tracks per class,
/// evidence images), over one county's checkpoints or all; they share the arguments.
pub(crate) fn stats_sql(
    county: Option<&str>,
    ph: impl Fn(usize) -> String,
) -> Result<([String; 3], Vec<SqlArg>), StoreError> {
    let mut args = Vec::new();
    let scope = match county {
        Some(c) => county_condition(c, &mut args, ph)?,
        None => String::new(),
    };
    Ok((
        [
            format!("SELECT kind, COUNT(*) FROM events WHERE TRUE{scope} GROUP BY kind"),
            format!("SELECT class, COUNT(*) FROM events WHERE kind = 'object_track' AND phase = 'end'{scope} GROUP BY class"),
            format!("SELECT COUNT(*) FROM evidence WHERE TRUE{scope}"),
        ],
        args,
    ))
}

/// The flow query's SQL with placeholders made by `ph(n)`, and its arguments.
/// What a flow query counts: vehicle passes per checkpoint and lane (traffic flow), or
/// events of every kind per kind (the dashboard's events per hour).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FlowGroup {
    CheckpointLane,
    Kind,
}

pub(crate) fn flow_sql(
    q: &FlowQuery,
    group: FlowGroup,
    ph: impl Fn(usize) -> String,
) -> Result<(String, Vec<SqlArg>), StoreError> {
    if q.bucket_ms < 60_000 || q.to_ms <= q.from_ms {
        return Err(StoreError::Query(format!(
            "flow needs from < to and buckets of at least a minute (from {}, to {}, bucket {} ms)",
            q.from_ms, q.to_ms, q.bucket_ms
        )));
    }
    if (q.to_ms - q.from_ms) / q.bucket_ms > MAX_FLOW_BUCKETS {
        return Err(StoreError::Query(format!(
            "flow spans more than {MAX_FLOW_BUCKETS} buckets; narrow from/to or widen the bucket"
        )));
    }
    let mut args = vec![SqlArg::Int(q.from_ms), SqlArg::Int(q.to_ms)];
    let b = q.bucket_ms;
    let (columns, kind) = match group {
        FlowGroup::CheckpointLane => ("checkpoint_id, lane", "kind = 'vehicle_pass' AND "),
        FlowGroup::Kind => ("kind", ""),
    };
    let mut sql = format!(
        "SELECT (frame_time_ms / {b}) * {b} AS bucket, {columns}, COUNT(*) FROM events
         WHERE {kind}frame_time_ms >= {} AND frame_time_ms < {}",
        ph(1),
        ph(2)
    );
    if !q.checkpoints.is_empty() {
        let mut list = Vec::new();
        for c in &q.checkpoints {
            args.push(SqlArg::Text(c.clone()));
            list.push(ph(args.len()));
        }
        sql.push_str(&format!(" AND checkpoint_id IN ({})", list.join(", ")));
    }
    if let Some(c) = &q.county {
        sql.push_str(&county_condition(c, &mut args, &ph)?);
    }
    sql.push_str(match group {
        FlowGroup::CheckpointLane => {
            " GROUP BY bucket, checkpoint_id, lane ORDER BY bucket, checkpoint_id, lane NULLS FIRST"
        }
        FlowGroup::Kind => " GROUP BY bucket, kind ORDER BY bucket, kind",
    });
    Ok((sql, args))
}

/// The export queue's SQL, placeholders `?n` (SQLite) or `$n` (PostgreSQL).
pub(crate) const EXPORT_DUE: &str = "SELECT q.event_id, q.attempts, e.json FROM export_queue q JOIN events e ON e.event_id = q.event_id
     WHERE q.state = 'queued' AND q.next_try_ms <= {1} ORDER BY q.next_try_ms, q.event_id LIMIT {2}";
pub(crate) const EXPORT_DONE: &str = "DELETE FROM export_queue WHERE event_id = {1}";
pub(crate) const EXPORT_REFUSED: &str = "UPDATE export_queue SET attempts = attempts + 1, last_error = {2}, next_try_ms = {3}, state = {4} WHERE event_id = {1}";
pub(crate) const EXPORT_STATS: &str = "SELECT state, COUNT(*) FROM export_queue GROUP BY state";
pub(crate) const EXPORT_FORGET: &str = "DELETE FROM export_queue WHERE event_id = {1}";

/// `{n}` placeholders of the statements above in a backend's style.
pub(crate) fn placeholders(sql: &str, ph: impl Fn(usize) -> String) -> String {
    let mut s = sql.to_string();
    for n in 1..=8 {
        s = s.replace(&format!("{{{n}}}"), &ph(n));
    }
    s
}

pub(crate) fn export_stats_from(rows: Vec<(String, i64)>) -> ExportStats {
    let mut s = ExportStats::default();
    for (state, n) in rows {
        match state.as_str() {
            "queued" => s.queued = n as u64,
            _ => s.failed += n as u64,
        }
    }
    s
}

/// A bind value of a generated query.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlArg {
    Int(i64),
    Text(String),
}

/// How a backend finds events by plate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PlateLookup {
    /// An index on `events.plate` (PostgreSQL).
    Column,
    /// The generations of `plate_idx` (SQLite).
    Generations,
}

/// ` AND` the checkpoint ids of a county, as a half-open range (`[320505, 320506)`: the
/// index serves it), its bounds added to `args`.
fn county_condition(
    county: &str,
    args: &mut Vec<SqlArg>,
    ph: impl Fn(usize) -> String,
) -> Result<String, StoreError> {
    let n: u32 = county
        .parse()
        .ok()
        .filter(|_| county.len() == 6)
        .ok_or_else(|| {
            StoreError::Query(format!("county '{county}' is not a 6-digit region code"))
        })?;
    args.push(SqlArg::Text(county.to_string()));
    args.push(SqlArg::Text(format!("{:06}", n + 1)));
    Ok(format!(
        " AND checkpoint_id >= {} AND checkpoint_id < {}",
        ph(args.len() - 1),
        ph(args.len())
    ))
}

/// Refuses, before any work, a filter larger than any real query needs: every caller's
/// cost stays bounded (a 2,000-character plate searched within one edit once took 1.3 GB).
fn check_filter_size(f: &EventFilter) -> Result<(), StoreError> {
    let too_long = |what: &str, v: &str, max: usize| {
        let n = v.chars().count();
        (n > max).then(|| {
            StoreError::Query(format!("{what} of {n} characters; at most {max} are taken"))
        })
    };
    if let Some(e) = f
        .plate
        .iter()
        .chain(&f.plates)
        .find_map(|p| too_long("plate", p, MAX_QUERY_PLATE_CHARS))
    {
        return Err(e);
    }
    for (what, v) in [("camera", &f.camera_id), ("class", &f.class)] {
        if let Some(e) = v
            .as_deref()
            .and_then(|v| too_long(what, v, MAX_QUERY_TEXT_CHARS))
        {
            return Err(e);
        }
    }
    for (what, n) in [
        ("plates", f.plates.len()),
        ("checkpoints", f.checkpoints.len()),
    ] {
        if n > MAX_QUERY_LIST {
            return Err(StoreError::Query(format!(
                "{n} {what}; at most {MAX_QUERY_LIST} are taken"
            )));
        }
    }
    if f.limit == 0 {
        return Err(StoreError::Query(format!(
            "limit 0; a page holds 1 to {MAX_PAGE} events"
        )));
    }
    Ok(())
}

/// `near`: the stored plates within one edit of `f.plate` (from `plate_keys`, see
/// [`near_for`]), when `f.plate_near`.
pub(crate) fn list_sql(
    f: &EventFilter,
    near: &[String],
    plates_by: PlateLookup,
    ph: impl Fn(usize) -> String,
) -> Result<(String, Vec<SqlArg>, usize), StoreError> {
    check_filter_size(f)?;
    // The conditions after WHERE, and those on the plate apart.
    let mut sql = String::from("1=1");
    let mut plate_conds = Vec::new();
    let mut args = Vec::new();
    if let Some(c) = &f.county {
        sql.push_str(&county_condition(c, &mut args, &ph)?);
    }
    let mut push_in = |column: &str, vs: Vec<String>| {
        let mut list = Vec::with_capacity(vs.len());
        for v in vs {
            args.push(SqlArg::Text(v));
            list.push(ph(args.len()));
        }
        format!("{column} IN ({})", list.join(", "))
    };
    if !f.checkpoints.is_empty() {
        sql.push_str(" AND ");
        sql.push_str(&push_in("checkpoint_id", f.checkpoints.clone()));
    }
    if !f.plates.is_empty() {
        let plates = f
            .plates
            .iter()
            .map(|p| protocol::plate::normalise(p))
            .collect();
        plate_conds.push(push_in("plate", plates));
    }
    if let (Some(p), true) = (&f.plate, f.plate_near) {
        if p.contains(['*', '?']) {
            return Err(StoreError::Query(format!(
                "plate '{p}': a search within one edit takes a whole plate, not wildcards"
            )));
        }
        // No stored plate that near: no event matches.
        plate_conds.push(if near.is_empty() {
            "1 = 0".to_string()
        } else {
            push_in("plate", near.to_vec())
        });
    }
    if let Some(v) = f.plate.as_ref().filter(|_| !f.plate_near) {
        let p = protocol::plate::normalise(v);
        if p.contains(['*', '?']) {
            // Wildcards: `*` any run of characters, `?` one character; SQL's own are literal.
            let mut like = String::new();
            for c in p.chars() {
                match c {
                    '*' => like.push('%'),
                    '?' => like.push('_'),
                    '%' | '_' | '\\' => {
                        like.push('\\');
                        like.push(c);
                    }
                    c => like.push(c),
                }
            }
            args.push(SqlArg::Text(like));
            let mut cond = format!("plate LIKE {} ESCAPE '\\'", ph(args.len()));
            // The literal start as a range of the index: plates compare byte by byte (SQLite's
            // default; PostgreSQL's plate column has collation "C", migration 11), so the
            // plates beginning with it lie between it and it with its last character advanced.
            let prefix: String = p.chars().take_while(|c| !matches!(c, '*' | '?')).collect();
            if let Some(last) = prefix.chars().last() {
                let head = &prefix[..prefix.len() - last.len_utf8()];
                if let Some(next) = char::from_u32(last as u32 + 1) {
                    args.push(SqlArg::Text(prefix.clone()));
                    args.push(SqlArg::Text(format!("{head}{next}")));
                    let n = args.len();
                    cond.push_str(&format!(
                        " AND plate >= {} AND plate < {}",
                        ph(n - 1),
                        ph(n)
                    ));
                }
            }
            plate_conds.push(cond);
        } else {
            args.push(SqlArg::Text(p));
            plate_conds.push(format!("plate = {}", ph(args.len())));
        }
    }
    let mut push = |sql: &mut String, column_op: &str, v: SqlArg| {
        args.push(v);
        sql.push_str(&format!(" AND {column_op} {}", ph(args.len())));
    };
    if let Some(v) = &f.camera_id {
        push(&mut sql, "camera_id =", SqlArg::Text(v.clone()));
    }
    if let Some(k) = f.kind {
        push(&mut sql, "kind =", SqlArg::Text(k.as_str().to_string()));
    }
    if let Some(v) = &f.class {
        push(&mut sql, "class =", SqlArg::Text(v.clone()));
    }
    if let Some(v) = f.review {
        push(&mut sql, "review =", SqlArg::Text(json_str(&v)));
        if v != protocol::ReviewState::NotRequired {
            // The review index holds these rows only; the planner uses it when the query
            // states its condition.
            sql.push_str(" AND review <> 'not_required'");
        }
    }
    if let Some(a) = f.anomaly {
        push(
            &mut sql,
            "kind =",
            SqlArg::Text(EventKind::PlateAnomaly.as_str().into()),
        );
        push(&mut sql, "class =", SqlArg::Text(a.as_str().into()));
    }
    if let Some(v) = f.from_ms {
        push(&mut sql, "frame_time_ms >=", SqlArg::Int(v));
    }
    if let Some(v) = f.to_ms {
        push(&mut sql, "frame_time_ms <", SqlArg::Int(v));
    }
    if let Some(c) = &f.cursor {
        let (t, id) = parse_cursor(c)?;
        args.push(SqlArg::Int(t));
        args.push(SqlArg::Text(id));
        let n = args.len();
        sql.push_str(&format!(
            " AND (frame_time_ms, event_id) > ({}, {})",
            ph(n - 1),
            ph(n)
        ));
    }
    let mut from = String::from("events");
    for (i, cond) in plate_conds.iter().enumerate() {
        // Generation by generation (CROSS JOIN keeps that order): a planner guessing from
        // stale statistics would rather scan each generation than seek a long IN list.
        let in_gens = format!(
            "SELECT p.rid FROM plate_gens AS g CROSS JOIN plate_idx AS p ON p.gen = g.gen WHERE {cond}"
        );
        match plates_by {
            PlateLookup::Column => sql.push_str(&format!(" AND {cond}")),
            // The plate's entries lead (CROSS JOIN keeps the order): a plan that walks a
            // time index and tests each row against them is far slower for a rare plate.
            PlateLookup::Generations if i == 0 => {
                from = format!("({in_gens}) AS p CROSS JOIN events ON events.rowid = p.rid")
            }
            PlateLookup::Generations => sql.push_str(&format!(" AND events.rowid IN ({in_gens})")),
        }
    }
    let limit = f.limit.clamp(1, MAX_PAGE);
    let sql = if plates_by == PlateLookup::Column && !plate_conds.is_empty() {
        // The page's ids from the plate index alone (PostgreSQL's covers plate, time and id,
        // migration 12), then the bodies of those rows only: a prefix matching 22 000 passes
        // read every one of their rows before (160-177 ms at 4 M passes), 10-14 ms so. The
        // join names the frame time, so that each row is sought in its month's partitions only.
        format!(
            "SELECT e.event_id, e.json, e.frame_time_ms FROM (SELECT event_id, frame_time_ms FROM {from} WHERE {sql} ORDER BY frame_time_ms, event_id LIMIT {}) AS k JOIN events AS e ON e.event_id = k.event_id AND e.frame_time_ms = k.frame_time_ms ORDER BY k.frame_time_ms, k.event_id",
            limit + 1
        )
    } else {
        format!(
            "SELECT event_id, json, frame_time_ms FROM {from} WHERE {sql} ORDER BY frame_time_ms, event_id LIMIT {}",
            limit + 1
        )
    };
    Ok((sql, args, limit))
}

/// A page from rows fetched with one row more than the page size.
pub(crate) fn page_from_rows(
    rows: Vec<(String, String, i64)>,
    limit: usize,
) -> Result<Page, StoreError> {
    let more = rows.len() > limit;
    let mut events = Vec::with_capacity(limit.min(rows.len()));
    let mut last = None;
    for (id, json, t) in rows.into_iter().take(limit) {
        events.push(decode_row(&id, &json)?);
        last = Some((t, id));
    }
    Ok(Page {
        events,
        next_cursor: if more {
            last.map(|(t, id)| format!("{t}_{id}"))
        } else {
            None
        },
    })
}

/// The indexed columns stored beside an event's JSON.
pub(crate) struct Columns<'a> {
    pub kind: &'static str,
    pub class: Option<&'a str>,
    pub phase: Option<&'static str>,
    pub plate: Option<&'a str>,
}

pub(crate) fn columns(ev: &Event) -> Columns<'_> {
    let kind = ev.kind().as_str();
    match &ev.body {
        EventBody::ObjectTrack(t) => Columns {
            kind,
            class: Some(t.class.as_str()),
            phase: Some(if t.phase == protocol::TrackPhase::Start {
                "start"
            } else {
                "end"
            }),
            plate: None,
        },
        EventBody::PedestrianRedLight(_) => Columns {
            kind,
            class: Some("person"),
            phase: None,
            plate: None,
        },
        EventBody::VehiclePass(v) => Columns {
            kind,
            class: Some(v.vehicle_class.as_str()),
            phase: None,
            plate: v.plate.as_deref(),
        },
        EventBody::PlateAnomaly(a) => Columns {
            kind,
            class: Some(a.anomaly.as_str()),
            phase: None,
            plate: Some(a.plate.as_str()),
        },
        // A key vehicle's positions and alerts are found by its plate like its passes.
        EventBody::VehiclePosition(p) => Columns {
            kind,
            class: None,
            phase: None,
            plate: p.plate.as_deref(),
        },
        EventBody::VehicleAlert(a) => Columns {
            kind,
            class: Some(a.alert.as_str()),
            phase: None,
            plate: a.plate.as_deref(),
        },
    }
}

pub(crate) fn json_str<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

pub(crate) fn decode_row(id: &str, json: &str) -> Result<Event, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(id.to_string(), e.to_string()))
}

fn parse_cursor(c: &str) -> Result<(i64, String), StoreError> {
    let (t, id) = c
        .split_once('_')
        .ok_or_else(|| StoreError::Cursor(c.to_string()))?;
    let t = t
        .parse::<i64>()
        .map_err(|_| StoreError::Cursor(c.to_string()))?;
    if id.len() != 26 {
        return Err(StoreError::Cursor(c.to_string()));
    }
    Ok((t, id.to_string()))
}
