//! Nodes as the pages see them, and the server functions to add and list them.
//!
//! An owner adds a node by name and gets a one-time registration token (shown once, stored
//! only as a hash, valid for 30 minutes) and the command that starts `node-agent` with it.
//! Each node has a page ([`load_node`]): its facts, charts over a chosen window and the
//! transitions of its status.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use shared::score::Score;
use shared::wire::{NodeFacts, NodeMetrics};

#[cfg(feature = "ssr")]
use crate::backend;

/// Longest node name we accept.
pub const NODE_NAME_MAX_CHARS: usize = 64;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub owner_email: String,
    /// waiting, active, stopping (the agent finishes its jobs before it exits) or dead.
    pub status: String,
    /// enabled, disabled, draining or removed.
    pub admin_state: String,
    pub facts: Option<NodeFacts>,
    pub metrics: Option<NodeMetrics>,
    pub score: Option<Score>,
    pub last_heartbeat_ms: Option<i64>,
    pub created_at_ms: i64,
    /// Job attempts that failed or were lost on this node in the last 24 hours.
    #[serde(default)]
    pub recent_failures: u32,
}

/// A freshly added node with its one-time token: the only time the token is ever shown.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NewNode {
    pub node: NodeView,
    pub token: String,
    pub expires_at_ms: i64,
    /// The exact command to run on the machine.
    pub command: String,
}

/// One recorded change of a node's status.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeEvent {
    pub at_ms: i64,
    pub from_status: String,
    pub to_status: String,
    /// Why, e.g. "no heartbeat for 10 s" or "heartbeats resumed".
    pub reason: String,
}

/// A node's page: the node, its history over `window_ms`, and its newest transitions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeDetail {
    pub node: NodeView,
    /// The viewer owns the node (otherwise an admin is looking).
    pub mine: bool,
    /// Newest first, at most the latest 50.
    pub events: Vec<NodeEvent>,
    /// How many transitions were recorded in all.
    pub events_total: u64,
    /// Averages over equal spans of the window, oldest first.
    pub history: Vec<crate::live::Sample>,
    pub window_ms: i64,
}

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

/// Checks a node name: 1 to 64 characters, no control characters.
pub fn check_node_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("Give the node a name.".into());
    }
    if name.chars().count() > NODE_NAME_MAX_CHARS {
        return Err(format!("Use at most {NODE_NAME_MAX_CHARS} characters."));
    }
    if name.chars().any(char::is_control) {
        return Err("Use printable characters only.".into());
    }
    Ok(name.to_string())
}

/// Adds a node owned by the signed-in user and issues its registration token.
#[server(endpoint = "nodes/add")]
pub async fn add_node(#[server(default)] name: String) -> Result<NewNode, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let name = check_node_name(&name).map_err(|m| backend::deny(http::StatusCode::UNPROCESSABLE_ENTITY, &m))?;
    match backend::nodes::add(&state, &user.id, &name).await {
        Ok(new) => Ok(new),
        Err(backend::nodes::AddError::NameTaken) => {
            Err(backend::deny(http::StatusCode::CONFLICT, "You already have a node with this name."))
        }
        Err(backend::nodes::AddError::Internal(e)) => Err(backend::internal(e)),
    }
}

/// The signed-in user's nodes.
#[server(endpoint = "nodes/mine", input = server_fn::codec::GetUrl)]
pub async fn my_nodes() -> Result<Vec<NodeView>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    backend::nodes::list(&state.db, Some(&user.id), &state.settings.thermal).await.map_err(backend::internal)
}

/// Every node (admins only).
#[server(endpoint = "nodes/all", input = server_fn::codec::GetUrl)]
pub async fn all_nodes() -> Result<Vec<NodeView>, ServerFnError> {
    backend::require_admin()?;
    let state = backend::state()?;
    backend::nodes::list(&state.db, None, &state.settings.thermal).await.map_err(backend::internal)
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
    let scope = owner.as_deref().map_or(backend::nodes::Scope::All, backend::nodes::Scope::Owner);
    backend::nodes::history(&state.db, scope, backend::now_ms(), 10 * 60 * 1000, crate::live::HISTORY_POINTS)
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
    backend::nodes::detail(&state, &id, &user, window_ms)
        .await
        .map_err(backend::internal)?
        .ok_or_else(|| backend::deny(http::StatusCode::NOT_FOUND, NO_SUCH_NODE))
}

/// The error of [`load_node`] for a node the caller may not see (or that does not exist).
pub const NO_SUCH_NODE: &str = "no such node";

/// Disables, drains, re-enables or removes a node (admins only). Removal revokes the node's
/// credentials: its heartbeats are refused from then on.
#[server(endpoint = "nodes/set-state")]
pub async fn set_node_state(id: String, state: String) -> Result<(), ServerFnError> {
    let admin = backend::require_admin()?;
    if !["enabled", "disabled", "draining", "removed"].contains(&state.as_str()) {
        return Err(backend::deny(http::StatusCode::BAD_REQUEST, "state must be enabled, disabled, draining or removed"));
    }
    let app = backend::state()?;
    let changed = backend::nodes::set_admin_state(&app.db, &id, &state).await.map_err(backend::internal)?;
    if !changed {
        return Err(backend::deny(http::StatusCode::NOT_FOUND, "no such node"));
    }
    tracing::info!(node_id = %id, state, admin = %admin.id, "node admin state changed");
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
