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
    /// The smear the reads that gave the fused text were deblurred for (the median, crop
    /// pixels; 0: the crops as they were).
    pub deblur_px: u32,
    /// The fused text owes a character to the grammar: the reads' plain vote (each read's
    /// confidence alone) differs from it, because reads that fit a grammar count double or
    /// a character a few reads saw was taken to make it fit (`MIN_CONSTRAINED_SHARE`).
    pub constrained: bool,
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

/// Which of a read's texts fusion takes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Take {
    /// The crop as it is.
    Crop,
    /// The deblurred read where there is one.
    Deblurred,
}

/// One read's text as fusion sees it: the crop as it is, or deblurred.
struct Text<'a> {
    chars: &'a [char],
    conf: &'a [f32],
    /// The smear it was deblurred for (0: the crop as it is).
    deblur_px: u32,
}

impl Text<'_> {
    fn mean_conf(&self) -> f32 {
        super::mean(self.conf)
    }
}

fn text_of(r: &PlateRead, take: Take) -> Text<'_> {
    let crop = Text {
        chars: &r.chars,
        conf: &r.conf,
        deblur_px: 0,
    };
    let Some(d) = &r.deblurred else {
        return crop;
    };
    let deblurred = Text {
        chars: &d.chars,
        conf: &d.conf,
        deblur_px: d.length,
    };
    match take {
        Take::Crop => crop,
        Take::Deblurred => deblurred,
    }
}

/// A track's reads fused with what the deblurred reads of its smeared crops say.
///
/// Deblurring only ever runs on a crop measured smeared past its characters' strokes
/// (`deblur::smear_px`), and such a crop's own read of a fine glyph is no sensible read:
/// PP-OCRv4 reads a 琼 smeared 7 px as 皖 or 豫 with confidence 0.7-0.99 frame after
/// frame (on the generated clips the province of crops smeared 7 px was right in 119 of
/// 186 as they were, in 170 deblurred for the measured smear). So a track with at least
/// [`MIN_SMEARED_READS`] smeared reads is fused from the deblurred reads (the crop where a
/// read has none), and that plate stands when it fits a grammar; when it fits none, it
/// stands only where the crops' plate owes a character to the grammar and its own does not
/// (a fake stays as painted). A deblurred misreading in a few frames is
/// outvoted like any other. With fewer smeared reads (a still photo, a track seen twice)
/// the deblurred read only fills in: a character with no place where it stands (not a
/// province first, not a letter second, not a plate character after) takes the deblurred
/// one when that has its place, and a deblurred plate of another length stands only when
/// the crops' fits no grammar and it does (a character the smear merged or split). Either
/// way the narrow 辽 of a green plate deblurred into `Z`, which fits no grammar, changes
/// nothing.
fn with_deblurred(reads: &[PlateRead], base: &Fused) -> Option<Fused> {
    let fits = |f: &Fused| {
        protocol::plate::parse(&f.text(), f.colour, protocol::plate::Mode::Lenient).is_ok()
    };
    let smeared = reads.iter().filter(|r| r.deblurred.is_some()).count();
    if smeared == 0 {
        return None;
    }
    let deblurred = fuse_at(reads, Take::Deblurred)?;
    if smeared >= MIN_SMEARED_READS {
        if deblurred.chars == base.chars {
            // The same plate, and the deblurred reads' agreement is what counts (a camera
            // stops reading a track once enough reads agree: not on crops that agree on a
            // smeared glyph's misreading).
            return Some(deblurred);
        }
        // A plate the deblurred reads make stands; so does their non-plate when the
        // crops' plate owes a character to the grammar and theirs does not (a smeared
        // fake's `8` some crops read as `B`: the fake stays as painted).
        let keep = if fits(&deblurred) {
            true
        } else {
            base.constrained && !deblurred.constrained
        };
        return keep.then_some(deblurred);
    }
    if base.chars.len() != deblurred.chars.len() {
        return (!fits(base) && fits(&deblurred)).then_some(deblurred);
    }
    let mut out = base.clone();
    let mut filled = false;
    for (i, &c) in deblurred.chars.iter().enumerate() {
        if c != base.chars[i] && !has_place(i, base.chars[i]) && has_place(i, c) {
            out.chars[i] = c;
            out.conf[i] = deblurred.conf[i];
            filled = true;
        }
    }
    if !filled || !fits(&out) {
        return None;
    }
    out.deblur_px = deblurred.deblur_px;
    out.agreeing = reads
        .iter()
        .filter(|r| {
            text_of(r, Take::Deblurred).chars == out.chars.as_slice() || r.chars == out.chars
        })
        .count();
    Some(out)
}

/// Smeared reads a track needs before it is fused from its deblurred reads.
const MIN_SMEARED_READS: usize = 3;

/// Whether a character can stand at position `i` of a plate: a province (or 使, or the W of
/// WJ) first, a letter second, a letter, digit or special-plate suffix after.
fn has_place(i: usize, c: char) -> bool {
    match i {
        0 => protocol::plate::PROVINCES.contains(c) || c == '使' || c == 'W',
        1 => c.is_ascii_uppercase(),
        _ => c.is_ascii_uppercase() || c.is_ascii_digit() || "挂学警港澳领使应急".contains(c),
    }
}

/// Fuses a track's reads: the crops as they are, with what the deblurred reads of its
/// smeared crops add (see [`with_deblurred`]).
pub fn fuse(reads: &[PlateRead]) -> Option<Fused> {
    let base = fuse_at(reads, Take::Crop)?;
    Some(with_deblurred(reads, &base).unwrap_or(base))
}

/// One character's votes at one position of a track's reads.
struct Vote {
    c: char,
    /// Confidence of the reads that saw it, those that fit a grammar counted double.
    weight: f32,
    /// Confidence of the reads that saw it.
    plain: f32,
    reads: usize,
}

/// Fuses the reads' texts `take` picks.
fn fuse_at(reads: &[PlateRead], take: Take) -> Option<Fused> {
    if reads.is_empty() {
        return None;
    }
    let texts: Vec<Text> = reads.iter().map(|r| text_of(r, take)).collect();
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
    // Per position: each character read there, and the vote's total weight.
    let mut ballots: Vec<(Vec<Vote>, f32)> = Vec::with_capacity(len);
    // Share of the vote times the winners' confidence spread over all reads.
    let score = |w: f32, total: f32| {
        if total > 0.0 {
            (w / total) * (w / total_weight).clamp(0.0, 1.0)
        } else {
            0.0
        }
    };
    // The reads' plain vote (each read's confidence alone, no grammar): a fused text that
    // differs from it owes a character to the grammar.
    let mut plain = Vec::with_capacity(len);
    let winner = |votes: &[Vote], by: fn(&Vote) -> f32| {
        votes
            .iter()
            .max_by(|a, b| by(a).total_cmp(&by(b)))
            .map(|v| (v.c, v.weight))
            .expect("at least one read")
    };
    for i in 0..len {
        let mut votes: Vec<Vote> = Vec::new();
        let mut total = 0f32;
        for (r, wt) in &same {
            let (c, p) = (r.chars[i], r.conf[i] * wt);
            total += p;
            match votes.iter_mut().find(|v| v.c == c) {
                Some(v) => {
                    v.weight += p;
                    v.plain += r.conf[i];
                    v.reads += 1;
                }
                None => votes.push(Vote {
                    c,
                    weight: p,
                    plain: r.conf[i],
                    reads: 1,
                }),
            }
        }
        let (c, w) = winner(&votes, |v| v.weight);
        chars.push(c);
        conf.push(score(w, total));
        plain.push(winner(&votes, |v| v.plain).0);
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
    let mut constrained = plain != chars;
    if !fits(&chars) {
        let min_reads = (same.len() as f32 * MIN_CONSTRAINED_SHARE).ceil().max(2.0) as usize;
        let mut best: Option<(usize, char, f32, usize)> = None;
        for (i, (votes, _)) in ballots.iter().enumerate() {
            for &Vote {
                c,
                weight: w,
                reads: n,
                ..
            } in votes
            {
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
            constrained = true;
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
    // The smear deblurred for: the median of the reads that gave the fused text deblurred.
    let mut smears: Vec<u32> = texts
        .iter()
        .filter(|t| t.deblur_px > 0 && t.chars == chars.as_slice())
        .map(|t| t.deblur_px)
        .collect();
    smears.sort_unstable();
    let deblur_px = smears.get(smears.len() / 2).copied().unwrap_or(0);
    Some(Fused {
        chars,
        conf,
        reads: reads.len(),
        agreeing,
        best,
        colour,
        two_row,
        deblur_px,
        constrained,
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
            deblurred: None,
        }
    }

    /// `r` with a read of its crop deblurred for a smear of `length` px.
    fn smeared(mut r: PlateRead, length: u32, text: &str, conf: f32) -> PlateRead {
        let chars: Vec<char> = text.chars().collect();
        r.deblurred = Some(super::super::Deblurred {
            length,
            conf: vec![conf; chars.len()],
            chars,
        });
        r
    }

    #[test]
    fn a_smeared_track_is_read_from_its_deblurred_crops() {
        // A smeared 琼 the crop read as 皖 with confidence, deblurred for the measured smear
        // read as 琼 frame after frame, no surer.
        let reads: Vec<PlateRead> = (0..6)
            .map(|i| smeared(read("皖L69V36", 0.95), 6 + i % 3, "琼L69V36", 0.86))
            .collect();
        let f = fuse(&reads).unwrap();
        assert_eq!(
            (f.text().as_str(), f.deblur_px, f.agreeing),
            ("琼L69V36", 7, 6)
        );
        // Crops that agree on a smeared glyph's misreading are not agreement: the track's
        // deblurred reads, split, are what a camera counts before it stops reading.
        let split: Vec<PlateRead> = (0..5)
            .map(|i| {
                let d = if i < 2 { "琼L69V36" } else { "皖L69V36" };
                smeared(read("皖L69V36", 0.95), 6, d, 0.8)
            })
            .collect();
        let f = fuse(&split).unwrap();
        assert_eq!((f.text().as_str(), f.agreeing), ("皖L69V36", 3));
        // A read without a smear measured counts as it is.
        let mut mixed = reads.clone();
        mixed.push(read("皖L69V36", 0.75));
        assert_eq!(fuse(&mixed).unwrap().text(), "琼L69V36");
        // A character the smear swallowed: the crop's read fits no grammar, the deblurred
        // one does.
        let short: Vec<PlateRead> = (0..3)
            .map(|_| smeared(read("皖L6936", 0.7), 6, "皖L69V36", 0.8))
            .collect();
        assert_eq!(fuse(&short).unwrap().text(), "皖L69V36");
        // Deblurring rings and misreads a digit in one frame of four: outvoted.
        let ringing: Vec<PlateRead> = (0..4)
            .map(|i| {
                let d = if i == 0 { "苏E1Z345" } else { "苏E12345" };
                smeared(read("苏E12345", 0.95), 6, d, 0.7)
            })
            .collect();
        assert_eq!(fuse(&ringing).unwrap().text(), "苏E12345");
        // The narrow 辽 of a green plate deblurred into a surer Z: Z has no place first, the
        // plate would fit no grammar, the crops' fusion stands.
        let green = |t: &str, c: f32| PlateRead {
            colour: Some(PlateColor::Green),
            ..read(t, c)
        };
        let liao: Vec<PlateRead> = (0..5)
            .map(|_| smeared(green("辽VDB0763", 0.8), 7, "ZVDB0763", 0.9))
            .collect();
        assert_eq!(fuse(&liao).unwrap().text(), "辽VDB0763");
        // A fake whose deblurred reads make another fake stays the fake the crop read.
        let fake: Vec<PlateRead> = (0..5)
            .map(|_| smeared(read("中A12345", 0.8), 6, "中A1Z345", 0.9))
            .collect();
        assert_eq!(fuse(&fake).unwrap().text(), "中A12345");
        // A smeared fake (8 where the authority letter goes) some crops read as B, which
        // makes it a plate: the deblurred reads, all 8, keep it a fake. Whether the B
        // reads won the vote by counting double (they fit) or were taken to make it fit.
        for b_reads in [2, 3] {
            let painted: Vec<PlateRead> = (0..8)
                .map(|i| {
                    let c = if i < b_reads {
                        "苏BE2345"
                    } else {
                        "苏8E2345"
                    };
                    smeared(read(c, 0.9), 9, "苏8E2345", 0.99)
                })
                .collect();
            let crops = fuse_at(&painted, Take::Crop).unwrap();
            assert_eq!(
                (crops.text().as_str(), crops.constrained),
                ("苏BE2345", true)
            );
            assert_eq!(fuse(&painted).unwrap().text(), "苏8E2345");
        }
    }

    #[test]
    fn a_still_photo_only_fills_in_from_its_deblurred_read() {
        // A real 湘 a photo's crop read unsure stays, however sure the deblurred read of
        // another province (seen on a real photo: 0.19 against 0.56).
        let xiang: Vec<PlateRead> = (0..2)
            .map(|_| smeared(read("湘E269JY", 0.19), 6, "皖E269JY", 0.56))
            .collect();
        assert_eq!(fuse(&xiang).unwrap().text(), "湘E269JY");
        // A mark with no place first takes the deblurred province.
        let f = fuse(&[smeared(read("厶L69V36", 0.6), 7, "琼L69V36", 0.86)]).unwrap();
        assert_eq!((f.text().as_str(), f.deblur_px), ("琼L69V36", 7));
        // A character the smear swallowed, read by the deblurred crop.
        let f = fuse(&[smeared(read("皖L6936", 0.7), 6, "皖L69V36", 0.8)]).unwrap();
        assert_eq!(f.text(), "皖L69V36");
        // Without a deblurred read, the crop as it is.
        assert_eq!(fuse(&[read("皖L69V36", 0.7)]).unwrap().deblur_px, 0);
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
