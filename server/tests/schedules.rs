//! Schedules end to end: the real server (in process, and as a process killed with SIGKILL),
//! a real `node-agent`, the real RabbitMQ, SQLite and PostgreSQL, driven through the JSON API
//! and the pages as a user would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet::{fixture, json, Agent, User, PASSWORD};
use common::{DbKind, TestServer};
use reqwest::multipart::Form;
use serde_json::Value;

on_both_databases!(a_schedule_runs_jobs_on_a_node_each_second, the_api_refuses_bad_schedules_and_changes_nothing);

/// The fire times of a schedule's fired runs, oldest first, from its page in the API.
fn fired_times(detail: &Value) -> Vec<i64> {
    let mut times: Vec<i64> =
        detail["runs"].as_array().unwrap().iter().filter(|r| r["outcome"] == "fired").map(|r| r["fire_at_ms"].as_i64().unwrap()).collect();
    times.sort();
    times
}

/// Each fire time once, one step apart, from the first to the last.
fn assert_contiguous(times: &[i64], step_ms: i64) {
    assert!(!times.is_empty());
    for pair in times.windows(2) {
        assert_eq!(pair[1] - pair[0], step_ms, "a fire time skipped or doubled: {times:?}");
    }
}

async fn a_schedule_runs_jobs_on_a_node_each_second(db: DbKind) {
    let server = TestServer::start(db).await;
    let user = User::new(&server, "cron@example.org").await;
    let (node_id, token) = user.add_node("box").await;
    let _agent = Agent::start(&server, &token, "box", &["--max-jobs", "4"]);
    user.wait_node_active(&node_id).await;
    let iris = std::fs::read(fixture("iris.csv")).unwrap();
    json(user.upload("iris", "iris_logreg.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), Some(iris)).await, 201).await;

    // Every second, runs side by side if one is slow.
    let form = Form::new()
        .text("application", "iris")
        .text("name", "every second")
        .text("cron", "* * * * * *")
        .text("time_zone", "Europe/Berlin")
        .text("overlap", "allow");
    let created = json(user.post_form("/api/v1/schedules", form).await, 201).await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["state"], "active");
    assert_eq!(created["upcoming"].as_array().unwrap().len(), 5, "{created}");
    let began = Instant::now();
    tokio::time::sleep(Duration::from_millis(6_300)).await;
    let paused =
        json(user.http.post(user.url(&format!("/api/v1/schedules/{id}/pause"))).bearer_auth(&user.token).send().await.unwrap(), 200).await;
    let elapsed = began.elapsed().as_secs_f64();
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["upcoming"], Value::Array(vec![]));

    let detail = json(user.get(&format!("/api/v1/schedules/{id}")).await, 200).await;
    let times = fired_times(&detail);
    // N jobs in N seconds (±1): one per second boundary the server passed while active.
    assert!((times.len() as f64 - elapsed).abs() <= 1.0, "{} runs in {elapsed:.1} s: {times:?}", times.len());
    assert_contiguous(&times, 1000);
    for r in detail["runs"].as_array().unwrap().iter().filter(|r| r["outcome"] == "fired") {
        let late = r["recorded_at_ms"].as_i64().unwrap() - r["fire_at_ms"].as_i64().unwrap();
        assert!((0..1000).contains(&late), "submitted {late} ms after its fire time: {r}");
    }
    // Paused: nothing more fires.
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let still = json(user.get(&format!("/api/v1/schedules/{id}")).await, 200).await;
    assert_eq!(fired_times(&still), times, "a paused schedule fired");

    // Every job it submitted runs on the node and succeeds.
    for r in detail["runs"].as_array().unwrap().iter().filter(|r| r["outcome"] == "fired") {
        let job = user.wait_job(r["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["input_name"], "default input");
    }

    // Resumed: one catch-up run for the fire times passed while paused (within the default
    // one-hour deadline), the rest recorded as missed, then on again each second.
    json(user.http.post(user.url(&format!("/api/v1/schedules/{id}/resume"))).bearer_auth(&user.token).send().await.unwrap(), 200).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let resumed = json(user.get(&format!("/api/v1/schedules/{id}")).await, 200).await;
    let missed: Vec<&Value> = resumed["runs"].as_array().unwrap().iter().filter(|r| r["outcome"] == "missed").collect();
    assert_eq!(missed.len(), 1, "one row for the gap: {resumed}");
    assert!(missed[0]["count"].as_u64().unwrap() >= 1);
    let after = fired_times(&resumed);
    assert!(after.len() >= times.len() + 2, "{after:?}");

    // Its pages render on the server, complete before any WASM: the list and the schedule's
    // page with its runs and chart.
    let list = user.web.get("/schedules").await.text().await.unwrap();
    assert!(list.contains("every second") && list.contains("* * * * * * (Europe/Berlin)"), "{list}");
    let page = user.web.get(&format!("/schedules/{id}")).await.text().await.unwrap();
    for needle in ["data-testid=\"upcoming\"", "data-testid=\"runs\"", "data-testid=\"run-chart\"", "CET", "submitted"] {
        assert!(page.contains(needle), "the schedule page lacks {needle}");
    }

    // Deleted: gone from the list; its jobs stay.
    let res = user.http.delete(user.url(&format!("/api/v1/schedules/{id}"))).bearer_auth(&user.token).send().await.unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(json(user.get(&format!("/api/v1/schedules/{id}")).await, 404).await["error"]["code"], "not_found");
    let job = json(user.get(&format!("/api/v1/jobs/{}", resumed["runs"][0]["job_id"].as_str().unwrap_or_default())).await, 200).await;
    assert!(job["id"].is_string());
    server.stop().await;
}

async fn the_api_refuses_bad_schedules_and_changes_nothing(db: DbKind) {
    let server = TestServer::start(db).await;
    let user = User::new(&server, "typo@example.org").await;
    let other = User::new(&server, "other@example.org").await;
    let iris = std::fs::read(fixture("iris.csv")).unwrap();
    json(user.upload("iris", "iris_logreg.onnx", std::fs::read(fixture("iris_logreg.onnx")).unwrap(), Some(iris)).await, 201).await;
    let create = |fields: &[(&'static str, &'static str)]| {
        let mut form = Form::new();
        for (k, v) in fields {
            form = form.text(*k, *v);
        }
        form
    };
    for (fields, status, code) in [
        (vec![("application", "iris"), ("cron", "0 2 * *")], 422, "bad_timing"),
        (vec![("application", "iris"), ("cron", "0 2 * * *"), ("time_zone", "Mars/Base")], 422, "bad_timing"),
        (vec![("application", "iris"), ("at", "2001-01-01T00:00")], 422, "bad_timing"),
        (vec![("application", "iris"), ("cron", "0 2 * * *"), ("overlap", "sometimes")], 422, "bad_field"),
        (vec![("application", "iris"), ("cron", "0 2 * * *"), ("deadline_s", "-5")], 422, "bad_deadline"),
        (vec![("application", "iris"), ("cron", "0 2 * * *"), ("color", "red")], 422, "bad_field"),
        (vec![("cron", "0 2 * * *")], 422, "missing_application"),
        (vec![("application", "nope"), ("cron", "0 2 * * *")], 404, "not_found"),
    ] {
        let answer = json(user.post_form("/api/v1/schedules", create(&fields)).await, status).await;
        assert_eq!(answer["error"]["code"], code, "{fields:?}: {answer}");
    }
    // A CSV that does not fit the model is refused like a job's.
    let form = create(&[("application", "iris"), ("cron", "0 2 * * *")])
        .part("input", reqwest::multipart::Part::bytes(b"1,2\n".to_vec()).file_name("x.csv"));
    assert_eq!(json(user.post_form("/api/v1/schedules", form).await, 422).await["error"]["code"], "invalid_csv");
    // Another user's application is not found.
    assert_eq!(
        json(other.post_form("/api/v1/schedules", create(&[("application", "iris"), ("cron", "0 2 * * *")])).await, 404).await["error"]
            ["code"],
        "not_found"
    );
    assert_eq!(json(user.get("/api/v1/schedules").await, 200).await, Value::Array(vec![]), "nothing was created");

    // A good one, with its own CSV; then bad edits change nothing.
    let form = create(&[("application", "iris"), ("name", "nightly"), ("cron", "0 2 * * *"), ("time_zone", "Asia/Tokyo")])
        .part("input", reqwest::multipart::Part::bytes(std::fs::read(fixture("iris.csv")).unwrap()).file_name("mine.csv"));
    let s = json(user.post_form("/api/v1/schedules", form).await, 201).await;
    assert_eq!(s["input_name"], "mine.csv");
    assert!(s["upcoming"][0]["local"].as_str().unwrap().ends_with("02:00:00 JST"), "{s}");
    let id = s["id"].as_str().unwrap();
    let patch = |body: &'static str| {
        user.http
            .patch(user.url(&format!("/api/v1/schedules/{id}")))
            .bearer_auth(&user.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(json(patch(r#"{"cron": "99 * * * *"}"#).await.unwrap(), 422).await["error"]["code"], "bad_timing");
    assert_eq!(json(patch(r#"{"overlap": "never"}"#).await.unwrap(), 422).await["error"]["code"], "bad_json");
    assert_eq!(json(patch("not json").await.unwrap(), 400).await["error"]["code"], "bad_json");
    let still = json(user.get(&format!("/api/v1/schedules/{id}")).await, 200).await;
    assert_eq!(still["schedule"]["cron"], "0 2 * * *");
    let moved = json(patch(r#"{"cron": "30 6 * * MON-FRI", "overlap": "replace"}"#).await.unwrap(), 200).await;
    assert_eq!((moved["cron"].as_str(), moved["overlap"].as_str()), (Some("30 6 * * MON-FRI"), Some("replace")));
    // The preview answers what creation would.
    let p = json(user.get("/api/v1/schedules/preview?cron=0+9+*+*+MON&time_zone=America/New_York").await, 200).await;
    assert_eq!(p["upcoming"].as_array().unwrap().len(), 5);
    assert!(p["upcoming"][0]["local"].as_str().unwrap().starts_with("Mon "), "{p}");
    assert_eq!(json(user.get("/api/v1/schedules/preview?cron=nonsense").await, 422).await["error"]["code"], "bad_timing");
    // Another user sees none of it.
    assert_eq!(json(other.get(&format!("/api/v1/schedules/{id}")).await, 404).await["error"]["code"], "not_found");
    assert_eq!(json(other.get("/api/v1/schedules").await, 200).await, Value::Array(vec![]));
    server.stop().await;
}

/// The server binary as a process, on a data directory of its own.
struct Process {
    child: Child,
    args: Vec<String>,
}

impl Process {
    fn start(args: &[String]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_server")).args(args).env("RUST_LOG", "warn").stderr(Stdio::null()).spawn().unwrap();
        Process { child, args: args.to_vec() }
    }

    async fn wait_ready(base: &str) {
        for _ in 0..400 {
            if reqwest::get(format!("{base}/healthz")).await.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the server did not start");
    }

    fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn restart(&mut self) {
        *self = Self::start(&self.args.clone());
    }
}

/// A server killed with SIGKILL in the middle of a schedule and started again neither skips
/// nor doubles a fire time (the downtime is within the starting deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_schedule_neither_skips_nor_doubles() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let args: Vec<String> = [
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--amqp-namespace",
        &format!("aiedge-test-{}", uuid::Uuid::new_v4().simple()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut server = Process::start(&args);
    Process::wait_ready(&base).await;

    // A user with a token and the iris model, as a script would set them up.
    let web = reqwest::Client::builder().cookie_store(true).build().unwrap();
    let res =
        web.post(format!("{base}/api/auth/register")).form(&[("email", "kill@example.org"), ("password", PASSWORD)]).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let token: Value = web.post(format!("{base}/api/tokens/create")).form(&[("name", "t")]).send().await.unwrap().json().await.unwrap();
    let token = token["secret"].as_str().unwrap().to_string();
    let api = reqwest::Client::new();
    let upload = Form::new()
        .text("name", "iris")
        .part("file", reqwest::multipart::Part::bytes(std::fs::read(fixture("iris_logreg.onnx")).unwrap()).file_name("iris.onnx"))
        .part("default_input", reqwest::multipart::Part::bytes(std::fs::read(fixture("iris.csv")).unwrap()).file_name("iris.csv"));
    assert_eq!(api.post(format!("{base}/api/v1/applications")).bearer_auth(&token).multipart(upload).send().await.unwrap().status(), 201);
    let form = Form::new().text("application", "iris").text("cron", "*/2 * * * * *").text("overlap", "allow");
    let created: Value =
        api.post(format!("{base}/api/v1/schedules")).bearer_auth(&token).multipart(form).send().await.unwrap().json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();

    tokio::time::sleep(Duration::from_millis(5_000)).await;
    server.sigkill();
    // Down for a second (plus the start-up): at most one fire time passes while it is down.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    server.restart();
    Process::wait_ready(&base).await;
    tokio::time::sleep(Duration::from_millis(5_000)).await;

    server.sigkill();
    let db = aiedge_store::Db::connect(&format!("sqlite://{}/aiedge.db", dir.path().display())).await.unwrap();
    let runs: Vec<(i64, String, Option<String>)> =
        sqlx::query_as("select fire_at, outcome, job_id from schedule_runs where schedule_id = $1 order by fire_at")
            .bind(&id)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(runs.iter().all(|(_, outcome, job)| outcome == "fired" && job.is_some()), "nothing missed within the deadline: {runs:?}");
    let times: Vec<i64> = runs.iter().map(|(at, _, _)| *at).collect();
    assert!(times.len() >= 4, "{times:?}");
    assert_contiguous(&times, 2000);
    // One job per fire time: the jobs table agrees with the runs.
    let (jobs,): (i64,) = sqlx::query_as("select count(*) from jobs").fetch_one(&db.pool).await.unwrap();
    assert_eq!(jobs as usize, times.len());
}
