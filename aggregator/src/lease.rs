//! Once-only jobs among aggregators side by side on one database.
//!
//! Several aggregator processes may serve one scope on one PostgreSQL (two machines, so that
//! a lost one does not blind the county): all of them subscribe and ingest (idempotent by
//! event id; derived alerts have derived ids, so a cloned plate is stored, and pushed live,
//! once). The jobs that must run once (the GA/T 1400 export, the retention purge, the city's
//! pull from its counties) are each held by one aggregator at a time through a lease row in
//! the database itself (`leases`: job, holder, expiry by the database's clock). The holder
//! renews it every third of `lease_secs`; when it dies (SIGKILL, a lost machine, a cut
//! network), its lease runs out and another takes the job at its next try, within
//! `lease_secs` plus one renewal interval. A holder that cannot renew stops the job before
//! its lease can run out (it counts its lease from before the renewal it sent, with a
//! margin), so two never work at once while the database's clock is the only one trusted.
//! A clean stop gives the leases up at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::store::EventStore;

/// The once-only jobs.
pub const EXPORT: &str = "export";
pub const RETENTION: &str = "retention";
pub const SYNC: &str = "sync";

/// The leases this aggregator holds, as it last renewed them.
#[derive(Debug)]
pub struct Leases {
    /// `<scope>/<job>`s, so that scopes sharing one database do not share a lease.
    scope: String,
    /// This process: the aggregator id and a per-run suffix (two processes started with one
    /// config by mistake are still two holders).
    pub holder: String,
    ttl: Duration,
    jobs: Vec<&'static str>,
    /// Job -> held until (local clock, with the margin taken off).
    held: Mutex<BTreeMap<&'static str, Instant>>,
}

impl Leases {
    pub fn new(scope: &str, aggregator_id: &str, ttl: Duration, jobs: Vec<&'static str>) -> Leases {
        Leases {
            scope: scope.to_string(),
            holder: format!("{aggregator_id}/{}", ulid::Ulid::new()),
            ttl,
            jobs,
            held: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether this aggregator may run `job` now.
    pub fn holds(&self, job: &str) -> bool {
        self.held
            .lock()
            .expect("not poisoned")
            .get(job)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// The jobs held now.
    pub fn held(&self) -> Vec<&'static str> {
        self.jobs
            .iter()
            .copied()
            .filter(|j| self.holds(j))
            .collect()
    }

    fn key(&self, job: &str) -> String {
        format!("{}/{job}", self.scope)
    }

    /// One round: takes or renews every job's lease.
    pub fn renew(&self, store: &mut dyn EventStore) {
        for job in &self.jobs {
            let sent = Instant::now();
            let ttl_ms = self.ttl.as_millis() as i64;
            let was = self.holds(job);
            match store.lease(&self.key(job), &self.holder, ttl_ms) {
                Ok(true) => {
                    // Counted from before the request, less a tenth: the database's lease
                    // ends no earlier than this.
                    let until = sent + self.ttl.mul_f64(0.9);
                    self.held.lock().expect("not poisoned").insert(job, until);
                    if !was {
                        info!(job, holder = %self.holder, "Took the once-only job (lease)");
                    }
                }
                Ok(false) => {
                    if was {
                        warn!(job, "Lost the once-only job to another aggregator");
                    }
                    self.held.lock().expect("not poisoned").remove(job);
                }
                Err(e) => {
                    // Keep what is still valid; it runs out by itself.
                    warn!(job, error = %e, "Renewing a lease failed; the job stops when the lease runs out");
                }
            }
        }
    }

    /// Renews every third of the lease until `stop`, then gives the leases up. `each_round`
    /// runs after each renewal with the same connection (what aggregators side by side keep
    /// in step, such as the watch list).
    pub fn run(
        &self,
        mut store: Box<dyn EventStore>,
        stop: Arc<AtomicBool>,
        mut each_round: impl FnMut(&mut dyn EventStore),
    ) {
        let every = self.ttl / 3;
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            self.renew(store.as_mut());
            each_round(store.as_mut());
            while t.elapsed() < every && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.held.lock().expect("not poisoned").clear();
        for job in &self.jobs {
            if let Err(e) = store.release(&self.key(job), &self.holder) {
                warn!(job, error = %e, "Giving a lease up failed; it runs out by itself");
            }
        }
    }

    /// Waits until `job` is held or `stop` is raised; true when held.
    pub fn wait_for(&self, job: &str, stop: &AtomicBool) -> bool {
        while !stop.load(Ordering::Relaxed) {
            if self.holds(job) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_a_dead_ones_lease_runs_out() {
        let dir = std::env::temp_dir().join(format!("lease-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("l.db");
        let mut s1 = crate::store::SqliteStore::open(&path).unwrap();
        let mut s2 = crate::store::SqliteStore::open(&path).unwrap();
        let ttl = Duration::from_millis(600);
        let a = Leases::new("320505", "A", ttl, vec![EXPORT, RETENTION]);
        let b = Leases::new("320505", "B", ttl, vec![EXPORT, RETENTION]);
        a.renew(&mut s1);
        b.renew(&mut s2);
        assert_eq!(a.held(), vec![EXPORT, RETENTION]);
        assert!(b.held().is_empty());
        // A renews and keeps them.
        std::thread::sleep(Duration::from_millis(300));
        a.renew(&mut s1);
        b.renew(&mut s2);
        assert!(a.holds(EXPORT) && !b.holds(EXPORT));
        // A dies (no more renewals): its lease runs out, then B takes over, and A, had it
        // only stalled, knows it holds nothing by then.
        std::thread::sleep(Duration::from_millis(700));
        assert!(
            !a.holds(EXPORT),
            "a stalled holder still thinks it holds the job"
        );
        b.renew(&mut s2);
        assert_eq!(b.held(), vec![EXPORT, RETENTION]);
        a.renew(&mut s1);
        assert!(a.held().is_empty());
        let rows = crate::store::EventStore::leases(&mut s2).unwrap();
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.holder == b.holder && r.left_ms > 0));
        // A clean stop gives them up at once.
        let stop = Arc::new(AtomicBool::new(true));
        b.run(Box::new(s2), stop, |_| {});
        a.renew(&mut s1);
        assert_eq!(a.held(), vec![EXPORT, RETENTION]);
        std::fs::remove_dir_all(dir).ok();
    }
}
