//! Applications, jobs and API tokens as the pages see them, and the server functions the pages
//! call. Uploads and downloads are plain HTTP routes on the server (`/api/v1/...`): they stream,
//! which server functions do not.

use leptos::prelude::*;
use serde::{Deserialize, Serialize};
use shared::jobs::Decision;

#[cfg(feature = "ssr")]
use crate::backend;

/// Longest application name we accept.
pub const APP_NAME_MAX_CHARS: usize = 64;

/// One tensor of an ONNX model, for display: `input: f32 [N, 4]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TensorLine {
    pub name: String,
    pub dtype: String,
    pub shape: String,
}

/// What an application is, as checked at upload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub enum AppDetails {
    Onnx {
        inputs: Vec<TensorLine>,
        outputs: Vec<TensorLine>,
        /// Columns an input CSV must have.
        features: u64,
        /// Header of the predictions CSV.
        columns: Vec<String>,
    },
    Script {
        entry: String,
        runtime: String,
        output: String,
        time_limit_secs: u64,
        memory_mb: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct AppView {
    pub id: String,
    pub name: String,
    /// onnx or script.
    pub kind: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub details: AppDetails,
    /// Rows of the default input CSV, if the application has one.
    pub default_input_rows: Option<u64>,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct JobView {
    pub id: String,
    pub app_id: String,
    pub app_name: String,
    pub app_kind: String,
    pub owner_email: String,
    /// queued, dispatched, running, succeeded, failed or cancelled.
    pub status: String,
    pub input_name: String,
    pub input_rows: Option<u64>,
    pub node_id: Option<String>,
    pub node_name: Option<String>,
    pub attempt: u32,
    /// Attempts the job gets before it fails for good.
    pub max_attempts: u32,
    pub error: Option<String>,
    pub result_rows: Option<u64>,
    pub progress_rows: Option<u64>,
    pub has_result: bool,
    pub has_log: bool,
    pub created_at_ms: i64,
    pub dispatched_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
}

impl JobView {
    /// True once the job can no longer change.
    pub fn is_terminal(&self) -> bool {
        is_terminal(&self.status)
    }
}

/// Whether a job in `status` is done for good.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

/// One step of a job's timeline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobEventView {
    pub at_ms: i64,
    pub status: String,
    pub attempt: u32,
    pub node_id: Option<String>,
    pub message: String,
}

/// One dispatch of a job to a node, and how it ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct AttemptView {
    pub attempt: u32,
    pub node_id: Option<String>,
    pub node_name: String,
    pub dispatched_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// dispatched, running, succeeded, failed, lost or cancelled.
    pub outcome: String,
    /// Why it ended, when it did not succeed.
    pub reason: Option<String>,
}

/// Everything the job page shows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobDetail {
    pub job: JobView,
    pub events: Vec<JobEventView>,
    /// Every attempt, first first.
    #[serde(default)]
    pub attempts: Vec<AttemptView>,
    pub decision: Option<Decision>,
    /// The last few KiB of the log, when there is one.
    pub log_tail: Option<String>,
}

/// A personal API token as listed (the secret itself is shown once, at creation).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// The first characters of the token, to tell tokens apart.
    pub prefix: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// A token just created: the only time its secret is shown.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "ssr", derive(utoipa::ToSchema))]
pub struct NewToken {
    pub token: TokenView,
    pub secret: String,
}

/// Checks an application or token name: 1 to 64 printable characters.
pub fn check_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    if name.is_empty() {
        return Err("Give it a name.".into());
    }
    if name.chars().count() > APP_NAME_MAX_CHARS {
        return Err(format!("Use at most {APP_NAME_MAX_CHARS} characters."));
    }
    if name.chars().any(char::is_control) {
        return Err("Use printable characters only.".into());
    }
    Ok(name.to_string())
}

/// The signed-in user's applications.
#[server(endpoint = "apps/mine", input = server_fn::codec::GetUrl)]
pub async fn my_apps() -> Result<Vec<AppView>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    backend::apps::list(&state.db, &user.id).await.map_err(backend::internal)
}

/// One of the signed-in user's applications (admins may see any).
#[server(endpoint = "apps/get", input = server_fn::codec::GetUrl)]
pub async fn get_app(id: String) -> Result<Option<AppView>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let app = backend::apps::get(&state.db, &id).await.map_err(backend::internal)?;
    Ok(app.filter(|a| a.owner_id == user.id || user.is_admin()).filter(|a| a.deleted_at.is_none()).map(|a| a.view))
}

/// Deletes one of the signed-in user's applications: it leaves the lists and takes no new jobs.
#[server(endpoint = "apps/delete")]
pub async fn delete_app(id: String) -> Result<(), ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    if backend::apps::delete(&state.db, &id, &user.id).await.map_err(backend::internal)? {
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
    backend::jobs::list(&state.db, owner.as_deref(), 200).await.map_err(backend::internal)
}

/// A job's page: the owner's or, for admins, anyone's.
#[server(endpoint = "jobs/detail", input = server_fn::codec::GetUrl)]
pub async fn load_job(id: String) -> Result<Option<JobDetail>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let Some(owner) = backend::jobs::owner_of(&state.db, &id).await.map_err(backend::internal)? else {
        return Ok(None);
    };
    if owner != user.id && !user.is_admin() {
        // Someone else's job looks exactly like a missing one.
        return Ok(None);
    }
    backend::jobs::detail_with_log(&state, &id).await.map_err(backend::internal)
}

/// Cancels a queued, dispatched or running job of the caller's (admins: anyone's).
#[server(endpoint = "jobs/cancel")]
pub async fn cancel_job(id: String) -> Result<bool, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    match backend::jobs::cancel(&state.db, &id, &user).await.map_err(backend::internal)? {
        backend::jobs::CancelOutcome::Cancelled => {
            state.job_ends.announce(&id);
            leptos_axum::redirect(&format!("/jobs/{id}"));
            Ok(true)
        }
        backend::jobs::CancelOutcome::AlreadyDone => {
            leptos_axum::redirect(&format!("/jobs/{id}"));
            Ok(false)
        }
        backend::jobs::CancelOutcome::NotFound => Err(backend::deny(http::StatusCode::NOT_FOUND, "no such job")),
    }
}

/// The signed-in user's API tokens.
#[server(endpoint = "tokens/mine", input = server_fn::codec::GetUrl)]
pub async fn my_tokens() -> Result<Vec<TokenView>, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    backend::api_tokens::list(&state.db, &user.id).await.map_err(backend::internal)
}

/// Creates an API token for the signed-in user; the secret is in the answer, once.
#[server(endpoint = "tokens/create")]
pub async fn create_token(#[server(default)] name: String) -> Result<NewToken, ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    let name = check_name(&name).map_err(|m| backend::deny(http::StatusCode::UNPROCESSABLE_ENTITY, &m))?;
    backend::api_tokens::create(&state.db, &user.id, &name).await.map_err(backend::internal)
}

/// Revokes one of the signed-in user's API tokens; it stops working at once.
#[server(endpoint = "tokens/revoke")]
pub async fn revoke_token(id: String) -> Result<(), ServerFnError> {
    let user = backend::require_user()?;
    let state = backend::state()?;
    if backend::api_tokens::revoke(&state.db, &user.id, &id).await.map_err(backend::internal)? {
        leptos_axum::redirect("/settings");
        Ok(())
    } else {
        Err(backend::deny(http::StatusCode::NOT_FOUND, "no such token"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name(" iris ").as_deref(), Ok("iris"));
        assert!(check_name(" ").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name("a\nb").is_err());
    }

    #[test]
    fn terminal_states() {
        for s in ["succeeded", "failed", "cancelled"] {
            assert!(is_terminal(s));
        }
        for s in ["queued", "dispatched", "running"] {
            assert!(!is_terminal(s));
        }
    }
}
