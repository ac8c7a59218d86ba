//! Usage analytics on the server's side: each request a person makes is counted into the
//! state's tally by [`crate::metrics::track`] (with [`Actor`] naming an API token's user), and
//! [`spawn`] writes the tally every few seconds and rolls the tables up (see
//! `aiedge_services::usage`).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use app::backend::AppState;

/// How often the counts are written: what the Usage page shows lags at most this much (it
/// writes this server's counts itself before it reads).
const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How often minutes, ended jobs and active nodes are rolled up.
const ROLL_UP_EVERY: Duration = Duration::from_secs(10);

/// Who made the request, when the route learns it after the session layer: the JSON API sets
/// it for an API token's user. One slot per request, read by the request's log line and tally.
#[derive(Clone, Default)]
pub struct Actor(Arc<OnceLock<String>>);

impl Actor {
    pub fn set(&self, user_id: &str) {
        let _ = self.0.set(user_id.to_string());
    }

    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// Writes the tally every [`FLUSH_EVERY`] and rolls up every [`ROLL_UP_EVERY`], until
/// `cancel`; then writes what is left. Every replica writes its own tally; only the lease
/// holder rolls up.
pub fn spawn(state: AppState, leadership: crate::leadership::Leadership, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut flush = tokio::time::interval(FLUSH_EVERY);
        let mut roll = tokio::time::interval(ROLL_UP_EVERY);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        roll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = flush.tick() => {
                    if let Err(e) = aiedge_services::usage::flush(&state.db, &state.usage).await {
                        // Kept in memory for the next try.
                        tracing::warn!(error = %e, "writing usage counts failed");
                    }
                }
                _ = roll.tick() => {
                    if !leadership.is_holder() {
                        continue;
                    }
                    match aiedge_services::usage::roll_up(&state.db, aiedge_store::now_ms()).await {
                        Ok(done) => tracing::debug!(?done, "usage rolled up"),
                        Err(e) => tracing::warn!(error = %e, "rolling up usage failed"),
                    }
                }
                _ = cancel.cancelled() => break,
            }
        }
        if let Err(e) = aiedge_services::usage::flush(&state.db, &state.usage).await {
            tracing::warn!(error = %e, "writing the last usage counts failed");
        }
    });
}
