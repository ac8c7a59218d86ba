//! The HTTP endpoints agents call. Today: `POST /agent/v1/register`, which exchanges a one-time
//! token for the node's lasting credentials (its id and key) and where to send heartbeats.

use axum::extract::{rejection::JsonRejection, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;
use shared::wire::{RegisterRequest, RegisterResponse};

use app::backend::nodes::{self, RedeemError};
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
    let Json(req) = match body {
        Ok(req) => req,
        Err(rejection) => return error(StatusCode::BAD_REQUEST, "bad_request", &rejection.body_text()),
    };
    if req.token.len() > 256 || req.facts.hostname.len() > 255 || req.facts.os.len() > 255 {
        return error(StatusCode::BAD_REQUEST, "bad_request", "field too long");
    }
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
    tracing::info!(node_id, hostname = %req.facts.hostname, "node registered");
    Json(RegisterResponse {
        node_key: state.node_keys.key_for(&node_id),
        node_id,
        amqp_url: agents.amqp_url.clone(),
        heartbeat_exchange: agents.heartbeat_exchange.clone(),
        heartbeat_interval_ms: agents.heartbeat_interval.as_millis() as u64,
    })
    .into_response()
}
