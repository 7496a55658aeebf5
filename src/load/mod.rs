//! The load generator behind `xiaoer-load`: it plays the gateway side of OneBot 12 over
//! loopback websockets against a real xiaoer process, durability on as shipped, and measures
//! what a shop can plan with: throughput, reply latency (an HDR histogram), messages never
//! answered, duplicates, the daemon's CPU seconds per 1,000 messages and its memory. The same
//! load against [`bare`], a client that answers everything with a fixed text, gives the floor of
//! the transport; figures are quoted as ratios to it (docs/performance.md).
//!
//! Written for this project because the Python drivers top out near 5–7k messages/s on the
//! machines it is measured on, below what the daemon does. The histogram is the `hdrhistogram`
//! crate; arrivals in the open loop are Poisson (exponential gaps drawn from `rand`).
//!
//! - [`workload`]: the message mix (sorted into answered and escalated by the rules the daemon
//!   runs) and rule packs with extra rules.
//! - `gateway`: the loopback gateway, pushing events and timing replies.
//! - [`procstat`]: CPU and memory of the process under load, from `/proc`.
//! - [`bare`]: the baseline client.

pub mod bare;
mod gateway;
pub mod procstat;
pub mod workload;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::oneshot;

use gateway::{LoadGateway, Window};
use workload::{Mix, WorkloadError};

const TOKEN: &str = "load";
/// How long a closed-loop buyer waits for a reply before counting the message unanswered.
const REPLY_WAIT: Duration = Duration::from_secs(10);
/// How long, after the load stops, replies still count.
const DRAIN: Duration = Duration::from_secs(10);

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// The xiaoer daemon, as shipped but for the settings a benchmark needs (see [`Settings`]).
    Xiaoer,
    /// The bare client ([`bare`]).
    Bare,
}

/// How messages arrive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Mode {
    /// Each buyer sends, waits for the reply, sends again.
    Closed,
    /// Poisson arrivals at `rate` messages per second, from buyers picked at random.
    Open { rate: f64 },
    /// Open loop at `from` messages per second, times `factor` every `step`, until the target
    /// stops keeping up or `to` is passed.
    Ramp {
        from: f64,
        to: f64,
        factor: f64,
        #[serde(with = "humantime_serde_secs")]
        step: Duration,
    },
    /// `chats` buyers write once each; memory is read before and after their workers are
    /// reaped.
    Idle { chats: usize },
}

mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// Buyers (closed and open loop).
    pub buyers: usize,
    /// Shop accounts the buyers are spread over.
    pub shops: usize,
    /// Gateway connections the shops are spread over.
    pub connections: usize,
    /// Measured time (closed and open loop).
    pub duration: Duration,
    /// Load before measuring starts.
    pub warmup: Duration,
    /// Share of messages that escalate, each from a new buyer (an escalated chat waits quietly
    /// for a person, so its buyer would get no more replies).
    pub escalate: f64,
    pub mix: Arc<Mix>,
    /// The `xiaoer` binary.
    pub xiaoer: PathBuf,
    /// The `xiaoer-load` binary, which is also the bare client.
    pub load_binary: PathBuf,
    pub rules: PathBuf,
    pub replies: PathBuf,
    /// Extra keyword rules added to the pack (rule-count scaling).
    pub extra_rules: usize,
    /// `worker_idle` of the daemon.
    pub worker_idle: Duration,
    /// `RUST_LOG` of the daemon.
    pub log: String,
    /// Open loop: a second window on the same process at this rate, for this long (recovery
    /// after an overload).
    pub then: Option<(f64, Duration)>,
    pub seed: u64,
    /// Closed loop: a buyer's pause between a reply and its next message.
    pub think: Duration,
    /// The daemon's store URL; `None`: SQLite in the run's temporary directory.
    pub store: Option<String>,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error("cannot {what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the {target:?} target did not connect within 60 s; its log:\n{log}")]
    NoConnection { target: TargetKind, log: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LoadError {
    let what = what.into();
    move |source| LoadError::Io { what, source }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// One measured window (a whole closed or open run, or one ramp step).
#[derive(Debug, Clone, Serialize)]
pub struct Measured {
    /// Offered rate, messages per second (open loop and ramp).
    pub offered_per_s: Option<f64>,
    pub seconds: f64,
    pub sent: u64,
    pub answered: u64,
    /// Sent in the window and never answered, even after the drain.
    pub unanswered: u64,
    pub duplicates: u64,
    /// Replies in this window to messages an earlier window gave up on (after an overload).
    pub late: u64,
    /// Buyer messages the target recorded but chose not to answer, from its
    /// `xiaoer_messages_set_aside_total` (xiaoer only).
    pub shed: Option<u64>,
    /// Answered messages per second.
    pub throughput_per_s: f64,
    pub latency: Latency,
    /// The target's CPU seconds (user + system) per 1,000 answered messages.
    pub cpu_s_per_1k: Option<f64>,
}

/// One target's run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub target: TargetKind,
    #[serde(flatten)]
    pub mode: Mode,
    pub buyers: usize,
    pub shops: usize,
    pub connections: usize,
    pub escalate: f64,
    pub rules: usize,
    /// The whole run, or the ramp's steps.
    pub windows: Vec<Measured>,
    /// The ramp: the highest offered rate the target kept up with.
    pub saturation_per_s: Option<f64>,
    /// Resident memory at the end, and the peak over the process's life, in KiB.
    pub rss_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    /// Idle chats: resident memory per chat after the workers were reaped, in bytes.
    pub rss_per_idle_chat_bytes: Option<f64>,
}

/// xiaoer's run beside the bare client's, and the ratios that matter.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub date: String,
    pub command: String,
    pub bare: Option<RunReport>,
    pub xiaoer: Option<RunReport>,
    /// xiaoer ÷ bare, of the first window (or of the saturation rates for a ramp).
    pub ratio: Option<Ratios>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Ratios {
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
    pub cpu_per_message: Option<f64>,
}

impl Comparison {
    /// Fills in the ratios from the two runs.
    pub fn with_ratios(mut self) -> Comparison {
        if let (Some(bare), Some(xiaoer)) = (&self.bare, &self.xiaoer)
            && let (Some(b), Some(x)) = (bare.windows.first(), xiaoer.windows.first())
        {
            let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            let throughput = match (xiaoer.saturation_per_s, bare.saturation_per_s) {
                (Some(x), Some(b)) => div(x, b),
                _ => div(x.throughput_per_s, b.throughput_per_s),
            };
            self.ratio = Some(Ratios {
                throughput,
                p50: div(x.latency.p50_us as f64, b.latency.p50_us as f64),
                p99: div(x.latency.p99_us as f64, b.latency.p99_us as f64),
                cpu_per_message: x.cpu_s_per_1k.zip(b.cpu_s_per_1k).map(|(x, b)| div(x, b)),
            });
        }
        self
    }
}

/// The process under load; killed when dropped.
struct TargetProcess {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TargetProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL if it has not gone in 10 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for TargetProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn spawn_target(
    settings: &Settings,
    target: TargetKind,
    gateway: &LoadGateway,
    rules: &Path,
    replies: &Path,
    metrics: Option<std::net::SocketAddr>,
) -> Result<TargetProcess, LoadError> {
    let dir = tempfile::tempdir().map_err(io("make a temporary directory"))?;
    let log = dir.path().join("target.log");
    let log_file = std::fs::File::create(&log).map_err(io("create the target's log"))?;
    let urls: Vec<String> = (0..settings.connections).map(|n| gateway.url(n)).collect();
    let mut command = match target {
        TargetKind::Xiaoer => {
            let config = dir.path().join("xiaoer.toml");
            let mut text = format!(
                "data = {data:?}\nrules = {rules:?}\nreplies = {replies:?}\nwatch = false\nworker_idle = \"{idle}s\"\n\n",
                data = dir.path().join("data"),
                rules = rules,
                replies = replies,
                idle = settings.worker_idle.as_secs().max(1),
            );
            for (n, url) in urls.iter().enumerate() {
                text.push_str(&format!(
                    "[[gateway]]\nurl = \"{url}\"\ntoken = \"{TOKEN}\"\nname = \"c{n}\"\n\n"
                ));
            }
            // A benchmark's buyers write far faster than people do: no greeting (one reply per
            // message), the reply limit at its highest, and no hand-over after fallbacks.
            text.push_str(
                "[conversation]\ngreeting = false\nmax_replies = 1000\nreply_window = \"1s\"\n\n[escalation]\nfallback_limit = 0\n",
            );
            if let Some(store) = &settings.store {
                // Top-level keys must come before the first table.
                text.insert_str(0, &format!("store = {store:?}\n"));
            }
            if let Some(addr) = metrics {
                text.push_str(&format!("\n[metrics]\nlisten = \"{addr}\"\n"));
            }
            std::fs::write(&config, text).map_err(io("write the daemon's config"))?;
            let mut c = Command::new(&settings.xiaoer);
            c.arg("run").arg("--config").arg(&config);
            c
        }
        TargetKind::Bare => {
            let mut c = Command::new(&settings.load_binary);
            c.arg("bare").arg("--token").arg(TOKEN);
            for url in &urls {
                c.arg("--gateway").arg(url);
            }
            c
        }
    };
    let err = log_file.try_clone().map_err(io("open the target's log"))?;
    let child = command
        .env("RUST_LOG", &settings.log)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err)
        .spawn()
        .map_err(io(format!("start {target:?}")))?;
    Ok(TargetProcess {
        child,
        log,
        _dir: dir,
    })
}

/// Runs the load against one target process.
///
/// # Errors
///
/// A target that cannot be started or does not connect, a rule pack that cannot be written.
pub async fn run(settings: &Settings, target: TargetKind) -> Result<RunReport, LoadError> {
    let pack_dir = tempfile::tempdir().map_err(io("make a temporary directory"))?;
    let (rules, replies) = if settings.extra_rules > 0 && target == TargetKind::Xiaoer {
        workload::pack_with_extra_rules(
            &settings.rules,
            &settings.replies,
            pack_dir.path(),
            settings.extra_rules,
            settings.seed,
        )?
    } else {
        (settings.rules.clone(), settings.replies.clone())
    };
    let gateway = LoadGateway::start(settings.connections, settings.shops, TOKEN)
        .await
        .map_err(io("listen on loopback"))?;
    let metrics = match target {
        TargetKind::Xiaoer => Some(free_port()?),
        TargetKind::Bare => None,
    };
    let process = spawn_target(settings, target, &gateway, &rules, &replies, metrics)?;
    if !gateway.wait_connected(Duration::from_secs(60)).await {
        return Err(LoadError::NoConnection {
            target,
            log: process.log(),
        });
    }
    let pid = process.pid();
    let mut report = RunReport {
        target,
        mode: settings.mode,
        buyers: settings.buyers,
        shops: settings.shops,
        connections: settings.connections,
        escalate: settings.escalate,
        rules: match target {
            TargetKind::Xiaoer => count_rules(&rules, &replies),
            TargetKind::Bare => 0,
        },
        windows: Vec::new(),
        saturation_per_s: None,
        rss_kib: None,
        peak_rss_kib: None,
        rss_per_idle_chat_bytes: None,
    };
    let driver = Driver {
        gateway: gateway.clone(),
        settings: settings.clone(),
        pid,
        escalations: Arc::new(AtomicU64::new(0)),
        metrics,
        shed_before: std::sync::Mutex::new(0),
    };
    match settings.mode {
        Mode::Closed => {
            report.windows.push(driver.closed().await);
        }
        Mode::Open { rate } => {
            report.windows.push(
                driver
                    .open(rate, settings.warmup, settings.duration, 0)
                    .await,
            );
            if let Some((rate, duration)) = settings.then {
                report
                    .windows
                    .push(driver.open(rate, Duration::ZERO, duration, 1).await);
            }
        }
        Mode::Ramp {
            from,
            to,
            factor,
            step,
        } => {
            let mut rate = from;
            let mut round = 0;
            while rate <= to {
                let window = driver.open(rate, Duration::ZERO, step, round).await;
                let kept_up = window.throughput_per_s >= 0.95 * rate
                    && window.unanswered == 0
                    && window.latency.p99_us < 1_000_000;
                eprintln!(
                    "  {target:?} {rate:>9.0}/s offered: {:>9.0}/s answered, p99 {:.1} ms{}",
                    window.throughput_per_s,
                    window.latency.p99_us as f64 / 1000.0,
                    if kept_up { "" } else { "  (not keeping up)" }
                );
                report.windows.push(window);
                if !kept_up {
                    break;
                }
                report.saturation_per_s = Some(rate);
                rate *= factor.max(1.01);
                round += 1;
            }
        }
        Mode::Idle { chats } => {
            report.rss_per_idle_chat_bytes = driver.idle(chats).await;
        }
    }
    if let Some((now, peak)) = procstat::rss_kib(pid) {
        report.rss_kib = Some(now);
        report.peak_rss_kib = Some(peak);
    }
    process.stop();
    Ok(report)
}

fn count_rules(rules: &Path, replies: &Path) -> usize {
    crate::rules::load(&[crate::rules::Layer::new(rules, replies)])
        .map(|l| l.rules.rule_count())
        .unwrap_or(0)
}

struct Driver {
    gateway: Arc<LoadGateway>,
    settings: Settings,
    pid: u32,
    escalations: Arc<AtomicU64>,
    /// The target's `/metrics` listener (xiaoer only).
    metrics: Option<std::net::SocketAddr>,
    /// Messages set aside when the current window began.
    shed_before: std::sync::Mutex<u64>,
}

/// What one message says and who says it: an answered text from `buyer`, or an escalation from
/// a buyer never seen before.
fn pick(
    mix: &Mix,
    share: f64,
    rng: &mut StdRng,
    buyer: usize,
    escalations: &AtomicU64,
) -> (String, String) {
    let escalate = if mix.answers.is_empty() {
        true
    } else {
        !mix.escalations.is_empty() && rng.random_bool(share.clamp(0.0, 1.0))
    };
    if escalate {
        let n = escalations.fetch_add(1, Ordering::Relaxed);
        let text = &mix.escalations[rng.random_range(0..mix.escalations.len())];
        (format!("e{n}"), text.clone())
    } else {
        let text = &mix.answers[rng.random_range(0..mix.answers.len())];
        (format!("b{buyer}"), text.clone())
    }
}

impl Driver {
    fn cpu(&self) -> Option<f64> {
        procstat::cpu_seconds(self.pid)
    }

    /// Starts a measured window: its replies, set-aside messages and CPU count from now; the
    /// CPU seconds so far.
    async fn open_window(&self) -> Option<f64> {
        let _ = self.gateway.take_window();
        self.shed_from_now().await;
        self.cpu()
    }

    /// Starts counting set-aside messages for a new window.
    async fn shed_from_now(&self) {
        let total = self.shed_total().await.unwrap_or(0);
        if let Ok(mut before) = self.shed_before.lock() {
            *before = total;
        }
    }

    /// Ends the window once its load has stopped and its replies are in (or given up on).
    async fn close_window(&self, seconds: f64, offered: Option<f64>, cpu: Option<f64>) -> Measured {
        self.gateway.expire_unanswered();
        let window = self.gateway.take_window();
        let mut measured = measured(&window, seconds, offered, cpu);
        measured.shed = self.shed_since().await;
        measured
    }

    /// Set-aside messages since [`Driver::open_window`].
    async fn shed_since(&self) -> Option<u64> {
        let total = self.shed_total().await?;
        let before = self.shed_before.lock().map(|b| *b).unwrap_or(0);
        Some(total.saturating_sub(before))
    }

    async fn shed_total(&self) -> Option<u64> {
        let addr = self.metrics?;
        let text = reqwest::Client::new()
            .get(format!("http://{addr}/metrics"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            text.lines()
                .filter(|line| line.starts_with("xiaoer_messages_set_aside_total"))
                .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64,
        )
    }

    /// Waits for the replies still due, then closes the window.
    async fn finish(
        &self,
        started: Instant,
        cpu_before: Option<f64>,
        offered: Option<f64>,
    ) -> Measured {
        let seconds = started.elapsed().as_secs_f64();
        let cpu_after = self.cpu();
        let deadline = Instant::now() + DRAIN;
        while self.gateway.waiting() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
        self.close_window(seconds, offered, cpu).await
    }

    async fn closed(&self) -> Measured {
        let start = Instant::now();
        let measuring = start + self.settings.warmup;
        let end = measuring + self.settings.duration;
        // Only messages pushed after the warm-up count, so the window can start now.
        let _ = self.gateway.take_window();
        let mut buyers = Vec::new();
        for buyer in 0..self.settings.buyers {
            let gateway = self.gateway.clone();
            let shop = buyer % self.settings.shops;
            let mut rng = StdRng::seed_from_u64(
                self.settings.seed ^ (buyer as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            let (mix, share) = (self.settings.mix.clone(), self.settings.escalate);
            let escalations = self.escalations.clone();
            let think = self.settings.think;
            buyers.push(tokio::spawn(async move {
                loop {
                    let at = Instant::now();
                    if at >= end {
                        break;
                    }
                    let (user, text) = pick(&mix, share, &mut rng, buyer, &escalations);
                    let (done, replied) = oneshot::channel();
                    gateway.push(shop, &user, &text, at, at >= measuring, Some(done));
                    if tokio::time::timeout(REPLY_WAIT, replied).await.is_err() {
                        // Unanswered: counted at the end; carry on as a buyer would.
                    }
                    if !think.is_zero() {
                        tokio::time::sleep(think).await;
                    }
                }
            }));
        }
        tokio::time::sleep_until(measuring.into()).await;
        // The window began before the warm-up (only measured messages count in it).
        self.shed_from_now().await;
        let cpu_before = self.cpu();
        let started = Instant::now();
        tokio::time::sleep_until(end.into()).await;
        let seconds = started.elapsed().as_secs_f64();
        let cpu_after = self.cpu();
        for buyer in buyers {
            let _ = buyer.await;
        }
        let cpu = cpu_before.zip(cpu_after).map(|(a, b)| b - a);
        self.close_window(seconds, None, cpu).await
    }

    /// Poisson arrivals at `rate` for `warmup` + `duration`; latency from each message's
    /// scheduled arrival, so a generator or target that falls behind shows as latency.
    async fn open(&self, rate: f64, warmup: Duration, duration: Duration, round: u64) -> Measured {
        let mut rng = StdRng::seed_from_u64(self.settings.seed.wrapping_add(round));
        let start = Instant::now();
        let measuring = start + warmup;
        let end = measuring + duration;
        let mut next = start;
        let mut cpu_before = None;
        let mut started = start;
        let mut in_window = warmup.is_zero();
        if in_window {
            cpu_before = self.open_window().await;
        }
        while next < end {
            let now = Instant::now();
            if next > now + Duration::from_micros(500) {
                tokio::time::sleep_until(next.into()).await;
            }
            let now = Instant::now();
            while next <= now && next < end {
                if !in_window && next >= measuring {
                    in_window = true;
                    cpu_before = self.open_window().await;
                    started = Instant::now();
                }
                let buyer = rng.random_range(0..self.settings.buyers.max(1));
                let (user, text) = pick(
                    &self.settings.mix,
                    self.settings.escalate,
                    &mut rng,
                    buyer,
                    &self.escalations,
                );
                let shop = buyer % self.settings.shops;
                self.gateway.push(shop, &user, &text, next, in_window, None);
                // Exponential gaps: -ln(U) / rate, U in (0, 1].
                let u: f64 = 1.0 - rng.random::<f64>();
                next += Duration::from_secs_f64(-u.ln() / rate);
            }
        }
        self.finish(started, cpu_before, Some(rate)).await
    }

    /// `chats` buyers write once; the resident memory they leave once their workers have
    /// stopped, per chat.
    async fn idle(&self, chats: usize) -> Option<f64> {
        // Let the process settle after its start, then read the floor.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (before, _) = procstat::rss_kib(self.pid)?;
        let rate = 5_000.0;
        let mut rng = StdRng::seed_from_u64(self.settings.seed);
        let answers = &self.settings.mix.answers;
        let started = Instant::now();
        for chat in 0..chats {
            let text = if answers.is_empty() {
                &self.settings.mix.escalations[0]
            } else {
                &answers[rng.random_range(0..answers.len())]
            };
            let at = started + Duration::from_secs_f64(chat as f64 / rate);
            if at > Instant::now() + Duration::from_millis(1) {
                tokio::time::sleep_until(at.into()).await;
            }
            self.gateway.push(
                chat % self.settings.shops,
                &format!("idle{chat}"),
                text,
                Instant::now(),
                true,
                None,
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.gateway.waiting() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let window = self.gateway.take_window();
        eprintln!(
            "  idle: {} of {chats} chats answered; waiting {} s for their workers to stop",
            window.answered,
            self.settings.worker_idle.as_secs() + 5
        );
        // Workers stop after worker_idle without messages; give them that and a margin.
        tokio::time::sleep(self.settings.worker_idle + Duration::from_secs(5)).await;
        let (after, _) = procstat::rss_kib(self.pid)?;
        Some(after.saturating_sub(before) as f64 * 1024.0 / chats.max(1) as f64)
    }
}

fn measured(window: &Window, seconds: f64, offered: Option<f64>, cpu: Option<f64>) -> Measured {
    let h = &window.latency_us;
    let latency = if h.is_empty() {
        Latency::default()
    } else {
        Latency {
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    };
    let per_1k = (window.answered > 0)
        .then(|| cpu.map(|c| c / (window.answered as f64 / 1000.0)))
        .flatten();
    Measured {
        offered_per_s: offered,
        seconds,
        sent: window.sent,
        answered: window.answered,
        unanswered: window.sent.saturating_sub(window.answered),
        duplicates: window.duplicates,
        late: window.late,
        throughput_per_s: if seconds > 0.0 {
            window.answered as f64 / seconds
        } else {
            0.0
        },
        latency,
        cpu_s_per_1k: per_1k,
        shed: None,
    }
}

/// One line per window, for people.
pub fn summary(report: &RunReport) -> String {
    let mut out = String::new();
    for w in &report.windows {
        out.push_str(&format!(
            "{:?}: {:.0} msg/s answered{} · p50 {:.2} ms p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} · sent {} unanswered {}{} duplicates {} late {} · cpu {} s/1k msg\n",
            report.target,
            w.throughput_per_s,
            w.offered_per_s.map(|o| format!(" of {o:.0} offered")).unwrap_or_default(),
            w.latency.p50_us as f64 / 1000.0,
            w.latency.p90_us as f64 / 1000.0,
            w.latency.p99_us as f64 / 1000.0,
            w.latency.p999_us as f64 / 1000.0,
            w.latency.max_us as f64 / 1000.0,
            w.sent,
            w.unanswered,
            w.shed.map(|n| format!(" (shed {n})")).unwrap_or_default(),
            w.duplicates,
            w.late,
            w.cpu_s_per_1k.map(|c| format!("{c:.3}")).unwrap_or_else(|| "?".into()),
        ));
    }
    if let Some(s) = report.saturation_per_s {
        out.push_str(&format!("{:?}: saturation {s:.0} msg/s\n", report.target));
    }
    if let Some(b) = report.rss_per_idle_chat_bytes {
        out.push_str(&format!(
            "{:?}: {b:.0} bytes resident per idle chat\n",
            report.target
        ));
    }
    if let (Some(now), Some(peak)) = (report.rss_kib, report.peak_rss_kib) {
        out.push_str(&format!(
            "{:?}: rss {:.1} MiB at the end, peak {:.1} MiB\n",
            report.target,
            now as f64 / 1024.0,
            peak as f64 / 1024.0
        ));
    }
    out
}

/// A loopback port nobody listens on now, for the target's metrics.
fn free_port() -> Result<std::net::SocketAddr, LoadError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io("find a free loopback port"))?;
    listener
        .local_addr()
        .map_err(io("find a free loopback port"))
}
