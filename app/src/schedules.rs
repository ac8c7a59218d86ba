//! Schedules as the pages see them, and their server functions. Creating one is a multipart
//! form to `/api/v1/schedules` (it may carry a CSV), like running a job.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};

#[cfg(feature = "ssr")]
use crate::backend;

pub use aiedge_core::schedules::{FireTime, ScheduleDetail, ScheduleRunView, ScheduleState, ScheduleView};
pub use aiedge_core::{Overlap, RunOutcome};

/// What the form's preview shows while a person types an expression.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Preview {
    pub description: String,
    pub upcoming: Vec<FireTime>,
    /// Why the expression, time or zone is refused (the preview is then empty).
    pub error: Option<String>,
}

/// The signed-in user's schedules, by name.
#[server(endpoint = "schedules/mine", input = server_fn::codec::GetUrl)]
pub async fn my_schedules() -> Result<Vec<ScheduleView>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    aiedge_services::schedules::list(&state.db, &user, aiedge_store::now_ms()).await.map_err(backend::refused)
}

/// A schedule's page: its owner's, or for admins anyone's; `None` when it does not exist or
/// is someone else's.
#[server(endpoint = "schedules/detail", input = server_fn::codec::GetUrl)]
pub async fn load_schedule(id: String) -> Result<Option<ScheduleDetail>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    match aiedge_services::schedules::detail(&state.db, &user, &id, aiedge_store::now_ms()).await {
        Ok(detail) => Ok(Some(detail)),
        Err(aiedge_services::ServiceError::NotFound(_)) => Ok(None),
        Err(e) => Err(backend::refused(e)),
    }
}

/// The next five fire times of what is in the form (empty fields: none).
#[server(endpoint = "schedules/preview", input = server_fn::codec::GetUrl)]
pub async fn preview_schedule(
    #[server(default)] cron: String,
    #[server(default)] at: String,
    #[server(default)] time_zone: String,
) -> Result<Preview, ServerFnError> {
    backend::require_user()?;
    if cron.trim().is_empty() && at.trim().is_empty() {
        return Ok(Preview::default());
    }
    let zone = if time_zone.trim().is_empty() { "UTC" } else { time_zone.trim() };
    let some = |s: &str| Some(s.to_string()).filter(|s| !s.trim().is_empty());
    Ok(match aiedge_services::schedules::preview(some(&cron).as_deref(), some(&at).as_deref(), zone, aiedge_store::now_ms()) {
        Ok((description, upcoming)) => Preview { description, upcoming, error: None },
        Err(e) => Preview { error: Some(e.public_message()), ..Default::default() },
    })
}

/// Pauses (`paused=true`) or resumes one of the caller's schedules.
#[server(endpoint = "schedules/pause")]
pub async fn pause_schedule(id: String, paused: bool) -> Result<ScheduleView, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    aiedge_services::schedules::set_paused(&state.db, &user, &id, paused, aiedge_store::now_ms()).await.map_err(backend::refused)
}

/// Changes one of the caller's schedules; empty fields keep their value.
#[server(endpoint = "schedules/update")]
#[allow(clippy::too_many_arguments)]
pub async fn update_schedule(
    id: String,
    #[server(default)] name: String,
    #[server(default)] cron: String,
    #[server(default)] at: String,
    #[server(default)] time_zone: String,
    #[server(default)] overlap: String,
    #[server(default)] deadline_s: String,
) -> Result<ScheduleView, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let some = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    let bad = |m: &str| backend::deny(http::StatusCode::UNPROCESSABLE_ENTITY, m);
    let spec = aiedge_core::schedules::ScheduleSpec {
        name: some(name),
        cron: some(cron),
        at: some(at),
        time_zone: some(time_zone),
        overlap: some(overlap).map(|o| o.parse()).transpose().map_err(|_| bad("overlap is skip, allow or replace"))?,
        deadline_s: some(deadline_s).map(|d| d.parse()).transpose().map_err(|_| bad("the deadline is a whole number of seconds"))?,
        pool: None,
    };
    aiedge_services::schedules::update(&state.db, &user, &id, spec, aiedge_store::now_ms()).await.map_err(backend::refused)
}

/// Deletes one of the caller's schedules (its jobs stay) and goes back to the list.
#[server(endpoint = "schedules/delete")]
pub async fn delete_schedule(id: String) -> Result<(), ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    aiedge_services::schedules::delete(&state.db, state.artifacts.as_ref(), &user, &id).await.map_err(backend::refused)?;
    leptos_axum::redirect("/schedules");
    Ok(())
}
