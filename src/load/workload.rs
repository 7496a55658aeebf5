//! What the load generator's buyers say: a mix of texts sorted, by routing them through the rules
//! the daemon will run, into ones the bot answers and ones it escalates. Texts the bot would stay
//! silent on are left out, since every message sent must expect exactly one reply.
//!
//! Also writes rule packs with thousands of extra rules, for measuring how the rule count
//! changes throughput.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::routing::{OutcomeKind, route};
use crate::rules::{Layer, load};

/// Why a workload could not be made.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot load the rules the daemon will run: {0}")]
    Rules(String),
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the rule pack in {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the message mix has no {0} texts (add some to the file, or use the shipped rules' examples)"
    )]
    Empty(&'static str),
}

/// Texts sorted by what the bot does with them.
#[derive(Debug, Clone, Default)]
pub struct Mix {
    /// Answered with one reply (a rule's answer, the model's, or the fallback).
    pub answers: Vec<String>,
    /// Escalated: one acknowledgement, then the chat waits for a person.
    pub escalations: Vec<String>,
    /// Left out: the bot stays silent on them.
    pub silent: usize,
}

impl Mix {
    /// Sorts `texts` by routing each through the rules in `rules`/`replies`.
    ///
    /// # Errors
    ///
    /// Rules that do not load.
    pub fn sort(
        texts: impl IntoIterator<Item = String>,
        rules: &Path,
        replies: &Path,
    ) -> Result<Mix, WorkloadError> {
        let loaded =
            load(&[Layer::new(rules, replies)]).map_err(|e| WorkloadError::Rules(e.to_string()))?;
        let mut mix = Mix::default();
        for text in texts {
            let text = text.trim().to_owned();
            if text.is_empty() {
                continue;
            }
            match route(&loaded.rules, &text).kind {
                OutcomeKind::Escalate => mix.escalations.push(text),
                OutcomeKind::Ignore => mix.silent += 1,
                OutcomeKind::Reply | OutcomeKind::Fallback => mix.answers.push(text),
            }
        }
        Ok(mix)
    }

    /// The examples of every rule in the pack, sorted.
    ///
    /// # Errors
    ///
    /// Rules that do not load.
    pub fn from_examples(rules: &Path, replies: &Path) -> Result<Mix, WorkloadError> {
        let loaded =
            load(&[Layer::new(rules, replies)]).map_err(|e| WorkloadError::Rules(e.to_string()))?;
        let texts: Vec<String> = loaded
            .rules
            .rules()
            .flat_map(|r| r.examples.iter().map(|(t, _)| t.clone()))
            .collect();
        Mix::sort(texts, rules, replies)
    }

    /// One text a line from `path`, sorted.
    ///
    /// # Errors
    ///
    /// A file that cannot be read, rules that do not load.
    pub fn from_file(path: &Path, rules: &Path, replies: &Path) -> Result<Mix, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Mix::sort(text.lines().map(str::to_owned), rules, replies)
    }

    /// Refuses a mix that cannot serve the asked share of escalations.
    ///
    /// # Errors
    ///
    /// [`WorkloadError::Empty`] naming the missing kind.
    pub fn check(&self, escalate_share: f64) -> Result<(), WorkloadError> {
        if escalate_share < 1.0 && self.answers.is_empty() {
            return Err(WorkloadError::Empty("answered"));
        }
        if escalate_share > 0.0 && self.escalations.is_empty() {
            return Err(WorkloadError::Empty("escalated"));
        }
        Ok(())
    }
}

/// Copies the pack in `rules`/`replies` into `dir` and adds `extra` keyword rules that the mix
/// does not hit (made of rare characters), so a run measures the cost of the rule count alone.
/// Returns the new rules and replies directories.
///
/// # Errors
///
/// A directory that cannot be read or written.
pub fn pack_with_extra_rules(
    rules: &Path,
    replies: &Path,
    dir: &Path,
    extra: usize,
    seed: u64,
) -> Result<(PathBuf, PathBuf), WorkloadError> {
    let (new_rules, new_replies) = (dir.join("rules"), dir.join("replies"));
    copy_dir(rules, &new_rules)?;
    copy_dir(replies, &new_replies)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut text = String::new();
    for n in 0..extra {
        let a = rare_word(&mut rng);
        let b = rare_word(&mut rng);
        let _ = writeln!(
            text,
            "[[rule]]\nid = \"load.{n}\"\ntopic = \"other\"\nreply = \"load_answer\"\npriority = 20\nany = [\"{a}\", \"{b}\"]\n"
        );
    }
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).map_err(|source| WorkloadError::Write { path, source })
    };
    write(new_rules.join("zz-load.toml"), &text)?;
    write(
        new_replies.join("zz-load.toml"),
        "[[reply]]\nkey = \"load_answer\"\ntext = \"这是压测用的回复\"\n",
    )?;
    Ok((new_rules, new_replies))
}

/// Four characters from the rarely used end of the CJK block (U+9700–U+9FA5), which buyers'
/// everyday messages almost never contain.
fn rare_word(rng: &mut StdRng) -> String {
    (0..4)
        .filter_map(|_| char::from_u32(rng.random_range(0x9700..0x9FA5)))
        .collect()
}

fn copy_dir(from: &Path, to: &Path) -> Result<(), WorkloadError> {
    let read = |source| WorkloadError::Read {
        path: from.to_owned(),
        source,
    };
    let write = |source| WorkloadError::Write {
        path: to.to_owned(),
        source,
    };
    std::fs::create_dir_all(to).map_err(write)?;
    for entry in std::fs::read_dir(from).map_err(read)? {
        let entry = entry.map_err(read)?;
        let target = to.join(entry.file_name());
        if entry.file_type().map_err(read)?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).map_err(write)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> (PathBuf, PathBuf) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        (root.join("rules"), root.join("replies"))
    }

    #[test]
    fn the_shipped_examples_give_answers_and_escalations_and_leave_out_silence() {
        let (rules, replies) = shipped();
        let mix = Mix::from_examples(&rules, &replies).unwrap();
        assert!(mix.answers.len() > 50, "{}", mix.answers.len());
        assert!(mix.escalations.len() > 20, "{}", mix.escalations.len());
        assert!(mix.silent > 0, "the greeting pack has silent examples");
        assert!(mix.escalations.iter().any(|t| t.contains("退")));
        assert!(
            !mix.answers.iter().any(|t| t == "好的"),
            "silence is left out"
        );
        mix.check(0.1).unwrap();
    }

    #[test]
    fn a_mix_without_escalations_is_refused_when_some_are_asked_for() {
        let (rules, replies) = shipped();
        let mix = Mix::sort(["发什么快递".to_owned()], &rules, &replies).unwrap();
        assert_eq!(mix.answers, ["发什么快递"]);
        mix.check(0.0).unwrap();
        let error = mix.check(0.5).unwrap_err().to_string();
        assert!(error.contains("no escalated texts"), "{error}");
    }

    #[test]
    fn extra_rules_load_and_leave_the_mix_alone() {
        let (rules, replies) = shipped();
        let dir = tempfile::tempdir().unwrap();
        let (more_rules, more_replies) =
            pack_with_extra_rules(&rules, &replies, dir.path(), 300, 7).unwrap();
        let loaded = load(&[Layer::new(&more_rules, &more_replies)]).unwrap();
        let shipped_count = load(&[Layer::new(&rules, &replies)])
            .unwrap()
            .rules
            .rule_count();
        assert_eq!(loaded.rules.rule_count(), shipped_count + 300);
        let before = Mix::from_examples(&rules, &replies).unwrap();
        let after = Mix::sort(
            before.answers.iter().chain(&before.escalations).cloned(),
            &more_rules,
            &more_replies,
        )
        .unwrap();
        assert_eq!(after.answers, before.answers);
        assert_eq!(after.escalations, before.escalations);
    }
}
