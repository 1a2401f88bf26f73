//! A small GA/T 1400 upstream platform that enforces the conformance rules of STANDARDS.md
//! (Register with HTTP Digest, keepalive, `application/VIID+JSON` and `User-Identify` on
//! every request, Tollgate and MotorVehicle objects checked field by field) and counts what
//! it accepts; shared by `viid_export.rs` and `failover.rs`.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

pub const USER: &str = "viid-user";
pub const PASSWORD: &str = "s3cret";
pub const REALM: &str = "viid-test";
pub const PLATFORM_ID: &str = "32050500055030000009";

#[derive(Default)]
pub struct Platform {
    pub nonces: HashSet<String>,
    pub registered: HashSet<String>,
    pub registrations: u32,
    pub keepalives: u32,
    /// Accepted objects by MotorVehicleID.
    pub vehicles: HashMap<String, Value>,
    pub tollgates: HashMap<String, Value>,
    /// Conformance violations found in what was sent: must stay empty.
    pub violations: Vec<String>,
    /// Plates refused once (busy) the first time they arrive.
    pub refuse_once: HashSet<String>,
    pub refused: HashSet<String>,
    /// Accepted posts per MotorVehicleID (above 1: sent more than once).
    pub posts: HashMap<String, u32>,
    /// While true, MotorVehicles posts get HTTP 503.
    pub down: bool,
}

pub type Shared = Arc<Mutex<Platform>>;

pub fn status(url: &str, code: i64, text: &str) -> Value {
    json!({"RequestURL": url, "StatusCode": code, "StatusString": text, "LocalTime": "20261129000000"})
}

pub fn viid(body: Value) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/VIID+JSON")],
        body.to_string(),
    )
        .into_response()
}

pub fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

pub fn time14_ok(s: &str) -> bool {
    if !digits(s, 14) {
        return false;
    }
    let n = |a: usize, b: usize| s[a..b].parse::<u32>().unwrap();
    (1..=12).contains(&n(4, 6))
        && (1..=31).contains(&n(6, 8))
        && n(8, 10) < 24
        && n(10, 12) < 60
        && n(12, 14) < 60
}

/// Common request rules; the User-Identify of a registered platform when `registered`.
pub fn check_headers(
    p: &Platform,
    h: &HeaderMap,
    registered: bool,
) -> Result<String, Box<Response>> {
    let ct = h
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.eq_ignore_ascii_case("application/VIID+JSON") {
        return Err(Box::new(
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content-type {ct}"),
            )
                .into_response(),
        ));
    }
    let ui = h
        .get("user-identify")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !digits(&ui, 20) {
        return Err(Box::new(
            (StatusCode::BAD_REQUEST, "User-Identify must be 20 digits").into_response(),
        ));
    }
    if registered && !p.registered.contains(&ui) {
        return Err(Box::new(
            (StatusCode::UNAUTHORIZED, "not registered").into_response(),
        ));
    }
    Ok(ui)
}

pub async fn register(
    axum::extract::State(s): axum::extract::State<Shared>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let mut p = s.lock().unwrap();
    let ui = match check_headers(&p, &h, false) {
        Ok(u) => u,
        Err(r) => return *r,
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if v["RegisterObject"]["DeviceID"] != ui.as_str() {
        p.violations
            .push(format!("Register body {v} does not name {ui}"));
    }
    let challenge = || {
        let nonce = format!("{:x}", ulid::Ulid::new().random());
        (
            StatusCode::UNAUTHORIZED,
            [(
                "WWW-Authenticate",
                format!("Digest realm=\"{REALM}\", qop=\"auth\", nonce=\"{nonce}\", opaque=\"op1\", algorithm=MD5"),
            )],
            nonce,
        )
    };
    let Some(auth) = h.get("authorization").and_then(|v| v.to_str().ok()) else {
        let (c, hdr, nonce) = challenge();
        p.nonces.insert(nonce);
        return (c, hdr).into_response();
    };
    let a = aggregator::viid::parse_challenge(auth).unwrap_or_default();
    let get = |k: &str| a.get(k).cloned().unwrap_or_default();
    let expected = aggregator::viid::digest_response(
        &get("username"),
        REALM,
        PASSWORD,
        "POST",
        &get("uri"),
        &get("nonce"),
        &get("nc"),
        &get("cnonce"),
    );
    let ok = get("username") == USER
        && get("realm") == REALM
        && get("qop") == "auth"
        && get("uri") == "/VIID/System/Register"
        && get("opaque") == "op1"
        && p.nonces.remove(&get("nonce"))
        && get("response") == expected;
    if !ok {
        let (c, hdr, nonce) = challenge();
        p.nonces.insert(nonce);
        return (c, hdr).into_response();
    }
    p.registered.insert(ui);
    p.registrations += 1;
    viid(json!({"ResponseStatusObject": status("/VIID/System/Register", 0, "OK")}))
}

pub async fn keepalive(
    axum::extract::State(s): axum::extract::State<Shared>,
    h: HeaderMap,
    _body: Bytes,
) -> Response {
    let mut p = s.lock().unwrap();
    if let Err(r) = check_headers(&p, &h, true) {
        return *r;
    }
    p.keepalives += 1;
    viid(json!({"ResponseStatusObject": status("/VIID/System/Keepalive", 0, "OK")}))
}

pub fn check_tollgate(t: &Value) -> Vec<String> {
    let mut v = vec![];
    let s = |k: &str| t[k].as_str().unwrap_or("").to_string();
    if !digits(&s("TollgateID"), 20) {
        v.push("TollgateID".into());
    }
    if s("Name").is_empty() {
        v.push("Name".into());
    }
    for k in ["Longitude", "Latitude"] {
        let x = t[k].as_f64().unwrap_or(f64::NAN);
        if !x.is_finite() || ((x * 1e6).round() / 1e6 - x).abs() > 1e-9 {
            v.push(format!("{k} {x} (6 decimals at most)"));
        }
    }
    if !digits(&s("PlaceCode"), 6) {
        v.push("PlaceCode".into());
    }
    if t["TollgateUsage"].as_i64() != Some(81) {
        v.push("TollgateUsage".into());
    }
    v
}

pub async fn tollgates(
    axum::extract::State(s): axum::extract::State<Shared>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let mut p = s.lock().unwrap();
    if let Err(r) = check_headers(&p, &h, true) {
        return *r;
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let list = v["TollgateListObject"]["TollgateObject"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = vec![];
    for t in list {
        let bad = check_tollgate(&t);
        if bad.is_empty() {
            p.tollgates
                .insert(t["TollgateID"].as_str().unwrap().into(), t.clone());
            out.push(status("/VIID/Tollgates", 0, "OK"));
        } else {
            p.violations.push(format!("Tollgate {t}: {bad:?}"));
            out.push(status("/VIID/Tollgates", 4, &bad.join(", ")));
        }
    }
    viid(json!({"ResponseStatusListObject": {"ResponseStatusObject": out}}))
}

/// The MotorVehicleObject rules of STANDARDS.md.
pub fn check_vehicle(o: &Value) -> Vec<String> {
    let mut bad = vec![];
    let s = |k: &str| o[k].as_str().unwrap_or("").to_string();
    let device = s("DeviceID");
    if !digits(&device, 20) {
        bad.push("DeviceID".into());
    }
    if !digits(&s("TollgateID"), 20) {
        bad.push("TollgateID".into());
    }
    let source = s("SourceID");
    if !(digits(&source, 41)
        && source.starts_with(&device)
        && &source[20..22] == "02"
        && time14_ok(&source[22..36]))
    {
        bad.push(format!("SourceID {source}"));
    }
    let id = s("MotorVehicleID");
    if !(digits(&id, 48) && id.starts_with(&source) && &id[41..43] == "02") {
        bad.push(format!("MotorVehicleID {id}"));
    }
    if o["InfoKind"].as_i64() != Some(1) {
        bad.push("InfoKind".into());
    }
    if !s("StorageUrl1").starts_with("http://") {
        bad.push("StorageUrl1".into());
    }
    let colours = [
        "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "99",
    ];
    for k in ["VehicleColor", "PlateColor"] {
        if !colours.contains(&s(k).as_str()) {
            bad.push(format!("{k} '{}'", s(k)));
        }
    }
    if !digits(&s("PlateClass"), 2) {
        bad.push("PlateClass".into());
    }
    let has = s("HasPlate");
    if has != "1" && has != "0" {
        bad.push("HasPlate".into());
    }
    if has == "1" && s("PlateNo").is_empty() {
        bad.push("PlateNo".into());
    }
    let pass_time = s("PassTime");
    if !time14_ok(&pass_time) || pass_time != source[22..36.min(source.len())] {
        bad.push(format!("PassTime {pass_time}"));
    }
    let n = |k: &str| o[k].as_i64();
    match (n("LeftTopX"), n("LeftTopY"), n("RightBtmX"), n("RightBtmY")) {
        (Some(a), Some(b), Some(c), Some(d)) if a >= 0 && b >= 0 && a < c && b < d => {}
        _ => bad.push("box".into()),
    }
    if n("LaneNo").is_none() {
        bad.push("LaneNo".into());
    }
    if let Some(r) = o.get("PlateReliability") {
        if !(0..=100).contains(&r.as_i64().unwrap_or(-1)) {
            bad.push("PlateReliability".into());
        }
    }
    if let Some(list) = o.get("SubImageList") {
        for im in list["SubImageInfoObject"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let t = im["Type"].as_str().unwrap_or("");
            let iid = im["ImageID"].as_str().unwrap_or("");
            if !["01", "02", "07", "14"].contains(&t)
                || !digits(iid, 41)
                || !iid.starts_with(&device)
                || !time14_ok(im["ShotTime"].as_str().unwrap_or(""))
                || !im["StoragePath"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("http://")
            {
                bad.push(format!("SubImage {im}"));
            }
        }
    }
    bad
}

pub async fn motor_vehicles(
    axum::extract::State(s): axum::extract::State<Shared>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let mut p = s.lock().unwrap();
    if let Err(r) = check_headers(&p, &h, true) {
        return *r;
    }
    if p.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance").into_response();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let list = v["MotorVehicleListObject"]["MotorVehicleObject"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut out = vec![];
    for o in list {
        let id = o["MotorVehicleID"].as_str().unwrap_or("").to_string();
        let plate = o["PlateNo"].as_str().unwrap_or("").to_string();
        let bad = check_vehicle(&o);
        if !bad.is_empty() {
            p.violations.push(format!("MotorVehicle {id}: {bad:?}"));
            out.push(status("/VIID/MotorVehicles", 4, &bad.join(", ")));
        } else if p.refuse_once.contains(&plate) && p.refused.insert(plate) {
            out.push(status("/VIID/MotorVehicles", 7, "busy, try again"));
        } else {
            p.vehicles.insert(id.clone(), o);
            *p.posts.entry(id.clone()).or_default() += 1;
            out.push(json!({"RequestURL": "/VIID/MotorVehicles", "StatusCode": 0, "StatusString": "OK", "Id": id}));
        }
    }
    viid(json!({"ResponseStatusListObject": {"ResponseStatusObject": out}}))
}

/// Serves the platform on `port` of 127.0.0.1 on `rt`.
pub fn serve(rt: &tokio::runtime::Runtime, shared: &Shared, port: u16) {
    let app = Router::new()
        .route("/VIID/System/Register", post(register))
        .route("/VIID/System/Keepalive", post(keepalive))
        .route("/VIID/Tollgates", post(tollgates))
        .route("/VIID/MotorVehicles", post(motor_vehicles))
        .with_state(shared.clone());
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    rt.spawn(async move {
        let l = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(l, app).await.unwrap();
    });
}
