//! The event store: one interface ([`EventStore`]) and its types here, the SQL both backends
//! share in [`sql`] (migrations, query builders, statements with `{n}` placeholders), and the
//! backends apart: [`sqlite`] (embedded, the default) and [`pg`] (PostgreSQL, production).
//! Neither backend imports the other; a query is written once in [`sql`] where the dialects
//! allow, and each backend only binds and runs it.
//!
//! Input: validated events. Output: rows, and pages of events for queries. Synchronous;
//! callers run it off the async runtime. Schema changes are numbered migrations
//! ([`sql::MIGRATIONS`]), tracked in `PRAGMA user_version` (SQLite) or `schema_migrations`
//! (PostgreSQL).

use std::collections::BTreeMap;

use protocol::{Event, EventKind};
use serde::Serialize;

pub mod pg;
pub mod sql;
pub mod sqlite;

pub use sql::SqlArg;
pub(crate) use sql::*;
#[cfg(test)]
pub(crate) use sqlite::tests;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database '{path}': {message}; check storage.sqlite_path and that its folder is writable")]
    Open { path: String, message: String },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The database was written by a newer release: its schema is past every migration
    /// this build knows, and running on it could mislay what the newer one keeps.
    #[error("the database '{at}' has schema version {found}, newer than this aggregator's {known}: a newer release wrote it; run that release again, or restore the backup taken before the upgrade (README: Upgrades and rollback)")]
    Version {
        at: String,
        found: i64,
        known: usize,
    },
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

/// A stored pass of a plate, as correlation compares it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sighting {
    pub plate: String,
    pub event_id: String,
    pub checkpoint_id: String,
    pub frame_time_ms: i64,
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

/// Who holds a once-only job, and for how much longer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaseRow {
    pub job: String,
    pub holder: String,
    pub left_ms: i64,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct StoreStats {
    pub events_total: u64,
    pub by_kind: BTreeMap<String, u64>,
    /// Ended object tracks per class.
    pub object_tracks_by_class: BTreeMap<String, u64>,
    pub evidence_images: u64,
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

/// Events of one kind in one bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindCount {
    pub bucket_start_ms: i64,
    pub kind: String,
    pub events: i64,
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
    /// The passes of any of `plates` with frame time in `[from_ms, to_ms)`: id, checkpoint,
    /// time and plate only (what correlation compares; it reads a whole event only for a
    /// pair it flags). By default a plate search each (SQLite's plate index answers one plate
    /// at a time); PostgreSQL answers the batch's plates in one statement from its plate
    /// index. A pass whose plate was read unsure may be among them.
    fn plate_sightings(
        &mut self,
        plates: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Sighting>, StoreError> {
        let mut out = Vec::new();
        for plate in plates {
            let page = self.list(&EventFilter {
                kind: Some(protocol::EventKind::VehiclePass),
                plate: Some(plate.clone()),
                from_ms: Some(from_ms),
                to_ms: Some(to_ms),
                limit: MAX_PAGE,
                ..Default::default()
            })?;
            out.extend(page.events.into_iter().map(|e| Sighting {
                plate: plate.clone(),
                event_id: e.event_id,
                checkpoint_id: e.checkpoint_id.to_string(),
                frame_time_ms: e.frame_time_ms,
            }));
        }
        Ok(out)
    }
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
    /// Upkeep off the ingest path, run by the retention job before each purge: PostgreSQL
    /// vacuums the events' partitions (only the pages changed since are read), so that a
    /// plate search is answered from its index alone, without visiting each row for its
    /// visibility (autovacuum does it too where it runs; this does not count on it). SQLite:
    /// nothing.
    fn maintain(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
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
    /// Keeps `body`, version `version`, as `scope`'s watch list when newer than the one
    /// kept; true when kept.
    fn watchlist_put(
        &mut self,
        scope: &str,
        version: u64,
        body: &[u8],
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// The watch list kept for `scope`: version and body.
    fn watchlist_get(&mut self, scope: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    /// Keeps accident records (one transaction; a record whose id is kept already is
    /// skipped); how many were new.
    fn accidents_put(
        &mut self,
        rows: &[crate::accidents::Accident],
        at_ms: i64,
    ) -> Result<usize, StoreError>;
    /// The accident records of `from_ms..to_ms`, in time order.
    fn accidents_in(
        &mut self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<crate::accidents::Accident>, StoreError>;
}

/// The schema version of the database the config names, read without changing it (no
/// migration, no file or schema created; SQLite's read from the file's header by
/// [`protocol::sqlite_file::user_version`]): `(found, known)`, or
/// [`StoreError::Version`] when a newer release wrote it. For `aggregator check --state`,
/// which an installer runs before it rolls back.
pub fn check_version(cfg: &crate::config::StorageConfig) -> Result<(i64, usize), StoreError> {
    let known = sql::MIGRATIONS.len();
    let found = match cfg.backend {
        crate::config::Backend::Sqlite => {
            let path = &cfg.sqlite_path;
            let open_err = |message: String| StoreError::Open {
                path: path.display().to_string(),
                message,
            };
            match protocol::sqlite_file::user_version(path) {
                Ok(v) => v,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
                Err(e) => return Err(open_err(e.to_string())),
            }
        }
        crate::config::Backend::Postgres => {
            pg::PgStore::schema_version(&cfg.postgres_url, &cfg.postgres_schema)?
        }
    };
    if found > known as i64 {
        let at = match cfg.backend {
            crate::config::Backend::Sqlite => cfg.sqlite_path.display().to_string(),
            crate::config::Backend::Postgres => {
                format!("PostgreSQL schema {}", cfg.postgres_schema)
            }
        };
        return Err(StoreError::Version { at, found, known });
    }
    Ok((found, known))
}

/// Opens the backend the config names.
pub fn open(cfg: &crate::config::StorageConfig) -> Result<Box<dyn EventStore>, StoreError> {
    match cfg.backend {
        crate::config::Backend::Sqlite => Ok(Box::new(SqliteStore::open(&cfg.sqlite_path)?)),
        crate::config::Backend::Postgres => Ok(Box::new(crate::store::pg::PgStore::connect(
            &cfg.postgres_url,
            &cfg.postgres_schema,
        )?)),
    }
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
