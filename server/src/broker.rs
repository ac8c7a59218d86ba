//! The connection to RabbitMQ, kept alive in the background. The server starts and serves pages
//! while the broker is away; the connection comes back with capped exponential backoff and
//! jitter, and `/healthz` says whether it is up.

use std::sync::Arc;
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use rand::Rng;
use tokio::sync::{Notify, RwLock};
use tokio_util::sync::CancellationToken;

use crate::config::redact;

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Broker {
    conn: Arc<RwLock<Option<Connection>>>,
}

impl Broker {
    /// Starts the background task that connects, and reconnects after every loss, until
    /// `cancel` fires.
    pub fn start(url: String, cancel: CancellationToken) -> Self {
        let broker = Self { conn: Arc::new(RwLock::new(None)) };
        tokio::spawn(broker.clone().supervise(url, cancel));
        broker
    }

    /// True while the connection is open.
    pub async fn is_connected(&self) -> bool {
        self.conn.read().await.as_ref().is_some_and(|c| c.status().connected())
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
