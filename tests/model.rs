//! The learned model with real files: `xiaoer train` on a small corpus, the model loaded with
//! the rules, how routing combines the two, reload keeping a working model, and the CLI.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use xiaoer::classifier::{Label, Thresholds};
use xiaoer::cli::RuleDirs;
use xiaoer::model::{Queue, Topic};
use xiaoer::reload::{RuleBook, RuleSources, reload};
use xiaoer::routing::{DecidedBy, OutcomeKind, route, route_with};
use xiaoer::rules::{Layer, RuleSet, load};

const TRAINING: &[(&str, &[&str])] = &[
    (
        "escalate.after_sale",
        &[
            "东西收到是坏的",
            "收到的杯子碎了",
            "少发了一个配件",
            "只收到一件",
            "盒子里是空的",
            "开机没反应",
            "帮我补发一个",
            "漏发了",
        ],
    ),
    (
        "answer.product",
        &[
            "什么面料的",
            "会不会有坏果",
            "要是碎了怎么办",
            "有黑色吗",
            "保质期多久",
            "纯棉的吗",
            "尺码偏大吗",
            "怕路上压坏 会吗",
        ],
    ),
    (
        "quiet",
        &[
            "好的",
            "谢谢",
            "收到啦",
            "知道了",
            "我重新拍一个",
            "很满意",
            "好评",
            "拍了",
        ],
    ),
];

const MODEL_TOML: &str = r#"
file = "test.model"
[training]
buckets_log2 = 14
epochs = 60
"#;

const MODEL_REPLIES: &str = r#"
[[reply]]
key = "model.escalate.after_sale"
text = "model after-sale ack"
[[reply]]
key = "model.answer.product"
text = "model product answer"
"#;

/// A private copy of the fixture rules with a training directory, model settings and the
/// model's replies, trained; and a weak escalation rule on an alarm word.
fn trained() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (dir, rules, replies) = common::rule_dirs();
    write_corpus(&rules);
    std::fs::create_dir_all(rules.join("model")).unwrap();
    std::fs::write(rules.join("model/model.toml"), MODEL_TOML).unwrap();
    std::fs::write(replies.join("model.toml"), MODEL_REPLIES).unwrap();
    std::fs::write(
        rules.join("weak.toml"),
        r#"
[[rule]]
id = "after_sale.broken"
topic = "after_sale"
escalate = "after_sale"
reply = "after_sale_ack"
priority = 70
weak = true
any = ["坏", "碎"]
none = ["不会坏"]
examples = ["坏了"]
"#,
    )
    .unwrap();
    train(&rules, &replies);
    (dir, rules, replies)
}

fn write_corpus(rules: &Path) {
    std::fs::create_dir_all(rules.join("training")).unwrap();
    for (label, lines) in TRAINING {
        std::fs::write(
            rules.join("training").join(format!("{label}.tsv")),
            format!("# {label}\n{}\n", lines.join("\n")),
        )
        .unwrap();
    }
}

fn train(rules: &Path, replies: &Path) {
    let dirs = RuleDirs {
        rules: rules.to_path_buf(),
        replies: replies.to_path_buf(),
        shop: None,
    };
    xiaoer::cli::train::run(&dirs, None, &mut Vec::new()).expect("train");
}

fn loaded(rules: &Path, replies: &Path) -> RuleSet {
    match load(&[Layer::new(rules, replies)]) {
        Ok(loaded) => loaded.rules,
        Err(error) => panic!("{error}"),
    }
}

fn never() -> Thresholds {
    Thresholds::all_at(1.01)
}

fn always() -> Thresholds {
    Thresholds::all_at(0.0)
}

#[test]
fn with_nothing_matched_a_sure_model_decides_and_an_unsure_one_falls_back() {
    let (_dir, rules, replies) = trained();
    let rules = loaded(&rules, &replies);
    let model = rules.model().expect("the model loaded with the rules");
    assert_eq!(model.classifier.labels().len(), 3);

    let text = "盒子里是空的啊";
    let sure = route_with(&rules, text, Some(&always()));
    assert_eq!(sure.by, DecidedBy::Model, "{}", sure.why);
    assert_eq!(sure.kind, OutcomeKind::Escalate);
    assert_eq!(sure.queue, Some(Queue::AfterSale));
    assert_eq!(sure.reply_key.as_deref(), Some("model.escalate.after_sale"));
    assert!(sure.confidence.is_some_and(|p| p > 0.0 && p <= 1.0));
    assert!(
        sure.why.starts_with("model escalate.after_sale"),
        "{}",
        sure.why
    );
    assert!(!sure.terms.is_empty(), "the n-grams that pushed are named");

    let unsure = route_with(&rules, text, Some(&never()));
    assert_eq!(unsure.kind, OutcomeKind::Fallback);
    assert_eq!(unsure.by, DecidedBy::Nothing);
    assert_eq!(unsure.confidence, sure.confidence);
    assert!(unsure.why.contains("model unsure"), "{}", unsure.why);
}

#[test]
fn a_weak_escalation_gives_way_to_a_sure_answer_and_a_strong_one_never_does() {
    let (_dir, rules, replies) = trained();
    let rules = loaded(&rules, &replies);
    // 会不会有坏果 hits the weak alarm-word rule; the model learned it as a product question.
    let text = "会不会有坏果";
    let kept = route_with(&rules, text, Some(&never()));
    assert_eq!(kept.rule.as_deref(), Some("after_sale.broken"));
    assert_eq!(kept.kind, OutcomeKind::Escalate);
    let overruled = route_with(&rules, text, Some(&always()));
    assert_eq!(overruled.by, DecidedBy::Model, "{}", overruled.why);
    assert_eq!(overruled.kind, OutcomeKind::Reply);
    assert_eq!(overruled.topic, Some(Topic::Product));
    assert!(overruled.why.contains("over rule after_sale.broken"));

    // refund.request is not weak: whatever the model thinks, it stands.
    let strong = route_with(&rules, "我要退款 谢谢", Some(&always()));
    assert_eq!(strong.rule.as_deref(), Some("refund.request"));
    assert_eq!(strong.by, DecidedBy::Rule);
}

#[test]
fn an_answer_is_overruled_only_above_its_bar_and_a_vetoed_queue_is_never_restored() {
    let (_dir, rules, replies) = trained();
    let rules = loaded(&rules, &replies);
    // "发货" answers by rule; the rest reads as an after-sale problem to the model.
    let text = "发货 少发了一个配件 只收到一件 盒子里是空的";
    let answered = route_with(&rules, text, Some(&never()));
    assert_eq!(answered.rule.as_deref(), Some("shipping.when"));
    let escalated = route_with(&rules, text, Some(&always()));
    assert_eq!(escalated.kind, OutcomeKind::Escalate, "{}", escalated.why);
    assert_eq!(escalated.by, DecidedBy::Model);

    // The weak rule vetoed by its `none` term 不会坏: the model, sure of after-sale, does not put
    // the escalation back.
    let vetoed = route_with(&rules, "不会坏吧 盒子里是空的啊", Some(&always()));
    assert_eq!(vetoed.kind, OutcomeKind::Ignore, "{}", vetoed.why);
    assert!(vetoed.why.contains("vetoed"), "{}", vetoed.why);
    // With a rule answering, the answer stands (the model does not escalate over the veto).
    let answered = route_with(
        &rules,
        "不会坏吧 盒子里是空的 什么时候发货",
        Some(&always()),
    );
    assert_eq!(
        answered.rule.as_deref(),
        Some("shipping.when"),
        "{}",
        answered.why
    );
}

#[test]
fn training_is_reproducible_and_the_model_file_is_checked_on_load() {
    let (_dir, rules, replies) = trained();
    let first = std::fs::read(rules.join("model/test.model")).unwrap();
    train(&rules, &replies);
    assert_eq!(
        std::fs::read(rules.join("model/test.model")).unwrap(),
        first,
        "same text, same settings: same bytes"
    );

    // A damaged model is an error of the rule set, pointing at the settings file.
    let mut damaged = first.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    std::fs::write(rules.join("model/test.model"), &damaged).unwrap();
    let error = load(&[Layer::new(&rules, &replies)]).unwrap_err();
    let rendered = error.sources.render(&error.diagnostics, false);
    assert!(rendered.contains("damaged"), "{rendered}");
    assert!(rendered.contains("model.toml"), "{rendered}");

    // A model deciding something the replies cannot say is refused too.
    std::fs::write(rules.join("model/test.model"), &first).unwrap();
    std::fs::remove_file(replies.join("model.toml")).unwrap();
    let error = load(&[Layer::new(&rules, &replies)]).unwrap_err();
    let rendered = error.sources.render(&error.diagnostics, false);
    assert!(
        rendered.contains("no reply \"model.answer.product\""),
        "{rendered}"
    );
}

#[test]
fn edited_training_text_makes_the_model_stale_with_a_warning_until_retrained() {
    let (_dir, rules, replies) = trained();
    let fresh = load(&[Layer::new(&rules, &replies)]).unwrap();
    assert!(
        !fresh
            .warnings
            .iter()
            .any(|w| w.message.contains("xiaoer train"))
    );
    std::fs::write(rules.join("training/quiet.tsv"), "好的\n嗯\n").unwrap();
    let stale = load(&[Layer::new(&rules, &replies)]).unwrap();
    assert!(
        stale
            .warnings
            .iter()
            .any(|w| w.message.contains("run `xiaoer train`")),
        "{:?}",
        stale.warnings
    );
    assert!(stale.rules.model().is_some(), "a stale model keeps serving");
    train(&rules, &replies);
    let retrained = load(&[Layer::new(&rules, &replies)]).unwrap();
    assert!(
        !retrained
            .warnings
            .iter()
            .any(|w| w.message.contains("xiaoer train"))
    );
}

#[test]
fn a_reload_with_a_broken_model_keeps_the_old_set_and_its_model_serving() {
    let (_dir, rules, replies) = trained();
    let sources = RuleSources {
        base: Layer::new(&rules, &replies),
        overlays: Vec::new(),
    };
    let live = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(
        RuleBook::load(&sources).unwrap(),
    ));
    std::fs::write(rules.join("model/test.model"), b"not a model").unwrap();
    assert!(!reload(&live, &sources), "the broken model is refused");
    let serving = live.load().for_shop("any");
    let model = serving.model().expect("the old model still serves");
    assert_eq!(
        model.classifier.labels(),
        &[
            Label::Escalate(Queue::AfterSale),
            Label::Answer(Topic::Product),
            Label::Quiet
        ]
    );
    assert_eq!(
        route_with(&serving, "盒子里是空的啊", Some(&always())).by,
        DecidedBy::Model
    );
    // Without a model directory at all, the rules decide alone.
    std::fs::remove_dir_all(rules.join("model")).unwrap();
    assert!(reload(&live, &sources));
    assert!(live.load().for_shop("any").model().is_none());
    assert_eq!(
        route(&live.load().for_shop("any"), "盒子里是空的啊").by,
        DecidedBy::Nothing
    );
}

#[test]
fn the_cli_trains_routes_with_by_and_confidence_and_explains_the_model() {
    let (_dir, rules, replies) = common::rule_dirs();
    write_corpus(&rules);
    std::fs::create_dir_all(rules.join("model")).unwrap();
    std::fs::write(
        rules.join("model/model.toml"),
        format!("{MODEL_TOML}\n[thresholds]\nanswer = 0.0\nescalate = 0.0\nquiet = 0.0\n"),
    )
    .unwrap();
    std::fs::write(replies.join("model.toml"), MODEL_REPLIES).unwrap();
    let dirs = [
        "--rules",
        rules.to_str().unwrap(),
        "--replies",
        replies.to_str().unwrap(),
    ];
    let bin = env!("CARGO_BIN_EXE_xiaoer");
    let output = Command::new(bin).arg("train").args(dirs).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(report.contains("trained on"), "{report}");
    assert!(report.contains("escalate.after_sale"), "{report}");

    let mut child = Command::new(bin)
        .arg("route")
        .args(dirs)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all("盒子里是空的啊\n我要退款\n".as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["by"], "model");
    assert_eq!(lines[0]["action"], "escalate");
    assert!(lines[0]["confidence"].as_f64().is_some_and(|p| p > 0.0));
    assert_eq!(lines[1]["by"], "rule");
    assert!(
        lines[1].get("confidence").is_none(),
        "a strong rule does not ask the model"
    );

    let output = Command::new(bin)
        .args(["explain", "盒子里是空的啊"])
        .args(dirs)
        .output()
        .unwrap();
    let explained = String::from_utf8_lossy(&output.stdout);
    assert!(
        explained.contains("model:      escalate.after_sale"),
        "{explained}"
    );
    assert!(
        explained.contains("pushed towards escalate.after_sale by:"),
        "{explained}"
    );
    assert!(explained.contains("decided by: model"), "{explained}");
}
