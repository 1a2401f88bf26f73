//! The two plate models: `clp_det` finds plates and their four corners inside a vehicle's
//! region; PP-OCRv4 reads a rectified plate crop. Decoding (priors, CTC) is pure and tested
//! without the models.

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;
use serde::Deserialize;

use super::geometry::Rgb;
use crate::detect::{open_model, DetectError};
use crate::manifest::{verify_model_file, ManifestError, ModelSource};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlateModelManifest {
    pub name: String,
    pub file: PathBuf,
    pub sha256: String,
    pub source: ModelSource,
    pub licence: String,
    pub role: String,
    pub input: PlateInput,
    pub output: PlateOutput,
    #[serde(default)]
    pub thresholds: Option<crate::manifest::Thresholds>,
    /// Readers: a read that fits no plate grammar with every character at least this sure
    /// is taken as it is (a fake plate), not handed to the next reader (default 0.5). Each
    /// model's confidences are its own: PP-OCRv4's sit near 1 when right, the CRNN's lower.
    #[serde(default)]
    pub sure_char: Option<f32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlateInput {
    pub name: String,
    #[serde(default)]
    pub mean_bgr: Option<[f32; 3]>,
    #[serde(default)]
    pub max_side: Option<u32>,
    #[serde(default)]
    pub height: Option<u32>,
    /// The width the recogniser was trained at: a line narrower than this (after scaling to
    /// `height`) is padded on the right to it, as PaddleOCR's own inference does. Read
    /// unpadded, a plate fills the whole input, unlike anything the model was trained on
    /// (1000 real CCPD crops, PP-OCRv4: 958 exact unpadded, 983 padded to 320).
    #[serde(default)]
    pub width: Option<u32>,
    /// With `width`: each line is first read unpadded (at its own width, the cheapest
    /// read), and that read is kept when it fits a plate grammar with every character at
    /// least this sure; otherwise the line is read again padded to `width`.
    #[serde(default)]
    pub quick_sure: Option<f32>,
    /// The model metadata key holding the dictionary (one class a line)...
    #[serde(default)]
    pub dictionary_key: Option<String>,
    /// ...or the dictionary itself, one class a character, in class order (after the CTC
    /// blank; a space class follows it).
    #[serde(default)]
    pub dictionary: Option<String>,
    /// Whether a space class follows the dictionary (PaddleOCR's `use_space_char`).
    #[serde(default = "yes")]
    pub space_class: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlateOutput {
    pub names: Vec<String>,
}

impl PlateModelManifest {
    pub fn load(path: &Path, role: &str) -> Result<PlateModelManifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|err| ManifestError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        let m: PlateModelManifest = toml::from_str(&text).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if m.role != role {
            return Err(ManifestError::Parse {
                path: path.to_path_buf(),
                message: format!("role is '{}', this slot needs a '{role}' model", m.role),
            });
        }
        Ok(m)
    }
}

fn open_session(
    manifest_path: &Path,
    role: &str,
    models_dir: &Path,
    ort_library: &Path,
    threads: usize,
) -> Result<(PlateModelManifest, PathBuf, Session), DetectError> {
    let manifest = PlateModelManifest::load(manifest_path, role)?;
    let model_path =
        verify_model_file(models_dir, &manifest.file, &manifest.sha256, manifest_path)?;
    // The plate models run now and then between detector frames: their threads sleep when
    // idle instead of spinning on the cores the detector needs.
    let session = open_model(ort_library, &model_path, threads, false)?;
    if !session
        .inputs()
        .iter()
        .any(|i| i.name() == manifest.input.name)
    {
        return Err(DetectError::Shape {
            path: model_path,
            manifest: manifest_path.to_path_buf(),
            message: format!("no input named '{}'", manifest.input.name),
        });
    }
    for o in &manifest.output.names {
        if !session.outputs().iter().any(|x| x.name() == o) {
            return Err(DetectError::Shape {
                path: model_path,
                manifest: manifest_path.to_path_buf(),
                message: format!("no output named '{o}'"),
            });
        }
    }
    Ok((manifest, model_path, session))
}

/// A plate found by `clp_det`, in the pixels of the image it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct PlateDetection {
    pub score: f32,
    /// x1, y1, x2, y2.
    pub bbox: [f32; 4],
    /// Corners top-left, top-right, bottom-right, bottom-left.
    pub corners: [(f32, f32); 4],
}

pub struct PlateDetector {
    session: Session,
    manifest: PlateModelManifest,
}

impl PlateDetector {
    pub fn load(
        manifest_path: &Path,
        models_dir: &Path,
        ort_library: &Path,
        threads: usize,
    ) -> Result<PlateDetector, DetectError> {
        let (manifest, path, session) = open_session(
            manifest_path,
            "plate_detector",
            models_dir,
            ort_library,
            threads,
        )?;
        if manifest.output.names.len() != 3 || manifest.thresholds.is_none() {
            return Err(DetectError::Shape {
                path,
                manifest: manifest_path.to_path_buf(),
                message: "a plate detector needs outputs [loc, conf, landms] and thresholds".into(),
            });
        }
        Ok(PlateDetector { session, manifest })
    }

    pub fn max_side(&self) -> u32 {
        self.manifest.input.max_side.unwrap_or(640)
    }

    /// Finds plates in an image (a vehicle's region, already at the size to run at).
    pub fn detect(&mut self, img: &Rgb) -> Result<Vec<PlateDetection>, DetectError> {
        // Pad to a multiple of 32 so that every pyramid level divides evenly.
        let (w, h) = (img.width.div_ceil(32) * 32, img.height.div_ceil(32) * 32);
        let mean = self
            .manifest
            .input
            .mean_bgr
            .unwrap_or([104.0, 117.0, 123.0]);
        let mut t = vec![0f32; 3 * w * h];
        for y in 0..img.height {
            for x in 0..img.width {
                let p = img.get(x, y);
                // BGR order, mean removed; padding stays 0 (= the mean colour).
                t[y * w + x] = p[2] as f32 - mean[0];
                t[w * h + y * w + x] = p[1] as f32 - mean[1];
                t[2 * w * h + y * w + x] = p[0] as f32 - mean[2];
            }
        }
        let input = TensorRef::from_array_view(([1usize, 3, h, w], t.as_slice()))
            .map_err(|e| DetectError::Run(e.to_string()))?;
        let names = &self.manifest.output.names;
        let outputs = self
            .session
            .run(ort::inputs![self.manifest.input.name.as_str() => input])
            .map_err(|e| DetectError::Run(e.to_string()))?;
        let get = |n: &str| -> Result<Vec<f32>, DetectError> {
            let (_, d) = outputs[n]
                .try_extract_tensor::<f32>()
                .map_err(|e| DetectError::Run(e.to_string()))?;
            Ok(d.to_vec())
        };
        let (loc, conf, landms) = (get(&names[0])?, get(&names[1])?, get(&names[2])?);
        let th = self.manifest.thresholds.clone().expect("checked at load");
        let mut dets = decode_clp(&loc, &conf, &landms, w, h, th.score, th.nms_iou)
            .map_err(DetectError::Run)?;
        for d in &mut dets {
            for c in &mut d.corners {
                c.0 = c.0.min(img.width as f32 - 1.0);
                c.1 = c.1.min(img.height as f32 - 1.0);
            }
        }
        Ok(dets)
    }
}

/// RetinaFace priors for an input of `w` x `h`: (cx, cy, sw, sh), relative to the input.
pub fn clp_priors(w: usize, h: usize) -> Vec<[f32; 4]> {
    const LEVELS: [(usize, [f32; 2]); 3] =
        [(8, [24.0, 48.0]), (16, [96.0, 192.0]), (32, [384.0, 768.0])];
    let mut out = Vec::new();
    for (step, sizes) in LEVELS {
        let (fh, fw) = (h.div_ceil(step), w.div_ceil(step));
        for i in 0..fh {
            for j in 0..fw {
                for s in sizes {
                    out.push([
                        (j as f32 + 0.5) * step as f32 / w as f32,
                        (i as f32 + 0.5) * step as f32 / h as f32,
                        s / w as f32,
                        s / h as f32,
                    ]);
                }
            }
        }
    }
    out
}

/// Decodes `clp_det` outputs for an input of `w` x `h` into plates (score, box, corners in
/// input pixels), NMS applied.
pub fn decode_clp(
    loc: &[f32],
    conf: &[f32],
    landms: &[f32],
    w: usize,
    h: usize,
    score: f32,
    nms_iou: f32,
) -> Result<Vec<PlateDetection>, String> {
    let priors = clp_priors(w, h);
    let p = priors.len();
    if loc.len() != p * 4 || conf.len() != p * 2 || landms.len() != p * 8 {
        return Err(format!(
            "plate detector output sizes loc {} conf {} landms {} do not fit {p} priors of a {w}x{h} input",
            loc.len(),
            conf.len(),
            landms.len()
        ));
    }
    let (wf, hf) = (w as f32, h as f32);
    let mut cands: Vec<PlateDetection> = Vec::new();
    for (i, pr) in priors.iter().enumerate() {
        let s = conf[i * 2 + 1];
        if s < score {
            continue;
        }
        let l = &loc[i * 4..i * 4 + 4];
        let cx = pr[0] + l[0] * 0.1 * pr[2];
        let cy = pr[1] + l[1] * 0.1 * pr[3];
        let bw = pr[2] * (l[2] * 0.2).exp();
        let bh = pr[3] * (l[3] * 0.2).exp();
        let lm = &landms[i * 8..i * 8 + 8];
        let pt = |k: usize| {
            (
                (pr[0] + lm[2 * k] * 0.1 * pr[2]) * wf,
                (pr[1] + lm[2 * k + 1] * 0.1 * pr[3]) * hf,
            )
        };
        // Model order: bottom-right, bottom-left, top-left, top-right.
        let (br, bl, tl, tr) = (pt(0), pt(1), pt(2), pt(3));
        cands.push(PlateDetection {
            score: s,
            bbox: [
                (cx - bw / 2.0) * wf,
                (cy - bh / 2.0) * hf,
                (cx + bw / 2.0) * wf,
                (cy + bh / 2.0) * hf,
            ],
            corners: [tl, tr, br, bl],
        });
    }
    cands.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<PlateDetection> = Vec::new();
    for c in cands {
        if keep.iter().all(|k| iou(&k.bbox, &c.bbox) <= nms_iou) {
            keep.push(c);
        }
    }
    Ok(keep)
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    inter / (area(a) + area(b) - inter).max(1e-6)
}

/// One line of text read by the recogniser.
#[derive(Debug, Clone, PartialEq)]
pub struct TextRead {
    pub chars: Vec<char>,
    /// Probability of each character.
    pub conf: Vec<f32>,
    /// The output step at which each character was emitted.
    pub steps: Vec<usize>,
}

impl TextRead {
    pub fn text(&self) -> String {
        self.chars.iter().collect()
    }
}

pub struct PlateReader {
    session: Session,
    manifest: PlateModelManifest,
    output: String,
    /// Class index -> character; index 0 is the CTC blank.
    classes: Vec<char>,
    /// Lines read so far.
    runs: u64,
}

/// Longest input width the recogniser is given when its manifest names no training width.
const MAX_READ_WIDTH: usize = 320;

impl PlateReader {
    pub fn load(
        manifest_path: &Path,
        models_dir: &Path,
        ort_library: &Path,
        threads: usize,
    ) -> Result<PlateReader, DetectError> {
        let (manifest, path, session) = open_session(
            manifest_path,
            "plate_reader",
            models_dir,
            ort_library,
            threads,
        )?;
        let shape_err = |message: String| DetectError::Shape {
            path: path.clone(),
            manifest: manifest_path.to_path_buf(),
            message,
        };
        let mut classes = vec!['\0'];
        match (&manifest.input.dictionary_key, &manifest.input.dictionary) {
            (Some(key), None) => {
                let dict = session
                    .metadata()
                    .ok()
                    .and_then(|m| m.custom(key))
                    .ok_or_else(|| {
                        shape_err(format!("no metadata key '{key}' with the dictionary"))
                    })?;
                for line in dict.lines() {
                    classes.push(line.chars().next().unwrap_or(' '));
                }
            }
            (None, Some(dict)) => classes.extend(dict.chars()),
            _ => {
                return Err(shape_err(
                    "set exactly one of input.dictionary_key and input.dictionary".into(),
                ))
            }
        }
        if manifest.input.space_class {
            classes.push(' ');
        }
        let output = match manifest.output.names.first() {
            Some(n) => n.clone(),
            None => session
                .outputs()
                .first()
                .map(|o| o.name().to_string())
                .ok_or_else(|| shape_err("the model has no output".into()))?,
        };
        Ok(PlateReader {
            session,
            manifest,
            output,
            classes,
            runs: 0,
        })
    }

    /// Lines read so far (one model pass each).
    pub fn runs(&self) -> u64 {
        self.runs
    }

    pub fn height(&self) -> usize {
        self.manifest.input.height.unwrap_or(48) as usize
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// A grammar-fitting read with every character at least this sure needs no next reader.
    pub fn sure_char(&self) -> f32 {
        self.manifest.sure_char.unwrap_or(0.5)
    }

    /// Per output step, the probability of every class (steps x classes, row-major), for one
    /// line of text.
    /// `padded`: padded to the training width (when the manifest names one).
    fn probabilities(&mut self, img: &Rgb, padded: bool) -> Result<(Vec<f32>, usize), DetectError> {
        let h = self.height();
        let pad = padded;
        let padded = self
            .manifest
            .input
            .width
            .map(|w| w as usize)
            .unwrap_or(MAX_READ_WIDTH);
        let w = ((img.width as f64 * h as f64 / img.height.max(1) as f64).round() as usize)
            .clamp(8, padded);
        // The padding is 0 after normalisation (mid grey), as in PaddleOCR's inference.
        let tw = if self.manifest.input.width.is_some() && pad {
            padded
        } else {
            w
        };
        self.runs += 1;
        let resized = img.resize(w, h);
        let mut t = vec![0f32; 3 * h * tw];
        for y in 0..h {
            for x in 0..w {
                let p = resized.get(x, y);
                for (c, k) in [2usize, 1, 0].into_iter().enumerate() {
                    t[c * h * tw + y * tw + x] = (p[k] as f32 / 255.0 - 0.5) / 0.5;
                }
            }
        }
        let input = TensorRef::from_array_view(([1usize, 3, h, tw], t.as_slice()))
            .map_err(|e| DetectError::Run(e.to_string()))?;
        let outputs = self
            .session
            .run(ort::inputs![self.manifest.input.name.as_str() => input])
            .map_err(|e| DetectError::Run(e.to_string()))?;
        let (shape, data) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| DetectError::Run(e.to_string()))?;
        let n_classes = *shape.last().unwrap_or(&0) as usize;
        if n_classes != self.classes.len() {
            return Err(DetectError::Run(format!(
                "reader output has {n_classes} classes, the dictionary {}",
                self.classes.len()
            )));
        }
        Ok((data.to_vec(), n_classes))
    }

    /// The per-character confidence at which an unpadded read is kept (see
    /// `PlateInput::quick_sure`); `None`: every line is read once, padded.
    pub fn quick_sure(&self) -> Option<f32> {
        self.manifest
            .input
            .width
            .and(self.manifest.input.quick_sure)
    }

    /// Reads one line of text from an image (a rectified plate, or one row of it).
    /// `plate_start`: the image begins with the plate's first character (a whole plate, or
    /// the top row of a two-row one), so the position rules below apply. `padded`: padded
    /// to the training width (the surer, dearer read).
    pub fn read(
        &mut self,
        img: &Rgb,
        plate_start: bool,
        padded: bool,
    ) -> Result<TextRead, DetectError> {
        let (data, n_classes) = self.probabilities(img, padded)?;
        let data = data.as_slice();
        let mut read = ctc_greedy(data, n_classes, &self.classes);
        // Separators (the dot after the authority letter, spaces) are not characters of the
        // plate; drop them before looking at positions.
        let keep: Vec<bool> = read.chars.iter().map(|c| !is_separator(*c)).collect();
        let mut k = keep.iter();
        read.chars.retain(|_| *k.next().expect("same length"));
        let mut k = keep.iter();
        read.conf.retain(|_| *k.next().expect("same length"));
        let mut k = keep.iter();
        read.steps.retain(|_| *k.next().expect("same length"));
        apply_plate_rules(&mut read, data, &self.classes, plate_start);
        Ok(read)
    }
}

/// What the reader knows of where plate characters go, applied to one line's read (`probs`:
/// its steps x classes probabilities). `plate_start`: the line begins with the plate's first
/// character (a whole plate, or the top row of a two-row one).
pub fn apply_plate_rules(read: &mut TextRead, probs: &[f32], classes: &[char], plate_start: bool) {
    if plate_start {
        fix_plate_start(read, probs, classes);
    }
    // GA 36 serials have no I or O: where the reader saw one after the authority letter (or
    // anywhere on a two-row plate's bottom row), the likeliest of the serial characters that
    // look like it stands instead (a 0 most often, but a blurred Q reads as O as easily).
    // Only look-alikes: the runner-up at a step is often the neighbouring character, smeared
    // across steps.
    let first_serial = if plate_start { 2 } else { 0 };
    for i in first_serial..read.chars.len() {
        let alike: &[char] = match read.chars[i].to_ascii_uppercase() {
            'O' => &['0', 'Q', 'D', 'C', 'U'],
            'I' => &['1', 'J', 'L', 'T'],
            _ => continue,
        };
        if let Some((k, p)) = likeliest_at(probs, classes, read.steps[i], |c| alike.contains(&c)) {
            // The reader was sure of the shape, not of the class: what it gave the O goes
            // to the look-alike that stands for it.
            read.chars[i] = classes[k];
            read.conf[i] = (read.conf[i] + p).min(1.0);
        }
    }
}

/// The likeliest class at output step `step` among the characters `keep` accepts: its index
/// and probability.
fn likeliest_at(
    probs: &[f32],
    classes: &[char],
    step: usize,
    keep: impl Fn(char) -> bool,
) -> Option<(usize, f32)> {
    let n = classes.len();
    probs
        .get(step * n..(step + 1) * n)?
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(classes[*i]))
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, p)| (i, *p))
}

/// The rules for a read that starts at the plate's first character: a province (or 使), then
/// the issuing authority's letter.
fn fix_plate_start(read: &mut TextRead, data: &[f32], classes: &[char]) {
    let n_classes = classes.len();
    // Ink left of the province is not a character: the corner of a plate's rim reads as
    // 厂 or 广 before the province of a two-row plate's short top row.
    if let (Some(&c0), Some(&c1)) = (read.chars.first(), read.chars.get(1)) {
        if !is_first_char(c0) && !matches!(c0, 'W' | 'J') && protocol::plate::PROVINCES.contains(c1)
        {
            read.chars.remove(0);
            read.conf.remove(0);
            read.steps.remove(0);
        }
    }
    // A plate starting with an ASCII letter that fits no grammar lost its province: the
    // reader either gave the blank more weight there, or read the province as a letter.
    // The likeliest province is put back (before the first character, or in its place),
    // and kept when the plate then fits a grammar. Armed-police plates (WJ...) start with
    // letters and are left alone.
    if let (Some(&c0), Some(&step0)) = (read.chars.first(), read.steps.first()) {
        let armed = c0 == 'W' && read.chars.get(1) == Some(&'J');
        let text: String = read.chars.iter().collect();
        let fits =
            |t: &str| protocol::plate::parse(t, None, protocol::plate::Mode::Lenient).is_ok();
        if c0.is_ascii_alphabetic() && !armed && !fits(&text) {
            let best_province = |steps: std::ops::Range<usize>| {
                steps
                    .flat_map(|t| {
                        let probs = &data[t * n_classes..(t + 1) * n_classes];
                        probs.iter().enumerate().map(move |(i, p)| (t, i, *p))
                    })
                    .filter(|(_, i, _)| {
                        classes
                            .get(*i)
                            .is_some_and(|c| protocol::plate::PROVINCES.contains(*c))
                    })
                    .max_by(|a, b| a.2.total_cmp(&b.2))
                    .filter(|b| b.2 >= MIN_RECOVERED_PROVINCE)
            };
            let inserted = best_province(0..step0).map(|(t, i, p)| {
                let mut r = read.clone();
                r.chars.insert(0, classes[i]);
                r.conf.insert(0, p);
                r.steps.insert(0, t);
                r
            });
            let replaced = best_province(step0..step0 + 1).map(|(_, i, p)| {
                let mut r = read.clone();
                r.chars[0] = classes[i];
                r.conf[0] = p;
                r
            });
            // A fake plate fits no grammar either way: a province the reader was fairly sure
            // of before its first letter goes back all the same.
            let confident = inserted
                .clone()
                .filter(|r| r.conf[0] >= CONFIDENT_RECOVERED_PROVINCE);
            if let Some(r) = [inserted, replaced]
                .into_iter()
                .flatten()
                .find(|r| fits(&r.chars.iter().collect::<String>()))
                .or(confident)
            {
                *read = r;
            }
        }
    }
    // A plate starts with a province (or 使): a first character outside that set is read
    // again as the most likely one inside it, at the same step.
    if let (Some(&c), Some(&step)) = (read.chars.first(), read.steps.first()) {
        // Only an unsure read is corrected: a confidently read non-province character (a
        // fake plate) stays as read.
        if !c.is_ascii_alphanumeric() && !is_first_char(c) && read.conf[0] < 0.8 {
            if let Some((i, p)) = likeliest_at(data, classes, step, is_first_char) {
                read.chars[0] = classes[i];
                read.conf[0] = p;
            }
        }
    }
    // After a province comes the issuing authority's letter, never a digit (a two-row
    // plate's top row is exactly these two): a digit there is read again as the likeliest
    // letter at that step.
    if let (Some(&p), Some(&c), Some(&step)) =
        (read.chars.first(), read.chars.get(1), read.steps.get(1))
    {
        // Only an unsure read: a confident digit there is a fake plate's, and stays.
        if protocol::plate::PROVINCES.contains(p) && !is_authority_letter(c) && read.conf[1] < 0.8 {
            if let Some((i, q)) = likeliest_at(data, classes, step, is_authority_letter) {
                read.chars[1] = classes[i];
                read.conf[1] = q;
            }
        }
    }
}

/// Characters that separate parts of a plate and are not part of its number.
pub fn is_separator(c: char) -> bool {
    matches!(
        c,
        '·' | '•' | '.' | ' ' | '-' | '_' | ':' | '\'' | '"' | ',' | '、' | '。' | '・'
    )
}

/// Least probability at which a province the greedy decoding dropped is put back.
const MIN_RECOVERED_PROVINCE: f32 = 0.02;

/// Least probability at which a dropped province is put back even when the plate fits no
/// grammar with it (a fake's).
const CONFIDENT_RECOVERED_PROVINCE: f32 = 0.3;

fn is_authority_letter(c: char) -> bool {
    c.is_ascii_uppercase() && c != 'I' && c != 'O'
}

fn is_first_char(c: char) -> bool {
    protocol::plate::PROVINCES.contains(c) || c == '使'
}

/// CTC greedy decoding: best class per step, repeats collapsed, blanks (class 0) dropped;
/// a character's confidence is its best probability over the steps it spans.
pub fn ctc_greedy(probs: &[f32], n_classes: usize, classes: &[char]) -> TextRead {
    let mut chars = Vec::new();
    let mut conf: Vec<f32> = Vec::new();
    let mut steps = Vec::new();
    let mut prev = 0usize;
    for (t, step) in probs.chunks_exact(n_classes).enumerate() {
        let (best, p) = step
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, p)| (i, *p))
            .unwrap_or((0, 0.0));
        if best != 0 && best != prev {
            chars.push(classes.get(best).copied().unwrap_or('?'));
            conf.push(p);
            steps.push(t);
        } else if best != 0 && best == prev {
            if let Some(c) = conf.last_mut() {
                *c = c.max(p);
            }
        }
        prev = best;
    }
    TextRead { chars, conf, steps }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_collapses_repeats_and_drops_blanks() {
        let classes = ['\0', 'A', 'B', ' '];
        // steps: A A blank A B B
        let mut probs = Vec::new();
        for (c, p) in [(1, 0.9), (1, 0.95), (0, 0.8), (1, 0.7), (2, 0.6), (2, 0.99)] {
            let mut s = vec![0.01f32; 4];
            s[c] = p;
            probs.extend(s);
        }
        let r = ctc_greedy(&probs, 4, &classes);
        assert_eq!(r.text(), "AAB");
        assert_eq!(r.conf, vec![0.95, 0.7, 0.99]);
    }

    /// A dictionary and the greedy read of steps given as (character, probability) lists,
    /// the rest of each step's mass on the blank.
    fn scripted(steps: &[&[(char, f32)]]) -> (Vec<char>, Vec<f32>, TextRead) {
        let classes: Vec<char> = "\0厂陕苏京WJEQCO0123456789 ".chars().collect();
        let n = classes.len();
        let mut probs = Vec::new();
        for step in steps {
            let mut row = vec![0f32; n];
            let mut rest = 1.0;
            for (c, p) in step.iter() {
                row[classes.iter().position(|k| k == c).unwrap()] = *p;
                rest -= p;
            }
            row[0] += rest.max(0.0);
            probs.extend(row);
        }
        let read = ctc_greedy(&probs, n, &classes);
        (classes, probs, read)
    }

    fn plate_rules(steps: &[&[(char, f32)]], plate_start: bool) -> (String, Vec<f32>) {
        let (classes, probs, mut read) = scripted(steps);
        apply_plate_rules(&mut read, &probs, &classes, plate_start);
        (read.text(), read.conf)
    }

    #[test]
    fn a_rim_corner_before_the_province_is_dropped() {
        // The top row of a two-row plate: the rim's corner reads as 厂 before 陕 W.
        let (text, _) = plate_rules(&[&[('厂', 0.9)], &[], &[('陕', 0.95)], &[('W', 0.9)]], true);
        assert_eq!(text, "陕W");
        // Not on a bottom row, which holds no province.
        let (text, _) = plate_rules(&[&[('厂', 0.9)], &[('陕', 0.95)]], false);
        assert_eq!(text, "厂陕");
    }

    #[test]
    fn o_in_a_serial_becomes_the_likeliest_serial_character() {
        // 苏 E O(Q second) 1 2 3 4: the O is a Q here, not the 0 a blind O->0 would make.
        let (text, conf) = plate_rules(
            &[
                &[('苏', 0.9)],
                &[('E', 0.9)],
                &[('O', 0.5), ('Q', 0.3), ('0', 0.1)],
                &[('1', 0.9)],
                &[('2', 0.9)],
                &[('3', 0.9)],
                &[('4', 0.9)],
            ],
            true,
        );
        assert_eq!(text, "苏EQ1234");
        assert!((conf[2] - 0.8).abs() < 1e-6, "{conf:?}");
        // The authority letter itself is not a serial character: an O there stays for the
        // grammar to judge.
        let (text, _) = plate_rules(&[&[('苏', 0.9)], &[('O', 0.9)], &[('1', 0.9)]], true);
        assert_eq!(text, "苏O1");
        // On a two-row plate's bottom row every character is a serial one.
        let (text, _) = plate_rules(&[&[('O', 0.6), ('0', 0.3)], &[('1', 0.9)]], false);
        assert_eq!(text, "01");
        // The runner-up is the neighbour smeared into the O's step: not a look-alike.
        let (text, _) = plate_rules(
            &[
                &[('E', 0.9)],
                &[('O', 0.5), ('E', 0.3), ('0', 0.1)],
                &[('1', 0.9)],
            ],
            false,
        );
        assert_eq!(text, "E01");
    }

    #[test]
    fn an_unsure_digit_in_the_authority_place_is_read_as_a_letter() {
        let (text, conf) = plate_rules(
            &[&[('苏', 0.9)], &[('0', 0.5), ('Q', 0.2)], &[('1', 0.9)]],
            true,
        );
        assert_eq!(text, "苏Q1");
        assert_eq!(conf[1], 0.2);
        // A confident digit there is a fake's, and stays.
        let (text, _) = plate_rules(&[&[('苏', 0.9)], &[('0', 0.9)], &[('1', 0.9)]], true);
        assert_eq!(text, "苏01");
    }

    #[test]
    fn a_dropped_province_comes_back_to_a_fake_only_when_the_reader_was_sure() {
        // Eight characters after the province fit no grammar (a fake); the province the
        // greedy read dropped was at 0.4 before the first letter.
        let fake: &[&[(char, f32)]] = &[
            &[('苏', 0.4)],
            &[('E', 0.9)],
            &[('1', 0.9)],
            &[('2', 0.9)],
            &[('3', 0.9)],
            &[('4', 0.9)],
            &[('5', 0.9)],
            &[('6', 0.9)],
            &[('7', 0.9)],
        ];
        assert_eq!(plate_rules(fake, true).0, "苏E1234567");
        let mut unsure = fake.to_vec();
        unsure[0] = &[('苏', 0.1)];
        assert_eq!(plate_rules(&unsure, true).0, "E1234567");
    }

    #[test]
    fn a_punctuation_mark_in_the_province_place_is_read_as_a_province() {
        let classes: Vec<char> = "\0#苏E12345 ".chars().collect();
        let n = classes.len();
        let mut probs = Vec::new();
        for (c, p, q) in [
            ('#', 0.6, 0.3),
            ('E', 0.9, 0.0),
            ('1', 0.9, 0.0),
            ('2', 0.9, 0.0),
        ] {
            let mut row = vec![0f32; n];
            row[classes.iter().position(|k| *k == c).unwrap()] = p;
            row[2] = f32::max(q, row[2]);
            row[0] = 1.0 - row.iter().sum::<f32>();
            probs.extend(row);
        }
        let mut read = ctc_greedy(&probs, n, &classes);
        apply_plate_rules(&mut read, &probs, &classes, true);
        assert_eq!(read.text(), "苏E12");
    }

    #[test]
    fn priors_count_and_position() {
        let p = clp_priors(64, 32);
        // level 8: 4x8 cells, 16: 2x4, 32: 1x2; two sizes each.
        assert_eq!(p.len(), 2 * (32 + 8 + 2));
        assert_eq!(p[0], [4.0 / 64.0, 4.0 / 32.0, 24.0 / 64.0, 24.0 / 32.0]);
    }

    #[test]
    fn decode_puts_corners_in_reading_order() {
        let (w, h) = (64, 32);
        let n = clp_priors(w, h).len();
        let loc = vec![0f32; n * 4];
        let mut conf = vec![0f32; n * 2];
        conf[1] = 0.9; // prior 0 is a plate
        let mut lm = vec![0f32; n * 8];
        // bottom-right, bottom-left, top-left, top-right offsets in prior units / 0.1
        for (k, (dx, dy)) in [(1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0), (1.0, -1.0)]
            .iter()
            .enumerate()
        {
            lm[2 * k] = *dx;
            lm[2 * k + 1] = *dy;
        }
        let d = decode_clp(&loc, &conf, &lm, w, h, 0.5, 0.4).unwrap();
        assert_eq!(d.len(), 1);
        let [tl, tr, br, bl] = d[0].corners;
        assert!(tl.0 < tr.0 && tl.1 < bl.1 && br.0 > bl.0 && br.1 > tr.1);
    }
}
