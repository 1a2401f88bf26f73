//! Stage `publish`: events out over zenoh, under keys built by `protocol::keys`.
//!
//! Input: events and evidence images from every camera through one bounded channel (cameras
//! wait when it is full; events are never dropped). Each item is kept in the on-disk outbox
//! (`crate::outbox`, fsynced) before it is published with one reliable zenoh put
//! (congestion control `Block`); it leaves the outbox when an aggregator acknowledges it
//! (`keys::ack`), and is published again, in order, until then.

use std::time::{Duration, Instant};

use protocol::keys;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};
use zenoh::qos::{CongestionControl, Priority};

use crate::crossing::Outgoing;

use crate::config::{ZenohConfig, ZenohMode};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid zenoh settings: {0}; check the [zenoh] section (endpoints look like tcp/127.0.0.1:7447)")]
    Config(String),
    #[error("cannot open the zenoh session: {0}; check [zenoh] connect/listen endpoints")]
    Open(String),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryLoadError),
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
}

pub async fn open_session(cfg: &ZenohConfig) -> Result<zenoh::Session, PublishError> {
    let mode = match cfg.mode {
        ZenohMode::Peer => "peer",
        ZenohMode::Client => "client",
    };
    let text = protocol::security::zenoh_json5(
        mode,
        &cfg.connect,
        &cfg.listen,
        cfg.multicast_scouting,
        cfg.tls.as_ref(),
        cfg.tls
            .as_ref()
            .map(|_| protocol::security::trusted_peers_acl(&cfg.trusted_common_names)),
    );
    if cfg.tls.is_none() && cfg.insecure {
        warn!(connect = ?cfg.connect, listen = ?cfg.listen, "zenoh.insecure = true: plain zenoh without access control; anyone reaching the link can read this node's events or pose as an aggregator (set [zenoh] tls)");
    }
    let config =
        zenoh::Config::from_json5(&text).map_err(|e| PublishError::Config(e.to_string()))?;
    zenoh::open(config)
        .await
        .map_err(|e| PublishError::Open(e.to_string()))
}

/// Waits until some aggregator's liveliness token is visible; false after `wait`.
pub async fn wait_for_aggregator(session: &zenoh::Session, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if let Ok(replies) = session
            .liveliness()
            .get(keys::ANY_AGGREGATOR_ALIVE)
            .timeout(Duration::from_millis(500))
            .await
        {
            while let Ok(reply) = replies.recv_async().await {
                if let Ok(sample) = reply.result() {
                    info!(aggregator = %sample.key_expr(), "Aggregator reachable");
                    return true;
                }
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PublishStats {
    pub published: u64,
    pub evidence_published: u64,
    pub failed: u64,
    /// Items published again (not acknowledged in time, or left from an earlier run).
    pub replayed: u64,
    /// Items acknowledged by an aggregator and dropped from the outbox.
    pub acked: u64,
    /// Items an aggregator refused as invalid (dropped: sending again cannot help).
    pub rejected: u64,
    /// Items dropped by the outbox's limits: images when full, events under `drop_oldest`,
    /// anything past its time to live.
    pub dropped_evidence: u64,
    pub dropped_events: u64,
    pub expired: u64,
    /// Items still waiting for an acknowledgement when the node stopped (replayed at the
    /// next start).
    pub left: u64,
    /// Outbox writes the disk refused, how long the cameras' events waited for the disk in
    /// all, and items lost because the node stopped while the disk still refused them.
    pub write_failures: u64,
    pub blocked_ms: u64,
    pub lost_unwritable: u64,
}

/// The outbox shared by the publisher and the acknowledgement subscriber, with counters.
pub struct OutboxState {
    pub outbox: std::sync::Mutex<crate::outbox::Outbox>,
    pub cfg: crate::outbox::OutboxConfig,
    pub acked: std::sync::atomic::AtomicU64,
    pub rejected: std::sync::atomic::AtomicU64,
    pub replayed: std::sync::atomic::AtomicU64,
    pub dropped_evidence: std::sync::atomic::AtomicU64,
    pub dropped_events: std::sync::atomic::AtomicU64,
    pub expired: std::sync::atomic::AtomicU64,
    pub backlog: std::sync::Mutex<crate::outbox::Backlog>,
    /// An aggregator appeared: everything kept is published again now, in order.
    pub replay_now: std::sync::atomic::AtomicBool,
    /// See [`PublishStats`].
    pub write_failures: std::sync::atomic::AtomicU64,
    pub blocked_ms: std::sync::atomic::AtomicU64,
    pub lost_unwritable: std::sync::atomic::AtomicU64,
}

impl OutboxState {
    pub fn new(outbox: crate::outbox::Outbox, cfg: crate::outbox::OutboxConfig) -> OutboxState {
        OutboxState {
            outbox: std::sync::Mutex::new(outbox),
            cfg,
            acked: Default::default(),
            rejected: Default::default(),
            replayed: Default::default(),
            dropped_evidence: Default::default(),
            dropped_events: Default::default(),
            expired: Default::default(),
            backlog: Default::default(),
            replay_now: Default::default(),
            write_failures: Default::default(),
            blocked_ms: Default::default(),
            lost_unwritable: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, crate::outbox::Outbox> {
        self.outbox.lock().expect("not poisoned")
    }
}

/// Drops what an aggregator acknowledges, when its scope is one this node trusts.
pub async fn follow_acks(
    session: &zenoh::Session,
    checkpoint: &protocol::DeviceId,
    state: std::sync::Arc<OutboxState>,
    scopes: Vec<String>,
) -> Result<zenoh::pubsub::Subscriber<()>, PublishError> {
    use std::sync::atomic::Ordering::Relaxed;
    session
        .declare_subscriber(keys::ack(checkpoint))
        .callback(move |sample| {
            let msg: protocol::AckMsg = match serde_json::from_slice(&sample.payload().to_bytes()) {
                Ok(m) => m,
                Err(e) => {
                    warn!(key = %sample.key_expr(), error = %e, "Acknowledgement ignored: not an ack message");
                    return;
                }
            };
            if !scopes.contains(&msg.scope) {
                debug!(aggregator = %msg.aggregator, scope = %msg.scope, "Acknowledgement from an aggregator outside the trusted scopes; ignored");
                return;
            }
            let ids: Vec<String> = msg.events.iter().chain(&msg.evidence).cloned().collect();
            let mut o = state.lock();
            match o.ack(&ids) {
                Ok(n) => {
                    state.acked.fetch_add(n, Relaxed);
                }
                Err(e) => warn!(error = %e, "Acknowledged items not dropped; they will be sent again"),
            }
            if !msg.rejected.is_empty() {
                if let Ok(n) = o.ack(&msg.rejected) {
                    if n > 0 {
                        state.rejected.fetch_add(n, Relaxed);
                        warn!(aggregator = %msg.aggregator, ids = ?msg.rejected, "The aggregator refused items as invalid; dropped from the outbox");
                    }
                }
            }
        })
        .await
        .map_err(|e| PublishError::Open(e.to_string()))
}

/// When an aggregator (re)appears, what the outbox holds is replayed at once, in order,
/// instead of waiting for each item's resend delay.
pub async fn replay_on_aggregator(
    session: &zenoh::Session,
    state: std::sync::Arc<OutboxState>,
) -> Result<zenoh::pubsub::Subscriber<()>, PublishError> {
    session
        .liveliness()
        .declare_subscriber(keys::ANY_AGGREGATOR_ALIVE)
        .callback(move |sample| {
            if sample.kind() == zenoh::sample::SampleKind::Put {
                info!(aggregator = %sample.key_expr(), "Aggregator appeared; replaying the outbox");
                state
                    .replay_now
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .await
        .map_err(|e| PublishError::Open(e.to_string()))
}

fn to_item(out: Outgoing) -> crate::outbox::NewItem {
    use crate::outbox::{ItemKind, NewItem};
    match out {
        Outgoing::Event(ev) => NewItem {
            key: keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id),
            kind: ItemKind::Event,
            id: ev.event_id.clone(),
            payload: ev.encode(),
        },
        Outgoing::Evidence {
            checkpoint,
            camera,
            image_id,
            jpeg,
        } => NewItem {
            key: keys::evidence(&checkpoint, &camera, &image_id),
            kind: ItemKind::Evidence,
            id: image_id,
            payload: jpeg.as_slice().to_vec(),
        },
    }
}

/// One reliable put; evidence images at a lower priority than events, so that large
/// payloads do not stall small ones.
async fn put_item(
    session: &zenoh::Session,
    key: &str,
    kind: crate::outbox::ItemKind,
    payload: Vec<u8>,
) -> zenoh::Result<()> {
    // The payload's digest beside it: a copy damaged on the way is dropped by the
    // aggregator unacknowledged, and sent again from the outbox (`protocol::integrity`).
    let digest = protocol::integrity::attachment(&payload);
    let put = session
        .put(key, payload)
        .attachment(digest)
        .congestion_control(CongestionControl::Block);
    if kind == crate::outbox::ItemKind::Evidence {
        put.priority(Priority::DataLow)
            .encoding(zenoh::bytes::Encoding::IMAGE_JPEG)
            .await
    } else {
        put.await
    }
}

/// Items read from the outbox per publishing round (images make them large).
const PUMP_BATCH: usize = 64;

/// Publishes what the outbox holds that is due (new, or not acknowledged in time), in order.
async fn pump(
    session: &zenoh::Session,
    state: &std::sync::Arc<OutboxState>,
    stats: &mut PublishStats,
) {
    use crate::outbox::ItemKind;
    use std::sync::atomic::Ordering::Relaxed;
    let resend_ms = state.cfg.resend_after_secs as i64 * 1000;
    loop {
        let st = state.clone();
        let due = tokio::task::spawn_blocking(move || {
            let mut o = st.lock();
            if st
                .replay_now
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                if let Err(e) = o.replay_all() {
                    warn!(error = %e, "Outbox replay not scheduled");
                }
            }
            o.due(protocol::time::now_ms(), resend_ms, PUMP_BATCH)
        })
        .await
        .expect("outbox read does not panic");
        let due = match due {
            Ok(d) => d,
            Err(e) => {
                warn!(error = %e, "Outbox not readable; retrying");
                return;
            }
        };
        if due.is_empty() {
            return;
        }
        let n = due.len();
        let mut sent = Vec::with_capacity(n);
        for it in due {
            match put_item(session, &it.key, it.kind, it.payload).await {
                Ok(()) => {
                    debug!(key = %it.key, replay = it.sent_before, "Published");
                    if it.sent_before {
                        state.replayed.fetch_add(1, Relaxed);
                    } else if it.kind == ItemKind::Event {
                        stats.published += 1;
                    } else {
                        stats.evidence_published += 1;
                    }
                }
                Err(e) => {
                    stats.failed += 1;
                    warn!(key = %it.key, error = %e, "Not published; kept for the next try");
                }
            }
            // Tried either way: the next try waits for the resend delay.
            sent.push(it.seq);
        }
        let st = state.clone();
        let _ = tokio::task::spawn_blocking(move || {
            st.lock().mark_sent(&sent, protocol::time::now_ms())
        })
        .await;
        if n < PUMP_BATCH {
            return;
        }
    }
}

/// Limits (time to live, size) and the backlog figures; true while the outbox is full of
/// events under the `block` policy.
async fn housekeeping(state: &std::sync::Arc<OutboxState>) -> bool {
    use std::sync::atomic::Ordering::Relaxed;
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let cfg = &st.cfg;
        let mut o = st.lock();
        let now = protocol::time::now_ms();
        if let Ok((events, images)) = o.expire(now - cfg.ttl_hours as i64 * 3_600_000) {
            if events + images > 0 {
                st.expired.fetch_add(events + images, Relaxed);
                warn!(
                    events,
                    images,
                    ttl_hours = cfg.ttl_hours,
                    "Outbox items past their time to live dropped"
                );
            }
        }
        let full = match o.enforce_cap(cfg.max_mb << 20, cfg.when_full) {
            Ok((images, events, full)) => {
                if images + events > 0 {
                    st.dropped_evidence.fetch_add(images, Relaxed);
                    st.dropped_events.fetch_add(events, Relaxed);
                    warn!(
                        images,
                        events,
                        max_mb = cfg.max_mb,
                        "Outbox full: oldest items dropped"
                    );
                }
                full
            }
            Err(e) => {
                warn!(error = %e, "Outbox limits not enforced");
                false
            }
        };
        if let Ok(b) = o.backlog() {
            *st.backlog.lock().expect("not poisoned") = b;
        }
        full
    })
    .await
    .expect("outbox housekeeping does not panic")
}

/// Keeps every item in the outbox (on disk) before publishing it, publishes again what is
/// not acknowledged in time, and, once every sender is dropped, waits up to `drain_secs`
/// for the last acknowledgements. Evidence images go at a lower priority than events, so
/// that large payloads do not stall small ones; a camera sends a violation's images before
/// its event, and the outbox keeps that order.
pub async fn run_publisher(
    session: zenoh::Session,
    mut rx: mpsc::Receiver<Outgoing>,
    state: std::sync::Arc<OutboxState>,
) -> PublishStats {
    use std::sync::atomic::Ordering::Relaxed;
    let mut stats = PublishStats::default();
    // Whatever an earlier run left goes first.
    pump(&session, &state, &mut stats).await;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut full = housekeeping(&state).await;
    // Items the disk refused (full, read-only): kept here and written again every tick;
    // nothing more is taken from the cameras meanwhile (they wait: back-pressure), and
    // nothing is published that the outbox does not hold.
    let mut unwritten: Vec<crate::outbox::NewItem> = Vec::new();
    let mut blocked_since: Option<Instant> = None;
    let mut open = true;
    while open || !unwritten.is_empty() {
        tokio::select! {
            msg = rx.recv(), if open && !full && unwritten.is_empty() => {
                let Some(first) = msg else { open = false; continue };
                let mut items = vec![to_item(first)];
                while items.len() < PUMP_BATCH {
                    match rx.try_recv() {
                        Ok(m) => items.push(to_item(m)),
                        Err(_) => break,
                    }
                }
                if let Err((e, items)) = keep(&state, items).await {
                    error!(error = %e, items = items.len(), "Outbox write failed: the cameras' events wait in memory until the disk takes them (free space on the outbox's disk)");
                    state.write_failures.fetch_add(1, Relaxed);
                    blocked_since = Some(Instant::now());
                    unwritten = items;
                }
                pump(&session, &state, &mut stats).await;
            }
            _ = tick.tick() => {
                if !unwritten.is_empty() {
                    match keep(&state, std::mem::take(&mut unwritten)).await {
                        Ok(()) => {
                            if let Some(t) = blocked_since.take() {
                                let ms = t.elapsed().as_millis() as u64;
                                state.blocked_ms.fetch_add(ms, Relaxed);
                                info!(blocked_ms = ms, "Outbox writable again; the waiting events are kept");
                            }
                        }
                        Err((_, items)) => {
                            state.write_failures.fetch_add(1, Relaxed);
                            unwritten = items;
                            if !open && blocked_since.is_some_and(|t| t.elapsed() >= Duration::from_secs(state.cfg.drain_secs)) {
                                error!(items = unwritten.len(), "Stopping with events the outbox could not keep: lost (the disk stayed full)");
                                state.lost_unwritable.fetch_add(unwritten.len() as u64, Relaxed);
                                unwritten.clear();
                            }
                        }
                    }
                }
                full = housekeeping(&state).await;
                pump(&session, &state, &mut stats).await;
            }
        }
    }
    if let Some(t) = blocked_since.take() {
        state
            .blocked_ms
            .fetch_add(t.elapsed().as_millis() as u64, Relaxed);
    }
    // The cameras are done: wait for the last acknowledgements, sending again as needed.
    let deadline = Instant::now() + Duration::from_secs(state.cfg.drain_secs);
    loop {
        housekeeping(&state).await;
        let left = state.backlog.lock().expect("not poisoned").items;
        if left == 0 || Instant::now() >= deadline {
            if left > 0 {
                warn!(left, "Items not acknowledged before the node stopped; they stay in the outbox and are replayed at the next start");
            }
            stats.left = left;
            break;
        }
        pump(&session, &state, &mut stats).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stats.replayed = state.replayed.load(Relaxed);
    stats.acked = state.acked.load(Relaxed);
    stats.rejected = state.rejected.load(Relaxed);
    stats.dropped_evidence = state.dropped_evidence.load(Relaxed);
    stats.dropped_events = state.dropped_events.load(Relaxed);
    stats.expired = state.expired.load(Relaxed);
    stats.write_failures = state.write_failures.load(Relaxed);
    stats.blocked_ms = state.blocked_ms.load(Relaxed);
    stats.lost_unwritable = state.lost_unwritable.load(Relaxed);
    stats
}

/// Writes items to the outbox (fsynced); on failure gives them back with the error.
async fn keep(
    state: &std::sync::Arc<OutboxState>,
    items: Vec<crate::outbox::NewItem>,
) -> Result<(), (crate::outbox::OutboxError, Vec<crate::outbox::NewItem>)> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        st.lock()
            .put(&items, protocol::time::now_ms())
            .map_err(|e| (e, items))
    })
    .await
    .expect("outbox write does not panic")
}

/// Follows the watch list published for this checkpoint's county: asks for the latest
/// version once (an aggregator answers with the one in force), then applies every update.
/// Older versions and bad payloads are refused by the store, which logs why.
pub async fn follow_watchlist(
    session: &zenoh::Session,
    checkpoint: &protocol::DeviceId,
    store: std::sync::Arc<crate::registry::RegistryStore>,
) -> Result<zenoh::pubsub::Subscriber<()>, PublishError> {
    let key = keys::watchlist(checkpoint);
    let apply = {
        let store = store.clone();
        move |key: &str, payload: &[u8]| match store.apply_bytes(payload, key) {
            Ok(a) => debug!(key, result = ?a, "Watch-list update handled"),
            Err(e) => {
                warn!(key, error = %e, "Watch-list update rejected; the version in force stays")
            }
        }
    };
    let apply_sub = apply.clone();
    let sub = session
        .declare_subscriber(&key)
        .callback(move |sample| apply_sub(sample.key_expr().as_str(), &sample.payload().to_bytes()))
        .await
        .map_err(|e| PublishError::Open(e.to_string()))?;
    if let Ok(replies) = session.get(&key).timeout(Duration::from_secs(2)).await {
        while let Ok(reply) = replies.recv_async().await {
            if let Ok(sample) = reply.result() {
                apply(sample.key_expr().as_str(), &sample.payload().to_bytes());
            }
        }
    }
    Ok(sub)
}

/// Keeps the cameras' view of the signal controller's feed up to date.
pub async fn subscribe_signal_feed(
    session: &zenoh::Session,
    checkpoint: &protocol::DeviceId,
    feed: crate::signal::FeedState,
) -> Result<zenoh::pubsub::Subscriber<()>, PublishError> {
    let key = keys::signal(checkpoint, "*");
    session
        .declare_subscriber(&key)
        .callback(move |sample| match serde_json::from_slice::<protocol::SignalPhaseMsg>(&sample.payload().to_bytes()) {
            Ok(m) => {
                let reading = protocol::SignalReading {
                    phase: m.phase.clone(),
                    state: m.state,
                    since_ms: m.since_ms,
                    source: protocol::SignalSource::Feed,
                    observed_ms: m.sent_ms,
                };
                feed.lock().expect("not poisoned").insert(m.phase, reading);
            }
            Err(e) => warn!(key = %sample.key_expr(), error = %e, "Signal feed message ignored: not a signal phase message"),
        })
        .await
        .map_err(|e| PublishError::Open(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::{Arc, Mutex};

    /// Issue 18, row 5: a full disk at the edge. While the outbox cannot be written nothing
    /// is published (an item published unkept is lost if that one put goes astray) and
    /// nothing is dropped: the items wait, the write failures and the time blocked are
    /// counted, and once the disk takes them again every item is kept and published.
    #[test]
    fn row5_a_full_outbox_disk_publishes_nothing_unkept_and_loses_nothing() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!("outbox-full-{}", ulid::Ulid::new()));
        let outbox = crate::outbox::Outbox::open(&dir.join("outbox.db")).unwrap();
        outbox.simulate_full_disk(true);
        let cfg: crate::outbox::OutboxConfig = toml::from_str("drain_secs = 1").unwrap();
        let state = Arc::new(OutboxState::new(outbox, cfg));
        rt.block_on(async {
            let text = keys::zenoh_json5("peer", &[], &[], false);
            let session = zenoh::open(zenoh::Config::from_json5(&text).unwrap())
                .await
                .unwrap();
            let heard = Arc::new(Mutex::new(Vec::<String>::new()));
            let h = heard.clone();
            let _sub = session
                .declare_subscriber("ckpt/**")
                .callback(move |s| h.lock().unwrap().push(s.key_expr().to_string()))
                .await
                .unwrap();
            let (tx, rx) = mpsc::channel(64);
            let publisher = tokio::spawn(run_publisher(session.clone(), rx, state.clone()));
            let ck = protocol::DeviceId::parse("32050500051210000001").unwrap();
            let cam = protocol::DeviceId::parse("32050500051320000001").unwrap();
            for i in 0..5 {
                tx.send(Outgoing::Evidence {
                    checkpoint: ck.clone(),
                    camera: cam.clone(),
                    image_id: format!("img-{i}"),
                    jpeg: Arc::new(vec![0xFF; 64 * 1024]),
                })
                .await
                .unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1500)).await;
            assert!(
                heard.lock().unwrap().is_empty(),
                "published while the outbox could not keep it: {:?}",
                heard.lock().unwrap()
            );
            assert!(state.write_failures.load(Relaxed) > 0);
            // The disk has room again.
            state.lock().simulate_full_disk(false);
            let deadline = Instant::now() + Duration::from_secs(20);
            while heard.lock().unwrap().len() < 5 {
                assert!(
                    Instant::now() < deadline,
                    "not all published after the disk freed"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            drop(tx);
            let stats = publisher.await.unwrap();
            assert_eq!(stats.lost_unwritable, 0);
            assert!(
                stats.write_failures > 0 && stats.blocked_ms >= 1000,
                "{stats:?}"
            );
            // Kept until acknowledged (no aggregator here): all five are in the outbox.
            assert_eq!(stats.left, 5, "{stats:?}");
            session.close().await.unwrap();
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
