//! The JT/T 808 gateway against simulated terminals for a simulated day. The simulator is
//! written from the standard (JT/T 808-2019, with the 2013 header and registration layout
//! for a quarter of the terminals), not from the gateway's codec: its own escaping,
//! checksum, BCD and bodies (`protocol/tests/jt808_independent.rs` checks frames against
//! another author's codec).
//!
//! 100 terminals, each on its own connection: register (plate in GBK), authenticate with the
//! code the platform answered, then yesterday (Beijing time) from 00:00 to 24:00, a fix every
//! 2 minutes (720 each), a heartbeat every hour; the fixes of 15:00-16:00 are kept as if out
//! of coverage and sent after 17:00 as one batch in two sub-packages. Every vehicle sleeps in
//! its depot, drives 06:00-09:00 (a 4-minute stop at a light on the way), rests at a service
//! area, drives 09:30-12:30, rests, drives 13:30-16:30 and goes home. Scripted on top:
//! - terminals 1, 11, 21...: 120 km/h from 10:00 to 10:04 (limit 100): speeding;
//! - 2, 12, ...: stopped on the road from 14:00 to 14:40: abnormal stop (20 min);
//! - 3, 13, ...: no rest at 09:00: 6.5 h at the wheel: fatigue (4 h);
//! - 4, 14, ...: coaches driving 02:00-04:00: night coach; 5, 15, ... are coaches that do not;
//! - 6, 16, ...: heavy trucks the registry holds as inspection overdue (26, 56, 86 also
//!   hit-and-run): one registry-status alert when they first drive (06:00), not again that day.
//!
//! Every message must be answered (0x8100, 0x8001 with the terminal's serial and message id);
//! every position is stored as a `vehicle_position` event; each scripted case raises exactly
//! one `vehicle_alert` event (pending review, with the position events it rests on), and the
//! clean vehicles none. A hostile client beside them sends garbage, frames with bad checksums
//! and a location without authenticating: refused, counted, disconnected after too many bad
//! frames in a row, and nobody else notices.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

// --- the simulated terminal, from the standard ----------------------------------------

fn bcd(digits: &str, n: usize) -> Vec<u8> {
    let d: Vec<u8> = format!("{digits:0>w$}", w = n * 2)
        .bytes()
        .map(|b| b - b'0')
        .collect();
    d.chunks(2).map(|p| (p[0] << 4) | p[1]).collect()
}

/// A whole frame: header (2019 or 2013), body, XOR checksum, escaped between 0x7E flags.
fn frame(
    id: u16,
    v2019: bool,
    phone: &str,
    serial: u16,
    pkg: Option<(u16, u16)>,
    body: &[u8],
) -> Vec<u8> {
    let mut props = body.len() as u16;
    if pkg.is_some() {
        props |= 1 << 13;
    }
    if v2019 {
        props |= 1 << 14;
    }
    let mut m = id.to_be_bytes().to_vec();
    m.extend(props.to_be_bytes());
    if v2019 {
        m.push(1);
        m.extend(bcd(phone, 10));
    } else {
        m.extend(bcd(phone, 6));
    }
    m.extend(serial.to_be_bytes());
    if let Some((n, i)) = pkg {
        m.extend(n.to_be_bytes());
        m.extend(i.to_be_bytes());
    }
    m.extend(body);
    let sum = m.iter().fold(0u8, |a, b| a ^ b);
    m.push(sum);
    let mut out = vec![0x7E];
    for b in m {
        match b {
            0x7E => out.extend([0x7D, 0x02]),
            0x7D => out.extend([0x7D, 0x01]),
            _ => out.push(b),
        }
    }
    out.push(0x7E);
    out
}

/// A 0x0200 body: no alarm, ACC on and fixed, north-east, speed in km/h.
fn location_body(lat: f64, lon: f64, kmh: f64, t_ms: i64) -> Vec<u8> {
    let mut b = 0u32.to_be_bytes().to_vec();
    b.extend(3u32.to_be_bytes());
    b.extend(((lat * 1e6).round() as u32).to_be_bytes());
    b.extend(((lon * 1e6).round() as u32).to_be_bytes());
    b.extend(20u16.to_be_bytes());
    b.extend(((kmh * 10.0).round() as u16).to_be_bytes());
    b.extend(90u16.to_be_bytes());
    // GMT+8 time as BCD YYMMDDhhmmss.
    let local = protocol::time::format_rfc3339_ms(t_ms + 8 * 3_600_000);
    let digits: String = local[2..19]
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    b.extend(bcd(&digits, 6));
    b
}

/// Reads one frame's unescaped bytes (header, body, checksum) from the stream.
fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut one = [0u8; 1];
    let mut raw = Vec::new();
    let mut started = false;
    loop {
        s.read_exact(&mut one).expect("a reply");
        if one[0] == 0x7E {
            if started && !raw.is_empty() {
                break;
            }
            started = true;
            continue;
        }
        raw.push(one[0]);
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == 0x7D {
            out.push(if raw[i + 1] == 0x02 { 0x7E } else { 0x7D });
            i += 2;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    let sum = out[..out.len() - 1].iter().fold(0u8, |a, b| a ^ b);
    assert_eq!(sum, out[out.len() - 1], "the platform's checksum");
    out
}

/// (message id, body) of a reply.
fn reply(s: &mut TcpStream) -> (u16, Vec<u8>) {
    let f = read_frame(s);
    let id = u16::from_be_bytes([f[0], f[1]]);
    let props = u16::from_be_bytes([f[2], f[3]]);
    let head = if props & (1 << 14) != 0 { 17 } else { 12 };
    (id, f[head..f.len() - 1].to_vec())
}

fn general(s: &mut TcpStream, serial: u16, msg: u16) -> u8 {
    let (id, b) = reply(s);
    assert_eq!(id, 0x8001);
    assert_eq!(
        u16::from_be_bytes([b[0], b[1]]),
        serial,
        "the reply names the serial"
    );
    assert_eq!(u16::from_be_bytes([b[2], b[3]]), msg, "and the message");
    b[4]
}

struct Terminal {
    phone: String,
    v2019: bool,
    serial: u16,
}

impl Terminal {
    fn next(&mut self) -> u16 {
        self.serial += 1;
        self.serial
    }

    /// Registers, authenticates, reports its day from `day0`; the newest fix it sent.
    fn run(&mut self, addr: std::net::SocketAddr, i: usize, day0: i64) -> (f64, f64, i64) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let plate = format!("苏E{i:05}");
        let (gbk, _, _) = encoding_rs::GBK.encode(&plate);
        let mut reg = vec![0, 32, 0x01, 0xF9]; // 32, 0505: 苏州 吴中 (320505)
        let (m, md, t) = if self.v2019 { (11, 30, 30) } else { (5, 20, 7) };
        reg.extend(vec![b'M'; m]);
        reg.extend(vec![b'X'; md]);
        reg.extend(vec![b'T'; t]);
        reg.push(1);
        reg.extend(gbk.iter());
        let sn = self.next();
        s.write_all(&frame(0x0100, self.v2019, &self.phone, sn, None, &reg))
            .unwrap();
        let (id, b) = reply(&mut s);
        assert_eq!(
            (id, u16::from_be_bytes([b[0], b[1]]), b[2]),
            (0x8100, sn, 0)
        );
        let code = b[3..].to_vec();
        let mut auth = Vec::new();
        if self.v2019 {
            auth.push(code.len() as u8);
            auth.extend(&code);
            auth.extend([b'8'; 15]);
            auth.extend([b'1'; 20]);
        } else {
            auth.extend(&code);
        }
        let sn = self.next();
        s.write_all(&frame(0x0102, self.v2019, &self.phone, sn, None, &auth))
            .unwrap();
        assert_eq!(general(&mut s, sn, 0x0102), 0, "authenticated");

        let mut newest = (0.0, 0.0, 0);
        let mut kept = Vec::new();
        for k in 0..FIXES {
            let minute = k * STEP_MIN;
            let tk = day0 + minute * 60_000;
            let (lat, lon, kmh) = script(i, minute);
            let body = location_body(lat, lon, kmh, tk);
            if (15 * 60..16 * 60).contains(&minute) {
                kept.push(body);
            } else {
                let sn = self.next();
                s.write_all(&frame(0x0200, self.v2019, &self.phone, sn, None, &body))
                    .unwrap();
                assert_eq!(general(&mut s, sn, 0x0200), 0);
                newest = (lat, lon, tk);
            }
            if minute % 60 == 58 {
                let sn = self.next();
                s.write_all(&frame(0x0002, self.v2019, &self.phone, sn, None, &[]))
                    .unwrap();
                assert_eq!(general(&mut s, sn, 0x0002), 0);
            }
            if minute == 17 * 60 {
                // Back in coverage: what was kept, as a batch of type 1 in two
                // sub-packages (consecutive serials), older than what was sent since.
                let mut batch = (kept.len() as u16).to_be_bytes().to_vec();
                batch.push(1);
                for b in kept.drain(..) {
                    batch.extend((b.len() as u16).to_be_bytes());
                    batch.extend(b);
                }
                let half = batch.len() / 2;
                let (s1, s2) = (self.next(), self.next());
                s.write_all(&frame(
                    0x0704,
                    self.v2019,
                    &self.phone,
                    s1,
                    Some((2, 1)),
                    &batch[..half],
                ))
                .unwrap();
                s.write_all(&frame(
                    0x0704,
                    self.v2019,
                    &self.phone,
                    s2,
                    Some((2, 2)),
                    &batch[half..],
                ))
                .unwrap();
                assert_eq!(
                    general(&mut s, s1, 0x0704),
                    0,
                    "the batch, answered once whole"
                );
            }
        }
        newest
    }
}

/// A fix every `STEP_MIN` minutes of the day.
const STEP_MIN: i64 = 2;
const FIXES: i64 = 24 * 60 / STEP_MIN;
const DEPOT: (f64, f64) = (31.0, 120.0);
const SERVICE_AREA: (f64, f64) = (31.5, 120.5);

/// Where terminal `i` is at `minute` of the day and how fast it goes.
fn script(i: usize, minute: i64) -> (f64, f64, f64) {
    let h = |hh: i64, mm: i64| hh * 60 + mm;
    let road = |kmh: f64| (31.2 + i as f64 * 0.001, 120.2 + minute as f64 * 1e-4, kmh);
    let at = |p: (f64, f64)| (p.0, p.1, 0.0);
    let case = i % 10;
    let m = minute;
    if case == 4 && (h(2, 0)..h(4, 0)).contains(&m) {
        return road(70.0); // a coach at night
    }
    if case == 1 && (h(10, 0)..=h(10, 4)).contains(&m) {
        return road(120.0);
    }
    if case == 2 && (h(14, 0)..=h(14, 40)).contains(&m) {
        return road(0.0); // stopped on the road
    }
    if (h(7, 30)..=h(7, 34)).contains(&m) {
        return road(0.0); // a red light
    }
    match m {
        m if m < h(6, 0) => at(DEPOT),
        m if m < h(9, 0) => road(80.0),
        m if m < h(9, 30) && case != 3 => at(SERVICE_AREA),
        m if m < h(12, 30) => road(80.0),
        m if m < h(13, 30) => at(SERVICE_AREA),
        m if m < h(16, 30) => road(80.0),
        _ => at(DEPOT),
    }
}

/// The alert each terminal's script must raise, if any.
fn scripted_alert(i: usize) -> Option<&'static str> {
    match i % 10 {
        1 => Some("speeding"),
        2 => Some("abnormal_stop"),
        3 => Some("fatigue"),
        4 => Some("night_coach"),
        6 => Some("registry_status"),
        _ => None,
    }
}

const GATEWAY_CHECKPOINT: &str = "32050500051210000099";

fn get(agg: &aggregator::Running, path: &str) -> Value {
    let (status, _, body) = aggregator::client::get_bytes(agg.http_addr, path).unwrap();
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn a_hundred_terminals_for_a_day_and_a_hostile_one() {
    let rt = runtime();
    let dir = temp_dir("jt808");
    // Coaches: the registry says so (use character B); trucks it holds something against.
    let coaches: Vec<Value> = (0..100)
        .filter(|i| matches!(i % 10, 4 | 5))
        .map(|i| serde_json::json!({"plate": format!("苏E{i:05}"), "vehicle_class": "K11", "use_character": "B"}))
        .chain((0..100).filter(|i| i % 10 == 6).map(|i| {
            let status = if i % 30 == 26 {
                serde_json::json!(["inspection_overdue", "hit_and_run"])
            } else {
                serde_json::json!(["inspection_overdue"])
            };
            serde_json::json!({"plate": format!("苏E{i:05}"), "vehicle_class": "H11", "status": status})
        }))
        .collect();
    let registry = dir.0.join("registry.json");
    std::fs::write(
        &registry,
        serde_json::json!({"version": 1, "issued_by": "test", "vehicles": coaches}).to_string(),
    )
    .unwrap();
    let text = county_config(
        &dir.0,
        free_port(),
        &format!(
            r#"[watchlist]
file = "{registry}"
[[checkpoints]]
id = "{GATEWAY_CHECKPOINT}"
name = "重点车辆监管平台"
lon = 120.6
lat = 31.3
[jt808]
listen = "127.0.0.1:0"
auth_secret = "test secret"
checkpoint_id = "{GATEWAY_CHECKPOINT}"
[jt808.state]
allowed_places = [
  {{ name = "depot", lat = {dlat}, lon = {dlon}, radius_m = 500.0 }},
  {{ name = "service area", lat = {slat}, lon = {slon}, radius_m = 500.0 }},
]
"#,
            registry = registry.display(),
            dlat = DEPOT.0,
            dlon = DEPOT.1,
            slat = SERVICE_AREA.0,
            slon = SERVICE_AREA.1,
        ),
    );
    let agg = start_aggregator(&rt, &text);
    let addr = agg.jt808_addr.expect("the gateway listens");
    // Yesterday, 00:00 Beijing time.
    let bj = protocol::time::now_ms() + 8 * 3_600_000;
    let day0 = bj - bj.rem_euclid(86_400_000) - 8 * 3_600_000 - 86_400_000;

    // The hostile client: garbage, frames with a wrong checksum, a location without
    // authenticating, then more bad frames until the gateway hangs up.
    let hostile = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        s.write_all(&frame(
            0x0200,
            true,
            "13900000000",
            1,
            None,
            &location_body(31.0, 120.0, 50.0, day0),
        ))
        .unwrap();
        let refused = general(&mut s, 1, 0x0200);
        let mut bad = frame(0x0002, true, "13900000000", 2, None, &[]);
        bad[2] ^= 0x01; // the message id's low byte: the checksum no longer matches
        for _ in 0..40 {
            if s.write_all(&bad).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut rest = Vec::new();
        // Closed by the gateway: the end of the stream, or a reset (it had unread frames).
        let closed = match s.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
        };
        (refused, closed)
    });

    let started = Instant::now();
    let terminals: Vec<_> = (0..100)
        .map(|i| {
            std::thread::spawn(move || {
                let mut t = Terminal {
                    phone: format!("139{i:08}"),
                    v2019: i % 4 != 0,
                    serial: 0,
                };
                (t.phone.clone(), t.run(addr, i, day0))
            })
        })
        .collect();
    let sent: Vec<(String, (f64, f64, i64))> =
        terminals.into_iter().map(|t| t.join().unwrap()).collect();
    let secs = started.elapsed().as_secs_f64();
    let (refused, closed) = hostile.join().unwrap();
    assert_eq!(refused, 1, "a location before authenticating is refused");
    assert!(closed, "the hostile client was disconnected");

    // Every position stored as an event, and the alerts.
    let total = 100 * FIXES as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    let stats = loop {
        let st = get(&agg, "/api/v1/stats");
        let by = &st["store"]["by_kind"];
        if by["vehicle_position"].as_u64() == Some(total) || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stored_secs = started.elapsed().as_secs_f64();
    let by = &stats["store"]["by_kind"];
    assert_eq!(
        by["vehicle_position"], total,
        "every position stored: {stats}"
    );
    let want: Vec<(String, String)> = (0..100)
        .filter_map(|i| scripted_alert(i).map(|a| (format!("139{i:08}"), a.to_string())))
        .collect();
    assert_eq!(by["vehicle_alert"], want.len(), "{stats}");

    let page = get(&agg, "/api/v1/events?kind=vehicle_alert&limit=1000");
    let events = page["events"].as_array().unwrap();
    let mut got: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["body"]["terminal"].as_str().unwrap().to_string(),
                e["body"]["alert"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(got, want, "each scripted case once, nothing else");
    for e in events {
        assert_eq!(e["review"], "pending", "{e}");
        assert_eq!(e["checkpoint_id"], GATEWAY_CHECKPOINT);
        let b = &e["body"];
        assert!(b["plate"].as_str().unwrap().starts_with("苏E"), "{e}");
        let positions = b["positions"].as_array().unwrap();
        assert!(!positions.is_empty() && positions.len() == b["fixes"].as_array().unwrap().len());
        // Its evidence: the positions it rests on, stored.
        for id in positions {
            let p = get(&agg, &format!("/api/v1/events/{}", id.as_str().unwrap()));
            assert_eq!(p["kind"], "vehicle_position", "{p}");
            assert_eq!(p["body"]["terminal"], b["terminal"]);
        }
    }
    // The alerts' times: what the script did when.
    let at = |kind: &str| {
        events
            .iter()
            .filter(|e| e["body"]["alert"] == kind)
            .map(|e| (e["frame_time_ms"].as_i64().unwrap() - day0) / 60_000)
            .collect::<Vec<_>>()
    };
    assert!(
        at("speeding").iter().all(|m| *m == 10 * 60 + 2),
        "{:?}",
        at("speeding")
    );
    assert!(
        at("abnormal_stop").iter().all(|m| *m == 14 * 60 + 20),
        "{:?}",
        at("abnormal_stop")
    );
    assert!(
        at("fatigue").iter().all(|m| *m == 10 * 60),
        "{:?}",
        at("fatigue")
    );
    assert!(
        at("night_coach").iter().all(|m| *m == 2 * 60),
        "{:?}",
        at("night_coach")
    );
    assert!(
        at("registry_status").iter().all(|m| *m == 6 * 60),
        "{:?}",
        at("registry_status")
    );
    for e in events
        .iter()
        .filter(|e| e["body"]["alert"] == "registry_status")
    {
        let i: usize = e["body"]["terminal"].as_str().unwrap()[3..]
            .parse()
            .unwrap();
        let want = if i % 30 == 26 {
            serde_json::json!(["hit_and_run", "inspection_overdue"])
        } else {
            serde_json::json!(["inspection_overdue"])
        };
        assert_eq!(e["body"]["statuses"], want, "{e}");
    }
    // A plate's positions are found by its plate.
    let p = get(
        &agg,
        "/api/v1/events?kind=vehicle_position&plate=苏E00007&limit=1000",
    );
    assert_eq!(
        p["events"].as_array().unwrap().len(),
        720,
        "{}",
        p["next_cursor"]
    );

    let v = get(&agg, "/api/v1/vehicles/positions");
    let positions = v["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 100, "{}", v["gateway"]);
    for (phone, (lat, lon, t)) in &sent {
        let p = positions
            .iter()
            .find(|p| p["terminal"] == phone.as_str())
            .unwrap_or_else(|| panic!("no position of {phone}"));
        assert_eq!(p["reports"], FIXES, "{p}");
        assert_eq!(
            p["time_ms"], *t,
            "the newest fix, not the batch's older ones: {p}"
        );
        assert!(
            (p["lat"].as_f64().unwrap() - lat).abs() < 1e-6
                && (p["lon"].as_f64().unwrap() - lon).abs() < 1e-6
        );
        assert_eq!(p["region"], "320505");
        assert!(
            p["plate"].as_str().unwrap().starts_with("苏E"),
            "GBK plate: {p}"
        );
        // Home in the depot since 16:30: stopped, not abnormally.
        assert_eq!(p["state"], "stopped", "{p}");
    }
    let g = &v["gateway"];
    assert_eq!(g["locations"], total, "{g}");
    assert_eq!(g["unauthenticated"], 1, "{g}");
    assert!(g["bad_frames"]["checksum"].as_u64().unwrap() >= 19, "{g}");
    let other = 100 * (2 + 24 + 2); // register, authenticate, heartbeats, two sub-packages
    eprintln!(
        "100 terminals, a day each: {total} positions and {other} other messages answered in {secs:.1} s ({:.0} positions/s, one message in flight per terminal), all stored after {stored_secs:.1} s; {} alerts; gateway: {g}",
        total as f64 / secs,
        want.len()
    );
    rt.block_on(agg.stop());
}
