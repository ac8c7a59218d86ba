//! Use cases of jobs.

use aiedge_core::views::{JobView, UserView};
use aiedge_store::jobs::{self as store, CancelOutcome};
use aiedge_store::Db;

use crate::{Events, Result, ServiceError};

/// Cancels a queued, dispatched or running job; its owner or an admin may. The job's end is
/// announced and the dispatcher woken (the job may have held a node's slot). Someone else's job
/// is answered as missing.
#[tracing::instrument(skip_all, fields(job_id = %id, user_id = %caller.id))]
pub async fn cancel(db: &Db, events: &dyn Events, caller: &UserView, id: &str) -> Result<JobView> {
    match store::cancel(db, id, caller).await? {
        CancelOutcome::Cancelled => {
            tracing::info!("job cancelled");
            events.job_ended(id);
            events.dispatch_wanted();
        }
        CancelOutcome::AlreadyDone => {
            return Err(ServiceError::Conflict { code: "already_finished", message: "the job has already finished".into() })
        }
        CancelOutcome::NotFound => return Err(ServiceError::NotFound("job")),
    }
    store::view(db, id).await?.ok_or(ServiceError::NotFound("job"))
}

/// A job's summary, for its owner or an admin.
pub async fn get(db: &Db, caller: &UserView, id: &str) -> Result<JobView> {
    match store::owner_of(db, id).await? {
        Some(owner) if aiedge_core::may_manage(caller, &owner) => store::view(db, id).await?.ok_or(ServiceError::NotFound("job")),
        _ => Err(ServiceError::NotFound("job")),
    }
}
