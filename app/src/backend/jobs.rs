//! Jobs in the database and every change of their status.
//!
//! Each change is a compare-and-set on (status, node, attempt) in one transaction with its
//! timeline event, so two racing reports (a late agent, a cancel, the scheduler) cannot both
//! win: the loser sees `false` and is told no.

use shared::jobs::Decision;
use sqlx::FromRow;

use super::{now_ms, Db};
use crate::auth::UserView;
use crate::jobs::{JobDetail, JobEventView, JobView};

#[derive(FromRow)]
struct JobRow {
    id: String,
    app_id: String,
    app_name: String,
    app_kind: String,
    owner_email: String,
    status: String,
    input_name: String,
    input_rows: Option<i64>,
    node_id: Option<String>,
    node_name: Option<String>,
    attempt: i32,
    error: Option<String>,
    result_key: Option<String>,
    result_rows: Option<i64>,
    log_key: Option<String>,
    progress_rows: Option<i64>,
    created_at: i64,
    dispatched_at: Option<i64>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

fn u64_of(v: Option<i64>) -> Option<u64> {
    v.and_then(|v| u64::try_from(v).ok())
}

impl From<JobRow> for JobView {
    fn from(r: JobRow) -> Self {
        JobView {
            id: r.id,
            app_id: r.app_id,
            app_name: r.app_name,
            app_kind: r.app_kind,
            owner_email: r.owner_email,
            status: r.status,
            input_name: r.input_name,
            input_rows: u64_of(r.input_rows),
            node_id: r.node_id,
            node_name: r.node_name,
            attempt: u32::try_from(r.attempt).unwrap_or(0),
            error: r.error,
            has_result: r.result_key.is_some(),
            has_log: r.log_key.is_some(),
            result_rows: u64_of(r.result_rows),
            progress_rows: u64_of(r.progress_rows),
            created_at_ms: r.created_at,
            dispatched_at_ms: r.dispatched_at,
            started_at_ms: r.started_at,
            finished_at_ms: r.finished_at,
        }
    }
}

const SELECT: &str = r#"select j.id, j.app_id, a.name as app_name, a.kind as app_kind, u.email as owner_email, j.status,
    j.input_name, j.input_rows, j.node_id, n.name as node_name, j.attempt, j.error, j.result_key, j.result_rows,
    j.log_key, j.progress_rows, j.created_at, j.dispatched_at, j.started_at, j.finished_at
    from jobs j join applications a on a.id = j.app_id join users u on u.id = j.owner_id
    left join nodes n on n.id = j.node_id"#;

/// A job as the server's own machinery needs it (keys included; never sent to a browser).
#[derive(Clone, Debug, FromRow)]
pub struct JobRecord {
    pub id: String,
    pub owner_id: String,
    pub app_id: String,
    pub status: String,
    pub node_id: Option<String>,
    pub attempt: i32,
    pub input_key: String,
    pub input_name: String,
    pub result_key: Option<String>,
    pub log_key: Option<String>,
    pub app_kind: String,
    pub app_name: String,
    pub app_artifact_key: String,
    pub app_sha256: String,
    pub app_size: i64,
    pub app_runtime: Option<String>,
}

const RECORD: &str = r#"select j.id, j.owner_id, j.app_id, j.status, j.node_id, j.attempt, j.input_key, j.input_name,
    j.result_key, j.log_key, a.kind as app_kind, a.name as app_name, a.artifact_key as app_artifact_key,
    a.sha256 as app_sha256, a.size_bytes as app_size, a.runtime as app_runtime
    from jobs j join applications a on a.id = j.app_id"#;

async fn event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: &str,
    at: i64,
    status: &str,
    attempt: i32,
    node_id: Option<&str>,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("insert into job_events (id, job_id, at, status, attempt, node_id, message) values ($1, $2, $3, $4, $5, $6, $7)")
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(job_id)
        .bind(at)
        .bind(status)
        .bind(attempt)
        .bind(node_id)
        .bind(message)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records a new job, queued.
pub async fn create(
    db: &Db,
    owner_id: &str,
    app_id: &str,
    input_key: &str,
    input_name: &str,
    input_rows: Option<u64>,
) -> Result<String, sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    sqlx::query("insert into jobs (id, owner_id, app_id, status, input_key, input_name, input_rows, created_at) values ($1, $2, $3, 'queued', $4, $5, $6, $7)")
        .bind(&id)
        .bind(owner_id)
        .bind(app_id)
        .bind(input_key)
        .bind(input_name)
        .bind(input_rows.map(|r| r as i64))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    event(&mut tx, &id, now, "queued", 0, None, "submitted").await?;
    tx.commit().await?;
    Ok(id)
}

pub async fn view(db: &Db, id: &str) -> Result<Option<JobView>, sqlx::Error> {
    let row: Option<JobRow> = sqlx::query_as(&format!("{SELECT} where j.id = $1")).bind(id).fetch_optional(&db.pool).await?;
    Ok(row.map(Into::into))
}

pub async fn record(db: &Db, id: &str) -> Result<Option<JobRecord>, sqlx::Error> {
    sqlx::query_as(&format!("{RECORD} where j.id = $1")).bind(id).fetch_optional(&db.pool).await
}

pub async fn owner_of(db: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = sqlx::query_as("select owner_id from jobs where id = $1").bind(id).fetch_optional(&db.pool).await?;
    Ok(row.map(|(o,)| o))
}

/// A user's jobs (or everyone's), newest first.
pub async fn list(db: &Db, owner_id: Option<&str>, limit: i64) -> Result<Vec<JobView>, sqlx::Error> {
    let rows: Vec<JobRow> = match owner_id {
        Some(owner) => {
            sqlx::query_as(&format!("{SELECT} where j.owner_id = $1 order by j.created_at desc, j.id limit $2"))
                .bind(owner)
                .bind(limit)
                .fetch_all(&db.pool)
                .await?
        }
        None => sqlx::query_as(&format!("{SELECT} order by j.created_at desc, j.id limit $1")).bind(limit).fetch_all(&db.pool).await?,
    };
    Ok(rows.into_iter().map(Into::into).collect())
}

/// The job page's data, without the log (the server adds its tail from the artifact store).
pub async fn detail(db: &Db, id: &str) -> Result<Option<JobDetail>, sqlx::Error> {
    let Some(job) = view(db, id).await? else { return Ok(None) };
    let events: Vec<(i64, String, i32, Option<String>, String)> =
        sqlx::query_as("select at, status, attempt, node_id, message from job_events where job_id = $1 order by at, id")
            .bind(id)
            .fetch_all(&db.pool)
            .await?;
    let (decision,): (Option<String>,) = sqlx::query_as("select decision from jobs where id = $1").bind(id).fetch_one(&db.pool).await?;
    Ok(Some(JobDetail {
        job,
        events: events
            .into_iter()
            .map(|(at, status, attempt, node_id, message)| JobEventView {
                at_ms: at,
                status,
                attempt: u32::try_from(attempt).unwrap_or(0),
                node_id,
                message,
            })
            .collect(),
        decision: decision.and_then(|d| serde_json::from_str::<Decision>(&d).ok()),
        log_tail: None,
    }))
}

/// A queued job as the balancer needs it.
#[derive(Clone, Debug, FromRow)]
pub struct QueuedJob {
    pub id: String,
    pub attempt: i32,
    pub app_kind: String,
    pub app_runtime: Option<String>,
    pub app_sha256: String,
    pub app_size: i64,
}

/// Queued jobs, oldest first.
pub async fn queued(db: &Db, limit: i64) -> Result<Vec<QueuedJob>, sqlx::Error> {
    sqlx::query_as(
        "select j.id, j.attempt, a.kind as app_kind, a.runtime as app_runtime, a.sha256 as app_sha256, a.size_bytes as app_size
         from jobs j join applications a on a.id = j.app_id where j.status = 'queued' order by j.created_at, j.id limit $1",
    )
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}

/// Jobs each node holds (dispatched or running).
pub async fn in_flight_by_node(db: &Db) -> Result<std::collections::HashMap<String, u32>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "select node_id, count(*) from jobs where status in ('dispatched', 'running') and node_id is not null group by node_id",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(|(n, c)| (n, u32::try_from(c).unwrap_or(u32::MAX))).collect())
}

/// Reserves the next attempt of a queued job for `node_id` before it is published: the job
/// becomes `dispatched`. False when the job is no longer queued (cancelled meanwhile).
pub async fn mark_dispatched(db: &Db, id: &str, expected_attempt: i32, node_id: &str, decision: &Decision) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let attempt = expected_attempt + 1;
    let decision_json = serde_json::to_string(decision).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut tx = db.pool.begin().await?;
    let done = sqlx::query(
        "update jobs set status = 'dispatched', node_id = $1, attempt = $2, decision = $3, dispatched_at = $4
         where id = $5 and status = 'queued' and attempt = $6",
    )
    .bind(node_id)
    .bind(attempt)
    .bind(decision_json)
    .bind(now)
    .bind(id)
    .bind(expected_attempt)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    event(&mut tx, id, now, "dispatched", attempt, Some(node_id), "sent to the node's queue").await?;
    tx.commit().await?;
    Ok(true)
}

/// Puts a dispatched job back in the queue when its message could not be published.
pub async fn undo_dispatch(db: &Db, id: &str, attempt: i32, why: &str) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    let done = sqlx::query("update jobs set status = 'queued', node_id = null, attempt = $1 where id = $2 and status = 'dispatched' and attempt = $3")
        .bind(attempt - 1)
        .bind(id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    event(&mut tx, id, now, "queued", attempt - 1, None, why).await?;
    tx.commit().await?;
    Ok(true)
}

/// What the server answers an agent about one of its attempts.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Proceed,
    /// Stop: the job was cancelled, finished, or given to another attempt.
    Stop(String),
}

fn stop_reason(current: Option<(String, Option<String>, i32)>, node_id: &str, attempt: i32) -> Verdict {
    match current {
        None => Verdict::Stop("no such job".into()),
        Some((status, node, att)) if node.as_deref() != Some(node_id) || att != attempt => {
            let _ = status;
            Verdict::Stop("this attempt was given to another node".into())
        }
        Some((status, _, _)) => Verdict::Stop(format!("the job is {status}")),
    }
}

async fn current(db: &Db, id: &str) -> Result<Option<(String, Option<String>, i32)>, sqlx::Error> {
    sqlx::query_as("select status, node_id, attempt from jobs where id = $1").bind(id).fetch_optional(&db.pool).await
}

/// The agent starts attempt `attempt`: dispatched → running.
pub async fn start(db: &Db, id: &str, node_id: &str, attempt: i32) -> Result<Verdict, sqlx::Error> {
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    let done = sqlx::query("update jobs set status = 'running', started_at = $1 where id = $2 and status = 'dispatched' and node_id = $3 and attempt = $4")
        .bind(now)
        .bind(id)
        .bind(node_id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() == 0 {
        drop(tx);
        let now_state = current(db, id).await?;
        // A repeated start of the same attempt (the agent retried after a lost answer) is fine.
        if let Some((status, node, att)) = &now_state {
            if status == "running" && node.as_deref() == Some(node_id) && *att == attempt {
                return Ok(Verdict::Proceed);
            }
        }
        return Ok(stop_reason(now_state, node_id, attempt));
    }
    event(&mut tx, id, now, "running", attempt, Some(node_id), "started on the node").await?;
    tx.commit().await?;
    Ok(Verdict::Proceed)
}

/// Whether attempt `attempt` on `node_id` is the job's live attempt (dispatched or running).
pub async fn check_attempt(db: &Db, id: &str, node_id: &str, attempt: i32) -> Result<Verdict, sqlx::Error> {
    let now_state = current(db, id).await?;
    match &now_state {
        Some((status, node, att))
            if (status == "running" || status == "dispatched") && node.as_deref() == Some(node_id) && *att == attempt =>
        {
            Ok(Verdict::Proceed)
        }
        _ => Ok(stop_reason(now_state, node_id, attempt)),
    }
}

/// Progress of a running attempt; the answer tells the agent whether to carry on.
pub async fn progress(db: &Db, id: &str, node_id: &str, attempt: i32, rows_done: u64) -> Result<Verdict, sqlx::Error> {
    let done = sqlx::query("update jobs set progress_rows = $1 where id = $2 and status = 'running' and node_id = $3 and attempt = $4")
        .bind(rows_done as i64)
        .bind(id)
        .bind(node_id)
        .bind(attempt)
        .execute(&db.pool)
        .await?;
    if done.rows_affected() > 0 {
        return Ok(Verdict::Proceed);
    }
    Ok(stop_reason(current(db, id).await?, node_id, attempt))
}

/// Attaches an uploaded result or log to the live attempt. False: not the live attempt.
pub async fn attach(db: &Db, id: &str, node_id: &str, attempt: i32, what: Attachment, key: &str) -> Result<bool, sqlx::Error> {
    let column = match what {
        Attachment::Result => "result_key",
        Attachment::Log => "log_key",
    };
    let done = sqlx::query(&format!(
        "update jobs set {column} = $1 where id = $2 and status = 'running' and node_id = $3 and attempt = $4"
    ))
    .bind(key)
    .bind(id)
    .bind(node_id)
    .bind(attempt)
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    Result,
    Log,
}

/// How a finished attempt ends the job.
pub enum Finish<'a> {
    Succeeded { rows: u64 },
    Failed { error: &'a str },
}

/// The live attempt finished: running → succeeded / failed. A success needs its result uploaded.
pub async fn finish(db: &Db, id: &str, node_id: &str, attempt: i32, how: Finish<'_>) -> Result<Verdict, sqlx::Error> {
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    let (status, done) = match how {
        Finish::Succeeded { rows } => (
            "succeeded",
            sqlx::query(
                "update jobs set status = 'succeeded', result_rows = $1, progress_rows = $1, finished_at = $2, error = null
                 where id = $3 and status = 'running' and node_id = $4 and attempt = $5 and result_key is not null",
            )
            .bind(rows as i64)
            .bind(now)
            .bind(id)
            .bind(node_id)
            .bind(attempt)
            .execute(&mut *tx)
            .await?,
        ),
        Finish::Failed { error } => (
            "failed",
            sqlx::query(
                "update jobs set status = 'failed', error = $1, finished_at = $2
                 where id = $3 and status in ('running', 'dispatched') and node_id = $4 and attempt = $5",
            )
            .bind(error)
            .bind(now)
            .bind(id)
            .bind(node_id)
            .bind(attempt)
            .execute(&mut *tx)
            .await?,
        ),
    };
    if done.rows_affected() == 0 {
        drop(tx);
        let now_state = current(db, id).await?;
        // A repeated report of the same outcome (the first answer was lost) is accepted again.
        if let Some((s, node, att)) = &now_state {
            if s == status && node.as_deref() == Some(node_id) && *att == attempt {
                return Ok(Verdict::Proceed);
            }
            if s == "running" && status == "succeeded" && node.as_deref() == Some(node_id) && *att == attempt {
                return Ok(Verdict::Stop("upload the result before reporting success".into()));
            }
        }
        return Ok(stop_reason(now_state, node_id, attempt));
    }
    let message = match how {
        Finish::Succeeded { rows } => format!("finished: {rows} rows"),
        Finish::Failed { error } => format!("failed: {error}"),
    };
    event(&mut tx, id, now, status, attempt, Some(node_id), &message).await?;
    tx.commit().await?;
    Ok(Verdict::Proceed)
}

pub enum CancelOutcome {
    Cancelled,
    AlreadyDone,
    NotFound,
}

/// Cancels a job that is not finished yet; its owner or an admin may.
pub async fn cancel(db: &Db, id: &str, by: &UserView) -> Result<CancelOutcome, sqlx::Error> {
    let owner = owner_of(db, id).await?;
    match owner {
        Some(owner) if owner == by.id || by.is_admin() => {}
        _ => return Ok(CancelOutcome::NotFound),
    }
    let now = now_ms();
    let mut tx = db.pool.begin().await?;
    let done = sqlx::query(
        "update jobs set status = 'cancelled', finished_at = $1 where id = $2 and status in ('queued', 'dispatched', 'running')",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(CancelOutcome::AlreadyDone);
    }
    let (attempt, node): (i32, Option<String>) =
        sqlx::query_as("select attempt, node_id from jobs where id = $1").bind(id).fetch_one(&mut *tx).await?;
    event(&mut tx, id, now, "cancelled", attempt, node.as_deref(), &format!("cancelled by {}", by.email)).await?;
    tx.commit().await?;
    Ok(CancelOutcome::Cancelled)
}

/// How much of the end of a log the job page shows.
const LOG_TAIL_BYTES: usize = 16 * 1024;

/// The job page's data with the end of its log, read from the artifact store.
pub async fn detail_with_log(state: &super::AppState, id: &str) -> Result<Option<JobDetail>, sqlx::Error> {
    use tokio::io::AsyncReadExt;
    let Some(mut detail) = detail(&state.db, id).await? else { return Ok(None) };
    if detail.job.has_log {
        let key: Option<(Option<String>,)> = sqlx::query_as("select log_key from jobs where id = $1").bind(id).fetch_optional(&state.db.pool).await?;
        if let Some((Some(key),)) = key {
            if let Ok(mut artifact) = state.artifacts.open(&key).await {
                let mut bytes = Vec::new();
                // Logs are capped by the agent, so reading one whole is bounded.
                if artifact.reader.read_to_end(&mut bytes).await.is_ok() {
                    let start = bytes.len().saturating_sub(LOG_TAIL_BYTES);
                    detail.log_tail = Some(String::from_utf8_lossy(&bytes[start..]).into_owned());
                }
            }
        }
    }
    Ok(Some(detail))
}
