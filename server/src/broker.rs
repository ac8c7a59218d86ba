//! The connection to RabbitMQ, kept alive in the background. The server starts and serves pages
//! while the broker is away; the connection comes back with capped exponential backoff and
//! jitter, and `/healthz` says whether it is up.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
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
    job_queues: QueueType,
}

/// The kind of queue node job queues are declared as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueType {
    /// RabbitMQ's classic queue: on one broker node (mirrored only by deprecated policies).
    #[default]
    Classic,
    /// A Raft-replicated queue (RabbitMQ 3.8 and later): a job survives the loss of a minority
    /// of a broker cluster's nodes.
    Quorum,
}

impl Topology {
    pub fn new(namespace: &str) -> Self {
        Self { namespace: namespace.to_string(), job_queues: QueueType::default() }
    }

    /// The same names, with node job queues of `kind`.
    pub fn with_job_queues(self, kind: QueueType) -> Self {
        Self { job_queues: kind, ..self }
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

    /// The fanout exchange replicas tell each other of events on (see [`crate::replica_events`]).
    pub fn replica_exchange(&self) -> String {
        format!("{}.replicas", self.namespace)
    }

    /// The queue whose declaration claims the namespace for one deployment (see
    /// [`Broker::start`]); nothing is ever published to it.
    pub fn claim_queue(&self) -> String {
        format!("{}.deployment", self.namespace)
    }
}

/// A claim outlives its deployment's last connected replica by this much.
const CLAIM_EXPIRES_MS: u32 = 15_000;

#[derive(Clone)]
pub struct Broker {
    pub topology: Topology,
    conn: Arc<RwLock<Option<Connection>>>,
    /// Counts successful connections, so consumers know when to start again.
    generation: Arc<watch::Sender<u64>>,
    /// Counts connection attempts, however they ended.
    attempts: Arc<watch::Sender<u64>>,
    /// Set when the namespace belongs to another deployment: the server must not run.
    refused: Arc<watch::Sender<Option<String>>>,
}

/// Why the broker's namespace cannot be used by this deployment.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NamespaceTaken(pub String);

impl Broker {
    /// Starts the background task that connects, and reconnects after every loss, until
    /// `cancel` fires.
    ///
    /// With `deployment`, every connection first claims the namespace for it: a durable queue
    /// whose arguments name the deployment. The broker refuses to declare one queue with other
    /// arguments, so a second deployment (another database) on the same namespace, which would
    /// split the heartbeat queue and dispatch into the same node queues, is found out at once;
    /// the broker connection stops and [`Broker::refusal`] says why. Each replica consumes from
    /// the claim (nothing is ever published there), which keeps it while any replica is
    /// connected; it expires 15 s after the last one went.
    pub fn start(url: String, topology: Topology, deployment: Option<String>, cancel: CancellationToken) -> Self {
        let broker = Self {
            topology,
            conn: Arc::new(RwLock::new(None)),
            generation: Arc::new(watch::channel(0).0),
            attempts: Arc::new(watch::channel(0).0),
            refused: Arc::new(watch::channel(None).0),
        };
        tokio::spawn(broker.clone().supervise(url, deployment, cancel));
        broker
    }

    /// Waits for the first connection attempt (at most `within`) and says whether the namespace
    /// was refused. A broker that is away is no refusal: the server serves meanwhile.
    pub async fn first_contact(&self, within: Duration) -> Result<(), NamespaceTaken> {
        let mut attempts = self.attempts.subscribe();
        let _ = tokio::time::timeout(within, attempts.wait_for(|n| *n > 0)).await;
        match self.refused.borrow().clone() {
            Some(why) => Err(NamespaceTaken(why)),
            None => Ok(()),
        }
    }

    /// Resolves when the namespace is refused (at any reconnect), with why.
    pub async fn refusal(&self) -> NamespaceTaken {
        let mut refused = self.refused.subscribe();
        let why = refused.wait_for(Option::is_some).await.map(|why| why.clone().unwrap_or_default());
        match why {
            Ok(why) => NamespaceTaken(why),
            // The broker task ended without a refusal: never resolve.
            Err(_) => std::future::pending().await,
        }
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
            // A queue declared with other arguments: by an older version without the
            // dead-letter exchange, or as the other queue type. Use it as it is; its jobs
            // must not be lost to a redeclaration.
            Err(lapin::Error::ProtocolError(e)) if e.get_id() == 406 => {
                let queue = self.topology.node_queue(node_id);
                tracing::warn!(
                    %queue,
                    wanted = ?self.topology.job_queues,
                    "node queue was declared with other arguments (an older version, or another --amqp-job-queues); \
                     used as it is: delete it while empty to have it declared anew"
                );
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

    async fn supervise(self, url: String, deployment: Option<String>, cancel: CancellationToken) {
        let mut backoff = BACKOFF_START;
        loop {
            let lost = Arc::new(Notify::new());
            let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect(&url)).await;
            let claimed = match (&attempt, &deployment) {
                (Ok(Ok(conn)), Some(id)) => Some(claim(conn, &self.topology, id).await),
                _ => None,
            };
            // IMPORTANT: a refusal is published before the attempt is counted, so whoever waits
            // for the first attempt (`first_contact`) sees it.
            let taken = matches!((&attempt, &claimed), (Ok(Ok(_)), Some(Err(Claim::Taken))));
            if !taken {
                self.attempts.send_modify(|n| *n += 1);
            }
            match (attempt, claimed) {
                (Ok(Ok(conn)), Some(Err(Claim::Taken))) => {
                    let why = format!(
                        "the broker namespace '{ns}' at {url} belongs to another deployment (a server on another database); \
                         this server would split its heartbeats and share its job queues. Give this deployment a namespace \
                         of its own with --amqp-namespace (AIEDGE_AMQP_NAMESPACE), or point it at the other deployment's \
                         database to run as one more replica of it. (A claim outlives the last server of its deployment by \
                         15 s: a database just reset can start again after that.)",
                        ns = self.topology.namespace(),
                        url = redact(&url)
                    );
                    tracing::error!("{why}");
                    let _ = conn.close(200, "namespace belongs to another deployment").await;
                    self.refused.send_replace(Some(why));
                    self.attempts.send_modify(|n| *n += 1);
                    return;
                }
                (Ok(Ok(conn)), Some(Err(Claim::Failed(err)))) => {
                    tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "cannot claim the broker namespace");
                    let _ = conn.close(200, "claim failed").await;
                }
                (Ok(Ok(conn)), claimed) => {
                    tracing::info!(url = %redact(&url), "broker connected");
                    // Held for as long as the connection: its consumer keeps the claim alive.
                    let _claim = claimed.and_then(Result::ok);
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
                (Ok(Err(err)), _) => tracing::warn!(error = %err, retry_in_ms = backoff.as_millis() as u64, "broker unreachable"),
                (Err(_), _) => tracing::warn!(retry_in_ms = backoff.as_millis() as u64, "broker connect timed out"),
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

enum Claim {
    /// Declared with another deployment's name.
    Taken,
    Failed(lapin::Error),
}

/// Claims the namespace for `deployment` on `conn` (see [`Broker::start`]); the channel returned
/// holds the claim's consumer.
async fn claim(conn: &Connection, topology: &Topology, deployment: &str) -> Result<Channel, Claim> {
    let channel = conn.create_channel().await.map_err(Claim::Failed)?;
    // IMPORTANT: the broker compares only the arguments it knows when a queue is declared
    // again (an `x-` name of our own would be accepted whatever its value), so the deployment
    // is named in one it compares. Nothing is ever published here: nothing is dead-lettered.
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(topology.dead_letter_exchange().into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(format!("deployment-{deployment}").into()));
    args.insert("x-expires".into(), AMQPValue::LongUInt(CLAIM_EXPIRES_MS));
    let queue = topology.claim_queue();
    match channel.queue_declare(&queue, QueueDeclareOptions { durable: true, ..Default::default() }, args).await {
        Ok(_) => {}
        Err(lapin::Error::ProtocolError(e)) if e.get_id() == 406 => return Err(Claim::Taken),
        Err(e) => return Err(Claim::Failed(e)),
    }
    channel
        .basic_consume(&queue, "aiedge-claim", BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
        .await
        .map_err(Claim::Failed)?;
    Ok(channel)
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
    if topology.job_queues == QueueType::Quorum {
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    }
    channel.queue_declare(&queue, QueueDeclareOptions { durable: true, ..Default::default() }, args).await?;
    channel.queue_bind(&queue, &exchange, node_id, QueueBindOptions::default(), FieldTable::default()).await?;
    Ok(())
}
