//! The learned model behind the rules: a fastText-style text classifier over hashed character
//! n-grams, trained only on text the project owns (`rules/training/*.tsv` and every rule's
//! examples).
//!
//! A message is normalised as rules see it ([`crate::rules::normalise`]), cut into units and
//! hashed 1–3-unit n-grams ([`features`]); each n-gram bucket holds one weight per decision; the
//! weights of the message's n-grams are averaged and a softmax turns them into probabilities.
//! That is fastText's supervised model with the hidden layer as wide as the label set, which
//! makes every decision a sum of per-n-gram contributions that `xiaoer explain` can show exactly.
//!
//! Written here rather than taken from the `fasttext` crate: that crate only reads models that
//! the C++ tool trained, and training must be reproducible from our own text with `xiaoer
//! train`, in Rust, with a fixed seed. What we need is small: hashing, an averaged linear layer,
//! softmax, and plain SGD ([`train`]), each tested below.
//!
//! - [`features`]: units and n-gram hashing.
//! - [`train`]: the training corpus and SGD.
//! - [`file`]: the model file (quantised weights, checksum, probes).
//! - [`settings`]: `rules/model/model.toml` — training settings and the thresholds routing uses.
//! - [`serving`]: loading the model with a rule set, and noticing when it is out of date.

pub mod features;
pub mod file;
pub mod serving;
pub mod settings;
pub mod train;

use std::fmt;

use crate::model::{Queue, Topic};

pub use file::ModelFileError;
pub use settings::{ModelSettings, Thresholds, TrainingSettings};
pub use train::{Corpus, CorpusError, TrainingExample};

/// One decision the model can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Label {
    /// Hand the chat to this queue.
    Escalate(Queue),
    /// Answer about this topic.
    Answer(Topic),
    /// Needs no answer: acknowledgements, thanks, praise, re-orders.
    Quiet,
}

impl Label {
    /// Parses a label name as training files are named: `escalate.refund`, `answer.price`, `quiet`.
    pub fn parse(name: &str) -> Option<Label> {
        if name == "quiet" {
            return Some(Label::Quiet);
        }
        let (kind, what) = name.split_once('.')?;
        match kind {
            "escalate" => what.parse::<Queue>().ok().map(Label::Escalate),
            "answer" => what.parse::<Topic>().ok().map(Label::Answer),
            _ => None,
        }
    }

    pub fn escalates(self) -> bool {
        matches!(self, Label::Escalate(_))
    }

    /// The reply the daemon sends when the model makes this decision: `model.` and the label
    /// name, e.g. `model.answer.price`; none for [`Label::Quiet`].
    pub fn reply_key(self) -> Option<String> {
        match self {
            Label::Quiet => None,
            other => Some(format!("model.{other}")),
        }
    }

    /// The topic this decision is about (quiet is [`Topic::Thanks`]).
    pub fn topic(self) -> Topic {
        match self {
            Label::Escalate(queue) => match queue {
                Queue::Refund => Topic::Refund,
                Queue::AfterSale => Topic::AfterSale,
                Queue::Complaint => Topic::Complaint,
                Queue::BadReview => Topic::BadReview,
                Queue::Human => Topic::Human,
            },
            Label::Answer(topic) => topic,
            Label::Quiet => Topic::Thanks,
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Label::Escalate(queue) => write!(f, "escalate.{}", queue.as_str()),
            Label::Answer(topic) => write!(f, "answer.{}", topic.as_str()),
            Label::Quiet => f.write_str("quiet"),
        }
    }
}

/// A trained model, ready to predict.
#[derive(Clone)]
pub struct Classifier {
    labels: Vec<Label>,
    buckets: u32,
    /// Every bucket's row, [`Classifier::stride`] bytes each, trained or not: a scale (a
    /// bfloat16, the top half of an `f32`, in two little-endian bytes) and then one weight per
    /// label, a weight being `weight as f32 * scale`. A bucket training never saw has scale 0.
    ///
    /// Laid out densely by bucket so that each of a message's n-grams costs one memory access
    /// (at most 16 MiB at the 2^20 buckets [`MAX_BUCKETS_LOG2`] allows, with 14 labels). An
    /// index of trained rows beside separate scale and weight arrays was three accesses per
    /// n-gram, each a likely cache miss, and most of a decision's time.
    table: Vec<i8>,
    /// Bytes per row: the scale and the weights, rounded up to 16 so a row never straddles
    /// a cache line.
    stride: usize,
    /// How many buckets have a trained row.
    rows: usize,
    /// What it was trained on (a digest of the settings and every example) and how.
    pub meta: file::ModelMeta,
}

/// The most bucket bits a model may have: the dense table of 2^20 rows is 16 MiB with the
/// shipped labels.
pub const MAX_BUCKETS_LOG2: u8 = 20;

/// The fewest bucket bits a model may have.
pub const MIN_BUCKETS_LOG2: u8 = 8;

/// The scale's two bytes: the top half of its `f32` (bfloat16). Scales are chosen so that this
/// loses nothing (see [`file::quantise`]).
fn scale_bytes(scale: f32) -> [i8; 2] {
    let [_, _, low, high] = scale.to_le_bytes();
    [low as i8, high as i8]
}

fn scale_of(bytes: [i8; 2]) -> f32 {
    f32::from_le_bytes([0, 0, bytes[0] as u8, bytes[1] as u8])
}

/// The model's view of one message: every decision with its probability, most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub ranked: Vec<(Label, f32)>,
}

impl Prediction {
    /// The most likely decision and its probability.
    pub fn best(&self) -> (Label, f32) {
        self.ranked.first().copied().unwrap_or((Label::Quiet, 0.0))
    }

    /// The probability of `label`.
    pub fn probability(&self, label: Label) -> f32 {
        self.ranked
            .iter()
            .find(|(l, _)| *l == label)
            .map_or(0.0, |(_, p)| *p)
    }

    /// The summed probability of every escalation.
    pub fn escalation_probability(&self) -> f32 {
        self.ranked
            .iter()
            .filter(|(l, _)| l.escalates())
            .map(|(_, p)| p)
            .sum()
    }
}

/// One n-gram's push towards a decision, for `explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct Push {
    pub ngram: String,
    /// Its share of the decision's score (its weight divided by the n-gram count).
    pub weight: f32,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("labels", &self.labels)
            .field("buckets", &self.buckets)
            .field("rows", &self.row_count())
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Builds a classifier from its parts; `weights` has one row of `labels.len()` per entry of
    /// `row_buckets` (and `scales`), which must be distinct and below `buckets` (a power of two
    /// of at most 2^[`MAX_BUCKETS_LOG2`]), and every scale a bfloat16 ([`file::quantise`]).
    fn from_rows(
        labels: Vec<Label>,
        buckets: u32,
        row_buckets: &[u32],
        scales: &[f32],
        weights: &[i8],
        meta: file::ModelMeta,
    ) -> Classifier {
        let classes = labels.len();
        let stride = (2 + classes).div_ceil(16) * 16;
        let mut table = vec![0i8; buckets as usize * stride];
        let mut rows = 0;
        for ((&bucket, &scale), row_weights) in row_buckets
            .iter()
            .zip(scales)
            .zip(weights.chunks_exact(classes))
        {
            let Some(row) = table
                .get_mut(bucket as usize * stride..)
                .and_then(|rest| rest.get_mut(..2 + classes))
            else {
                continue;
            };
            row[..2].copy_from_slice(&scale_bytes(scale));
            row[2..].copy_from_slice(row_weights);
            rows += usize::from(scale != 0.0);
        }
        Classifier {
            labels,
            buckets,
            table,
            stride,
            rows,
            meta,
        }
    }

    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    pub fn row_count(&self) -> usize {
        self.rows
    }

    /// Every trained row, by bucket: the bucket, its scale and its weights, for the model file.
    pub(crate) fn trained_rows(&self) -> impl Iterator<Item = (u32, f32, &[i8])> {
        (0..self.buckets).filter_map(|bucket| {
            self.row(bucket)
                .map(|(scale, weights)| (bucket, scale, weights))
        })
    }

    /// Predicts normalised text (see [`crate::rules::normalise`]).
    pub fn predict(&self, normalised: &str) -> Prediction {
        let hashes = features::unit_hashes(normalised);
        let classes = self.labels.len();
        // Work the buckets out first, then add their rows: the row loads are independent, so
        // the processor overlaps them instead of waiting on one cache miss after another.
        let mut buckets = Vec::with_capacity(hashes.len() * features::MAX_N);
        features::for_each_bucket(&hashes, self.buckets, |bucket| buckets.push(bucket));
        let count = buckets.len();
        let mut scores = vec![0f32; classes];
        for (scale, weights) in buckets.into_iter().filter_map(|bucket| self.row(bucket)) {
            for (score, &weight) in scores.iter_mut().zip(weights) {
                *score += f32::from(weight) * scale;
            }
        }
        let count = count.max(1) as f32;
        for score in &mut scores {
            *score /= count;
        }
        softmax(&mut scores);
        let mut ranked: Vec<(Label, f32)> = self.labels.iter().copied().zip(scores).collect();
        ranked.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        Prediction { ranked }
    }

    /// The n-grams of `normalised` that pushed hardest towards `label` (positive first), at most
    /// `limit` of them; repeated n-grams are summed. Only the n-grams shown are turned into text,
    /// since routing names them for every decision the model makes.
    pub fn pushes(&self, normalised: &str, label: Label, limit: usize) -> Vec<Push> {
        let Some(class) = self.labels.iter().position(|&l| l == label) else {
            return Vec::new();
        };
        let units = features::units(normalised);
        let hashes = features::unit_hashes(normalised);
        // (bucket, n, start) of every n-gram, in the order `for_each_bucket` visits them.
        let mut grams: Vec<(u32, usize, usize)> = Vec::with_capacity(hashes.len() * 3);
        let mut visited = 0usize;
        features::for_each_bucket(&hashes, self.buckets, |bucket| {
            if self.row(bucket).is_some() {
                let (n, start) = features::ngram_at(hashes.len(), visited);
                grams.push((bucket, n, start));
            }
            visited += 1;
        });
        let count = visited.max(1) as f32;
        let mut summed: Vec<(f32, usize, usize, u32)> = Vec::new();
        grams.sort_by_key(|&(bucket, n, start)| (bucket, n, start));
        for (bucket, n, start) in grams {
            let Some((scale, row)) = self.row(bucket) else {
                continue;
            };
            let weight = f32::from(row[class]) * scale / count;
            match summed.last_mut() {
                Some(last) if last.3 == bucket => last.0 += weight,
                _ => summed.push((weight, n, start, bucket)),
            }
        }
        summed.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        summed
            .into_iter()
            .take(limit)
            .map(|(weight, n, start, _)| Push {
                ngram: features::ngram_text(&units[start..start + n]),
                weight,
            })
            .collect()
    }

    /// The scale and weights of `bucket`'s row, if training gave it one.
    fn row(&self, bucket: u32) -> Option<(f32, &[i8])> {
        let row = self
            .table
            .get(bucket as usize * self.stride..)?
            .get(..2 + self.labels.len())?;
        let scale = scale_of([row[0], row[1]]);
        (scale != 0.0).then_some((scale, &row[2..]))
    }
}

/// In place, numerically stable.
pub(crate) fn softmax(scores: &mut [f32]) {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for score in scores.iter_mut() {
        *score = (*score - max).exp();
        sum += *score;
    }
    if sum > 0.0 {
        for score in scores.iter_mut() {
            *score /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_round_trip_and_reject_unknown_ones() {
        for name in [
            "escalate.refund",
            "answer.price",
            "quiet",
            "escalate.bad_review",
        ] {
            let label = Label::parse(name).expect(name);
            assert_eq!(label.to_string(), name);
        }
        assert_eq!(Label::parse("escalate.nowhere"), None);
        assert_eq!(Label::parse("answer"), None);
        assert_eq!(Label::parse("reply.price"), None);
        assert_eq!(
            Label::Answer(Topic::Price).reply_key().as_deref(),
            Some("model.answer.price")
        );
        assert_eq!(Label::Quiet.reply_key(), None);
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_scores() {
        let mut scores = [1000.0, 999.0, -1000.0];
        softmax(&mut scores);
        assert!((scores.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(scores[0] > scores[1] && scores[1] > scores[2]);
        assert!(scores.iter().all(|s| s.is_finite()));
    }
}
