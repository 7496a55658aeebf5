//! `/metrics` end to end: a daemon on the development gateway handles real chats, and what it
//! serves is parsed by a Prometheus text parser and checked against what happened.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use xiaoer::config::Config;

const WAIT: Duration = Duration::from_secs(10);

/// Every sample of the scrape, by metric name and its labels written `k=v,k=v` (sorted).
fn samples(text: &str) -> HashMap<(String, String), f64> {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a Prometheus text scrape");
    let mut out = HashMap::new();
    for sample in scrape.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.sort();
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                // The count is the +Inf bucket.
                buckets.last().map_or(0.0, |b| b.count)
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert((sample.metric, labels.join(",")), value);
    }
    out
}

fn get(samples: &HashMap<(String, String), f64>, metric: &str, labels: &str) -> f64 {
    samples
        .get(&(metric.to_owned(), labels.to_owned()))
        .copied()
        .unwrap_or_else(|| {
            let known: Vec<_> = samples.keys().filter(|(m, _)| m == metric).collect();
            panic!("no sample {metric}{{{labels}}}; have {known:?}")
        })
}

#[tokio::test]
async fn metrics_count_what_the_daemon_did_and_show_no_buyer_text() {
    let gateway = common::shop1_gateway().await;
    let data = tempfile::tempdir().unwrap();
    let config = Config {
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..common::shipped_pack_config(&gateway, data.path())
    };
    let running = xiaoer::daemon::start(config).await.unwrap();
    assert!(gateway.wait_for_bots(1, WAIT).await);
    let base = format!("http://{}", running.metrics_addr().expect("metrics listen"));

    // A question the pack answers, and a refund that goes to a person.
    gateway.buyer_says("shop1", "buyer-a", "发什么快递");
    gateway.buyer_says("shop1", "buyer-b", "我要退款，订单号4471");
    let client = reqwest::Client::new();
    let scrape = || async {
        let response = client.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .contains("openmetrics-text")
        );
        response.text().await.unwrap()
    };
    // Counters move just after the replies go out: scrape until both chats are counted.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = samples(&scrape().await);
        let bot_answers = s
            .get(&(
                "xiaoer_first_response_seconds_count".to_owned(),
                "responder=bot".to_owned(),
            ))
            .copied()
            .unwrap_or(0.0);
        if bot_answers >= 2.0 || tokio::time::Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A scrape reads the queues from the store before it writes the counters out, so the one
    // that first counted both replies may have read the queues just before the refund was
    // committed; the next one reads them after.
    let text = scrape().await;
    for secret in ["发什么快递", "退款，订单号", "4471", "buyer-a", "buyer-b"] {
        assert!(!text.contains(secret), "buyer data {secret:?} in /metrics");
    }
    let s = samples(&text);
    assert_eq!(get(&s, "xiaoer_messages_received_total", "shop=shop1"), 2.0);
    assert_eq!(get(&s, "xiaoer_escalations_total", "queue=refund"), 1.0);
    assert_eq!(get(&s, "xiaoer_queue_depth", "queue=refund"), 1.0);
    assert_eq!(get(&s, "xiaoer_queue_depth", "queue=complaint"), 0.0);
    assert_eq!(get(&s, "xiaoer_gateway_connected", "gateway=gw1"), 1.0);
    assert_eq!(get(&s, "xiaoer_store_writable", ""), 1.0);
    let escalated: f64 = s
        .iter()
        .filter(|((m, l), _)| m == "xiaoer_decisions_total" && l.contains("action=escalate"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(escalated, 1.0, "one escalation decision");
    assert_eq!(
        get(&s, "xiaoer_first_response_seconds_count", "responder=bot"),
        2.0
    );
    assert!(get(&s, "xiaoer_messages_sent_total", "sender=bot,shop=shop1") >= 2.0);
    assert!(get(&s, "xiaoer_store_commit_seconds_count", "") >= 2.0);
    assert_eq!(get(&s, "xiaoer_notification_dead_letters", ""), 0.0);

    let health = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());

    tokio::time::timeout(Duration::from_secs(5), running.stop())
        .await
        .expect("stops");
}
