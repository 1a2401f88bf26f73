//! The JT/T 808 gateway's sustained location reports per second and the time from a report
//! sent to its reply (the gateway has queued the position for the store when it answers),
//! and the rate at which they are stored as events (SQLite, the embedded default), on loopback
//! against an aggregator in this process: `JT_TERMINALS` connections (default 200), each
//! authenticated, then keeping `JT_WINDOW` reports in flight (default 16) until
//! `JT_REPORTS` reports (default 200,000) were answered in all. Frames are built by
//! `protocol::jt808` (the gateway's test checks them against a simulator written from the
//! standard). Results go to stdout and target/jt808-bench.json.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use benches::env_usize;
use protocol::jt808::{self, Edition, Header};

fn header(msg_id: u16, phone: &str, serial: u16) -> Header {
    Header {
        msg_id,
        edition: Edition::V2019 { protocol: 1 },
        encryption: 0,
        phone: phone.into(),
        serial,
        package: None,
    }
}

fn location(t_ms: i64, k: u32) -> Vec<u8> {
    let mut b = 0u32.to_be_bytes().to_vec();
    b.extend(3u32.to_be_bytes());
    b.extend((31_200_000 + k).to_be_bytes());
    b.extend((120_600_000 + k).to_be_bytes());
    b.extend(10u16.to_be_bytes());
    b.extend(600u16.to_be_bytes());
    b.extend(90u16.to_be_bytes());
    b.extend(jt808::bcd_time(t_ms));
    b
}

/// Reads replies until `n` frames were taken; each frame's reply serial (the report's).
fn read_replies(s: &mut TcpStream, split: &mut jt808::Splitter, n: usize, out: &mut Vec<u16>) {
    let mut buf = [0u8; 16384];
    let start = out.len();
    while out.len() - start < n {
        let got = s.read(&mut buf).expect("replies");
        assert!(got > 0, "the gateway closed the connection");
        split.feed(&buf[..got], |r| {
            let f = jt808::decode(r.expect("a whole reply")).expect("a reply frame");
            out.push(u16::from_be_bytes([f.body[0], f.body[1]]));
        });
    }
}

fn terminal(
    addr: std::net::SocketAddr,
    phone: String,
    code: String,
    reports: usize,
    window: usize,
) -> Vec<f64> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut split = jt808::Splitter::default();
    let mut serials = Vec::new();
    let mut auth = vec![code.len() as u8];
    auth.extend(code.as_bytes());
    auth.extend([b'8'; 15]);
    auth.extend([b'1'; 20]);
    s.write_all(&jt808::encode(
        &header(jt808::AUTHENTICATE, &phone, 0),
        &auth,
    ))
    .unwrap();
    read_replies(&mut s, &mut split, 1, &mut serials);
    let t0 = protocol::time::now_ms();
    let mut sent_at = vec![Instant::now(); 65_536];
    let mut lat = Vec::with_capacity(reports);
    let (mut sent, mut done) = (0usize, 0usize);
    while done < reports {
        let mut burst = Vec::new();
        while sent < reports && sent - done < window {
            let serial = (sent % 65_535 + 1) as u16;
            burst.extend(jt808::encode(
                &header(jt808::LOCATION, &phone, serial),
                // A fix a second up to now: each its own event, none ahead of the clock.
                &location(t0 - (reports - sent) as i64 * 1000, sent as u32),
            ));
            sent_at[serial as usize] = Instant::now();
            sent += 1;
        }
        s.write_all(&burst).unwrap();
        let mut got = Vec::new();
        read_replies(&mut s, &mut split, 1, &mut got);
        for serial in got {
            lat.push(sent_at[serial as usize].elapsed().as_secs_f64() * 1e3);
            done += 1;
        }
    }
    lat
}

fn main() {
    benches::init_logging();
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let terminals = env_usize("JT_TERMINALS", 200);
    let window = env_usize("JT_WINDOW", 16);
    let total = env_usize("JT_REPORTS", 200_000);
    let per = total / terminals;
    let dir = std::env::temp_dir().join(format!("jt808-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let agg = benches::start_aggregator(
        &rt,
        &dir,
        benches::free_port(),
        "[[checkpoints]]\nid = \"32050500051210000099\"\nname = \"gateway\"\nlon = 120.6\nlat = 31.3\n[jt808]\nlisten = \"127.0.0.1:0\"\nauth_secret = \"bench\"\nmax_connections = 100000\ncheckpoint_id = \"32050500051210000099\"\n",
    );
    let addr = agg.jt808_addr.unwrap();
    let code_of = {
        let gw = aggregator::jt808::Gateway::new(aggregator::jt808::Jt808Config {
            auth_secret: Some("bench".into()),
            ..Default::default()
        });
        move |phone: &str| gw.auth_code(phone)
    };
    let started = Instant::now();
    let handles: Vec<_> = (0..terminals)
        .map(|i| {
            let phone = format!("139{i:08}");
            let code = code_of(&phone);
            std::thread::spawn(move || terminal(addr, phone, code, per, window))
        })
        .collect();
    let mut lat: Vec<f64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let secs = started.elapsed().as_secs_f64();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    let (status, _, body) =
        aggregator::client::get_bytes(agg.http_addr, "/api/v1/vehicles/positions").unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["gateway"]["locations"].as_u64(),
        Some((per * terminals) as u64)
    );
    // Stored: every report a `vehicle_position` event.
    let stored_secs = loop {
        let (_, _, body) = aggregator::client::get_bytes(agg.http_addr, "/api/v1/stats").unwrap();
        let st: serde_json::Value = serde_json::from_slice(&body).unwrap();
        if st["store"]["by_kind"]["vehicle_position"].as_u64() == Some((per * terminals) as u64) {
            break started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not all stored: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = serde_json::json!({
        "terminals": terminals,
        "window": window,
        "reports": lat.len(),
        "secs": secs,
        "reports_per_s": lat.len() as f64 / secs,
        "stored_secs": stored_secs,
        "stored_per_s": lat.len() as f64 / stored_secs,
        "latency_ms": {"p50": q(0.5), "p99": q(0.99), "max": lat[lat.len() - 1]},
    });
    println!(
        "JT/T 808 gateway: {} terminals, {} in flight each: {} location reports in {:.2} s = {:.0} reports/s; report to reply p50 {:.2} ms, p99 {:.2} ms; all stored as events after {:.2} s = {:.0} /s",
        terminals,
        window,
        lat.len(),
        secs,
        lat.len() as f64 / secs,
        q(0.5),
        q(0.99),
        stored_secs,
        lat.len() as f64 / stored_secs
    );
    rt.block_on(agg.stop());
    let _ = std::fs::remove_dir_all(&dir);
    let path = benches::repo_root().join("target/jt808-bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).unwrap()).unwrap();
    println!("written to {}", path.display());
}
