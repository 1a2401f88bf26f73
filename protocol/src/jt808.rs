//! JT/T 808 (道路运输车辆卫星定位系统 终端通讯协议): the framing and the messages a
//! vehicle terminal sends a platform, as the 2019 edition defines them, and the 2013 edition's
//! header (a 6-byte phone number, no version byte) beside it.
//!
//! A frame is `0x7E`, header, body, checksum, `0x7E`; between the flags `0x7E` is sent as
//! `0x7D 0x02` and `0x7D` as `0x7D 0x01`; the checksum is the XOR of every header and body
//! byte. The header holds the message id, the body's properties (length in bits 0-9,
//! encryption in bits 10-12, sub-package in bit 13, the 2019 version flag in bit 14), the
//! protocol version (2019), the terminal's phone number in BCD, the message's serial number
//! and, for a sub-package, the package count and index.
//!
//! Pure functions over bytes: the gateway (`aggregator::jt808`) owns sockets and state.

use std::collections::HashMap;

/// The frame flag.
pub const FLAG: u8 = 0x7E;
/// Longest frame accepted between flags, escaped (a body is at most 1023 bytes).
pub const MAX_FRAME: usize = 2 * (17 + 1023 + 1) + 16;

/// Terminal messages.
pub const TERMINAL_REPLY: u16 = 0x0001;
pub const HEARTBEAT: u16 = 0x0002;
pub const DEREGISTER: u16 = 0x0003;
pub const REGISTER: u16 = 0x0100;
pub const AUTHENTICATE: u16 = 0x0102;
pub const LOCATION: u16 = 0x0200;
pub const LOCATION_BATCH: u16 = 0x0704;
/// Platform messages.
pub const PLATFORM_REPLY: u16 = 0x8001;
pub const REGISTER_REPLY: u16 = 0x8100;

/// Results of a platform general reply (0x8001).
pub const RESULT_OK: u8 = 0;
pub const RESULT_FAILED: u8 = 1;
pub const RESULT_BAD_MESSAGE: u8 = 2;
pub const RESULT_UNSUPPORTED: u8 = 3;

/// Which edition's header a frame has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edition {
    /// 2011/2013: 6-byte phone number.
    V2013,
    /// 2019: version flag set, a protocol version byte, a 10-byte phone number.
    V2019 { protocol: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub msg_id: u16,
    pub edition: Edition,
    /// Encryption bits (0: none).
    pub encryption: u8,
    /// The terminal's phone number (its id): the digits without the leading zeros each
    /// edition pads to its width, so that one terminal has one id in both editions.
    pub phone: String,
    pub serial: u16,
    /// Sub-package: (count, index from 1).
    pub package: Option<(u16, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: Header,
    pub body: Vec<u8>,
}

/// Why a frame was refused, by name (the gateway counts them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("a 0x7D escape not followed by 0x01 or 0x02")]
    Escape,
    #[error("checksum {got:#04x}, the bytes give {want:#04x}")]
    Checksum { got: u8, want: u8 },
    #[error("{0} bytes are too few for a header and checksum")]
    Short(usize),
    #[error("the header says {said} body bytes, the frame holds {held}")]
    Length { said: usize, held: usize },
    #[error("the phone number is not BCD digits")]
    Phone,
    #[error("longer than {MAX_FRAME} bytes without an end flag")]
    TooLong,
}

impl FrameError {
    /// The reason as a metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Escape => "escape",
            FrameError::Checksum { .. } => "checksum",
            FrameError::Short(_) => "short",
            FrameError::Length { .. } => "length",
            FrameError::Phone => "phone",
            FrameError::TooLong => "too_long",
        }
    }
}

/// `0x7E` and `0x7D` escaped.
pub fn escape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 4);
    for &b in raw {
        match b {
            0x7E => out.extend_from_slice(&[0x7D, 0x02]),
            0x7D => out.extend_from_slice(&[0x7D, 0x01]),
            _ => out.push(b),
        }
    }
    out
}

pub fn unescape(escaped: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(escaped.len());
    let mut it = escaped.iter();
    while let Some(&b) = it.next() {
        if b == 0x7D {
            match it.next() {
                Some(0x01) => out.push(0x7D),
                Some(0x02) => out.push(0x7E),
                _ => return Err(FrameError::Escape),
            }
        } else {
            out.push(b);
        }
    }
    Ok(out)
}

fn xor(b: &[u8]) -> u8 {
    b.iter().fold(0, |a, x| a ^ x)
}

fn bcd(digits: &str, bytes: usize) -> Vec<u8> {
    let padded = format!("{digits:0>width$}", width = bytes * 2);
    let d = padded.as_bytes();
    (0..bytes)
        .map(|i| ((d[2 * i] - b'0') << 4) | (d[2 * i + 1] - b'0'))
        .collect()
}

fn from_bcd(b: &[u8]) -> Option<String> {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let (hi, lo) = (x >> 4, x & 0x0F);
        if hi > 9 || lo > 9 {
            return None;
        }
        s.push((b'0' + hi) as char);
        s.push((b'0' + lo) as char);
    }
    Some(s)
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// A frame from the bytes between its two flags (escaped).
pub fn decode(escaped: &[u8]) -> Result<Frame, FrameError> {
    let raw = unescape(escaped)?;
    if raw.len() < 13 {
        return Err(FrameError::Short(raw.len()));
    }
    let (content, sum) = raw.split_at(raw.len() - 1);
    let want = xor(content);
    if sum[0] != want {
        return Err(FrameError::Checksum { got: sum[0], want });
    }
    let msg_id = u16_at(content, 0);
    let props = u16_at(content, 2);
    let body_len = (props & 0x03FF) as usize;
    let encryption = ((props >> 10) & 0x07) as u8;
    let sub = props & 0x2000 != 0;
    let (edition, phone_at, phone_len) = if props & 0x4000 != 0 {
        (
            Edition::V2019 {
                protocol: content[4],
            },
            5,
            10,
        )
    } else {
        (Edition::V2013, 4, 6)
    };
    let mut at = phone_at + phone_len + 2;
    if sub {
        at += 4;
    }
    if content.len() < at {
        return Err(FrameError::Short(raw.len()));
    }
    let digits = from_bcd(&content[phone_at..phone_at + phone_len]).ok_or(FrameError::Phone)?;
    let phone = digits.trim_start_matches('0').to_string();
    let serial = u16_at(content, phone_at + phone_len);
    let package = sub.then(|| {
        (
            u16_at(content, phone_at + phone_len + 2),
            u16_at(content, phone_at + phone_len + 4),
        )
    });
    if content.len() - at != body_len {
        return Err(FrameError::Length {
            said: body_len,
            held: content.len() - at,
        });
    }
    Ok(Frame {
        header: Header {
            msg_id,
            edition,
            encryption,
            phone,
            serial,
            package,
        },
        body: content[at..].to_vec(),
    })
}

/// A whole frame, flags included, for `header` and `body` (at most 1023 bytes).
pub fn encode(h: &Header, body: &[u8]) -> Vec<u8> {
    assert!(body.len() <= 0x03FF, "a body is at most 1023 bytes");
    let mut props = body.len() as u16 | ((h.encryption as u16 & 0x07) << 10);
    if h.package.is_some() {
        props |= 0x2000;
    }
    let mut raw = Vec::with_capacity(body.len() + 24);
    raw.extend_from_slice(&h.msg_id.to_be_bytes());
    match h.edition {
        Edition::V2019 { protocol } => {
            props |= 0x4000;
            raw.extend_from_slice(&props.to_be_bytes());
            raw.push(protocol);
            raw.extend(bcd(&h.phone, 10));
        }
        Edition::V2013 => {
            raw.extend_from_slice(&props.to_be_bytes());
            raw.extend(bcd(&h.phone, 6));
        }
    }
    raw.extend_from_slice(&h.serial.to_be_bytes());
    if let Some((n, i)) = h.package {
        raw.extend_from_slice(&n.to_be_bytes());
        raw.extend_from_slice(&i.to_be_bytes());
    }
    raw.extend_from_slice(body);
    raw.push(xor(&raw));
    let mut out = vec![FLAG];
    out.extend(escape(&raw));
    out.push(FLAG);
    out
}

/// Cuts a byte stream into frames: bytes before a first flag are dropped, an empty pair of
/// flags is no frame (a flag may both end one frame and start the next), a frame longer than
/// [`MAX_FRAME`] is an error and the stream resumes at the next flag.
#[derive(Default)]
pub struct Splitter {
    buf: Vec<u8>,
    inside: bool,
    overlong: bool,
}

impl Splitter {
    /// Feeds bytes; each complete frame (escaped, without flags) or error is handed to `out`.
    pub fn feed(&mut self, bytes: &[u8], mut out: impl FnMut(Result<&[u8], FrameError>)) {
        for &b in bytes {
            if b == FLAG {
                if self.inside && !self.buf.is_empty() {
                    if self.overlong {
                        out(Err(FrameError::TooLong));
                    } else {
                        out(Ok(&self.buf));
                    }
                }
                self.buf.clear();
                self.overlong = false;
                self.inside = true;
            } else if self.inside {
                if self.buf.len() < MAX_FRAME {
                    self.buf.push(b);
                } else {
                    self.overlong = true;
                }
            }
        }
    }
}

/// Why a body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("message {msg_id:#06x}: body of {len} bytes, at least {need} expected")]
    Short {
        msg_id: u16,
        len: usize,
        need: usize,
    },
    #[error("message {msg_id:#06x}: {what}")]
    Bad { msg_id: u16, what: String },
}

/// A location report (0x0200 body).
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub alarm: u32,
    pub status: u32,
    /// Degrees, south and west negative (status bits 2 and 3).
    pub lat: f64,
    pub lon: f64,
    pub altitude_m: u16,
    /// km/h (sent in tenths).
    pub speed_kmh: f64,
    /// 0-359, clockwise from north.
    pub heading: u16,
    /// The fix's time, UTC ms (sent as BCD `YYMMDDhhmmss` in GMT+8).
    pub time_ms: i64,
    /// Additional items: (id, value).
    pub extra: Vec<(u8, Vec<u8>)>,
}

impl Location {
    pub const ALARM_EMERGENCY: u32 = 1;
    pub const ALARM_OVERSPEED: u32 = 1 << 1;
    pub const ALARM_FATIGUE: u32 = 1 << 2;
    pub const STATUS_ACC_ON: u32 = 1;
    pub const STATUS_FIXED: u32 = 1 << 1;
    pub const STATUS_SOUTH: u32 = 1 << 2;
    pub const STATUS_WEST: u32 = 1 << 3;
}

/// `YYMMDDhhmmss` in BCD, GMT+8, as UTC ms.
pub fn bcd_time_ms(b: &[u8]) -> Option<i64> {
    let s = from_bcd(b.get(..6)?)?;
    let n = |i: usize| s[i..i + 2].parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (2000 + n(0)?, n(2)?, n(4)?, n(6)?, n(8)?, n(10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = crate::time::days_from_civil(y, mo, d);
    Some(((days * 24 + h) * 3600 + mi * 60 + se - 8 * 3600) * 1000)
}

/// UTC ms as BCD `YYMMDDhhmmss` in GMT+8.
pub fn bcd_time(ms: i64) -> [u8; 6] {
    // `YYYY-MM-DDThh:mm:ss.fffZ` of the local time, its digits from the year's third.
    let local = crate::time::format_rfc3339_ms(ms + 8 * 3_600_000);
    let digits: String = local[2..19].chars().filter(char::is_ascii_digit).collect();
    let v = bcd(&digits, 6);
    [v[0], v[1], v[2], v[3], v[4], v[5]]
}

/// A 0x0200 body.
pub fn parse_location(b: &[u8]) -> Result<Location, BodyError> {
    if b.len() < 28 {
        return Err(BodyError::Short {
            msg_id: LOCATION,
            len: b.len(),
            need: 28,
        });
    }
    let status = u32_at(b, 4);
    let sign = |bit: u32| if status & bit != 0 { -1.0 } else { 1.0 };
    let time_ms = bcd_time_ms(&b[22..28]).ok_or_else(|| BodyError::Bad {
        msg_id: LOCATION,
        what: format!("time {:02x?} is not a BCD date and time", &b[22..28]),
    })?;
    let mut extra = Vec::new();
    let mut i = 28;
    while i + 2 <= b.len() {
        let (id, len) = (b[i], b[i + 1] as usize);
        if i + 2 + len > b.len() {
            return Err(BodyError::Bad {
                msg_id: LOCATION,
                what: format!("additional item {id:#04x} of {len} bytes runs past the body"),
            });
        }
        extra.push((id, b[i + 2..i + 2 + len].to_vec()));
        i += 2 + len;
    }
    Ok(Location {
        alarm: u32_at(b, 0),
        status,
        lat: sign(Location::STATUS_SOUTH) * u32_at(b, 8) as f64 / 1e6,
        lon: sign(Location::STATUS_WEST) * u32_at(b, 12) as f64 / 1e6,
        altitude_m: u16_at(b, 16),
        speed_kmh: u16_at(b, 18) as f64 / 10.0,
        heading: u16_at(b, 20),
        time_ms,
        extra,
    })
}

/// A 0x0704 body: the batch type (0 regular, 1 reports kept while out of coverage) and its
/// locations.
pub fn parse_batch(b: &[u8]) -> Result<(u8, Vec<Location>), BodyError> {
    if b.len() < 3 {
        return Err(BodyError::Short {
            msg_id: LOCATION_BATCH,
            len: b.len(),
            need: 3,
        });
    }
    let (n, kind) = (u16_at(b, 0) as usize, b[2]);
    let mut out = Vec::with_capacity(n);
    let mut i = 3;
    for k in 0..n {
        if i + 2 > b.len() {
            return Err(BodyError::Bad {
                msg_id: LOCATION_BATCH,
                what: format!("{n} items announced, the body ends at item {k}"),
            });
        }
        let len = u16_at(b, i) as usize;
        let item = b.get(i + 2..i + 2 + len).ok_or_else(|| BodyError::Bad {
            msg_id: LOCATION_BATCH,
            what: format!("item {k} of {len} bytes runs past the body"),
        })?;
        out.push(parse_location(item)?);
        i += 2 + len;
    }
    Ok((kind, out))
}

/// A terminal's registration (0x0100 body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub province: u16,
    pub city: u16,
    pub manufacturer: String,
    pub model: String,
    pub terminal_id: String,
    /// JT/T 415 colour code (1 blue, 2 yellow, 3 black, 4 white, 9 other; 0 unplated).
    pub plate_colour: u8,
    /// The plate as the terminal states it (GBK on the wire).
    pub plate: String,
}

fn field(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// A 0x0100 body of `edition`; the plate is decoded by `gbk` (GBK bytes to text).
pub fn parse_register(
    b: &[u8],
    edition: Edition,
    gbk: impl Fn(&[u8]) -> String,
) -> Result<Register, BodyError> {
    let (m, md, t) = match edition {
        Edition::V2019 { .. } => (11, 30, 30),
        Edition::V2013 => (5, 20, 7),
    };
    let need = 4 + m + md + t + 1;
    if b.len() < need {
        return Err(BodyError::Short {
            msg_id: REGISTER,
            len: b.len(),
            need,
        });
    }
    Ok(Register {
        province: u16_at(b, 0),
        city: u16_at(b, 2),
        manufacturer: field(&b[4..4 + m]),
        model: field(&b[4 + m..4 + m + md]),
        terminal_id: field(&b[4 + m + md..4 + m + md + t]),
        plate_colour: b[need - 1],
        plate: gbk(&b[need..]).trim_end_matches('\0').to_string(),
    })
}

/// The authentication code of a 0x0102 body.
pub fn parse_auth(b: &[u8], edition: Edition) -> Result<String, BodyError> {
    match edition {
        Edition::V2013 => Ok(field(b)),
        Edition::V2019 { .. } => {
            let n = *b.first().ok_or(BodyError::Short {
                msg_id: AUTHENTICATE,
                len: 0,
                need: 1,
            })? as usize;
            let code = b.get(1..1 + n).ok_or(BodyError::Short {
                msg_id: AUTHENTICATE,
                len: b.len(),
                need: 1 + n,
            })?;
            Ok(field(code))
        }
    }
}

/// A platform general reply (0x8001) body.
pub fn general_reply(serial: u16, msg_id: u16, result: u8) -> Vec<u8> {
    let mut b = serial.to_be_bytes().to_vec();
    b.extend_from_slice(&msg_id.to_be_bytes());
    b.push(result);
    b
}

/// A registration reply (0x8100) body: result 0 with the authentication code.
pub fn register_reply(serial: u16, result: u8, code: &str) -> Vec<u8> {
    let mut b = serial.to_be_bytes().to_vec();
    b.push(result);
    if result == 0 {
        b.extend_from_slice(code.as_bytes());
    }
    b
}

/// Sub-packages put back together: a message's packages share its id and count and have
/// consecutive serial numbers from its first. At most `max_open` messages wait at once (the
/// oldest dropped beyond it), each at most `max_age_ms` after its first package.
/// A message waiting for its packages: (phone, message id, count, first serial).
type PackageKey = (String, u16, u16, u16);
/// When its first package came, and the packages so far.
type Packages = (i64, Vec<Option<Vec<u8>>>);

pub struct Reassembler {
    open: HashMap<PackageKey, Packages>,
    pub max_open: usize,
    pub max_age_ms: i64,
    pub dropped: u64,
}

impl Default for Reassembler {
    fn default() -> Self {
        Reassembler {
            open: HashMap::new(),
            max_open: 64,
            max_age_ms: 60_000,
            dropped: 0,
        }
    }
}

impl Reassembler {
    /// Takes a frame; its whole body once the message is complete (a frame that is no
    /// sub-package is complete at once).
    pub fn take(&mut self, f: Frame, now_ms: i64) -> Option<Frame> {
        let Some((count, index)) = f.header.package else {
            return Some(f);
        };
        if count == 0 || index == 0 || index > count {
            self.dropped += 1;
            return None;
        }
        let before = self.open.len();
        self.open.retain(|_, (t, _)| now_ms - *t <= self.max_age_ms);
        self.dropped += (before - self.open.len()) as u64;
        let first = f.header.serial.wrapping_sub(index - 1);
        let key = (f.header.phone.clone(), f.header.msg_id, count, first);
        if !self.open.contains_key(&key) && self.open.len() >= self.max_open {
            if let Some(oldest) = self
                .open
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
            {
                self.open.remove(&oldest);
                self.dropped += 1;
            }
        }
        let entry = self
            .open
            .entry(key.clone())
            .or_insert_with(|| (now_ms, vec![None; count as usize]));
        entry.1[index as usize - 1] = Some(f.body);
        if entry.1.iter().any(Option::is_none) {
            return None;
        }
        let (_, parts) = self.open.remove(&key)?;
        let mut header = f.header;
        header.serial = first;
        header.package = None;
        Some(Frame {
            header,
            body: parts.into_iter().flatten().flatten().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(msg_id: u16, edition: Edition, serial: u16) -> Header {
        Header {
            msg_id,
            edition,
            encryption: 0,
            phone: "13912345678".into(),
            serial,
            package: None,
        }
    }

    #[test]
    fn escape_and_checksum() {
        assert_eq!(
            escape(&[0x30, 0x7E, 0x08, 0x7D, 0x55]),
            [0x30, 0x7D, 0x02, 0x08, 0x7D, 0x01, 0x55]
        );
        assert_eq!(
            unescape(&[0x30, 0x7D, 0x02, 0x08, 0x7D, 0x01, 0x55]).unwrap(),
            [0x30, 0x7E, 0x08, 0x7D, 0x55]
        );
        assert_eq!(unescape(&[0x7D, 0x03]), Err(FrameError::Escape));
        assert_eq!(unescape(&[0x7D]), Err(FrameError::Escape));
        // A body full of flag bytes survives the round trip, in both editions.
        for ed in [Edition::V2013, Edition::V2019 { protocol: 1 }] {
            let body = vec![0x7E, 0x7D, 0x00, 0x7E];
            let bytes = encode(&h(LOCATION, ed, 7), &body);
            assert_eq!(bytes.iter().filter(|b| **b == FLAG).count(), 2);
            let f = decode(&bytes[1..bytes.len() - 1]).unwrap();
            assert_eq!((f.header.clone(), f.body), (h(LOCATION, ed, 7), body));
        }
        // A flipped bit fails the checksum; a body shorter than its header says, the length.
        let mut bytes = encode(&h(HEARTBEAT, Edition::V2013, 1), &[]);
        bytes[3] ^= 0x01;
        assert!(matches!(
            decode(&bytes[1..bytes.len() - 1]),
            Err(FrameError::Checksum { .. })
        ));
        let mut raw = unescape(&encode(&h(LOCATION, Edition::V2013, 1), &[1, 2, 3])[1..]).unwrap();
        raw.pop(); // the end flag
        raw.remove(raw.len() - 2); // a body byte; fix the checksum
        let n = raw.len();
        raw[n - 1] = xor(&raw[..n - 1]);
        assert_eq!(
            decode(&escape(&raw)),
            Err(FrameError::Length { said: 3, held: 2 })
        );
    }

    /// The 2013 header: a frame built by hand from the standard's layout.
    #[test]
    fn a_2013_heartbeat_by_hand() {
        let mut raw = vec![
            0x00, 0x02, 0x00, 0x00, 0x01, 0x39, 0x12, 0x34, 0x56, 0x78, 0x00, 0x2A,
        ];
        raw.push(xor(&raw));
        let f = decode(&escape(&raw)).unwrap();
        assert_eq!(f.header.msg_id, HEARTBEAT);
        assert_eq!(f.header.edition, Edition::V2013);
        assert_eq!(f.header.phone, "13912345678");
        assert_eq!(f.header.serial, 42);
        assert!(f.body.is_empty());
    }

    #[test]
    fn location_and_batch_bodies() {
        let t = 1_795_939_200_000; // 2026-11-29 16:00:00 UTC+8
        assert_eq!(bcd_time(t), [0x26, 0x11, 0x29, 0x16, 0x00, 0x00]);
        assert_eq!(bcd_time_ms(&bcd_time(t)), Some(t));
        assert_eq!(bcd_time_ms(&[0x26, 0x13, 0x01, 0, 0, 0]), None, "month 13");
        let mut b = Vec::new();
        b.extend_from_slice(&Location::ALARM_OVERSPEED.to_be_bytes());
        b.extend_from_slice(&(Location::STATUS_ACC_ON | Location::STATUS_FIXED).to_be_bytes());
        b.extend_from_slice(&31_260_000u32.to_be_bytes());
        b.extend_from_slice(&120_630_000u32.to_be_bytes());
        b.extend_from_slice(&12u16.to_be_bytes());
        b.extend_from_slice(&853u16.to_be_bytes());
        b.extend_from_slice(&270u16.to_be_bytes());
        b.extend_from_slice(&bcd_time(t));
        b.extend_from_slice(&[0x01, 4, 0, 0, 0x30, 0x39]); // mileage 12345 (1/10 km)
        let l = parse_location(&b).unwrap();
        assert_eq!(
            (l.lat, l.lon, l.speed_kmh, l.heading, l.altitude_m),
            (31.26, 120.63, 85.3, 270, 12)
        );
        assert_eq!((l.alarm, l.time_ms), (Location::ALARM_OVERSPEED, t));
        assert_eq!(l.extra, vec![(0x01, vec![0, 0, 0x30, 0x39])]);
        assert!(parse_location(&b[..27]).is_err());
        let mut cut = b.clone();
        cut.truncate(b.len() - 1);
        assert!(
            parse_location(&cut).is_err(),
            "an additional item cut short"
        );
        let mut batch = vec![0, 2, 1];
        for _ in 0..2 {
            batch.extend_from_slice(&(b.len() as u16).to_be_bytes());
            batch.extend_from_slice(&b);
        }
        let (kind, ls) = parse_batch(&batch).unwrap();
        assert_eq!((kind, ls.len()), (1, 2));
        batch[1] = 3;
        assert!(parse_batch(&batch).is_err(), "three announced, two sent");
    }

    #[test]
    fn register_and_auth_bodies() {
        let gbk = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut b = vec![0x00, 0x20, 0x01, 0x40];
        b.extend(b"MAKER\0\0\0\0\0\0");
        b.extend([b'M'; 30]);
        b.extend([b'T'; 30]);
        b.push(2);
        b.extend("苏E12345".as_bytes());
        let r = parse_register(&b, Edition::V2019 { protocol: 1 }, gbk).unwrap();
        assert_eq!(
            (
                r.province,
                r.city,
                r.manufacturer.as_str(),
                r.plate_colour,
                r.plate.as_str()
            ),
            (32, 320, "MAKER", 2, "苏E12345")
        );
        assert!(parse_register(&b[..40], Edition::V2019 { protocol: 1 }, gbk).is_err());
        assert_eq!(parse_auth(b"abc123", Edition::V2013).unwrap(), "abc123");
        let mut a = vec![6];
        a.extend(b"abc123");
        a.extend([b'8'; 15]);
        a.extend([b'1'; 20]);
        assert_eq!(
            parse_auth(&a, Edition::V2019 { protocol: 1 }).unwrap(),
            "abc123"
        );
        assert!(parse_auth(&[9, b'a'], Edition::V2019 { protocol: 1 }).is_err());
    }

    #[test]
    fn frames_from_a_stream_and_sub_packages() {
        let a = encode(&h(HEARTBEAT, Edition::V2013, 1), &[]);
        let b = encode(&h(LOCATION, Edition::V2013, 2), &[0x7E; 3]);
        let mut stream = b"garbage".to_vec();
        stream.extend(&a);
        stream.extend(&b);
        stream.extend(&[FLAG, FLAG]);
        let mut s = Splitter::default();
        let mut got = Vec::new();
        // Fed a byte at a time, as a slow link delivers it.
        for x in &stream {
            s.feed(std::slice::from_ref(x), |r| {
                got.push(r.map(|f| decode(f).unwrap().header.serial))
            });
        }
        assert_eq!(got, vec![Ok(1), Ok(2)]);
        let mut long = vec![FLAG];
        long.extend(vec![0x11; MAX_FRAME + 10]);
        long.push(FLAG);
        long.extend(&a);
        let mut got = Vec::new();
        s.feed(&long, |r| got.push(r.map(|f| f.len())));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], Err(FrameError::TooLong));
        assert!(got[1].is_ok());

        // Three packages of one message, out of order.
        let mut r = Reassembler::default();
        let part = |i: u16, body: &[u8]| {
            let mut hd = h(LOCATION_BATCH, Edition::V2019 { protocol: 1 }, 100 + i - 1);
            hd.package = Some((3, i));
            decode(encode(&hd, body)[1..].split_last().unwrap().1).unwrap()
        };
        assert!(r.take(part(2, b"bb"), 0).is_none());
        assert!(r.take(part(3, b"c"), 0).is_none());
        let whole = r.take(part(1, b"aa"), 0).unwrap();
        assert_eq!(whole.body, b"aabbc");
        assert_eq!((whole.header.serial, whole.header.package), (100, None));
        // A message never completed is dropped after max_age_ms.
        assert!(r.take(part(1, b"aa"), 0).is_none());
        assert!(r.take(part(2, b"bb"), 120_000).is_none());
        assert_eq!(r.dropped, 1);
    }
}
