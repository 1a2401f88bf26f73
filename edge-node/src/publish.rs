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
        None,
    );
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
    let put = session
        .put(key, payload)
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
    loop {
        tokio::select! {
            msg = rx.recv(), if !full => {
                let Some(first) = msg else { break };
                let mut items = vec![to_item(first)];
                while items.len() < PUMP_BATCH {
                    match rx.try_recv() {
                        Ok(m) => items.push(to_item(m)),
                        Err(_) => break,
                    }
                }
                let st = state.clone();
                let kept = tokio::task::spawn_blocking(move || {
                    st.lock().put(&items, protocol::time::now_ms()).map_err(|e| (e, items))
                })
                .await
                .expect("outbox write does not panic");
                if let Err((e, items)) = kept {
                    // The disk refused: publish anyway (at most once) rather than stall.
                    error!(error = %e, items = items.len(), "Outbox write failed; publishing without keeping");
                    for it in items {
                        match put_item(&session, &it.key, it.kind, it.payload).await {
                            Ok(()) => stats.published += 1,
                            Err(_) => stats.failed += 1,
                        }
                    }
                }
                pump(&session, &state, &mut stats).await;
            }
            _ = tick.tick() => {
                full = housekeeping(&state).await;
                pump(&session, &state, &mut stats).await;
            }
        }
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
    stats
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
