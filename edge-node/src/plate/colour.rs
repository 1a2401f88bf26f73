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
pub fn classify(crop: &Rgb) -> Option<PlateColor> {
    // Only the inner part: the corners of the quad may catch the bumper.
    let (w, h) = (crop.width, crop.height);
    let (x0, x1, y0, y1) = (w / 10, w - w / 10, h / 8, h - h / 8);
    let (mut blue, mut yellow, mut green, mut white, mut black, mut n) = (0, 0, 0, 0, 0, 0);
    for y in y0..y1 {
        for x in x0..x1 {
            let (hu, s, v) = hsv(crop.get(x, y));
            n += 1;
            if v < 0.25 {
                black += 1;
            } else if s < 0.22 && v > 0.6 {
                white += 1;
            } else if s >= 0.3 {
                match hu {
                    h if (190.0..=255.0).contains(&h) => blue += 1,
                    h if (30.0..=68.0).contains(&h) => yellow += 1,
                    h if (75.0..=170.0).contains(&h) => green += 1,
                    _ => {}
                }
            }
        }
    }
    let n = n.max(1) as f32;
    let f = |c: i32| c as f32 / n;
    let (blue, yellow, green, white, black) = (f(blue), f(yellow), f(green), f(white), f(black));
    if blue >= 0.3 {
        return Some(PlateColor::Blue);
    }
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
    if black >= 0.45 {
        return Some(PlateColor::Black);
    }
    None
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
