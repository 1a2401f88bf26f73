//! Edge node: decode camera streams with GStreamer, detect objects with ONNX Runtime, track
//! them, turn tracks into events and publish them over zenoh.
//!
//! One camera's path reads top to bottom in [`camera`]; each stage has a synchronous core in
//! its own module (`preprocess`, `detect`, `track`, `events`) that tests and benches drive
//! without cameras or zenoh. Threads, channels and shutdown live in [`camera`] and [`node`].

pub mod camera;
pub mod clip;
pub mod clock;
// The stages that need neither GStreamer nor ONNX Runtime nor zenoh live in the `pipeline`
// crate; their old paths stay.
pub use pipeline::{events, evidence, frame, red_light, signal, stats, track, zones};
pub mod config;
pub mod crossing;
pub mod detect;
pub mod engine;
pub mod live;
pub mod manifest;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod preprocess;
pub mod publish;
pub mod source;

pub mod plate;
pub mod plategen;
pub mod registry;
pub mod reload;
pub mod vehicles;
pub mod zone_edit;
