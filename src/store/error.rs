//! The store's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the store. Messages are lowercase and say what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// There is no store in the data directory (read-only tools need an existing one).
    #[error("no xiaoer store at {} (run the daemon first or pass --data)", dir.display())]
    Missing {
        /// The data directory that was given.
        dir: PathBuf,
    },
    /// The database could not be opened or configured.
    #[error("cannot open store at {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: sqlx::Error,
    },
    /// The schema migrations could not be applied.
    #[error("cannot migrate store at {}: {source}", path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
    /// The database exists but its schema is older than this program (read-only handles never
    /// migrate).
    #[error(
        "store at {} has schema version {found}, this xiaoer needs {needed} (start the daemon once to migrate it)",
        path.display()
    )]
    SchemaTooOld {
        /// The database file.
        path: PathBuf,
        /// The newest migration applied to it (0 if none).
        found: i64,
        /// The newest migration this program knows.
        needed: i64,
    },
    /// A query failed.
    #[error("cannot {context}: {source}")]
    Query {
        /// What was being done, e.g. `record inbound message 42 for qq/1/2`.
        context: String,
        /// Why.
        source: sqlx::Error,
    },
    /// A stored value could not be understood.
    #[error("bad value in store while {context}: {detail}")]
    Corrupt {
        /// What was being read.
        context: String,
        /// What was wrong.
        detail: String,
    },
    /// A write was asked of a handle opened with [`Store::open_existing`](super::Store::open_existing).
    #[error("cannot {context}: store was opened read-only")]
    ReadOnly {
        /// What was being done.
        context: String,
    },
    /// The writer task has stopped (the store was closed, or the writer panicked).
    #[error("cannot {context}: store is closed")]
    Closed {
        /// What was being done.
        context: String,
    },
    /// No escalation has that id.
    #[error("no escalation with id {id}")]
    EscalationNotFound {
        /// The id asked for.
        id: i64,
    },
    /// The escalation is already closed.
    #[error("escalation {id} is already closed")]
    EscalationClosed {
        /// The id asked for.
        id: i64,
    },
    /// Another agent has claimed the escalation.
    #[error("escalation {id} is already claimed by {agent}")]
    AlreadyClaimed {
        /// The id asked for.
        id: i64,
        /// Who holds it.
        agent: String,
    },
    /// The conversation changed after it was read (another agent or process wrote it); nothing
    /// of the turn was written. Read it again and plan again.
    #[error(
        "chat {key} changed while it was being handled (version {found}, expected {expected}); nothing was written"
    )]
    Conflict {
        /// Which conversation.
        key: crate::model::ConversationKey,
        /// The version the turn was planned from.
        expected: i64,
        /// The version stored.
        found: i64,
    },
    /// Releasing an escalation nobody holds.
    #[error("escalation {id} is not claimed by anyone")]
    NotClaimed {
        /// The id asked for.
        id: i64,
    },
    /// An account with that name exists.
    #[error("an agent named {name} already exists")]
    AgentExists {
        /// The name asked for.
        name: String,
    },
    /// No account has that name.
    #[error("no agent named {name}")]
    AgentNotFound {
        /// The name asked for.
        name: String,
    },
    /// A failure injected for a test (see [`Fault`](super::Fault)); nothing was written.
    #[error("the commit failed (injected fault); nothing was written")]
    Injected,
    /// Output could not be written (CLI).
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

impl StoreError {
    pub(crate) fn query(context: impl Into<String>, source: sqlx::Error) -> Self {
        StoreError::Query {
            context: context.into(),
            source,
        }
    }

    /// Whether this is a database failure (as opposed to a refused request such as
    /// [`StoreError::AlreadyClaimed`]). The writer retries a failed batch item by item only for
    /// these.
    pub fn is_database_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Query { .. } | StoreError::Corrupt { .. } | StoreError::Injected
        )
    }
}
