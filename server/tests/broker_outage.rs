//! The broker goes away while agents run: every AMQP connection (server's and agents') runs
//! through a TCP proxy that the test cuts and refuses for a few seconds. Server and agents must
//! reconnect by themselves and the nodes must be active again within a few seconds, with
//! nothing lost on the server (the accounts and nodes are all still there).
//!
//! A test binary of its own, so no other test shares the proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{agent_bin, DbKind, TestServer};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const PASSWORD: &str = "correct horse battery";

/// A TCP proxy to the real broker that can drop every connection and refuse new ones.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<tokio::sync::Mutex<JoinSet<()>>>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<tokio::sync::Mutex<JoinSet<()>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else { return };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                conns2.lock().await.spawn(async move {
                    if let Ok(mut broker) = TcpStream::connect("127.0.0.1:5672").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
                    }
                });
            }
        });
        Self { port, up, conns }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    /// Drops every open connection and refuses new ones for `down`.
    async fn cut_for(&self, down: Duration) {
        self.up.store(false, Ordering::SeqCst);
        self.conns.lock().await.abort_all();
        tokio::time::sleep(down).await;
        self.up.store(true, Ordering::SeqCst);
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn nodes(client: &common::Client) -> Vec<Value> {
    let v: Value = client.http.get(client.url("/api/nodes/mine")).send().await.unwrap().json().await.unwrap();
    v.as_array().cloned().unwrap_or_default()
}

on_both_databases!(agents_and_server_come_back_after_the_broker_connection_is_cut);

async fn agents_and_server_come_back_after_the_broker_connection_is_cut(db: DbKind) {
    let proxy = Proxy::start().await;
    let server = TestServer::start_with(db, |c| {
        c.amqp_url = proxy.url();
        c.heartbeat_timeout = Duration::from_secs(2);
        c.heartbeat_interval = Duration::from_millis(300);
    })
    .await;
    let owner = server.client();
    owner.register("owner@example.org", PASSWORD).await;
    let mut agents = Vec::new();
    let mut dirs = Vec::new();
    for name in ["one", "two"] {
        let new: Value = owner.call("/api/nodes/add", &[("name", name)]).await.json().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(agent_bin())
            .args(["run", "--server", &server.base, "--name", name, "--token", new["token"].as_str().unwrap()])
            .arg("--state-file")
            .arg(dir.path().join("state.json"))
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .args(["--heartbeat-interval", "300ms", "--benchmark-interval", "1h"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        agents.push(Agent(child));
        dirs.push(dir);
    }
    let all_active = |list: &[Value]| list.len() == 2 && list.iter().all(|n| n["status"] == "active");
    let start = Instant::now();
    while !all_active(&nodes(&owner).await) {
        assert!(start.elapsed() < Duration::from_secs(20), "nodes never active: {:?}", nodes(&owner).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Cut everything for longer than the dead-node timeout. The server hears nothing, so it
    // cannot tell a dead node from its own lost link: it declares nobody dead (their running
    // jobs, which report over HTTP, carry on)...
    proxy.cut_for(Duration::from_secs(4)).await;
    // The server stamps a heartbeat with its (this machine's) clock when it receives it.
    let cut_over_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let list = nodes(&owner).await;
    assert!(all_active(&list), "nodes declared dead while the server could not hear them: {list:?}");
    let cut_over = Instant::now();

    // ...and both sides reconnect by themselves: fresh heartbeats within seconds.
    loop {
        let list = nodes(&owner).await;
        let fresh = list.iter().all(|n| n["last_heartbeat_ms"].as_i64().unwrap_or(0) > cut_over_ms);
        if all_active(&list) && fresh {
            break;
        }
        assert!(cut_over.elapsed() < Duration::from_secs(15), "not back within 15 s: {list:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back_after = cut_over.elapsed();
    eprintln!("heartbeats flowing again {back_after:?} after the broker came back");

    // Heartbeats flow only once the server's consumer is back, so this is quick.
    let mut healthy = false;
    for _ in 0..50 {
        if reqwest::get(server.url("/healthz")).await.unwrap().status() == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(healthy, "server's broker connection back");
    assert_eq!(owner.me().await["email"], "owner@example.org", "nothing lost on the server");
    drop(agents);
    server.stop().await;
}
