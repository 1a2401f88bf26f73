//! GA 36 plate rendering: plate sizes, character boxes, colours and the dot, drawn with a CJK
//! font from a Debian package (WenQuanYi Micro Hei by default). Glyphs are stretched into the
//! standard's narrow character boxes, as the real plate typeface is.

use ab_glyph::{Font, FontVec, PxScale};

use crate::plate::geometry::Rgb;

/// How a plate looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlateStyle {
    /// 440x140 mm, white on blue.
    Blue,
    /// 440x140 mm, black on yellow (front plate of a large vehicle).
    Yellow,
    /// 440x220 mm, two rows, black on yellow (rear plate of a large vehicle).
    YellowTwoRow,
    /// 480x140 mm, 8 characters, black on a white-to-green gradient.
    Green,
    /// 440x140 mm, black on white, last character red.
    White,
}

impl PlateStyle {
    pub fn size_mm(self) -> (f32, f32) {
        match self {
            PlateStyle::YellowTwoRow => (440.0, 220.0),
            PlateStyle::Green => (480.0, 140.0),
            _ => (440.0, 140.0),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FontError {
    #[error("cannot read the CJK font '{path}': {err}; install the Debian package fonts-wqy-microhei (scripts/setup.sh does) or set TRAFFIC_CJK_FONT")]
    Read {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error("'{path}' is not a font ab_glyph can read: {message}")]
    Parse {
        path: std::path::PathBuf,
        message: String,
    },
}

pub struct PlateFont {
    font: FontVec,
}

impl PlateFont {
    /// Loads a TrueType or OpenType font; of a collection, the Simplified Chinese face
    /// (Noto Sans CJK's collections open with the Japanese one, whose glyphs differ), else
    /// the first.
    pub fn load(path: &std::path::Path) -> Result<PlateFont, FontError> {
        let data = std::fs::read(path).map_err(|err| FontError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        let index = simplified_chinese_face(&data).unwrap_or(0);
        let font = FontVec::try_from_vec_and_index(data, index).map_err(|e| FontError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(PlateFont { font })
    }

    /// The default: `TRAFFIC_CJK_FONT`, else WenQuanYi Micro Hei where Debian installs it.
    pub fn default_path() -> std::path::PathBuf {
        std::env::var_os("TRAFFIC_CJK_FONT")
            .map(Into::into)
            .unwrap_or_else(|| "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc".into())
    }

    /// Coverage mask (0..1) of one character, stretched to fill `w` x `h`.
    fn glyph_mask(&self, c: char, w: usize, h: usize) -> Vec<f32> {
        let px = h as f32 * 1.2;
        let glyph = self
            .font
            .glyph_id(c)
            .with_scale_and_position(PxScale::from(px), ab_glyph::point(0.0, px));
        let Some(outline) = self.font.outline_glyph(glyph) else {
            return vec![0.0; w * h];
        };
        let b = outline.px_bounds();
        let (gw, gh) = (b.width().ceil() as usize, b.height().ceil() as usize);
        if gw == 0 || gh == 0 {
            return vec![0.0; w * h];
        }
        let mut raw = vec![0f32; gw * gh];
        outline.draw(|x, y, cov| {
            let (x, y) = (x as usize, y as usize);
            if x < gw && y < gh {
                raw[y * gw + x] = cov;
            }
        });
        // Stretch the glyph's ink box into the character box (area sampling).
        let mut out = vec![0f32; w * h];
        for y in 0..h {
            for x in 0..w {
                let sx0 = x as f32 * gw as f32 / w as f32;
                let sx1 = (x + 1) as f32 * gw as f32 / w as f32;
                let sy0 = y as f32 * gh as f32 / h as f32;
                let sy1 = (y + 1) as f32 * gh as f32 / h as f32;
                let mut acc = 0f32;
                let mut area = 0f32;
                let mut yy = sy0;
                while yy < sy1 {
                    let ny = (yy.floor() + 1.0).min(sy1);
                    let mut xx = sx0;
                    while xx < sx1 {
                        let nx = (xx.floor() + 1.0).min(sx1);
                        let a = (nx - xx) * (ny - yy);
                        let (ix, iy) = ((xx as usize).min(gw - 1), (yy as usize).min(gh - 1));
                        acc += raw[iy * gw + ix] * a;
                        area += a;
                        xx = nx;
                    }
                    yy = ny;
                }
                out[y * w + x] = if area > 0.0 { acc / area } else { 0.0 };
            }
        }
        out
    }

    /// Renders a plate at `px_per_mm`. `text` is the plate without its dot.
    pub fn render(&self, text: &str, style: PlateStyle, px_per_mm: f32) -> Rgb {
        let (wmm, hmm) = style.size_mm();
        let k = px_per_mm;
        let (w, h) = ((wmm * k).round() as usize, (hmm * k).round() as usize);
        let (bg_top, bg_bottom, ink): ([u8; 3], [u8; 3], [u8; 3]) = match style {
            PlateStyle::Blue => ([18, 62, 190], [18, 62, 190], [245, 245, 245]),
            PlateStyle::Yellow | PlateStyle::YellowTwoRow => {
                ([240, 190, 20], [240, 190, 20], [15, 15, 15])
            }
            PlateStyle::Green => ([190, 235, 190], [40, 175, 80], [15, 15, 15]),
            PlateStyle::White => ([240, 240, 240], [240, 240, 240], [15, 15, 15]),
        };
        let mut img = Rgb::new(w, h);
        for y in 0..h {
            let t = y as f32 / (h - 1).max(1) as f32;
            let c =
                [0, 1, 2].map(|i| (bg_top[i] as f32 * (1.0 - t) + bg_bottom[i] as f32 * t) as u8);
            for x in 0..w {
                img.put(x, y, c);
            }
        }
        // The rim: a 3 mm line 4 mm inside the edge.
        let rim = ink;
        let (r0, r1) = ((4.0 * k) as usize, (7.0 * k) as usize);
        for y in 0..h {
            for x in 0..w {
                let dx = x.min(w - 1 - x);
                let dy = y.min(h - 1 - y);
                let d = dx.min(dy);
                if d >= r0 && d < r1 {
                    img.put(x, y, rim);
                }
            }
        }
        let chars: Vec<char> = text.chars().collect();
        // (x, y, w, h) of each character box in mm, and where the dot goes.
        let mut boxes: Vec<(f32, f32, f32, f32)> = Vec::new();
        let mut dot: Option<(f32, f32)> = None;
        match style {
            PlateStyle::YellowTwoRow => {
                // Top row: the province and the authority letter; bottom row: the serial.
                let top = chars.len().min(2);
                for i in 0..top {
                    boxes.push((110.0 + i as f32 * 140.0, 15.0, 80.0, 60.0));
                }
                let rest = chars.len() - top;
                let total = rest as f32 * 65.0 + rest.saturating_sub(1) as f32 * 15.0;
                let x0 = (440.0 - total) / 2.0;
                for i in 0..rest {
                    boxes.push((x0 + i as f32 * 80.0, 90.0, 65.0, 110.0));
                }
                dot = Some((220.0, 45.0));
            }
            _ => {
                // One row: character width, gap, and the wider gap holding the dot after the
                // second character (480 mm new-energy plates have eight narrower characters).
                let (cw, gap, big) = if style == PlateStyle::Green {
                    (43.0, 9.0, 49.0)
                } else {
                    (45.0, 12.0, 34.0)
                };
                let n = chars.len();
                let total = n as f32 * cw
                    + n.saturating_sub(2) as f32 * gap
                    + if n > 2 { big } else { 0.0 };
                let mut x = (wmm - total) / 2.0;
                for i in 0..n {
                    boxes.push((x, 25.0, cw, 90.0));
                    x += cw + if i == 1 { big } else { gap };
                    if i == 1 {
                        dot = Some((x - big / 2.0, 70.0));
                    }
                }
            }
        }
        for (i, (&c, &(bx, by, bw, bh))) in chars.iter().zip(&boxes).enumerate() {
            let (pw, ph) = ((bw * k).round() as usize, (bh * k).round() as usize);
            let mask = self.glyph_mask(c, pw, ph);
            let colour = if style == PlateStyle::White && i + 1 == chars.len() && !c.is_ascii() {
                [200, 20, 20]
            } else {
                ink
            };
            let (ox, oy) = ((bx * k).round() as usize, (by * k).round() as usize);
            for y in 0..ph {
                for x in 0..pw {
                    let a = mask[y * pw + x];
                    if a > 0.0 && ox + x < w && oy + y < h {
                        let p = img.get(ox + x, oy + y);
                        let q = [0, 1, 2].map(|j| {
                            (p[j] as f32 * (1.0 - a) + colour[j] as f32 * a).round() as u8
                        });
                        img.put(ox + x, oy + y, q);
                    }
                }
            }
        }
        if let Some((dx, dy)) = dot {
            let r = 5.0 * k;
            let (cx, cy) = (dx * k, dy * k);
            for y in (cy - r) as usize..=(cy + r) as usize {
                for x in (cx - r) as usize..=(cx + r) as usize {
                    if ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() <= r
                        && x < w
                        && y < h
                    {
                        img.put(x, y, ink);
                    }
                }
            }
        }
        img
    }
}

/// The face of a font collection whose family name marks it Simplified Chinese (`SC`).
fn simplified_chinese_face(data: &[u8]) -> Option<u32> {
    let faces = ttf_parser::fonts_in_collection(data)?;
    (0..faces).find(|&i| {
        ttf_parser::Face::parse(data, i).is_ok_and(|face| {
            face.names().into_iter().any(|n| {
                n.name_id == ttf_parser::name_id::FAMILY
                    && n.to_string().is_some_and(|s| {
                        s.split_whitespace().any(|w| w == "SC") && !s.contains("Mono")
                    })
            })
        })
    })
}
