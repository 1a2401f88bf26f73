//! Stage `publish`: events out over zenoh, under keys built by `protocol::keys`.
//!
//! Input: events from every camera through one bounded channel (cameras wait when it is full;
//! events are never dropped). Output: one zenoh put per event, reliable, with congestion
//! control `Block`. The at-least-once outbox with acknowledgements is a later stage; for now
//! the node waits at start-up until an aggregator's liveliness token is visible, so that the
//! first events have a subscriber to reach.

use std::time::{Duration, Instant};

use protocol::keys;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
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
}

pub async fn open_session(cfg: &ZenohConfig) -> Result<zenoh::Session, PublishError> {
    let mode = match cfg.mode {
        ZenohMode::Peer => "peer",
        ZenohMode::Client => "client",
    };
    let text = keys::zenoh_json5(mode, &cfg.connect, &cfg.listen, cfg.multicast_scouting);
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
}

/// Publishes until every sender is dropped and the channel is drained. Evidence images go at
/// a lower priority than events, so that large payloads do not stall small ones; a camera
/// sends a violation's images before its event.
pub async fn run_publisher(
    session: zenoh::Session,
    mut rx: mpsc::Receiver<Outgoing>,
) -> PublishStats {
    let mut stats = PublishStats::default();
    while let Some(out) = rx.recv().await {
        let (key, result) = match out {
            Outgoing::Event(ev) => {
                let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
                let r = session
                    .put(&key, ev.encode())
                    .congestion_control(CongestionControl::Block)
                    .await;
                if r.is_ok() {
                    stats.published += 1;
                }
                (key, r)
            }
            Outgoing::Evidence {
                checkpoint,
                camera,
                image_id,
                jpeg,
            } => {
                let key = keys::evidence(&checkpoint, &camera, &image_id);
                let r = session
                    .put(&key, jpeg.as_slice().to_vec())
                    .congestion_control(CongestionControl::Block)
                    .priority(Priority::DataLow)
                    .encoding(zenoh::bytes::Encoding::IMAGE_JPEG)
                    .await;
                if r.is_ok() {
                    stats.evidence_published += 1;
                }
                (key, r)
            }
        };
        match result {
            Ok(()) => debug!(key = %key, "Published"),
            Err(e) => {
                stats.failed += 1;
                warn!(key = %key, error = %e, "Not published");
            }
        }
    }
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
