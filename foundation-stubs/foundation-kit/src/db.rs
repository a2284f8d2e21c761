//! Storage through sqlx's `Any` driver: one portable schema and one set of queries run on
//! SQLite (a file, or memory) and on PostgreSQL. Portability rules for the SQL in this repo:
//! `$1` placeholders, `ON CONFLICT` upserts, BIGINT for integers, booleans and times
//! (microseconds since the epoch), TEXT, and BYTEA for bytes (SQLite stores it as a BLOB).
//!
//! Writes and transactions take their connections from sqlx's pool; reads of one statement,
//! the bulk of the traffic, go through [`Database::fetch_all`] on connections kept apart, which
//! spare each read the pool's tests of its connection.

use std::{
    borrow::Cow,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use sqlx::{
    AnyConnection, AnyPool, Connection, Executor, SqlSafeStr,
    any::{Any, AnyArguments, AnyPoolOptions, AnyRow},
    migrate::{Migration, MigrationType, Migrator},
    query::Query,
};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite::memory:`, `sqlite://path/to/file.db`, or `postgres://user:pass@host/db`.
    pub url: String,
    /// Pool size, and as many again for single-statement reads ([`Database::fetch_all`]). An
    /// in-memory SQLite database always uses one connection for everything: its connections
    /// share one cache, where concurrent writers would lock each other out.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err("database.url must start with sqlite: or postgres://".into())
        }
    }
}

/// How long a call waits for a connection before it fails with `PoolTimedOut`.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a PostgreSQL connection may sit idle in the pool before it is pinged on its way out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct MigrationScript {
    pub version: i64,
    pub description: &'static str,
    pub sql: &'static str,
}

#[derive(Debug, Clone)]
pub struct Database {
    pub pool: AnyPool,
    pub backend: Backend,
    /// The connections of single-statement reads, or `None` for an in-memory SQLite database,
    /// whose reads share the pool's one connection.
    readers: Option<Arc<Readers>>,
    /// For an in-memory SQLite database: a connection that is never used, so the database
    /// lives as long as this value even when the pool replaces its own connection (an
    /// in-memory database ends with its last connection).
    _keeper: Option<AnyPool>,
}

/// Connections kept apart from the pool for reads of one statement, the hot path of every
/// service. sqlx's pool pings a connection each time it goes back (a round trip to the
/// connection's worker thread for SQLite, to the server for PostgreSQL), which costs as much
/// CPU as a small read itself. A read of one statement leaves nothing to clean up when it
/// succeeds, so its connection goes back as it is; one whose read failed or was cancelled
/// halfway is closed instead, and a new one is opened when needed.
#[derive(Debug)]
struct Readers {
    url: String,
    backend: Backend,
    permits: Semaphore,
    idle: Mutex<Vec<(AnyConnection, Instant)>>,
}

impl Readers {
    async fn open(&self) -> Result<AnyConnection, sqlx::Error> {
        let mut connection = AnyConnection::connect(&self.url).await?;
        if self.backend == Backend::Sqlite {
            sqlite_settings(&mut connection).await?;
        }
        Ok(connection)
    }

    /// An idle connection (pinged first when it has been idle a while on PostgreSQL), or a
    /// new one.
    async fn take(&self) -> Result<AnyConnection, sqlx::Error> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let Some((mut connection, since)) = idle else {
                return self.open().await;
            };
            if self.backend == Backend::Sqlite || since.elapsed() < IDLE_BEFORE_PING {
                return Ok(connection);
            }
            if connection.ping().await.is_ok() {
                return Ok(connection);
            }
            // The server or the network dropped it while it was idle: try the next one.
        }
    }

    fn give_back(&self, connection: AnyConnection) {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((connection, Instant::now()));
    }
}

/// The session settings of every SQLite connection.
async fn sqlite_settings(connection: &mut AnyConnection) -> Result<(), sqlx::Error> {
    connection.execute("PRAGMA busy_timeout = 5000").await?;
    connection.execute("PRAGMA journal_mode = WAL").await?;
    connection.execute("PRAGMA synchronous = NORMAL").await?;
    Ok(())
}

impl Database {
    /// Connects and applies the service's migrations.
    pub async fn connect(
        settings: &DatabaseSettings,
        migrations: &[MigrationScript],
    ) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend: Backend = settings
            .url
            .parse()
            .map_err(|reason: String| sqlx::Error::Configuration(reason.into()))?;
        let in_memory = backend == Backend::Sqlite && settings.url.contains(":memory:");
        // A connection is pinged when it goes back to the pool (sqlx always does that), so
        // pinging it again when it comes out costs a round trip per query and finds nothing:
        // only a PostgreSQL connection idle for a while, which the server or the network may
        // have dropped since, is tested before use.
        let mut options = AnyPoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false);
        if backend == Backend::Postgres {
            options = options.before_acquire(|connection, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            });
        }
        options = if in_memory {
            options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
        } else {
            options.max_connections(settings.max_connections.max(1))
        };
        if backend == Backend::Sqlite {
            options = options.after_connect(|connection, _| Box::pin(sqlite_settings(connection)));
        }
        let url = if in_memory {
            // A named, shared-cache memory database, so that the keeper and the pool's
            // connection open the same one.
            format!(
                "sqlite:file:domain-gateways-{}?mode=memory&cache=shared",
                uuid::Uuid::now_v7().simple()
            )
        } else if backend == Backend::Sqlite && !settings.url.contains('?') {
            // Create the file on first start.
            format!("{}?mode=rwc", settings.url)
        } else {
            settings.url.clone()
        };
        let keeper = if in_memory {
            Some(
                AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect(&url)
                    .await?,
            )
        } else {
            None
        };
        let pool = options.connect(&url).await?;
        let migrator = Migrator {
            migrations: Cow::Owned(
                migrations
                    .iter()
                    .map(|script| {
                        Migration::new(
                            script.version,
                            Cow::Borrowed(script.description),
                            MigrationType::Simple,
                            script.sql.into_sql_str(),
                            false,
                        )
                    })
                    .collect(),
            ),
            ..Migrator::DEFAULT
        };
        migrator.run(&pool).await?;
        let readers = (!in_memory).then(|| {
            Arc::new(Readers {
                url,
                backend,
                permits: Semaphore::new(settings.max_connections.max(1) as usize),
                idle: Mutex::new(Vec::new()),
            })
        });
        Ok(Self {
            pool,
            backend,
            readers,
            _keeper: keeper,
        })
    }

    /// Runs a query of one statement outside a transaction and returns its rows; reads go
    /// through here rather than through the pool (see [`Readers`]).
    pub async fn fetch_all<'q>(
        &self,
        query: Query<'q, Any, AnyArguments>,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let Some(readers) = &self.readers else {
            return query.fetch_all(&self.pool).await;
        };
        let _permit = tokio::time::timeout(ACQUIRE_TIMEOUT, readers.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let mut connection = readers.take().await?;
        // Cancelled before this returns, the connection is dropped, and so closed.
        let rows = query.fetch_all(&mut connection).await?;
        readers.give_back(connection);
        Ok(rows)
    }

    /// [`Database::fetch_all`] for a query of at most one row.
    pub async fn fetch_optional<'q>(
        &self,
        query: Query<'q, Any, AnyArguments>,
    ) -> Result<Option<AnyRow>, sqlx::Error> {
        Ok(self.fetch_all(query).await?.into_iter().next())
    }
}

/// Helpers for tests that run the same suite on SQLite and, when `TEST_DATABASE_URL` is set,
/// on PostgreSQL.
pub mod testing {
    use super::DatabaseSettings;

    /// An in-memory SQLite database.
    pub fn sqlite() -> DatabaseSettings {
        DatabaseSettings {
            url: "sqlite::memory:".into(),
            max_connections: 1,
        }
    }

    /// A fresh schema on the PostgreSQL server of `TEST_DATABASE_URL`, or `None` (with the
    /// reason printed) when it is not set.
    pub async fn postgres(test: &str) -> Option<DatabaseSettings> {
        let Ok(base) = std::env::var("TEST_DATABASE_URL") else {
            println!("skipping the PostgreSQL half of {test}: TEST_DATABASE_URL is not set");
            return None;
        };
        let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&base)
            .await
            .expect("TEST_DATABASE_URL must point at a reachable PostgreSQL server");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut connection)
            .await
            .expect("cannot create a test schema");
        let separator = if base.contains('?') { '&' } else { '?' };
        Some(DatabaseSettings {
            url: format!("{base}{separator}options=-c%20search_path%3D{schema}"),
            max_connections: 4,
        })
    }
}

/// `$start, $start+1, …` for `n` values, to build an `IN (…)` list of bound parameters.
pub fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2), ($3, $4), …` for `n` pairs, to build a `(a, b) IN (VALUES …)` list of bound
/// pairs.
pub fn pair_placeholders(n: usize) -> String {
    (0..n)
        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    /// The pool replaces a connection it no longer trusts (one whose query was cancelled, for
    /// instance); an in-memory database must outlive that, or every table and row vanishes.
    #[tokio::test]
    async fn an_in_memory_database_survives_its_connection_being_replaced() {
        let db = Database::connect(&testing::sqlite(), &[]).await.unwrap();
        sqlx::query("CREATE TABLE kept (n BIGINT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO kept (n) VALUES (42)")
            .execute(&db.pool)
            .await
            .unwrap();
        db.pool.acquire().await.unwrap().close().await.unwrap();
        let n: i64 = sqlx::query("SELECT n FROM kept")
            .fetch_one(&db.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        assert_eq!(n, 42);
    }

    fn idle_readers(db: &Database) -> usize {
        db.readers
            .as_ref()
            .expect("a database with read connections")
            .idle
            .lock()
            .unwrap()
            .len()
    }

    async fn count(db: &Database) -> i64 {
        db.fetch_all(sqlx::query("SELECT COUNT(*) AS n FROM kept"))
            .await
            .unwrap()[0]
            .try_get("n")
            .unwrap()
    }

    /// Reads run on connections of their own, which go back for the next read once they
    /// succeed, and see every write committed through the pool before they start.
    async fn reads_reuse_their_connection_and_see_committed_writes(settings: &DatabaseSettings) {
        let db = Database::connect(settings, &[]).await.unwrap();
        sqlx::query("CREATE TABLE kept (n BIGINT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(count(&db).await, 0);
        for n in 1..=3 {
            sqlx::query("INSERT INTO kept (n) VALUES ($1)")
                .bind(n)
                .execute(&db.pool)
                .await
                .unwrap();
            assert_eq!(count(&db).await, n);
            assert_eq!(
                idle_readers(&db),
                1,
                "one connection serves reads one at a time"
            );
        }
        let row = db
            .fetch_optional(sqlx::query("SELECT n FROM kept WHERE n = $1").bind(2_i64))
            .await
            .unwrap()
            .expect("the row");
        assert_eq!(row.try_get::<i64, _>("n").unwrap(), 2);
        assert!(
            db.fetch_optional(sqlx::query("SELECT n FROM kept WHERE n = $1").bind(9_i64))
                .await
                .unwrap()
                .is_none()
        );

        // A read that fails closes its connection instead of handing it to the next read,
        // which opens a new one and succeeds.
        let failed = db.fetch_all(sqlx::query("SELECT n FROM missing")).await;
        assert!(
            matches!(failed, Err(sqlx::Error::Database(_))),
            "a read of a missing table fails"
        );
        assert_eq!(idle_readers(&db), 0);
        assert_eq!(count(&db).await, 3);
        assert_eq!(idle_readers(&db), 1);

        // So does one cancelled before it finished (a read long enough to be cut off).
        let mut read = Box::pin(db.fetch_all(sqlx::query(
            "WITH RECURSIVE c (x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000)
             SELECT COUNT(*) AS n FROM c",
        )));
        let waker = std::task::Waker::noop();
        let polled = read
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        assert!(polled.is_pending(), "the read waits for its rows");
        drop(read);
        assert_eq!(idle_readers(&db), 0);
        assert_eq!(count(&db).await, 3);
        assert_eq!(idle_readers(&db), 1);
    }

    #[tokio::test]
    async fn reads_on_a_sqlite_file_reuse_their_connection_and_see_committed_writes() {
        let dir = tempfile::tempdir().unwrap();
        let settings = DatabaseSettings {
            url: format!("sqlite://{}", dir.path().join("reads.db").display()),
            max_connections: 2,
        };
        reads_reuse_their_connection_and_see_committed_writes(&settings).await;
    }

    #[tokio::test]
    async fn reads_on_postgres_reuse_their_connection_and_see_committed_writes() {
        if let Some(settings) = testing::postgres("the read connections test").await {
            reads_reuse_their_connection_and_see_committed_writes(&settings).await;
        }
    }

    /// An in-memory database has one connection, which reads share with the pool.
    #[tokio::test]
    async fn reads_of_an_in_memory_database_go_through_the_pool() {
        let db = Database::connect(&testing::sqlite(), &[]).await.unwrap();
        assert!(db.readers.is_none());
        sqlx::query("CREATE TABLE kept (n BIGINT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO kept (n) VALUES (7)")
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(count(&db).await, 1);
    }
}
