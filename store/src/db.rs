//! The database: SQLite by default (a file in the data directory), PostgreSQL when the URL says
//! `postgres://`. Queries go through sqlx's `any` driver, so the same SQL (the subset both
//! databases share, with `$1` placeholders) serves both, and the same tests run on both.
//! Queries are checked at run time (`query_as` + `FromRow`) rather than by the compile-time
//! macros, which would need a live database of each kind at build time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::any::AnyPoolOptions;
use sqlx::error::BoxDynError;
use sqlx::migrate::{Migration, MigrationSource, Migrator};
use sqlx::AnyPool;
use sqlx::Executor;

/// The schema, embedded at compile time and applied at start-up: the migrations both engines
/// share (`migrations/`), and those written for one of them (`migrations/sqlite/`,
/// `migrations/postgres/`, where their SQL differs), applied together in version order.
static COMMON: Migrator = sqlx::migrate!("../migrations");
static SQLITE_ONLY: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_ONLY: Migrator = sqlx::migrate!("../migrations/postgres");

/// The migrations one engine runs, in version order.
#[derive(Debug)]
struct Schema(Vec<Migration>);

impl MigrationSource<'static> for Schema {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

/// The migrator for `backend`: the shared migrations and its own.
pub async fn migrator(backend: Backend) -> Result<Migrator, sqlx::migrate::MigrateError> {
    let own = match backend {
        Backend::Sqlite => &SQLITE_ONLY,
        Backend::Postgres => &POSTGRES_ONLY,
    };
    let mut all: Vec<Migration> = COMMON.iter().chain(own.iter()).cloned().collect();
    all.sort_by_key(|m| m.version);
    Migrator::new(Schema(all)).await
}

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
    #[error("cannot start the database thread: {0}")]
    Thread(#[source] std::io::Error),
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
    /// SQLite only: the thread the job path's database work runs on (see [`Lane`]).
    lane: Option<Lane>,
}

/// A thread of its own for the job path's database work, on SQLite.
///
/// sqlx runs each SQLite connection on a thread of its own, which wakes the waiting task when a
/// statement is done. Tokio puts tasks woken from outside its workers in a shared queue that a
/// busy worker looks at only every so often, so under load a transaction waited that long after
/// each of its statements, holding the one writer connection all the while and making every
/// other write wait too. On this thread nothing else competes: each answer is taken up at once.
/// The thread ends when the last clone of its `Db` is dropped.
#[derive(Clone, Debug)]
struct Lane {
    handle: tokio::runtime::Handle,
    _stop: Arc<tokio::sync::oneshot::Sender<()>>,
}

impl Lane {
    fn start() -> std::io::Result<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, handle) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("aiedge-db".into()).spawn(move || {
            // Built and dropped here: a runtime may not be dropped inside another.
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => {
                    let _ = ready.send(Ok(runtime.handle().clone()));
                    let _ = runtime.block_on(stopped);
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            }
        })?;
        let handle = handle.recv().map_err(std::io::Error::other)??;
        Ok(Self { handle, _stop: Arc::new(stop) })
    }
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
                // A pooled connection is pinged before each use by default: a round trip per
                // transaction, which a SQLite file (no network between) does not need.
                .test_before_acquire(backend == Backend::Postgres)
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
        migrator(backend).await.map_err(DbError::Migrate)?.run(&pool).await.map_err(DbError::Migrate)?;
        let (writer, lane) = match backend {
            Backend::Sqlite => (options(1).connect(&url).await.map_err(DbError::Connect)?, Some(Lane::start().map_err(DbError::Thread)?)),
            // PostgreSQL's connections are sockets of this runtime, woken by its own workers.
            Backend::Postgres => (pool.clone(), None),
        };
        Ok(Self { pool, writer, backend, lane })
    }

    /// Runs `work` on the database thread (SQLite, see [`Lane`]) or right here (PostgreSQL).
    /// For the job path's transactions that a request waits for (an agent's finish report);
    /// the job intake and the dispatcher run there as tasks of their own (see [`Db::spawn`]).
    pub async fn exec<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, sqlx::Error>> + Send + 'static,
    ) -> Result<T, sqlx::Error> {
        let Some(lane) = &self.lane else { return work.await };
        match lane.handle.spawn(work).await {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(sqlx::Error::Io(std::io::Error::other(e))),
        }
    }

    /// Spawns a long-lived task that mostly talks to the database (the dispatcher) on the
    /// database thread (SQLite) or on this runtime (PostgreSQL).
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        match &self.lane {
            Some(lane) => drop(lane.handle.spawn(work)),
            None => drop(tokio::spawn(work)),
        }
    }

    /// True when a trivial query succeeds: the health check.
    pub async fn ping(&self) -> bool {
        sqlx::query("select 1").execute(&self.pool).await.is_ok()
    }
}
