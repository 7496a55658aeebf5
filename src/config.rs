//! Daemon settings, layered: built-in defaults < the config file < `XIAOER_*` environment
//! variables < command-line flags.
//!
//! The file is TOML (see `deploy/xiaoer.toml` for every setting with comments); unknown keys are
//! errors so a typo never silently falls back to a default.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::conversation::ConversationPolicy;
use crate::escalation::EscalationPolicy;
use crate::gateway::GatewayConfig;

/// Everything `xiaoer run` needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the SQLite store lives.
    pub data: PathBuf,
    pub rules: PathBuf,
    pub replies: PathBuf,
    /// Gateways to connect to (forward websocket; xiaoer is the client).
    #[serde(rename = "gateway")]
    pub gateways: Vec<GatewaySettings>,
    /// Per-shop settings, by shop account id (`self.user_id`).
    #[serde(rename = "shop")]
    pub shops: Vec<ShopSettings>,
    pub conversation: ConversationPolicy,
    pub escalation: EscalationPolicy,
    /// Watch the rule and reply files and reload on change (SIGHUP always reloads).
    pub watch: bool,
    /// Chat workers idle this long are stopped (they start again on the next message).
    pub worker_idle_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: PathBuf::from("data"),
            rules: PathBuf::from("rules"),
            replies: PathBuf::from("replies"),
            gateways: Vec::new(),
            shops: Vec::new(),
            conversation: ConversationPolicy::default(),
            escalation: EscalationPolicy::default(),
            watch: true,
            worker_idle_secs: 300,
        }
    }
}

/// One gateway connection.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
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
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ShopSettings {
    /// The shop account id (`self.user_id` in OneBot 12).
    pub id: String,
    /// How the shop is named to buyers (`{shop}`).
    pub name: Option<String>,
    /// A directory with the shop's own `rules/` and `replies/` laid over the shared set.
    pub overlay: Option<PathBuf>,
}

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {name}: {message}")]
    Env {
        name: &'static str,
        value: String,
        message: String,
    },
    #[error(
        "no gateway to connect to: pass --gateway URL, set XIAOER_GATEWAY, or add a [[gateway]] to the config file"
    )]
    NoGateway,
}

/// Values given on the command line, which override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub gateway: Option<String>,
    pub token: Option<String>,
    pub data: Option<PathBuf>,
    pub rules: Option<PathBuf>,
    pub replies: Option<PathBuf>,
}

impl Config {
    /// Reads the file (if any), then applies `env` (`XIAOER_*` pairs) and `flags`.
    ///
    /// # Errors
    ///
    /// An unreadable or invalid file, a malformed environment value, or no gateway at all.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        let mut env_overrides = Overrides::default();
        for (name, value) in env {
            match name.as_str() {
                "XIAOER_GATEWAY" => env_overrides.gateway = Some(value),
                "XIAOER_TOKEN" => env_overrides.token = Some(value),
                "XIAOER_DATA" => env_overrides.data = Some(value.into()),
                "XIAOER_RULES" => env_overrides.rules = Some(value.into()),
                "XIAOER_REPLIES" => env_overrides.replies = Some(value.into()),
                "XIAOER_WATCH" => {
                    config.watch = match value.as_str() {
                        "1" | "true" | "yes" => true,
                        "0" | "false" | "no" => false,
                        _ => {
                            return Err(ConfigError::Env {
                                name: "XIAOER_WATCH",
                                value,
                                message: "expected true or false".into(),
                            });
                        }
                    }
                }
                _ => {}
            }
        }
        config.apply(&env_overrides);
        config.apply(flags);
        if config.gateways.is_empty() {
            return Err(ConfigError::NoGateway);
        }
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|error| {
            let at = error
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigError::Parse {
                path: path.to_path_buf(),
                message: format!("{}{at}", error.message().trim()),
            }
        })
    }

    fn apply(&mut self, overrides: &Overrides) {
        if let Some(url) = &overrides.gateway {
            // A gateway given on the command line or in the environment replaces the file's list.
            self.gateways = vec![GatewaySettings {
                url: url.clone(),
                token: overrides.token.clone(),
                name: None,
            }];
        } else if let Some(token) = &overrides.token {
            for gateway in &mut self.gateways {
                gateway.token = Some(token.clone());
            }
        }
        if let Some(data) = &overrides.data {
            self.data = data.clone();
        }
        if let Some(rules) = &overrides.rules {
            self.rules = rules.clone();
        }
        if let Some(replies) = &overrides.replies {
            self.replies = replies.clone();
        }
    }

    pub fn worker_idle(&self) -> Duration {
        Duration::from_secs(self.worker_idle_secs.max(1))
    }

    pub fn shop(&self, id: &str) -> Option<&ShopSettings> {
        self.shops.iter().find(|s| s.id == id)
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

    #[test]
    fn file_then_environment_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xiaoer.toml");
        std::fs::write(
            &path,
            r#"
data = "/var/lib/xiaoer"
rules = "/etc/xiaoer/rules"
[[gateway]]
url = "ws://file:1/"
token = "file-token"
[[shop]]
id = "shop1"
name = "小二茶铺"
[conversation]
pause_secs = 60
[escalation]
fallback_limit = 2
queue_eta = { refund = "10分钟" }
"#,
        )
        .unwrap();
        let config = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap();
        assert_eq!(config.gateways[0].url, "ws://file:1/");
        assert_eq!(config.conversation.pause_secs, 60);
        assert_eq!(config.escalation.fallback_limit, 2);
        assert_eq!(config.escalation.eta(crate::rules::Queue::Refund), "10分钟");
        assert_eq!(
            config.shop("shop1").and_then(|s| s.name.as_deref()),
            Some("小二茶铺")
        );

        let config = Config::load(
            Some(&path),
            env(&[("XIAOER_DATA", "/env/data"), ("XIAOER_TOKEN", "env-token")]),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(config.data, PathBuf::from("/env/data"));
        assert_eq!(config.gateways[0].token.as_deref(), Some("env-token"));

        let flags = Overrides {
            data: Some("/flag/data".into()),
            gateway: Some("ws://flag:2/".into()),
            ..Default::default()
        };
        let config =
            Config::load(Some(&path), env(&[("XIAOER_DATA", "/env/data")]), &flags).unwrap();
        assert_eq!(config.data, PathBuf::from("/flag/data"));
        assert_eq!(config.gateways.len(), 1);
        assert_eq!(config.gateways[0].url, "ws://flag:2/");
        assert_eq!(config.rules, PathBuf::from("/etc/xiaoer/rules"));
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/xiaoer.toml");
        let config = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.gateways.len(), 1);
        assert_eq!(config.conversation, ConversationPolicy::default());
        assert_eq!(config.escalation.fallback_limit, 3);
        assert_eq!(
            config.escalation.eta(crate::rules::Queue::Complaint),
            "5分钟"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "dta = \"x\"\n").unwrap();
        let error = Config::load(Some(&path), env(&[]), &Overrides::default()).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("invalid config file"), "{message}");
        assert!(message.contains("unknown field `dta`"), "{message}");
        assert!(message.contains("(line 1)"), "{message}");
        let error = Config::load(None, env(&[]), &Overrides::default()).unwrap_err();
        assert!(matches!(error, ConfigError::NoGateway));
        let error = Config::load(
            None,
            env(&[("XIAOER_GATEWAY", "ws://x/"), ("XIAOER_WATCH", "maybe")]),
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid value \"maybe\" for XIAOER_WATCH: expected true or false"
        );
    }
}
