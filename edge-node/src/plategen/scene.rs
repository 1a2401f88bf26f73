//! Composes the frames of the plate clip and writes them to H.264.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::render::{PlateFont, PlateStyle};
use super::{GenConfig, GenError, Rng, TruthVehicle, VehicleKind, PASS_FRAMES};
use crate::config::SourceConfig;
use crate::plate::geometry::{Homography, Rgb};
use crate::source::{self, FrameSource};

/// A vehicle cut out of a photo, with its plate painted on, and an alpha mask.
struct Sprite {
    img: Rgb,
    alpha: Vec<f32>,
    /// Plate quad in sprite pixels (top-left, top-right, bottom-right, bottom-left).
    plate: [(f64, f64); 4],
    blur: usize,
}

/// Where a vehicle photo comes from and where its plate goes (photo pixels).
struct Photo {
    img: Rgb,
    /// Crop (x, y, w, h) in the photo.
    crop: (usize, usize, usize, usize),
    /// Upscale factor applied to the crop.
    upscale: f32,
    /// Plate centre and width (photo pixels); does the vehicle face right?
    plate_centre: (f32, f32),
    plate_width: f32,
    faces_right: bool,
}

fn load_jpeg(path: &Path) -> Result<Rgb, GenError> {
    let bytes = std::fs::read(path).map_err(|e| {
        GenError::Media(format!(
            "cannot read vehicle photo '{}': {e}; run scripts/setup.sh to fetch the sample media",
            path.display()
        ))
    })?;
    let mut dec = jpeg_decoder::Decoder::new(&bytes[..]);
    let px = dec.decode().map_err(|e| {
        GenError::Media(format!("'{}' is not a readable JPEG: {e}", path.display()))
    })?;
    let info = dec.info().expect("decoded");
    let data = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => px,
        jpeg_decoder::PixelFormat::L8 => px.iter().flat_map(|&v| [v, v, v]).collect(),
        other => {
            return Err(GenError::Media(format!(
                "'{}' has pixel format {other:?}; expected RGB",
                path.display()
            )))
        }
    };
    Ok(Rgb {
        width: info.width as usize,
        height: info.height as usize,
        data,
    })
}

pub struct Scene<'a> {
    cfg: GenConfig,
    font: &'a PlateFont,
    photos: HashMap<&'static str, Photo>,
    background: Box<dyn FrameSource>,
    sprites: HashMap<usize, Sprite>,
}

fn open_background(cfg: &GenConfig) -> Result<Box<dyn FrameSource>, GenError> {
    let path = cfg.media_dir.join("vtest.avi");
    if !path.exists() {
        return Err(GenError::Media(format!(
            "background video '{}' is missing; run scripts/setup.sh",
            path.display()
        )));
    }
    source::open(
        &SourceConfig::File {
            path,
            start_time: Some("2026-01-01T00:00:00Z".into()),
            realtime: false,
        },
        Duration::from_secs(10),
    )
    .map_err(|e| GenError::Media(e.to_string()))
}

impl<'a> Scene<'a> {
    pub fn new(
        cfg: &GenConfig,
        font: &'a PlateFont,
        _vehicles: &[TruthVehicle],
    ) -> Result<Scene<'a>, GenError> {
        let mut photos = HashMap::new();
        photos.insert(
            "minibus",
            Photo {
                img: load_jpeg(&cfg.media_dir.join("bus.jpg"))?,
                crop: (0, 228, 805, 507),
                upscale: 1.0,
                plate_centre: (600.0, 636.0),
                plate_width: 180.0,
                faces_right: false,
            },
        );
        photos.insert(
            "pickup",
            Photo {
                img: load_jpeg(&cfg.media_dir.join("dog.jpg"))?,
                crop: (462, 68, 246, 104),
                upscale: 3.0,
                plate_centre: (588.0, 140.0),
                plate_width: 60.0,
                faces_right: true,
            },
        );
        Ok(Scene {
            cfg: cfg.clone(),
            font,
            photos,
            background: open_background(cfg)?,
            sprites: HashMap::new(),
        })
    }

    fn background_frame(&mut self) -> Result<Rgb, GenError> {
        let f = match self
            .background
            .next_frame()
            .map_err(|e| GenError::Media(e.to_string()))?
        {
            Some(f) => f,
            None => {
                self.background = open_background(&self.cfg)?;
                self.background
                    .next_frame()
                    .map_err(|e| GenError::Media(e.to_string()))?
                    .ok_or_else(|| GenError::Media("background video has no frames".into()))?
            }
        };
        // Scale to the output width, keep the middle rows.
        let (w, h) = (self.cfg.width as usize, self.cfg.height as usize);
        let s = f.width as f64 / w as f64;
        let y_off = ((f.height as f64 / s) - h as f64).max(0.0) / 2.0;
        let mut out = Rgb::new(w, h);
        for y in 0..h {
            for x in 0..w {
                let sx = ((x as f64 + 0.5) * s - 0.5).clamp(0.0, f.width as f64 - 1.0);
                let sy = ((y as f64 + y_off + 0.5) * s - 0.5).clamp(0.0, f.height as f64 - 1.0);
                let c = crate::plate::geometry::sample_bilinear(
                    &f.rgb,
                    f.width as usize,
                    f.height as usize,
                    f.stride(),
                    sx,
                    sy,
                )
                .unwrap_or([0.0; 3]);
                out.put(x, y, c.map(|v| v as u8));
            }
        }
        Ok(out)
    }

    fn sprite(&self, v: &TruthVehicle) -> Sprite {
        let mut rng = Rng::new(self.cfg.seed ^ (v.index as u64 + 1).wrapping_mul(0x9E37_79B9));
        let photo = &self.photos[match v.vehicle {
            VehicleKind::Minibus => "minibus",
            VehicleKind::Pickup => "pickup",
        }];
        let (cx, cy, cw, ch) = photo.crop;
        let (sw, sh) = (
            (cw as f32 * photo.upscale).round() as usize,
            (ch as f32 * photo.upscale).round() as usize,
        );
        // The front leads: eastbound vehicles face right.
        let mirror = (v.direction == "eastbound") != photo.faces_right;
        let brightness = rng.range(0.85, 1.1);
        let mut img = Rgb::new(sw, sh);
        for y in 0..sh {
            for x in 0..sw {
                let sx = if mirror { sw - 1 - x } else { x };
                let px = cx as f64 + (sx as f64 + 0.5) / photo.upscale as f64 - 0.5;
                let py = cy as f64 + (y as f64 + 0.5) / photo.upscale as f64 - 0.5;
                let c = photo
                    .img
                    .sample(px.max(0.0), py.max(0.0))
                    .unwrap_or([0.0; 3]);
                img.put(x, y, c.map(|v| (v * brightness).clamp(0.0, 255.0) as u8));
            }
        }
        // Feathered edges so the cut-out does not show a hard rectangle.
        let feather = 14.0f32;
        let mut alpha = vec![0f32; sw * sh];
        for y in 0..sh {
            for x in 0..sw {
                let d = (x.min(sw - 1 - x).min(y).min(sh - 1 - y)) as f32;
                alpha[y * sw + x] = (d / feather).min(1.0);
            }
        }
        // The plate: centre and width in sprite pixels, a little rotation and perspective.
        let (pcx, pcy) = photo.plate_centre;
        let mut centre_x = (pcx - cx as f32) * photo.upscale;
        if mirror {
            centre_x = sw as f32 - 1.0 - centre_x;
        }
        let centre_y = (pcy - cy as f32) * photo.upscale;
        let (wmm, hmm) = v.style.size_mm();
        let pw = photo.plate_width
            * photo.upscale
            * if v.style == PlateStyle::Green {
                480.0 / 440.0
            } else {
                1.0
            };
        let ph = pw * hmm / wmm;
        let angle = rng.range(-4.0, 4.0).to_radians();
        let persp = rng.range(0.9, 1.1);
        let shear = rng.range(-0.08, 0.08);
        let local = [
            (-pw / 2.0, -ph / 2.0),
            (pw / 2.0, -ph / 2.0 * persp),
            (pw / 2.0, ph / 2.0 * persp),
            (-pw / 2.0, ph / 2.0),
        ];
        let quad = local.map(|(x, y)| {
            let x = x + shear * y;
            let (s, c) = angle.sin_cos();
            (
                (centre_x + x * c - y * s) as f64,
                (centre_y + x * s + y * c) as f64,
            )
        });
        let rendered = self.font.render(&v.plate, v.style, 1.0);
        let target_w = (pw * 1.5).round().max(8.0) as usize;
        let plate_img = rendered.resize(target_w, ((target_w as f32) * hmm / wmm).round() as usize);
        paint_quad(&mut img, &plate_img, &quad, brightness);
        Sprite {
            img,
            alpha,
            plate: quad,
            blur: 1 + rng.below(3),
        }
    }

    /// Frame `f` of the clip; updates each vehicle's widest plate on screen.
    pub fn frame(&mut self, f: u64, vehicles: &mut [TruthVehicle]) -> Result<Rgb, GenError> {
        let mut out = self.background_frame()?;
        let (w, h) = (self.cfg.width as f32, self.cfg.height as f32);
        // Far lane first, so the near lane is drawn over it.
        let mut order: Vec<usize> = (0..vehicles.len())
            .filter(|&i| (vehicles[i].first_frame..=vehicles[i].last_frame).contains(&f))
            .collect();
        order.sort_by_key(|&i| vehicles[i].lane);
        for i in order {
            if !self.sprites.contains_key(&i) {
                let s = self.sprite(&vehicles[i]);
                self.sprites.insert(i, s);
            }
            let v = &mut vehicles[i];
            let sprite = &self.sprites[&i];
            v.motion_blur_px = 2 * sprite.blur as u32 + 1;
            let t = (f - v.first_frame) as f32 / (PASS_FRAMES - 1) as f32;
            let (scale, bottom) = if v.lane == 1 {
                (0.72 + 0.08 * t, 0.58 * h)
            } else {
                (0.85 + 0.15 * t, 0.99 * h)
            };
            let (dw, dh) = (
                (sprite.img.width as f32 * scale).round() as usize,
                (sprite.img.height as f32 * scale).round() as usize,
            );
            // From 60 % off-screen on one side to 60 % off-screen on the other.
            let travel = w + 0.2 * dw as f32;
            let left = if v.direction == "eastbound" {
                -0.6 * dw as f32 + t * travel
            } else {
                w - 0.4 * dw as f32 - t * travel
            };
            let top = bottom - dh as f32;
            let scaled = sprite.img.resize(dw, dh);
            let blurred = box_blur_h(&scaled, sprite.blur);
            for y in 0..dh {
                let oy = top as i64 + y as i64;
                if oy < 0 || oy >= h as i64 {
                    continue;
                }
                let sy = ((y as f32 + 0.5) / scale) as usize;
                for x in 0..dw {
                    let ox = left as i64 + x as i64;
                    if ox < 0 || ox >= w as i64 {
                        continue;
                    }
                    let sx = ((x as f32 + 0.5) / scale) as usize;
                    let a = sprite.alpha[sy.min(sprite.img.height - 1) * sprite.img.width
                        + sx.min(sprite.img.width - 1)];
                    if a <= 0.0 {
                        continue;
                    }
                    let p = blurred.get(x, y);
                    let q = out.get(ox as usize, oy as usize);
                    out.put(
                        ox as usize,
                        oy as usize,
                        [0, 1, 2].map(|k| (p[k] as f32 * a + q[k] as f32 * (1.0 - a)) as u8),
                    );
                }
            }
            // The plate's width on screen, counting only the part inside the frame.
            let xs: Vec<f64> = sprite
                .plate
                .iter()
                .map(|p| left as f64 + p.0 * scale as f64)
                .collect();
            let (x0, x1) = (
                xs.iter().cloned().fold(f64::MAX, f64::min),
                xs.iter().cloned().fold(f64::MIN, f64::max),
            );
            if x0 >= 0.0 && x1 < w as f64 {
                v.max_plate_width_px = v.max_plate_width_px.max((x1 - x0) as f32);
            }
        }
        // Sprites of vehicles that have left are not needed again.
        self.sprites.retain(|&i, _| vehicles[i].last_frame >= f);
        Ok(out)
    }
}

/// Paints `src` into the quadrilateral `quad` of `dst` (2x2 supersampled edges).
fn paint_quad(dst: &mut Rgb, src: &Rgb, quad: &[(f64, f64); 4], brightness: f32) {
    let rect = [
        (0.0, 0.0),
        (src.width as f64, 0.0),
        (src.width as f64, src.height as f64),
        (0.0, src.height as f64),
    ];
    let Some(to_src) = Homography::from_points(quad, &rect) else {
        return;
    };
    let xs = quad.iter().map(|p| p.0);
    let ys = quad.iter().map(|p| p.1);
    let (x0, x1) = (
        xs.clone().fold(f64::MAX, f64::min).floor().max(0.0) as usize,
        xs.fold(f64::MIN, f64::max).ceil() as usize,
    );
    let (y0, y1) = (
        ys.clone().fold(f64::MAX, f64::min).floor().max(0.0) as usize,
        ys.fold(f64::MIN, f64::max).ceil() as usize,
    );
    for y in y0..y1.min(dst.height) {
        for x in x0..x1.min(dst.width) {
            let mut acc = [0f32; 3];
            let mut n = 0f32;
            for (dx, dy) in [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)] {
                let (u, v) = to_src.apply((x as f64 + dx, y as f64 + dy));
                if u >= 0.0 && v >= 0.0 && u < src.width as f64 && v < src.height as f64 {
                    if let Some(c) = src.sample((u - 0.5).max(0.0), (v - 0.5).max(0.0)) {
                        for k in 0..3 {
                            acc[k] += c[k] * brightness;
                        }
                        n += 1.0;
                    }
                }
            }
            if n > 0.0 {
                let a = n / 4.0;
                let p = dst.get(x, y);
                dst.put(
                    x,
                    y,
                    [0, 1, 2]
                        .map(|k| ((acc[k] / n).min(255.0) * a + p[k] as f32 * (1.0 - a)) as u8),
                );
            }
        }
    }
}

/// Horizontal box blur of radius `r` (motion along the road).
fn box_blur_h(img: &Rgb, r: usize) -> Rgb {
    if r == 0 {
        return img.clone();
    }
    let mut out = img.clone();
    let w = img.width;
    for y in 0..img.height {
        let row = &img.data[y * w * 3..(y + 1) * w * 3];
        for x in 0..w {
            let (a, b) = (x.saturating_sub(r), (x + r).min(w - 1));
            let mut acc = [0u32; 3];
            for xx in a..=b {
                for k in 0..3 {
                    acc[k] += row[xx * 3 + k] as u32;
                }
            }
            let n = (b - a + 1) as u32;
            for k in 0..3 {
                out.data[(y * w + x) * 3 + k] = (acc[k] / n) as u8;
            }
        }
    }
    out
}

/// RGB frames in, an H.264 MP4 out (GStreamer: appsrc ! x264enc ! mp4mux).
pub struct VideoWriter {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    fps: u32,
}

impl VideoWriter {
    pub fn create(path: &Path, width: u32, height: u32, fps: u32) -> Result<VideoWriter, GenError> {
        gst::init().map_err(|e| GenError::Encode(e.to_string()))?;
        let desc = "appsrc name=src format=time ! videoconvert ! video/x-raw,format=I420 ! x264enc speed-preset=faster key-int-max=20 bitrate=6000 ! h264parse ! mp4mux ! filesink name=sink";
        let pipeline = gst::parse::launch(desc)
            .map_err(|e| GenError::Encode(e.to_string()))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| GenError::Encode("not a pipeline".into()))?;
        let sink = pipeline.by_name("sink").expect("named in the description");
        sink.set_property("location", path.to_string_lossy().as_ref());
        let src = pipeline
            .by_name("src")
            .expect("named in the description")
            .downcast::<gst_app::AppSrc>()
            .map_err(|_| GenError::Encode("appsrc missing".into()))?;
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", width as i32)
            .field("height", height as i32)
            .field("framerate", gst::Fraction::new(fps as i32, 1))
            .build();
        src.set_caps(Some(&caps));
        src.set_property("block", true);
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| GenError::Encode(e.to_string()))?;
        Ok(VideoWriter { pipeline, src, fps })
    }

    pub fn push(&mut self, img: &Rgb, index: u64) -> Result<(), GenError> {
        let mut buf = gst::Buffer::from_mut_slice(img.data.clone());
        {
            let b = buf.get_mut().expect("fresh buffer");
            let dur = 1_000_000_000u64 / self.fps as u64;
            b.set_pts(gst::ClockTime::from_nseconds(index * dur));
            b.set_duration(gst::ClockTime::from_nseconds(dur));
        }
        self.src
            .push_buffer(buf)
            .map(|_| ())
            .map_err(|e| GenError::Encode(format!("{e:?}")))
    }

    pub fn finish(self) -> Result<(), GenError> {
        let _ = self.src.end_of_stream();
        let bus = self.pipeline.bus().expect("pipelines have a bus");
        let result = loop {
            match bus.timed_pop(gst::ClockTime::from_seconds(60)) {
                None => break Err(GenError::Encode("no end of stream within 60 s".into())),
                Some(msg) => match msg.view() {
                    gst::MessageView::Eos(_) => break Ok(()),
                    gst::MessageView::Error(e) => {
                        break Err(GenError::Encode(e.error().to_string()))
                    }
                    _ => {}
                },
            }
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        result
    }
}
