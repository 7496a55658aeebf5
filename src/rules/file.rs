//! The rule file format as written by people: raw serde types with source spans.
//!
//! Nothing here is checked beyond TOML syntax and field names; [`super::compile`] validates the
//! values and reports every problem with the span kept here.

use serde::Deserialize;
use toml::Spanned;

/// One `rules/*.toml` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuleFile {
    #[serde(default)]
    pub rule: Vec<Spanned<RawRule>>,
    /// In a shop overlay: ids of shared rules this shop switches off.
    #[serde(default)]
    pub disable: Vec<Spanned<String>>,
}

/// One `[[rule]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub id: Spanned<String>,
    pub topic: Spanned<String>,
    pub reply: Option<Spanned<String>>,
    pub escalate: Option<Spanned<String>>,
    pub ignore: Option<Spanned<bool>>,
    pub priority: Option<Spanned<i64>>,
    /// An escalation on alarm words a worry before buying may also use: the model may overrule it.
    pub weak: Option<Spanned<bool>>,
    #[serde(default)]
    pub any: Vec<Spanned<String>>,
    /// `any` keywords this rule shares with rules of other topics on purpose: the lint about a
    /// keyword used by rules of different topics stays quiet for them.
    #[serde(default)]
    pub shared_keywords: Vec<Spanned<String>>,
    /// Each element is a term (that must appear) or a list of terms (one of which must appear).
    #[serde(default)]
    pub all: Vec<Spanned<toml::Value>>,
    #[serde(default)]
    pub none: Vec<Spanned<String>>,
    #[serde(default)]
    pub regex: Vec<Spanned<String>>,
    #[serde(default)]
    pub examples: Vec<Spanned<String>>,
    #[serde(default)]
    pub counter_examples: Vec<Spanned<String>>,
}
