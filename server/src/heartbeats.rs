//! Heartbeats in, node status out.
//!
//! - The consumer reads the server's heartbeat queue (bound to the agents' fanout exchange,
//!   with a short TTL and a length cap so nothing piles up while the server is away), checks
//!   each message's signature against the key of the node it claims to be from, scores the
//!   node, and keeps its latest state in memory ([`Fleet`]).
//! - A flusher writes the latest state of the nodes that changed, once a second, in one
//!   transaction, plus one history sample each. (The server's housekeeping averages samples
//!   older than an hour into one row per node per minute, kept for a week: [`nodes::roll_up`].)
//! - A sweeper marks a node dead when its heartbeats stop for the timeout, and the consumer
//!   marks it active again when they resume. Every transition is recorded.
//! - A heartbeat that says the agent is draining (it got SIGTERM) makes the node `stopping`:
//!   it gets no new jobs but keeps the ones it runs. A new agent instance id means the agent
//!   restarted; it is written to the node at once, so the dispatcher moves the attempts the old
//!   process held without waiting for a timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::ExchangeKind;
use shared::score::{score, ThermalPolicy};
use shared::wire::{self, Heartbeat, HDR_NODE_ID, HDR_SIGNATURE, HELLO_MAX_SKEW_MS};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use aiedge_core::{reported, AdminState, NodeStatus};
use aiedge_store::leases::Fence;
use aiedge_store::nodes::{self, Latest};
use aiedge_store::now_ms;
use app::backend::AppState;

use crate::broker::Broker;
use crate::scheduler::Dispatcher;

#[derive(Clone, Debug)]
pub struct LivenessSettings {
    pub timeout: Duration,
    pub thermal: ThermalPolicy,
}

struct LiveNode {
    status: NodeStatus,
    /// The agent process heartbeating for the node (see `Heartbeat::instance`).
    instance: Option<String>,
    last_seen: Instant,
    /// The latest sequence number of `instance` (unknown after a server restart).
    last_seq: Option<u64>,
    /// The sender's clock on the latest heartbeat accepted (kept in the database too).
    last_sent_at: Option<i64>,
    /// The node's admin state as last read from the database (none yet: read on the next
    /// heartbeat), and when.
    admin_state: Option<AdminState>,
    checked: Instant,
}

/// How long the heartbeat path trusts its copy of a node's admin state; a removal takes effect
/// within this time, and the database sees one query per node per period, not per heartbeat.
const AUTH_CACHE: Duration = Duration::from_secs(5);

/// What the server knows of each node right now.
#[derive(Clone, Default)]
pub struct Fleet {
    nodes: Arc<Mutex<HashMap<String, LiveNode>>>,
    pending: Arc<Mutex<HashMap<String, Latest>>>,
    /// True while the consumer reads heartbeats. Without it the server knows nothing of the
    /// nodes, so it declares none dead (a broker restart must not look like a dead fleet).
    consuming: Arc<std::sync::atomic::AtomicBool>,
    /// The lease term this intake runs in: its writes are fenced by it.
    fence: Option<Fence>,
}

/// Why a message was dropped; logged, never fatal.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Rejected {
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("unknown node")]
    UnknownNode,
    #[error("node removed")]
    Removed,
    #[error("bad signature")]
    BadSignature,
    #[error("malformed heartbeat: {0}")]
    Malformed(String),
    #[error("body names another node")]
    NodeMismatch,
    #[error("stale or repeated heartbeat")]
    Stale,
    #[error("database: {0}")]
    Database(String),
}

impl Rejected {
    /// Every [`Rejected::label`].
    pub const LABELS: &'static [&'static str] =
        &["missing_header", "unknown_node", "bad_signature", "removed", "malformed", "node_mismatch", "stale", "database"];

    /// The reason as a metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            Rejected::MissingHeader(_) => "missing_header",
            Rejected::UnknownNode => "unknown_node",
            Rejected::BadSignature => "bad_signature",
            Rejected::Removed => "removed",
            Rejected::Malformed(_) => "malformed",
            Rejected::NodeMismatch => "node_mismatch",
            Rejected::Stale => "stale",
            Rejected::Database(_) => "database",
        }
    }
}

fn header(headers: &Option<FieldTable>, name: &'static str) -> Result<String, Rejected> {
    let value = headers.as_ref().and_then(|h| h.inner().get(name)).ok_or(Rejected::MissingHeader(name))?;
    match value {
        AMQPValue::LongString(s) => Ok(String::from_utf8_lossy(s.as_bytes()).to_string()),
        AMQPValue::ShortString(s) => Ok(s.as_str().to_string()),
        _ => Err(Rejected::MissingHeader(name)),
    }
}

impl Fleet {
    /// Nodes the database says are active are watched from now on, so a node that died while
    /// the server was down (or while the lease changed hands) is declared dead after one
    /// timeout. Writes are fenced by `fence`.
    pub async fn load(state: &AppState, fence: Option<Fence>) -> Result<Self, sqlx::Error> {
        let fleet = Self { fence, ..Self::default() };
        let alive = nodes::heard(&state.db).await?;
        let now = Instant::now();
        let mut nodes = fleet.nodes.lock().await;
        for n in alive {
            // `checked` in the past: the admin state is read on the first heartbeat.
            let checked = now.checked_sub(AUTH_CACHE).unwrap_or(now);
            let live = LiveNode {
                status: n.status,
                instance: n.instance,
                last_seen: now,
                last_seq: None,
                last_sent_at: n.last_sent_at,
                admin_state: None,
                checked,
            };
            nodes.insert(n.id, live);
        }
        drop(nodes);
        Ok(fleet)
    }

    /// Checks and applies one heartbeat message.
    pub async fn accept(
        &self,
        state: &AppState,
        settings: &LivenessSettings,
        headers: &Option<FieldTable>,
        body: &[u8],
    ) -> Result<(), Rejected> {
        let node_id = header(headers, HDR_NODE_ID)?;
        let signature = header(headers, HDR_SIGNATURE)?;
        if node_id.len() > 64 {
            return Err(Rejected::UnknownNode);
        }
        // The signature proves the sender holds this node's key; check it before parsing.
        if !wire::verify(&state.node_keys.key_for(&node_id), body, &signature) {
            return Err(Rejected::BadSignature);
        }
        let cached = {
            let nodes = self.nodes.lock().await;
            nodes
                .get(&node_id)
                .filter(|n| n.checked.elapsed() < AUTH_CACHE)
                .and_then(|n| Some(nodes::NodeAuth { status: n.status, admin_state: n.admin_state?, last_sent_at: n.last_sent_at }))
        };
        let auth = match cached {
            Some(auth) => auth,
            None => {
                nodes::auth_info(&state.db, &node_id).await.map_err(|e| Rejected::Database(e.to_string()))?.ok_or(Rejected::UnknownNode)?
            }
        };
        if auth.admin_state == AdminState::Removed {
            return Err(Rejected::Removed);
        }
        let mut hb: Heartbeat = serde_json::from_slice(body).map_err(|e| Rejected::Malformed(e.to_string()))?;
        if hb.node_id != node_id {
            return Err(Rejected::NodeMismatch);
        }
        // A heartbeat from another time (replayed, or held back) says nothing about now.
        if (now_ms() - hb.sent_at_ms).abs() > HELLO_MAX_SKEW_MS {
            return Err(Rejected::Stale);
        }
        // What the node says of itself, held to what a machine can be (see `aiedge_core::reported`).
        if let Some(facts) = hb.facts.as_mut() {
            reported::clamp_facts(facts);
        }
        reported::clamp_metrics(&mut hb.metrics, hb.facts.as_ref());
        let node_score = score(&hb.metrics, &settings.thermal);
        let now = now_ms();

        let status = if hb.draining { NodeStatus::Stopping } else { NodeStatus::Active };
        let (previous, restarted) = {
            let mut nodes = self.nodes.lock().await;
            let live = nodes.entry(node_id.clone()).or_insert_with(|| LiveNode {
                status: auth.status,
                instance: None,
                last_seen: Instant::now(),
                last_seq: None,
                last_sent_at: auth.last_sent_at,
                admin_state: None,
                checked: Instant::now(),
            });
            if cached_is_stale(live) {
                live.admin_state = Some(auth.admin_state);
                live.checked = Instant::now();
            }
            // Only what is newer than the latest heartbeat counts: by the sender's clock (kept
            // across server restarts), and within one agent process by its sequence. A replayed
            // message, even of an older process (which would fake a restart), is refused.
            let restarted = hb.instance.is_some() && live.instance != hb.instance;
            if !is_newer(live, &hb, restarted) {
                return Err(Rejected::Stale);
            }
            live.last_seq = Some(hb.seq);
            live.last_sent_at = Some(hb.sent_at_ms);
            live.last_seen = Instant::now();
            if restarted {
                live.instance = hb.instance.clone();
            }
            (std::mem::replace(&mut live.status, status), restarted)
        };
        if restarted {
            nodes::set_agent_instance(&state.db, &node_id, hb.instance.as_deref().unwrap_or_default())
                .await
                .map_err(|e| Rejected::Database(e.to_string()))?;
        }
        tracing::debug!(node_id, seq = hb.seq, score = node_score.total, "heartbeat");
        let mut latest =
            Latest { node_id: node_id.clone(), at: now, sent_at: hb.sent_at_ms, metrics: hb.metrics, facts: hb.facts, score: node_score };
        {
            let mut pending = self.pending.lock().await;
            // Facts come with the first heartbeat of a connection only: a later heartbeat that
            // replaces it before the flush keeps them.
            if let Some(earlier) = pending.remove(&node_id) {
                latest.facts = latest.facts.or(earlier.facts);
            }
            if previous == status {
                pending.insert(node_id, latest);
                return Ok(());
            }
        }
        // A change of status is written with the heartbeat that made it, not at the next flush:
        // a node shown active at once shows that heartbeat's metrics, not empty cells.
        let db_error = |e: sqlx::Error| Rejected::Database(e.to_string());
        nodes::save_latest(&state.db, self.fence.as_ref(), std::slice::from_ref(&latest)).await.map_err(db_error)?;
        let reason = NodeStatus::heard_reason(previous, status);
        nodes::transition(&state.db, self.fence.as_ref(), &node_id, previous, status, reason, now).await.map_err(db_error)?;
        state.changes.nodes_changed();
        tracing::info!(node_id, from = %previous, to = %status, "node status");
        Ok(())
    }

    /// The consumer (re)started: every node gets a full timeout from now to be heard again.
    async fn consuming_again(&self) {
        let now = Instant::now();
        for node in self.nodes.lock().await.values_mut() {
            node.last_seen = now;
        }
        self.consuming.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn stopped_consuming(&self) {
        self.consuming.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Marks silent nodes dead; returns how many.
    pub async fn sweep(&self, state: &AppState, timeout: Duration) -> usize {
        if !self.consuming.load(std::sync::atomic::Ordering::SeqCst) {
            return 0;
        }
        let expired: Vec<(String, NodeStatus)> = {
            let mut nodes = self.nodes.lock().await;
            nodes
                .iter_mut()
                .filter(|(_, n)| n.status.is_heard() && n.last_seen.elapsed() > timeout)
                .map(|(id, n)| (id.clone(), std::mem::replace(&mut n.status, NodeStatus::Dead)))
                .collect()
        };
        let dead = expired.len();
        for (id, was) in expired {
            let reason = format!("no heartbeat for {} s", timeout.as_secs_f64());
            match nodes::transition(&state.db, self.fence.as_ref(), &id, was, NodeStatus::Dead, &reason, now_ms()).await {
                Ok(_) => {
                    tracing::warn!(node_id = %id, "node dead");
                    state.changes.nodes_changed();
                }
                Err(e) => tracing::error!(node_id = %id, error = %e, "recording node death failed"),
            }
        }
        dead
    }

    /// Writes what changed since the last flush.
    pub async fn flush(&self, state: &AppState) {
        let batch: Vec<Latest> = self.pending.lock().await.drain().map(|(_, l)| l).collect();
        if batch.is_empty() {
            return;
        }
        match nodes::save_latest(&state.db, self.fence.as_ref(), &batch).await {
            Ok(()) => state.changes.nodes_changed(),
            Err(e) => tracing::error!(error = %e, nodes = batch.len(), "saving heartbeats failed"),
        }
    }
}

/// Whether `hb` is newer than the latest heartbeat accepted from the node: not older by the
/// sender's clock (strictly newer from a new agent process), and with a higher sequence number
/// than the last one of the same process.
fn is_newer(live: &LiveNode, hb: &Heartbeat, new_process: bool) -> bool {
    let by_clock = match live.last_sent_at {
        None => true,
        Some(last) if new_process => hb.sent_at_ms > last,
        Some(last) => hb.sent_at_ms >= last,
    };
    let by_seq = new_process || live.last_seq.is_none_or(|last| hb.seq > last);
    by_clock && by_seq
}

fn cached_is_stale(live: &LiveNode) -> bool {
    live.admin_state.is_none() || live.checked.elapsed() >= AUTH_CACHE
}

/// Runs the consumer, the flusher and the sweeper until `cancel` fires (the lease holder's
/// term ended, or the server stops). A node death wakes `dispatcher`, so its jobs move on at
/// once.
pub fn spawn(state: AppState, broker: Broker, fleet: Fleet, settings: LivenessSettings, dispatcher: Dispatcher, cancel: CancellationToken) {
    tokio::spawn(consume(state.clone(), broker, fleet.clone(), settings.clone(), cancel.clone()));
    tokio::spawn(async move {
        // A death is noticed within this of the timeout; a sweep is a walk over a small map.
        let tick_every = (settings.timeout / 20).clamp(Duration::from_millis(50), Duration::from_millis(500));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_flush = Instant::now();

        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => { fleet.flush(&state).await; return; }
            }
            if fleet.sweep(&state, settings.timeout).await > 0 {
                dispatcher.node_lost();
            }
            if last_flush.elapsed() >= Duration::from_millis(900) {
                fleet.flush(&state).await;
                last_flush = Instant::now();
            }
        }
    });
}

async fn consume(state: AppState, broker: Broker, fleet: Fleet, settings: LivenessSettings, cancel: CancellationToken) {
    let mut generations = broker.generations();
    loop {
        if let Some(channel) = broker.channel().await {
            let outcome = consume_on(&channel, &broker, &state, &fleet, &settings, &cancel).await;
            fleet.stopped_consuming();
            match outcome {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "heartbeat consumer stopped; waiting for the broker"),
            }
        }
        tokio::select! {
            changed = generations.changed() => if changed.is_err() { return },
            _ = cancel.cancelled() => return,
        }
    }
}

async fn consume_on(
    channel: &lapin::Channel,
    broker: &Broker,
    state: &AppState,
    fleet: &Fleet,
    settings: &LivenessSettings,
    cancel: &CancellationToken,
) -> Result<(), lapin::Error> {
    let (exchange, queue) = (broker.topology.heartbeat_exchange(), broker.topology.heartbeat_queue());
    channel
        .exchange_declare(
            &exchange,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let mut args = FieldTable::default();
    // Heartbeats older than a few intervals are worthless; never let them pile up.
    args.insert("x-message-ttl".into(), AMQPValue::LongUInt(10_000));
    args.insert("x-max-length".into(), AMQPValue::LongUInt(100_000));
    // A queue nobody has consumed for 10 minutes goes away; it holds nothing worth keeping.
    args.insert("x-expires".into(), AMQPValue::LongUInt(600_000));
    let declared = channel.queue_declare(&queue, QueueDeclareOptions { durable: true, ..Default::default() }, args.clone()).await;
    let channel = match declared {
        Ok(_) => channel.clone(),
        // A queue left by an older version with other arguments refuses the declaration (406)
        // and closes the channel. It holds only heartbeats, which are worthless after seconds:
        // replace it.
        Err(lapin::Error::ProtocolError(e)) if e.get_id() == 406 => {
            tracing::warn!(%queue, "heartbeat queue has other arguments; replacing it");
            let fresh = broker.channel().await.ok_or(lapin::Error::InvalidChannelState(lapin::ChannelState::Closed))?;
            fresh.queue_delete(&queue, Default::default()).await?;
            fresh.queue_declare(&queue, QueueDeclareOptions { durable: true, ..Default::default() }, args).await?;
            fresh
        }
        Err(e) => return Err(e),
    };
    channel.queue_bind(&queue, &exchange, "", QueueBindOptions::default(), FieldTable::default()).await?;
    crate::broker::declare_dead_letters(&channel, &broker.topology).await?;
    let dead_letters = broker.topology.dead_letter_exchange();
    let mut consumer = channel
        .basic_consume(&queue, "aiedge-server", BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
        .await?;
    tracing::info!(%queue, "consuming heartbeats");
    fleet.consuming_again().await;
    let outcome = intake(&channel, &mut consumer, &dead_letters, state, fleet, settings, cancel).await;
    // IMPORTANT: a replica whose term ended must stop taking heartbeats off the shared queue at
    // once, or the new holder hears only part of them. Closing the channel cancels its consumer.
    let _ = channel.close(200, "heartbeat intake stopped").await;
    outcome
}

/// Reads heartbeats until `cancel`, or an error of the channel.
async fn intake(
    channel: &lapin::Channel,
    consumer: &mut lapin::Consumer,
    dead_letters: &str,
    state: &AppState,
    fleet: &Fleet,
    settings: &LivenessSettings,
    cancel: &CancellationToken,
) -> Result<(), lapin::Error> {
    loop {
        let delivery = tokio::select! {
            d = consumer.next() => d,
            _ = cancel.cancelled() => return Ok(()),
        };
        let Some(delivery) = delivery else {
            return Err(lapin::Error::InvalidChannelState(lapin::ChannelState::Closed));
        };
        let delivery = delivery?;
        metrics::counter!(crate::metrics::HEARTBEATS_RECEIVED).increment(1);
        if let Err(reason) = fleet.accept(state, settings, delivery.properties.headers(), &delivery.data).await {
            metrics::counter!(crate::metrics::HEARTBEATS_REFUSED, "reason" => reason.label()).increment(1);
            tracing::warn!(%reason, bytes = delivery.data.len(), "heartbeat refused");
            // Kept for a person to look at, with the reason; never consumed again.
            if !matches!(reason, Rejected::Database(_) | Rejected::Stale) {
                let mut headers = delivery.properties.headers().clone().unwrap_or_default();
                headers.insert("x-aiedge-rejected".into(), AMQPValue::LongString(reason.to_string().into()));
                let props = lapin::BasicProperties::default().with_headers(headers);
                let _ = channel.basic_publish(dead_letters, "heartbeat", Default::default(), &delivery.data, props).await;
            }
        }
    }
}

#[cfg(test)]
mod label_tests {
    use super::Rejected;

    #[test]
    fn every_reason_label_is_listed_once() {
        let all = [
            Rejected::MissingHeader("x"),
            Rejected::UnknownNode,
            Rejected::BadSignature,
            Rejected::Removed,
            Rejected::Malformed(String::new()),
            Rejected::NodeMismatch,
            Rejected::Stale,
            Rejected::Database(String::new()),
        ];
        let labels: Vec<&str> = all.iter().map(Rejected::label).collect();
        assert_eq!(labels, Rejected::LABELS);
    }
}
