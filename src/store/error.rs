//! The store's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the store. Messages are lowercase and say what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {}", path.display(), explain_io(cause))]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why (said in words in the message, so not a `source` an error chain repeats).
        cause: std::io::Error,
    },
    /// There is no store in the data directory (read-only tools need an existing one).
    #[error("no xiaoer store at {} (run the daemon first or pass --data)", dir.display())]
    Missing {
        /// The data directory that was given.
        dir: PathBuf,
    },
    /// The database could not be opened or configured.
    #[error("cannot open store at {}: {}", path.display(), explain(cause))]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        cause: sqlx::Error,
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
    #[error("cannot {context}: {}", explain(cause))]
    Query {
        /// What was being done, e.g. `record inbound message 42 for qq/1/2`.
        context: String,
        /// Why.
        cause: sqlx::Error,
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
    /// SQLite's integrity check found problems.
    #[error(
        "the store at {} is damaged ({found}); restore it from a backup, or move it aside to start empty",
        path.display()
    )]
    Damaged {
        /// The database file.
        path: PathBuf,
        /// What the check reported.
        found: String,
    },
    /// The database file was deleted or replaced while the daemon was running.
    #[error(
        "the store {} was deleted or replaced while xiaoer was running; nothing more is written or acknowledged until it is restarted",
        path.display()
    )]
    Vanished {
        /// The database file.
        path: PathBuf,
    },
    /// The disk did not confirm that committed writes are stored (a failed `fdatasync`).
    #[error(
        "the disk did not confirm writes to the store {}: {}; nothing more is acknowledged until xiaoer is restarted (check the disk first)",
        path.display(),
        explain_io(cause)
    )]
    NotDurable {
        /// The file that could not be made durable.
        path: PathBuf,
        cause: std::io::Error,
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
    /// The PostgreSQL server could not be reached or refused the connection. `target` is
    /// `host:port/database`, never the password.
    #[error("cannot reach the PostgreSQL store at {target}: {}", explain(cause))]
    Unreachable {
        /// Where: `host:port/database`.
        target: String,
        /// Why.
        cause: sqlx::Error,
    },
    /// The PostgreSQL schema migrations could not be applied.
    #[error(
        "cannot migrate the PostgreSQL store at {target}: {}",
        explain_migrate(source)
    )]
    MigrateDatabase {
        /// Where: `host:port/database`.
        target: String,
        /// Why.
        source: sqlx::migrate::MigrateError,
    },
    /// The PostgreSQL schema is older than this program (read-only handles never migrate).
    #[error(
        "the PostgreSQL store at {target} has schema version {found}, this xiaoer needs {needed} (start the daemon once to migrate it)"
    )]
    DatabaseSchemaTooOld {
        /// Where: `host:port/database`.
        target: String,
        /// The newest migration applied to it (0 if none).
        found: i64,
        /// The newest migration this program knows.
        needed: i64,
    },
    /// A chat worker's turn was planned under a shop lease this instance no longer holds
    /// (another instance took the shop, or the lease lapsed while this one was paused).
    #[error(
        "shop {shop} is not this instance's to answer now (another instance holds its lease, or the lease lapsed); nothing was written, and the instance holding the shop handles the message"
    )]
    LeaseLost {
        /// `platform/self_id`.
        shop: String,
    },
    /// A failure injected for a test (see [`Fault`](super::Fault)); nothing was written.
    #[error("the commit failed (injected fault); nothing was written")]
    Injected,
    /// Output could not be written (CLI).
    #[error("cannot write output: {0}")]
    Output(#[source] std::io::Error),
}

impl StoreError {
    pub(crate) fn query(context: impl Into<String>, cause: sqlx::Error) -> Self {
        StoreError::Query {
            context: context.into(),
            cause,
        }
    }

    /// Whether the disk (or SQLite's page limit, or the PostgreSQL server's disk) is full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StoreError::Query { cause, .. } | StoreError::Open { cause, .. }
            if sqlite_code(cause) == Some(13) || postgres_code(cause) == Some("53100"))
    }

    /// Whether this is a database failure (as opposed to a refused request such as
    /// [`StoreError::AlreadyClaimed`]). The writer retries a failed batch item by item only for
    /// these.
    pub fn is_database_failure(&self) -> bool {
        matches!(
            self,
            StoreError::Query { .. }
                | StoreError::Corrupt { .. }
                | StoreError::Injected
                | StoreError::Vanished { .. }
                | StoreError::NotDurable { .. }
                | StoreError::Unreachable { .. }
        )
    }
}

/// The primary SQLite result code of an error, if it came from SQLite.
fn sqlite_code(error: &sqlx::Error) -> Option<i32> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    // PostgreSQL's SQLSTATEs are mostly digits too ("23505"); read as SQLite codes they would
    // be told in the wrong words.
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return None;
    }
    db.code()?.parse::<i32>().ok().map(|code| code & 0xff)
}

/// The SQLSTATE of an error, if it came from PostgreSQL.
pub(crate) fn postgres_code(error: &sqlx::Error) -> Option<&str> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .map(sqlx::postgres::PgDatabaseError::code)
}

/// A PostgreSQL error in words an operator understands, not SQLSTATEs; `None` when it is not
/// one of the failures worth telling apart.
fn explain_postgres(error: &sqlx::Error) -> Option<String> {
    let code = postgres_code(error)?;
    let words = match code {
        "57014" => {
            "the database did not finish within the statement timeout (is the server overloaded, or is another client holding a lock?)"
        }
        "53100" => "the database server's disk is full (free some space; xiaoer retries by itself)",
        "53200" => "the database server is out of memory",
        "53300" => {
            "the database server has no free connection slots (raise max_connections, or close other clients)"
        }
        "28P01" | "28000" => {
            "the database refused the user or password (check the store URL and pg_hba.conf)"
        }
        "3D000" => "the database does not exist (create it first, e.g. createdb)",
        "3F000" => "the schema named in search_path does not exist (create it first)",
        "42501" => {
            "the database user lacks a permission xiaoer needs (it must be able to create tables in its schema)"
        }
        "25006" => "the database is read-only (a standby, or default_transaction_read_only is on)",
        "40001" | "40P01" => {
            "the write collided with another client's (a serialisation failure or deadlock); it is retried"
        }
        "57P01" | "57P02" | "57P03" => "the database server is shutting down or starting up",
        _ if code.starts_with("23") => {
            "a record breaks the database's rules (a duplicate or a missing link)"
        }
        _ if code.starts_with("08") => "the connection to the database server broke",
        _ => return None,
    };
    Some(words.to_owned())
}

/// A rusqlite error (the writer's connection) as the `sqlx::Error` every other store error
/// carries, so [`explain`], [`StoreError::is_disk_full`] and the rest read SQLite's result code
/// the same way whichever connection failed.
pub(crate) fn from_rusqlite(error: rusqlite::Error) -> sqlx::Error {
    use rusqlite::Error as E;
    match &error {
        E::SqliteFailure(failure, _) => sqlx::Error::Database(Box::new(NativeError {
            code: failure.extended_code,
            message: error.to_string(),
        })),
        E::InvalidColumnType(..)
        | E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::InvalidColumnName(_)
        | E::InvalidColumnIndex(_)
        | E::Utf8Error(_) => sqlx::Error::Decode(Box::new(error)),
        _ => sqlx::Error::Protocol(error.to_string()),
    }
}

/// A failure SQLite reported on the writer's connection: its extended result code and message.
#[derive(Debug)]
struct NativeError {
    code: std::ffi::c_int,
    message: String,
}

impl std::fmt::Display for NativeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for NativeError {}

impl sqlx::error::DatabaseError for NativeError {
    fn message(&self) -> &str {
        &self.message
    }

    /// The extended result code, as sqlx's own SQLite errors give it.
    fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
        Some(self.code.to_string().into())
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        use rusqlite::ffi;
        use sqlx::error::ErrorKind;
        match self.code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                ErrorKind::UniqueViolation
            }
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY => ErrorKind::ForeignKeyViolation,
            ffi::SQLITE_CONSTRAINT_NOTNULL => ErrorKind::NotNullViolation,
            ffi::SQLITE_CONSTRAINT_CHECK => ErrorKind::CheckViolation,
            _ => ErrorKind::Other,
        }
    }
}

/// Who the daemon runs as, for messages about permissions.
fn user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .map(|u| format!("user {u}"))
        .unwrap_or_else(|_| "the daemon's user".to_owned())
}

/// A file-system error in the data directory in words an operator understands: what is wrong
/// and what to do, instead of "os error 30".
pub fn explain_io(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ReadOnlyFilesystem => "the file system holding the data directory is mounted read-only (remount it read-write, or point --data at a writable directory)".to_owned(),
        ErrorKind::PermissionDenied => format!(
            "the data directory is not writable by {} (fix its owner or mode, or point --data elsewhere)",
            user()
        ),
        ErrorKind::StorageFull => "the disk is full (free some space and start again)".to_owned(),
        ErrorKind::NotFound => "a directory on the way to it does not exist".to_owned(),
        _ => error.to_string(),
    }
}

/// A failed migration in words: the database's own failure where there is one (a read-only
/// server, a missing permission), else what the migrator found wrong.
fn explain_migrate(error: &sqlx::migrate::MigrateError) -> String {
    use sqlx::migrate::MigrateError;
    match error {
        MigrateError::Execute(cause) => explain(cause),
        MigrateError::ExecuteMigration(cause, version) => {
            format!("migration {version} failed: {}", explain(cause))
        }
        other => other.to_string(),
    }
}

/// A database error in words an operator understands, not SQLite's result codes or
/// PostgreSQL's SQLSTATEs.
pub(crate) fn explain(error: &sqlx::Error) -> String {
    if let Some(words) = explain_postgres(error) {
        return words;
    }
    match sqlite_code(error) {
        Some(5 | 6) => "another process is holding the database lock (is a second xiaoer or a backup running?)".to_owned(),
        Some(8) => format!(
            "the database is read-only: the data directory or file is not writable by {}, or the file system is mounted read-only",
            user()
        ),
        Some(10) => "the disk reported an input/output error (check the disk and the kernel log)".to_owned(),
        Some(11 | 26) => "the database file is damaged (restore it from a backup, or move it aside to start empty)".to_owned(),
        Some(13) => "the disk is full (free some space; xiaoer retries by itself)".to_owned(),
        Some(14) => format!(
            "the database file cannot be opened: the data directory is missing or not writable by {}",
            user()
        ),
        Some(19) => "a record breaks the database's rules (a duplicate or a missing link)".to_owned(),
        _ => match error {
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                "nothing answers there (is the server running, and are the host and port right?)".to_owned()
            }
            sqlx::Error::Database(db) if postgres_code(error).is_some() => db.message().to_owned(),
            sqlx::Error::Io(io) => format!("input/output error: {io}"),
            sqlx::Error::PoolTimedOut => "the database did not answer in time".to_owned(),
            sqlx::Error::PoolClosed => "the store is closed".to_owned(),
            other => other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_system_errors_are_told_in_words() {
        use std::io::{Error, ErrorKind};
        let read_only = explain_io(&Error::from(ErrorKind::ReadOnlyFilesystem));
        assert!(read_only.contains("mounted read-only"), "{read_only}");
        let denied = explain_io(&Error::from(ErrorKind::PermissionDenied));
        assert!(denied.contains("not writable by"), "{denied}");
        let error = StoreError::CreateDir {
            path: "/srv/xiaoer".into(),
            cause: Error::from(ErrorKind::PermissionDenied),
        };
        let message = error.to_string();
        assert!(
            message.starts_with(
                "cannot create data directory /srv/xiaoer: the data directory is not writable"
            ),
            "{message}"
        );
        assert!(
            std::error::Error::source(&error).is_none(),
            "the cause is in the words, not repeated by a chain"
        );
    }

    #[tokio::test]
    async fn database_errors_are_told_in_words() {
        use sqlx::ConnectOptions;
        let dir = tempfile::tempdir().unwrap();
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("t.db"))
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (x TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::query("PRAGMA max_page_count = 2")
            .execute(&mut conn)
            .await
            .unwrap();
        let big = "x".repeat(100_000);
        let error = sqlx::query("INSERT INTO t VALUES ($1)")
            .bind(&big)
            .execute(&mut conn)
            .await
            .unwrap_err();
        let error = StoreError::query("save a chat", error);
        assert!(error.is_disk_full());
        let message = error.to_string();
        assert!(
            message.starts_with("cannot save a chat: the disk is full"),
            "{message}"
        );
        assert!(!message.contains("code"), "{message}");
        let missing = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.path().join("no/such/dir/t.db"))
            .connect()
            .await
            .unwrap_err();
        let message = explain(&missing);
        assert!(
            message.contains("data directory is missing or not writable"),
            "{message}"
        );
    }

    #[test]
    fn the_writer_connections_errors_are_told_in_the_same_words() {
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT UNIQUE)")
            .unwrap();
        let _: i64 = conn
            .query_row("PRAGMA max_page_count = 2", [], |row| row.get(0))
            .unwrap();
        let big = "x".repeat(100_000);
        let full = conn
            .execute("INSERT INTO t VALUES (?1)", [&big])
            .unwrap_err();
        let error = StoreError::query("save a chat", from_rusqlite(full));
        assert!(error.is_disk_full());
        assert!(error.is_database_failure());
        let message = error.to_string();
        assert!(
            message.starts_with("cannot save a chat: the disk is full"),
            "{message}"
        );

        let _: i64 = conn
            .query_row("PRAGMA max_page_count = 1000", [], |row| row.get(0))
            .unwrap();
        conn.execute("INSERT INTO t VALUES ('a')", []).unwrap();
        let duplicate = conn.execute("INSERT INTO t VALUES ('a')", []).unwrap_err();
        let duplicate = from_rusqlite(duplicate);
        assert!(
            duplicate
                .as_database_error()
                .is_some_and(|e| e.is_unique_violation()),
            "{duplicate:?}"
        );
        let message = StoreError::query("save a chat", duplicate).to_string();
        assert!(
            message
                .ends_with("a record breaks the database's rules (a duplicate or a missing link)"),
            "{message}"
        );
        assert!(!message.contains("code"), "{message}");

        let missing = rusqlite::Connection::open_with_flags(
            dir.path().join("no/such/dir/t.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )
        .unwrap_err();
        let message = explain(&from_rusqlite(missing));
        assert!(
            message.contains("data directory is missing or not writable"),
            "{message}"
        );
    }
}
