//! The edge node's stages that need neither GStreamer nor ONNX Runtime nor zenoh: frames,
//! zones, the signal resolver, the tracker, the red-light rule, evidence pictures and the
//! event factory. They build and test alone (`cargo test -p pipeline`), on any machine;
//! `edge-node` feeds them decoded frames and detections and publishes what they make.

pub mod events;
pub mod evidence;
pub mod frame;
pub mod red_light;
pub mod signal;
pub mod stats;
pub mod track;
pub mod zones;

use protocol::BBox;

/// A detection in frame pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub class_id: usize,
    pub score: f32,
    pub bbox: BBox,
}
