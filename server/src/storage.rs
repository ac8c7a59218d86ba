//! The storage measurement on the lease holder: every [`EVERY`], the bytes each account has
//! stored (files and artifacts kept in the database) are summed and recorded for the admin
//! page (see [`aiedge_services::storage`]). One walk of the artifact store and three reads.

use std::time::Duration;

use app::backend::AppState;
use tokio_util::sync::CancellationToken;

/// How often storage is measured. The first measurement comes soon after the lease is taken.
const EVERY: Duration = Duration::from_secs(600);
const FIRST_AFTER: Duration = Duration::from_secs(5);

/// Measures storage for one lease term, until `cancel`.
pub fn spawn(state: AppState, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FIRST_AFTER, EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            let started = std::time::Instant::now();
            match aiedge_services::storage::measure(&state.db, state.artifacts.as_ref()).await {
                Ok(usage) => tracing::debug!(
                    accounts = usage.len(),
                    bytes = usage.iter().map(|u| u.bytes).sum::<i64>(),
                    took_ms = started.elapsed().as_millis() as u64,
                    "storage measured"
                ),
                Err(e) => tracing::warn!(error = %e, "measuring storage failed; retrying later"),
            }
        }
    });
}
