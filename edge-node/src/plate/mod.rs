//! Stage `plate`: from a vehicle's box in a full-resolution frame to a plate read.
//!
//! The vehicle's region (with a margin) is shrunk to the detector's working size; `clp_det`
//! finds the plate and its four corners; the corners, mapped back to full-resolution pixels,
//! are warped to a rectified crop (168x48 for one row, 220x140 for two); the colour is read
//! from the crop's background; PP-OCRv4 reads the text (both rows of a two-row plate
//! separately). Reads of one track are fused in [`fusion`].

pub mod colour;
pub mod deblur;
pub mod fusion;
pub mod geometry;
pub mod models;

use std::path::{Path, PathBuf};

use protocol::plate::PlateColor;
use protocol::BBox;

use crate::detect::DetectError;
use crate::frame::Frame;
use geometry::{rectify, Rgb};
use models::{PlateDetector, PlateReader, TextRead};

/// One plate read in one frame.
#[derive(Debug, Clone)]
pub struct PlateRead {
    /// Raw text, cleaned (separators gone, O/I after the second character mapped to 0/1).
    pub chars: Vec<char>,
    pub conf: Vec<f32>,
    pub colour: Option<PlateColor>,
    pub two_row: bool,
    /// Detector confidence.
    pub det_score: f32,
    /// Corners in frame pixels: top-left, top-right, bottom-right, bottom-left.
    pub corners: [(f32, f32); 4],
    /// The rectified crop.
    pub crop: Rgb,
    pub frame_seq: u64,
    /// A read of the crop deblurred for the horizontal smear measured on it (single-row
    /// crops smeared past their strokes' width, see [`deblur::smear_px`]).
    pub deblurred: Option<Deblurred>,
}

/// A read of a plate crop deblurred for `length` pixels of horizontal motion (crop pixels).
#[derive(Debug, Clone, PartialEq)]
pub struct Deblurred {
    pub length: u32,
    pub chars: Vec<char>,
    pub conf: Vec<f32>,
}

impl PlateRead {
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }
    pub fn mean_conf(&self) -> f32 {
        mean(&self.conf)
    }
}

/// The mean of per-character confidences (0 for none).
pub fn mean(conf: &[f32]) -> f32 {
    if conf.is_empty() {
        0.0
    } else {
        conf.iter().sum::<f32>() / conf.len() as f32
    }
}

/// Time spent in each part of a read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadTimings {
    pub detect: std::time::Duration,
    pub rectify: std::time::Duration,
    pub read: std::time::Duration,
    /// Reader passes (one line read once by one model; a two-row layout is two).
    pub reader_runs: u64,
}

/// At or above this width/height ratio of the corners a plate is one row (one row ~3.1, two
/// rows ~2.0). Below it the ratio does not decide: an oblique or angled single-row plate
/// looks as short as a two-row one (1.4 and 2.2 seen on real photos), so both layouts are
/// read and the read that fits a plate grammar, surer, is kept.
const SURE_ONE_ROW_ASPECT: f32 = 2.8;

/// Below this ratio the two-row layout is read first (it is likelier), unless the colour
/// says one row.
const TWO_ROW_FIRST_ASPECT: f32 = 2.5;

/// A plate found by the detector, in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct FoundPlate {
    pub score: f32,
    /// Corners top-left, top-right, bottom-right, bottom-left.
    pub corners: [(f32, f32); 4],
}

impl FoundPlate {
    /// The axis-aligned box around the corners.
    pub fn bbox(&self) -> BBox {
        let xs = self.corners.map(|c| c.0);
        let ys = self.corners.map(|c| c.1);
        BBox::new(
            xs.iter().copied().fold(f32::MAX, f32::min),
            ys.iter().copied().fold(f32::MAX, f32::min),
            xs.iter().copied().fold(f32::MIN, f32::max),
            ys.iter().copied().fold(f32::MIN, f32::max),
        )
    }

    /// Mean length of the top and bottom edges (pixels).
    pub fn width(&self) -> f32 {
        let c = &self.corners;
        (dist(c[0], c[1]) + dist(c[3], c[2])) / 2.0
    }

    /// Mean length of the left and right edges (pixels).
    pub fn height(&self) -> f32 {
        let c = &self.corners;
        (dist(c[0], c[3]) + dist(c[1], c[2])) / 2.0
    }
}

/// One reading of a crop by one reader in one layout.
#[derive(Debug, Clone)]
struct Candidate {
    chars: Vec<char>,
    conf: Vec<f32>,
    two_row: bool,
    fits: bool,
}

impl Candidate {
    fn min_conf(&self) -> f32 {
        self.conf.iter().copied().fold(1.0, f32::min)
    }
    /// Every character at least `sure` (the reader's own calibration).
    fn sure(&self, sure: f32) -> bool {
        !self.chars.is_empty() && self.min_conf() >= sure
    }
}

pub struct PlatePipeline {
    pub detector: PlateDetector,
    /// Readers in the order they are asked: the next only when the reads so far fit no
    /// grammar or are unsure of a character.
    pub readers: Vec<PlateReader>,
}

impl PlatePipeline {
    pub fn load(
        detector_manifest: &Path,
        reader_manifests: &[PathBuf],
        models_dir: &Path,
        ort_library: &Path,
        threads: usize,
    ) -> Result<PlatePipeline, DetectError> {
        let readers = reader_manifests
            .iter()
            .map(|m| PlateReader::load(m, models_dir, ort_library, threads))
            .collect::<Result<Vec<_>, _>>()?;
        if readers.is_empty() {
            return Err(DetectError::Run("a plate pipeline needs a reader".into()));
        }
        Ok(PlatePipeline {
            detector: PlateDetector::load(detector_manifest, models_dir, ort_library, threads)?,
            readers,
        })
    }

    /// Finds and reads the plate of the vehicle in `vehicle` (frame pixels). None when no
    /// plate is found. `deblur`: a single-row crop measured smeared is also read deblurred.
    pub fn read_vehicle(
        &mut self,
        frame: &Frame,
        vehicle: &BBox,
        deblur: bool,
        timings: &mut ReadTimings,
    ) -> Result<Option<PlateRead>, DetectError> {
        let t0 = std::time::Instant::now();
        // The whole vehicle first; when that finds nothing, its lower half, where plates
        // are: the detector misses plates that are small against a large region.
        let lower = BBox::new(
            vehicle.x1,
            vehicle.y1 + vehicle.height() * 0.4,
            vehicle.x2,
            vehicle.y2,
        );
        let mut found = None;
        for region_box in [*vehicle, lower] {
            let margin = (region_box.width() * 0.05, region_box.height() * 0.1);
            if let Some(best) = self
                .find(frame, &region_box, margin, None)?
                .into_iter()
                .next()
            {
                found = Some(best);
                break;
            }
        }
        timings.detect += t0.elapsed();
        match found {
            Some(p) => self.read_found(frame, &p, deblur, timings),
            None => Ok(None),
        }
    }

    /// Plates inside `region` of the frame (grown by `margin` pixels each side), best first.
    /// The region is shrunk to the detector's working size, or by `scale` when given
    /// (at most 1: never enlarged).
    pub fn find(
        &mut self,
        frame: &Frame,
        region: &BBox,
        margin: (f32, f32),
        scale: Option<f32>,
    ) -> Result<Vec<FoundPlate>, DetectError> {
        let Some((img, x1, y1, scale)) = self.region(frame, region, margin, scale) else {
            return Ok(Vec::new());
        };
        let to_frame = |(x, y): (f32, f32)| (x1 + x / scale, y1 + y / scale);
        Ok(self
            .detector
            .detect(&img)?
            .into_iter()
            .map(|d| FoundPlate {
                score: d.score,
                corners: d.corners.map(to_frame),
            })
            .collect())
    }

    /// Reads a plate found in the frame: rectified from the full-resolution frame, its
    /// colour read, its text read in the layouts its shape allows by the readers in turn;
    /// with `deblur`, a single-row crop smeared past its strokes' width is read again
    /// deblurred for the smear measured on it (one more pass of the first reader).
    pub fn read_found(
        &mut self,
        frame: &Frame,
        found: &FoundPlate,
        deblur: bool,
        timings: &mut ReadTimings,
    ) -> Result<Option<PlateRead>, DetectError> {
        let t1 = std::time::Instant::now();
        let corners = found.corners;
        let aspect = if found.height() > 0.0 {
            found.width() / found.height()
        } else {
            f32::MAX
        };
        let layouts: &[bool] = if aspect >= SURE_ONE_ROW_ASPECT {
            &[false]
        } else if aspect < TWO_ROW_FIRST_ASPECT {
            &[true, false]
        } else {
            &[false, true]
        };
        let rectified = |two_row: bool| {
            let (cw, ch) = if two_row { (220, 140) } else { (168, 48) };
            // A little margin around the corners: the detector's corners sit on the plate's
            // edge and may cut into the characters (the top of a two-row plate's 蒙).
            let (mx, my) = if two_row {
                (TWO_ROW_MARGIN_X, TWO_ROW_MARGIN_Y)
            } else {
                (QUAD_MARGIN_X, QUAD_MARGIN_Y)
            };
            let quad = grow_quad(&corners, mx, my).map(|(x, y)| (x as f64, y as f64));
            rectify(
                &frame.rgb,
                frame.width as usize,
                frame.height as usize,
                frame.stride(),
                &quad,
                cw,
                ch,
            )
        };
        let mut crops: Vec<(bool, Rgb)> = Vec::with_capacity(layouts.len());
        for &two_row in layouts {
            if let Some(c) = rectified(two_row) {
                crops.push((two_row, c));
            }
        }
        let Some(colour_crop) = crops.iter().find(|(two, _)| !two).or(crops.first()) else {
            return Ok(None);
        };
        let colour = colour::classify(&colour_crop.1);
        // Colour before shape: blue and new-energy plates are one row (cars; a light
        // motorcycle's blue two-row plate is the rare exception, still read second), so an
        // oblique or angled blue plate that looks as short as a two-row one is read as one
        // row first.
        if matches!(
            colour,
            Some(PlateColor::Blue | PlateColor::Green | PlateColor::YellowGreen)
        ) && crops.first().is_some_and(|(two, _)| *two)
        {
            crops.reverse();
        }
        timings.rectify += t1.elapsed();
        let t2 = std::time::Instant::now();
        let runs_before = self.reader_runs();
        let Some((read, k)) = self.read_layouts(&crops, colour)? else {
            timings.read += t2.elapsed();
            timings.reader_runs += self.reader_runs() - runs_before;
            return Ok(None);
        };
        let crop = crops.swap_remove(k).1;
        // Only a crop that shows a smear is deblurred, for the length it shows: a sharp
        // plate gains nothing from it (deblurring every real CCPD crop for the dip its
        // strokes make lost 85 of 1000 in a trial in Python) and is spared the pass.
        let mut deblurred = None;
        if deblur && !read.two_row {
            if let Some(length) = deblur::smear_px(&crop) {
                let sharper = deblur::deblur_horizontal(&crop, length);
                let (chars, conf) = clean(self.readers[0].read(&sharper, true, true)?);
                if !chars.is_empty() {
                    deblurred = Some(Deblurred {
                        length: length as u32,
                        chars,
                        conf,
                    });
                }
            }
        }
        timings.read += t2.elapsed();
        timings.reader_runs += self.reader_runs() - runs_before;
        Ok(Some(PlateRead {
            chars: read.chars,
            conf: read.conf,
            colour,
            two_row: read.two_row,
            det_score: found.score,
            corners,
            crop,
            frame_seq: frame.seq,
            deblurred,
        }))
    }

    /// Reads a plate crop that is already cut out (a single-row plate, as in a crop set):
    /// the readers in turn, as for a plate found in a frame.
    pub fn read_crop(
        &mut self,
        crop: &Rgb,
        timings: &mut ReadTimings,
    ) -> Result<Option<PlateRead>, DetectError> {
        let frame = Frame {
            seq: 0,
            time_ms: 0,
            width: crop.width as u32,
            height: crop.height as u32,
            rgb: std::sync::Arc::new(crop.data.clone()),
        };
        let (w, h) = (crop.width as f32, crop.height as f32);
        // The crop is the plate: corners at its edges, less the margin rectification adds.
        let inset = |mx: f32, my: f32| {
            let (dx, dy) = (w * mx / (1.0 + 2.0 * mx), h * my / (1.0 + 2.0 * my));
            [(dx, dy), (w - dx, dy), (w - dx, h - dy), (dx, h - dy)]
        };
        let found = FoundPlate {
            score: 1.0,
            corners: inset(QUAD_MARGIN_X, QUAD_MARGIN_Y),
        };
        self.read_found(&frame, &found, false, timings)
    }
}

impl PlatePipeline {
    /// Reader passes made so far, by all readers.
    fn reader_runs(&self) -> u64 {
        self.readers.iter().map(|r| r.runs()).sum()
    }

    /// Reads the crops of a plate (one per row layout its shape allows, likelier first) and
    /// gives the read kept and the index of its crop:
    /// 1. the first reader's read of the first layout that fits a GA 36 grammar;
    /// 2. else the first reader's read it is sure of in every character (a fake plate: a
    ///    reader that knows only plate characters would turn it into a real one);
    /// 3. else the first fitting read of the next readers (a character the first reader
    ///    dropped or doubled);
    /// 4. else the first reader's read of the likelier layout.
    ///
    /// The next reader never overrules a read that fits: on the project's rendered plates
    /// the plate CRNN confidently misreads glyphs of a font unlike the plate font.
    fn read_layouts(
        &mut self,
        crops: &[(bool, Rgb)],
        colour: Option<PlateColor>,
    ) -> Result<Option<(Candidate, usize)>, DetectError> {
        let read_as = |reader: &mut PlateReader, two_row: bool, crop: &Rgb, padded: bool| {
            let (chars, conf) = clean(read_layout(reader, crop, two_row, padded)?);
            let fits = !chars.is_empty()
                && protocol::plate::parse(
                    &chars.iter().collect::<String>(),
                    colour,
                    protocol::plate::Mode::Lenient,
                )
                .is_ok();
            Ok::<_, DetectError>(Candidate {
                chars,
                conf,
                two_row,
                fits,
            })
        };
        // The quick unpadded read when the reader is sure of it, else the padded one.
        let read = |reader: &mut PlateReader, two_row: bool, crop: &Rgb| {
            if let Some(q) = reader.quick_sure() {
                let c = read_as(reader, two_row, crop, false)?;
                if c.fits && c.sure(q) {
                    return Ok(c);
                }
            }
            read_as(reader, two_row, crop, true)
        };
        let (first, next) = self.readers.split_first_mut().expect("checked at load");
        let mut firsts = Vec::with_capacity(crops.len());
        for (k, (two_row, crop)) in crops.iter().enumerate() {
            let c = read(first, *two_row, crop)?;
            if c.fits {
                return Ok(Some((c, k)));
            }
            firsts.push(c);
        }
        let sure = first.sure_char();
        if let Some(k) = firsts.iter().position(|c| c.sure(sure)) {
            return Ok(Some((firsts.swap_remove(k), k)));
        }
        for reader in next {
            for (k, (two_row, crop)) in crops.iter().enumerate() {
                let c = read(reader, *two_row, crop)?;
                if c.fits {
                    return Ok(Some((c, k)));
                }
            }
        }
        Ok(firsts
            .into_iter()
            .enumerate()
            .find(|(_, c)| !c.chars.is_empty())
            .map(|(k, c)| (c, k)))
    }
}

/// Reads a rectified crop in one layout with one reader: a single-row crop whole, a two-row
/// crop's top row (~38 % of the plate) and bottom row (from ~33 %) separately.
fn read_layout(
    reader: &mut PlateReader,
    crop: &Rgb,
    two_row: bool,
    padded: bool,
) -> Result<TextRead, DetectError> {
    if !two_row {
        return reader.read(crop, true, padded);
    }
    let (cw, ch) = (crop.width, crop.height);
    // Row boundaries on the plate, moved into the crop, which has a margin above and below.
    let m = TWO_ROW_MARGIN_Y;
    let at = |share: f32| ((m + share) / (1.0 + 2.0 * m) * ch as f32).round() as usize;
    let top_h = at(0.38);
    let bot_y = at(0.33);
    let top = sub_image(crop, 0, 0, cw, top_h);
    let bottom = sub_image(crop, 0, bot_y, cw, ch - bot_y);
    let a = reader.read(&top, true, padded)?;
    let b = reader.read(&bottom, false, padded)?;
    Ok(TextRead {
        chars: a.chars.into_iter().chain(b.chars).collect(),
        conf: a.conf.into_iter().chain(b.conf).collect(),
        steps: a.steps.into_iter().chain(b.steps).collect(),
    })
}

impl PlatePipeline {
    /// A box of the frame grown by `margin`, shrunk to the detector's working size (or by
    /// `scale`): the image, its top-left corner in the frame, and the scale applied.
    fn region(
        &self,
        frame: &Frame,
        b: &BBox,
        margin: (f32, f32),
        scale: Option<f32>,
    ) -> Option<(Rgb, f32, f32, f32)> {
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        let (mx, my) = margin;
        let x1 = (b.x1 - mx).max(0.0).floor();
        let y1 = (b.y1 - my).max(0.0).floor();
        let x2 = (b.x2 + mx).min(fw).ceil();
        let y2 = (b.y2 + my).min(fh).ceil();
        if x2 <= x1 || y2 <= y1 {
            return None;
        }
        let (rw, rh) = ((x2 - x1) as usize, (y2 - y1) as usize);
        if rw < 16 || rh < 16 {
            return None;
        }
        let scale = scale
            .unwrap_or(self.detector.max_side() as f32 / rw.max(rh) as f32)
            .min(1.0);
        let (sw, sh) = (
            ((rw as f32 * scale).round() as usize).max(1),
            ((rh as f32 * scale).round() as usize).max(1),
        );
        Some((crop_scaled(frame, x1, y1, rw, rh, sw, sh), x1, y1, scale))
    }
}

/// Margin added around the detected corners, as shares of the plate's width and height.
const QUAD_MARGIN_X: f32 = 0.03;
const QUAD_MARGIN_Y: f32 = 0.06;
/// The same for a two-row plate: above and below only (a margin beside the short top row
/// makes the reader see characters twice).
const TWO_ROW_MARGIN_X: f32 = 0.0;
const TWO_ROW_MARGIN_Y: f32 = 0.05;

/// Moves each corner of a quadrilateral (top-left, top-right, bottom-right, bottom-left)
/// outwards along the plate's own axes by `mx` of its width and `my` of its height.
pub fn grow_quad(q: &[(f32, f32); 4], mx: f32, my: f32) -> [(f32, f32); 4] {
    let sub = |a: (f32, f32), b: (f32, f32)| (a.0 - b.0, a.1 - b.1);
    // Axis vectors: along the top and bottom edges, and down the left and right edges.
    let across = sub(q[1], q[0]);
    let across_b = sub(q[2], q[3]);
    let down = sub(q[3], q[0]);
    let down_r = sub(q[2], q[1]);
    let ax = (
        (across.0 + across_b.0) / 2.0 * mx,
        (across.1 + across_b.1) / 2.0 * mx,
    );
    let ay = (
        (down.0 + down_r.0) / 2.0 * my,
        (down.1 + down_r.1) / 2.0 * my,
    );
    [
        (q[0].0 - ax.0 - ay.0, q[0].1 - ax.1 - ay.1),
        (q[1].0 + ax.0 - ay.0, q[1].1 + ax.1 - ay.1),
        (q[2].0 + ax.0 + ay.0, q[2].1 + ax.1 + ay.1),
        (q[3].0 - ax.0 + ay.0, q[3].1 - ax.1 + ay.1),
    ]
}

fn dist(a: (f32, f32), b: (f32, f32)) -> f32 {
    ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt()
}

/// Drops separators and spaces, upper-cases, and maps O/I to 0/1 after the second character
/// (GA 36 serials never use O or I).
pub fn clean(read: TextRead) -> (Vec<char>, Vec<f32>) {
    let mut chars = Vec::new();
    let mut conf = Vec::new();
    for (c, p) in read.chars.into_iter().zip(read.conf) {
        if models::is_separator(c) {
            continue;
        }
        let c = protocol::plate::normalise(&c.to_string())
            .chars()
            .next()
            .unwrap_or(c);
        chars.push(c);
        conf.push(p);
    }
    for c in chars.iter_mut().skip(2) {
        match *c {
            'O' => *c = '0',
            'I' => *c = '1',
            _ => {}
        }
    }
    (chars, conf)
}

/// Copies a region of a frame, resized to `sw` x `sh` (area average when shrinking).
fn crop_scaled(frame: &Frame, x1: f32, y1: f32, rw: usize, rh: usize, sw: usize, sh: usize) -> Rgb {
    let mut region = Rgb::new(rw, rh);
    let stride = frame.stride();
    let (x1, y1) = (x1 as usize, y1 as usize);
    for y in 0..rh {
        let src = (y1 + y) * stride + x1 * 3;
        region.data[y * rw * 3..(y + 1) * rw * 3].copy_from_slice(&frame.rgb[src..src + rw * 3]);
    }
    if (sw, sh) == (rw, rh) {
        region
    } else {
        region.resize(sw, sh)
    }
}

fn sub_image(img: &Rgb, x: usize, y: usize, w: usize, h: usize) -> Rgb {
    let mut out = Rgb::new(w, h);
    for yy in 0..h {
        let src = ((y + yy) * img.width + x) * 3;
        out.data[yy * w * 3..(yy + 1) * w * 3].copy_from_slice(&img.data[src..src + w * 3]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_quad_moves_corners_outwards() {
        let q = [(10.0, 10.0), (110.0, 10.0), (110.0, 40.0), (10.0, 40.0)];
        let g = grow_quad(&q, 0.1, 0.1);
        assert_eq!(g, [(0.0, 7.0), (120.0, 7.0), (120.0, 43.0), (0.0, 43.0)]);
    }
}
