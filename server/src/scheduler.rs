//! The dispatcher: takes queued jobs, asks the [balancer](aiedge_core::balancer) for a node, and
//! publishes each job to that node's durable queue.
//!
//! A round runs when woken (a job was submitted, one finished) and at least once a second (a
//! node may have appeared). For each queued job, oldest first: pick a node, reserve the attempt
//! in the database (queued → dispatched, with the decision), publish the signed message
//! (persistent, mandatory), and only count it dispatched once the broker confirms it. A publish
//! that is nacked, returned (no queue) or lost with the connection puts the job back in the queue.
//! Confirms are awaited beside the next rounds, so placing jobs never waits for the broker's disk.
//! An input small enough to be kept in the database goes in the message itself.
//!
//! Once a second, and at once when a node dies, a round first ends the attempts that can no
//! longer finish (see [`jobs::lost_attempts`]: dead or removed node, restarted agent, never
//! started): their jobs go back to the queue, up to their attempt limit, and are dispatched in
//! the same round, preferring nodes they have not been on. Rounds woken by submissions and
//! finishes skip that query: nothing can have been lost by them.

use std::collections::HashMap;
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

use aiedge_store::leases::Fence;
use aiedge_store::{jobs, now_ms};
use app::backend::AppState;

use crate::broker::Broker;
use aiedge_core::balancer::{self, Need, NodeState};

/// Jobs looked at per round, at most.
const ROUND_LIMIT: i64 = 1000;
/// Queued jobs read at a time.
const PAGE: i64 = 64;
/// A round runs at least this often.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// The nodes' track records cover the attempts that ended this long ago at most...
const TRACK_WINDOW_MS: i64 = 3600 * 1000;
/// ...and are read again this often (not every round: they move slowly).
const TRACK_REFRESH: Duration = Duration::from_secs(10);

/// What the server saw of each node's recent attempts, as a factor on its score (see
/// [`balancer::observed`]).
#[derive(Default)]
struct TrackRecords {
    read_at: Option<Instant>,
    observed: HashMap<String, f64>,
}

impl TrackRecords {
    async fn refresh(&mut self, state: &AppState) {
        if self.read_at.is_some_and(|at| at.elapsed() < TRACK_REFRESH) {
            return;
        }
        self.read_at = Some(Instant::now());
        match aiedge_store::nodes::track_records(&state.db, now_ms() - TRACK_WINDOW_MS).await {
            Ok(rows) => {
                let count = |n: i64| u64::try_from(n).unwrap_or(0);
                let fleet = rows.iter().fold((0, 0), |(ok, bad), (_, o, b)| (ok + count(*o), bad + count(*b)));
                self.observed = rows.into_iter().map(|(id, ok, bad)| (id, balancer::observed((count(ok), count(bad)), fleet))).collect();
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the nodes' track records"),
        }
    }

    /// A node with no attempts in the window has a clean record.
    fn of(&self, node: &str) -> f64 {
        self.observed.get(node).copied().unwrap_or(1.0)
    }
}

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

/// Runs rounds until `cancel` fires (the lease holder's term ended, or the server stops). Its
/// reservations are fenced by `fence`.
pub fn spawn(state: AppState, broker: Broker, dispatcher: Dispatcher, start_timeout: Duration, fence: Fence, cancel: CancellationToken) {
    // On the database thread (SQLite): a round is mostly queries, each answered at once there.
    state.db.clone().spawn(async move {
        let mut link: Option<Link> = None;
        let mut last_recovery: Option<Instant> = None;
        let mut records = TrackRecords::default();
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
            records.refresh(&state).await;
            let began = Instant::now();
            match round(&state, &broker, l, &records, &fence).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::histogram!(crate::metrics::DISPATCH_SECONDS).record(began.elapsed().as_secs_f64());
                    metrics::counter!(crate::metrics::JOBS_DISPATCHED).increment(n as u64);
                    tracing::debug!(dispatched = n, took_us = began.elapsed().as_micros() as u64, "dispatch round")
                }
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

async fn nodes(state: &AppState, records: &TrackRecords) -> Result<Vec<NodeState>, sqlx::Error> {
    aiedge_services::placement::fleet(&state.db, &state.settings.thermal, |id| records.of(id)).await
}

/// Ends the attempts that can no longer finish; their jobs are queued again or fail.
async fn recover(state: &AppState, start_timeout: Duration) -> Result<(), aiedge_services::ServiceError> {
    aiedge_services::attempts::recover(&state.db, state.events.as_ref(), start_timeout).await.map(drop)
}

/// A job on its way: its publish awaits the broker's confirm.
type Published = (String, i32, String, Option<lapin::publisher_confirm::PublisherConfirm>);

/// A job the balancer placed, not yet reserved.
struct Placed {
    job: jobs::QueuedJob,
    kind: AppKind,
    node: usize,
    /// The node's name as the job's owner sees it (another owner's node is unnamed).
    shown_name: String,
    decision: Decision,
}

/// Places each job of `page` on a node (counting it in that node's jobs in flight), oldest
/// first, while some node has room.
fn place(page: Vec<jobs::QueuedJob>, nodes: &mut [NodeState], tried: &mut HashMap<String, Vec<String>>) -> Vec<Placed> {
    let mut placed = Vec::new();
    for job in page {
        if !nodes.iter().any(balancer::has_room) {
            break;
        }
        let Some(kind) = AppKind::parse(&job.app_kind) else { continue };
        let need = Need {
            owner_id: job.owner_id.clone(),
            pool: job.pool,
            kind,
            runtime: job.app_runtime.clone(),
            tried: tried.remove(&job.id).unwrap_or_default(),
        };
        let (Some(i), candidates, more) = balancer::pick_recorded(&need, nodes, balancer::RECORDED) else { continue };
        nodes[i].in_flight += 1;
        let shown_name = balancer::node_name_for(&job.owner_id, &nodes[i].owner_id, &nodes[i].name);
        let decision =
            Decision { at_ms: now_ms(), attempt: (job.attempt + 1) as u32, chosen: nodes[i].id.clone(), candidates, more: more as u64 };
        placed.push(Placed { job, kind, node: i, shown_name, decision });
    }
    placed
}

/// Publishes a reserved job's signed message to its node's queue (declared already).
async fn publish(state: &AppState, broker: &Broker, link: &Link, p: Placed, node_id: String) -> Published {
    let attempt = p.job.attempt + 1;
    let message = JobMessage {
        job_id: p.job.id.clone(),
        attempt: attempt as u32,
        node_id: node_id.clone(),
        kind: p.kind,
        app_sha256: p.job.app_sha256,
        app_size: u64::try_from(p.job.app_size).unwrap_or(0),
        issued_at_ms: now_ms(),
        // A small input rides in the message: the agent need not fetch it.
        input_csv: p.job.input_inline,
    };
    let body = serde_json::to_vec(&message).unwrap_or_default();
    let mut headers = FieldTable::default();
    headers.insert(HDR_NODE_ID.into(), AMQPValue::LongString(node_id.clone().into()));
    headers.insert(HDR_SIGNATURE.into(), AMQPValue::LongString(shared::wire::sign(&state.node_keys.key_for(&node_id), &body).into()));
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(format!("{}#{attempt}", p.job.id)))
        .with_headers(headers);
    let published = link
        .channel
        .basic_publish(
            &broker.topology.jobs_exchange(),
            &node_id,
            BasicPublishOptions { mandatory: true, ..Default::default() },
            &body,
            props,
        )
        .await;
    match published {
        Ok(confirm) => (p.job.id, attempt, node_id, Some(confirm)),
        Err(e) => {
            tracing::warn!(error = %e, job_id = %p.job.id, "publish failed");
            (p.job.id, attempt, node_id, None)
        }
    }
}

/// One round; returns how many jobs went out.
async fn round(state: &AppState, broker: &Broker, link: &mut Link, records: &TrackRecords, fence: &Fence) -> Result<usize, RoundError> {
    let mut pending = Vec::new();
    // The fleet first: while every node is full (the usual case under a backlog, where each
    // submission wakes a round) the queue is not read at all.
    let mut nodes = nodes(state, records).await?;
    if !nodes.iter().any(balancer::has_room) {
        return Ok(0);
    }
    let mut after: Option<(i64, String)> = None;
    let mut looked = 0;
    // Page through the queue, oldest first, while some node has room: a long backlog costs a
    // page per round, not the whole queue. A page's reservations are one transaction.
    while looked < ROUND_LIMIT {
        // The first page no larger than the fleet can take: its rows carry their inline inputs,
        // and under load a round usually has a few free places, not 64. Later pages (the first
        // held jobs no node could run) are full ones.
        let room = nodes.iter().map(|n| i64::from(balancer::room(n))).sum::<i64>();
        let limit = if after.is_none() { PAGE.min(room.max(1)) } else { PAGE };
        let page = jobs::queued(&state.db, after.as_ref().map(|(at, id)| (*at, id.as_str())), limit).await?;
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.id.clone()));
        looked += page.len() as i64;
        let full_page = page.len() as i64 == limit;
        // Only jobs that ran before have nodes to avoid.
        let mut tried = if page.iter().any(|j| j.attempt > 0) { jobs::tried_nodes(&state.db).await? } else { HashMap::new() };
        let placed = place(page, &mut nodes, &mut tried);
        let reservations: Vec<jobs::Reservation> = placed
            .iter()
            .map(|p| jobs::Reservation {
                id: &p.job.id,
                expected_attempt: p.job.attempt,
                node_id: &nodes[p.node].id,
                node_name: &p.shown_name,
                decision: &p.decision,
            })
            .collect();
        let reserved =
            if reservations.is_empty() { Vec::new() } else { jobs::mark_dispatched(&state.db, Some(fence), &reservations).await? };
        if reserved.iter().any(|r| *r) {
            state.changes.jobs_changed();
        }
        drop(reservations);
        let mut out = Vec::new();
        for (p, ok) in placed.into_iter().zip(reserved) {
            if !ok {
                nodes[p.node].in_flight -= 1; // cancelled meanwhile
                continue;
            }
            let node_id = nodes[p.node].id.clone();
            if link.declared.insert(node_id.clone()) {
                broker.declare_node_queue(&node_id).await?;
            }
            out.push((p, node_id));
        }
        // All at once: each publish waits for the channel's I/O thread to take its frames, and
        // one after another those waits added up to most of a round.
        let link = &*link;
        pending.extend(futures_util::future::join_all(out.into_iter().map(|(p, node_id)| publish(state, broker, link, p, node_id))).await);
        if !full_page || !nodes.iter().any(balancer::has_room) {
            break;
        }
    }
    let sent = pending.len();
    if sent > 0 {
        // The broker's confirms are awaited beside the next rounds, not before them: a
        // persistent message is confirmed once it is on disk, and the dispatcher must not wait
        // for that to place the next jobs.
        tokio::spawn(settle(state.clone(), pending));
    }
    Ok(sent)
}

/// Awaits the confirms of one round's messages; a job whose message did not make it goes back
/// to the queue (a lost connection is noticed by the next round, which opens a new channel).
async fn settle(state: AppState, pending: Vec<Published>) {
    for (job_id, attempt, node_id, confirm) in pending {
        let outcome = match confirm {
            None => Err("publish failed".to_string()),
            Some(confirm) => match confirm.await {
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => Ok(()),
                Ok(Confirmation::Ack(Some(_returned))) => Err("the node's queue does not exist".into()),
                Ok(Confirmation::Nack(_)) => Err("the broker refused the message".into()),
                Err(e) => Err(format!("broker connection lost: {e}")),
            },
        };
        match outcome {
            Ok(()) => tracing::info!(job_id, node_id, attempt, "job dispatched"),
            Err(why) => {
                tracing::warn!(job_id, node_id, attempt, why, "dispatch failed; job back in the queue");
                if let Err(e) = jobs::undo_dispatch(&state.db, &job_id, &node_id, attempt, &format!("back in the queue: {why}")).await {
                    // The attempt stays dispatched; the start timeout moves it on.
                    tracing::warn!(job_id, error = %e, "cannot put the job back in the queue");
                }
            }
        }
    }
}
