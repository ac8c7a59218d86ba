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
