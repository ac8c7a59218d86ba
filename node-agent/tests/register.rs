//! `node-agent run` against a registration endpoint that says no, and without credentials.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

#[test]
fn refused_token_exits_non_zero_with_a_clear_message() {
    for status in [401, 410] {
        let server = common::FakeServer::start(status, r#"{"error":"invalid token"}"#.into());
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let mut cmd = common::agent();
        cmd.args(["run", "--server", &server.url, "--token", "bogus", "--work-dir"]).arg(&work);
        let mut agent = common::Agent::spawn(cmd, dir.path().join("agent.log"));

        let exit = agent.wait_timeout(Duration::from_secs(20)).expect("agent did not exit");
        let log = agent.log_text();
        assert_eq!(exit.code(), Some(3), "{log}");
        assert!(
            log.lines().any(|l| l == format!("error: registration refused: token invalid, expired or already used (HTTP {status})")),
            "{log}"
        );
        assert!(!work.join("node-agent-state.json").exists());

        let requests = server.requests();
        assert_eq!(requests.len(), 1, "refusal is final: no retry");
        assert_eq!(requests[0].method, "POST");
        assert_eq!(requests[0].path, "/agent/v1/register");
        let sent: shared::wire::RegisterRequest = serde_json::from_slice(&requests[0].body).unwrap();
        assert_eq!(sent.token, "bogus");
    }
}

#[test]
fn no_state_file_and_no_token_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::agent().args(["run", "--server", "http://127.0.0.1:9", "--work-dir"]).arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no --token to register with"), "{stderr}");
}

#[test]
fn bad_interval_is_a_usage_error() {
    let out = common::agent().args(["run", "--heartbeat-interval", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn sigterm_during_start_up_exits_cleanly() {
    // Registration succeeds but the broker is never reached: SIGTERM lands while the agent is
    // still benchmarking or connecting.
    let body = serde_json::json!({
        "node_id": "n-early",
        "node_key": "k",
        "amqp_url": "amqp://guest:guest@127.0.0.1:9/%2f",
        "heartbeat_exchange": "aiedge.heartbeats",
        "heartbeat_interval_ms": 2000
    });
    for delay_ms in [50, 400, 1500] {
        let server = common::FakeServer::start(200, body.to_string());
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = common::agent();
        cmd.args(["run", "--server", &server.url, "--token", "t", "--work-dir"]).arg(dir.path());
        let mut agent = common::Agent::spawn(cmd, dir.path().join("agent.log"));
        std::thread::sleep(Duration::from_millis(delay_ms));
        agent.terminate();
        let exit = agent.wait_timeout(Duration::from_secs(5)).expect("agent did not stop");
        assert_eq!(exit.code(), Some(0), "after {delay_ms} ms: {}", agent.log_text());
    }
}
