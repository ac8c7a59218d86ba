//! Use cases of accounts that admins run: disable and enable an account, change its role,
//! delete it with everything it owns.

use aiedge_core::views::UserView;
use aiedge_core::Role;
use aiedge_store::artifacts::ArtifactStore;
use aiedge_store::users::DeletedAccount;
use aiedge_store::{users, Db};

use crate::{Events, Result, ServiceError};

/// Disables (`true`) or enables an account; admins only, and not their own (nobody locks the
/// last door behind them). A disabled account's sessions end at once, its API tokens are
/// refused and its queued jobs wait; enabled again, its jobs are dispatched (the dispatcher is
/// woken) and it can sign in again.
#[tracing::instrument(skip_all, fields(user_id = %id, admin = %caller.id, disabled))]
pub async fn set_disabled(db: &Db, events: &dyn Events, caller: &UserView, id: &str, disabled: bool) -> Result<()> {
    if !caller.is_admin() {
        return Err(ServiceError::Forbidden("admins only"));
    }
    if caller.id == id {
        return Err(ServiceError::Invalid { code: "own_account", message: "you cannot disable your own account".into() });
    }
    if !users::set_disabled(db, id, disabled).await? {
        return Err(ServiceError::NotFound("account"));
    }
    if disabled {
        tracing::info!("account disabled");
    } else {
        tracing::info!("account enabled");
    }
    if !disabled {
        events.dispatch_wanted();
    }
    Ok(())
}

/// Makes an account an admin or a user; admins only, and not their own role (so the last admin
/// cannot demote themselves). The account's sessions end: they carried the old role.
#[tracing::instrument(skip_all, fields(user_id = %id, admin = %caller.id, %role))]
pub async fn set_role(db: &Db, caller: &UserView, id: &str, role: Role) -> Result<()> {
    if !caller.is_admin() {
        return Err(ServiceError::Forbidden("admins only"));
    }
    if caller.id == id {
        return Err(ServiceError::Invalid { code: "own_account", message: "you cannot change your own role".into() });
    }
    if !users::set_role(db, id, role).await? {
        return Err(ServiceError::NotFound("account"));
    }
    tracing::info!("account role changed");
    Ok(())
}

/// Deletes an account and everything it owns, for good; admins only, and not their own.
///
/// - Its unfinished jobs (queued, dispatched, running) are cancelled: they are deleted, so an
///   agent running one is told "no such job" at its next start or progress call and stops, as
///   it stops for a cancel, and anyone waiting for one hears that it ended.
/// - Its nodes are removed as [`crate::nodes::set_admin_state`] removes a node: their broker
///   users are revoked ([`Events::node_removed`]) and other accounts' jobs dispatched to or
///   running on them move on (the attempt is lost, "node removed"; the job is queued for
///   another node, or fails when it is out of attempts). Then the nodes are deleted with their
///   registration tokens, transitions, metrics history and shares; other accounts' finished
///   jobs keep their history, without the node.
/// - Its schedules (with their runs and stored inputs), applications, jobs (with their
///   timelines and attempts), API tokens and sessions are deleted: its tokens and sessions are
///   refused at once.
///
/// All of that is one database transaction (see [`users::delete`]). Its files in the artifact
/// store (applications and their default inputs, job inputs, results and logs) are deleted
/// after the commit; a file that cannot be deleted is logged and left behind, not an error:
/// the account is gone either way.
#[tracing::instrument(skip_all, fields(user_id = %id, admin = %caller.id))]
pub async fn delete(db: &Db, artifacts: &dyn ArtifactStore, events: &dyn Events, caller: &UserView, id: &str) -> Result<DeletedAccount> {
    if !caller.is_admin() {
        return Err(ServiceError::Forbidden("admins only"));
    }
    if caller.id == id {
        return Err(ServiceError::Invalid { code: "own_account", message: "you cannot delete your own account".into() });
    }
    let deleted = users::delete(db, id).await?.ok_or(ServiceError::NotFound("account"))?;
    let mut files_kept = 0;
    for prefix in &deleted.artifact_prefixes {
        if let Err(e) = artifacts.delete_all(prefix).await {
            files_kept += 1;
            tracing::warn!(prefix, error = %e, "cannot delete a deleted account's files");
        }
    }
    for key in &deleted.artifact_keys {
        if let Err(e) = artifacts.delete(key).await {
            files_kept += 1;
            tracing::warn!(key, error = %e, "cannot delete a deleted account's file");
        }
    }
    for job in &deleted.unfinished_jobs {
        crate::metrics::job_cancelled();
        events.job_changed(job);
        events.job_ended(job);
    }
    for (job, queued_again) in &deleted.moved_jobs {
        crate::metrics::attempt_ended("lost");
        events.job_changed(job);
        if !queued_again {
            events.job_ended(job);
        }
    }
    for node in &deleted.nodes {
        events.node_changed(node);
        events.node_removed(node);
    }
    events.dispatch_wanted();
    tracing::info!(
        jobs = deleted.jobs,
        unfinished_jobs = deleted.unfinished_jobs.len(),
        applications = deleted.applications,
        schedules = deleted.schedules,
        nodes = deleted.nodes.len(),
        moved_jobs = deleted.moved_jobs.len(),
        api_tokens = deleted.api_tokens,
        sessions = deleted.sessions,
        files_kept,
        "account deleted"
    );
    Ok(deleted)
}
