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

/// The track's crops fused as they are, with what its reads deblurred for `length` px add.
/// A deblurred read fills in what the crops could not read and never replaces a character
/// they read sensibly (a real 湘 a photo's crop read at 0.19 became 皖 at 0.56 deblurred for
/// 3 px, and fusion once took it). Same length: a fused character with no place where it
/// stands (not a province first, not a letter second, not a plate character after) takes
/// the deblurred one when that has its place; so does a guess (fused below
/// [`COULD_NOT_READ`]) when the deblurred character is surer and at least
/// [`MIN_FILL_READS`] of the track's reads saw it: one vehicle's blur is the same in every
/// frame, so a deblurring that helps shows in frame after frame (a smeared 琼 read as 京,
/// 皖 or 豫 at 0-27 % by the crops of the generated clips reads as 琼 deblurred for 7 px),
/// while a still photo gives one read and never loses a character to it. Another length:
/// the deblurred fusion stands only when the crops' fits no plate grammar and it does (a
/// character the blur merged or split).
fn fill_in(reads: &[PlateRead], base: &Fused, length: u32) -> Option<Fused> {
    let deblurred = fuse_at(reads, length)?;
    let fits = |f: &Fused| {
        protocol::plate::parse(&f.text(), f.colour, protocol::plate::Mode::Lenient).is_ok()
    };
    if base.chars.len() != deblurred.chars.len() {
        return Some(if !fits(base) && fits(&deblurred) {
            deblurred
        } else {
            base.clone()
        });
    }
    let mut out = base.clone();
    let mut filled = false;
    for (i, &c) in deblurred.chars.iter().enumerate() {
        if c == base.chars[i] || !has_place(i, c) {
            continue;
        }
        let seen_by = reads
            .iter()
            .filter(|r| text_at(r, length).chars.get(i) == Some(&c))
            .count();
        let guess = base.conf[i] < COULD_NOT_READ
            && deblurred.conf[i] > base.conf[i]
            && seen_by >= MIN_FILL_READS;
        if !has_place(i, base.chars[i]) || guess {
            out.chars[i] = c;
            out.conf[i] = deblurred.conf[i];
            filled = true;
        }
    }
    if filled {
        out.deblur_px = length;
        out.agreeing = reads
            .iter()
            .filter(|r| text_at(r, length).chars == out.chars.as_slice() || r.chars == out.chars)
            .count();
    }
    Some(out)
}

/// Below this a fused character of the crops is a guess.
const COULD_NOT_READ: f32 = 0.5;

/// A deblurred character replaces a guess only when at least this many reads saw it.
const MIN_FILL_READS: usize = 3;

/// Whether a character can stand at position `i` of a plate: a province (or 使, or the W of
/// WJ) first, a letter second, a letter, digit or special-plate suffix after.
fn has_place(i: usize, c: char) -> bool {
    match i {
        0 => protocol::plate::PROVINCES.contains(c) || c == '使' || c == 'W',
        1 => c.is_ascii_uppercase(),
        _ => c.is_ascii_uppercase() || c.is_ascii_digit() || "挂学警港澳领使应急".contains(c),
    }
}

/// Fuses a track's reads at the surest deblurring length whose fused plate fits a GA 36
/// grammar, or at the surest length when none does (a fake's reads fit none at any
/// length): a length that reads surer but turns a real plate into a fake (the narrow 辽 of
/// a green plate seen as `Z` in every deblurred read) gives way to one that reads it.
pub fn fuse(reads: &[PlateRead]) -> Option<Fused> {
    let base = fuse_at(reads, 0)?;
    let mut surest = None;
    for length in deblur_lengths(reads) {
        let f = if length == 0 {
            base.clone()
        } else {
            fill_in(reads, &base, length)?
        };
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
    fn deblurred_reads_fill_in_what_the_crop_could_not_read() {
        // A blurred 琼 the crop read as a mark with no place on a plate; deblurred for 7 px
        // it reads as 琼, for 3 px no better.
        let reads: Vec<PlateRead> = (0..6)
            .map(|_| {
                let r = with_deblurred(read("厶L69V36", 0.60), 3, "厶L69V36", 0.58);
                with_deblurred(r, 7, "琼L69V36", 0.86)
            })
            .collect();
        assert_eq!(deblur_lengths(&reads)[0], 7);
        let f = fuse(&reads).unwrap();
        assert_eq!(
            (f.text().as_str(), f.deblur_px, f.agreeing),
            ("琼L69V36", 7, 6)
        );
        // A character the blur swallowed: the crop's read fits no grammar, the deblurred
        // one does.
        let short: Vec<PlateRead> = (0..3)
            .map(|_| with_deblurred(read("皖L6936", 0.7), 5, "皖L69V36", 0.8))
            .collect();
        assert_eq!(fuse(&short).unwrap().text(), "皖L69V36");
        // A province every crop only guessed (京 at 0.2), read surely deblurred in frame
        // after frame: the deblurred one.
        let guessed: Vec<PlateRead> = (0..6)
            .map(|_| with_deblurred(read("京L69V36", 0.2), 7, "琼L69V36", 0.86))
            .collect();
        assert_eq!(fuse(&guessed).unwrap().text(), "琼L69V36");
        // Never overruled on fewer reads than that: a real 湘 a photo's crop read unsure
        // stays, however sure the deblurred read of another province is.
        let xiang: Vec<PlateRead> = (0..2)
            .map(|_| with_deblurred(read("湘E269JY", 0.19), 3, "皖E269JY", 0.56))
            .collect();
        assert_eq!(fuse(&xiang).unwrap().text(), "湘E269JY");
        // A sharp plate: deblurring rings and misreads a digit; the crop's digit stands.
        let sharp: Vec<PlateRead> = (0..4)
            .map(|_| with_deblurred(read("苏E12345", 0.95), 5, "苏E1Z345", 0.7))
            .collect();
        assert_eq!(fuse(&sharp).unwrap().text(), "苏E12345");
        // The narrow 辽 of a green plate deblurred into Z: Z has no place first.
        let green = |t: &str, c: f32| PlateRead {
            colour: Some(PlateColor::Green),
            ..read(t, c)
        };
        let liao: Vec<PlateRead> = (0..5)
            .map(|_| with_deblurred(green("辽VDB0763", 0.8), 7, "ZVDB0763", 0.9))
            .collect();
        assert_eq!(fuse(&liao).unwrap().text(), "辽VDB0763");
        // A fake stays the fake the crop read.
        let fake: Vec<PlateRead> = (0..5)
            .map(|_| with_deblurred(read("中A12345", 0.8), 5, "中A1Z345", 0.9))
            .collect();
        assert_eq!(fuse(&fake).unwrap().text(), "中A12345");
        // A read without that length counts as it is.
        let mut mixed = reads.clone();
        mixed.push(read("厶L69V36", 0.60));
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
