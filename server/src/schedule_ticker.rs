//! Fires schedules: a task that runs a tick of [`aiedge_services::schedules::Ticker`], then
//! sleeps until the earliest next fire time (at most a quarter of a second, so a schedule
//! created or edited meanwhile is seen soon: see `schedules::sleep_after_tick`). Each fire time becomes at most one job whatever
//! runs the tick (a restart, a second replica): the store's compare-and-set and the runs'
//! primary key see to it.

use std::time::Duration;

use aiedge_services::schedules::{self, SystemClock, Ticker};
use tokio_util::sync::CancellationToken;

use app::backend::AppState;

/// Runs until `cancel` fires.
pub fn spawn(state: AppState, cancel: CancellationToken) {
    // On the database thread (SQLite), like the dispatcher: a tick is mostly queries.
    state.db.clone().spawn(async move {
        let mut ticker = Ticker::new(state.settings.max_attempts);
        match ticker.warm_up(&state.db).await {
            Ok(n) => tracing::debug!(schedules = n, "schedules' expressions parsed"),
            Err(e) => tracing::warn!(error = %e, "reading the schedules failed"),
        }
        loop {
            if let Err(e) = ticker.tick(&state.db, state.events.as_ref(), &SystemClock).await {
                tracing::warn!(error = %e, "firing schedules failed");
            }
            let wait = schedules::sleep_after_tick(&state.db, &SystemClock).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading the next fire time failed");
                Duration::from_millis(schedules::MAX_SLEEP_MS as u64)
            });
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return,
            }
        }
    });
}
