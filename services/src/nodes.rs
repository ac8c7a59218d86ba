//! Use cases of nodes.

use aiedge_core::views::UserView;
use aiedge_core::AdminState;
use aiedge_store::{nodes as store, Db};

use crate::{Events, Result, ServiceError};

/// Enables, disables, drains or removes a node (admins only). Removal is final and revokes the
/// node's credentials. The server hears of the change at once (see [`Events::node_changed`]),
/// so a removed node's attempts move on without waiting for a sweep.
#[tracing::instrument(skip_all, fields(node_id = %id, admin = %caller.id, %state))]
pub async fn set_admin_state(db: &Db, events: &dyn Events, caller: &UserView, id: &str, state: AdminState) -> Result<()> {
    if !caller.is_admin() {
        return Err(ServiceError::Forbidden("admins only"));
    }
    if !store::set_admin_state(db, id, state).await? {
        return Err(ServiceError::NotFound("node"));
    }
    tracing::info!("node admin state changed");
    events.node_changed(id);
    events.dispatch_wanted();
    Ok(())
}
