//! Horizontal motion deblurring of a plate crop: how far the plate smeared is measured on
//! the crop itself, and a Wiener filter for a box blur of that length restores it, row by
//! row in the frequency domain.
//!
//! A vehicle crossing a checkpoint camera's view moves during the exposure: at 60 km/h and
//! 1/1000 s a plate 180 px wide smears over about 7 px, enough to melt a province glyph's
//! strokes (the generated clips draw 3, 5 and 7 px). The reader then sees 琼 as 皖 or 京.
//! The smear in crop pixels depends on the vehicle's speed, the shutter and how large the
//! plate is in the frame, so no fixed set of lengths fits every plate: [`smear_px`] reads it
//! from the crop (the derivative autocorrelation of Yitzhaky and Kopeika, "Identification
//! of blur parameters from motion blurred images", 1997).

use super::geometry::Rgb;

/// Noise-to-signal ratio of the Wiener filter: larger is smoother, smaller sharper (and
/// noisier). 0.01 restored the most plates on the generated clips.
const NOISE_TO_SIGNAL: f32 = 0.01;

#[derive(Clone, Copy, Debug, PartialEq)]
struct C(f32, f32);

impl std::ops::Add for C {
    type Output = C;
    fn add(self, o: C) -> C {
        C(self.0 + o.0, self.1 + o.1)
    }
}
impl std::ops::Sub for C {
    type Output = C;
    fn sub(self, o: C) -> C {
        C(self.0 - o.0, self.1 - o.1)
    }
}
impl std::ops::Mul for C {
    type Output = C;
    fn mul(self, o: C) -> C {
        C(self.0 * o.0 - self.1 * o.1, self.0 * o.1 + self.1 * o.0)
    }
}

/// In-place radix-2 FFT (`inverse`: unscaled inverse transform). `a.len()` is a power of two.
fn fft(a: &mut [C], inverse: bool) {
    let n = a.len();
    debug_assert!(n.is_power_of_two());
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            a.swap(i, j);
        }
    }
    let sign = if inverse { 1.0 } else { -1.0 };
    let mut len = 2;
    while len <= n {
        let ang = sign * 2.0 * std::f64::consts::PI / len as f64;
        let w_len = C(ang.cos() as f32, ang.sin() as f32);
        for start in (0..n).step_by(len) {
            let mut w = C(1.0, 0.0);
            for k in 0..len / 2 {
                let u = a[start + k];
                let v = a[start + k + len / 2] * w;
                a[start + k] = u + v;
                a[start + k + len / 2] = u - v;
                w = w * w_len;
            }
        }
        len <<= 1;
    }
}

/// A crop deblurred for a horizontal box blur `length` pixels long (1 or less: a copy).
/// Each row is padded on both sides with its edge pixels (half the width each) so that the
/// filter's wrap-around falls outside the plate.
pub fn deblur_horizontal(img: &Rgb, length: usize) -> Rgb {
    if length <= 1 || img.width == 0 {
        return img.clone();
    }
    let w = img.width;
    let pad = w / 2;
    let n = (w + 2 * pad).next_power_of_two();
    // The blur's transfer function, centred on the pixel.
    let mut k = vec![C(0.0, 0.0); n];
    for i in 0..length {
        let at = (i as isize - (length / 2) as isize).rem_euclid(n as isize) as usize;
        k[at] = C(1.0 / length as f32, 0.0);
    }
    fft(&mut k, false);
    let filter: Vec<C> = k
        .iter()
        .map(|&C(re, im)| {
            let d = re * re + im * im + NOISE_TO_SIGNAL;
            // conj(K) / (|K|^2 + nsr), with the inverse transform's 1/n folded in.
            C(re / d / n as f32, -im / d / n as f32)
        })
        .collect();
    let mut out = Rgb::new(w, img.height);
    let mut row = vec![C(0.0, 0.0); n];
    for y in 0..img.height {
        for c in 0..3 {
            for (i, v) in row.iter_mut().enumerate() {
                // Left pad, the row, then the right edge up to n.
                let x = (i as isize - pad as isize).clamp(0, w as isize - 1) as usize;
                *v = C(img.get(x, y)[c] as f32, 0.0);
            }
            fft(&mut row, false);
            for (v, f) in row.iter_mut().zip(&filter) {
                *v = *v * *f;
            }
            fft(&mut row, true);
            for x in 0..w {
                let mut p = out.get(x, y);
                p[c] = row[x + pad].0.round().clamp(0.0, 255.0) as u8;
                out.put(x, y, p);
            }
        }
    }
    out
}

/// Lags (crop pixels) a smear is looked for at: up to a twelfth of a 168 px crop.
const MAX_SMEAR_PX: usize = 14;

/// A dip in the derivative autocorrelation at a lag shorter than this is the characters'
/// own strokes (about 4 px wide in a 168x48 crop), not motion: 95 % of 1000 real CCPD plate
/// crops measure 5 px or less, every one of the 16 real CCPD scenes 5 or less, while crops
/// of the generated clips smeared 7 px in the frame measure 6-9.
pub const MIN_SMEAR_PX: usize = 6;

/// The horizontal motion smear of a plate crop, in its own pixels, when the crop shows
/// one: `None` for a crop whose strokes are as sharp as a still plate's.
///
/// Along each row, the brightness derivative of a crop smeared over L pixels is the
/// sharp row's derivative minus itself L pixels on (a box blur's derivative is two
/// spikes L apart), so the autocorrelation of the derivative, summed over the rows, dips
/// at lag L. A sharp plate dips too, at its strokes' width (an edge and the stroke's other
/// edge), which is why a dip counts as a smear only from [`MIN_SMEAR_PX`].
pub fn smear_px(img: &Rgb) -> Option<usize> {
    dip_lag(img).filter(|&k| k >= MIN_SMEAR_PX)
}

/// The lag (2..=[`MAX_SMEAR_PX`]) at which the horizontal derivative's autocorrelation,
/// summed over the rows, is lowest, when it is below zero there.
fn dip_lag(img: &Rgb) -> Option<usize> {
    let w = img.width;
    if w < MAX_SMEAR_PX + 2 || img.height == 0 {
        return None;
    }
    let mut r = [0f64; MAX_SMEAR_PX + 1];
    let mut d = vec![0f32; w - 1];
    let grey = |x: usize, y: usize| {
        let p = img.get(x, y);
        (p[0] as f32 + p[1] as f32 + p[2] as f32) / 3.0
    };
    for y in 0..img.height {
        for (x, v) in d.iter_mut().enumerate() {
            *v = grey(x + 1, y) - grey(x, y);
        }
        let mean = d.iter().sum::<f32>() / d.len() as f32;
        d.iter_mut().for_each(|v| *v -= mean);
        for (k, acc) in r.iter_mut().enumerate() {
            *acc += d[..d.len() - k]
                .iter()
                .zip(&d[k..])
                .map(|(a, b)| (a * b) as f64)
                .sum::<f64>();
        }
    }
    if r[0] <= 0.0 {
        return None;
    }
    let (k, v) = (2..=MAX_SMEAR_PX)
        .map(|k| (k, r[k] / r[0]))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    (v < 0.0).then_some(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blur(img: &Rgb, length: usize) -> Rgb {
        let mut out = Rgb::new(img.width, img.height);
        for y in 0..img.height {
            for x in 0..img.width {
                let mut acc = [0f32; 3];
                for i in 0..length {
                    let sx = (x as isize + i as isize - (length / 2) as isize)
                        .clamp(0, img.width as isize - 1) as usize;
                    let p = img.get(sx, y);
                    for c in 0..3 {
                        acc[c] += p[c] as f32 / length as f32;
                    }
                }
                out.put(x, y, acc.map(|a| a.round() as u8));
            }
        }
        out
    }

    /// White strokes 2 px wide every 6 px on blue, like a plate's characters.
    fn strokes() -> Rgb {
        let mut img = Rgb::new(96, 8);
        for y in 0..8 {
            for x in 0..96 {
                let on = (20..76).contains(&x) && x % 6 < 2;
                img.put(x, y, if on { [240, 240, 240] } else { [20, 60, 190] });
            }
        }
        img
    }

    fn error(a: &Rgb, b: &Rgb) -> f64 {
        let d: f64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum();
        d / a.data.len() as f64
    }

    #[test]
    fn fft_round_trips() {
        let mut a: Vec<C> = (0..16).map(|i| C(i as f32, 0.0)).collect();
        fft(&mut a, false);
        // The DC term is the sum.
        assert!((a[0].0 - 120.0).abs() < 1e-3);
        fft(&mut a, true);
        for (i, v) in a.iter().enumerate() {
            assert!((v.0 / 16.0 - i as f32).abs() < 1e-3 && (v.1 / 16.0).abs() < 1e-3);
        }
    }

    #[test]
    fn deblurring_for_the_right_length_restores_strokes() {
        let sharp = strokes();
        let blurred = blur(&sharp, 7);
        let restored = deblur_horizontal(&blurred, 7);
        let (before, after) = (error(&sharp, &blurred), error(&sharp, &restored));
        assert!(after < before / 2.0, "error {before:.1} -> {after:.1}");
        // The strokes stand apart again: peak-to-trough contrast inside the stroke band.
        let row = |img: &Rgb| {
            (30..66)
                .map(|x| img.get(x, 4)[0] as i32)
                .collect::<Vec<_>>()
        };
        let contrast = |r: Vec<i32>| r.iter().max().unwrap() - r.iter().min().unwrap();
        let (cb, cr) = (contrast(row(&blurred)), contrast(row(&restored)));
        assert!(
            cr > 2 * cb,
            "contrast {cb} -> {cr}: {:?} {:?}",
            row(&blurred),
            row(&restored)
        );
    }

    #[test]
    fn no_length_is_a_copy_and_sizes_are_kept() {
        let img = strokes();
        assert_eq!(deblur_horizontal(&img, 0), img);
        assert_eq!(deblur_horizontal(&img, 1), img);
        let d = deblur_horizontal(&Rgb::new(5, 3), 3);
        assert_eq!((d.width, d.height), (5, 3));
    }

    /// Characters' strokes 3 px wide at uneven spacing (8-15 px), white on blue.
    fn characters() -> Rgb {
        let starts = [10, 22, 31, 45, 56, 64, 79, 88, 101, 113, 121, 135, 146];
        let mut img = Rgb::new(168, 48);
        for y in 0..48 {
            for x in 0..168 {
                let on = (8..40).contains(&y) && starts.iter().any(|&s| (s..s + 3).contains(&x));
                img.put(x, y, if on { [235, 235, 235] } else { [25, 60, 180] });
            }
        }
        img
    }

    #[test]
    fn the_smear_is_measured_beyond_the_strokes() {
        let sharp = characters();
        assert_eq!(smear_px(&sharp), None, "dip at {:?}", dip_lag(&sharp));
        for length in [7, 9, 11] {
            let k = smear_px(&blur(&sharp, length));
            assert!(
                k.is_some_and(|k| k.abs_diff(length) <= 1),
                "smeared {length} px, measured {k:?}"
            );
        }
        // A smear shorter than the strokes' width is not told from them.
        assert_eq!(smear_px(&blur(&sharp, 3)), None);
        // Nothing to measure on a blank crop.
        assert_eq!(smear_px(&Rgb::filled(168, 48, [30, 60, 190])), None);
    }
}
