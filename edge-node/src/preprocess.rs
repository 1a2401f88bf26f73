//! Stage `preprocess`: a decoded RGB frame into the detector's input tensor.
//!
//! Input: packed RGB bytes. Output: an NCHW f32 tensor and the [`Letterbox`] that maps boxes
//! back to frame pixels. Pure and synchronous; it runs on the decode thread so that it
//! overlaps with inference of the previous frame. It must not touch the model.

use protocol::BBox;

use crate::manifest::{InputSpec, PixelFormat};

/// How a frame was fitted into the model input: `input = frame * scale + pad`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    pub src_w: u32,
    pub src_h: u32,
}

impl Letterbox {
    pub fn new(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Letterbox {
        let scale = (dst_w as f32 / src_w as f32).min(dst_h as f32 / src_h as f32);
        let new_w = (src_w as f32 * scale).round();
        let new_h = (src_h as f32 * scale).round();
        Letterbox {
            scale,
            pad_x: ((dst_w as f32 - new_w) / 2.0).floor(),
            pad_y: ((dst_h as f32 - new_h) / 2.0).floor(),
            src_w,
            src_h,
        }
    }

    /// Size of the resized image inside the input.
    pub fn inner_size(&self) -> (u32, u32) {
        (
            (self.src_w as f32 * self.scale).round() as u32,
            (self.src_h as f32 * self.scale).round() as u32,
        )
    }

    /// A box in model-input pixels back to frame pixels, clipped to the frame.
    pub fn unmap(&self, b: &BBox) -> BBox {
        let fx = |x: f32| ((x - self.pad_x) / self.scale).clamp(0.0, self.src_w as f32);
        let fy = |y: f32| ((y - self.pad_y) / self.scale).clamp(0.0, self.src_h as f32);
        BBox::new(fx(b.x1), fy(b.y1), fx(b.x2), fy(b.y2))
    }

    /// A frame-pixel box into model-input pixels (used by tests and benches).
    pub fn map(&self, b: &BBox) -> BBox {
        BBox::new(
            b.x1 * self.scale + self.pad_x,
            b.y1 * self.scale + self.pad_y,
            b.x2 * self.scale + self.pad_x,
            b.y2 * self.scale + self.pad_y,
        )
    }
}

/// A frame ready for the detector.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// NCHW, `1 x 3 x height x width`.
    pub tensor: Vec<f32>,
    pub letterbox: Letterbox,
}

/// Letterboxes `rgb` (packed rows of `stride` bytes) into a new tensor per `spec`, with
/// bilinear resampling.
pub fn letterbox(rgb: &[u8], width: u32, height: u32, stride: usize, spec: &InputSpec) -> Prepared {
    let mut tensor = vec![0f32; 3 * spec.width as usize * spec.height as usize];
    let letterbox = letterbox_into(rgb, width, height, stride, spec, &mut tensor);
    Prepared { tensor, letterbox }
}

/// As [`letterbox`], into a caller's buffer of `3 * spec.width * spec.height` floats.
pub fn letterbox_into(
    rgb: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    spec: &InputSpec,
    out: &mut [f32],
) -> Letterbox {
    let (dw, dh) = (spec.width as usize, spec.height as usize);
    assert_eq!(out.len(), 3 * dw * dh, "output buffer size");
    assert!(rgb.len() >= stride * (height as usize).saturating_sub(1) + width as usize * 3);
    let lb = Letterbox::new(width, height, spec.width, spec.height);
    let (iw, ih) = lb.inner_size();
    let (px, py) = (lb.pad_x as usize, lb.pad_y as usize);
    // Per-channel affine: value = pixel * a + b.
    let order: [usize; 3] = match spec.pixel_format {
        PixelFormat::Rgb => [0, 1, 2],
        PixelFormat::Bgr => [2, 1, 0],
    };
    let mut a = [0f32; 3];
    let mut b = [0f32; 3];
    for c in 0..3 {
        a[c] = spec.scale / spec.std[c];
        b[c] = -spec.mean[c] / spec.std[c];
    }
    let pad_val: [f32; 3] = std::array::from_fn(|c| spec.pad_value as f32 * a[c] + b[c]);
    let plane = dw * dh;
    for c in 0..3 {
        out[c * plane..(c + 1) * plane].fill(pad_val[c]);
    }
    // Source coordinate and weight for each output column / row (half-pixel centres).
    let sx = width as f32 / iw.max(1) as f32;
    let sy = height as f32 / ih.max(1) as f32;
    let cols: Vec<(usize, usize, f32)> = (0..iw as usize)
        .map(|x| {
            let f = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (width - 1) as f32);
            let x0 = f.floor() as usize;
            let x1 = (x0 + 1).min(width as usize - 1);
            (x0 * 3, x1 * 3, f - x0 as f32)
        })
        .collect();
    // Separable: each source row needed is interpolated along x once, into planar rows of
    // `iw` floats per channel (kept while the next output row needs it again), then each
    // output row is a blend of two such rows, written contiguously per channel. The float
    // operations are those of the direct 2x2 form, in the same order: the same values.
    let iw_us = iw as usize;
    let hrow = |src: &[u8], dst: &mut [f32]| {
        for (x, &(x0, x1, wx)) in cols.iter().enumerate() {
            for c in 0..3 {
                let s = order[c];
                let p0 = src[x0 + s] as f32;
                let p1 = src[x1 + s] as f32;
                dst[c * iw_us + x] = p0 + (p1 - p0) * wx;
            }
        }
    };
    let mut top = vec![0f32; 3 * iw_us];
    let mut bot = vec![0f32; 3 * iw_us];
    let (mut top_y, mut bot_y) = (usize::MAX, usize::MAX);
    for y in 0..ih as usize {
        let f = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (height - 1) as f32);
        let y0 = f.floor() as usize;
        let y1 = (y0 + 1).min(height as usize - 1);
        let wy = f - y0 as f32;
        if top_y != y0 {
            if bot_y == y0 {
                std::mem::swap(&mut top, &mut bot);
                std::mem::swap(&mut top_y, &mut bot_y);
            } else {
                hrow(&rgb[y0 * stride..], &mut top);
                top_y = y0;
            }
        }
        if bot_y != y1 {
            if y1 == y0 {
                bot.copy_from_slice(&top);
            } else {
                hrow(&rgb[y1 * stride..], &mut bot);
            }
            bot_y = y1;
        }
        let row_off = (y + py) * dw + px;
        for c in 0..3 {
            let t = &top[c * iw_us..(c + 1) * iw_us];
            let b_ = &bot[c * iw_us..(c + 1) * iw_us];
            let dst = &mut out[c * plane + row_off..c * plane + row_off + iw_us];
            let (ac, bc) = (a[c], b[c]);
            for ((d, &tv), &bv) in dst.iter_mut().zip(t).zip(b_) {
                let v = tv + (bv - tv) * wy;
                *d = v * ac + bc;
            }
        }
    }
    lb
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Layout, Resize};
    use proptest::prelude::*;

    fn spec(w: u32, h: u32) -> InputSpec {
        InputSpec {
            name: "images".into(),
            width: w,
            height: h,
            layout: Layout::Nchw,
            pixel_format: PixelFormat::Rgb,
            resize: Resize::Letterbox,
            pad_value: 114,
            scale: 1.0 / 255.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    #[test]
    fn vtest_geometry() {
        // 768x576 into 640: scale 5/6, 640x480 centred, 80 px of padding top and bottom.
        let lb = Letterbox::new(768, 576, 640, 640);
        assert!((lb.scale - 640.0 / 768.0).abs() < 1e-6);
        assert_eq!(lb.inner_size(), (640, 480));
        assert_eq!((lb.pad_x, lb.pad_y), (0.0, 80.0));
    }

    #[test]
    fn pads_and_fills_with_normalised_values() {
        let (w, h) = (8u32, 4u32);
        let rgb: Vec<u8> = (0..w * h).flat_map(|_| [255u8, 0, 51]).collect();
        let p = letterbox(&rgb, w, h, w as usize * 3, &spec(8, 8));
        assert_eq!(p.letterbox.pad_y, 2.0);
        let plane = 64;
        // Padding rows 0-1 and 6-7 carry 114/255; the image rows carry the colour.
        assert!((p.tensor[0] - 114.0 / 255.0).abs() < 1e-6);
        assert!((p.tensor[2 * 8 + 3] - 1.0).abs() < 1e-6);
        assert!(p.tensor[plane + 2 * 8 + 3].abs() < 1e-6);
        assert!((p.tensor[2 * plane + 2 * 8 + 3] - 0.2).abs() < 1e-6);
        assert!((p.tensor[2 * plane + 7 * 8] - 114.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn honours_stride_padding() {
        let (w, h) = (3u32, 2u32);
        let stride = 12; // 9 bytes of pixels + 3 of row padding
        let mut rgb = vec![0u8; stride * 2];
        for y in 0..2 {
            for x in 0..3 {
                rgb[y * stride + x * 3] = 200;
            }
            rgb[y * stride + 9] = 7; // garbage in the padding
        }
        let p = letterbox(&rgb, w, h, stride, &spec(3, 2));
        assert!(
            p.tensor[..6]
                .iter()
                .all(|v| (v - 200.0 / 255.0).abs() < 1e-6),
            "{:?}",
            &p.tensor[..6]
        );
    }

    /// The direct 2x2 bilinear form the separable one replaced: the reference it must
    /// equal bit for bit.
    fn reference(rgb: &[u8], width: u32, height: u32, stride: usize, spec: &InputSpec) -> Vec<f32> {
        let (dw, dh) = (spec.width as usize, spec.height as usize);
        let lb = Letterbox::new(width, height, spec.width, spec.height);
        let (iw, ih) = lb.inner_size();
        let (px, py) = (lb.pad_x as usize, lb.pad_y as usize);
        let a: [f32; 3] = std::array::from_fn(|c| spec.scale / spec.std[c]);
        let b: [f32; 3] = std::array::from_fn(|c| -spec.mean[c] / spec.std[c]);
        let plane = dw * dh;
        let mut out = vec![0f32; 3 * plane];
        for c in 0..3 {
            out[c * plane..(c + 1) * plane].fill(spec.pad_value as f32 * a[c] + b[c]);
        }
        let sx = width as f32 / iw.max(1) as f32;
        let sy = height as f32 / ih.max(1) as f32;
        for y in 0..ih as usize {
            let fy = ((y as f32 + 0.5) * sy - 0.5).clamp(0.0, (height - 1) as f32);
            let (y0, wy) = (fy.floor() as usize, fy - fy.floor());
            let y1 = (y0 + 1).min(height as usize - 1);
            for x in 0..iw as usize {
                let fx = ((x as f32 + 0.5) * sx - 0.5).clamp(0.0, (width - 1) as f32);
                let (x0, wx) = (fx.floor() as usize, fx - fx.floor());
                let x1 = (x0 + 1).min(width as usize - 1);
                for c in 0..3 {
                    let px_ = |yy: usize, xx: usize| rgb[yy * stride + xx * 3 + c] as f32;
                    let top = px_(y0, x0) + (px_(y0, x1) - px_(y0, x0)) * wx;
                    let bot = px_(y1, x0) + (px_(y1, x1) - px_(y1, x0)) * wx;
                    let v = top + (bot - top) * wy;
                    out[c * plane + (y + py) * dw + px + x] = v * a[c] + b[c];
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn separable_resize_equals_the_direct_form(w in 1u32..120, h in 1u32..120, dw in 8u32..96, dh in 8u32..96, pad in 0usize..5, seed in any::<u64>()) {
            let stride = w as usize * 3 + pad;
            let mut x = seed | 1;
            let rgb: Vec<u8> = (0..stride * h as usize)
                .map(|_| { x ^= x << 13; x ^= x >> 7; x ^= x << 17; x as u8 })
                .collect();
            let sp = spec(dw, dh);
            let got = letterbox(&rgb, w, h, stride, &sp).tensor;
            let want = reference(&rgb, w, h, stride, &sp);
            prop_assert!(got.iter().zip(&want).all(|(g, r)| g.to_bits() == r.to_bits()));
        }

        #[test]
        fn map_unmap_round_trips(sw in 16u32..2000, sh in 16u32..2000, x in 0f32..1.0, y in 0f32..1.0, bw in 0f32..1.0, bh in 0f32..1.0) {
            let lb = Letterbox::new(sw, sh, 640, 640);
            let x1 = x * sw as f32; let y1 = y * sh as f32;
            let b = BBox::new(x1, y1, (x1 + bw * sw as f32).min(sw as f32), (y1 + bh * sh as f32).min(sh as f32));
            let back = lb.unmap(&lb.map(&b));
            prop_assert!((back.x1 - b.x1).abs() < 0.05 && (back.y2 - b.y2).abs() < 0.05);
            let (iw, ih) = lb.inner_size();
            prop_assert!(iw <= 640 && ih <= 640 && (iw == 640 || ih == 640));
        }
    }
}
