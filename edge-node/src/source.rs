//! Stage `decode`: a camera source decoded by GStreamer into RGB [`Frame`]s that carry their
//! frame time.
//!
//! Input: a [`SourceConfig`] (video file, RTSP URL, or folder of images). Output: frames in
//! order, `Ok(None)` at the end of a file. Errors name the input and say what to do. Pipeline
//! errors are read from the bus, never panicked on. Live streams use an appsink that drops the
//! oldest buffers when inference falls behind; files apply back-pressure instead, so that
//! every frame of a file is processed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use crate::config::SourceConfig;
use crate::frame::Frame;
use protocol::time::{now_ms, parse_rfc3339_ms};

/// Which video decoders GStreamer's `decodebin` picks (`[runtime] decoder`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderChoice {
    #[default]
    Auto,
    Software,
    Nvidia,
    Vaapi,
}

/// Hardware video decoders by family, as their GStreamer elements are named.
const NVIDIA_DECODERS: [&str; 6] = [
    "nvh264dec",
    "nvh265dec",
    "nvvp9dec",
    "nvav1dec",
    "nvh264sldec",
    "nvh265sldec",
];
const VAAPI_DECODERS: [&str; 8] = [
    "vah264dec",
    "vah265dec",
    "vavp9dec",
    "vaav1dec",
    "vaapih264dec",
    "vaapih265dec",
    "vaapivp9dec",
    "vaapidecodebin",
];

/// Ranks the decoders for `choice` (once per process, before any pipeline is built) and
/// says what was chosen: `Ok(description)`, or Err naming what is missing when a hardware
/// family was required.
pub fn choose_decoders(choice: DecoderChoice) -> Result<String, String> {
    gst::init()
        .map_err(|e| format!("GStreamer failed to initialise: {e}; run scripts/setup.sh"))?;
    let registry = gst::Registry::get();
    let present = |names: &[&str]| -> Vec<gst::PluginFeature> {
        names
            .iter()
            .filter_map(|n| registry.lookup_feature(n))
            .collect()
    };
    let (nvidia, vaapi) = (present(&NVIDIA_DECODERS), present(&VAAPI_DECODERS));
    let names = |fs: &[gst::PluginFeature]| {
        fs.iter()
            .map(|f| f.name().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rank = |fs: &[gst::PluginFeature], r: gst::Rank| {
        for f in fs {
            f.set_rank(r);
        }
    };
    let preferred = gst::Rank::PRIMARY + 100;
    match choice {
        DecoderChoice::Software => {
            rank(&nvidia, gst::Rank::NONE);
            rank(&vaapi, gst::Rank::NONE);
            Ok("software (asked for)".into())
        }
        DecoderChoice::Nvidia if nvidia.is_empty() => Err(format!(
            "runtime.decoder = \"nvidia\" but no NVIDIA decoder plugin is installed ({} missing): install gstreamer1.0-plugins-bad with the NVIDIA driver, or set decoder = \"auto\"",
            NVIDIA_DECODERS[0]
        )),
        DecoderChoice::Vaapi if vaapi.is_empty() => Err(format!(
            "runtime.decoder = \"vaapi\" but no VA-API decoder plugin is installed ({} and {} missing): install gstreamer1.0-plugins-bad (va) or gstreamer1.0-vaapi with the GPU's VA driver, or set decoder = \"auto\"",
            VAAPI_DECODERS[0], VAAPI_DECODERS[4]
        )),
        DecoderChoice::Nvidia | DecoderChoice::Auto if !nvidia.is_empty() => {
            rank(&nvidia, preferred);
            rank(&vaapi, gst::Rank::NONE);
            Ok(format!("hardware: NVIDIA ({})", names(&nvidia)))
        }
        DecoderChoice::Vaapi | DecoderChoice::Auto if !vaapi.is_empty() => {
            rank(&vaapi, preferred);
            Ok(format!("hardware: VA-API ({})", names(&vaapi)))
        }
        _ => Ok(format!(
            "software: no hardware decoder plugin ({} or {}) is installed",
            NVIDIA_DECODERS[0], VAAPI_DECODERS[0]
        )),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{input}: {message}")]
    Open { input: String, message: String },
    #[error("{input}: decoding failed: {message}")]
    Stream { input: String, message: String },
    #[error("{input}: no frame for {secs} s; the camera or network is down")]
    Stalled { input: String, secs: u64 },
}

/// Anything that yields frames.
pub trait FrameSource: Send {
    /// The next frame; `Ok(None)` at the end of a file or folder.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;
    /// How long the recording lasts, ms, when the source has an end (files).
    fn duration_ms(&self) -> Option<i64> {
        None
    }
}

pub fn open(
    cfg: &SourceConfig,
    stall_timeout: Duration,
) -> Result<Box<dyn FrameSource>, SourceError> {
    gst::init().map_err(|e| SourceError::Open {
        input: cfg.describe(),
        message: format!("GStreamer failed to initialise: {e}; run scripts/setup.sh"),
    })?;
    match cfg {
        SourceConfig::File {
            path,
            start_time,
            realtime,
        } => {
            check_file(path, &cfg.describe())?;
            let base = start_time.as_deref().and_then(parse_rfc3339_ms);
            Ok(Box::new(GstSource::start(
                cfg.describe(),
                stall_timeout,
                Kind::File {
                    path: path.clone(),
                    realtime: *realtime,
                },
                base,
            )?))
        }
        SourceConfig::Rtsp { url, latency_ms } => Ok(Box::new(GstSource::start(
            cfg.describe(),
            stall_timeout,
            Kind::Rtsp {
                url: url.clone(),
                latency_ms: *latency_ms,
            },
            None,
        )?)),
        SourceConfig::Images {
            dir,
            fps,
            start_time,
        } => Ok(Box::new(ImageFolder::open(
            dir,
            *fps,
            start_time
                .as_deref()
                .and_then(parse_rfc3339_ms)
                .unwrap_or_else(now_ms),
            cfg.describe(),
        )?)),
    }
}

fn check_file(path: &Path, input: &str) -> Result<(), SourceError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(SourceError::Open { input: input.into(), message: "is not a regular file".into() }),
        Err(e) => Err(SourceError::Open {
            input: input.into(),
            message: format!("{e}; check the camera's source.path (relative paths start at the working directory)"),
        }),
    }
}

enum Kind {
    File { path: PathBuf, realtime: bool },
    Rtsp { url: String, latency_ms: u32 },
}

struct GstSource {
    input: String,
    pipeline: gst::Pipeline,
    sink: gst_app::AppSink,
    live: bool,
    /// UTC ms of PTS 0 (files), or of the first frame's PTS (live).
    base_ms: Option<i64>,
    first_pts_ms: Option<i64>,
    /// The last frame's timestamp, ms: at the end of a file, how far it played.
    last_pts_ms: Option<i64>,
    seq: u64,
    last_frame_at: Instant,
    stall_timeout: Duration,
}

fn bus_error(pipeline: &gst::Pipeline) -> Option<String> {
    let bus = pipeline.bus()?;
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = msg.view() {
            let src = e.src().map(|s| s.name().to_string()).unwrap_or_default();
            // The debug text names GStreamer source files; useful to developers only.
            tracing::debug!(element = %src, debug = ?e.debug(), "GStreamer error detail");
            let mut m = e.error().to_string();
            if src.starts_with("typefind") || m.contains("type of stream") {
                m.push_str(" (is it a video file GStreamer can decode? scripts/setup.sh installs the decoders)");
            } else if src.starts_with("src") {
                m.push_str(" (check the source path or URL and that the camera is reachable)");
            }
            return Some(m);
        }
    }
    None
}

impl GstSource {
    fn start(
        input: String,
        stall_timeout: Duration,
        kind: Kind,
        base_ms: Option<i64>,
    ) -> Result<GstSource, SourceError> {
        let open_err = |message: String| SourceError::Open {
            input: input.clone(),
            message,
        };
        let (desc, live, sync) = match &kind {
            Kind::File { realtime, .. } => ("filesrc name=src ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink", false, *realtime),
            Kind::Rtsp { .. } => ("rtspsrc name=src ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink", true, false),
        };
        let pipeline = gst::parse::launch(desc)
            .map_err(|e| open_err(format!("cannot build the GStreamer pipeline: {e}; run scripts/setup.sh to install the GStreamer plugins")))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| open_err("pipeline is not a gst::Pipeline".into()))?;
        // Which decoder decodebin picked, once per source (software or hardware).
        let described = input.clone();
        pipeline.connect("deep-element-added", false, move |args| {
            let element = args.get(2).and_then(|v| v.get::<gst::Element>().ok());
            if let Some(factory) = element.as_ref().and_then(|e| e.factory()) {
                let klass = factory.metadata("klass").unwrap_or_default();
                if klass.contains("Decoder") && klass.contains("Video") {
                    tracing::info!(input = %described, decoder = %factory.name(), "Video decoder");
                }
            }
            None
        });
        let src = pipeline.by_name("src").expect("named in the description");
        match &kind {
            Kind::File { path, .. } => {
                src.set_property("location", path.to_string_lossy().as_ref())
            }
            Kind::Rtsp { url, latency_ms } => {
                src.set_property("location", url.as_str());
                src.set_property("latency", *latency_ms);
            }
        }
        let sink = pipeline
            .by_name("sink")
            .expect("named in the description")
            .downcast::<gst_app::AppSink>()
            .map_err(|_| open_err("sink is not an appsink".into()))?;
        sink.set_sync(sync);
        sink.set_max_buffers(if live { 2 } else { 4 });
        sink.set_drop(live);
        if let Err(e) = pipeline.set_state(gst::State::Playing) {
            let detail = bus_error(&pipeline).unwrap_or_else(|| e.to_string());
            let _ = pipeline.set_state(gst::State::Null);
            return Err(open_err(detail));
        }
        Ok(GstSource {
            input,
            pipeline,
            sink,
            live,
            base_ms,
            first_pts_ms: None,
            last_pts_ms: None,
            seq: 0,
            last_frame_at: Instant::now(),
            stall_timeout,
        })
    }

    fn frame_time(&mut self, pts_ms: Option<i64>) -> i64 {
        let pts = pts_ms.unwrap_or(0);
        if self.first_pts_ms.is_none() {
            self.first_pts_ms = Some(pts);
            if self.base_ms.is_none() {
                // Files: frame 0 shows the opening time. Live: the first frame shows now.
                self.base_ms = Some(now_ms() - if self.live { pts } else { 0 });
            }
        }
        self.base_ms.unwrap_or(0) + pts
    }
}

/// Whether a file whose last frame is at `last_ms` ended short of its `total_ms`: by more
/// than a second, or 2 % of a long file (the last frame starts one frame before the end).
fn cut_short(last_ms: i64, total_ms: i64) -> bool {
    last_ms + (total_ms / 50).max(1000) < total_ms
}

/// Copies a sample's RGB rows (stride-padded) into a packed buffer.
fn sample_to_rgb(sample: &gst::Sample) -> Result<(u32, u32, Vec<u8>, Option<i64>), String> {
    let caps = sample.caps().ok_or("sample without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).map_err(|e| format!("bad caps: {e}"))?;
    let buffer = sample.buffer().ok_or("sample without buffer")?;
    let pts_ms = buffer.pts().map(|p| p.mseconds() as i64);
    let map = buffer
        .map_readable()
        .map_err(|e| format!("cannot map buffer: {e}"))?;
    let (w, h) = (info.width(), info.height());
    let stride = info.stride()[0] as usize;
    let row = w as usize * 3;
    let data = map.as_slice();
    if data.len() < stride * (h as usize - 1) + row {
        return Err(format!(
            "buffer of {} bytes is too small for {w}x{h}",
            data.len()
        ));
    }
    let mut rgb = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        rgb.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    Ok((w, h, rgb, pts_ms))
}

impl FrameSource for GstSource {
    fn duration_ms(&self) -> Option<i64> {
        if self.live {
            return None;
        }
        self.pipeline
            .query_duration::<gst::ClockTime>()
            .map(|d| d.mseconds() as i64)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if let Some(sample) = self
                .sink
                .try_pull_sample(gst::ClockTime::from_mseconds(100))
            {
                let (width, height, rgb, pts_ms) =
                    sample_to_rgb(&sample).map_err(|message| SourceError::Stream {
                        input: self.input.clone(),
                        message,
                    })?;
                if pts_ms.is_some() {
                    self.last_pts_ms = pts_ms;
                }
                let time_ms = self.frame_time(pts_ms);
                let seq = self.seq;
                self.seq += 1;
                self.last_frame_at = Instant::now();
                return Ok(Some(Frame {
                    seq,
                    time_ms,
                    width,
                    height,
                    rgb: Arc::new(rgb),
                }));
            }
            if let Some(message) = bus_error(&self.pipeline) {
                return Err(SourceError::Stream {
                    input: self.input.clone(),
                    message,
                });
            }
            if self.sink.is_eos() {
                if self.live {
                    return Err(SourceError::Stream {
                        input: self.input.clone(),
                        message: "the stream ended".into(),
                    });
                }
                if self.seq == 0 {
                    return Err(SourceError::Stream {
                        input: self.input.clone(),
                        message: "ended without a single video frame; is it a video?".into(),
                    });
                }
                // A file cut short (a copy interrupted, a recorder that lost power) plays
                // up to the cut and ends as if whole: its header still names the whole
                // length.
                if let (Some(total), Some(last)) = (self.duration_ms(), self.last_pts_ms) {
                    if cut_short(last, total) {
                        return Err(SourceError::Stream {
                            input: self.input.clone(),
                            message: format!(
                                "ended at {:.1} s of its {:.1} s: the file is cut short (truncated or damaged); its {} frames up to there were processed",
                                last as f64 / 1000.0,
                                total as f64 / 1000.0,
                                self.seq
                            ),
                        });
                    }
                }
                return Ok(None);
            }
            if self.last_frame_at.elapsed() > self.stall_timeout {
                return Err(SourceError::Stalled {
                    input: self.input.clone(),
                    secs: self.stall_timeout.as_secs(),
                });
            }
        }
    }
}

impl Drop for GstSource {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// A folder of still images taken in name order; an image that fails to decode is skipped
/// with a warning (one bad file must not stop the camera).
struct ImageFolder {
    input: String,
    files: Vec<PathBuf>,
    next: usize,
    fps: f64,
    base_ms: i64,
    seq: u64,
}

impl ImageFolder {
    fn open(dir: &Path, fps: f64, base_ms: i64, input: String) -> Result<ImageFolder, SourceError> {
        let rd = std::fs::read_dir(dir).map_err(|e| SourceError::Open {
            input: input.clone(),
            message: format!("{e}; check the camera's source.dir"),
        })?;
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png")
                })
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(SourceError::Open {
                input,
                message: "holds no .jpg, .jpeg or .png files".into(),
            });
        }
        Ok(ImageFolder {
            input,
            files,
            next: 0,
            fps,
            base_ms,
            seq: 0,
        })
    }
}

fn decode_image(path: &Path) -> Result<(u32, u32, Vec<u8>), String> {
    let pipeline = gst::parse::launch(
        "filesrc name=src ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink",
    )
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline".to_string())?;
    pipeline
        .by_name("src")
        .expect("named")
        .set_property("location", path.to_string_lossy().as_ref());
    let sink = pipeline
        .by_name("sink")
        .expect("named")
        .downcast::<gst_app::AppSink>()
        .map_err(|_| "not an appsink")?;
    sink.set_sync(false);
    let result = (|| {
        pipeline
            .set_state(gst::State::Playing)
            .map_err(|e| bus_error(&pipeline).unwrap_or_else(|| e.to_string()))?;
        match sink.try_pull_preroll(gst::ClockTime::from_seconds(5)) {
            Some(sample) => sample_to_rgb(&sample).map(|(w, h, rgb, _)| (w, h, rgb)),
            None => Err(bus_error(&pipeline).unwrap_or_else(|| "no image decoded".into())),
        }
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

impl FrameSource for ImageFolder {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        while self.next < self.files.len() {
            let path = self.files[self.next].clone();
            self.next += 1;
            let index = self.next - 1;
            match decode_image(&path) {
                Ok((width, height, rgb)) => {
                    let seq = self.seq;
                    self.seq += 1;
                    let time_ms = self.base_ms + (index as f64 * 1000.0 / self.fps).round() as i64;
                    return Ok(Some(Frame {
                        seq,
                        time_ms,
                        width,
                        height,
                        rgb: Arc::new(rgb),
                    }));
                }
                Err(e) => {
                    tracing::warn!(input = %self.input, file = %path.display(), error = %e, "Skipping an image that does not decode")
                }
            }
        }
        if self.seq == 0 {
            return Err(SourceError::Stream {
                input: self.input.clone(),
                message: "no image in the folder decoded".into(),
            });
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    /// A file that stops a frame before its end is whole; one that stops a second or more
    /// (2 % of a long one) short was cut.
    #[test]
    fn a_file_ending_short_of_its_length_is_cut() {
        assert!(!super::cut_short(79_900, 80_000));
        assert!(!super::cut_short(78_500, 80_000));
        assert!(super::cut_short(40_000, 80_000));
        assert!(super::cut_short(3_000, 5_000));
        assert!(!super::cut_short(4_960, 5_000));
    }
}
