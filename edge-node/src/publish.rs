//! Stage `publish`: events out over zenoh, under keys built by `protocol::keys`.
//!
//! Input: events from every camera through one bounded channel (cameras wait when it is full;
//! events are never dropped). Output: one zenoh put per event, reliable, with congestion
//! control `Block`. The at-least-once outbox with acknowledgements is a later stage; for now
//! the node waits at start-up until an aggregator's liveliness token is visible, so that the
//! first events have a subscriber to reach.

use std::time::{Duration, Instant};

use protocol::{keys, Event};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use zenoh::qos::CongestionControl;

use crate::config::{ZenohConfig, ZenohMode};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("invalid zenoh settings: {0}; check the [zenoh] section (endpoints look like tcp/127.0.0.1:7447)")]
    Config(String),
    #[error("cannot open the zenoh session: {0}; check [zenoh] connect/listen endpoints")]
    Open(String),
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
    pub failed: u64,
}

/// Publishes until every sender is dropped and the channel is drained.
pub async fn run_publisher(session: zenoh::Session, mut rx: mpsc::Receiver<Event>) -> PublishStats {
    let mut stats = PublishStats::default();
    while let Some(ev) = rx.recv().await {
        let key = keys::event(&ev.checkpoint_id, &ev.camera_id, ev.kind(), &ev.event_id);
        match session
            .put(&key, ev.encode())
            .congestion_control(CongestionControl::Block)
            .await
        {
            Ok(()) => {
                stats.published += 1;
                debug!(key = %key, "Event published");
            }
            Err(e) => {
                stats.failed += 1;
                warn!(key = %key, error = %e, "Event not published");
            }
        }
    }
    stats
}
