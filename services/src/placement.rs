//! The fleet as the balancer sees it (one conversion for the dispatcher and the pages), and why
//! a queued job waits.

use aiedge_core::balancer::{self, Need, NodeState};
use aiedge_core::{JobStatus, Pool};
use aiedge_store::{jobs, nodes, now_ms, Db};
use shared::jobs::AppKind;
use shared::score::ThermalPolicy;

use crate::Result;

/// A node holds jobs ahead of its slots only while its oldest job in flight is younger than
/// this: its jobs come and go quickly, so a held one soon starts. A node busy with long work
/// gets no more than its slots, and the queue waits on the server for whichever node frees
/// first.
pub const AHEAD_WHILE_OLDEST_UNDER_MS: i64 = 1_000;

/// The active, not removed nodes as the balancer sees them; `observed` gives a node's track
/// record (see [`balancer::observed`]).
pub async fn fleet(db: &Db, thermal: &ThermalPolicy, observed: impl Fn(&str) -> f64) -> std::result::Result<Vec<NodeState>, sqlx::Error> {
    let rows = nodes::fleet(db).await?;
    let now = now_ms();
    Ok(rows
        .into_iter()
        .map(|r| {
            let quick = r.oldest_in_flight.is_none_or(|at| now - at < AHEAD_WHILE_OLDEST_UNDER_MS);
            let facts: Option<shared::wire::NodeFacts> = r.facts.as_deref().and_then(|f| serde_json::from_str(f).ok());
            let metrics: Option<shared::wire::NodeMetrics> = r.metrics.as_deref().and_then(|m| serde_json::from_str(m).ok());
            let score = metrics.map(|m| shared::score::score(&m, thermal));
            NodeState {
                overheated: score.is_some_and(|s| s.thermal <= 0.0),
                perf: score.map_or(0.0, |s| s.perf),
                in_flight: u32::try_from(r.in_flight).unwrap_or(u32::MAX),
                max_jobs: facts.as_ref().map_or(1, |f| f.max_jobs.max(1)),
                ahead: facts.as_ref().filter(|_| quick).map_or(0, |f| f.queue_ahead),
                accepts_scripts: facts.as_ref().is_some_and(|f| f.accepts_scripts),
                runtimes: facts.map(|f| f.runtimes.into_iter().map(|r| r.name).collect()).unwrap_or_default(),
                observed: observed(&r.id),
                id: r.id,
                name: r.name,
                owner_id: r.owner_id,
                sharing: r.sharing,
                shared_with: r.shared_with,
                status: r.status,
                admin_state: r.admin_state,
                score: r.score,
            }
        })
        .collect())
}

/// Why the queued job `id` (of `pool`) is not dispatched, counted over the nodes of its pool
/// (see [`balancer::why_waiting`]); `None` for a job that is not queued or that some node could
/// take now. The caller has checked that the job is the reader's to see.
pub async fn why_waiting(db: &Db, thermal: &ThermalPolicy, id: &str, pool: Pool) -> Result<Option<String>> {
    let Some(job) = jobs::record(db, id).await? else { return Ok(None) };
    let Some(kind) = AppKind::parse(&job.app_kind) else { return Ok(None) };
    if job.status != JobStatus::Queued {
        return Ok(None);
    }
    if aiedge_store::users::find_by_id(db, &job.owner_id).await?.is_some_and(|u| u.disabled) {
        return Ok(Some("the account that submitted it is disabled; an admin can enable it".into()));
    }
    let need = Need { owner_id: job.owner_id, pool, kind, runtime: job.app_runtime, tried: Vec::new() };
    let nodes = fleet(db, thermal, |_| 1.0).await?;
    Ok(balancer::why_waiting(&need, &nodes))
}
