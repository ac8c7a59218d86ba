//! Applications, jobs and API tokens as the pages see them, and the server functions the pages
//! call. Uploads and downloads are plain HTTP routes on the server (`/api/v1/...`): they stream,
//! which server functions do not.

use leptos::prelude::*;

#[cfg(feature = "ssr")]
use crate::backend;

pub use aiedge_core::names::{check_name, NAME_MAX_CHARS as APP_NAME_MAX_CHARS};
pub use aiedge_core::views::{AppDetails, AppView, AttemptView, JobDetail, JobEventView, JobView, NewToken, TensorLine, TokenView};

/// The signed-in user's applications.
#[server(endpoint = "apps/mine", input = server_fn::codec::GetUrl)]
pub async fn my_apps() -> Result<Vec<AppView>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    aiedge_store::apps::list(&state.db, &user.id).await.map_err(backend::internal)
}

/// One of the signed-in user's applications (admins may see any).
#[server(endpoint = "apps/get", input = server_fn::codec::GetUrl)]
pub async fn get_app(id: String) -> Result<Option<AppView>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let app = aiedge_store::apps::get(&state.db, &id).await.map_err(backend::internal)?;
    Ok(app.filter(|a| aiedge_core::may_manage(&user, &a.owner_id)).filter(|a| a.deleted_at.is_none()).map(|a| a.view))
}

/// Deletes one of the signed-in user's applications: it leaves the lists and takes no new jobs.
#[server(endpoint = "apps/delete")]
pub async fn delete_app(id: String) -> Result<(), ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    if aiedge_store::apps::delete(&state.db, &id, &user.id).await.map_err(backend::internal)? {
        leptos_axum::redirect("/apps");
        Ok(())
    } else {
        Err(backend::deny(http::StatusCode::NOT_FOUND, "no such application"))
    }
}

/// The jobs the caller may see: "mine", or "all" (admins).
#[server(endpoint = "jobs/list", input = server_fn::codec::GetUrl)]
pub async fn list_jobs(scope: String) -> Result<Vec<JobView>, ServerFnError> {
    let user = backend::require_user()?;
    let owner = if scope == "all" {
        backend::require_admin()?;
        None
    } else {
        Some(user.id)
    };
    let state = backend::state()?;
    aiedge_store::jobs::list(&state.db, owner.as_deref(), 200).await.map_err(backend::internal)
}

/// A job's page: the owner's or, for admins, anyone's.
#[server(endpoint = "jobs/detail", input = server_fn::codec::GetUrl)]
pub async fn load_job(id: String) -> Result<Option<JobDetail>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let Some(owner) = aiedge_store::jobs::owner_of(&state.db, &id).await.map_err(backend::internal)? else {
        return Ok(None);
    };
    if !aiedge_core::may_manage(&user, &owner) {
        // Someone else's job looks exactly like a missing one.
        return Ok(None);
    }
    let mut detail = aiedge_store::jobs::detail_with_log(&state.db, state.artifacts.as_ref(), &id).await.map_err(backend::internal)?;
    if let Some(d) = detail.as_mut().filter(|d| d.job.status == aiedge_core::JobStatus::Queued) {
        d.job.waiting =
            aiedge_services::placement::why_waiting(&state.db, &state.settings.thermal, &id, d.job.pool).await.map_err(backend::refused)?;
    }
    Ok(detail.map(|d| d.with_retention(state.settings.retention_days)))
}

/// Cancels a queued, dispatched or running job of the caller's (admins: anyone's).
#[server(endpoint = "jobs/cancel")]
pub async fn cancel_job(id: String) -> Result<bool, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let cancelled = match aiedge_services::jobs::cancel(&state.db, state.events.as_ref(), &user, &id).await {
        Ok(_) => true,
        Err(aiedge_services::ServiceError::Conflict { .. }) => false,
        Err(e) => return Err(backend::refused(e)),
    };
    leptos_axum::redirect(&format!("/jobs/{id}"));
    Ok(cancelled)
}

/// The signed-in user's API tokens.
#[server(endpoint = "tokens/mine", input = server_fn::codec::GetUrl)]
pub async fn my_tokens() -> Result<Vec<TokenView>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    aiedge_store::api_tokens::list(&state.db, &user.id).await.map_err(backend::internal)
}

/// Creates an API token for the signed-in user; the secret is in the answer, once.
#[server(endpoint = "tokens/create")]
pub async fn create_token(
    #[server(default)] name: String,
    #[server(default)] expires_in_days: Option<String>,
) -> Result<NewToken, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let name = check_name(&name).map_err(|m| backend::deny(http::StatusCode::UNPROCESSABLE_ENTITY, &m))?;
    let lifetime = match expires_in_days.as_deref().map(str::trim).filter(|d| !d.is_empty() && *d != "never") {
        None => None,
        Some(days) => match days.parse::<u64>() {
            Ok(days @ 1..=TOKEN_MAX_DAYS) => Some(std::time::Duration::from_secs(days * 86_400)),
            _ => {
                let message = format!("expires_in_days is a whole number of days from 1 to {TOKEN_MAX_DAYS}, or `never`");
                return Err(backend::deny(http::StatusCode::UNPROCESSABLE_ENTITY, &message));
            }
        },
    };
    aiedge_store::api_tokens::create(&state.db, &user.id, &name, lifetime).await.map_err(backend::internal)
}

/// The longest lifetime a token can be given, in days (a token may also never expire).
pub const TOKEN_MAX_DAYS: u64 = 3650;

/// Revokes one of the signed-in user's API tokens; it stops working at once.
#[server(endpoint = "tokens/revoke")]
pub async fn revoke_token(id: String) -> Result<(), ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    if aiedge_store::api_tokens::revoke(&state.db, &user.id, &id).await.map_err(backend::internal)? {
        leptos_axum::redirect("/settings");
        Ok(())
    } else {
        Err(backend::deny(http::StatusCode::NOT_FOUND, "no such token"))
    }
}
