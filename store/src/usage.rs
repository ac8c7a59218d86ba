//! Usage analytics' tables (see `migrations/20261208000001_usage.sql`): request counts added
//! per minute, rolled up per hour, jobs and node activity rolled up from their own tables
//! behind a mark, and the rows the Usage report is built from.

use aiedge_core::usage::{BOUNDS_MS, HOUR_MS, OVERFLOW};
use sqlx::Row;

use crate::db::Backend;
use crate::{now_ms, Db};

pub const MINUTE_MS: i64 = 60_000;
/// Minute rows older than this move into hour rows.
pub const MINUTES_KEPT_MS: i64 = 2 * HOUR_MS;
/// Jobs ended less than this long ago are left for the next roll-up: an end written a moment
/// late (a group commit in flight) is still counted once.
const JOBS_SETTLE_MS: i64 = 5_000;
/// The `le_ms` of the `wait` row of a job that ended without reaching a node.
pub const NEVER_DISPATCHED: i64 = 0;

/// Requests counted in memory for one minute row.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub minute: i64,
    pub action: &'static str,
    pub channel: &'static str,
    pub method: String,
    pub route: String,
    pub le_ms: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestCount {
    pub requests: i64,
    pub refused: i64,
    pub failed: i64,
}

/// Adds counted requests and active accounts to the tables, in one transaction.
pub async fn add(db: &Db, requests: &[(RequestKey, RequestCount)], users: &[((i64, String), i64)]) -> Result<(), sqlx::Error> {
    if requests.is_empty() && users.is_empty() {
        return Ok(());
    }
    let mut tx = db.writer.begin().await?;
    for (k, c) in requests {
        sqlx::query(
            "insert into usage_minutes as u (minute, action, channel, method, route, le_ms, requests, refused, failed)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             on conflict (minute, action, channel, method, route, le_ms) do update set
               requests = u.requests + excluded.requests, refused = u.refused + excluded.refused, failed = u.failed + excluded.failed",
        )
        .bind(k.minute)
        .bind(k.action)
        .bind(k.channel)
        .bind(&k.method)
        .bind(&k.route)
        .bind(k.le_ms)
        .bind(c.requests)
        .bind(c.refused)
        .bind(c.failed)
        .execute(&mut *tx)
        .await?;
    }
    for ((hour, user_id), n) in users {
        sqlx::query(
            "insert into usage_users as u (hour, user_id, requests) values ($1, $2, $3)
             on conflict (hour, user_id) do update set requests = u.requests + excluded.requests",
        )
        .bind(hour)
        .bind(user_id)
        .bind(n)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// What one roll-up did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RollUp {
    pub minutes_moved: u64,
    pub job_rows: u64,
    pub nodes_sampled: u64,
    pub pruned: u64,
}

/// A SQL expression giving the latency bucket ([`BOUNDS_MS`]) of the millisecond value `expr`.
fn bucket_sql(expr: &str) -> String {
    let mut sql = String::from("case");
    for b in BOUNDS_MS {
        sql.push_str(&format!(" when {expr} <= {b} then {b}"));
    }
    sql.push_str(&format!(" else {OVERFLOW} end"));
    sql
}

/// Moves whole minutes older than [`MINUTES_KEPT_MS`] into hour rows; counts the jobs that
/// ended since the jobs mark; adds a minute to every active node when a new minute has begun
/// since the nodes mark; prunes rows older than `retention_ms`. One transaction: run twice, or
/// by two servers at once, nothing is counted twice.
pub async fn roll_up(db: &Db, now: i64, retention_ms: i64) -> Result<RollUp, sqlx::Error> {
    let mut done = RollUp::default();
    let mut tx = db.writer.begin().await?;
    if db.backend == Backend::Postgres {
        // A second roll-up waits here, then finds the minutes moved and the marks advanced.
        sqlx::query("lock table usage_marks in share row exclusive mode").execute(&mut *tx).await?;
    }

    let cutoff = (now - MINUTES_KEPT_MS).div_euclid(MINUTE_MS) * MINUTE_MS;
    done.minutes_moved = sqlx::query(
        "insert into usage_hours as h (hour, action, channel, method, route, le_ms, requests, refused, failed)
         select (minute / 3600000) * 3600000, action, channel, method, route, le_ms, sum(requests), sum(refused), sum(failed)
         from usage_minutes where minute < $1
         group by (minute / 3600000) * 3600000, action, channel, method, route, le_ms
         on conflict (hour, action, channel, method, route, le_ms) do update set
           requests = h.requests + excluded.requests, refused = h.refused + excluded.refused, failed = h.failed + excluded.failed",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("delete from usage_minutes where minute < $1").bind(cutoff).execute(&mut *tx).await?;

    // Jobs that ended in [mark, now - settle): a first roll-up starts an hour back.
    let until = now - JOBS_SETTLE_MS;
    let from: i64 =
        sqlx::query_scalar("select upto from usage_marks where name = 'jobs'").fetch_optional(&mut *tx).await?.unwrap_or(until - HOUR_MS);
    if until > from {
        for (measure, value, filter) in [
            ("wait", "dispatched_at - created_at", "dispatched_at is not null"),
            ("run", "finished_at - started_at", "started_at is not null"),
        ] {
            let sql = format!(
                "insert into usage_jobs as u (hour, outcome, node_id, measure, le_ms, jobs)
                 select (finished_at / 3600000) * 3600000, status, coalesce(node_id, ''), '{measure}', {bucket}, count(*)
                 from jobs where finished_at >= $1 and finished_at < $2 and {filter}
                 group by (finished_at / 3600000) * 3600000, status, coalesce(node_id, ''), {bucket}
                 on conflict (hour, outcome, node_id, measure, le_ms) do update set jobs = u.jobs + excluded.jobs",
                bucket = bucket_sql(value)
            );
            let n = sqlx::query(&sql).bind(from).bind(until).execute(&mut *tx).await?.rows_affected();
            if measure == "run" {
                done.job_rows = n;
            }
        }
        // Jobs that ended without a dispatch (cancelled while queued) still count as an outcome,
        // in a bucket of their own ([`NEVER_DISPATCHED`]) that no percentile reads.
        sqlx::query(
            "insert into usage_jobs as u (hour, outcome, node_id, measure, le_ms, jobs)
             select (finished_at / 3600000) * 3600000, status, '', 'wait', 0, count(*)
             from jobs where finished_at >= $1 and finished_at < $2 and dispatched_at is null
             group by (finished_at / 3600000) * 3600000, status
             on conflict (hour, outcome, node_id, measure, le_ms) do update set jobs = u.jobs + excluded.jobs",
        )
        .bind(from)
        .bind(until)
        .execute(&mut *tx)
        .await?;
        set_mark(&mut tx, "jobs", until).await?;
    }

    // One minute of activity for every active node, once per minute.
    let minute = now.div_euclid(MINUTE_MS) * MINUTE_MS;
    let sampled: Option<i64> = sqlx::query_scalar("select upto from usage_marks where name = 'nodes'").fetch_optional(&mut *tx).await?;
    if sampled.is_none_or(|m| m < minute) {
        done.nodes_sampled = sqlx::query(
            "insert into usage_nodes as u (hour, node_id, owner_id, minutes)
             select $1, id, owner_id, 1 from nodes where status = 'active' and admin_state <> 'removed'
             on conflict (hour, node_id) do update set minutes = u.minutes + 1",
        )
        .bind(minute.div_euclid(HOUR_MS) * HOUR_MS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        set_mark(&mut tx, "nodes", minute).await?;
    }

    let oldest = now - retention_ms;
    for table in ["usage_hours", "usage_users", "usage_jobs", "usage_nodes"] {
        done.pruned += sqlx::query(&format!("delete from {table} where hour < $1")).bind(oldest).execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(done)
}

async fn set_mark(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str, upto: i64) -> Result<(), sqlx::Error> {
    sqlx::query("insert into usage_marks (name, upto) values ($1, $2) on conflict (name) do update set upto = excluded.upto")
        .bind(name)
        .bind(upto)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Request counts since `from`, per `step_ms`-wide step, from minute and hour rows alike.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestRow {
    pub step: i64,
    pub action: String,
    pub channel: String,
    pub method: String,
    pub route: String,
    pub le_ms: i64,
    pub requests: i64,
    pub refused: i64,
    pub failed: i64,
}

pub async fn requests_since(db: &Db, from: i64, step_ms: i64) -> Result<Vec<RequestRow>, sqlx::Error> {
    let rows = sqlx::query(
        "select (t / $2) * $2 as step, action, channel, method, route, le_ms,
                cast(sum(requests) as bigint), cast(sum(refused) as bigint), cast(sum(failed) as bigint)
         from (select minute as t, action, channel, method, route, le_ms, requests, refused, failed from usage_minutes where minute >= $1
               union all
               select hour as t, action, channel, method, route, le_ms, requests, refused, failed from usage_hours where hour >= $1) r
         group by (t / $2) * $2, action, channel, method, route, le_ms",
    )
    .bind(from)
    .bind(step_ms)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(RequestRow {
                step: r.try_get(0)?,
                action: r.try_get(1)?,
                channel: r.try_get(2)?,
                method: r.try_get(3)?,
                route: r.try_get(4)?,
                le_ms: r.try_get(5)?,
                requests: r.try_get(6)?,
                refused: r.try_get(7)?,
                failed: r.try_get(8)?,
            })
        })
        .collect()
}

/// Distinct accounts active per step since `from`, and over the whole span.
pub async fn active_users_since(db: &Db, from: i64, step_ms: i64) -> Result<(Vec<(i64, i64)>, i64), sqlx::Error> {
    let per_step: Vec<(i64, i64)> =
        sqlx::query_as("select (hour / $2) * $2, count(distinct user_id) from usage_users where hour >= $1 group by (hour / $2) * $2")
            .bind(from)
            .bind(step_ms)
            .fetch_all(&db.pool)
            .await?;
    let total: i64 =
        sqlx::query_scalar("select count(distinct user_id) from usage_users where hour >= $1").bind(from).fetch_one(&db.pool).await?;
    Ok((per_step, total))
}

/// Jobs ended since `from`, per step: (step, outcome, node id, measure, bucket, jobs). The
/// rolled-up rows, plus the jobs that ended after the roll-up's mark, counted from the jobs
/// table as the next roll-up will: the report is current to the moment.
pub type JobRow = (i64, String, String, String, i64, i64);

pub async fn jobs_since(db: &Db, from: i64, step_ms: i64) -> Result<Vec<JobRow>, sqlx::Error> {
    let mark: Option<i64> = sqlx::query_scalar("select upto from usage_marks where name = 'jobs'").fetch_optional(&db.pool).await?;
    // Without a mark nothing was rolled up yet: count what a first roll-up would.
    let mark = mark.unwrap_or(now_ms() - HOUR_MS).max(from);
    let sql = format!(
        "select (t / $2) * $2, outcome, node_id, measure, le_ms, cast(sum(jobs) as bigint) from (
           select hour as t, outcome, node_id, measure, le_ms, jobs from usage_jobs where hour >= $1
           union all
           select finished_at, status, coalesce(node_id, ''), 'wait', {wait}, 1 from jobs where finished_at >= $3 and dispatched_at is not null
           union all
           select finished_at, status, '', 'wait', {NEVER_DISPATCHED}, 1 from jobs where finished_at >= $3 and dispatched_at is null
           union all
           select finished_at, status, coalesce(node_id, ''), 'run', {run}, 1 from jobs where finished_at >= $3 and started_at is not null
         ) j
         group by (t / $2) * $2, outcome, node_id, measure, le_ms",
        wait = bucket_sql("dispatched_at - created_at"),
        run = bucket_sql("finished_at - started_at"),
    );
    sqlx::query_as(&sql).bind(from).bind(step_ms).bind(mark).fetch_all(&db.pool).await
}

/// Node-minutes since `from` per owner (their email, or the id of an account since deleted).
pub async fn node_minutes_by_owner(db: &Db, from: i64) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "select coalesce(u.email, n.owner_id), cast(sum(n.minutes) as bigint) from usage_nodes n left join users u on u.id = n.owner_id
         where n.hour >= $1 group by coalesce(u.email, n.owner_id) order by 2 desc",
    )
    .bind(from)
    .fetch_all(&db.pool)
    .await
}

/// Node names by id, for the jobs-per-node chart (removed nodes keep their row).
pub async fn node_names(db: &Db) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("select id, name from nodes").fetch_all(&db.pool).await
}

/// Queue waits (created to last dispatch) and run times (started to finished) in ms of the jobs
/// that ended in `[after, until)`, for the Prometheus histograms; `None` where a job never got
/// that far.
pub async fn job_times(db: &Db, after: i64, until: i64) -> Result<Vec<(Option<i64>, Option<i64>)>, sqlx::Error> {
    sqlx::query_as("select dispatched_at - created_at, finished_at - started_at from jobs where finished_at >= $1 and finished_at < $2")
        .bind(after)
        .bind(until)
        .fetch_all(&db.pool)
        .await
}
