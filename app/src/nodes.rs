//! Nodes as the pages see them, and the server functions to add and list them.
//!
//! An owner adds a node by name and gets a one-time registration token (shown once, stored
//! only as a hash, valid for 30 minutes) and the command that starts `node-agent` with it.

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
}
