//! What the dashboard watches live: alerts as they are stored (a broadcast to every
//! server-sent-event stream), and the nodes' latest health reports.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use protocol::health::NodeHealth;
use protocol::{Event, EventKind};
use serde::Serialize;

/// Alerts a slow dashboard may fall behind by before it misses some (it is told, and
/// catches up with a search).
pub const ALERT_BACKLOG: usize = 1024;

/// A node counts as alive while its last report is younger than this many intervals.
const ALIVE_INTERVALS: i64 = 3;

pub struct Live {
    pub alerts: tokio::sync::broadcast::Sender<Arc<Event>>,
    /// Raised when the aggregator stops: live streams end, so that the server can.
    pub closing: tokio::sync::watch::Sender<bool>,
    nodes: Mutex<BTreeMap<String, (NodeHealth, i64)>>,
    /// The latest [`ALERT_BACKLOG`] alerts, oldest first: a stream that reconnects with
    /// `Last-Event-ID` is sent what came after it.
    recent: Mutex<VecDeque<Arc<Event>>>,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            alerts: tokio::sync::broadcast::channel(ALERT_BACKLOG).0,
            closing: tokio::sync::watch::channel(false).0,
            nodes: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(VecDeque::with_capacity(ALERT_BACKLOG)),
        }
    }
}

/// Whether operators are alerted to an event of this kind as it arrives.
pub fn is_alert(ev: &Event) -> bool {
    matches!(
        ev.kind(),
        EventKind::PedestrianRedLight | EventKind::PlateAnomaly | EventKind::VehicleAlert
    )
}

/// One checkpoint's state on the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct NodeState {
    pub checkpoint_id: String,
    pub alive: bool,
    pub last_report_ms: Option<i64>,
    pub report: Option<NodeHealth>,
}

impl Live {
    /// Sends the alerts of a stored batch to every live stream, and keeps them among the
    /// latest for streams that reconnect.
    pub fn publish(&self, events: &[Event]) {
        let mut recent = self.recent.lock().expect("not poisoned");
        for ev in events.iter().filter(|e| is_alert(e)) {
            let ev = Arc::new(ev.clone());
            if recent.len() == ALERT_BACKLOG {
                recent.pop_front();
            }
            recent.push_back(ev.clone());
            let _ = self.alerts.send(ev);
        }
    }

    /// The alerts published after the one with id `last`, oldest first; `None` when that
    /// one is no longer held (the stream must reload from the events API).
    pub fn after(&self, last: &str) -> Option<Vec<Arc<Event>>> {
        let recent = self.recent.lock().expect("not poisoned");
        let at = recent.iter().position(|e| e.event_id == last)?;
        Some(recent.iter().skip(at + 1).cloned().collect())
    }

    pub fn report(&self, h: NodeHealth, received_ms: i64) {
        self.nodes
            .lock()
            .expect("not poisoned")
            .insert(h.checkpoint_id.clone(), (h, received_ms));
    }

    /// The checkpoint whose node last reported `camera` among its cameras.
    pub fn checkpoint_of_camera(&self, camera: &str) -> Option<String> {
        let nodes = self.nodes.lock().expect("not poisoned");
        nodes
            .iter()
            .find(|(_, (h, _))| h.cameras.iter().any(|c| c.id == camera))
            .map(|(id, _)| id.clone())
    }

    /// Every checkpoint in `known` and every one that reported, at `now_ms`.
    pub fn nodes(&self, known: &[String], now_ms: i64) -> Vec<NodeState> {
        let nodes = self.nodes.lock().expect("not poisoned");
        let mut ids: Vec<&String> = known.iter().chain(nodes.keys()).collect();
        ids.sort();
        ids.dedup();
        ids.into_iter()
            .map(|id| match nodes.get(id) {
                Some((h, at)) => NodeState {
                    checkpoint_id: id.clone(),
                    alive: now_ms - at <= ALIVE_INTERVALS * h.interval_ms.max(1000) as i64,
                    last_report_ms: Some(*at),
                    report: Some(h.clone()),
                },
                None => NodeState {
                    checkpoint_id: id.clone(),
                    alive: false,
                    last_report_ms: None,
                    report: None,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_alive_for_three_intervals_after_its_report() {
        let live = Live::default();
        let h = NodeHealth {
            node_id: "n".into(),
            checkpoint_id: "32050500051210000001".into(),
            sent_ms: 0,
            interval_ms: 5000,
            cameras: vec![],
            outbox_backlog_items: 0,
            outbox_oldest_age_secs: 0.0,
            execution_providers: Default::default(),
            clock: None,
        };
        live.report(h, 1_000);
        let known = vec!["32050500051210000002".to_string()];
        let at = |now| live.nodes(&known, now);
        assert_eq!(at(10_000).len(), 2);
        assert!(at(16_000)[0].alive);
        assert!(!at(16_001)[0].alive);
        assert!(!at(0)[1].alive);
    }

    /// Issue 18, row 8 (the last part): a stream reconnecting with `Last-Event-ID` is given
    /// what came after that alert, and told to reload when it is no longer held.
    #[test]
    fn row8_last_event_id_resumes_after_the_last_alert() {
        let live = Live::default();
        let alert = crate::store::tests::watch_list_hit;
        let evs: Vec<Event> = (0..5).map(|i| alert(1_790_000_000_000 + i)).collect();
        live.publish(&evs);
        let after: Vec<String> = live
            .after(&evs[1].event_id)
            .unwrap()
            .iter()
            .map(|e| e.event_id.clone())
            .collect();
        assert_eq!(
            after,
            evs[2..]
                .iter()
                .map(|e| e.event_id.clone())
                .collect::<Vec<_>>()
        );
        assert!(live.after(&evs[4].event_id).unwrap().is_empty());
        assert!(live.after("01ZZZZZZZZZZZZZZZZZZZZZZZZ").is_none());
        // Only the latest ALERT_BACKLOG are held.
        let more: Vec<Event> = (0..ALERT_BACKLOG as i64)
            .map(|i| alert(1_790_000_100_000 + i))
            .collect();
        live.publish(&more);
        assert!(live.after(&evs[4].event_id).is_none());
    }
}
