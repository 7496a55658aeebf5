//! Daemon settings, layered: built-in defaults < the config file < `XIAOER_*` environment
//! variables < command-line flags, read once at start-up and checked as a whole.
//!
//! # Reading
//!
//! The file is TOML (`deploy/xiaoer.toml` shows every setting with its default). It is read in two
//! steps, like ripgrep's low- and high-level arguments: first into private raw structs that keep
//! every value as written, with its position (`Spanned<toml::Value>`), then value by value into
//! the typed [`Config`]. A wrong value therefore does not hide the next one: [`Config::load`]
//! reports every problem at once, each naming the setting and where its value came from (file and
//! line, environment variable or flag). Only a file that is not TOML, that has a key xiaoer does
//! not know, or whose shape is wrong (text where a `[[gateway]]` list belongs) stops at the first
//! problem: unknown keys are errors (`deny_unknown_fields`) so a typo never silently falls back to
//! a default. Keys renamed since earlier versions are still
//! recognised, only to say what they are called now.
//!
//! # Durations
//!
//! Durations are written with units, `"12h"`, `"30min"`, `"1h 30m"`, and parsed by `humantime`:
//! a small crate without dependencies or features whose format is the one Rust tools commonly
//! accept. The raw step parses the strings itself rather than through a serde adapter crate, so
//! that a bad value's message can name its setting and show an example.
//!
//! # Checking
//!
//! [`Config::validate`] checks bounds and shapes that the types cannot: durations within limits
//! that keep timestamp arithmetic safe ([`MAX_DURATION`]), websocket URLs with a host, a gateway
//! at all. `Config::load` calls it after every layer is applied; code that builds a `Config`
//! itself may call it too.
//!
//! # Environment
//!
//! Every `XIAOER_*` variable goes through one table ([`OVERRIDES`]) that says what it sets, which
//! flag sets the same, and how its text is parsed. A `XIAOER_*` variable not in the table is
//! probably a typo; it is not an error (the environment is shared with other tools) but comes back
//! in [`Config::warnings`] for the caller to log. Nothing here prints.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use toml::{Spanned, Value};

use crate::console::ConsoleSettings;
use crate::conversation::ConversationPolicy;
use crate::escalation::EscalationPolicy;
use crate::escalation::clock::{ClockRules, CountedHours, Platform, ShopClock, ShopClocks};
use crate::escalation::hours::{self, BusinessHours, DateRange, Shift};
use crate::gateway::GatewayConfig;
use crate::model::Queue;

/// The longest duration any setting may have: far beyond anything sensible, and small enough
/// that adding it to a millisecond timestamp can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Everything `xiaoer run` needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The data directory; the default store is `xiaoer.db` in it.
    pub data: PathBuf,
    pub rules: PathBuf,
    pub replies: PathBuf,
    /// Where the store is; `None` means [`StoreLocation::Sqlite`] at `<data>/xiaoer.db` (see
    /// [`Config::store_location`]).
    pub store: Option<StoreLocation>,
    /// Gateways to connect to (forward websocket; xiaoer is the client).
    pub gateways: Vec<GatewaySettings>,
    /// Per-shop settings, by shop account id (`self.user_id`).
    pub shops: Vec<ShopSettings>,
    pub conversation: ConversationPolicy,
    pub escalation: EscalationPolicy,
    /// Watch the rule and reply files and reload on change (SIGHUP always reloads).
    pub watch: bool,
    /// Chat workers idle this long are stopped (they start again on the next message).
    pub worker_idle: Duration,
    /// The agent console (`[console]`); off unless `listen` is set.
    pub console: ConsoleSettings,
    /// Where `/metrics`, `/healthz` and `/readyz` are served on their own (`[metrics] listen`,
    /// `--metrics`); they are on the console's listener too when it is on.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Where notifications go (`[[notify]]`); none by default.
    pub notify: Vec<crate::notify::Target>,
    /// How failed notifications are retried (`[notifications]`).
    pub notify_retry: crate::notify::RetryPolicy,
    /// How instances sharing a PostgreSQL store divide the shops (`[cluster]`).
    pub cluster: ClusterSettings,
    /// Where each setting's value came from, for error messages. [`Config::load`] fills it in; a
    /// `Config` built in code can leave it empty (its errors then name no origin).
    pub origins: Origins,
    /// Things the operator should hear about that do not stop the daemon, such as an unknown
    /// `XIAOER_*` variable: one lowercase sentence each, for the caller to log as warnings.
    pub warnings: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: PathBuf::from("data"),
            rules: PathBuf::from("rules"),
            replies: PathBuf::from("replies"),
            store: None,
            gateways: Vec::new(),
            shops: Vec::new(),
            conversation: ConversationPolicy::default(),
            escalation: EscalationPolicy::default(),
            watch: true,
            worker_idle: Duration::from_secs(300),
            console: ConsoleSettings::default(),
            metrics_listen: None,
            notify: Vec::new(),
            notify_retry: crate::notify::RetryPolicy::default(),
            cluster: ClusterSettings::default(),
            origins: Origins::default(),
            warnings: Vec::new(),
        }
    }
}

/// `[cluster]`: several instances on one PostgreSQL store (see `cluster`). A SQLite store has
/// one daemon, and these settings do nothing there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// A shop whose owner has not renewed its lease for this long is taken over by another
    /// instance. Shorter moves shops sooner after a crash and costs more database round trips
    /// (one renewal per instance every quarter of it, at most every second).
    pub lease_ttl: Duration,
    /// This instance's name in `xiaoer status`; by default the host, the process id and four
    /// random hex digits. Two running instances must not share a name.
    pub instance: Option<String>,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            lease_ttl: Duration::from_secs(10),
            instance: None,
        }
    }
}

/// One gateway connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// `ws://` or `wss://` URL of the OneBot 12 forward websocket.
    pub url: String,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// A name for logs; defaults to the URL.
    pub name: Option<String>,
}

impl GatewaySettings {
    pub fn client_config(&self) -> GatewayConfig {
        let mut config = GatewayConfig::new(self.url.clone());
        if let Some(token) = &self.token {
            config = config.with_token(token.clone());
        }
        config.with_name(self.name.clone().unwrap_or_else(|| self.url.clone()))
    }
}

/// Settings of one shop account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShopSettings {
    /// The shop account id (`self.user_id` in OneBot 12).
    pub id: String,
    /// How the shop is named to buyers (`{shop}`).
    pub name: Option<String>,
    /// A directory with the shop's own `rules/` and `replies/` laid over the shared set.
    pub overlay: Option<PathBuf>,
    /// When the shop's people are in (`[shop.hours]`); always, when the file gives none.
    pub hours: BusinessHours,
    /// How the shop's platform times its answers (`[shop.clock]`); taobao's rules, when the
    /// file gives none.
    pub clock: ClockRules,
}

/// Where the store is, parsed from a store URL (`store`, `XIAOER_STORE`, `--store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// `sqlite://PATH`: a SQLite file. `sqlite://data/xiaoer.db` is relative to the working
    /// directory, `sqlite:///var/lib/xiaoer/xiaoer.db` (three slashes) is absolute.
    Sqlite(PathBuf),
    /// `postgres://…` or `postgresql://…`, kept whole for the PostgreSQL driver (see
    /// `docs/postgres.md`).
    Postgres(String),
}

/// Why a store URL was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct StoreUrlError {
    message: String,
}

impl FromStr for StoreLocation {
    type Err = StoreUrlError;

    fn from_str(url: &str) -> Result<StoreLocation, StoreUrlError> {
        let error = |message: String| Err(StoreUrlError { message });
        let Some((scheme, rest)) = url.split_once("://") else {
            return error(format!(
                "{url:?} is not a store URL: write sqlite://{url} for a SQLite file, or postgres://…"
            ));
        };
        if scheme.eq_ignore_ascii_case("sqlite") {
            if rest.is_empty() {
                return error(format!(
                    "{url:?} has no path: write it like sqlite://data/xiaoer.db"
                ));
            }
            if rest.contains('?') {
                return error(format!(
                    "{url:?} has options after `?`, which xiaoer does not take: it sets the SQLite options itself"
                ));
            }
            Ok(StoreLocation::Sqlite(PathBuf::from(rest)))
        } else if scheme.eq_ignore_ascii_case("postgres")
            || scheme.eq_ignore_ascii_case("postgresql")
        {
            Ok(StoreLocation::Postgres(url.to_string()))
        } else {
            error(format!(
                "{url:?} is not a store xiaoer knows: use sqlite://PATH or postgres://…"
            ))
        }
    }
}

impl fmt::Display for StoreLocation {
    /// The URL, with a PostgreSQL password replaced by `***` so that it can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            StoreLocation::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                let authority_end = rest.find('/').unwrap_or(rest.len());
                let (authority, tail) = rest.split_at(authority_end);
                match authority.rsplit_once('@') {
                    Some((user_info, host)) => {
                        let user = user_info.split(':').next().unwrap_or("");
                        let hidden = if user_info.contains(':') { ":***" } else { "" };
                        write!(f, "{scheme}://{user}{hidden}@{host}{tail}")
                    }
                    None => f.write_str(url),
                }
            }
        }
    }
}

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of the config file.
    File { path: PathBuf, line: usize },
    /// An environment variable, e.g. `XIAOER_STORE`.
    Env(&'static str),
    /// A command-line flag, e.g. `--gateway`.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{} line {line}", path.display()),
            Origin::Env(name) | Origin::Flag(name) => f.write_str(name),
        }
    }
}

/// Where each setting of a [`Config`] came from, by setting name (`conversation.pause`); settings
/// left at their defaults have no entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins(BTreeMap<String, Origin>);

impl Origins {
    /// Where `setting` came from. Gateways and shops are numbered from 0 by their position:
    /// `gateway.0.url`, `shop.1.id`.
    pub fn get(&self, setting: &str) -> Option<&Origin> {
        self.0.get(setting)
    }

    fn set(&mut self, setting: impl Into<String>, origin: Origin) {
        self.0.insert(setting.into(), origin);
    }
}

/// One thing wrong with the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    setting: Option<String>,
    origin: Option<Origin>,
    message: String,
}

impl Problem {
    fn new(setting: impl Into<String>, origin: Option<Origin>, message: impl Into<String>) -> Self {
        Problem {
            setting: Some(setting.into()),
            origin,
            message: message.into(),
        }
    }

    /// The setting, as written in the file (`conversation.pause`, `gateway.url`), if the problem
    /// is about one.
    pub fn setting(&self) -> Option<&str> {
        self.setting.as_deref()
    }

    /// Where the offending value came from, when known.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }

    /// What is wrong, without the setting and origin.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.setting, &self.origin) {
            (Some(setting), Some(origin)) => write!(f, "{setting} ({origin}): {}", self.message),
            (Some(setting), None) => write!(f, "{setting}: {}", self.message),
            (None, Some(origin)) => write!(f, "{origin}: {}", self.message),
            (None, None) => f.write_str(&self.message),
        }
    }
}

/// Why the settings cannot be used: every problem found, at least one.
///
/// It also carries the warnings gathered on the way (see [`Config::warnings`]), because a typo in
/// a variable's name is often the reason for a problem (`XIAOER_GATWAY`, then no gateway); its
/// message ends with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<Problem>,
    warnings: Vec<String>,
}

impl ConfigError {
    fn one(problem: Problem) -> Self {
        ConfigError {
            problems: vec![problem],
            warnings: Vec::new(),
        }
    }

    fn from_problems(problems: Vec<Problem>) -> Result<(), ConfigError> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems,
                warnings: Vec::new(),
            })
        }
    }

    /// Every problem, in the order found (file, then environment and flags, then checks).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The warnings gathered before the problems stopped the loading.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "{one}")?,
            many => {
                write!(f, "{} problems with the settings:", many.len())?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
            }
        }
        for warning in &self.warnings {
            write!(f, "\nwarning: {warning}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Values given on the command line (or gathered from the environment), which override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub gateway: Option<String>,
    pub token: Option<String>,
    pub data: Option<PathBuf>,
    pub rules: Option<PathBuf>,
    pub replies: Option<PathBuf>,
    pub watch: Option<bool>,
    /// A store URL, parsed when applied so that a bad one is reported with its origin.
    pub store: Option<String>,
    /// Where the console listens, parsed when applied.
    pub console: Option<String>,
    /// Where `/metrics` listens on its own, parsed when applied.
    pub metrics: Option<String>,
}

/// One setting that the environment (and perhaps a flag) can set.
pub struct Knob {
    /// The environment variable.
    pub env: &'static str,
    /// The `xiaoer run` flag that sets the same, if any.
    pub flag: Option<&'static str>,
    /// The setting's name in the file and in error messages.
    pub setting: &'static str,
    /// Puts the variable's text into the overrides, or says why it cannot.
    parse: fn(&mut Overrides, &str) -> Result<(), String>,
}

/// Every `XIAOER_*` variable xiaoer reads. Flags win over these, these win over the file.
pub const OVERRIDES: &[Knob] = &[
    Knob {
        env: "XIAOER_CONFIG",
        flag: Some("--config"),
        setting: "config",
        // The command line reads it (it names the file, so it cannot come from the file).
        parse: |_, _| Ok(()),
    },
    Knob {
        env: "XIAOER_GATEWAY",
        flag: Some("--gateway"),
        setting: "gateway.url",
        parse: |o, v| {
            o.gateway = Some(v.to_string());
            Ok(())
        },
    },
    Knob {
        env: "XIAOER_TOKEN",
        flag: Some("--token"),
        setting: "gateway.token",
        parse: |o, v| {
            o.token = Some(v.to_string());
            Ok(())
        },
    },
    Knob {
        env: "XIAOER_DATA",
        flag: Some("--data"),
        setting: "data",
        parse: |o, v| {
            o.data = Some(v.into());
            Ok(())
        },
    },
    Knob {
        env: "XIAOER_RULES",
        flag: Some("--rules"),
        setting: "rules",
        parse: |o, v| {
            o.rules = Some(v.into());
            Ok(())
        },
    },
    Knob {
        env: "XIAOER_REPLIES",
        flag: Some("--replies"),
        setting: "replies",
        parse: |o, v| {
            o.replies = Some(v.into());
            Ok(())
        },
    },
    Knob {
        env: "XIAOER_WATCH",
        flag: None,
        setting: "watch",
        parse: |o, v| {
            o.watch = Some(parse_switch(v)?);
            Ok(())
        },
    },
    Knob {
        env: "XIAOER_CONSOLE",
        flag: Some("--console"),
        setting: "console.listen",
        parse: |o, v| {
            o.console = Some(v.to_string());
            Ok(())
        },
    },
    Knob {
        env: "XIAOER_METRICS",
        flag: Some("--metrics"),
        setting: "metrics.listen",
        parse: |o, v| {
            o.metrics = Some(v.to_string());
            Ok(())
        },
    },
    Knob {
        env: "XIAOER_STORE",
        flag: Some("--store"),
        setting: "store",
        parse: |o, v| {
            o.store = Some(v.to_string());
            Ok(())
        },
    },
];

fn parse_switch(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("expected true or false, found {text:?}")),
    }
}

impl Config {
    /// Reads the file (if any), then applies `env` (the process environment; only `XIAOER_*`
    /// variables are looked at) and `flags`, then [validates](Config::validate) the result.
    ///
    /// Unknown `XIAOER_*` variables end up in [`Config::warnings`].
    ///
    /// # Errors
    ///
    /// An unreadable file or one that is not TOML (that problem alone), or else every bad value
    /// in the file, the environment and the flags, and every problem `validate` finds.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let (mut config, mut problems) = match file {
            Some(path) => read_file(path)?,
            None => (Config::default(), Vec::new()),
        };
        let mut from_env = Overrides::default();
        for (name, value) in env {
            if !name.starts_with("XIAOER_") {
                continue;
            }
            match OVERRIDES.iter().find(|knob| knob.env == name) {
                Some(knob) => {
                    if let Err(message) = (knob.parse)(&mut from_env, &value) {
                        problems.push(Problem::new(
                            knob.setting,
                            Some(Origin::Env(knob.env)),
                            message,
                        ));
                    }
                }
                None => config.warnings.push(unknown_variable(&name)),
            }
        }
        config.apply(&from_env, flags, &mut problems);
        problems.extend(config.problems());
        ConfigError::from_problems(problems).map_err(|mut error| {
            error.warnings = config.warnings.clone();
            error
        })?;
        Ok(config)
    }

    /// Reads a config file on its own, without environment, flags or [`Config::validate`].
    ///
    /// # Errors
    ///
    /// The file cannot be read or is not TOML, or has unknown keys or bad values (all of them).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let (config, problems) = read_file(path)?;
        ConfigError::from_problems(problems)?;
        Ok(config)
    }

    /// Checks what the types cannot: durations and counts within bounds, websocket URLs with a
    /// host, at least one gateway, shop ids present and distinct, no empty paths or waits.
    ///
    /// # Errors
    ///
    /// Every problem found, each naming its setting and, from [`Config::origins`], where the value
    /// came from.
    pub fn validate(&self) -> Result<(), ConfigError> {
        ConfigError::from_problems(self.problems())
    }

    /// The store to open: `store` if set, else the SQLite file `xiaoer.db` in the data directory.
    pub fn store_location(&self) -> StoreLocation {
        self.store
            .clone()
            .unwrap_or_else(|| StoreLocation::Sqlite(self.data.join("xiaoer.db")))
    }

    /// How long a chat worker may be idle before it is stopped. Never zero, even for a `Config`
    /// that was not validated, because the daemon ticks at half this interval.
    pub fn worker_idle(&self) -> Duration {
        self.worker_idle.max(Duration::from_secs(1))
    }

    /// How each shop account is named to buyers and agents, for the shops that have a name.
    pub fn shop_names(&self) -> HashMap<String, String> {
        self.shops
            .iter()
            .filter_map(|s| s.name.clone().map(|name| (s.id.clone(), name)))
            .collect()
    }

    pub fn shop(&self, id: &str) -> Option<&ShopSettings> {
        self.shops.iter().find(|s| s.id == id)
    }

    /// Each shop's business hours, for the shops that have a schedule (the others are always
    /// open).
    pub fn shop_hours(&self) -> HashMap<String, BusinessHours> {
        self.shops
            .iter()
            .filter(|s| !s.hours.is_always_open())
            .map(|s| (s.id.clone(), s.hours.clone()))
            .collect()
    }

    /// Each shop's response clock with the hours it may count; shops not listed get the taobao
    /// rules, counted around the clock.
    pub fn shop_clocks(&self) -> ShopClocks {
        ShopClocks::new(
            self.shops
                .iter()
                .map(|s| {
                    (
                        s.id.clone(),
                        ShopClock::new(s.clock.clone(), s.hours.clone()),
                    )
                })
                .collect(),
        )
    }

    /// Lays the environment's and the flags' values over the file's; a flag wins over the
    /// environment setting the same thing.
    fn apply(&mut self, env: &Overrides, flags: &Overrides, problems: &mut Vec<Problem>) {
        fn pick<'a, T>(
            setting: &str,
            flag: &'a Option<T>,
            env: &'a Option<T>,
        ) -> Option<(&'a T, Origin)> {
            let knob = OVERRIDES.iter().find(|knob| knob.setting == setting)?;
            match flag {
                // Only code sets a flag override that has no flag of its own (`watch`).
                Some(value) => Some((value, Origin::Flag(knob.flag.unwrap_or("a flag")))),
                None => env.as_ref().map(|value| (value, Origin::Env(knob.env))),
            }
        }

        let token = pick("gateway.token", &flags.token, &env.token);
        if let Some((url, origin)) = pick("gateway.url", &flags.gateway, &env.gateway) {
            // A gateway given on the command line or in the environment replaces the file's list.
            self.origins.0.retain(|key, _| !key.starts_with("gateway."));
            self.origins.set("gateway.0.url", origin);
            self.gateways = vec![GatewaySettings {
                url: url.clone(),
                token: token.as_ref().map(|(token, _)| (*token).clone()),
                name: None,
            }];
            if let Some((_, origin)) = &token {
                self.origins.set("gateway.0.token", origin.clone());
            }
        } else if let Some((token, origin)) = &token {
            for (i, gateway) in self.gateways.iter_mut().enumerate() {
                gateway.token = Some((*token).clone());
                self.origins
                    .set(format!("gateway.{i}.token"), origin.clone());
            }
        }
        let paths = [
            ("data", &flags.data, &env.data, &mut self.data),
            ("rules", &flags.rules, &env.rules, &mut self.rules),
            ("replies", &flags.replies, &env.replies, &mut self.replies),
        ];
        for (setting, flag, env, field) in paths {
            if let Some((path, origin)) = pick(setting, flag, env) {
                *field = path.clone();
                self.origins.set(setting, origin);
            }
        }
        if let Some((watch, origin)) = pick("watch", &flags.watch, &env.watch) {
            self.watch = *watch;
            self.origins.set("watch", origin);
        }
        if let Some((addr, origin)) = pick("console.listen", &flags.console, &env.console) {
            match socket_address(addr) {
                Ok(addr) => {
                    self.console.listen = Some(addr);
                    self.origins.set("console.listen", origin);
                }
                Err(error) => problems.push(Problem::new("console.listen", Some(origin), error)),
            }
        }
        if let Some((addr, origin)) = pick("metrics.listen", &flags.metrics, &env.metrics) {
            match socket_address(addr) {
                Ok(addr) => {
                    self.metrics_listen = Some(addr);
                    self.origins.set("metrics.listen", origin);
                }
                Err(error) => problems.push(Problem::new("metrics.listen", Some(origin), error)),
            }
        }
        if let Some((url, origin)) = pick("store", &flags.store, &env.store) {
            match url.parse() {
                Ok(location) => {
                    self.store = Some(location);
                    self.origins.set("store", origin);
                }
                Err(error) => problems.push(Problem::new("store", Some(origin), error.to_string())),
            }
        }
    }

    fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut report = |shown: &str, key: &str, message: String| {
            problems.push(Problem::new(shown, self.origins.get(key).cloned(), message));
        };
        for (setting, path) in [
            ("data", &self.data),
            ("rules", &self.rules),
            ("replies", &self.replies),
        ] {
            if path.as_os_str().is_empty() {
                report(setting, setting, "is empty: name a directory".into());
            }
        }
        if let Some(StoreLocation::Sqlite(path)) = &self.store
            && path.as_os_str().is_empty()
        {
            report("store", "store", "names no SQLite file".into());
        }
        if self.gateways.is_empty() {
            report(
                "gateway",
                "gateway",
                "no gateway to connect to: pass --gateway URL, set XIAOER_GATEWAY, or add a [[gateway]] to the config file".into(),
            );
        }
        for (i, gateway) in self.gateways.iter().enumerate() {
            if let Err(message) = check_gateway_url(&gateway.url) {
                report("gateway.url", &format!("gateway.{i}.url"), message);
            }
            if gateway
                .token
                .as_deref()
                .is_some_and(|t| t.trim().is_empty())
            {
                report(
                    "gateway.token",
                    &format!("gateway.{i}.token"),
                    "is empty: leave it out to connect without a token".into(),
                );
            }
        }
        let mut ids = HashSet::new();
        for (i, shop) in self.shops.iter().enumerate() {
            let key = format!("shop.{i}.id");
            if shop.id.is_empty() {
                report(
                    "shop.id",
                    &key,
                    "missing: every [[shop]] needs the shop account's id".into(),
                );
            } else if !ids.insert(shop.id.as_str()) {
                report(
                    "shop.id",
                    &key,
                    format!("shop {:?} is listed twice", shop.id),
                );
            }
            for (name, message) in shop.clock.problems() {
                report(
                    &format!("shop.clock.{name}"),
                    &format!("shop.{i}.clock.{name}"),
                    message,
                );
            }
        }
        if let Some(message) =
            duration_out_of_bounds(self.worker_idle, Duration::from_secs(1), MAX_DURATION)
        {
            report("worker_idle", "worker_idle", message);
        }
        if let Some(message) = duration_out_of_bounds(
            self.cluster.lease_ttl,
            Duration::from_secs(1),
            Duration::from_secs(600),
        ) {
            report("cluster.lease_ttl", "cluster.lease_ttl", message);
        }
        if self
            .cluster
            .instance
            .as_deref()
            .is_some_and(|name| name.is_empty() || name.len() > 100)
        {
            report(
                "cluster.instance",
                "cluster.instance",
                "an instance name is 1 to 100 characters".to_owned(),
            );
        }
        for (key, message) in self.conversation.problems() {
            let key = format!("conversation.{key}");
            report(&key, &key, message);
        }
        for (key, message) in self.escalation.problems() {
            let key = format!("escalation.{key}");
            report(&key, &key, message);
        }
        let console = &self.console;
        for (key, value, min) in [
            (
                "session_idle",
                console.session_idle,
                Duration::from_secs(60),
            ),
            ("session_max", console.session_max, Duration::from_secs(60)),
            ("lease", console.lease, Duration::from_secs(60)),
        ] {
            if let Some(message) = duration_out_of_bounds(value, min, MAX_DURATION) {
                let key = format!("console.{key}");
                report(&key, &key, message);
            }
        }
        for (queue, target) in &console.sla {
            if let Some(message) =
                duration_out_of_bounds(*target, Duration::from_secs(10), MAX_DURATION)
            {
                report("console.sla", "console.sla", format!("{queue}: {message}"));
            }
        }
        if let Some(url) = &console.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            report(
                "console.public_url",
                "console.public_url",
                format!("{url:?} must start with http:// or https://"),
            );
        }
        let retry = &self.notify_retry;
        for (key, value, min, max) in [
            (
                "retry_first",
                retry.first,
                Duration::from_millis(100),
                Duration::from_secs(3600),
            ),
            (
                "retry_cap",
                retry.cap,
                retry.first,
                Duration::from_secs(3600),
            ),
            (
                "give_up_after",
                retry.give_up_after,
                retry.cap,
                MAX_DURATION,
            ),
        ] {
            if let Some(message) = duration_out_of_bounds(value, min, max) {
                let key = format!("notifications.{key}");
                report(&key, &key, message);
            }
        }
        problems
    }
}

/// Why `value` is outside `min..=max`, in words, or `None` when it is inside.
pub fn duration_out_of_bounds(value: Duration, min: Duration, max: Duration) -> Option<String> {
    if value < min {
        Some(format!(
            "{} is too short: it must be at least {}",
            show_duration(value),
            show_duration(min)
        ))
    } else if value > max {
        Some(format!(
            "{} is too long: it must be at most {}",
            show_duration(value),
            show_duration(max)
        ))
    } else {
        None
    }
}

/// A duration the way the file writes it: `45d`, `1h 30min`, `500ms`. Not humantime's own
/// formatter, which counts in months of 30.44 days and would turn `45d` into
/// `1month 14days 13h 26m 24s`.
pub fn show_duration(duration: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3600, "h"), (60, "min"), (1, "s")];
    let mut seconds = duration.as_secs();
    let mut parts = Vec::new();
    for (size, unit) in UNITS {
        if seconds >= size {
            parts.push(format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    let millis = duration.subsec_millis();
    if millis > 0 || parts.is_empty() {
        parts.push(if millis == 0 && duration.is_zero() {
            "0s".to_string()
        } else {
            format!("{millis}ms")
        });
    }
    parts.join(" ")
}

/// A small check of a gateway URL, enough to refuse at start-up what could never connect
/// (instead of retrying it forever): a `ws://` or `wss://` scheme, a host, a numeric port.
fn check_gateway_url(url: &str) -> Result<(), String> {
    if url.is_empty() {
        return Err("missing: every gateway needs a url like \"ws://127.0.0.1:8080/\"".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "{url:?} is not a websocket URL: it must start with ws:// or wss://"
        ));
    };
    if !scheme.eq_ignore_ascii_case("ws") && !scheme.eq_ignore_ascii_case("wss") {
        return Err(format!(
            "{url:?} is not a websocket URL: it starts with {scheme}:// but must start with ws:// or wss://"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = match host_port.strip_prefix('[') {
        // An IPv6 address: `[::1]:8080`.
        Some(bracketed) => match bracketed.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, tail)) => match tail.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("{url:?} has a malformed host")),
            },
            None => return Err(format!("{url:?} has a `[` without its `]`")),
        },
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Err(format!(
            "{url:?} has no host: write it like ws://127.0.0.1:8080/"
        ));
    }
    if host.contains(|c: char| c.is_whitespace()) {
        return Err(format!("{url:?} has a space in its host"));
    }
    if let Some(port) = port
        && !matches!(port.parse::<u16>(), Ok(1..))
    {
        return Err(format!(
            "{url:?} has the port {port:?}: a port is a number from 1 to 65535"
        ));
    }
    Ok(())
}

/// The warning for a `XIAOER_*` variable that is not in [`OVERRIDES`].
fn unknown_variable(name: &str) -> String {
    let known = OVERRIDES.iter().map(|knob| knob.env);
    match closest(name, known) {
        Some(known) => {
            format!("ignoring the unknown environment variable {name}: did you mean {known}?")
        }
        None => format!("ignoring the unknown environment variable {name}"),
    }
}

/// The candidate at most two edits from `word`, if any: the likely intended name of a typo.
fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (edit_distance(word, candidate), candidate))
        .filter(|(distance, _)| *distance <= 2)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

// ---- the file, as written -------------------------------------------------------------------

/// A value as written, with where it is; absent when the key is not in the file.
type Raw = Option<Spanned<Value>>;

/// Every key the file may have, for "did you mean" hints.
const KEYS: &[&str] = &[
    "data",
    "rules",
    "replies",
    "store",
    "watch",
    "worker_idle",
    "gateway",
    "shop",
    "conversation",
    "escalation",
    "console",
    "metrics",
    "notify",
    "notifications",
    "retry_first",
    "retry_cap",
    "give_up_after",
    "listen",
    "public_url",
    "secure_cookie",
    "session_idle",
    "session_max",
    "lease",
    "sla",
    "url",
    "token",
    "name",
    "id",
    "overlay",
    "hours",
    "zone",
    "weekdays",
    "weekend",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
    "holidays",
    "workdays",
    "makeup",
    "clock",
    "platform",
    "budget",
    "counted_hours",
    "bot_counts_when_waiting",
    "warn_at",
    "cap",
    "greeting",
    "greeting_window",
    "pause",
    "human_idle",
    "max_replies",
    "reply_window",
    "fallback_limit",
    "queue_eta",
    "default_eta",
    "cluster",
    "lease_ttl",
    "instance",
];

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawConfig {
    data: Raw,
    rules: Raw,
    replies: Raw,
    store: Raw,
    watch: Raw,
    worker_idle: Raw,
    gateway: Vec<Spanned<RawGateway>>,
    shop: Vec<Spanned<RawShop>>,
    conversation: RawConversation,
    escalation: RawEscalation,
    console: RawConsole,
    metrics: RawMetrics,
    notify: Vec<Spanned<Value>>,
    notifications: RawNotifications,
    cluster: RawCluster,
    /// Renamed to `worker_idle`; read only to say so.
    worker_idle_secs: Raw,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    url: Raw,
    token: Raw,
    name: Raw,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShop {
    id: Raw,
    name: Raw,
    overlay: Raw,
    hours: Option<RawHours>,
    clock: Option<RawClock>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClock {
    platform: Raw,
    budget: Raw,
    counted_hours: Raw,
    bot_counts_when_waiting: Raw,
    warn_at: Raw,
    cap: Raw,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHours {
    zone: Raw,
    weekdays: Raw,
    weekend: Raw,
    monday: Raw,
    tuesday: Raw,
    wednesday: Raw,
    thursday: Raw,
    friday: Raw,
    saturday: Raw,
    sunday: Raw,
    holidays: Raw,
    workdays: Raw,
    makeup: Raw,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawConversation {
    greeting: Raw,
    greeting_window: Raw,
    pause: Raw,
    human_idle: Raw,
    max_replies: Raw,
    reply_window: Raw,
    // The names before durations had units; read only to say what they are called now.
    greeting_window_secs: Raw,
    pause_secs: Raw,
    human_idle_secs: Raw,
    max_replies_per_window: Raw,
    rate_window_secs: Raw,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawConsole {
    listen: Raw,
    public_url: Raw,
    secure_cookie: Raw,
    session_idle: Raw,
    session_max: Raw,
    lease: Raw,
    sla: Raw,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawNotifications {
    retry_first: Raw,
    retry_cap: Raw,
    give_up_after: Raw,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawCluster {
    lease_ttl: Raw,
    instance: Raw,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawMetrics {
    listen: Raw,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RawEscalation {
    fallback_limit: Raw,
    queue_eta: Raw,
    default_eta: Raw,
}

/// Reads and converts a file: the config (bad values left at their defaults) and every problem.
fn read_file(path: &Path) -> Result<(Config, Vec<Problem>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        ConfigError::one(Problem {
            setting: None,
            origin: None,
            message: format!("cannot read config file {}: {source}", path.display()),
        })
    })?;
    let raw: RawConfig = toml::from_str(&text).map_err(|error| {
        let origin = error.span().map(|span| Origin::File {
            path: path.to_path_buf(),
            line: line_of(&text, span.start),
        });
        let message = error.message().trim();
        ConfigError::one(match unknown_key(message) {
            Some(key) => Problem::new(
                key,
                origin,
                match closest(key, KEYS.iter().copied()) {
                    Some(known) => format!("unknown setting: did you mean `{known}`?"),
                    None => "unknown setting (deploy/xiaoer.toml lists them all)".to_string(),
                },
            ),
            None => Problem {
                setting: None,
                origin,
                message: format!("not a valid config file: {message}"),
            },
        })
    })?;
    let mut reader = FileReader {
        path,
        text: &text,
        config: Config::default(),
        problems: Vec::new(),
    };
    reader.read(raw);
    // In the order of the file, which is the order an operator fixes them in.
    reader.problems.sort_by_key(|problem| match problem.origin {
        Some(Origin::File { line, .. }) => line,
        _ => 0,
    });
    Ok((reader.config, reader.problems))
}

/// The key serde's "unknown field `x`, expected one of …" message is about.
fn unknown_key(message: &str) -> Option<&str> {
    message.strip_prefix("unknown field `")?.split('`').next()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

/// Converts raw values into a [`Config`], collecting a problem for each that does not convert.
struct FileReader<'a> {
    path: &'a Path,
    text: &'a str,
    config: Config,
    problems: Vec<Problem>,
}

impl FileReader<'_> {
    fn origin(&self, span: Range<usize>) -> Origin {
        Origin::File {
            path: self.path.to_path_buf(),
            line: line_of(self.text, span.start),
        }
    }

    /// Converts the value of `setting` (shown in messages) and records its origin under `key`.
    fn take<T>(
        &mut self,
        setting: &str,
        key: &str,
        raw: Raw,
        convert: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        let raw = raw?;
        let origin = self.origin(raw.span());
        match convert(raw.get_ref()) {
            Ok(value) => {
                self.config.origins.set(key, origin);
                Some(value)
            }
            Err(message) => {
                self.problems
                    .push(Problem::new(setting, Some(origin), message));
                None
            }
        }
    }

    /// Reports a key that was renamed, with how to write it now.
    fn renamed(&mut self, old: &str, raw: Raw, new: &str, example: impl FnOnce(&Value) -> String) {
        if let Some(raw) = raw {
            let origin = self.origin(raw.span());
            let example = example(raw.get_ref());
            let short = new.rsplit('.').next().unwrap_or(new);
            self.problems.push(Problem::new(
                old,
                Some(origin),
                format!("this setting is now called {new}: write {short} = {example}"),
            ));
        }
    }

    fn read(&mut self, raw: RawConfig) {
        if let Some(v) = self.take("data", "data", raw.data, path) {
            self.config.data = v;
        }
        if let Some(v) = self.take("rules", "rules", raw.rules, path) {
            self.config.rules = v;
        }
        if let Some(v) = self.take("replies", "replies", raw.replies, path) {
            self.config.replies = v;
        }
        if let Some(v) = self.take("store", "store", raw.store, |v| {
            string(v)?.parse().map_err(|e: StoreUrlError| e.to_string())
        }) {
            self.config.store = Some(v);
        }
        if let Some(v) = self.take("watch", "watch", raw.watch, boolean) {
            self.config.watch = v;
        }
        if let Some(v) = self.take("worker_idle", "worker_idle", raw.worker_idle, duration) {
            self.config.worker_idle = v;
        }
        self.renamed(
            "worker_idle_secs",
            raw.worker_idle_secs,
            "worker_idle",
            seconds_example,
        );

        for (i, gateway) in raw.gateway.into_iter().enumerate() {
            let origin = self.origin(gateway.span());
            let gateway = gateway.into_inner();
            // A missing url stays empty, for `validate` to report with the table's line.
            self.config.origins.set(format!("gateway.{i}.url"), origin);
            let url = self.take(
                "gateway.url",
                &format!("gateway.{i}.url"),
                gateway.url,
                string,
            );
            let token = self.take(
                "gateway.token",
                &format!("gateway.{i}.token"),
                gateway.token,
                string,
            );
            let name = self.take(
                "gateway.name",
                &format!("gateway.{i}.name"),
                gateway.name,
                string,
            );
            self.config.gateways.push(GatewaySettings {
                url: url.unwrap_or_default(),
                token,
                name,
            });
        }
        for (i, shop) in raw.shop.into_iter().enumerate() {
            let origin = self.origin(shop.span());
            let shop = shop.into_inner();
            self.config
                .origins
                .set(format!("shop.{i}.id"), origin.clone());
            let id = self.take("shop.id", &format!("shop.{i}.id"), shop.id, string);
            let name = self.take("shop.name", &format!("shop.{i}.name"), shop.name, string);
            let overlay = self.take(
                "shop.overlay",
                &format!("shop.{i}.overlay"),
                shop.overlay,
                path,
            );
            let hours = match shop.hours {
                Some(raw) => self.read_hours(i, raw, origin),
                None => BusinessHours::always_open(),
            };
            let clock = shop
                .clock
                .map(|raw| self.read_clock(i, raw))
                .unwrap_or_default();
            self.config.shops.push(ShopSettings {
                id: id.unwrap_or_default(),
                name,
                overlay,
                hours,
                clock,
            });
        }
        self.read_conversation(raw.conversation);
        self.read_escalation(raw.escalation);
        self.read_console(raw.console);
        let key = "metrics.listen";
        if let Some(v) = self.take(key, key, raw.metrics.listen, |v| {
            socket_address(&string(v)?)
        }) {
            self.config.metrics_listen = Some(v);
        }
        self.read_notify(raw.notify, raw.notifications);
        let key = "cluster.lease_ttl";
        if let Some(v) = self.take(key, key, raw.cluster.lease_ttl, duration) {
            self.config.cluster.lease_ttl = v;
        }
        let key = "cluster.instance";
        if let Some(v) = self.take(key, key, raw.cluster.instance, string) {
            self.config.cluster.instance = Some(v.trim().to_owned());
        }
    }

    /// `[[notify]]` targets (each checked by [`crate::notify::Target::from_toml`]) and the
    /// `[notifications]` retry settings.
    fn read_notify(&mut self, targets: Vec<Spanned<Value>>, retry: RawNotifications) {
        let mut names = HashSet::new();
        for (i, entry) in targets.into_iter().enumerate() {
            let origin = self.origin(entry.span());
            match crate::notify::Target::from_toml(i, entry.get_ref()) {
                Ok(target) => {
                    if !names.insert(target.name.clone()) {
                        self.problems.push(Problem::new(
                            "notify.name",
                            Some(origin),
                            format!(
                                "another [[notify]] entry is called {:?}: give each its own name",
                                target.name
                            ),
                        ));
                        continue;
                    }
                    self.config.origins.set(format!("notify.{i}"), origin);
                    self.config.notify.push(target);
                }
                Err(problems) => {
                    for (key, message) in problems {
                        let setting = if key.is_empty() {
                            "notify".to_owned()
                        } else {
                            format!("notify.{key}")
                        };
                        self.problems
                            .push(Problem::new(setting, Some(origin.clone()), message));
                    }
                }
            }
        }
        let mut policy = self.config.notify_retry;
        for (name, raw, field) in [
            ("retry_first", retry.retry_first, &mut policy.first),
            ("retry_cap", retry.retry_cap, &mut policy.cap),
            (
                "give_up_after",
                retry.give_up_after,
                &mut policy.give_up_after,
            ),
        ] {
            let key = format!("notifications.{name}");
            if let Some(v) = self.take(&key, &key, raw, duration) {
                *field = v;
            }
        }
        self.config.notify_retry = policy;
    }

    /// Reads the `[shop.hours]` of shop `i`, whose table starts at `shop_origin`. A bad value
    /// is reported and left out (its day closed), so that every problem is seen at once.
    fn read_hours(&mut self, i: usize, raw: RawHours, shop_origin: Origin) -> BusinessHours {
        let key = |name: &str| {
            (
                format!("shop.hours.{name}"),
                format!("shop.{i}.hours.{name}"),
            )
        };
        let (setting, origin_key) = key("zone");
        let (zone, zone_name) = self
            .take(&setting, &origin_key, raw.zone, |v| {
                let name = string(v)?;
                let zone = hours::parse_zone(&name).map_err(|e| e.to_string())?;
                Ok((zone, name.trim().to_owned()))
            })
            .unwrap_or_else(|| {
                let always = BusinessHours::always_open();
                (always.zone().clone(), always.zone_name().to_owned())
            });
        let mut week: [Vec<Shift>; 7] = Default::default();
        let mut any_day = false;
        // The shorthands first, so that a day's own key wins over them.
        let days = [
            ("weekdays", raw.weekdays, 0..5),
            ("weekend", raw.weekend, 5..7),
            ("monday", raw.monday, 0..1),
            ("tuesday", raw.tuesday, 1..2),
            ("wednesday", raw.wednesday, 2..3),
            ("thursday", raw.thursday, 3..4),
            ("friday", raw.friday, 4..5),
            ("saturday", raw.saturday, 5..6),
            ("sunday", raw.sunday, 6..7),
        ];
        for (name, raw, indices) in days {
            let (setting, origin_key) = key(name);
            if let Some(shifts) = self.take(&setting, &origin_key, raw, day_shifts) {
                any_day |= !shifts.is_empty();
                for index in indices {
                    if let Some(day) = week.get_mut(index) {
                        day.clone_from(&shifts);
                    }
                }
            }
        }
        let (setting, origin_key) = key("holidays");
        let holidays = self
            .take(&setting, &origin_key, raw.holidays, |v| {
                list_of(v, "[\"2026-10-01..2026-10-07\", \"2027-01-01\"]", |text| {
                    text.parse::<DateRange>()
                })
            })
            .unwrap_or_default();
        let (setting, origin_key) = key("makeup");
        let makeup = self
            .take(&setting, &origin_key, raw.makeup, |v| {
                hours::parse_weekday(&string(v)?).map_err(|e| e.to_string())
            })
            .unwrap_or(jiff::civil::Weekday::Monday);
        let (setting, origin_key) = key("workdays");
        let workdays_origin = raw.workdays.as_ref().map(|raw| self.origin(raw.span()));
        let workdays = self
            .take(&setting, &origin_key, raw.workdays, |v| {
                list_of(v, "[\"2026-10-10\"]", hours::parse_date)
            })
            .unwrap_or_default();
        if !any_day && workdays.is_empty() {
            self.problems.push(Problem::new(
                "shop.hours",
                Some(shop_origin),
                "gives no opening hours at all: add weekdays = [\"09:00-18:00\"] (or other days), or leave [shop.hours] out for a shop whose people are always in",
            ));
        }
        let weekly = BusinessHours::weekly(zone, zone_name, week).with_holidays(holidays);
        match weekly.clone().with_workdays(workdays, makeup) {
            Ok(hours) => hours,
            Err(error) => {
                self.problems
                    .push(Problem::new(setting, workdays_origin, error.to_string()));
                weekly
            }
        }
    }

    /// Reads the `[shop.clock]` of shop `i`: the platform's defaults first, then the keys the
    /// shop sets itself. A bad value is reported and the platform's default kept.
    fn read_clock(&mut self, i: usize, raw: RawClock) -> ClockRules {
        let key = |name: &str| {
            (
                format!("shop.clock.{name}"),
                format!("shop.{i}.clock.{name}"),
            )
        };
        let (setting, origin_key) = key("platform");
        let platform = self
            .take(&setting, &origin_key, raw.platform, |v| {
                string(v)?.parse::<Platform>()
            })
            .unwrap_or(Platform::Taobao);
        let mut rules = ClockRules::for_platform(platform);
        let (setting, origin_key) = key("budget");
        if let Some(v) = self.take(&setting, &origin_key, raw.budget, duration) {
            rules.budget = v;
        }
        let (setting, origin_key) = key("cap");
        if let Some(v) = self.take(&setting, &origin_key, raw.cap, duration) {
            rules.cap = v;
        }
        let (setting, origin_key) = key("counted_hours");
        if let Some(v) = self.take(&setting, &origin_key, raw.counted_hours, |v| {
            string(v)?.parse::<CountedHours>()
        }) {
            rules.counted_hours = v;
        }
        let (setting, origin_key) = key("bot_counts_when_waiting");
        if let Some(v) = self.take(&setting, &origin_key, raw.bot_counts_when_waiting, boolean) {
            rules.bot_counts_when_waiting = v;
        }
        let (setting, origin_key) = key("warn_at");
        if let Some(v) = self.take(&setting, &origin_key, raw.warn_at, percentages) {
            rules.warn_at = v;
        }
        rules
    }

    fn read_console(&mut self, raw: RawConsole) {
        let mut console = ConsoleSettings::default();
        let key = "console.listen";
        if let Some(v) = self.take(key, key, raw.listen, |v| socket_address(&string(v)?)) {
            console.listen = Some(v);
        }
        let key = "console.public_url";
        if let Some(v) = self.take(key, key, raw.public_url, string) {
            console.public_url = Some(v.trim_end_matches('/').to_owned());
        }
        let key = "console.secure_cookie";
        if let Some(v) = self.take(key, key, raw.secure_cookie, boolean) {
            console.secure_cookie = v;
        }
        for (name, raw, field) in [
            ("session_idle", raw.session_idle, &mut console.session_idle),
            ("session_max", raw.session_max, &mut console.session_max),
            ("lease", raw.lease, &mut console.lease),
        ] {
            let key = format!("console.{name}");
            if let Some(v) = self.take(&key, &key, raw, duration) {
                *field = v;
            }
        }
        let key = "console.sla";
        if let Some(v) = self.take(key, key, raw.sla, queue_durations) {
            console.sla = v;
        }
        self.config.console = console;
    }

    fn read_conversation(&mut self, raw: RawConversation) {
        let mut policy = ConversationPolicy::default();
        let take = |reader: &mut Self, key: &str, raw: Raw| {
            let key = format!("conversation.{key}");
            reader.take(&key, &key, raw, duration)
        };
        if let Some(v) = take(self, "greeting_window", raw.greeting_window) {
            policy.greeting_window = v;
        }
        if let Some(v) = take(self, "pause", raw.pause) {
            policy.pause = v;
        }
        if let Some(v) = take(self, "human_idle", raw.human_idle) {
            policy.human_idle = v;
        }
        if let Some(v) = take(self, "reply_window", raw.reply_window) {
            policy.reply_window = v;
        }
        let key = "conversation.greeting";
        if let Some(v) = self.take(key, key, raw.greeting, boolean) {
            policy.greeting = v;
        }
        let key = "conversation.max_replies";
        if let Some(v) = self.take(key, key, raw.max_replies, |v| {
            let n = integer(v)?;
            if n < 1 {
                return Err(format!(
                    "{n} would silence the bot: allow at least 1 reply per window"
                ));
            }
            u32::try_from(n)
                .ok()
                .and_then(std::num::NonZeroU32::new)
                .ok_or_else(|| format!("{n} is too large"))
        }) {
            policy.max_replies = v;
        }
        for (old, raw, new) in [
            (
                "greeting_window_secs",
                raw.greeting_window_secs,
                "greeting_window",
            ),
            ("pause_secs", raw.pause_secs, "pause"),
            ("human_idle_secs", raw.human_idle_secs, "human_idle"),
            ("rate_window_secs", raw.rate_window_secs, "reply_window"),
        ] {
            self.renamed(
                &format!("conversation.{old}"),
                raw,
                &format!("conversation.{new}"),
                seconds_example,
            );
        }
        self.renamed(
            "conversation.max_replies_per_window",
            raw.max_replies_per_window,
            "conversation.max_replies",
            |v| match v {
                Value::Integer(n) => n.to_string(),
                _ => "12".to_string(),
            },
        );
        self.config.conversation = policy;
    }

    fn read_escalation(&mut self, raw: RawEscalation) {
        let mut policy = EscalationPolicy::default();
        let key = "escalation.fallback_limit";
        if let Some(v) = self.take(key, key, raw.fallback_limit, |v| {
            let n = integer(v)?;
            if n < 0 {
                return Err(format!(
                    "{n} is negative: write 0 to never hand over, or the number of fallbacks in a row"
                ));
            }
            u32::try_from(n).map_err(|_| format!("{n} is too large"))
        }) {
            policy.fallback_limit = v;
        }
        let key = "escalation.default_eta";
        if let Some(v) = self.take(key, key, raw.default_eta, string) {
            policy.default_eta = v;
        }
        let key = "escalation.queue_eta";
        if let Some(v) = self.take(key, key, raw.queue_eta, queue_etas) {
            policy.queue_eta = v;
        }
        self.config.escalation = policy;
    }
}

// ---- converting one value -------------------------------------------------------------------

/// How a value is named in a message: `"abc"`, `the number 60`, `a table`.
fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        Value::Integer(n) => format!("the number {n}"),
        Value::Float(x) => format!("the number {x}"),
        Value::Boolean(b) => b.to_string(),
        Value::Datetime(d) => format!("the date {d}"),
        Value::Array(_) => "a list".to_string(),
        Value::Table(_) => "a table".to_string(),
    }
}

fn string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!(
            "expected text in quotes, found {}",
            describe(other)
        )),
    }
}

fn path(value: &Value) -> Result<PathBuf, String> {
    string(value).map(PathBuf::from)
}

fn boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Boolean(b) => Ok(*b),
        other => Err(format!("expected true or false, found {}", describe(other))),
    }
}

fn integer(value: &Value) -> Result<i64, String> {
    match value {
        Value::Integer(n) => Ok(*n),
        other => Err(format!(
            "expected a whole number, found {}",
            describe(other)
        )),
    }
}

fn duration(value: &Value) -> Result<Duration, String> {
    match value {
        Value::String(s) => humantime::parse_duration(s).map_err(|error| {
            format!(
                "{s:?} is not a duration ({error}); write it like \"30min\", \"2h\" or \"1h 30m\""
            )
        }),
        Value::Integer(n) => Err(format!(
            "a duration needs a unit and quotes: write \"{n}s\" for {n} seconds"
        )),
        other => Err(format!(
            "expected a duration like \"30min\" or \"2h\", found {}",
            describe(other)
        )),
    }
}

fn socket_address(text: &str) -> Result<std::net::SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!("{text:?} is not an address to listen on: write it like \"127.0.0.1:8781\"")
    })
}

fn queue_durations(value: &Value) -> Result<HashMap<Queue, Duration>, String> {
    let Value::Table(table) = value else {
        return Err(format!(
            "expected a table like {{ refund = \"15min\" }}, found {}",
            describe(value)
        ));
    };
    let mut targets = HashMap::new();
    let mut errors = Vec::new();
    for (name, target) in table {
        match name.parse::<Queue>() {
            Ok(queue) => match duration(target) {
                Ok(d) => {
                    targets.insert(queue, d);
                }
                Err(e) => errors.push(format!("{name}: {e}")),
            },
            Err(_) => errors.push(format!(
                "there is no queue {name:?} (the queues are {})",
                Queue::names()
            )),
        }
    }
    if errors.is_empty() {
        Ok(targets)
    } else {
        Err(errors.join("; "))
    }
}

fn queue_etas(value: &Value) -> Result<HashMap<Queue, String>, String> {
    let Value::Table(table) = value else {
        return Err(format!(
            "expected a table like {{ refund = \"10分钟\" }}, found {}",
            describe(value)
        ));
    };
    let mut etas = HashMap::new();
    let mut errors = Vec::new();
    for (name, eta) in table {
        match (name.parse::<Queue>(), eta) {
            (Ok(queue), Value::String(eta)) => {
                etas.insert(queue, eta.clone());
            }
            (Ok(_), other) => errors.push(format!(
                "the wait for {name} must be text in quotes, found {}",
                describe(other)
            )),
            (Err(_), _) => errors.push(format!(
                "there is no queue {name:?} (the queues are {})",
                Queue::names()
            )),
        }
    }
    if errors.is_empty() {
        Ok(etas)
    } else {
        Err(errors.join("; "))
    }
}

/// Shares of a budget in percent, `[50, 80]`, sorted and without repeats.
fn percentages(value: &Value) -> Result<Vec<u32>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "expected a list of percentages like [50, 80], found {}",
            describe(value)
        ));
    };
    let mut shares = Vec::new();
    for item in items {
        let n = integer(item)?;
        shares.push(u32::try_from(n).map_err(|_| {
            format!("{n} is not a share of the budget: write percentages from 1 to 99")
        })?);
    }
    shares.sort_unstable();
    shares.dedup();
    Ok(shares)
}

/// One day's shifts, `["09:00-12:00", "13:30-18:00"]`; `[]` is closed.
fn day_shifts(value: &Value) -> Result<Vec<Shift>, String> {
    let texts = list_of(value, "[\"09:00-12:00\", \"13:30-18:00\"]", |text| {
        Ok::<_, hours::HoursError>(text.to_owned())
    })?;
    Shift::parse_day(&texts).map_err(|e| e.to_string())
}

/// A list of texts, each converted by `convert`; every bad item is named.
fn list_of<T, E: fmt::Display>(
    value: &Value,
    example: &str,
    convert: impl Fn(&str) -> Result<T, E>,
) -> Result<Vec<T>, String> {
    let Value::Array(items) = value else {
        return Err(format!(
            "expected a list like {example}, found {}",
            describe(value)
        ));
    };
    let mut converted = Vec::new();
    let mut errors = Vec::new();
    for item in items {
        match item {
            Value::String(text) => match convert(text) {
                Ok(v) => converted.push(v),
                Err(e) => errors.push(e.to_string()),
            },
            other => errors.push(format!(
                "expected text in quotes, found {}",
                describe(other)
            )),
        }
    }
    if errors.is_empty() {
        Ok(converted)
    } else {
        Err(errors.join("; "))
    }
}

/// How to write an old `*_secs` value as a duration: `1800` becomes `"30min"`.
fn seconds_example(value: &Value) -> String {
    match value {
        Value::Integer(n) if *n >= 0 => {
            format!("{:?}", show_duration(Duration::from_secs(n.unsigned_abs())))
        }
        _ => "\"30min\"".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// A config file in a temporary directory (kept alive by the returned guard).
    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xiaoer.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    const GATEWAY: &str = "[[gateway]]\nurl = \"ws://127.0.0.1:8080/\"\n";

    fn load(text: &str) -> Result<Config, ConfigError> {
        let (_dir, path) = file(text);
        Config::load(Some(&path), env(&[]), &Overrides::default())
    }

    /// The problems of a config that must not load, as `setting: message` (origins left out).
    fn problems(text: &str) -> Vec<String> {
        let error = load(text).expect_err("the config should not load");
        error
            .problems()
            .iter()
            .map(|p| format!("{}: {}", p.setting().unwrap_or("-"), p.message()))
            .collect()
    }

    fn flag_gateway(url: &str) -> Overrides {
        Overrides {
            gateway: Some(url.into()),
            ..Default::default()
        }
    }

    #[test]
    fn file_then_environment_then_flags() {
        let (_dir, path) = file(
            r#"
data = "/var/lib/xiaoer"
rules = "/etc/xiaoer/rules"
store = "sqlite:///var/lib/xiaoer/file.db"
[[gateway]]
url = "ws://file:1/"
token = "file-token"
[[shop]]
id = "shop1"
name = "小二茶铺"
[conversation]
pause = "1m"
[escalation]
fallback_limit = 2
queue_eta = { refund = "10分钟" }
"#,
        );
        let config = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.gateways[0].url, "ws://file:1/");
        assert_eq!(config.conversation.pause, Duration::from_secs(60));
        assert_eq!(config.conversation.pause_ms(), 60_000);
        assert_eq!(config.escalation.fallback_limit, 2);
        assert_eq!(config.escalation.eta(Queue::Refund), "10分钟");
        assert_eq!(
            config.shop("shop1").and_then(|s| s.name.as_deref()),
            Some("小二茶铺")
        );
        assert_eq!(
            config.store_location(),
            StoreLocation::Sqlite("/var/lib/xiaoer/file.db".into())
        );
        assert_eq!(
            config.origins.get("conversation.pause"),
            Some(&Origin::File {
                path: path.clone(),
                line: 12
            })
        );

        let config = Config::load(
            Some(&path),
            env(&[
                ("XIAOER_DATA", "/env/data"),
                ("XIAOER_TOKEN", "env-token"),
                ("XIAOER_STORE", "sqlite://env.db"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.data, PathBuf::from("/env/data"));
        assert_eq!(config.gateways[0].token.as_deref(), Some("env-token"));
        assert_eq!(
            config.store_location(),
            StoreLocation::Sqlite("env.db".into())
        );
        assert_eq!(
            config.origins.get("data"),
            Some(&Origin::Env("XIAOER_DATA"))
        );

        let flags = Overrides {
            data: Some("/flag/data".into()),
            gateway: Some("ws://flag:2/".into()),
            store: Some("sqlite://flag.db".into()),
            ..Default::default()
        };
        let config = Config::load(
            Some(&path),
            env(&[
                ("XIAOER_DATA", "/env/data"),
                ("XIAOER_TOKEN", "env-token"),
                ("XIAOER_STORE", "sqlite://env.db"),
            ]),
            &flags,
        )
        .unwrap();
        assert_eq!(config.data, PathBuf::from("/flag/data"));
        assert_eq!(config.gateways.len(), 1);
        assert_eq!(config.gateways[0].url, "ws://flag:2/");
        // The flag's gateway still gets the environment's token.
        assert_eq!(config.gateways[0].token.as_deref(), Some("env-token"));
        assert_eq!(config.rules, PathBuf::from("/etc/xiaoer/rules"));
        assert_eq!(
            config.store_location(),
            StoreLocation::Sqlite("flag.db".into())
        );
        assert_eq!(config.origins.get("store"), Some(&Origin::Flag("--store")));
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/xiaoer.toml");
        let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        config.validate().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.gateways.len(), 1);
        // The example shows the defaults.
        assert_eq!(config.conversation, ConversationPolicy::default());
        assert_eq!(config.worker_idle, Config::default().worker_idle);
        assert_eq!(config.watch, Config::default().watch);
        assert_eq!(config.data, Config::default().data);
        assert_eq!(
            config.store_location(),
            StoreLocation::Sqlite("data/xiaoer.db".into())
        );
        assert_eq!(config.escalation.fallback_limit, 3);
        assert_eq!(
            config.escalation.default_eta,
            EscalationPolicy::default().default_eta
        );
        assert_eq!(config.escalation.eta(Queue::Complaint), "5分钟");
        // Every key the file format has is shown in the example (most commented out or not).
        let text = std::fs::read_to_string(&path).unwrap();
        for key in KEYS {
            assert!(
                text.contains(key),
                "deploy/xiaoer.toml does not mention {key}"
            );
        }
    }

    #[test]
    fn durations_are_written_with_units() {
        let config = load(&format!(
            r#"worker_idle = "90s"
{GATEWAY}
[conversation]
greeting_window = "12h"
pause = "30min"
human_idle = "1h 30m"
reply_window = "1500ms"
"#
        ))
        .unwrap();
        assert_eq!(config.worker_idle(), Duration::from_secs(90));
        let policy = &config.conversation;
        assert_eq!(policy.greeting_window_ms(), 12 * 3600 * 1000);
        assert_eq!(policy.pause_ms(), 30 * 60 * 1000);
        assert_eq!(policy.human_idle_ms(), 90 * 60 * 1000);
        assert_eq!(policy.rate_window_ms(), 1500);
    }

    #[test]
    fn a_duration_without_a_unit_or_quotes_is_explained() {
        assert_eq!(
            problems(&format!("{GATEWAY}[conversation]\npause = 60\n")),
            [
                "conversation.pause: a duration needs a unit and quotes: write \"60s\" for 60 seconds"
            ]
        );
        let found = problems(&format!("{GATEWAY}[conversation]\npause = \"soon\"\n"));
        assert_eq!(found.len(), 1);
        assert!(
            found[0].starts_with("conversation.pause: \"soon\" is not a duration"),
            "{found:?}"
        );
        // Too large for humantime to hold at all: an error, not an overflow.
        let found = problems(&format!(
            "{GATEWAY}[conversation]\npause = \"99999999999999999999y\"\n"
        ));
        assert!(found[0].contains("is not a duration"), "{found:?}");
        let found = problems(&format!("{GATEWAY}[conversation]\npause = \"-1s\"\n"));
        assert!(found[0].contains("is not a duration"), "{found:?}");
    }

    #[test]
    fn old_secs_keys_say_what_they_are_called_now() {
        let (_dir, path) = file(&format!(
            "worker_idle_secs = 300\n{GATEWAY}[conversation]\ngreeting_window_secs = 43200\n\
             pause_secs = 1800\nhuman_idle_secs = 7200\nmax_replies_per_window = 12\nrate_window_secs = 60\n"
        ));
        let error = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap_err();
        let messages: Vec<String> = error.problems().iter().map(ToString::to_string).collect();
        let shown = path.display();
        assert_eq!(
            messages,
            [
                format!(
                    "worker_idle_secs ({shown} line 1): this setting is now called worker_idle: write worker_idle = \"5min\""
                ),
                format!(
                    "conversation.greeting_window_secs ({shown} line 5): this setting is now called conversation.greeting_window: write greeting_window = \"12h\""
                ),
                format!(
                    "conversation.pause_secs ({shown} line 6): this setting is now called conversation.pause: write pause = \"30min\""
                ),
                format!(
                    "conversation.human_idle_secs ({shown} line 7): this setting is now called conversation.human_idle: write human_idle = \"2h\""
                ),
                format!(
                    "conversation.max_replies_per_window ({shown} line 8): this setting is now called conversation.max_replies: write max_replies = 12"
                ),
                format!(
                    "conversation.rate_window_secs ({shown} line 9): this setting is now called conversation.reply_window: write reply_window = \"1min\""
                ),
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let (_dir, path) = file(&format!(
            "{GATEWAY}[conversation]\ngreeting_window = \"10s\"\nmax_replies = 0\n"
        ));
        let error = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap_err();
        let problems = error.problems();
        assert_eq!(problems.len(), 2, "{error}");
        // Values that do not convert come first (in file order), then bounds.
        assert_eq!(problems[0].setting(), Some("conversation.max_replies"));
        assert_eq!(
            problems[0].origin(),
            Some(&Origin::File {
                path: path.clone(),
                line: 5
            })
        );
        assert_eq!(problems[1].setting(), Some("conversation.greeting_window"));
        assert_eq!(
            problems[1].to_string(),
            format!(
                "conversation.greeting_window ({} line 4): 10s is too short: it must be at least 1min",
                path.display()
            )
        );
        let message = error.to_string();
        assert!(
            message.starts_with("2 problems with the settings:\n  - conversation.max_replies ("),
            "{message}"
        );
        assert!(message.contains("would silence the bot"), "{message}");
    }

    #[test]
    fn bounds_keep_the_arithmetic_safe() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "[conversation]\ngreeting_window = \"59s\"",
                Some("conversation.greeting_window"),
            ),
            ("[conversation]\ngreeting_window = \"1m\"", None),
            ("[conversation]\ngreeting_window = \"30days\"", None),
            (
                "[conversation]\ngreeting_window = \"31days\"",
                Some("conversation.greeting_window"),
            ),
            ("[conversation]\npause = \"0s\"", None),
            (
                "[conversation]\npause = \"100y\"",
                Some("conversation.pause"),
            ),
            (
                "[conversation]\nhuman_idle = \"30s\"",
                Some("conversation.human_idle"),
            ),
            (
                "[conversation]\nreply_window = \"500ms\"",
                Some("conversation.reply_window"),
            ),
            ("[conversation]\nmax_replies = 1", None),
            (
                "[conversation]\nmax_replies = 1001",
                Some("conversation.max_replies"),
            ),
            (
                "[conversation]\nmax_replies = -3",
                Some("conversation.max_replies"),
            ),
            (
                "[conversation]\nmax_replies = 99999999999",
                Some("conversation.max_replies"),
            ),
            ("worker_idle = \"0s\"", Some("worker_idle")),
            ("worker_idle = \"1s\"", None),
            (
                "[escalation]\nfallback_limit = -1",
                Some("escalation.fallback_limit"),
            ),
            (
                "[escalation]\nfallback_limit = 99999999999",
                Some("escalation.fallback_limit"),
            ),
            (
                "[escalation]\ndefault_eta = \"\"",
                Some("escalation.default_eta"),
            ),
        ];
        for (text, bad) in cases {
            let result = load(&format!("{text}\n{GATEWAY}"));
            match (bad, result) {
                (None, Ok(_)) => {}
                (Some(setting), Err(error)) => {
                    assert_eq!(error.problems().len(), 1, "{text}: {error}");
                    assert_eq!(error.problems()[0].setting(), Some(*setting), "{text}");
                }
                (None, Err(error)) => panic!("{text}: {error}"),
                (Some(_), Ok(_)) => panic!("{text}: accepted"),
            }
        }
    }

    #[test]
    fn the_greeting_can_be_switched_off() {
        let config = load(&format!("{GATEWAY}[conversation]\ngreeting = false\n")).unwrap();
        assert!(!config.conversation.greeting_enabled());
        assert!(Config::default().conversation.greeting_enabled());
        assert_eq!(
            problems(&format!("{GATEWAY}[conversation]\ngreeting = \"no\"\n")),
            ["conversation.greeting: expected true or false, found \"no\""]
        );
    }

    #[test]
    fn a_zero_fallback_limit_means_never_hand_over() {
        let config = load(&format!("{GATEWAY}[escalation]\nfallback_limit = 0\n")).unwrap();
        assert!(!config.escalation.gives_up_after(i64::MAX));
    }

    #[test]
    fn queue_etas_name_real_queues() {
        let found = problems(&format!(
            "{GATEWAY}[escalation]\nqueue_eta = {{ refnd = \"10分钟\", complaint = 5 }}\n"
        ));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].contains("the wait for complaint must be text"),
            "{found:?}"
        );
        assert!(
            found[0].contains("there is no queue \"refnd\""),
            "{found:?}"
        );
    }

    #[test]
    fn notify_targets_and_retries_are_read() {
        let config = load(&format!(
            r#"{GATEWAY}
[[notify]]
kind = "dingtalk"
url = "https://oapi.dingtalk.com/robot/send?access_token=abc"
secret = "SECxyz"
queues = ["refund"]

[[notify]]
kind = "generic"
url = "http://127.0.0.1:9000/hook"
name = "ops"
events = ["sla"]

[notifications]
retry_first = "1s"
retry_cap = "30s"
give_up_after = "2h"
"#
        ))
        .unwrap();
        let names: Vec<_> = config.notify.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["dingtalk#1", "ops"]);
        assert_eq!(config.notify_retry.first, Duration::from_secs(1));
        assert_eq!(config.notify_retry.cap, Duration::from_secs(30));
        assert_eq!(config.notify_retry.give_up_after, Duration::from_secs(7200));
    }

    #[test]
    fn bad_notify_entries_are_reported_with_their_lines() {
        let found = problems(&format!(
            r#"{GATEWAY}
[[notify]]
kind = "slack"
url = "ftp://x"

[[notify]]
kind = "generic"
url = "http://a/1"
name = "same"

[[notify]]
kind = "generic"
url = "http://a/2"
name = "same"

[notifications]
retry_first = "10s"
retry_cap = "1s"
"#
        ));
        let text = found.join("\n");
        assert!(text.contains("notify.kind"), "{text}");
        assert!(text.contains("notify.url"), "{text}");
        assert_eq!(found.len(), 4, "{text}");
        assert!(
            text.contains("another [[notify]] entry is called \"same\""),
            "{text}"
        );
        assert!(text.contains("notifications.retry_cap"), "{text}");
    }

    #[test]
    fn environment_variables_go_through_the_table() {
        let config = Config::load(
            None,
            env(&[
                ("XIAOER_GATEWAY", "ws://env:1/"),
                ("XIAOER_TOKEN", "t"),
                ("XIAOER_DATA", "/d"),
                ("XIAOER_RULES", "/r"),
                ("XIAOER_REPLIES", "/p"),
                ("XIAOER_WATCH", "off"),
                ("XIAOER_STORE", "postgres://xiaoer@db/xiaoer"),
                ("XIAOER_CONFIG", "ignored here: the command line reads it"),
                ("PATH", "/usr/bin"),
            ]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(
            config.gateways,
            [GatewaySettings {
                url: "ws://env:1/".into(),
                token: Some("t".into()),
                name: None
            }]
        );
        assert_eq!(
            (
                config.data.as_path(),
                config.rules.as_path(),
                config.replies.as_path()
            ),
            (Path::new("/d"), Path::new("/r"), Path::new("/p"))
        );
        assert!(!config.watch);
        assert_eq!(
            config.store_location(),
            StoreLocation::Postgres("postgres://xiaoer@db/xiaoer".into())
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        // Every variable in the table is documented in the example config.
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/xiaoer.toml"),
        )
        .unwrap();
        for knob in OVERRIDES {
            assert!(
                example.contains(knob.env),
                "{} is not in deploy/xiaoer.toml",
                knob.env
            );
        }
    }

    #[test]
    fn an_unknown_xiaoer_variable_is_a_warning_not_an_error() {
        let config = Config::load(
            None,
            env(&[("XIAOER_GATWAY", "ws://x/"), ("XIAOER_COLOUR", "blue")]),
            &flag_gateway("ws://flag/"),
        )
        .unwrap();
        assert_eq!(
            config.warnings,
            [
                "ignoring the unknown environment variable XIAOER_GATWAY: did you mean XIAOER_GATEWAY?",
                "ignoring the unknown environment variable XIAOER_COLOUR",
            ]
        );
    }

    #[test]
    fn a_typo_in_a_variable_is_shown_with_the_problem_it_causes() {
        let error = Config::load(
            None,
            env(&[("XIAOER_GATWAY", "ws://x/")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            error.warnings(),
            [
                "ignoring the unknown environment variable XIAOER_GATWAY: did you mean XIAOER_GATEWAY?"
            ]
        );
        assert!(
            error.to_string().ends_with(
                "to the config file\nwarning: ignoring the unknown environment variable XIAOER_GATWAY: did you mean XIAOER_GATEWAY?"
            ),
            "{error}"
        );
    }

    #[test]
    fn bad_environment_values_are_collected_with_their_variable() {
        let error = Config::load(
            None,
            env(&[
                ("XIAOER_GATEWAY", "http://x/"),
                ("XIAOER_WATCH", "maybe"),
                ("XIAOER_STORE", "data/xiaoer.db"),
            ]),
            &Overrides::default(),
        )
        .unwrap_err();
        let messages: Vec<String> = error.problems().iter().map(ToString::to_string).collect();
        assert_eq!(
            messages,
            [
                "watch (XIAOER_WATCH): expected true or false, found \"maybe\"",
                "store (XIAOER_STORE): \"data/xiaoer.db\" is not a store URL: write sqlite://data/xiaoer.db for a SQLite file, or postgres://…",
                "gateway.url (XIAOER_GATEWAY): \"http://x/\" is not a websocket URL: it starts with http:// but must start with ws:// or wss://",
            ]
        );
    }

    #[test]
    fn gateway_urls_are_checked_at_start_up() {
        let cases: &[(&str, Option<&str>)] = &[
            ("ws://127.0.0.1:8080/", None),
            ("wss://gateway.example/onebot?x=1", None),
            ("WS://HOST", None),
            ("ws://[::1]:8080/", None),
            ("ws://user:pass@host:1/", None),
            (
                "127.0.0.1:8080",
                Some("is not a websocket URL: it must start with ws://"),
            ),
            ("http://host/", Some("it starts with http://")),
            ("ws://", Some("has no host")),
            ("ws:///path", Some("has no host")),
            ("ws://:8080/", Some("has no host")),
            ("ws://host:0/", Some("a port is a number from 1 to 65535")),
            (
                "ws://host:99999/",
                Some("a port is a number from 1 to 65535"),
            ),
            (
                "ws://host:port/",
                Some("a port is a number from 1 to 65535"),
            ),
            ("ws://[::1/", Some("without its `]`")),
            ("ws://my host/", Some("a space in its host")),
            ("", Some("missing")),
        ];
        for (url, expected) in cases {
            let result = Config::load(None, env(&[]), &flag_gateway(url));
            match (expected, result) {
                (None, Ok(_)) => {}
                (Some(expected), Err(error)) => {
                    let message = error.to_string();
                    assert!(
                        message.starts_with("gateway.url (--gateway): "),
                        "{message}"
                    );
                    assert!(message.contains(expected), "{url}: {message}");
                }
                (None, Err(error)) => panic!("{url}: {error}"),
                (Some(_), Ok(_)) => panic!("{url}: accepted"),
            }
        }
    }

    #[test]
    fn a_gateway_table_without_url_names_its_line() {
        let (_dir, path) = file("[[gateway]]\ntoken = \"t\"\n");
        let error = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "gateway.url ({} line 1): missing: every gateway needs a url like \"ws://127.0.0.1:8080/\"",
                path.display()
            )
        );
        assert_eq!(
            problems(&format!("{GATEWAY}token = \"\"\n")),
            ["gateway.token: is empty: leave it out to connect without a token"]
        );
    }

    #[test]
    fn store_urls() {
        let ok: &[(&str, StoreLocation)] = &[
            (
                "sqlite://data/xiaoer.db",
                StoreLocation::Sqlite("data/xiaoer.db".into()),
            ),
            (
                "sqlite:///var/lib/xiaoer.db",
                StoreLocation::Sqlite("/var/lib/xiaoer.db".into()),
            ),
            ("SQLITE://x.db", StoreLocation::Sqlite("x.db".into())),
            (
                "postgres://u:p@db:5432/x",
                StoreLocation::Postgres("postgres://u:p@db:5432/x".into()),
            ),
            (
                "postgresql://db/x",
                StoreLocation::Postgres("postgresql://db/x".into()),
            ),
        ];
        for (url, expected) in ok {
            assert_eq!(url.parse::<StoreLocation>().as_ref(), Ok(expected), "{url}");
        }
        for (url, expected) in [
            ("sqlite://", "has no path"),
            ("sqlite://x.db?mode=ro", "options after `?`"),
            ("mysql://db/x", "not a store xiaoer knows"),
            ("data/xiaoer.db", "write sqlite://data/xiaoer.db"),
        ] {
            let error = url.parse::<StoreLocation>().unwrap_err().to_string();
            assert!(error.contains(expected), "{url}: {error}");
        }
        assert_eq!(
            "sqlite:///var/x.db"
                .parse::<StoreLocation>()
                .unwrap()
                .to_string(),
            "sqlite:///var/x.db"
        );
        assert_eq!(
            StoreLocation::Postgres("postgres://u:secret@db/x".into()).to_string(),
            "postgres://u:***@db/x"
        );
        assert_eq!(
            StoreLocation::Postgres("postgres://db/x".into()).to_string(),
            "postgres://db/x"
        );
        // Without a store setting the store follows the data directory.
        let config = Config::load(
            None,
            env(&[("XIAOER_DATA", "/srv/xiaoer")]),
            &flag_gateway("ws://x/"),
        )
        .unwrap();
        assert_eq!(
            config.store_location(),
            StoreLocation::Sqlite("/srv/xiaoer/xiaoer.db".into())
        );
        assert_eq!(
            problems(&format!("store = \"redis://x\"\n{GATEWAY}")),
            ["store: \"redis://x\" is not a store xiaoer knows: use sqlite://PATH or postgres://…"]
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let (_dir, path) = file("dta = \"x\"\n");
        let error = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "dta ({} line 1): unknown setting: did you mean `data`?",
                path.display()
            )
        );
        let (_dir, path) = file("[conversation]\nshrug = 1\n");
        let message = Config::load(Some(&path), env(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.ends_with("line 2): unknown setting (deploy/xiaoer.toml lists them all)"),
            "{message}"
        );
        let (_dir, path) = file("data = \n");
        let message = Config::load(Some(&path), env(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("line 1: not a valid config file: "),
            "{message}"
        );
        let missing = Path::new("/nonexistent/xiaoer.toml");
        let message = Config::load(Some(missing), env(&[]), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("cannot read config file /nonexistent/xiaoer.toml: "),
            "{message}"
        );
        let error = Config::load(None, env(&[]), &Overrides::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "gateway: no gateway to connect to: pass --gateway URL, set XIAOER_GATEWAY, or add a [[gateway]] to the config file"
        );
    }

    #[test]
    fn shops_need_distinct_ids() {
        let found = problems(&format!(
            "{GATEWAY}[[shop]]\nid = \"a\"\n[[shop]]\nid = \"a\"\n[[shop]]\nname = \"x\"\n"
        ));
        assert_eq!(
            found,
            [
                "shop.id: shop \"a\" is listed twice",
                "shop.id: missing: every [[shop]] needs the shop account's id",
            ]
        );
    }

    #[test]
    fn a_config_built_in_code_is_validated_too() {
        let mut config = Config {
            gateways: vec![GatewaySettings {
                url: "ws://x/".into(),
                token: None,
                name: None,
            }],
            ..Config::default()
        };
        assert_eq!(config.validate(), Ok(()));
        config.conversation.greeting_window = Duration::ZERO;
        config.worker_idle = Duration::ZERO;
        let error = config.validate().unwrap_err();
        assert_eq!(error.problems().len(), 2);
        // Even unvalidated, the worker idle time never reaches the daemon as zero.
        assert_eq!(config.worker_idle(), Duration::from_secs(1));
    }

    #[test]
    fn durations_are_shown_as_they_are_written() {
        for (seconds, millis, shown) in [
            (0, 0, "0s"),
            (0, 500, "500ms"),
            (59, 0, "59s"),
            (60, 0, "1min"),
            (5400, 0, "1h 30min"),
            (45 * 86_400, 0, "45d"),
            (86_400 + 1, 250, "1d 1s 250ms"),
        ] {
            let duration = Duration::from_secs(seconds) + Duration::from_millis(millis);
            assert_eq!(show_duration(duration), shown);
            // What is shown parses back to the same duration.
            assert_eq!(
                humantime::parse_duration(shown).ok(),
                Some(duration),
                "{shown}"
            );
        }
    }

    #[test]
    fn suggestions_are_close_names_only() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        assert_eq!(edit_distance("暂停", "暂停"), 0);
        assert_eq!(closest("pasue", KEYS.iter().copied()), Some("pause"));
        assert_eq!(closest("colour", KEYS.iter().copied()), None);
    }

    #[test]
    fn shop_hours_are_read_with_shorthands_and_overrides() {
        let config = load(&format!(
            r#"{GATEWAY}
[[shop]]
id = "shop1"
[shop.hours]
weekdays = ["09:00-12:00", "13:30-18:00"]
weekend = []
saturday = ["10:00-16:00"]
friday = ["09:00-12:00", "22:00-02:00"]
holidays = ["2026-10-01..2026-10-07", "2027-01-01"]
workdays = ["2026-10-10"]
makeup = "friday"
[[shop]]
id = "berlin"
[shop.hours]
zone = "Europe/Berlin"
weekdays = ["08:00-17:00"]
[[shop]]
id = "always"
"#
        ))
        .unwrap();
        let hours = &config.shop("shop1").unwrap().hours;
        assert_eq!(hours.zone_name(), "Asia/Shanghai");
        let at = |text: &str| hours.parse_moment(text).unwrap();
        // (local time, open?)
        let cases = [
            ("2026-12-02 10:00", true),  // a Wednesday morning
            ("2026-12-02 12:30", false), // lunch
            ("2026-12-04 15:00", false), // Friday's own hours have no afternoon
            ("2026-12-04 23:00", true),  // ... but a night shift
            ("2026-12-05 11:00", true),  // Saturday's own hours win over `weekend`
            ("2026-12-06 11:00", false), // Sunday keeps `weekend = []`
            ("2026-10-05 10:00", false), // a holiday
            ("2027-01-01 10:00", false), // a one-day holiday
            ("2026-10-10 23:00", true),  // the make-up Saturday keeps Friday's hours
        ];
        for (local, open) in cases {
            assert_eq!(hours.is_open(at(local)), open, "{local}");
        }
        let berlin = &config.shop("berlin").unwrap().hours;
        assert_eq!(berlin.zone_name(), "Europe/Berlin");
        assert!(berlin.is_open("2026-12-02T08:30:00+01:00".parse().unwrap()));
        assert!(config.shop("always").unwrap().hours.is_always_open());
        let mut with_hours: Vec<_> = config.shop_hours().into_keys().collect();
        with_hours.sort();
        assert_eq!(with_hours, ["berlin", "shop1"]);
    }

    #[test]
    fn shop_clocks_start_from_their_platform_s_defaults() {
        let config = load(&format!(
            r#"{GATEWAY}
[[shop]]
id = "jd1"
[shop.clock]
platform = "jd"
warn_at = [80, 50, 80]
[[shop]]
id = "tm"
[shop.clock]
platform = "tmall"
budget = "2min"
counted_hours = "business"
bot_counts_when_waiting = true
cap = "5min"
[[shop]]
id = "plain"
"#
        ))
        .unwrap();
        let jd = &config.shop("jd1").unwrap().clock;
        assert_eq!(jd.platform, Platform::Jd);
        assert_eq!(jd.budget, Duration::from_secs(30));
        assert_eq!(jd.warn_at, [50, 80]);
        let tmall = &config.shop("tm").unwrap().clock;
        assert_eq!(
            (
                tmall.budget,
                tmall.cap,
                tmall.counted_hours,
                tmall.bot_counts_when_waiting
            ),
            (
                Duration::from_secs(120),
                Duration::from_secs(300),
                CountedHours::Business,
                true
            )
        );
        assert_eq!(config.shop("plain").unwrap().clock, ClockRules::default());
        let clocks = config.shop_clocks();
        assert_eq!(clocks.for_shop("jd1").rules.budget, Duration::from_secs(30));
        assert_eq!(clocks.for_shop("unlisted").rules.platform, Platform::Taobao);
    }

    #[test]
    fn bad_clock_settings_are_reported() {
        let found = problems(&format!(
            "{GATEWAY}[[shop]]\nid = \"a\"\n[shop.clock]\nplatform = \"amazon\"\n\
             counted_hours = \"sometimes\"\nwarn_at = [50, 100]\nbudget = \"20min\"\n"
        ));
        assert_eq!(
            found,
            [
                "shop.clock.platform: \"amazon\" is not a platform xiaoer knows: write taobao, tmall, jd, douyin or custom",
                "shop.clock.counted_hours: \"sometimes\" is not a choice here: write \"always\" (every minute counts) or \"business\" (only minutes inside [shop.hours])",
                "shop.clock.cap: 10min is shorter than the budget (20min): a late answer could never be counted late",
                "shop.clock.warn_at: 100 is not a share of the budget: write percentages from 1 to 99",
            ]
        );
    }

    #[test]
    fn every_bad_hours_value_is_reported_with_its_setting_and_line() {
        let (_dir, path) = file(&format!(
            r#"{GATEWAY}[[shop]]
id = "shop1"
[shop.hours]
zone = "Asia/Peking"
monday = ["09:00-12:00", "11:00-13:00"]
tuesday = ["9-18"]
wednesday = "09:00-18:00"
thursday = ["09:00-24:00", "18:00-18:00"]
holidays = ["2026-02-30", "2026-10-07..2026-10-01"]
workdays = ["2026-10-10"]
makeup = "someday"
"#
        ));
        let error = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap_err();
        let found: Vec<_> = error
            .problems()
            .iter()
            .map(|p| match p.origin() {
                Some(Origin::File { line, .. }) => {
                    format!(
                        "{} (line {line}): {}",
                        p.setting().unwrap_or("-"),
                        p.message()
                    )
                }
                _ => format!("{}: {}", p.setting().unwrap_or("-"), p.message()),
            })
            .collect();
        assert_eq!(
            found,
            [
                "shop.hours.zone (line 6): \"Asia/Peking\" is not a time zone xiaoer knows: write an IANA name like \"Asia/Shanghai\"",
                "shop.hours.monday (line 7): \"09:00-12:00\" and \"11:00-13:00\" overlap",
                "shop.hours.tuesday (line 8): \"9\" is not a time of day: write it like \"09:00\" (24:00 only as an end)",
                "shop.hours.wednesday (line 9): expected a list like [\"09:00-12:00\", \"13:30-18:00\"], found \"09:00-18:00\"",
                "shop.hours.thursday (line 10): \"18:00-18:00\" is empty: it starts and ends at the same time (write 00:00-24:00 for all day)",
                "shop.hours.holidays (line 11): \"2026-02-30\" is not a date: write it like \"2026-10-01\"; \"2026-10-07..2026-10-01\" ends before it starts",
                "shop.hours.makeup (line 13): \"someday\" is not a weekday: write monday, tuesday, … sunday",
            ]
        );
    }

    #[test]
    fn hours_that_cannot_work_together_are_reported() {
        let found = problems(&format!(
            "{GATEWAY}[[shop]]\nid = \"a\"\n[shop.hours]\nweekend = []\n\
             [[shop]]\nid = \"b\"\n[shop.hours]\nweekdays = [\"09:00-18:00\"]\n\
             holidays = [\"2026-10-01..2026-10-07\"]\nworkdays = [\"2026-10-03\"]\n"
        ));
        assert_eq!(
            found,
            [
                "shop.hours: gives no opening hours at all: add weekdays = [\"09:00-18:00\"] (or other days), or leave [shop.hours] out for a shop whose people are always in",
                "shop.hours.workdays: 2026-10-03 is both a holiday and a make-up working day",
            ]
        );
    }

    #[test]
    fn an_unknown_hours_key_suggests_the_known_one() {
        let found = problems(&format!(
            "{GATEWAY}[[shop]]\nid = \"a\"\n[shop.hours]\nmondy = [\"09:00-18:00\"]\n"
        ));
        assert_eq!(found, ["mondy: unknown setting: did you mean `monday`?"]);
    }
}
