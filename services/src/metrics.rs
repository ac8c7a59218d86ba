//! The domain's numbers, recorded through the `metrics` facade: the server installs the
//! Prometheus exporter (without one, these calls cost next to nothing). Prometheus naming: one
//! prefix, base units, `_total` on counters, and never a label whose values grow with the data
//! (no job, user or node ids). Every name the use cases record is here.

/// Jobs recorded, by application kind (`onnx`, `script`).
pub const JOBS_SUBMITTED: &str = "aiedge_jobs_submitted_total";
/// Jobs cancelled by their owner or an admin.
pub const JOBS_CANCELLED: &str = "aiedge_jobs_cancelled_total";
/// Attempts that ended, by outcome: `succeeded`; `app_error` (the application failed: the job
/// fails); `node_error`, `lost` (node dead, restarted or too slow to start) and `given_back`
/// (no slot came free), after which the job is queued again while attempts are left.
pub const ATTEMPTS_ENDED: &str = "aiedge_attempts_ended_total";
/// Agent reports refused because they were not about the node's live attempt (fenced), by
/// report (`start`, `progress`, `return`, `finish`).
pub const REPORTS_REFUSED: &str = "aiedge_agent_reports_refused_total";

/// Fire times of schedules, by outcome: `fired` (a job was submitted), `skipped` (overlap
/// policy, or no application or input), `missed` (server down, paused, past the deadline).
pub const SCHEDULE_RUNS: &str = "aiedge_schedule_runs_total";
/// From a schedule's fire time to its job being recorded.
pub const SCHEDULE_LATENESS: &str = "aiedge_schedule_lateness_seconds";

/// The `outcome` labels of [`ATTEMPTS_ENDED`].
pub const ATTEMPT_OUTCOMES: &[&str] = &["succeeded", "app_error", "node_error", "lost", "given_back"];
/// The `report` labels of [`REPORTS_REFUSED`].
pub const REPORTS: &[&str] = &["start", "progress", "return", "finish"];

/// `kind` as stored (`onnx`, `script`); anything else counts as `other`.
pub fn job_submitted(kind: &str) {
    let kind = shared::jobs::AppKind::parse(kind).map_or("other", shared::jobs::AppKind::as_str);
    metrics::counter!(JOBS_SUBMITTED, "kind" => kind).increment(1);
}

pub fn job_cancelled() {
    metrics::counter!(JOBS_CANCELLED).increment(1);
}

pub fn attempt_ended(outcome: &'static str) {
    metrics::counter!(ATTEMPTS_ENDED, "outcome" => outcome).increment(1);
}

pub fn report_refused(report: &'static str) {
    metrics::counter!(REPORTS_REFUSED, "report" => report).increment(1);
}

/// What one tick of the schedules did.
pub fn schedule_runs(fired: u64, skipped: u64, missed: u64) {
    for (outcome, n) in [("fired", fired), ("skipped", skipped), ("missed", missed)] {
        if n > 0 {
            metrics::counter!(SCHEDULE_RUNS, "outcome" => outcome).increment(n);
        }
    }
}

pub fn schedule_lateness(ms: i64) {
    metrics::histogram!(SCHEDULE_LATENESS).record(ms.max(0) as f64 / 1000.0);
}
