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
    for i in 0..len {
        let mut votes: Vec<(char, f32)> = Vec::new();
        let mut total = 0f32;
        for (r, wt) in &same {
            let (c, p) = (r.chars[i], r.conf[i] * wt);
            total += p;
            match votes.iter_mut().find(|(vc, _)| *vc == c) {
                Some(v) => v.1 += p,
                None => votes.push((c, p)),
            }
        }
        let (c, w) = votes
            .into_iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one read");
        chars.push(c);
        // Share of the vote times the winners' confidence spread over all reads.
        conf.push(if total > 0.0 {
            (w / total) * (w / total_weight).clamp(0.0, 1.0)
        } else {
            0.0
        });
    }
    let agreeing = reads.iter().filter(|r| r.chars == chars).count();
    let best = reads
        .iter()
        .enumerate()
        .filter(|(_, r)| agreeing == 0 || r.chars == chars)
        .max_by(|a, b| a.1.mean_conf().total_cmp(&b.1.mean_conf()))
        .map(|(i, _)| i)?;
    let mut colours: Vec<(PlateColor, f32)> = Vec::new();
    for r in reads {
        if let Some(c) = r.colour {
            match colours.iter_mut().find(|(vc, _)| *vc == c) {
                Some(v) => v.1 += r.det_score,
                None => colours.push((c, r.det_score)),
            }
        }
    }
    let colour = colours
        .into_iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c);
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

    #[test]
    fn nothing_to_fuse() {
        assert!(fuse(&[]).is_none());
    }
}
