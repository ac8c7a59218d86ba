//! `node-agent run` end to end against the real RabbitMQ: registration, signed heartbeats, the
//! private state file, clean exit on SIGTERM, restart without a token, and reconnecting after
//! the broker connection is cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties, Consumer, ExchangeKind};
use shared::wire::{verify, Heartbeat, RegisterResponse, HDR_NODE_ID, HDR_SIGNATURE, HEARTBEAT_EXCHANGE};

/// A private, auto-deleted queue bound to the heartbeat exchange, consumed with auto-ack.
async fn listen() -> (Connection, Consumer) {
    let props =
        ConnectionProperties::default().with_executor(tokio_executor_trait::Tokio::current()).with_reactor(tokio_reactor_trait::Tokio);
    let conn = Connection::connect(&common::amqp_url(), props).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        HEARTBEAT_EXCHANGE,
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
        FieldTable::default(),
    )
    .await
    .unwrap();
    let queue = ch
        .queue_declare("", QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(queue.name().as_str(), HEARTBEAT_EXCHANGE, "", QueueBindOptions::default(), FieldTable::default()).await.unwrap();
    let consumer = ch
        .basic_consume(queue.name().as_str(), "", BasicConsumeOptions { no_ack: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    (conn, consumer)
}

fn header(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// The next heartbeat from `node_id` (others on the shared exchange are skipped), after checking
/// everything the server relies on: the headers, the signature and the message properties.
async fn next_heartbeat(consumer: &mut Consumer, node_id: &str, node_key: &str, agent: &common::Agent) -> Heartbeat {
    let wait = async {
        loop {
            let delivery = consumer.next().await.expect("consumer ended").expect("delivery error");
            if header(&delivery, HDR_NODE_ID).as_deref() != Some(node_id) {
                continue;
            }
            let sig = header(&delivery, HDR_SIGNATURE).expect("no signature header");
            assert!(verify(node_key, &delivery.data, &sig), "signature does not verify");
            assert!(!verify("another-key", &delivery.data, &sig));
            let p = &delivery.properties;
            assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
            assert_eq!(*p.delivery_mode(), Some(1), "heartbeats must not be persistent");
            let ttl: u64 = p.expiration().as_ref().expect("no expiration").as_str().parse().unwrap();
            assert!((200..=10_000).contains(&ttl), "expiration {ttl}");
            return serde_json::from_slice::<Heartbeat>(&delivery.data).unwrap();
        }
    };
    match tokio::time::timeout(Duration::from_secs(20), wait).await {
        Ok(hb) => hb,
        Err(_) => panic!("no heartbeat within 20 s; agent log:\n{}", agent.log_text()),
    }
}

fn check_metrics(hb: &Heartbeat) {
    let m = &hb.metrics;
    assert!((0.0..=100.0).contains(&m.free_cpu_pct), "{m:?}");
    assert!((0.0..=100.0).contains(&m.free_mem_pct), "{m:?}");
    assert!(m.free_ram_gib > 0.0, "{m:?}");
    assert!(m.events_per_sec > 0.0, "benchmark must run before the first heartbeat: {m:?}");
    assert_eq!(m.running_jobs, 0);
}

/// SIGTERM, then expect exit code 0 within 5 s; returns the agent's log.
async fn stop(mut agent: common::Agent) -> String {
    agent.terminate();
    let status = tokio::task::spawn_blocking(move || {
        let status = agent.wait_timeout(Duration::from_secs(5));
        (status, agent.log_text())
    })
    .await
    .unwrap();
    match status {
        (Some(s), log) => {
            assert_eq!(s.code(), Some(0), "exit after SIGTERM; log:\n{log}");
            log
        }
        (None, log) => panic!("agent still running 5 s after SIGTERM; log:\n{log}"),
    }
}

/// A clean shutdown closes the broker connection politely: no errors from lapin on the way out.
fn assert_clean_shutdown(log: &str) {
    assert!(log.contains("shutting down") && log.contains("node-agent stopped"), "{log}");
    assert!(!log.contains(" ERROR ") && !log.contains(" WARN "), "{log}");
}

fn registration(node_id: &str, node_key: &str, amqp_url: &str) -> String {
    serde_json::to_string(&RegisterResponse {
        node_id: node_id.into(),
        node_key: node_key.into(),
        amqp_url: amqp_url.into(),
        heartbeat_exchange: HEARTBEAT_EXCHANGE.into(),
        heartbeat_interval_ms: 2000,
        // No job queue: this fake server predates jobs, so the agent only sends heartbeats.
        jobs_queue: String::new(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_sends_signed_heartbeats_and_restarts_without_token() {
    let node_id = common::unique("node");
    let node_key = common::unique("key");
    let server = common::FakeServer::start(200, registration(&node_id, &node_key, &common::amqp_url()));
    let (_conn, mut consumer) = listen().await;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let state_file = work.join("node-agent-state.json");

    let mut cmd = common::agent();
    cmd.args(["run", "--server", &server.url, "--token", "one-time", "--name", "pi-7", "--heartbeat-interval", "200ms", "--work-dir"])
        .arg(&work);
    let agent = common::Agent::spawn(cmd, dir.path().join("first.log"));

    let first = next_heartbeat(&mut consumer, &node_id, &node_key, &agent).await;
    assert_eq!(first.node_id, node_id);
    assert_eq!(first.seq, 0);
    let facts = first.facts.clone().expect("first heartbeat of a connection carries the facts");
    assert_eq!(facts.arch, std::env::consts::ARCH);
    check_metrics(&first);
    let second = next_heartbeat(&mut consumer, &node_id, &node_key, &agent).await;
    assert!(second.seq > first.seq);
    assert!(second.facts.is_none(), "facts only on the first heartbeat of a connection");
    assert!(second.sent_at_ms >= first.sent_at_ms);

    // Registered exactly once, with the token, the name and the facts.
    let requests = server.registrations();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path, "/agent/v1/register");
    let sent: shared::wire::RegisterRequest = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(sent.token, "one-time");
    assert_eq!(sent.name.as_deref(), Some("pi-7"));
    assert_eq!(sent.facts.hostname, facts.hostname);

    // The credentials are kept privately.
    assert_eq!(common::mode(&state_file), 0o600);
    // Others may pass through it to their job directories (the sandbox probe opens it so at
    // start), never list or write it.
    assert_eq!(common::mode(&work) & 0o766, 0o700);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state_file).unwrap()).unwrap();
    assert_eq!(saved["node_id"], node_id.as_str());
    assert_eq!(saved["node_key"], node_key.as_str());
    assert_eq!(saved["server"], server.url.as_str());
    assert_eq!(saved["heartbeat_exchange"], HEARTBEAT_EXCHANGE);

    assert_clean_shutdown(&stop(agent).await);

    // Restart from the state file alone: no token, no server.
    let mut cmd = common::agent();
    cmd.args(["run", "--heartbeat-interval", "200ms", "--state-file"]).arg(&state_file).arg("--work-dir").arg(&work);
    let agent = common::Agent::spawn(cmd, dir.path().join("second.log"));
    let resumed = next_heartbeat(&mut consumer, &node_id, &node_key, &agent).await;
    assert_eq!(resumed.seq, 0, "a new process starts counting again");
    assert!(resumed.facts.is_some());
    check_metrics(&resumed);
    assert_eq!(server.registrations().len(), 1, "no second registration");
    assert!(server.requests().iter().any(|r| r.path == shared::wire::HELLO_PATH), "the agent checks in with its credentials");
    assert_clean_shutdown(&stop(agent).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_broker_connection_is_cut() {
    let proxy = common::Proxy::start("127.0.0.1:5672").await;
    let proxied = common::amqp_url().replace("127.0.0.1:5672", &format!("127.0.0.1:{}", proxy.port));
    assert_ne!(proxied, common::amqp_url(), "the test broker URL must name 127.0.0.1:5672");
    let node_id = common::unique("node");
    let node_key = common::unique("key");
    // The server hands out the real broker; --amqp-url sends the agent through the proxy.
    let server = common::FakeServer::start(200, registration(&node_id, &node_key, &common::amqp_url()));
    let (_conn, mut consumer) = listen().await;
    let dir = tempfile::tempdir().unwrap();

    let mut cmd = common::agent();
    cmd.args(["run", "--server", &server.url, "--token", "t", "--heartbeat-interval", "200ms", "--amqp-url", &proxied, "--work-dir"])
        .arg(dir.path());
    let agent = common::Agent::spawn(cmd, dir.path().join("agent.log"));

    let before = next_heartbeat(&mut consumer, &node_id, &node_key, &agent).await;
    assert!(before.facts.is_some());
    assert_eq!(proxy.cut(), 1, "the agent holds exactly one broker connection");

    // After the cut: a new connection, whose first heartbeat carries the facts again.
    let after = loop {
        let hb = next_heartbeat(&mut consumer, &node_id, &node_key, &agent).await;
        if hb.facts.is_some() {
            break hb;
        }
    };
    assert!(after.seq > before.seq, "seq keeps counting across reconnects");
    assert!(agent.log_text().contains("reconnected to broker"), "{}", agent.log_text());
    stop(agent).await;
}
