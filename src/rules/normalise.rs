//! Text normalisation shared by rule keywords and buyer messages.
//!
//! Both sides go through the same steps, so one keyword serves 简体 and 繁體, full-width and
//! half-width, upper and lower case, and text with stray spaces or zero-width characters:
//! NFKC → lowercase → traditional to simplified → drop whitespace and invisible characters.

use unicode_normalization::UnicodeNormalization;

/// Characters that render as nothing and are used (by accident or to dodge filters) inside words.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
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
    if text.is_ascii() {
        // NFKC and the Chinese conversion leave ASCII alone; skip them.
        return text
            .chars()
            .filter(|c| !c.is_ascii_whitespace() && !c.is_ascii_control())
            .map(|c| c.to_ascii_lowercase())
            .collect();
    }
    let mut folded = String::with_capacity(text.len());
    for c in text.nfkc() {
        if c.is_whitespace() || c.is_control() || is_invisible(c) {
            continue;
        }
        if c.is_uppercase() {
            folded.extend(c.to_lowercase());
        } else {
            folded.push(c);
        }
    }
    // `fast2s::replace` rewrites bytes in place and panics if a converted character has a longer
    // encoding; `convert` builds a new string and cannot fail.
    fast2s::convert(&folded)
}
