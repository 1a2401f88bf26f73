//! The embedded SQLite backend of [`EventStore`]: a file in WAL mode, every commit synced.

use std::collections::BTreeMap;
use std::path::Path;

use protocol::{Event, EventKind};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use super::*;

/// Entries of the newest plate-index generation before a new one begins (SQLite).
const PLATE_GEN_ENTRIES: i64 = 131_072;
/// Full generations merged into one (SQLite).
const PLATE_GENS_PER_MERGE: usize = 8;

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

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        if found > MIGRATIONS.len() as i64 {
            return Err(StoreError::Version {
                at: path.display().to_string(),
                found,
                known: MIGRATIONS.len(),
            });
        }
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
        let near = near.unwrap_or_default();
        let (sql, args, limit) = list_sql(f, &near, PlateLookup::Generations, |n| format!("?{n}"))?;
        let args: Vec<rusqlite::types::Value> = args.into_iter().map(sqlite_value).collect();
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
        let args: Vec<rusqlite::types::Value> = args.into_iter().map(sqlite_value).collect();
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
        let args: Vec<rusqlite::types::Value> = args.into_iter().map(sqlite_value).collect();
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
        let args: Vec<rusqlite::types::Value> = args.into_iter().map(sqlite_value).collect();
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
            "INSERT INTO audit (event_id, action, actor, detail, at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![event_id, super::sql::review_action(r), r.reviewer, format!("{}: {}", json_str(&r.decision), r.reason), at_ms],
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

    fn watchlist_put(
        &mut self,
        scope: &str,
        version: u64,
        body: &[u8],
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self.conn.execute(
            &placeholders(WATCHLIST_PUT, |n| format!("?{n}")),
            params![scope, version as i64, body, at_ms],
        )?;
        Ok(n == 1)
    }

    fn accidents_put(
        &mut self,
        rows: &[crate::accidents::Accident],
        at_ms: i64,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut new = 0;
        {
            let mut stmt = tx.prepare_cached(&placeholders(ACCIDENT_PUT, |n| format!("?{n}")))?;
            for a in rows {
                new += stmt.execute(params![
                    a.id, a.time_ms, a.place, a.severity, a.kind, a.lat, a.lon, at_ms
                ])?;
            }
        }
        tx.commit()?;
        Ok(new)
    }

    fn accidents_in(
        &mut self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<crate::accidents::Accident>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&placeholders(ACCIDENTS_IN, |n| format!("?{n}")))?;
        let rows = stmt.query_map(params![from_ms, to_ms], |r| {
            Ok(crate::accidents::Accident {
                id: r.get(0)?,
                time_ms: r.get(1)?,
                place: r.get(2)?,
                severity: r.get(3)?,
                kind: r.get(4)?,
                lat: r.get(5)?,
                lon: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn watchlist_get(&mut self, scope: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(&placeholders(WATCHLIST_GET, |n| format!("?{n}")))?;
        let mut rows = stmt.query(params![scope])?;
        Ok(match rows.next()? {
            Some(r) => Some((r.get::<_, i64>(0)? as u64, r.get(1)?)),
            None => None,
        })
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

/// A bind value as SQLite takes it.
fn sqlite_value(a: SqlArg) -> rusqlite::types::Value {
    match a {
        SqlArg::Int(v) => v.into(),
        SqlArg::Text(v) => v.into(),
    }
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
            clock: None,
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
    fn a_database_of_a_newer_release_is_refused_untouched() {
        let path = std::env::temp_dir().join(format!("store-version-{}.db", ulid::Ulid::new()));
        // No file yet: version 0, and the check makes none.
        let cfg = crate::config::StorageConfig {
            sqlite_path: path.clone(),
            ..Default::default()
        };
        assert_eq!(
            crate::store::check_version(&cfg).unwrap(),
            (0, MIGRATIONS.len())
        );
        assert!(!path.exists());
        drop(SqliteStore::open(&path).unwrap());
        assert_eq!(
            crate::store::check_version(&cfg).unwrap(),
            (MIGRATIONS.len() as i64, MIGRATIONS.len())
        );
        let newer = MIGRATIONS.len() as i64 + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let checked = crate::store::check_version(&cfg)
            .expect_err("refused")
            .to_string();
        let e = SqliteStore::open(&path).err().expect("refused").to_string();
        for e in [e, checked] {
            assert!(
                e.contains(&format!(
                    "schema version {newer}, newer than this aggregator's {}",
                    MIGRATIONS.len()
                )) && e.contains(&path.display().to_string()),
                "{e}"
            );
        }
        let kept: i64 = Connection::open(&path)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(kept, newer);
        let _ = std::fs::remove_file(&path);
    }

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
