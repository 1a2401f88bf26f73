//! Our JT/T 808 frames against an independent codec: the `jt808` crate (crates.io, 0.1.1,
//! another author's reading of the standard). Its encoder's frames must decode here to the
//! same fields, and the frames our platform sends must decode there to the same header and
//! body: escaping (0x7E, 0x7D inside the frame), the XOR checksum, BCD phone numbers of both
//! editions, big-endian fields.
//!
//! The location body is laid out here in the standard's field order, written with that
//! crate's writer (its big-endian fields and its BCD time), framed by its encoder. Two parts
//! of it are not used as a reference: its encoder leaves the sub-package bit unset when it
//! splits a body (so bodies are kept to one package), and its location decoder reads the BCD
//! time as binary (so its `Jt0x0200` is not used to read ours). Its decoder also mislays the
//! third and later escapes of one frame (its offsets drift by two each time), so each of our
//! frames here holds at most two.

use ::jt808::models::{Jt808BodySerialize, Ver808};
use bytes::BytesMut;
use chrono::TimeZone;
use jt_util::bytes::IBuffWrite;
use jt_util::bytes_bcd::BytesBCD;
use protocol::jt808 as p808;
use tokio_util::codec::Decoder;

fn ours(frame: &[u8]) -> p808::Frame {
    let mut got = Vec::new();
    p808::Splitter::default().feed(frame, |r| got.push(r.map(|f| f.to_vec())));
    assert_eq!(got.len(), 1, "one frame between the flags");
    p808::decode(&got.remove(0).expect("the frame splits")).expect("and decodes")
}

fn sim(phone: &str, v2019: bool) -> BytesBCD {
    let mut s = BytesBCD::new();
    s.set_val(phone, if v2019 { 20 } else { 12 });
    s
}

/// A 0x0200 body (JT/T 808-2019 table 23): alarm, status, latitude, longitude (1e-6
/// degrees), altitude (m), speed (0.1 km/h), heading, time (BCD YYMMDDhhmmss, GMT+8).
struct LocationBody {
    alarm: u32,
    status: u32,
    lat: u32,
    lon: u32,
    altitude: u16,
    speed: u16,
    heading: u16,
    time: chrono::DateTime<chrono::Local>,
}

impl Jt808BodySerialize for LocationBody {
    fn write(&mut self, _ver: &Ver808, buf: &mut dyn IBuffWrite) {
        buf.put_u32(self.alarm);
        buf.put_u32(self.status);
        buf.put_u32(self.lat);
        buf.put_u32(self.lon);
        buf.put_u16(self.altitude);
        buf.put_u16(self.speed);
        buf.put_u16(self.heading);
        buf.put_dt_bcd6(self.time);
    }

    fn len(&self, _ver: &Ver808) -> usize {
        28
    }
}

/// Values with 0x7E and 0x7D bytes in them, so that escaping is exercised.
fn base(hour: u32) -> LocationBody {
    LocationBody {
        alarm: 0x7E7D_0002,
        status: 0x0000_0003,
        lat: 31_297_534,
        lon: 120_585_316,
        altitude: 0x7D7E,
        speed: 0x07E7, // 202.3 km/h
        heading: 0x7D,
        time: chrono::Local
            .with_ymd_and_hms(2026, 12, 7, hour, 30, 15)
            .single()
            .expect("a plain local time"),
    }
}

#[test]
fn their_location_frames_decode_here() {
    for v2019 in [true, false] {
        let pkg = ::jt808::JtPackage::new(sim("13912345678", v2019), v2019, 1, 1023);
        // The second serial holds 0x7E: escaped in the header too.
        pkg.distribute_sn(0x7E);
        for hour in [8u32, 23] {
            let mut body = base(hour);
            let frame = pkg.serialize(0x0200, 0, &mut body);
            let f = ours(&frame);
            assert_eq!(f.header.msg_id, 0x0200);
            assert_eq!(f.header.phone, "13912345678", "v2019 {v2019}");
            assert_eq!(
                f.header.edition == p808::Edition::V2013,
                !v2019,
                "{:?}",
                f.header.edition
            );
            assert_eq!(f.header.package, None);
            assert_eq!(f.body.len(), 28);
            let l = p808::parse_location(&f.body).expect("a location body");
            assert_eq!(l.alarm, 0x7E7D_0002);
            assert_eq!(l.status, 3);
            assert!((l.lat - 31.297534).abs() < 1e-9 && (l.lon - 120.585316).abs() < 1e-9);
            assert_eq!(l.altitude_m, 0x7D7E);
            assert!((l.speed_kmh - 202.3).abs() < 1e-9);
            assert_eq!(l.heading, 0x7D);
            // The digits they wrote, read as GMT+8 (the standard's time zone).
            let want =
                protocol::time::parse_rfc3339_ms(&format!("2026-12-07T{hour:02}:30:15+08:00"))
                    .unwrap();
            assert_eq!(l.time_ms, want, "hour {hour}");
        }
    }
}

#[test]
fn our_replies_decode_there() {
    for (edition, width) in [
        (p808::Edition::V2019 { protocol: 1 }, 10usize),
        (p808::Edition::V2013, 6),
    ] {
        let header = |msg_id, serial| p808::Header {
            msg_id,
            edition,
            encryption: 0,
            phone: "13912345678".into(),
            serial,
            package: None,
        };
        // A general reply to serial 0x7E7D of a 0x0200 (two escapes in the body), and a
        // registration reply with its code (one in the header's serial).
        let general = p808::general_reply(0x7E7D, 0x0200, p808::RESULT_OK);
        let register = p808::register_reply(0x0001, 0, "a1b2c3");
        let mut wire = BytesMut::new();
        wire.extend_from_slice(&p808::encode(
            &header(p808::PLATFORM_REPLY, 0x0102),
            &general,
        ));
        wire.extend_from_slice(&p808::encode(
            &header(p808::REGISTER_REPLY, 0x7D),
            &register,
        ));
        let mut theirs = ::jt808::codec::Jt808Codec::new();
        let mut got = Vec::new();
        while let Some(m) = theirs
            .decode(&mut wire)
            .expect("their codec takes our frames")
        {
            got.push(m);
        }
        assert_eq!(got.len(), 2, "{edition:?}");
        for (m, (id, serial, body)) in got.iter().zip([
            (p808::PLATFORM_REPLY, 0x0102u16, &general),
            (p808::REGISTER_REPLY, 0x7D, &register),
        ]) {
            assert_eq!(m.id, id);
            assert_eq!(m.v19, matches!(edition, p808::Edition::V2019 { .. }));
            assert_eq!(m.sn, serial);
            assert_eq!(m.package_total, None);
            assert_eq!(m.sim.get_bytes().len(), width);
            assert_eq!(
                m.sim.get_val().trim_start_matches('0'),
                "13912345678",
                "the phone number, BCD"
            );
            assert_eq!(
                m.get_body().as_ref(),
                body.as_slice(),
                "{edition:?} {id:#06x}"
            );
            // Their checksum: the XOR of everything between the flags, unescaped.
            let raw = m.get_bytes();
            let inner = &raw[1..raw.len() - 1];
            let x = inner[..inner.len() - 1].iter().fold(0u8, |a, b| a ^ b);
            assert_eq!(x, inner[inner.len() - 1], "checksum");
        }
    }
}
