//! Evidence pictures: a ring buffer of recent full-resolution frames (so that the picture of
//! the moment a person left the kerb exists when the violation is confirmed later), and JPEG
//! rendering with an overlay: a banner above the frame with the time to the millisecond,
//! checkpoint and camera ids and the signal state, the zones outlined and the person boxed.

use std::collections::VecDeque;
use std::sync::Arc;

use protocol::BBox;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::frame::Frame;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EvidenceConfig {
    /// Memory the ring buffer of recent frames may use, MiB.
    #[serde(default = "d_ring")]
    pub ring_buffer_mb: usize,
    /// JPEG quality, 1..100.
    #[serde(default = "d_quality")]
    pub jpeg_quality: u8,
    /// Local time shown on the pictures: UTC plus this many minutes (480 for China).
    #[serde(default = "d_offset")]
    pub utc_offset_minutes: i32,
}

fn d_ring() -> usize {
    256
}
fn d_quality() -> u8 {
    85
}
fn d_offset() -> i32 {
    480
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            ring_buffer_mb: d_ring(),
            jpeg_quality: d_quality(),
            utc_offset_minutes: d_offset(),
        }
    }
}

/// Recent frames, oldest evicted first once their bytes exceed the cap.
pub struct FrameRing {
    cap_bytes: usize,
    bytes: usize,
    frames: VecDeque<Frame>,
}

impl FrameRing {
    pub fn new(cap_bytes: usize) -> Self {
        FrameRing {
            cap_bytes,
            bytes: 0,
            frames: VecDeque::new(),
        }
    }

    pub fn push(&mut self, f: Frame) {
        self.bytes += f.rgb.len();
        self.frames.push_back(f);
        while self.bytes > self.cap_bytes && self.frames.len() > 1 {
            let old = self.frames.pop_front().expect("non-empty");
            self.bytes -= old.rgb.len();
        }
    }

    /// The frame with `seq`, or the oldest later one still held.
    pub fn get_or_after(&self, seq: u64) -> Option<&Frame> {
        self.frames.iter().find(|f| f.seq >= seq)
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// One rendered picture.
#[derive(Debug, Clone)]
pub struct Picture {
    pub role: String,
    pub jpeg: Arc<Vec<u8>>,
    pub sha256: String,
}

/// An RGB canvas to draw on.
pub struct Canvas {
    pub w: usize,
    pub h: usize,
    pub rgb: Vec<u8>,
}

impl Canvas {
    pub fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            rgb: vec![0; w * h * 3],
        }
    }

    fn put(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            let i = (y as usize * self.w + x as usize) * 3;
            self.rgb[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Copies `src` (packed RGB, `sw` x `sh`) region `r` scaled to `dw` x `dh` at (`dx`, `dy`).
    #[allow(clippy::too_many_arguments)]
    pub fn blit_scaled(
        &mut self,
        src: &[u8],
        sw: usize,
        sh: usize,
        r: (usize, usize, usize, usize),
        dx: usize,
        dy: usize,
        dw: usize,
        dh: usize,
    ) {
        let (rx, ry, rw, rh) = r;
        for y in 0..dh {
            let sy = (ry + y * rh / dh.max(1)).min(sh - 1);
            for x in 0..dw {
                let sx = (rx + x * rw / dw.max(1)).min(sw - 1);
                let si = (sy * sw + sx) * 3;
                let (tx, ty) = (dx + x, dy + y);
                if tx < self.w && ty < self.h {
                    let di = (ty * self.w + tx) * 3;
                    self.rgb[di..di + 3].copy_from_slice(&src[si..si + 3]);
                }
            }
        }
    }

    pub fn line(&mut self, (x0, y0): (f32, f32), (x1, y1): (f32, f32), c: [u8; 3], width: i64) {
        let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as i64;
        for s in 0..=steps {
            let t = s as f32 / steps as f32;
            let (x, y) = ((x0 + (x1 - x0) * t) as i64, (y0 + (y1 - y0) * t) as i64);
            for dy in 0..width {
                for dx in 0..width {
                    self.put(x + dx - width / 2, y + dy - width / 2, c);
                }
            }
        }
    }

    pub fn polygon(&mut self, pts: &[(f32, f32)], dy: f32, c: [u8; 3]) {
        for i in 0..pts.len() {
            let a = pts[i];
            let b = pts[(i + 1) % pts.len()];
            self.line((a.0, a.1 + dy), (b.0, b.1 + dy), c, 2);
        }
    }

    pub fn rect(&mut self, b: &BBox, dy: f32, c: [u8; 3]) {
        let p = [(b.x1, b.y1), (b.x2, b.y1), (b.x2, b.y2), (b.x1, b.y2)];
        self.polygon(&p, dy, c);
    }

    /// Draws ASCII text (upper-cased) in a 5x7 font scaled by `scale`; clipped at the edges.
    pub fn text(&mut self, x: usize, y: usize, s: &str, scale: usize, c: [u8; 3]) {
        let mut cx = x as i64;
        for ch in s.chars() {
            let g = glyph(ch.to_ascii_uppercase());
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        for sy in 0..scale {
                            for sx in 0..scale {
                                self.put(
                                    cx + (col * scale + sx) as i64,
                                    (y + row * scale + sy) as i64,
                                    c,
                                );
                            }
                        }
                    }
                }
            }
            cx += (6 * scale) as i64;
        }
    }

    pub fn jpeg(&self, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
        enc.encode(
            &self.rgb,
            self.w as u16,
            self.h as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .expect("encoding to memory cannot fail for sizes below 65536");
        out
    }
}

/// Rows of a 5x7 glyph, most significant of the low 5 bits leftmost. Unknown characters
/// render as a box.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ' ' => [0; 7],
        ':' => [0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => [0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => [0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '/' => [0x00, 0x01, 0x02, 0x04, 0x08, 0x10, 0x00],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '+' => [0x00, 0x04, 0x04, 0x1F, 0x04, 0x04, 0x00],
        '=' => [0x00, 0x00, 0x1F, 0x00, 0x1F, 0x00, 0x00],
        ',' => [0x00, 0x00, 0x00, 0x00, 0x0C, 0x04, 0x08],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

/// A zone outline to draw: corners in pixels and an RGB colour.
pub type Shape = (Vec<(f32, f32)>, [u8; 3]);

/// Text lines of the banner and the shapes to draw.
pub struct Overlay<'a> {
    pub lines: Vec<String>,
    pub zones: &'a [Shape],
    pub person: BBox,
}

const TEXT_SCALE: usize = 2;
const LINE_H: usize = 8 * TEXT_SCALE + 4;

/// The whole frame with a banner above it.
pub fn render_scene(frame: &Frame, ov: &Overlay, quality: u8) -> Vec<u8> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let banner = ov.lines.len() * LINE_H + 6;
    let mut c = Canvas::new(w, h + banner);
    c.blit_scaled(&frame.rgb, w, h, (0, 0, w, h), 0, banner, w, h);
    for (pts, colour) in ov.zones {
        c.polygon(pts, banner as f32, *colour);
    }
    c.rect(&ov.person, banner as f32, [255, 40, 40]);
    for (i, l) in ov.lines.iter().enumerate() {
        c.text(6, 4 + i * LINE_H, l, TEXT_SCALE, [255, 255, 255]);
    }
    c.jpeg(quality)
}

/// A close-up of the person: the box padded by a quarter, scaled to 360 px high, with the
/// banner above it (text at half size so it fits).
pub fn render_closeup(frame: &Frame, ov: &Overlay, quality: u8) -> Vec<u8> {
    let (fw, fh) = (frame.width as f32, frame.height as f32);
    let b = ov.person;
    let (pw, ph) = (b.width() * 0.25 + 4.0, b.height() * 0.25 + 4.0);
    let x1 = (b.x1 - pw).clamp(0.0, fw - 1.0) as usize;
    let y1 = (b.y1 - ph).clamp(0.0, fh - 1.0) as usize;
    let x2 = ((b.x2 + pw).clamp(1.0, fw) as usize).max(x1 + 1);
    let y2 = ((b.y2 + ph).clamp(1.0, fh) as usize).max(y1 + 1);
    let (rw, rh) = (x2 - x1, y2 - y1);
    let dh = 360usize;
    let dw = (rw * dh / rh).max(1);
    let text_w = ov.lines.iter().map(|l| l.len()).max().unwrap_or(0) * 6 + 12;
    let w = dw.max(text_w);
    let banner = ov.lines.len() * 12 + 6;
    let mut c = Canvas::new(w, dh + banner);
    c.blit_scaled(
        &frame.rgb,
        frame.width as usize,
        frame.height as usize,
        (x1, y1, rw, rh),
        (w - dw) / 2,
        banner,
        dw,
        dh,
    );
    for (i, l) in ov.lines.iter().enumerate() {
        c.text(6, 4 + i * 12, l, 1, [255, 255, 255]);
    }
    c.jpeg(quality)
}

pub fn picture(role: &str, jpeg: Vec<u8>) -> Picture {
    let sha256 = hex::encode(Sha256::digest(&jpeg));
    Picture {
        role: role.to_string(),
        jpeg: Arc::new(jpeg),
        sha256,
    }
}

/// `YYYY-MM-DD hh:mm:ss.fff (UTC+8)` for a UTC time shown at `offset_min` from UTC.
pub fn local_time_label(t_ms: i64, offset_min: i32) -> String {
    let s = protocol::time::format_rfc3339_ms(t_ms + offset_min as i64 * 60_000);
    let sign = if offset_min >= 0 { '+' } else { '-' };
    let (h, m) = (offset_min.abs() / 60, offset_min.abs() % 60);
    let zone = if m == 0 {
        format!("UTC{sign}{h}")
    } else {
        format!("UTC{sign}{h}:{m:02}")
    };
    format!("{} ({zone})", s.trim_end_matches('Z').replace('T', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64) -> Frame {
        Frame {
            seq,
            time_ms: seq as i64 * 100,
            width: 64,
            height: 48,
            rgb: Arc::new(vec![128; 64 * 48 * 3]),
        }
    }

    #[test]
    fn ring_respects_its_memory_cap() {
        let per = 64 * 48 * 3;
        let mut r = FrameRing::new(per * 5 + 10);
        for s in 0..20 {
            r.push(frame(s));
        }
        assert_eq!(r.len(), 5);
        assert!(r.bytes() <= per * 5 + 10);
        assert_eq!(r.get_or_after(0).unwrap().seq, 15);
        assert_eq!(r.get_or_after(17).unwrap().seq, 17);
        assert!(r.get_or_after(25).is_none());
    }

    #[test]
    fn renders_decodable_jpegs_with_banner() {
        let f = frame(3);
        let zones = vec![(vec![(5.0, 5.0), (30.0, 5.0), (30.0, 30.0)], [255, 255, 0])];
        let ov = Overlay {
            lines: vec![
                "2026-11-29 08:00:00.300 (UTC+8)".into(),
                "SIGNAL RED".into(),
            ],
            zones: &zones,
            person: BBox::new(10.0, 10.0, 20.0, 40.0),
        };
        let j = render_scene(&f, &ov, 80);
        assert_eq!(&j[..2], &[0xFF, 0xD8], "JPEG SOI");
        assert_eq!(&j[j.len() - 2..], &[0xFF, 0xD9], "JPEG EOI");
        let c = render_closeup(&f, &ov, 80);
        assert_eq!(&c[..2], &[0xFF, 0xD8]);
        let p = picture("stage1", j);
        assert_eq!(p.sha256.len(), 64);
    }

    #[test]
    fn time_label() {
        assert_eq!(
            local_time_label(1_795_939_200_500, 480),
            "2026-11-29 16:00:00.500 (UTC+8)"
        );
    }
}
