//! The JT/T 808 gateway against simulated terminals. The simulator is written from the
//! standard (JT/T 808-2019, with the 2013 header and registration layout for a quarter of
//! the terminals), not from the gateway's codec: its own escaping, checksum, BCD and bodies.
//!
//! 100 terminals, each on its own connection: register (plate in GBK), authenticate with the
//! code the platform answered, then a compressed day: 50 location reports at 30 s of fix
//! time apart with a heartbeat every ten, and a batch of 10 positions kept while out of
//! coverage, sent as two sub-packages. Every message must be answered (0x8100, 0x8001 with
//! the terminal's serial and message id), every position counted, each terminal's latest
//! position the newest it sent. A hostile client beside them sends garbage, frames with bad
//! checksums and a location without authenticating: refused, counted, disconnected after
//! too many bad frames in a row, and nobody else notices.

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

    /// Registers, authenticates, reports; the newest fix it sent.
    fn run(&mut self, addr: std::net::SocketAddr, i: usize, t0: i64) -> (f64, f64, i64) {
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

        let pos = |k: i64| {
            (
                31.2 + i as f64 * 0.001 + k as f64 * 1e-4,
                120.6 + k as f64 * 1e-4,
            )
        };
        let mut newest = (0.0, 0.0, 0);
        for k in 0..50i64 {
            let (lat, lon) = pos(k);
            let tk = t0 + k * 30_000;
            // A tenth of the terminals drive at 120 km/h for two minutes of fixes.
            let kmh = if i % 10 == 1 && (10..15).contains(&k) {
                120.0
            } else {
                60.0
            };
            let sn = self.next();
            s.write_all(&frame(
                0x0200,
                self.v2019,
                &self.phone,
                sn,
                None,
                &location_body(lat, lon, kmh, tk),
            ))
            .unwrap();
            assert_eq!(general(&mut s, sn, 0x0200), 0);
            newest = (lat, lon, tk);
            if k % 10 == 9 {
                let sn = self.next();
                s.write_all(&frame(0x0002, self.v2019, &self.phone, sn, None, &[]))
                    .unwrap();
                assert_eq!(general(&mut s, sn, 0x0002), 0);
            }
        }
        // Ten fixes kept while out of coverage, older than the last: a batch of type 1 in
        // two sub-packages (consecutive serials).
        let mut batch = 10u16.to_be_bytes().to_vec();
        batch.push(1);
        for k in 0..10i64 {
            let (lat, lon) = pos(-k - 1);
            let b = location_body(lat, lon, 40.0, t0 - (k + 1) * 30_000);
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
        newest
    }
}

#[test]
fn a_hundred_terminals_and_a_hostile_one() {
    let rt = runtime();
    let dir = temp_dir("jt808");
    let text = format!(
        "id = \"32050500055030000001\"\nscope = \"county:320505\"\n[auth]\nrequired = false\n[storage]\nsqlite_path = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[zenoh]\nlisten = [\"tcp/127.0.0.1:{}\"]\n[jt808]\nlisten = \"127.0.0.1:0\"\nauth_secret = \"test secret\"\n",
        dir.0.join("agg.db").display(),
        free_port()
    );
    let agg = start_aggregator(&rt, &text);
    let addr = agg.jt808_addr.expect("the gateway listens");
    let t0 = protocol::time::now_ms() / 1000 * 1000 - 3_600_000;

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
            &location_body(31.0, 120.0, 50.0, t0),
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
                (t.phone.clone(), t.run(addr, i, t0))
            })
        })
        .collect();
    let sent: Vec<(String, (f64, f64, i64))> =
        terminals.into_iter().map(|t| t.join().unwrap()).collect();
    let secs = started.elapsed().as_secs_f64();
    let (refused, closed) = hostile.join().unwrap();
    assert_eq!(refused, 1, "a location before authenticating is refused");
    assert!(closed, "the hostile client was disconnected");

    let (status, _, body) =
        aggregator::client::get_bytes(agg.http_addr, "/api/v1/vehicles/positions").unwrap();
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let positions = v["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 100, "{}", v["gateway"]);
    for (phone, (lat, lon, t)) in &sent {
        let p = positions
            .iter()
            .find(|p| p["terminal"] == phone.as_str())
            .unwrap_or_else(|| panic!("no position of {phone}"));
        assert_eq!(p["reports"], 60, "{p}");
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
    }
    for p in positions {
        assert_eq!(p["state"], "driving", "{p}");
    }
    // Alerts: one speeding alert for each speeding terminal, nothing for the others.
    let (status, _, body) =
        aggregator::client::get_bytes(agg.http_addr, "/api/v1/vehicles/alerts").unwrap();
    assert_eq!(status, 200);
    let alerts: Value = serde_json::from_slice(&body).unwrap();
    let mut got: Vec<(String, String)> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["terminal"].as_str().unwrap().to_string(),
                a["kind"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String)> = (0..100)
        .filter(|i| i % 10 == 1)
        .map(|i| (format!("139{i:08}"), "speeding".to_string()))
        .collect();
    assert_eq!(got, want, "{alerts}");
    let g = &v["gateway"];
    assert_eq!(g["locations"], 100 * 60, "{g}");
    assert_eq!(g["unauthenticated"], 1, "{g}");
    assert!(g["bad_frames"]["checksum"].as_u64().unwrap() >= 19, "{g}");
    eprintln!(
        "100 terminals, 6000 positions and 900 other messages each answered in {secs:.2} s ({:.0} positions/s, one message in flight per terminal); gateway: {g}",
        6000.0 / secs
    );
    rt.block_on(agg.stop());
}
