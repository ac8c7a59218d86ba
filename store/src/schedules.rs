//! Schedules and their runs (see `migrations/20261209000001_schedules.sql`).
//!
//! A fire time becomes a job in [`fire`], in one transaction that advances the schedule's
//! `next_fire_at` by compare-and-set and records the run under its `(schedule, fire time)`
//! primary key: a tick that runs twice, or on two servers at once, submits each fire time once.

use std::collections::HashSet;

use aiedge_core::{Overlap, Pool, RunOutcome};
use sqlx::FromRow;

use super::group_commit::values;
use super::jobs::QueuedRow;
use super::Db;

/// A schedule's row, with its application's and owner's names.
#[derive(Clone, Debug, FromRow)]
pub struct Stored {
    pub id: String,
    pub owner_id: String,
    pub owner_email: String,
    pub app_id: String,
    pub app_name: String,
    pub name: String,
    pub cron: Option<String>,
    pub once_at: Option<i64>,
    pub time_zone: String,
    pub overlap: String,
    pub deadline_ms: i64,
    pub pool: String,
    pub input_key: Option<String>,
    pub input_name: String,
    pub input_rows: Option<i64>,
    pub paused_at: Option<i64>,
    pub next_fire_at: Option<i64>,
    pub last_job_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Stored {
    pub fn overlap(&self) -> Result<Overlap, sqlx::Error> {
        super::state(&self.overlap)
    }
    pub fn pool(&self) -> Result<Pool, sqlx::Error> {
        super::state(&self.pool)
    }
}

const SELECT: &str = "select s.id, s.owner_id, u.email as owner_email, s.app_id, a.name as app_name, s.name, s.cron, s.once_at,
        s.time_zone, s.overlap, s.deadline_ms, s.pool, s.input_key, s.input_name, s.input_rows, s.paused_at, s.next_fire_at,
        s.last_job_id, s.created_at, s.updated_at
    from schedules s join users u on u.id = s.owner_id join applications a on a.id = s.app_id";

/// A new schedule's row.
pub struct NewSchedule<'a> {
    pub id: &'a str,
    pub owner_id: &'a str,
    pub app_id: &'a str,
    pub timing: Timing<'a>,
    pub input_key: Option<&'a str>,
    pub input_name: &'a str,
    pub input_rows: Option<u64>,
    /// The input's content when it is kept in the database (under `input_key`).
    pub inline_input: Option<&'a str>,
    pub now: i64,
}

/// Its name, when it fires and what it does on overlap: the fields an edit may change.
#[derive(Clone, Copy, Debug)]
pub struct Timing<'a> {
    pub name: &'a str,
    pub cron: Option<&'a str>,
    pub once_at: Option<i64>,
    pub time_zone: &'a str,
    pub overlap: Overlap,
    pub deadline_ms: i64,
    pub pool: Pool,
    pub next_fire_at: Option<i64>,
}

/// Whether a write broke a unique constraint (a schedule name already taken).
pub fn is_name_taken(e: &sqlx::Error) -> bool {
    e.as_database_error().is_some_and(|d| d.is_unique_violation())
}

pub async fn create(db: &Db, new: NewSchedule<'_>) -> Result<(), sqlx::Error> {
    let t = new.timing;
    let mut tx = db.writer.begin().await?;
    if let (Some(key), Some(content)) = (new.input_key, new.inline_input) {
        sqlx::query("insert into inline_artifacts (key, content, created_at) values ($1, $2, $3)")
            .bind(key)
            .bind(content)
            .bind(new.now)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "insert into schedules (id, owner_id, app_id, name, cron, once_at, time_zone, overlap, deadline_ms, pool, input_key,
            input_name, input_rows, next_fire_at, created_at, updated_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)",
    )
    .bind(new.id)
    .bind(new.owner_id)
    .bind(new.app_id)
    .bind(t.name)
    .bind(t.cron)
    .bind(t.once_at)
    .bind(t.time_zone)
    .bind(t.overlap.as_str())
    .bind(t.deadline_ms)
    .bind(t.pool.as_str())
    .bind(new.input_key)
    .bind(new.input_name)
    .bind(new.input_rows.map(|r| r as i64))
    .bind(t.next_fire_at)
    .bind(new.now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Stored>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} where s.id = $1")).bind(id).fetch_optional(&db.pool).await
}

/// A user's schedules, by name.
pub async fn list(db: &Db, owner_id: &str) -> Result<Vec<Stored>, sqlx::Error> {
    sqlx::query_as(&format!("{SELECT} where s.owner_id = $1 order by s.name")).bind(owner_id).fetch_all(&db.pool).await
}

pub async fn count_of(db: &Db, owner_id: &str) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("select count(*) from schedules where owner_id = $1").bind(owner_id).fetch_one(&db.pool).await?;
    Ok(n)
}

/// Changes when a schedule fires (and its name, overlap, deadline and pool); false if it is gone.
pub async fn update(db: &Db, id: &str, t: Timing<'_>, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update schedules set name = $1, cron = $2, once_at = $3, time_zone = $4, overlap = $5, deadline_ms = $6, pool = $7,
            next_fire_at = $8, updated_at = $9
         where id = $10",
    )
    .bind(t.name)
    .bind(t.cron)
    .bind(t.once_at)
    .bind(t.time_zone)
    .bind(t.overlap.as_str())
    .bind(t.deadline_ms)
    .bind(t.pool.as_str())
    .bind(t.next_fire_at)
    .bind(now)
    .bind(id)
    .execute(&db.writer)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Pauses (`Some(now)`) or resumes (`None`) a schedule. Resuming keeps the next fire time: the
/// ones that passed while paused are then missed, with one catch-up run within the deadline.
pub async fn set_paused(db: &Db, id: &str, paused_at: Option<i64>, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("update schedules set paused_at = $1, updated_at = $2 where id = $3")
        .bind(paused_at)
        .bind(now)
        .bind(id)
        .execute(&db.writer)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a schedule and its runs (its jobs stay); returns its stored input's key, which the
/// caller may remove once no job needs it.
pub async fn delete(db: &Db, id: &str) -> Result<Option<Option<String>>, sqlx::Error> {
    let mut tx = db.writer.begin().await?;
    let key: Option<(Option<String>,)> =
        sqlx::query_as("select input_key from schedules where id = $1").bind(id).fetch_optional(&mut *tx).await?;
    let Some((key,)) = key else { return Ok(None) };
    sqlx::query("delete from schedules where id = $1").bind(id).execute(&mut *tx).await?;
    // A CSV kept in the database goes now unless a job still waits to run on it.
    if let Some(k) = key.as_deref().filter(|k| k.starts_with(super::artifacts::INLINE_PREFIX)) {
        sqlx::query(
            "delete from inline_artifacts where key = $1
               and not exists (select 1 from jobs where input_key = $1 and status in ('queued', 'dispatched', 'running'))",
        )
        .bind(k)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(Some(key))
}

/// Whether a live job still reads `input_key`.
pub async fn input_in_use(db: &Db, input_key: &str) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("select created_at from jobs where input_key = $1 and status in ('queued', 'dispatched', 'running') limit 1")
            .bind(input_key)
            .fetch_optional(&db.pool)
            .await?;
    Ok(row.is_some())
}

/// A schedule whose fire time has come, with what firing it needs to know.
#[derive(Clone, Debug, FromRow)]
pub struct Due {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub app_id: String,
    pub app_kind: String,
    /// Set when the application was deleted.
    pub app_deleted_at: Option<i64>,
    pub cron: Option<String>,
    pub once_at: Option<i64>,
    pub time_zone: String,
    pub overlap: String,
    pub deadline_ms: i64,
    pub pool: String,
    pub input_key: Option<String>,
    pub input_name: String,
    pub input_rows: Option<i64>,
    pub default_input_key: Option<String>,
    pub default_input_rows: Option<i64>,
    pub next_fire_at: i64,
    pub last_job_id: Option<String>,
    /// The status of the latest fired run's job (for the overlap policy).
    pub last_job_status: Option<String>,
}

/// Active schedules whose next fire time is at or before `now`, earliest first.
pub async fn due(db: &Db, now: i64, limit: i64) -> Result<Vec<Due>, sqlx::Error> {
    sqlx::query_as(
        "select s.id, s.name, s.owner_id, s.app_id, a.kind as app_kind, a.deleted_at as app_deleted_at, s.cron, s.once_at, s.time_zone,
            s.overlap, s.deadline_ms, s.pool, s.input_key, s.input_name, s.input_rows, a.default_input_key,
            a.default_input_rows, s.next_fire_at, s.last_job_id, j.status as last_job_status
         from schedules s
         join applications a on a.id = s.app_id
         left join jobs j on j.id = s.last_job_id
         where s.paused_at is null and s.next_fire_at is not null and s.next_fire_at <= $1
         order by s.next_fire_at, s.id
         limit $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}

/// The timings of the active schedules (id, cron, single time, zone), to parse ahead of their
/// first fire time.
pub async fn active_timings(db: &Db) -> Result<Vec<(String, Option<String>, Option<i64>, String)>, sqlx::Error> {
    sqlx::query_as("select id, cron, once_at, time_zone from schedules where paused_at is null and next_fire_at is not null")
        .fetch_all(&db.pool)
        .await
}

/// The earliest next fire time of an active schedule.
pub async fn next_due_at(db: &Db) -> Result<Option<i64>, sqlx::Error> {
    let (at,): (Option<i64>,) =
        sqlx::query_as("select min(next_fire_at) from schedules where paused_at is null and next_fire_at is not null")
            .fetch_one(&db.pool)
            .await?;
    Ok(at)
}

/// One fire time of one due schedule, decided: the rows to record and the job to submit.
pub struct Firing {
    pub schedule_id: String,
    /// The `next_fire_at` the decision was made from; the write happens only if it is still
    /// the schedule's.
    pub due: i64,
    pub next: Option<i64>,
    /// Pauses the schedule (its application is gone).
    pub pause: bool,
    /// The run that submits a job, at its fire time, if any.
    pub fired: Option<(i64, QueuedRow)>,
    /// Runs recorded without a job: skipped or missed.
    pub other: Vec<RunRow>,
}

/// A run recorded without a job.
pub struct RunRow {
    pub fire_at: i64,
    pub outcome: RunOutcome,
    pub count: u64,
    pub note: String,
}

/// What [`fire`] did with one [`Firing`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fired {
    /// Recorded; the job's id if one was submitted.
    Done(Option<String>),
    /// Another tick had already moved the schedule on (or it was edited, paused or deleted
    /// since it was read): nothing written.
    Stale,
}

/// Records `firings` in one transaction, each only if its schedule still has the `due` it was
/// decided from, and a job only for a fire time that has no run yet. A few statements for the
/// whole batch, not a few per schedule: 10 000 schedules due in the same second fire in well
/// under a second (see `services/examples/schedules_bench.rs`).
pub async fn fire(db: &Db, firings: Vec<Firing>, now: i64) -> Result<Vec<Fired>, sqlx::Error> {
    let per = rows_per_statement(db);
    let mut tx = db.writer.begin().await?;
    // An edit can bring a schedule back to a fire time it has already run: no second job.
    let asked: Vec<(&str, i64)> = firings.iter().filter_map(|f| f.fired.as_ref().map(|(at, _)| (f.schedule_id.as_str(), *at))).collect();
    let mut ran: HashSet<(String, i64)> = HashSet::new();
    for chunk in asked.chunks(per) {
        let sql = values("select schedule_id, fire_at from schedule_runs where (schedule_id, fire_at) in (values", chunk.len(), 2) + ")";
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
        for (schedule, at) in chunk {
            query = query.bind(*schedule).bind(*at);
        }
        ran.extend(query.fetch_all(&mut *tx).await?);
    }
    let job_ids: Vec<Option<String>> = firings
        .iter()
        .map(|f| f.fired.as_ref().filter(|(at, _)| !ran.contains(&(f.schedule_id.clone(), *at))).map(|(_, job)| job.id().to_string()))
        .collect();
    // Each schedule moves on only if it still has the fire time the decision was made from
    // (compare-and-set, all in one statement).
    let mut moved: HashSet<String> = HashSet::new();
    for (chunk, ids) in firings.chunks(per).zip(job_ids.chunks(per)) {
        let sql = values(
            "update schedules set next_fire_at = v.column3, last_job_id = coalesce(v.column4, schedules.last_job_id)
             from (values",
            chunk.len(),
            4,
        ) + ") as v
             where schedules.id = v.column1 and schedules.next_fire_at = v.column2 and schedules.paused_at is null
             returning id";
        let mut update = sqlx::query_as::<_, (String,)>(&sql);
        for (f, job) in chunk.iter().zip(ids) {
            update = update.bind(&f.schedule_id).bind(f.due).bind(f.next).bind(job.as_deref());
        }
        moved.extend(update.fetch_all(&mut *tx).await?.into_iter().map(|(id,)| id));
    }
    let mut out = Vec::with_capacity(firings.len());
    let mut jobs = Vec::new();
    let mut runs: Vec<(String, i64, RunOutcome, Option<String>, u64, String)> = Vec::new();
    for (f, job_id) in firings.into_iter().zip(job_ids) {
        if !moved.contains(&f.schedule_id) {
            out.push(Fired::Stale);
            continue;
        }
        if f.pause {
            sqlx::query("update schedules set paused_at = $1, updated_at = $1 where id = $2")
                .bind(now)
                .bind(&f.schedule_id)
                .execute(&mut *tx)
                .await?;
        }
        if let (Some((fire_at, job)), Some(_)) = (f.fired, &job_id) {
            runs.push((f.schedule_id.clone(), fire_at, RunOutcome::Fired, job_id.clone(), 1, "submitted".into()));
            jobs.push(job);
        }
        for r in f.other {
            runs.push((f.schedule_id.clone(), r.fire_at, r.outcome, None, r.count, r.note));
        }
        out.push(Fired::Done(job_id));
    }
    for chunk in jobs.chunks(per) {
        super::jobs::insert_queued(&mut tx, chunk).await?;
    }
    for chunk in runs.chunks(per) {
        let sql =
            values("insert into schedule_runs (schedule_id, fire_at, outcome, job_id, count, note, recorded_at) values", chunk.len(), 7)
                + " on conflict (schedule_id, fire_at) do nothing";
        let mut insert = sqlx::query(&sql);
        for (schedule, at, outcome, job, count, note) in chunk {
            insert = insert.bind(schedule).bind(*at).bind(outcome.as_str()).bind(job.as_deref()).bind(*count as i64).bind(note).bind(now);
        }
        insert.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(out)
}

/// Rows per multi-row statement. On SQLite, small: sqlx binds its parameters by looking each
/// one's name up among all of the statement's, so binding grows with the square of the
/// parameters (at 256 rows of 10 that lookup was a quarter of a tick's CPU, at 64 still 8 %).
/// On PostgreSQL each statement is a round trip to the server: large.
fn rows_per_statement(db: &Db) -> usize {
    match db.backend {
        super::db::Backend::Sqlite => 32,
        super::db::Backend::Postgres => 256,
    }
}

/// A run as the schedule's page lists it.
#[derive(Clone, Debug, FromRow)]
pub struct Run {
    pub fire_at: i64,
    pub outcome: String,
    pub count: i64,
    pub note: String,
    pub recorded_at: i64,
    pub job_id: Option<String>,
    pub job_status: Option<String>,
    pub job_created_at: Option<i64>,
    pub job_finished_at: Option<i64>,
}

/// A schedule's latest runs, newest first.
pub async fn runs(db: &Db, schedule_id: &str, limit: i64) -> Result<Vec<Run>, sqlx::Error> {
    sqlx::query_as(
        "select r.fire_at, r.outcome, r.count, r.note, r.recorded_at, r.job_id, j.status as job_status,
            j.created_at as job_created_at, j.finished_at as job_finished_at
         from schedule_runs r left join jobs j on j.id = r.job_id
         where r.schedule_id = $1
         order by r.fire_at desc
         limit $2",
    )
    .bind(schedule_id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await
}
