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

use std::path::Path;

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
    /// Reads of the crop deblurred for horizontal motion of each length tried (single-row
    /// plates); fusion keeps the length that reads best over the whole track.
    pub deblurred: Vec<Deblurred>,
}

/// A read of a plate crop deblurred for `length` pixels of horizontal motion.
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
}

/// A read whose every character is at least this sure is not deblurred.
const SURE_CHAR: f32 = 0.9;

/// Below this width/height ratio a plate is taken as two rows (one row ~3.1, two rows ~2.0).
const TWO_ROW_MAX_ASPECT: f32 = 2.5;

pub struct PlatePipeline {
    pub detector: PlateDetector,
    pub reader: PlateReader,
}

impl PlatePipeline {
    pub fn load(
        detector_manifest: &Path,
        reader_manifest: &Path,
        models_dir: &Path,
        ort_library: &Path,
        threads: usize,
    ) -> Result<PlatePipeline, DetectError> {
        Ok(PlatePipeline {
            detector: PlateDetector::load(detector_manifest, models_dir, ort_library, threads)?,
            reader: PlateReader::load(reader_manifest, models_dir, ort_library, threads)?,
        })
    }

    /// Finds and reads the plate of the vehicle in `vehicle` (frame pixels). None when no
    /// plate is found. A single-row plate is also read deblurred for each length of
    /// horizontal motion in `deblur_px`.
    pub fn read_vehicle(
        &mut self,
        frame: &Frame,
        vehicle: &BBox,
        deblur_px: &[u32],
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
            let Some((region, x1, y1, scale)) = self.region(frame, &region_box) else {
                break;
            };
            if let Some(best) = self.detector.detect(&region)?.into_iter().next() {
                found = Some((best, x1, y1, scale));
                break;
            }
        }
        timings.detect += t0.elapsed();
        let Some((best, x1, y1, scale)) = found else {
            return Ok(None);
        };
        let t1 = std::time::Instant::now();
        let to_frame = |(x, y): (f32, f32)| (x1 + x / scale, y1 + y / scale);
        let corners = best.corners.map(to_frame);
        let width = (dist(corners[0], corners[1]) + dist(corners[3], corners[2])) / 2.0;
        let height = (dist(corners[0], corners[3]) + dist(corners[1], corners[2])) / 2.0;
        let two_row = height > 0.0 && width / height < TWO_ROW_MAX_ASPECT;
        let (cw, ch) = if two_row { (220, 140) } else { (168, 48) };
        // A little margin around the corners: the detector's corners sit on the plate's edge
        // and may cut into the first and last characters.
        // (Not around a two-row plate: its rows are cut at fixed heights, and a margin beside
        // the short top row makes the reader see characters twice.)
        let quad = if two_row {
            corners
        } else {
            grow_quad(&corners, QUAD_MARGIN_X, QUAD_MARGIN_Y)
        }
        .map(|(x, y)| (x as f64, y as f64));
        let Some(crop) = rectify(
            &frame.rgb,
            frame.width as usize,
            frame.height as usize,
            frame.stride(),
            &quad,
            cw,
            ch,
        ) else {
            return Ok(None);
        };
        let colour = colour::classify(&crop);
        timings.rectify += t1.elapsed();
        let t2 = std::time::Instant::now();
        let read = if two_row {
            let top_h = (ch as f32 * 0.38).round() as usize;
            let bot_y = (ch as f32 * 0.33).round() as usize;
            let top = sub_image(&crop, 0, 0, cw, top_h);
            let bottom = sub_image(&crop, 0, bot_y, cw, ch - bot_y);
            let a = self.reader.read(&top, true)?;
            let b = self.reader.read(&bottom, false)?;
            TextRead {
                chars: a.chars.into_iter().chain(b.chars).collect(),
                conf: a.conf.into_iter().chain(b.conf).collect(),
                steps: a.steps.into_iter().chain(b.steps).collect(),
            }
        } else {
            self.reader.read(&crop, true)?
        };
        let sure = read.conf.iter().all(|c| *c >= SURE_CHAR);
        let (chars, conf) = clean(read);
        if chars.is_empty() {
            timings.read += t2.elapsed();
            return Ok(None);
        }
        let mut deblurred = Vec::new();
        // A read sure of every character is not blurred enough to matter: it is spared the
        // deblurred reads (they cost a reader pass each).
        if !two_row && !sure {
            for &length in deblur_px {
                let sharper = deblur::deblur_horizontal(&crop, length as usize);
                let (chars, conf) = clean(self.reader.read(&sharper, true)?);
                if !chars.is_empty() {
                    deblurred.push(Deblurred {
                        length,
                        chars,
                        conf,
                    });
                }
            }
        }
        timings.read += t2.elapsed();
        Ok(Some(PlateRead {
            chars,
            conf,
            colour,
            two_row,
            det_score: best.score,
            corners,
            crop,
            frame_seq: frame.seq,
            deblurred,
        }))
    }
}

impl PlatePipeline {
    /// A box of the frame with a margin, shrunk to the detector's working size: the image,
    /// its top-left corner in the frame, and the scale applied.
    fn region(&self, frame: &Frame, b: &BBox) -> Option<(Rgb, f32, f32, f32)> {
        let (fw, fh) = (frame.width as f32, frame.height as f32);
        let mx = b.width() * 0.05;
        let my = b.height() * 0.1;
        let x1 = (b.x1 - mx).max(0.0).floor();
        let y1 = (b.y1 - my).max(0.0).floor();
        let x2 = (b.x2 + mx).min(fw).ceil();
        let y2 = (b.y2 + my).min(fh).ceil();
        let (rw, rh) = ((x2 - x1) as usize, (y2 - y1) as usize);
        if rw < 16 || rh < 16 {
            return None;
        }
        let scale = (self.detector.max_side() as f32 / rw.max(rh) as f32).min(1.0);
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
