//! Fusion of the plate reads of one track: reads of the most supported length vote per
//! character position, each vote weighted by the character's confidence. A fused
//! character's confidence is the share of the reads' confidence that voted for it, so a
//! character every read agrees on with high confidence scores near 1 and a contested one
//! scores low.

use std::collections::HashMap;

use protocol::plate::PlateColor;

use super::PlateRead;

#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub chars: Vec<char>,
    pub conf: Vec<f32>,
    /// Reads fused.
    pub reads: usize,
    /// Reads whose whole text equals the fused text.
    pub agreeing: usize,
    /// Index (into the reads given) of the best read: the fused text read with the highest
    /// mean confidence, or the most confident read when none equals it.
    pub best: usize,
    pub colour: Option<PlateColor>,
    pub two_row: bool,
    /// The motion deblurring the fused reads were of (pixels; 0: the crops as they were).
    pub deblur_px: u32,
}

impl Fused {
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }
    pub fn min_conf(&self) -> f32 {
        self.conf.iter().copied().fold(1.0, f32::min)
    }
}

/// The share of a track's reads (of the fused length) that must have seen a character for
/// it to replace the voted one when only it makes the plate fit a grammar.
const MIN_CONSTRAINED_SHARE: f32 = 0.15;

/// The plate colour most of the detector's confidence stands behind.
fn fused_colour(reads: &[PlateRead]) -> Option<PlateColor> {
    let mut colours: Vec<(PlateColor, f32)> = Vec::new();
    for r in reads {
        if let Some(c) = r.colour {
            match colours.iter_mut().find(|(vc, _)| *vc == c) {
                Some(v) => v.1 += r.det_score,
                None => colours.push((c, r.det_score)),
            }
        }
    }
    colours
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// One read's text as fusion sees it: the crop as it is, or deblurred.
struct Text<'a> {
    chars: &'a [char],
    conf: &'a [f32],
}

impl Text<'_> {
    fn mean_conf(&self) -> f32 {
        super::mean(self.conf)
    }
}

/// The motion deblurring lengths the track's reads were made at (pixels; 0: the crop as
/// it is), surest first: by the sum of each read's mean confidence at that length (a read
/// without that length counts as it is). One vehicle's blur is the same from frame to
/// frame, so one length serves the whole track; a tie goes to the shorter length.
fn deblur_lengths(reads: &[PlateRead]) -> Vec<u32> {
    let mut lengths: Vec<u32> = std::iter::once(0)
        .chain(
            reads
                .iter()
                .flat_map(|r| r.deblurred.iter().map(|d| d.length)),
        )
        .collect();
    lengths.sort_unstable();
    lengths.dedup();
    let sureness =
        |length: u32| -> f32 { reads.iter().map(|r| text_at(r, length).mean_conf()).sum() };
    let mut scored: Vec<(u32, f32)> = lengths.into_iter().map(|l| (l, sureness(l))).collect();
    // Stable: equal sureness keeps the shorter length first.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.into_iter().map(|(l, _)| l).collect()
}

fn text_at(r: &PlateRead, length: u32) -> Text<'_> {
    match r.deblurred.iter().find(|d| d.length == length) {
        Some(d) if length > 0 => Text {
            chars: &d.chars,
            conf: &d.conf,
        },
        _ => Text {
            chars: &r.chars,
            conf: &r.conf,
        },
    }
}

/// Fuses a track's reads at the surest deblurring length whose fused plate fits a GA 36
/// grammar, or at the surest length when none does (a fake's reads fit none at any
/// length): a length that reads surer but turns a real plate into a fake (the narrow 辽 of
/// a green plate seen as `Z` in every deblurred read) gives way to one that reads it.
pub fn fuse(reads: &[PlateRead]) -> Option<Fused> {
    let mut surest = None;
    for length in deblur_lengths(reads) {
        let f = fuse_at(reads, length)?;
        let fits =
            protocol::plate::parse(&f.text(), f.colour, protocol::plate::Mode::Lenient).is_ok();
        if fits {
            return Some(f);
        }
        surest.get_or_insert(f);
    }
    surest
}

/// Fuses the reads made at deblurring length `deblur_px`.
fn fuse_at(reads: &[PlateRead], deblur_px: u32) -> Option<Fused> {
    if reads.is_empty() {
        return None;
    }
    let texts: Vec<Text> = reads.iter().map(|r| text_at(r, deblur_px)).collect();
    // A read that fits a GA 36 grammar counts double: a dropped or extra character makes a
    // read fit none. (A fake plate's reads all fit none, and count alike.)
    let weight: Vec<f32> = reads
        .iter()
        .zip(&texts)
        .map(|(r, t)| {
            let text: String = t.chars.iter().collect();
            if protocol::plate::parse(&text, r.colour, protocol::plate::Mode::Lenient).is_ok() {
                2.0
            } else {
                1.0
            }
        })
        .collect();
    // The length with the most confidence behind it.
    let mut by_len: HashMap<usize, f32> = HashMap::new();
    for (t, w) in texts.iter().zip(&weight) {
        *by_len.entry(t.chars.len()).or_default() += t.mean_conf() * w;
    }
    let len = by_len
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(l, _)| *l)?;
    let same: Vec<(&Text, f32)> = texts
        .iter()
        .zip(weight.iter().copied())
        .filter(|(t, _)| t.chars.len() == len)
        .collect();
    let total_weight: f32 = same.iter().map(|(_, w)| w).sum();
    let mut chars = Vec::with_capacity(len);
    let mut conf = Vec::with_capacity(len);
    // Per position: each character read there, its weighted vote and how many reads.
    let mut ballots: Vec<(Vec<(char, f32, usize)>, f32)> = Vec::with_capacity(len);
    // Share of the vote times the winners' confidence spread over all reads.
    let score = |w: f32, total: f32| {
        if total > 0.0 {
            (w / total) * (w / total_weight).clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    for i in 0..len {
        let mut votes: Vec<(char, f32, usize)> = Vec::new();
        let mut total = 0f32;
        for (r, wt) in &same {
            let (c, p) = (r.chars[i], r.conf[i] * wt);
            total += p;
            match votes.iter_mut().find(|(vc, _, _)| *vc == c) {
                Some(v) => {
                    v.1 += p;
                    v.2 += 1;
                }
                None => votes.push((c, p, 1)),
            }
        }
        let &(c, w, _) = votes
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one read");
        chars.push(c);
        conf.push(score(w, total));
        ballots.push((votes, total));
    }
    let colour = fused_colour(reads);
    // A fused text no grammar fits, where a character that enough reads saw instead makes
    // it fit, takes that character: a reader that confidently sees the narrow province 辽 as
    // `Z` in most frames and as 辽 (unsure) in some must not turn a real plate into a fake.
    // A fake's reads agree with each other, so it is left alone.
    let fits = |t: &[char]| {
        protocol::plate::parse(
            &t.iter().collect::<String>(),
            colour,
            protocol::plate::Mode::Lenient,
        )
        .is_ok()
    };
    if !fits(&chars) {
        let min_reads = (same.len() as f32 * MIN_CONSTRAINED_SHARE).ceil().max(2.0) as usize;
        let mut best: Option<(usize, char, f32, usize)> = None;
        for (i, (votes, _)) in ballots.iter().enumerate() {
            for &(c, w, n) in votes {
                if c == chars[i] || n < min_reads {
                    continue;
                }
                let mut t = chars.clone();
                t[i] = c;
                if fits(&t) && best.is_none_or(|b| (n, w) > (b.3, b.2)) {
                    best = Some((i, c, w, n));
                }
            }
        }
        if let Some((i, c, w, _)) = best {
            chars[i] = c;
            conf[i] = score(w, ballots[i].1);
        }
    }
    let agreeing = texts.iter().filter(|t| t.chars == chars.as_slice()).count();
    let best = texts
        .iter()
        .enumerate()
        .filter(|(_, t)| agreeing == 0 || t.chars == chars.as_slice())
        .max_by(|a, b| a.1.mean_conf().total_cmp(&b.1.mean_conf()))
        .map(|(i, _)| i)?;
    let two_row = reads.iter().filter(|r| r.two_row).count() * 2 > reads.len();
    Some(Fused {
        chars,
        conf,
        reads: reads.len(),
        agreeing,
        best,
        colour,
        two_row,
        deblur_px,
    })
}

#[cfg(test)]
mod tests {
    use super::super::geometry::Rgb;
    use super::*;

    fn read(text: &str, conf: f32) -> PlateRead {
        let chars: Vec<char> = text.chars().collect();
        PlateRead {
            conf: vec![conf; chars.len()],
            chars,
            colour: Some(PlateColor::Blue),
            two_row: false,
            det_score: 0.9,
            corners: [(0.0, 0.0); 4],
            crop: Rgb::new(1, 1),
            frame_seq: 0,
            deblurred: Vec::new(),
        }
    }

    fn with_deblurred(mut r: PlateRead, length: u32, text: &str, conf: f32) -> PlateRead {
        let chars: Vec<char> = text.chars().collect();
        r.deblurred.push(super::super::Deblurred {
            length,
            conf: vec![conf; chars.len()],
            chars,
        });
        r
    }

    #[test]
    fn the_deblurring_surest_over_the_track_is_fused() {
        // A blurred 琼 reads as 皖 in the crop as it is; deblurred for 7 px it reads right
        // and surer, for 3 px no better.
        let reads: Vec<PlateRead> = (0..6)
            .map(|_| {
                let r = with_deblurred(read("皖L69V36", 0.80), 3, "皖L69V36", 0.78);
                with_deblurred(r, 7, "琼L69V36", 0.86)
            })
            .collect();
        assert_eq!(deblur_lengths(&reads), [7, 0, 3]);
        let f = fuse(&reads).unwrap();
        assert_eq!(
            (f.text().as_str(), f.deblur_px, f.agreeing),
            ("琼L69V36", 7, 6)
        );
        // A sharp plate: deblurring rings and reads less surely; the crop as it is stands.
        let sharp: Vec<PlateRead> = (0..4)
            .map(|_| with_deblurred(read("苏E12345", 0.95), 5, "苏E1Z345", 0.7))
            .collect();
        let f = fuse(&sharp).unwrap();
        assert_eq!((f.text().as_str(), f.deblur_px), ("苏E12345", 0));
        // The surest length turns a real plate into a fake (辽 seen as Z in every read
        // deblurred for 7 px): the next surest that reads a plate stands.
        let green = |t: &str, c: f32| PlateRead {
            colour: Some(PlateColor::Green),
            ..read(t, c)
        };
        let liao: Vec<PlateRead> = (0..5)
            .map(|_| with_deblurred(green("辽VDB0763", 0.8), 7, "ZVDB0763", 0.9))
            .collect();
        let f = fuse(&liao).unwrap();
        assert_eq!((f.text().as_str(), f.deblur_px), ("辽VDB0763", 0));
        // A fake reads as a fake at every length: the surest stands.
        let fake: Vec<PlateRead> = (0..5)
            .map(|_| with_deblurred(read("中A12345", 0.8), 5, "中A1Z345", 0.9))
            .collect();
        let f = fuse(&fake).unwrap();
        assert_eq!((f.text().as_str(), f.deblur_px), ("中A1Z345", 5));
        // A read without that length counts as it is.
        let mut mixed = reads.clone();
        mixed.push(read("皖L69V36", 0.80));
        assert_eq!(fuse(&mixed).unwrap().text(), "琼L69V36");
    }

    #[test]
    fn majority_per_character_wins() {
        let reads = [
            read("苏E12345", 0.9),
            read("苏E12845", 0.6),
            read("苏F12345", 0.7),
            read("苏E1234", 0.95),
        ];
        let f = fuse(&reads).unwrap();
        assert_eq!(f.text(), "苏E12345");
        assert_eq!(f.agreeing, 1);
        assert_eq!(f.best, 0);
        assert_eq!(f.colour, Some(PlateColor::Blue));
        // Contested positions are less confident than agreed ones.
        assert!(f.conf[1] < f.conf[0] && f.conf[4] < f.conf[2]);
        assert!(f.conf[0] > 0.7);
    }

    #[test]
    fn a_confident_minority_can_outvote_weak_reads() {
        let reads = [
            read("苏E12345", 0.95),
            read("苏E12845", 0.3),
            read("苏E12845", 0.3),
        ];
        assert_eq!(fuse(&reads).unwrap().text(), "苏E12345");
    }

    /// Frames of one green plate (seen in the demo clip): the narrow 辽 read as a confident
    /// `Z` by most, as an unsure 辽 by some.
    #[test]
    fn a_character_some_reads_saw_makes_an_unparsable_plate_fit() {
        let green = |t: &str, c: f32| PlateRead {
            colour: Some(PlateColor::Green),
            ..read(t, c)
        };
        let mut reads: Vec<PlateRead> = (0..18).map(|_| green("ZYFC7407", 0.95)).collect();
        reads.extend((0..5).map(|_| green("辽YFC7407", 0.1)));
        let f = fuse(&reads).unwrap();
        assert_eq!(f.text(), "辽YFC7407");
        assert!(f.conf[0] < 0.1, "{:?}", f.conf);
        // One stray read is not enough: a fake plate read the same way stays a fake.
        let mut fake: Vec<PlateRead> = (0..12).map(|_| read("中A12345", 0.99)).collect();
        fake.push(read("京A12345", 0.3));
        assert_eq!(fuse(&fake).unwrap().text(), "中A12345");
    }

    #[test]
    fn nothing_to_fuse() {
        assert!(fuse(&[]).is_none());
    }
}
