//! GA/T 1400 (视图库) export: vehicle passes go upstream as `MotorVehicle` objects, the
//! checkpoints as `Tollgate` objects.
//!
//! The session: `POST /VIID/System/Register` answered with an HTTP Digest challenge (RFC
//! 2617, qop `auth`, MD5), registered on the second try; `POST /VIID/System/Keepalive` every
//! `keepalive_secs` (a failed keepalive registers again); `POST /VIID/Tollgates` once per
//! registration; `POST /VIID/MotorVehicles` in batches, answered with one status per item
//! (0 OK). Every request carries `Content-Type: application/VIID+JSON` and `User-Identify`.
//!
//! What is exported comes from a durable queue in the store (`export_queue`), filled in the
//! transaction that stores each new vehicle pass: a pass stored is a pass exported, across
//! restarts; an item the platform refuses is retried with backoff, up to `max_attempts`,
//! then kept as failed with the platform's reason.
//!
//! Ids: SourceID and ImageID are 41 characters (DeviceID 20 + type `02` + local time
//! YYYYMMDDhhmmss + sequence 5); MotorVehicleID is 48 (SourceID + `02` + sequence 5). The
//! sequences derive from the event id, so a retried item keeps its ids.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::{Event, EventBody};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::store::{EventStore, ExportItem};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Export vehicle passes upstream (off by default).
    #[serde(default)]
    pub enabled: bool,
    /// The platform's base URL, `http://host:port` (the `/VIID/...` paths are appended).
    #[serde(default)]
    pub endpoint: String,
    /// This platform's 20-digit id for `User-Identify` and Register (default: the
    /// aggregator's id).
    #[serde(default)]
    pub user_identify: Option<String>,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default = "d_keepalive")]
    pub keepalive_secs: u64,
    /// Objects per POST.
    #[serde(default = "d_batch")]
    pub batch: usize,
    /// How often the queue is looked at when it was empty, ms.
    #[serde(default = "d_poll")]
    pub poll_ms: u64,
    /// Tries per item before it is kept as failed.
    #[serde(default = "d_attempts")]
    pub max_attempts: u32,
    /// First retry delay, seconds; doubled per attempt, at most an hour.
    #[serde(default = "d_retry")]
    pub retry_secs: u64,
    /// Where the platform fetches images: `StorageUrl1` and `StoragePath` are this prefix
    /// plus the image id (default: this aggregator's `/api/v1/evidence/`).
    #[serde(default)]
    pub image_base_url: Option<String>,
    /// Also send each image's bytes (base64 `Data`), for platforms that cannot reach us.
    #[serde(default)]
    pub inline_images: bool,
}

fn d_keepalive() -> u64 {
    60
}
fn d_batch() -> usize {
    100
}
fn d_poll() -> u64 {
    1000
}
fn d_attempts() -> u32 {
    10
}
fn d_retry() -> u64 {
    30
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            enabled: false,
            endpoint: String::new(),
            user_identify: None,
            username: String::new(),
            password: String::new(),
            keepalive_secs: d_keepalive(),
            batch: d_batch(),
            poll_ms: d_poll(),
            max_attempts: d_attempts(),
            retry_secs: d_retry(),
            image_base_url: None,
            inline_images: false,
        }
    }
}

impl ExportConfig {
    /// Problems with the settings, for the config's validation.
    pub fn check(&self, errors: &mut Vec<String>) {
        if !self.enabled {
            return;
        }
        if split_endpoint(&self.endpoint).is_none() {
            errors.push(format!(
                "export.endpoint '{}' is not like http://10.0.0.5:8088 (https comes with TLS)",
                self.endpoint
            ));
        }
        if let Some(u) = &self.user_identify {
            if protocol::DeviceId::parse(u).is_err() {
                errors.push(format!("export.user_identify '{u}' is not a 20-digit id"));
            }
        }
        if self.username.is_empty() {
            errors.push("export.username is needed for the platform's Digest login".into());
        }
        if self.batch == 0
            || self.batch > 1000
            || self.keepalive_secs == 0
            || self.max_attempts == 0
        {
            errors.push(
                "export: batch (1..1000), keepalive_secs and max_attempts must be at least 1"
                    .into(),
            );
        }
    }
}

/// `http://host:port[/prefix]` -> (`host:port`, prefix without a trailing slash).
pub fn split_endpoint(endpoint: &str) -> Option<(String, String)> {
    let rest = endpoint.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Some((host, path.to_string()))
}

/// Local time (UTC+8) as the 14 digits GA/T 1400 uses.
pub fn time14(ms: i64) -> String {
    let s = protocol::time::format_rfc3339_ms(ms + 8 * 3_600_000);
    s[..19].chars().filter(|c| c.is_ascii_digit()).collect()
}

/// A 5-digit sequence stable for (`event_id`, `salt`).
fn seq(event_id: &str, salt: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in event_id.bytes().chain(salt.to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    (h % 100_000) as u32
}

/// DeviceID(20) + `02` + time(14) + sequence(5): a SourceID or an ImageID.
pub fn id41(device: &str, ms: i64, seq: u32) -> String {
    format!("{device}02{}{seq:05}", time14(ms))
}

/// SourceID(41) + `02` + sequence(5).
pub fn motor_vehicle_id(source_id: &str, seq: u32) -> String {
    format!("{source_id}02{seq:05}")
}

/// Sub-image type codes: 01 whole vehicle, 02 plate, 07 violation composite, 14 scene.
fn image_type(role: &str) -> &'static str {
    match role {
        "vehicle" => "01",
        "plate" => "02",
        "composite" => "07",
        _ => "14",
    }
}

/// Width and height of a baseline or progressive JPEG, from its SOF marker.
pub fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    if b.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    while i + 9 < b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        if matches!(marker, 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) {
            let h = u16::from_be_bytes([b[i + 5], b[i + 6]]) as u32;
            let w = u16::from_be_bytes([b[i + 7], b[i + 8]]) as u32;
            return Some((w, h));
        }
        i += 2 + len;
    }
    None
}

/// One image of a pass, as the store has it (bytes present when stored).
pub struct PassImage {
    pub image_id: String,
    pub role: String,
    pub bytes: Option<Vec<u8>>,
}

/// A vehicle pass as a MotorVehicleObject; None for other events.
pub fn motor_vehicle(
    ev: &Event,
    images: &[PassImage],
    image_base_url: &str,
    inline_images: bool,
) -> Option<Value> {
    let EventBody::VehiclePass(v) = &ev.body else {
        return None;
    };
    let device = ev.camera_id.as_str();
    let t = ev.frame_time_ms;
    let source_id = id41(device, t, seq(&ev.event_id, 0));
    let url = |image_id: &str| format!("{image_base_url}{image_id}");
    let sub: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(k, im)| {
            let mut o = json!({
                "ImageID": id41(device, t, seq(&ev.event_id, k as u32 + 1)),
                "EventSort": 10,
                "DeviceID": device,
                "StoragePath": url(&im.image_id),
                "Type": image_type(&im.role),
                "FileFormat": "Jpeg",
                "ShotTime": time14(t),
            });
            if let Some(b) = &im.bytes {
                if let Some((w, h)) = jpeg_size(b) {
                    o["Width"] = w.into();
                    o["Height"] = h.into();
                }
                if inline_images {
                    use base64::Engine;
                    o["Data"] = base64::engine::general_purpose::STANDARD.encode(b).into();
                }
            }
            o
        })
        .collect();
    let vehicle_image = images
        .iter()
        .find(|i| i.role == "vehicle")
        .or(images.first());
    let bbox = ev.detections.first().map(|d| d.bbox);
    let (x0, y0, x1, y1) = bbox
        .map(|b| {
            (
                b.x1.max(0.0).round() as i64,
                b.y1.max(0.0).round() as i64,
                b.x2.max(0.0).round() as i64,
                b.y2.max(0.0).round() as i64,
            )
        })
        .unwrap_or((0, 0, 0, 0));
    let reliability = if v.char_confidence.is_empty() {
        0
    } else {
        (v.char_confidence.iter().cloned().fold(1.0f32, f32::min) * 100.0).round() as i64
    };
    let mut o = json!({
        "MotorVehicleID": motor_vehicle_id(&source_id, 1),
        "InfoKind": 1,
        "SourceID": source_id,
        "DeviceID": device,
        "TollgateID": ev.checkpoint_id.as_str(),
        "StorageUrl1": vehicle_image.map(|i| url(&i.image_id)).unwrap_or_default(),
        "LeftTopX": x0,
        "LeftTopY": y0,
        "RightBtmX": x1,
        "RightBtmY": y1,
        "HasPlate": if v.plate.is_some() { "1" } else { "0" },
        "PlateClass": v.plate_class.map(|c| c.code()).unwrap_or("99"),
        "PlateColor": v.plate_colour.map(|c| c.ga1400_code()).unwrap_or("99"),
        "PlateNo": v.plate.clone().unwrap_or_else(|| "无车牌".into()),
        "PlateReliability": reliability.clamp(0, 100),
        "PassTime": time14(t),
        "LaneNo": ev.lane.unwrap_or(0),
        // The colour of the body is not measured: 99 (other) as the code list allows.
        "VehicleColor": "99",
    });
    if !sub.is_empty() {
        o["SubImageList"] = json!({ "SubImageInfoObject": sub });
    }
    Some(o)
}

/// A checkpoint as a Tollgate object.
pub fn tollgate(c: &crate::checkpoints::Checkpoint) -> Value {
    let six = |x: f64| (x * 1e6).round() / 1e6;
    json!({
        "TollgateID": c.id,
        "Name": c.name,
        "Longitude": six(c.lon),
        "Latitude": six(c.lat),
        "PlaceCode": c.county,
        "Status": "1",
        "TollgateCat": "99",
        "TollgateUsage": 81,
    })
}

// ---- HTTP Digest (RFC 2617, MD5, qop=auth) ----

fn md5_hex(s: &str) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(s.as_bytes()))
}

/// The parameters of a `WWW-Authenticate: Digest ...` header.
pub fn parse_challenge(header: &str) -> Option<std::collections::HashMap<String, String>> {
    let rest = header.trim().strip_prefix("Digest")?.trim();
    let mut out = std::collections::HashMap::new();
    let mut s = rest;
    while !s.is_empty() {
        let eq = s.find('=')?;
        let key = s[..eq]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        s = &s[eq + 1..];
        let value;
        if let Some(q) = s.strip_prefix('"') {
            let end = q.find('"')?;
            value = q[..end].to_string();
            s = &q[end + 1..];
        } else {
            let end = s.find(',').unwrap_or(s.len());
            value = s[..end].trim().to_string();
            s = &s[end..];
        }
        s = s.trim_start().trim_start_matches(',').trim_start();
        out.insert(key, value);
    }
    Some(out)
}

/// The `response` value of RFC 2617 with qop=auth.
#[allow(clippy::too_many_arguments)]
pub fn digest_response(
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: &str,
    cnonce: &str,
) -> String {
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"))
}

/// An `Authorization: Digest ...` header answering `challenge`.
pub fn authorization(
    challenge: &std::collections::HashMap<String, String>,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
) -> String {
    let realm = challenge.get("realm").cloned().unwrap_or_default();
    let nonce = challenge.get("nonce").cloned().unwrap_or_default();
    let cnonce = format!("{:016x}", ulid::Ulid::new().random() as u64);
    let nc = "00000001";
    let response = digest_response(user, &realm, password, method, uri, &nonce, nc, &cnonce);
    let mut h = format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{response}\", algorithm=MD5"
    );
    if let Some(o) = challenge.get("opaque") {
        h.push_str(&format!(", opaque=\"{o}\""));
    }
    h
}

// ---- The exporter ----

#[derive(Debug, Default)]
pub struct ExportMetrics {
    pub exported: AtomicU64,
    pub refused: AtomicU64,
    pub gave_up: AtomicU64,
    pub posts_failed: AtomicU64,
    pub registrations: AtomicU64,
    pub registered: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("cannot reach {0}: {1}")]
    Io(String, std::io::Error),
    #[error("{0} answered HTTP {1}: {2}")]
    Status(String, u16, String),
    #[error("{0} answered something that is not GA/T 1400 JSON: {1}")]
    Body(String, String),
}

struct Session<'a> {
    cfg: &'a ExportConfig,
    addr: String,
    prefix: String,
    user_identify: String,
}

impl Session<'_> {
    fn post(
        &self,
        path: &str,
        body: &Value,
        auth: Option<&str>,
    ) -> Result<(u16, String, Vec<u8>), ExportError> {
        let uri = format!("{}{path}", self.prefix);
        let mut headers = vec![
            ("Content-Type", "application/VIID+JSON".to_string()),
            ("User-Identify", self.user_identify.clone()),
        ];
        if let Some(a) = auth {
            headers.push(("Authorization", a.to_string()));
        }
        crate::client::request_with(
            &self.addr,
            "POST",
            &uri,
            &headers,
            body.to_string().as_bytes(),
        )
        .map_err(|e| ExportError::Io(uri.clone(), e))
    }

    fn status_of(uri: &str, body: &[u8]) -> Result<Value, ExportError> {
        serde_json::from_slice(body).map_err(|e| ExportError::Body(uri.into(), format!("{e}")))
    }

    /// Register with Digest: the first POST gets the challenge, the second answers it.
    fn register(&self) -> Result<(), ExportError> {
        let path = "/VIID/System/Register";
        let body = json!({"RegisterObject": {"DeviceID": self.user_identify}});
        let (code, head, text) = self.post(path, &body, None)?;
        let (code, text) = if code == 401 {
            let challenge = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim()
                        .eq_ignore_ascii_case("www-authenticate")
                        .then(|| v.trim().to_string())
                })
                .and_then(|v| parse_challenge(&v))
                .ok_or_else(|| {
                    ExportError::Status(path.into(), 401, "no Digest challenge".into())
                })?;
            let uri = format!("{}{path}", self.prefix);
            let auth = authorization(
                &challenge,
                &self.cfg.username,
                &self.cfg.password,
                "POST",
                &uri,
            );
            let (c, _, t) = self.post(path, &body, Some(&auth))?;
            (c, t)
        } else {
            (code, text)
        };
        Self::expect_ok(path, code, &text)
    }

    /// HTTP 200 with a `ResponseStatusObject` of status 0, else the answer as the error.
    fn expect_ok(path: &str, code: u16, text: &[u8]) -> Result<(), ExportError> {
        let v = Self::status_of(path, text).unwrap_or(Value::Null);
        if code != 200 || v["ResponseStatusObject"]["StatusCode"].as_i64() != Some(0) {
            return Err(ExportError::Status(
                path.into(),
                code,
                String::from_utf8_lossy(text).into_owned(),
            ));
        }
        Ok(())
    }

    fn keepalive(&self) -> Result<(), ExportError> {
        let path = "/VIID/System/Keepalive";
        let (code, _, text) = self.post(
            path,
            &json!({"KeepaliveObject": {"DeviceID": self.user_identify}}),
            None,
        )?;
        Self::expect_ok(path, code, &text)
    }

    /// Posts a list; returns one (status code, status string) per item, in order.
    fn post_list(
        &self,
        path: &str,
        list: &str,
        object: &str,
        items: Vec<Value>,
    ) -> Result<Vec<(i64, String)>, ExportError> {
        let n = items.len();
        let body = json!({ list: { object: items } });
        let (code, _, text) = self.post(path, &body, None)?;
        if code != 200 {
            return Err(ExportError::Status(
                path.into(),
                code,
                String::from_utf8_lossy(&text).into_owned(),
            ));
        }
        let v = Self::status_of(path, &text)?;
        let statuses = v["ResponseStatusListObject"]["ResponseStatusObject"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if statuses.len() != n {
            return Err(ExportError::Body(
                path.into(),
                format!("{} statuses for {n} objects", statuses.len()),
            ));
        }
        Ok(statuses
            .iter()
            .map(|s| {
                (
                    s["StatusCode"].as_i64().unwrap_or(-1),
                    s["StatusString"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }
}

/// What the exporter needs beside its settings.
pub struct Exporter {
    pub cfg: ExportConfig,
    pub aggregator_id: String,
    pub image_base_url: String,
    pub checkpoints: Vec<crate::checkpoints::Checkpoint>,
    pub metrics: Arc<ExportMetrics>,
    /// The export runs only while this aggregator holds its lease (one exporter per scope
    /// among aggregators side by side); None: always.
    pub leases: Option<Arc<crate::lease::Leases>>,
}

impl Exporter {
    /// Runs until `stop`: registers, keeps alive, exports what the queue holds.
    pub fn run(&self, mut store: Box<dyn EventStore>, stop: Arc<AtomicBool>) {
        let (addr, prefix) = split_endpoint(&self.cfg.endpoint).expect("checked at load");
        let session = Session {
            cfg: &self.cfg,
            addr,
            prefix,
            user_identify: self
                .cfg
                .user_identify
                .clone()
                .unwrap_or_else(|| self.aggregator_id.clone()),
        };
        let mut registered = false;
        let mut last_keepalive = Instant::now();
        let mut backoff = Duration::from_secs(1);
        let sleep = |d: Duration| {
            let until = Instant::now() + d;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50).min(d));
            }
        };
        while !stop.load(Ordering::Relaxed) {
            if let Some(l) = &self.leases {
                if !l.holds(crate::lease::EXPORT) {
                    // Another aggregator exports; this one waits to take over.
                    if registered {
                        registered = false;
                        self.metrics.registered.store(false, Ordering::Relaxed);
                    }
                    sleep(Duration::from_millis(100));
                    continue;
                }
            }
            if !registered {
                match session.register().and_then(|_| {
                    let gates: Vec<Value> = self.checkpoints.iter().map(tollgate).collect();
                    if gates.is_empty() {
                        return Ok(());
                    }
                    let st = session.post_list(
                        "/VIID/Tollgates",
                        "TollgateListObject",
                        "TollgateObject",
                        gates,
                    )?;
                    for (c, s) in st.iter().filter(|(c, _)| *c != 0) {
                        warn!(code = c, status = %s, "A checkpoint was refused as a Tollgate");
                    }
                    Ok(())
                }) {
                    Ok(()) => {
                        registered = true;
                        self.metrics.registered.store(true, Ordering::Relaxed);
                        self.metrics.registrations.fetch_add(1, Ordering::Relaxed);
                        last_keepalive = Instant::now();
                        backoff = Duration::from_secs(1);
                        info!(endpoint = %self.cfg.endpoint, "Registered with the GA/T 1400 platform");
                    }
                    Err(e) => {
                        warn!(error = %e, retry_in = ?backoff, "GA/T 1400 registration failed; check export.endpoint, username and password");
                        sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(60));
                    }
                }
                continue;
            }
            if last_keepalive.elapsed() >= Duration::from_secs(self.cfg.keepalive_secs) {
                last_keepalive = Instant::now();
                if let Err(e) = session.keepalive() {
                    warn!(error = %e, "GA/T 1400 keepalive failed; registering again");
                    registered = false;
                    self.metrics.registered.store(false, Ordering::Relaxed);
                    continue;
                }
            }
            let now = protocol::time::now_ms();
            let due = match store.export_due(now, self.cfg.batch) {
                Ok(d) => d,
                Err(e) => {
                    warn!(error = %e, "Reading the export queue failed");
                    sleep(Duration::from_millis(self.cfg.poll_ms));
                    continue;
                }
            };
            if due.is_empty() {
                sleep(Duration::from_millis(self.cfg.poll_ms));
                continue;
            }
            if let Err(e) = self.export(&session, store.as_mut(), due, now) {
                self.metrics.posts_failed.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "GA/T 1400 export failed; the items stay queued");
                if matches!(e, ExportError::Status(_, 401, _)) {
                    registered = false;
                    self.metrics.registered.store(false, Ordering::Relaxed);
                }
                sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(60));
            } else {
                backoff = Duration::from_secs(1);
            }
        }
    }

    fn retry_at(&self, now: i64, attempts: u32) -> i64 {
        let secs = self
            .cfg
            .retry_secs
            .saturating_mul(1u64 << attempts.saturating_sub(1).min(12))
            .min(3600);
        now + secs as i64 * 1000
    }

    fn export(
        &self,
        session: &Session,
        store: &mut dyn EventStore,
        due: Vec<ExportItem>,
        now: i64,
    ) -> Result<(), ExportError> {
        let mut objects = Vec::with_capacity(due.len());
        let mut items = Vec::with_capacity(due.len());
        for item in due {
            let images: Vec<PassImage> = item
                .event
                .evidence
                .iter()
                // GA/T 1400's SubImageList carries pictures; a clip stays in the platform.
                .filter(|r| r.role != "clip")
                .map(|r| PassImage {
                    image_id: r.image_id.clone(),
                    role: r.role.clone(),
                    bytes: store
                        .get_evidence(&r.image_id)
                        .ok()
                        .flatten()
                        .map(|b| b.bytes),
                })
                .collect();
            match motor_vehicle(
                &item.event,
                &images,
                &self.image_base_url,
                self.cfg.inline_images,
            ) {
                Some(o) => {
                    objects.push(o);
                    items.push(item);
                }
                None => {
                    let _ = store.export_result(
                        &item.event.event_id,
                        Err(("not a vehicle pass".into(), true)),
                        now,
                    );
                }
            }
        }
        if objects.is_empty() {
            return Ok(());
        }
        let statuses = session.post_list(
            "/VIID/MotorVehicles",
            "MotorVehicleListObject",
            "MotorVehicleObject",
            objects,
        )?;
        for (item, (code, text)) in items.iter().zip(statuses) {
            let id = &item.event.event_id;
            let outcome = if code == 0 {
                self.metrics.exported.fetch_add(1, Ordering::Relaxed);
                Ok(())
            } else {
                self.metrics.refused.fetch_add(1, Ordering::Relaxed);
                let give_up = item.attempts + 1 >= self.cfg.max_attempts;
                if give_up {
                    self.metrics.gave_up.fetch_add(1, Ordering::Relaxed);
                    warn!(event = %id, code, status = %text, "The platform refused a pass for the last time; kept as failed");
                }
                Err((format!("{code}: {text}"), give_up))
            };
            let next = self.retry_at(now, item.attempts + 1);
            if let Err(e) = store.export_result(id, outcome, next) {
                warn!(event = %id, error = %e, "Recording an export result failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_standard_lengths_and_local_time() {
        let dev = "32050500051320000002";
        // 2026-11-28T18:30:00Z is 02:30 on the 29th in China.
        let t = protocol::time::parse_rfc3339_ms("2026-11-28T18:30:00Z").unwrap();
        assert_eq!(time14(t), "20261129023000");
        let s = id41(dev, t, 7);
        assert_eq!(s.len(), 41);
        assert_eq!(s, "32050500051320000002022026112902300000007");
        let m = motor_vehicle_id(&s, 1);
        assert_eq!(m.len(), 48);
        assert!(m.starts_with(&s) && m.ends_with("0200001"));
    }

    #[test]
    fn digest_matches_rfc_2617_example() {
        // RFC 2617 section 3.5.
        let r = digest_response(
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            "00000001",
            "0a4f113b",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
        let c = parse_challenge(
            r#"Digest realm="viid", qop="auth", nonce="abc123", opaque="xyz", algorithm=MD5"#,
        )
        .unwrap();
        assert_eq!(c["realm"], "viid");
        assert_eq!(c["nonce"], "abc123");
        assert_eq!(c["algorithm"], "MD5");
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            split_endpoint("http://10.0.0.5:8088"),
            Some(("10.0.0.5:8088".into(), "".into()))
        );
        assert_eq!(
            split_endpoint("http://viid.local/up/"),
            Some(("viid.local:80".into(), "/up".into()))
        );
        assert_eq!(split_endpoint("https://x"), None);
        assert_eq!(split_endpoint("http://"), None);
    }

    #[test]
    fn jpeg_size_reads_the_frame_header() {
        // SOI, APP0 (length 16), SOF0 with height 48 and width 168.
        let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10];
        b.extend_from_slice(&[0; 14]);
        b.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08, 0x00, 0x30, 0x00, 0xA8, 0x03]);
        b.extend_from_slice(&[0; 12]);
        assert_eq!(jpeg_size(&b), Some((168, 48)));
        assert_eq!(jpeg_size(b"not a jpeg"), None);
    }
}
