//! The HTTP endpoints agents call:
//! - `POST /agent/v1/register` exchanges a one-time token for the node's lasting credentials
//!   (its id and key) and where to send heartbeats;
//! - `POST /agent/v1/hello` lets a node check that its credentials still stand (a removed
//!   node is told so, and its agent stops).

use axum::body::Bytes;
use axum::extract::{rejection::JsonRejection, State};
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use shared::wire::{Hello, RegisterRequest, RegisterResponse, HDR_SIGNATURE, HELLO_MAX_SKEW_MS};

use aiedge_core::AdminState;
use aiedge_store::nodes::{self, RedeemError};
use app::backend::AppState;

use crate::broker::Broker;
use crate::AgentSettings;

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({ "error": { "code": code, "message": message } }))).into_response()
}

pub async fn register(
    State(state): State<AppState>,
    Extension(agents): Extension<AgentSettings>,
    Extension(broker): Extension<Broker>,
    body: Result<Json<RegisterRequest>, JsonRejection>,
) -> Response {
    let Json(mut req) = match body {
        Ok(req) => req,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, "bad_request", &rejection.body_text()),
    };
    if req.token.len() > 256 || req.facts.hostname.len() > 255 || req.facts.os.len() > 255 {
        return error(StatusCode::BAD_REQUEST, "bad_request", "field too long");
    }
    aiedge_core::reported::clamp_facts(&mut req.facts);
    let node_id = match nodes::redeem(&state.db, &req.token, &req.facts).await {
        Ok(id) => id,
        Err(e @ RedeemError::Unknown) => return error(StatusCode::UNAUTHORIZED, "token_unknown", &e.to_string()),
        Err(e @ (RedeemError::Expired | RedeemError::Used)) => {
            return error(StatusCode::GONE, "token_spent", &format!("{e}; issue a new one"))
        }
        Err(e @ RedeemError::Removed) => return error(StatusCode::FORBIDDEN, "node_removed", &e.to_string()),
        Err(RedeemError::Internal(e)) => {
            tracing::error!(error = %e, "registration failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error");
        }
    };
    if let Err(e) = broker.declare_node_queue(&node_id).await {
        // Not fatal: the queue is declared again whenever the broker connection comes back.
        tracing::warn!(node_id, error = %e, "node queue not declared yet");
    }
    let node_key = state.node_keys.key_for(&node_id);
    if let Err(e) = agents.broker_users.grant(&node_id, &node_key).await {
        // Not fatal either (the token is spent now): the agent retries its broker connection,
        // and its first check-in grants the user again.
        tracing::error!(node_id, error = %e, "the node's broker user is not granted yet");
    }
    tracing::info!(node_id, hostname = %req.facts.hostname, "node registered");
    Json(RegisterResponse {
        amqp_url: agents.broker_users.url_for(&node_id, &node_key),
        node_key,
        jobs_queue: broker.topology.node_queue(&node_id),
        node_id,
        heartbeat_exchange: agents.heartbeat_exchange.clone(),
        heartbeat_interval_ms: agents.heartbeat_interval.as_millis() as u64,
    })
    .into_response()
}

/// A signed check-in: 200 while the node stands, 403 once it was removed, 401 for a bad
/// signature or a stale timestamp (a replayed request).
pub async fn hello(
    State(state): State<AppState>,
    Extension(agents): Extension<AgentSettings>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signature = headers.get(HDR_SIGNATURE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let Ok(hello) = serde_json::from_slice::<Hello>(&body) else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "body must be a check-in");
    };
    let key = state.node_keys.key_for(&hello.node_id);
    if hello.node_id.len() > 64 || !shared::wire::verify(&key, &body, signature) {
        return error(StatusCode::UNAUTHORIZED, "bad_signature", "signature does not match the node's key");
    }
    if (aiedge_store::now_ms() - hello.sent_at_ms).abs() > HELLO_MAX_SKEW_MS {
        return error(StatusCode::UNAUTHORIZED, "stale", "check-in too old or clock too far off");
    }
    match nodes::auth_info(&state.db, &hello.node_id).await {
        Ok(Some(auth)) if auth.admin_state != AdminState::Removed => {
            if let Err(e) = agents.broker_users.ensure(&hello.node_id, &key).await {
                tracing::error!(node_id = %hello.node_id, error = %e, "cannot grant the node's broker user");
            }
            Json(json!({ "admin_state": auth.admin_state, "amqp_url": agents.broker_users.url_for(&hello.node_id, &key) })).into_response()
        }
        Ok(_) => error(StatusCode::FORBIDDEN, "node_removed", "this node was removed; its credentials are revoked"),
        Err(e) => {
            tracing::error!(error = %e, "check-in lookup failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
        }
    }
}
