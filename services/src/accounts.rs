//! Use cases of accounts that admins run: disable and enable an account, change its role.

use aiedge_core::views::UserView;
use aiedge_core::Role;
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
