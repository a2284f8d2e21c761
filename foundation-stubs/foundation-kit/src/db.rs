//! Storage through sqlx's `Any` driver: one portable schema and one set of queries run on
//! SQLite (a file, or memory) and on PostgreSQL. Portability rules for the SQL in this repo:
//! `$1` placeholders, `ON CONFLICT` upserts, BIGINT for integers, booleans and times
//! (microseconds since the epoch), TEXT, and BYTEA for bytes (SQLite stores it as a BLOB).
//!
//! Writes and transactions take their connections from sqlx's pool; reads of one statement,
//! the bulk of the traffic, go through [`Database::fetch_all`] on connections kept apart, which
//! spare each read the pool's tests of its connection. The hottest reads go through
//! [`Database::read`], which on a SQLite file runs the statement inline on the calling thread
//! (see [`InlineReaders`]).

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
    /// For a SQLite file: the connections of [`Database::read`].
    inline: Option<Arc<InlineReaders>>,
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

/// A parameter of a [`Database::read`].
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

/// The columns of one row by name, whichever backend read it: what a store's row mapping
/// reads, so that one mapping serves [`Database::read`] and sqlx's rows.
pub trait Columns {
    fn text(&self, name: &str) -> Result<String, sqlx::Error>;
    fn int(&self, name: &str) -> Result<i64, sqlx::Error>;
}

impl Columns for AnyRow {
    fn text(&self, name: &str) -> Result<String, sqlx::Error> {
        sqlx::Row::try_get(self, name)
    }

    fn int(&self, name: &str) -> Result<i64, sqlx::Error> {
        sqlx::Row::try_get(self, name)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, name: &str) -> Result<String, sqlx::Error> {
        self.get(name).map_err(sqlite_error)
    }

    fn int(&self, name: &str) -> Result<i64, sqlx::Error> {
        self.get(name).map_err(sqlite_error)
    }
}

/// A rusqlite error as the storage error the services map to statuses: a busy or locked
/// database is transient (UNAVAILABLE), anything else a fault (INTERNAL).
fn sqlite_error(error: rusqlite::Error) -> sqlx::Error {
    if is_busy(&error) {
        sqlx::Error::Io(std::io::Error::other(error))
    } else {
        sqlx::Error::Protocol(format!("sqlite: {error}"))
    }
}

/// Whether another connection holds the lock a statement needs.
fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Read-only SQLite connections that run a read inline, on the calling thread. sqlx runs every
/// SQLite statement on a worker thread of its connection and sends each row back over a
/// channel: for a read by primary key, the two hand-offs between threads (and their futex
/// wake-ups) cost more CPU than the read itself. A read here is one prepared statement, cached
/// per connection, over at most a batch of rows by key: tens of microseconds of the thread,
/// less than the hand-offs took. At most one connection per thread that reads at once is
/// open, so the runtime's threads bound them. A reader never waits for a lock on the runtime's
/// thread: a busy database sends the read to sqlx, whose worker thread waits for it.
#[derive(Debug)]
struct InlineReaders {
    path: String,
    idle: Mutex<Vec<rusqlite::Connection>>,
}

/// Statements cached per connection: the hot reads, with one IN list per batch size.
const INLINE_STATEMENT_CACHE: usize = 256;

impl InlineReaders {
    /// The file of a `sqlite:` url, without its query.
    fn new(url: &str) -> Self {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Result<rusqlite::Connection, rusqlite::Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        if let Some(connection) = idle {
            return Ok(connection);
        }
        let connection = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Busy: give the read to sqlx at once rather than sleep on the runtime's thread.
        connection.busy_timeout(Duration::ZERO)?;
        connection.set_prepared_statement_cache_capacity(INLINE_STATEMENT_CACHE);
        Ok(connection)
    }

    /// The mapped rows, or `None` when the database was busy or locked.
    fn read<T, E: From<sqlx::Error>>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        map: &impl Fn(&dyn Columns) -> Result<T, E>,
    ) -> Option<Result<Vec<T>, E>> {
        let connection = match self.take() {
            Ok(connection) => connection,
            Err(error) if is_busy(&error) => return None,
            Err(error) => return Some(Err(sqlite_error(error).into())),
        };
        let rows = Self::run(&connection, sql, params, map);
        // A statement that failed was reset when it dropped: the connection stays usable.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(connection);
        match rows {
            Ok(rows) => Some(rows.into_iter().collect()),
            Err(error) if is_busy(&error) => None,
            Err(error) => Some(Err(sqlite_error(error).into())),
        }
    }

    fn run<T, E>(
        connection: &rusqlite::Connection,
        sql: &str,
        params: &[Param<'_>],
        map: &impl Fn(&dyn Columns) -> Result<T, E>,
    ) -> Result<Vec<Result<T, E>>, rusqlite::Error> {
        let mut statement = connection.prepare_cached(sql)?;
        for (index, param) in params.iter().enumerate() {
            match *param {
                Param::Text(text) => statement.raw_bind_parameter(index + 1, text)?,
                Param::Int(int) => statement.raw_bind_parameter(index + 1, int)?,
            }
        }
        let mut rows = statement.raw_query();
        let mut mapped = Vec::new();
        while let Some(row) = rows.next()? {
            mapped.push(map(row));
        }
        Ok(mapped)
    }
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
        let inline = (backend == Backend::Sqlite && !in_memory)
            .then(|| Arc::new(InlineReaders::new(&settings.url)));
        Ok(Self {
            pool,
            backend,
            readers,
            inline,
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

    /// Runs a read of one statement, `sql` with `$1`… bound to `params` in order, and maps
    /// each row with `map`: inline on a SQLite file (see [`InlineReaders`]), else (and when the
    /// file is busy) through [`Database::fetch_all`]. For the hot reads of few rows by key.
    pub async fn read<T, E: From<sqlx::Error>>(
        &self,
        sql: &str,
        params: &[Param<'_>],
        map: impl Fn(&dyn Columns) -> Result<T, E>,
    ) -> Result<Vec<T>, E> {
        if let Some(inline) = &self.inline
            && let Some(rows) = inline.read(sql, params, &map)
        {
            return rows;
        }
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
        for param in params {
            query = match *param {
                Param::Text(text) => query.bind(text.to_owned()),
                Param::Int(int) => query.bind(int),
            };
        }
        self.fetch_all(query)
            .await?
            .iter()
            .map(|row| map(row))
            .collect()
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

    /// A SQLite file `service.db` in `dir` (a test's temporary folder): its reads by key run
    /// inline ([`super::Database::read`]), where an in-memory database's go through sqlx.
    pub fn sqlite_file(dir: &std::path::Path) -> DatabaseSettings {
        DatabaseSettings {
            url: format!("sqlite://{}", dir.join("service.db").display()),
            max_connections: 2,
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

    /// `Database::read` binds its text and integer parameters in order, maps every row, sees
    /// each write committed through the pool, and fails a bad statement or a bad column
    /// without losing its connection.
    async fn keyed_reads_bind_map_and_fail_cleanly(settings: &DatabaseSettings) {
        let db = Database::connect(settings, &[]).await.unwrap();
        sqlx::query("CREATE TABLE items (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        let read = |ids: &'static [&'static str], min: i64| {
            let db = db.clone();
            async move {
                let sql = format!(
                    "SELECT id, n FROM items WHERE id IN ({}) AND n >= ${} ORDER BY id",
                    placeholders(1, ids.len()),
                    ids.len() + 1
                );
                let mut params: Vec<Param<'_>> = ids.iter().map(|id| Param::Text(id)).collect();
                params.push(Param::Int(min));
                db.read(&sql, &params, |row| -> Result<(String, i64), sqlx::Error> {
                    Ok((row.text("id")?, row.int("n")?))
                })
                .await
            }
        };
        assert_eq!(read(&["a", "b"], 0).await.unwrap(), []);
        for (id, n) in [("a", 1_i64), ("b", 2), ("c", 3)] {
            sqlx::query("INSERT INTO items (id, n) VALUES ($1, $2)")
                .bind(id)
                .bind(n)
                .execute(&db.pool)
                .await
                .unwrap();
        }
        assert_eq!(
            read(&["a", "c", "z"], 0).await.unwrap(),
            [("a".to_owned(), 1), ("c".to_owned(), 3)]
        );
        assert_eq!(read(&["a", "c"], 2).await.unwrap(), [("c".to_owned(), 3)]);

        let missing = db
            .read(
                "SELECT id FROM nowhere WHERE id = $1",
                &[Param::Text("a")],
                |row| row.text("id"),
            )
            .await;
        assert!(missing.is_err(), "a read of a missing table fails");
        let bad_column = db
            .read(
                "SELECT id FROM items WHERE id = $1",
                &[Param::Text("a")],
                |row| row.int("nope"),
            )
            .await;
        assert!(bad_column.is_err(), "a column the statement has not fails");
        assert_eq!(
            read(&["b"], 0).await.unwrap(),
            [("b".to_owned(), 2)],
            "the next read works"
        );
    }

    #[tokio::test]
    async fn keyed_reads_on_a_sqlite_file_run_inline() {
        let dir = tempfile::tempdir().unwrap();
        let settings = testing::sqlite_file(dir.path());
        keyed_reads_bind_map_and_fail_cleanly(&settings).await;
        let db = Database::connect(&settings, &[]).await.unwrap();
        assert!(db.inline.is_some());
    }

    #[tokio::test]
    async fn keyed_reads_of_an_in_memory_database_go_through_the_pool() {
        keyed_reads_bind_map_and_fail_cleanly(&testing::sqlite()).await;
        let db = Database::connect(&testing::sqlite(), &[]).await.unwrap();
        assert!(db.inline.is_none());
    }

    #[tokio::test]
    async fn keyed_reads_on_postgres() {
        if let Some(settings) = testing::postgres("the keyed reads test").await {
            keyed_reads_bind_map_and_fail_cleanly(&settings).await;
        }
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
