//! Frames as they leave the decoder: tightly packed RGB at full resolution, with the time the
//! frame shows (UTC ms, from the stream's timestamps, never the wall clock at processing).

use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Frame {
    /// Position in the stream, from 0.
    pub seq: u64,
    /// UTC milliseconds the frame shows.
    pub time_ms: i64,
    pub width: u32,
    pub height: u32,
    /// RGB, 3 bytes a pixel, rows packed (stride = width * 3). Shared: evidence keeps frames.
    pub rgb: Arc<Vec<u8>>,
}

impl Frame {
    pub fn stride(&self) -> usize {
        self.width as usize * 3
    }
}
