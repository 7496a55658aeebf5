//! Table-driven tests of normalisation and of the decision, on small rule sets written inline.

use std::path::Path;

use proptest::prelude::*;
use xiaoer::rules::{Layer, OutcomeKind, RuleSet, load, normalise};

const REPLIES: &str = r#"
[[reply]]
key = "greeting"
text = "您好"
[[reply]]
key = "fallback"
text = "没明白"
[[reply]]
key = "still_queued"
text = "排队中"
[[reply]]
key = "human_handoff"
text = "转人工"
[[reply]]
key = "answer"
text = "答复"
[[reply]]
key = "ack"
text = "已转接"
"#;

fn write_set(dir: &Path, rules: &str) -> Layer {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::create_dir_all(dir.join("replies")).unwrap();
    std::fs::write(dir.join("rules/rules.toml"), rules).unwrap();
    std::fs::write(dir.join("replies/replies.toml"), REPLIES).unwrap();
    Layer::overlay(dir)
}

fn rule_set(rules: &str) -> RuleSet {
    let dir = tempfile::tempdir().unwrap();
    match load(&[write_set(dir.path(), rules)]) {
        Ok(loaded) => loaded.rules,
        Err(error) => panic!("{error}"),
    }
}

/// The id of the winning rule, or "fallback".
fn winner(rules: &RuleSet, text: &str) -> String {
    let decision = rules.decide(text);
    rules
        .outcome(&decision)
        .rule
        .map(|r| r.id.clone())
        .unwrap_or_else(|| "fallback".into())
}

#[test]
fn normalisation_folds_width_case_script_and_invisible_characters() {
    let cases = [
        ("退貨", "退货"),
        ("ＡＢＣ１２３", "abc123"),
        ("退 货", "退货"),
        ("退\u{200b}货", "退货"),
        ("退\u{feff}\u{200d}货", "退货"),
        ("\t退\r\n货 ", "退货"),
        ("Hello World", "helloworld"),
        ("質量問題", "质量问题"),
        ("我要退款😡", "我要退款😡"),
        ("", ""),
        ("   ", ""),
        ("ｉＰｈｏｎｅ　手機殼", "iphone手机壳"),
    ];
    for (input, expected) in cases {
        assert_eq!(normalise(input), expected, "normalise({input:?})");
    }
}

const SHOP: &str = r#"
[[rule]]
id = "greeting.hello"
topic = "greeting"
reply = "greeting"
any = ["你好", "在吗"]

[[rule]]
id = "product.quality"
topic = "product"
reply = "answer"
any = ["质量怎么样", "质量好吗"]

[[rule]]
id = "refund.request"
topic = "refund"
escalate = "refund"
reply = "ack"
priority = 80
any = ["退款", "退货"]
none = ["不想退", "不退了", "不用退"]

[[rule]]
id = "after_sale.damaged"
topic = "after_sale"
escalate = "after_sale"
reply = "ack"
priority = 70
any = ["破损", "坏了"]
none = ["没有破损", "没破损", "没坏"]

[[rule]]
id = "after_sale.quality"
topic = "after_sale"
escalate = "after_sale"
reply = "ack"
priority = 70
all = [["质量", "做工"], ["差", "不好"]]

[[rule]]
id = "shipping.when"
topic = "shipping"
reply = "answer"
any = ["发货"]

[[rule]]
id = "shipping.when_exact"
topic = "shipping"
reply = "answer"
any = ["什么时候发货"]

[[rule]]
id = "thanks.ok"
topic = "thanks"
ignore = true
priority = 10
any = ["好的", "谢谢"]
"#;

#[test]
fn decisions_on_a_small_shop_rule_set() {
    let rules = rule_set(SHOP);
    let cases = [
        // plain answers and the fallback
        ("你好", "greeting.hello"),
        ("这个质量怎么样", "product.quality"),
        ("随便问问", "fallback"),
        ("", "fallback"),
        // exclusions keep negations from escalating
        ("我要退款", "refund.request"),
        ("不想退款了", "fallback"),
        ("收到了，没有破损，谢谢", "thanks.ok"),
        ("东西坏了", "after_sale.damaged"),
        // an all-of rule needs a term from every group
        ("质量太差", "after_sale.quality"),
        ("质量", "fallback"),
        ("做工不好", "after_sale.quality"),
        // priority: refund (80) beats after-sale (70) beats the FAQ
        ("质量不好，我要退货", "refund.request"),
        ("你好，东西破损了", "after_sale.damaged"),
        // specificity: the longer keyword wins at equal priority
        ("什么时候发货", "shipping.when_exact"),
        ("发货了吗", "shipping.when"),
        // traditional Chinese, full width, spaces, emoji
        ("我要退貨", "refund.request"),
        ("東西壞了😭", "after_sale.damaged"),
        ("ｔｕｉ 退 款", "refund.request"),
        ("什麼時候發貨？", "shipping.when_exact"),
        ("🙏🙏好的", "thanks.ok"),
    ];
    for (text, expected) in cases {
        assert_eq!(winner(&rules, text), expected, "decide({text:?})");
    }
}

#[test]
fn escalation_outranks_an_answer_at_equal_priority() {
    let rules = rule_set(
        r#"
[[rule]]
id = "a.faq"
topic = "product"
reply = "answer"
any = ["质量问题"]

[[rule]]
id = "b.escalate"
topic = "after_sale"
escalate = "after_sale"
reply = "ack"
any = ["问题"]
"#,
    );
    // The FAQ is more specific, but escalation wins at the same priority.
    assert_eq!(winner(&rules, "有质量问题"), "b.escalate");
}

#[test]
fn ties_are_broken_by_the_lower_id_whatever_the_file_order() {
    let forward = r#"
[[rule]]
id = "x.second"
topic = "product"
reply = "answer"
any = ["尺码"]

[[rule]]
id = "x.first"
topic = "product"
reply = "answer"
any = ["尺码"]
"#;
    let rules = rule_set(forward);
    assert_eq!(winner(&rules, "尺码多大"), "x.first");
    let decision = rules.decide("尺码多大");
    assert_eq!(decision.matches.len(), 2, "both rules match");
    assert_eq!(rules.rule(decision.matches[1].rule).id, "x.second");
}

#[test]
fn decision_reports_matched_terms_and_other_matches() {
    let rules = rule_set(SHOP);
    let decision = rules.decide("你好，質量太差了，我要退貨");
    let outcome = rules.outcome(&decision);
    assert_eq!(outcome.kind, OutcomeKind::Escalate);
    assert_eq!(outcome.queue.map(|q| q.as_str()), Some("refund"));
    let ids: Vec<&str> = decision
        .matches
        .iter()
        .map(|m| rules.rule(m.rule).id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["refund.request", "after_sale.quality", "greeting.hello"]
    );
    let terms: Vec<&str> = decision.matches[1]
        .terms
        .iter()
        .map(|&t| rules.term(t))
        .collect();
    assert_eq!(terms, ["质量", "差"]);
    assert_eq!(decision.normalised, "你好,质量太差了,我要退货");
}

#[test]
fn exclusions_are_reported_for_explain() {
    let rules = rule_set(SHOP);
    let decision = rules.decide("不想退款了");
    assert_eq!(decision.excluded.len(), 1);
    assert_eq!(rules.rule(decision.excluded[0].rule).id, "refund.request");
    assert_eq!(rules.term(decision.excluded[0].term), "不想退");
}

#[test]
fn regex_rules_run_behind_their_keyword_or_literal_prefilter() {
    let rules = rule_set(
        r#"
[[rule]]
id = "order.number"
topic = "order"
reply = "answer"
any = ["订单"]
regex = ['\d{6,}']

[[rule]]
id = "refund.progress"
topic = "refund"
escalate = "refund"
reply = "ack"
regex = ['退款.{0,4}(到账|进度)']

[[rule]]
id = "phone.any"
topic = "other"
reply = "answer"
priority = 1
regex = ['1[3-9]\d{9}']
"#,
    );
    assert_eq!(winner(&rules, "订单 12345678 到哪了"), "order.number");
    assert_eq!(winner(&rules, "订单号还没有"), "fallback");
    assert_eq!(winner(&rules, "12345678"), "fallback");
    assert_eq!(winner(&rules, "退款什么时候到账"), "refund.progress");
    assert_eq!(winner(&rules, "退款了吗"), "fallback");
    assert_eq!(winner(&rules, "电话13812345678"), "phone.any");
    let decision = rules.decide("退款啥时候到账");
    assert_eq!(
        decision.matches[0].regex_match.as_deref(),
        Some("退款啥时候到账")
    );
}

#[test]
fn very_long_input_is_decided_without_trouble() {
    let rules = rule_set(SHOP);
    let long = format!("{}我要退款{}", "啊".repeat(100_000), "😀".repeat(50_000));
    assert_eq!(winner(&rules, &long), "refund.request");
    let repeated = "退款".repeat(100_000);
    assert_eq!(winner(&rules, &repeated), "refund.request");
}

#[test]
fn overlay_replaces_rules_and_can_disable_them() {
    let base = tempfile::tempdir().unwrap();
    let overlay = tempfile::tempdir().unwrap();
    let base_layer = write_set(base.path(), SHOP);
    std::fs::create_dir_all(overlay.path().join("rules")).unwrap();
    std::fs::write(
        overlay.path().join("rules/shop.toml"),
        r#"
disable = ["greeting.hello"]

[[rule]]
id = "shipping.when"
topic = "shipping"
reply = "answer"
any = ["发货", "发出"]
"#,
    )
    .unwrap();
    let loaded = load(&[base_layer, Layer::overlay(overlay.path())]).unwrap();
    assert_eq!(winner(&loaded.rules, "你好"), "fallback");
    assert_eq!(winner(&loaded.rules, "几时发出"), "shipping.when");
    assert!(loaded.rules.rule_by_id("refund.request").is_some());
}

proptest! {
    #[test]
    fn deciding_never_panics_on_arbitrary_text(text in any::<String>()) {
        let rules = rule_set_cached();
        let decision = rules.decide(&text);
        prop_assert!(decision.matches.windows(2).all(|w| w[0].rule != w[1].rule));
        let _ = rules.outcome(&decision);
    }

    #[test]
    fn normalising_twice_changes_nothing(text in "[\\PC\\s]{0,40}") {
        let once = normalise(&text);
        prop_assert_eq!(normalise(&once), once.clone());
    }
}

fn rule_set_cached() -> &'static RuleSet {
    static RULES: std::sync::OnceLock<RuleSet> = std::sync::OnceLock::new();
    RULES.get_or_init(|| rule_set(SHOP))
}
