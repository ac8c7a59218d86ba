//! The node's side of a job: one attempt (one dispatch to one node) from start to end. Every
//! call is fenced by (job, node, attempt): a node hears "stop" for an attempt that is no longer
//! the job's live one, and nothing changes.

use std::time::Duration;

use aiedge_core::{AttemptOutcome, Verdict};
use aiedge_store::jobs::{self as store, AfterFailure, Finish, Finishes, InlineSuccess, JobRecord, Unstarted};
use aiedge_store::Db;
use shared::jobs::{FinishReport, Outcome};

use crate::{Events, Result, ServiceError};

fn attempt_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The agent process `instance` starts attempt `attempt`: dispatched → running.
#[tracing::instrument(skip_all, fields(job_id = %id, node_id = %node, attempt))]
pub async fn start(db: &Db, events: &dyn Events, node: &str, id: &str, attempt: u32, instance: Option<&str>) -> Result<Verdict> {
    let verdict = store::start(db, id, node, attempt_of(attempt), instance).await?;
    if verdict == Verdict::Proceed {
        tracing::info!("job running");
        events.job_changed(id);
    } else {
        crate::metrics::report_refused("start");
    }
    Ok(verdict)
}

/// Progress of a running attempt; the verdict tells the agent whether to carry on.
pub async fn progress(db: &Db, events: &dyn Events, node: &str, id: &str, attempt: u32, rows_done: u64) -> Result<Verdict> {
    let verdict = store::progress(db, id, node, attempt_of(attempt), rows_done).await?;
    if verdict == Verdict::Proceed {
        events.job_changed(id);
    } else {
        crate::metrics::report_refused("progress");
    }
    Ok(verdict)
}

/// Give-backs a job gets in its life before each further one counts as an attempt.
pub const FREE_RETURNS: i32 = 3;

/// The node held the attempt ahead of its slots and none came free in time: dispatched →
/// queued, the attempt not counted, and the dispatcher woken to place it again. After
/// [`FREE_RETURNS`] of them in a job's life, a give-back counts as a lost attempt (queued again
/// while attempts are left, else failed), so no node can bounce a job for ever.
#[tracing::instrument(skip_all, fields(job_id = %id, node_id = %node, attempt))]
pub async fn give_back(db: &Db, events: &dyn Events, node: &str, id: &str, attempt: u32) -> Result<Verdict> {
    let wait_s = shared::jobs::RETURN_AFTER_MS / 1000;
    let why = format!("no slot came free on the node within {wait_s} s; back in the queue");
    let after = match store::give_back(db, id, node, attempt_of(attempt), &why, FREE_RETURNS).await? {
        store::GivenBack::NotLive => {
            crate::metrics::report_refused("return");
            return Ok(Verdict::stop("the attempt is no longer waiting on this node"));
        }
        store::GivenBack::Queued => {
            crate::metrics::attempt_ended("given_back");
            tracing::info!("job returned by the node; back in the queue");
            None
        }
        store::GivenBack::TooOften => {
            let why =
                format!("given back by nodes more than {FREE_RETURNS} times (no slot came free within {wait_s} s): counted as an attempt");
            let after = store::end_attempt(db, id, node, attempt_of(attempt), AttemptOutcome::Lost, &why, true).await?;
            crate::metrics::attempt_ended("given_back");
            tracing::warn!(?after, "job given back too often; the attempt counts");
            Some(after)
        }
    };
    events.job_changed(id);
    if after == Some(AfterFailure::Failed) {
        events.job_ended(id);
    }
    events.dispatch_wanted();
    Ok(Verdict::Proceed)
}

/// The job of the live attempt `attempt` on `node`, for fetching its application and input or
/// attaching its result: a conflict when the attempt is not (or no longer) live there, which a
/// node cannot tell from a job that does not exist.
pub async fn live(db: &Db, node: &str, id: &str, attempt: u32) -> Result<JobRecord> {
    match store::check_attempt(db, id, node, attempt_of(attempt)).await? {
        Verdict::Proceed => store::record(db, id).await?.ok_or(ServiceError::NotFound("job")),
        Verdict::Stop(reason) => Err(ServiceError::Conflict { code: "not_your_attempt", message: reason }),
    }
}

/// The attempt's outcome, as the agent reports it. A success that carries its result (small
/// jobs) is written in groups through `finishes`; any other report on the database's own
/// thread. When it is accepted the job's end is announced and the dispatcher woken (a slot is
/// free, or the job is queued again).
#[tracing::instrument(skip_all, fields(job_id = %id, node_id = %node, attempt = report.attempt))]
pub async fn finish(db: &Db, finishes: &Finishes, events: &dyn Events, node: &str, id: &str, report: FinishReport) -> Result<Verdict> {
    if report.result_csv.as_ref().is_some_and(|r| r.len() > shared::jobs::INLINE_MAX) {
        return Err(ServiceError::TooLarge(format!("an inline result is at most {} bytes; upload larger ones", shared::jobs::INLINE_MAX)));
    }
    let attempt = attempt_of(report.attempt);
    let outcome = report.outcome.clone();
    let unstarted = report.ran_ms.map(|ran_ms| Unstarted { instance: report.instance, ran_ms });
    let verdict = match (report.outcome, report.result_csv) {
        (Outcome::Succeeded { rows }, Some(result)) => {
            finishes.write(InlineSuccess { id: id.to_string(), node_id: node.to_string(), attempt, rows, result, unstarted }).await?
        }
        (outcome, _) => {
            let (db2, id, node) = (db.clone(), id.to_string(), node.to_string());
            db.exec(async move {
                let how = match &outcome {
                    // Its result was uploaded before (reported only once done, it is refused:
                    // such a report must carry its result).
                    Outcome::Succeeded { rows } => Finish::Succeeded { rows: *rows, result: None, unstarted },
                    // The application's own failure fails the job now; the node's trouble moves it on.
                    Outcome::Failed { error, user_error } => Finish::Failed { error: error.as_str(), retry: !user_error },
                };
                store::finish(&db2, &id, &node, attempt, how).await
            })
            .await?
        }
    };
    match &verdict {
        Verdict::Proceed => {
            tracing::info!(?outcome, "job finished");
            crate::metrics::attempt_ended(match outcome {
                Outcome::Succeeded { .. } => "succeeded",
                Outcome::Failed { user_error: true, .. } => "app_error",
                Outcome::Failed { user_error: false, .. } => "node_error",
            });
            events.job_changed(id);
            events.job_ended(id);
            events.dispatch_wanted();
        }
        Verdict::Stop(reason) => {
            crate::metrics::report_refused("finish");
            tracing::warn!(reason, "finish refused");
        }
    }
    Ok(verdict)
}

/// Ends the attempts that can no longer finish (node dead or removed, agent restarted or
/// stopping, not started within `start_timeout`): their jobs are queued again or fail, and a
/// job that failed for good is announced. Returns how many attempts ended.
pub async fn recover(db: &Db, events: &dyn Events, start_timeout: Duration) -> Result<usize> {
    let timeout_ms = i64::try_from(start_timeout.as_millis()).unwrap_or(i64::MAX);
    let lost = store::lost_attempts(db, timeout_ms).await?;
    for l in &lost {
        let after = store::end_attempt(db, &l.job_id, &l.node_id, l.attempt, AttemptOutcome::Lost, &l.reason, true).await?;
        crate::metrics::attempt_ended("lost");
        events.job_changed(&l.job_id);
        if after == AfterFailure::Failed {
            events.job_ended(&l.job_id);
        }
        tracing::warn!(job_id = %l.job_id, node_id = %l.node_id, attempt = l.attempt, reason = %l.reason, ?after, "attempt lost");
    }
    Ok(lost.len())
}
