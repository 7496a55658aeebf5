//! `xiaoer agent add|list|passwd|disable|enable`: console accounts, managed from a shell on the
//! server (works while the daemon runs). Passwords are read from standard input, never from
//! the command line, where other users could see them.

use super::StoreArgs;
use crate::accounts::{self, AccountError};
use crate::model::Role;
use crate::store::Store;
use std::io::{BufRead, Write};

/// Arguments of `xiaoer agent`.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: AgentCommand,
}

/// Subcommands of `xiaoer agent`.
#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Add a console account; the password is read from standard input.
    Add {
        /// The name the agent logs in with and appears under in transcripts.
        name: String,
        /// agent, supervisor or admin.
        #[arg(long, default_value = "agent", value_parser = parse_role)]
        role: Role,
        /// A shop account id the agent serves (repeat for several; none: every shop).
        #[arg(long = "shop", value_name = "ID")]
        shops: Vec<String>,
        /// Read the password from standard input without a prompt (the default when it is
        /// not a terminal).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        data: StoreArgs,
    },
    /// List the accounts.
    List {
        #[command(flatten)]
        data: StoreArgs,
    },
    /// Set a new password (read from standard input); the account's sessions end.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        data: StoreArgs,
    },
    /// Disable an account; its sessions end at once.
    Disable {
        name: String,
        #[command(flatten)]
        data: StoreArgs,
    },
    /// Enable a disabled account again.
    Enable {
        name: String,
        #[command(flatten)]
        data: StoreArgs,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a role: use agent, supervisor or admin"))
}

/// Why `xiaoer agent` failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentCliError {
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error("cannot read the password from standard input: {0}")]
    ReadPassword(std::io::Error),
    #[error("no password given on standard input")]
    NoPassword,
    #[error("cannot write output: {0}")]
    Output(std::io::Error),
}

impl From<crate::store::StoreError> for AgentCliError {
    fn from(e: crate::store::StoreError) -> Self {
        AgentCliError::Account(AccountError::Store(e))
    }
}

fn read_password(input: &mut impl BufRead) -> Result<String, AgentCliError> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .map_err(AgentCliError::ReadPassword)?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(AgentCliError::NoPassword);
    }
    Ok(password)
}

async fn with_store<T>(
    at: &StoreArgs,
    work: impl AsyncFnOnce(&Store) -> Result<T, AgentCliError>,
) -> Result<T, AgentCliError> {
    let store = Store::open_location(&at.location()).await?;
    let result = work(&store).await;
    store.close().await?;
    result
}

/// Runs `xiaoer agent …`, reading passwords from `input` and writing to `out`.
///
/// # Errors
///
/// See [`AgentCliError`].
pub async fn run(
    args: &AgentArgs,
    input: &mut impl BufRead,
    out: &mut impl Write,
) -> Result<(), AgentCliError> {
    let say =
        |out: &mut dyn Write, text: String| writeln!(out, "{text}").map_err(AgentCliError::Output);
    match &args.command {
        AgentCommand::Add {
            name,
            role,
            shops,
            data,
            ..
        } => {
            let password = read_password(input)?;
            let agent = with_store(data, async |store| {
                Ok(accounts::add(store, name, *role, shops, &password).await?)
            })
            .await?;
            let scope = if agent.shops.is_empty() {
                "every shop".to_owned()
            } else {
                format!("shops {}", agent.shops.join(", "))
            };
            say(
                out,
                format!("added {} ({}, {scope})", agent.name, agent.role),
            )
        }
        AgentCommand::List { data } => {
            let agents = with_store(data, async |store| Ok(store.agents().await?)).await?;
            if agents.is_empty() {
                return say(
                    out,
                    "no agents (add one with `xiaoer agent add NAME`)".into(),
                );
            }
            for agent in agents {
                let shops = if agent.shops.is_empty() {
                    "*".to_owned()
                } else {
                    agent.shops.join(",")
                };
                let state = if agent.disabled { "disabled" } else { "active" };
                say(
                    out,
                    format!(
                        "{:<20} {:<10} {:<8} {shops}",
                        agent.name,
                        agent.role.as_str(),
                        state
                    ),
                )?;
            }
            Ok(())
        }
        AgentCommand::Passwd { name, data, .. } => {
            let password = read_password(input)?;
            with_store(data, async |store| {
                Ok(accounts::set_password(store, name, &password).await?)
            })
            .await?;
            say(
                out,
                format!("password of {name} changed; its sessions ended"),
            )
        }
        AgentCommand::Disable { name, data } => {
            with_store(data, async |store| {
                Ok(accounts::set_disabled(store, name, true).await?)
            })
            .await?;
            say(out, format!("{name} disabled; its sessions ended"))
        }
        AgentCommand::Enable { name, data } => {
            with_store(data, async |store| {
                Ok(accounts::set_disabled(store, name, false).await?)
            })
            .await?;
            say(out, format!("{name} enabled"))
        }
    }
}
