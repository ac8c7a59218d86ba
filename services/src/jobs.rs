//! Use cases of jobs.

use aiedge_core::views::{JobView, UserView};
use aiedge_core::Pool;
use aiedge_store::artifacts::{self, ArtifactStore, Received};
use aiedge_store::jobs::{self as store, Intake};
use aiedge_store::{apps, Db};

use crate::{Events, Result, ServiceError};

/// Cancels a queued, dispatched or running job; its owner or an admin may. The job's end is
/// announced and the dispatcher woken (the job may have held a node's slot). Someone else's job
/// is answered as missing.
#[tracing::instrument(skip_all, fields(job_id = %id, user_id = %caller.id))]
pub async fn cancel(db: &Db, events: &dyn Events, caller: &UserView, id: &str) -> Result<JobView> {
    ensure_visible(db, caller, id).await?;
    if !store::cancel(db, id, &caller.email).await? {
        return Err(ServiceError::Conflict { code: "already_finished", message: "the job has already finished".into() });
    }
    tracing::info!("job cancelled");
    crate::metrics::job_cancelled();
    events.job_changed(id);
    events.job_ended(id);
    events.dispatch_wanted();
    store::view(db, id).await?.ok_or(ServiceError::NotFound("job"))
}

/// A job's summary, for its owner or an admin.
pub async fn get(db: &Db, caller: &UserView, id: &str) -> Result<JobView> {
    ensure_visible(db, caller, id).await?;
    store::view(db, id).await?.ok_or(ServiceError::NotFound("job"))
}

/// Not found unless the job exists and `caller` may manage it (its owner or an admin).
async fn ensure_visible(db: &Db, caller: &UserView, id: &str) -> Result<()> {
    match store::owner_of(db, id).await? {
        Some(owner) if aiedge_core::may_manage(caller, &owner) => Ok(()),
        _ => Err(ServiceError::NotFound("job")),
    }
}

/// What a job runs on.
pub enum Input {
    /// A CSV the caller sent, as received (small ones in memory, larger ones staged on disk).
    Sent { received: Received, name: String },
    /// The application's default input.
    Default,
}

/// Where a submission goes, and what it may use.
pub struct Intakes<'a> {
    pub db: &'a Db,
    pub intake: &'a Intake,
    pub artifacts: &'a dyn ArtifactStore,
    pub events: &'a dyn Events,
    /// Attempts a new job gets.
    pub max_attempts: u32,
}

/// Submits a job: one of the caller's applications (by id or name) on `input`, which is checked
/// against the model (every row has its feature count) before anything is stored. A large input
/// is stored as a file first and removed again if the job cannot be recorded, so a failed
/// submission leaves nothing behind. The dispatcher is woken for the new job, which runs on the
/// nodes of `pool`.
#[tracing::instrument(skip_all, fields(user_id = %caller.id, %pool))]
pub async fn submit(to: &Intakes<'_>, caller: &UserView, application: &str, input: Input, pool: Pool) -> Result<JobView> {
    let app = apps::find(to.db, &caller.id, application.trim()).await?.ok_or(ServiceError::NotFound("application"))?;
    let key = format!("inputs/{}.csv", uuid::Uuid::new_v4());
    let (input_key, input_name, rows, inline, stored) = match input {
        Input::Sent { received, name } => {
            let sent = take_input(to.artifacts, received, app.features, &key).await?;
            (sent.key, name, sent.rows, sent.inline, sent.stored)
        }
        Input::Default => {
            let key = app.default_input_key.clone().ok_or_else(|| ServiceError::Invalid {
                code: "missing_input",
                message: "this application has no default input: attach a CSV as `input`".into(),
            })?;
            (key, "default input".to_string(), app.view.default_input_rows, None, false)
        }
    };
    let new = store::NewJob {
        owner: caller,
        app: &app.view,
        input_key: &input_key,
        input_name: &input_name,
        input_rows: rows,
        max_attempts: to.max_attempts,
        pool,
        inline_input: inline.as_deref(),
    };
    let view = match store::create(to.intake, new).await {
        Ok(view) => view,
        Err(e) => {
            if stored {
                let _ = to.artifacts.delete(&input_key).await;
            }
            return Err(e.into());
        }
    };
    tracing::info!(job_id = %view.id, app_id = %app.view.id, "job submitted");
    crate::metrics::job_submitted(&app.view.kind);
    to.events.job_changed(&view.id);
    to.events.dispatch_wanted();
    Ok(view)
}

/// An input CSV sent with a submission, checked and put where it is kept.
pub(crate) struct SentInput {
    /// Where it is kept: an inline key (its content is `inline`, for the caller's transaction)
    /// or the artifact store's key it was committed under.
    pub key: String,
    pub rows: Option<u64>,
    pub inline: Option<String>,
    /// Committed to the artifact store already: the caller removes it if its own write fails.
    pub stored: bool,
}

/// Checks `received` against a model with `features` columns (every row has its feature
/// count) and keeps it under `key`: a small one in memory, to be written with the caller's row
/// (most interactive jobs), a larger one committed to the artifact store now.
pub(crate) async fn take_input(artifacts: &dyn ArtifactStore, received: Received, features: Option<u64>, key: &str) -> Result<SentInput> {
    let invalid = |message: String| ServiceError::Invalid { code: "invalid_csv", message };
    if received.size() == 0 {
        return Err(invalid("the input CSV is empty".into()));
    }
    match received {
        Received::Inline { text, .. } => {
            let rows = check_csv(text.as_bytes(), features).map_err(invalid)?;
            Ok(SentInput { key: artifacts::inline_key(key), rows, inline: Some(text), stored: false })
        }
        Received::Staged(staged) => {
            let rows = check_csv_file(staged.path().to_path_buf(), features).await?;
            artifacts.commit(staged, key).await.map_err(|e| ServiceError::Storage(e.to_string()))?;
            Ok(SentInput { key: key.to_string(), rows, inline: None, stored: true })
        }
    }
}

/// Rows of an input CSV for an ONNX model with `features` columns (script inputs are the
/// script's business: `None`).
fn check_csv(text: &[u8], features: Option<u64>) -> std::result::Result<Option<u64>, String> {
    let Some(features) = features else { return Ok(None) };
    let (_, rows) = runner::onnx::check_csv(text, Some(features as usize)).map_err(|e| e.to_string())?;
    Ok(Some(rows))
}

/// [`check_csv`] for a staged file, on the blocking pool.
async fn check_csv_file(path: std::path::PathBuf, features: Option<u64>) -> Result<Option<u64>> {
    let Some(features) = features else { return Ok(None) };
    let checked = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(runner::onnx::OnnxError::Io)?;
        runner::onnx::check_csv(std::io::BufReader::new(file), Some(features as usize))
    })
    .await
    .map_err(|e| ServiceError::Storage(e.to_string()))?;
    let (_, rows) = checked.map_err(|e| ServiceError::Invalid { code: "invalid_csv", message: e.to_string() })?;
    Ok(Some(rows))
}
