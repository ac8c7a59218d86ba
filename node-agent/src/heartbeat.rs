//! The RabbitMQ link that carries heartbeats.
//!
//! One connection, one channel in publisher-confirm mode, and the durable fanout exchange the
//! server declared, checked (passively) on every (re)connect; until the server has declared it,
//! the agent keeps reconnecting.
//! Heartbeats are non-persistent and expire after a few intervals: a heartbeat nobody read in
//! time is worthless, and this keeps them from piling up while the server is away.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use shared::wire::{sign, Heartbeat, HDR_NODE_ID, HDR_SIGNATURE};
use tokio::sync::Notify;

/// AMQP delivery mode 1: the broker keeps the message in memory only.
const NON_PERSISTENT: u8 = 1;

/// An open connection ready to publish heartbeats.
pub struct Link {
    connection: Connection,
    channel: Channel,
    exchange: String,
    lost: Arc<Notify>,
}

impl Link {
    /// Connects, enables publisher confirms and checks that the heartbeat exchange exists (the
    /// server declares it; a node's broker user may not declare anything).
    pub async fn open(amqp_url: &str, exchange: &str) -> lapin::Result<Self> {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio)
            .with_connection_name(concat!("node-agent/", env!("CARGO_PKG_VERSION")).into());
        let connection = Connection::connect(amqp_url, props).await?;
        let lost = Arc::new(Notify::new());
        {
            let lost = Arc::clone(&lost);
            // `notify_one` keeps a permit, so a loss between two awaits is not missed.
            connection.on_error(move |err| {
                tracing::debug!(error = %err, "broker connection error");
                lost.notify_one();
            });
        }
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channel
            .exchange_declare(
                exchange,
                ExchangeKind::Fanout,
                ExchangeDeclareOptions { passive: true, durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await?;
        Ok(Self { connection, channel, exchange: exchange.to_string(), lost })
    }

    /// Resolves when the broker connection fails.
    pub async fn lost(&self) {
        self.lost.notified().await;
    }

    /// Publishes one signed heartbeat and waits for the broker's confirm.
    pub async fn publish(&self, heartbeat: &Heartbeat, node_key: &str, expiration: Duration) -> anyhow::Result<()> {
        let body = serde_json::to_vec(heartbeat)?;
        let mut headers = FieldTable::default();
        headers.insert(HDR_NODE_ID.into(), AMQPValue::LongString(LongString::from(heartbeat.node_id.as_bytes())));
        headers.insert(HDR_SIGNATURE.into(), AMQPValue::LongString(LongString::from(sign(node_key, &body))));
        let props = BasicProperties::default()
            .with_content_type(ShortString::from("application/json"))
            .with_type(ShortString::from("heartbeat"))
            .with_delivery_mode(NON_PERSISTENT)
            .with_expiration(ShortString::from(expiration.as_millis().to_string()))
            .with_timestamp(u64::try_from(heartbeat.sent_at_ms / 1000).unwrap_or(0))
            .with_headers(headers);
        let confirm = self.channel.basic_publish(&self.exchange, "", BasicPublishOptions::default(), &body, props).await?.await?;
        if confirm.is_nack() {
            anyhow::bail!("broker refused the heartbeat (nack)");
        }
        Ok(())
    }

    /// Closes the connection politely and waits for lapin's IO thread to finish, each step at
    /// most `timeout`.
    pub async fn close(self, timeout: Duration) {
        let Self { connection, channel, .. } = self;
        let close = connection.close(200, "node-agent shutting down");
        match tokio::time::timeout(timeout, close).await {
            Ok(Ok(())) => tracing::debug!("broker connection closed"),
            Ok(Err(err)) => tracing::debug!(error = %err, "closing broker connection"),
            Err(_) => tracing::debug!("closing broker connection timed out"),
        }
        // Only now: dropping a lapin channel closes it, which would race the connection close.
        drop(channel);
        // IMPORTANT: lapin's IO thread still uses tokio's reactor for a moment after the close
        // is confirmed. Waiting for it here, while the runtime is alive, avoids an IO error (and
        // an ERROR log line) from that thread when the runtime shuts down.
        let io_thread = tokio::task::spawn_blocking(move || connection.run());
        if tokio::time::timeout(timeout, io_thread).await.is_err() {
            tracing::debug!("broker IO thread still running after close");
        }
    }
}
