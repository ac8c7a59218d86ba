//! The dispatcher: takes queued jobs, asks the [balancer](crate::balancer) for a node, and
//! publishes each job to that node's durable queue.
//!
//! A round runs when woken (a job was submitted, one finished) and at least once a second (a
//! node may have appeared). For each queued job, oldest first: pick a node, reserve the attempt
//! in the database (queued → dispatched, with the decision), publish the signed message
//! (persistent, mandatory), and only count it dispatched once the broker confirms it. A publish
//! that is nacked, returned (no queue) or lost with the connection puts the job back in the queue.
//! Confirms of one round are awaited together, so a burst costs one round trip, not one per job.
//!
//! Once a second, and at once when a node dies, a round first ends the attempts that can no
//! longer finish (see [`jobs::lost_attempts`]: dead or removed node, restarted agent, never
//! started): their jobs go back to the queue, up to their attempt limit, and are dispatched in
//! the same round, preferring nodes they have not been on. Rounds woken by submissions and
//! finishes skip that query: nothing can have been lost by them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel};
use shared::jobs::{AppKind, Decision, JobMessage};
use shared::wire::{HDR_NODE_ID, HDR_SIGNATURE};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use app::backend::{jobs, now_ms, AppState};

use crate::balancer::{self, Need, NodeState};
use crate::broker::Broker;

/// Jobs looked at per round.
const ROUND_LIMIT: i64 = 1000;
/// A round runs at least this often.
const IDLE_TICK: Duration = Duration::from_secs(1);

/// Wakes the dispatcher; cheap to clone into handlers.
#[derive(Clone, Default)]
pub struct Dispatcher {
    wake: Arc<Notify>,
    /// Set when a node died: the next round looks for lost attempts whatever the time.
    recover_due: Arc<AtomicBool>,
}

impl Dispatcher {
    /// Asks for a round soon (several calls before it runs make one round).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A node died: asks for a round that moves its jobs on.
    pub fn node_lost(&self) {
        self.recover_due.store(true, Ordering::SeqCst);
        self.wake();
    }
}

/// Runs rounds until `cancel` fires.
pub fn spawn(state: AppState, broker: Broker, dispatcher: Dispatcher, start_timeout: Duration, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut link: Option<Link> = None;
        let mut last_recovery: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = dispatcher.wake.notified() => {}
                _ = tokio::time::sleep(IDLE_TICK) => {}
                _ = cancel.cancelled() => return,
            }
            // Recovery needs only the database: it goes on while the broker is away.
            let due = dispatcher.recover_due.swap(false, Ordering::SeqCst);
            if due || last_recovery.is_none_or(|at| at.elapsed() >= IDLE_TICK) {
                last_recovery = Some(Instant::now());
                if let Err(e) = recover(&state, start_timeout).await {
                    tracing::warn!(error = %e, "recovering lost attempts failed");
                }
            }
            if link.as_ref().is_none_or(|l| !l.channel.status().connected()) {
                link = Link::open(&broker).await;
            }
            let Some(l) = link.as_mut() else { continue };
            match round(&state, &broker, l).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(dispatched = n, "dispatch round"),
                Err(e) => {
                    tracing::warn!(error = %e, "dispatch round failed");
                    link = None;
                }
            }
        }
    });
}

/// A confirm-mode channel and the node queues declared on it.
struct Link {
    channel: Channel,
    declared: std::collections::HashSet<String>,
}

impl Link {
    async fn open(broker: &Broker) -> Option<Self> {
        let channel = broker.channel().await?;
        if let Err(e) = channel.confirm_select(ConfirmSelectOptions::default()).await {
            tracing::warn!(error = %e, "cannot enable publisher confirms");
            return None;
        }
        Some(Self { channel, declared: Default::default() })
    }
}

#[derive(Debug, thiserror::Error)]
enum RoundError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
}

#[derive(sqlx::FromRow)]
struct NodeRow {
    id: String,
    name: String,
    status: String,
    admin_state: String,
    score: Option<f64>,
    facts: Option<String>,
    metrics: Option<String>,
}

async fn nodes(state: &AppState) -> Result<Vec<NodeState>, sqlx::Error> {
    let rows: Vec<NodeRow> = sqlx::query_as(
        "select id, name, status, admin_state, score, facts, metrics from nodes where status = 'active' and admin_state <> 'removed' order by id",
    )
    .fetch_all(&state.db.pool)
    .await?;
    let in_flight = jobs::in_flight_by_node(&state.db).await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let facts: Option<shared::wire::NodeFacts> = r.facts.as_deref().and_then(|f| serde_json::from_str(f).ok());
            let metrics: Option<shared::wire::NodeMetrics> = r.metrics.as_deref().and_then(|m| serde_json::from_str(m).ok());
            let score = metrics.map(|m| shared::score::score(&m, &state.settings.thermal));
            NodeState {
                overheated: score.is_some_and(|s| s.thermal <= 0.0),
                perf: score.map_or(0.0, |s| s.perf),
                in_flight: in_flight.get(&r.id).copied().unwrap_or(0),
                max_jobs: facts.as_ref().map_or(1, |f| f.max_jobs.max(1)),
                accepts_scripts: facts.as_ref().is_some_and(|f| f.accepts_scripts),
                runtimes: facts.map(|f| f.runtimes.into_iter().map(|r| r.name).collect()).unwrap_or_default(),
                id: r.id,
                name: r.name,
                status: r.status,
                admin_state: r.admin_state,
                score: r.score,
            }
        })
        .collect())
}

/// Ends the attempts that can no longer finish; their jobs are queued again or fail.
async fn recover(state: &AppState, start_timeout: Duration) -> Result<(), sqlx::Error> {
    let timeout_ms = i64::try_from(start_timeout.as_millis()).unwrap_or(i64::MAX);
    for lost in jobs::lost_attempts(&state.db, timeout_ms).await? {
        let after = jobs::end_attempt(&state.db, &lost.job_id, &lost.node_id, lost.attempt, "lost", &lost.reason, true).await?;
        tracing::warn!(job_id = %lost.job_id, node_id = %lost.node_id, attempt = lost.attempt, reason = %lost.reason, ?after, "attempt lost");
    }
    Ok(())
}

/// One round; returns how many jobs went out.
async fn round(state: &AppState, broker: &Broker, link: &mut Link) -> Result<usize, RoundError> {
    let queued = jobs::queued(&state.db, ROUND_LIMIT).await?;
    if queued.is_empty() {
        return Ok(0);
    }
    let mut nodes = nodes(state).await?;
    let mut tried = jobs::tried_nodes(&state.db).await?;
    let mut pending = Vec::new();
    for job in queued {
        let Some(kind) = AppKind::parse(&job.app_kind) else { continue };
        let need = Need { kind, runtime: job.app_runtime.clone(), tried: tried.remove(&job.id).unwrap_or_default() };
        let (Some(i), candidates) = balancer::pick(&need, &nodes) else { continue };
        let node_id = nodes[i].id.clone();
        let attempt = job.attempt + 1;
        let decision = Decision { at_ms: now_ms(), attempt: attempt as u32, chosen: node_id.clone(), candidates };
        if !jobs::mark_dispatched(&state.db, &job.id, job.attempt, &node_id, &nodes[i].name, &decision).await? {
            continue; // cancelled meanwhile
        }
        nodes[i].in_flight += 1;
        if link.declared.insert(node_id.clone()) {
            broker.declare_node_queue(&node_id).await?;
        }
        let message = JobMessage {
            job_id: job.id.clone(),
            attempt: attempt as u32,
            node_id: node_id.clone(),
            kind,
            app_sha256: job.app_sha256.clone(),
            app_size: u64::try_from(job.app_size).unwrap_or(0),
            issued_at_ms: now_ms(),
        };
        let body = serde_json::to_vec(&message).unwrap_or_default();
        let mut headers = FieldTable::default();
        headers.insert(HDR_NODE_ID.into(), AMQPValue::LongString(node_id.clone().into()));
        headers.insert(HDR_SIGNATURE.into(), AMQPValue::LongString(shared::wire::sign(&state.node_keys.key_for(&node_id), &body).into()));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(format!("{}#{attempt}", job.id)))
            .with_headers(headers);
        let published = link
            .channel
            .basic_publish(&broker.topology.jobs_exchange(), &node_id, BasicPublishOptions { mandatory: true, ..Default::default() }, &body, props)
            .await;
        match published {
            Ok(confirm) => pending.push((job.id, attempt, node_id, Some(confirm))),
            Err(e) => {
                tracing::warn!(error = %e, job_id = %job.id, "publish failed");
                pending.push((job.id, attempt, node_id, None));
            }
        }
    }
    let mut sent = 0;
    let mut broken = None;
    for (job_id, attempt, node_id, confirm) in pending {
        let outcome = match confirm {
            None => Err("publish failed".to_string()),
            Some(confirm) => match confirm.await {
                Ok(Confirmation::Ack(None)) => Ok(()),
                Ok(Confirmation::Ack(Some(_returned))) => Err("the node's queue does not exist".into()),
                Ok(Confirmation::Nack(_)) => Err("the broker refused the message".into()),
                Ok(Confirmation::NotRequested) => Ok(()),
                Err(e) => {
                    broken = Some(e.clone());
                    Err(format!("broker connection lost: {e}"))
                }
            },
        };
        match outcome {
            Ok(()) => {
                sent += 1;
                tracing::info!(job_id, node_id, attempt, "job dispatched");
            }
            Err(why) => {
                tracing::warn!(job_id, node_id, attempt, why, "dispatch failed; job back in the queue");
                jobs::undo_dispatch(&state.db, &job_id, attempt, &format!("back in the queue: {why}")).await?;
            }
        }
    }
    if let Some(e) = broken {
        return Err(e.into());
    }
    Ok(sent)
}
