//! JT/T 808 gateway: vehicle terminals (the 4G units of coaches, tour buses, hazardous-goods
//! tankers and heavy trucks, 两客一危一货) connect over TCP and report their positions.
//!
//! `[jt808] listen = "0.0.0.0:7611"` starts it. Each connection is its own task: a bad
//! terminal (garbage, broken frames, a flood) costs its own connection only. Per the 2019
//! edition (and the 2013 header): registration (0x0100, answered 0x8100 with an
//! authentication code), authentication (0x0102), heartbeat (0x0002), deregistration
//! (0x0003), location (0x0200) and batch location (0x0704), sub-packages put back together,
//! every message answered with a general reply (0x8001) as the standard asks. A frame that
//! does not parse is refused and counted by reason; a location from a terminal that has not
//! authenticated on its connection is refused (result 1). The authentication code is the
//! terminal's phone number signed with the gateway's secret (`auth_secret`), so a code stays
//! good across restarts and nothing per terminal must be kept to check it.
//!
//! Every position becomes a `vehicle_position` event and every alert its positions raise
//! (`crate::vehicle_state`: abnormal stop, speeding, fatigue, night coach, terminal silent)
//! a `vehicle_alert` event, pending review like a violation: both go through the
//! aggregator's own ingest (validated, stored, idempotent: a position's id is made from its
//! terminal and time, so a batch a terminal sends again is stored once), filed under
//! `[jt808] checkpoint_id` in the county's key space, and reach the city with the county's
//! other events (`crate::sync`). A terminal is answered once its positions are queued for
//! the store; while the aggregator stops it is not answered, and sends them again.
//! The latest position, state and report count of each terminal are kept in memory for
//! `GET /api/v1/vehicles/positions`, the latest 10,000 alerts for `.../vehicles/alerts`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::jt808::{self, Frame, Header, Location};
use protocol::{DeviceId, Event, EventBody, ReviewState, RuleRef, Severity, SCHEMA_VERSION};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

use crate::vehicle_state::Standing;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Jt808Config {
    /// Where terminals connect; none: no gateway.
    #[serde(default)]
    pub listen: Option<String>,
    /// The secret authentication codes are signed with; without one a random secret is
    /// drawn at start (terminals then register again after a restart).
    #[serde(default)]
    pub auth_secret: Option<String>,
    /// A connection silent this long is closed (terminals send heartbeats), seconds.
    #[serde(default = "d_idle")]
    pub idle_secs: u64,
    /// Connections at once; more are refused.
    #[serde(default = "d_max_conn")]
    pub max_connections: i64,
    /// Frames in a row that do not parse before a connection is closed.
    #[serde(default = "d_bad_in_a_row")]
    pub max_bad_frames_in_a_row: u32,
    /// The checkpoint (type 121, in this aggregator's scope and its `[[checkpoints]]`) the
    /// gateway's events are filed under: the place that stands for it on the map and in the
    /// key space. Required with `listen`.
    #[serde(default)]
    pub checkpoint_id: Option<String>,
    /// The gateway's own id (type 209, access gateway); by default the aggregator's id with
    /// its type digits set to 209.
    #[serde(default)]
    pub gateway_id: Option<String>,
    /// Store every position as an event (alerts are stored either way).
    #[serde(default = "d_true")]
    pub store_positions: bool,
    /// Vehicle state and alert settings (`[jt808.state]`).
    #[serde(default)]
    pub state: crate::vehicle_state::StateConfig,
}

fn d_true() -> bool {
    true
}

impl Jt808Config {
    /// Problems with the gateway's settings, for the config check; `aggregator` is the
    /// aggregator's id, `registered` tells a checkpoint of `[[checkpoints]]`.
    pub fn check(
        &self,
        aggregator: &str,
        registered: &dyn Fn(&str) -> bool,
        errors: &mut Vec<String>,
    ) {
        if self.listen.is_none() {
            return;
        }
        match self.checkpoint_id.as_deref() {
            None => errors.push("jt808.checkpoint_id is missing: the gateway files vehicles' positions and alerts under a checkpoint of this aggregator's scope (type 121, listed in [[checkpoints]]), e.g. checkpoint_id = \"32050500051210000099\"".into()),
            Some(c) => {
                if let Err(e) = DeviceId::parse_as(c, protocol::DeviceType::Checkpoint) {
                    errors.push(format!("jt808.checkpoint_id: {e}"));
                } else if !registered(c) {
                    errors.push(format!("jt808.checkpoint_id '{c}' is not in [[checkpoints]]; add it there (its name and place stand for the gateway)"));
                }
            }
        }
        if let Err(e) = self.gateway_id(aggregator) {
            errors.push(format!("jt808.gateway_id: {e}"));
        }
    }

    /// The gateway's id: as configured, or the aggregator's with type 209.
    pub fn gateway_id(&self, aggregator: &str) -> Result<DeviceId, protocol::DeviceIdError> {
        let id = match &self.gateway_id {
            Some(g) => g.clone(),
            None if aggregator.len() == 20 && aggregator.is_ascii() => {
                format!("{}209{}", &aggregator[..10], &aggregator[13..])
            }
            None => aggregator.to_string(),
        };
        DeviceId::parse_as(&id, protocol::DeviceType::AccessGateway)
    }
}

fn d_idle() -> u64 {
    180
}
fn d_max_conn() -> i64 {
    20_000
}
fn d_bad_in_a_row() -> u32 {
    20
}

impl Default for Jt808Config {
    fn default() -> Self {
        Jt808Config {
            listen: None,
            auth_secret: None,
            idle_secs: d_idle(),
            max_connections: d_max_conn(),
            max_bad_frames_in_a_row: d_bad_in_a_row(),
            checkpoint_id: None,
            gateway_id: None,
            store_positions: true,
            state: Default::default(),
        }
    }
}

/// The latest position of one terminal.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VehiclePosition {
    /// The terminal's phone number (its id in JT/T 808).
    pub terminal: String,
    /// The plate it registered with, if it registered since the gateway started.
    pub plate: Option<String>,
    /// Its county as registered (province and city/county codes, GB/T 2260).
    pub region: Option<String>,
    pub lat: f64,
    pub lon: f64,
    pub speed_kmh: f64,
    pub heading: u16,
    pub altitude_m: u16,
    pub alarm: u32,
    pub status: u32,
    /// The fix's time, UTC ms.
    pub time_ms: i64,
    pub received_ms: i64,
    /// Positions reported since the gateway started.
    pub reports: u64,
    /// Driving, stopped, stopped abnormally.
    pub state: Option<crate::vehicle_state::State>,
}

/// An alert with the vehicle it concerns.
#[derive(Debug, Clone, Serialize)]
pub struct VehicleAlert {
    pub plate: Option<String>,
    pub region: Option<String>,
    #[serde(flatten)]
    pub alert: crate::vehicle_state::Alert,
}

/// Alerts kept for the API.
const MAX_ALERTS: usize = 10_000;

/// What the gateway counted.
#[derive(Default)]
pub struct Jt808Stats {
    pub connections: AtomicU64,
    pub online: AtomicI64,
    pub refused_connections: AtomicU64,
    pub frames: AtomicU64,
    pub locations: AtomicU64,
    pub unauthenticated: AtomicU64,
    pub auth_failed: AtomicU64,
    pub bad: Mutex<BTreeMap<&'static str, u64>>,
}

impl Jt808Stats {
    fn bad(&self, reason: &'static str) {
        *self
            .bad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_default() += 1;
    }

    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "connections": self.connections.load(Relaxed),
            "online": self.online.load(Relaxed),
            "refused_connections": self.refused_connections.load(Relaxed),
            "frames": self.frames.load(Relaxed),
            "locations": self.locations.load(Relaxed),
            "unauthenticated": self.unauthenticated.load(Relaxed),
            "auth_failed": self.auth_failed.load(Relaxed),
            "bad_frames": *self.bad.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }
}

/// The gateway's state, shared by its connections and the HTTP API.
pub struct Gateway {
    cfg: Jt808Config,
    secret: Vec<u8>,
    pub stats: Jt808Stats,
    /// Registered terminals.
    registered: Mutex<HashMap<String, jt808::Register>>,
    positions: Mutex<HashMap<String, VehiclePosition>>,
    tracker: Mutex<crate::vehicle_state::Tracker>,
    alerts: Mutex<std::collections::VecDeque<VehicleAlert>>,
    /// What the registry in force says of a plate, looked up at each report (a new version
    /// counts from the next one).
    standing: Box<dyn Fn(&str) -> Standing + Send + Sync>,
    /// Where events go: the gateway's ids and the aggregator's ingest (none: kept in memory
    /// only, as in unit tests); the sender is taken when the aggregator stops.
    filing: Option<Filing>,
    sink: Mutex<Option<tokio::sync::mpsc::Sender<Vec<Event>>>>,
}

/// The ids the gateway's events carry.
#[derive(Debug, Clone)]
pub struct Filing {
    pub gateway: DeviceId,
    pub checkpoint: DeviceId,
}

/// A position's event id: its time and a digest of its terminal and time, so the same fix
/// sent twice is one event.
pub fn position_id(terminal: &str, time_ms: i64) -> String {
    crate::correlate::derived_id(time_ms, &format!("jt808|position|{terminal}|{time_ms}"))
}

/// Fixes an alert carries: all when few, else the first, the last and an even spread.
const MAX_ALERT_FIXES: usize = 32;

impl Gateway {
    pub fn new(cfg: Jt808Config) -> Gateway {
        let secret = match &cfg.auth_secret {
            Some(s) => s.as_bytes().to_vec(),
            None => {
                let mut b = [0u8; 32];
                getrandom::fill(&mut b).expect("the OS has randomness");
                warn!("jt808.auth_secret is not set: a random one is used, so terminals must register again after a restart");
                b.to_vec()
            }
        };
        Gateway {
            tracker: Mutex::new(crate::vehicle_state::Tracker::new(cfg.state.clone())),
            cfg,
            secret,
            stats: Jt808Stats::default(),
            registered: Mutex::new(HashMap::new()),
            positions: Mutex::new(HashMap::new()),
            alerts: Mutex::new(Default::default()),
            standing: Box::new(|_| Standing::default()),
            filing: None,
            sink: Mutex::new(None),
        }
    }

    /// Files positions and alerts as events through `sink` (the aggregator's ingest).
    pub fn with_filing(
        mut self,
        filing: Filing,
        sink: tokio::sync::mpsc::Sender<Vec<Event>>,
    ) -> Gateway {
        self.filing = Some(filing);
        self.sink = Mutex::new(Some(sink));
        self
    }

    /// Stops filing: terminals are no longer answered (they send again later).
    pub fn close(&self) {
        self.sink.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Hands events to the store; false when the aggregator is stopping (nothing taken).
    pub async fn file(&self, events: Vec<Event>) -> bool {
        if self.filing.is_none() {
            return true;
        }
        let tx = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match tx {
            Some(tx) if events.is_empty() => {
                drop(tx);
                true
            }
            Some(tx) => tx.send(events).await.is_ok(),
            None => false,
        }
    }

    fn event(&self, f: &Filing, id: String, time_ms: i64, body: EventBody) -> Event {
        let alert = matches!(body, EventBody::VehicleAlert(_));
        Event {
            schema_version: SCHEMA_VERSION,
            event_id: id,
            severity: if alert {
                Severity::Alert
            } else {
                Severity::Info
            },
            node_id: f.gateway.clone(),
            checkpoint_id: f.checkpoint.clone(),
            camera_id: f.gateway.clone(),
            lane: None,
            frame_time_ms: time_ms,
            detections: vec![],
            rule: match &body {
                EventBody::VehicleAlert(a) => Some(RuleRef {
                    id: format!("vehicle.{}", a.alert.as_str()),
                    version: 1,
                }),
                _ => None,
            },
            evidence: vec![],
            review: if alert {
                ReviewState::Pending
            } else {
                ReviewState::NotRequired
            },
            clock: None,
            body,
        }
    }

    /// What the registry says of a plate: a coach (the night-coach rule) and what it holds
    /// against the vehicle (the registry-status alert); by default nothing.
    pub fn with_registry(mut self, f: Box<dyn Fn(&str) -> Standing + Send + Sync>) -> Gateway {
        self.standing = f;
        self
    }

    /// The latest alerts, newest first (a county user: its county's).
    pub fn alerts(&self, county: Option<&str>) -> Vec<VehicleAlert> {
        self.alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .filter(|a| county.is_none() || a.region.as_deref() == county)
            .cloned()
            .collect()
    }

    /// Keeps alerts for the API and makes their events.
    fn keep(&self, alerts: Vec<crate::vehicle_state::Alert>) -> Vec<Event> {
        if alerts.is_empty() {
            return vec![];
        }
        let reg = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        let mut events = Vec::new();
        for a in alerts {
            let r = reg.get(&a.terminal);
            let plate = r.map(|r| r.plate.clone());
            info!(terminal = a.terminal, kind = ?a.kind, detail = a.detail, "Vehicle alert");
            if let Some(f) = &self.filing {
                let fixes = thin(&a.fixes, MAX_ALERT_FIXES);
                let start = a.fixes.first().map_or(a.at_ms, |x| x.time_ms);
                let id = crate::correlate::derived_id(
                    a.at_ms,
                    &format!("jt808|alert|{}|{}|{start}", a.kind.as_str(), a.terminal),
                );
                events.push(self.event(
                    f,
                    id,
                    a.at_ms,
                    EventBody::VehicleAlert(protocol::VehicleAlert {
                        alert: a.kind,
                        terminal: a.terminal.clone(),
                        plate: plate.clone(),
                        detail: a.detail.clone(),
                        positions: if self.cfg.store_positions {
                            fixes
                                .iter()
                                .map(|x| position_id(&a.terminal, x.time_ms))
                                .collect()
                        } else {
                            vec![]
                        },
                        fixes,
                        statuses: a.statuses.clone(),
                    }),
                ));
            }
            kept.push_back(VehicleAlert {
                plate,
                region: r.map(|r| format!("{:02}{:04}", r.province, r.city)),
                alert: a,
            });
            if kept.len() > MAX_ALERTS {
                kept.pop_front();
            }
        }
        events
    }

    /// Terminals gone silent (the gateway asks every 30 s): their alerts' events.
    pub fn check_silence(&self, now_ms: i64) -> Vec<Event> {
        let alerts = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tick(now_ms);
        self.keep(alerts)
    }

    /// The authentication code of a terminal: its phone number signed with the secret.
    pub fn auth_code(&self, phone: &str) -> String {
        let mut h = Sha256::new();
        h.update(&self.secret);
        h.update(b"|jt808|");
        h.update(phone.as_bytes());
        hex::encode(&h.finalize()[..12])
    }

    /// Latest positions, those of `county` only when given (terminals registered there).
    pub fn positions(&self, county: Option<&str>) -> Vec<VehiclePosition> {
        let tracker = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<VehiclePosition> = self
            .positions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|p| county.is_none() || p.region.as_deref() == county)
            .map(|p| VehiclePosition {
                state: tracker.state(&p.terminal),
                ..p.clone()
            })
            .collect();
        v.sort_by(|a, b| a.terminal.cmp(&b.terminal));
        v
    }

    /// Takes a terminal's locations: the events to store (positions, alerts).
    fn record(&self, phone: &str, locations: &[Location]) -> Vec<Event> {
        let now = protocol::time::now_ms();
        let reg = self
            .registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(phone)
            .map(|r| (r.plate.clone(), format!("{:02}{:04}", r.province, r.city)));
        let standing = reg
            .as_ref()
            .map(|r| (self.standing)(&r.0))
            .unwrap_or_default();
        // State and alerts, in the fixes' time order.
        let mut in_order: Vec<&Location> = locations.iter().collect();
        in_order.sort_by_key(|l| l.time_ms);
        let alerts: Vec<crate::vehicle_state::Alert> = {
            let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            in_order
                .iter()
                .flat_map(|l| {
                    let fix = crate::vehicle_state::Fix {
                        time_ms: l.time_ms,
                        lat: l.lat,
                        lon: l.lon,
                        speed_kmh: l.speed_kmh,
                    };
                    let mut raised = t.on_fix(phone, fix, standing.coach, now);
                    raised.extend(t.on_standing(phone, fix, &standing.statuses));
                    raised
                })
                .collect()
        };
        let mut all = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        for l in locations {
            let e = all
                .entry(phone.to_string())
                .or_insert_with(|| VehiclePosition {
                    terminal: phone.to_string(),
                    plate: None,
                    region: None,
                    lat: l.lat,
                    lon: l.lon,
                    speed_kmh: l.speed_kmh,
                    heading: l.heading,
                    altitude_m: l.altitude_m,
                    alarm: l.alarm,
                    status: l.status,
                    time_ms: l.time_ms,
                    received_ms: now,
                    reports: 0,
                    state: None,
                });
            e.reports += 1;
            if let Some((plate, region)) = &reg {
                e.plate = Some(plate.clone());
                e.region = Some(region.clone());
            }
            // A batch kept while out of coverage may arrive after newer positions.
            if l.time_ms >= e.time_ms {
                (e.lat, e.lon, e.speed_kmh, e.heading, e.altitude_m) =
                    (l.lat, l.lon, l.speed_kmh, l.heading, l.altitude_m);
                (e.alarm, e.status, e.time_ms, e.received_ms) = (l.alarm, l.status, l.time_ms, now);
            }
        }
        drop(all);
        self.stats
            .locations
            .fetch_add(locations.len() as u64, Relaxed);
        let mut events = Vec::new();
        if let (Some(f), true) = (&self.filing, self.cfg.store_positions) {
            let plate = reg.as_ref().map(|r| r.0.clone());
            events.extend(locations.iter().map(|l| {
                self.event(
                    f,
                    position_id(phone, l.time_ms),
                    l.time_ms,
                    EventBody::VehiclePosition(protocol::VehiclePosition {
                        terminal: phone.to_string(),
                        plate: plate.clone(),
                        lat: l.lat,
                        lon: l.lon,
                        speed_kmh: l.speed_kmh,
                        heading: l.heading,
                        altitude_m: l.altitude_m,
                        alarm: l.alarm,
                        status: l.status,
                    }),
                )
            }));
        }
        events.extend(self.keep(alerts));
        events
    }
}

/// At most `n` of `fixes`: the first, the last and an even spread between.
fn thin(fixes: &[protocol::PositionFix], n: usize) -> Vec<protocol::PositionFix> {
    if fixes.len() <= n {
        return fixes.to_vec();
    }
    (0..n)
        .map(|i| fixes[i * (fixes.len() - 1) / (n - 1)])
        .collect()
}

/// Starts the gateway on `addr`: the address it listens on and its task.
pub async fn serve(
    gw: Arc<Gateway>,
    addr: &str,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    info!(%local, "JT/T 808 gateway listening");
    let silence = {
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(30));
            loop {
                every.tick().await;
                let events = gw.check_silence(protocol::time::now_ms());
                gw.file(events).await;
            }
        })
    };
    Ok((
        local,
        tokio::spawn(async move {
            let _silence = AbortOnDrop(silence);
            loop {
                let Ok((sock, peer)) = listener.accept().await else {
                    continue;
                };
                if gw.stats.online.load(Relaxed) >= gw.cfg.max_connections {
                    gw.stats.refused_connections.fetch_add(1, Relaxed);
                    drop(sock);
                    continue;
                }
                let gw = gw.clone();
                tokio::spawn(async move {
                    gw.stats.connections.fetch_add(1, Relaxed);
                    gw.stats.online.fetch_add(1, Relaxed);
                    let _ = sock.set_nodelay(true);
                    let why = connection(&gw, sock).await;
                    gw.stats.online.fetch_sub(1, Relaxed);
                    debug!(%peer, why, "JT/T 808 connection closed");
                });
            }
        }),
    ))
}

/// Stops a task when dropped (the gateway's silence check ends with the gateway).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One terminal's connection: frames in, replies out, until it closes, idles or floods.
async fn connection(gw: &Gateway, mut sock: tokio::net::TcpStream) -> &'static str {
    let mut split = jt808::Splitter::default();
    let mut reasm = jt808::Reassembler::default();
    let mut session = Session::default();
    let mut buf = vec![0u8; 8192];
    let idle = Duration::from_secs(gw.cfg.idle_secs.max(1));
    loop {
        let n = match tokio::time::timeout(idle, sock.read(&mut buf)).await {
            Err(_) => return "idle",
            Ok(Err(_)) | Ok(Ok(0)) => return "closed",
            Ok(Ok(n)) => n,
        };
        let mut frames = Vec::new();
        split.feed(&buf[..n], |r| frames.push(r.map(|f| f.to_vec())));
        let mut out = Vec::new();
        let mut events = Vec::new();
        for r in frames {
            gw.stats.frames.fetch_add(1, Relaxed);
            let frame = r.and_then(|f| jt808::decode(&f));
            match frame {
                Err(e) => {
                    gw.stats.bad(e.reason());
                    session.bad_in_a_row += 1;
                    if session.bad_in_a_row >= gw.cfg.max_bad_frames_in_a_row {
                        warn!(
                            terminal = session.phone.as_deref().unwrap_or("?"),
                            "JT/T 808 connection closed after {} bad frames in a row",
                            session.bad_in_a_row
                        );
                        return "bad frames";
                    }
                }
                Ok(f) => {
                    session.bad_in_a_row = 0;
                    if let Some(whole) = reasm.take(f, protocol::time::now_ms()) {
                        out.extend(handle(gw, &mut session, whole, &mut events));
                    }
                }
            }
        }
        // Answered once what they reported is queued for the store.
        if !gw.file(events).await {
            return "stopping";
        }
        if !out.is_empty() && sock.write_all(&out).await.is_err() {
            return "write failed";
        }
    }
}

#[derive(Default)]
struct Session {
    /// The terminal authenticated on this connection.
    phone: Option<String>,
    serial: u16,
    bad_in_a_row: u32,
}

impl Session {
    fn reply(&mut self, to: &Header, msg_id: u16, body: &[u8]) -> Vec<u8> {
        self.serial = self.serial.wrapping_add(1);
        jt808::encode(
            &Header {
                msg_id,
                edition: to.edition,
                encryption: 0,
                phone: to.phone.clone(),
                serial: self.serial,
                package: None,
            },
            body,
        )
    }

    fn general(&mut self, to: &Header, result: u8) -> Vec<u8> {
        let body = jt808::general_reply(to.serial, to.msg_id, result);
        self.reply(to, jt808::PLATFORM_REPLY, &body)
    }
}

fn gbk(b: &[u8]) -> String {
    encoding_rs::GBK.decode(b).0.into_owned()
}

/// One whole message: the reply bytes; the events it makes are added to `events`.
fn handle(gw: &Gateway, s: &mut Session, f: Frame, events: &mut Vec<Event>) -> Vec<u8> {
    let h = &f.header;
    if h.encryption != 0 {
        gw.stats.bad("encrypted");
        return s.general(h, jt808::RESULT_UNSUPPORTED);
    }
    let authed = s.phone.as_deref() == Some(h.phone.as_str());
    match h.msg_id {
        jt808::REGISTER => match jt808::parse_register(&f.body, h.edition, gbk) {
            Ok(r) => {
                debug!(
                    terminal = h.phone,
                    plate = r.plate,
                    "JT/T 808 terminal registered"
                );
                gw.tracker
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .set_plate(&h.phone, &r.plate);
                gw.registered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(h.phone.clone(), r);
                let body = jt808::register_reply(h.serial, 0, &gw.auth_code(&h.phone));
                s.reply(h, jt808::REGISTER_REPLY, &body)
            }
            Err(e) => {
                gw.stats.bad("body");
                debug!(error = %e, "JT/T 808 registration refused");
                s.general(h, jt808::RESULT_BAD_MESSAGE)
            }
        },
        jt808::AUTHENTICATE => match jt808::parse_auth(&f.body, h.edition) {
            Ok(code) if code == gw.auth_code(&h.phone) => {
                s.phone = Some(h.phone.clone());
                s.general(h, jt808::RESULT_OK)
            }
            Ok(_) => {
                gw.stats.auth_failed.fetch_add(1, Relaxed);
                s.general(h, jt808::RESULT_FAILED)
            }
            Err(_) => {
                gw.stats.bad("body");
                s.general(h, jt808::RESULT_BAD_MESSAGE)
            }
        },
        jt808::HEARTBEAT => {
            let r = if authed {
                jt808::RESULT_OK
            } else {
                jt808::RESULT_FAILED
            };
            s.general(h, r)
        }
        jt808::DEREGISTER => {
            gw.registered
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&h.phone);
            s.phone = None;
            s.general(h, jt808::RESULT_OK)
        }
        jt808::LOCATION | jt808::LOCATION_BATCH => {
            if !authed {
                gw.stats.unauthenticated.fetch_add(1, Relaxed);
                return s.general(h, jt808::RESULT_FAILED);
            }
            let parsed = if h.msg_id == jt808::LOCATION {
                jt808::parse_location(&f.body).map(|l| vec![l])
            } else {
                jt808::parse_batch(&f.body).map(|(_, ls)| ls)
            };
            match parsed {
                Ok(ls) => {
                    events.extend(gw.record(&h.phone, &ls));
                    s.general(h, jt808::RESULT_OK)
                }
                Err(e) => {
                    gw.stats.bad("body");
                    debug!(terminal = h.phone, error = %e, "JT/T 808 location refused");
                    s.general(h, jt808::RESULT_BAD_MESSAGE)
                }
            }
        }
        // The terminal acknowledging a platform message: nothing to answer.
        jt808::TERMINAL_REPLY => Vec::new(),
        _ => s.general(h, jt808::RESULT_UNSUPPORTED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_signed_phone_numbers() {
        let cfg = |s: &str| Jt808Config {
            auth_secret: Some(s.into()),
            ..Jt808Config::default()
        };
        let (a, b) = (Gateway::new(cfg("one")), Gateway::new(cfg("two")));
        assert_eq!(a.auth_code("13912345678"), a.auth_code("13912345678"));
        assert_ne!(a.auth_code("13912345678"), a.auth_code("13912345679"));
        assert_ne!(a.auth_code("13912345678"), b.auth_code("13912345678"));
        assert_eq!(a.auth_code("1").len(), 24);
    }

    #[test]
    fn a_listening_gateway_names_its_checkpoint_and_gets_its_own_id() {
        let known = |id: &str| id == "32050500051210000099";
        let check = |cfg: &Jt808Config| {
            let mut e = Vec::new();
            cfg.check("32050500055030000001", &known, &mut e);
            e
        };
        let mut cfg = Jt808Config {
            listen: Some("127.0.0.1:0".into()),
            ..Jt808Config::default()
        };
        let e = check(&cfg);
        assert!(
            e.len() == 1 && e[0].contains("jt808.checkpoint_id is missing"),
            "{e:?}"
        );
        cfg.checkpoint_id = Some("32050500051210000098".into());
        let e = check(&cfg);
        assert!(
            e.len() == 1 && e[0].contains("not in [[checkpoints]]"),
            "{e:?}"
        );
        cfg.checkpoint_id = Some("32050500051210000099".into());
        assert!(check(&cfg).is_empty());
        assert_eq!(
            cfg.gateway_id("32050500055030000001").unwrap().as_str(),
            "32050500052090000001"
        );
        cfg.gateway_id = Some("32050500051320000001".into());
        let e = check(&cfg);
        assert!(e.len() == 1 && e[0].contains("jt808.gateway_id"), "{e:?}");
        // Off: nothing asked.
        assert!(check(&Jt808Config::default()).is_empty());
    }
}
