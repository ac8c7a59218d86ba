//! The JSON API under `/api/v1`, for scripts and notebooks, and the upload/download routes the
//! web pages use too (they stream, which server functions do not).
//!
//! Who is asking: `Authorization: Bearer aie_…` (a personal API token) or the browser's session.
//! Errors are JSON: `{"error": {"code": "...", "message": "..."}}` with a stable code. A plain
//! HTML form post (no WASM yet) gets a redirect to the page instead of JSON.
//! The OpenAPI document is served at `/api/v1/openapi.json` (see [`ApiDoc`]).

use std::path::Path;
use std::time::Duration;

use aiedge_core::{JobStatus, Pool};
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::json;
use shared::jobs::AppKind;
use tokio::sync::broadcast::error::RecvError;
use utoipa::{OpenApi, ToSchema};

use aiedge_services::jobs::{Input, Intakes};
use aiedge_store::artifacts::{self, Received, StageError, Staged};
use aiedge_store::{api_tokens, apps, jobs};
use app::auth::UserView;
use app::backend::{AppState, CurrentUser};
use app::jobs::{check_name, AppDetails, AppView, JobView, TensorLine};

use crate::model_check::{ModelCheckError, ModelChecker};

pub mod nodes;
pub mod schedules;
use crate::routes::{Kind, Routes};

/// Upload limits, from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct UploadLimits {
    pub max_bytes: u64,
}

/// An API error: status, stable code, message for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: e.g. `unauthorized`, `not_found`, `invalid_model`, `invalid_csv`.
    code: String,
    /// For people.
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no such {what}"))
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "api request failed");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": { "code": self.code, "message": self.message } }))).into_response()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::internal(e)
    }
}

impl From<aiedge_services::ServiceError> for ApiError {
    fn from(e: aiedge_services::ServiceError) -> Self {
        if e.status() == 500 {
            return ApiError::internal(e);
        }
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError::new(status, e.code(), e.public_message())
    }
}

impl From<StageError> for ApiError {
    fn from(e: StageError) -> Self {
        match e {
            StageError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", e.to_string()),
            StageError::Body(_) => ApiError::new(StatusCode::BAD_REQUEST, "bad_upload", e.to_string()),
            StageError::Io(e) => ApiError::internal(e),
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The caller: a bearer token's user, else the session's.
async fn caller(state: &AppState, headers: &HeaderMap, session: &CurrentUser) -> ApiResult<UserView> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        let token = auth.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).unwrap_or_default().trim();
        return api_tokens::authenticate(&state.db, token)
            .await?
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the API token is unknown or revoked"));
    }
    session
        .0
        .clone()
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "sign in or send `Authorization: Bearer <API token>`"))
}

/// Who is calling the JSON API (see [`caller`]), as an extractor: a handler that takes it is
/// answered 401 before it runs when nobody is.
pub struct Caller(pub UserView);

impl axum::extract::FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &AppState) -> Result<Self, ApiError> {
        let session = parts.extensions.get::<CurrentUser>().cloned().unwrap_or_default();
        let user = caller(state, &parts.headers, &session).await?;
        if let Some(actor) = parts.extensions.get::<crate::usage::Actor>() {
            actor.set(&user.id);
        }
        Ok(Caller(user))
    }
}

/// axum's `Path`, refused with the API's JSON error (400 `bad_path`) rather than axum's plain
/// text, so every answer of the API has the documented shape.
pub struct UrlPath<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send, S: Send + Sync> axum::extract::FromRequestParts<S> for UrlPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text())),
        }
    }
}

/// axum's `Query`, refused with the API's JSON error (400 `bad_query`): e.g. `?limit=` past
/// the range of a 64-bit integer, or a `?wait=` that is not a number.
pub struct ApiQuery<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text())),
        }
    }
}

/// axum's `Json`, refused with the API's JSON error (400 `bad_json`, 415 without the JSON
/// content type) rather than axum's plain text.
pub struct ApiJson<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(e) => Err(ApiError::new(
                e.status(),
                if e.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE { "bad_content_type" } else { "bad_json" },
                e.body_text(),
            )),
        }
    }
}

/// A body that is not a multipart form, as the API's JSON error. Taken after the caller is
/// known, so nobody learns more than 401 without credentials.
fn not_multipart(e: MultipartRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_upload", e.body_text())
}

/// True for a plain browser form post: answer with a redirect, not JSON.
fn wants_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"))
}

/// Answers a browser form with a redirect, anything else with `ok` or the error as JSON.
fn answer<T: Serialize>(
    html: bool,
    result: ApiResult<(StatusCode, T)>,
    success_page: impl FnOnce(&T) -> String,
    failure_page: &str,
) -> Response {
    match (html, result) {
        (true, Ok((_, body))) => Redirect::to(&success_page(&body)).into_response(),
        (true, Err(e)) => {
            let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("error", &e.message).finish();
            Redirect::to(&format!("{failure_page}?{query}")).into_response()
        }
        (false, Ok((status, body))) => (status, Json(body)).into_response(),
        (false, Err(e)) => e.into_response(),
    }
}

/// A text field of a multipart form, capped.
/// The longest text field of a multipart form (a name, an id), in bytes.
const TEXT_FIELD_MAX: usize = 4096;

/// A text field, read chunk by chunk and refused as soon as it is longer than
/// [`TEXT_FIELD_MAX`]: a field of gigabytes is never held in memory.
/// How much of a refused form the server still reads so that its answer arrives (see
/// [`text_field`], [`drain`]); a client sending more into a refused form may see a reset.
const DRAIN_MAX: usize = 1 << 20;

/// Reads and drops what is left of a refused form, up to [`DRAIN_MAX`] bytes.
async fn drain(multipart: &mut Multipart) {
    let mut left = DRAIN_MAX;
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(chunk)) = field.chunk().await {
            left = left.saturating_sub(chunk.len());
            if left == 0 {
                return;
            }
        }
    }
}

async fn text_field(mut field: axum::extract::multipart::Field<'_>) -> ApiResult<String> {
    let bad_upload = |e: axum::extract::multipart::MultipartError| ApiError::new(StatusCode::BAD_REQUEST, "bad_upload", e.to_string());
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(bad_upload)? {
        if bytes.len() + chunk.len() > TEXT_FIELD_MAX {
            // Read what is left of it first: a server that closes with unread bytes resets the
            // connection, and the client sees that instead of this answer.
            let mut left = DRAIN_MAX;
            while let Ok(Some(chunk)) = field.chunk().await {
                left = left.saturating_sub(chunk.len());
                if left == 0 {
                    break;
                }
            }
            return Err(ApiError::bad("bad_field", format!("a form field is at most {TEXT_FIELD_MAX} bytes")));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| ApiError::bad("bad_field", "a form field must be UTF-8 text"))
}

/// A file field's name as given, cleaned for display.
fn field_filename(field: &axum::extract::multipart::Field<'_>) -> String {
    field.file_name().unwrap_or("upload").chars().filter(|c| !c.is_control()).take(128).collect()
}

/// Streams a file field to the staging area.
async fn file_field(state: &AppState, field: axum::extract::multipart::Field<'_>, limits: UploadLimits) -> ApiResult<(Staged, String)> {
    let filename = field_filename(&field);
    let staged = artifacts::stage(state.artifacts.staging_dir(), field, limits.max_bytes).await?;
    Ok((staged, filename))
}

fn tensor_lines(tensors: &[runner::onnx::TensorInfo]) -> Vec<TensorLine> {
    tensors
        .iter()
        .map(|t| TensorLine {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: format!("[{}]", t.shape.iter().map(|d| d.map_or("N".to_string(), |d| d.to_string())).collect::<Vec<_>>().join(", ")),
        })
        .collect()
}

/// Loads the model in a checker child (see [`crate::model_check`]) and describes it.
async fn check_model(checker: &ModelChecker, path: &Path) -> ApiResult<(AppDetails, u64)> {
    let info = checker.check(path).await.map_err(|e| match e {
        ModelCheckError::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()),
        ModelCheckError::Check(e) if e.is_users() => ApiError::bad("invalid_model", e.to_string()),
        ModelCheckError::Check(e) => ApiError::internal(e),
    })?;
    let features = info.features as u64;
    Ok((
        AppDetails::Onnx {
            inputs: tensor_lines(&info.inputs),
            outputs: tensor_lines(&info.outputs),
            features,
            columns: info.output_columns,
        },
        features,
    ))
}

async fn check_bundle(path: &Path) -> ApiResult<(AppDetails, String)> {
    let path = path.to_path_buf();
    let manifest = tokio::task::spawn_blocking(move || runner::bundle::inspect(&path, &runner::bundle::BundleLimits::default()))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::bad("invalid_bundle", e.to_string()))?;
    let runtime = manifest.runtime.clone();
    Ok((
        AppDetails::Script {
            entry: manifest.entry,
            runtime: manifest.runtime,
            output: manifest.output,
            time_limit_secs: manifest.time_limit_secs,
            memory_mb: manifest.memory_mb,
        },
        runtime,
    ))
}

/// Checks an input CSV: for an ONNX model every row must have `features` numeric cells.
/// Script inputs are the script's business; they are taken as they are.
async fn check_input(path: &Path, features: Option<u64>) -> ApiResult<Option<u64>> {
    let Some(features) = features else { return Ok(None) };
    let path = path.to_path_buf();
    let (_, rows) = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(runner::onnx::OnnxError::Io)?;
        runner::onnx::check_csv(std::io::BufReader::new(file), Some(features as usize))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::bad("invalid_csv", e.to_string()))?;
    Ok(Some(rows))
}

fn sniff_kind(kind: Option<&str>, filename: &str, path: &Path) -> ApiResult<AppKind> {
    match kind.map(str::trim).filter(|k| !k.is_empty()) {
        Some(k) => AppKind::parse(k).ok_or_else(|| ApiError::bad("bad_kind", "kind must be `onnx` or `script`")),
        None if filename.to_ascii_lowercase().ends_with(".onnx") => Ok(AppKind::Onnx),
        None if filename.to_ascii_lowercase().ends_with(".zip") => Ok(AppKind::Script),
        None => {
            let mut magic = [0u8; 4];
            let zip = std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
                && &magic == b"PK\x03\x04";
            Ok(if zip { AppKind::Script } else { AppKind::Onnx })
        }
    }
}

/// `POST /api/v1/applications`, multipart: `name`, `file` (the .onnx model or the .zip bundle),
/// optional `kind` (`onnx`/`script`, else from the file name), optional `default_input` (CSV).
#[utoipa::path(post, path = "/api/v1/applications", tag = "applications",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "uploaded and checked", body = AppView),
        (status = 400, description = "not a multipart form, or a broken one (`bad_upload`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 409, description = "an application of yours has this name (`name_taken`)", body = ErrorBody),
        (status = 413, description = "a file over the upload limit (`too_large`)", body = ErrorBody),
        (status = 422, description = "a field or file the server refuses: `missing_file`, `empty_file`, `bad_name`, `bad_kind`, \
            `bad_field`, `invalid_model`, `invalid_bundle`, `invalid_csv`", body = ErrorBody),
        (status = 503, description = "too many models are being checked; try again (`busy`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn upload_application(
    State(state): State<AppState>,
    Extension(limits): Extension<UploadLimits>,
    Extension(checker): Extension<ModelChecker>,
    Extension(session): Extension<CurrentUser>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let html = wants_html(&headers);
    let result = upload_application_inner(&state, limits, &checker, &headers, &session, multipart).await;
    answer(html, result, |app: &AppView| format!("/apps/{}", app.id), "/apps")
}

async fn upload_application_inner(
    state: &AppState,
    limits: UploadLimits,
    checker: &ModelChecker,
    headers: &HeaderMap,
    session: &CurrentUser,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, AppView)> {
    let user = caller(state, headers, session).await?;
    let mut multipart = multipart.map_err(not_multipart)?;
    let (mut name, mut kind, mut file, mut default_input) = (None, None, None, None);
    while let Some(field) = multipart.next_field().await.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_upload", e.to_string()))? {
        match field.name().unwrap_or_default() {
            "name" => name = Some(text_field(field).await?),
            "kind" => kind = Some(text_field(field).await?),
            "file" => file = Some(file_field(state, field, limits).await?),
            "default_input" => {
                let (staged, filename) = file_field(state, field, limits).await?;
                // An empty file input in a browser form means "none".
                if staged.size > 0 || !filename.is_empty() && filename != "upload" {
                    default_input = Some(staged);
                }
            }
            other => return Err(ApiError::bad("bad_field", format!("unknown field `{other}`"))),
        }
    }
    let (file, filename) = file.ok_or_else(|| ApiError::bad("missing_file", "attach the model (.onnx) or bundle (.zip) as `file`"))?;
    if file.size == 0 {
        return Err(ApiError::bad("empty_file", "the uploaded file is empty"));
    }
    let name = match name.filter(|n| !n.trim().is_empty()) {
        Some(n) => n,
        None => filename.rsplit_once('.').map_or(filename.as_str(), |(stem, _)| stem).to_string(),
    };
    let name = check_name(&name).map_err(|m| ApiError::bad("bad_name", m))?;
    let kind = sniff_kind(kind.as_deref(), &filename, file.path())?;
    let (details, runtime, features) = match kind {
        AppKind::Onnx => {
            let (details, features) = check_model(checker, file.path()).await?;
            (details, None, Some(features))
        }
        AppKind::Script => {
            let (details, runtime) = check_bundle(file.path()).await?;
            (details, Some(runtime), None)
        }
    };
    let default_rows = match &default_input {
        Some(input) => Some(check_input(input.path(), features).await?.unwrap_or(0)),
        None => None,
    };
    if apps::find(&state.db, &user.id, &name).await?.is_some_and(|a| a.view.name == name) {
        return Err(ApiError::new(StatusCode::CONFLICT, "name_taken", "you already have an application with this name"));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let artifact_key = format!("apps/{id}/{}", if kind == AppKind::Onnx { "model.onnx" } else { "bundle.zip" });
    let (sha256, size_bytes) = (file.sha256.clone(), file.size);
    state.artifacts.commit(file, &artifact_key).await.map_err(ApiError::internal)?;
    let default_key = match default_input {
        Some(input) => {
            let key = format!("apps/{id}/default-input.csv");
            state.artifacts.commit(input, &key).await.map_err(ApiError::internal)?;
            Some((key, default_rows.unwrap_or(0)))
        }
        None => None,
    };
    let created = apps::create(
        &state.db,
        apps::NewApp {
            id,
            owner_id: user.id.clone(),
            name,
            kind,
            artifact_key,
            sha256,
            size_bytes,
            details,
            runtime,
            features,
            default_input: default_key,
        },
    )
    .await;
    match created {
        Ok(view) => {
            tracing::info!(app_id = %view.id, user = %user.id, kind = kind.as_str(), "application uploaded");
            Ok((StatusCode::CREATED, view))
        }
        Err(apps::CreateError::NameTaken) => {
            Err(ApiError::new(StatusCode::CONFLICT, "name_taken", "you already have an application with this name"))
        }
        Err(apps::CreateError::Db(e)) => Err(e.into()),
    }
}

/// `GET /api/v1/applications`: the caller's applications.
#[utoipa::path(get, path = "/api/v1/applications", tag = "applications",
    responses(
        (status = 200, description = "the caller's applications", body = [AppView]),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn list_applications(State(state): State<AppState>, Caller(user): Caller) -> ApiResult<Json<Vec<AppView>>> {
    Ok(Json(apps::list(&state.db, &user.id).await?))
}

async fn own_app(state: &AppState, user: &UserView, id: &str) -> ApiResult<apps::AppRecord> {
    apps::get(&state.db, id)
        .await?
        .filter(|a| a.deleted_at.is_none() && aiedge_core::may_manage(user, &a.owner_id))
        .ok_or_else(|| ApiError::not_found("application"))
}

/// `GET /api/v1/applications/{id}`.
#[utoipa::path(get, path = "/api/v1/applications/{id}", tag = "applications", params(("id" = String, Path, description = "the application's id")),
    responses(
        (status = 200, description = "the application", body = AppView),
        (status = 400, description = "a malformed id (`bad_path`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such application, or another user's (`not_found`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn get_application(
    State(state): State<AppState>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<AppView>> {
    Ok(Json(own_app(&state, &user, &id).await?.view))
}

/// `DELETE /api/v1/applications/{id}`: it leaves the lists and takes no new jobs.
#[utoipa::path(delete, path = "/api/v1/applications/{id}", tag = "applications", params(("id" = String, Path, description = "the application's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "a malformed id (`bad_path`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such application of yours (`not_found`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn delete_application(
    State(state): State<AppState>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<StatusCode> {
    if apps::delete(&state.db, &id, &user.id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("application"))
    }
}

/// `POST /api/v1/jobs`, multipart: `application` (id or name), optional `input` (CSV; default:
/// the application's default input), optional `pool` (`shared`, the default: the caller's nodes
/// and those shared with them; `own`: the caller's nodes only).
#[utoipa::path(post, path = "/api/v1/jobs", tag = "jobs",
    request_body(content = SubmitForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "queued", body = JobView),
        (status = 400, description = "not a multipart form, or a broken one (`bad_upload`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such application of yours (`not_found`)", body = ErrorBody),
        (status = 413, description = "an input over the upload limit (`too_large`)", body = ErrorBody),
        (status = 422, description = "a field the server refuses: `missing_application`, `bad_pool`, `bad_field`, `invalid_csv`, \
            `missing_input`", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn submit_job(
    State(state): State<AppState>,
    Extension(limits): Extension<UploadLimits>,
    Extension(session): Extension<CurrentUser>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let html = wants_html(&headers);
    let result = submit_job_inner(&state, limits, &headers, &session, multipart).await;
    answer(html, result, |job: &JobView| format!("/jobs/{}", job.id), "/jobs")
}

async fn submit_job_inner(
    state: &AppState,
    limits: UploadLimits,
    headers: &HeaderMap,
    session: &CurrentUser,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, JobView)> {
    let user = caller(state, headers, session).await?;
    let mut multipart = multipart.map_err(not_multipart)?;
    let form = job_form(state, limits, &mut multipart).await;
    if form.is_err() {
        drain(&mut multipart).await;
    }
    let (application, input, pool) = form?;
    let (application, input) = application_and_input(application, input)?;
    Ok((StatusCode::CREATED, aiedge_services::jobs::submit(&intakes(state), &user, &application, input, pool).await?))
}

/// A submission's application (required) and input (the application's default without one).
fn application_and_input(application: Option<String>, input: Option<(Received, String)>) -> ApiResult<(String, Input)> {
    let application =
        application.ok_or_else(|| ApiError::bad("missing_application", "name the application (`application`: id or name)"))?;
    let input = match input {
        Some((received, name)) => Input::Sent { received, name },
        None => Input::Default,
    };
    Ok((application, input))
}

/// Where submissions go.
fn intakes(state: &AppState) -> Intakes<'_> {
    Intakes {
        db: &state.db,
        intake: &state.intake,
        artifacts: state.artifacts.as_ref(),
        events: state.events.as_ref(),
        max_attempts: state.settings.max_attempts,
    }
}

/// A form's `input` file field: received (in memory or staged) when a file was chosen; an
/// empty, unnamed one (a browser's form with no file picked) is none.
async fn input_field(
    state: &AppState,
    limits: UploadLimits,
    field: axum::extract::multipart::Field<'_>,
) -> ApiResult<Option<(Received, String)>> {
    let filename = field_filename(&field);
    let received = artifacts::receive(state.artifacts.staging_dir(), field, limits.max_bytes).await?;
    Ok((received.size() > 0 || !filename.is_empty() && filename != "upload").then_some((received, filename)))
}

/// The fields of a job submission: the application, the input sent (with its name), the pool.
type JobForm = (Option<String>, Option<(Received, String)>, Pool);

async fn job_form(state: &AppState, limits: UploadLimits, multipart: &mut Multipart) -> ApiResult<JobForm> {
    let (mut application, mut input, mut pool) = (None, None, Pool::Shared);
    while let Some(field) = multipart.next_field().await.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_upload", e.to_string()))? {
        match field.name().unwrap_or_default() {
            "application" => application = Some(text_field(field).await?),
            "pool" => {
                let word = text_field(field).await?;
                pool = word.trim().parse().map_err(|_| ApiError::bad("bad_pool", "`pool` is `shared` (default) or `own`"))?;
            }
            "input" => input = input_field(state, limits, field).await?,
            other => return Err(ApiError::bad("bad_field", format!("unknown field `{other}`"))),
        }
    }
    Ok((application, input, pool))
}

async fn visible_job(state: &AppState, user: &UserView, id: &str) -> ApiResult<jobs::JobRecord> {
    jobs::record(&state.db, id)
        .await?
        .filter(|j| aiedge_core::may_manage(user, &j.owner_id))
        // Someone else's job answers exactly like a missing one.
        .ok_or_else(|| ApiError::not_found("job"))
}

/// Query of `GET /api/v1/jobs`.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    /// At most this many, newest first (default 100, at most 1000).
    limit: Option<i64>,
}

/// `GET /api/v1/jobs`: the caller's jobs, newest first.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "the caller's jobs, newest first", body = [JobView]),
        (status = 400, description = "a malformed query (`bad_query`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn list_jobs(
    State(state): State<AppState>,
    Caller(user): Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Vec<JobView>>> {
    Ok(Json(jobs::list(&state.db, Some(&user.id), q.limit.unwrap_or(100).clamp(1, 1000)).await?))
}

/// Query of `GET /api/v1/jobs/{id}`.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct WaitQuery {
    /// Wait up to this many seconds (at most 60) for the job to end (succeeded, failed or
    /// cancelled) before answering; the answer comes as soon as it ends. Default 0: at once.
    wait: Option<f64>,
}

/// Longest `?wait=`.
const MAX_WAIT: Duration = Duration::from_secs(60);
/// A waiting request looks at the job at least this often, announced or not.
const WAIT_RECHECK: Duration = Duration::from_secs(1);

/// `GET /api/v1/jobs/{id}`: status and timestamps; with `?wait=S`, once the job has ended or
/// after S seconds, whichever comes first (no polling loop needed in scripts).
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "the job's id"), WaitQuery),
    responses(
        (status = 200, description = "the job", body = JobView),
        (status = 400, description = "a malformed id or query (`bad_path`, `bad_query`), or a `wait` that is not 0 to 60 seconds \
            (`bad_wait`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such job, or another user's (`not_found`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn get_job(
    State(state): State<AppState>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> ApiResult<Json<JobView>> {
    visible_job(&state, &user, &id).await?;
    let wait = Duration::try_from_secs_f64(q.wait.unwrap_or(0.0))
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_wait", "wait is a number of seconds, 0 to 60"))?;
    let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
    // Subscribed before the first look, so an end between the look and the wait is not missed.
    let mut ends = state.job_ends.subscribe();
    loop {
        let mut job = jobs::view(&state.db, &id).await?.ok_or_else(|| ApiError::not_found("job"))?;
        let now = tokio::time::Instant::now();
        if job.is_terminal() || now >= deadline {
            if job.status == JobStatus::Queued {
                job.waiting = aiedge_services::placement::why_waiting(&state.db, &state.settings.thermal, &id, job.pool).await?;
            }
            return Ok(Json(job));
        }
        let look_again = deadline.min(now + WAIT_RECHECK);
        loop {
            tokio::select! {
                ended = ends.recv() => match ended {
                    Ok(ended) if *ended == *id => break,
                    Ok(_) => {}
                    // Missed some: look now.
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => {
                        tokio::time::sleep_until(look_again).await;
                        break;
                    }
                },
                () = tokio::time::sleep_until(look_again) => break,
            }
        }
    }
}

/// `POST /api/v1/jobs/{id}/cancel`.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "the job's id")),
    responses(
        (status = 200, description = "cancelled", body = JobView),
        (status = 400, description = "a malformed id (`bad_path`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such job, or another user's (`not_found`)", body = ErrorBody),
        (status = 409, description = "the job has already ended (`already_finished`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn cancel_job(State(state): State<AppState>, Caller(user): Caller, UrlPath(id): UrlPath<String>) -> ApiResult<Json<JobView>> {
    Ok(Json(aiedge_services::jobs::cancel(&state.db, state.events.as_ref(), &user, &id).await?))
}

/// Streams an artifact as a download.
pub async fn send_artifact(state: &AppState, key: &str, content_type: &str, filename: Option<&str>) -> ApiResult<Response> {
    let artifact = artifacts::open(&state.db, state.artifacts.as_ref(), key).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ApiError::not_found("file")
        } else {
            ApiError::internal(e)
        }
    })?;
    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, artifact.len)
        .header(header::CACHE_CONTROL, "private, no-store");
    if let Some(name) = filename {
        response = response.header(header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\""));
    }
    response.body(Body::from_stream(tokio_util::io::ReaderStream::new(artifact.reader))).map_err(ApiError::internal)
}

/// A file name made of the safe characters of `s`.
fn safe_name(s: &str) -> String {
    let cleaned: String = s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    cleaned.trim_matches('-').chars().take(40).collect::<String>()
}

/// `GET /api/v1/jobs/{id}/result`: the predictions CSV of a succeeded job.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/result", tag = "jobs", params(("id" = String, Path, description = "the job's id")),
    responses(
        (status = 200, description = "predictions.csv", content_type = "text/csv"),
        (status = 400, description = "a malformed id (`bad_path`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such job, or another user's (`not_found`)", body = ErrorBody),
        (status = 409, description = "the job has not succeeded (`no_result`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn download_result(State(state): State<AppState>, Caller(user): Caller, UrlPath(id): UrlPath<String>) -> ApiResult<Response> {
    let job = visible_job(&state, &user, &id).await?;
    let key = match (&job.result_key, job.status) {
        (Some(key), JobStatus::Succeeded) => key.clone(),
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_result",
                format!("the job is {}; a result exists once it succeeded", job.status),
            ))
        }
    };
    let short: String = job.id.chars().take(8).collect();
    let filename = format!("{}-{short}-predictions.csv", safe_name(&job.app_name));
    send_artifact(&state, &key, "text/csv; charset=utf-8", Some(&filename)).await
}

/// `GET /api/v1/jobs/{id}/log`: the job's captured output, if it has one.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/log", tag = "jobs", params(("id" = String, Path, description = "the job's id")),
    responses(
        (status = 200, description = "the job's captured output", content_type = "text/plain"),
        (status = 400, description = "a malformed id (`bad_path`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such job, another user's, or no log (`not_found`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn download_log(State(state): State<AppState>, Caller(user): Caller, UrlPath(id): UrlPath<String>) -> ApiResult<Response> {
    let job = visible_job(&state, &user, &id).await?;
    let key = job.log_key.ok_or_else(|| ApiError::not_found("log"))?;
    send_artifact(&state, &key, "text/plain; charset=utf-8", None).await
}

/// The multipart form of `POST /api/v1/applications`, for the OpenAPI document (the handler
/// reads the fields as they stream in).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The model (`.onnx`) or the script bundle (`.zip`).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    /// The application's name; default: the file's name without its extension.
    #[schema(example = "iris")]
    name: Option<String>,
    /// What the file is; default: from the file's name, else from its content.
    kind: Option<FormKind>,
    /// An input CSV that jobs use when they are sent none.
    #[schema(value_type = Option<String>, format = Binary)]
    default_input: Option<Vec<u8>>,
}

/// `kind` of an upload.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum FormKind {
    Onnx,
    Script,
}

/// The multipart form of `POST /api/v1/jobs`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SubmitForm {
    /// The application: its id or its name.
    #[schema(example = "iris")]
    application: String,
    /// The input CSV; default: the application's default input.
    #[schema(value_type = Option<String>, format = Binary)]
    input: Option<Vec<u8>>,
    /// Which nodes may run it: `shared` (default: the caller's and those shared with them) or
    /// `own` (the caller's only).
    pool: Option<FormPool>,
}

/// `pool` of a job.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum FormPool {
    Shared,
    Own,
}

/// The OpenAPI 3 document of this API.
#[derive(OpenApi)]
#[openapi(
    info(title = "AI on the Edge API", description = "Upload applications, run jobs on edge nodes, download predictions. Authenticate with `Authorization: Bearer <personal API token>` (create one under Settings)."),
    paths(upload_application, list_applications, get_application, delete_application, submit_job, list_jobs, get_job, cancel_job, download_result, download_log,
        nodes::list, nodes::add, nodes::get,
        schedules::list, schedules::create, schedules::get, schedules::update, schedules::pause, schedules::resume, schedules::delete, schedules::preview),
    components(schemas(AppView, JobView, AppDetails, TensorLine, ErrorBody, ErrorDetail, UploadForm, FormKind, SubmitForm, FormPool,
        nodes::ApiNode, nodes::ApiNewNode, nodes::AddNode, schedules::ScheduleForm, schedules::Preview)),
    modifiers(&BearerToken),
)]
pub struct ApiDoc;

struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("token", SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()));
    }
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The API's routes, listed (see [`crate::routes`]); every one but the document itself is in
/// [`ApiDoc`].
pub fn routes() -> Routes<AppState> {
    Routes::new(Kind::Api)
        .get("/api/v1/openapi.json", openapi)
        .get("/api/v1/applications", list_applications)
        .post("/api/v1/applications", upload_application)
        .get("/api/v1/applications/{id}", get_application)
        .delete("/api/v1/applications/{id}", delete_application)
        .get("/api/v1/jobs", list_jobs)
        .post("/api/v1/jobs", submit_job)
        .get("/api/v1/jobs/{id}", get_job)
        .post("/api/v1/jobs/{id}/cancel", cancel_job)
        .get("/api/v1/jobs/{id}/result", download_result)
        .get("/api/v1/jobs/{id}/log", download_log)
        .get("/api/v1/nodes", nodes::list)
        .post("/api/v1/nodes", nodes::add)
        .get("/api/v1/nodes/{id}", nodes::get)
        .get("/api/v1/schedules", schedules::list)
        .post("/api/v1/schedules", schedules::create)
        .get("/api/v1/schedules/preview", schedules::preview)
        .get("/api/v1/schedules/{id}", schedules::get)
        .patch("/api/v1/schedules/{id}", schedules::update)
        .delete("/api/v1/schedules/{id}", schedules::delete)
        .post("/api/v1/schedules/{id}/pause", schedules::pause)
        .post("/api/v1/schedules/{id}/resume", schedules::resume)
}

/// The API routes, with `max_bytes` request bodies.
pub fn router(limits: UploadLimits) -> axum::Router<AppState> {
    routes()
        .into_router()
        .layer(Extension(limits))
        // Multipart bodies are streamed to disk; the size check is in `stage`, with a margin here
        // for the form's other fields.
        .layer(axum::extract::DefaultBodyLimit::max(usize::try_from(limits.max_bytes.saturating_mul(2)).unwrap_or(usize::MAX)))
}
