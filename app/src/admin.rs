//! The admin dashboard's data. Every function here refuses non-admins (403) and anonymous
//! callers (401) on its own, whatever page called it.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

use crate::auth::UserView;
#[cfg(feature = "ssr")]
use crate::backend;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdminDashboard {
    pub users: Vec<UserView>,
    pub admins: usize,
}

/// Everything the admin page shows.
#[server(endpoint = "admin/overview", input = server_fn::codec::GetUrl)]
pub async fn admin_overview() -> Result<AdminDashboard, ServerFnError> {
    backend::require_admin()?;
    let state = backend::state()?;
    let users = aiedge_store::users::list(&state.db).await.map_err(backend::internal)?;
    let admins = users.iter().filter(|u| u.is_admin()).count();
    Ok(AdminDashboard { users, admins })
}

/// Accounts shown at once on the admin page.
pub const ACCOUNTS_PAGE: i64 = 200;

/// Accounts whose email or name contains `q` (all when empty), oldest first.
#[server(endpoint = "admin/accounts", input = server_fn::codec::GetUrl)]
pub async fn admin_accounts(#[server(default)] q: String) -> Result<Vec<UserView>, ServerFnError> {
    backend::require_admin()?;
    let state = backend::state()?;
    aiedge_store::users::search(&state.db, q.trim(), ACCOUNTS_PAGE).await.map_err(backend::internal)
}

/// Disables (`disabled` = "true") or enables an account (see `aiedge_services::accounts`).
#[server(endpoint = "admin/set-disabled")]
pub async fn set_account_disabled(id: String, disabled: String) -> Result<(), ServerFnError> {
    let admin = backend::require_admin()?;
    let state = backend::state()?;
    let disabled = match disabled.as_str() {
        "true" => true,
        "false" => false,
        _ => return Err(ServerFnError::new("disabled must be true or false")),
    };
    aiedge_services::accounts::set_disabled(&state.db, state.events.as_ref(), &admin, &id, disabled).await.map_err(backend::refused)?;
    leptos_axum::redirect("/admin#accounts");
    Ok(())
}

/// Makes an account an admin or a user.
#[server(endpoint = "admin/set-role")]
pub async fn set_account_role(id: String, role: String) -> Result<(), ServerFnError> {
    let admin = backend::require_admin()?;
    let state = backend::state()?;
    let role = aiedge_core::Role::parse(&role).ok_or_else(|| ServerFnError::new("role must be user or admin"))?;
    aiedge_services::accounts::set_role(&state.db, &admin, &id, role).await.map_err(backend::refused)?;
    leptos_axum::redirect("/admin#accounts");
    Ok(())
}
