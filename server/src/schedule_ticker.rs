//! Fires schedules: a task that sleeps until the earliest next fire time (at most a quarter of a
//! second, so a schedule created or edited meanwhile is seen soon; two indexed reads each time) and then runs a tick of
//! [`aiedge_services::schedules::Ticker`]. Each fire time becomes at most one job whatever
//! runs the tick (a restart, a second replica): the store's compare-and-set and the runs'
//! primary key see to it.

use std::time::Duration;

use aiedge_services::schedules::{SystemClock, Ticker};
use tokio_util::sync::CancellationToken;

use app::backend::AppState;

/// The longest sleep between ticks: how late a schedule created or edited to fire sooner than
/// the earliest known fire time can be.
pub const MAX_SLEEP_MS: i64 = 250;
/// The shortest: a schedule still due after a tick (a failed write) is retried, not spun on.
const MIN_SLEEP_MS: i64 = 20;

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
            let wait = match aiedge_store::schedules::next_due_at(&state.db).await {
                Ok(Some(at)) => (at - aiedge_store::now_ms()).clamp(MIN_SLEEP_MS, MAX_SLEEP_MS),
                Ok(None) => MAX_SLEEP_MS,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the next fire time failed");
                    MAX_SLEEP_MS
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(wait as u64)) => {}
                _ = cancel.cancelled() => return,
            }
        }
    });
}
