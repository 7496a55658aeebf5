//! `xiaoer-load`: the load generator (see `xiaoer::load` and docs/performance.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use xiaoer::load::workload::Mix;
use xiaoer::load::{Comparison, Mode, Settings, TargetKind};

#[derive(Parser)]
#[command(
    name = "xiaoer-load",
    about = "Drive xiaoer (and a bare baseline client) through a loopback OneBot 12 gateway and measure it"
)]
struct Cli {
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Run one scenario against the bare client, xiaoer, or both (bare first).
    Run(Box<RunArgs>),
    /// The bare baseline client: answers every message with a fixed text.
    Bare {
        #[arg(long = "gateway", required = true)]
        gateways: Vec<String>,
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Target {
    Xiaoer,
    Bare,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Closed,
    Open,
    Ramp,
    Idle,
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long, value_enum, default_value = "both")]
    target: Target,
    #[arg(long, value_enum, default_value = "closed")]
    mode: ModeArg,
    /// Buyers (closed and open loop).
    #[arg(long, default_value_t = 1000)]
    buyers: usize,
    /// Shop accounts the buyers are spread over.
    #[arg(long, default_value_t = 10)]
    shops: usize,
    /// Gateway connections the shops are spread over.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Offered rate, messages per second (open loop).
    #[arg(long, default_value_t = 5000.0)]
    rate: f64,
    /// Open loop: then this rate on the same process (recovery after an overload).
    #[arg(long)]
    then_rate: Option<f64>,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    then_duration: Duration,
    /// Ramp: first rate, last rate, factor per step, and step length.
    #[arg(long, default_value_t = 2000.0)]
    from: f64,
    #[arg(long, default_value_t = 200_000.0)]
    to: f64,
    #[arg(long, default_value_t = 1.25)]
    factor: f64,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    step: Duration,
    /// Idle: how many chats write once.
    #[arg(long, default_value_t = 100_000)]
    chats: usize,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load before measuring.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Share of messages that escalate (each from a new buyer).
    #[arg(long, default_value_t = 0.1)]
    escalate: f64,
    /// Texts to send, one a line (default: the rules' own examples).
    #[arg(long)]
    messages: Option<PathBuf>,
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    #[arg(long, default_value = "replies")]
    replies: PathBuf,
    /// Extra keyword rules added to the pack xiaoer runs.
    #[arg(long, default_value_t = 0)]
    extra_rules: usize,
    /// The xiaoer binary (default: beside this one).
    #[arg(long)]
    xiaoer: Option<PathBuf>,
    /// The daemon's store URL (default: a SQLite file in a temporary directory), e.g. a
    /// PostgreSQL database to compare the backends.
    #[arg(long)]
    store: Option<String>,
    /// The daemon's worker_idle (idle mode: how soon workers are reaped).
    #[arg(long, value_parser = humantime::parse_duration)]
    worker_idle: Option<Duration>,
    /// RUST_LOG for the target.
    #[arg(long, default_value = "warn")]
    log: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Closed loop: how long a buyer waits after a reply before writing again (a person
    /// thinking; keeps one fast buyer under the daemon's per-chat reply limit).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    think: Duration,
    /// Write the report as JSON to this file (`-` for standard output).
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match cli.command {
        Commands::Bare { gateways, token } => {
            runtime.block_on(xiaoer::load::bare::run(&gateways, token.as_deref()))?;
            Ok(())
        }
        Commands::Run(args) => runtime.block_on(run(*args)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let load_binary = std::env::current_exe().context("cannot find this program's path")?;
    let xiaoer = match &args.xiaoer {
        Some(path) => path.clone(),
        None => load_binary.with_file_name("xiaoer"),
    };
    if !xiaoer.exists() && !matches!(args.target, Target::Bare) {
        bail!(
            "no xiaoer binary at {} (build it with `cargo build --release`, or pass --xiaoer)",
            xiaoer.display()
        );
    }
    let mix = match &args.messages {
        Some(file) => Mix::from_file(file, &args.rules, &args.replies)?,
        None => Mix::from_examples(&args.rules, &args.replies)?,
    };
    mix.check(args.escalate)?;
    eprintln!(
        "mix: {} answered texts, {} escalating, {} silent ones left out",
        mix.answers.len(),
        mix.escalations.len(),
        mix.silent
    );
    let mode = match args.mode {
        ModeArg::Closed => Mode::Closed,
        ModeArg::Open => Mode::Open { rate: args.rate },
        ModeArg::Ramp => Mode::Ramp {
            from: args.from,
            to: args.to,
            factor: args.factor,
            step: args.step,
        },
        ModeArg::Idle => Mode::Idle { chats: args.chats },
    };
    let worker_idle = args.worker_idle.unwrap_or(match mode {
        Mode::Idle { .. } => Duration::from_secs(2),
        _ => Duration::from_secs(300),
    });
    let settings = Settings {
        mode,
        buyers: args.buyers.max(1),
        shops: args.shops.max(1),
        connections: args.connections.max(1),
        duration: args.duration,
        warmup: args.warmup,
        escalate: args.escalate,
        mix: Arc::new(mix),
        xiaoer,
        load_binary,
        rules: args.rules.clone(),
        replies: args.replies.clone(),
        extra_rules: args.extra_rules,
        worker_idle,
        log: args.log.clone(),
        then: args.then_rate.map(|rate| (rate, args.then_duration)),
        seed: args.seed,
        think: args.think,
        store: args.store.clone(),
    };
    let mut comparison = Comparison {
        date: jiff::Timestamp::now().to_string(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        bare: None,
        xiaoer: None,
        ratio: None,
    };
    if matches!(args.target, Target::Bare | Target::Both) {
        let report = xiaoer::load::run(&settings, TargetKind::Bare).await?;
        print!("{}", xiaoer::load::summary(&report));
        comparison.bare = Some(report);
    }
    if matches!(args.target, Target::Xiaoer | Target::Both) {
        let report = xiaoer::load::run(&settings, TargetKind::Xiaoer).await?;
        print!("{}", xiaoer::load::summary(&report));
        comparison.xiaoer = Some(report);
    }
    let comparison = comparison.with_ratios();
    if let Some(r) = &comparison.ratio {
        println!(
            "xiaoer ÷ bare: throughput {:.2} · p50 {:.2} · p99 {:.2} · cpu per message {}",
            r.throughput,
            r.p50,
            r.p99,
            r.cpu_per_message
                .map(|c| format!("{c:.2}"))
                .unwrap_or_else(|| "?".into())
        );
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&comparison)?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}
