//! Retention on the lease holder: finished jobs older than `--retention-days` are deleted in
//! batches of [`BATCH`] with a pause between them (see [`aiedge_store::retention`]), then
//! their files; once an hour, files under `jobs/` and `inputs/` that no job names any more
//! (left by a crash between a batch's commit and its file deletions) are removed too.

use std::time::Duration;

use aiedge_store::leases::{self, Fence};
use aiedge_store::retention;
use app::backend::AppState;
use tokio_util::sync::CancellationToken;

/// Jobs per transaction: small enough that the job path never waits long behind one.
pub const BATCH: i64 = 500;
/// The pause between batches, for the job path's writes.
const PAUSE: Duration = Duration::from_millis(50);
/// How often the holder looks for expired jobs.
const EVERY: Duration = Duration::from_secs(60);
/// How often it looks for orphan files, and how old one must be (younger ones may belong to
/// a job being created).
const ORPHANS_EVERY: Duration = Duration::from_secs(3600);
pub const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// What a prune removed in all.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub jobs: u64,
    pub files: u64,
}

/// Prunes every job that ended before `before`, batch by batch, until none is left or
/// `cancel`. Stops at a fenced batch (the lease moved on).
pub async fn prune(state: &AppState, fence: Option<&Fence>, before: i64, cancel: &CancellationToken) -> Result<Totals, sqlx::Error> {
    let mut totals = Totals::default();
    loop {
        let batch = retention::prune_jobs(&state.db, fence, before, BATCH).await?;
        totals.jobs += batch.jobs;
        for prefix in &batch.prefixes {
            match state.artifacts.delete_all(prefix).await {
                Ok(()) => totals.files += 1,
                Err(e) => tracing::warn!(%prefix, error = %e, "cannot delete a pruned job's files; the orphan sweep retries"),
            }
        }
        for key in &batch.keys {
            match state.artifacts.delete(key).await {
                Ok(()) => totals.files += 1,
                Err(e) => tracing::warn!(%key, error = %e, "cannot delete a pruned job's input; the orphan sweep retries"),
            }
        }
        if batch.jobs < BATCH as u64 {
            return Ok(totals);
        }
        tokio::select! {
            _ = tokio::time::sleep(PAUSE) => {}
            _ = cancel.cancelled() => return Ok(totals),
        }
    }
}

/// Removes job directories and uploaded inputs older than `min_age` that no job names.
/// Returns how many.
pub async fn sweep_orphans(state: &AppState, min_age: Duration) -> Result<usize, anyhow::Error> {
    let old = |list: Vec<(String, Duration)>| list.into_iter().filter(|(_, age)| *age >= min_age).map(|(n, _)| n).collect::<Vec<_>>();
    let dirs = old(state.artifacts.children("jobs").await?);
    let inputs: Vec<String> = old(state.artifacts.children("inputs").await?).into_iter().map(|n| format!("inputs/{n}")).collect();
    let mut removed = 0;
    for id in retention::orphan_jobs(&state.db, &dirs).await? {
        state.artifacts.delete_all(&format!("jobs/{id}")).await?;
        removed += 1;
    }
    for key in retention::orphan_inputs(&state.db, &inputs).await? {
        state.artifacts.delete(&key).await?;
        removed += 1;
    }
    Ok(removed)
}

/// Runs retention for one lease term, until `cancel`. Nothing with `keep_for` of zero.
pub fn spawn(state: AppState, fence: Fence, keep_for: Duration, cancel: CancellationToken) {
    if keep_for.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut orphans_due = tokio::time::Instant::now() + ORPHANS_EVERY / 12;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            let before = aiedge_store::now_ms() - keep_for.as_millis() as i64;
            match prune(&state, Some(&fence), before, &cancel).await {
                Ok(t) if t.jobs > 0 => tracing::info!(jobs = t.jobs, files = t.files, "finished jobs past retention deleted"),
                Ok(_) => {}
                Err(e) if leases::is_fenced(&e) => return,
                Err(e) => tracing::warn!(error = %e, "pruning finished jobs failed; retrying later"),
            }
            if tokio::time::Instant::now() >= orphans_due {
                orphans_due = tokio::time::Instant::now() + ORPHANS_EVERY;
                match sweep_orphans(&state, ORPHAN_AGE).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(removed = n, "orphan artifact files removed"),
                    Err(e) => tracing::warn!(error = %e, "sweeping orphan artifact files failed"),
                }
            }
        }
    });
}
