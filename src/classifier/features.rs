//! What the classifier sees of a message: the normalised text cut into units, and the hashed
//! n-grams of 1 to [`MAX_N`] units with start and end markers.
//!
//! A unit is one CJK character, one run of ASCII letters (so `tk`, `sf`, `ok` are single words),
//! one run of digits (all digit runs are the same unit: order numbers and prices carry no
//! meaning by their value), or one punctuation mark (runs of the same mark count once, so `？？？`
//! and `？` look alike). Each unit is hashed once (FNV-1a) and an n-gram's hash mixes its units'
//! hashes, so a message costs one pass over its bytes however many n-grams it has. Written here
//! because the model file stores bucket numbers: the hash must never change with a crate upgrade.

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
    for_each_unit(normalised, |unit| units.push(unit));
    units
}

/// The hash of every unit of normalised text, markers included, in [`units`] order.
pub fn unit_hashes(normalised: &str) -> Vec<u64> {
    let mut hashes = Vec::with_capacity(normalised.len() / 2 + 2);
    for_each_unit(normalised, |unit| hashes.push(unit_hash(unit)));
    hashes
}

/// Calls `each` with every unit of `normalised`, the markers first and last: one pass, no
/// allocation, since routing does this for every message the model is asked about.
fn for_each_unit<'a>(normalised: &'a str, mut each: impl FnMut(&'a str)) {
    fn run_end(rest: &str, keep: impl Fn(char) -> bool) -> usize {
        rest.char_indices()
            .find(|&(_, c)| !keep(c))
            .map_or(rest.len(), |(at, _)| at)
    }
    each(START);
    let mut rest = normalised;
    let mut count = 0;
    while let Some(first) = rest.chars().next() {
        if count >= MAX_UNITS {
            break;
        }
        let (unit, len) = if first.is_ascii_alphabetic() {
            let len = run_end(rest, |c| c.is_ascii_alphabetic());
            (&rest[..len], len)
        } else if first.is_ascii_digit() {
            (DIGITS, run_end(rest, |c| c.is_ascii_digit()))
        } else if first.is_alphanumeric() {
            let len = first.len_utf8();
            (&rest[..len], len)
        } else {
            let len = run_end(rest, |c| c == first);
            (&rest[..first.len_utf8()], len)
        };
        each(unit);
        count += 1;
        rest = &rest[len..];
    }
    each(END);
}

/// Calls `each` with the bucket of every n-gram of the units whose hashes are `hashes` (from
/// [`unit_hashes`]), in order: all unigrams, then bigrams, then trigrams. `buckets` must be a
/// power of two.
pub fn for_each_bucket(hashes: &[u64], buckets: u32, mut each: impl FnMut(u32)) {
    let mask = u64::from(buckets - 1);
    for n in 1..=MAX_N {
        for window in hashes.windows(n) {
            each((ngram_hash(window) & mask) as u32);
        }
    }
}

/// The n-grams of `units` as people read them, in the order [`for_each_bucket`] visits them.
#[cfg(test)]
fn ngram_texts(units: &[&str]) -> Vec<String> {
    let mut texts = Vec::new();
    for n in 1..=MAX_N {
        for window in units.windows(n) {
            texts.push(ngram_text(window));
        }
    }
    texts
}

/// One n-gram as people read it: `^` and `$` for the start and end of the message.
pub fn ngram_text(window: &[&str]) -> String {
    window
        .iter()
        .map(|unit| match *unit {
            START => "^",
            END => "$",
            other => other,
        })
        .collect()
}

/// Which n-gram (length, first unit) is the `index`th that [`for_each_bucket`] visits, for a
/// message of `units` units.
pub fn ngram_at(units: usize, index: usize) -> (usize, usize) {
    let mut rest = index;
    for n in 1..=MAX_N {
        let of_length = units.saturating_sub(n - 1);
        if rest < of_length {
            return (n, rest);
        }
        rest -= of_length;
    }
    (MAX_N, 0)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn unit_hash(unit: &str) -> u64 {
    unit.as_bytes().iter().fold(FNV_OFFSET, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// Mixes the unit hashes of one n-gram (SplitMix64's finaliser after each step, so the order of
/// units matters and nearby hashes spread over all buckets).
fn ngram_hash(window: &[u64]) -> u64 {
    let mut hash = window.len() as u64;
    for &unit in window {
        hash = mix(hash.rotate_left(23) ^ unit);
    }
    hash
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
        for_each_bucket(&unit_hashes("在吗"), 1 << 10, |b| buckets.push(b));
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
        assert_eq!(
            ngram_hash(&[unit_hash("退"), unit_hash("款")]),
            0x7748_68b8_8724_daca
        );
        assert_ne!(
            ngram_hash(&[unit_hash("退"), unit_hash("款")]),
            ngram_hash(&[unit_hash("款"), unit_hash("退")]),
            "order matters"
        );
    }

    #[test]
    fn ngram_positions_follow_the_visiting_order() {
        let units = units("在吗");
        let texts = ngram_texts(&units);
        for (index, text) in texts.iter().enumerate() {
            let (n, start) = ngram_at(units.len(), index);
            assert_eq!(&ngram_text(&units[start..start + n]), text, "{index}");
        }
    }

    #[test]
    fn hostile_length_is_capped() {
        let long = "退".repeat(10_000);
        assert_eq!(units(&long).len(), MAX_UNITS + 2);
    }
}
