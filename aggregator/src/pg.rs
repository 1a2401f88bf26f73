//! The PostgreSQL backend of [`EventStore`]: the same migrations and queries as SQLite, in a
//! schema of its own (`storage.postgres_schema`), migrated on connect. Production runs it;
//! the conformance suite runs it against the server on 127.0.0.1:5432.

use postgres::{Client, NoTls};

use crate::store::{check_review, dialect, AuditEntry, Review, MIGRATIONS, POSTGRES};
use protocol::Event;

use crate::store::{
    columns, decode_row, export_stats_from, flow_sql, json_str, list_sql, page_from_rows,
    placeholders, EventFilter, EventStore, EvidenceBlob, ExportItem, ExportOutcome, ExportStats,
    FlowQuery, FlowRow, Page, SqlArg, StoreError, StoreStats, EXPORT_DONE, EXPORT_DUE,
    EXPORT_FORGET, EXPORT_REFUSED, EXPORT_STATS,
};

pub struct PgStore {
    client: Client,
    export: bool,
}

fn pg(e: postgres::Error) -> StoreError {
    // The server's own message says what went wrong; `Display` only says "db error".
    match e.as_db_error() {
        Some(db) => StoreError::Pg(format!("{}: {}", db.severity(), db.message())),
        None => StoreError::Pg(e.to_string()),
    }
}

impl PgStore {
    /// Connects (`url` like `host=127.0.0.1 port=5432 user=postgres dbname=test` or
    /// `postgresql://...`), creates `schema` if missing and applies pending migrations.
    pub fn connect(url: &str, schema: &str) -> Result<PgStore, StoreError> {
        if schema.is_empty()
            || !schema
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StoreError::Pg(format!(
                "schema name '{schema}' must be letters, digits and '_'"
            )));
        }
        let mut client = Client::connect(url, NoTls)
            .map_err(|e| StoreError::Pg(format!("cannot connect to '{url}': {e}; check storage.postgres_url and that the server runs")))?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema};
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
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(&dialect(m, &POSTGRES)).map_err(pg)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)?;
        Ok(PgStore {
            client,
            export: false,
        })
    }
}

impl PgStore {
    fn query(&mut self, sql: &str, args: Vec<SqlArg>) -> Result<Vec<postgres::Row>, StoreError> {
        let params: Vec<_> = args.into_iter().map(SqlArg::into_pg).collect();
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> =
            params.iter().map(|b| b.as_ref()).collect();
        self.client.query(sql, &refs).map_err(pg)
    }
}

impl EventStore for PgStore {
    fn insert_batch(&mut self, events: &[Event], received_ms: i64) -> Result<usize, StoreError> {
        let mut tx = self.client.transaction().map_err(pg)?;
        let stmt = tx
            .prepare(
                "INSERT INTO events (event_id, kind, severity, node_id, checkpoint_id, camera_id, frame_time_ms, received_ms, review, class, phase, json, plate, lane)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) ON CONFLICT (event_id) DO NOTHING",
            )
            .map_err(pg)?;
        let queue = tx
            .prepare(
                "INSERT INTO export_queue (event_id, state, attempts, next_try_ms, enqueued_ms)
                 VALUES ($1, 'queued', 0, $2, $2) ON CONFLICT (event_id) DO NOTHING",
            )
            .map_err(pg)?;
        let mut new = 0;
        for ev in events {
            let c = columns(ev);
            let json = String::from_utf8(ev.encode()).expect("JSON is UTF-8");
            let inserted = tx
                .execute(
                    &stmt,
                    &[
                        &ev.event_id,
                        &c.kind,
                        &json_str(&ev.severity),
                        &ev.node_id.as_str(),
                        &ev.checkpoint_id.as_str(),
                        &ev.camera_id.as_str(),
                        &ev.frame_time_ms,
                        &received_ms,
                        &json_str(&ev.review),
                        &c.class,
                        &c.phase,
                        &json,
                        &c.plate,
                        &ev.lane.map(i64::from),
                    ],
                )
                .map_err(pg)? as usize;
            if self.export && inserted == 1 && ev.kind() == protocol::EventKind::VehiclePass {
                tx.execute(&queue, &[&ev.event_id, &received_ms])
                    .map_err(pg)?;
            }
            new += inserted;
        }
        tx.commit().map_err(pg)?;
        Ok(new)
    }

    fn get(&mut self, event_id: &str) -> Result<Option<Event>, StoreError> {
        let row = self
            .client
            .query_opt("SELECT json FROM events WHERE event_id = $1", &[&event_id])
            .map_err(pg)?;
        row.map(|r| decode_row(event_id, &r.get::<_, String>(0)))
            .transpose()
    }

    fn list(&mut self, f: &EventFilter) -> Result<Page, StoreError> {
        let (sql, args, limit) = list_sql(f, |n| format!("${n}"))?;
        let rows = self.query(&sql, args)?;
        page_from_rows(
            rows.into_iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
            limit,
        )
    }

    fn flow(&mut self, q: &FlowQuery) -> Result<Vec<FlowRow>, StoreError> {
        let (sql, args) = flow_sql(q, |n| format!("${n}"))?;
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

    fn stats(&mut self) -> Result<StoreStats, StoreError> {
        let mut s = StoreStats::default();
        for r in self
            .client
            .query("SELECT kind, COUNT(*) FROM events GROUP BY kind", &[])
            .map_err(pg)?
        {
            let n = r.get::<_, i64>(1) as u64;
            s.events_total += n;
            s.by_kind.insert(r.get(0), n);
        }
        for r in self
            .client
            .query("SELECT class, COUNT(*) FROM events WHERE kind = 'object_track' AND phase = 'end' GROUP BY class", &[])
            .map_err(pg)?
        {
            s.object_tracks_by_class.insert(r.get(0), r.get::<_, i64>(1) as u64);
        }
        s.evidence_images = self
            .client
            .query_one("SELECT COUNT(*) FROM evidence", &[])
            .map_err(pg)?
            .get::<_, i64>(0) as u64;
        Ok(s)
    }

    fn insert_evidence(&mut self, e: &EvidenceBlob, received_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .client
            .execute(
                "INSERT INTO evidence (image_id, checkpoint_id, camera_id, sha256, content_type, bytes, received_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (image_id) DO NOTHING",
                &[&e.image_id, &e.checkpoint_id, &e.camera_id, &e.sha256, &e.content_type, &e.bytes, &received_ms],
            )
            .map_err(pg)?;
        Ok(n == 1)
    }

    fn get_evidence(&mut self, image_id: &str) -> Result<Option<EvidenceBlob>, StoreError> {
        let row = self
            .client
            .query_opt("SELECT image_id, checkpoint_id, camera_id, sha256, content_type, bytes FROM evidence WHERE image_id = $1", &[&image_id])
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
        let mut images = 0;
        let forget = placeholders(EXPORT_FORGET, |n| format!("${n}"));
        for id in &ids {
            tx.execute(forget.as_str(), &[id]).map_err(pg)?;
            // Image ids are `<event id>-<role>`.
            images += tx
                .execute(
                    "DELETE FROM evidence WHERE image_id >= $1 AND image_id < $2",
                    &[&format!("{id}-"), &format!("{id}.")],
                )
                .map_err(pg)?;
        }
        tx.commit().map_err(pg)?;
        Ok((ids.len() as u64, images))
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
        let json: String = row
            .ok_or_else(|| StoreError::NotFound(event_id.to_string()))?
            .get(0);
        let mut ev = decode_row(event_id, &json)?;
        check_review(&ev, r)?;
        ev.review = r.decision;
        let new_json = String::from_utf8(ev.encode()).expect("JSON is UTF-8");
        tx.execute(
            "UPDATE events SET review = $2, json = $3 WHERE event_id = $1",
            &[&event_id, &json_str(&ev.review), &new_json],
        )
        .map_err(pg)?;
        tx.execute(
            "INSERT INTO audit (event_id, action, actor, detail, at_ms) VALUES ($1, 'review', $2, $3, $4)",
            &[&event_id, &r.reviewer, &format!("{}: {}", json_str(&r.decision), r.reason), &at_ms],
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

    fn audit_of(&mut self, event_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = self.client.query("SELECT event_id, action, actor, detail, at_ms FROM audit WHERE event_id = $1 ORDER BY id", &[&event_id]).map_err(pg)?;
        Ok(rows
            .into_iter()
            .map(|r| AuditEntry {
                event_id: r.get(0),
                action: r.get(1),
                actor: r.get(2),
                detail: r.get(3),
                at_ms: r.get(4),
            })
            .collect())
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
                    event: decode_row(&id, &r.get::<_, String>(2))?,
                    attempts: r.get::<_, i64>(1) as u32,
                })
            })
            .collect()
    }

    fn export_result(
        &mut self,
        event_id: &str,
        outcome: ExportOutcome,
        _now_ms: i64,
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
}
