//! Retention on the lease holder: finished jobs older than `--retention-days` are deleted in
//! small batches with a pause between them (see [`aiedge_store::retention`] and [`Pacer`]),
//! then their files; once an hour, files under `jobs/` and `inputs/` that no job names any more
//! (left by a crash between a batch's commit and its file deletions) are removed too.

use std::time::Duration;

use aiedge_store::leases::{self, Fence};
use aiedge_store::retention;
use app::backend::AppState;
use tokio_util::sync::CancellationToken;

/// The most jobs one transaction deletes.
pub const MAX_BATCH: i64 = 500;
const MIN_BATCH: i64 = 10;
/// What one batch may take: a write of the job path waits at most about this long behind it.
const BATCH_TIME: Duration = Duration::from_millis(5);
/// The least pause between batches; the pause is longer after a long batch (see [`Pacer`]).
pub const PAUSE: Duration = Duration::from_millis(20);
/// The share of time batches may hold the database, at most, while pruning runs.
const DUTY_PERCENT: u32 = 10;
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

/// Sizes batches by how long the last one took, so each holds the database about
/// [`BATCH_TIME`] whatever the engine, the disk and the rows per job, and spaces them so that
/// pruning holds it [`DUTY_PERCENT`] of the time at most: the job path's writes rarely wait
/// behind a batch, and never long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacer {
    pub size: i64,
}

impl Default for Pacer {
    fn default() -> Self {
        Self { size: 50 }
    }
}

impl Pacer {
    /// The next batch's size after one of the current size took `took`, and the pause before it.
    pub fn after(&mut self, took: Duration) -> Duration {
        if took > BATCH_TIME * 2 {
            self.size = (self.size / 2).max(MIN_BATCH);
        } else if took < BATCH_TIME / 2 {
            self.size = (self.size * 3 / 2).min(MAX_BATCH);
        }
        PAUSE.max(took * (100 - DUTY_PERCENT) / DUTY_PERCENT)
    }
}

/// Prunes every job that ended before `before`, batch by batch, until none is left or
/// `cancel`. Stops at a fenced batch (the lease moved on).
pub async fn prune(state: &AppState, fence: Option<&Fence>, before: i64, cancel: &CancellationToken) -> Result<Totals, sqlx::Error> {
    let mut totals = Totals::default();
    let mut pacer = Pacer::default();
    loop {
        let size = pacer.size;
        let batch = retention::prune_jobs(&state.db, fence, before, size).await?;
        // Its own time: a wait behind the job path's writes says nothing of the batch's size.
        let took = batch.held;
        let pause = pacer.after(took);
        tracing::debug!(jobs = batch.jobs, size, took_ms = took.as_secs_f64() * 1000.0, next = pacer.size, "pruned a batch");
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
        if batch.jobs < size as u64 {
            return Ok(totals);
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_when_slow_grow_when_quick_and_pauses_keep_the_duty() {
        let mut pacer = Pacer::default();
        let pause = pacer.after(Duration::from_millis(40));
        assert_eq!(pacer.size, 25);
        assert_eq!(pause, Duration::from_millis(360), "a 40 ms batch is followed by 9 times as long a pause");
        for _ in 0..10 {
            pacer.after(Duration::from_millis(40));
        }
        assert_eq!(pacer.size, MIN_BATCH);
        for _ in 0..30 {
            assert_eq!(pacer.after(Duration::from_millis(1)), PAUSE);
        }
        assert_eq!(pacer.size, MAX_BATCH);
        let steady = pacer.size;
        pacer.after(Duration::from_millis(5));
        assert_eq!(pacer.size, steady, "a batch near its time keeps the size");
    }
}
