//! Jobs in the database and every change of their status.
//!
//! Each change is a compare-and-set on (status, node, attempt) in one transaction with its
//! timeline event, so two racing reports (a late agent, a cancel, the scheduler) cannot both
//! win: the loser sees `false` and is told no.

use aiedge_core::{AttemptOutcome, JobStatus, Pool, Verdict};
use shared::jobs::Decision;
use sqlx::FromRow;

use super::group_commit::{values, values_from, GroupCommit, GroupWrite};
use super::leases::Fence;
use super::{now_ms, Db};
use aiedge_core::views::UserView;
use aiedge_core::views::{AttemptView, JobDetail, JobEventView, JobView};

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
    node_owner_id: Option<String>,
    owner_id: String,
    pool: String,
    attempt: i32,
    max_attempts: i32,
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

impl TryFrom<JobRow> for JobView {
    type Error = sqlx::Error;
    fn try_from(r: JobRow) -> Result<Self, sqlx::Error> {
        Ok(JobView {
            id: r.id,
            app_id: r.app_id,
            app_name: r.app_name,
            app_kind: r.app_kind,
            owner_email: r.owner_email,
            status: super::state(&r.status)?,
            input_name: r.input_name,
            input_rows: u64_of(r.input_rows),
            node_id: r.node_id,
            // Another owner's node (shared with this job's owner) is not named.
            node_name: r
                .node_name
                .zip(r.node_owner_id)
                .map(|(name, node_owner)| aiedge_core::balancer::node_name_for(&r.owner_id, &node_owner, &name)),
            pool: super::state(&r.pool)?,
            attempt: u32::try_from(r.attempt).unwrap_or(0),
            max_attempts: u32::try_from(r.max_attempts).unwrap_or(0),
            error: r.error,
            has_result: r.result_key.is_some(),
            has_log: r.log_key.is_some(),
            result_rows: u64_of(r.result_rows),
            progress_rows: u64_of(r.progress_rows),
            created_at_ms: r.created_at,
            dispatched_at_ms: r.dispatched_at,
            started_at_ms: r.started_at,
            finished_at_ms: r.finished_at,
            waiting: None,
        })
    }
}

const SELECT: &str = r#"select j.id, j.app_id, a.name as app_name, a.kind as app_kind, u.email as owner_email, j.status,
    j.input_name, j.input_rows, j.node_id, n.name as node_name, n.owner_id as node_owner_id, j.owner_id, j.pool, j.attempt, j.max_attempts, j.error, j.result_key, j.result_rows,
    j.log_key, j.progress_rows, j.created_at, j.dispatched_at, j.started_at, j.finished_at
    from jobs j join applications a on a.id = j.app_id join users u on u.id = j.owner_id
    left join nodes n on n.id = j.node_id"#;

/// A job as the server's own machinery needs it (keys included; never sent to a browser).
#[derive(Clone, Debug, FromRow)]
pub struct JobRecord {
    pub id: String,
    pub owner_id: String,
    pub app_id: String,
    #[sqlx(try_from = "String")]
    pub status: JobStatus,
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

/// A timeline event's id. Time-ordered (UUID v7, in creation order within this process), so
/// events of the same millisecond keep their order on a page sorted by (time, id).
fn event_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

async fn event(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: &str,
    at: i64,
    status: JobStatus,
    attempt: i32,
    node_id: Option<&str>,
    message: &str,
) -> Result<(), sqlx::Error> {
    insert_events(tx, &[Step { job_id, at, status, attempt, node_id, message: message.into() }]).await
}

/// One step of a job's timeline, for [`insert_events`].
struct Step<'a> {
    job_id: &'a str,
    at: i64,
    status: JobStatus,
    attempt: i32,
    node_id: Option<&'a str>,
    message: String,
}

/// Adds timeline steps, all in one (multi-row) insert.
async fn insert_events(tx: &mut sqlx::Transaction<'_, sqlx::Any>, steps: &[Step<'_>]) -> Result<(), sqlx::Error> {
    if steps.is_empty() {
        return Ok(());
    }
    let sql = values("insert into job_events (id, job_id, at, status, attempt, node_id, message) values", steps.len(), 7);
    let mut insert = sqlx::query(&sql);
    for s in steps {
        insert = insert
            .bind(event_id())
            .bind(s.job_id)
            .bind(s.at)
            .bind(s.status.as_str())
            .bind(s.attempt)
            .bind(s.node_id)
            .bind(s.message.as_str());
    }
    insert.execute(&mut **tx).await?;
    Ok(())
}

/// A job to record, see [`create`].
pub struct NewJob<'a> {
    pub owner: &'a UserView,
    pub app: &'a aiedge_core::views::AppView,
    pub input_key: &'a str,
    pub input_name: &'a str,
    pub input_rows: Option<u64>,
    pub max_attempts: u32,
    pub pool: Pool,
    /// The input's content, stored under `input_key` (an inline key) in the same transaction.
    pub inline_input: Option<&'a str>,
}

/// Records a new job, queued, through the [`Intake`]; returns it as its owner sees it.
pub async fn create(intake: &Intake, new: NewJob<'_>) -> Result<JobView, sqlx::Error> {
    let row =
        QueuedRow::new(&new.owner.id, &new.app.id, new.input_key, new.input_name, new.input_rows, new.max_attempts, new.pool, now_ms())
            .with_inline_input(new.inline_input.map(str::to_string));
    let view = JobView {
        id: row.id.clone(),
        app_id: new.app.id.clone(),
        app_name: new.app.name.clone(),
        app_kind: new.app.kind.clone(),
        owner_email: new.owner.email.clone(),
        status: JobStatus::Queued,
        input_name: row.input_name.clone(),
        input_rows: new.input_rows,
        node_id: None,
        node_name: None,
        pool: new.pool,
        attempt: 0,
        max_attempts: row.max_attempts as u32,
        error: None,
        result_rows: None,
        progress_rows: None,
        has_result: false,
        has_log: false,
        created_at_ms: row.created_at,
        dispatched_at_ms: None,
        started_at_ms: None,
        finished_at_ms: None,
        waiting: None,
    };
    intake.write(row).await?;
    Ok(view)
}

/// A new job's row, owned, on its way through the [`Intake`].
pub struct QueuedRow {
    id: String,
    owner_id: String,
    app_id: String,
    input_key: String,
    input_name: String,
    input_rows: Option<i64>,
    created_at: i64,
    max_attempts: i32,
    pool: Pool,
    inline_input: Option<String>,
    /// The first line of its timeline.
    message: String,
}

impl QueuedRow {
    /// A new queued job with a fresh id, its timeline starting with "submitted".
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        owner_id: &str,
        app_id: &str,
        input_key: &str,
        input_name: &str,
        input_rows: Option<u64>,
        max_attempts: u32,
        pool: Pool,
        created_at: i64,
    ) -> Self {
        QueuedRow {
            id: uuid::Uuid::new_v4().to_string(),
            owner_id: owner_id.to_string(),
            app_id: app_id.to_string(),
            input_key: input_key.to_string(),
            input_name: input_name.to_string(),
            input_rows: input_rows.map(|r| r as i64),
            created_at,
            max_attempts: i32::try_from(max_attempts.max(1)).unwrap_or(i32::MAX),
            pool,
            inline_input: None,
            message: "submitted".into(),
        }
    }

    /// The input's content, stored under its (inline) key with the job.
    pub fn with_inline_input(mut self, content: Option<String>) -> Self {
        self.inline_input = content;
        self
    }

    /// The first line of the timeline, instead of "submitted".
    pub fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// Records submitted jobs in groups (see [`group_commit`](super::group_commit)): a submission
/// alone is five statements (begin, input, job, timeline event, commit); a group of them is one
/// multi-row insert per table.
pub type Intake = GroupCommit<QueuedRow>;

impl GroupWrite for QueuedRow {
    type Output = ();
    const MAX_GROUP: usize = 64;

    async fn write(db: &Db, group: &[Self]) -> Result<Vec<()>, sqlx::Error> {
        let mut tx = db.writer.begin().await?;
        insert_queued(&mut tx, group).await?;
        tx.commit().await?;
        Ok(vec![(); group.len()])
    }
}

/// Inserts queued jobs, their inline inputs and their first timeline events in `tx`.
pub(crate) async fn insert_queued(tx: &mut sqlx::Transaction<'_, sqlx::Any>, rows: &[QueuedRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let inline: Vec<(&str, &str, i64)> =
        rows.iter().filter_map(|r| r.inline_input.as_deref().map(|content| (r.input_key.as_str(), content, r.created_at))).collect();
    if !inline.is_empty() {
        let sql = values("insert into inline_artifacts (key, content, created_at) values", inline.len(), 3);
        let mut insert = sqlx::query(&sql);
        for (key, content, at) in inline {
            insert = insert.bind(key).bind(content).bind(at);
        }
        insert.execute(&mut **tx).await?;
    }
    let sql = values(
        "insert into jobs (id, owner_id, app_id, status, input_key, input_name, input_rows, created_at, max_attempts, pool) values",
        rows.len(),
        10,
    );
    let mut insert = sqlx::query(&sql);
    for r in rows {
        insert = insert
            .bind(&r.id)
            .bind(&r.owner_id)
            .bind(&r.app_id)
            .bind(JobStatus::Queued.as_str())
            .bind(&r.input_key)
            .bind(&r.input_name)
            .bind(r.input_rows)
            .bind(r.created_at)
            .bind(r.max_attempts)
            .bind(r.pool.as_str());
    }
    insert.execute(&mut **tx).await?;
    let steps: Vec<Step> = rows
        .iter()
        .map(|r| Step { job_id: &r.id, at: r.created_at, status: JobStatus::Queued, attempt: 0, node_id: None, message: r.message.clone() })
        .collect();
    insert_events(tx, &steps).await
}

pub async fn view(db: &Db, id: &str) -> Result<Option<JobView>, sqlx::Error> {
    let row: Option<JobRow> = sqlx::query_as(&format!("{SELECT} where j.id = $1")).bind(id).fetch_optional(&db.pool).await?;
    row.map(JobView::try_from).transpose()
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
    rows.into_iter().map(JobView::try_from).collect()
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
        attempts: attempts(db, id).await?,
        job,
        events: events
            .into_iter()
            .map(|(at, status, attempt, node_id, message)| {
                Ok(JobEventView {
                    at_ms: at,
                    status: super::state(&status)?,
                    attempt: u32::try_from(attempt).unwrap_or(0),
                    node_id,
                    message,
                })
            })
            .collect::<Result<_, sqlx::Error>>()?,
        decision: decision.and_then(|d| serde_json::from_str::<Decision>(&d).ok()),
        log_tail: None,
        kept_until_ms: None,
    }))
}

/// A queued job as the balancer needs it.
#[derive(Clone, Debug, FromRow)]
pub struct QueuedJob {
    pub id: String,
    pub owner_id: String,
    #[sqlx(try_from = "String")]
    pub pool: Pool,
    pub attempt: i32,
    pub app_kind: String,
    pub app_runtime: Option<String>,
    pub app_sha256: String,
    pub app_size: i64,
    pub input_key: String,
    /// The input itself when it is kept in the database (see `artifacts::INLINE_MAX`).
    pub input_inline: Option<String>,
    pub created_at: i64,
}

/// Queued jobs of enabled accounts, oldest first, after `after` (the (created_at, id) of the
/// last one seen).
pub async fn queued(db: &Db, after: Option<(i64, &str)>, limit: i64) -> Result<Vec<QueuedJob>, sqlx::Error> {
    let (at, id) = after.unwrap_or((i64::MIN, ""));
    sqlx::query_as(
        "select j.id, j.owner_id, j.pool, j.attempt, a.kind as app_kind, a.runtime as app_runtime, a.sha256 as app_sha256, a.size_bytes as app_size,
                j.input_key, i.content as input_inline, j.created_at
         from jobs j join applications a on a.id = j.app_id join users u on u.id = j.owner_id
              left join inline_artifacts i on i.key = j.input_key
         where j.status = 'queued' and u.disabled_at is null and (j.created_at, j.id) > ($1, $2)
         order by j.created_at, j.id limit $3",
    )
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}

/// A queued job's next attempt, reserved for a node (see [`mark_dispatched`]).
pub struct Reservation<'a> {
    pub id: &'a str,
    /// The attempt number the job has now; the reservation is for the next.
    pub expected_attempt: i32,
    pub node_id: &'a str,
    pub node_name: &'a str,
    pub decision: &'a Decision,
}

/// Reserves the next attempt of queued jobs before they are published, all in one transaction:
/// each job becomes `dispatched` if it is still queued at the attempt the dispatcher saw (one
/// `update … from` a list of values for all of them, returning those that changed), and the
/// attempts' rows and timeline events are one multi-row insert each. False for a job that is no
/// longer queued (cancelled meanwhile). Fenced (see [`crate::leases`]): a dispatcher whose
/// lease moved on reserves nothing.
pub async fn mark_dispatched(db: &Db, fence: Option<&Fence>, reservations: &[Reservation<'_>]) -> Result<Vec<bool>, sqlx::Error> {
    if reservations.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let mut tx = db.writer.begin().await?;
    super::leases::hold(&mut tx, fence).await?;
    let sql = format!(
        "with v (id, node_id, attempt, decision, expected) as ({})
         update jobs set status = 'dispatched', node_id = v.node_id, attempt = v.attempt, decision = v.decision, dispatched_at = $1, started_at = null
         from v where jobs.id = v.id and jobs.status = 'queued' and jobs.attempt = v.expected
         returning jobs.id",
        values_from("values", reservations.len(), 5, 2)
    );
    let mut update = sqlx::query_as::<_, (String,)>(&sql).bind(now);
    for r in reservations {
        let decision_json = serde_json::to_string(r.decision).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        update = update.bind(r.id).bind(r.node_id).bind(r.expected_attempt + 1).bind(decision_json).bind(r.expected_attempt);
    }
    let changed: std::collections::HashSet<String> = update.fetch_all(&mut *tx).await?.into_iter().map(|(id,)| id).collect();
    let reserved: Vec<bool> = reservations.iter().map(|r| changed.contains(r.id)).collect();
    let won: Vec<&Reservation<'_>> = reservations.iter().filter(|r| changed.contains(r.id)).collect();
    if !won.is_empty() {
        let sql = values("insert into job_attempts (job_id, attempt, node_id, node_name, dispatched_at, outcome) values", won.len(), 6);
        let mut insert = sqlx::query(&sql);
        for r in &won {
            insert = insert
                .bind(r.id)
                .bind(r.expected_attempt + 1)
                .bind(r.node_id)
                .bind(r.node_name)
                .bind(now)
                .bind(AttemptOutcome::Dispatched.as_str());
        }
        insert.execute(&mut *tx).await?;
        let steps: Vec<Step> = won
            .iter()
            .map(|r| Step {
                job_id: r.id,
                at: now,
                status: JobStatus::Dispatched,
                attempt: r.expected_attempt + 1,
                node_id: Some(r.node_id),
                message: format!("sent to {}'s queue", r.node_name),
            })
            .collect();
        insert_events(&mut tx, &steps).await?;
    }
    tx.commit().await?;
    Ok(reserved)
}

/// Puts a job dispatched to `node_id` and not started back in the queue: its message could not
/// be published. The attempt never happened, so its number is given back. False when the
/// attempt is no longer in that state.
pub async fn undo_dispatch(db: &Db, id: &str, node_id: &str, attempt: i32, why: &str) -> Result<bool, sqlx::Error> {
    Ok(requeue_unstarted(db, id, node_id, attempt, why, None).await? == GivenBack::Queued)
}

/// What became of a job its node gave back unstarted (see [`give_back`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GivenBack {
    /// Queued again, the attempt not counted.
    Queued,
    /// The job was given back `free` times before: this one must count as an attempt (the caller
    /// ends it as lost).
    TooOften,
    /// The attempt is not the job's live one on that node (nothing changed).
    NotLive,
}

/// The node gave the dispatched, unstarted attempt back (no slot came free in time): the job is
/// queued again and the attempt forgotten, up to `free` times in a job's life; after that each
/// give-back is [`GivenBack::TooOften`] and nothing changes here.
pub async fn give_back(db: &Db, id: &str, node_id: &str, attempt: i32, why: &str, free: i32) -> Result<GivenBack, sqlx::Error> {
    requeue_unstarted(db, id, node_id, attempt, why, Some(free)).await
}

/// Dispatched → queued for the live, unstarted attempt, which is forgotten; a counted give-back
/// (`free`: how many are forgiven) bumps the job's returns, and is refused past `free`.
async fn requeue_unstarted(db: &Db, id: &str, node_id: &str, attempt: i32, why: &str, free: Option<i32>) -> Result<GivenBack, sqlx::Error> {
    let now = now_ms();
    let mut tx = db.writer.begin().await?;
    let done = sqlx::query(
        "update jobs set status = 'queued', node_id = null, attempt = $1, returns = returns + $2
         where id = $3 and status = 'dispatched' and attempt = $4 and node_id = $5 and returns < $6",
    )
    .bind(attempt - 1)
    .bind(i32::from(free.is_some()))
    .bind(id)
    .bind(attempt)
    .bind(node_id)
    .bind(free.unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        drop(tx);
        let live = matches!(current(db, id).await?, Some((JobStatus::Dispatched, Some(n), a)) if n == node_id && a == attempt);
        return Ok(if live && free.is_some() { GivenBack::TooOften } else { GivenBack::NotLive });
    }
    sqlx::query("delete from job_attempts where job_id = $1 and attempt = $2").bind(id).bind(attempt).execute(&mut *tx).await?;
    event(&mut tx, id, now, JobStatus::Queued, attempt - 1, None, why).await?;
    tx.commit().await?;
    Ok(GivenBack::Queued)
}

fn stop_reason(current: Option<(JobStatus, Option<String>, i32)>, node_id: &str, attempt: i32) -> Verdict {
    match current {
        None => Verdict::Stop("no such job".into()),
        Some((_, node, att)) if node.as_deref() != Some(node_id) || att != attempt => {
            Verdict::Stop("this attempt is over: the job was given to another attempt".into())
        }
        Some((status, _, _)) => Verdict::Stop(format!("the job is {status}")),
    }
}

/// The job's status, node and attempt now.
async fn current(db: &Db, id: &str) -> Result<Option<(JobStatus, Option<String>, i32)>, sqlx::Error> {
    let row: Option<(String, Option<String>, i32)> =
        sqlx::query_as("select status, node_id, attempt from jobs where id = $1").bind(id).fetch_optional(&db.pool).await?;
    row.map(|(status, node, attempt)| Ok((super::state(&status)?, node, attempt))).transpose()
}

/// The agent process `instance` starts attempt `attempt`: dispatched → running.
pub async fn start(db: &Db, id: &str, node_id: &str, attempt: i32, instance: Option<&str>) -> Result<Verdict, sqlx::Error> {
    let mut tx = db.writer.begin().await?;
    if start_in(&mut tx, id, node_id, attempt, instance, now_ms()).await? {
        tx.commit().await?;
        return Ok(Verdict::Proceed);
    }
    drop(tx);
    let now_state = current(db, id).await?;
    // A repeated start of the same attempt by the same process (its first answer was lost)
    // is fine; from another process it is a redelivery to a restarted agent, which must not
    // run the attempt a second time (the restart is noticed and the job moves on).
    if let Some((status, node, att)) = &now_state {
        if *status == JobStatus::Running && node.as_deref() == Some(node_id) && *att == attempt {
            let (started_by,): (Option<String>,) =
                sqlx::query_as("select agent_instance from job_attempts where job_id = $1 and attempt = $2")
                    .bind(id)
                    .bind(attempt)
                    .fetch_optional(&db.pool)
                    .await?
                    .unwrap_or((None,));
            return Ok(if started_by.as_deref() == instance {
                Verdict::Proceed
            } else {
                Verdict::Stop("this attempt was started by an earlier agent process".into())
            });
        }
    }
    Ok(stop_reason(now_state, node_id, attempt))
}

/// dispatched → running at `at`, in `tx`; false when the attempt is not dispatched to `node_id`.
async fn start_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    node_id: &str,
    attempt: i32,
    instance: Option<&str>,
    at: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update jobs set status = 'running', started_at = $1 where id = $2 and status = 'dispatched' and node_id = $3 and attempt = $4",
    )
    .bind(at)
    .bind(id)
    .bind(node_id)
    .bind(attempt)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query("update job_attempts set outcome = 'running', started_at = $1, agent_instance = $2 where job_id = $3 and attempt = $4")
        .bind(at)
        .bind(instance)
        .bind(id)
        .bind(attempt)
        .execute(&mut **tx)
        .await?;
    event(tx, id, at, JobStatus::Running, attempt, Some(node_id), "started on the node").await?;
    Ok(true)
}

/// Whether attempt `attempt` on `node_id` is the job's live attempt (dispatched or running).
pub async fn check_attempt(db: &Db, id: &str, node_id: &str, attempt: i32) -> Result<Verdict, sqlx::Error> {
    let now_state = current(db, id).await?;
    match &now_state {
        Some((status, node, att)) if status.is_live() && node.as_deref() == Some(node_id) && *att == attempt => Ok(Verdict::Proceed),
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
        .execute(&db.writer)
        .await?;
    if done.rows_affected() > 0 {
        return Ok(Verdict::Proceed);
    }
    Ok(stop_reason(current(db, id).await?, node_id, attempt))
}

/// Attaches an uploaded result or log to the live attempt; `inline`: its content, stored under
/// `key` (an inline key) in the same transaction. False: not the live attempt.
pub async fn attach(
    db: &Db,
    id: &str,
    node_id: &str,
    attempt: i32,
    what: Attachment,
    key: &str,
    inline: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let column = match what {
        Attachment::Result => "result_key",
        Attachment::Log => "log_key",
    };
    let mut tx = db.writer.begin().await?;
    let done =
        sqlx::query(&format!("update jobs set {column} = $1 where id = $2 and status = 'running' and node_id = $3 and attempt = $4"))
            .bind(key)
            .bind(id)
            .bind(node_id)
            .bind(attempt)
            .execute(&mut *tx)
            .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    if let Some(content) = inline {
        // The same upload again (its first answer was lost) replaces the first.
        sqlx::query("delete from inline_artifacts where key = $1").bind(key).execute(&mut *tx).await?;
        super::artifacts::put_inline(&mut tx, key, content).await?;
    }
    tx.commit().await?;
    Ok(true)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    Result,
    Log,
}

/// How a finished attempt ends.
pub enum Finish<'a> {
    /// `result`: the predictions CSV itself (else it was uploaded before). `unstarted`: the
    /// agent ran the attempt without a `start` call (see `shared::jobs`).
    Succeeded { rows: u64, result: Option<&'a str>, unstarted: Option<Unstarted> },
    /// `retry`: the cause may not follow the job to another node (the agent's own trouble), so
    /// the job goes back to the balancer while it has attempts left.
    Failed { error: &'a str, retry: bool },
}

/// An attempt reported only once it had run: which agent process ran it, for how long.
#[derive(Clone, Debug)]
pub struct Unstarted {
    pub instance: Option<String>,
    pub ran_ms: u64,
}

/// What became of a job when one of its attempts ended without success.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterFailure {
    /// Back in the queue for attempt N+1.
    Requeued,
    /// Failed for good (a user error, or no attempts left).
    Failed,
    /// The attempt was no longer the job's live one; nothing changed.
    NotLive,
}

/// Ends attempt `attempt` on `node_id` as `outcome` (failed or lost) because of `reason`:
/// the job goes back to the queue (`retry`, attempts left) or fails, listing every attempt's
/// reason. A compare-and-set on (status, node, attempt), so it races safely with the agent's
/// own reports, cancels and the other sweeps.
pub async fn end_attempt(
    db: &Db,
    id: &str,
    node_id: &str,
    attempt: i32,
    outcome: AttemptOutcome,
    reason: &str,
    retry: bool,
) -> Result<AfterFailure, sqlx::Error> {
    let mut tx = db.writer.begin().await?;
    let after = end_attempt_in(&mut tx, id, node_id, attempt, outcome, reason, retry).await?;
    // Not live: nothing is kept of what was written before that was found.
    if after != AfterFailure::NotLive {
        tx.commit().await?;
    }
    Ok(after)
}

/// [`end_attempt`] in the caller's transaction, which must be rolled back when the answer is
/// [`AfterFailure::NotLive`] unless the caller holds the job's row (it found the job live under
/// a lock, or on SQLite's one writer): the attempt's row may have been written already.
pub(crate) async fn end_attempt_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    node_id: &str,
    attempt: i32,
    outcome: AttemptOutcome,
    reason: &str,
    retry: bool,
) -> Result<AfterFailure, sqlx::Error> {
    let now = now_ms();
    let row: Option<(i32, String)> = sqlx::query_as(
        // The attempt's node name as the job's owner sees it (another owner's node is unnamed).
        "select j.max_attempts, coalesce(a.node_name, '') from jobs j left join job_attempts a on a.job_id = j.id and a.attempt = j.attempt
         where j.id = $1 and j.status in ('dispatched', 'running') and j.node_id = $2 and j.attempt = $3",
    )
    .bind(id)
    .bind(node_id)
    .bind(attempt)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((max_attempts, node_name)) = row else { return Ok(AfterFailure::NotLive) };
    sqlx::query("update job_attempts set outcome = $1, reason = $2, finished_at = $3 where job_id = $4 and attempt = $5")
        .bind(outcome.as_str())
        .bind(reason)
        .bind(now)
        .bind(id)
        .bind(attempt)
        .execute(&mut **tx)
        .await?;
    let requeue = retry && attempt < max_attempts;
    // A result a lost attempt uploaded before it was lost is never the job's result.
    let done = if requeue {
        sqlx::query(
            "update jobs set status = 'queued', node_id = null, result_key = null, progress_rows = null, dispatched_at = null, started_at = null
             where id = $1 and status in ('dispatched', 'running') and node_id = $2 and attempt = $3",
        )
    } else {
        sqlx::query(
            "update jobs set status = 'failed', result_key = null, error = $4, finished_at = $5
             where id = $1 and status in ('dispatched', 'running') and node_id = $2 and attempt = $3",
        )
    };
    let mut done = done.bind(id).bind(node_id).bind(attempt);
    let message;
    if requeue {
        message = format!("attempt {attempt} on {node_name} {outcome}: {reason}; trying again ({} of {max_attempts} next)", attempt + 1);
    } else {
        let error = if retry { summary(tx, id, max_attempts).await? } else { reason.to_string() };
        message = format!("failed: {error}");
        done = done.bind(error).bind(now);
    }
    if done.execute(&mut **tx).await?.rows_affected() == 0 {
        return Ok(AfterFailure::NotLive);
    }
    let status = if requeue { JobStatus::Queued } else { JobStatus::Failed };
    event(tx, id, now, status, attempt, Some(node_id), &message).await?;
    Ok(if requeue { AfterFailure::Requeued } else { AfterFailure::Failed })
}

/// "failed after 3 attempts: #1 on box-a: lost (node dead); …", for a job out of attempts.
async fn summary(tx: &mut sqlx::Transaction<'_, sqlx::Any>, id: &str, max_attempts: i32) -> Result<String, sqlx::Error> {
    let rows: Vec<(i32, String, String, Option<String>)> =
        sqlx::query_as("select attempt, node_name, outcome, reason from job_attempts where job_id = $1 order by attempt")
            .bind(id)
            .fetch_all(&mut **tx)
            .await?;
    let parts: Vec<String> =
        rows.into_iter().map(|(n, node, outcome, reason)| format!("#{n} on {node}: {outcome} ({})", reason.unwrap_or_default())).collect();
    Ok(format!("failed after {max_attempts} attempts: {}", parts.join("; ")))
}

/// The live attempt finished: running → succeeded, or a failure (see [`end_attempt`]).
/// A success needs its result uploaded, or carries it (see [`InlineSuccess`]).
pub async fn finish(db: &Db, id: &str, node_id: &str, attempt: i32, how: Finish<'_>) -> Result<Verdict, sqlx::Error> {
    let (rows, result, unstarted) = match how {
        Finish::Succeeded { rows, result, unstarted } => (rows, result, unstarted),
        Finish::Failed { error, retry } => {
            return match end_attempt(db, id, node_id, attempt, AttemptOutcome::Failed, error, retry).await? {
                AfterFailure::Requeued | AfterFailure::Failed => Ok(Verdict::Proceed),
                AfterFailure::NotLive => {
                    let now_state = current(db, id).await?;
                    let (outcome,): (Option<String>,) =
                        sqlx::query_as("select outcome from job_attempts where job_id = $1 and attempt = $2 and node_id = $3")
                            .bind(id)
                            .bind(attempt)
                            .bind(node_id)
                            .fetch_optional(&db.pool)
                            .await?
                            .unwrap_or((None,));
                    // The same report again (the first answer was lost) is accepted again.
                    if outcome.as_deref() == Some(AttemptOutcome::Failed.as_str()) {
                        return Ok(Verdict::Proceed);
                    }
                    Ok(stop_reason(now_state, node_id, attempt))
                }
            };
        }
    };
    if let Some(result) = result {
        let success =
            InlineSuccess { id: id.to_string(), node_id: node_id.to_string(), attempt, rows, result: result.to_string(), unstarted };
        let mut verdicts = record_successes(db, std::slice::from_ref(&success)).await?;
        return Ok(verdicts.pop().unwrap_or(Verdict::Proceed));
    }
    if unstarted.is_some() {
        // There was no running state to upload in.
        return Ok(Verdict::Stop("a job reported only when done must carry its result".into()));
    }
    let now = now_ms();
    let mut tx = db.writer.begin().await?;
    let done = sqlx::query(
        "update jobs set status = 'succeeded', result_rows = $1, progress_rows = $1, finished_at = $2, error = null
         where id = $3 and status = 'running' and node_id = $4 and attempt = $5 and result_key is not null",
    )
    .bind(rows as i64)
    .bind(now)
    .bind(id)
    .bind(node_id)
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        drop(tx);
        return refused_success(db, id, node_id, attempt, false).await;
    }
    sqlx::query("update job_attempts set outcome = 'succeeded', finished_at = $1 where job_id = $2 and attempt = $3")
        .bind(now)
        .bind(id)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
    event(&mut tx, id, now, JobStatus::Succeeded, attempt, Some(node_id), &format!("finished: {rows} rows")).await?;
    tx.commit().await?;
    Ok(Verdict::Proceed)
}

/// What a success report that changed nothing is told.
async fn refused_success(db: &Db, id: &str, node_id: &str, attempt: i32, unstarted: bool) -> Result<Verdict, sqlx::Error> {
    let now_state = current(db, id).await?;
    if let Some((s, node, att)) = &now_state {
        // A repeated report of the same outcome (the first answer was lost) is accepted again.
        if *s == JobStatus::Succeeded && node.as_deref() == Some(node_id) && *att == attempt {
            return Ok(Verdict::Proceed);
        }
        if *s == JobStatus::Running && node.as_deref() == Some(node_id) && *att == attempt && !unstarted {
            return Ok(Verdict::Stop("upload the result before reporting success".into()));
        }
    }
    Ok(stop_reason(now_state, node_id, attempt))
}

/// A success that carries its result (at most `INLINE_MAX` bytes), owned: the usual report of
/// a small job, written in groups through [`Finishes`].
pub struct InlineSuccess {
    pub id: String,
    pub node_id: String,
    pub attempt: i32,
    pub rows: u64,
    pub result: String,
    /// Reported only once done.
    pub unstarted: Option<Unstarted>,
}

/// Records successes that carry their results in groups (see
/// [`group_commit`](super::group_commit)): a group is six statements however many reports it
/// holds (see [`record_successes`]).
pub type Finishes = GroupCommit<InlineSuccess>;

impl GroupWrite for InlineSuccess {
    type Output = Verdict;
    const MAX_GROUP: usize = 64;

    async fn write(db: &Db, group: &[Self]) -> Result<Vec<Verdict>, sqlx::Error> {
        record_successes(db, group).await
    }
}

/// dispatched → succeeded (reported only once done, its start dated back by the run time the
/// agent measured) or running → succeeded, each with its result; one verdict per success.
///
/// Every statement covers the whole group: the compare-and-sets of all the job rows are one
/// `update … from` a list of values (a row changes only if it is still that attempt's, on that
/// node, in the state the report finishes from), and it returns the rows that changed; then
/// one update of their attempts and one insert each for their results and timeline events.
async fn record_successes(db: &Db, group: &[InlineSuccess]) -> Result<Vec<Verdict>, sqlx::Error> {
    if group.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let started: Vec<Option<i64>> =
        group.iter().map(|s| s.unstarted.as_ref().map(|u| now - i64::try_from(u.ran_ms).unwrap_or(0).min(now))).collect();
    let key = |s: &InlineSuccess| super::artifacts::inline_key(&format!("jobs/{}/attempt-{}/result.csv", s.id, s.attempt));
    let mut tx = db.writer.begin().await?;
    let sql = format!(
        "with v (id, node_id, attempt, result_rows, result_key, started_at, from_status) as ({})
         update jobs set status = 'succeeded', result_rows = v.result_rows, progress_rows = v.result_rows, finished_at = $1, error = null,
                result_key = v.result_key, started_at = coalesce(v.started_at, jobs.started_at)
         from v where jobs.id = v.id and jobs.node_id = v.node_id and jobs.attempt = v.attempt and jobs.status = v.from_status
         returning jobs.id, jobs.attempt, jobs.node_id",
        values_from("values", group.len(), 7, 2)
    );
    let mut update = sqlx::query_as::<_, (String, i32, String)>(&sql).bind(now);
    for (s, started) in group.iter().zip(&started) {
        let from = if started.is_some() { JobStatus::Dispatched } else { JobStatus::Running };
        update = update.bind(&s.id).bind(&s.node_id).bind(s.attempt).bind(s.rows as i64).bind(key(s)).bind(*started).bind(from.as_str());
    }
    let mut changed = update.fetch_all(&mut *tx).await?;
    // Each changed row to the first report it answers (the same report twice: the second is
    // answered below, like a report repeated after a lost answer).
    let mut won = vec![false; group.len()];
    for (i, s) in group.iter().enumerate() {
        if let Some(at) = changed.iter().position(|(id, attempt, node)| *id == s.id && *attempt == s.attempt && *node == s.node_id) {
            changed.swap_remove(at);
            won[i] = true;
        }
    }
    let winners: Vec<usize> = (0..group.len()).filter(|i| won[*i]).collect();
    if !winners.is_empty() {
        let sql = format!(
            "with v (job_id, attempt, started_at, agent_instance) as ({})
             update job_attempts set outcome = 'succeeded', finished_at = $1, started_at = coalesce(v.started_at, job_attempts.started_at),
                    agent_instance = coalesce(v.agent_instance, job_attempts.agent_instance)
             from v where job_attempts.job_id = v.job_id and job_attempts.attempt = v.attempt",
            values_from("values", winners.len(), 4, 2)
        );
        let mut update = sqlx::query(&sql).bind(now);
        for &i in &winners {
            let instance = group[i].unstarted.as_ref().and_then(|u| u.instance.as_deref());
            update = update.bind(&group[i].id).bind(group[i].attempt).bind(started[i]).bind(instance);
        }
        update.execute(&mut *tx).await?;
        let sql = values("insert into inline_artifacts (key, content, created_at) values", winners.len(), 3);
        let mut insert = sqlx::query(&sql);
        for &i in &winners {
            insert = insert.bind(key(&group[i])).bind(group[i].result.as_str()).bind(now);
        }
        insert.execute(&mut *tx).await?;
        // A success reported only once done gets both steps of its timeline.
        let mut steps = Vec::with_capacity(winners.len() * 2);
        for &i in &winners {
            let s = &group[i];
            let step = |at, status, message| Step { job_id: &s.id, at, status, attempt: s.attempt, node_id: Some(&s.node_id), message };
            if let Some(at) = started[i] {
                steps.push(step(at, JobStatus::Running, "started on the node".into()));
            }
            steps.push(step(now, JobStatus::Succeeded, format!("finished: {} rows", s.rows)));
        }
        insert_events(&mut tx, &steps).await?;
    }
    tx.commit().await?;
    let mut verdicts = Vec::with_capacity(group.len());
    for (s, won) in group.iter().zip(won) {
        verdicts.push(if won {
            Verdict::Proceed
        } else {
            refused_success(db, &s.id, &s.node_id, s.attempt, s.unstarted.is_some()).await?
        });
    }
    Ok(verdicts)
}

/// Cancels a job that is not finished yet, on behalf of `by_email` (who may is the caller's
/// business: `aiedge_services::jobs::cancel`). False when the job is finished or missing.
pub async fn cancel(db: &Db, id: &str, by_email: &str) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let mut tx = db.writer.begin().await?;
    let done = sqlx::query(
        "update jobs set status = 'cancelled', finished_at = $1 where id = $2 and status in ('queued', 'dispatched', 'running')",
    )
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    let (attempt, node): (i32, Option<String>) =
        sqlx::query_as("select attempt, node_id from jobs where id = $1").bind(id).fetch_one(&mut *tx).await?;
    sqlx::query(
        "update job_attempts set outcome = 'cancelled', finished_at = $1 where job_id = $2 and attempt = $3 and finished_at is null",
    )
    .bind(now)
    .bind(id)
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    event(&mut tx, id, now, JobStatus::Cancelled, attempt, node.as_deref(), &format!("cancelled by {by_email}")).await?;
    tx.commit().await?;
    Ok(true)
}

/// A live attempt that can no longer finish, and why.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct LostAttempt {
    pub job_id: String,
    pub node_id: String,
    pub attempt: i32,
    pub reason: String,
}

/// Live attempts whose node can no longer finish them: the node is dead or removed; the agent
/// is stopping and never took the job; the agent process restarted since it started the
/// attempt; or the job was dispatched `start_timeout_ms` ago and never started.
/// Their jobs' leases are the nodes' heartbeats, not the broker's delivery timeout.
pub async fn lost_attempts(db: &Db, start_timeout_ms: i64) -> Result<Vec<LostAttempt>, sqlx::Error> {
    let deadline = now_ms() - start_timeout_ms;
    sqlx::query_as(
        "select j.id as job_id, j.node_id, j.attempt,
                case when n.admin_state = 'removed' then 'node removed'
                     when n.status = 'dead' then 'node dead (no heartbeats)'
                     when j.status = 'dispatched' and n.status = 'stopping' then 'agent stopping; it never took the job'
                     when j.status = 'running' and a.agent_instance is not null and n.agent_instance is not null
                          and a.agent_instance <> n.agent_instance then 'agent restarted'
                     else 'not started in time' end as reason
         from jobs j join nodes n on n.id = j.node_id
         left join job_attempts a on a.job_id = j.id and a.attempt = j.attempt
         where j.status in ('dispatched', 'running')
           and (n.admin_state = 'removed' or n.status = 'dead'
                or (j.status = 'dispatched' and n.status = 'stopping')
                or (j.status = 'running' and a.agent_instance is not null and n.agent_instance is not null
                    and a.agent_instance <> n.agent_instance)
                or (j.status = 'dispatched' and j.dispatched_at < $1))
         order by j.created_at",
    )
    .bind(deadline)
    .fetch_all(&db.pool)
    .await
}

/// A job's attempts, first first.
pub async fn attempts(db: &Db, id: &str) -> Result<Vec<AttemptView>, sqlx::Error> {
    type Row = (i32, Option<String>, String, i64, Option<i64>, Option<i64>, String, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "select attempt, node_id, node_name, dispatched_at, started_at, finished_at, outcome, reason
         from job_attempts where job_id = $1 order by attempt",
    )
    .bind(id)
    .fetch_all(&db.pool)
    .await?;
    rows.into_iter()
        .map(|(attempt, node_id, node_name, dispatched, started, finished, outcome, reason)| {
            Ok(AttemptView {
                attempt: u32::try_from(attempt).unwrap_or(0),
                node_id,
                node_name,
                dispatched_at_ms: dispatched,
                started_at_ms: started,
                finished_at_ms: finished,
                outcome: super::state(&outcome)?,
                reason,
            })
        })
        .collect()
}

/// For each queued job that has run before, the nodes its earlier attempts were on.
pub async fn tried_nodes(db: &Db) -> Result<std::collections::HashMap<String, Vec<String>>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select a.job_id, a.node_id from jobs j join job_attempts a on a.job_id = j.id
         where j.status = 'queued' and j.attempt > 0 and a.node_id is not null",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut map: std::collections::HashMap<String, Vec<String>> = Default::default();
    for (job, node) in rows {
        map.entry(job).or_default().push(node);
    }
    Ok(map)
}

/// How much of the end of a log the job page shows.
const LOG_TAIL_BYTES: usize = 16 * 1024;

/// The job page's data with the end of its log, read from the artifact store.
pub async fn detail_with_log(db: &Db, artifacts: &dyn super::artifacts::ArtifactStore, id: &str) -> Result<Option<JobDetail>, sqlx::Error> {
    use tokio::io::AsyncReadExt;
    let Some(mut detail) = detail(db, id).await? else { return Ok(None) };
    if detail.job.has_log {
        let key: Option<(Option<String>,)> =
            sqlx::query_as("select log_key from jobs where id = $1").bind(id).fetch_optional(&db.pool).await?;
        if let Some((Some(key),)) = key {
            if let Ok(mut artifact) = super::artifacts::open(db, artifacts, &key).await {
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

/// How many jobs are in each status, every status listed (zero when none), for the metrics.
pub async fn count_by_status(db: &Db) -> Result<Vec<(&'static str, i64)>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as("select status, count(*) from jobs group by status").fetch_all(&db.pool).await?;
    Ok(JobStatus::ALL.iter().map(|s| (s.as_str(), rows.iter().find(|(word, _)| word == s.as_str()).map_or(0, |(_, n)| *n))).collect())
}
