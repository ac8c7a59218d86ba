//! The agent's own metrics (`node-agent run --metrics-bind`) against the real server, a real
//! agent process and the real RabbitMQ: after jobs that succeed and fail, its `/metrics` counts
//! them by outcome, times them and the model load, and counts the heartbeats.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::fleet::{bundle, fixture, json, Agent, User};
use common::{DbKind, TestServer};

/// The value of the sample named exactly `series` (name and labels as exported).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_counts_its_jobs_by_outcome() {
    let server = TestServer::start(DbKind::Sqlite).await;
    let user = User::new(&server, "ops@example.org").await;
    let (node_id, token) = user.add_node("watched").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let agent = Agent::start(&server, &token, "watched", &["--metrics-bind", &bind]);
    user.wait_node_active(&node_id).await;

    // Two model runs (the first loads the model) and a script that fails: the application's
    // fault, not the node's.
    let iris = std::fs::read(fixture("iris.csv")).unwrap();
    json(user.upload("iris", "iris_logreg.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), None).await, 201).await;
    let manifest = "entry = \"python3 f.py\"\nruntime = \"python3\"\noutput = \"out.csv\"\ntime_limit_secs = 30\n";
    json(user.upload("failing", "f.zip", bundle(manifest, &[("f.py", "raise SystemExit(3)\n")]), None).await, 201).await;
    for (app, status) in [("iris", "succeeded"), ("iris", "succeeded"), ("failing", "failed")] {
        let job = json(user.submit(app, Some(if app == "iris" { iris.clone() } else { b"x\n1\n".to_vec() })).await, 201).await;
        let done = user.wait_job(job["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], status, "{done}");
    }

    // The agent counts a run as soon as it has its outcome, before it reports it.
    let res = reqwest::get(format!("http://{bind}/metrics")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let body = res.text().await.unwrap();
    assert_eq!(sample(&body, "aiedge_agent_jobs_run_total{outcome=\"app_error\"}"), Some(1.0), "{body}\nagent log:\n{}", agent.log());
    assert_eq!(sample(&body, "aiedge_agent_jobs_run_total{outcome=\"succeeded\"}"), Some(2.0), "{body}");
    assert_eq!(sample(&body, "aiedge_agent_jobs_run_total{outcome=\"node_error\"}"), Some(0.0), "{body}");
    assert_eq!(sample(&body, "aiedge_agent_jobs_run_total{outcome=\"stopped\"}"), Some(0.0), "{body}");
    assert_eq!(sample(&body, "aiedge_agent_job_duration_seconds_count"), Some(3.0), "{body}");
    assert_eq!(sample(&body, "aiedge_agent_model_load_duration_seconds_count"), Some(1.0), "loaded once, then cached: {body}");
    assert_eq!(sample(&body, "aiedge_agent_jobs_running"), Some(0.0), "{body}");
    assert!(sample(&body, "aiedge_agent_heartbeats_sent_total").is_some_and(|n| n >= 1.0), "{body}");
    assert_eq!(sample(&body, "aiedge_agent_heartbeats_failed_total"), Some(0.0), "{body}");
    drop(agent);
    server.stop().await;
}
