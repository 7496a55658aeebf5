//! Reading gateway JSON the way real gateways write it.
//!
//! Two habits of peers would otherwise cost a buyer's message:
//!
//! - JavaScript and Python gateways cut strings by UTF-16 code unit, so an emoji cut in half
//!   arrives as a lone surrogate escape (`"我要退款\ud83d"`), which strict JSON parsers refuse
//!   for the whole frame. [`parse_lenient`] replaces each lone surrogate with U+FFFD and parses
//!   again.
//! - Ids sent as JSON integers beyond 64 bits become floats (`1.844674407370955e+23`) in a
//!   [`Value`], and a reply would go to a mangled id. [`exact_ids`] puts such ids back as their
//!   exact decimal text, read from the frame itself, and refuses ids that are not integers.
//!
//! Both only do extra work on frames that need it; a well-formed frame is parsed once.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;
use serde_json::value::RawValue;

use super::codec::DecodeError;

/// Parses `frame`; on failure, retries once with lone surrogate escapes replaced by `\ufffd`.
///
/// Returns the value and the text it was parsed from (the repaired text when it was repaired),
/// which [`exact_ids`] reads raw numbers from.
///
/// # Errors
///
/// The parser's error for the original frame when repairing does not help.
pub(crate) fn parse_lenient(frame: &str) -> Result<(Value, Cow<'_, str>), serde_json::Error> {
    match serde_json::from_str(frame) {
        Ok(value) => Ok((value, Cow::Borrowed(frame))),
        Err(error) => {
            let Some(repaired) = replace_lone_surrogates(frame) else {
                return Err(error);
            };
            match serde_json::from_str(&repaired) {
                Ok(value) => Ok((value, Cow::Owned(repaired))),
                Err(_) => Err(error),
            }
        }
    }
}

/// The frame with every `\uXXXX` escape of an unpaired surrogate replaced by `\ufffd`, or
/// `None` when there is none.
fn replace_lone_surrogates(frame: &str) -> Option<String> {
    let bytes = frame.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        let Some(unit) = unicode_escape(bytes, i) else {
            // Any other escape, `\\` included: skip the escaped character so that the `u` of
            // `\\u` is not taken for an escape.
            i += 2;
            continue;
        };
        let lone = match unit {
            0xD800..=0xDBFF => match unicode_escape(bytes, i + 6) {
                Some(0xDC00..=0xDFFF) => {
                    i += 12;
                    continue;
                }
                _ => true,
            },
            0xDC00..=0xDFFF => true,
            _ => false,
        };
        if lone {
            // `i` is at an ASCII backslash and `i + 6` just past ASCII hex digits: both are
            // character boundaries.
            out.push_str(&frame[copied..i]);
            out.push_str("\\ufffd");
            copied = i + 6;
        }
        i += 6;
    }
    if copied == 0 {
        return None;
    }
    out.push_str(&frame[copied..]);
    Some(out)
}

/// The code unit of a `\uXXXX` escape starting at `at`.
fn unicode_escape(bytes: &[u8], at: usize) -> Option<u32> {
    if bytes.get(at) != Some(&b'\\') || bytes.get(at + 1) != Some(&b'u') {
        return None;
    }
    let hex = bytes.get(at + 2..at + 6)?;
    let hex = std::str::from_utf8(hex).ok()?;
    u32::from_str_radix(hex, 16).ok()
}

/// One step into a JSON document.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// Makes every id in `value` exact: a number under a key named `id` or ending in `_id` that did
/// not fit 64 bits is replaced by its decimal text as written in `text` (the JSON `value` was
/// parsed from).
///
/// # Errors
///
/// A [`DecodeError`] naming the field when such a number is not an integer (`1.5`, `1e3`):
/// an id with a fraction is not an id.
pub(crate) fn exact_ids(value: &mut Value, text: &str) -> Result<(), DecodeError> {
    let mut path = Vec::new();
    walk(value, text, &mut path)
}

fn walk<'v>(value: &'v mut Value, text: &str, path: &mut Vec<Step<'v>>) -> Result<(), DecodeError> {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if let Value::Number(n) = child {
                    if n.is_f64() && is_id_key(key) {
                        path.push(Step::Key(key));
                        let exact = exact_integer(text, path);
                        path.pop();
                        *child = Value::String(exact?);
                    }
                    continue;
                }
                path.push(Step::Key(key));
                walk(child, text, path)?;
                path.pop();
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                if matches!(child, Value::Object(_) | Value::Array(_)) {
                    path.push(Step::Index(index));
                    walk(child, text, path)?;
                    path.pop();
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn is_id_key(key: &str) -> bool {
    key == "id" || key.ends_with("_id")
}

/// The integer at `path` in `text`, as written.
fn exact_integer(text: &str, path: &[Step<'_>]) -> Result<String, DecodeError> {
    let name = path
        .iter()
        .map(|step| match step {
            Step::Key(key) => (*key).to_owned(),
            Step::Index(index) => index.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".");
    let raw = raw_at(text, path).ok_or_else(|| {
        DecodeError::new(format!("{name} is a number that cannot be read exactly"))
    })?;
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DecodeError::new(format!("{name} is not an integer: {raw}")));
    }
    Ok(raw.to_owned())
}

/// The raw JSON text at `path`, found by parsing only the containers on the way.
fn raw_at<'t>(text: &'t str, path: &[Step<'_>]) -> Option<&'t str> {
    let mut current: &'t str = text;
    for step in path {
        let next: &'t RawValue = match step {
            Step::Key(key) => {
                let map: HashMap<String, &'t RawValue> = serde_json::from_str(current).ok()?;
                map.get(*key).copied()?
            }
            Step::Index(index) => {
                let items: Vec<&'t RawValue> = serde_json::from_str(current).ok()?;
                items.get(*index).copied()?
            }
        };
        current = next.get();
    }
    Some(current.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_are_replaced_and_pairs_kept() {
        let cases = [
            (r#"{"t":"退款\ud83d"}"#, Some("退款\u{FFFD}")),
            (r#"{"t":"\ude00x"}"#, Some("\u{FFFD}x")),
            (r#"{"t":"\ud83d\ud83d\ude00"}"#, Some("\u{FFFD}😀")),
            (r#"{"t":"\ud83d\u0041"}"#, Some("\u{FFFD}A")),
            (r#"{"t":"a\ud83d"}"#, Some("a\u{FFFD}")),
        ];
        for (frame, want) in cases {
            let (value, _) = parse_lenient(frame).expect(frame);
            assert_eq!(value["t"].as_str(), want, "{frame}");
        }
        // Pairs and escaped backslashes are left alone, so these parse on the first try.
        for frame in [r#"{"t":"\ud83d\ude00"}"#, r#"{"t":"\\ud83d"}"#] {
            assert!(matches!(parse_lenient(frame), Ok((_, Cow::Borrowed(_)))));
        }
        assert_eq!(replace_lone_surrogates(r#""\\ud83d""#), None);
        // Broken for another reason: the original error is kept.
        let err = parse_lenient(r#"{"t":"\ud83d" "#).unwrap_err();
        assert!(err.to_string().contains("hex escape"), "{err}");
    }

    #[test]
    fn huge_integer_ids_keep_their_digits_and_fractions_are_refused() {
        let text = r#"{"user_id":184467440737095516160,"time":1.5,"self":{"user_id":-99999999999999999999},
                       "message":[{"type":"shop.item","data":{"item_id":123456789012345678901234}}],
                       "small_id":42}"#;
        let (mut value, text) = parse_lenient(text).unwrap();
        exact_ids(&mut value, &text).unwrap();
        assert_eq!(value["user_id"], "184467440737095516160");
        assert_eq!(value["self"]["user_id"], "-99999999999999999999");
        assert_eq!(
            value["message"][0]["data"]["item_id"],
            "123456789012345678901234"
        );
        assert_eq!(value["time"], 1.5);
        assert_eq!(value["small_id"], 42);

        for (frame, want) in [
            (r#"{"user_id":1.5}"#, "user_id is not an integer: 1.5"),
            (
                r#"{"self":{"user_id":1e30}}"#,
                "self.user_id is not an integer: 1e30",
            ),
            (
                r#"{"message":[{"data":{"file_id":2.0}}]}"#,
                "message.0.data.file_id is not an integer: 2.0",
            ),
        ] {
            let (mut value, text) = parse_lenient(frame).unwrap();
            let err = exact_ids(&mut value, &text).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }
}
