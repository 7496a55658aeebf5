//! The model file: what `xiaoer train` writes and the daemon loads.
//!
//! ```text
//! "xiaoer-model\n"  u32 header length  header (JSON: labels, buckets, fingerprint, probes)
//! u32 row count     rows: u32 bucket, f32 scale (a bfloat16: low 16 bits zero), one i8 weight
//!                   per label, in bucket order
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

/// The format number this build reads and writes. Format 2: every scale is a bfloat16 (an
/// `f32` whose low 16 bits are zero), so a row fits the classifier's 16-byte layout exactly.
pub const FORMAT: u32 = 2;

/// The format before: scales of a full `f32`. Still read, each row quantised again to fit
/// (a weight moves by at most half a step), so a shop's model keeps serving after an upgrade
/// until `xiaoer train` rebuilds it.
const FORMAT_WITH_FULL_SCALES: u32 = 1;

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
    #[error("{}: model format {found}, this build reads formats {FORMAT_WITH_FULL_SCALES} and {FORMAT}; run `xiaoer train` again", path.display())]
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

/// Quantises one row to a scale and a byte per weight. The scale is rounded up to a bfloat16
/// (the top 16 bits of an `f32`), so the classifier keeps it in two bytes without changing it;
/// rounding up keeps every weight within a byte.
pub(crate) fn quantise(row: &[f32]) -> (f32, Vec<i8>) {
    let largest = row.iter().fold(0f32, |m, w| m.max(w.abs()));
    if largest == 0.0 || !largest.is_finite() {
        return (0.0, vec![0; row.len()]);
    }
    let scale = bfloat16_at_least(largest / 127.0);
    let bytes = row
        .iter()
        .map(|w| (w / scale).round().clamp(-127.0, 127.0) as i8)
        .collect();
    (scale, bytes)
}

/// The smallest bfloat16 (an `f32` with its low 16 bits zero) not below `value`, for positive
/// finite values.
fn bfloat16_at_least(value: f32) -> f32 {
    let bits = value.to_bits();
    let truncated = bits & 0xffff_0000;
    if truncated == bits {
        value
    } else {
        f32::from_bits(truncated + 0x1_0000)
    }
}

/// Whether `scale` survives being kept as a bfloat16.
fn is_bfloat16(scale: f32) -> bool {
    scale.to_bits() & 0xffff == 0
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
    for (bucket, scale, weights) in model.trained_rows() {
        out.extend_from_slice(&bucket.to_le_bytes());
        out.extend_from_slice(&scale.to_le_bytes());
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
    if found != FORMAT && found != FORMAT_WITH_FULL_SCALES {
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
    let bucket_bits = super::MIN_BUCKETS_LOG2..=super::MAX_BUCKETS_LOG2;
    if !bucket_bits.contains(&meta.buckets_log2) {
        return Err(invalid(format!(
            "{} bucket bits is outside {}..={}",
            meta.buckets_log2,
            bucket_bits.start(),
            bucket_bits.end()
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
        let full_scale = found == FORMAT_WITH_FULL_SCALES;
        if bucket >= buckets
            || previous.is_some_and(|p| p >= bucket)
            || !scale.is_finite()
            || !(full_scale || is_bfloat16(scale))
        {
            return Err(invalid(format!(
                "row for bucket {bucket} is out of order or range"
            )));
        }
        previous = Some(bucket);
        row_buckets.push(bucket);
        if full_scale && !is_bfloat16(scale) {
            let row: Vec<f32> = bytes.iter().map(|&b| f32::from(b as i8) * scale).collect();
            let (scale, requantised) = quantise(&row);
            scales.push(scale);
            weights.extend(requantised);
        } else {
            scales.push(scale);
            weights.extend(bytes.iter().map(|&b| b as i8));
        }
    }
    let model = Classifier::from_rows(labels, buckets, &row_buckets, &scales, &weights, meta);
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
        // The scale is rounded up to fit two bytes, so the largest weight lands on 126 or 127.
        assert!(
            bytes[1] <= -126 && bytes[0] > 0 && bytes[2] == 0,
            "{bytes:?}"
        );
        assert!((f32::from(bytes[1]) * scale + 1.0).abs() <= scale / 2.0);
        assert_eq!(quantise(&[0.0, 0.0]).1, vec![0, 0]);
    }

    #[test]
    fn scales_fit_two_bytes_and_every_weight_stays_within_half_a_step() {
        // The classifier keeps a scale in two bytes; a scale that did not fit would change
        // every prediction between training and serving.
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 7.3
        };
        for _ in 0..1_000 {
            let row: Vec<f32> = (0..14).map(|_| next()).collect();
            let (scale, bytes) = quantise(&row);
            assert!(is_bfloat16(scale), "{scale}");
            assert_eq!(
                super::super::scale_of(super::super::scale_bytes(scale)),
                scale
            );
            for (w, b) in row.iter().zip(&bytes) {
                assert!(
                    (f32::from(*b) * scale - w).abs() <= scale / 2.0 + 1e-6,
                    "{w} {b} {scale}"
                );
            }
        }
        assert_eq!(bfloat16_at_least(1.0), 1.0);
        assert!(bfloat16_at_least(1.0 + f32::EPSILON) > 1.0);
    }

    /// Rewrites the checksum of a model file's bytes after a test changed them.
    fn checksum_again(bytes: &mut [u8]) {
        let body = bytes.len() - 32;
        let checksum = Sha256::digest(&bytes[..body]);
        bytes[body..].copy_from_slice(&checksum);
    }

    #[test]
    fn a_scale_that_does_not_fit_two_bytes_is_refused() {
        let mut bytes = to_bytes(&model());
        // The first row's scale follows the header, the row count and the row's bucket.
        let header_len = u32::from_le_bytes(bytes[MAGIC.len()..][..4].try_into().expect("4"));
        let scale_at = MAGIC.len() + 4 + header_len as usize + 4 + 4;
        bytes[scale_at] ^= 1;
        checksum_again(&mut bytes);
        let error = from_bytes(&bytes, Path::new("m")).expect_err("refused");
        assert!(
            error.to_string().contains("out of order or range"),
            "{error}"
        );
    }

    /// `bytes` (a model file) rewritten as format 1 wrote it, with every scale a full `f32`
    /// slightly off the two-byte grid.
    fn as_format_1(bytes: &[u8]) -> Vec<u8> {
        let header_at = MAGIC.len() + 4;
        let header_len =
            u32::from_le_bytes(bytes[MAGIC.len()..header_at].try_into().expect("4")) as usize;
        let mut meta: ModelMeta =
            serde_json::from_slice(&bytes[header_at..header_at + header_len]).expect("header");
        meta.format = 1;
        let classes = meta.labels.len();
        let header = serde_json::to_vec(&meta).expect("json");
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        let rows_at = header_at + header_len;
        out.extend_from_slice(&bytes[rows_at..rows_at + 4]);
        for row in bytes[rows_at + 4..bytes.len() - 32].chunks_exact(8 + classes) {
            out.extend_from_slice(&row[..4]);
            let scale = f32::from_le_bytes(row[4..8].try_into().expect("4")) * 1.000_3;
            assert!(!is_bfloat16(scale));
            out.extend_from_slice(&scale.to_le_bytes());
            out.extend_from_slice(&row[8..]);
        }
        let checksum = Sha256::digest(&out);
        out.extend_from_slice(&checksum);
        out
    }

    #[test]
    fn a_format_1_model_still_loads_and_predicts_alike() {
        let model = model();
        let old = as_format_1(&to_bytes(&model));
        let loaded = from_bytes(&old, Path::new("m")).expect("a format 1 file loads");
        assert_eq!(loaded.row_count(), model.row_count());
        for text in ["我要退款", "有券吗", "随便什么"] {
            let (now, p_now) = model.predict(&normalise(text)).best();
            let (then, p_then) = loaded.predict(&normalise(text)).best();
            assert_eq!(now, then, "{text}");
            assert!((p_now - p_then).abs() < 0.01, "{text}: {p_now} vs {p_then}");
        }
        let mut future = old.clone();
        let needle = b"\"format\":1";
        let at = future
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("the header names its format");
        future[at + needle.len() - 1] = b'9';
        checksum_again(&mut future);
        let error = from_bytes(&future, Path::new("m")).expect_err("format 9 is refused");
        assert!(
            error.to_string().contains("reads formats 1 and 2"),
            "{error}"
        );
    }
}
