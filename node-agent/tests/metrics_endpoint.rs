//! `node-agent run --metrics-bind`: the real agent against the real RabbitMQ serves its own
//! Prometheus metrics, whose heartbeat counter moves with the heartbeats the broker confirms;
//! without the flag the agent listens on no port at all.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use shared::wire::{RegisterResponse, HEARTBEAT_EXCHANGE};

/// A fake server's registration answer: no job queue, so the agent only sends heartbeats.
fn registration() -> String {
    serde_json::to_string(&RegisterResponse {
        node_id: common::unique("node"),
        node_key: common::unique("key"),
        amqp_url: common::amqp_url(),
        heartbeat_exchange: HEARTBEAT_EXCHANGE.into(),
        heartbeat_interval_ms: 2000,
        jobs_queue: String::new(),
    })
    .unwrap()
}

/// The heartbeat exchange, as the server declares it (the agent only checks that it exists).
fn declare_heartbeat_exchange() {
    use lapin::options::ExchangeDeclareOptions;
    use lapin::{types::FieldTable, Connection, ConnectionProperties, ExchangeKind};
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let props =
            ConnectionProperties::default().with_executor(tokio_executor_trait::Tokio::current()).with_reactor(tokio_reactor_trait::Tokio);
        let conn = Connection::connect(&common::amqp_url(), props).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        ch.exchange_declare(HEARTBEAT_EXCHANGE, ExchangeKind::Fanout, durable, FieldTable::default()).await.unwrap();
        conn.close(200, "declared").await.unwrap();
    });
}

/// A loopback port nobody listens on (free a moment ago).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One HTTP/1.1 GET; the status line and the body, or `None` if nothing answers.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/plain\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length: "))?.parse().ok()?;
    assert_eq!(length, body.len(), "content-length must match the body: {head}");
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// The value of the sample named exactly `series` (name and labels as exported).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Scrapes until `ready(body)`, for up to 20 s.
fn scrape_until(port: u16, agent: &common::Agent, ready: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        if let Some((status, body)) = get(port, "/metrics") {
            assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
            if ready(&body) {
                return body;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(20), "metrics never got there; agent log:\n{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stop(mut agent: common::Agent) {
    agent.terminate();
    let status = agent.wait_timeout(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit after SIGTERM; log:\n{}", agent.log_text());
}

#[test]
fn metrics_bind_serves_counters_that_move_with_heartbeats() {
    declare_heartbeat_exchange();
    let server = common::FakeServer::start(200, registration());
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cmd = common::agent();
    cmd.args(["run", "--server", &server.url, "--token", "t", "--heartbeat-interval", "200ms"])
        .args(["--metrics-bind", &format!("127.0.0.1:{port}"), "--work-dir"])
        .arg(dir.path().join("work"));
    let agent = common::Agent::spawn(cmd, dir.path().join("agent.log"));

    let sent = "aiedge_agent_heartbeats_sent_total";
    let first = scrape_until(port, &agent, |b| sample(b, sent).is_some_and(|n| n >= 1.0));
    let before = sample(&first, sent).unwrap();
    // The broker confirms the next heartbeats; the counter follows.
    let later = scrape_until(port, &agent, |b| sample(b, sent).is_some_and(|n| n >= before + 2.0));

    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(sample(&later, &format!("aiedge_agent_build_info{{version=\"{version}\"}}")), Some(1.0), "{later}");
    assert_eq!(sample(&later, "aiedge_agent_heartbeats_failed_total"), Some(0.0), "{later}");
    assert_eq!(sample(&later, "aiedge_agent_jobs_running"), Some(0.0), "{later}");
    for outcome in ["succeeded", "app_error", "node_error", "stopped"] {
        let series = format!("aiedge_agent_jobs_run_total{{outcome=\"{outcome}\"}}");
        assert_eq!(sample(&later, &series), Some(0.0), "counters start at 0 with their labels: {later}");
    }
    // The start-up benchmark ran before the first heartbeat, and is timed.
    assert_eq!(sample(&later, "aiedge_agent_benchmark_duration_seconds_count"), Some(1.0), "{later}");
    assert_eq!(sample(&later, "aiedge_agent_benchmark_duration_seconds_bucket{le=\"+Inf\"}"), Some(1.0), "{later}");
    assert!(sample(&later, "aiedge_agent_benchmark_events_per_second").is_some_and(|e| e > 0.0), "{later}");
    // One prefix, described, and typed.
    for line in later.lines().filter(|l| !l.is_empty()) {
        let name = line.trim_start_matches("# HELP ").trim_start_matches("# TYPE ");
        assert!(name.starts_with("aiedge_agent_"), "{line}");
    }
    assert!(later.contains("# TYPE aiedge_agent_heartbeats_sent_total counter"), "{later}");
    assert!(later.contains("# HELP aiedge_agent_benchmark_duration_seconds "), "{later}");

    // The one socket it listens on (the check that finds none without the flag, below).
    let listening = socket_inodes(agent.child.id()).intersection(&listening_inodes()).count();
    assert_eq!(listening, 1, "the agent listens on the metrics port only");

    // Only /metrics is there.
    let (status, _) = get(port, "/").unwrap();
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert!(agent.log_text().contains("serving metrics"), "{}", agent.log_text());
    stop(agent);
    assert!(get(port, "/metrics").is_none(), "the listener closes with the agent");
}

/// The inodes of the TCP sockets listening on this machine (IPv4 and IPv6).
fn listening_inodes() -> HashSet<String> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl, local, remote, state (0A: LISTEN), queues, timer, retransmits, uid, timeout, inode
            if fields.len() > 9 && fields[3] == "0A" {
                inodes.insert(fields[9].to_string());
            }
        }
    }
    inodes
}

/// The socket inodes among a process's open files.
fn socket_inodes(pid: u32) -> HashSet<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| Some(target.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string()))
        .collect()
}

#[test]
fn without_metrics_bind_nothing_listens() {
    declare_heartbeat_exchange();
    let server = common::FakeServer::start(200, registration());
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::agent();
    cmd.args(["run", "--server", &server.url, "--token", "t", "--heartbeat-interval", "200ms", "--work-dir"]).arg(dir.path().join("work"));
    let agent = common::Agent::spawn(cmd, dir.path().join("agent.log"));

    // Running for real: registered, connected, heartbeats confirmed.
    let start = Instant::now();
    while !agent.log_text().contains("heartbeat sent") {
        assert!(start.elapsed() < Duration::from_secs(20), "no heartbeat; agent log:\n{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let sockets = socket_inodes(agent.child.id());
    assert!(!sockets.is_empty(), "the agent holds its broker connection");
    let listening: Vec<_> = sockets.intersection(&listening_inodes()).cloned().collect();
    assert!(listening.is_empty(), "the agent listens on sockets {listening:?} without --metrics-bind");
    assert!(!agent.log_text().contains("serving metrics"), "{}", agent.log_text());
    stop(agent);
}

#[test]
fn a_metrics_address_in_use_stops_the_agent_with_a_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::agent();
    cmd.args(["run", "--server", "http://127.0.0.1:9", "--token", "t", "--metrics-bind", &addr, "--work-dir"]).arg(dir.path().join("work"));
    let mut agent = common::Agent::spawn(cmd, dir.path().join("agent.log"));
    let status = agent.wait_timeout(Duration::from_secs(10)).expect("the agent must stop");
    assert_eq!(status.code(), Some(1), "{}", agent.log_text());
    assert!(agent.log_text().contains(&format!("cannot listen on {addr} for metrics")), "{}", agent.log_text());
}
