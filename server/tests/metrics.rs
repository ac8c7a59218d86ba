//! Prometheus metrics, scraped by a real Prometheus: a server with a metrics token runs jobs on
//! a real agent, `promtool check metrics` accepts its exposition, and Prometheus's own HTTP API
//! shows the job counter and the request latency histogram moving. Without the token `/metrics`
//! is refused; `--metrics-bind` serves it on a listener of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet::{fixture, json, Agent, User};
use common::{DbKind, TestServer};
use serde_json::Value;

const TOKEN: &str = "metrics-secret-for-prometheus";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real Prometheus scraping `target` every second with the metrics token; killed on drop.
struct Prometheus {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: aiedge\n    authorization:\n      credentials: {TOKEN}\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus is installed (scripts/lib.sh ensure_prometheus)");
        Self { child, url: format!("http://127.0.0.1:{port}"), _dir: dir }
    }

    /// The value of an instant query's first sample, if there is one.
    async fn value(&self, query: &str) -> Option<f64> {
        let res = reqwest::Client::new().get(format!("{}/api/v1/query", self.url)).query(&[("query", query)]).send().await.ok()?;
        let body: Value = res.json().await.ok()?;
        body["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` has a value that `ok` accepts; returns it.
    async fn wait_for(&self, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let start = Instant::now();
        loop {
            if let Some(v) = self.value(query).await.filter(|v| ok(*v)) {
                return v;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "Prometheus never saw `{query}` as wanted: {:?}", self.value(query).await);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn prometheus_scrapes_jobs_and_requests() {
    let private_port = free_port();
    let server = TestServer::start_with(DbKind::Sqlite, |c| {
        c.metrics_token = Some(TOKEN.into());
        c.metrics_bind = Some(format!("127.0.0.1:{private_port}").parse().unwrap());
    })
    .await;
    let http = reqwest::Client::new();
    let user = User::new(&server, "metrics@example.org").await;
    let (node_id, token) = user.add_node("box").await;
    let _agent = Agent::start(&server, &token, "box", &[]);
    user.wait_node_active(&node_id).await;
    json(user.upload("iris", "m.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), None).await, 201).await;
    let job = json(user.submit("iris", Some(b"a,b,c,d\n5.1,3.5,1.4,0.2\n".to_vec())).await, 201).await;
    assert_eq!(user.wait_job(job["id"].as_str().unwrap()).await["status"], "succeeded");

    // Refused without the token, or with another; served with it.
    let res = http.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = http.get(server.url("/metrics")).bearer_auth("guess").send().await.unwrap();
    assert_eq!(res.status(), 401);
    let res = http.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = res.text().await.unwrap();
    for wanted in [
        "aiedge_jobs_submitted_total{kind=\"onnx\"}",
        "aiedge_attempts_ended_total{outcome=\"succeeded\"}",
        "aiedge_jobs_dispatched_total",
        "aiedge_heartbeats_received_total",
        "aiedge_http_request_duration_seconds_bucket{method=\"POST\",route=\"/api/v1/jobs\",le=\"0.005\"}",
        "aiedge_http_requests_total{method=\"POST\",route=\"/api/v1/jobs\",status=\"201\"}",
        "aiedge_jobs{status=\"succeeded\"}",
        "aiedge_nodes{status=\"active\"}",
        "aiedge_build_info{version=",
        "# TYPE aiedge_http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(wanted), "{wanted} missing from:\n{text}");
    }
    // No label carries an id: a job's, a node's or a user's.
    assert!(!text.contains(job["id"].as_str().unwrap()) && !text.contains(&node_id), "an id in a label:\n{text}");

    // The format, as Prometheus's own tool reads it.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(checked.status.success(), "promtool: {}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));

    // The private listener serves it without a token.
    let res = http.get(format!("http://127.0.0.1:{private_port}/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("aiedge_jobs_submitted_total"));

    // A real Prometheus sees the counters move while jobs run.
    let prometheus = Prometheus::start(server.base.trim_start_matches("http://"));
    let submitted = "sum(aiedge_jobs_submitted_total)";
    let answered = "sum(aiedge_http_request_duration_seconds_count{route=\"/api/v1/jobs\",method=\"POST\"})";
    let before = prometheus.wait_for(submitted, |v| v >= 1.0).await;
    let answered_before = prometheus.wait_for(answered, |v| v >= 1.0).await;
    for _ in 0..3 {
        let job = json(user.submit("iris", Some(b"a,b,c,d\n5.1,3.5,1.4,0.2\n".to_vec())).await, 201).await;
        assert_eq!(user.wait_job(job["id"].as_str().unwrap()).await["status"], "succeeded");
    }
    prometheus.wait_for(submitted, |v| v >= before + 3.0).await;
    prometheus.wait_for(answered, |v| v >= answered_before + 3.0).await;
    prometheus.wait_for("sum(aiedge_attempts_ended_total{outcome=\"succeeded\"})", |v| v >= 4.0).await;
    // Queue waits and run times, observed from the jobs that ended.
    prometheus.wait_for("sum(aiedge_job_run_seconds_count)", |v| v >= 4.0).await;
    prometheus.wait_for("sum(aiedge_job_queue_wait_seconds_count)", |v| v >= 4.0).await;

    // The Grafana dashboard in deploy/ asks for metrics that exist, in queries Prometheus takes.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana-dashboard.json")).unwrap())
            .unwrap();
    let exprs: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .map(|t| t["expr"].as_str().unwrap())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let exposition = http.get(server.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    for expr in exprs {
        let res = reqwest::Client::new().get(format!("{}/api/v1/query", prometheus.url)).query(&[("query", expr)]).send().await.unwrap();
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["status"], "success", "{expr}: {body}");
        for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("aiedge_")) {
            let name = name.trim_end_matches("_bucket");
            assert!(exposition.contains(name), "the dashboard asks for {name}, which the server does not export");
        }
    }
    server.stop().await;
}
