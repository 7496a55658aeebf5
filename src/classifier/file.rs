//! The model file: what `xiaoer train` writes and the daemon loads.
//!
//! ```text
//! "xiaoer-model\n"  u32 header length  header (JSON: labels, buckets, fingerprint, probes)
//! u32 row count     rows: u32 bucket, f32 scale, one i8 weight per label
//! 32-byte SHA-256 of everything before it
//! ```
//!
//! Weights are stored as one byte each with a scale per row, which keeps the shipped model a few
//! megabytes; training hands back the quantised weights, so what `train` measures is what loads.
//! Loading checks the checksum, every label, every bucket, and that the stored probes are still
//! predicted as they were when the model was trained; a file that fails any check is refused
//! with a reason and the model already serving stays.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Classifier, Label};
use crate::rules::normalise;

/// The format number this build reads and writes.
pub const FORMAT: u32 = 1;

const MAGIC: &[u8] = b"xiaoer-model\n";
/// Larger files are refused before being read whole.
const MAX_FILE_BYTES: u64 = 64 << 20;

/// The header: what the model decides and what it was trained on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ModelMeta {
    pub format: u32,
    pub labels: Vec<String>,
    pub buckets_log2: u8,
    /// [`super::Corpus::fingerprint`] of the training text.
    pub trained_on: String,
    pub examples: usize,
    pub probes: Vec<Probe>,
}

/// A message and what the model predicted for it when it was trained.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    pub text: String,
    pub label: String,
    pub probability: f32,
}

/// A model file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("cannot read the model {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the model {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a xiaoer model file ({why}); run `xiaoer train` to build one", path.display())]
    NotAModel { path: PathBuf, why: String },
    #[error("{}: the file is damaged (its checksum does not match); run `xiaoer train` again", path.display())]
    Damaged { path: PathBuf },
    #[error("{}: model format {found}, this build reads format {FORMAT}; run `xiaoer train` again", path.display())]
    Format { path: PathBuf, found: u32 },
    #[error("{}: {why}", path.display())]
    Invalid { path: PathBuf, why: String },
    #[error(
        "{}: the model no longer predicts its own probe {text:?} as {expected} (got {got}); \
         it was trained by a build that reads text differently: run `xiaoer train` again",
        path.display()
    )]
    ProbeFailed {
        path: PathBuf,
        text: String,
        expected: String,
        got: String,
    },
}

/// Quantises one row to a scale and a byte per weight.
pub(crate) fn quantise(row: &[f32]) -> (f32, Vec<i8>) {
    let largest = row.iter().fold(0f32, |m, w| m.max(w.abs()));
    if largest == 0.0 || !largest.is_finite() {
        return (0.0, vec![0; row.len()]);
    }
    let scale = largest / 127.0;
    let bytes = row
        .iter()
        .map(|w| (w / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (scale, bytes)
}

/// The bytes of a model file.
pub fn to_bytes(model: &Classifier) -> Vec<u8> {
    let header = serde_json::to_vec(&model.meta).unwrap_or_default();
    let classes = model.labels.len();
    let rows = model.row_count();
    let mut out = Vec::with_capacity(MAGIC.len() + header.len() + rows * (8 + classes) + 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&(rows as u32).to_le_bytes());
    let mut buckets: Vec<(u32, u32)> = model
        .row_of_bucket
        .iter()
        .enumerate()
        .filter(|(_, row)| **row != super::NO_ROW)
        .map(|(bucket, row)| (bucket as u32, *row))
        .collect();
    buckets.sort_unstable();
    for (bucket, row) in buckets {
        let weights = &model.weights[row as usize * classes..][..classes];
        out.extend_from_slice(&bucket.to_le_bytes());
        out.extend_from_slice(&model.scales[row as usize].to_le_bytes());
        out.extend(weights.iter().map(|&b| b as u8));
    }
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    out
}

/// Writes `model` to `path` through a temporary file and a rename, so a reader never sees half
/// a model.
///
/// # Errors
///
/// The file cannot be written.
pub fn save(model: &Classifier, path: &Path) -> Result<(), ModelFileError> {
    let write_error = |source| ModelFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let temporary = path.with_extension("model.tmp");
    std::fs::write(&temporary, to_bytes(model)).map_err(write_error)?;
    std::fs::rename(&temporary, path).map_err(write_error)
}

/// Reads and checks a model file.
///
/// # Errors
///
/// The file cannot be read, or fails a check (see the module docs).
pub fn load(path: &Path) -> Result<Classifier, ModelFileError> {
    let read_error = |source| ModelFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(read_error)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ModelFileError::NotAModel {
            path: path.to_path_buf(),
            why: format!("{size} bytes, larger than any model"),
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    from_bytes(&bytes, path)
}

/// Parses and checks the bytes of a model file; `path` names it in errors.
///
/// # Errors
///
/// As for [`load`].
pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Classifier, ModelFileError> {
    let not_a_model = |why: &str| ModelFileError::NotAModel {
        path: path.to_path_buf(),
        why: why.to_string(),
    };
    let invalid = |why: String| ModelFileError::Invalid {
        path: path.to_path_buf(),
        why,
    };
    let Some(body) = bytes
        .strip_prefix(MAGIC)
        .filter(|_| bytes.len() >= MAGIC.len() + 4 + 4 + 32)
    else {
        return Err(not_a_model("it does not start like one"));
    };
    let (content, checksum) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(content).as_slice() != checksum {
        return Err(ModelFileError::Damaged {
            path: path.to_path_buf(),
        });
    }
    let mut reader = Reader {
        rest: &body[..body.len() - 32],
    };
    let header_len = reader.u32().ok_or_else(|| not_a_model("no header"))? as usize;
    let header = reader
        .take(header_len)
        .ok_or_else(|| not_a_model("the header is cut short"))?;
    let format: serde_json::Value =
        serde_json::from_slice(header).map_err(|_| not_a_model("the header is not JSON"))?;
    let found = format.get("format").and_then(|f| f.as_u64()).unwrap_or(0) as u32;
    if found != FORMAT {
        return Err(ModelFileError::Format {
            path: path.to_path_buf(),
            found,
        });
    }
    let meta: ModelMeta = serde_json::from_value(format)
        .map_err(|e| invalid(format!("the header is incomplete: {e}")))?;
    let labels: Vec<Label> = meta
        .labels
        .iter()
        .map(|name| Label::parse(name).ok_or_else(|| invalid(format!("unknown decision {name:?}"))))
        .collect::<Result<_, _>>()?;
    if labels.len() < 2 || labels.len() > 64 {
        return Err(invalid(format!(
            "{} decisions; a model has between 2 and 64",
            labels.len()
        )));
    }
    if !(8..=24).contains(&meta.buckets_log2) {
        return Err(invalid(format!(
            "{} bucket bits is outside 8..=24",
            meta.buckets_log2
        )));
    }
    let buckets = 1u32 << meta.buckets_log2;
    let classes = labels.len();
    let rows = reader.u32().ok_or_else(|| not_a_model("no row count"))? as usize;
    if reader.rest.len() != rows * (8 + classes) {
        return Err(invalid(format!(
            "{rows} rows of {classes} decisions do not fill the file"
        )));
    }
    let mut row_buckets = Vec::with_capacity(rows);
    let mut weights = Vec::with_capacity(rows * classes);
    let mut scales = Vec::with_capacity(rows);
    let mut previous: Option<u32> = None;
    for _ in 0..rows {
        let (Some(bucket), Some(scale), Some(bytes)) =
            (reader.u32(), reader.f32(), reader.take(classes))
        else {
            return Err(not_a_model("a row is cut short"));
        };
        if bucket >= buckets || previous.is_some_and(|p| p >= bucket) || !scale.is_finite() {
            return Err(invalid(format!(
                "row for bucket {bucket} is out of order or range"
            )));
        }
        previous = Some(bucket);
        row_buckets.push(bucket);
        scales.push(scale);
        weights.extend(bytes.iter().map(|&b| b as i8));
    }
    let model = Classifier::from_rows(labels, buckets, &row_buckets, scales, weights, meta);
    for probe in &model.meta.probes {
        let (got, _) = model.predict(&normalise(&probe.text)).best();
        if got.to_string() != probe.label {
            return Err(ModelFileError::ProbeFailed {
                path: path.to_path_buf(),
                text: probe.text.clone(),
                expected: probe.label.clone(),
                got: got.to_string(),
            });
        }
    }
    Ok(model)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)?.try_into().ok().map(u32::from_le_bytes)
    }

    fn f32(&mut self) -> Option<f32> {
        self.take(4)?.try_into().ok().map(f32::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::settings::TrainingSettings;
    use super::super::train::{Corpus, TrainingExample, train};
    use super::*;
    use crate::model::{Queue, Topic};

    fn model() -> Classifier {
        let mut corpus = Corpus::default();
        let refund = Label::Escalate(Queue::Refund);
        let price = Label::Answer(Topic::Price);
        for (label, text) in [
            (refund, "我要退款"),
            (refund, "退钱给我"),
            (price, "能便宜点吗"),
            (price, "有券吗"),
        ] {
            corpus.examples.push(TrainingExample {
                label,
                text: text.into(),
                origin: "test".into(),
                weight: 1,
            });
        }
        corpus.labels = vec![refund, price];
        corpus.labels.sort();
        train(
            &corpus,
            &TrainingSettings {
                buckets_log2: 10,
                epochs: 40,
                ..TrainingSettings::default()
            },
        )
    }

    #[test]
    fn a_saved_model_loads_with_the_same_predictions_and_bytes() {
        let model = model();
        let bytes = to_bytes(&model);
        assert_eq!(bytes, to_bytes(&model));
        let loaded = from_bytes(&bytes, Path::new("m")).unwrap();
        for text in ["我要退款", "有券吗", "随便什么"] {
            assert_eq!(
                loaded.predict(&normalise(text)),
                model.predict(&normalise(text)),
                "{text}"
            );
        }
        assert_eq!(to_bytes(&loaded), bytes);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.model");
        save(&model, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert!(load(&path).is_ok());
    }

    #[test]
    fn damaged_truncated_and_foreign_files_are_refused_with_a_reason() {
        let bytes = to_bytes(&model());
        let mut flipped = bytes.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        assert!(matches!(
            from_bytes(&flipped, Path::new("m")),
            Err(ModelFileError::Damaged { .. })
        ));
        assert!(matches!(
            from_bytes(&bytes[..bytes.len() - 1], Path::new("m")),
            Err(ModelFileError::Damaged { .. })
        ));
        assert!(matches!(
            from_bytes(b"[[rule]]\nid = 1\n", Path::new("m")),
            Err(ModelFileError::NotAModel { .. })
        ));
        assert!(from_bytes(&[], Path::new("m")).is_err());
    }

    #[test]
    fn a_model_whose_probes_no_longer_hold_is_refused() {
        let mut model = model();
        model.meta.probes[0].label = if model.meta.probes[0].label == "quiet" {
            "answer.price".into()
        } else {
            "quiet".into()
        };
        let error = from_bytes(&to_bytes(&model), Path::new("m")).unwrap_err();
        assert!(
            matches!(error, ModelFileError::ProbeFailed { .. }),
            "{error}"
        );
    }

    #[test]
    fn quantising_keeps_the_largest_weight_and_signs() {
        let (scale, bytes) = quantise(&[0.5, -1.0, 0.0]);
        assert_eq!(bytes, vec![64, -127, 0]);
        assert!((f32::from(bytes[1]) * scale + 1.0).abs() < 1e-6);
        assert_eq!(quantise(&[0.0, 0.0]).1, vec![0, 0]);
    }
}
