//! The training corpus and training itself.
//!
//! The corpus is every `*.tsv` file of `rules/training/` — one buyer message per line, the file
//! named after its label (`escalate.after_sale.tsv`, `answer.price.tsv`, `quiet.tsv`; anything
//! after a `-` is free, so `quiet-reviews.tsv` is quiet too), `#` lines are comments — plus every
//! rule's examples, labelled by what the rule does.
//!
//! Training is plain SGD on the softmax loss with a linearly decaying step, as fastText does,
//! over the examples in an order drawn from a fixed seed. The generator is SplitMix64, written
//! here because a library generator's stream may change between versions and the same inputs
//! must give the same model byte for byte.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::features;
use super::file::ModelMeta;
use super::settings::TrainingSettings;
use super::{Classifier, Label, softmax};
use crate::model::Topic;
use crate::rules::{Action, RuleSet, normalise};

/// One message to learn from.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingExample {
    pub label: Label,
    pub text: String,
    /// Where it came from, e.g. `rules/training/quiet.tsv:12` or `rule greeting.hello`.
    pub origin: String,
    /// How many times it counts.
    pub weight: u32,
}

/// What training learns from.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    pub examples: Vec<TrainingExample>,
    /// Every label, in a fixed order: the training files' labels, sorted.
    pub labels: Vec<Label>,
    /// Rule examples left out because no training file has their label.
    pub skipped_rule_examples: usize,
    /// Messages written under two different decisions (compared normalised), left out with
    /// every copy: `(text, where, where)` of the first clash of each.
    pub conflicts: Vec<(String, String, String)>,
}

/// A training directory that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("cannot read the training text {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: the file name is not a decision; name training files after one, e.g. \
         escalate.refund.tsv, answer.price.tsv or quiet.tsv",
        path.display()
    )]
    UnknownLabel { path: PathBuf },
    #[error("no training text in {} (expected *.tsv files named after decisions)", dir.display())]
    Empty { dir: PathBuf },
    #[error("the training text has only one decision ({label}); the model needs at least two")]
    OneLabel { label: Label },
}

impl Corpus {
    /// Reads every `*.tsv` file of `dir`, in name order.
    ///
    /// # Errors
    ///
    /// A file that cannot be read, a file not named after a decision, or no files at all.
    pub fn read_dir(dir: &Path) -> Result<Corpus, CorpusError> {
        let read_error = |source| CorpusError::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_error)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "tsv") && path.is_file())
            .collect();
        paths.sort();
        let mut corpus = Corpus::default();
        for path in paths {
            let label = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .and_then(|stem| {
                    Label::parse(stem.split_once('-').map_or(stem, |(label, _)| label))
                })
                .ok_or_else(|| CorpusError::UnknownLabel { path: path.clone() })?;
            let text = std::fs::read_to_string(&path).map_err(|source| CorpusError::Read {
                path: path.clone(),
                source,
            })?;
            corpus.add_lines(label, &path, &text);
            if !corpus.labels.contains(&label) {
                corpus.labels.push(label);
            }
        }
        corpus.labels.sort();
        corpus.drop_conflicts();
        match corpus.labels.as_slice() {
            [] => Err(CorpusError::Empty {
                dir: dir.to_path_buf(),
            }),
            [only] => Err(CorpusError::OneLabel { label: *only }),
            _ => Ok(corpus),
        }
    }

    /// Leaves out every message that two training files give different decisions: the model
    /// cannot learn both, and which one is right is for a person to settle.
    fn drop_conflicts(&mut self) {
        let keys: Vec<String> = self.examples.iter().map(|e| normalise(&e.text)).collect();
        let mut first: std::collections::HashMap<&str, (Label, usize)> =
            std::collections::HashMap::new();
        let mut clashing = std::collections::HashSet::new();
        for (index, (example, key)) in self.examples.iter().zip(&keys).enumerate() {
            match first.get(key.as_str()) {
                Some(&(label, at)) if label != example.label => {
                    if clashing.insert(key.as_str()) {
                        self.conflicts.push((
                            example.text.clone(),
                            self.examples[at].origin.clone(),
                            example.origin.clone(),
                        ));
                    }
                }
                Some(_) => {}
                None => {
                    first.insert(key, (example.label, index));
                }
            }
        }
        if !clashing.is_empty() {
            let mut keys = keys.iter();
            self.examples.retain(|_| {
                keys.next()
                    .is_none_or(|key| !clashing.contains(key.as_str()))
            });
        }
    }

    fn add_lines(&mut self, label: Label, path: &Path, text: &str) {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.examples.push(TrainingExample {
                label,
                text: line.to_string(),
                origin: format!("{}:{}", path.display(), number + 1),
                weight: 1,
            });
        }
    }

    /// Adds every rule's examples, labelled by what the rule does: an escalation's queue, a
    /// reply's topic, quiet for ignores and thanks. Examples whose label no training file has
    /// are left out (counted in `skipped_rule_examples`).
    pub fn add_rule_examples(&mut self, rules: &RuleSet, weight: u32) {
        for rule in rules.rules() {
            let label = rule_label(&rule.action, rule.topic);
            if !self.labels.contains(&label) {
                self.skipped_rule_examples += rule.examples.len();
                continue;
            }
            for (example, _) in &rule.examples {
                self.examples.push(TrainingExample {
                    label,
                    text: example.clone(),
                    origin: format!("rule {}", rule.id),
                    weight,
                });
            }
        }
    }

    /// A digest of everything training depends on: the settings, the labels and every example
    /// in order. Stored in the model file, so a model trained on older text is noticed.
    pub fn fingerprint(&self, settings: &TrainingSettings) -> String {
        let mut digest = Sha256::new();
        digest.update(format!(
            "features n<={} units<={}\n",
            features::MAX_N,
            features::MAX_UNITS
        ));
        digest.update(serde_json::to_string(settings).unwrap_or_default());
        for label in &self.labels {
            digest.update(label.to_string());
            digest.update([0]);
        }
        for example in &self.examples {
            digest.update(example.label.to_string());
            digest.update([0x1f]);
            digest.update(&example.text);
            digest.update([0x1f, example.weight.min(255) as u8, b'\n']);
        }
        format!("{:x}", digest.finalize())
    }

    /// How many examples each label has.
    pub fn counts(&self) -> Vec<(Label, usize)> {
        self.labels
            .iter()
            .map(|&label| {
                let n = self.examples.iter().filter(|e| e.label == label).count();
                (label, n)
            })
            .collect()
    }
}

/// What a rule's decision is, as a model label.
pub fn rule_label(action: &Action, topic: Topic) -> Label {
    match action {
        Action::Escalate { queue, .. } => Label::Escalate(*queue),
        Action::Ignore => Label::Quiet,
        Action::Reply { .. } if matches!(topic, Topic::Thanks | Topic::Other) => Label::Quiet,
        Action::Reply { .. } => Label::Answer(topic),
    }
}

/// A small, fixed pseudo-random stream (SplitMix64).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fisher–Yates.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Trains a classifier on `corpus`. Deterministic: the same corpus and settings give the same
/// weights, and [`super::file::save`] the same bytes.
pub fn train(corpus: &Corpus, settings: &TrainingSettings) -> Classifier {
    let buckets = 1u32
        << settings
            .buckets_log2
            .clamp(super::MIN_BUCKETS_LOG2, super::MAX_BUCKETS_LOG2);
    let classes = corpus.labels.len();
    let class_of = |label: Label| corpus.labels.iter().position(|&l| l == label);
    let mut samples: Vec<(usize, Vec<u32>)> = Vec::with_capacity(corpus.examples.len());
    let mut order: Vec<usize> = Vec::new();
    for example in &corpus.examples {
        let Some(class) = class_of(example.label) else {
            continue;
        };
        let hashes = features::unit_hashes(&normalise(&example.text));
        let mut buckets_of_example = Vec::new();
        features::for_each_bucket(&hashes, buckets, |b| buckets_of_example.push(b));
        for _ in 0..example.weight.max(1) {
            order.push(samples.len());
        }
        samples.push((class, buckets_of_example));
    }

    let mut per_class = vec![0f64; classes];
    for &sample in &order {
        per_class[samples[sample].0] += 1.0;
    }
    let average = order.len() as f64 / classes.max(1) as f64;
    let class_weight: Vec<f32> = per_class
        .iter()
        .map(|&n| (average / n.max(1.0)).powf(f64::from(settings.balance)) as f32)
        .collect();
    let mut weights = vec![0f32; buckets as usize * classes];
    let mut rng = SplitMix64(settings.seed);
    let total_steps = (order.len() as u64 * u64::from(settings.epochs)).max(1) as f64;
    let mut step = 0u64;
    let mut scores = vec![0f32; classes];
    for _ in 0..settings.epochs {
        rng.shuffle(&mut order);
        for &sample in &order {
            let (class, example_buckets) = &samples[sample];
            let rate = settings.learning_rate
                * (1.0 - step as f64 / total_steps) as f32
                * class_weight[*class];
            step += 1;
            if example_buckets.is_empty() {
                continue;
            }
            let inverse = 1.0 / example_buckets.len() as f32;
            scores.iter_mut().for_each(|s| *s = 0.0);
            for &bucket in example_buckets {
                let row = &weights[bucket as usize * classes..][..classes];
                for (score, weight) in scores.iter_mut().zip(row) {
                    *score += weight;
                }
            }
            scores.iter_mut().for_each(|s| *s *= inverse);
            softmax(&mut scores);
            for (c, score) in scores.iter_mut().enumerate() {
                let target = if c == *class { 1.0 } else { 0.0 };
                // The step is not divided by the n-gram count: every n-gram of the message moves
                // by the whole step, so the averaged score moves by it too, whatever the length.
                *score = (*score - target) * rate;
            }
            for &bucket in example_buckets {
                let row = &mut weights[bucket as usize * classes..][..classes];
                for (weight, gradient) in row.iter_mut().zip(&scores) {
                    *weight -= gradient;
                }
            }
        }
    }

    // Keep only the buckets training touched, quantised exactly as the model file stores them,
    // so the model `train` reports on is the model a daemon loads.
    let mut row_buckets = Vec::new();
    let mut scales = Vec::new();
    let mut kept = Vec::new();
    for (bucket, row) in weights.chunks_exact(classes).enumerate() {
        if row.iter().all(|&w| w == 0.0) {
            continue;
        }
        let (scale, quantised) = super::file::quantise(row);
        if quantised.iter().all(|&q| q == 0) {
            continue;
        }
        row_buckets.push(bucket as u32);
        scales.push(scale);
        kept.extend(quantised);
    }
    let meta = ModelMeta {
        format: super::file::FORMAT,
        labels: corpus.labels.iter().map(Label::to_string).collect(),
        buckets_log2: buckets.trailing_zeros() as u8,
        trained_on: corpus.fingerprint(settings),
        examples: corpus.examples.len(),
        probes: Vec::new(),
    };
    let mut classifier = Classifier::from_rows(
        corpus.labels.clone(),
        buckets,
        &row_buckets,
        &scales,
        &kept,
        meta,
    );
    classifier.meta.probes = probes(&classifier, corpus);
    classifier
}

/// A few examples with what this model predicts for them, stored in the file: a loaded model
/// that predicts them differently (a changed normaliser or hash, a damaged file) is refused.
fn probes(classifier: &Classifier, corpus: &Corpus) -> Vec<super::file::Probe> {
    let mut probes = Vec::new();
    for &label in &corpus.labels {
        for example in corpus.examples.iter().filter(|e| e.label == label).take(2) {
            let prediction = classifier.predict(&normalise(&example.text));
            let (best, probability) = prediction.best();
            probes.push(super::file::Probe {
                text: example.text.clone(),
                label: best.to_string(),
                probability,
            });
        }
    }
    probes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Queue;

    fn corpus(lines: &[(Label, &str)]) -> Corpus {
        let mut corpus = Corpus::default();
        for (label, text) in lines {
            corpus.examples.push(TrainingExample {
                label: *label,
                text: text.to_string(),
                origin: "test".into(),
                weight: 1,
            });
            if !corpus.labels.contains(label) {
                corpus.labels.push(*label);
            }
        }
        corpus.labels.sort();
        corpus
    }

    fn small() -> Corpus {
        let refund = Label::Escalate(Queue::Refund);
        let price = Label::Answer(Topic::Price);
        corpus(&[
            (refund, "我要退款"),
            (refund, "钱退给我"),
            (refund, "退款什么时候到"),
            (refund, "不要了退钱吧"),
            (price, "能便宜点吗"),
            (price, "有优惠券吗"),
            (price, "最低多少钱"),
            (price, "便宜一点吧"),
            (Label::Quiet, "好的"),
            (Label::Quiet, "谢谢"),
            (Label::Quiet, "好的谢谢"),
        ])
    }

    fn settings() -> TrainingSettings {
        TrainingSettings {
            buckets_log2: 12,
            epochs: 60,
            ..TrainingSettings::default()
        }
    }

    #[test]
    fn it_learns_its_examples_and_something_beyond_them() {
        let model = train(&small(), &settings());
        for example in &small().examples {
            let (best, _) = model.predict(&normalise(&example.text)).best();
            assert_eq!(best, example.label, "{}", example.text);
        }
        let (best, _) = model.predict(&normalise("退钱")).best();
        assert_eq!(best, Label::Escalate(Queue::Refund));
        let (best, _) = model.predict(&normalise("优惠券")).best();
        assert_eq!(best, Label::Answer(Topic::Price));
    }

    #[test]
    fn same_corpus_and_settings_give_the_same_model_and_another_seed_does_not() {
        let a = train(&small(), &settings());
        let b = train(&small(), &settings());
        assert_eq!(a.table, b.table);
        assert_eq!(a.meta.trained_on, b.meta.trained_on);
        let c = train(
            &small(),
            &TrainingSettings {
                seed: 7,
                ..settings()
            },
        );
        assert_ne!(a.table, c.table);
        assert_ne!(a.meta.trained_on, c.meta.trained_on);
    }

    #[test]
    fn the_fingerprint_follows_the_text() {
        let mut changed = small();
        changed.examples[0].text.push('!');
        assert_ne!(
            small().fingerprint(&settings()),
            changed.fingerprint(&settings())
        );
    }

    #[test]
    fn pushes_name_the_ngrams_behind_a_decision() {
        let model = train(&small(), &settings());
        let pushes = model.pushes(&normalise("我要退款"), Label::Escalate(Queue::Refund), 3);
        assert_eq!(pushes.len(), 3);
        assert!(pushes[0].weight >= pushes[1].weight);
        assert!(pushes.iter().any(|p| p.ngram.contains('退')), "{pushes:?}");
    }

    #[test]
    fn a_directory_is_read_by_file_name_and_refuses_unknown_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("quiet.tsv"), "# acks\n好的\n\n嗯嗯\n").unwrap();
        std::fs::write(dir.path().join("answer.price.tsv"), "能便宜点吗\n").unwrap();
        std::fs::write(dir.path().join("quiet-reviews.tsv"), "很满意\n").unwrap();
        let corpus = Corpus::read_dir(dir.path()).unwrap();
        assert_eq!(corpus.examples.len(), 4);
        assert_eq!(
            corpus.labels,
            vec![Label::Answer(Topic::Price), Label::Quiet]
        );
        assert!(corpus.examples[0].origin.ends_with("answer.price.tsv:1"));
        assert!(corpus.examples[1].origin.ends_with("quiet-reviews.tsv:1"));
        assert_eq!(corpus.examples[1].label, Label::Quiet);
        assert!(corpus.examples[3].origin.ends_with("quiet.tsv:4"));

        std::fs::write(dir.path().join("answer.product.tsv"), "好的\n").unwrap();
        let corpus = Corpus::read_dir(dir.path()).unwrap();
        assert_eq!(
            corpus.conflicts.len(),
            1,
            "好的 is written as quiet and as a product question"
        );
        assert!(corpus.examples.iter().all(|e| e.text != "好的"));
        std::fs::remove_file(dir.path().join("answer.product.tsv")).unwrap();

        std::fs::write(dir.path().join("refunds.tsv"), "退款\n").unwrap();
        let error = Corpus::read_dir(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("refunds.tsv") && error.contains("escalate.refund.tsv"),
            "{error}"
        );

        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            Corpus::read_dir(empty.path()),
            Err(CorpusError::Empty { .. })
        ));
    }
}
