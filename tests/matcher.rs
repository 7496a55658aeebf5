//! Table-driven tests of normalisation and of the decision, on small rule sets written inline.

use std::path::Path;

use proptest::prelude::*;
use xiaoer::routing::{OutcomeKind, route};
use xiaoer::rules::{Layer, RuleSet, load, normalise};

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
    route(rules, text).rule.unwrap_or_else(|| "fallback".into())
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
    let outcome = route(&rules, "你好，質量太差了，我要退貨");
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
        let routed = route(rules, &text);
        prop_assert_eq!(
            routed.rule.as_deref(),
            decision.winner().map(|m| rules.rule(m.rule).id.as_str())
        );
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

/// A rule drawn by the overlay property below, written out as TOML.
#[derive(Debug, Clone)]
struct DrawnRule {
    topic: &'static str,
    action: usize,
    priority: u16,
    any: Vec<String>,
    all: Vec<Vec<String>>,
    none: Vec<String>,
    regex: Option<&'static str>,
    /// Whether to give the rule its own keyword as an example.
    example: bool,
    counter_example: Option<String>,
}

impl DrawnRule {
    fn toml(&self, id: &str) -> String {
        let list = |terms: &[String]| {
            let quoted: Vec<String> = terms.iter().map(|t| format!("{t:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let mut out = format!("[[rule]]\nid = \"{id}\"\ntopic = \"{}\"\n", self.topic);
        out.push_str(match self.action {
            0 => "reply = \"answer\"\n",
            1 => "escalate = \"refund\"\nreply = \"ack\"\n",
            _ => "ignore = true\n",
        });
        out.push_str(&format!("priority = {}\n", self.priority));
        if !self.any.is_empty() {
            out.push_str(&format!("any = {}\n", list(&self.any)));
        }
        if !self.all.is_empty() {
            let groups: Vec<String> = self.all.iter().map(|g| list(g)).collect();
            out.push_str(&format!("all = [{}]\n", groups.join(", ")));
        }
        if !self.none.is_empty() {
            out.push_str(&format!("none = {}\n", list(&self.none)));
        }
        if let Some(regex) = self.regex {
            out.push_str(&format!("regex = ['{regex}']\n"));
        }
        let own_text = self
            .any
            .first()
            .cloned()
            .unwrap_or_else(|| self.all.iter().map(|g| g[0].as_str()).collect());
        if self.example && !own_text.is_empty() {
            out.push_str(&format!("examples = [{own_text:?}]\n"));
        }
        if let Some(counter) = &self.counter_example {
            out.push_str(&format!("counter_examples = [{counter:?}]\n"));
        }
        out.push('\n');
        out
    }
}

const ALPHABET: &[char] = &['退', '款', '货', '发', '好', '差', '质', '量'];

fn drawn_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..=max)
        .prop_map(|chars| chars.into_iter().collect())
}

fn drawn_term() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), 1..=2)
        .prop_map(|chars| chars.into_iter().collect())
}

fn drawn_rule() -> impl Strategy<Value = DrawnRule> {
    (
        (
            prop::sample::select(&["product", "shipping", "refund"][..]),
            0..3usize,
            prop::sample::select(&[10u16, 50, 80][..]),
        ),
        prop::collection::vec(drawn_term(), 0..=2),
        prop::collection::vec(prop::collection::vec(drawn_term(), 1..=2), 0..=2),
        prop::collection::vec(drawn_term(), 0..=1),
        prop::option::weighted(0.15, prop::sample::select(&["退.款", "发.{0,2}货"][..])),
        any::<bool>(),
        prop::option::weighted(0.3, drawn_text(4)),
    )
        .prop_map(
            |((topic, action, priority), mut any, all, none, regex, example, counter_example)| {
                if any.is_empty() && all.is_empty() && regex.is_none() {
                    any.push("退".into());
                }
                DrawnRule {
                    topic,
                    action,
                    priority,
                    any,
                    all,
                    none,
                    regex,
                    example,
                    counter_example,
                }
            },
        )
}

fn write_dir(dir: &Path, rules: &str, replies: &str) {
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::create_dir_all(dir.join("replies")).unwrap();
    std::fs::write(dir.join("rules/rules.toml"), rules).unwrap();
    std::fs::write(dir.join("replies/replies.toml"), replies).unwrap();
}

/// What a load reported, without file positions (the flattened set's files differ).
fn reported(result: &Result<xiaoer::rules::Loaded, xiaoer::rules::LoadError>) -> Vec<String> {
    let diagnostics = match result {
        Ok(loaded) => &loaded.warnings,
        Err(error) => &error.diagnostics,
    };
    let mut out: Vec<String> = diagnostics
        .iter()
        .map(|d| format!("{}[{:?}]: {}", d.severity, d.subject, d.message))
        // A flattened set with every rule switched off is an empty file, which has a warning
        // of its own.
        .filter(|line| !line.ends_with("file has no [[rule]] tables"))
        .collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A shop's set, built on the compiled shared set, decides and reports exactly like one set
    /// compiled from the shared files with the overlay applied by hand.
    #[test]
    fn an_overlay_on_the_compiled_shared_set_equals_the_flattened_set(
        shared in prop::collection::btree_map(0..8usize, drawn_rule(), 1..=6),
        overlay in prop::collection::btree_map(0..8usize, drawn_rule(), 0..=3),
        disable in prop::collection::btree_set(0..10usize, 0..=2),
        reword in any::<bool>(),
        texts in prop::collection::vec(drawn_text(6), 1..24),
    ) {
        let id = |n: &usize| format!("r{n}");
        let dirs = tempfile::tempdir().unwrap();
        let (base, shop, flat) = (dirs.path().join("base"), dirs.path().join("shop"), dirs.path().join("flat"));
        let shared_toml: String = shared.iter().map(|(n, r)| r.toml(&id(n))).collect();
        write_dir(&base, &shared_toml, REPLIES);
        if load(&[Layer::overlay(&base)]).is_err() {
            // The shared set must load on its own before any overlay is put on it.
            return Ok(());
        }
        let disabled: Vec<String> = disable.iter().map(id).collect();
        let mut overlay_toml = format!("disable = {disabled:?}\n\n");
        overlay_toml.extend(overlay.iter().map(|(n, r)| r.toml(&id(n))));
        std::fs::create_dir_all(shop.join("rules")).unwrap();
        std::fs::create_dir_all(shop.join("replies")).unwrap();
        if !(disable.is_empty() && overlay.is_empty()) {
            std::fs::write(shop.join("rules/shop.toml"), overlay_toml).unwrap();
        }
        if reword {
            let reply = "[[reply]]\nkey = \"answer\"\ntext = \"店铺答复\"\n";
            std::fs::write(shop.join("replies/shop.toml"), reply).unwrap();
        }

        let gone = |n: &usize| disable.contains(n) || overlay.contains_key(n);
        let unknown: Vec<String> = disable
            .iter()
            .filter(|n| !shared.contains_key(n) && !overlay.contains_key(n))
            .map(id)
            .collect();
        let mut flat_toml = if unknown.is_empty() {
            String::new()
        } else {
            format!("disable = {unknown:?}\n\n")
        };
        flat_toml.extend(shared.iter().filter(|(n, _)| !gone(n)).map(|(n, r)| r.toml(&id(n))));
        flat_toml.extend(
            overlay.iter().filter(|(n, _)| !disable.contains(n)).map(|(n, r)| r.toml(&id(n))),
        );
        let flat_replies = if reword {
            REPLIES.replace("text = \"答复\"", "text = \"店铺答复\"")
        } else {
            REPLIES.to_string()
        };
        write_dir(&flat, &flat_toml, &flat_replies);

        let layered = load(&[Layer::overlay(&base), Layer::overlay(&shop)]);
        let flattened = load(&[Layer::overlay(&flat)]);
        prop_assert_eq!(reported(&layered), reported(&flattened));
        let (Ok(layered), Ok(flattened)) = (layered, flattened) else {
            prop_assert!(true);
            return Ok(());
        };
        let (a, b) = (&layered.rules, &flattened.rules);
        prop_assert_eq!(a.rule_count(), b.rule_count());
        prop_assert_eq!(a.keyword_count(), b.keyword_count());
        let ids = |rules: &RuleSet, text: &str| {
            let decision = rules.decide(text);
            let matched: Vec<String> =
                decision.matches.iter().map(|m| rules.rule(m.rule).id.clone()).collect();
            let excluded: Vec<(String, String)> = decision
                .excluded
                .iter()
                .map(|e| (rules.rule(e.rule).id.clone(), rules.term(e.term).to_string()))
                .collect();
            (matched, excluded)
        };
        for text in &texts {
            prop_assert_eq!(route(a, text), route(b, text), "route({:?})", text);
            prop_assert_eq!(ids(a, text), ids(b, text), "decide({:?})", text);
            prop_assert_eq!(
                xiaoer::cli::route::route_line(a, text).reply,
                xiaoer::cli::route::route_line(b, text).reply
            );
        }
    }
}

/// Shared rules for the overlay checks below: `b.narrow` is shadowed by `a.broad`, and
/// `c.counter`'s counter-example is won by `a.broad`.
const SHADOWED: &str = r#"
[[rule]]
id = "a.broad"
topic = "refund"
escalate = "refund"
reply = "ack"
priority = 80
any = ["退"]

[[rule]]
id = "b.narrow"
topic = "order"
reply = "answer"
any = ["退货地址"]

[[rule]]
id = "c.counter"
topic = "shipping"
reply = "answer"
any = ["发货", "退发"]
examples = ["发货"]
counter_examples = ["退发"]

[[rule]]
id = "e.alone"
topic = "product"
reply = "answer"
any = ["尺码表"]
"#;

/// What an overlay brings: the warnings it adds, or the error it causes.
type Brought = Result<&'static [&'static str], &'static str>;

#[test]
fn an_overlay_is_checked_for_what_it_changes_in_the_shared_set() {
    let base = tempfile::tempdir().unwrap();
    let base = write_set(base.path(), SHADOWED);
    let shared_warning = "rule `b.narrow` can never win: `a.broad` (priority 80)";
    let shared = load(std::slice::from_ref(&base)).unwrap();
    assert!(
        shared
            .warnings
            .iter()
            .any(|w| w.message.starts_with(shared_warning))
    );
    assert!(shared.overlay_warnings.is_empty());

    // (overlay rules, the error it causes, or the warnings it brings; whether the shared
    // set's warning about `b.narrow` still holds)
    let cases: [(&str, Brought, bool); 5] = [
        // Nothing changes: the shared warning holds, the overlay brings none.
        (
            "[[rule]]\nid = \"z.own\"\ntopic = \"other\"\nreply = \"answer\"\nany = [\"发票\"]\n",
            Ok(&[]),
            true,
        ),
        // Switching the shadower off lifts the warning, and hands `c.counter` its counter-example.
        (
            "disable = [\"a.broad\"]\n",
            Err("counter-example \"退发\" is decided by this rule"),
            false,
        ),
        // A plain overlay rule that outranks a shared one shadows it for this shop only.
        (
            "[[rule]]\nid = \"d.shop\"\ntopic = \"shipping\"\nreply = \"answer\"\npriority = 90\nany = [\"发\"]\n",
            Err("example \"发货\" is decided by `d.shop` (shipping), not by this rule"),
            true,
        ),
        (
            "[[rule]]\nid = \"d.shop\"\ntopic = \"product\"\nreply = \"answer\"\npriority = 90\nany = [\"尺码\"]\n",
            Ok(&["rule `e.alone` can never win: `d.shop` (priority 90)"]),
            true,
        ),
        // The shadower with the lowest id is the one named, whichever layer it is in.
        (
            "[[rule]]\nid = \"0.shop\"\ntopic = \"order\"\nreply = \"answer\"\npriority = 90\nany = [\"地址\"]\n",
            Ok(&["rule `b.narrow` can never win: `0.shop` (priority 90)"]),
            false,
        ),
    ];
    for (overlay_rules, expected, shared_warning_holds) in cases {
        let overlay = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(overlay.path().join("rules")).unwrap();
        std::fs::write(overlay.path().join("rules/shop.toml"), overlay_rules).unwrap();
        let result = load(&[base.clone(), Layer::overlay(overlay.path())]);
        match (result, expected) {
            (Ok(loaded), Ok(brought)) => {
                let overlay_warnings: Vec<&str> = loaded
                    .overlay_warnings
                    .iter()
                    .map(|w| w.message.as_str())
                    .collect();
                assert_eq!(
                    overlay_warnings.len(),
                    brought.len(),
                    "{overlay_rules}: {overlay_warnings:?}"
                );
                for (got, want) in overlay_warnings.iter().zip(brought) {
                    assert!(got.starts_with(want), "{overlay_rules}: {got}");
                }
                let holds = loaded
                    .warnings
                    .iter()
                    .any(|w| w.message.starts_with(shared_warning));
                assert_eq!(holds, shared_warning_holds, "{overlay_rules}");
            }
            (Err(error), Err(message)) => {
                assert!(
                    error.errors().any(|e| e.message == message),
                    "{overlay_rules}: {error}"
                );
                let holds = error
                    .diagnostics
                    .iter()
                    .any(|w| w.message.starts_with(shared_warning));
                assert_eq!(holds, shared_warning_holds, "{overlay_rules}");
            }
            (Ok(_), Err(message)) => panic!("{overlay_rules}: loaded, expected {message}"),
            (Err(error), Ok(_)) => panic!("{overlay_rules}: {error}"),
        }
    }
}
