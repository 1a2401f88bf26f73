//! Plane geometry for plates: the homography between four corners and a rectangle, and
//! bilinear sampling through it. The reader rectifies plate crops with it; the plate
//! generator paints rendered plates into scenes with the same code, run the other way.

/// A 3x3 projective transform, row-major, `h[8]` normalised to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Homography(pub [f64; 9]);

impl Homography {
    /// The transform taking `src[i]` to `dst[i]` for four point pairs, or None when the points
    /// are degenerate (three on a line).
    pub fn from_points(src: &[(f64, f64); 4], dst: &[(f64, f64); 4]) -> Option<Homography> {
        // Eight equations in h0..h7 (h8 = 1), solved by Gaussian elimination with pivoting.
        let mut a = [[0f64; 9]; 8];
        for i in 0..4 {
            let (x, y) = src[i];
            let (u, v) = dst[i];
            a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -u * x, -u * y, u];
            a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -v * x, -v * y, v];
        }
        for col in 0..8 {
            let pivot = (col..8).max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))?;
            if a[pivot][col].abs() < 1e-10 {
                return None;
            }
            a.swap(col, pivot);
            for row in 0..8 {
                if row != col {
                    let f = a[row][col] / a[col][col];
                    if f != 0.0 {
                        for k in col..9 {
                            a[row][k] -= f * a[col][k];
                        }
                    }
                }
            }
        }
        let mut h = [0f64; 9];
        for i in 0..8 {
            h[i] = a[i][8] / a[i][i];
        }
        h[8] = 1.0;
        h.iter().all(|v| v.is_finite()).then_some(Homography(h))
    }

    pub fn apply(&self, (x, y): (f64, f64)) -> (f64, f64) {
        let h = &self.0;
        let w = h[6] * x + h[7] * y + h[8];
        (
            (h[0] * x + h[1] * y + h[2]) / w,
            (h[3] * x + h[4] * y + h[5]) / w,
        )
    }

    pub fn inverse(&self) -> Option<Homography> {
        let m = &self.0;
        let det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
            + m[2] * (m[3] * m[7] - m[4] * m[6]);
        if det.abs() < 1e-12 {
            return None;
        }
        let inv = [
            (m[4] * m[8] - m[5] * m[7]) / det,
            (m[2] * m[7] - m[1] * m[8]) / det,
            (m[1] * m[5] - m[2] * m[4]) / det,
            (m[5] * m[6] - m[3] * m[8]) / det,
            (m[0] * m[8] - m[2] * m[6]) / det,
            (m[2] * m[3] - m[0] * m[5]) / det,
            (m[3] * m[7] - m[4] * m[6]) / det,
            (m[1] * m[6] - m[0] * m[7]) / det,
            (m[0] * m[4] - m[1] * m[3]) / det,
        ];
        let s = inv[8];
        (s.abs() > 1e-12).then(|| Homography(inv.map(|v| v / s)))
    }
}

/// A packed RGB image (3 bytes a pixel, no row padding).
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Rgb {
    pub fn new(width: usize, height: usize) -> Rgb {
        Rgb {
            width,
            height,
            data: vec![0; width * height * 3],
        }
    }

    pub fn filled(width: usize, height: usize, c: [u8; 3]) -> Rgb {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&c);
        }
        Rgb {
            width,
            height,
            data,
        }
    }

    pub fn get(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    pub fn put(&mut self, x: usize, y: usize, c: [u8; 3]) {
        let i = (y * self.width + x) * 3;
        self.data[i..i + 3].copy_from_slice(&c);
    }

    /// Bilinear sample at a real position; None outside the image.
    pub fn sample(&self, x: f64, y: f64) -> Option<[f32; 3]> {
        sample_bilinear(&self.data, self.width, self.height, self.width * 3, x, y)
    }

    /// Area-averaged resize (good for shrinking, fine for growing).
    pub fn resize(&self, w: usize, h: usize) -> Rgb {
        let mut out = Rgb::new(w, h);
        let sx = self.width as f64 / w as f64;
        let sy = self.height as f64 / h as f64;
        for y in 0..h {
            for x in 0..w {
                let (x0, x1) = (x as f64 * sx, (x + 1) as f64 * sx);
                let (y0, y1) = (y as f64 * sy, (y + 1) as f64 * sy);
                let c = if sx <= 1.0 && sy <= 1.0 {
                    self.sample(
                        ((x0 + x1) / 2.0 - 0.5).max(0.0),
                        ((y0 + y1) / 2.0 - 0.5).max(0.0),
                    )
                    .unwrap_or([0.0; 3])
                } else {
                    let mut acc = [0f32; 3];
                    let mut n = 0f32;
                    for yy in (y0 as usize)..(y1.ceil() as usize).min(self.height) {
                        for xx in (x0 as usize)..(x1.ceil() as usize).min(self.width) {
                            let p = self.get(xx, yy);
                            for k in 0..3 {
                                acc[k] += p[k] as f32;
                            }
                            n += 1.0;
                        }
                    }
                    acc.map(|v| v / n.max(1.0))
                };
                out.put(x, y, c.map(|v| v.round().clamp(0.0, 255.0) as u8));
            }
        }
        out
    }
}

/// Bilinear sample of packed RGB at (x, y) in pixel-centre coordinates.
pub fn sample_bilinear(
    data: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    x: f64,
    y: f64,
) -> Option<[f32; 3]> {
    if !(x >= 0.0 && y >= 0.0 && x <= (width - 1) as f64 && y <= (height - 1) as f64) {
        return None;
    }
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(width - 1), (y0 + 1).min(height - 1));
    let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let px = |xx: usize, yy: usize, k: usize| data[yy * stride + xx * 3 + k] as f32;
    let mut out = [0f32; 3];
    for (k, o) in out.iter_mut().enumerate() {
        let top = px(x0, y0, k) * (1.0 - fx) + px(x1, y0, k) * fx;
        let bot = px(x0, y1, k) * (1.0 - fx) + px(x1, y1, k) * fx;
        *o = top * (1.0 - fy) + bot * fy;
    }
    Some(out)
}

/// Cuts the quadrilateral `corners` (top-left, top-right, bottom-right, bottom-left, in source
/// pixels) out of a packed RGB image and straightens it into a `w` x `h` rectangle.
pub fn rectify(
    data: &[u8],
    width: usize,
    height: usize,
    stride: usize,
    corners: &[(f64, f64); 4],
    w: usize,
    h: usize,
) -> Option<Rgb> {
    let rect = [
        (0.0, 0.0),
        (w as f64 - 1.0, 0.0),
        (w as f64 - 1.0, h as f64 - 1.0),
        (0.0, h as f64 - 1.0),
    ];
    let to_src = Homography::from_points(&rect, corners)?;
    let mut out = Rgb::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = to_src.apply((x as f64, y as f64));
            let c = sample_bilinear(
                data,
                width,
                height,
                stride,
                sx.clamp(0.0, (width - 1) as f64),
                sy.clamp(0.0, (height - 1) as f64),
            )
            .unwrap_or([0.0; 3]);
            out.put(x, y, c.map(|v| v.round() as u8));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homography_maps_the_four_points_and_inverts() {
        let src = [(0.0, 0.0), (100.0, 0.0), (100.0, 30.0), (0.0, 30.0)];
        let dst = [(10.0, 5.0), (120.0, 12.0), (118.0, 50.0), (8.0, 40.0)];
        let h = Homography::from_points(&src, &dst).unwrap();
        for i in 0..4 {
            let (u, v) = h.apply(src[i]);
            assert!((u - dst[i].0).abs() < 1e-6 && (v - dst[i].1).abs() < 1e-6);
        }
        let inv = h.inverse().unwrap();
        let (x, y) = inv.apply(h.apply((37.0, 11.0)));
        assert!((x - 37.0).abs() < 1e-6 && (y - 11.0).abs() < 1e-6);
    }

    #[test]
    fn degenerate_points_give_none() {
        let src = [(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 3.0)];
        assert!(Homography::from_points(&src, &src).is_none());
    }

    #[test]
    fn rectify_recovers_an_axis_aligned_patch() {
        let mut img = Rgb::filled(50, 40, [0, 0, 0]);
        for y in 10..20 {
            for x in 5..45 {
                img.put(x, y, [200, 100, 50]);
            }
        }
        let out = rectify(
            &img.data,
            50,
            40,
            150,
            &[(6.0, 11.0), (43.0, 11.0), (43.0, 18.0), (6.0, 18.0)],
            20,
            5,
        )
        .unwrap();
        assert!(out.data.chunks(3).all(|p| p == [200, 100, 50]));
    }
}
