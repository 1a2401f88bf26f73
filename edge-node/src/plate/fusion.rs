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

pub fn fuse(reads: &[PlateRead]) -> Option<Fused> {
    if reads.is_empty() {
        return None;
    }
    // A read that fits a GA 36 grammar counts double: a dropped or extra character makes a
    // read fit none. (A fake plate's reads all fit none, and count alike.)
    let weight: Vec<f32> = reads
        .iter()
        .map(|r| {
            let text: String = r.chars.iter().collect();
            if protocol::plate::parse(&text, r.colour, protocol::plate::Mode::Lenient).is_ok() {
                2.0
            } else {
                1.0
            }
        })
        .collect();
    // The length with the most confidence behind it.
    let mut by_len: HashMap<usize, f32> = HashMap::new();
    for (r, w) in reads.iter().zip(&weight) {
        *by_len.entry(r.chars.len()).or_default() += r.mean_conf() * w;
    }
    let len = by_len
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(a.0)))
        .map(|(l, _)| *l)?;
    let same: Vec<(&PlateRead, f32)> = reads
        .iter()
        .zip(weight.iter().copied())
        .filter(|(r, _)| r.chars.len() == len)
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
    let agreeing = reads.iter().filter(|r| r.chars == chars).count();
    let best = reads
        .iter()
        .enumerate()
        .filter(|(_, r)| agreeing == 0 || r.chars == chars)
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
        }
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
