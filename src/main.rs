//! The `xiaoer` binary: parses the command line and calls into the library.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::mpsc::Receiver;
use tokio_util::sync::CancellationToken;
use xiaoer::cli::{self, RuleDirs};
use xiaoer::diagnostics::stderr_wants_colour;

#[derive(Parser)]
#[command(
    name = "xiaoer",
    version,
    about = "店小二: an online shop's always-on first responder"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the responder next to a OneBot 12 chat gateway.
    Run(cli::run::RunArgs),
    /// Start a development gateway with a buyer chat page and the responder, on this machine.
    Demo(cli::demo::DemoArgs),
    /// Validate rule and reply files and run every rule's examples.
    Check(RuleDirs),
    /// Decide one buyer message per stdin line; print one JSON object per line.
    Route(RuleDirs),
    /// Show how one message is decided: matches, winner, reply.
    Explain {
        /// The buyer message.
        text: String,
        #[command(flatten)]
        dirs: RuleDirs,
    },
    /// Score routing on a labelled JSONL file.
    Eval {
        /// Labelled messages, one JSON object a line.
        file: PathBuf,
        #[command(flatten)]
        dirs: RuleDirs,
        /// How many of the weakest labels to list.
        #[arg(long, default_value_t = 15)]
        worst: usize,
        /// Also print every misrouted message as a JSON line on stdout.
        #[arg(long)]
        misses: bool,
        /// Print the scores as JSON instead of the report.
        #[arg(long)]
        json: bool,
        /// Use another model threshold, e.g. `--threshold answer=0.6` (repeatable).
        #[arg(long, value_name = "NAME=VALUE")]
        threshold: Vec<String>,
        /// Score at every threshold from 0.30 to 0.99 for one threshold (`answer`, `escalate`,
        /// `quiet`, `overrule_weak`, `overrule_weak_quiet`, `overrule_answer`, or `unmatched` for the first three) and
        /// print the curve.
        #[arg(long, value_name = "NAME")]
        sweep: Option<String>,
        /// Decide by the model alone (no rules, no thresholds), to see how far it carries.
        #[arg(long)]
        model_only: bool,
    },
    /// Build the learned model from rules/training/*.tsv and every rule's examples.
    Train {
        #[command(flatten)]
        dirs: RuleDirs,
        /// Where to write the model (default: the `file` in rules/model/model.toml).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Look at the human queues.
    Queue(cli::queue::QueueArgs),
    /// Say whether a shop's people are in at a moment, and when they are next.
    Hours(cli::hours::HoursArgs),
    /// Manage console accounts.
    Agent(cli::agent::AgentArgs),
    /// The shift or weekly report: volumes, response times, queues, topics, unanswered
    /// messages, rules that never fire, answers that did not help.
    Report(cli::report::ReportArgs),
    /// The instances sharing a PostgreSQL store, the shops each answers, lease ages and the
    /// unhandled backlog.
    Status(cli::status::StatusArgs),
}

/// A faster allocator: rule loading and the hot path allocate many small strings.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line; most of xiaoer's messages already quote their cause,
/// so a cause is only added when its text is not there yet.
fn describe(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

fn load(dirs: &RuleDirs) -> anyhow::Result<xiaoer::rules::RuleSet> {
    match dirs.load() {
        Ok(loaded) => Ok(loaded.rules),
        Err(failure) => {
            eprint!(
                "{}",
                failure
                    .sources
                    .render(&failure.diagnostics, stderr_wants_colour())
            );
            anyhow::bail!("cannot load the rules (run `xiaoer check` for details)")
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Runs a long-lived service with SIGTERM/Ctrl-C wired to its shutdown and SIGHUP to reload.
fn serve<F, E>(service: impl FnOnce(CancellationToken, Receiver<()>) -> F) -> anyhow::Result<()>
where
    F: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    runtime()?.block_on(async {
        let shutdown = CancellationToken::new();
        let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(4);
        cli::run::handle_signals(shutdown.clone(), reload_tx);
        service(shutdown, reload_rx).await
    })?;
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            cli::run::init_logging(args.log_format);
            let settings = args.settings()?;
            serve(|shutdown, reload| xiaoer::daemon::run(settings, shutdown, reload))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            cli::run::init_logging(cli::run::LogFormat::Text);
            serve(|shutdown, reload| cli::demo::run(args, shutdown, reload))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(dirs) => {
            let ok = cli::check::run(
                &dirs,
                stderr_wants_colour(),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            )?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Route(dirs) => {
            let rules = load(&dirs)?;
            let stdin = std::io::stdin().lock();
            let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
            cli::route::run(&rules, stdin, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain { text, dirs } => {
            let rules = load(&dirs)?;
            print!("{}", cli::explain::explain(&rules, &text));
            Ok(ExitCode::SUCCESS)
        }
        Command::Train { dirs, out } => {
            cli::train::run(&dirs, out, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Queue(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(cli::queue::run(&args, &mut std::io::stdout().lock()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Hours(args) => {
            cli::hours::run(&args, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(cli::agent::run(
                &args,
                &mut std::io::stdin().lock(),
                &mut std::io::stdout().lock(),
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(cli::status::run(&args, &mut std::io::stdout().lock()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(cli::report::run(&args, &mut std::io::stdout().lock()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            file,
            dirs,
            worst,
            misses,
            json,
            threshold,
            sweep,
            model_only,
        } => {
            let rules = load(&dirs)?;
            let mut thresholds = rules.model().map(|m| *m.thresholds());
            for setting in &threshold {
                let Some((name, value)) = setting.split_once('=') else {
                    anyhow::bail!("--threshold {setting}: write NAME=VALUE, e.g. answer=0.6");
                };
                let value: f32 = value
                    .trim()
                    .parse()
                    .with_context(|| format!("--threshold {setting}: the value is not a number"))?;
                let Some(thresholds) = thresholds.as_mut() else {
                    anyhow::bail!(
                        "--threshold: these rules have no model (rules/model/model.toml)"
                    );
                };
                if !thresholds.set(name.trim(), value) {
                    anyhow::bail!(
                        "--threshold {setting}: no threshold {name}; the names are answer, escalate, quiet, overrule_weak, overrule_weak_quiet, overrule_answer, unmatched"
                    );
                }
            }
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            if let Some(name) = sweep {
                let Some(base) = thresholds else {
                    anyhow::bail!("--sweep: these rules have no model (rules/model/model.toml)");
                };
                let mut out = std::io::stdout().lock();
                cli::eval::sweep_header(&name, &mut out)?;
                for value in cli::eval::sweep_values() {
                    let mut tried = base;
                    if !tried.set(&name, value) {
                        anyhow::bail!("--sweep {name}: no such threshold");
                    }
                    let scores = cli::eval::score(
                        &rules,
                        cli::eval::How::Routing(Some(&tried)),
                        text.as_bytes(),
                        |_| {},
                        |_| {},
                    )?;
                    cli::eval::sweep_row(value, &scores, &mut out)?;
                }
                return Ok(ExitCode::SUCCESS);
            }
            let show_progress = std::io::stderr().is_terminal();
            let stdout = std::io::stdout();
            let scores = cli::eval::score(
                &rules,
                if model_only {
                    cli::eval::How::ModelOnly
                } else {
                    cli::eval::How::Routing(thresholds.as_ref())
                },
                text.as_bytes(),
                |done| {
                    if show_progress {
                        eprint!("\r{done} messages scored…");
                    }
                },
                |miss| {
                    if misses && let Ok(line) = serde_json::to_string(miss) {
                        let _ = writeln!(stdout.lock(), "{line}");
                    }
                },
            )?;
            if show_progress {
                eprint!("\r\x1b[K");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&scores)?);
            } else if misses {
                cli::eval::report(&scores, worst, &mut std::io::stderr().lock())?;
            } else {
                cli::eval::report(&scores, worst, &mut std::io::stdout().lock())?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
