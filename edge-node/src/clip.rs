//! Violation clips: the frames the evidence ring buffer holds around a violation, encoded as
//! H.264 in MP4 (GStreamer: appsrc ! videoconvert ! videoscale ! encoder ! mp4mux) so that a
//! reviewer's browser plays them. The frames are the camera's own, not redrawn: the clip is
//! the unaltered video, the pictures carry the banner.
//!
//! Encoding takes a few hundred milliseconds, so it runs on one worker thread per camera
//! ([`ClipMaker`]), never on the camera's thread. The violation's event waits for its clip
//! (it names the clip's sha256) and is handed to the sink by the worker; a clip that cannot
//! be made is logged and the event goes without it, so nothing is lost.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use protocol::{DeviceId, Event, EvidenceRef};
use sha2::{Digest, Sha256};

use crate::camera::EventSink;
use crate::crossing::Outgoing;
use crate::evidence::ClipConfig;
use crate::frame::Frame;

/// Encoders tried in order when none is configured.
const DEFAULT_ENCODERS: [&str; 2] = ["x264enc", "openh264enc"];
/// Violations waiting for their clip per camera; beyond it the event goes without one. A
/// waiting clip holds its frames (a 6 s clip at 10 FPS of 1080p is 60 frames, 373 MB), so
/// few may wait; a clip is encoded in well under its own length.
const QUEUE: usize = 3;

/// The GStreamer element that encodes clips, or what to install.
pub fn encoder_for(cfg: &ClipConfig) -> Result<String, String> {
    gst::init()
        .map_err(|e| format!("GStreamer failed to initialise: {e}; run scripts/setup.sh"))?;
    let have = |n: &str| gst::ElementFactory::find(n).is_some();
    match &cfg.encoder {
        Some(name) if have(name) => Ok(name.clone()),
        Some(name) => Err(format!(
            "encoder = '{name}' is not a GStreamer element on this machine; install its plugin or leave encoder out (x264enc from gstreamer1.0-plugins-ugly)"
        )),
        None => DEFAULT_ENCODERS
            .iter()
            .find(|n| have(n))
            .map(|n| n.to_string())
            .ok_or_else(|| {
                "no H.264 encoder (x264enc or openh264enc): install gstreamer1.0-plugins-ugly (scripts/setup.sh does), or set enabled = false".to_string()
            }),
    }
}

/// The frames a clip keeps: at most `fps` a second, all of the size of the last frame (a
/// source that restarted at another size mid-clip keeps only its newest part).
pub fn pick_frames(frames: &[Frame], fps: f64) -> Vec<&Frame> {
    let Some(last) = frames.last() else {
        return vec![];
    };
    let interval = 1000.0 / fps;
    let mut kept: Vec<&Frame> = Vec::new();
    for f in frames
        .iter()
        .filter(|f| (f.width, f.height) == (last.width, last.height))
    {
        match kept.last() {
            Some(k) if ((f.time_ms - k.time_ms) as f64) < interval - 1.0 => {}
            Some(k) if f.time_ms <= k.time_ms => {}
            _ => kept.push(f),
        }
    }
    kept
}

/// The clip's size: the frame's, or scaled down to `max_width`, both even (H.264 4:2:0).
fn out_size(w: u32, h: u32, max_width: u32) -> (u32, u32) {
    let (w2, h2) = if w > max_width {
        (
            max_width,
            (h as f64 * max_width as f64 / w as f64).round() as u32,
        )
    } else {
        (w, h)
    };
    ((w2 & !1).max(2), (h2 & !1).max(2))
}

static CLIP_FILES: AtomicU64 = AtomicU64::new(0);

/// Encodes `frames` (oldest first) as an H.264 MP4 with their own timing.
pub fn encode_mp4(frames: &[Frame], cfg: &ClipConfig) -> Result<Vec<u8>, String> {
    let picked = pick_frames(frames, cfg.fps);
    let Some(first) = picked.first() else {
        return Err("no frames held for the clip".into());
    };
    let encoder = encoder_for(cfg)?;
    let (w, h) = (first.width, first.height);
    let (ow, oh) = out_size(w, h, cfg.max_width);
    let enc = match encoder.as_str() {
        // One thread: the cameras' inference has the cores; a clip is not urgent.
        "x264enc" => "x264enc speed-preset=veryfast tune=zerolatency threads=1 key-int-max=30 pass=qual quantizer=25".to_string(),
        other => other.to_string(),
    };
    let path: PathBuf = std::env::temp_dir().join(format!(
        "traffic-clip-{}-{}.mp4",
        std::process::id(),
        CLIP_FILES.fetch_add(1, Ordering::Relaxed)
    ));
    let desc = format!(
        "appsrc name=src format=time ! videoconvert ! videoscale ! video/x-raw,format=I420,width={ow},height={oh} ! {enc} ! h264parse ! mp4mux faststart=true ! filesink name=sink"
    );
    let pipeline = gst::parse::launch(&desc)
        .map_err(|e| format!("clip pipeline '{desc}': {e}"))?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "clip pipeline is not a pipeline".to_string())?;
    let sink = pipeline.by_name("sink").expect("named in the description");
    sink.set_property("location", path.to_string_lossy().as_ref());
    let src = pipeline
        .by_name("src")
        .expect("named in the description")
        .downcast::<gst_app::AppSrc>()
        .map_err(|_| "appsrc missing".to_string())?;
    let fps_n = cfg.fps.round().max(1.0) as i32;
    src.set_caps(Some(
        &gst::Caps::builder("video/x-raw")
            .field("format", "RGB")
            .field("width", w as i32)
            .field("height", h as i32)
            .field("framerate", gst::Fraction::new(fps_n, 1))
            .build(),
    ));
    src.set_property("block", true);
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| format!("clip pipeline did not start: {e}"))?;
        let t0 = first.time_ms;
        let default_ms = (1000.0 / cfg.fps).round() as u64;
        for (i, f) in picked.iter().enumerate() {
            let dur_ms = picked
                .get(i + 1)
                .map(|n| (n.time_ms - f.time_ms) as u64)
                .unwrap_or(default_ms);
            // The frame's pixels are shared with the ring; the buffer borrows a reference.
            let mut buf = gst::Buffer::from_slice(ArcBytes(f.rgb.clone()));
            {
                let b = buf.get_mut().expect("fresh buffer");
                b.set_pts(gst::ClockTime::from_mseconds((f.time_ms - t0) as u64));
                b.set_duration(gst::ClockTime::from_mseconds(dur_ms));
            }
            src.push_buffer(buf)
                .map_err(|e| format!("clip encoder refused a frame: {e:?}"))?;
        }
        let _ = src.end_of_stream();
        let bus = pipeline.bus().expect("pipelines have a bus");
        loop {
            match bus.timed_pop(gst::ClockTime::from_seconds(60)) {
                None => return Err("clip not finished within 60 s".to_string()),
                Some(msg) => match msg.view() {
                    gst::MessageView::Eos(_) => return Ok(()),
                    gst::MessageView::Error(e) => {
                        return Err(format!("clip encoder: {}", e.error()))
                    }
                    _ => {}
                },
            }
        }
    })();
    let _ = pipeline.set_state(gst::State::Null);
    let bytes = result.and_then(|()| {
        std::fs::read(&path).map_err(|e| format!("clip file {}: {e}", path.display()))
    });
    let _ = std::fs::remove_file(&path);
    bytes
}

/// A frame's shared pixels as a GStreamer buffer's memory.
struct ArcBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A violation waiting for its clip.
pub struct ClipJob {
    pub frames: Vec<Frame>,
    pub event: Box<Event>,
    pub image_id: String,
    pub checkpoint: DeviceId,
    pub camera: DeviceId,
}

impl ClipJob {
    /// The event as it goes when no clip can be made.
    pub fn without_clip(self) -> Outgoing {
        Outgoing::Event(self.event)
    }
}

/// What the worker did, for the camera's summary.
#[derive(Debug, Default)]
pub struct ClipCounts {
    pub made: AtomicU64,
    pub failed: AtomicU64,
    pub bytes: AtomicU64,
    pub encode_ms: AtomicU64,
}

/// One camera's clip worker.
pub struct ClipMaker {
    tx: Option<SyncSender<ClipJob>>,
    worker: Option<JoinHandle<()>>,
    pub counts: Arc<ClipCounts>,
}

impl ClipMaker {
    pub fn spawn(cfg: ClipConfig, sink: Arc<dyn EventSink>, camera: &str) -> ClipMaker {
        let (tx, rx) = sync_channel::<ClipJob>(QUEUE);
        let counts = Arc::new(ClipCounts::default());
        let c = counts.clone();
        let worker = std::thread::Builder::new()
            .name(format!("clip-{camera}"))
            .spawn(move || {
                for job in rx {
                    let t0 = std::time::Instant::now();
                    let ClipJob {
                        frames,
                        mut event,
                        image_id,
                        checkpoint,
                        camera,
                    } = job;
                    match encode_mp4(&frames, &cfg) {
                        Ok(mp4) => {
                            drop(frames);
                            c.made.fetch_add(1, Ordering::Relaxed);
                            c.bytes.fetch_add(mp4.len() as u64, Ordering::Relaxed);
                            c.encode_ms
                                .fetch_add(t0.elapsed().as_millis() as u64, Ordering::Relaxed);
                            event.evidence.push(EvidenceRef {
                                image_id: image_id.clone(),
                                sha256: hex::encode(Sha256::digest(&mp4)),
                                role: "clip".into(),
                            });
                            if sink
                                .send(Outgoing::Evidence {
                                    checkpoint,
                                    camera,
                                    image_id,
                                    jpeg: Arc::new(mp4),
                                })
                                .is_err()
                            {
                                tracing::warn!(event = %event.event_id, "Clip not sent: the publisher has stopped");
                            }
                        }
                        Err(e) => {
                            c.failed.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(event = %event.event_id, error = %e, "Violation clip not made; the event goes with its pictures only");
                        }
                    }
                    if sink.send(Outgoing::Event(event)).is_err() {
                        tracing::error!("Violation event not sent: the publisher has stopped");
                    }
                }
            })
            .expect("a thread starts");
        ClipMaker {
            tx: Some(tx),
            worker: Some(worker),
            counts,
        }
    }

    /// Queues a violation; when the worker is that far behind, Err gives the job back (the
    /// caller sends the event without a clip rather than stall the camera).
    pub fn submit(&self, job: ClipJob) -> Result<(), ClipJob> {
        match self.tx.as_ref().expect("open until finish").try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => Err(j),
        }
    }

    /// Waits for the queued clips and their events to be handed on.
    pub fn finish(mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

impl Drop for ClipMaker {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u64, t: i64, w: u32, h: u32) -> Frame {
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        // A moving bright square, so that the encoder has something to code.
        let x0 = (seq as u32 * 8) % (w - 16);
        for y in 4..20 {
            for x in x0..x0 + 16 {
                let i = ((y * w + x) * 3) as usize;
                rgb[i..i + 3].copy_from_slice(&[250, 200, 40]);
            }
        }
        Frame {
            seq,
            time_ms: t,
            width: w,
            height: h,
            rgb: Arc::new(rgb),
        }
    }

    #[test]
    fn frames_are_thinned_to_the_rate_and_kept_at_one_size() {
        let fs: Vec<Frame> = (0..30)
            .map(|i| frame(i, 1000 + i as i64 * 40, 64, 48))
            .collect();
        let kept = pick_frames(&fs, 10.0);
        // 25 FPS to 10: every 100 ms (the 120 ms steps of 40 ms frames).
        assert_eq!(
            kept.len(),
            10,
            "{:?}",
            kept.iter().map(|f| f.time_ms).collect::<Vec<_>>()
        );
        let mut mixed = fs.clone();
        mixed.push(frame(30, 2300, 32, 24));
        assert_eq!(pick_frames(&mixed, 10.0).len(), 1);
        assert!(pick_frames(&[], 10.0).is_empty());
        assert_eq!(out_size(1920, 1080, 1280), (1280, 720));
        assert_eq!(out_size(765, 431, 1280), (764, 430));
    }

    #[test]
    fn a_clip_is_an_mp4_of_the_frames() {
        let fs: Vec<Frame> = (0..20)
            .map(|i| frame(i, 5000 + i as i64 * 100, 160, 96))
            .collect();
        let mp4 = encode_mp4(&fs, &ClipConfig::default()).expect("x264enc is installed by setup");
        assert_eq!(&mp4[4..8], b"ftyp", "an MP4 starts with its ftyp box");
        // faststart: the index (moov) comes before the media (mdat), so a browser plays it
        // while it loads.
        let find = |tag: &[u8]| mp4.windows(4).position(|w| w == tag);
        assert!(find(b"moov").unwrap() < find(b"mdat").unwrap());
        assert!(find(b"avc1").is_some(), "H.264 video");
        let bad = ClipConfig {
            encoder: Some("no_such_encoder".into()),
            ..ClipConfig::default()
        };
        let e = encoder_for(&bad).unwrap_err();
        assert!(e.contains("no_such_encoder"), "{e}");
        assert!(encode_mp4(&[], &ClipConfig::default()).is_err());
    }
}
