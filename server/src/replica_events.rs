//! Events that must cross replicas: a job submitted on one wakes the dispatcher on the lease
//! holder; a job that ended on one answers `?wait=` callers on all; live pages on every replica
//! hear of changes made through any other.
//!
//! Each replica publishes what its use cases raise to a fanout exchange (`<namespace>.replicas`)
//! and reads it back from a queue of its own (exclusive, deleted with its connection), skipping
//! its own messages. Events raised close together go out as one message. A replica that knows
//! of no other (see [`crate::leadership::Leadership::peers`]) publishes nothing, so a lone
//! server's job path pays nothing for this.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ExchangeKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use aiedge_services::{Changes, JobEnds};

use crate::broker::Broker;
use crate::scheduler::Dispatcher;

/// One event another replica needs to hear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    DispatchWanted,
    NodeLost,
    JobsChanged,
    NodesChanged,
    JobEnded(String),
}

/// Events that went out together, as one message body: one word per line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    dispatch: bool,
    node_lost: bool,
    jobs: bool,
    nodes: bool,
    ended: BTreeSet<String>,
}

impl Batch {
    fn add(&mut self, event: Event) {
        match event {
            Event::DispatchWanted => self.dispatch = true,
            Event::NodeLost => self.node_lost = true,
            Event::JobsChanged => self.jobs = true,
            Event::NodesChanged => self.nodes = true,
            Event::JobEnded(id) => {
                self.ended.insert(id);
            }
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::new();
        for (on, word) in [(self.dispatch, "dispatch"), (self.node_lost, "node-lost"), (self.jobs, "jobs"), (self.nodes, "nodes")] {
            if on {
                out.push_str(word);
                out.push('\n');
            }
        }
        for id in &self.ended {
            out.push_str("ended ");
            out.push_str(id);
            out.push('\n');
        }
        out.into_bytes()
    }

    /// Reads a body; unknown lines (a newer replica's) are skipped.
    pub fn decode(body: &[u8]) -> Self {
        let mut batch = Self::default();
        for line in String::from_utf8_lossy(body).lines() {
            let event = match line.split_once(' ') {
                Some(("ended", id)) if !id.is_empty() && id.len() <= 64 => Event::JobEnded(id.to_string()),
                None if line == "dispatch" => Event::DispatchWanted,
                None if line == "node-lost" => Event::NodeLost,
                None if line == "jobs" => Event::JobsChanged,
                None if line == "nodes" => Event::NodesChanged,
                _ => continue,
            };
            batch.add(event);
        }
        batch
    }
}

/// The sending side, held by the use cases' events; cheap to clone.
#[derive(Clone)]
pub struct Relay {
    out: mpsc::UnboundedSender<Event>,
    /// Other replicas heard from lately (kept by [`crate::leadership`]).
    pub peers: Arc<AtomicUsize>,
}

/// Where a relay's events wait for [`spawn`].
pub struct Outbox(mpsc::UnboundedReceiver<Event>);

impl Relay {
    pub fn new() -> (Self, Outbox) {
        let (out, inbox) = mpsc::unbounded_channel();
        (Self { out, peers: Arc::new(AtomicUsize::new(0)) }, Outbox(inbox))
    }

    /// Sends `event` to the other replicas, if there are any.
    pub fn send(&self, event: Event) {
        if self.peers.load(Ordering::Relaxed) > 0 {
            let _ = self.out.send(event);
        }
    }
}

/// Where received events land on this replica.
#[derive(Clone)]
pub struct Local {
    pub dispatcher: Dispatcher,
    pub job_ends: JobEnds,
    pub changes: Changes,
}

impl Local {
    fn apply(&self, batch: Batch) {
        if batch.node_lost {
            self.dispatcher.node_lost();
        } else if batch.dispatch {
            self.dispatcher.wake();
        }
        if batch.jobs {
            self.changes.jobs_changed();
        }
        if batch.nodes {
            self.changes.nodes_changed();
        }
        for id in &batch.ended {
            self.job_ends.announce(id);
        }
    }
}

const REPLICA_HEADER: &str = "x-aiedge-replica";

/// Publishes the outbox and applies what other replicas publish, until `cancel`; both follow
/// the broker's reconnects.
pub fn spawn(broker: Broker, me: String, outbox: Outbox, local: Local, cancel: CancellationToken) {
    tokio::spawn(publish(broker.clone(), me.clone(), outbox, cancel.clone()));
    tokio::spawn(receive(broker, me, local, cancel));
}

async fn declare_exchange(channel: &lapin::Channel, exchange: &str) -> Result<(), lapin::Error> {
    channel
        .exchange_declare(
            exchange,
            ExchangeKind::Fanout,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
}

async fn publish(broker: Broker, me: String, mut outbox: Outbox, cancel: CancellationToken) {
    let exchange = broker.topology.replica_exchange();
    let mut channel: Option<lapin::Channel> = None;
    loop {
        let first = tokio::select! {
            e = outbox.0.recv() => match e { Some(e) => e, None => return },
            _ = cancel.cancelled() => return,
        };
        // Whatever else is waiting goes in the same message.
        let mut batch = Batch::default();
        batch.add(first);
        while let Ok(e) = outbox.0.try_recv() {
            batch.add(e);
        }
        if channel.as_ref().is_none_or(|c| !c.status().connected()) {
            channel = match broker.channel().await {
                Some(c) => declare_exchange(&c, &exchange).await.ok().map(|()| c),
                None => None,
            };
        }
        // Without a broker the events are dropped: other replicas' pages and waiters catch up
        // by their own polling (once a second), which is what they did before this relay.
        let Some(c) = channel.as_ref() else { continue };
        let mut headers = FieldTable::default();
        headers.insert(REPLICA_HEADER.into(), AMQPValue::LongString(me.clone().into()));
        let props = BasicProperties::default().with_headers(headers);
        if let Err(e) = c.basic_publish(&exchange, "", Default::default(), &batch.encode(), props).await {
            tracing::debug!(error = %e, "cannot publish events to the other replicas");
            channel = None;
        }
    }
}

async fn receive(broker: Broker, me: String, local: Local, cancel: CancellationToken) {
    let mut generations = broker.generations();
    loop {
        if let Some(channel) = broker.channel().await {
            if let Err(e) = receive_on(&channel, &broker, &me, &local, &cancel).await {
                tracing::debug!(error = %e, "replica events consumer stopped; waiting for the broker");
            }
            let _ = channel.close(200, "done").await;
            if cancel.is_cancelled() {
                return;
            }
        }
        tokio::select! {
            changed = generations.changed() => if changed.is_err() { return },
            _ = cancel.cancelled() => return,
        }
    }
}

async fn receive_on(
    channel: &lapin::Channel,
    broker: &Broker,
    me: &str,
    local: &Local,
    cancel: &CancellationToken,
) -> Result<(), lapin::Error> {
    let exchange = broker.topology.replica_exchange();
    declare_exchange(channel, &exchange).await?;
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let queue = channel.queue_declare("", options, FieldTable::default()).await?;
    channel.queue_bind(queue.name().as_str(), &exchange, "", QueueBindOptions::default(), FieldTable::default()).await?;
    let mut consumer = channel
        .basic_consume(
            queue.name().as_str(),
            "aiedge-replica",
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    loop {
        let delivery = tokio::select! {
            d = consumer.next() => d,
            _ = cancel.cancelled() => return Ok(()),
        };
        let Some(delivery) = delivery else { return Err(lapin::Error::InvalidChannelState(lapin::ChannelState::Closed)) };
        let delivery = delivery?;
        let from = delivery.properties.headers().as_ref().and_then(|h| h.inner().get(REPLICA_HEADER).cloned());
        if matches!(&from, Some(AMQPValue::LongString(s)) if s.as_bytes() == me.as_bytes()) {
            continue;
        }
        local.apply(Batch::decode(&delivery.data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_reads_back_as_written_and_ignores_what_it_does_not_know() {
        let mut batch = Batch::default();
        for e in [
            Event::DispatchWanted,
            Event::JobEnded("b".into()),
            Event::JobEnded("a".into()),
            Event::JobEnded("a".into()),
            Event::NodesChanged,
        ] {
            batch.add(e);
        }
        let body = batch.encode();
        assert_eq!(String::from_utf8_lossy(&body), "dispatch\nnodes\nended a\nended b\n");
        assert_eq!(Batch::decode(&body), batch);
        let mut with_noise = body.clone();
        with_noise.extend_from_slice(b"future-kind x\nended \n\xff\xfe\n");
        assert_eq!(Batch::decode(&with_noise), batch);
    }
}
