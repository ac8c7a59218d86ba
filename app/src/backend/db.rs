//! The database: SQLite by default (a file in the data directory), PostgreSQL when the URL says
//! `postgres://`. Queries go through sqlx's `any` driver, so the same SQL (the subset both
//! databases share, with `$1` placeholders) serves both, and the same tests run on both.
//! Queries are checked at run time (`query_as` + `FromRow`) rather than by the compile-time
//! macros, which would need a live database of each kind at build time.

use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;
use sqlx::migrate::Migrator;
use sqlx::Executor;

/// The schema, embedded at compile time and applied at start-up.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Which database engine a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn from_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl,
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply the database migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Pools of connections to one database, of either kind.
#[derive(Clone, Debug)]
pub struct Db {
    /// For reads.
    pub pool: AnyPool,
    /// For writes. On SQLite, one connection: writers take turns here, in order, instead of
    /// colliding on the file lock, where SQLite's busy handler sleeps a millisecond or more per
    /// retry (under load most of a job's time went to those sleeps). On PostgreSQL the same
    /// pool as `pool`: its row locks let writers work side by side.
    pub writer: AnyPool,
    pub backend: Backend,
}

impl Db {
    /// Connects (creating a SQLite file if missing) and applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url).ok_or(DbError::UnsupportedUrl)?;
        let url = match backend {
            // `mode=rwc` creates the file on first run.
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(Duration::from_secs(5))
                .after_connect(move |conn, _meta| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            // WAL lets readers work while a writer commits; a busy writer waits
                            // rather than failing at once.
                            conn.execute("pragma journal_mode = wal; pragma synchronous = normal; pragma busy_timeout = 5000; pragma foreign_keys = on;")
                                .await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = options(if backend == Backend::Sqlite { 8 } else { 16 }).connect(&url).await.map_err(DbError::Connect)?;
        MIGRATOR.run(&pool).await.map_err(DbError::Migrate)?;
        let writer = match backend {
            Backend::Sqlite => options(1).connect(&url).await.map_err(DbError::Connect)?,
            Backend::Postgres => pool.clone(),
        };
        Ok(Self { pool, writer, backend })
    }

    /// True when a trivial query succeeds: the health check.
    pub async fn ping(&self) -> bool {
        sqlx::query("select 1").execute(&self.pool).await.is_ok()
    }
}
