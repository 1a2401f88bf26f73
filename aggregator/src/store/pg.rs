//! The PostgreSQL backend of [`EventStore`]: the same migrations and queries as SQLite, in a
//! schema of its own (`storage.postgres_schema`), migrated on connect. Production runs it;
//! the conformance suite runs it against the server on 127.0.0.1:5432.

use std::collections::BTreeMap;

use postgres::{Client, NoTls};

use crate::store::{check_review, dialect, AuditEntry, Review, MIGRATIONS, POSTGRES};
use protocol::Event;

use crate::store::{
    columns, decode_row, export_stats_from, flow_sql, json_str, list_sql, page_from_rows,
    placeholders, EventFilter, EventStore, EvidenceBlob, ExportItem, ExportOutcome, ExportStats,
    FlowGroup, FlowQuery, FlowRow, KindCount, Page, PlateLookup, SqlArg, StoreError, StoreStats,
    EXPORT_DONE, EXPORT_DUE, EXPORT_REFUSED, EXPORT_STATS,
};
use crate::store::{
    deletion_keys, near_for, present_sql, sync_ref, LeaseRow, SyncCursor, SyncRef, ACCIDENTS_IN,
    ACCIDENT_PUT, LEASE, LEASES, RELEASE, SET_SYNC_MARK, SYNC_MARK, SYNC_REFS, WATCHLIST_GET,
    WATCHLIST_PUT,
};

pub struct PgStore {
    client: Client,
    export: bool,
    /// Rows stored since the planner's statistics were refreshed, and the table's size then.
    since_analyze: u64,
    analyzed_rows: u64,
    /// Plates known to be in `plate_keys`.
    known_plates: crate::store::KnownPlates,
    /// The partitions known to exist: kind, first and last (excluded) frame time, name.
    partitions: Vec<(String, i64, i64, String)>,
    /// The partitions written to since the statistics were refreshed.
    touched: std::collections::BTreeSet<String>,
}

/// An event body read from the `json` column (its binary form is the text), from `jsonb`
/// (a version byte, 1, and the text) or from text.
struct JsonText(String);

impl<'a> postgres::types::FromSql<'a> for JsonText {
    fn from_sql(
        ty: &postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        if *ty == postgres::types::Type::JSON {
            Ok(JsonText(std::str::from_utf8(raw)?.to_string()))
        } else if *ty == postgres::types::Type::JSONB {
            match raw.split_first() {
                Some((1, text)) => Ok(JsonText(std::str::from_utf8(text)?.to_string())),
                _ => Err("jsonb of an unknown binary version".into()),
            }
        } else {
            String::from_sql(ty, raw).map(JsonText)
        }
    }

    fn accepts(ty: &postgres::types::Type) -> bool {
        *ty == postgres::types::Type::JSON
            || *ty == postgres::types::Type::JSONB
            || <String as postgres::types::FromSql>::accepts(ty)
    }
}

/// The event body in column `i` of a row.
fn body(r: &postgres::Row, i: usize) -> String {
    r.get::<_, JsonText>(i).0
}

/// SQLSTATE 23514 with no partition for the row: a partition this store knew of was
/// dropped meanwhile (by retention, maybe in another aggregator).
fn no_partition(e: &postgres::Error) -> bool {
    e.as_db_error().is_some_and(|d| {
        d.code() == &postgres::error::SqlState::CHECK_VIOLATION && d.message().contains("partition")
    })
}

/// Statistics are refreshed (ANALYZE) once the rows stored since reach this or a fifth of
/// the table, whichever is more: a plate query keeps its plan however fast the table grew,
/// whether or not autovacuum is configured to keep up.
const ANALYZE_EVERY: u64 = 100_000;

fn pg(e: postgres::Error) -> StoreError {
    // The server's own message says what went wrong; `Display` only says "db error".
    match e.as_db_error() {
        Some(db) => {
            let message = format!("{}: {}", db.severity(), db.message());
            // Class 22 (data exception: a NUL in a text, an invalid byte sequence, a number
            // out of range), 23 (integrity constraint), 54 (program limit: a value too
            // large): the data is at fault, not the server.
            let code = db.code().code();
            if code.starts_with("22") || code.starts_with("23") || code.starts_with("54") {
                StoreError::Refused(format!("{message} (SQLSTATE {code})"))
            } else {
                StoreError::Pg(message)
            }
        }
        None => StoreError::Pg(e.to_string()),
    }
}

/// A client for `url`, once `schema` is known to be a plain name (it is written into SQL).
fn open_client(url: &str, schema: &str) -> Result<Client, StoreError> {
    if schema.is_empty()
        || !schema
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(StoreError::Pg(format!(
            "schema name '{schema}' must be letters, digits and '_'"
        )));
    }
    Client::connect(url, NoTls).map_err(|e| {
        StoreError::Pg(format!(
            "cannot connect to '{url}': {e}; check storage.postgres_url and that the server runs"
        ))
    })
}

impl PgStore {
    /// The version of `schema`'s migrations (0 when it has none), read only.
    pub fn schema_version(url: &str, schema: &str) -> Result<i64, StoreError> {
        let mut client = open_client(url, schema)?;
        let table = format!("{schema}.schema_migrations");
        let row = client
            .query_one(
                "SELECT CASE WHEN to_regclass($1) IS NULL THEN NULL ELSE 1 END",
                &[&table],
            )
            .map_err(pg)?;
        if row.get::<_, Option<i32>>(0).is_none() {
            return Ok(0);
        }
        let v: i32 = client
            .query_one(
                &format!("SELECT COALESCE(MAX(version), 0) FROM {schema}.schema_migrations"),
                &[],
            )
            .map_err(pg)?
            .get(0);
        Ok(v as i64)
    }

    /// Connects (`url` like `host=127.0.0.1 port=5432 user=postgres dbname=test` or
    /// `postgresql://...`), creates `schema` if missing and applies pending migrations.
    /// Commits wait for the server's WAL flush (`synchronous_commit = on`, whatever the
    /// server's default): what the writer acknowledges survives a crash of the server.
    pub fn connect(url: &str, schema: &str) -> Result<PgStore, StoreError> {
        let mut client = open_client(url, schema)?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema};
                 SET synchronous_commit TO on;
                 CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY);"
            ))
            .map_err(pg)?;
        // One migrator at a time: aggregators side by side may start together.
        let mut tx = client.transaction().map_err(pg)?;
        tx.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE", &[])
            .map_err(pg)?;
        let done: i32 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                &[],
            )
            .map_err(pg)?
            .get(0);
        if done as usize > MIGRATIONS.len() {
            return Err(StoreError::Version {
                at: format!("PostgreSQL schema {schema}"),
                found: done.into(),
                known: MIGRATIONS.len(),
            });
        }
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(&dialect(m, &POSTGRES)).map_err(pg)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)?;
        let analyzed_rows = client
            .query_one(
                "SELECT GREATEST(reltuples, 0)::bigint FROM pg_class WHERE oid = 'events'::regclass",
                &[],
            )
            .map_err(pg)?
            .get::<_, i64>(0) as u64;
        Ok(PgStore {
            client,
            export: false,
            since_analyze: 0,
            analyzed_rows,
            known_plates: Default::default(),
            partitions: Vec::new(),
            touched: Default::default(),
        })
    }
}

impl PgStore {
    /// Makes the partitions the events go to, those not known to exist already (one
    /// statement per kind and month new to this store).
    fn ensure_partitions(&mut self, events: &[Event]) -> Result<(), StoreError> {
        for ev in events {
            let kind = columns(ev).kind;
            let t = ev.frame_time_ms;
            let known = self
                .partitions
                .iter()
                .find(|(k, lo, hi, _)| k == kind && (*lo..*hi).contains(&t));
            let name = match known {
                Some((.., name)) => name,
                None => {
                    let r = self
                        .client
                        .query_one("SELECT * FROM events_partition($1, $2)", &[&kind, &t])
                        .map_err(pg)?;
                    let name: String = r.get(0);
                    self.partitions
                        .push((kind.to_string(), r.get(1), r.get(2), name));
                    &self.partitions.last().expect("pushed").3
                }
            };
            if !self.touched.contains(name) {
                self.touched.insert(name.clone());
            }
        }
        Ok(())
    }

    /// One batch in one transaction: the events, their export queue entries and the plate
    /// keys of new plates. Returns the rows that were new and the plates newly keyed.
    fn insert_tx(
        &mut self,
        events: &[Event],
        received_ms: i64,
    ) -> Result<(Vec<postgres::Row>, Vec<String>), postgres::Error> {
        // One statement per batch: the columns travel as arrays and UNNEST turns them back
        // into rows (a round trip per batch, not per event). Duplicates, in the table or
        // within the batch, are skipped; RETURNING names the rows that were new.
        let n = events.len();
        let mut cols = (
            Vec::with_capacity(n), // event_id
            Vec::with_capacity(n), // kind
            Vec::with_capacity(n), // severity
            Vec::with_capacity(n), // node_id
            Vec::with_capacity(n), // checkpoint_id
            Vec::with_capacity(n), // camera_id
            Vec::with_capacity(n), // frame_time_ms
            Vec::with_capacity(n), // review
            Vec::with_capacity(n), // class
            Vec::with_capacity(n), // phase
            Vec::with_capacity(n), // json
            Vec::with_capacity(n), // plate
            Vec::with_capacity(n), // lane
        );
        for ev in events {
            let c = columns(ev);
            cols.0.push(ev.event_id.as_str());
            cols.1.push(c.kind);
            cols.2.push(json_str(&ev.severity));
            cols.3.push(ev.node_id.as_str());
            cols.4.push(ev.checkpoint_id.as_str());
            cols.5.push(ev.camera_id.as_str());
            cols.6.push(ev.frame_time_ms);
            cols.7.push(json_str(&ev.review));
            cols.8.push(c.class);
            cols.9.push(c.phase);
            cols.10
                .push(String::from_utf8(ev.encode()).expect("JSON is UTF-8"));
            cols.11.push(c.plate);
            cols.12.push(ev.lane.map(i64::from));
        }
        let mut tx = self.client.transaction()?;
        let rows = tx
            .query(
                "INSERT INTO events (event_id, kind, severity, node_id, checkpoint_id, camera_id, frame_time_ms, received_ms, review, class, phase, json, plate, lane)
                 SELECT u.event_id, u.kind, u.severity, u.node_id, u.checkpoint_id, u.camera_id, u.frame_time_ms, $8, u.review, u.class, u.phase, u.json::json, u.plate, u.lane
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bigint[])
                   AS u(event_id, kind, severity, node_id, checkpoint_id, camera_id, frame_time_ms, review, class, phase, json, plate, lane)
                 ON CONFLICT (event_id, kind, frame_time_ms) DO NOTHING
                 RETURNING event_id, kind, plate",
                &[
                    &cols.0, &cols.1, &cols.2, &cols.3, &cols.4, &cols.5, &cols.6, &received_ms,
                    &cols.7, &cols.8, &cols.9, &cols.10, &cols.11, &cols.12,
                ],
            )
            ?;
        if self.export {
            let passes: Vec<String> = rows
                .iter()
                .filter(|r| r.get::<_, &str>(1) == protocol::EventKind::VehiclePass.as_str())
                .map(|r| r.get(0))
                .collect();
            if !passes.is_empty() {
                tx.execute(
                    "INSERT INTO export_queue (event_id, state, attempts, next_try_ms, enqueued_ms)
                     SELECT id, 'queued', 0, $2, $2 FROM UNNEST($1::text[]) AS q(id)
                     ON CONFLICT (event_id) DO NOTHING",
                    &[&passes, &received_ms],
                )?;
            }
        }
        // The new plates of the batch under their keys (see `plate_keys`).
        let returned: Vec<Option<String>> = rows.iter().map(|r| r.get(2)).collect();
        let plates: Vec<String> = self
            .known_plates
            .unknown(returned.iter().filter_map(|p| p.as_deref()))
            .into_iter()
            .map(String::from)
            .collect();
        if !plates.is_empty() {
            let fresh = tx.query(
                "INSERT INTO plate_keys (key, plate) SELECT p, p FROM UNNEST($1::text[]) AS u(p)
                     ON CONFLICT DO NOTHING RETURNING plate",
                &[&plates],
            )?;
            let (mut keys, mut of) = (Vec::new(), Vec::new());
            for r in fresh {
                let p: String = r.get(0);
                for k in deletion_keys(&p) {
                    keys.push(k);
                    of.push(p.clone());
                }
            }
            if !keys.is_empty() {
                tx.execute(
                    "INSERT INTO plate_keys (key, plate) SELECT * FROM UNNEST($1::text[], $2::text[])
                     ON CONFLICT DO NOTHING",
                    &[&keys, &of],
                )
                ?;
            }
        }
        tx.commit()?;
        Ok((rows, plates))
    }

    /// Takes one partition of events out of the table, with its export queue entries and
    /// images, in one transaction (a detach: the catalog only, whatever the month's size),
    /// then drops it (the files go; a crash in between leaves a detached table that the next
    /// purge drops). Returns (events, images) deleted; the events as the planner's
    /// statistics count them when it has any (a count would read the whole month). Waits at
    /// most 10 s for queries using the table (then fails, and the next purge tries again).
    fn drop_partition(&mut self, parent: &str, name: &str) -> Result<(u64, u64), StoreError> {
        let t = std::time::Instant::now();
        let mut tx = self.client.transaction().map_err(pg)?;
        tx.batch_execute("SET LOCAL lock_timeout = '10s'")
            .map_err(pg)?;
        let estimate: f32 = tx
            .query_one(
                "SELECT reltuples FROM pg_class WHERE oid = to_regclass($1)",
                &[&name],
            )
            .map_err(pg)?
            .get(0);
        let events = if estimate >= 0.0 {
            estimate as i64
        } else {
            tx.query_one(&format!(r#"SELECT count(*) FROM "{name}""#), &[])
                .map_err(pg)?
                .get(0)
        };
        let r = tx
            .query_one(
                &format!(r#"SELECT min(event_id), max(event_id) FROM "{name}""#),
                &[],
            )
            .map_err(pg)?;
        let (first, last): (Option<String>, Option<String>) = (r.get(0), r.get(1));
        let mut images = 0;
        if let (Some(first), Some(last)) = (first, last) {
            tx.execute(
                &format!(
                    r#"DELETE FROM export_queue AS q
                       WHERE EXISTS (SELECT 1 FROM "{name}" AS p WHERE p.event_id = q.event_id)"#
                ),
                &[],
            )
            .map_err(pg)?;
            images = tx
                .execute(
                    &format!(
                        r#"DELETE FROM evidence AS v WHERE v.image_id > $1 AND v.image_id < $2
                           AND EXISTS (SELECT 1 FROM "{name}" AS p
                                       WHERE p.event_id = split_part(v.image_id, '-', 1))"#
                    ),
                    &[&first, &format!("{last}.")],
                )
                .map_err(pg)?;
        }
        tx.batch_execute(&format!(
            r#"ALTER TABLE "{parent}" DETACH PARTITION "{name}""#
        ))
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        let detached = t.elapsed();
        self.client
            .batch_execute(&format!(r#"DROP TABLE "{name}""#))
            .map_err(pg)?;
        tracing::info!(
            partition = name,
            events,
            images,
            detach_ms = detached.as_millis() as u64,
            drop_ms = (t.elapsed() - detached).as_millis() as u64,
            "Retention took a month out (detached, then its files dropped)"
        );
        Ok((events as u64, images))
    }

    fn query(&mut self, sql: &str, args: Vec<SqlArg>) -> Result<Vec<postgres::Row>, StoreError> {
        let params: Vec<_> = args.into_iter().map(pg_value).collect();
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|b| b.as_ref()).collect();
        self.client.query(sql, &refs).map_err(pg)
    }
}

/// Drops `schema` with the large objects of its images (they belong to the database, not
/// to the schema: `DROP SCHEMA ... CASCADE` alone would leave them behind). For tests,
/// benches and an operator taking a scope's store away.
pub fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    let mut admin = postgres::Client::connect(url, postgres::NoTls).map_err(pg)?;
    let evidence: Option<String> = admin
        .query_one(
            "SELECT to_regclass($1)::text",
            &[&format!("\"{schema}\".evidence")],
        )
        .map_err(pg)?
        .get(0);
    if evidence.is_some() {
        admin
            .batch_execute(&format!(
                r#"SELECT lo_unlink(lo) FROM "{schema}".evidence WHERE lo IS NOT NULL"#
            ))
            .map_err(pg)?;
    }
    admin
        .batch_execute(&format!(r#"DROP SCHEMA "{schema}" CASCADE"#))
        .map_err(pg)
}

impl EventStore for PgStore {
    fn insert_new(&mut self, events: &[Event], received_ms: i64) -> Result<Vec<bool>, StoreError> {
        self.ensure_partitions(events)?;
        let (rows, plates) = match self.insert_tx(events, received_ms) {
            Err(e) if no_partition(&e) => {
                // A partition dropped since it was learnt: learn them again, once.
                self.partitions.clear();
                self.ensure_partitions(events)?;
                self.insert_tx(events, received_ms).map_err(pg)?
            }
            r => r.map_err(pg)?,
        };
        self.known_plates.learn(plates.iter().map(String::as_str));
        self.since_analyze += rows.len() as u64;
        if self.since_analyze >= ANALYZE_EVERY.max(self.analyzed_rows / 5) {
            // The months written to, not every partition (a query is planned per partition).
            let names: Vec<String> = std::mem::take(&mut self.touched)
                .into_iter()
                .map(|n| format!("\"{n}\""))
                .collect();
            if !names.is_empty() {
                // The rows are stored whatever happens here (a month dropped meanwhile).
                if let Err(e) = self
                    .client
                    .batch_execute(&format!("ANALYZE {}", names.join(", ")))
                {
                    tracing::warn!("refreshing the statistics of {names:?}: {}", pg(e));
                }
            }
            self.analyzed_rows += self.since_analyze;
            self.since_analyze = 0;
        }
        let new: std::collections::HashSet<&str> = rows.iter().map(|r| r.get(0)).collect();
        // A duplicate within the batch: the first is the new one.
        let mut seen = std::collections::HashSet::new();
        Ok(events
            .iter()
            .map(|e| new.contains(e.event_id.as_str()) && seen.insert(e.event_id.as_str()))
            .collect())
    }

    fn get(&mut self, event_id: &str) -> Result<Option<Event>, StoreError> {
        let row = self
            .client
            .query_opt("SELECT json FROM events WHERE event_id = $1", &[&event_id])
            .map_err(pg)?;
        row.map(|r| decode_row(event_id, &body(&r, 0))).transpose()
    }

    fn plate_sightings(
        &mut self,
        plates: &[String],
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<crate::store::Sighting>, StoreError> {
        if plates.is_empty() {
            return Ok(Vec::new());
        }
        // The plate index covers (plate, time, id): the checkpoint is the only column read
        // from the rows, never the bodies.
        Ok(self
            .client
            .query(
                "SELECT plate, event_id, checkpoint_id, frame_time_ms FROM events
                 WHERE kind = 'vehicle_pass' AND plate = ANY($1)
                   AND frame_time_ms >= $2 AND frame_time_ms < $3",
                &[&plates, &from_ms, &to_ms],
            )
            .map_err(pg)?
            .into_iter()
            .map(|r| crate::store::Sighting {
                plate: r.get(0),
                event_id: r.get(1),
                checkpoint_id: r.get(2),
                frame_time_ms: r.get(3),
            })
            .collect())
    }

    fn list(&mut self, f: &EventFilter) -> Result<Page, StoreError> {
        let near = near_for(
            f,
            |n| format!("${n}"),
            |sql, keys| {
                let args = keys.iter().cloned().map(SqlArg::Text).collect();
                Ok(self
                    .query(sql, args)?
                    .into_iter()
                    .map(|r| r.get(0))
                    .collect())
            },
        )?;
        let near = near.unwrap_or_default();
        let (sql, args, limit) = list_sql(f, &near, PlateLookup::Column, |n| format!("${n}"))?;
        let rows = self.query(&sql, args)?;
        page_from_rows(
            rows.into_iter()
                .map(|r| (r.get(0), body(&r, 1), r.get(2)))
                .collect(),
            limit,
        )
    }

    fn flow(&mut self, q: &FlowQuery) -> Result<Vec<FlowRow>, StoreError> {
        let (sql, args) = flow_sql(q, FlowGroup::CheckpointLane, |n| format!("${n}"))?;
        Ok(self
            .query(&sql, args)?
            .into_iter()
            .map(|r| FlowRow {
                bucket_start_ms: r.get(0),
                checkpoint_id: r.get(1),
                lane: r.get(2),
                vehicles: r.get(3),
            })
            .collect())
    }

    fn counts(&mut self, q: &FlowQuery) -> Result<Vec<KindCount>, StoreError> {
        let (sql, args) = flow_sql(q, FlowGroup::Kind, |n| format!("${n}"))?;
        Ok(self
            .query(&sql, args)?
            .into_iter()
            .map(|r| KindCount {
                bucket_start_ms: r.get(0),
                kind: r.get(1),
                events: r.get(2),
            })
            .collect())
    }

    fn stats(&mut self, county: Option<&str>) -> Result<StoreStats, StoreError> {
        let (sql, args) = crate::store::stats_sql(county, |n| format!("${n}"))?;
        let mut grouped = [BTreeMap::new(), BTreeMap::new()];
        for (i, map) in grouped.iter_mut().enumerate() {
            for r in self.query(&sql[i], args.clone())? {
                map.insert(r.get::<_, String>(0), r.get::<_, i64>(1) as u64);
            }
        }
        let images = self.query(&sql[2], args)?[0].get::<_, i64>(0);
        Ok(StoreStats::of(grouped, images))
    }

    fn insert_evidence(&mut self, e: &EvidenceBlob, received_ms: i64) -> Result<bool, StoreError> {
        // The row first: a second aggregator storing the same image waits on it and finds
        // it there, so no large object is made twice (nor left behind by a conflict).
        let mut tx = self.client.transaction().map_err(pg)?;
        let n = tx
            .execute(
                "INSERT INTO evidence (image_id, checkpoint_id, camera_id, sha256, content_type, size, received_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (image_id) DO NOTHING",
                &[&e.image_id, &e.checkpoint_id, &e.camera_id, &e.sha256, &e.content_type, &(e.bytes.len() as i64), &received_ms],
            )
            .map_err(pg)?;
        if n == 1 {
            tx.execute(
                "UPDATE evidence SET lo = lo_from_bytea(0, $2) WHERE image_id = $1",
                &[&e.image_id, &e.bytes],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)?;
        Ok(n == 1)
    }

    fn get_evidence(&mut self, image_id: &str) -> Result<Option<EvidenceBlob>, StoreError> {
        let row = self
            .client
            .query_opt("SELECT image_id, checkpoint_id, camera_id, sha256, content_type, lo_get(lo) FROM evidence WHERE image_id = $1", &[&image_id])
            .map_err(pg)?;
        Ok(row.map(|r| EvidenceBlob {
            image_id: r.get(0),
            checkpoint_id: r.get(1),
            camera_id: r.get(2),
            sha256: r.get(3),
            content_type: r.get(4),
            bytes: r.get(5),
        }))
    }

    fn purge(
        &mut self,
        kind: protocol::EventKind,
        before_ms: i64,
    ) -> Result<(u64, u64), StoreError> {
        // Months detached by a purge that stopped before dropping them.
        let leftovers: Vec<String> = self
            .client
            .query(
                "SELECT c.relname::text FROM pg_class AS c
                 JOIN pg_namespace AS n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition
                   AND c.relname ~ '^events_[a-z][a-z0-9_]*_[0-9]{6}$'",
                &[],
            )
            .map_err(pg)?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        for name in leftovers {
            self.client
                .batch_execute(&format!(r#"DROP TABLE "{name}""#))
                .map_err(pg)?;
        }
        // Whole months older than the cut: taken out, a statement each, whatever their size.
        let (mut events, mut images) = (0, 0);
        let parts = self
            .client
            .query(
                "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid)
                 FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
                 WHERE i.inhparent = to_regclass($1)",
                &[&format!("events_{}", kind.as_str())],
            )
            .map_err(pg)?;
        let parent = format!("events_{}", kind.as_str());
        for r in parts {
            let (name, bound): (String, String) = (r.get(0), r.get(1));
            let Some((_, hi)) = range_bound(&bound) else {
                continue;
            };
            if hi <= before_ms {
                let (e, i) = self.drop_partition(&parent, &name)?;
                events += e;
                images += i;
                self.partitions.retain(|(.., n)| *n != name);
                self.touched.remove(&name);
            }
        }
        // The rest of the cut, row by row, in the month it falls in.
        let mut tx = self.client.transaction().map_err(pg)?;
        let ids: Vec<String> = tx
            .query(
                "DELETE FROM events WHERE kind = $1 AND frame_time_ms < $2 RETURNING event_id",
                &[&kind.as_str(), &before_ms],
            )
            .map_err(pg)?
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        if let (Some(first), Some(last)) = (ids.iter().min(), ids.iter().max()) {
            tx.execute("DELETE FROM export_queue WHERE event_id = ANY($1)", &[&ids])
                .map_err(pg)?;
            // Image ids are `<event id>-<role>`: the range of the ids, then the ids.
            images += tx
                .execute(
                    "DELETE FROM evidence WHERE image_id > $1 AND image_id < $2
                       AND split_part(image_id, '-', 1) = ANY($3)",
                    &[first, &format!("{last}."), &ids],
                )
                .map_err(pg)?;
        }
        tx.commit().map_err(pg)?;
        Ok((events + ids.len() as u64, images))
    }

    fn maintain(&mut self) -> Result<(), StoreError> {
        // Every partition: those not changed since their last vacuum cost a look at their
        // visibility map. The plate keys too: a search within one edit reads them from
        // their index alone then (0.3 ms instead of a visit to each row's page).
        // One statement each: VACUUM runs outside a transaction only.
        self.client.batch_execute("VACUUM events").map_err(pg)?;
        // The images' large objects: retention's unlinks leave dead rows there. A role that
        // does not own the database is told so in a warning, not an error: autovacuum's job.
        self.client
            .batch_execute("VACUUM pg_largeobject")
            .map_err(pg)?;
        self.client
            .batch_execute("VACUUM (ANALYZE) plate_keys")
            .map_err(pg)
    }

    fn review(&mut self, event_id: &str, r: &Review, at_ms: i64) -> Result<Event, StoreError> {
        let mut tx = self.client.transaction().map_err(pg)?;
        // FOR UPDATE: two reviewers at once are applied one after the other.
        let row = tx
            .query_opt(
                "SELECT json FROM events WHERE event_id = $1 FOR UPDATE",
                &[&event_id],
            )
            .map_err(pg)?;
        let json = body(
            &row.ok_or_else(|| StoreError::NotFound(event_id.to_string()))?,
            0,
        );
        let mut ev = decode_row(event_id, &json)?;
        check_review(&ev, r)?;
        ev.review = r.decision;
        let new_json = String::from_utf8(ev.encode()).expect("JSON is UTF-8");
        // Kind and frame time name the event's partition.
        tx.execute(
            "UPDATE events SET review = $2, json = $3::text::json
             WHERE event_id = $1 AND kind = $4 AND frame_time_ms = $5",
            &[
                &event_id,
                &json_str(&ev.review),
                &new_json,
                &columns(&ev).kind,
                &ev.frame_time_ms,
            ],
        )
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO audit (event_id, action, actor, detail, at_ms) VALUES ($1, $2, $3, $4, $5)",
            &[&event_id, &super::sql::review_action(r), &r.reviewer, &format!("{}: {}", json_str(&r.decision), r.reason), &at_ms],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(ev)
    }

    fn audit(&mut self, e: &AuditEntry) -> Result<(), StoreError> {
        self.client
            .execute("INSERT INTO audit (event_id, action, actor, detail, at_ms) VALUES ($1, $2, $3, $4, $5)", &[&e.event_id, &e.action, &e.actor, &e.detail, &e.at_ms])
            .map_err(pg)?;
        Ok(())
    }

    fn audit_recent(&mut self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self.client.query("SELECT event_id, action, actor, detail, at_ms FROM audit ORDER BY id DESC LIMIT $1", &[&(limit as i64)]).map_err(pg)?;
        Ok(rows.into_iter().map(audit_row).collect())
    }

    fn audit_of(&mut self, event_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self.client.query("SELECT event_id, action, actor, detail, at_ms FROM audit WHERE event_id = $1 ORDER BY id", &[&event_id]).map_err(pg)?;
        Ok(rows.into_iter().map(audit_row).collect())
    }

    fn set_export_queue(&mut self, on: bool) {
        self.export = on;
    }

    fn export_due(&mut self, now_ms: i64, limit: usize) -> Result<Vec<ExportItem>, StoreError> {
        let sql = placeholders(EXPORT_DUE, |n| format!("${n}"));
        let rows = self
            .client
            .query(sql.as_str(), &[&now_ms, &(limit as i64)])
            .map_err(pg)?;
        rows.into_iter()
            .map(|r| {
                let id: String = r.get(0);
                Ok(ExportItem {
                    event: decode_row(&id, &body(&r, 2))?,
                    attempts: r.get::<_, i64>(1) as u32,
                })
            })
            .collect()
    }

    fn export_result(
        &mut self,
        event_id: &str,
        outcome: ExportOutcome,
        next_try_ms: i64,
    ) -> Result<(), StoreError> {
        match outcome {
            Ok(()) => {
                let sql = placeholders(EXPORT_DONE, |n| format!("${n}"));
                self.client
                    .execute(sql.as_str(), &[&event_id])
                    .map_err(pg)?;
            }
            Err((reason, give_up)) => {
                let sql = placeholders(EXPORT_REFUSED, |n| format!("${n}"));
                let state = if give_up { "failed" } else { "queued" };
                self.client
                    .execute(sql.as_str(), &[&event_id, &reason, &next_try_ms, &state])
                    .map_err(pg)?;
            }
        }
        Ok(())
    }

    fn export_stats(&mut self) -> Result<ExportStats, StoreError> {
        let rows = self.client.query(EXPORT_STATS, &[]).map_err(pg)?;
        Ok(export_stats_from(
            rows.into_iter().map(|r| (r.get(0), r.get(1))).collect(),
        ))
    }

    fn sync_refs(
        &mut self,
        after: &SyncCursor,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<SyncRef>, StoreError> {
        let rows = self
            .client
            .query(
                &placeholders(SYNC_REFS, |n| format!("${n}")),
                &[
                    &after.received_ms,
                    &after.event_id,
                    &until_ms,
                    &(limit as i64),
                ],
            )
            .map_err(pg)?;
        rows.into_iter()
            .map(|r| sync_ref(r.get(0), r.get(1), &body(&r, 2)))
            .collect()
    }

    fn present(
        &mut self,
        ids: &[String],
        evidence: bool,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        let (table, col) = if evidence {
            ("evidence", "image_id")
        } else {
            ("events", "event_id")
        };
        let mut found = std::collections::HashSet::new();
        for chunk in ids.chunks(500) {
            let args = chunk.iter().cloned().map(SqlArg::Text).collect();
            for r in self.query(
                &present_sql(table, col, chunk.len(), |n| format!("${n}")),
                args,
            )? {
                found.insert(r.get::<_, String>(0));
            }
        }
        Ok(found)
    }

    fn sync_mark(&mut self, county: &str) -> Result<Option<SyncCursor>, StoreError> {
        let row = self
            .client
            .query_opt(&placeholders(SYNC_MARK, |n| format!("${n}")), &[&county])
            .map_err(pg)?;
        Ok(row.map(|r| SyncCursor {
            received_ms: r.get(0),
            event_id: r.get(1),
        }))
    }

    fn lease(&mut self, job: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let sql = placeholders(&dialect(LEASE, &POSTGRES), |n| format!("${n}"));
        let rows = self
            .client
            .query(&sql, &[&job, &holder, &ttl_ms])
            .map_err(pg)?;
        Ok(!rows.is_empty())
    }

    fn watchlist_put(
        &mut self,
        scope: &str,
        version: u64,
        body: &[u8],
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let n = self
            .client
            .execute(
                &placeholders(WATCHLIST_PUT, |n| format!("${n}")),
                &[&scope, &(version as i64), &body, &at_ms],
            )
            .map_err(pg)?;
        Ok(n == 1)
    }

    fn accidents_put(
        &mut self,
        rows: &[crate::accidents::Accident],
        at_ms: i64,
    ) -> Result<usize, StoreError> {
        let mut tx = self.client.transaction().map_err(pg)?;
        let stmt = tx
            .prepare(&placeholders(ACCIDENT_PUT, |n| format!("${n}")))
            .map_err(pg)?;
        let mut new = 0;
        for a in rows {
            new += tx
                .execute(
                    &stmt,
                    &[
                        &a.id,
                        &a.time_ms,
                        &a.place,
                        &a.severity,
                        &a.kind,
                        &a.lat,
                        &a.lon,
                        &at_ms,
                    ],
                )
                .map_err(pg)? as usize;
        }
        tx.commit().map_err(pg)?;
        Ok(new)
    }

    fn accidents_in(
        &mut self,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<crate::accidents::Accident>, StoreError> {
        let rows = self
            .client
            .query(
                &placeholders(ACCIDENTS_IN, |n| format!("${n}")),
                &[&from_ms, &to_ms],
            )
            .map_err(pg)?;
        Ok(rows
            .iter()
            .map(|r| crate::accidents::Accident {
                id: r.get(0),
                time_ms: r.get(1),
                place: r.get(2),
                severity: r.get(3),
                kind: r.get(4),
                lat: r.get(5),
                lon: r.get(6),
            })
            .collect())
    }

    fn watchlist_get(&mut self, scope: &str) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let row = self
            .client
            .query_opt(&placeholders(WATCHLIST_GET, |n| format!("${n}")), &[&scope])
            .map_err(pg)?;
        Ok(row.map(|r| (r.get::<_, i64>(0) as u64, r.get(1))))
    }

    fn release(&mut self, job: &str, holder: &str) -> Result<(), StoreError> {
        self.client
            .execute(
                &placeholders(RELEASE, |n| format!("${n}")),
                &[&job, &holder],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn leases(&mut self) -> Result<Vec<LeaseRow>, StoreError> {
        let rows = self
            .client
            .query(&dialect(LEASES, &POSTGRES), &[])
            .map_err(pg)?;
        Ok(rows
            .into_iter()
            .map(|r| LeaseRow {
                job: r.get(0),
                holder: r.get(1),
                left_ms: r.get(2),
            })
            .collect())
    }

    fn set_sync_mark(
        &mut self,
        county: &str,
        mark: &SyncCursor,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.client
            .execute(
                &placeholders(SET_SYNC_MARK, |n| format!("${n}")),
                &[&county, &mark.received_ms, &mark.event_id, &at_ms],
            )
            .map_err(pg)?;
        Ok(())
    }
}

/// The range of a partition bound as PostgreSQL prints it,
/// `FOR VALUES FROM ('1788220800000') TO ('1790899200000')`.
fn range_bound(bound: &str) -> Option<(i64, i64)> {
    let num = |s: &str| -> Option<i64> {
        let digits: String = s
            .chars()
            .skip_while(|c| !(c.is_ascii_digit() || *c == '-'))
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect();
        digits.parse().ok()
    };
    let (from, to) = bound.split_once(" TO ")?;
    Some((num(from.split_once("FROM")?.1)?, num(to)?))
}

fn audit_row(r: postgres::Row) -> AuditEntry {
    AuditEntry {
        event_id: r.get(0),
        action: r.get(1),
        actor: r.get(2),
        detail: r.get(3),
        at_ms: r.get(4),
    }
}

/// A bind value as PostgreSQL takes it.
fn pg_value(a: SqlArg) -> Box<dyn postgres::types::ToSql + Sync> {
    match a {
        SqlArg::Int(v) => Box::new(v),
        SqlArg::Text(v) => Box::new(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventFilter;

    fn scratch() -> (String, String) {
        let url = std::env::var("TRAFFIC_PG_URL")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
        let schema = format!("part_{}", ulid::Ulid::new().to_string().to_lowercase());
        (url, schema)
    }

    fn partitions(s: &mut PgStore) -> Vec<String> {
        let mut v: Vec<String> = s
            .client
            .query(
                "SELECT c.relname::text FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
                 JOIN pg_namespace AS n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relname ~ '_[0-9]{6}$'",
                &[],
            )
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        v.sort();
        v
    }

    /// Events go to a partition per kind and month, made when the first row arrives;
    /// retention drops a kind's months wholly past the cut (with their export queue entries
    /// and images), deletes the rest of the cut row by row, and leaves the other kinds; a
    /// store that still believes in a dropped month makes it again.
    #[test]
    fn events_are_partitioned_by_kind_and_month_and_retention_drops_whole_months() {
        use protocol::time::parse_rfc3339_ms as t;
        let (url, schema) = scratch();
        let mut s = PgStore::connect(&url, &schema).unwrap();
        let mut other = PgStore::connect(&url, &schema).unwrap();
        s.set_export_queue(true);
        let pass_at = |i: i64, at: &str| {
            let mut e = crate::store::tests::pass(i, &format!("苏E1000{i}"));
            e.frame_time_ms = t(at).unwrap();
            e.event_id = ulid::Ulid::from_parts(e.frame_time_ms as u64, i as u128).to_string();
            e
        };
        let sep: Vec<Event> = (1..=3)
            .map(|i| pass_at(i, "2026-09-10T00:00:00Z"))
            .collect();
        let oct: Vec<Event> = (4..=6)
            .map(|i| pass_at(i, "2026-10-31T23:59:59Z"))
            .collect();
        let nov = vec![
            pass_at(7, "2026-11-01T00:00:00Z"),
            pass_at(8, "2026-11-04T00:00:00Z"),
            pass_at(9, "2026-11-20T00:00:00Z"),
        ];
        let mut hit = crate::store::tests::watch_list_hit(t("2026-09-12T00:00:00Z").unwrap());
        hit.review = protocol::ReviewState::Pending;
        let mut all = [sep.clone(), oct.clone(), nov.clone()].concat();
        all.push(hit.clone());
        assert_eq!(s.insert_batch(&all, 0).unwrap(), 10);
        assert_eq!(
            s.insert_batch(&all, 0).unwrap(),
            0,
            "sent again: duplicates"
        );
        let kind = columns(&hit).kind;
        assert_eq!(
            partitions(&mut s),
            vec![
                format!("events_{kind}_202609"),
                "events_vehicle_pass_202609".into(),
                "events_vehicle_pass_202610".into(),
                "events_vehicle_pass_202611".into(),
            ]
        );
        // The other store learns October's partition.
        assert_eq!(other.insert_batch(&oct, 0).unwrap(), 0);
        let image = |ev: &Event| EvidenceBlob {
            image_id: format!("{}-plate", ev.event_id),
            checkpoint_id: ev.checkpoint_id.to_string(),
            camera_id: ev.camera_id.to_string(),
            sha256: "0".repeat(64),
            content_type: "image/jpeg".into(),
            bytes: vec![0xff, 0xd8, 0xff, 0xd9],
        };
        for ev in [&sep[0], &oct[2], &nov[0], &nov[2], &hit] {
            assert!(s.insert_evidence(&image(ev), 0).unwrap());
        }
        assert_eq!(s.export_stats().unwrap().queued, 9);

        // The retention job's upkeep first, as it runs.
        s.maintain().unwrap();
        let cut = t("2026-11-05T00:00:00Z").unwrap();
        let (events, images) = s.purge(protocol::EventKind::VehiclePass, cut).unwrap();
        assert_eq!(
            (events, images),
            (8, 3),
            "September, October and two November passes"
        );
        assert_eq!(
            partitions(&mut s),
            vec![
                format!("events_{kind}_202609"),
                "events_vehicle_pass_202611".into()
            ]
        );
        assert_eq!(s.export_stats().unwrap().queued, 1);
        for gone in [&sep[0], &oct[2], &nov[0]] {
            assert!(s.get(&gone.event_id).unwrap().is_none());
            assert!(s
                .get_evidence(&format!("{}-plate", gone.event_id))
                .unwrap()
                .is_none());
        }
        for kept in [&nov[2], &hit] {
            assert!(s.get(&kept.event_id).unwrap().is_some());
            assert!(s
                .get_evidence(&format!("{}-plate", kept.event_id))
                .unwrap()
                .is_some());
        }
        let found = s
            .list(&EventFilter {
                plate: Some("苏E1000*".into()),
                limit: 100,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(found.events.len(), 1);
        // A review still finds its row in its partition.
        let reviewed = s
            .review(
                &hit.event_id,
                &Review {
                    decision: protocol::ReviewState::Confirmed,
                    reviewer: "tester".into(),
                    reason: "seen".into(),
                },
                1,
            )
            .unwrap();
        assert_eq!(reviewed.review, protocol::ReviewState::Confirmed);
        assert_eq!(
            s.get(&hit.event_id).unwrap().unwrap().review,
            protocol::ReviewState::Confirmed
        );
        // October's partition is gone under the other store: it makes it again.
        assert_eq!(other.insert_batch(&oct, 0).unwrap(), 3);
        assert!(partitions(&mut s).contains(&"events_vehicle_pass_202610".to_string()));
        drop((s, other));
        drop_schema(&url, &schema).unwrap();
    }

    #[test]
    fn partition_bounds_are_read_as_printed() {
        assert_eq!(
            range_bound("FOR VALUES FROM ('1788220800000') TO ('1790899200000')"),
            Some((1_788_220_800_000, 1_790_899_200_000))
        );
        assert_eq!(range_bound("FOR VALUES FROM (-5) TO (7)"), Some((-5, 7)));
        assert_eq!(range_bound("DEFAULT"), None);
    }

    /// A database of a newer release is refused by connect and by `check_version` (what
    /// `aggregator check --state` runs), and left as it was.
    #[test]
    fn a_database_of_a_newer_release_is_refused() {
        let (url, schema) = scratch();
        drop(PgStore::connect(&url, &schema).unwrap());
        let newer = MIGRATIONS.len() as i32 + 1;
        let mut c = Client::connect(&url, NoTls).unwrap();
        c.execute(
            &format!("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"),
            &[&newer],
        )
        .unwrap();
        let cfg = crate::config::StorageConfig {
            backend: crate::config::Backend::Postgres,
            postgres_url: url.clone(),
            postgres_schema: schema.clone(),
            ..Default::default()
        };
        let checked = crate::store::check_version(&cfg)
            .expect_err("refused")
            .to_string();
        let e = PgStore::connect(&url, &schema)
            .err()
            .expect("refused")
            .to_string();
        for e in [e, checked] {
            assert!(
                e.contains(&format!(
                    "PostgreSQL schema {schema}' has schema version {newer}, newer than this aggregator's {}",
                    MIGRATIONS.len()
                )),
                "{e}"
            );
        }
        // A schema with no migrations yet is version 0, and nothing is created by the check.
        let fresh = crate::config::StorageConfig {
            postgres_schema: format!("{schema}_none"),
            ..cfg
        };
        assert_eq!(
            crate::store::check_version(&fresh).unwrap(),
            (0, MIGRATIONS.len())
        );
        let made: i64 = c
            .query_one(
                "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
                &[&fresh.postgres_schema],
            )
            .unwrap()
            .get(0);
        assert_eq!(made, 0);
        drop_schema(&url, &schema).unwrap();
    }

    /// A database made by the release before migrations 9-15 (sync marks, leases, plate keys,
    /// the plate column's collation, partitions, images as large objects) is upgraded in
    /// place on connect: its passes are kept, found by plate, by prefix, and within one edit
    /// (the plate keys filled from them); its image is kept, moved out of the table, and
    /// goes with its pass when retention takes it.
    #[test]
    fn a_database_of_the_previous_release_is_upgraded() {
        let url = std::env::var("TRAFFIC_PG_URL")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
        let schema = format!("upg_{}", ulid::Ulid::new().to_string().to_lowercase());
        let before = 8;
        let old = crate::store::tests::pass(1, "苏E12345");
        {
            let mut c = Client::connect(&url, NoTls).unwrap();
            c.batch_execute(&format!(
                "CREATE SCHEMA {schema}; SET search_path TO {schema};
                 CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY);"
            ))
            .unwrap();
            for (i, m) in MIGRATIONS[..before].iter().enumerate() {
                c.batch_execute(&dialect(m, &POSTGRES)).unwrap();
                c.execute(
                    "INSERT INTO schema_migrations (version) VALUES ($1)",
                    &[&(i as i32 + 1)],
                )
                .unwrap();
            }
            c.execute(
                "INSERT INTO events (event_id, kind, severity, node_id, checkpoint_id, camera_id, frame_time_ms, received_ms, review, class, phase, json, plate, lane)
                 VALUES ($1, 'vehicle_pass', 'info', $2, $3, $4, $5, 0, 'not_required', 'car', NULL, $6, '苏E12345', 1)",
                &[
                    &old.event_id,
                    &old.node_id.as_str(),
                    &old.checkpoint_id.as_str(),
                    &old.camera_id.as_str(),
                    &old.frame_time_ms,
                    &String::from_utf8(old.encode()).unwrap(),
                ],
            )
            .unwrap();
            c.execute(
                "INSERT INTO evidence (image_id, checkpoint_id, camera_id, sha256, content_type, bytes, received_ms)
                 VALUES ($1, $2, $3, 'ab', 'image/jpeg', $4, 0)",
                &[
                    &format!("{}-plate", old.event_id),
                    &old.checkpoint_id.as_str(),
                    &old.camera_id.as_str(),
                    &vec![0xffu8, 0xd8, 0xff, 0xd9],
                ],
            )
            .unwrap();
        }
        let mut s = PgStore::connect(&url, &schema).unwrap();
        let ids = |s: &mut PgStore, plate: &str, near: bool| -> Vec<String> {
            s.list(&EventFilter {
                plate: Some(plate.into()),
                plate_near: near,
                limit: 100,
                ..Default::default()
            })
            .unwrap()
            .events
            .into_iter()
            .map(|e| e.event_id)
            .collect()
        };
        assert_eq!(ids(&mut s, "苏E12345", false), vec![old.event_id.clone()]);
        assert_eq!(ids(&mut s, "苏E1*", false), vec![old.event_id.clone()]);
        assert_eq!(ids(&mut s, "苏E12346", true), vec![old.event_id.clone()]);
        let later = crate::store::tests::pass(2, "苏E12346");
        s.insert_batch(std::slice::from_ref(&later), 0).unwrap();
        assert_eq!(
            ids(&mut s, "苏E12345", true),
            vec![old.event_id.clone(), later.event_id.clone()]
        );
        let version: i32 = s
            .client
            .query_one("SELECT MAX(version) FROM schema_migrations", &[])
            .unwrap()
            .get(0);
        assert_eq!(version as usize, MIGRATIONS.len());
        let image = s
            .get_evidence(&format!("{}-plate", old.event_id))
            .unwrap()
            .expect("the image is kept");
        assert_eq!(image.bytes, vec![0xff, 0xd8, 0xff, 0xd9]);
        let lo: u32 = s
            .client
            .query_one("SELECT lo FROM evidence", &[])
            .unwrap()
            .get(0);
        let objects = |s: &mut PgStore| -> i64 {
            s.client
                .query_one(
                    "SELECT count(*) FROM pg_largeobject_metadata WHERE oid = $1",
                    &[&lo],
                )
                .unwrap()
                .get(0)
        };
        assert_eq!(objects(&mut s), 1);
        assert_eq!(
            s.purge(protocol::EventKind::VehiclePass, old.frame_time_ms + 1)
                .unwrap(),
            (1, 1)
        );
        assert_eq!(objects(&mut s), 0, "retention unlinks the image's object");
        drop(s);
        drop_schema(&url, &schema).unwrap();
    }
}
