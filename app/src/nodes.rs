//! Nodes as the pages see them, and the server functions to add and list them.
//!
//! An owner adds a node by name and gets a one-time registration token (shown once, stored
//! only as a hash, valid for 30 minutes) and the command that starts `node-agent` with it.
//! Each node has a page ([`load_node`]): its facts, charts over a chosen window and the
//! transitions of its status.

use leptos::prelude::*;

#[cfg(feature = "ssr")]
use crate::backend;

pub use aiedge_core::names::{check_node_name, NAME_MAX_CHARS as NODE_NAME_MAX_CHARS};
pub use aiedge_core::views::{NewNode, NodeDetail, NodeEvent, NodeView};
pub use aiedge_core::{AdminState, Sharing};

/// The windows a node's page charts: the key in its URL (`?window=24h`), a label, the length.
pub const WINDOWS: &[(&str, &str, i64)] = &[
    ("15m", "15 min", 15 * 60 * 1000),
    ("1h", "1 h", 60 * 60 * 1000),
    ("24h", "24 h", 24 * 60 * 60 * 1000),
    ("7d", "7 days", 7 * 24 * 60 * 60 * 1000),
];
/// The window a node's page opens with.
pub const DEFAULT_WINDOW: &str = "1h";

/// The length of the window `key` names.
pub fn window_ms(key: &str) -> Option<i64> {
    WINDOWS.iter().find(|(k, _, _)| *k == key).map(|(_, _, ms)| *ms)
}

/// Adds a node owned by the signed-in user and issues its registration token.
#[server(endpoint = "nodes/add")]
pub async fn add_node(#[server(default)] name: String) -> Result<NewNode, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let name = check_node_name(&name).map_err(|m| backend::deny(http::StatusCode::UNPROCESSABLE_ENTITY, &m))?;
    match aiedge_store::nodes::add(&state.db, &state.settings.thermal, &state.settings.public_url, &user.id, &name).await {
        Ok(new) => Ok(new),
        Err(aiedge_store::nodes::AddError::NameTaken) => {
            Err(backend::deny(http::StatusCode::CONFLICT, "You already have a node with this name."))
        }
        Err(aiedge_store::nodes::AddError::Internal(e)) => Err(backend::internal(e)),
    }
}

/// The signed-in user's nodes.
#[server(endpoint = "nodes/mine", input = server_fn::codec::GetUrl)]
pub async fn my_nodes() -> Result<Vec<NodeView>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    aiedge_store::nodes::list(&state.db, Some(&user.id), &state.settings.thermal).await.map_err(backend::internal)
}

/// Every node (admins only).
#[server(endpoint = "nodes/all", input = server_fn::codec::GetUrl)]
pub async fn all_nodes() -> Result<Vec<NodeView>, ServerFnError> {
    backend::require_admin()?;
    let state = backend::state()?;
    aiedge_store::nodes::list(&state.db, None, &state.settings.thermal).await.map_err(backend::internal)
}

/// Recent history of the nodes the caller may see, for the charts: "mine" or "all" (admins).
#[server(endpoint = "nodes/history", input = server_fn::codec::GetUrl)]
pub async fn node_history(scope: String) -> Result<std::collections::HashMap<String, Vec<crate::live::Sample>>, ServerFnError> {
    let user = backend::require_user()?;
    let owner = if scope == "all" {
        backend::require_admin()?;
        None
    } else {
        Some(user.id)
    };
    let state = backend::state()?;
    let scope = owner.as_deref().map_or(aiedge_store::nodes::Scope::All, aiedge_store::nodes::Scope::Owner);
    aiedge_store::nodes::history(&state.db, scope, aiedge_store::now_ms(), 10 * 60 * 1000, crate::live::HISTORY_POINTS)
        .await
        .map_err(backend::internal)
}

/// A node's page: its owner's or, for admins, anyone's; anyone else gets 404, as for a node
/// that does not exist. `window` is one of [`WINDOWS`] (default 1 h).
#[server(endpoint = "nodes/detail", input = server_fn::codec::GetUrl)]
pub async fn load_node(id: String, #[server(default)] window: String) -> Result<NodeDetail, ServerFnError> {
    let user = backend::require_user()?;
    let window = if window.is_empty() { DEFAULT_WINDOW } else { window.as_str() };
    let Some(window_ms) = window_ms(window) else {
        return Err(backend::deny(http::StatusCode::BAD_REQUEST, "window must be 15m, 1h, 24h or 7d"));
    };
    let state = backend::state()?;
    aiedge_store::nodes::detail(&state.db, &state.settings.thermal, &id, &user, window_ms)
        .await
        .map_err(backend::internal)?
        .ok_or_else(|| backend::deny(http::StatusCode::NOT_FOUND, NO_SUCH_NODE))
}

/// The error of [`load_node`] for a node the caller may not see (or that does not exist).
pub const NO_SUCH_NODE: &str = "no such node";

/// Disables, drains, re-enables or removes a node (its owner or an admin). Removal revokes the
/// node's credentials: its heartbeats are refused from then on. With `back` (a plain form) the
/// browser is sent back to the node's page.
#[server(endpoint = "nodes/set-state")]
pub async fn set_node_state(id: String, state: AdminState, #[server(default)] back: Option<String>) -> Result<(), ServerFnError> {
    let user = backend::require_user()?;
    let app = backend::state()?;
    aiedge_services::nodes::set_admin_state(&app.db, app.events.as_ref(), &user, &id, state).await.map_err(backend::refused)?;
    // A plain form (the node's page) is sent back to the page, or to the list once the node is gone.
    if back.is_some() {
        leptos_axum::redirect(&if state == AdminState::Removed { "/nodes".to_string() } else { format!("/nodes/{id}") });
    }
    Ok(())
}

/// Whose jobs the node runs besides its owner's (its owner or an admin decides): `users` is a
/// comma- or space-separated list of e-mail addresses, used with [`Sharing::Users`]. The page
/// shows the change (a plain form post is sent back to it).
#[server(endpoint = "nodes/share")]
pub async fn set_node_sharing(id: String, sharing: Sharing, #[server(default)] users: String) -> Result<(), ServerFnError> {
    let user = backend::require_user()?;
    let app = backend::state()?;
    let emails: Vec<String> = users.split([',', ' ', '\n', ';']).map(str::to_string).collect();
    aiedge_services::nodes::set_sharing(&app.db, app.events.as_ref(), &user, &id, sharing, &emails).await.map_err(backend::refused)?;
    leptos_axum::redirect(&format!("/nodes/{id}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_checked() {
        assert_eq!(check_node_name("  pi-1 ").as_deref(), Ok("pi-1"));
        assert!(check_node_name("").is_err());
        assert!(check_node_name("a\u{0}b").is_err());
        assert!(check_node_name(&"n".repeat(65)).is_err());
    }

    #[test]
    fn windows_are_known_by_key() {
        assert_eq!(window_ms("15m"), Some(15 * 60 * 1000));
        assert_eq!(window_ms(DEFAULT_WINDOW), Some(3_600_000));
        assert_eq!(window_ms("24h"), Some(86_400_000));
        assert_eq!(window_ms("1y"), None);
        assert_eq!(window_ms(""), None);
    }
}
