//! Reply texts: keys, rotated variants and `{variables}`.
//!
//! Rules name reply keys; the texts live in `replies/*.toml` so a shop can reword them without
//! touching routing. Templates are parsed at load time, so a missing key or an unknown variable is
//! a load error, never a broken message to a buyer.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::diagnostics::{Diagnostic, FileId};
use crate::model::Queue;

/// Keys the daemon itself uses, which every reply set must define.
pub const REQUIRED_KEYS: &[&str] = &["greeting", "fallback", "still_queued", "human_handoff"];

/// Variables filled in at send time; every other variable must be a shop fact from `[vars]`.
pub const BUILTIN_VARS: &[&str] = &["shop", "buyer", "queue", "queue_eta"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReplyFile {
    #[serde(default)]
    vars: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    reply: Vec<Spanned<RawReply>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReply {
    key: Spanned<String>,
    text: Spanned<toml::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// One variant of a reply, parsed into text and variables.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    pieces: Vec<Piece>,
}

/// A reply key with its variants.
#[derive(Debug, Clone)]
pub struct Reply {
    pub key: String,
    variants: Vec<Template>,
    pub file: FileId,
    pub span: Range<usize>,
}

impl Reply {
    pub fn variant_count(&self) -> usize {
        self.variants.len()
    }
}

/// Values for the built-in variables at send time. Unset fields fall back to the shop facts in
/// `[vars]`, then to neutral defaults.
#[derive(Debug, Clone, Default)]
pub struct RenderContext<'a> {
    pub shop: Option<&'a str>,
    pub buyer: Option<&'a str>,
    pub queue: Option<Queue>,
    pub queue_eta: Option<&'a str>,
}

/// Every reply of a rule set, with the shop facts.
#[derive(Debug, Clone, Default)]
pub struct Replies {
    replies: HashMap<String, Reply>,
    vars: HashMap<String, String>,
}

/// Collects replies from several files (shared set first, then overlays) before validation.
#[derive(Debug, Default)]
pub struct RepliesBuilder {
    replies: BTreeMap<String, Reply>,
    vars: BTreeMap<String, (String, FileId, Range<usize>)>,
    /// Variables used by templates, checked once all `[vars]` are known.
    uses: Vec<(String, String, FileId, Range<usize>)>,
}

impl RepliesBuilder {
    /// Parses one reply file. A reply with a key seen before replaces it (overlays rely on this
    /// across layers; within one layer the caller reports duplicates via `overlay` = false).
    pub fn add_file(
        &mut self,
        file: FileId,
        text: &str,
        overlay: bool,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let raw: RawReplyFile = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(error) => {
                diagnostics.push(toml_error(file, &error));
                return;
            }
        };
        for (name, value) in raw.vars {
            let span = name.span();
            self.vars
                .insert(name.into_inner(), (value.into_inner(), file, span.clone()));
        }
        for raw_reply in raw.reply {
            let reply_span = raw_reply.span();
            let raw_reply = raw_reply.into_inner();
            let key = raw_reply.key.get_ref().trim().to_string();
            let key_span = raw_reply.key.span();
            if key.is_empty() {
                diagnostics.push(Diagnostic::error(file, key_span, "reply key is empty"));
                continue;
            }
            if !overlay
                && let Some(previous) = self.replies.get(&key)
                && (previous.file != file || previous.span != reply_span)
            {
                diagnostics.push(
                    Diagnostic::error(
                        file,
                        key_span.clone(),
                        format!("duplicate reply key `{key}`"),
                    )
                    .about(&key)
                    .note("each key is defined once; a shop overlay may redefine it"),
                );
                continue;
            }
            let text_span = raw_reply.text.span();
            let texts: Vec<String> = match raw_reply.text.into_inner() {
                toml::Value::String(s) => vec![s],
                toml::Value::Array(items) => {
                    let mut texts = Vec::new();
                    for item in items {
                        match item {
                            toml::Value::String(s) => texts.push(s),
                            _ => {
                                diagnostics.push(
                                    Diagnostic::error(
                                        file,
                                        text_span.clone(),
                                        "reply text variants must be strings",
                                    )
                                    .about(&key),
                                );
                            }
                        }
                    }
                    texts
                }
                _ => {
                    diagnostics.push(
                        Diagnostic::error(
                            file,
                            text_span.clone(),
                            "reply text must be a string or a list of strings",
                        )
                        .about(&key),
                    );
                    continue;
                }
            };
            if texts.is_empty() {
                diagnostics.push(
                    Diagnostic::error(file, text_span.clone(), "reply has no text").about(&key),
                );
                continue;
            }
            let mut variants = Vec::new();
            for text in &texts {
                if text.trim().is_empty() {
                    diagnostics.push(
                        Diagnostic::error(file, text_span.clone(), "reply text is empty")
                            .about(&key),
                    );
                    continue;
                }
                match parse_template(text) {
                    Ok(template) => {
                        for piece in &template.pieces {
                            if let Piece::Var(name) = piece {
                                self.uses.push((
                                    key.clone(),
                                    name.clone(),
                                    file,
                                    text_span.clone(),
                                ));
                            }
                        }
                        variants.push(template);
                    }
                    Err(message) => diagnostics
                        .push(Diagnostic::error(file, text_span.clone(), message).about(&key)),
                }
            }
            if variants.is_empty() {
                continue;
            }
            self.replies.insert(
                key.clone(),
                Reply {
                    key,
                    variants,
                    file,
                    span: key_span,
                },
            );
        }
    }

    /// Checks variables and required keys. `anchor` is where to point a missing-key error.
    pub fn finish(
        self,
        anchor: Option<(FileId, Range<usize>)>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Replies {
        for (key, name, file, span) in &self.uses {
            if !BUILTIN_VARS.contains(&name.as_str()) && !self.vars.contains_key(name) {
                // Only report uses in replies that survived overlaying.
                if self.replies.get(key).is_some_and(|r| r.file == *file) {
                    diagnostics.push(
                        Diagnostic::error(
                            *file,
                            span.clone(),
                            format!("unknown variable `{{{name}}}`"),
                        )
                        .about(key)
                        .note(format!(
                            "known variables: {}, and the shop facts in [vars]{}",
                            BUILTIN_VARS.join(", "),
                            if self.vars.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    " ({})",
                                    self.vars.keys().cloned().collect::<Vec<_>>().join(", ")
                                )
                            }
                        )),
                    );
                }
            }
        }
        for required in REQUIRED_KEYS {
            if !self.replies.contains_key(*required) {
                let (file, span) = anchor.clone().unwrap_or((0, 0..0));
                diagnostics.push(
                    Diagnostic::error(file, span, format!("missing reply key `{required}`"))
                        .note("the daemon sends it itself; define it in one of the reply files"),
                );
            }
        }
        Replies {
            replies: self.replies.into_iter().collect(),
            vars: self
                .vars
                .into_iter()
                .map(|(name, (value, _, _))| (name, value))
                .collect(),
        }
    }
}

fn parse_template(text: &str) -> Result<Template, String> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(c) if c.is_ascii_alphanumeric() || c == '_' => name.push(c),
                        Some(c) => {
                            return Err(format!(
                                "invalid character `{c}` in a variable name (write `{{{{` for a literal brace)"
                            ));
                        }
                        None => {
                            return Err(
                                "unclosed `{` in reply text (write `{{` for a literal brace)"
                                    .into(),
                            );
                        }
                    }
                }
                if name.is_empty() {
                    return Err("empty variable `{}` in reply text".into());
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Var(name));
            }
            '}' => {
                return Err("unmatched `}` in reply text (write `}}` for a literal brace)".into());
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(Template { pieces })
}

pub(crate) fn toml_error(file: FileId, error: &toml::de::Error) -> Diagnostic {
    let span = error.span().unwrap_or(0..0);
    Diagnostic::error(file, span, error.message().trim().to_string())
}

impl Replies {
    pub fn get(&self, key: &str) -> Option<&Reply> {
        self.replies.get(key)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.replies.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.replies.keys().map(String::as_str)
    }

    /// A shop fact from `[vars]`.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Renders variant `rotation % variants` of `key`. `None` when the key does not exist (the
    /// loader guarantees every key a rule names does).
    pub fn render(
        &self,
        key: &str,
        rotation: usize,
        context: &RenderContext<'_>,
    ) -> Option<String> {
        let reply = self.replies.get(key)?;
        let template = reply.variants.get(rotation % reply.variants.len().max(1))?;
        let mut out = String::new();
        for piece in &template.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Var(name) => out.push_str(&self.value_of(name, context)),
            }
        }
        Some(out)
    }

    fn value_of(&self, name: &str, context: &RenderContext<'_>) -> String {
        let given = match name {
            "shop" => context.shop,
            "buyer" => context.buyer,
            "queue_eta" => context.queue_eta,
            "queue" => context.queue.map(Queue::display_zh),
            _ => None,
        };
        if let Some(value) = given {
            return value.to_string();
        }
        if let Some(value) = self.vars.get(name) {
            return value.clone();
        }
        match name {
            "shop" => "本店",
            "buyer" => "亲",
            "queue" => "人工客服",
            "queue_eta" => "几分钟",
            _ => "",
        }
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> (Replies, Vec<Diagnostic>) {
        let mut diagnostics = Vec::new();
        let mut builder = RepliesBuilder::default();
        builder.add_file(0, text, false, &mut diagnostics);
        let replies = builder.finish(None, &mut diagnostics);
        (replies, diagnostics)
    }

    const BASE: &str = r#"
[vars]
ship_days = "48小时"
[[reply]]
key = "greeting"
text = ["您好{buyer}，欢迎光临{shop}", "在的，{buyer}请讲"]
[[reply]]
key = "fallback"
text = "稍等，{{马上}}为您查询"
[[reply]]
key = "still_queued"
text = "还在排队，预计{queue_eta}"
[[reply]]
key = "human_handoff"
text = "已转{queue}，{ship_days}"
"#;

    #[test]
    fn renders_variants_in_rotation_with_variables() {
        let (replies, diagnostics) = build(BASE);
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        let context = RenderContext {
            shop: Some("小二茶铺"),
            buyer: Some("阿明"),
            ..Default::default()
        };
        assert_eq!(
            replies.render("greeting", 0, &context).as_deref(),
            Some("您好阿明，欢迎光临小二茶铺")
        );
        assert_eq!(
            replies.render("greeting", 1, &context).as_deref(),
            Some("在的，阿明请讲")
        );
        assert_eq!(
            replies.render("greeting", 2, &context).as_deref(),
            Some("您好阿明，欢迎光临小二茶铺")
        );
        assert_eq!(
            replies.render("fallback", 7, &context).as_deref(),
            Some("稍等，{马上}为您查询")
        );
        let handoff = RenderContext {
            queue: Some(Queue::Refund),
            ..Default::default()
        };
        assert_eq!(
            replies.render("human_handoff", 0, &handoff).as_deref(),
            Some("已转退款退货，48小时")
        );
        assert_eq!(
            replies.render("still_queued", 0, &handoff).as_deref(),
            Some("还在排队，预计几分钟")
        );
        assert_eq!(replies.render("nope", 0, &handoff), None);
    }

    #[test]
    fn unknown_variable_and_missing_keys_are_errors() {
        let (_, diagnostics) = build(
            r#"
[[reply]]
key = "greeting"
text = "您好{nickname}"
"#,
        );
        let messages: Vec<_> = diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert!(
            messages.contains(&"unknown variable `{nickname}`"),
            "{messages:?}"
        );
        assert!(
            messages.contains(&"missing reply key `fallback`"),
            "{messages:?}"
        );
        assert!(
            messages.contains(&"missing reply key `human_handoff`"),
            "{messages:?}"
        );
    }

    #[test]
    fn broken_braces_are_errors() {
        for (text, expected) in [
            ("a{b", "unclosed `{`"),
            ("a}b", "unmatched `}`"),
            ("a{}b", "empty variable"),
            ("a{b c}", "invalid character"),
        ] {
            let error = parse_template(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
