//! Plate colour from a rectified crop: the background is the largest coloured area; text and
//! frame are thinner. Blue (small car), yellow (large vehicle), green gradient (small
//! new-energy), yellow-green (large new-energy), white (police), black (embassy, HK/Macao).

use protocol::plate::PlateColor;

use super::geometry::Rgb;

/// (hue 0..360, saturation 0..1, value 0..1)
pub fn hsv(p: [u8; 3]) -> (f32, f32, f32) {
    let [r, g, b] = p.map(|v| v as f32 / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        60.0 * (((g - b) / d).rem_euclid(6.0))
    } else if max == g {
        60.0 * ((b - r) / d + 2.0)
    } else {
        60.0 * ((r - g) / d + 4.0)
    };
    let s = if max == 0.0 { 0.0 } else { d / max };
    (h, s, max)
}

/// The plate colour, or None when the crop is too ambiguous to say.
///
/// A plate is characters on a background of another brightness: the pixels of the crop's
/// inner part are split in two by luminance (Otsu). Which side is the background, and its
/// colour, give the plate's colour:
/// - the darker side blue and the lighter not yellow or green: a blue plate (white
///   characters; also when overexposed, where the blue background is the brighter majority);
/// - light characters on a dark majority: blue, unless the background is grey (black
///   plates). Real blue plates under sodium or green street light look yellow, teal or
///   purple, and very dark ones nearly black, but their background is never grey;
/// - dark characters on a light majority: the light side's hue (yellow, green gradient,
///   yellow-green, white).
pub fn classify(crop: &Rgb) -> Option<PlateColor> {
    // Only the inner part: the corners of the quad may catch the bumper.
    let (w, h) = (crop.width, crop.height);
    let (x0, x1, y0, y1) = (w / 10, w - w / 10, h / 8, h - h / 8);
    let mut px: Vec<[u8; 3]> = Vec::with_capacity((x1 - x0) * (y1 - y0));
    for y in y0..y1 {
        for x in x0..x1 {
            px.push(crop.get(x, y));
        }
    }
    if px.is_empty() {
        return None;
    }
    let luma =
        |p: &[u8; 3]| (0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32) as u8;
    let t = otsu(px.iter().map(luma));
    let (bright, dark): (Vec<[u8; 3]>, Vec<[u8; 3]>) = px.iter().partition(|p| luma(p) > t);
    let bright_share = bright.len() as f32 / px.len() as f32;
    let (dh, ds, dv) = hsv(mean_rgb(&dark));
    let (bh, bs, _) = hsv(mean_rgb(&bright));
    // A yellow or green light side is a plate of that colour, whatever is blue beside it
    // (a yellow plate on a blue bus).
    let bright_coloured = bs >= 0.3 && (30.0..=170.0).contains(&bh);
    let dark_blue = ds >= 0.25 && dv >= 0.1 && (180.0..=260.0).contains(&dh);
    if !dark.is_empty() && dark_blue && !bright_coloured {
        return Some(PlateColor::Blue);
    }
    if bright_share < 0.5 {
        // Light characters on a dark background: blue or black. Grey (or no colour at all)
        // is black; any colour cast is a blue plate under coloured light.
        return Some(if ds < BLACK_MAX_SATURATION {
            PlateColor::Black
        } else {
            PlateColor::Blue
        });
    }
    let (mut yellow, mut green, mut white) = (0, 0, 0);
    for p in &bright {
        let (hu, s, v) = hsv(*p);
        if s < 0.22 && v > 0.5 {
            white += 1;
        } else if s >= 0.3 {
            if (30.0..=68.0).contains(&hu) {
                yellow += 1;
            } else if (75.0..=170.0).contains(&hu) {
                green += 1;
            }
        }
    }
    let n = bright.len().max(1) as f32;
    let (yellow, green, white) = (yellow as f32 / n, green as f32 / n, white as f32 / n);
    if yellow >= 0.25 && green >= 0.15 {
        return Some(PlateColor::YellowGreen);
    }
    if yellow >= 0.3 {
        return Some(PlateColor::Yellow);
    }
    // The small new-energy plate fades from white-green to green.
    if green >= 0.2 {
        return Some(PlateColor::Green);
    }
    if white >= 0.45 {
        return Some(PlateColor::White);
    }
    None
}

/// Below this saturation a dark background behind light characters is grey: a black plate.
const BLACK_MAX_SATURATION: f32 = 0.15;

fn mean_rgb(px: &[[u8; 3]]) -> [u8; 3] {
    let n = px.len().max(1) as u64;
    let mut sum = [0u64; 3];
    for p in px {
        for c in 0..3 {
            sum[c] += p[c] as u64;
        }
    }
    sum.map(|v| (v / n) as u8)
}

/// Otsu's threshold of 8-bit values: the value that best splits them into two classes
/// (values above it are the bright class). With a flat optimum, its middle.
pub fn otsu(values: impl Iterator<Item = u8>) -> u8 {
    let mut hist = [0u64; 256];
    let mut n = 0u64;
    for v in values {
        hist[v as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 127;
    }
    let total: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, c)| i as f64 * *c as f64)
        .sum();
    let (mut w0, mut sum0) = (0f64, 0f64);
    let (mut best, mut first, mut last) = (-1f64, 0usize, 0usize);
    for (t, &c) in hist.iter().enumerate() {
        w0 += c as f64;
        sum0 += t as f64 * c as f64;
        let w1 = n as f64 - w0;
        if w0 == 0.0 || w1 == 0.0 {
            continue;
        }
        let (m0, m1) = (sum0 / w0, (total - sum0) / w1);
        let between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if between > best + 1e-6 {
            best = between;
            first = t;
            last = t;
        } else if (between - best).abs() <= 1e-6 {
            last = t;
        }
    }
    ((first + last) / 2) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plate(bg: [u8; 3], text: [u8; 3]) -> Rgb {
        let mut img = Rgb::filled(168, 48, bg);
        for x in (20..150).step_by(20) {
            for y in 10..38 {
                for dx in 0..5 {
                    img.put(x + dx, y, text);
                }
            }
        }
        img
    }

    /// A plate of two colours: `text` strokes on `bg`, strokes covering about a third.
    fn strokes(bg: [u8; 3], text: [u8; 3], share: usize) -> Rgb {
        let mut img = Rgb::filled(168, 48, bg);
        for x in (0..168).filter(|x| x % 12 < share) {
            for y in 8..40 {
                img.put(x, y, text);
            }
        }
        img
    }

    /// Real blue plates as the CCPD crops show them (mean colours of their two sides).
    #[test]
    fn real_blue_plates_under_coloured_light() {
        // Sodium light: white characters look yellow, the background dark brown.
        assert_eq!(
            classify(&strokes([60, 49, 39], [169, 154, 105], 5)),
            Some(PlateColor::Blue)
        );
        // Very dark, with a green cast.
        assert_eq!(
            classify(&strokes([4, 10, 14], [37, 57, 54], 4)),
            Some(PlateColor::Blue)
        );
        // Overexposed: the cyan background is the brighter majority.
        assert_eq!(
            classify(&strokes([101, 224, 230], [212, 251, 246], 4)),
            Some(PlateColor::Blue)
        );
        // A dim purple-blue.
        assert_eq!(
            classify(&strokes([84, 98, 121], [141, 160, 168], 4)),
            Some(PlateColor::Blue)
        );
        // But a grey background behind light characters is a black plate, and yellow with
        // dark characters a yellow one.
        assert_eq!(
            classify(&strokes([30, 30, 32], [200, 200, 200], 4)),
            Some(PlateColor::Black)
        );
        assert_eq!(
            classify(&strokes([200, 160, 40], [30, 28, 20], 4)),
            Some(PlateColor::Yellow)
        );
        // A yellow plate whose crop caught the blue bus around it.
        let mut on_bus = strokes([220, 180, 30], [20, 20, 20], 3);
        for y in 0..48 {
            for x in 0..60 {
                on_bus.put(x, y, [30, 60, 160]);
            }
        }
        assert_eq!(classify(&on_bus), Some(PlateColor::Yellow));
    }

    #[test]
    fn otsu_splits_two_levels() {
        let t = otsu([10u8, 10, 10, 200, 200].into_iter());
        assert!((10..200).contains(&t), "{t}");
        assert_eq!(otsu(std::iter::empty()), 127);
    }

    #[test]
    fn colours_of_the_plate_families() {
        assert_eq!(
            classify(&plate([20, 70, 190], [250; 3])),
            Some(PlateColor::Blue)
        );
        assert_eq!(
            classify(&plate([235, 185, 20], [10; 3])),
            Some(PlateColor::Yellow)
        );
        assert_eq!(
            classify(&plate([90, 200, 110], [10; 3])),
            Some(PlateColor::Green)
        );
        assert_eq!(
            classify(&plate([240, 240, 240], [10; 3])),
            Some(PlateColor::White)
        );
        assert_eq!(
            classify(&plate([15, 15, 15], [250; 3])),
            Some(PlateColor::Black)
        );
    }
}
