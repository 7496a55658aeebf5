//! What the classifier sees of a message: the normalised text cut into units, and the hashed
//! n-grams of 1 to [`MAX_N`] units with start and end markers.
//!
//! A unit is one CJK character, one run of ASCII letters (so `tk`, `sf`, `ok` are single words),
//! one run of digits (all digit runs are the same unit: order numbers and prices carry no
//! meaning by their value), or one punctuation mark (runs of the same mark count once, so `？？？`
//! and `？` look alike). The hash is FNV-1a, written here because the model file stores bucket
//! numbers: the hash must never change with a crate upgrade.

/// Longest n-gram, in units.
pub const MAX_N: usize = 3;

/// Units beyond this are not looked at: a long review says what it is about early, and hostile
/// text cannot make one decision slow.
pub const MAX_UNITS: usize = 400;

const START: &str = "\u{2}";
const END: &str = "\u{3}";
const DIGITS: &str = "#";

/// The units of normalised text, with the start and end markers around them.
pub fn units(normalised: &str) -> Vec<&str> {
    let mut units = Vec::with_capacity(normalised.len() / 2 + 2);
    units.push(START);
    let mut rest = normalised;
    while let Some(first) = rest.chars().next() {
        if units.len() > MAX_UNITS {
            break;
        }
        let run_end = |keep: &dyn Fn(char) -> bool| {
            rest.char_indices()
                .find(|&(_, c)| !keep(c))
                .map_or(rest.len(), |(at, _)| at)
        };
        let (unit, len) = if first.is_ascii_alphabetic() {
            let len = run_end(&|c: char| c.is_ascii_alphabetic());
            (&rest[..len], len)
        } else if first.is_ascii_digit() {
            (DIGITS, run_end(&|c: char| c.is_ascii_digit()))
        } else if first.is_alphanumeric() {
            let len = first.len_utf8();
            (&rest[..len], len)
        } else {
            let len = run_end(&|c: char| c == first);
            (&rest[..first.len_utf8()], len)
        };
        units.push(unit);
        rest = &rest[len..];
    }
    units.push(END);
    units
}

/// Calls `each` with the bucket of every n-gram of `units` (as [`units`] returns them), in
/// order: all unigrams, then bigrams, then trigrams. `buckets` must be a power of two.
pub fn for_each_bucket(units: &[&str], buckets: u32, mut each: impl FnMut(u32)) {
    let mask = u64::from(buckets - 1);
    for n in 1..=MAX_N {
        for window in units.windows(n) {
            each((ngram_hash(window) & mask) as u32);
        }
    }
}

/// The n-grams of `units` as people read them, in the order [`for_each_bucket`] visits them.
pub fn ngram_texts(units: &[&str]) -> Vec<String> {
    let mut texts = Vec::new();
    for n in 1..=MAX_N {
        for window in units.windows(n) {
            let text: String = window
                .iter()
                .map(|unit| match *unit {
                    START => "^",
                    END => "$",
                    other => other,
                })
                .collect();
            texts.push(text);
        }
    }
    texts
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn ngram_hash(window: &[&str]) -> u64 {
    let mut hash = FNV_OFFSET;
    let mut eat = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    };
    eat(window.len() as u8);
    for unit in window {
        for &byte in unit.as_bytes() {
            eat(byte);
        }
        eat(0x1f);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_keep_words_and_collapse_digits_and_repeated_marks() {
        assert_eq!(
            units("tk退款123单号??!"),
            vec![START, "tk", "退", "款", DIGITS, "单", "号", "?", "!", END]
        );
        assert_eq!(units(""), vec![START, END]);
    }

    #[test]
    fn every_ngram_gets_a_bucket_in_range_and_texts_line_up() {
        let units = units("在吗");
        let mut buckets = Vec::new();
        for_each_bucket(&units, 1 << 10, |b| buckets.push(b));
        let texts = ngram_texts(&units);
        // 4 units: 4 unigrams, 3 bigrams, 2 trigrams.
        assert_eq!(buckets.len(), 9);
        assert_eq!(texts.len(), 9);
        assert!(buckets.iter().all(|&b| b < 1 << 10));
        assert_eq!(texts[4], "^在");
        assert_eq!(texts[8], "在吗$");
    }

    #[test]
    fn the_hash_is_fixed_because_model_files_store_buckets() {
        // Changing the hash silently breaks every trained model; this pins it.
        assert_eq!(ngram_hash(&["退", "款"]), 0xea6b_1934_3d58_1190);
    }

    #[test]
    fn hostile_length_is_capped() {
        let long = "退".repeat(10_000);
        assert_eq!(units(&long).len(), MAX_UNITS + 2);
    }
}
