//! Flow and signal timing through a running aggregator: scripted passes at a crossing's
//! checkpoint over zenoh, two days at 08:00 and 09:00 Beijing time. The flow in 15-minute
//! bins names the peak hour and its factor; the `timing` query gives, per hour of the day,
//! each phase's critical flow averaged over the days, its flow ratio and Webster's cycle and
//! greens beside the plan in force (08:00: y = 0.3 + 0.2, C0 = (1.5 x 8 + 5) / 0.5 = 34 s,
//! greens 15.6 and 10.4 s; 09:00: light traffic, the minimum cycle).
//!
//! And a textbook's worked example through the same path: two approaches carrying 500 and
//! 300 pcu/h, saturation flow 1600 pcu/h each, 16 s lost per cycle: Webster's optimum cycle
//! `C0 = (1.5 x 16 + 5) / (1 - (500 + 300) / 1600) = 58 s` (the solved problem of Indian
//! highway-engineering texts, e.g. as printed at byjus.com, "If the normal flows on two
//! approach roads at an intersection are respectively 500 pcu per hr and 300 pcu per hr...";
//! the greens follow as `(58 - 16) x y_i / Y`: 26.25 and 15.75 s).

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const CK: &str = "32050500051210000001";
/// The textbook's crossing.
const CK2: &str = "32050500051210000002";
const CAM: &str = "32050500051320000001";
const NODE: &str = "32050500055050000001";
const CAM2: &str = "32050500051320000002";
const NODE2: &str = "32050500055050000002";

#[test]
fn peak_hour_and_webster_timing_from_scripted_passes() {
    let rt = runtime();
    let dir = temp_dir("timing");
    let zport = free_port();
    let text = format!(
        r#"id = "32050500055030000001"
scope = "county:320505"
[auth]
required = false
[storage]
sqlite_path = "{}"
[http]
listen = "127.0.0.1:0"
[zenoh]
listen = ["tcp/127.0.0.1:{zport}"]
[[checkpoints]]
id = "{CK}"
name = "校园路口"
lon = 120.63
lat = 31.26
[[crossings]]
name = "校园路口"
checkpoint = "{CK}"
[[crossings.phases]]
name = "东西"
lanes = [1, 2]
green_s = 30
[[crossings.phases]]
name = "南北"
lanes = [3]
green_s = 20
[[checkpoints]]
id = "{CK2}"
name = "例题路口"
lon = 120.64
lat = 31.27
[[crossings]]
name = "例题路口"
checkpoint = "{CK2}"
saturation_flow = 1600
lost_time_s = 8
[[crossings.phases]]
name = "主路"
lanes = [1]
[[crossings.phases]]
name = "支路"
lanes = [2]
"#,
        dir.0.join("agg.db").display()
    );
    let agg = start_aggregator(&rt, &text);
    let session = peer(&rt, zport);
    std::thread::sleep(Duration::from_millis(500));

    // Local (UTC+8) midnight two days ago, in UTC ms.
    let day = 86_400_000i64;
    let now = protocol::time::now_ms();
    let midnight = (now + 8 * 3_600_000) / day * day - 8 * 3_600_000 - 2 * day;
    let hour = |d: i64, h: i64| midnight + d * day + h * 3_600_000;
    // Vehicles per hour by lane: 08:00 and 09:00.
    let flows = [(8, [540, 300, 360]), (9, [180, 100, 180])];
    let mut sent = 0u64;
    let mut n = 0u32;
    for d in 0..2 {
        for (h, lanes) in flows {
            for (i, per_hour) in lanes.iter().enumerate() {
                for k in 0..*per_hour {
                    n += 1;
                    let t = hour(d, h) + k * 3_600_000 / per_hour + i as i64;
                    let ev = pass(CK, CAM, NODE, t, &format!("苏E{n:05}"), i as u32 + 1);
                    put_event(&rt, &session, &ev);
                    sent += 1;
                }
            }
        }
    }
    // The textbook's flows: 500 and 300 pcu/h at 10:00 on the first day.
    for (lane, per_hour) in [(1u32, 500i64), (2, 300)] {
        for k in 0..per_hour {
            n += 1;
            let t = hour(0, 10) + k * 3_600_000 / per_hour + lane as i64;
            let ev = pass(CK2, CAM2, NODE2, t, &format!("苏E{n:05}"), lane);
            put_event(&rt, &session, &ev);
            sent += 1;
        }
    }
    let get = |path: &str| -> Value {
        let (status, _, body) = aggregator::client::get_bytes(agg.http_addr, path).unwrap();
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ingest = get("/health")["ingest"].clone();
        if ingest["stored"].as_u64() == Some(sent) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sent} passes sent, the aggregator has: {ingest}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // Flow on the first day, 07:00-10:00, in 15-minute bins: the peak hour is 08:00-09:00.
    let flow = get(&format!(
        "/api/v1/flow?checkpoint={CK}&from={}&to={}&bucket_minutes=15",
        hour(0, 7),
        hour(0, 10)
    ));
    assert_eq!(flow["total"], 1200 + 460, "{flow}");
    let peak = &flow["peak_hours"][0];
    assert_eq!(peak["start_ms"], hour(0, 8), "{peak}");
    assert_eq!(peak["vehicles"], 1200);
    assert!((peak["phf"].as_f64().unwrap() - 1.0).abs() < 0.01, "{peak}");

    // Timing over both days.
    let timing = get(&format!(
        "/api/v1/timing?crossing=%E6%A0%A1%E5%9B%AD%E8%B7%AF%E5%8F%A3&from={}&to={}",
        hour(0, 0),
        hour(2, 0)
    ));
    eprintln!("{timing:#}");
    assert_eq!(timing["plan_in_force"]["cycle_s"], 58.0, "{timing}");
    let hours = timing["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 2, "{timing}");
    let eight = &hours[0];
    assert_eq!(eight["hour"], 8);
    assert_eq!(eight["days"], 2);
    assert_eq!(
        eight["critical_flows_vph"],
        serde_json::json!([540.0, 360.0])
    );
    let p = &eight["proposal"];
    assert!((p["cycle_s"].as_f64().unwrap() - 34.0).abs() < 1e-6, "{p}");
    assert!(
        (p["greens_s"][0].as_f64().unwrap() - 15.6).abs() < 1e-6,
        "{p}"
    );
    assert!(
        (p["greens_s"][1].as_f64().unwrap() - 10.4).abs() < 1e-6,
        "{p}"
    );
    assert_eq!(hours[1]["hour"], 9);
    assert_eq!(hours[1]["proposal"]["capped"], "min_cycle");
    assert_eq!(hours[1]["proposal"]["cycle_s"], 30.0);

    // The textbook's example: cycle and greens within 1 s of the book's.
    let book = get(&format!(
        "/api/v1/timing?crossing=%E4%BE%8B%E9%A2%98%E8%B7%AF%E5%8F%A3&from={}&to={}",
        hour(0, 0),
        hour(1, 0)
    ));
    let hours = book["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 1, "{book}");
    assert_eq!(hours[0]["hour"], 10);
    assert_eq!(
        hours[0]["critical_flows_vph"],
        serde_json::json!([500.0, 300.0])
    );
    let p = &hours[0]["proposal"];
    let (cycle, g1, g2) = (
        p["cycle_s"].as_f64().unwrap(),
        p["greens_s"][0].as_f64().unwrap(),
        p["greens_s"][1].as_f64().unwrap(),
    );
    assert!((cycle - 58.0).abs() < 1.0, "the book's 58 s: {p}");
    assert!((g1 - 26.25).abs() < 1.0 && (g2 - 15.75).abs() < 1.0, "{p}");
    assert_eq!(p["capped"], Value::Null);
    eprintln!("textbook example: cycle {cycle:.2} s (book 58), greens {g1:.2} / {g2:.2} s (26.25 / 15.75)");

    // An unknown crossing is named with the ones configured.
    let (status, _, body) =
        aggregator::client::get_bytes(agg.http_addr, "/api/v1/timing?crossing=x&from=0&to=1")
            .unwrap();
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("校园路口"));
    rt.block_on(async { session.close().await.unwrap() });
    rt.block_on(agg.stop());
}
