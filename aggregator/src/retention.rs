//! The purge job: events older than their kind's retention period go, with their evidence
//! images, so that personal data is kept no longer than configured.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::EventKind;
use tracing::{error, info};

use crate::config::RetentionConfig;
use crate::store::{EventStore, StoreError};

/// One purge pass at `now_ms`, after the store's upkeep; returns (events, images) deleted.
pub fn purge_once(
    store: &mut dyn EventStore,
    cfg: &RetentionConfig,
    now_ms: i64,
) -> Result<(u64, u64), StoreError> {
    let mut total = (0, 0);
    let t = Instant::now();
    match store.maintain() {
        Ok(()) => info!(
            seconds = t.elapsed().as_secs_f64(),
            "Store upkeep done (vacuum)"
        ),
        Err(e) => error!(error = %e, "Store upkeep failed; purging all the same"),
    }
    for kind in EventKind::ALL {
        if let Some(days) = cfg.days_for(kind) {
            let (e, i) = store.purge(kind, now_ms - days as i64 * 86_400_000)?;
            if e > 0 {
                info!(
                    kind = kind.as_str(),
                    days,
                    events = e,
                    images = i,
                    "Purged events past their retention period"
                );
            }
            total.0 += e;
            total.1 += i;
        }
    }
    Ok(total)
}

/// Runs [`purge_once`] every `purge_interval_secs` until `stop` is raised.
pub fn run(
    mut store: Box<dyn EventStore>,
    cfg: RetentionConfig,
    stop: Arc<AtomicBool>,
    purged: Arc<crate::ingest::IngestMetrics>,
    leases: Arc<crate::lease::Leases>,
) {
    let every = Duration::from_secs(cfg.purge_interval_secs);
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= next && leases.holds(crate::lease::RETENTION) {
            match purge_once(store.as_mut(), &cfg, protocol::time::now_ms()) {
                Ok((e, i)) => {
                    purged.purged_events.fetch_add(e, Ordering::Relaxed);
                    purged.purged_images.fetch_add(i, Ordering::Relaxed);
                }
                Err(e) => error!(error = %e, "Purge failed; retrying at the next interval"),
            }
            next = Instant::now() + every;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
