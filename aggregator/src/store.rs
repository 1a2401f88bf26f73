//! Stage `store`: events into SQLite, idempotent by `event_id`, and the queries the API serves.
//!
//! Input: validated events. Output: rows, and pages of events for queries. Synchronous;
//! callers run it off the async runtime. Schema changes are numbered migrations tracked in
//! `PRAGMA user_version`.

use std::collections::BTreeMap;
use std::path::Path;

use protocol::{Event, EventBody, EventKind};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database '{path}': {message}; check storage.sqlite_path and that its folder is writable")]
    Open { path: String, message: String },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored event '{0}' does not decode: {1}")]
    Corrupt(String, String),
    #[error("cannot use PostgreSQL: {0}")]
    Pg(String),
    #[error("no event '{0}'")]
    NotFound(String),
    #[error("review refused: {0}")]
    Review(String),
    #[error("query refused: {0}")]
    Query(String),
    #[error("cursor '{0}' is not valid; pass the next_cursor of a previous page")]
    Cursor(String),
    /// The database refuses the data itself (a string it cannot hold, a value out of
    /// range): storing it again fails again, unlike a database that is down or full.
    #[error("the database refuses the data: {0}")]
    Refused(String),
}

impl StoreError {
    /// Whether the data is at fault (storing it again would fail again), not the database.
    pub fn is_refusal(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            StoreError::Refused(_) => true,
            StoreError::Sql(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, C::ConstraintViolation | C::TooBig | C::TypeMismatch)
            }
            _ => false,
        }
    }
}

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
];

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

/// Entries of the newest plate-index generation before a new one begins (SQLite).
const PLATE_GEN_ENTRIES: i64 = 131_072;
/// Full generations merged into one (SQLite).
const PLATE_GENS_PER_MERGE: usize = 8;

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
};

pub(crate) const POSTGRES: Dialect = Dialect {
    blob: "BYTEA",
    serial: "BIGSERIAL PRIMARY KEY",
    lane_of_json: "(json::jsonb ->> 'lane')::bigint",
    plate_generations: "SELECT 1;",
    now_ms: "(extract(epoch from clock_timestamp()) * 1000)::bigint",
    plate_bytewise: "ALTER TABLE events ALTER COLUMN plate TYPE text COLLATE \"C\";",
};

pub(crate) fn dialect(m: &str, d: &Dialect) -> String {
    m.replace("{blob}", d.blob)
        .replace("{serial}", d.serial)
        .replace("{lane_of_json}", d.lane_of_json)
        .replace("{plate_generations}", d.plate_generations)
        .replace("{now_ms}", d.now_ms)
        .replace("{plate_bytewise}", d.plate_bytewise)
}

/// A reviewer's decision on an event awaiting review.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Review {
    /// `confirmed` or `rejected`.
    pub decision: protocol::ReviewState,
    /// Set by the API to the logged-in user.
    #[serde(default)]
    pub reviewer: String,
    pub reason: String,
}

/// One line of an event's audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub event_id: String,
    pub action: String,
    pub actor: String,
    pub detail: String,
    pub at_ms: i64,
}

/// Checks a review before it is applied; the event's current review state decides.
pub(crate) fn check_review(ev: &Event, r: &Review) -> Result<(), StoreError> {
    use protocol::ReviewState::*;
    if !matches!(r.decision, Confirmed | Rejected) {
        return Err(StoreError::Review(format!(
            "decision must be confirmed or rejected, not {:?}",
            r.decision
        )));
    }
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
    Ok(())
}

/// The embedded SQLite backend.
pub struct SqliteStore {
    conn: Connection,
    export: bool,
    /// Rows stored since the planner's statistics were last refreshed.
    since_optimize: usize,
    /// The plate-index generation taking new entries, if one is open.
    plate_gen: Option<PlateGen>,
    /// Size of a generation and how many full ones are merged (tests make them small).
    plate_gen_entries: i64,
    plate_gens_per_merge: usize,
    /// Plates known to be in `plate_keys` (a plate seen again costs no lookup).
    known_plates: KnownPlates,
}

/// The open plate-index generation (SQLite), as in its `plate_gens` row.
#[derive(Debug, Clone, Copy)]
struct PlateGen {
    gen: i64,
    entries: i64,
    hi_rid: i64,
}

/// Page cache per SQLite connection, KiB. Larger is not faster: every commit walks the
/// cache (pcache1TruncateUnsafe took 17 % of ingest at 256 MiB).
const SQLITE_CACHE_KIB: i64 = 32 * 1024;
/// WAL pages between checkpoints (256 MiB): index pages rewritten by many batches are
/// copied into the database once per checkpoint, so fewer checkpoints copy less (at 10 M
/// rows: 8,192 pages gave 36,000 passes/s, 65,536 gave 48,000).
const WAL_AUTOCHECKPOINT_PAGES: i64 = 65_536;
/// Address space SQLite may map the database into (not memory it takes).
const SQLITE_MMAP_BYTES: i64 = 16 << 30;
/// Rows stored between refreshes of the planner's statistics (`PRAGMA optimize`), so that
/// a plate query uses the plate index however the table grew.
const OPTIMIZE_EVERY: usize = 100_000;

/// A vehicle pass waiting to go upstream, and how often it was tried.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportItem {
    pub event: Event,
    pub attempts: u32,
}

/// The export queue: passes waiting, and passes the platform refused for good.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExportStats {
    pub queued: u64,
    pub failed: u64,
}

/// The outcome of one export try: done, or the platform's reason and whether to give up.
pub type ExportOutcome = Result<(), (String, bool)>;

/// Filters of an event query; all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Any of these checkpoints (none: every checkpoint).
    pub checkpoints: Vec<String>,
    /// Only checkpoints of this county (six-digit region code): what a county operator sees.
    pub county: Option<String>,
    pub camera_id: Option<String>,
    pub kind: Option<EventKind>,
    /// Object class (`person`, `car`, ...) for object-track events.
    pub class: Option<String>,
    /// Plate anomalies of this type (`cloned_plate`, `watch_list`, ...).
    pub anomaly: Option<protocol::AnomalyType>,
    /// Plate text (vehicle passes and plate anomalies): exact, or with wildcards `*` (any
    /// characters) and `?` (one character).
    pub plate: Option<String>,
    /// With `plate` (no wildcards): also plates within one edit of it (a character replaced,
    /// dropped or added), found through the plate index.
    pub plate_near: bool,
    /// Any of these exact plates (e.g. the key vehicles of the registry).
    pub plates: Vec<String>,
    /// Review state, e.g. pending.
    pub review: Option<protocol::ReviewState>,
    /// Inclusive lower bound of frame time, UTC ms.
    pub from_ms: Option<i64>,
    /// Exclusive upper bound of frame time, UTC ms.
    pub to_ms: Option<i64>,
    pub limit: usize,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub events: Vec<Event>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// An evidence image as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceBlob {
    pub image_id: String,
    pub checkpoint_id: String,
    pub camera_id: String,
    pub sha256: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// How far a city has pulled a county's events: the county's store time and id of the last
/// one taken (events are offered in that order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SyncCursor {
    pub received_ms: i64,
    pub event_id: String,
}

/// One event a county offers to the city: its id, when the county stored it, whether it is
/// a violation (it awaits review) and the ids of its evidence images.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SyncRef {
    pub event_id: String,
    pub received_ms: i64,
    pub violation: bool,
    pub images: Vec<String>,
}

impl SyncRef {
    pub fn cursor(&self) -> SyncCursor {
        SyncCursor {
            received_ms: self.received_ms,
            event_id: self.event_id.clone(),
        }
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
pub(crate) const RELEASE: &str = "DELETE FROM leases WHERE job = {1} AND holder = {2}";
pub(crate) const LEASES: &str =
    "SELECT job, holder, expires_ms - {now_ms} FROM leases WHERE expires_ms >= {now_ms} ORDER BY job";

/// Who holds a once-only job, and for how much longer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRow {
    pub job: String,
    pub holder: String,
    pub left_ms: i64,
}

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

#[derive(Debug, Clone, Serialize, Default)]
pub struct StoreStats {
    pub events_total: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// Ended object tracks per class.
    pub object_tracks_by_class: BTreeMap<String, u64>,
    pub evidence_images: u64,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::init(conn).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        Ok(Self::init(Connection::open_in_memory()?)?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, rusqlite::Error> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: every commit is synced to disk (the WAL fsynced) before it returns, so that
        // what the writer acknowledges survives a power cut (NORMAL syncs only at
        // checkpoints). One sync per transaction: the writer commits in batches.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "cache_size", -SQLITE_CACHE_KIB)?;
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
        // Pages read through the OS's mapping, not copied by read(2) into the cache.
        conn.pragma_update(None, "mmap_size", SQLITE_MMAP_BYTES)?;
        // Statistics from a sample, not a full scan: ANALYZE stays fast at any size.
        conn.pragma_update(None, "analysis_limit", 1000)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(&dialect(m, &SQLITE))?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        // Statistics for tables that lack them or changed much since (cheap when none did).
        conn.execute_batch("PRAGMA optimize=0x10002")?;
        let plate_gen = open_plate_gen_of(&conn)?.filter(|g| g.entries < PLATE_GEN_ENTRIES);
        Ok(SqliteStore {
            conn,
            export: false,
            since_optimize: 0,
            plate_gen,
            plate_gen_entries: PLATE_GEN_ENTRIES,
            plate_gens_per_merge: PLATE_GENS_PER_MERGE,
            known_plates: KnownPlates::default(),
        })
    }

    /// Another `synchronous` mode (`NORMAL`: commits not synced, the state before durable
    /// acknowledgements), for the store bench to measure what syncing costs.
    #[doc(hidden)]
    pub fn with_synchronous(self, mode: &str) -> Result<SqliteStore, StoreError> {
        self.conn.pragma_update(None, "synchronous", mode)?;
        Ok(self)
    }

    /// Smaller plate-index generations, so that tests see them fill and merge.
    #[doc(hidden)]
    pub fn with_plate_generations(mut self, entries: i64, per_merge: usize) -> SqliteStore {
        self.plate_gen_entries = entries;
        self.plate_gens_per_merge = per_merge;
        self
    }

    /// Merges the full plate-index generations into one when there are enough of them: a
    /// sort, then an append at the end of the index, in one transaction. Generations left
    /// empty by deletions go too.
    fn merge_plate_gens(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        let full: Vec<i64> = {
            let mut stmt = tx.prepare_cached(
                "SELECT gen FROM plate_gens WHERE level = 0 AND entries >= ?1 ORDER BY gen",
            )?;
            let rows = stmt.query_map([self.plate_gen_entries], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        if full.len() < self.plate_gens_per_merge {
            return Ok(());
        }
        let list = full
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let new: i64 = tx.query_row("SELECT max(gen) + 1 FROM plate_gens", [], |r| r.get(0))?;
        tx.execute_batch(&format!(
            "INSERT INTO plate_gens (gen, level, entries, lo_rid, hi_rid)
                 SELECT {new}, 1, sum(entries), min(lo_rid), max(hi_rid) FROM plate_gens
                 WHERE gen IN ({list});
             INSERT INTO plate_idx (gen, plate, frame_time_ms, rid)
                 SELECT {new}, plate, frame_time_ms, rid FROM plate_idx WHERE gen IN ({list})
                 ORDER BY plate, frame_time_ms, rid;
             DELETE FROM plate_idx WHERE gen IN ({list});
             DELETE FROM plate_gens WHERE gen IN ({list});
             DELETE FROM plate_gens WHERE level = 1
                 AND NOT EXISTS (SELECT 1 FROM plate_idx p WHERE p.gen = plate_gens.gen);"
        ))?;
        tx.commit()?;
        Ok(())
    }

    /// Stores a batch in one transaction; returns how many were new (the rest were
    /// duplicates, ignored).
    pub fn insert_batch(
        &mut self,
        events: &[Event],
        received_ms: i64,
    ) -> Result<usize, StoreError> {
        Ok(self
            .insert_new(events, received_ms)?
            .into_iter()
            .filter(|n| *n)
            .count())
    }

    /// Stores a batch in one transaction; per event, whether it was new (false: a
    /// duplicate, ignored).
    pub fn insert_new(
        &mut self,
        events: &[Event],
        received_ms: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let stored = self.store_batch(events, received_ms);
        if stored.is_err() {
            // The transaction rolled back: so does the open generation.
            let cap = self.plate_gen_entries;
            self.plate_gen = open_plate_gen_of(&self.conn)?.filter(|g| g.entries < cap);
        }
        stored
    }

    fn store_batch(&mut self, events: &[Event], received_ms: i64) -> Result<Vec<bool>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut new = 0;
        let mut flags = Vec::with_capacity(events.len());
        let mut filled = false;
        let plates;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO events (event_id, kind, severity, node_id, checkpoint_id, camera_id, frame_time_ms, received_ms, review, class, phase, json, plate, lane)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) ON CONFLICT (event_id) DO NOTHING",
            )?;
            let mut queue = tx.prepare_cached(
                "INSERT INTO export_queue (event_id, state, attempts, next_try_ms, enqueued_ms)
                 VALUES (?1, 'queued', 0, ?2, ?2) ON CONFLICT (event_id) DO NOTHING",
            )?;
            let mut plate_entry = tx.prepare_cached(
                "INSERT INTO plate_idx (gen, plate, frame_time_ms, rid) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for ev in events {
                let c = columns(ev);
                let inserted = stmt.execute(params![
                    ev.event_id,
                    c.kind,
                    json_str(&ev.severity),
                    ev.node_id.as_str(),
                    ev.checkpoint_id.as_str(),
                    ev.camera_id.as_str(),
                    ev.frame_time_ms,
                    received_ms,
                    json_str(&ev.review),
                    c.class,
                    c.phase,
                    String::from_utf8(ev.encode()).expect("JSON is UTF-8"),
                    c.plate,
                    ev.lane,
                ])?;
                if self.export && inserted == 1 && ev.kind() == EventKind::VehiclePass {
                    queue.execute(params![ev.event_id, received_ms])?;
                }
                if let (1, Some(plate)) = (inserted, c.plate) {
                    let rid = tx.last_insert_rowid();
                    let g = match &mut self.plate_gen {
                        Some(g) => g,
                        open => open.insert(open_plate_gen(&tx, rid)?),
                    };
                    plate_entry.execute(params![g.gen, plate, ev.frame_time_ms, rid])?;
                    g.entries += 1;
                    g.hi_rid = rid;
                    if g.entries >= self.plate_gen_entries {
                        save_plate_gen(&tx, g)?;
                        self.plate_gen = None;
                        filled = true;
                    }
                }
                new += inserted;
                flags.push(inserted == 1);
            }
            if let Some(g) = &self.plate_gen {
                save_plate_gen(&tx, g)?;
            }
            // The new plates of the batch under their keys (a plate seen before costs one
            // lookup).
            let mut own = tx.prepare_cached(&placeholders(PLATE_KEY_SELF, |n| format!("?{n}")))?;
            let mut key = tx.prepare_cached(&placeholders(PLATE_KEY, |n| format!("?{n}")))?;
            plates = self.known_plates.unknown(
                events
                    .iter()
                    .zip(&flags)
                    .filter(|(_, new)| **new)
                    .filter_map(|(ev, _)| columns(ev).plate),
            );
            for &p in &plates {
                if own.execute([p])? == 1 {
                    for k in deletion_keys(p) {
                        key.execute(params![k, p])?;
                    }
                }
            }
        }
        tx.commit()?;
        self.known_plates.learn(plates.into_iter());
        if filled {
            // The batch is stored whatever happens here; a merge that fails is tried again
            // when the next generation fills.
            let t = std::time::Instant::now();
            match self.merge_plate_gens() {
                Ok(()) => tracing::debug!(
                    ms = t.elapsed().as_millis() as u64,
                    "Plate index generations merged"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "Plate index generations not merged; trying again later")
                }
            }
        }
        self.since_optimize += new;
        if self.since_optimize >= OPTIMIZE_EVERY {
            self.since_optimize = 0;
            self.conn.execute_batch("PRAGMA optimize")?;
        }
        Ok(flags)
    }

    /// Stores an evidence image; false when it was already there.
    pub fn insert_evidence(
        &mut self,
        e: &EvidenceBlob,
        received_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            "INSERT INTO evidence (image_id, checkpoint_id, camera_id, sha256, content_type, bytes, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (image_id) DO NOTHING",
            params![e.image_id, e.checkpoint_id, e.camera_id, e.sha256, e.content_type, e.bytes, received_ms],
        )?;
        Ok(n == 1)
    }

    pub fn get_evidence(&self, image_id: &str) -> Result<Option<EvidenceBlob>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT image_id, checkpoint_id, camera_id, sha256, content_type, bytes FROM evidence WHERE image_id = ?1",
                [image_id],
                |r| Ok(EvidenceBlob { image_id: r.get(0)?, checkpoint_id: r.get(1)?, camera_id: r.get(2)?, sha256: r.get(3)?, content_type: r.get(4)?, bytes: r.get(5)? }),
            )
            .optional()?)
    }

    pub fn get(&self, event_id: &str) -> Result<Option<Event>, StoreError> {
        let json: Option<String> = self
            .conn
            .query_row(
                "SELECT json FROM events WHERE event_id = ?1",
                [event_id],
                |r| r.get(0),
            )
            .optional()?;
        json.map(|j| decode_row(event_id, &j)).transpose()
    }

    pub fn list(&self, f: &EventFilter) -> Result<Page, StoreError> {
        let near = near_for(
            f,
            |n| format!("?{n}"),
            |sql, keys| {
                let mut stmt = self.conn.prepare_cached(sql)?;
                let rows = stmt.query_map(params_from_iter(keys), |r| r.get::<_, String>(0))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            },
        )?;
        if near.as_ref().is_some_and(|n| n.is_empty()) {
            return Ok(Page {
                events: vec![],
                next_cursor: None,
            });
        }
        let near = near.unwrap_or_default();
        let (sql, args, limit) = list_sql(f, &near, PlateLookup::Generations, |n| format!("?{n}"))?;
        let args: Vec<rusqlite::types::Value> = args.into_iter().map(SqlArg::into_sqlite).collect();
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let rows: Vec<(String, String, i64)> = rows.collect::<Result<_, _>>()?;
        page_from_rows(rows, limit)
    }

    pub fn flow(&self, q: &FlowQuery) -> Result<Vec<FlowRow>, StoreError> {
        let (sql, args) = flow_sql(q, FlowGroup::CheckpointLane, |n| format!("?{n}"))?;
        let args: Vec<rusqlite::types::Value> = args.into_iter().map(SqlArg::into_sqlite).collect();
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |r| {
            Ok(FlowRow {
                bucket_start_ms: r.get(0)?,
                checkpoint_id: r.get(1)?,
                lane: r.get(2)?,
                vehicles: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn counts(&self, q: &FlowQuery) -> Result<Vec<KindCount>, StoreError> {
        let (sql, args) = flow_sql(q, FlowGroup::Kind, |n| format!("?{n}"))?;
        let args: Vec<rusqlite::types::Value> = args.into_iter().map(SqlArg::into_sqlite).collect();
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params_from_iter(args), |r| {
            Ok(KindCount {
                bucket_start_ms: r.get(0)?,
                kind: r.get(1)?,
                events: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn stats(&self, county: Option<&str>) -> Result<StoreStats, StoreError> {
        let (sql, args) = stats_sql(county, |n| format!("?{n}"))?;
        let args: Vec<rusqlite::types::Value> = args.into_iter().map(SqlArg::into_sqlite).collect();
        let mut grouped = [BTreeMap::new(), BTreeMap::new()];
        for (i, map) in grouped.iter_mut().enumerate() {
            let mut stmt = self.conn.prepare_cached(&sql[i])?;
            for row in stmt.query_map(params_from_iter(args.iter()), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })? {
                let (k, n) = row?;
                map.insert(k, n as u64);
            }
        }
        let images = self
            .conn
            .prepare_cached(&sql[2])?
            .query_row(params_from_iter(args.iter()), |r| r.get::<_, i64>(0))?;
        Ok(StoreStats::of(grouped, images))
    }
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

impl StoreStats {
    /// Stats from events per kind and tracks per class, and the evidence image count.
    pub(crate) fn of(grouped: [BTreeMap<String, u64>; 2], images: i64) -> StoreStats {
        let [by_kind, object_tracks_by_class] = grouped;
        StoreStats {
            events_total: by_kind.values().sum(),
            by_kind,
            object_tracks_by_class,
            evidence_images: images as u64,
        }
    }
}

/// Traffic flow: vehicle passes in `[from_ms, to_ms)` counted per bucket (an hour by
/// default), checkpoint and lane.
#[derive(Debug, Clone)]
pub struct FlowQuery {
    /// Any of these checkpoints (none: every checkpoint).
    pub checkpoints: Vec<String>,
    /// Only checkpoints of this county (six-digit region code).
    pub county: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
    pub bucket_ms: i64,
}

/// The most buckets one flow query may span (a month of hours).
pub const MAX_FLOW_BUCKETS: i64 = 31 * 24;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowRow {
    /// Start of the bucket, UTC ms (buckets are aligned to the Unix epoch, so hours are whole
    /// hours in UTC and in China Standard Time alike).
    pub bucket_start_ms: i64,
    pub checkpoint_id: String,
    /// Lane number; absent for passes outside every configured lane.
    pub lane: Option<i64>,
    pub vehicles: i64,
}

/// The flow query's SQL with placeholders made by `ph(n)`, and its arguments.
/// What a flow query counts: vehicle passes per checkpoint and lane (traffic flow), or
/// events of every kind per kind (the dashboard's events per hour).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FlowGroup {
    CheckpointLane,
    Kind,
}

/// Events of one kind in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindCount {
    pub bucket_start_ms: i64,
    pub kind: String,
    pub events: i64,
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

/// One storage interface, two backends: SQLite embedded (the default) and PostgreSQL
/// (production). Both pass the same conformance suite (tests/store_conformance.rs).
pub trait EventStore: Send {
    /// Stores a batch atomically; per event, whether it was new (duplicates by `event_id`
    /// are ignored).
    fn insert_new(&mut self, events: &[Event], received_ms: i64) -> Result<Vec<bool>, StoreError>;
    /// Stores a batch atomically; returns how many were new.
    fn insert_batch(&mut self, events: &[Event], received_ms: i64) -> Result<usize, StoreError> {
        Ok(self
            .insert_new(events, received_ms)?
            .into_iter()
            .filter(|n| *n)
            .count())
    }
    fn get(&mut self, event_id: &str) -> Result<Option<Event>, StoreError>;
    fn list(&mut self, f: &EventFilter) -> Result<Page, StoreError>;
    /// Vehicle passes counted per time bucket, checkpoint and lane (traffic flow).
    fn flow(&mut self, q: &FlowQuery) -> Result<Vec<FlowRow>, StoreError>;
    /// Events per bucket and kind (the checkpoints and county of `q` apply).
    fn counts(&mut self, q: &FlowQuery) -> Result<Vec<KindCount>, StoreError>;
    /// Events per kind, ended tracks per class and evidence images: of one county's
    /// checkpoints (six-digit region code), or of all.
    fn stats(&mut self, county: Option<&str>) -> Result<StoreStats, StoreError>;
    /// Stores an evidence image; false when it was already there.
    fn insert_evidence(&mut self, e: &EvidenceBlob, received_ms: i64) -> Result<bool, StoreError>;
    fn get_evidence(&mut self, image_id: &str) -> Result<Option<EvidenceBlob>, StoreError>;
    /// Deletes events of `kind` whose frame time is before `before_ms`, and their evidence
    /// images; returns (events, images) deleted.
    fn purge(&mut self, kind: EventKind, before_ms: i64) -> Result<(u64, u64), StoreError>;
    /// Records a reviewer's decision on an event awaiting review, and the audit line for it;
    /// returns the event as now stored.
    fn review(&mut self, event_id: &str, r: &Review, at_ms: i64) -> Result<Event, StoreError>;
    /// Appends a line to the audit trail (plate queries, reviews, exports).
    fn audit(&mut self, e: &AuditEntry) -> Result<(), StoreError>;
    /// An event's audit trail, oldest first.
    fn audit_of(&mut self, event_id: &str) -> Result<Vec<AuditEntry>, StoreError>;
    /// The latest `limit` lines of the whole audit log, newest first.
    fn audit_recent(&mut self, limit: usize) -> Result<Vec<AuditEntry>, StoreError>;
    /// From now on, every new vehicle pass this store stores is queued for export, in the
    /// same transaction.
    fn set_export_queue(&mut self, on: bool);
    /// Queued passes due at `now_ms`, oldest first.
    fn export_due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<ExportItem>, StoreError>;
    /// Records a try: done (the pass leaves the queue), or refused (tried again from
    /// `next_try_ms`, or kept as failed with the reason when giving up).
    fn export_result(
        &mut self,
        event_id: &str,
        outcome: ExportOutcome,
        next_try_ms: i64,
    ) -> Result<(), StoreError>;
    fn export_stats(&mut self) -> Result<ExportStats, StoreError>;
    /// The nodes' events stored after `after` and no later than `until_ms` (store time), in
    /// store order, at most `limit`: what a county offers the city.
    fn sync_refs(
        &mut self,
        after: &SyncCursor,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<SyncRef>, StoreError>;
    /// Which of `ids` are stored as events (`evidence` false) or evidence images (true).
    fn present(
        &mut self,
        ids: &[String],
        evidence: bool,
    ) -> Result<std::collections::HashSet<String>, StoreError>;
    /// How far this (city) store has pulled `county`'s events.
    fn sync_mark(&mut self, county: &str) -> Result<Option<SyncCursor>, StoreError>;
    fn set_sync_mark(
        &mut self,
        county: &str,
        mark: &SyncCursor,
        at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Takes or renews the lease on once-only `job` for `holder` for `ttl_ms` by the
    /// database's clock; true while `holder` has it.
    fn lease(&mut self, job: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError>;
    /// Gives a lease up (a clean stop: another aggregator takes over at once).
    fn release(&mut self, job: &str, holder: &str) -> Result<(), StoreError>;
    /// The leases held now.
    fn leases(&mut self) -> Result<Vec<LeaseRow>, StoreError>;
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
    for n in 1..=4 {
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

impl EventStore for SqliteStore {
    fn review(&mut self, event_id: &str, r: &Review, at_ms: i64) -> Result<Event, StoreError> {
        let tx = self.conn.transaction()?;
        let json: Option<String> = tx
            .query_row(
                "SELECT json FROM events WHERE event_id = ?1",
                [event_id],
                |row| row.get(0),
            )
            .optional()?;
        let mut ev = decode_row(
            event_id,
            &json.ok_or_else(|| StoreError::NotFound(event_id.to_string()))?,
        )?;
        check_review(&ev, r)?;
        ev.review = r.decision;
        tx.execute(
            "UPDATE events SET review = ?2, json = ?3 WHERE event_id = ?1",
            params![
                event_id,
                json_str(&ev.review),
                String::from_utf8(ev.encode()).expect("JSON is UTF-8")
            ],
        )?;
        tx.execute(
            "INSERT INTO audit (event_id, action, actor, detail, at_ms) VALUES (?1, 'review', ?2, ?3, ?4)",
            params![event_id, r.reviewer, format!("{}: {}", json_str(&r.decision), r.reason), at_ms],
        )?;
        tx.commit()?;
        Ok(ev)
    }
    fn audit(&mut self, e: &AuditEntry) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO audit (event_id, action, actor, detail, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![e.event_id, e.action, e.actor, e.detail, e.at_ms],
        )?;
        Ok(())
    }
    fn audit_recent(&mut self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT event_id, action, actor, detail, at_ms FROM audit ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], audit_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
    fn audit_of(&mut self, event_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self.conn.prepare_cached("SELECT event_id, action, actor, detail, at_ms FROM audit WHERE event_id = ?1 ORDER BY id")?;
        let rows = stmt.query_map([event_id], audit_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
    fn insert_new(&mut self, events: &[Event], received_ms: i64) -> Result<Vec<bool>, StoreError> {
        SqliteStore::insert_new(self, events, received_ms)
    }
    fn get(&mut self, event_id: &str) -> Result<Option<Event>, StoreError> {
        SqliteStore::get(self, event_id)
    }
    fn list(&mut self, f: &EventFilter) -> Result<Page, StoreError> {
        SqliteStore::list(self, f)
    }
    fn flow(&mut self, q: &FlowQuery) -> Result<Vec<FlowRow>, StoreError> {
        SqliteStore::flow(self, q)
    }
    fn counts(&mut self, q: &FlowQuery) -> Result<Vec<KindCount>, StoreError> {
        SqliteStore::counts(self, q)
    }
    fn stats(&mut self, county: Option<&str>) -> Result<StoreStats, StoreError> {
        SqliteStore::stats(self, county)
    }
    fn insert_evidence(&mut self, e: &EvidenceBlob, received_ms: i64) -> Result<bool, StoreError> {
        SqliteStore::insert_evidence(self, e, received_ms)
    }
    fn get_evidence(&mut self, image_id: &str) -> Result<Option<EvidenceBlob>, StoreError> {
        SqliteStore::get_evidence(self, image_id)
    }
    fn set_export_queue(&mut self, on: bool) {
        self.export = on;
    }

    fn export_due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<ExportItem>, StoreError> {
        let sql = placeholders(EXPORT_DUE, |n| format!("?{n}"));
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![now_ms, limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, attempts, json) = row?;
            out.push(ExportItem {
                event: decode_row(&id, &json)?,
                attempts: attempts as u32,
            });
        }
        Ok(out)
    }

    fn export_result(
        &mut self,
        event_id: &str,
        outcome: ExportOutcome,
        next_try_ms: i64,
    ) -> Result<(), StoreError> {
        match outcome {
            Ok(()) => {
                let sql = placeholders(EXPORT_DONE, |n| format!("?{n}"));
                self.conn.execute(&sql, [event_id])?;
            }
            Err((reason, give_up)) => {
                let sql = placeholders(EXPORT_REFUSED, |n| format!("?{n}"));
                let state = if give_up { "failed" } else { "queued" };
                self.conn
                    .execute(&sql, params![event_id, reason, next_try_ms, state])?;
            }
        }
        Ok(())
    }

    fn export_stats(&mut self) -> Result<ExportStats, StoreError> {
        let mut stmt = self.conn.prepare_cached(EXPORT_STATS)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        Ok(export_stats_from(rows.collect::<Result<_, _>>()?))
    }

    fn sync_refs(
        &mut self,
        after: &SyncCursor,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<SyncRef>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&placeholders(SYNC_REFS, |n| format!("?{n}")))?;
        let rows = stmt.query_map(
            params![after.received_ms, after.event_id, until_ms, limit as i64],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            },
        )?;
        rows.map(|r| {
            let (id, at, json) = r?;
            sync_ref(id, at, &json)
        })
        .collect()
    }

    fn present(
        &mut self,
        ids: &[String],
        evidence: bool,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let mut found = std::collections::HashSet::new();
        let (table, col) = if evidence {
            ("evidence", "image_id")
        } else {
            ("events", "event_id")
        };
        for chunk in ids.chunks(500) {
            let mut stmt =
                self.conn
                    .prepare_cached(&present_sql(table, col, chunk.len(), |n| format!("?{n}")))?;
            let rows = stmt.query_map(params_from_iter(chunk), |r| r.get::<_, String>(0))?;
            for r in rows {
                found.insert(r?);
            }
        }
        Ok(found)
    }

    fn sync_mark(&mut self, county: &str) -> Result<Option<SyncCursor>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &placeholders(SYNC_MARK, |n| format!("?{n}")),
                [county],
                |r| {
                    Ok(SyncCursor {
                        received_ms: r.get(0)?,
                        event_id: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    fn set_sync_mark(
        &mut self,
        county: &str,
        mark: &SyncCursor,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            &placeholders(SET_SYNC_MARK, |n| format!("?{n}")),
            params![county, mark.received_ms, mark.event_id, at_ms],
        )?;
        Ok(())
    }

    fn lease(&mut self, job: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let sql = placeholders(&dialect(LEASE, &SQLITE), |n| format!("?{n}"));
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(params![job, holder, ttl_ms])?;
        Ok(rows.next()?.is_some())
    }

    fn release(&mut self, job: &str, holder: &str) -> Result<(), StoreError> {
        self.conn.execute(
            &placeholders(RELEASE, |n| format!("?{n}")),
            params![job, holder],
        )?;
        Ok(())
    }

    fn leases(&mut self) -> Result<Vec<LeaseRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&dialect(LEASES, &SQLITE))?;
        let rows = stmt.query_map([], |r| {
            Ok(LeaseRow {
                job: r.get(0)?,
                holder: r.get(1)?,
                left_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn purge(&mut self, kind: EventKind, before_ms: i64) -> Result<(u64, u64), StoreError> {
        let tx = self.conn.transaction()?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM events WHERE kind = ?1 AND frame_time_ms < ?2 RETURNING event_id",
            )?;
            let rows =
                stmt.query_map(params![kind.as_str(), before_ms], |r| r.get::<_, String>(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut images = 0;
        {
            // Image ids are `<event id>-<role>`.
            let mut stmt =
                tx.prepare_cached("DELETE FROM evidence WHERE image_id >= ?1 AND image_id < ?2")?;
            let mut forget =
                tx.prepare_cached(&placeholders(EXPORT_FORGET, |n| format!("?{n}")))?;
            for id in &ids {
                images += stmt.execute(params![format!("{id}-"), format!("{id}.")])? as u64;
                forget.execute([id])?;
            }
        }
        tx.commit()?;
        Ok((ids.len() as u64, images))
    }
}

/// The plate-index generation still taking entries, as stored.
fn open_plate_gen_of(conn: &Connection) -> Result<Option<PlateGen>, rusqlite::Error> {
    conn.query_row(
        "SELECT gen, entries, hi_rid FROM plate_gens WHERE level = 0 ORDER BY gen DESC LIMIT 1",
        [],
        |r| {
            Ok(PlateGen {
                gen: r.get(0)?,
                entries: r.get(1)?,
                hi_rid: r.get(2)?,
            })
        },
    )
    .optional()
}

/// Opens a new plate-index generation, after every other (SQLite).
fn open_plate_gen(tx: &rusqlite::Transaction, rid: i64) -> Result<PlateGen, rusqlite::Error> {
    let gen: i64 = tx.query_row(
        "SELECT coalesce(max(gen), 0) + 1 FROM plate_gens",
        [],
        |r| r.get(0),
    )?;
    tx.execute(
        "INSERT INTO plate_gens (gen, level, entries, lo_rid, hi_rid) VALUES (?1, 0, 0, ?2, ?2)",
        params![gen, rid],
    )?;
    Ok(PlateGen {
        gen,
        entries: 0,
        hi_rid: rid,
    })
}

fn save_plate_gen(tx: &rusqlite::Transaction, g: &PlateGen) -> Result<(), rusqlite::Error> {
    tx.prepare_cached("UPDATE plate_gens SET entries = ?2, hi_rid = ?3 WHERE gen = ?1")?
        .execute(params![g.gen, g.entries, g.hi_rid])?;
    Ok(())
}

/// Opens the backend the config names.
pub fn open(cfg: &crate::config::StorageConfig) -> Result<Box<dyn EventStore>, StoreError> {
    match cfg.backend {
        crate::config::Backend::Sqlite => Ok(Box::new(SqliteStore::open(&cfg.sqlite_path)?)),
        crate::config::Backend::Postgres => Ok(Box::new(crate::pg::PgStore::connect(
            &cfg.postgres_url,
            &cfg.postgres_schema,
        )?)),
    }
}

/// A bind value of a generated query.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlArg {
    Int(i64),
    Text(String),
}

impl SqlArg {
    fn into_sqlite(self) -> rusqlite::types::Value {
        match self {
            SqlArg::Int(v) => v.into(),
            SqlArg::Text(v) => v.into(),
        }
    }

    pub(crate) fn into_pg(self) -> Box<dyn postgres::types::ToSql + Sync> {
        match self {
            SqlArg::Int(v) => Box::new(v),
            SqlArg::Text(v) => Box::new(v),
        }
    }
}

/// How a backend finds events by plate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum PlateLookup {
    /// An index on `events.plate` (PostgreSQL).
    Column,
    /// The generations of `plate_idx` (SQLite).
    Generations,
}

/// The event-list query for a filter, with placeholders made by `ph(n)` (`?n` for SQLite,
/// `$n` for PostgreSQL); returns the SQL, its arguments and the page size.
fn audit_row(r: &rusqlite::Row) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        event_id: r.get(0)?,
        action: r.get(1)?,
        actor: r.get(2)?,
        detail: r.get(3)?,
        at_ms: r.get(4)?,
    })
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

/// Longest plate a query takes, in characters (GA 36 plates have 7 or 8; room for
/// wildcards and separators). A search within one edit grows with the plate's length.
pub const MAX_QUERY_PLATE_CHARS: usize = protocol::event::MAX_PLATE_CHARS;
/// Most plates, or checkpoints, one query lists.
pub const MAX_QUERY_LIST: usize = 1000;
/// Longest camera id or class a query takes.
pub const MAX_QUERY_TEXT_CHARS: usize = 64;
/// Most events a page holds (a larger `limit` gives this many).
pub const MAX_PAGE: usize = 1000;

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

/// `near`: the stored plates within one edit of `f.plate` (from `plate_keys`), when
/// `f.plate_near`; never empty (an empty set has no page to ask for).
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
        plate_conds.push(push_in("plate", near.to_vec()));
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
    let sql = format!(
        "SELECT event_id, json, frame_time_ms FROM {from} WHERE {sql} ORDER BY frame_time_ms, event_id LIMIT {}",
        limit + 1
    );
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use protocol::*;

    /// A watch-list hit (a plate anomaly: an alert, reviewed) at time `t`.
    pub fn watch_list_hit(t: i64) -> Event {
        let mut ev = event(t, "32050500051320000001", "person", TrackPhase::End);
        ev.body = EventBody::PlateAnomaly(PlateAnomaly {
            anomaly: AnomalyType::WatchList,
            plate: "苏E12345".into(),
            passes: vec![],
            distance_km: None,
            interval_secs: None,
            implied_speed_kmh: None,
            detail: None,
        });
        ev
    }

    pub fn event(t: i64, camera: &str, class: &str, phase: TrackPhase) -> Event {
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
            lane: None,
            frame_time_ms: t,
            detections: vec![],
            rule: None,
            evidence: vec![],
            review: ReviewState::NotRequired,
            body: EventBody::ObjectTrack(ObjectTrack {
                phase,
                track_id: 1,
                class: class.into(),
                mean_score: 0.5,
                max_score: 0.5,
                first_box: b,
                last_box: b,
                first_time_ms: t,
                last_time_ms: t,
                duration_ms: 0,
                hits: 1,
                path: vec![],
                displacement_px: 0.0,
            }),
        }
    }

    const CAM1: &str = "32050500051320000001";
    const CAM2: &str = "32050500051320000002";

    #[test]
    fn idempotent_insert_filters_and_cursor_pagination() {
        let mut s = SqliteStore::open_in_memory().unwrap();
        let t0 = 1_790_000_000_000;
        let evs: Vec<Event> = (0..25)
            .map(|i| {
                event(
                    t0 + i * 1000,
                    if i % 2 == 0 { CAM1 } else { CAM2 },
                    if i % 3 == 0 { "car" } else { "person" },
                    TrackPhase::End,
                )
            })
            .collect();
        assert_eq!(s.insert_batch(&evs, 0).unwrap(), 25);
        assert_eq!(
            s.insert_batch(&evs[..10], 0).unwrap(),
            0,
            "duplicates absorbed"
        );
        assert_eq!(s.get(&evs[3].event_id).unwrap().unwrap(), evs[3]);
        assert!(s.get("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap().is_none());

        let mut f = EventFilter {
            camera_id: Some(CAM1.into()),
            limit: 5,
            ..Default::default()
        };
        let mut seen = Vec::new();
        loop {
            let p = s.list(&f).unwrap();
            seen.extend(p.events.iter().map(|e| e.frame_time_ms));
            match p.next_cursor {
                Some(c) => f.cursor = Some(c),
                None => break,
            }
        }
        let want: Vec<i64> = (0..25)
            .filter(|i| i % 2 == 0)
            .map(|i| t0 + i * 1000)
            .collect();
        assert_eq!(seen, want);

        let p = s
            .list(&EventFilter {
                class: Some("car".into()),
                from_ms: Some(t0 + 3000),
                to_ms: Some(t0 + 12_000),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            p.events.iter().map(|e| e.frame_time_ms).collect::<Vec<_>>(),
            vec![t0 + 3000, t0 + 6000, t0 + 9000]
        );
        let st = s.stats(None).unwrap();
        assert_eq!(st.events_total, 25);
        assert_eq!(st.object_tracks_by_class["car"], 9);
        assert!(matches!(
            s.list(&EventFilter {
                cursor: Some("x".into()),
                limit: 1,
                ..Default::default()
            }),
            Err(StoreError::Cursor(_))
        ));
    }

    /// A car's pass with `plate` read, no colour or class, for tests of this crate.
    pub fn pass_body(track_id: u64, plate: &str) -> EventBody {
        EventBody::VehiclePass(VehiclePass {
            track_id,
            plate: Some(plate.into()),
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
        })
    }

    pub(crate) fn pass(i: i64, plate: &str) -> Event {
        let mut e = event(1_790_000_000_000 + i * 1000, CAM1, "car", TrackPhase::End);
        e.body = pass_body(i as u64, plate);
        e
    }

    fn ids(s: &SqliteStore, f: EventFilter) -> Vec<String> {
        let page = s.list(&EventFilter { limit: 1000, ..f }).unwrap();
        page.events.into_iter().map(|e| e.event_id).collect()
    }

    /// The plate index in generations: entries fill small generations, full ones merge, a
    /// reopened store goes on with the open one, deleted events leave it, and every kind of
    /// plate query finds exactly the passes a scan finds.
    #[test]
    fn plate_generations_fill_merge_reopen_and_forget() {
        let dir = std::env::temp_dir().join(format!("agg-gens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("g.db");
        let _ = std::fs::remove_file(&p);
        let plates = ["苏E12345", "苏E12346", "苏E1234", "苏A99999", "浙B00001"];
        let passes: Vec<Event> = (0..61).map(|i| pass(i, plates[i as usize % 5])).collect();
        let open = || SqliteStore::open(&p).unwrap().with_plate_generations(4, 3);
        let mut s = open();
        for chunk in passes[..40].chunks(3) {
            s.insert_batch(chunk, 0).unwrap();
        }
        drop(s);
        let mut s = open();
        assert_eq!(
            s.insert_batch(&passes[..40], 0).unwrap(),
            0,
            "duplicates add no entries"
        );
        for chunk in passes[40..].chunks(7) {
            s.insert_batch(chunk, 0).unwrap();
        }
        let gens = |s: &SqliteStore| -> Vec<(i64, i64, i64)> {
            let mut st = s
                .conn
                .prepare("SELECT gen, level, entries FROM plate_gens ORDER BY gen")
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let g = gens(&s);
        assert!(
            g.iter().filter(|g| g.1 == 1).count() >= 3,
            "merged generations: {g:?}"
        );
        assert!(
            g.iter().filter(|g| g.1 == 0).count() < 4,
            "full ones wait for a merge: {g:?}"
        );
        assert_eq!(g.iter().map(|g| g.2).sum::<i64>(), 61, "{g:?}");
        let entries = |s: &SqliteStore| -> i64 {
            s.conn
                .query_row("SELECT count(*) FROM plate_idx", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(entries(&s), 61);
        let expect = |s: &SqliteStore, keep: &dyn Fn(&str) -> bool| -> Vec<String> {
            let all = ids(s, EventFilter::default());
            let mut v: Vec<String> = passes
                .iter()
                .filter(|e| all.contains(&e.event_id))
                .filter(|e| match &e.body {
                    EventBody::VehiclePass(v) => keep(v.plate.as_deref().unwrap()),
                    _ => false,
                })
                .map(|e| e.event_id.clone())
                .collect();
            v.sort();
            v
        };
        let check = |s: &SqliteStore| {
            for plate in plates {
                let exact = ids(
                    s,
                    EventFilter {
                        plate: Some(plate.into()),
                        ..Default::default()
                    },
                );
                assert_eq!(exact, expect(s, &|p| p == plate), "{plate}");
            }
            let wild = ids(
                s,
                EventFilter {
                    plate: Some("苏E1234*".into()),
                    ..Default::default()
                },
            );
            assert_eq!(wild, expect(s, &|p| p.starts_with("苏E1234")));
            let one = ids(
                s,
                EventFilter {
                    plate: Some("苏E1234?".into()),
                    ..Default::default()
                },
            );
            assert_eq!(
                one,
                expect(s, &|p| p.starts_with("苏E1234") && p.chars().count() == 7)
            );
            let any = ids(
                s,
                EventFilter {
                    plate: Some("*9999*".into()),
                    ..Default::default()
                },
            );
            assert_eq!(any, expect(s, &|p| p.contains("9999")));
            let near = ids(
                s,
                EventFilter {
                    plate: Some("苏E12345".into()),
                    plate_near: true,
                    ..Default::default()
                },
            );
            assert_eq!(near, expect(s, &|p| p.starts_with("苏E1234")));
            let list = ids(
                s,
                EventFilter {
                    plates: vec!["苏A99999".into(), "浙B00001".into()],
                    plate: Some("浙*".into()),
                    ..Default::default()
                },
            );
            assert_eq!(list, expect(s, &|p| p == "浙B00001"));
            // A time window with the plate: the plate's entries lead, the window filters.
            let t = passes[20].frame_time_ms;
            let win = ids(
                s,
                EventFilter {
                    plate: Some("苏E12345".into()),
                    from_ms: Some(t),
                    to_ms: Some(t + 20_000),
                    ..Default::default()
                },
            );
            let in_window: Vec<String> = [20, 25, 30, 35]
                .iter()
                .map(|&i| passes[i].event_id.clone())
                .filter(|id| expect(s, &|p| p == "苏E12345").contains(id))
                .collect();
            assert_eq!(win, in_window);
        };
        check(&s);
        // Retention: the first 30 passes go, and their entries with them.
        let before = passes[30].frame_time_ms;
        assert_eq!(s.purge(EventKind::VehiclePass, before).unwrap().0, 30);
        assert_eq!(entries(&s), 31);
        check(&s);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A database from before the plate generations: its passes land in generation 1.
    #[test]
    fn older_database_moves_its_plates_into_the_generations() {
        let dir = std::env::temp_dir().join(format!("agg-mig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("old.db");
        let _ = std::fs::remove_file(&p);
        let e = pass(1, "苏E12345");
        {
            let conn = Connection::open(&p).unwrap();
            for m in &MIGRATIONS[..6] {
                conn.execute_batch(&dialect(m, &SQLITE)).unwrap();
            }
            conn.pragma_update(None, "user_version", 6).unwrap();
            conn.execute(
                "INSERT INTO events (event_id, kind, severity, node_id, checkpoint_id, camera_id, frame_time_ms, received_ms, review, class, phase, json, plate, lane)
                 VALUES (?1, 'vehicle_pass', 'info', ?2, ?3, ?4, ?5, 0, 'not_required', 'car', NULL, ?6, '苏E12345', 1)",
                params![
                    e.event_id,
                    e.node_id.as_str(),
                    e.checkpoint_id.as_str(),
                    e.camera_id.as_str(),
                    e.frame_time_ms,
                    String::from_utf8(e.encode()).unwrap()
                ],
            )
            .unwrap();
        }
        let mut s = SqliteStore::open(&p).unwrap();
        let by_plate = |s: &SqliteStore| {
            ids(
                s,
                EventFilter {
                    plate: Some("苏E12345".into()),
                    ..Default::default()
                },
            )
        };
        assert_eq!(by_plate(&s), vec![e.event_id.clone()]);
        let later = pass(2, "苏E12345");
        s.insert_batch(std::slice::from_ref(&later), 0).unwrap();
        assert_eq!(
            by_plate(&s),
            vec![e.event_id.clone(), later.event_id.clone()]
        );
        // Migration 11 put the plates stored before it under their keys: a search within
        // one edit finds them (a character replaced, dropped, added).
        for near in ["苏E12346", "苏E1234", "苏E123456", "苏E12345"] {
            let found = ids(
                &s,
                EventFilter {
                    plate: Some(near.into()),
                    plate_near: true,
                    ..Default::default()
                },
            );
            assert_eq!(
                found,
                vec![e.event_id.clone(), later.event_id.clone()],
                "{near}"
            );
        }
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn deletion_keys_meet_for_plates_within_one_edit() {
        let keys = |p: &str| {
            let mut k = deletion_keys(p);
            k.push(p.to_string());
            k
        };
        let share = |a: &str, b: &str| keys(a).iter().any(|k| keys(b).contains(k));
        for (a, b) in [
            ("苏E12345", "苏E12345"),
            ("苏E12345", "苏E12845"),
            ("苏E12345", "皖E12345"),
            ("苏E12345", "苏E1234"),
            ("苏E12345", "苏E123455"),
            ("苏E12345", "苏EX12345"),
        ] {
            assert!(share(a, b) && share(b, a), "{a} {b}");
            assert!(protocol::plate::edit_distance(a, b) <= 1);
        }
        assert_eq!(
            deletion_keys("AAB"),
            vec!["AA".to_string(), "AB".to_string()]
        );
        assert!(deletion_keys("A").is_empty());
        // A candidate two edits away is found by key but dropped by the check.
        assert!(share("苏E12345", "苏E21345"));
        assert!(
            near_plates("苏E12345", vec!["苏E21345".into(), "苏E12345".into()])
                == vec!["苏E12345".to_string()]
        );
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = std::env::temp_dir().join(format!("agg-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.db");
        let _ = std::fs::remove_file(&p);
        let e = event(1_790_000_000_000, CAM1, "person", TrackPhase::Start);
        SqliteStore::open(&p)
            .unwrap()
            .insert_batch(std::slice::from_ref(&e), 0)
            .unwrap();
        let s = SqliteStore::open(&p).unwrap();
        assert_eq!(s.get(&e.event_id).unwrap().unwrap(), e);
        let err = SqliteStore::open(Path::new("/nonexistent/dir/a.db"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/dir/a.db"), "{err}");
        std::fs::remove_dir_all(dir).ok();
    }
}
