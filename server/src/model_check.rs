//! Uploaded models are loaded in a child process with memory and time limits, a few at a time
//! (see `runner::model_check` for why): the server binary re-executes itself with the hidden
//! [`SUBCOMMAND`], so no second binary has to be shipped next to it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use runner::model_check::{CheckError, CheckLimits};
use runner::onnx::ModelInfo;
use tokio::sync::Semaphore;

use crate::config::Config;

/// The first argument that makes the server binary a model checker.
pub const SUBCOMMAND: &str = "__check-model";

/// Why an upload's model was not described.
#[derive(Debug, thiserror::Error)]
pub enum ModelCheckError {
    #[error(transparent)]
    Check(#[from] CheckError),
    /// Every turn stayed taken for the whole check timeout.
    #[error("too many models are being checked at the moment; try again in a minute")]
    Busy,
}

/// Checks models; clones share the turns.
#[derive(Clone)]
pub struct ModelChecker(Arc<Inner>);

struct Inner {
    /// `None`: load in this process (a server embedded without its binary, e.g. a benchmark).
    program: Option<PathBuf>,
    limits: CheckLimits,
    turns: Semaphore,
}

impl ModelChecker {
    pub fn from_config(config: &Config) -> Self {
        if config.model_checker.is_none() {
            tracing::warn!("no model checker binary: uploaded models are loaded inside the server, without limits");
        }
        Self(Arc::new(Inner {
            program: config.model_checker.clone(),
            limits: CheckLimits {
                memory_bytes: config.model_check_memory_mb.saturating_mul(1 << 20),
                time_limit: config.model_check_timeout,
            },
            turns: Semaphore::new(config.model_checks_at_once as usize),
        }))
    }

    /// Loads the model at `path` and describes it, waiting for a turn first.
    pub async fn check(&self, path: &Path) -> Result<ModelInfo, ModelCheckError> {
        let inner = &self.0;
        let _turn = match tokio::time::timeout(inner.limits.time_limit, inner.turns.acquire()).await {
            Ok(Ok(turn)) => turn,
            // The semaphore is never closed; a timeout means every turn stayed taken.
            Ok(Err(_)) | Err(_) => return Err(ModelCheckError::Busy),
        };
        match &inner.program {
            Some(program) => Ok(runner::model_check::check(program, &[SUBCOMMAND], path, inner.limits).await?),
            None => {
                let path = path.to_path_buf();
                let loaded = tokio::task::spawn_blocking(move || runner::onnx::Model::load(&path).map(|m| m.info().clone()))
                    .await
                    .map_err(|e| CheckError::Failed(e.to_string()))?;
                Ok(loaded.map_err(|e| CheckError::Invalid(e.to_string()))?)
            }
        }
    }
}
