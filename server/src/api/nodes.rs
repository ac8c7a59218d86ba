//! `/api/v1/nodes`: add a node (its one-time token and install line) and read the caller's
//! nodes, for scripts and fleet tools such as the Ansible role in `deploy/ansible`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use aiedge_core::views::{NewNode, NodeView};
use app::backend::AppState;

use super::{ApiError, ApiJson, ApiResult, Caller, ErrorBody, UrlPath};

/// A node as the API shows it.
#[derive(Serialize, ToSchema)]
pub struct ApiNode {
    pub id: String,
    pub name: String,
    /// `waiting` (no agent yet), `active`, `busy`, `stopping`, `dead`, or the admin's decision
    /// (`disabled`, `draining`, `removed`).
    #[schema(example = "active")]
    pub status: String,
    /// The agent's version, once it has reported.
    pub agent_version: Option<String>,
    /// The machine's architecture, once the agent has reported (`x86_64`, `aarch64`, …).
    pub arch: Option<String>,
    /// The balancer's score for the node (higher is better; see the README's score formula),
    /// once the agent has reported.
    pub score: Option<f64>,
    /// When the last heartbeat arrived, in milliseconds since the Unix epoch.
    pub last_heartbeat_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

impl From<NodeView> for ApiNode {
    fn from(n: NodeView) -> Self {
        Self {
            status: n.badge().to_string(),
            agent_version: n.facts.as_ref().map(|f| f.agent_version.clone()),
            arch: n.facts.as_ref().map(|f| f.arch.clone()),
            score: n.score.as_ref().map(|s| s.total),
            last_heartbeat_at_ms: n.last_heartbeat_ms,
            created_at_ms: n.created_at_ms,
            id: n.id,
            name: n.name,
        }
    }
}

/// What `POST /api/v1/nodes` answers: the only time the token is ever shown.
#[derive(Serialize, ToSchema)]
pub struct ApiNewNode {
    pub node: ApiNode,
    /// The one-time registration token; it works once, until `expires_at_ms`.
    pub token: String,
    pub expires_at_ms: i64,
    /// The line to run on the machine, as root: downloads, verifies and installs the agent.
    #[schema(example = "curl -fsSL http://edge.example.com/install.sh | sudo sh -s -- --token aiedge_reg_… --name 'pi-1'")]
    pub install: String,
    /// The agent's own command, for a machine that already has the binary.
    pub command: String,
}

impl From<NewNode> for ApiNewNode {
    fn from(n: NewNode) -> Self {
        Self { node: n.node.into(), token: n.token, expires_at_ms: n.expires_at_ms, install: n.install, command: n.command }
    }
}

/// The body of `POST /api/v1/nodes`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddNode {
    /// Unique among the caller's nodes; 1 to 64 characters.
    #[schema(example = "pi-1")]
    pub name: String,
}

/// `GET /api/v1/nodes`: the caller's nodes, by name.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes",
    responses(
        (status = 200, description = "the caller's nodes", body = [ApiNode]),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn list(State(state): State<AppState>, Caller(user): Caller) -> ApiResult<Json<Vec<ApiNode>>> {
    let nodes = aiedge_store::nodes::list(&state.db, Some(&user.id), &state.settings.thermal).await?;
    Ok(Json(nodes.into_iter().map(ApiNode::from).collect()))
}

/// `POST /api/v1/nodes`: adds a node and issues its one-time registration token.
#[utoipa::path(post, path = "/api/v1/nodes", tag = "nodes", request_body = AddNode,
    responses(
        (status = 201, description = "the node, waiting for its agent, with its token and install line", body = ApiNewNode),
        (status = 400, description = "a body that is not JSON (`bad_json`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 409, description = "the caller already has a node with this name (`name_taken`)", body = ErrorBody),
        (status = 415, description = "not `application/json`", body = ErrorBody),
        (status = 422, description = "a body without a valid name (`bad_json`, `invalid`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn add(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiJson(body): ApiJson<AddNode>,
) -> ApiResult<(StatusCode, Json<ApiNewNode>)> {
    let name =
        aiedge_core::names::check_node_name(&body.name).map_err(|m| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m))?;
    match aiedge_store::nodes::add(&state.db, &state.settings.thermal, &state.settings.public_url, &user.id, &name).await {
        Ok(new) => Ok((StatusCode::CREATED, Json(new.into()))),
        Err(aiedge_store::nodes::AddError::NameTaken) => {
            Err(ApiError::new(StatusCode::CONFLICT, "name_taken", "you already have a node with this name"))
        }
        Err(aiedge_store::nodes::AddError::Internal(e)) => Err(ApiError::internal(e)),
    }
}

/// `GET /api/v1/nodes/{id}`: one of the caller's nodes (any node, for an admin).
#[utoipa::path(get, path = "/api/v1/nodes/{id}", tag = "nodes", params(("id" = String, Path, description = "the node's id")),
    responses(
        (status = 200, description = "the node", body = ApiNode),
        (status = 400, description = "a malformed id (`bad_path`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such node, or another user's (`not_found`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn get(State(state): State<AppState>, Caller(user): Caller, UrlPath(id): UrlPath<String>) -> ApiResult<Json<ApiNode>> {
    // The shortest history window: only the node itself is answered.
    let detail = aiedge_store::nodes::detail(&state.db, &state.settings.thermal, &id, &user, 15 * 60 * 1000).await?;
    detail.map(|d| Json(d.node.into())).ok_or_else(|| ApiError::not_found("node"))
}
