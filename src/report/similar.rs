//! Grouping buyer messages that say nearly the same thing, so the unanswered ones show up as a
//! few candidate rules instead of a long list.
//!
//! Each message is normalised the way rules see it ([`crate::rules::normalise`]: width, case,
//! traditional → simplified, no spaces), cut into character bigrams, and compared by the Jaccard
//! similarity of the bigram sets (shared bigrams / all bigrams). Grouping is greedy and in
//! order: a message joins the first group whose first message is at least [`THRESHOLD`] similar,
//! else it starts a group. Chinese questions are short, and bigrams catch the shared words
//! ("发票", "开票") without a word segmenter; a clustering crate would buy little here.

use std::collections::HashSet;

use crate::rules::normalise;

/// How similar two messages must be to share a group.
pub const THRESHOLD: f64 = 0.5;

/// The character bigrams of a normalised message; a one-character message is its own "bigram".
fn bigrams(normalised: &str) -> HashSet<(char, char)> {
    let chars: Vec<char> = normalised.chars().collect();
    match chars.as_slice() {
        [] => HashSet::new(),
        [only] => HashSet::from([(*only, '\0')]),
        _ => chars.windows(2).map(|pair| (pair[0], pair[1])).collect(),
    }
}

/// Shared bigrams over all bigrams; two empty sets are the same message.
fn jaccard(a: &HashSet<(char, char)>, b: &HashSet<(char, char)>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

/// How similar two messages are, from 0 (nothing in common) to 1 (the same after normalising).
pub fn similarity(a: &str, b: &str) -> f64 {
    jaccard(&bigrams(&normalise(a)), &bigrams(&normalise(b)))
}

/// Groups `texts` (indices into it), largest group first; groups of the same size keep the
/// order of their first message.
pub fn group(texts: &[&str], threshold: f64) -> Vec<Vec<usize>> {
    let mut seeds: Vec<HashSet<(char, char)>> = Vec::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (index, text) in texts.iter().enumerate() {
        let grams = bigrams(&normalise(text));
        match seeds
            .iter()
            .position(|seed| jaccard(seed, &grams) >= threshold)
        {
            Some(found) => groups[found].push(index),
            None => {
                seeds.push(grams);
                groups.push(vec![index]);
            }
        }
    }
    // A stable sort keeps first-seen order among equals.
    groups.sort_by_key(|members| std::cmp::Reverse(members.len()));
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn similarity_of_pairs() {
        let cases: &[(&str, &str, f64)] = &[
            ("能开发票吗", "能開發票嗎", 1.0),
            ("ＯＫ", "ok", 1.0),
            ("", "", 1.0),
            ("好", "好", 1.0),
            ("好", "行", 0.0),
            // 能开 开发 发票 票吗 vs 可以 以开 开发 发票 票吗: 3 shared of 6.
            ("能开发票吗", "可以开发票吗", 0.5),
            ("你们几点发货", "发票怎么开", 0.0),
        ];
        for (a, b, expected) in cases {
            let found = similarity(a, b);
            assert!((found - expected).abs() < 1e-9, "{a} ~ {b}: {found}");
        }
    }

    #[test]
    fn groups_are_greedy_and_largest_first() {
        let texts = [
            "有没有优惠券",   // 0: seed of group A
            "能开发票吗",     // 1: seed of group B
            "可以开发票吗",   // 2: 0.5 with 1 → B
            "有没有优惠券啊", // 3: 5 of 6 bigrams shared with 0 → A
            "能開發票嗎？",   // 4: B (traditional, punctuation adds one bigram: 4/5)
            "包邮到新疆吗",   // 5: alone
        ];
        assert_eq!(
            group(&texts, THRESHOLD),
            vec![vec![1, 2, 4], vec![0, 3], vec![5]]
        );
        assert!(group(&[], THRESHOLD).is_empty());
    }
}
