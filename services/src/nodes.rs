//! Use cases of nodes.

use aiedge_core::views::UserView;
use aiedge_core::{AdminState, Sharing};
use aiedge_store::{nodes as store, users, Db};

use crate::{Events, Result, ServiceError};

/// Enables, disables, drains or removes a node: its owner or an admin may (anyone else is
/// answered as if it did not exist). Removal is final and revokes the node's credentials. The
/// server hears of the change at once (see [`Events::node_changed`]), so a removed node's
/// attempts move on without waiting for a sweep.
#[tracing::instrument(skip_all, fields(node_id = %id, user_id = %caller.id, %state))]
pub async fn set_admin_state(db: &Db, events: &dyn Events, caller: &UserView, id: &str, state: AdminState) -> Result<()> {
    match store::owner_of(db, id).await? {
        Some(owner) if aiedge_core::may_manage(caller, &owner) => {}
        _ => return Err(ServiceError::NotFound("node")),
    }
    if !store::set_admin_state(db, id, state).await? {
        return Err(ServiceError::NotFound("node"));
    }
    tracing::info!("node admin state changed");
    events.node_changed(id);
    if state == AdminState::Removed {
        events.node_removed(id);
    }
    events.dispatch_wanted();
    Ok(())
}

/// The most users a node may be shared with by name.
pub const SHARE_MAX_USERS: usize = 100;

/// Whose jobs a node runs besides its owner's (its owner or an admin decides): nobody's,
/// everyone's, or those of the accounts named by e-mail in `emails` (with [`Sharing::Users`];
/// ignored otherwise). An address with no account is refused and nothing changes. The
/// dispatcher is woken: queued jobs may fit the node now.
#[tracing::instrument(skip_all, fields(node_id = %id, user_id = %caller.id, %sharing))]
pub async fn set_sharing(db: &Db, events: &dyn Events, caller: &UserView, id: &str, sharing: Sharing, emails: &[String]) -> Result<()> {
    match store::owner_of(db, id).await? {
        Some(owner) if aiedge_core::may_manage(caller, &owner) => {}
        _ => return Err(ServiceError::NotFound("node")),
    }
    let mut user_ids = Vec::new();
    if sharing == Sharing::Users {
        let mut emails: Vec<String> = emails.iter().map(|e| e.trim().to_lowercase()).filter(|e| !e.is_empty()).collect();
        emails.sort();
        emails.dedup();
        if emails.is_empty() {
            return Err(ServiceError::Invalid { code: "no_users", message: "name at least one account to share the node with".into() });
        }
        if emails.len() > SHARE_MAX_USERS {
            return Err(ServiceError::Invalid {
                code: "too_many_users",
                message: format!("a node is shared with at most {SHARE_MAX_USERS} accounts by name; share it with everyone instead"),
            });
        }
        for email in &emails {
            match users::find_by_email(db, email).await? {
                Some(user) => user_ids.push(user.id),
                None => return Err(ServiceError::Invalid { code: "unknown_user", message: format!("no account has the address {email}") }),
            }
        }
    }
    if !store::set_sharing(db, id, sharing, &user_ids).await? {
        return Err(ServiceError::NotFound("node"));
    }
    tracing::info!(users = user_ids.len(), "node sharing changed");
    events.node_changed(id);
    events.dispatch_wanted();
    Ok(())
}
