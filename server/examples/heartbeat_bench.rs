//! Heartbeat ingest benchmark: how many signed heartbeats per second one server checks, scores
//! and records without a growing backlog, and what an idle agent costs.
//!
//!     cargo run --release -p server --example heartbeat_bench -- --nodes 10000 --seconds 20
//!
//! It starts the real server in-process (SQLite in a temp dir, or `--database-url`), enrols
//! `--nodes` nodes, then:
//! 1. steady: publishes one heartbeat per node every `--interval` for `--seconds`, sampling the
//!    server queue's depth each second (a server that keeps up holds it near zero);
//! 2. flood: publishes `--flood` heartbeats as fast as it can and times how long the server
//!    takes to drain them: the ingest ceiling.
//!
//! With `--agent-bin`, it also runs one real agent for `--seconds` and reports its resident
//! memory and CPU time. Publisher and server share this machine's cores, so the ceiling is a
//! lower bound.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic

use std::time::{Duration, Instant};

use clap::Parser;
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    /// Simulated nodes.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Heartbeat interval of each simulated node.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Length of the steady phase, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Heartbeats in the flood phase.
    #[arg(long, default_value_t = 100_000)]
    flood: usize,
    /// Database URL (default: SQLite in a temp dir).
    #[arg(long)]
    database_url: Option<String>,
    /// RabbitMQ URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// A node-agent binary to measure idle.
    #[arg(long)]
    agent_bin: Option<std::path::PathBuf>,
}

fn heartbeat(node_id: &str, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&shared::wire::Heartbeat {
        node_id: node_id.to_string(),
        seq,
        sent_at_ms: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64),
        metrics: shared::wire::NodeMetrics {
            free_cpu_pct: 50.0 + (seq % 50) as f64,
            free_mem_pct: 60.0,
            free_ram_gib: 3.5,
            events_per_sec: 2500.0,
            temperature_c: Some(55.0),
            running_jobs: 0,
        },
        facts: None,
        instance: None,
        draining: false,
    })
    .unwrap_or_default()
}

fn props(node_id: &str, sig: String) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(shared::wire::HDR_NODE_ID.into(), AMQPValue::LongString(node_id.into()));
    headers.insert(shared::wire::HDR_SIGNATURE.into(), AMQPValue::LongString(sig.into()));
    BasicProperties::default().with_headers(headers).with_expiration("60000".into())
}

async fn depth(ch: &lapin::Channel, queue: &str) -> u32 {
    ch.queue_declare(queue, QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .map(|q| q.message_count())
        .unwrap_or(u32::MAX)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let namespace = format!("aiedge-bench-{}", uuid::Uuid::new_v4().simple());
    let mut cli = vec!["server".to_string(), "--data-dir".into(), dir.path().display().to_string()];
    cli.extend(["--amqp-url".into(), args.amqp_url.clone(), "--amqp-namespace".into(), namespace.clone()]);
    if let Some(url) = &args.database_url {
        cli.extend(["--database-url".into(), url.clone()]);
    }
    // Generous timeout: the bench measures ingest, not liveness.
    cli.extend(["--heartbeat-timeout".into(), "60s".into()]);
    let config = server::config::Cli::try_parse_from(cli)?.config;

    let state = server::build_state(&config).await?;
    let owner = aiedge_store::users::create(&state.db, "bench@example.org", "bench password", None, app::auth::Role::User)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    let mut nodes = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let new =
            aiedge_store::nodes::add(&state.db, &state.settings.thermal, &state.settings.public_url, &owner.id, &format!("node-{i:05}"))
                .await?;
        let key = state.node_keys.key_for(&new.node.id);
        nodes.push((new.node.id, key));
    }
    println!("enrolled {} nodes in {:.1} s", args.nodes, t.elapsed().as_secs_f64());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server_task = tokio::spawn(server::launch(config.clone(), listener, shutdown.clone()));
    for _ in 0..100 {
        if reqwest::get(format!("{base}/healthz")).await.map(|r| r.status() == 200).unwrap_or(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let topology = server::broker::Topology::new(&namespace);
    let (exchange, queue) = (topology.heartbeat_exchange(), topology.heartbeat_queue());
    let conn = Connection::connect(
        &args.amqp_url,
        ConnectionProperties::default().with_executor(tokio_executor_trait::Tokio::current()).with_reactor(tokio_reactor_trait::Tokio),
    )
    .await?;
    let ch = conn.create_channel().await?;
    let probe = conn.create_channel().await?;

    // 1. Steady: every node once per interval, spread evenly.
    let rate = args.nodes as f64 / args.interval.as_secs_f64();
    println!("steady: {} nodes every {:?} = {rate:.0} heartbeats/s for {} s", args.nodes, args.interval, args.seconds);
    let mut seq = 1u64;
    let mut max_depth = 0u32;
    let mut sent = 0u64;
    let start = Instant::now();
    let mut next_report = Duration::from_secs(1);
    while start.elapsed() < Duration::from_secs(args.seconds) {
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let (id, key) = &nodes[(sent as usize) % nodes.len()];
            let body = heartbeat(id, seq + sent / nodes.len() as u64);
            let sig = shared::wire::sign(key, &body);
            ch.basic_publish(&exchange, "", BasicPublishOptions::default(), &body, props(id, sig)).await?;
            sent += 1;
        }
        if start.elapsed() >= next_report {
            let d = depth(&probe, &queue).await;
            max_depth = max_depth.max(d);
            println!("  t={:>3} s  sent {sent:>8}  queue depth {d}", next_report.as_secs());
            next_report += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seq += sent / nodes.len() as u64 + 1;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end_depth = depth(&probe, &queue).await;
    println!(
        "steady: sent {sent} ({:.0}/s), max queue depth {max_depth}, depth 2 s after: {end_depth}",
        sent as f64 / start.elapsed().as_secs_f64()
    );

    // 2. Flood: as fast as we can publish; time the drain.
    let start = Instant::now();
    for i in 0..args.flood {
        let (id, key) = &nodes[i % nodes.len()];
        let body = heartbeat(id, seq + (i / nodes.len()) as u64);
        let sig = shared::wire::sign(key, &body);
        ch.basic_publish(&exchange, "", BasicPublishOptions::default(), &body, props(id, sig)).await?;
    }
    let published = start.elapsed();
    loop {
        let d = depth(&probe, &queue).await;
        if d == 0 {
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            println!("flood: gave up with {d} left");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained = start.elapsed();
    println!(
        "flood: {} heartbeats published in {:.2} s, drained in {:.2} s = {:.0} heartbeats/s ingested",
        args.flood,
        published.as_secs_f64(),
        drained.as_secs_f64(),
        args.flood as f64 / drained.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let recent: (i64,) = sqlx::query_as("select count(*) from nodes where last_heartbeat_at is not null").fetch_one(&state.db.pool).await?;
    println!("nodes with a recorded heartbeat: {} of {}", recent.0, args.nodes);

    if let Some(bin) = &args.agent_bin {
        idle_agent(&state, &owner.id, bin, &base, args.seconds).await?;
    }

    shutdown.cancel();
    let _ = server_task.await;
    let _ = probe.queue_delete(&queue, Default::default()).await;
    let _ = probe.exchange_delete(&exchange, Default::default()).await;
    let _ = conn.close(200, "bench done").await;
    Ok(())
}

/// Runs one real agent for `seconds` and reports its resident memory and CPU time.
async fn idle_agent(state: &app::backend::AppState, owner_id: &str, bin: &std::path::Path, base: &str, seconds: u64) -> anyhow::Result<()> {
    let new = aiedge_store::nodes::add(&state.db, &state.settings.thermal, &state.settings.public_url, owner_id, "idle-agent").await?;
    let dir = tempfile::tempdir()?;
    let mut child = std::process::Command::new(bin)
        .args(["run", "--server", base, "--token", &new.token, "--name", "idle-agent"])
        .arg("--state-file")
        .arg(dir.path().join("state.json"))
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id();
    // Let start-up (registration, first benchmark) finish, then measure the idle part.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(str::to_string))
            .map(|rest| rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum())
            .unwrap_or(0)
    };
    let rss_kb = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
            .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    };
    let t0 = ticks(pid);
    let mut max_rss = 0;
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        max_rss = max_rss.max(rss_kb(pid));
    }
    let cpu_s = (ticks(pid) - t0) as f64 / 100.0;
    println!(
        "idle agent over {seconds} s: resident {:.1} MB (max), CPU {cpu_s:.2} s = {:.2} % of one core",
        max_rss as f64 / 1024.0,
        cpu_s / seconds as f64 * 100.0
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
