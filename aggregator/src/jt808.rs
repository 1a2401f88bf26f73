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
//! What this holds today: each terminal's latest position, its state (driving, stopped,
//! stopped abnormally) and how many it reported (`GET /api/v1/vehicles/positions`); the
//! alerts its positions raise (`crate::vehicle_state`: abnormal stop, speeding, fatigue,
//! night coach, terminal silent; `GET /api/v1/vehicles/alerts`, the latest 10,000), and the
//! counters. Storing the position stream and the alerts as reviewable events is the next
//! step (issue 21).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::jt808::{self, Frame, Header, Location};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};

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
    /// Vehicle state and alert settings (`[jt808.state]`).
    #[serde(default)]
    pub state: crate::vehicle_state::StateConfig,
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
    /// Registered terminals, and whether each is a coach.
    registered: Mutex<HashMap<String, (jt808::Register, bool)>>,
    positions: Mutex<HashMap<String, VehiclePosition>>,
    tracker: Mutex<crate::vehicle_state::Tracker>,
    alerts: Mutex<std::collections::VecDeque<VehicleAlert>>,
    is_coach: Box<dyn Fn(&str) -> bool + Send + Sync>,
}

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
            is_coach: Box::new(|_| false),
        }
    }

    /// How to tell a coach by its plate (the night-coach rule); by default none is.
    pub fn with_coaches(mut self, f: Box<dyn Fn(&str) -> bool + Send + Sync>) -> Gateway {
        self.is_coach = f;
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

    fn keep(&self, alerts: Vec<crate::vehicle_state::Alert>) {
        if alerts.is_empty() {
            return;
        }
        let reg = self.registered.lock().unwrap_or_else(|e| e.into_inner());
        let mut kept = self.alerts.lock().unwrap_or_else(|e| e.into_inner());
        for a in alerts {
            let r = reg.get(&a.terminal);
            info!(terminal = a.terminal, kind = ?a.kind, detail = a.detail, "Vehicle alert");
            kept.push_back(VehicleAlert {
                plate: r.map(|(r, _)| r.plate.clone()),
                region: r.map(|(r, _)| format!("{:02}{:04}", r.province, r.city)),
                alert: a,
            });
            if kept.len() > MAX_ALERTS {
                kept.pop_front();
            }
        }
    }

    /// Terminals gone silent (the gateway asks every 30 s).
    pub fn check_silence(&self, now_ms: i64) {
        let alerts = self
            .tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tick(now_ms);
        self.keep(alerts);
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

    fn record(&self, phone: &str, locations: &[Location]) {
        let now = protocol::time::now_ms();
        let reg = self
            .registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(phone)
            .map(|(r, coach)| {
                (
                    r.plate.clone(),
                    format!("{:02}{:04}", r.province, r.city),
                    *coach,
                )
            });
        // State and alerts, in the fixes' time order.
        let mut in_order: Vec<&Location> = locations.iter().collect();
        in_order.sort_by_key(|l| l.time_ms);
        let coach = reg.as_ref().is_some_and(|r| r.2);
        let alerts: Vec<crate::vehicle_state::Alert> = {
            let mut t = self.tracker.lock().unwrap_or_else(|e| e.into_inner());
            in_order
                .iter()
                .flat_map(|l| {
                    t.on_fix(
                        phone,
                        crate::vehicle_state::Fix {
                            time_ms: l.time_ms,
                            lat: l.lat,
                            lon: l.lon,
                            speed_kmh: l.speed_kmh,
                        },
                        coach,
                        now,
                    )
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
            if let Some((plate, region, _)) = &reg {
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
        self.keep(alerts);
    }
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
                gw.check_silence(protocol::time::now_ms());
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
                        out.extend(handle(gw, &mut session, whole));
                    }
                }
            }
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

/// One whole message: the reply bytes.
fn handle(gw: &Gateway, s: &mut Session, f: Frame) -> Vec<u8> {
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
                let coach = (gw.is_coach)(&r.plate);
                gw.registered
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(h.phone.clone(), (r, coach));
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
                    gw.record(&h.phone, &ls);
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
}
