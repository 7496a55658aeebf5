//! Text normalisation shared by rule keywords and buyer messages.
//!
//! Both sides go through the same steps, so one keyword serves 简体 and 繁體, full-width and
//! half-width, upper and lower case, and text with stray spaces or zero-width characters:
//! NFKC → lowercase → traditional to simplified → drop whitespace and invisible characters.
//!
//! Buyer messages are short and mostly Chinese, ASCII and full-width punctuation, so each of
//! those characters is normalised by one lookup in a table built once from the full pipeline;
//! text with anything the table cannot answer alone (combining marks, Hangul, rare scripts) takes
//! the full pipeline.

use std::sync::OnceLock;

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::canonical_combining_class;

/// Characters that render as nothing and are used (by accident or to dodge filters) inside words.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

fn dropped(c: char) -> bool {
    c.is_whitespace() || c.is_control() || is_invisible(c)
}

/// Traditional → simplified for one character (fast2s looks at neighbours only for a few
/// characters; one rule for keywords and text matters more than those).
fn simplify(c: char) -> char {
    if c.is_ascii() {
        return c;
    }
    let mut buffer = [0u8; 4];
    fast2s::convert(c.encode_utf8(&mut buffer))
        .chars()
        .next()
        .unwrap_or(c)
}

/// Normalises `text` for matching.
///
/// # Examples
///
/// ```
/// use xiaoer::rules::normalise;
/// assert_eq!(normalise("我要 退貨！ＯＫ"), "我要退货!ok");
/// ```
pub fn normalise(text: &str) -> String {
    let table = table();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match table.lookup(c) {
            Entry::Keep(mapped) => out.push(mapped),
            Entry::Drop => {}
            Entry::Complex => return normalise_fully(text),
        }
    }
    out
}

/// The whole pipeline, for any text.
fn normalise_fully(text: &str) -> String {
    let folded: String = text
        .nfkc()
        .filter(|&c| !dropped(c))
        .flat_map(char::to_lowercase)
        .collect();
    // Dropping a space can bring a base and a combining mark together (`y¯` is `y` + space +
    // macron after NFKC), and lowercasing can decompose; compose once more so the result is
    // stable under a second pass.
    folded
        .nfkc()
        .filter(|&c| !dropped(c))
        .map(simplify)
        .collect()
}

#[derive(Clone, Copy)]
enum Entry {
    Keep(char),
    Drop,
    /// Needs the whole pipeline (it may compose with neighbours or expand to several characters).
    Complex,
}

/// Per-character answers for the Basic Multilingual Plane blocks buyer text is made of.
struct Table {
    bmp: Box<[u32]>,
    /// Emoji and pictographs (most are stable, but some enclosed ideographs expand under NFKC).
    pictographs: Box<[u32]>,
}

const PICTOGRAPHS: std::ops::RangeInclusive<u32> = 0x1F000..=0x1FAFF;

const COMPLEX: u32 = u32::MAX;
const DROP: u32 = u32::MAX - 1;

/// Blocks whose characters never combine with a following character under NFKC, so each can be
/// normalised on its own.
const SIMPLE_BLOCKS: &[(u32, u32)] = &[
    (0x0000, 0x007F), // ASCII
    (0x00A0, 0x00FF), // Latin-1 punctuation and letters
    (0x2000, 0x206F), // general punctuation
    (0x2100, 0x218F), // letterlike symbols, number forms
    (0x2190, 0x2BFF), // arrows, symbols, shapes, dingbats
    (0x3000, 0x303F), // CJK punctuation
    (0x3200, 0x33FF), // enclosed CJK, compatibility
    (0x3400, 0x4DBF), // CJK extension A
    (0x4E00, 0x9FFF), // CJK unified ideographs
    (0xF900, 0xFAFF), // CJK compatibility ideographs
    (0xFE30, 0xFE4F), // CJK compatibility forms
    (0xFF00, 0xFFEF), // half-width and full-width forms
];

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut bmp = vec![COMPLEX; 0x10000].into_boxed_slice();
        for &(start, end) in SIMPLE_BLOCKS {
            for code in start..=end {
                let Some(c) = char::from_u32(code) else {
                    continue;
                };
                bmp[code as usize] = simple_entry(c);
            }
        }
        let pictographs = PICTOGRAPHS
            .map(|code| char::from_u32(code).map_or(COMPLEX, simple_entry))
            .collect();
        Table { bmp, pictographs }
    })
}

fn simple_entry(c: char) -> u32 {
    if canonical_combining_class(c) != 0 {
        return COMPLEX;
    }
    let result = normalise_fully(c.encode_utf8(&mut [0u8; 4]));
    let mut chars = result.chars();
    match (chars.next(), chars.next()) {
        (None, _) => DROP,
        (Some(single), None) if canonical_combining_class(single) == 0 => single as u32,
        _ => COMPLEX,
    }
}

impl Table {
    fn lookup(&self, c: char) -> Entry {
        let code = c as u32;
        let entry = match self.bmp.get(code as usize) {
            Some(&entry) => entry,
            None if PICTOGRAPHS.contains(&code) => {
                self.pictographs[(code - PICTOGRAPHS.start()) as usize]
            }
            None => COMPLEX,
        };
        match entry {
            COMPLEX => Entry::Complex,
            DROP => Entry::Drop,
            mapped => char::from_u32(mapped).map_or(Entry::Complex, Entry::Keep),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_agrees_with_the_full_pipeline_on_common_text() {
        for text in [
            "你好，請問這件衣服什麼時候發貨？ＯＫ嗎",
            "Ｈｅｌｌｏ　World！１２３",
            "【包郵】《說明》「退貨」…",
            "😀👍🙏质量很好",
            "ｱｲｳ ｶﾞ",
            "①②③ ㈱ ㎏",
            "🉀🈚🆗🇨🇳",
        ] {
            assert_eq!(normalise(text), normalise_fully(text), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_never_disagrees_with_the_full_pipeline(text in "[\\PC\\s\u{3000}-\u{303f}\u{ff00}-\u{ffef}\u{4e00}-\u{4fff}]{0,24}") {
            proptest::prop_assert_eq!(normalise(&text), normalise_fully(&text));
        }
    }

    #[test]
    fn combining_marks_take_the_full_pipeline() {
        assert_eq!(normalise("y¯"), "ȳ");
        assert_eq!(normalise("e\u{301}"), "é");
        assert_eq!(normalise("ᄀ\u{1161}"), "가");
    }
}
