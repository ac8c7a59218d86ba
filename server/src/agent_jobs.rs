//! The HTTP endpoints an agent calls about the jobs sent to it (see `shared::jobs`).
//!
//! Every request is signed with the node's key over method, path, time and body hash, and is
//! about one attempt: the server answers only for the job's live attempt on that very node, so
//! a node cannot fetch another node's inputs, and a late or forged report changes nothing.

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::{Extension, Json};
use futures_util::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shared::jobs::{AttemptReport, FinishReport, Proceed, HDR_BODY_SHA256, HDR_NODE, HDR_REQUEST_SIGNATURE, HDR_TIME};
use shared::wire::HELLO_MAX_SKEW_MS;

use aiedge_core::{AdminState, Verdict};
use aiedge_services::attempts;
use aiedge_store::jobs::{self, Attachment};
use aiedge_store::{artifacts, nodes, now_ms};
use app::backend::AppState;

use crate::api::{send_artifact, ApiError, UploadLimits};
use crate::routes::{Kind, Routes};

type ApiResult<T> = Result<T, ApiError>;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", message)
}

/// Who a signed request says it is from, checked before anything of its body is read: a node
/// id, a request time within the allowed skew, and a node that exists and was not removed.
/// Returns the node id and the time, for [`check_signature`].
async fn claimed_node(state: &AppState, headers: &HeaderMap) -> ApiResult<(String, i64)> {
    let node_id = header(headers, HDR_NODE);
    if node_id.is_empty() || node_id.len() > 64 {
        return Err(unauthorized("missing node id"));
    }
    let time: i64 = header(headers, HDR_TIME).parse().map_err(|_| unauthorized("missing or bad request time"))?;
    if (now_ms() - time).abs() > HELLO_MAX_SKEW_MS {
        return Err(unauthorized("request too old or clock too far off"));
    }
    match nodes::auth_info(&state.db, node_id).await? {
        Some(auth) if auth.admin_state != AdminState::Removed => Ok((node_id.to_string(), time)),
        Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "node_removed", "this node was removed; its credentials are revoked")),
        None => Err(unauthorized("unknown node")),
    }
}

/// Checks the signature of `node_id` over method, path, time and body hash.
fn check_signature(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    (node_id, time): (&str, i64),
    body_sha256: &str,
) -> ApiResult<()> {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let covered = shared::jobs::request_string(method.as_str(), path, time, body_sha256);
    if !shared::wire::verify(&state.node_keys.key_for(node_id), covered.as_bytes(), header(headers, HDR_REQUEST_SIGNATURE)) {
        return Err(unauthorized("signature does not match the node's key"));
    }
    Ok(())
}

/// Checks a signed request whose body hash is known up front; returns the calling node's id.
async fn verify(state: &AppState, method: &Method, uri: &Uri, headers: &HeaderMap, body_sha256: &str) -> ApiResult<String> {
    let (node, time) = claimed_node(state, headers).await?;
    check_signature(state, method, uri, headers, (&node, time), body_sha256)?;
    Ok(node)
}

fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn answer(verdict: Verdict) -> Json<Proceed> {
    match verdict {
        Verdict::Proceed => Json(Proceed { proceed: true, reason: None }),
        Verdict::Stop(reason) => Json(Proceed { proceed: false, reason: Some(reason) }),
    }
}

fn attempt_of(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))
}

/// The largest report body: an inline result (`INLINE_MAX`) and its JSON around it, escaped.
const REPORT_MAX_BYTES: usize = 2 * shared::jobs::INLINE_MAX + 16 * 1024;

/// A signed report from an agent, as an extractor: the calling node, its signature over the
/// request checked, and the JSON body it signed. Replaces the "verify, then parse" opening each
/// report handler had; it must be a handler's last argument (it reads the body).
pub struct SignedReport<T> {
    pub node: String,
    pub report: T,
}

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<AppState> for SignedReport<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &AppState) -> Result<Self, ApiError> {
        let (method, uri, headers) = (req.method().clone(), req.uri().clone(), req.headers().clone());
        // Nobody's body is read before they have named a live node within the time window.
        let (node, time) = claimed_node(state, &headers).await?;
        // A report is small: its inline result at most, and a little JSON around it.
        let body = axum::body::to_bytes(req.into_body(), REPORT_MAX_BYTES).await.map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("a report is at most {REPORT_MAX_BYTES} bytes"))
        })?;
        check_signature(state, &method, &uri, &headers, (&node, time), &sha_hex(&body))?;
        Ok(Self { node, report: parse(&body)? })
    }
}

/// `POST …/{id}/start`: may this node run attempt N? dispatched → running.
pub async fn start(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    SignedReport { node, report }: SignedReport<AttemptReport>,
) -> ApiResult<Json<Proceed>> {
    Ok(answer(attempts::start(&state.db, state.events.as_ref(), &node, &id, report.attempt, report.instance.as_deref()).await?))
}

/// `POST …/{id}/return`: the node held attempt N ahead of its slots and none came free in time
/// (see `shared::jobs`); dispatched → queued, the attempt not counted.
pub async fn give_back(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    SignedReport { node, report }: SignedReport<AttemptReport>,
) -> ApiResult<Json<Proceed>> {
    Ok(answer(attempts::give_back(&state.db, state.events.as_ref(), &node, &id, report.attempt).await?))
}

/// `POST …/{id}/progress`: rows done; the answer says whether to carry on.
pub async fn progress(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    SignedReport { node, report }: SignedReport<AttemptReport>,
) -> ApiResult<Json<Proceed>> {
    Ok(answer(attempts::progress(&state.db, state.events.as_ref(), &node, &id, report.attempt, report.rows_done).await?))
}

#[derive(Deserialize)]
pub struct AttemptQuery {
    attempt: u32,
}

async fn live_attempt(state: &AppState, id: &str, node: &str, attempt: u32) -> ApiResult<jobs::JobRecord> {
    Ok(attempts::live(&state.db, node, id, attempt).await?)
}

/// `GET …/{id}/application?attempt=N`: the model or bundle.
pub async fn application(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AttemptQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let node = verify(&state, &method, &uri, &headers, shared::jobs::EMPTY_SHA256).await?;
    let job = live_attempt(&state, &id, &node, q.attempt).await?;
    send_artifact(&state, &job.app_artifact_key, "application/octet-stream", None).await
}

/// `GET …/{id}/input?attempt=N`: the input CSV.
pub async fn input(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AttemptQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let node = verify(&state, &method, &uri, &headers, shared::jobs::EMPTY_SHA256).await?;
    let job = live_attempt(&state, &id, &node, q.attempt).await?;
    send_artifact(&state, &job.input_key, "text/csv", None).await
}

// One argument per extractor of the two upload routes.
#[allow(clippy::too_many_arguments)]
async fn upload(
    state: &AppState,
    id: &str,
    q: AttemptQuery,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    what: Attachment,
    limit: u64,
) -> ApiResult<Json<Proceed>> {
    let declared = header(&headers, HDR_BODY_SHA256).to_ascii_lowercase();
    let node = verify(state, &method, &uri, &headers, &declared).await?;
    live_attempt(state, id, &node, q.attempt).await?;
    let stream = body.into_data_stream().map(|r| r.map_err(|e| e.to_string()));
    let received = artifacts::receive(state.artifacts.staging_dir(), Box::pin(stream), limit).await?;
    if received.sha256() != declared {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "body_mismatch", "the body does not match its declared SHA-256"));
    }
    let name = match what {
        Attachment::Result => "result.csv",
        Attachment::Log => "log.txt",
    };
    let key = format!("jobs/{id}/attempt-{}/{name}", q.attempt);
    let attached = match received {
        // Small text goes into the database with the job's row: no file at all.
        artifacts::Received::Inline { text, .. } => {
            jobs::attach(&state.db, id, &node, attempt_of(q.attempt), what, &artifacts::inline_key(&key), Some(&text)).await?
        }
        artifacts::Received::Staged(staged) => {
            state.artifacts.commit(staged, &key).await.map_err(ApiError::internal)?;
            let attached = jobs::attach(&state.db, id, &node, attempt_of(q.attempt), what, &key, None).await?;
            if !attached {
                let _ = state.artifacts.delete(&key).await;
            }
            attached
        }
    };
    if attached {
        Ok(Json(Proceed { proceed: true, reason: None }))
    } else {
        Ok(Json(Proceed { proceed: false, reason: Some("this attempt is no longer the job's".into()) }))
    }
}

/// `PUT …/{id}/result?attempt=N`: the predictions CSV.
#[allow(clippy::too_many_arguments)] // one argument per extractor
pub async fn result(
    State(state): State<AppState>,
    Extension(limits): Extension<UploadLimits>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AttemptQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Proceed>> {
    upload(&state, &id, q, method, uri, headers, body, Attachment::Result, limits.max_bytes).await
}

/// Largest log accepted, in bytes (agents cap theirs below this).
#[derive(Clone, Copy, Debug)]
pub struct LogLimit(pub u64);

/// `PUT …/{id}/log?attempt=N`: the captured output.
#[allow(clippy::too_many_arguments)] // one argument per extractor
pub async fn log(
    State(state): State<AppState>,
    Extension(limit): Extension<LogLimit>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<AttemptQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Proceed>> {
    // A little over the cap: the agent's truncation note comes on top.
    upload(&state, &id, q, method, uri, headers, body, Attachment::Log, limit.0 + 4096).await
}

/// `POST …/{id}/finish`: the attempt's outcome. Refused for an attempt that is no longer live.
pub async fn finish(
    State(state): State<AppState>,
    UrlPath(id): UrlPath<String>,
    SignedReport { node, report }: SignedReport<FinishReport>,
) -> ApiResult<Json<Proceed>> {
    Ok(answer(attempts::finish(&state.db, &state.finishes, state.events.as_ref(), &node, &id, report).await?))
}

/// The agent job routes, listed (see [`crate::routes`]).
pub fn routes() -> Routes<AppState> {
    let base = shared::jobs::JOBS_PATH;
    Routes::new(Kind::Agent)
        .post(&format!("{base}/{{id}}/start"), start)
        .post(&format!("{base}/{{id}}/progress"), progress)
        .post(&format!("{base}/{{id}}/return"), give_back)
        .get(&format!("{base}/{{id}}/application"), application)
        .get(&format!("{base}/{{id}}/input"), input)
        .put(&format!("{base}/{{id}}/result"), result)
        .put(&format!("{base}/{{id}}/log"), log)
        .post(&format!("{base}/{{id}}/finish"), finish)
}

/// The agent job routes.
pub fn router(limits: UploadLimits, log_limit: LogLimit) -> axum::Router<AppState> {
    routes()
        .into_router()
        .layer(Extension(limits))
        .layer(Extension(log_limit))
        .layer(axum::extract::DefaultBodyLimit::max(usize::try_from(limits.max_bytes.saturating_add(1 << 20)).unwrap_or(usize::MAX)))
}
