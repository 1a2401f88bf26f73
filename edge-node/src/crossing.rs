//! Stage `crossing`: one camera's pedestrian crossing, per frame: resolve the signal, run the
//! red-light rule over the visible person tracks, keep recent frames, and once a violation's
//! third picture is due, render the evidence and build the `pedestrian_red_light` event.
//!
//! Input: the frame, the tracks, the frame's two-wheeler detections. Output: [`Outgoing`]
//! evidence images and events, images first. Synchronous; the camera thread calls it.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use protocol::{BBox, DeviceId, Event, EventKind, LightState, SignalSource};
use serde::Serialize;

use crate::config::CameraConfig;
use crate::events::EventFactory;
use crate::evidence::{
    picture, render_closeup, render_scene, BannerClock, BannerFont, FrameRing, Overlay, Picture,
    Shape,
};
use crate::frame::Frame;
use crate::red_light::{mark_riders, Finding, Person, RedLightRule, RuleCounters};
use crate::signal::{FeedState, SignalResolver};
use crate::track::Track;
use crate::zones::ZoneMap;

/// What a camera hands to the publisher.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Event(Box<Event>),
    Evidence {
        checkpoint: DeviceId,
        camera: DeviceId,
        image_id: String,
        jpeg: std::sync::Arc<Vec<u8>>,
    },
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct CrossingSummary {
    pub rule: RuleCountersOut,
    /// Frame time during which the signal was unknown or stale, ms.
    pub signal_unknown_ms: i64,
    /// Frames per signal source used.
    pub frames_by_signal_source: std::collections::BTreeMap<String, u64>,
    pub evidence_pictures: u64,
    /// Violation clips made, failed, and skipped (the clip worker was behind).
    pub clips: u64,
    pub clips_failed: u64,
    pub clips_skipped: u64,
    /// Their bytes and the time spent encoding them (off the camera's thread).
    pub clip_bytes: u64,
    pub clip_encode_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleCountersOut {
    pub entries: u64,
    pub entries_in_grace: u64,
    pub entries_signal_unknown: u64,
    pub violations: u64,
    pub frames_signal_unknown: u64,
}

impl From<&RuleCounters> for RuleCountersOut {
    fn from(c: &RuleCounters) -> Self {
        RuleCountersOut {
            entries: c.entries,
            entries_in_grace: c.entries_in_grace,
            entries_signal_unknown: c.entries_signal_unknown,
            violations: c.violations,
            frames_signal_unknown: c.frames_signal_unknown,
        }
    }
}

struct Pending {
    finding: Finding,
    /// When the third picture is due.
    due_ms: i64,
    /// When the event goes: the third picture and the clip's end both held.
    send_ms: i64,
    /// Latest frame the person was seen in up to the third picture: (seq, time, box).
    last_seen: (u64, i64, BBox),
}

pub struct CrossingWatch {
    signal: SignalResolver,
    rule: RedLightRule,
    ring: FrameRing,
    pending: Vec<Pending>,
    zone_shapes: Vec<Shape>,
    zone_size: (u32, u32),
    quality: u8,
    clock: BannerClock,
    font: BannerFont,
    /// The offence named on the pictures (`[cameras.evidence.offences]`), if configured.
    offence: Option<crate::evidence::Offence>,
    person_class: usize,
    two_wheeler_classes: Vec<usize>,
    prev_time_ms: Option<i64>,
    /// The clip kept with each violation, if any.
    clip: Option<crate::evidence::ClipConfig>,
    pub summary: CrossingSummary,
    /// Time spent rendering evidence.
    pub evidence_time: Vec<Duration>,
    /// Violations whose event waits for its clip; the camera hands them to its clip worker.
    pub clip_jobs: Vec<crate::clip::ClipJob>,
}

impl CrossingWatch {
    /// None when the camera has no red-light rule.
    pub fn new(
        cam: &CameraConfig,
        feed: FeedState,
        labels: &[String],
        font: BannerFont,
    ) -> Option<CrossingWatch> {
        let rl = cam.red_light.clone()?;
        let sig = cam.signal.clone()?;
        let id = |n: &str| labels.iter().position(|l| l == n);
        Some(CrossingWatch {
            signal: SignalResolver::new(sig, feed),
            rule: RedLightRule::new(rl, ZoneMap::new(&cam.zones)),
            ring: FrameRing::new(cam.evidence.ring_buffer_mb << 20),
            pending: Vec::new(),
            zone_shapes: Vec::new(),
            zone_size: (0, 0),
            quality: cam.evidence.jpeg_quality,
            // Checked when the config was validated.
            clock: cam.evidence.clock().unwrap_or_default(),
            font,
            offence: cam
                .evidence
                .offences
                .get(EventKind::PedestrianRedLight.as_str())
                .cloned(),
            person_class: id("person")?,
            two_wheeler_classes: ["bicycle", "motorcycle"]
                .iter()
                .filter_map(|n| id(n))
                .collect(),
            prev_time_ms: None,
            clip: Some(cam.evidence.clip.clone()).filter(|c| c.enabled),
            summary: CrossingSummary::default(),
            evidence_time: Vec::new(),
            clip_jobs: Vec::new(),
        })
    }

    /// One frame: `visible` are the confirmed tracks matched in it, `two_wheelers` this
    /// frame's bicycle and motorcycle boxes, `ended` the tracks that ended in it.
    pub fn on_frame(
        &mut self,
        frame: &Frame,
        visible: &[&Track],
        detections: &[crate::detect::Detection],
        ended: &HashSet<u64>,
        factory: &mut EventFactory,
    ) -> Vec<Outgoing> {
        self.ring.push(frame.clone());
        self.signal.observe_frame(frame);
        let resolved = self.signal.resolve(frame.time_ms);
        match &resolved.reading {
            Some(r) => {
                *self
                    .summary
                    .frames_by_signal_source
                    .entry(r.source.as_str().to_string())
                    .or_default() += 1
            }
            None => {
                if let Some(prev) = self.prev_time_ms {
                    self.summary.signal_unknown_ms += frame.time_ms - prev;
                }
            }
        }
        self.prev_time_ms = Some(frame.time_ms);

        let mut people: Vec<Person> = visible
            .iter()
            .filter(|t| t.class_id == self.person_class)
            .map(|t| Person {
                track_id: t.id,
                bbox: t.bbox,
                rider: false,
            })
            .collect();
        let wheels: Vec<BBox> = detections
            .iter()
            .filter(|d| self.two_wheeler_classes.contains(&d.class_id))
            .map(|d| d.bbox)
            .collect();
        mark_riders(&mut people, &wheels);
        let findings = self.rule.evaluate(
            frame.seq,
            frame.time_ms,
            frame.width,
            frame.height,
            &people,
            &resolved,
        );
        self.rule.forget(ended);
        for f in findings {
            tracing::info!(track = f.track_id, crosswalk = %f.crosswalk, signal = ?f.signal.source, "Pedestrian entered the crosswalk on red");
            let due_ms = f.confirmed.1 + self.rule.config().third_picture_after_ms;
            let clip_end = self.clip.as_ref().map_or(0, |c| f.confirmed.1 + c.after_ms);
            self.pending.push(Pending {
                last_seen: f.confirmed,
                finding: f,
                due_ms,
                send_ms: due_ms.max(clip_end),
            });
        }
        for p in &mut self.pending {
            if p.last_seen.1 >= p.due_ms {
                continue; // the third picture is taken
            }
            if let Some(pp) = people.iter().find(|pp| pp.track_id == p.finding.track_id) {
                p.last_seen = (frame.seq, frame.time_ms, pp.bbox);
            }
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            let p = &self.pending[i];
            if frame.time_ms >= p.send_ms || ended.contains(&p.finding.track_id) {
                let p = self.pending.swap_remove(i);
                out.extend(self.emit(p, frame.time_ms, factory));
            } else {
                i += 1;
            }
        }
        out
    }

    /// End of stream: violations still waiting for their third picture use the last frame
    /// the person was seen in.
    pub fn finish(&mut self, factory: &mut EventFactory) -> Vec<Outgoing> {
        let pending: Vec<Pending> = self.pending.drain(..).collect();
        let now = self.prev_time_ms.unwrap_or(i64::MAX);
        pending
            .into_iter()
            .flat_map(|p| self.emit(p, now, factory))
            .collect()
    }

    pub fn counters(&self) -> RuleCountersOut {
        (&self.rule.counters).into()
    }

    fn shapes_for(&mut self, w: u32, h: u32) {
        if self.zone_size != (w, h) {
            let z = self.rule.zones();
            // Kerbs first, crosswalks over them, so that shared edges show the crosswalk.
            self.zone_shapes = z
                .waiting
                .iter()
                .map(|(_, p)| (p.to_pixels(w, h), [0, 200, 255]))
                .chain(
                    z.crosswalks
                        .iter()
                        .map(|(_, p)| (p.to_pixels(w, h), [255, 220, 0])),
                )
                .collect();
            self.zone_size = (w, h);
        }
    }

    /// The pictures (returned) and the event (returned, or kept in `clip_jobs` to wait for
    /// its clip of the frames up to `now_ms`).
    fn emit(&mut self, p: Pending, now_ms: i64, factory: &mut EventFactory) -> Vec<Outgoing> {
        let t0 = Instant::now();
        let f = &p.finding;
        let event_id = factory.next_id(f.confirmed.1);
        let sig = &f.signal;
        let signal_line = format!(
            "行人信号 {} 自 {} 起（{}，时延 {} 毫秒）",
            light_zh(sig.state),
            self.clock
                .label(sig.since_ms)
                .split(' ')
                .nth(1)
                .unwrap_or(""),
            source_zh(sig.source),
            f.signal_age_ms
        );
        let offence_line = self
            .offence
            .as_ref()
            .map(|o| format!("违法行为 {}（代码 {}）", o.name, o.code));
        let stages = [
            ("stage1", f.left),
            ("stage2", f.confirmed),
            ("stage3", p.last_seen),
        ];
        let mut pictures: Vec<Picture> = Vec::new();
        let mut boxes = Vec::new();
        for (n, (role, (seq, _t, bbox))) in stages.iter().enumerate() {
            let Some(frame) = self.ring.get_or_after(*seq).cloned() else {
                tracing::warn!(
                    track = f.track_id,
                    role,
                    "Frame for evidence picture no longer buffered; raise evidence.ring_buffer_mb"
                );
                continue;
            };
            self.shapes_for(frame.width, frame.height);
            let mut lines = vec![format!(
                "{}  第 {}/3 张",
                self.clock.label(frame.time_ms),
                n + 1
            )];
            lines.extend(offence_line.clone());
            lines.push(format!(
                "卡口 {}  设备 {}",
                factory.checkpoint_id, factory.camera_id
            ));
            lines.push(format!("{signal_line}  轨迹 {}", f.track_id));
            let ov = Overlay {
                lines,
                zones: &self.zone_shapes,
                person: *bbox,
                font: &self.font,
            };
            pictures.push(picture(role, render_scene(&frame, &ov, self.quality)));
            boxes.push(*bbox);
            if *role == "stage2" {
                pictures.push(picture(
                    "closeup",
                    render_closeup(&frame, &ov, self.quality),
                ));
            }
        }
        self.summary.evidence_pictures += pictures.len() as u64;
        let mut out: Vec<Outgoing> = pictures
            .iter()
            .map(|pic| Outgoing::Evidence {
                checkpoint: factory.checkpoint_id.clone(),
                camera: factory.camera_id.clone(),
                image_id: format!("{event_id}-{}", pic.role),
                jpeg: pic.jpeg.clone(),
            })
            .collect();
        let event = Box::new(factory.red_light(
            event_id.clone(),
            f,
            boxes,
            &pictures,
            self.offence.clone(),
        ));
        // Only the frames the clip keeps (at most its rate) wait for the encoder: a waiting
        // clip holds at most fps x its seconds of frames, whatever the camera's rate.
        let frames: Vec<crate::frame::Frame> = self
            .clip
            .as_ref()
            .map(|c| {
                let held = self.ring.between(f.left.1 - c.before_ms, now_ms);
                crate::clip::pick_frames(&held, c.fps)
                    .into_iter()
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if frames.is_empty() {
            out.push(Outgoing::Event(event));
        } else {
            self.clip_jobs.push(crate::clip::ClipJob {
                frames,
                event,
                image_id: format!("{event_id}-clip"),
                checkpoint: factory.checkpoint_id.clone(),
                camera: factory.camera_id.clone(),
            });
        }
        self.evidence_time.push(t0.elapsed());
        debug_assert!(f.signal.state == LightState::Red);
        out
    }
}

/// The signal state as the banner says it.
fn light_zh(s: LightState) -> &'static str {
    match s {
        LightState::Red => "红灯",
        LightState::Green => "绿灯",
        LightState::Flashing => "闪烁",
        LightState::Unknown => "未知",
    }
}

/// Where the signal state came from, as the banner says it.
fn source_zh(s: SignalSource) -> &'static str {
    match s {
        SignalSource::Feed => "信号机",
        SignalSource::Plan => "配时方案",
        SignalSource::Vision => "视觉识别",
    }
}
