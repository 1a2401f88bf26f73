//! Real plate sets and how reads of them are scored: the crops and CCPD scenes of
//! `shared/data/real-plates` (labels in the file names), and any folder of photos with a
//! `labels.tsv`. Pure: loading the labels, matching reads to them, and sorting the misses by
//! what went wrong. The bench `plates_real` runs the plate path over the sets.

use std::path::{Path, PathBuf};

/// Where the real plates are: `REAL_PLATES_DIR`, else `../shared/data/real-plates` beside
/// the repository. None when absent.
pub fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("REAL_PLATES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("../shared/data/real-plates"));
    dir.join("crops").is_dir().then_some(dir)
}

/// One labelled plate crop: the file and the plate text (its name).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledCrop {
    pub path: PathBuf,
    pub text: String,
}

/// The crops of a folder, labelled by file name (`皖A0V262.jpg`), sorted by name.
pub fn crops(dir: &Path) -> std::io::Result<Vec<LabelledCrop>> {
    let mut out: Vec<LabelledCrop> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "jpeg"))
        .filter_map(|path| {
            let text = path.file_stem()?.to_str()?.to_string();
            Some(LabelledCrop { path, text })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A labelled whole photo: its file and the plates in it (none: no readable plate).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledPhoto {
    pub path: PathBuf,
    pub plates: Vec<LabelledPlate>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LabelledPlate {
    pub text: String,
    /// Corners top-left, top-right, bottom-right, bottom-left, where the set gives them.
    pub corners: Option<[(f32, f32); 4]>,
}

const CCPD_PROVINCES: [&str; 34] = [
    "皖", "沪", "津", "渝", "冀", "晋", "蒙", "辽", "吉", "黑", "苏", "浙", "京", "闽", "赣", "鲁",
    "豫", "鄂", "湘", "粤", "桂", "琼", "川", "贵", "云", "藏", "陕", "甘", "青", "宁", "新", "警",
    "学", "O",
];
const CCPD_ALPHANUMERIC: &str = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789O";

/// Reads a CCPD file name: `area-tilt-x1&y1_x2&y2-corners-indices-brightness-blur.jpg`,
/// corners from the bottom-right clockwise, indices into provinces, letters, then letters
/// and digits.
pub fn ccpd_label(name: &str) -> Option<LabelledPlate> {
    let stem = name.strip_suffix(".jpg").unwrap_or(name);
    let fields: Vec<&str> = stem.split('-').collect();
    if fields.len() < 5 {
        return None;
    }
    let pts: Vec<(f32, f32)> = fields[3]
        .split('_')
        .map(|p| {
            let (x, y) = p.split_once('&')?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect::<Option<_>>()?;
    let idx: Vec<usize> = fields[4]
        .split('_')
        .map(|i| i.parse().ok())
        .collect::<Option<_>>()?;
    if pts.len() != 4 || idx.len() < 7 {
        return None;
    }
    let letters: Vec<char> = CCPD_ALPHANUMERIC.chars().collect();
    let mut text = CCPD_PROVINCES.get(idx[0])?.to_string();
    // The second index is into the letters (the first 24 of the list, then O).
    text.push(*letters.get(if idx[1] < 24 { idx[1] } else { 34 })?);
    for &i in &idx[2..] {
        text.push(*letters.get(i)?);
    }
    // bottom-right, bottom-left, top-left, top-right -> top-left, top-right, bottom-right,
    // bottom-left.
    let corners = [pts[2], pts[3], pts[0], pts[1]];
    Some(LabelledPlate {
        text,
        corners: Some(corners),
    })
}

/// The CCPD photos of a folder, labelled from their names.
pub fn ccpd_photos(dir: &Path) -> std::io::Result<Vec<LabelledPhoto>> {
    let mut out: Vec<LabelledPhoto> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter_map(|path| {
            let plate = ccpd_label(path.file_name()?.to_str()?)?;
            Some(LabelledPhoto {
                path,
                plates: vec![plate],
            })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// A folder of photos with `labels.tsv`: a file name, a tab, a plate text; one line a plate,
/// a photo on several lines when it holds several; a line with no text: no readable plate.
/// Lines starting with `#` and blank lines are skipped.
pub fn tsv_photos(dir: &Path) -> Result<Vec<LabelledPhoto>, String> {
    let tsv = dir.join("labels.tsv");
    let text =
        std::fs::read_to_string(&tsv).map_err(|e| format!("cannot read {}: {e}", tsv.display()))?;
    parse_labels_tsv(&text, dir).map_err(|e| format!("{}: {e}", tsv.display()))
}

pub fn parse_labels_tsv(text: &str, dir: &Path) -> Result<Vec<LabelledPhoto>, String> {
    let mut out: Vec<LabelledPhoto> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (file, plate) = match line.split_once('\t') {
            Some((f, p)) => (f.trim(), p.trim()),
            None => (line.trim(), ""),
        };
        if file.is_empty() {
            return Err(format!("line {}: no file name before the tab", n + 1));
        }
        let path = dir.join(file);
        let i = match out.iter().position(|p| p.path == path) {
            Some(i) => i,
            None => {
                out.push(LabelledPhoto {
                    path,
                    plates: Vec::new(),
                });
                out.len() - 1
            }
        };
        if !plate.is_empty() {
            out[i].plates.push(LabelledPlate {
                text: protocol::plate::normalise(plate),
                corners: None,
            });
        }
    }
    Ok(out)
}

/// What went wrong with a read, for the table of misses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Miss {
    /// The detector found no plate there.
    NoDetection,
    /// Found, but nothing was read.
    NoRead,
    /// Read in the two-row layout, but it is a single-row plate (or the other way round).
    RowLayout,
    /// Only the province (first character) differs.
    Province,
    /// Only O/0 or I/1 confusions differ.
    OZeroIOne,
    /// A character too few.
    MissingCharacter,
    /// A character too many.
    ExtraCharacter,
    /// Other characters differ.
    Characters,
}

impl Miss {
    pub fn name(&self) -> &'static str {
        match self {
            Miss::NoDetection => "no detection",
            Miss::NoRead => "nothing read",
            Miss::RowLayout => "wrong row layout",
            Miss::Province => "province",
            Miss::OZeroIOne => "O/0 or I/1",
            Miss::MissingCharacter => "missing character",
            Miss::ExtraCharacter => "extra character",
            Miss::Characters => "other characters",
        }
    }
}

/// Why `read` is not `label` (None when they are equal). `layout_wrong`: the read was made in
/// the other row layout than the plate's.
pub fn classify(label: &str, read: &str, layout_wrong: bool) -> Option<Miss> {
    if label == read {
        return None;
    }
    if read.is_empty() {
        return Some(Miss::NoRead);
    }
    if layout_wrong {
        return Some(Miss::RowLayout);
    }
    let (l, r): (Vec<char>, Vec<char>) = (label.chars().collect(), read.chars().collect());
    if r.len() < l.len() {
        return Some(Miss::MissingCharacter);
    }
    if r.len() > l.len() {
        return Some(Miss::ExtraCharacter);
    }
    let diff: Vec<usize> = (0..l.len()).filter(|&i| l[i] != r[i]).collect();
    if diff == [0] {
        return Some(Miss::Province);
    }
    let confusion = |a: char, b: char| {
        matches!(
            (a, b),
            ('O', '0') | ('0', 'O') | ('I', '1') | ('1', 'I') | ('O', 'D') | ('D', 'O')
        )
    };
    if diff.iter().all(|&i| confusion(l[i], r[i])) {
        return Some(Miss::OZeroIOne);
    }
    Some(Miss::Characters)
}

/// Characters read right: the label's length less the edit distance (never below 0).
pub fn chars_right(label: &str, read: &str) -> usize {
    label
        .chars()
        .count()
        .saturating_sub(protocol::plate::edit_distance(label, read))
}

/// Mean distance (pixels) between found and labelled corners, in the same order.
pub fn corner_error(found: &[(f32, f32); 4], label: &[(f32, f32); 4]) -> f32 {
    found
        .iter()
        .zip(label)
        .map(|(a, b)| ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt())
        .sum::<f32>()
        / 4.0
}

/// The box around four labelled corners (as `FoundPlate::bbox` gives a found plate's).
pub fn corners_box(corners: &[(f32, f32); 4]) -> protocol::BBox {
    edge_node::plate::FoundPlate {
        score: 1.0,
        corners: *corners,
    }
    .bbox()
}

/// The p-th percentile (0..=100) of durations in milliseconds, nearest rank; 0 for none.
pub fn percentile_ms(samples: &[std::time::Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut v: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Decodes a JPEG file into packed RGB: (width, height, pixels).
pub fn decode_jpeg(path: &Path) -> Result<(usize, usize, Vec<u8>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut dec = jpeg_decoder::Decoder::new(&bytes[..]);
    let px = dec
        .decode()
        .map_err(|e| format!("{} is not a readable JPEG: {e}", path.display()))?;
    let info = dec.info().ok_or("no image information")?;
    let px = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => px,
        jpeg_decoder::PixelFormat::L8 => px.iter().flat_map(|&v| [v, v, v]).collect(),
        other => return Err(format!("{}: pixel format {other:?}", path.display())),
    };
    Ok((info.width as usize, info.height as usize, px))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ccpd_names_give_text_and_corners() {
        let p = ccpd_label(
            "01-0_1-249&528_393&586-392&584_249&586_250&530_393&528-0_0_25_27_7_26_29-131-21.jpg",
        )
        .unwrap();
        assert_eq!(p.text, "皖A13H25");
        assert_eq!(
            p.corners.unwrap(),
            [
                (250.0, 530.0),
                (393.0, 528.0),
                (392.0, 584.0),
                (249.0, 586.0)
            ]
        );
        let p = ccpd_label(
            "01-3_9-252&503_396&561-396&561_257&553_252&503_391&511-11_4_26_32_29_31_33-110-7.jpg",
        )
        .unwrap();
        assert_eq!(p.text, "浙E28579");
        assert!(ccpd_label("not-a-ccpd-name.jpg").is_none());
    }

    #[test]
    fn labels_tsv_groups_plates_by_photo() {
        let t = "# photo\tplate\na.jpg\t苏E12345\nb.jpg\t\na.jpg\t京ＡF0236\n\nc.jpg\n";
        let p = parse_labels_tsv(t, Path::new("/d")).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].path, Path::new("/d/a.jpg"));
        let texts: Vec<&str> = p[0].plates.iter().map(|x| x.text.as_str()).collect();
        assert_eq!(texts, ["苏E12345", "京AF0236"]);
        assert!(p[1].plates.is_empty() && p[2].plates.is_empty());
        assert!(parse_labels_tsv("\t苏E12345\n", Path::new("/d")).is_err());
    }

    #[test]
    fn misses_are_sorted_by_kind() {
        assert_eq!(classify("皖A12345", "皖A12345", false), None);
        assert_eq!(classify("皖A12345", "", false), Some(Miss::NoRead));
        assert_eq!(
            classify("皖A12345", "皖A1234", false),
            Some(Miss::MissingCharacter)
        );
        assert_eq!(
            classify("皖A12345", "皖AA12345", false),
            Some(Miss::ExtraCharacter)
        );
        assert_eq!(
            classify("湘A12345", "皖A12345", false),
            Some(Miss::Province)
        );
        assert_eq!(
            classify("皖A1O345", "皖A10345", false),
            Some(Miss::OZeroIOne)
        );
        assert_eq!(
            classify("皖A12345", "皖A12845", false),
            Some(Miss::Characters)
        );
        assert_eq!(classify("皖A12345", "皖A1", true), Some(Miss::RowLayout));
    }

    #[test]
    fn distances() {
        assert_eq!(chars_right("皖A12345", ""), 0);
        assert_eq!(chars_right("皖A12345", "皖AA12345"), 6);
        let sq = [(0.0, 0.0), (10.0, 0.0), (10.0, 5.0), (0.0, 5.0)];
        let moved = sq.map(|(x, y)| (x + 3.0, y + 4.0));
        assert!((corner_error(&sq, &moved) - 5.0).abs() < 1e-6);
        assert!((corners_box(&sq).iou(&corners_box(&sq)) - 1.0).abs() < 1e-6);
        let ms = |v: u64| std::time::Duration::from_millis(v);
        assert_eq!(percentile_ms(&[ms(3), ms(1), ms(2)], 50.0), 2.0);
        assert_eq!(percentile_ms(&[ms(3), ms(1), ms(2)], 99.0), 3.0);
    }
}
