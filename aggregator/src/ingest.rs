//! Stages `subscribe -> validate -> store`: events from zenoh into the database.
//!
//! Input: zenoh samples under the aggregator's scope. Output: stored rows and counters.
//! Samples pass from zenoh's callback into a bounded channel (full: zenoh waits, nothing is
//! dropped) and are stored by one writer thread in batched transactions. A malformed,
//! oversized or wrong-version payload, or one whose ids contradict its key, is rejected,
//! counted by reason and logged (rate-limited); it never stops ingest.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::Duration;

use protocol::{keys, Event, EventError};
use serde::Serialize;
use tracing::{debug, error, warn};

use crate::store::EventStore;

/// Samples waiting to be stored, at most...
pub const INGEST_QUEUE: usize = 16384;
/// ...and their bytes at most (evidence images are large): the ingest queue's memory bound.
pub const INGEST_QUEUE_BYTES: u64 = 256 << 20;
/// Largest batch stored in one transaction. Under load the writer stores up to this many events per transaction: large batches
/// share the index pages they touch (ingest into SQLite: 27,000/s in batches of 1,000,
/// 51,000/s in batches of 10,000 at a million rows).
const MAX_BATCH: usize = 8192;

#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub store_errors: AtomicU64,
    pub evidence_stored: AtomicU64,
    pub purged_events: AtomicU64,
    pub purged_images: AtomicU64,
    pub anomalies_raised: AtomicU64,
    /// Samples in the ingest queue now, and the most there have been.
    pub queued: AtomicU64,
    pub queue_peak: AtomicU64,
    pub queued_bytes: AtomicU64,
    /// Samples that found the queue full (zenoh's delivery waited: back-pressure), and for
    /// how long in all, microseconds.
    pub queue_full: AtomicU64,
    pub blocked_us: AtomicU64,
    /// Samples whose payload did not match the digest attached to it
    /// ([`protocol::integrity`]): dropped unacknowledged, so that their node sends them again.
    pub damaged: AtomicU64,
    rejected_by_reason: Mutex<BTreeMap<String, u64>>,
    /// The store's error while the writer cannot store (cleared by the next success):
    /// `/health` says degraded.
    pub store_failing: Mutex<Option<String>>,
    /// Set when the aggregator stops: a writer retrying a failing store gives up after
    /// [`STOP_GRACE`], leaving the batch unacknowledged (the nodes send it again).
    pub stopping: std::sync::atomic::AtomicBool,
    /// Events not taken because their checkpoint is not registered (held at their node),
    /// per checkpoint.
    held_unregistered: Mutex<BTreeMap<String, u64>>,
    /// Per writer, the store time of the batch it is committing (0 when idle): a county
    /// offers the city only rows stored before the earliest of them (see [`crate::sync`]).
    writing_since_ms: [std::sync::atomic::AtomicI64; MAX_WRITERS],
}

/// Most writers (store connections ingesting side by side) an aggregator runs.
pub const MAX_WRITERS: usize = 8;

/// The ingest queue: one bounded queue per writer. A sample goes to the writer of its
/// checkpoint (the key's fourth segment), so one checkpoint's events are stored in the
/// order they came, by one connection. Cloned plates span checkpoints and so writers: each
/// writer correlates a batch after committing it, so of two passes of one plate stored by
/// two writers at once the later commit sees the earlier one (an alert's id is derived from
/// its passes: found twice, it is stored and pushed once).
#[derive(Clone)]
pub struct Queue(Vec<SyncSender<Sample>>);

/// A sample as the subscribers hand it on: key and payload.
pub type Sample = (String, Vec<u8>);

impl Queue {
    /// `writers` queues of [`INGEST_QUEUE`] samples each, with their receiving ends.
    pub fn new(writers: usize) -> (Queue, Vec<Receiver<Sample>>) {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..writers.clamp(1, MAX_WRITERS))
            .map(|_| std::sync::mpsc::sync_channel(INGEST_QUEUE))
            .unzip();
        (Queue(tx), rx)
    }

    /// The writer a sample's key goes to: by its checkpoint (FNV-1a, the same in every
    /// build and process).
    pub fn writer_of(&self, key: &str) -> usize {
        let checkpoint = key.split('/').nth(3).unwrap_or(key);
        let h = checkpoint.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        (h % self.0.len() as u64) as usize
    }

    fn of(&self, key: &str) -> &SyncSender<Sample> {
        &self.0[self.writer_of(key)]
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestSnapshot {
    pub received: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub store_errors: u64,
    pub evidence_stored: u64,
    pub purged_events: u64,
    pub purged_images: u64,
    pub anomalies_raised: u64,
    pub queued: u64,
    pub queued_bytes: u64,
    pub queue_peak: u64,
    pub queue_full: u64,
    pub blocked_seconds: f64,
    pub damaged: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    /// The store's error while the writer cannot store.
    pub store_failing: Option<String>,
    /// Events held at their nodes because their checkpoint is not in `[[checkpoints]]`,
    /// per checkpoint (each delivery counted).
    pub held_unregistered: BTreeMap<String, u64>,
}

impl IngestMetrics {
    /// Takes a sample as zenoh delivered it: checked against the digest its publisher
    /// attached, then queued ([`Self::enqueue`]). A damaged one is dropped without an
    /// acknowledgement (its node sends it again), counted and logged; it is never refused,
    /// which would tell the node to drop it.
    pub fn receive(&self, queue: &Queue, key: &str, payload: Vec<u8>, attachment: Option<&[u8]>) {
        if let Err(why) = protocol::integrity::check(&payload, attachment) {
            let n = self.damaged.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(key, damaged_total = n, "Sample damaged on the way ({why}); dropped unacknowledged, its node sends it again");
            return;
        }
        self.enqueue(queue, (key.to_string(), payload));
    }

    /// Hands a sample to the writer: at once when the queue has room, else waiting for it
    /// (zenoh's delivery waits with it, and so, through the transport, do the publishers),
    /// counted. Nothing is dropped while the writer runs.
    pub fn enqueue(&self, queue: &Queue, item: Sample) {
        let tx = queue.of(&item.0);
        let bytes = (item.0.len() + item.1.len()) as u64;
        // Over the byte bound, wait for the writer (one sample always passes).
        let mut waited = None;
        while self.queued.load(Ordering::Relaxed) > 0
            && self.queued_bytes.load(Ordering::Relaxed) + bytes > INGEST_QUEUE_BYTES
        {
            waited.get_or_insert_with(std::time::Instant::now);
            std::thread::sleep(Duration::from_millis(1));
        }
        if let Some(t) = waited {
            self.queue_full.fetch_add(1, Ordering::Relaxed);
            self.blocked_us
                .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
        let depth = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        self.queue_peak.fetch_max(depth, Ordering::Relaxed);
        let failed = match tx.try_send(item) {
            Ok(()) => false,
            Err(TrySendError::Full(item)) => {
                self.queue_full.fetch_add(1, Ordering::Relaxed);
                let t = std::time::Instant::now();
                let failed = tx.send(item).is_err();
                self.blocked_us
                    .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                failed
            }
            Err(TrySendError::Disconnected(_)) => true,
        };
        if failed {
            // Stopping: the writer is gone; the node resends what was not acknowledged.
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// The store time of the earliest batch a writer is committing now; 0 when none is.
    pub fn writing_since_ms(&self) -> i64 {
        self.writing_since_ms
            .iter()
            .map(|w| w.load(Ordering::SeqCst))
            .filter(|t| *t > 0)
            .min()
            .unwrap_or(0)
    }

    pub fn snapshot(&self) -> IngestSnapshot {
        IngestSnapshot {
            received: self.received.load(Ordering::Relaxed),
            stored: self.stored.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            store_errors: self.store_errors.load(Ordering::Relaxed),
            evidence_stored: self.evidence_stored.load(Ordering::Relaxed),
            purged_events: self.purged_events.load(Ordering::Relaxed),
            purged_images: self.purged_images.load(Ordering::Relaxed),
            anomalies_raised: self.anomalies_raised.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            queued_bytes: self.queued_bytes.load(Ordering::Relaxed),
            queue_peak: self.queue_peak.load(Ordering::Relaxed),
            queue_full: self.queue_full.load(Ordering::Relaxed),
            blocked_seconds: self.blocked_us.load(Ordering::Relaxed) as f64 / 1e6,
            damaged: self.damaged.load(Ordering::Relaxed),
            rejected_by_reason: self
                .rejected_by_reason
                .lock()
                .expect("not poisoned")
                .clone(),
            store_failing: self.store_failing.lock().expect("not poisoned").clone(),
            held_unregistered: self.held_unregistered.lock().expect("not poisoned").clone(),
        }
    }

    /// Counts an event of an unregistered checkpoint left unacknowledged at its node.
    pub fn hold(&self, checkpoint: &str) {
        let mut held = self.held_unregistered.lock().expect("not poisoned");
        let n = held.entry(checkpoint.to_string()).or_default();
        *n += 1;
        if *n == 1 || n.is_multiple_of(1000) {
            warn!(checkpoint, held = *n, "Events of a checkpoint not in [[checkpoints]] are held at their node (not acknowledged); add the checkpoint to the aggregator's config and restart it");
        }
    }

    pub fn reject(&self, key: &str, reason: &str, detail: &str) {
        let n = self.rejected.fetch_add(1, Ordering::Relaxed) + 1;
        *self
            .rejected_by_reason
            .lock()
            .expect("not poisoned")
            .entry(reason.to_string())
            .or_default() += 1;
        if n <= 10 || n.is_multiple_of(1000) {
            warn!(key, reason, detail, rejected_total = n, "Event rejected");
        }
    }
}

/// The reason for an event of a newer schema than this build's: a node upgraded before its
/// aggregator. It is counted but neither stored nor refused: unacknowledged, the node keeps
/// it in its outbox and sends it again until an upgraded aggregator takes it.
pub const NEWER_SCHEMA: &str = "schema_version_newer";

/// Checks one sample: payload decodes and validates, and its ids match the key it came on.
pub fn validate(key: &str, payload: &[u8]) -> Result<Event, (&'static str, String)> {
    if has_nul_escape(payload) {
        // PostgreSQL cannot hold a NUL in text, SQLite would store a plate no query finds:
        // no real event carries one.
        return Err((
            "nul_character",
            format!("event on key '{key}' holds a NUL character (\\u0000) in a string"),
        ));
    }
    let mut ev = Event::decode(payload).map_err(|e| {
        let reason = match e {
            EventError::TooLarge(_) => "oversized",
            EventError::Malformed(_) => "malformed",
            // A newer node than this aggregator: held, not refused (see NEWER_SCHEMA).
            EventError::Version { found } if found > protocol::SCHEMA_VERSION as u64 => {
                NEWER_SCHEMA
            }
            EventError::Version { .. } => "schema_version",
            _ => "invalid",
        };
        (reason, e.to_string())
    })?;
    let k =
        keys::parse_event_key(key).ok_or(("key", format!("key '{key}' is not an event key")))?;
    // The key's city and county segments are the checkpoint's own: an event of another
    // county under this county's prefix would be stored where its operators cannot see it.
    if k.checkpoint != ev.checkpoint_id.as_str()
        || k.county != ev.checkpoint_id.county6()
        || k.city != ev.checkpoint_id.city6()
        || k.camera != ev.camera_id.as_str()
        || k.kind != ev.kind().as_str()
        || k.event_id != ev.event_id
    {
        return Err((
            "key_mismatch",
            format!(
                "key '{key}' does not match event {} of checkpoint {} camera {} kind {}",
                ev.event_id,
                ev.checkpoint_id,
                ev.camera_id,
                ev.kind().as_str()
            ),
        ));
    }
    // The server owns review state: a node's word on it is not taken.
    ev.review = ev.kind().initial_review();
    Ok(ev)
}

/// What ingest takes beyond an event's shape: its checkpoint in this aggregator's scope and
/// registered, its times believable.
#[derive(Debug, Clone)]
pub struct Admission {
    pub scope: protocol::keys::Scope,
    pub cfg: crate::config::IngestConfig,
}

/// Why an event is not taken now.
#[derive(Debug, PartialEq)]
pub enum NotAdmitted {
    /// Refused for good (reason, detail): acknowledged as rejected.
    Refused(&'static str, String),
    /// Its checkpoint is not registered: not acknowledged, so its node keeps it until the
    /// checkpoint is added.
    Held(String),
}

impl Admission {
    pub fn check(
        &self,
        ev: &Event,
        registry: &crate::checkpoints::Registry,
        now_ms: i64,
    ) -> Result<(), NotAdmitted> {
        let ck = ev.checkpoint_id.as_str();
        let in_scope = match &self.scope {
            protocol::keys::Scope::County(c) => ck.starts_with(c.as_str()),
            protocol::keys::Scope::City(c) => ck.starts_with(&c[..4]),
            protocol::keys::Scope::All => true,
        };
        if !in_scope {
            return Err(NotAdmitted::Refused(
                "out_of_scope",
                format!(
                    "checkpoint {ck} is outside this aggregator's scope {:?}",
                    self.scope
                ),
            ));
        }
        let ahead_ms = ev.frame_time_ms - now_ms;
        if ahead_ms > self.cfg.max_clock_skew_s as i64 * 1000 {
            return Err(NotAdmitted::Refused(
                "time_skew",
                format!(
                    "event {} of checkpoint {ck} is {} s ahead of this aggregator's clock (ingest.max_clock_skew_s = {}); check the node's time synchronisation",
                    ev.event_id,
                    ahead_ms / 1000,
                    self.cfg.max_clock_skew_s
                ),
            ));
        }
        let id_ms = ulid::Ulid::from_string(&ev.event_id)
            .map(|u| u.timestamp_ms() as i64)
            .unwrap_or(ev.frame_time_ms);
        if (id_ms - ev.frame_time_ms).abs() > self.cfg.max_id_skew_s as i64 * 1000 {
            return Err(NotAdmitted::Refused(
                "time_skew",
                format!(
                    "event {} of checkpoint {ck}: its id's time is {} s from its frame time (ingest.max_id_skew_s = {})",
                    ev.event_id,
                    (id_ms - ev.frame_time_ms).abs() / 1000,
                    self.cfg.max_id_skew_s
                ),
            ));
        }
        if self.cfg.require_registered && !registry.is_empty() && registry.get(ck).is_none() {
            return Err(NotAdmitted::Held(ck.to_string()));
        }
        Ok(())
    }
}

/// Whether JSON text holds a `\u0000` escape (a NUL in a string): a `u0000` after an odd
/// run of backslashes (an even run is escaped backslashes followed by plain text).
fn has_nul_escape(json: &[u8]) -> bool {
    let pat = b"u0000";
    let mut from = 0;
    while let Some(i) = json[from..].windows(pat.len()).position(|w| w == pat) {
        let at = from + i;
        let slashes = json[..at].iter().rev().take_while(|b| **b == b'\\').count();
        if slashes % 2 == 1 {
            return true;
        }
        from = at + 1;
    }
    false
}

/// Largest evidence image accepted.
pub const MAX_EVIDENCE_BYTES: usize = 16 << 20;

/// Checks an evidence sample: key shape, id characters, size, JPEG or PNG signature.
pub fn validate_evidence(
    key: &str,
    payload: &[u8],
) -> Result<crate::store::EvidenceBlob, (&'static str, String)> {
    let (checkpoint, camera, image_id) = protocol::keys::parse_evidence_key(key)
        .ok_or(("key", format!("key '{key}' is not an evidence key")))?;
    if image_id.is_empty()
        || image_id.len() > 80
        || !image_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err((
            "evidence_id",
            format!("evidence id '{image_id}' must be 1-80 letters, digits, '-' or '_'"),
        ));
    }
    if payload.len() > MAX_EVIDENCE_BYTES {
        return Err((
            "evidence_oversized",
            format!(
                "evidence image of {} bytes exceeds {MAX_EVIDENCE_BYTES}",
                payload.len()
            ),
        ));
    }
    let content_type = image_type(payload).map_err(|why| {
        (
            "evidence_format",
            format!("evidence '{image_id}' ({} bytes): {why}", payload.len()),
        )
    })?;
    use sha2::Digest;
    Ok(crate::store::EvidenceBlob {
        image_id: image_id.to_string(),
        checkpoint_id: checkpoint.to_string(),
        camera_id: camera.to_string(),
        sha256: hex::encode(sha2::Sha256::digest(payload)),
        content_type: content_type.to_string(),
        bytes: payload.to_vec(),
    })
}

/// The content type of a whole evidence image, or why it is none: a JPEG must parse up to
/// its image data and end with its end-of-image marker (a cut one does not), a PNG must
/// start with its header chunk and end with its `IEND` chunk.
fn image_type(b: &[u8]) -> Result<&'static str, String> {
    if b.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let mut d = jpeg_decoder::Decoder::new(b);
        d.read_info()
            .map_err(|e| format!("not a readable JPEG ({e})"))?;
        let info = d.info().ok_or("a JPEG without a frame header")?;
        if info.width == 0 || info.height == 0 {
            return Err("a JPEG of no pixels".into());
        }
        // Some cameras append a few bytes after the marker; a cut image has none near its
        // end (in the image data a 0xFF is always followed by 0x00 or a restart marker).
        let tail = &b[b.len().saturating_sub(1024)..];
        if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
            return Err("a JPEG cut short (no end-of-image marker)".into());
        }
        Ok("image/jpeg")
    } else if b.starts_with(b"\x89PNG\r\n\x1a\n") {
        if b.len() < 8 + 25 + 12 || &b[12..16] != b"IHDR" {
            return Err("a PNG without its header chunk".into());
        }
        if &b[b.len() - 8..b.len() - 4] != b"IEND" {
            return Err("a PNG cut short (no IEND chunk)".into());
        }
        Ok("image/png")
    } else if b.get(4..8) == Some(b"ftyp") {
        mp4_check(b).map(|()| "video/mp4")
    } else {
        Err("neither JPEG, PNG nor MP4".into())
    }
}

/// A whole MP4 (a violation's clip): its top-level boxes follow each other to the last byte,
/// and it holds its index (`moov`) and its media (`mdat`). A cut one ends inside a box.
fn mp4_check(b: &[u8]) -> Result<(), String> {
    let (mut at, mut moov, mut mdat) = (0usize, false, false);
    while at < b.len() {
        let head = b
            .get(at..at + 8)
            .ok_or_else(|| format!("an MP4 cut short (a box header at byte {at})"))?;
        let size32 = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as u64;
        let size = match size32 {
            0 => (b.len() - at) as u64,
            1 => u64::from_be_bytes(
                b.get(at + 8..at + 16)
                    .ok_or("an MP4 cut short (a large box header)")?
                    .try_into()
                    .expect("8 bytes"),
            ),
            n => n,
        };
        if size < 8 || at as u64 + size > b.len() as u64 {
            return Err(format!(
                "an MP4 cut short (box '{}' of {size} bytes at byte {at} runs past the end)",
                String::from_utf8_lossy(&head[4..8])
            ));
        }
        moov |= &head[4..8] == b"moov";
        mdat |= &head[4..8] == b"mdat";
        at += size as usize;
    }
    if !(moov && mdat) {
        return Err("an MP4 without its index (moov) or media (mdat)".into());
    }
    Ok(())
}

/// What the writer correlates with: the checkpoint registry, the rules' settings, and the id
/// derived events carry.
pub struct Correlator {
    pub registry: crate::checkpoints::Registry,
    pub cfg: crate::correlate::CorrelationConfig,
    pub aggregator_id: protocol::DeviceId,
    /// The watch list in force, checked against passes the node could not check.
    pub watchlist: Option<std::sync::Arc<crate::watchlist::Watchlist>>,
    /// Where acknowledgements go once a transaction has committed.
    pub acks: Option<Acker>,
    /// Stored alerts go to the dashboard's live streams.
    pub live: std::sync::Arc<crate::live::Live>,
    /// Scope, registration and time checks.
    pub admission: Admission,
}

/// Acknowledges to the nodes what the writer has stored (see `protocol::AckMsg`).
pub struct Acker {
    pub session: zenoh::Session,
    pub aggregator: String,
    pub scope: String,
}

/// Acknowledgements being gathered, per checkpoint.
#[derive(Default)]
struct PendingAcks(std::collections::BTreeMap<String, protocol::AckMsg>);

impl PendingAcks {
    fn entry(&mut self, checkpoint: &str) -> &mut protocol::AckMsg {
        self.0.entry(checkpoint.to_string()).or_default()
    }

    /// A refused payload, named by its key (the payload may not even parse).
    fn rejected(&mut self, key: &str) {
        if let Some(k) = keys::parse_event_key(key) {
            let id = k.event_id.to_string();
            self.entry(k.checkpoint).rejected.push(id);
        } else if let Some((checkpoint, _, image_id)) = keys::parse_evidence_key(key) {
            let id = image_id.to_string();
            self.entry(checkpoint).rejected.push(id);
        }
    }

    fn flush(&mut self, acker: Option<&Acker>) {
        use zenoh::Wait;
        let pending = std::mem::take(&mut self.0);
        let Some(a) = acker else { return };
        for (checkpoint, mut msg) in pending {
            let Ok(ck) = protocol::DeviceId::parse(&checkpoint) else {
                continue;
            };
            msg.aggregator = a.aggregator.clone();
            msg.scope = a.scope.clone();
            let body = serde_json::to_vec(&msg).expect("an ack serialises");
            if let Err(e) = a.session.put(keys::ack(&ck), body).wait() {
                warn!(error = %e, checkpoint, "Acknowledgement not sent; the node will send again");
            }
        }
    }
}

/// How long a stopping writer keeps retrying a store that fails.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Stores `batch`; per event, whether it is stored now (committed, new or a duplicate),
/// and whether it was new (a duplicate is a replay: stored before, never alerted again).
///
/// A batch whose data the store refuses ([`crate::store::StoreError::is_refusal`]: a NUL in a string on
/// PostgreSQL, say) is split in halves, stored apart, until each refused event is alone:
/// that one is rejected with the store's reason (counted, acknowledged as rejected so that
/// its node stops sending it) and every other is stored. A poison event never holds up the
/// ones behind it. A store that fails otherwise (down, disk full, locked) is retried with a
/// growing pause, `/health` says degraded meanwhile; once the aggregator is stopping it is
/// given [`STOP_GRACE`], then the rest is left unacknowledged for the nodes to send again.
fn store_batch(
    store: &mut dyn EventStore,
    batch: &[Event],
    metrics: &IngestMetrics,
    writer: usize,
    acks: &mut PendingAcks,
) -> (Vec<bool>, Vec<bool>) {
    let mut stored = vec![false; batch.len()];
    let mut fresh = vec![false; batch.len()];
    // The ranges of the batch still to store: the whole, then halves of a refused one.
    let mut todo = Vec::new();
    todo.push(0..batch.len());
    let mut attempt = 0u32;
    let mut stopping_since: Option<std::time::Instant> = None;
    let writing = &metrics.writing_since_ms[writer % MAX_WRITERS];
    writing.store(protocol::time::now_ms(), Ordering::SeqCst);
    let _idle = Idle(writing);
    while let Some(r) = todo.pop() {
        match store.insert_new(&batch[r.clone()], protocol::time::now_ms()) {
            Ok(flags) => {
                let new = flags.iter().filter(|n| **n).count();
                fresh[r.clone()].copy_from_slice(&flags);
                metrics.stored.fetch_add(new as u64, Ordering::Relaxed);
                metrics
                    .duplicates
                    .fetch_add((r.len() - new) as u64, Ordering::Relaxed);
                debug!(batch = r.len(), new, "Events stored");
                stored[r].iter_mut().for_each(|s| *s = true);
                attempt = 0;
                *metrics.store_failing.lock().expect("not poisoned") = None;
            }
            Err(e) if e.is_refusal() && r.len() > 1 => {
                let mid = r.start + r.len() / 2;
                todo.push(mid..r.end);
                todo.push(r.start..mid);
            }
            Err(e) if e.is_refusal() => {
                let ev = &batch[r.start];
                metrics.reject(&ev.event_id, "refused_by_store", &e.to_string());
                acks.entry(ev.checkpoint_id.as_str())
                    .rejected
                    .push(ev.event_id.clone());
            }
            Err(e) => {
                metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                *metrics.store_failing.lock().expect("not poisoned") = Some(e.to_string());
                if metrics.stopping.load(Ordering::Relaxed) {
                    let since = *stopping_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() >= STOP_GRACE {
                        error!(error = %e, left = r.len() + todo.iter().map(|t| t.len()).sum::<usize>(), "Stopping with events not stored; their nodes send them again");
                        return (stored, fresh);
                    }
                }
                attempt += 1;
                error!(error = %e, attempt, batch = r.len(), "Storing events failed; retrying");
                std::thread::sleep(Duration::from_millis(200 * u64::from(attempt.min(10))));
                todo.push(r);
            }
        }
    }
    (stored, fresh)
}

/// Clears the writer's in-flight time when a batch is done, however it ends.
struct Idle<'a>(&'a std::sync::atomic::AtomicI64);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

/// Writer `writer`'s loop; returns when every sender is gone and its queue is drained.
pub fn run_writer(
    mut store: Box<dyn EventStore>,
    rx: Receiver<Sample>,
    writer: usize,
    metrics: &IngestMetrics,
    correlator: &Correlator,
) {
    let mut batch: Vec<Event> = Vec::with_capacity(MAX_BATCH);
    let mut watch: Option<crate::correlate::WatchIndex> = None;
    let mut acks = PendingAcks::default();
    loop {
        let first = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(x) => x,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut item = Some(first);
        while let Some((key, payload)) = item.take() {
            metrics.queued.fetch_sub(1, Ordering::Relaxed);
            metrics
                .queued_bytes
                .fetch_sub((key.len() + payload.len()) as u64, Ordering::Relaxed);
            if key.contains("/evidence/") {
                // Images are few and large: stored one by one, outside the event batch.
                match validate_evidence(&key, &payload) {
                    Ok(blob) => match store.insert_evidence(&blob, protocol::time::now_ms()) {
                        Ok(_) => {
                            metrics.evidence_stored.fetch_add(1, Ordering::Relaxed);
                            acks.entry(&blob.checkpoint_id)
                                .evidence
                                .push(blob.image_id.clone());
                        }
                        Err(e) if e.is_refusal() => {
                            metrics.reject(&key, "refused_by_store", &e.to_string());
                            acks.rejected(&key);
                        }
                        Err(e) => {
                            // Not acknowledged: the node sends it again.
                            metrics.store_errors.fetch_add(1, Ordering::Relaxed);
                            *metrics.store_failing.lock().expect("not poisoned") =
                                Some(e.to_string());
                            error!(error = %e, key = %key, "Storing evidence failed");
                        }
                    },
                    Err((reason, detail)) => {
                        metrics.reject(&key, reason, &detail);
                        acks.rejected(&key);
                    }
                }
                if batch.len() < MAX_BATCH {
                    item = rx.try_recv().ok();
                }
                continue;
            }
            metrics.received.fetch_add(1, Ordering::Relaxed);
            let checked = validate(&key, &payload).and_then(|ev| {
                match correlator.admission.check(
                    &ev,
                    &correlator.registry,
                    protocol::time::now_ms(),
                ) {
                    Ok(()) => Ok(Some(ev)),
                    Err(NotAdmitted::Held(checkpoint)) => {
                        metrics.hold(&checkpoint);
                        Ok(None)
                    }
                    Err(NotAdmitted::Refused(reason, detail)) => Err((reason, detail)),
                }
            });
            match checked {
                Ok(Some(ev)) => batch.push(ev),
                Ok(None) => {}
                Err((reason, detail)) => {
                    metrics.reject(&key, reason, &detail);
                    if reason != NEWER_SCHEMA {
                        acks.rejected(&key);
                    }
                }
            }
            if batch.len() < MAX_BATCH {
                item = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            acks.flush(correlator.acks.as_ref());
            continue;
        }
        let (stored, mut fresh) = store_batch(store.as_mut(), &batch, metrics, writer, &mut acks);
        if stored.iter().any(|s| !s) {
            let mut k = stored.iter();
            fresh.retain(|_| *k.next().expect("one flag an event"));
            let mut k = stored.iter();
            batch.retain(|_| *k.next().expect("one flag an event"));
        }
        if !batch.is_empty() {
            // Committed: acknowledged (duplicates too: the node may drop them).
            // (The JT/T 808 gateway's events came from this process: no node waits.)
            for ev in batch
                .iter()
                .filter(|e| e.node_id.device_type() != protocol::DeviceType::AccessGateway)
            {
                acks.entry(ev.checkpoint_id.as_str())
                    .events
                    .push(ev.event_id.clone());
            }
            acks.flush(correlator.acks.as_ref());
            // Alerts for new events only: a replay (the node sending again what was stored
            // before its acknowledgement got lost) is not pushed to operators again.
            if fresh.iter().all(|n| *n) {
                correlator.live.publish(&batch);
            } else {
                let mut k = fresh.iter();
                let new: Vec<Event> = batch
                    .iter()
                    .filter(|_| *k.next().expect("one flag an event"))
                    .cloned()
                    .collect();
                correlator.live.publish(&new);
            }
            // Correlation reads committed rows; a failure here loses no event (the passes
            // are stored) and is logged.
            let current = correlator.watchlist.as_ref().and_then(|w| w.current());
            if let Some(f) = current {
                if watch.as_ref().map(|w| w.version) != Some(f.version) {
                    watch = Some(crate::correlate::WatchIndex::new(&f));
                }
            }
            match crate::correlate::correlate_batch(
                store.as_mut(),
                &correlator.registry,
                &correlator.cfg,
                &correlator.aggregator_id,
                watch.as_ref(),
                &batch,
                Some(&correlator.live),
            ) {
                Ok(n) => {
                    metrics
                        .anomalies_raised
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => error!(error = %e, "Correlation failed for a batch"),
            }
        } else {
            acks.flush(correlator.acks.as_ref());
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::event;
    use protocol::TrackPhase;

    /// Each checkpoint's samples go to one writer, events and images alike; the two
    /// checkpoints of the failover test go to different writers of two, so that its cloned
    /// plates are found across writers.
    #[test]
    fn a_checkpoint_has_one_writer() {
        let (q, _rx) = Queue::new(2);
        let (ck1, ck2) = (
            protocol::DeviceId::parse("32050500051210000001").unwrap(),
            protocol::DeviceId::parse("32050500051210000002").unwrap(),
        );
        let cam = protocol::DeviceId::parse("32050500051320000001").unwrap();
        let ev = |ck: &protocol::DeviceId| {
            keys::event(
                ck,
                &cam,
                protocol::EventKind::VehiclePass,
                "01K0000000000000000000000",
            )
        };
        assert_eq!(
            q.writer_of(&ev(&ck1)),
            q.writer_of(&keys::evidence(&ck1, &cam, "img-1"))
        );
        assert_ne!(q.writer_of(&ev(&ck1)), q.writer_of(&ev(&ck2)));
        let (one, _rx) = Queue::new(1);
        assert_eq!(one.writer_of(&ev(&ck2)), 0);
    }

    /// A payload that does not match the digest its publisher attached is dropped without a
    /// refusal (its node sends it again); a whole one, or one with no digest, is queued.
    #[test]
    fn a_damaged_sample_is_dropped_unacknowledged() {
        let metrics = IngestMetrics::default();
        let (q, rx) = Queue::new(1);
        let body = b"{}".to_vec();
        let digest = protocol::integrity::attachment(&body);
        metrics.receive(&q, "k", b"{ }".to_vec(), Some(digest.as_bytes()));
        assert!(rx[0].try_recv().is_err());
        let snap = metrics.snapshot();
        assert_eq!((snap.damaged, snap.rejected, snap.queued), (1, 0, 0));
        metrics.receive(&q, "k", body.clone(), Some(digest.as_bytes()));
        metrics.receive(&q, "k", body.clone(), None);
        assert_eq!(rx[0].try_recv().unwrap().1, body);
        assert_eq!(rx[0].try_recv().unwrap().1, body);
        assert_eq!(metrics.snapshot().damaged, 1);
    }

    #[test]
    fn validation_reasons() {
        let ev = event(
            1_790_000_000_000,
            "32050500051320000001",
            "person",
            TrackPhase::End,
        );
        let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
        assert_eq!(validate(&key, &ev.encode()).unwrap(), ev);
        assert_eq!(validate(&key, b"{not json").unwrap_err().0, "malformed");
        let wrong = key.replace("32050500051320000001", "32050500051320000002");
        assert_eq!(
            validate(&wrong, &ev.encode()).unwrap_err().0,
            "key_mismatch"
        );
        let mut v: serde_json::Value = serde_json::from_slice(&ev.encode()).unwrap();
        v["schema_version"] = 99.into();
        assert_eq!(
            validate(&key, &serde_json::to_vec(&v).unwrap())
                .unwrap_err()
                .0,
            NEWER_SCHEMA
        );
        v["schema_version"] = 0.into();
        assert_eq!(
            validate(&key, &serde_json::to_vec(&v).unwrap())
                .unwrap_err()
                .0,
            "schema_version"
        );
        assert_eq!(
            validate(&key, &vec![b'x'; protocol::MAX_EVENT_BYTES + 1])
                .unwrap_err()
                .0,
            "oversized"
        );
    }

    /// Issue 18, row 10 (ingest half): an event of another county under this county's key
    /// prefix, one outside the aggregator's scope, one whose time is a year from its id's or
    /// ahead of the clock are refused; one of an unregistered checkpoint is held (not
    /// acknowledged, so its node keeps it); a 3-byte "JPEG" and a truncated one are refused.
    #[test]
    fn row10_out_of_scope_skewed_and_unregistered_events_and_broken_images_are_not_taken() {
        let now = 1_795_000_000_000i64;
        let ev = event(now - 5_000, "32050500051320000001", "car", TrackPhase::End);
        // Another county's checkpoint under county 320505's key prefix.
        let mut other = ev.clone();
        other.checkpoint_id = protocol::DeviceId::parse("32050600051210000001").unwrap();
        let forged = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id)
            .replace("32050500051210000001", "32050600051210000001");
        assert!(forged.contains("/320505/32050600051210000001/"), "{forged}");
        assert_eq!(
            validate(&forged, &other.encode()).unwrap_err().0,
            "key_mismatch"
        );
        let county = Admission {
            scope: protocol::keys::Scope::County("320505".into()),
            cfg: Default::default(),
        };
        let none = crate::checkpoints::Registry::default();
        assert_eq!(county.check(&ev, &none, now), Ok(()));
        assert!(matches!(
            county.check(&other, &none, now),
            Err(NotAdmitted::Refused("out_of_scope", _))
        ));
        let city = Admission {
            scope: protocol::keys::Scope::City("320500".into()),
            cfg: Default::default(),
        };
        assert_eq!(city.check(&other, &none, now), Ok(()));
        // A frame time a year from the id's time; a frame time ten minutes ahead.
        let mut year = ev.clone();
        year.frame_time_ms -= 365 * 86_400_000;
        assert!(matches!(
            county.check(&year, &none, now),
            Err(NotAdmitted::Refused("time_skew", _))
        ));
        let mut ahead = ev.clone();
        ahead.frame_time_ms = now + 600_000;
        ahead.event_id = ulid::Ulid::from_parts(ahead.frame_time_ms as u64, 7).to_string();
        let refused = county.check(&ahead, &none, now);
        assert!(
            matches!(&refused, Err(NotAdmitted::Refused("time_skew", d)) if d.contains("600 s ahead")),
            "{refused:?}"
        );
        // Days old is fine: an outbox may hold that long.
        let mut old = ev.clone();
        old.frame_time_ms = now - 3 * 86_400_000;
        old.event_id = ulid::Ulid::from_parts(old.frame_time_ms as u64, 7).to_string();
        assert_eq!(county.check(&old, &none, now), Ok(()));
        // Registered elsewhere: held, not refused.
        let mut errors = Vec::new();
        let registry = crate::checkpoints::Registry::build(
            &[crate::checkpoints::CheckpointConfig {
                id: "32050500051210000002".into(),
                name: "elsewhere".into(),
                lat: 31.3,
                lon: 120.6,
            }],
            &[],
            1.3,
            None,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            county.check(&ev, &registry, now),
            Err(NotAdmitted::Held("32050500051210000001".into()))
        );
        // Images: a 3-byte "JPEG" and a JPEG cut in half are refused; a whole one is taken.
        let key = "ckpt/320500/320505/32050500051210000001/32050500051320000001/evidence/img1";
        assert_eq!(
            validate_evidence(key, &[0xFF, 0xD8, 0xFF]).unwrap_err().0,
            "evidence_format"
        );
        let jpeg = tiny_jpeg();
        assert!(validate_evidence(key, &jpeg).is_ok());
        assert_eq!(
            validate_evidence(key, &jpeg[..jpeg.len() / 2])
                .unwrap_err()
                .0,
            "evidence_format"
        );
        // A clip: an MP4's boxes must run to its last byte and hold moov and mdat.
        let bx = |tag: &[u8], body: &[u8]| {
            let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
            v.extend_from_slice(tag);
            v.extend_from_slice(body);
            v
        };
        let mp4 = [
            bx(b"ftyp", b"isom\0\0\0\0isomavc1"),
            bx(b"moov", &[0; 40]),
            bx(b"mdat", &[7; 100]),
        ]
        .concat();
        let b = validate_evidence(key, &mp4).unwrap();
        assert_eq!(b.content_type, "video/mp4");
        let cut = validate_evidence(key, &mp4[..mp4.len() - 10]).unwrap_err();
        assert_eq!(cut.0, "evidence_format");
        assert!(
            cut.1.contains("mdat") && cut.1.contains("cut short"),
            "{}",
            cut.1
        );
        let no_index = [bx(b"ftyp", b"isom"), bx(b"mdat", &[7; 10])].concat();
        assert!(validate_evidence(key, &no_index)
            .unwrap_err()
            .1
            .contains("moov"));
    }

    fn tiny_jpeg() -> Vec<u8> {
        let mut out = Vec::new();
        let pixels = vec![128u8; 16 * 16 * 3];
        jpeg_encoder::Encoder::new(&mut out, 80)
            .encode(&pixels, 16, 16, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    /// Issue 18, row 8 (first half): a violation published already confirmed is stored
    /// pending, with its review still to be made.
    #[test]
    fn row8_a_node_cannot_set_review_state() {
        let mut ev = event(
            1_790_000_000_000,
            "32050500051320000001",
            "person",
            TrackPhase::End,
        );
        ev.review = protocol::ReviewState::Confirmed;
        let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
        assert_eq!(
            validate(&key, &ev.encode()).unwrap().review,
            protocol::ReviewState::NotRequired
        );
        // A watch-list hit the node marked confirmed: stored pending.
        let mut ev = crate::store::tests::watch_list_hit(1_790_000_000_000);
        ev.review = protocol::ReviewState::Confirmed;
        let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
        let stored = validate(&key, &ev.encode()).unwrap();
        assert_eq!(stored.review, protocol::ReviewState::Pending);
    }

    /// Issue 18, row 8 (second half): a violation the node sends again (its acknowledgement
    /// was lost) is stored once and pushed to the operators' live alerts once, not again as
    /// a new pending alert.
    #[test]
    fn row8_a_replayed_violation_is_not_alerted_again() {
        let live = std::sync::Arc::new(crate::live::Live::default());
        let mut alerts = live.alerts.subscribe();
        let correlator = Correlator {
            registry: Default::default(),
            cfg: Default::default(),
            aggregator_id: protocol::DeviceId::parse("32050500055030000001").unwrap(),
            watchlist: None,
            acks: None,
            live: live.clone(),
            admission: Admission {
                scope: protocol::keys::Scope::All,
                cfg: Default::default(),
            },
        };
        let metrics = IngestMetrics::default();
        let ev = crate::store::tests::watch_list_hit(1_790_000_000_000);
        let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
        let store = Box::new(crate::store::SqliteStore::open_in_memory().unwrap());
        let (tx, rx) = std::sync::mpsc::sync_channel(8);
        std::thread::scope(|s| {
            s.spawn(|| run_writer(store, rx, 0, &metrics, &correlator));
            for _ in 0..3 {
                metrics.queued.fetch_add(1, Ordering::Relaxed);
                metrics
                    .queued_bytes
                    .fetch_add((key.len() + ev.encode().len()) as u64, Ordering::Relaxed);
                tx.send((key.clone(), ev.encode())).unwrap();
                // Separate batches, as replays come.
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while metrics.queued.load(Ordering::Relaxed) > 0 {
                    assert!(std::time::Instant::now() < deadline);
                    std::thread::sleep(Duration::from_millis(10));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            drop(tx);
        });
        let snap = metrics.snapshot();
        assert_eq!((snap.stored, snap.duplicates), (1, 2), "{snap:?}");
        assert_eq!(alerts.try_recv().unwrap().event_id, ev.event_id);
        assert!(alerts.try_recv().is_err(), "a replay was alerted again");
    }

    #[test]
    fn a_nul_escape_is_found_and_an_escaped_backslash_is_not() {
        assert!(has_nul_escape(b"{\"p\":\"A\\u0000\"}"));
        assert!(!has_nul_escape(b"{\"p\":\"A\\\\u0000\"}"));
        assert!(has_nul_escape(b"{\"p\":\"A\\\\\\u0000\"}"));
        assert!(!has_nul_escape(b"{\"p\":\"u0000\"}"));
        let mut ev = event(
            1_790_000_000_000,
            "32050500051320000001",
            "per\0son",
            TrackPhase::End,
        );
        let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
        assert_eq!(validate(&key, &ev.encode()).unwrap_err().0, "nul_character");
        ev = event(
            1_790_000_000_000,
            "32050500051320000001",
            "per\\u0000son",
            TrackPhase::End,
        );
        let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
        assert!(validate(&key, &ev.encode()).is_ok());
    }

    /// A batch holding one event PostgreSQL refuses (a NUL in a text column: validation is
    /// bypassed here) is split until that one is alone: it is rejected and acknowledged as
    /// such, the eight others are stored, and the writer moves on.
    #[test]
    fn a_refused_event_is_split_off_and_the_rest_stored_on_postgres() {
        let url = std::env::var("TRAFFIC_PG_URL")
            .unwrap_or_else(|_| "host=127.0.0.1 port=5432 user=postgres dbname=test".into());
        let schema = format!("split_{}", ulid::Ulid::new().to_string().to_lowercase());
        let mut store = crate::store::pg::PgStore::connect(&url, &schema).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is part of the test environment (127.0.0.1:5432, database test): {e}"
            )
        });
        let batch: Vec<Event> = (0..9)
            .map(|i| {
                let class = if i == 4 { "per\0son" } else { "person" };
                event(
                    1_790_000_000_000 + i,
                    "32050500051320000001",
                    class,
                    TrackPhase::End,
                )
            })
            .collect();
        let metrics = IngestMetrics::default();
        let mut acks = PendingAcks::default();
        let (stored, fresh) = store_batch(&mut store, &batch, &metrics, 0, &mut acks);
        assert_eq!(stored, fresh);
        assert_eq!(
            stored,
            (0..9).map(|i| i != 4).collect::<Vec<_>>(),
            "{:?}",
            metrics.snapshot()
        );
        let snap = metrics.snapshot();
        assert_eq!(snap.stored, 8);
        assert_eq!(snap.rejected_by_reason.get("refused_by_store"), Some(&1));
        assert!(snap.store_failing.is_none());
        let rejected: Vec<String> = acks.0.values().flat_map(|m| m.rejected.clone()).collect();
        assert_eq!(rejected, vec![batch[4].event_id.clone()]);
        drop(store);
        crate::store::pg::drop_schema(&url, &schema).unwrap();
    }
}
