//! The live view: each camera's latest processed frame, kept with what the node saw in it
//! (tracked boxes) so that an operator can look through the camera from the platform. A
//! camera only hands its frame over (an `Arc`, no copy, no encoding); the picture is made
//! when an aggregator asks over zenoh (`keys::camera_live`), at most once per
//! [`MIN_INTERVAL`] per camera and view (viewers in between get the same JPEG), off the
//! camera's thread. Nobody watching costs the camera one pointer swap per frame.
//!
//! Query parameters: `overlay=1` draws the zones and the tracked boxes with their ids
//! (a debug view), `width=N` scales the picture down to N pixels wide. The reply is the JPEG;
//! its attachment is the frame's time, UTC ms, as decimal text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use protocol::{keys, BBox, DeviceId};
use tracing::{debug, warn};

use crate::evidence::{jpeg, BannerFont};
use crate::frame::Frame;
use crate::zones::ZoneConfig;

/// The fastest one camera's picture is made again: five a second.
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// JPEG quality of the live view.
const QUALITY: u8 = 80;

/// A tracked object as the live view draws it.
#[derive(Debug, Clone)]
pub struct LiveBox {
    pub bbox: BBox,
    pub label: String,
    pub track_id: u64,
}

/// The latest frame of a camera and what was tracked in it.
#[derive(Clone)]
pub struct Snapshot {
    pub frame: Frame,
    pub boxes: Vec<LiveBox>,
}

/// A picture made: when, of which frame, which view, and its bytes.
struct Made {
    at: Instant,
    seq: u64,
    overlay: bool,
    width: u32,
    jpeg: Arc<Vec<u8>>,
}

/// One camera's live view.
pub struct LiveSlot {
    latest: Mutex<Option<Snapshot>>,
    zones: Mutex<Vec<ZoneConfig>>,
    made: Mutex<Option<Made>>,
}

impl LiveSlot {
    /// The camera's newest frame replaces the one before.
    pub fn offer(&self, snap: Snapshot) {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(snap);
    }

    /// The camera's zones, drawn in the debug view (set when the camera starts, and again
    /// when its configuration changes).
    pub fn set_zones(&self, zones: &[ZoneConfig]) {
        *self.zones.lock().unwrap_or_else(|e| e.into_inner()) = zones.to_vec();
    }

    /// The zones the camera runs with.
    pub fn zones(&self) -> Vec<ZoneConfig> {
        self.zones.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Width and height of the latest frame, once there is one.
    pub fn frame_size(&self) -> Option<(u32, u32)> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|s| (s.frame.width, s.frame.height))
    }

    /// The picture of the latest frame, made again only when the last one is older than
    /// [`MIN_INTERVAL`] or another view was asked. None before the first frame.
    pub fn picture(
        &self,
        font: Option<&BannerFont>,
        overlay: bool,
        width: u32,
    ) -> Option<(i64, Arc<Vec<u8>>)> {
        let snap = self
            .latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = made.as_ref() {
            if m.overlay == overlay
                && m.width == width
                && (m.seq == snap.frame.seq || m.at.elapsed() < MIN_INTERVAL)
            {
                return Some((snap.frame.time_ms, m.jpeg.clone()));
            }
        }
        let zones = self.zones.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let bytes = Arc::new(render(
            &snap,
            overlay.then_some(zones.as_slice()),
            font,
            width,
        ));
        *made = Some(Made {
            at: Instant::now(),
            seq: snap.frame.seq,
            overlay,
            width,
            jpeg: bytes.clone(),
        });
        Some((snap.frame.time_ms, bytes))
    }
}

/// The live views of a node's cameras, by camera id.
#[derive(Default)]
pub struct LiveFrames {
    slots: Mutex<HashMap<String, Arc<LiveSlot>>>,
}

impl LiveFrames {
    /// The slot of `camera`, made on first use.
    pub fn slot(&self, camera: &str) -> Arc<LiveSlot> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(camera.to_string())
            .or_insert_with(|| {
                Arc::new(LiveSlot {
                    latest: Mutex::new(None),
                    zones: Mutex::new(Vec::new()),
                    made: Mutex::new(None),
                })
            })
            .clone()
    }

    pub(crate) fn get(&self, camera: &str) -> Option<Arc<LiveSlot>> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(camera)
            .cloned()
    }
}

/// Zone colours of the debug view, by kind.
fn zone_colour(z: &ZoneConfig) -> [u8; 3] {
    use crate::zones::ZoneKind::*;
    match z.kind {
        Crosswalk => [255, 220, 0],
        WaitingArea => [0, 200, 255],
        Lane => [120, 255, 120],
        Restricted => [255, 120, 255],
    }
}

/// The frame as a JPEG, `width` pixels wide at most (0: as it is), with the zones and boxes
/// drawn when `zones` is given.
pub fn render(
    snap: &Snapshot,
    zones: Option<&[ZoneConfig]>,
    font: Option<&BannerFont>,
    width: u32,
) -> Vec<u8> {
    let f = &snap.frame;
    let (w, h) = (f.width, f.height);
    if zones.is_none() && (width == 0 || width >= w) {
        // Nothing drawn, nothing scaled: the frame's pixels as they are.
        return crate::evidence::jpeg_rgb(&f.rgb, w, h, QUALITY);
    }
    let mut img =
        RgbImage::from_raw(w, h, f.rgb.to_vec()).expect("a frame holds width x height RGB pixels");
    if let Some(zones) = zones {
        for z in zones {
            let pts: Vec<(f32, f32)> = z
                .polygon
                .iter()
                .map(|[x, y]| (x * w as f32, y * h as f32))
                .collect();
            let c = Rgb(zone_colour(z));
            for i in 0..pts.len() {
                let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
                for (ox, oy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
                    imageproc::drawing::draw_line_segment_mut(
                        &mut img,
                        (a.0 + ox, a.1 + oy),
                        (b.0 + ox, b.1 + oy),
                        c,
                    );
                }
            }
        }
        let px = (w as f32 / 60.0).clamp(12.0, 28.0);
        for b in &snap.boxes {
            let c = Rgb([255, 60, 60]);
            let r = imageproc::rect::Rect::at(b.bbox.x1 as i32, b.bbox.y1 as i32).of_size(
                b.bbox.width().max(1.0) as u32,
                b.bbox.height().max(1.0) as u32,
            );
            imageproc::drawing::draw_hollow_rect_mut(&mut img, r, c);
            let r2 = imageproc::rect::Rect::at(b.bbox.x1 as i32 + 1, b.bbox.y1 as i32 + 1).of_size(
                (b.bbox.width() - 2.0).max(1.0) as u32,
                (b.bbox.height() - 2.0).max(1.0) as u32,
            );
            imageproc::drawing::draw_hollow_rect_mut(&mut img, r2, c);
            if let Some(font) = font {
                imageproc::drawing::draw_text_mut(
                    &mut img,
                    c,
                    b.bbox.x1 as i32,
                    (b.bbox.y1 - px - 2.0).max(0.0) as i32,
                    ab_glyph::PxScale::from(px),
                    &font.0,
                    &format!("{} #{}", b.label, b.track_id),
                );
            }
        }
    }
    if width > 0 && width < w {
        let dh = (h as u64 * width as u64 / w as u64).max(1) as u32;
        img = image::imageops::resize(&img, width, dh, image::imageops::FilterType::Triangle);
    }
    jpeg(&img, QUALITY)
}

/// Answers the aggregators' live-view queries for the node's cameras at `checkpoint`.
pub async fn serve(
    session: &zenoh::Session,
    checkpoint: &DeviceId,
    frames: Arc<LiveFrames>,
    font: Option<BannerFont>,
) -> zenoh::Result<tokio::task::JoinHandle<()>> {
    let queryable = session.declare_queryable(keys::live_of(checkpoint)).await?;
    Ok(tokio::spawn(async move {
        while let Ok(q) = queryable.recv_async().await {
            let key = q.key_expr().as_str().to_string();
            // ckpt/<city>/<county>/<checkpoint>/<camera>/live
            let camera = key.rsplit('/').nth(1).unwrap_or("").to_string();
            let params = q.parameters().clone();
            let overlay = params
                .get("overlay")
                .is_some_and(|v| v == "1" || v == "true");
            let width = params
                .get("width")
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0);
            let Some(slot) = frames.get(&camera) else {
                let _ = q
                    .reply_err(format!("no camera {camera} on this node"))
                    .await;
                continue;
            };
            let font = font.clone();
            let t0 = Instant::now();
            let made =
                tokio::task::spawn_blocking(move || slot.picture(font.as_ref(), overlay, width))
                    .await;
            match made {
                Ok(Some((time_ms, bytes))) => {
                    debug!(
                        camera,
                        overlay,
                        width,
                        bytes = bytes.len(),
                        ms = t0.elapsed().as_secs_f64() * 1e3,
                        "Live view answered"
                    );
                    if let Err(e) = q
                        .reply(key.as_str(), bytes.as_slice())
                        .attachment(time_ms.to_string())
                        .await
                    {
                        warn!(camera, error = %e, "Live view reply not sent");
                    }
                }
                Ok(None) => {
                    let _ = q
                        .reply_err(format!("camera {camera} has no frame yet"))
                        .await;
                }
                Err(e) => {
                    let _ = q
                        .reply_err(format!("the live view of camera {camera} failed: {e}"))
                        .await;
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(seq: u64, grey: u8) -> Snapshot {
        Snapshot {
            frame: Frame {
                seq,
                time_ms: 1000 + seq as i64 * 100,
                width: 64,
                height: 48,
                rgb: Arc::new(vec![grey; 64 * 48 * 3]),
            },
            boxes: vec![LiveBox {
                bbox: BBox::new(10.0, 10.0, 30.0, 40.0),
                label: "person".into(),
                track_id: 3,
            }],
        }
    }

    /// A picture is made at most once per interval and view: viewers in between get the
    /// same bytes, a new frame after the interval a new picture.
    #[test]
    fn pictures_are_made_at_a_bounded_rate() {
        let frames = LiveFrames::default();
        let slot = frames.slot("cam");
        assert!(slot.picture(None, false, 0).is_none(), "no frame yet");
        slot.offer(snap(1, 40));
        let (t1, a) = slot.picture(None, false, 0).unwrap();
        assert_eq!(t1, 1100);
        slot.offer(snap(2, 200));
        let (_, b) = slot.picture(None, false, 0).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "within the interval: the same picture");
        let (_, c) = slot.picture(None, true, 32).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "another view is made");
        let small = image::load_from_memory(&c).unwrap();
        assert_eq!((small.width(), small.height()), (32, 24));
        std::thread::sleep(MIN_INTERVAL + Duration::from_millis(20));
        let (t2, d) = slot.picture(None, false, 0).unwrap();
        assert_eq!(t2, 1200);
        assert!(!Arc::ptr_eq(&a, &d), "a new frame after the interval");
        assert!(Arc::ptr_eq(&frames.slot("cam"), &slot));
    }
}
