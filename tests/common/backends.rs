//! A fresh store of each kind for a test: SQLite in a temporary directory, PostgreSQL in a
//! schema of its own on the server `XIAOER_TEST_PG` names, dropped when the test ends (also when
//! it fails).
//!
//! Where no PostgreSQL server answers, a PostgreSQL test prints why and passes without running,
//! except when `CI` is set: there a missing server fails it, so a broken CI database cannot
//! look like a green run.

use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::postgres::PgConnectOptions;
use tempfile::TempDir;
use xiaoer::config::StoreLocation;
use xiaoer::store::Store;

/// The server the PostgreSQL tests use unless `XIAOER_TEST_PG` says otherwise.
pub const DEFAULT_TEST_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Where a test's store lives.
pub enum TestDb {
    Sqlite(TempDir),
    Postgres(PgSchema),
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        TestDb::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A schema of the test's own, or `None` (with a notice on stderr) when no server answers
    /// and `CI` is not set.
    pub async fn postgres(test: &str) -> Option<TestDb> {
        PgSchema::create(test).await.map(TestDb::Postgres)
    }

    /// The store URL, as the daemon's `store` setting takes it.
    pub fn location(&self) -> StoreLocation {
        match self {
            TestDb::Sqlite(dir) => StoreLocation::Sqlite(dir.path().join(xiaoer::store::DB_FILE)),
            TestDb::Postgres(schema) => StoreLocation::Postgres(schema.url()),
        }
    }

    /// The SQLite data directory (SQLite only: the CLI commands take one).
    pub fn dir(&self) -> Option<&std::path::Path> {
        match self {
            TestDb::Sqlite(dir) => Some(dir.path()),
            TestDb::Postgres(_) => None,
        }
    }

    /// The daemon's `store` setting for this database: `None` for SQLite, whose store the daemon
    /// keeps in its data directory as always.
    pub fn daemon_store(&self) -> Option<StoreLocation> {
        match self {
            TestDb::Sqlite(_) => None,
            TestDb::Postgres(_) => Some(self.location()),
        }
    }

    /// Opens the store for writing (migrating it).
    pub async fn open(&self) -> Store {
        Store::open_location(&self.location()).await.unwrap()
    }

    /// Opens the store read-only, as the CLI does next to a running daemon.
    pub async fn open_existing(&self) -> Store {
        Store::open_existing_location(&self.location())
            .await
            .unwrap()
    }
}

/// A schema `xiaoer_t_<random>` on the test server; dropped with everything in it on drop.
pub struct PgSchema {
    base: String,
    pub name: String,
}

/// The test server's URL.
pub fn test_pg_url() -> String {
    std::env::var("XIAOER_TEST_PG").unwrap_or_else(|_| DEFAULT_TEST_PG.to_owned())
}

/// An administrative connection to the test server, or why not.
async fn admin(base: &str) -> Result<sqlx::PgConnection, String> {
    let options: PgConnectOptions = base.parse().map_err(|e| format!("bad URL: {e}"))?;
    match tokio::time::timeout(Duration::from_secs(5), options.connect()).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5 seconds".to_owned()),
    }
}

impl PgSchema {
    pub async fn create(test: &str) -> Option<PgSchema> {
        let base = test_pg_url();
        let mut conn = match admin(&base).await {
            Ok(conn) => conn,
            Err(why) => {
                let shown = StoreLocation::Postgres(base.clone()).to_string();
                if std::env::var_os("CI").is_some() {
                    panic!("{test}: no PostgreSQL server at {shown} ({why}), and CI is set");
                }
                eprintln!(
                    "skipped {test} on PostgreSQL: no server at {shown} ({why}); set XIAOER_TEST_PG to run it"
                );
                return None;
            }
        };
        let name = format!("xiaoer_t_{:016x}", rand::random::<u64>());
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let _ = sqlx::Connection::close(conn).await;
        Some(PgSchema { base, name })
    }

    /// The test server's URL with this schema as the search path.
    pub fn url(&self) -> String {
        let joiner = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{joiner}options=-c%20search_path%3D{}",
            self.base, self.name
        )
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, where nothing may block on another future: the
        // schema is dropped from a thread with a runtime of its own.
        let base = self.base.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut conn = admin(&base).await?;
                // A store a test left open must not hold the drop up for long.
                sqlx::query("SET lock_timeout = '10s'")
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut conn)
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = sqlx::Connection::close(conn).await;
                Ok::<(), String>(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(why)) => eprintln!("could not drop test schema {}: {why}", self.name),
            Err(_) => eprintln!(
                "could not drop test schema {}: the thread panicked",
                self.name
            ),
        }
    }
}

/// Held shared by every test [`on_both_backends!`] runs, and alone by those that measure how
/// work is grouped (commits per burst): with two cores, a PostgreSQL test running beside one of
/// those starves its tasks and spreads the burst over more commits than it would take.
pub static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// Runs a store test (an `async fn(TestDb)`) once on SQLite and once on PostgreSQL, as
/// `<name>::sqlite` and `<name>::postgres`; tests after `alone:` run with no other such test
/// beside them. `on_both_backends!(multi_thread: …)` runs daemon tests on a two-thread runtime.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)? ; alone: $($lone:ident),* $(,)?) => {
        $($crate::on_both_backends!(@one $test, read, [#[tokio::test]]);)*
        $($crate::on_both_backends!(@one $lone, write, [#[tokio::test]]);)*
    };
    (multi_thread: $($test:ident),* $(,)?) => {
        $($crate::on_both_backends!(
            @one $test, read, [#[tokio::test(flavor = "multi_thread", worker_threads = 2)]]
        );)*
    };
    ($($test:ident),* $(,)?) => {
        $crate::on_both_backends!($($test),* ; alone:);
    };
    (@one $test:ident, $lock:ident, [$($attr:tt)*]) => {
        mod $test {
            fn guard() -> impl Drop {
                $crate::common::backends::ALONE
                    .$lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
            }

            $($attr)*
            async fn sqlite() {
                let _guard = guard();
                super::$test($crate::common::backends::TestDb::sqlite()).await;
            }

            $($attr)*
            async fn postgres() {
                let _guard = guard();
                if let Some(db) =
                    $crate::common::backends::TestDb::postgres(stringify!($test)).await
                {
                    super::$test(db).await;
                }
            }
        }
    };
}
