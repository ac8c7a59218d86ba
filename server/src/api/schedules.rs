//! `/api/v1/schedules`: jobs that run by themselves (see `aiedge_services::schedules`).
//! Creation is a multipart form like a job's (it may carry a CSV); edits are JSON.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use aiedge_core::schedules::{FireTime, ScheduleDetail, ScheduleSpec, ScheduleView};
use aiedge_core::{Overlap, Pool};
use aiedge_services::schedules as service;
use aiedge_store::artifacts::Received;
use aiedge_store::now_ms;
use app::backend::{AppState, CurrentUser};

use super::{
    answer, application_and_input, caller, drain, input_field, intakes, not_multipart, text_field, wants_html, ApiError, ApiJson, ApiQuery,
    ApiResult, Caller, ErrorBody, UploadLimits, UrlPath,
};

/// `GET /api/v1/schedules`: the caller's schedules, by name.
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    responses(
        (status = 200, description = "the caller's schedules, by name, each with its next fire times", body = [ScheduleView]),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn list(State(state): State<AppState>, Caller(user): Caller) -> ApiResult<Json<Vec<ScheduleView>>> {
    Ok(Json(service::list(&state.db, &user, now_ms()).await?))
}

/// The multipart form of `POST /api/v1/schedules`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ScheduleForm {
    /// The application: its id or its name.
    #[schema(example = "iris")]
    application: String,
    /// Default: the application's name and the expression.
    #[schema(example = "nightly scoring")]
    name: Option<String>,
    /// A cron expression: 5 fields (`min hour day-of-month month day-of-week`) or 6 with seconds
    /// first; `L`, `W`, `#` and `@daily`-style names are understood. Give this or `at`.
    #[schema(example = "0 2 * * *")]
    cron: Option<String>,
    /// One single fire time instead: `2026-12-14T09:00` (read in `time_zone`) or RFC 3339.
    at: Option<String>,
    /// IANA time zone (default `UTC`).
    #[schema(example = "Europe/Berlin")]
    time_zone: Option<String>,
    /// `skip` (default: no new run while the last is queued or running), `allow`, `replace`.
    overlap: Option<Overlap>,
    /// Starting deadline in seconds: after a gap (server down, paused) the latest fire time
    /// still runs if at most this late (default 3600, at most 604800).
    deadline_s: Option<u64>,
    /// Which nodes run its jobs: `shared` (default) or `own`.
    pool: Option<Pool>,
    /// A CSV stored with the schedule; default: the application's default input at each run.
    #[schema(value_type = Option<String>, format = Binary)]
    input: Option<Vec<u8>>,
}

/// `POST /api/v1/schedules`, multipart (see [`ScheduleForm`]). From a plain HTML form, the
/// answer is a redirect to the schedule's page (or back to the list with the error).
#[utoipa::path(post, path = "/api/v1/schedules", tag = "schedules",
    request_body(content = ScheduleForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "created; it fires first at `next_fire_at_ms`", body = ScheduleView),
        (status = 400, description = "not a multipart form, or a broken one (`bad_upload`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such application of yours (`not_found`)", body = ErrorBody),
        (status = 409, description = "a schedule of yours has this name (`name_taken`), or you have as many as an account may \
            (`too_many_schedules`)", body = ErrorBody),
        (status = 413, description = "an input over the upload limit (`too_large`)", body = ErrorBody),
        (status = 422, description = "a field the server refuses: `missing_application`, `bad_timing` (a bad expression, zone or \
            time, or one in the past), `bad_deadline`, `bad_name`, `bad_field`, `invalid_csv`, `missing_input`", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(limits): Extension<UploadLimits>,
    Extension(session): Extension<CurrentUser>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let html = wants_html(&headers);
    let result = create_inner(&state, limits, &headers, &session, multipart).await;
    answer(html, result, |s: &ScheduleView| format!("/schedules/{}", s.id), "/schedules")
}

async fn create_inner(
    state: &AppState,
    limits: UploadLimits,
    headers: &HeaderMap,
    session: &CurrentUser,
    multipart: Result<Multipart, MultipartRejection>,
) -> ApiResult<(StatusCode, ScheduleView)> {
    let user = caller(state, headers, session).await?;
    let mut multipart = multipart.map_err(not_multipart)?;
    let form = schedule_form(state, limits, &mut multipart).await;
    if form.is_err() {
        drain(&mut multipart).await;
    }
    let (application, spec, input) = form?;
    let (application, input) = application_and_input(application, input)?;
    Ok((StatusCode::CREATED, service::create(&intakes(state), &user, &application, spec, input, now_ms()).await?))
}

/// The fields of a schedule's form: the application, the spec, the input sent (with its name).
type Form = (Option<String>, ScheduleSpec, Option<(Received, String)>);

async fn schedule_form(state: &AppState, limits: UploadLimits, multipart: &mut Multipart) -> ApiResult<Form> {
    let (mut application, mut spec, mut input) = (None, ScheduleSpec::default(), None);
    // An HTML form sends every field, empty ones as "": those mean "the default".
    let given = |v: String| Some(v.trim().to_string()).filter(|v| !v.is_empty());
    while let Some(field) = multipart.next_field().await.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_upload", e.to_string()))? {
        match field.name().unwrap_or_default() {
            "application" => application = given(text_field(field).await?),
            "name" => spec.name = given(text_field(field).await?),
            "cron" => spec.cron = given(text_field(field).await?),
            "at" => spec.at = given(text_field(field).await?),
            "time_zone" => spec.time_zone = given(text_field(field).await?),
            "overlap" => {
                spec.overlap = given(text_field(field).await?)
                    .map(|w| w.parse())
                    .transpose()
                    .map_err(|_| ApiError::bad("bad_field", "`overlap` is `skip` (default), `allow` or `replace`"))?
            }
            "deadline_s" => {
                spec.deadline_s = given(text_field(field).await?)
                    .map(|w| w.parse())
                    .transpose()
                    .map_err(|_| ApiError::bad("bad_deadline", "`deadline_s` is a whole number of seconds"))?
            }
            "pool" => {
                spec.pool = given(text_field(field).await?)
                    .map(|w| w.parse())
                    .transpose()
                    .map_err(|_| ApiError::bad("bad_pool", "`pool` is `shared` (default) or `own`"))?
            }
            "input" => input = input_field(state, limits, field).await?,
            other => return Err(ApiError::bad("bad_field", format!("unknown field `{other}`"))),
        }
    }
    Ok((application, spec, input))
}

/// `GET /api/v1/schedules/{id}`: the schedule and its latest runs (fire times, what became of
/// each, their jobs).
#[utoipa::path(get, path = "/api/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, description = "the schedule's id")),
    responses(
        (status = 200, description = "the schedule and its latest 100 runs, newest first", body = ScheduleDetail),
        (status = 400, description = "a malformed id (`bad_path`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such schedule, or another user's (`not_found`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn get(State(state): State<AppState>, Caller(user): Caller, UrlPath(id): UrlPath<String>) -> ApiResult<Json<ScheduleDetail>> {
    Ok(Json(service::detail(&state.db, &user, &id, now_ms()).await?))
}

/// `PATCH /api/v1/schedules/{id}`: changes the fields given; a new `cron`, `at` or
/// `time_zone` moves the next fire time to the first after now.
#[utoipa::path(patch, path = "/api/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, description = "the schedule's id")),
    request_body(content = ScheduleSpec, content_type = "application/json"),
    responses(
        (status = 200, description = "changed", body = ScheduleView),
        (status = 400, description = "a malformed id, or a body that is not JSON (`bad_path`, `bad_json`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such schedule, or another user's (`not_found`)", body = ErrorBody),
        (status = 409, description = "a schedule of yours has this name (`name_taken`)", body = ErrorBody),
        (status = 415, description = "not JSON (`bad_content_type`)", body = ErrorBody),
        (status = 422, description = "`bad_timing`, `bad_deadline` or `bad_name`, or JSON with a field of the wrong type or value \
            (`bad_json`); nothing was changed", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Caller(user): Caller,
    UrlPath(id): UrlPath<String>,
    ApiJson(spec): ApiJson<ScheduleSpec>,
) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(service::update(&state.db, &user, &id, spec, now_ms()).await?))
}

/// `POST /api/v1/schedules/{id}/pause`.
#[utoipa::path(post, path = "/api/v1/schedules/{id}/pause", tag = "schedules", params(("id" = String, Path, description = "the schedule's id")),
    responses(
        (status = 200, description = "paused (or already was)", body = ScheduleView),
        (status = 400, description = "a malformed id (`bad_path`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such schedule, or another user's (`not_found`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn pause(State(state): State<AppState>, Caller(user): Caller, UrlPath(id): UrlPath<String>) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(service::set_paused(&state.db, &user, &id, true, now_ms()).await?))
}

/// `POST /api/v1/schedules/{id}/resume`: fire times that passed while paused are missed, with
/// one catch-up run if the latest is within the starting deadline.
#[utoipa::path(post, path = "/api/v1/schedules/{id}/resume", tag = "schedules", params(("id" = String, Path, description = "the schedule's id")),
    responses(
        (status = 200, description = "active again (or already was)", body = ScheduleView),
        (status = 400, description = "a malformed id (`bad_path`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such schedule, or another user's (`not_found`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn resume(State(state): State<AppState>, Caller(user): Caller, UrlPath(id): UrlPath<String>) -> ApiResult<Json<ScheduleView>> {
    Ok(Json(service::set_paused(&state.db, &user, &id, false, now_ms()).await?))
}

/// `DELETE /api/v1/schedules/{id}`: the schedule and its list of runs; its jobs stay.
#[utoipa::path(delete, path = "/api/v1/schedules/{id}", tag = "schedules", params(("id" = String, Path, description = "the schedule's id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "a malformed id (`bad_path`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 404, description = "no such schedule, or another user's (`not_found`)", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn delete(State(state): State<AppState>, Caller(user): Caller, UrlPath(id): UrlPath<String>) -> ApiResult<StatusCode> {
    service::delete(&state.db, state.artifacts.as_ref(), &user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of `GET /api/v1/schedules/preview`.
#[derive(Deserialize, utoipa::IntoParams)]
pub struct PreviewQuery {
    /// A cron expression (or `at`).
    cron: Option<String>,
    /// A single time (or `cron`).
    at: Option<String>,
    /// IANA time zone (default `UTC`).
    time_zone: Option<String>,
}

/// What an expression means: in words, and its next five fire times.
#[derive(Serialize, ToSchema)]
pub struct Preview {
    pub description: String,
    pub upcoming: Vec<FireTime>,
}

/// `GET /api/v1/schedules/preview?cron=…&time_zone=…`: the next five fire times of an
/// expression (or a single time) in a zone, without creating anything; a bad one gets the
/// error creation would give.
#[utoipa::path(get, path = "/api/v1/schedules/preview", tag = "schedules", params(PreviewQuery),
    responses(
        (status = 200, description = "the expression in words and its next five fire times", body = Preview),
        (status = 400, description = "a malformed query (`bad_query`)", body = ErrorBody),
        (status = 401, description = "no valid API token or session (`unauthorized`)", body = ErrorBody),
        (status = 422, description = "`bad_timing`: what is wrong with the expression, time or zone", body = ErrorBody),
    ),
    security(("token" = [])))]
pub async fn preview(Caller(_user): Caller, ApiQuery(q): ApiQuery<PreviewQuery>) -> ApiResult<Json<Preview>> {
    let zone = q.time_zone.as_deref().filter(|z| !z.trim().is_empty()).unwrap_or("UTC");
    let (description, upcoming) = service::preview(q.cron.as_deref(), q.at.as_deref(), zone, now_ms())?;
    Ok(Json(Preview { description, upcoming }))
}
