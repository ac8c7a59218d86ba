//! Storage: the database (SQLite by default, PostgreSQL by URL), one module per aggregate, and
//! the artifact store. Nothing here knows about HTTP or Leptos; the web app and the server
//! call it, and every SQL statement of the platform lives in this crate.
//!
//! - [`db`]: the connection pools, the SQLite writer thread and the embedded migrations.
//! - [`users`], [`password`]: accounts, and Argon2id hashing off the async threads.
//! - [`sessions`]: the `tower-sessions` store in our database.
//! - [`api_tokens`]: personal API tokens, stored hashed.
//! - [`nodes`]: nodes, their registration tokens, transitions and metrics.
//! - [`apps`], [`jobs`]: applications and jobs, every job status change a compare-and-set.
//! - [`artifacts`]: where models, inputs, results and logs are stored.
//! - [`schedules`]: schedules and their runs; a fire time becomes a job at most once.
//! - [`group_commit`]: many small writes recorded as one transaction.
//! - [`usage`]: usage analytics' counts and roll-ups.
//! - [`rate_limits`]: rate-limit buckets every server process on the database shares.
//! - [`storage`]: who owns which stored object, and the latest measurement of storage used.
//! - [`retention`]: finished jobs pruned in small batches after the configured time.
//! - [`leases`]: who among several server processes does the work that must happen once, the
//!   fences that keep a former holder from writing, and the replicas seen.

#![forbid(unsafe_code)]

pub mod api_tokens;
pub mod apps;
pub mod artifacts;
pub mod db;
pub mod group_commit;
pub mod jobs;
pub mod leases;
pub mod nodes;
pub mod password;
pub mod rate_limits;
pub mod retention;
pub mod schedules;
pub mod sessions;
pub mod storage;
pub mod usage;
pub mod users;

pub use db::Db;
/// The error every query returns, for callers that do not depend on sqlx themselves.
pub use sqlx::Error as SqlError;

/// Reads a state word (a job's status, a node's admin state, ...) from its column. The schema's
/// CHECK constraints admit only the words `aiedge_core` knows, so an unknown one means a
/// database written by another version of the server: an error, not a guess.
pub(crate) fn state<T: std::str::FromStr<Err = aiedge_core::UnknownState>>(word: &str) -> Result<T, sqlx::Error> {
    word.parse().map_err(|e: aiedge_core::UnknownState| sqlx::Error::Decode(Box::new(e)))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
