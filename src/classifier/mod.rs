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
    /// Bucket → row number, or [`NO_ROW`]: only buckets seen in training have rows.
    row_of_bucket: Vec<u32>,
    /// One scale per row: a weight is `weights[i] as f32 * scale` (kept as bytes in memory
    /// too, so the rows a message touches stay in cache).
    scales: Vec<f32>,
    /// Row-major, `labels.len()` weights per row.
    weights: Vec<i8>,
    /// What it was trained on (a digest of the settings and every example) and how.
    pub meta: file::ModelMeta,
}

const NO_ROW: u32 = u32::MAX;

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
    /// `row_buckets` (and `scales`), which must be distinct and below `buckets` (a power of two).
    fn from_rows(
        labels: Vec<Label>,
        buckets: u32,
        row_buckets: &[u32],
        scales: Vec<f32>,
        weights: Vec<i8>,
        meta: file::ModelMeta,
    ) -> Classifier {
        let mut row_of_bucket = vec![NO_ROW; buckets as usize];
        for (row, &bucket) in row_buckets.iter().enumerate() {
            row_of_bucket[bucket as usize] = row as u32;
        }
        Classifier {
            labels,
            buckets,
            row_of_bucket,
            scales,
            weights,
            meta,
        }
    }

    pub fn labels(&self) -> &[Label] {
        &self.labels
    }

    pub fn row_count(&self) -> usize {
        self.scales.len()
    }

    /// Predicts normalised text (see [`crate::rules::normalise`]).
    pub fn predict(&self, normalised: &str) -> Prediction {
        let hashes = features::unit_hashes(normalised);
        let classes = self.labels.len();
        // Look every n-gram's row up first, then add the rows: the lookups are independent
        // loads the processor overlaps, instead of one cache miss after another.
        let mut rows = Vec::with_capacity(hashes.len() * features::MAX_N);
        features::for_each_bucket(&hashes, self.buckets, |bucket| {
            rows.push(
                self.row_of_bucket
                    .get(bucket as usize)
                    .copied()
                    .unwrap_or(NO_ROW),
            );
        });
        let count = rows.len();
        let mut scores = vec![0f32; classes];
        for (scale, weights) in rows.into_iter().filter_map(|row| self.row_at(row)) {
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
        self.row_at(*self.row_of_bucket.get(bucket as usize)?)
    }

    /// The scale and weights of row number `row` ([`NO_ROW`] has none).
    fn row_at(&self, row: u32) -> Option<(f32, &[i8])> {
        if row == NO_ROW {
            return None;
        }
        let classes = self.labels.len();
        let start = row as usize * classes;
        Some((
            *self.scales.get(row as usize)?,
            self.weights.get(start..start + classes)?,
        ))
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
