//! Retention: finished jobs older than the configured time go, with their timelines, attempts
//! and small artifacts kept in the database; the caller deletes their files after the commit
//! (a crash in between leaves files that [`orphans`] finds later).
//!
//! Pruning runs in small batches (one transaction each), so it never holds the database for
//! long and the job path goes on between them. A job is pruned only once the usage analytics
//! have counted it (their `jobs` mark is past its end), so no count changes.

use super::artifacts::{inline_key, INLINE_PREFIX};
use super::leases::{self, Fence};
use super::Db;

/// What one batch removed from the database, and the files the caller removes next.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrunedJobs {
    pub jobs: u64,
    /// Small artifacts that were kept in the database.
    pub inline: u64,
    /// Whole directories of the artifact store (`jobs/<id>`).
    pub prefixes: Vec<String>,
    /// Single files of the artifact store (the inputs uploaded with the jobs).
    pub keys: Vec<String>,
    /// How long the batch held the writer: from when it had the connection to its commit,
    /// without its wait for the job path's writes before it.
    pub held: std::time::Duration,
}

/// Deletes up to `limit` finished jobs that ended before `before` (oldest first), and what
/// belongs to them alone. Fenced: only the lease holder prunes.
pub async fn prune_jobs(db: &Db, fence: Option<&Fence>, before: i64, limit: i64) -> Result<PrunedJobs, sqlx::Error> {
    let mut tx = db.writer.begin().await?;
    let acquired = std::time::Instant::now();
    leases::hold(&mut tx, fence).await?;
    // Ended before the cutoff and already counted by the usage roll-up, oldest first.
    // IMPORTANT: `status || ''` keeps SQLite off the status index, which it otherwise picks,
    // reading and sorting every finished job for each batch while it holds the writer; the
    // `finished_at` index walks just the batch.
    let jobs: Vec<(String, String, i32)> = sqlx::query_as(
        "select id, input_key, attempt from jobs
         where status || '' in ('succeeded', 'failed', 'cancelled') and finished_at < $1
           and finished_at < coalesce((select upto from usage_marks where name = 'jobs'), 0)
         order by finished_at limit $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut pruned = PrunedJobs::default();
    if jobs.is_empty() {
        tx.commit().await?;
        pruned.held = acquired.elapsed();
        return Ok(pruned);
    }
    let mut inline = Vec::new();
    for (job, input_key, attempt) in &jobs {
        // An input uploaded with the job is the job's alone; an application's default input or
        // a schedule's stored one stays with its owner.
        if input_key.starts_with(&format!("{INLINE_PREFIX}inputs/")) {
            inline.push(input_key.clone());
        } else if input_key.starts_with("inputs/") {
            pruned.keys.push(input_key.clone());
        }
        for n in 1..=*attempt {
            for name in ["result.csv", "log.txt"] {
                inline.push(inline_key(&format!("jobs/{job}/attempt-{n}/{name}")));
            }
        }
        pruned.prefixes.push(format!("jobs/{job}"));
    }
    for keys in inline.chunks(500) {
        let sql = format!("delete from inline_artifacts where key in ({})", marks(keys.len()));
        let mut query = sqlx::query(&sql);
        for key in keys {
            query = query.bind(key);
        }
        pruned.inline += query.execute(&mut *tx).await?.rows_affected();
    }
    // Timelines and attempts go with their jobs (on delete cascade); schedule runs keep their
    // row without the job (on delete set null).
    let ids: Vec<&String> = jobs.iter().map(|(id, _, _)| id).collect();
    for chunk in ids.chunks(500) {
        let sql = format!("delete from jobs where id in ({})", marks(chunk.len()));
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(*id);
        }
        pruned.jobs += query.execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    pruned.held = acquired.elapsed();
    Ok(pruned)
}

fn marks(n: usize) -> String {
    (1..=n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// Of `job_ids` (directories found under `jobs/` in the artifact store), those with no job
/// row: left by a crash between a prune's commit and its file deletions.
pub async fn orphan_jobs(db: &Db, job_ids: &[String]) -> Result<Vec<String>, sqlx::Error> {
    unnamed(db, "select id from jobs where id in", job_ids).await
}

/// Of `keys` (files found under `inputs/` in the artifact store), those no job refers to.
pub async fn orphan_inputs(db: &Db, keys: &[String]) -> Result<Vec<String>, sqlx::Error> {
    unnamed(db, "select input_key from jobs where input_key in", keys).await
}

/// Those of `values` that `select_in` (a query ending in `in`) does not return.
async fn unnamed(db: &Db, select_in: &str, values: &[String]) -> Result<Vec<String>, sqlx::Error> {
    let mut missing = Vec::new();
    for chunk in values.chunks(500) {
        let sql = format!("{select_in} ({})", marks(chunk.len()));
        let mut query = sqlx::query_as::<_, (String,)>(&sql);
        for value in chunk {
            query = query.bind(value);
        }
        let found: std::collections::HashSet<String> = query.fetch_all(&db.pool).await?.into_iter().map(|(v,)| v).collect();
        missing.extend(chunk.iter().filter(|v| !found.contains(*v)).cloned());
    }
    Ok(missing)
}

/// The finished jobs kept (for `server status` and the tests of retention).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JobCounts {
    pub finished: i64,
    pub oldest_finished_at: Option<i64>,
}

/// How many finished jobs are kept and when the oldest ended.
pub async fn finished_jobs(db: &Db) -> Result<JobCounts, sqlx::Error> {
    let (finished, oldest): (i64, Option<i64>) =
        sqlx::query_as("select count(*), min(finished_at) from jobs where status in ('succeeded', 'failed', 'cancelled')")
            .fetch_one(&db.pool)
            .await?;
    Ok(JobCounts { finished, oldest_finished_at: oldest })
}
