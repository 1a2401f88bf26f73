//! Stage `outbox`: every event and evidence image is written to disk, fsynced, before it is
//! published, and stays there until an aggregator acknowledges that it has stored it.
//!
//! The outbox is a SQLite file (WAL, `synchronous = FULL`: a commit is on disk when it
//! returns), one row per item in the order the cameras produced them. Items never
//! acknowledged are published again, in that order, `resend_after_secs` after their last
//! try, and everything left at start-up is replayed: an outage of the uplink or of the
//! aggregator, or a `kill -9` of the node, loses nothing that reached the outbox. The
//! aggregator absorbs the duplicates by id.
//!
//! Limits: `max_mb` of payload. When full, the oldest evidence images go first (an event
//! without its pictures is still evidence of a passage); when only events are left the
//! policy decides: `block` (default) stops taking new items, so the cameras wait and drop
//! frames (counted) instead of events; `drop_oldest` drops the oldest events (counted as
//! lost). Items older than `ttl_hours` are dropped and counted.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Stop taking new items until acknowledgements free space (cameras drop frames).
    Block,
    /// Drop the oldest events (after every evidence image).
    DropOldest,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// The outbox file (default `<state_dir>/outbox-<node id>.db`, `state_dir` from
    /// `[registry]` or `.cache/state`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Payload bytes kept at most, MiB.
    #[serde(default = "d_max_mb")]
    pub max_mb: u64,
    #[serde(default = "d_when_full")]
    pub when_full: WhenFull,
    /// Items older than this are dropped (counted), hours.
    #[serde(default = "d_ttl")]
    pub ttl_hours: u64,
    /// An item not acknowledged this long after it was published is published again.
    #[serde(default = "d_resend")]
    pub resend_after_secs: u64,
    /// When the cameras are done (files ended), how long to wait for the last
    /// acknowledgements; what is left is replayed at the next start.
    #[serde(default = "d_drain")]
    pub drain_secs: u64,
    /// Aggregators whose acknowledgements count, by scope (`320505`, `320500`, `all`);
    /// default: this node's county and `all`. A city aggregator's acknowledgement alone
    /// does not free an item its county has not stored.
    #[serde(default)]
    pub ack_scopes: Vec<String>,
}

fn d_max_mb() -> u64 {
    1024
}
fn d_when_full() -> WhenFull {
    WhenFull::Block
}
fn d_ttl() -> u64 {
    72
}
fn d_resend() -> u64 {
    5
}
fn d_drain() -> u64 {
    20
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            path: None,
            max_mb: d_max_mb(),
            when_full: d_when_full(),
            ttl_hours: d_ttl(),
            resend_after_secs: d_resend(),
            drain_secs: d_drain(),
            ack_scopes: vec![],
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("outbox '{path}': {message}")]
pub struct OutboxError {
    pub path: String,
    pub message: String,
}

/// What an item is: an event, or an evidence image (dropped first when full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemKind {
    Event,
    Evidence,
}

impl ItemKind {
    fn as_str(self) -> &'static str {
        match self {
            ItemKind::Event => "event",
            ItemKind::Evidence => "evidence",
        }
    }
}

/// An item to keep and publish.
#[derive(Debug, Clone, PartialEq)]
pub struct NewItem {
    pub key: String,
    pub kind: ItemKind,
    /// Event id or image id: what acknowledgements name.
    pub id: String,
    pub payload: Vec<u8>,
}

/// An item as kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub seq: i64,
    pub key: String,
    pub kind: ItemKind,
    pub id: String,
    pub payload: Vec<u8>,
    /// Published before (a replay now).
    pub sent_before: bool,
}

/// Backlog and what happened to items, for metrics and the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    pub items: u64,
    pub bytes: u64,
    /// Creation time of the oldest item kept, UTC ms.
    pub oldest_ms: Option<i64>,
}

/// The outbox file's layout, kept in `PRAGMA user_version` (0: a file from before versions
/// were kept, whose layout is version 1). A file of a newer version is refused.
pub const OUTBOX_SCHEMA_VERSION: i64 = 1;

/// Checks an outbox file's schema version without opening it through SQLite
/// ([`protocol::sqlite_file::user_version`]: no lock, no WAL files left behind whoever runs
/// it). An empty file is version 0; a newer one than this release's is refused with the
/// message [`Outbox::open`] gives.
pub fn check_schema_version(path: &Path) -> Result<i64, OutboxError> {
    let err = |message: String| OutboxError {
        path: path.display().to_string(),
        message,
    };
    let found = protocol::sqlite_file::user_version(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::InvalidData => err(
            "not an SQLite file: outbox.path names another file; point it at the outbox or move the file aside".into(),
        ),
        _ => err(format!("{e}; check outbox.path")),
    })?;
    if found > OUTBOX_SCHEMA_VERSION {
        return Err(err(newer_message(found)));
    }
    Ok(found)
}

fn newer_message(found: i64) -> String {
    format!("its schema version {found} is newer than this edge node's {OUTBOX_SCHEMA_VERSION}: a newer release wrote it; run that release until its outbox is drained, or move the file aside (its events then stay unsent) (README: Upgrades and rollback)")
}

pub struct Outbox {
    conn: Connection,
    path: String,
}

const WRITABLE: &str = "check outbox.path and that its folder is writable";

/// Maps a SQLite error to one naming the outbox file.
fn sql(path: &str) -> impl Fn(rusqlite::Error) -> OutboxError + '_ {
    move |e| OutboxError {
        path: path.to_string(),
        message: format!("{e}; {WRITABLE}"),
    }
}

impl Outbox {
    pub fn open(path: &Path) -> Result<Outbox, OutboxError> {
        let err = |e: &dyn std::fmt::Display| OutboxError {
            path: path.display().to_string(),
            message: format!("{e}; {WRITABLE}"),
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let conn = Connection::open(path).map_err(|e| err(&e))?;
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| err(&e))?;
        if found > OUTBOX_SCHEMA_VERSION {
            return Err(OutboxError {
                path: path.display().to_string(),
                message: newer_message(found),
            });
        }
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS outbox (
                 seq        INTEGER PRIMARY KEY AUTOINCREMENT,
                 key        TEXT NOT NULL,
                 kind       TEXT NOT NULL,
                 id         TEXT NOT NULL,
                 payload    BLOB NOT NULL,
                 bytes      INTEGER NOT NULL,
                 created_ms INTEGER NOT NULL,
                 sent_ms    INTEGER,
                 attempts   INTEGER NOT NULL DEFAULT 0
             );
             CREATE INDEX IF NOT EXISTS outbox_id ON outbox (id);
             CREATE INDEX IF NOT EXISTS outbox_kind ON outbox (kind, seq);",
        )
        .map_err(|e| err(&e))?;
        conn.pragma_update(None, "user_version", OUTBOX_SCHEMA_VERSION)
            .map_err(|e| err(&e))?;
        Ok(Outbox {
            conn,
            path: path.display().to_string(),
        })
    }

    /// Caps the file at its present size (`full`) or lifts the cap: SQLite then fails a
    /// write as a full disk does ("database or disk is full"), for tests of that fault.
    #[doc(hidden)]
    pub fn simulate_full_disk(&self, full: bool) {
        let pages: i64 = if full {
            self.conn
                .query_row("PRAGMA page_count", [], |r| r.get(0))
                .expect("page_count")
        } else {
            i64::from(u32::MAX)
        };
        let _: i64 = self
            .conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })
            .expect("max_page_count");
    }

    /// Keeps `items` in one transaction; on disk when this returns.
    pub fn put(&mut self, items: &[NewItem], now_ms: i64) -> Result<(), OutboxError> {
        let tx = self.conn.transaction().map_err(sql(&self.path))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO outbox (key, kind, id, payload, bytes, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(sql(&self.path))?;
            for it in items {
                stmt.execute(params![
                    it.key,
                    it.kind.as_str(),
                    it.id,
                    it.payload,
                    it.payload.len() as i64,
                    now_ms
                ])
                .map_err(sql(&self.path))?;
            }
        }
        tx.commit().map_err(sql(&self.path))
    }

    /// Items to publish now, in the order they were produced: never sent, or not
    /// acknowledged `resend_ms` after they were sent, doubling per try up to 16 times
    /// `resend_ms` (an aggregator that is down is not flooded; [`Outbox::replay_all`] brings
    /// everything forward when one appears).
    pub fn due(
        &mut self,
        now_ms: i64,
        resend_ms: i64,
        limit: usize,
    ) -> Result<Vec<Item>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, key, kind, id, payload, sent_ms FROM outbox
                 WHERE sent_ms IS NULL OR sent_ms + ?2 * (1 << MIN(MAX(attempts - 1, 0), 4)) <= ?1
                 ORDER BY seq LIMIT ?3",
            )
            .map_err(sql(&self.path))?;
        let rows = stmt
            .query_map(params![now_ms, resend_ms, limit as i64], |r| {
                Ok(Item {
                    seq: r.get(0)?,
                    key: r.get(1)?,
                    kind: if r.get::<_, String>(2)? == "event" {
                        ItemKind::Event
                    } else {
                        ItemKind::Evidence
                    },
                    id: r.get(3)?,
                    payload: r.get(4)?,
                    sent_before: r.get::<_, Option<i64>>(5)?.is_some(),
                })
            })
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }

    pub fn mark_sent(&mut self, seqs: &[i64], now_ms: i64) -> Result<(), OutboxError> {
        let tx = self.conn.transaction().map_err(sql(&self.path))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE outbox SET sent_ms = ?2, attempts = attempts + 1 WHERE seq = ?1",
                )
                .map_err(sql(&self.path))?;
            for s in seqs {
                stmt.execute(params![s, now_ms]).map_err(sql(&self.path))?;
            }
        }
        tx.commit().map_err(sql(&self.path))
    }

    /// Everything kept is due now (an aggregator just appeared): replayed in order.
    pub fn replay_all(&mut self) -> Result<(), OutboxError> {
        self.conn
            .execute(
                "UPDATE outbox SET sent_ms = 0, attempts = 0 WHERE sent_ms IS NOT NULL",
                [],
            )
            .map(|_| ())
            .map_err(sql(&self.path))
    }

    /// Drops acknowledged items; returns how many were kept here.
    pub fn ack(&mut self, ids: &[String]) -> Result<u64, OutboxError> {
        let tx = self.conn.transaction().map_err(sql(&self.path))?;
        let mut n = 0;
        {
            let mut stmt = tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1")
                .map_err(sql(&self.path))?;
            for id in ids {
                n += stmt.execute([id]).map_err(sql(&self.path))? as u64;
            }
        }
        tx.commit().map_err(sql(&self.path))?;
        Ok(n)
    }

    /// Drops items created before `before_ms`; returns (events, images) dropped.
    pub fn expire(&mut self, before_ms: i64) -> Result<(u64, u64), OutboxError> {
        let count = |kind: &str| -> Result<u64, OutboxError> {
            self.conn
                .execute(
                    "DELETE FROM outbox WHERE kind = ?1 AND created_ms < ?2",
                    params![kind, before_ms],
                )
                .map(|n| n as u64)
                .map_err(sql(&self.path))
        };
        Ok((count("event")?, count("evidence")?))
    }

    pub fn backlog(&mut self) -> Result<Backlog, OutboxError> {
        self.conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(bytes), 0), MIN(created_ms) FROM outbox",
                [],
                |r| {
                    Ok(Backlog {
                        items: r.get::<_, i64>(0)? as u64,
                        bytes: r.get::<_, i64>(1)? as u64,
                        oldest_ms: r.get(2)?,
                    })
                },
            )
            .map_err(sql(&self.path))
    }

    /// Brings the payload under `max_bytes`: the oldest images first, then, with
    /// `DropOldest`, the oldest events. Returns (images, events) dropped and whether it is
    /// still full (only events left under `Block`).
    pub fn enforce_cap(
        &mut self,
        max_bytes: u64,
        policy: WhenFull,
    ) -> Result<(u64, u64, bool), OutboxError> {
        let mut dropped = (0, 0);
        loop {
            let b = self.backlog()?;
            if b.bytes <= max_bytes {
                return Ok((dropped.0, dropped.1, false));
            }
            let victim: Option<(i64, String)> = self
                .conn
                .query_row(
                    "SELECT seq, kind FROM outbox WHERE kind = 'evidence' ORDER BY seq LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .ok()
                .or_else(|| {
                    (policy == WhenFull::DropOldest)
                        .then(|| {
                            self.conn
                                .query_row(
                                    "SELECT seq, kind FROM outbox ORDER BY seq LIMIT 1",
                                    [],
                                    |r| Ok((r.get(0)?, r.get(1)?)),
                                )
                                .ok()
                        })
                        .flatten()
                });
            let Some((seq, kind)) = victim else {
                return Ok((dropped.0, dropped.1, true));
            };
            self.conn
                .execute("DELETE FROM outbox WHERE seq = ?1", [seq])
                .map_err(sql(&self.path))?;
            if kind == "evidence" {
                dropped.0 += 1;
            } else {
                dropped.1 += 1;
            }
        }
    }

    /// The ids kept, in order (tests and tools).
    pub fn ids(&mut self) -> Result<Vec<String>, OutboxError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id FROM outbox ORDER BY seq")
            .map_err(sql(&self.path))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql(&self.path))?;
        rows.collect::<Result<_, _>>().map_err(sql(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: &str, kind: ItemKind, bytes: usize) -> NewItem {
        NewItem {
            key: format!("k/{id}"),
            kind,
            id: id.into(),
            payload: vec![7; bytes],
        }
    }

    fn temp() -> PathBuf {
        std::env::temp_dir().join(format!("outbox-test-{}.db", ulid::Ulid::new()))
    }

    #[test]
    fn an_outbox_keeps_its_version_and_a_newer_one_is_refused_untouched() {
        let path = temp();
        // A file of the first release (no version kept) opens, keeps its items, and is
        // stamped with this version.
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL, kind TEXT NOT NULL, id TEXT NOT NULL, payload BLOB NOT NULL, bytes INTEGER NOT NULL, created_ms INTEGER NOT NULL, sent_ms INTEGER, attempts INTEGER NOT NULL DEFAULT 0);
                 INSERT INTO outbox (key, kind, id, payload, bytes, created_ms) VALUES ('k/a', 'event', 'a', x'07', 1, 5);",
            )
            .unwrap();
        }
        let mut o = Outbox::open(&path).unwrap();
        assert_eq!(o.backlog().unwrap().items, 1);
        drop(o);
        let version = |p: &Path| -> i64 {
            Connection::open(p)
                .unwrap()
                .pragma_query_value(None, "user_version", |r| r.get(0))
                .unwrap()
        };
        assert_eq!(version(&path), OUTBOX_SCHEMA_VERSION);
        // The check `edge-node --check` makes reads the same version from the header.
        assert_eq!(check_schema_version(&path).unwrap(), OUTBOX_SCHEMA_VERSION);
        // One written by a newer release is refused, named, and left as it was, by the
        // check and by opening it.
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        for e in [
            check_schema_version(&path).expect_err("refused"),
            Outbox::open(&path).err().expect("refused"),
        ] {
            let e = e.to_string();
            assert!(
                e.contains("schema version 7 is newer than this edge node's 1")
                    && e.contains(&path.display().to_string()),
                "{e}"
            );
        }
        assert_eq!(version(&path), 7);
        // Not an SQLite file: named as such.
        let other = temp();
        std::fs::write(&other, b"not a database, long enough to have a header of a hundred bytes if it were one...........").unwrap();
        let e = check_schema_version(&other)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("not an SQLite file"), "{e}");
        let _ = std::fs::remove_file(&other);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn kept_in_order_until_acknowledged_and_replayed_after_reopening() {
        let path = temp();
        let mut o = Outbox::open(&path).unwrap();
        o.put(
            &[
                item("img1", ItemKind::Evidence, 100),
                item("ev1", ItemKind::Event, 10),
                item("ev2", ItemKind::Event, 10),
            ],
            1_000,
        )
        .unwrap();
        let due = o.due(1_000, 1_000, 10).unwrap();
        let ids: Vec<&str> = due.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["img1", "ev1", "ev2"]);
        assert!(due.iter().all(|i| !i.sent_before));
        o.mark_sent(&due.iter().map(|i| i.seq).collect::<Vec<_>>(), 2_000)
            .unwrap();
        assert!(o.due(2_999, 1_000, 10).unwrap().is_empty(), "just sent");
        assert_eq!(o.ack(&["ev1".into(), "unknown".into()]).unwrap(), 1);
        // Not acknowledged after the resend delay: sent again, in order.
        let again = o.due(3_000, 1_000, 10).unwrap();
        assert_eq!(
            again.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
            ["img1", "ev2"]
        );
        assert!(again.iter().all(|i| i.sent_before));
        // The next try waits twice as long, unless an aggregator appears.
        o.mark_sent(&again.iter().map(|i| i.seq).collect::<Vec<_>>(), 3_000)
            .unwrap();
        assert!(o.due(4_500, 1_000, 10).unwrap().is_empty());
        assert_eq!(o.due(5_000, 1_000, 10).unwrap().len(), 2);
        o.replay_all().unwrap();
        let replay = o.due(3_001, 1_000, 10).unwrap();
        assert_eq!(replay.len(), 2);
        assert!(replay.iter().all(|i| i.sent_before), "counted as replays");
        drop(o);
        // After a crash: everything not acknowledged is still there.
        let mut o = Outbox::open(&path).unwrap();
        assert_eq!(o.ids().unwrap(), ["img1", "ev2"]);
        assert_eq!(
            o.backlog().unwrap(),
            Backlog {
                items: 2,
                bytes: 110,
                oldest_ms: Some(1_000)
            }
        );
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn when_full_images_go_first_then_the_policy_decides() {
        let path = temp();
        let mut o = Outbox::open(&path).unwrap();
        o.put(
            &[
                item("ev1", ItemKind::Event, 40),
                item("img1", ItemKind::Evidence, 50),
                item("ev2", ItemKind::Event, 40),
                item("img2", ItemKind::Evidence, 50),
            ],
            0,
        )
        .unwrap();
        // 180 bytes, cap 100: both images go, the events stay (80 bytes).
        assert_eq!(o.enforce_cap(100, WhenFull::Block).unwrap(), (2, 0, false));
        assert_eq!(o.ids().unwrap(), ["ev1", "ev2"]);
        // Cap 50 with only events left: blocked, nothing dropped.
        assert_eq!(o.enforce_cap(50, WhenFull::Block).unwrap(), (0, 0, true));
        // Or the oldest event goes.
        assert_eq!(
            o.enforce_cap(50, WhenFull::DropOldest).unwrap(),
            (0, 1, false)
        );
        assert_eq!(o.ids().unwrap(), ["ev2"]);
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn items_past_their_time_to_live_are_dropped() {
        let path = temp();
        let mut o = Outbox::open(&path).unwrap();
        o.put(&[item("old", ItemKind::Event, 1)], 1_000).unwrap();
        o.put(&[item("oldimg", ItemKind::Evidence, 1)], 1_000)
            .unwrap();
        o.put(&[item("new", ItemKind::Event, 1)], 5_000).unwrap();
        assert_eq!(o.expire(2_000).unwrap(), (1, 1));
        assert_eq!(o.ids().unwrap(), ["new"]);
        std::fs::remove_file(&path).ok();
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let e = Outbox::open(Path::new("/proc/no/such/outbox.db"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("/proc/no/such/outbox.db") && e.contains("outbox.path"),
            "{e}"
        );
    }
}
