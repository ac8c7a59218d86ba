//! Nodes end to end with real `node-agent` processes and the real RabbitMQ: registration with
//! one-time tokens, heartbeats, death on silence, return without a new token, refused tokens,
//! and forged or malformed messages on the heartbeat exchange.
//!
//! The agent binary is the one cargo built beside these tests (`cargo test -p node-agent -p
//! server` builds it), or `AIEDGE_AGENT_BIN`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{agent_bin, DbKind, TestServer};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, ConnectionProperties};
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";
const TIMEOUT: Duration = Duration::from_millis(2000);
const INTERVAL: Duration = Duration::from_millis(300);

on_both_databases!(
    agents_register_beat_die_and_come_back,
    forged_and_malformed_heartbeats_are_dropped,
    a_removed_node_is_refused_and_its_agent_stops,
);

struct Agent {
    child: Child,
}

impl Agent {
    fn start(server: &TestServer, dir: &Path, token: Option<&str>, name: &str) -> Self {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("run")
            .args(["--server", &server.base, "--name", name])
            .arg("--state-file")
            .arg(dir.join("state.json"))
            .arg("--work-dir")
            .arg(dir.join("work"))
            .args(["--heartbeat-interval", "300ms", "--benchmark-interval", "1h"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        Self { child: cmd.spawn().expect("start node-agent") }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the agent to exit by itself; returns its status and stderr.
    fn wait_exit(mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                let mut err = String::new();
                use std::io::Read;
                let _ = self.child.stderr.take().expect("stderr").read_to_string(&mut err);
                return (status, err);
            }
            assert!(Instant::now() < deadline, "agent did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn add_node(client: &common::Client, name: &str) -> Value {
    let res = client.call("/api/nodes/add", &[("name", name)]).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
    res.json().await.unwrap()
}

async fn node(client: &common::Client, id: &str) -> Value {
    let nodes: Value = client.http.get(client.url("/api/nodes/mine")).send().await.unwrap().json().await.unwrap();
    nodes.as_array().unwrap().iter().find(|n| n["id"] == id).cloned().unwrap_or(Value::Null)
}

/// Polls until the node has `status`; returns how long that took.
async fn wait_status(client: &common::Client, id: &str, status: &str, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let n = node(client, id).await;
        if n["status"] == status {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "node {id} not {status} within {within:?}: {n}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fast_server(db: DbKind) -> TestServer {
    TestServer::start_with(db, |c| {
        c.heartbeat_timeout = TIMEOUT;
        c.heartbeat_interval = INTERVAL;
    })
    .await
}

async fn agents_register_beat_die_and_come_back(db: DbKind) {
    let server = fast_server(db).await;
    let owner = server.client();
    owner.register("owner@example.org", PASSWORD).await;
    let a = add_node(&owner, "alpha").await;
    let b = add_node(&owner, "beta").await;
    let (a_id, b_id) = (a["node"]["id"].as_str().unwrap().to_string(), b["node"]["id"].as_str().unwrap().to_string());
    assert_eq!(a["node"]["status"], "waiting");
    assert!(a["command"].as_str().unwrap().contains(a["token"].as_str().unwrap()));
    // Names are unique per owner.
    assert_eq!(owner.call("/api/nodes/add", &[("name", "alpha")]).await.status(), 409);

    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let mut agent_a = Agent::start(&server, dir_a.path(), a["token"].as_str(), "alpha");
    let _agent_b = Agent::start(&server, dir_b.path(), b["token"].as_str(), "beta");
    wait_status(&owner, &a_id, "active", Duration::from_secs(20)).await;
    // Plausible metrics and a score the moment it shows active: the heartbeat that made it so
    // is written with the change, not at the next flush.
    let n = node(&owner, &a_id).await;
    let m = &n["metrics"];
    for key in ["free_cpu_pct", "free_mem_pct"] {
        let v = m[key].as_f64().unwrap_or(-1.0);
        assert!((0.0..=100.0).contains(&v), "{key} = {v}: {n}");
    }
    assert!(m["events_per_sec"].as_f64().unwrap() > 0.0, "{n}");
    assert!(m["free_ram_gib"].as_f64().unwrap() > 0.0, "{n}");
    assert!(n["score"]["total"].as_f64().unwrap() >= 0.0, "{n}");
    assert!(n["facts"]["cpu_cores"].as_u64().unwrap() >= 1, "{n}");
    wait_status(&owner, &b_id, "active", Duration::from_secs(20)).await;
    let state = std::fs::metadata(dir_a.path().join("state.json")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(state.permissions().mode() & 0o777, 0o600, "state file private");

    // SIGKILL: dead within the timeout plus one interval (plus the sweeper's tick).
    agent_a.kill9();
    let took = wait_status(&owner, &a_id, "dead", Duration::from_secs(10)).await;
    assert!(took <= TIMEOUT + INTERVAL + Duration::from_millis(800), "dead after {took:?}");
    assert_eq!(node(&owner, &b_id).await["status"], "active", "the other node lives on");

    // Restarted without a token: the state file is enough.
    let _agent_a = Agent::start(&server, dir_a.path(), None, "alpha");
    wait_status(&owner, &a_id, "active", Duration::from_secs(20)).await;

    // Every transition was recorded with its reason.
    let st = server::build_state(&server.config).await.unwrap();
    let events: Vec<(String, String, String)> =
        sqlx::query_as("select from_status, to_status, reason from node_events where node_id = $1 order by at")
            .bind(&a_id)
            .fetch_all(&st.db.pool)
            .await
            .unwrap();
    let path: Vec<String> = events.iter().map(|(f, t, _)| format!("{f}->{t}")).collect();
    assert_eq!(path, ["waiting->active", "active->dead", "dead->active"], "{events:?}");
    node_page_shows_transitions(&server, &owner, &st, &a_id).await;

    // A used token is refused, clearly.
    let fresh = tempfile::tempdir().unwrap();
    let (status, err) = Agent::start(&server, fresh.path(), a["token"].as_str(), "again").wait_exit(Duration::from_secs(15));
    assert!(!status.success());
    assert!(err.contains("registration refused"), "{err}");

    // An expired token too.
    let c = add_node(&owner, "gamma").await;
    sqlx::query("update node_tokens set expires_at = 0 where node_id = $1")
        .bind(c["node"]["id"].as_str().unwrap())
        .execute(&st.db.pool)
        .await
        .unwrap();
    let dir_c = tempfile::tempdir().unwrap();
    let (status, err) = Agent::start(&server, dir_c.path(), c["token"].as_str(), "gamma").wait_exit(Duration::from_secs(15));
    assert!(!status.success() && err.contains("registration refused"), "{err}");

    // Another user sees none of these nodes.
    let other = server.client();
    other.register("other@example.org", PASSWORD).await;
    let theirs: Value = other.http.get(other.url("/api/nodes/mine")).send().await.unwrap().json().await.unwrap();
    assert_eq!(theirs, Value::Array(vec![]));
    server.stop().await;
}

/// The node's page, through the server function it loads with: its transitions newest first
/// with their reasons, and its charts' history, for the owner and admins; 404 for anyone else,
/// from the function, the page and its live feed.
async fn node_page_shows_transitions(server: &TestServer, owner: &common::Client, st: &app::backend::AppState, id: &str) {
    let detail_url = |window: &str| format!("/api/nodes/detail?id={id}&window={window}");
    let res = owner.http.get(owner.url(&detail_url("15m"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let d: Value = res.json().await.unwrap();
    assert_eq!(d["mine"], true);
    assert_eq!(d["node"]["status"], "active", "{d}");
    let events = d["events"].as_array().unwrap();
    let path: Vec<String> =
        events.iter().map(|e| format!("{}->{}", e["from_status"].as_str().unwrap(), e["to_status"].as_str().unwrap())).collect();
    assert_eq!(path, ["dead->active", "active->dead", "waiting->active"], "newest first: {d}");
    assert_eq!(events[0]["reason"], "heartbeats resumed");
    let died = events[1]["reason"].as_str().unwrap();
    assert!(died.starts_with("no heartbeat for "), "{died}");
    let at: Vec<i64> = events.iter().map(|e| e["at_ms"].as_i64().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] >= w[1]), "{at:?}");
    assert_eq!(d["events_total"], 3);
    assert!(!d["history"].as_array().unwrap().is_empty(), "heartbeats charted: {d}");
    assert_eq!(d["window_ms"], 15 * 60 * 1000);

    // The page carries the timeline in its HTML, before any script runs.
    let res = owner.get(&format!("/nodes/{id}")).await;
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains(r#"data-testid="transitions""#) && html.contains(died), "{html}");
    // The live feed starts with the same page data.
    let mut feed = owner.http.get(owner.url(&format!("/live/nodes?node={id}&window=1h"))).send().await.unwrap();
    assert_eq!(feed.status(), 200);
    let mut first = String::new();
    while !first.contains("\n\n") {
        first.push_str(&String::from_utf8_lossy(&feed.chunk().await.unwrap().expect("feed open")));
    }
    assert!(first.starts_with("event: node") && first.contains(died), "{first}");
    drop(feed);
    assert_eq!(owner.http.get(owner.url(&detail_url("1y"))).send().await.unwrap().status(), 400);

    // An admin sees it too (not as the owner).
    server::admin_cli::create_admin(&st.db, "root@example.org", PASSWORD).await.unwrap();
    let admin = server.client();
    admin.login("root@example.org", PASSWORD).await;
    let res = admin.http.get(admin.url(&detail_url("24h"))).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["mine"], false);

    // Anyone else: not found, exactly like a node that does not exist.
    let stranger = server.client();
    stranger.register("stranger@example.org", PASSWORD).await;
    for url in [detail_url("1h"), "/api/nodes/detail?id=no-such-node&window=1h".to_string()] {
        let res = stranger.http.get(stranger.url(&url)).send().await.unwrap();
        assert_eq!(res.status(), 404, "{url}");
        assert!(!res.text().await.unwrap().contains(id));
    }
    let res = stranger.get(&format!("/nodes/{id}")).await;
    assert_eq!(res.status(), 404);
    assert!(!res.text().await.unwrap().contains(died));
    let res = stranger.http.get(stranger.url(&format!("/live/nodes?node={id}"))).send().await.unwrap();
    assert_eq!(res.status(), 404);
    // And without signing in, nothing.
    let res = reqwest::get(server.url(&detail_url("1h"))).await.unwrap();
    assert_eq!(res.status(), 401);
}

async fn publish(channel: &lapin::Channel, exchange: &str, node_id: Option<&str>, signature: Option<&str>, body: &[u8]) {
    let mut headers = FieldTable::default();
    if let Some(id) = node_id {
        headers.insert(shared::wire::HDR_NODE_ID.into(), AMQPValue::LongString(id.into()));
    }
    if let Some(sig) = signature {
        headers.insert(shared::wire::HDR_SIGNATURE.into(), AMQPValue::LongString(sig.into()));
    }
    channel
        .basic_publish(exchange, "", BasicPublishOptions::default(), body, BasicProperties::default().with_headers(headers))
        .await
        .unwrap()
        .await
        .unwrap();
}

async fn forged_and_malformed_heartbeats_are_dropped(db: DbKind) {
    let mut server = fast_server(db).await;
    let owner = server.client();
    owner.register("owner@example.org", PASSWORD).await;
    let a = add_node(&owner, "alpha").await;
    let b = add_node(&owner, "beta").await;
    let a_id = a["node"]["id"].as_str().unwrap().to_string();
    let b_id = b["node"]["id"].as_str().unwrap().to_string();
    let dir_a = tempfile::tempdir().unwrap();
    let mut agent_a = Agent::start(&server, dir_a.path(), a["token"].as_str(), "alpha");
    wait_status(&owner, &a_id, "active", Duration::from_secs(20)).await;
    let state: Value = serde_json::from_str(&std::fs::read_to_string(dir_a.path().join("state.json")).unwrap()).unwrap();
    let key_a = state["node_key"].as_str().unwrap();

    let conn = lapin::Connection::connect(&server.config.amqp_url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let exchange = state["heartbeat_exchange"].as_str().unwrap().to_string();
    assert!(exchange.starts_with("aiedge-test-"), "{exchange}");
    let forged = |node_id: &str| {
        serde_json::to_vec(&serde_json::json!({
            "node_id": node_id, "seq": 999_999, "sent_at_ms": 0,
            "metrics": { "free_cpu_pct": 100.0, "free_mem_pct": 100.0, "free_ram_gib": 64.0,
                         "events_per_sec": 1.0e9, "temperature_c": null, "running_jobs": 0 }
        }))
        .unwrap()
    };
    // Garbage, no headers, wrong schema, unknown node, and node B's id signed with A's key.
    publish(&ch, &exchange, None, None, b"\xff\x00garbage").await;
    publish(&ch, &exchange, Some(&a_id), Some(&shared::wire::sign(key_a, b"{}")), b"{}").await;
    publish(&ch, &exchange, Some(&a_id), Some("00"), &forged(&a_id)).await;
    publish(&ch, &exchange, Some("no-such-node"), Some(&shared::wire::sign(key_a, &forged("no-such-node"))), &forged("no-such-node")).await;
    publish(&ch, &exchange, Some(&b_id), Some(&shared::wire::sign(key_a, &forged(&b_id))), &forged(&b_id)).await;
    // A's own key, but a body naming B.
    publish(&ch, &exchange, Some(&a_id), Some(&shared::wire::sign(key_a, &forged(&b_id))), &forged(&b_id)).await;

    tokio::time::sleep(Duration::from_millis(1500)).await;
    // B never came alive, nothing was believed, and the server still serves.
    let nb = node(&owner, &b_id).await;
    assert_eq!(nb["status"], "waiting", "{nb}");
    assert!(nb["metrics"].is_null(), "{nb}");
    let na = node(&owner, &a_id).await;
    assert_eq!(na["status"], "active");
    assert!(na["metrics"]["events_per_sec"].as_f64().unwrap() < 1.0e9, "forged metrics believed: {na}");
    assert_eq!(reqwest::get(server.url("/healthz")).await.unwrap().status(), 200);

    // Replays. With A's agent stopped, two heartbeats signed with A's key are accepted in order;
    // the first one, captured and sent again, is refused, also after a server restart (a
    // replayed heartbeat of an old agent process would fake a restart and move A's jobs away).
    agent_a.kill9();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let beat = |seq: u64, ahead_ms: i64, events: f64| {
        serde_json::to_vec(&serde_json::json!({
            "node_id": a_id, "seq": seq, "sent_at_ms": now + ahead_ms, "instance": "captured-process",
            "metrics": { "free_cpu_pct": 50.0, "free_mem_pct": 50.0, "free_ram_gib": 1.0,
                         "events_per_sec": events, "temperature_c": null, "running_jobs": 0 }
        }))
        .unwrap()
    };
    let (first, second, third) = (beat(1, 1000, 1111.0), beat(2, 2000, 2222.0), beat(3, 3000, 3333.0));
    publish(&ch, &exchange, Some(&a_id), Some(&shared::wire::sign(key_a, &first)), &first).await;
    wait_events(&owner, &a_id, 1111.0).await;
    publish(&ch, &exchange, Some(&a_id), Some(&shared::wire::sign(key_a, &second)), &second).await;
    wait_events(&owner, &a_id, 2222.0).await;
    publish(&ch, &exchange, Some(&a_id), Some(&shared::wire::sign(key_a, &first)), &first).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(events_of(&owner, &a_id).await, Some(2222.0), "a replayed heartbeat was believed");
    let _ = conn.close(200, "bye").await;
    server.take_down().await;
    server.bring_up().await;
    let conn = lapin::Connection::connect(&server.config.amqp_url, ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    publish(&ch, &exchange, Some(&a_id), Some(&shared::wire::sign(key_a, &first)), &first).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(events_of(&owner, &a_id).await, Some(2222.0), "a replayed heartbeat was believed after a restart");
    // The path works after the restart: a newer one is taken.
    publish(&ch, &exchange, Some(&a_id), Some(&shared::wire::sign(key_a, &third)), &third).await;
    wait_events(&owner, &a_id, 3333.0).await;
    let _ = conn.close(200, "bye").await;
    server.stop().await;
}

/// The benchmark events per second a node's latest accepted heartbeat reported.
async fn events_of(owner: &common::Client, id: &str) -> Option<f64> {
    node(owner, id).await["metrics"]["events_per_sec"].as_f64()
}

async fn wait_events(owner: &common::Client, id: &str, want: f64) {
    let start = Instant::now();
    while events_of(owner, id).await != Some(want) {
        assert!(start.elapsed() < Duration::from_secs(10), "the heartbeat with {want} events/s was not accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_removed_node_is_refused_and_its_agent_stops(db: DbKind) {
    let server = fast_server(db).await;
    let owner = server.client();
    owner.register("owner@example.org", PASSWORD).await;
    let st = server::build_state(&server.config).await.unwrap();
    server::admin_cli::create_admin(&st.db, "root@example.org", PASSWORD).await.unwrap();
    let admin = server.client();
    admin.login("root@example.org", PASSWORD).await;

    let a = add_node(&owner, "doomed").await;
    let id = a["node"]["id"].as_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&server, dir.path(), a["token"].as_str(), "doomed");
    wait_status(&owner, &id, "active", Duration::from_secs(20)).await;

    // The node talks to the broker as itself, and reaches nothing but its own queue.
    let state: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap()).unwrap();
    let amqp_url = state["amqp_url"].as_str().unwrap().to_string();
    assert!(!amqp_url.contains("guest"), "the server's own broker user never leaves the server: {amqp_url}");
    let other = add_node(&owner, "neighbour").await;
    let other_id = other["node"]["id"].as_str().unwrap().to_string();
    // The neighbour's queue exists once it enrols (the server declares it then).
    let other_dir = tempfile::tempdir().unwrap();
    let neighbour = Agent::start(&server, other_dir.path(), other["token"].as_str(), "neighbour");
    wait_status(&owner, &other_id, "active", Duration::from_secs(20)).await;
    let ns = &server.config.amqp_namespace;
    let conn = lapin::Connection::connect(&amqp_url, ConnectionProperties::default()).await.expect("the node's credentials connect");
    let refused = |r: Result<lapin::Consumer, lapin::Error>| match r {
        Err(lapin::Error::ProtocolError(e)) => e.get_id() == 403,
        other => panic!("expected ACCESS_REFUSED, got {other:?}"),
    };
    let ch = conn.create_channel().await.unwrap();
    ch.basic_consume(&format!("{ns}.node.{id}"), "probe", Default::default(), FieldTable::default()).await.expect("its own queue");
    ch.close(200, "done").await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    assert!(
        refused(ch.basic_consume(&format!("{ns}.node.{other_id}"), "spy", Default::default(), FieldTable::default()).await),
        "another node's queue"
    );
    let ch = conn.create_channel().await.unwrap();
    let declared = ch.queue_declare("spy-queue", Default::default(), FieldTable::default()).await;
    assert!(matches!(declared, Err(lapin::Error::ProtocolError(ref e)) if e.get_id() == 403), "declaring a queue: {declared:?}");
    let ch = conn.create_channel().await.unwrap();
    let bound =
        ch.queue_bind(&format!("{ns}.node.{id}"), &format!("{ns}.jobs"), &other_id, Default::default(), FieldTable::default()).await;
    assert!(matches!(bound, Err(lapin::Error::ProtocolError(ref e)) if e.get_id() == 403), "binding to the jobs exchange: {bound:?}");
    let ch = conn.create_channel().await.unwrap();
    let deleted = ch.queue_delete(&format!("{ns}.server.heartbeats"), Default::default()).await;
    assert!(matches!(deleted, Err(lapin::Error::ProtocolError(ref e)) if e.get_id() == 403), "deleting the server's queue: {deleted:?}");
    drop(neighbour);

    // Its owner and admins remove nodes; anyone else is told there is no such node.
    let stranger = server.client();
    stranger.register("stranger@example.org", PASSWORD).await;
    let res = stranger.call("/api/nodes/set-state", &[("id", &id), ("state", "removed")]).await;
    assert_eq!(res.status(), 404);
    let res = owner.call("/api/nodes/set-state", &[("id", &id), ("state", "bogus")]).await;
    assert_eq!(res.status(), 400);
    let res = admin.call("/api/nodes/set-state", &[("id", &id), ("state", "bogus")]).await;
    assert_eq!(res.status(), 400);
    let res = admin.call("/api/nodes/set-state", &[("id", &id), ("state", "removed")]).await;
    assert_eq!(res.status(), 200);
    assert!(node(&owner, &id).await.is_null(), "removed nodes leave the list");
    // Its broker user is gone at once: its open connection is closed, and it cannot come back.
    let start = Instant::now();
    while conn.status().connected() {
        assert!(start.elapsed() < Duration::from_secs(10), "the removed node's broker connection stays open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = lapin::Connection::connect(&amqp_url, ConnectionProperties::default()).await;
    assert!(again.is_err(), "the removed node's broker credentials still work");

    // Its heartbeats are refused from now on, and its agent is told so at its next check-in
    // (at start, and every 30 s): restart it to see that at once.
    drop(agent);
    let (status, err) = Agent::start(&server, dir.path(), None, "doomed").wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("node credentials revoked"), "{err}");

    // A signed check-in with a stale timestamp is refused as a replay; a forged one too.
    let state: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("state.json")).unwrap()).unwrap();
    let body = serde_json::to_vec(&serde_json::json!({ "node_id": id, "sent_at_ms": 0 })).unwrap();
    let res = reqwest::Client::new()
        .post(server.url("/agent/v1/hello"))
        .header("x-signature", shared::wire::sign(state["node_key"].as_str().unwrap(), &body))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = reqwest::Client::new().post(server.url("/agent/v1/hello")).header("x-signature", "00").body(body).send().await.unwrap();
    assert_eq!(res.status(), 401);
    server.stop().await;
}
