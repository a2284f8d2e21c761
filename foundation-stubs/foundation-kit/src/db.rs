//! Storage through sqlx's `Any` driver: one portable schema and one set of queries run on
//! SQLite (a file, or memory) and on PostgreSQL. Portability rules for the SQL in this repo:
//! `$1` placeholders, `ON CONFLICT` upserts, BIGINT for integers, booleans and times
//! (microseconds since the epoch), TEXT, and BYTEA for bytes (SQLite stores it as a BLOB).

use std::{borrow::Cow, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};
use sqlx::{
    AnyPool, Executor, SqlSafeStr,
    any::AnyPoolOptions,
    migrate::{Migration, MigrationType, Migrator},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite::memory:`, `sqlite://path/to/file.db`, or `postgres://user:pass@host/db`.
    pub url: String,
    /// Pool size. An in-memory SQLite database always uses one connection: its connections
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
    /// For an in-memory SQLite database: a connection that is never used, so the database
    /// lives as long as this value even when the pool replaces its own connection (an
    /// in-memory database ends with its last connection).
    _keeper: Option<AnyPool>,
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
        let mut options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
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
            options = options.after_connect(|connection, _| {
                Box::pin(async move {
                    connection.execute("PRAGMA busy_timeout = 5000").await?;
                    connection.execute("PRAGMA journal_mode = WAL").await?;
                    connection.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            });
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
        Ok(Self {
            pool,
            backend,
            _keeper: keeper,
        })
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
}
