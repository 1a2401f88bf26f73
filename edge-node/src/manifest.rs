//! Model manifests: one TOML file per model in `models/`, describing the file, its sha256,
//! where it comes from, the input tensor, pre-processing, the output decoder, labels and
//! thresholds. Code branches on these enums, never on hard-coded sizes or label lists.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Short name used in logs.
    pub name: String,
    /// File name inside the models folder.
    pub file: PathBuf,
    /// Expected sha256 of the file, lowercase hex.
    pub sha256: String,
    /// Registry package the file is extracted from.
    pub source: ModelSource,
    /// Licence of the weights.
    pub licence: String,
    pub input: InputSpec,
    pub output: OutputSpec,
    pub labels: LabelSpec,
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    pub registry: String,
    pub package: String,
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Keep the aspect ratio, centre, pad.
    Letterbox,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub pixel_format: PixelFormat,
    pub resize: Resize,
    pub pad_value: u8,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decoder {
    /// `[1, 4 + C, A]`: cx, cy, w, h then C class scores, per anchor.
    Yolov8,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub decoder: Decoder,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelSpec {
    /// Read the class names from this model metadata key.
    #[serde(default)]
    pub metadata_key: Option<String>,
    /// Or list them here, in class-index order.
    #[serde(default)]
    pub names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub score: f32,
    pub nms_iou: f32,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read model manifest '{path}': {err}; check the camera's `detector` path")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("model manifest '{path}' is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("model file '{path}' (manifest '{manifest}') is missing; run scripts/setup.sh to fetch it, or set TRAFFIC_MODELS_DIR")]
    Missing { path: PathBuf, manifest: PathBuf },
    #[error("model file '{path}' has sha256 {found}, manifest '{manifest}' expects {expected}; delete it and run scripts/setup.sh again")]
    Checksum {
        path: PathBuf,
        manifest: PathBuf,
        found: String,
        expected: String,
    },
    #[error("cannot read model file '{path}': {err}")]
    Io { path: PathBuf, err: std::io::Error },
}

impl ModelManifest {
    pub fn load(path: &Path) -> Result<ModelManifest, ManifestError> {
        let text = std::fs::read_to_string(path).map_err(|err| ManifestError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        let m: ModelManifest = toml::from_str(&text).map_err(|e| ManifestError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut problems = Vec::new();
        if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            problems.push(format!("sha256 '{}' is not 64 hex digits", m.sha256));
        }
        if m.input.width == 0 || m.input.height == 0 {
            problems.push("input width and height must be above 0".to_string());
        }
        if m.input.std.contains(&0.0) {
            problems.push("input.std must not contain 0".to_string());
        }
        if m.labels.metadata_key.is_none() && m.labels.names.is_none() {
            problems.push("labels: set metadata_key or names".to_string());
        }
        if !(0.0..=1.0).contains(&m.thresholds.score)
            || !(0.0..=1.0).contains(&m.thresholds.nms_iou)
        {
            problems.push("thresholds.score and nms_iou must be in 0..1".to_string());
        }
        if !problems.is_empty() {
            return Err(ManifestError::Parse {
                path: path.to_path_buf(),
                message: problems.join("; "),
            });
        }
        Ok(m)
    }

    /// Path of the model file in `models_dir`, checked to exist and to match its sha256.
    pub fn verified_file(
        &self,
        models_dir: &Path,
        manifest_path: &Path,
    ) -> Result<PathBuf, ManifestError> {
        verify_model_file(models_dir, &self.file, &self.sha256, manifest_path)
    }
}

/// Path of a model file in `models_dir`, checked to exist and to match its sha256.
pub fn verify_model_file(
    models_dir: &Path,
    file: &Path,
    sha256: &str,
    manifest_path: &Path,
) -> Result<PathBuf, ManifestError> {
    {
        let path = models_dir.join(file);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ManifestError::Missing {
                    path,
                    manifest: manifest_path.to_path_buf(),
                })
            }
            Err(err) => return Err(ManifestError::Io { path, err }),
        };
        let found = hex::encode(Sha256::digest(&bytes));
        if !found.eq_ignore_ascii_case(sha256) {
            return Err(ManifestError::Checksum {
                path,
                manifest: manifest_path.to_path_buf(),
                found,
                expected: sha256.to_string(),
            });
        }
        Ok(path)
    }
}

/// Parses the Ultralytics `names` metadata: `{0: 'person', 1: 'bicycle', ...}`.
pub fn parse_names_metadata(s: &str) -> Option<Vec<String>> {
    let inner = s.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut rest = inner;
    while !rest.trim().is_empty() {
        let colon = rest.find(':')?;
        let idx: usize = rest[..colon]
            .trim()
            .trim_start_matches(',')
            .trim()
            .parse()
            .ok()?;
        let after = rest[colon + 1..].trim_start();
        let quote = after.chars().next()?;
        if quote != '\'' && quote != '"' {
            return None;
        }
        let end = after[1..].find(quote)? + 1;
        out.push((idx, after[1..end].to_string()));
        rest = &after[end + 1..];
    }
    out.sort_by_key(|(i, _)| *i);
    if out.iter().enumerate().any(|(i, (j, _))| i != *j) {
        return None;
    }
    Some(out.into_iter().map(|(_, n)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_manifests_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&p).unwrap();
                match text.lines().find(|l| l.starts_with("role = ")) {
                    Some(l) => {
                        let role = l.trim_start_matches("role = ").trim_matches('"');
                        crate::plate::models::PlateModelManifest::load(&p, role)
                            .unwrap_or_else(|e| panic!("{e}"));
                    }
                    None => {
                        ModelManifest::load(&p).unwrap_or_else(|e| panic!("{e}"));
                    }
                }
                n += 1;
            }
        }
        assert!(n >= 3);
    }

    #[test]
    fn names_metadata() {
        let n = parse_names_metadata("{0: 'person', 1: 'bicycle', 2: \"traffic light\"}").unwrap();
        assert_eq!(n, vec!["person", "bicycle", "traffic light"]);
        assert!(parse_names_metadata("{1: 'x'}").is_none());
        assert!(parse_names_metadata("garbage").is_none());
    }

    #[test]
    fn missing_model_names_file_and_fix() {
        let m = ModelManifest::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/yolov8n.toml"),
        )
        .unwrap();
        let e = m
            .verified_file(Path::new("/nonexistent"), Path::new("models/yolov8n.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nonexistent/yolov8n.onnx") && e.contains("setup.sh"),
            "{e}"
        );
    }
}
