//! The dashboard's key-vehicle, signal-timing and accident pages in a real browser
//! (headless Chromium over WebDriver) against a running aggregator with its JT/T 808 gateway.
//!
//! Three terminals report over TCP (framed by `protocol::jt808`; the codec itself is tested
//! elsewhere): one drives (out of coverage for ten minutes, when a toll station's camera
//! reads its plate: the pass fills the gap of its track), one has stood 25 minutes on the
//! road (abnormal stop), one drove 120 km/h for two minutes (speeding). Passes at a signalised crossing give its flows; a
//! small accident register with one planted hot place is imported. The pages must show, in
//! Chinese and without an English word: the three vehicles on the map and in the table with
//! their states, the two alerts (one opened for review), the timing proposal beside the plan
//! in force, and the hot place with the years. Screenshots go to
//! `target/dashboard-screenshots/` (13-15).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use protocol::jt808::{self, Edition, Header};
use serde_json::Value;

mod common;
use common::*;
#[path = "common/browser.rs"]
mod browser;
use browser::{no_english, Driver};

const GW: &str = "32050500051210000099";
const CK: &str = "32050500051210000001";
const CAM: &str = "32050500051320000001";
const NODE: &str = "32050500055050000001";
/// A toll station's checkpoint a key vehicle passes while its terminal is out of coverage.
const CK3: &str = "32050500051210000003";
const CAM3: &str = "32050500051320000003";

struct Terminal {
    s: TcpStream,
    split: jt808::Splitter,
    phone: String,
    serial: u16,
}

impl Terminal {
    fn send(&mut self, msg_id: u16, body: &[u8]) -> jt808::Frame {
        self.serial += 1;
        let h = Header {
            msg_id,
            edition: Edition::V2019 { protocol: 1 },
            encryption: 0,
            phone: self.phone.clone(),
            serial: self.serial,
            package: None,
        };
        self.s.write_all(&jt808::encode(&h, body)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let n = self.s.read(&mut buf).unwrap();
            assert!(n > 0, "the gateway hung up");
            let mut got = None;
            self.split.feed(&buf[..n], |r| {
                got = Some(jt808::decode(r.unwrap()).unwrap())
            });
            if let Some(f) = got {
                return f;
            }
        }
    }

    fn connect(addr: std::net::SocketAddr, phone: &str, plate: &str) -> Terminal {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut t = Terminal {
            s,
            split: jt808::Splitter::default(),
            phone: phone.into(),
            serial: 0,
        };
        let mut reg = vec![0, 32, 0x01, 0xF9];
        reg.extend([b'M'; 11]);
        reg.extend([b'X'; 30]);
        reg.extend([b'T'; 30]);
        reg.push(2);
        reg.extend(encoding_rs::GBK.encode(plate).0.iter());
        let r = t.send(jt808::REGISTER, &reg);
        assert_eq!(r.header.msg_id, jt808::REGISTER_REPLY);
        let code = r.body[3..].to_vec();
        let mut auth = vec![code.len() as u8];
        auth.extend(&code);
        auth.extend([b'8'; 15]);
        auth.extend([b'1'; 20]);
        let r = t.send(jt808::AUTHENTICATE, &auth);
        assert_eq!(r.body[4], 0, "authenticated");
        t
    }

    fn at(&mut self, t_ms: i64, lat: f64, lon: f64, kmh: f64) {
        let mut b = 0u32.to_be_bytes().to_vec();
        b.extend(3u32.to_be_bytes());
        b.extend(((lat * 1e6) as u32).to_be_bytes());
        b.extend(((lon * 1e6) as u32).to_be_bytes());
        b.extend(10u16.to_be_bytes());
        b.extend(((kmh * 10.0) as u16).to_be_bytes());
        b.extend(90u16.to_be_bytes());
        b.extend(jt808::bcd_time(t_ms));
        let r = self.send(jt808::LOCATION, &b);
        assert_eq!(r.body[4], 0, "location taken");
    }
}

#[test]
fn key_vehicles_timing_and_accidents_pages() {
    let rt = runtime();
    let dir = temp_dir("kv-browser");
    let zport = free_port();
    let text = county_config(
        &dir.0,
        zport,
        &format!(
            r#"[[checkpoints]]
id = "{GW}"
name = "重点车辆监管平台"
lon = 120.60
lat = 31.30
[[checkpoints]]
id = "{CK}"
name = "校园路口"
lon = 120.63
lat = 31.26
[[checkpoints]]
id = "{CK3}"
name = "苏州收费站"
lon = 120.59
lat = 31.29
[[crossings]]
name = "校园路口"
checkpoint = "{CK}"
[[crossings.phases]]
name = "东西"
lanes = [1]
green_s = 30
[[crossings.phases]]
name = "南北"
lanes = [2]
green_s = 20
[jt808]
listen = "127.0.0.1:0"
auth_secret = "browser"
checkpoint_id = "{GW}"
"#
        ),
    );
    let agg = start_aggregator(&rt, &text);
    let base = format!("http://{}", agg.http_addr);
    let addr = agg.jt808_addr.unwrap();
    let now = protocol::time::now_ms() / 1000 * 1000;
    let min = 60_000;

    // Three vehicles over the last half hour.
    let mut a = Terminal::connect(addr, "13900000001", "苏E00001");
    let mut b = Terminal::connect(addr, "13900000002", "苏E00002");
    let mut c = Terminal::connect(addr, "13900000003", "苏E00003");
    for k in 0..=30 {
        let t = now - (30 - k) * min;
        // Out of coverage for ten minutes: a checkpoint pass fills the gap (below).
        if !(10..=20).contains(&k) {
            a.at(t, 31.28 + k as f64 * 1e-3, 120.58, 60.0);
        }
        // Stood on the road since five minutes in: abnormal after 20 minutes.
        b.at(t, 31.27, 120.62, if k < 5 { 50.0 } else { 0.0 });
        c.at(
            t,
            31.29,
            120.61 + k as f64 * 1e-3,
            if (10..=12).contains(&k) { 120.0 } else { 70.0 },
        );
    }

    // Flows at the crossing in the last hour: 540 and 360 vehicles.
    let session = peer(&rt, zport);
    std::thread::sleep(Duration::from_millis(500));
    let hour0 = now / 3_600_000 * 3_600_000 - 3_600_000;
    let mut n = 0;
    for (lane, per_hour) in [(1u32, 540i64), (2, 360)] {
        for k in 0..per_hour {
            n += 1;
            let ev = pass(
                CK,
                CAM,
                NODE,
                hour0 + k * 3_600_000 / per_hour + lane as i64,
                &format!("苏E{:05}", 10_000 + n),
                lane,
            );
            put_event(&rt, &session, &ev);
        }
    }
    let seen = pass(CK3, CAM3, NODE, now - 15 * min, "苏E00001", 1);
    put_event(&rt, &session, &seen);
    // The accident register: ten ordinary places, one that is not.
    let mut csv = String::from("time,place,severity,kind\n");
    for y in 2021..=2025 {
        for p in 0..10 {
            for k in 0..2 {
                csv.push_str(&format!(
                    "{y}-0{}-1{k} 0{}:30,S228 K{p}+000,轻微,刮擦\n",
                    1 + p % 9,
                    7 + k
                ));
            }
        }
        for k in 0..12 {
            csv.push_str(&format!(
                "{y}-0{}-2{} 17:{:02},人民路与解放路交叉口,一般,追尾\n",
                1 + k % 9,
                k % 9,
                k * 4
            ));
        }
    }
    let (status, _, body) = aggregator::client::request_with(
        agg.http_addr,
        "POST",
        "/api/v1/accidents",
        &[("Content-Type", "text/csv".to_string())],
        csv.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    wait_until(
        "the passes and the alerts stored",
        Duration::from_secs(30),
        || {
            let (_, _, body) =
                aggregator::client::get_bytes(agg.http_addr, "/api/v1/stats").unwrap();
            let v: Value = serde_json::from_slice(&body).unwrap();
            let by = &v["store"]["by_kind"];
            by["vehicle_pass"] == 901 && by["vehicle_alert"] == 2 && by["vehicle_position"] == 82
        },
    );

    // The vehicle's track: its positions and, in their gap, its pass at the toll station.
    let (status, _, body) = aggregator::client::get_bytes(
        agg.http_addr,
        "/api/v1/vehicles/track?plate=%E8%8B%8FE00001",
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let track: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(track["positions"], 20, "{track}");
    assert_eq!(track["passes"], 1);
    assert_eq!(track["passes_filling_gaps"], 1);
    let points = track["points"].as_array().unwrap();
    let times: Vec<i64> = points
        .iter()
        .map(|p| p["time_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "in time order");
    let i = points
        .iter()
        .position(|p| p["source"] == "checkpoint")
        .unwrap();
    assert_eq!(i, 10, "after the ten positions before the gap");
    assert_eq!(points[i]["checkpoint_name"], "苏州收费站");
    assert_eq!(points[i]["fills_gap"], true);

    let shots = browser::screenshots_dir();
    let d = Driver::launch();
    d.go(&format!("{base}/dashboard/#/vehicles"));
    d.wait(
        "three vehicles and two alerts",
        "document.querySelectorAll('#vehicle-rows tr').length === 3 && document.querySelectorAll('#vehicle-alerts tr').length === 2 && document.querySelectorAll('#vehicle-map circle.vehicle').length === 3",
    );
    let states = d.js("return [...document.querySelectorAll('#vehicle-rows tr')].map((r) => r.cells[0].textContent + ' ' + r.cells[2].textContent)");
    assert_eq!(
        states,
        serde_json::json!(["苏E00001 行驶", "苏E00002 异常停车", "苏E00003 行驶"]),
        "{states}"
    );
    let alerts = d.js("return [...document.querySelectorAll('#vehicle-alerts tr')].map((r) => r.cells[3].textContent + ' ' + r.cells[4].textContent.split('，')[0] + ' ' + r.cells[5].textContent).sort()");
    assert_eq!(
        alerts,
        serde_json::json!(["苏E00002 异常停车 待审核", "苏E00003 超速行驶 待审核"]),
        "{alerts}"
    );
    // A vehicle's row draws its track: positions as a line, the toll station's pass.
    d.click("#vehicle-rows tr[data-terminal='13900000001']");
    d.wait(
        "the track of 苏E00001",
        "document.querySelectorAll('#vehicle-map polyline.track').length === 1 && document.querySelectorAll('#vehicle-map rect.track-pass.gap').length === 1",
    );
    no_english(&d, "the key vehicles");
    d.screenshot(&shots, "13-key-vehicles.png");
    // An alert opens for review like a violation.
    d.click("#vehicle-alerts tr");
    d.wait(
        "the alert for review",
        "!document.getElementById('view-event').hidden && !document.getElementById('review-confirm').hidden",
    );
    no_english(&d, "a key vehicle alert");

    d.go(&format!("{base}/dashboard/#/charts"));
    d.wait(
        "the timing proposal",
        "document.querySelectorAll('#timing-rows tr').length === 1 && document.querySelectorAll('#chart-timing rect').length === 1",
    );
    let row = d.js(
        "return [...document.querySelector('#timing-rows tr').cells].map((c) => c.textContent)",
    );
    // 540 and 360 an hour on lanes saturating at 1800: y 0.3 + 0.2, Webster's 34 s.
    assert_eq!(row[1], "540 / 360", "{row}");
    assert_eq!(row[2], "0.50", "{row}");
    assert_eq!(row[3], "34", "{row}");
    assert_eq!(row[4], "15.6 / 10.4", "{row}");
    let plan = d.js("return document.getElementById('timing-plan').textContent");
    assert!(plan.as_str().unwrap().contains("周期 58 秒"), "{plan}");
    no_english(&d, "the timing");
    d.js("document.querySelector('#view-charts h3:nth-of-type(3)').scrollIntoView(); return 0");
    d.screenshot(&shots, "14-timing.png");

    d.go(&format!("{base}/dashboard/#/accidents"));
    d.wait(
        "the accident patterns",
        "document.querySelectorAll('#accident-places tr.hot').length === 1 && document.querySelectorAll('#chart-years rect').length >= 5",
    );
    let hot = d.js("return document.querySelector('#accident-places tr.hot').cells[0].textContent");
    assert_eq!(hot, "人民路与解放路交叉口");
    no_english(&d, "the accidents");
    d.screenshot(&shots, "15-accidents.png");
    drop(d);
    rt.block_on(async { session.close().await.unwrap() });
    rt.block_on(agg.stop());
}
