//! Evidence pictures: a ring buffer of recent full-resolution frames (so that the picture of
//! the moment a person left the kerb exists when the violation is confirmed later), and JPEG
//! rendering with an overlay: a banner above the frame with the time to the millisecond,
//! checkpoint and camera ids and the signal state, the zones outlined and the person boxed.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ab_glyph::Font;
use image::{ImageBuffer, Rgb, RgbImage};
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
    /// Or the time zone the pictures show (an IANA name, e.g. `Asia/Shanghai`, the
    /// aggregator's `[display] time_zone`): when set it wins over `utc_offset_minutes`, and
    /// follows the zone's rules (daylight saving where it has any).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// The CJK font the banners are drawn in; by default `TRAFFIC_CJK_FONT` or
    /// `/usr/share/fonts/truetype/wqy/wqy-microhei.ttc`.
    #[serde(default)]
    pub font: Option<PathBuf>,
    /// The offence each kind of violation is named as on its pictures: the code and name
    /// of the national violation-code table (GA 408.1) in force where the camera stands.
    #[serde(default = "d_offences")]
    pub offences: BTreeMap<String, Offence>,
    /// The video clip kept with each violation.
    #[serde(default)]
    pub clip: ClipConfig,
}

/// A violation's clip: the frames of the ring buffer from `before_ms` before the person left
/// the kerb to `after_ms` after the violation was confirmed, as H.264 in MP4.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    #[serde(default = "d_true")]
    pub enabled: bool,
    #[serde(default = "d_clip_before")]
    pub before_ms: i64,
    /// The event is sent once this much video after the confirmation is held (or at the
    /// third picture, whichever is later).
    #[serde(default = "d_clip_after")]
    pub after_ms: i64,
    /// At most this many frames a second are kept in the clip.
    #[serde(default = "d_clip_fps")]
    pub fps: f64,
    /// Wider frames are scaled down to this width.
    #[serde(default = "d_clip_width")]
    pub max_width: u32,
    /// The GStreamer H.264 encoder: by default `x264enc`, else `openh264enc`; `nvh264enc`
    /// on a box with an NVIDIA encoder.
    #[serde(default)]
    pub encoder: Option<String>,
}

fn d_true() -> bool {
    true
}
fn d_clip_before() -> i64 {
    2000
}
fn d_clip_after() -> i64 {
    2000
}
fn d_clip_fps() -> f64 {
    10.0
}
fn d_clip_width() -> u32 {
    1280
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig {
            enabled: true,
            before_ms: d_clip_before(),
            after_ms: d_clip_after(),
            fps: d_clip_fps(),
            max_width: d_clip_width(),
            encoder: None,
        }
    }
}

pub use protocol::Offence;

fn d_ring() -> usize {
    256
}
fn d_quality() -> u8 {
    85
}
fn d_offset() -> i32 {
    480
}
fn d_offences() -> BTreeMap<String, Offence> {
    [(
        "pedestrian_red_light".to_string(),
        Offence {
            code: "3001".into(),
            name: "行人不按交通信号灯指示通行".into(),
        },
    )]
    .into()
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        EvidenceConfig {
            ring_buffer_mb: d_ring(),
            jpeg_quality: d_quality(),
            utc_offset_minutes: d_offset(),
            time_zone: None,
            font: None,
            offences: d_offences(),
            clip: ClipConfig::default(),
        }
    }
}

impl EvidenceConfig {
    /// The clock the pictures' banners show: the time zone if one is named (an unknown
    /// name is an error naming it), else the fixed offset.
    pub fn clock(&self) -> Result<BannerClock, String> {
        match &self.time_zone {
            Some(name) => jiff::tz::TimeZone::get(name)
                .map(BannerClock::Zone)
                .map_err(|_| format!("time_zone = '{name}' is not a time zone; name one as the IANA database does, e.g. Asia/Shanghai")),
            None => Ok(BannerClock::Fixed(self.utc_offset_minutes)),
        }
    }

    /// The banner font's file: `font`, else `TRAFFIC_CJK_FONT`, else Debian's WenQuanYi.
    pub fn font_path(&self) -> PathBuf {
        self.font
            .clone()
            .or_else(|| std::env::var_os("TRAFFIC_CJK_FONT").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_FONT))
    }

    pub fn load_font(&self) -> Result<BannerFont, String> {
        BannerFont::load(&self.font_path())
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

    /// The frames held from `from_ms` to `to_ms` (frame time, both included), oldest first.
    pub fn between(&self, from_ms: i64, to_ms: i64) -> Vec<Frame> {
        self.frames
            .iter()
            .filter(|f| f.time_ms >= from_ms && f.time_ms <= to_ms)
            .cloned()
            .collect()
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

/// The font banners are drawn in: a CJK font (the plate's province, the offence and every
/// label are Chinese). Loaded once per file and shared by every camera.
#[derive(Clone)]
pub struct BannerFont(pub ab_glyph::FontArc);

/// Where setup installs the CJK font (Debian's `fonts-wqy-microhei`).
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc";

impl BannerFont {
    /// The font at `path` (TrueType, OpenType or a collection, whose first face is used),
    /// loaded once per process.
    pub fn load(path: &Path) -> Result<BannerFont, String> {
        static FONTS: Mutex<Vec<(PathBuf, BannerFont)>> = Mutex::new(Vec::new());
        let mut fonts = FONTS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, f)) = fonts.iter().find(|(p, _)| p == path) {
            return Ok(f.clone());
        }
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "evidence font {}: {e}; install a CJK font (apt install fonts-wqy-microhei, which scripts/setup.sh does) or set evidence.font to one",
                path.display()
            )
        })?;
        let font = ab_glyph::FontVec::try_from_vec_and_index(bytes, 0).map_err(|e| {
            format!(
                "evidence font {}: not a TrueType or OpenType font ({e}); set evidence.font to a CJK font such as {DEFAULT_FONT}",
                path.display()
            )
        })?;
        let f = BannerFont(ab_glyph::FontArc::new(font));
        for probe in ['苏', '闯', '0', 'A'] {
            if f.0.glyph_id(probe).0 == 0 {
                return Err(format!(
                    "evidence font {} has no glyph for '{probe}': banners need a CJK font such as {DEFAULT_FONT} (fonts-wqy-microhei)",
                    path.display()
                ));
            }
        }
        fonts.push((path.to_path_buf(), f.clone()));
        Ok(f)
    }

    /// Width of `text` drawn `px` pixels high.
    pub fn width(&self, text: &str, px: f32) -> u32 {
        imageproc::drawing::text_size(ab_glyph::PxScale::from(px), &self.0, text).0
    }

    /// The characters of `text` the font cannot draw (they would show as empty boxes).
    pub fn missing(&self, text: &str) -> Vec<char> {
        text.chars()
            .filter(|c| !c.is_whitespace() && self.0.glyph_id(*c).0 == 0)
            .collect()
    }
}

/// Breaks the banner's lines to `max_w` pixels at `px` high: a line breaks between its
/// fields (separated by two spaces), and a field wider than the whole width between
/// characters, so that nothing is cut at the picture's edge.
pub fn wrap(font: &BannerFont, px: f32, lines: &[String], max_w: u32) -> Vec<String> {
    let mut out = Vec::new();
    for line in lines {
        let mut cur = String::new();
        for field in line.split("  ").map(str::trim).filter(|f| !f.is_empty()) {
            let joined = if cur.is_empty() {
                field.to_string()
            } else {
                format!("{cur}  {field}")
            };
            if font.width(&joined, px) <= max_w {
                cur = joined;
                continue;
            }
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            for ch in field.chars() {
                cur.push(ch);
                if font.width(&cur, px) > max_w && cur.chars().count() > 1 {
                    cur.pop();
                    out.push(std::mem::replace(&mut cur, ch.to_string()));
                }
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

/// A zone outline to draw: corners in pixels and an RGB colour.
pub type Shape = (Vec<(f32, f32)>, [u8; 3]);

/// Text lines of the banner (fields separated by two spaces), the shapes to draw and the
/// font.
pub struct Overlay<'a> {
    pub lines: Vec<String>,
    pub zones: &'a [Shape],
    pub person: BBox,
    pub font: &'a BannerFont,
}

/// Text height for a picture `w` pixels wide: 16 px at 640, growing with the width.
pub fn text_px(w: u32) -> f32 {
    (w as f32 / 40.0).clamp(16.0, 40.0)
}

/// The banner's lines laid out for a picture `w` wide: the lines, their height and the
/// margin.
pub struct BannerLayout {
    pub lines: Vec<String>,
    pub px: f32,
    pub line_h: u32,
    pub margin: u32,
}

impl BannerLayout {
    pub fn new(font: &BannerFont, lines: &[String], w: u32) -> BannerLayout {
        let px = text_px(w);
        let margin = (px * 0.4).ceil() as u32;
        BannerLayout {
            lines: wrap(font, px, lines, w.saturating_sub(2 * margin)),
            px,
            line_h: (px * 1.3).ceil() as u32,
            margin,
        }
    }

    pub fn height(&self) -> u32 {
        self.lines.len() as u32 * self.line_h + 2 * self.margin
    }

    fn draw(&self, img: &mut RgbImage, font: &BannerFont) {
        for (i, l) in self.lines.iter().enumerate() {
            imageproc::drawing::draw_text_mut(
                img,
                Rgb([255, 255, 255]),
                self.margin as i32,
                (self.margin + i as u32 * self.line_h) as i32,
                ab_glyph::PxScale::from(self.px),
                &font.0,
                l,
            );
        }
    }
}

/// The `w` x `h` region of the frame at (`x`, `y`), which lies inside it.
fn crop(frame: &Frame, x: u32, y: u32, w: u32, h: u32) -> RgbImage {
    let stride = frame.stride();
    let mut raw = Vec::with_capacity((w * h * 3) as usize);
    for row in y..y + h {
        let at = row as usize * stride + x as usize * 3;
        raw.extend_from_slice(&frame.rgb[at..at + w as usize * 3]);
    }
    RgbImage::from_raw(w, h, raw).expect("sized above")
}

fn outline(img: &mut RgbImage, pts: &[(f32, f32)], dy: f32, c: [u8; 3]) {
    // Two pixels wide: the outline and the outline one pixel down and right.
    for (ox, oy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
        for i in 0..pts.len() {
            let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
            imageproc::drawing::draw_line_segment_mut(
                img,
                (a.0 + ox, a.1 + dy + oy),
                (b.0 + ox, b.1 + dy + oy),
                Rgb(c),
            );
        }
    }
}

fn boxed(img: &mut RgbImage, b: &BBox, dy: f32, c: [u8; 3]) {
    outline(
        img,
        &[(b.x1, b.y1), (b.x2, b.y1), (b.x2, b.y2), (b.x1, b.y2)],
        dy,
        c,
    );
}

/// Encodes a picture as a baseline JPEG (`jpeg-encoder`: see the README's evidence section
/// for why it, and not the `image` crate's encoder, writes the bytes).
pub fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    jpeg_rgb(img.as_raw(), img.width(), img.height(), quality)
}

/// Encodes packed RGB pixels, `w` x `h`, as a baseline JPEG.
pub fn jpeg_rgb(rgb: &[u8], w: u32, h: u32, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = jpeg_encoder::Encoder::new(&mut out, quality.clamp(1, 100));
    enc.encode(
        rgb,
        w.min(65535) as u16,
        h.min(65535) as u16,
        jpeg_encoder::ColorType::Rgb,
    )
    .expect("encoding to memory cannot fail for sizes below 65536");
    out
}

/// `src` (packed RGB, `w` x `h`) scaled to `dw` x `dh` (bilinear).
pub fn scaled(src: &[u8], w: u32, h: u32, dw: u32, dh: u32) -> RgbImage {
    let view: ImageBuffer<Rgb<u8>, &[u8]> =
        ImageBuffer::from_raw(w, h, src).expect("width x height RGB pixels");
    image::imageops::resize(&view, dw, dh, image::imageops::FilterType::Triangle)
}

/// The whole frame with the banner above it, the zones outlined and the person boxed.
pub fn render_scene(frame: &Frame, ov: &Overlay, quality: u8) -> Vec<u8> {
    let (w, h) = (frame.width, frame.height);
    let layout = BannerLayout::new(ov.font, &ov.lines, w);
    let banner = layout.height();
    let mut raw = vec![0u8; (w * banner * 3) as usize];
    raw.extend_from_slice(&frame.rgb);
    let mut img = RgbImage::from_raw(w, h + banner, raw).expect("sized above");
    for (pts, colour) in ov.zones {
        outline(&mut img, pts, banner as f32, *colour);
    }
    boxed(&mut img, &ov.person, banner as f32, [255, 40, 40]);
    layout.draw(&mut img, ov.font);
    jpeg(&img, quality)
}

/// The narrowest close-up: the banner wraps to it.
pub const CLOSEUP_MIN_W: u32 = 480;

/// A close-up of the box: padded by a quarter, scaled to 360 px high (at least
/// `CLOSEUP_MIN_W` wide), with the banner above it.
pub fn render_closeup(frame: &Frame, ov: &Overlay, quality: u8) -> Vec<u8> {
    let (fw, fh) = (frame.width as f32, frame.height as f32);
    let b = ov.person;
    let (pw, ph) = (b.width() * 0.25 + 4.0, b.height() * 0.25 + 4.0);
    let x1 = (b.x1 - pw).clamp(0.0, fw - 1.0) as u32;
    let y1 = (b.y1 - ph).clamp(0.0, fh - 1.0) as u32;
    let x2 = ((b.x2 + pw).clamp(1.0, fw) as u32).max(x1 + 1);
    let y2 = ((b.y2 + ph).clamp(1.0, fh) as u32).max(y1 + 1);
    let (rw, rh) = (x2 - x1, y2 - y1);
    let dh = 360u32;
    let dw = (rw * dh / rh).clamp(1, 4 * dh);
    let w = dw.max(CLOSEUP_MIN_W);
    let layout = BannerLayout::new(ov.font, &ov.lines, w);
    let banner = layout.height();
    let region = crop(frame, x1, y1, rw, rh);
    let part = image::imageops::resize(&region, dw, dh, image::imageops::FilterType::Triangle);
    let mut img = RgbImage::new(w, dh + banner);
    image::imageops::replace(&mut img, &part, ((w - dw) / 2) as i64, banner as i64);
    layout.draw(&mut img, ov.font);
    jpeg(&img, quality)
}

pub fn picture(role: &str, jpeg: Vec<u8>) -> Picture {
    let sha256 = hex::encode(Sha256::digest(&jpeg));
    Picture {
        role: role.to_string(),
        jpeg: Arc::new(jpeg),
        sha256,
    }
}

/// The local time on the pictures: a fixed offset from UTC, or a time zone's.
#[derive(Debug, Clone)]
pub enum BannerClock {
    Fixed(i32),
    Zone(jiff::tz::TimeZone),
}

impl Default for BannerClock {
    fn default() -> Self {
        BannerClock::Fixed(d_offset())
    }
}

impl BannerClock {
    /// Minutes from UTC at `t_ms`.
    pub fn offset_min(&self, t_ms: i64) -> i32 {
        match self {
            BannerClock::Fixed(m) => *m,
            BannerClock::Zone(tz) => jiff::Timestamp::from_millisecond(t_ms)
                .map(|ts| tz.to_offset(ts).seconds() / 60)
                .unwrap_or(0),
        }
    }

    /// `YYYY-MM-DD hh:mm:ss.fff (UTC+8)`.
    pub fn label(&self, t_ms: i64) -> String {
        local_time_label(t_ms, self.offset_min(t_ms))
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

    fn font() -> BannerFont {
        EvidenceConfig::default()
            .load_font()
            .expect("the CJK font scripts/setup.sh installs")
    }

    fn decode(jpeg: &[u8]) -> RgbImage {
        image::load_from_memory_with_format(jpeg, image::ImageFormat::Jpeg)
            .expect("a decodable JPEG")
            .to_rgb8()
    }

    #[test]
    fn renders_decodable_jpegs_with_banner() {
        let f = frame(3);
        let font = font();
        let zones = vec![(vec![(5.0, 5.0), (30.0, 5.0), (30.0, 30.0)], [255, 255, 0])];
        let ov = Overlay {
            lines: vec![
                "2026-11-29 08:00:00.300 (UTC+8)".into(),
                "行人信号 红灯".into(),
            ],
            zones: &zones,
            person: BBox::new(10.0, 10.0, 20.0, 40.0),
            font: &font,
        };
        let j = render_scene(&f, &ov, 80);
        assert_eq!(&j[..2], &[0xFF, 0xD8], "JPEG SOI");
        assert_eq!(&j[j.len() - 2..], &[0xFF, 0xD9], "JPEG EOI");
        let img = decode(&j);
        assert_eq!(img.width(), 64);
        assert!(img.height() > 48, "a banner above the frame");
        let c = decode(&render_closeup(&f, &ov, 80));
        assert_eq!(c.width(), CLOSEUP_MIN_W);
        let p = picture("stage1", j);
        assert_eq!(p.sha256.len(), 64);
    }

    /// The banner of a violation at 640 px wide, in Chinese: every line fits inside the
    /// picture (wrapped, not cut), every character has a glyph, and the text is drawn.
    #[test]
    fn a_chinese_banner_fits_a_640_px_picture() {
        let font = font();
        let lines: Vec<String> = vec![
            "2026-11-29 16:00:36.300 (UTC+8)  第 1/3 张".into(),
            "违法行为 行人不按交通信号灯指示通行（代码 3001）".into(),
            "卡口 32050500051210000001  设备 32050500051320000001  地点 苏州市吴中区东吴北路与宝带东路交叉口南侧人行横道".into(),
            "行人信号 红灯 自 16:00:24.000 起（配时方案，时延 0 毫秒）  轨迹 9".into(),
        ];
        for l in &lines {
            assert!(
                font.missing(l).is_empty(),
                "no glyph for {:?} in {l}",
                font.missing(l)
            );
        }
        let f = Frame {
            seq: 0,
            time_ms: 0,
            width: 640,
            height: 360,
            rgb: Arc::new(vec![90; 640 * 360 * 3]),
        };
        let ov = Overlay {
            lines: lines.clone(),
            zones: &[],
            person: BBox::new(300.0, 100.0, 340.0, 220.0),
            font: &font,
        };
        let layout = BannerLayout::new(&font, &lines, 640);
        assert!(
            layout.lines.len() > lines.len(),
            "long lines wrap: {:?}",
            layout.lines
        );
        for l in &layout.lines {
            let w = font.width(l, layout.px) + layout.margin;
            assert!(
                w <= 640 - layout.margin,
                "'{l}' ends at {w} px, past the margin"
            );
        }
        // Nothing lost in wrapping: the same characters, in order.
        let strip = |v: &[String]| {
            v.concat()
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
        };
        assert_eq!(strip(&layout.lines), strip(&lines));
        let img = decode(&render_scene(&f, &ov, 90));
        assert_eq!((img.width(), img.height()), (640, 360 + layout.height()));
        // White text on the black banner, on every line.
        for i in 0..layout.lines.len() as u32 {
            let y0 = layout.margin + i * layout.line_h;
            let lit = (y0..y0 + layout.line_h)
                .flat_map(|y| (0..640).map(move |x| (x, y)))
                .filter(|&(x, y)| img.get_pixel(x, y).0[0] > 160)
                .count();
            assert!(lit > 50, "line {i} drawn ({lit} bright pixels)");
        }
    }

    #[test]
    fn a_missing_font_is_named_with_the_fix() {
        let e = BannerFont::load(Path::new("/nonexistent/font.ttc"))
            .err()
            .unwrap();
        assert!(
            e.contains("/nonexistent/font.ttc") && e.contains("fonts-wqy-microhei"),
            "{e}"
        );
    }

    #[test]
    fn time_label() {
        assert_eq!(
            local_time_label(1_795_939_200_500, 480),
            "2026-11-29 16:00:00.500 (UTC+8)"
        );
        // A named zone: Shanghai is +8 all year; Berlin moves with daylight saving.
        let cfg = |z: &str| EvidenceConfig {
            time_zone: Some(z.into()),
            ..EvidenceConfig::default()
        };
        let shanghai = cfg("Asia/Shanghai").clock().unwrap();
        assert_eq!(
            shanghai.label(1_795_939_200_500),
            "2026-11-29 16:00:00.500 (UTC+8)"
        );
        let berlin = cfg("Europe/Berlin").clock().unwrap();
        assert_eq!(berlin.offset_min(1_795_939_200_500), 60, "winter");
        assert_eq!(berlin.offset_min(1_782_000_000_000), 120, "summer");
        let e = cfg("Asia/Beijing").clock().unwrap_err();
        assert!(
            e.contains("Asia/Beijing") && e.contains("Asia/Shanghai"),
            "{e}"
        );
        assert_eq!(
            EvidenceConfig::default().clock().unwrap().offset_min(0),
            480
        );
    }
}
