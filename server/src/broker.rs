//! The connection to RabbitMQ, kept alive in the background. The server starts and serves pages
//! while the broker is away; the connection comes back with capped exponential backoff and
//! jitter, and `/healthz` says whether it is up.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use rand::Rng;
use tokio::sync::{watch, Notify, RwLock};
use tokio_util::sync::CancellationToken;

use crate::config::redact;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The names of everything the platform declares on the broker, under one namespace.
#[derive(Clone, Debug)]
pub struct Topology {
    namespace: String,
}

impl Topology {
    pub fn new(namespace: &str) -> Self {
        Self { namespace: namespace.to_string() }
    }

    /// The prefix of every name.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The durable fanout exchange agents publish heartbeats to.
    pub fn heartbeat_exchange(&self) -> String {
        format!("{}.heartbeats", self.namespace)
    }

    /// The server's queue of heartbeats, bound to the heartbeat exchange.
    pub fn heartbeat_queue(&self) -> String {
        format!("{}.server.heartbeats", self.namespace)
    }

    /// The durable direct exchange jobs are published to; the routing key names the node.
    pub fn jobs_exchange(&self) -> String {
        format!("{}.jobs", self.namespace)
    }

    /// The durable queue of one node's jobs.
    pub fn node_queue(&self, node_id: &str) -> String {
        format!("{}.node.{node_id}", self.namespace)
    }

    /// The fanout exchange that messages nobody can use go to: job messages an agent rejects
    /// (node queues name it as their dead-letter exchange) and heartbeats the server refuses.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead-letters", self.namespace)
    }

    /// The bounded queue that keeps dead letters for a person to look at.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letters", self.namespace)
    }
}

#[derive(Clone)]
pub struct Broker {
    pub topology: Topology,
    conn: Arc<RwLock<Option<Connection>>>,
    /// Counts successful connections, so consumers know when to start again.
    generation: Arc<watch::Sender<u64>>,
}

impl Broker {
    /// Starts the background task that connects, and reconnects after every loss, until
    /// `cancel` fires.
    pub fn start(url: String, topology: Topology, cancel: CancellationToken) -> Self {
        let broker = Self { topology, conn: Arc::new(RwLock::new(None)), generation: Arc::new(watch::channel(0).0) };
        tokio::spawn(broker.clone().supervise(url, cancel));
        broker
    }

    /// True while the connection is open.
    pub async fn is_connected(&self) -> bool {
        self.conn.read().await.as_ref().is_some_and(|c| c.status().connected())
    }

    /// Changes each time a new connection is up.
    pub fn generations(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// A new channel on the current connection, if there is one.
    pub async fn channel(&self) -> Option<Channel> {
        let conn = self.conn.read().await;
        let conn = conn.as_ref().filter(|c| c.status().connected())?;
        conn.create_channel().await.ok()
    }

    /// Declares the jobs exchange and node `node_id`'s durable queue, bound by its id, on a
    /// channel of its own (a refused declaration closes its channel).
    pub async fn declare_node_queue(&self, node_id: &str) -> Result<(), lapin::Error> {
        let closed = || lapin::Error::InvalidConnectionState(lapin::ConnectionState::Closed);
        let channel = self.channel().await.ok_or_else(closed)?;
        match declare_jobs_topology(&channel, &self.topology, node_id).await {
            // A queue an older version declared without the dead-letter exchange: use it as it
            // is (rejected messages are then dropped, still logged by the agent).
            Err(lapin::Error::ProtocolError(e)) if e.get_id() == 406 => {
                let queue = self.topology.node_queue(node_id);
                tracing::warn!(%queue, "node queue predates dead-lettering; delete it while empty to upgrade it");
                let channel = self.channel().await.ok_or_else(closed)?;
                channel
                    .queue_bind(&queue, &self.topology.jobs_exchange(), node_id, QueueBindOptions::default(), FieldTable::default())
                    .await?;
                let _ = channel.close(200, "done").await;
                Ok(())
            }
            other => {
                let _ = channel.close(200, "done").await;
                other
            }
        }
    }

    async fn supervise(self, url: String, cancel: CancellationToken) {
        let mut backoff = BACKOFF_START;
        loop {
            let lost = Arc::new(Notify::new());
            match tokio::time::timeout(CONNECT_TIMEOUT, connect(&url)).await {
                Ok(Ok(conn)) => {
                    tracing::info!(url = %redact(&url), "broker connected");
                    backoff = BACKOFF_START;
                    let on_lost = lost.clone();
                    conn.on_error(move |err| {
                        tracing::warn!(error = %err, "broker connection lost");
                        on_lost.notify_one();
                    });
                    *self.conn.write().await = Some(conn);
                    self.generation.send_modify(|g| *g += 1);
                    tokio::select! {
                        _ = lost.notified() => {}
                        _ = cancel.cancelled() => break,
                    }
                    *self.conn.write().await = None;
                }
                Ok(Err(err)) => tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "broker unreachable"),
                Err(_) => tracing::warn!(retry_in_ms = backoff.as_millis() as u64, "broker connect timed out"),
            }
            // Full jitter keeps a fleet from reconnecting in lockstep after an outage.
            let wait = backoff.mul_f64(rand::thread_rng().gen_range(0.5..1.0));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => break,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        if let Some(conn) = self.conn.write().await.take() {
            let _ = conn.close(200, "server shutting down").await;
        }
    }
}

async fn connect(url: &str) -> Result<Connection, lapin::Error> {
    let props = ConnectionProperties::default()
        .with_connection_name("aiedge-server".into())
        .with_executor(tokio_executor_trait::Tokio::current())
        .with_reactor(tokio_reactor_trait::Tokio);
    Connection::connect(url, props).await
}

/// The dead-letter exchange and its bounded queue (a week, 10 000 messages at most).
pub async fn declare_dead_letters(channel: &Channel, topology: &Topology) -> Result<(), lapin::Error> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    let exchange = topology.dead_letter_exchange();
    channel.exchange_declare(&exchange, ExchangeKind::Fanout, durable, FieldTable::default()).await?;
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongUInt(10_000));
    args.insert("x-message-ttl".into(), AMQPValue::LongUInt(7 * 24 * 3600 * 1000));
    let queue = topology.dead_letter_queue();
    channel.queue_declare(&queue, QueueDeclareOptions { durable: true, ..Default::default() }, args).await?;
    channel.queue_bind(&queue, &exchange, "", QueueBindOptions::default(), FieldTable::default()).await?;
    Ok(())
}

/// The jobs exchange and one node's queue, bound by the node's id as routing key. What the
/// agent rejects (unreadable, badly signed, for another node) goes to the dead-letter exchange.
async fn declare_jobs_topology(channel: &Channel, topology: &Topology, node_id: &str) -> Result<(), lapin::Error> {
    declare_dead_letters(channel, topology).await?;
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    let exchange = topology.jobs_exchange();
    channel.exchange_declare(&exchange, ExchangeKind::Direct, durable, FieldTable::default()).await?;
    let queue = topology.node_queue(node_id);
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(topology.dead_letter_exchange().into()));
    channel.queue_declare(&queue, QueueDeclareOptions { durable: true, ..Default::default() }, args).await?;
    channel.queue_bind(&queue, &exchange, node_id, QueueBindOptions::default(), FieldTable::default()).await?;
    Ok(())
}
