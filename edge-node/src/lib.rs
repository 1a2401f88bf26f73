//! Edge node: decode camera streams with GStreamer, detect objects with ONNX Runtime, track
//! them, turn tracks into events and publish them over zenoh.
//!
//! One camera's path reads top to bottom in [`camera`]; each stage has a synchronous core in
//! its own module (`preprocess`, `detect`, `track`, `events`) that tests and benches drive
//! without cameras or zenoh. Threads, channels and shutdown live in [`camera`] and [`node`].

pub mod camera;
pub mod config;
pub mod crossing;
pub mod detect;
pub mod engine;
pub mod events;
pub mod evidence;
pub mod frame;
pub mod manifest;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod preprocess;
pub mod publish;
pub mod red_light;
pub mod signal;
pub mod source;
pub mod stats;

pub mod plate;
pub mod plategen;
pub mod registry;
pub mod reload;
pub mod track;
pub mod vehicles;
pub mod zones;
