//! Chaos: agents killed, paused, restarted and stopped mid-job; the broker and the server
//! restarted while jobs run; garbage and forged messages on every queue the platform reads.
//! Real server, real RabbitMQ, SQLite, real `node-agent` processes.
//!
//! After each scenario the same promise is checked ([`Check::all_done`]): every submitted job
//! reached a terminal state, no job has two accepted results (one `succeeded` attempt at most,
//! and its result is the one the job serves), and no completed result was lost (each
//! succeeded job's result downloads and says it was made by the job's final attempt).
//!
//! The scenarios run one at a time (one restarts the broker), with a short dead-node timeout
//! so the suite stays quick; `examples/failover_bench.rs` measures failover with the defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic

mod common;

use std::time::{Duration, Instant};

use common::fleet::{bundle, json, Agent, User};
use common::{DbKind, TestServer};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use nix::sys::signal::Signal;
use serde_json::Value;

/// The dead-node timeout the suite runs with.
const TIMEOUT: Duration = Duration::from_secs(3);

/// One scenario at a time: one of them stops the broker for everybody.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Sleeps as many seconds as its input says, then writes which attempt ran it: the job
/// directory the agent made for it is named `<job id>-<attempt>`.
const SLEEPER: &str = r#"import csv, os, time
with open(os.environ["AIEDGE_INPUT"]) as f:
    secs = float(list(csv.reader(f))[1][0])
time.sleep(secs)
ran_as = os.path.basename(os.path.dirname(os.getcwd()))
with open(os.environ["AIEDGE_OUTPUT"], "w") as out:
    out.write("row,ran_as\n0," + ran_as + "\n")
print("slept", secs, "as", ran_as)
"#;

fn sleep_input(secs: f64) -> Vec<u8> {
    format!("secs\n{secs}\n").into_bytes()
}

/// A server, a user with the sleeper app, and a few agents.
struct Chaos {
    server: TestServer,
    user: User,
    /// (node id, agent)
    agents: Vec<(String, Agent)>,
    state: app::backend::AppState,
    jobs: Vec<String>,
}

impl Chaos {
    async fn new(agents: &[&str], tweak: impl FnOnce(&mut server::config::Config)) -> Self {
        Self::with_agent_args(agents, &[], tweak).await
    }

    async fn with_agent_args(agents: &[&str], args: &[&str], tweak: impl FnOnce(&mut server::config::Config)) -> Self {
        let server = TestServer::start_with(DbKind::Sqlite, |c| {
            c.heartbeat_timeout = TIMEOUT;
            tweak(c);
        })
        .await;
        let user = User::new(&server, "chaos@example.org").await;
        let mut started = Vec::new();
        for name in agents {
            let (id, token) = user.add_node(name).await;
            let mut all = vec!["--max-jobs", "2"];
            all.extend_from_slice(args);
            started.push((id, Agent::start(&server, &token, name, &all)));
        }
        for (id, _) in &started {
            user.wait_node_active(id).await;
        }
        let manifest = "entry = \"python3 sleep.py\"\nruntime = \"python3\"\noutput = \"out.csv\"\ntime_limit_secs = 120\n";
        json(user.upload("sleeper", "sleeper.zip", bundle(manifest, &[("sleep.py", SLEEPER)]), None).await, 201).await;
        let state = server::build_state(&server.config).await.unwrap();
        Self { server, user, agents: started, state, jobs: Vec::new() }
    }

    async fn submit(&mut self, secs: f64) -> String {
        let job = json(self.user.submit("sleeper", Some(sleep_input(secs))).await, 201).await;
        let id = job["id"].as_str().unwrap().to_string();
        self.jobs.push(id.clone());
        id
    }

    /// Waits until attempt `attempt` of the job runs; returns the node it runs on.
    async fn running(&self, job: &str, attempt: u64, within: Duration) -> String {
        let j = self.user.wait_job_until(job, within, |j| j["status"] == "running" && j["attempt"].as_u64() == Some(attempt)).await;
        j["node_id"].as_str().unwrap().to_string()
    }

    fn agent(&mut self, node: &str) -> &mut Agent {
        &mut self.agents.iter_mut().find(|(id, _)| id == node).expect("agent of node").1
    }

    fn other(&self, node: &str) -> String {
        self.agents.iter().find(|(id, _)| id != node).expect("another node").0.clone()
    }

    async fn attempts(&self, job: &str) -> Vec<(i32, Option<String>, String, Option<String>)> {
        sqlx::query_as("select attempt, node_id, outcome, reason from job_attempts where job_id = $1 order by attempt")
            .bind(job)
            .fetch_all(&self.state.db.pool)
            .await
            .unwrap()
    }

    /// The promise, for every job submitted so far: terminal, one accepted result at most, and
    /// every succeeded job's result there and made by its final attempt. Returns the jobs.
    async fn all_done(&self, within: Duration) -> Vec<Value> {
        let mut done = Vec::new();
        for id in &self.jobs {
            let job = self
                .user
                .wait_job_until(id, within, |j| ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or_default()))
                .await;
            let attempts = self.attempts(id).await;
            let succeeded: Vec<_> = attempts.iter().filter(|a| a.2 == "succeeded").collect();
            assert!(succeeded.len() <= 1, "two accepted results: {attempts:?}");
            assert!(attempts.iter().all(|a| a.2 != "running" && a.2 != "dispatched"), "an attempt never ended: {attempts:?}");
            if job["status"] == "succeeded" {
                let attempt = job["attempt"].as_i64().unwrap();
                assert_eq!(succeeded.first().map(|a| i64::from(a.0)), Some(attempt), "{job} {attempts:?}");
                let res = self.user.get(&format!("/api/v1/jobs/{id}/result")).await;
                assert_eq!(res.status(), 200, "result lost: {job}");
                let csv = res.text().await.unwrap();
                assert_eq!(csv, format!("row,ran_as\n0,{id}-{attempt}\n"), "the result is not the final attempt's");
            }
            done.push(job);
        }
        done
    }

    async fn stop(self) {
        drop(self.agents);
        self.server.stop().await;
    }
}

/// SIGKILL the agent running a job: the node is declared dead after the timeout and the job
/// runs again on the other node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agents_job_completes_on_another_node() {
    let _serial = SERIAL.lock().await;
    let mut c = Chaos::new(&["kill-a", "kill-b"], |_| {}).await;
    let job = c.submit(2.0).await;
    let first = c.running(&job, 1, Duration::from_secs(20)).await;
    c.agent(&first).kill();
    let killed = Instant::now();
    let second = c.running(&job, 2, TIMEOUT + Duration::from_secs(8)).await;
    let took = killed.elapsed();
    assert_eq!(second, c.other(&first));
    println!("SIGKILL → running again on another node: {} ms (timeout {} ms)", took.as_millis(), TIMEOUT.as_millis());
    let jobs = c.all_done(Duration::from_secs(30)).await;
    assert_eq!(jobs[0]["status"], "succeeded", "{}", jobs[0]);
    let attempts = c.attempts(&job).await;
    assert_eq!(attempts.len(), 2);
    assert_eq!((attempts[0].1.as_deref(), attempts[0].2.as_str()), (Some(first.as_str()), "lost"));
    assert!(attempts[0].3.as_deref().unwrap().contains("dead"), "{attempts:?}");
    assert_eq!((attempts[1].1.as_deref(), attempts[1].2.as_str()), (Some(second.as_str()), "succeeded"));
    // The job page lists both attempts.
    let detail: Value =
        c.user.web.http.get(c.user.web.url(&format!("/api/jobs/detail?id={job}"))).send().await.unwrap().json().await.unwrap();
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 2, "{detail}");
    // The admin view counts the lost attempt against the node.
    assert_eq!(c.user.node(&first).await["recent_failures"], 1);
    c.stop().await;
}

/// SIGSTOP the agent running a job past the timeout: the job moves; SIGCONT: the paused
/// agent's late result is refused and the job keeps exactly one result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_agent_comes_back_and_its_late_result_is_refused() {
    let _serial = SERIAL.lock().await;
    let mut c = Chaos::new(&["pause-a", "pause-b"], |_| {}).await;
    let job = c.submit(2.0).await;
    let first = c.running(&job, 1, Duration::from_secs(20)).await;
    c.agent(&first).signal(Signal::SIGSTOP);
    c.running(&job, 2, TIMEOUT + Duration::from_secs(8)).await;
    // Resumed while attempt 2 runs: its script has finished meanwhile (it was not paused).
    c.agent(&first).signal(Signal::SIGCONT);
    let jobs = c.all_done(Duration::from_secs(30)).await;
    assert_eq!(jobs[0]["status"], "succeeded", "{}", jobs[0]);
    assert_eq!(jobs[0]["attempt"], 2);
    assert_eq!(c.attempts(&job).await[0].2, "lost");
    // The paused node is back, and was told no about its stale attempt.
    c.user.wait_node_status(&first, "active", Duration::from_secs(10)).await;
    let start = Instant::now();
    while !["result refused", "server says stop", "this attempt is over"].iter().any(|s| c.agent(&first).log().contains(s)) {
        assert!(start.elapsed() < Duration::from_secs(10), "no refusal in the agent's log:\n{}", c.agent(&first).log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A late upload for attempt 1, correctly signed by that node, is refused outright.
    let key = c.agent(&first).key();
    let path = format!("/agent/v1/jobs/{job}/result?attempt=1");
    let body = b"row,ran_as\n0,forged\n".to_vec();
    let sha = hex_sha256(&body);
    let time = now_ms();
    let res = reqwest::Client::new()
        .put(c.server.url(&path))
        .header(shared::jobs::HDR_NODE, &first)
        .header(shared::jobs::HDR_TIME, time.to_string())
        .header(shared::jobs::HDR_BODY_SHA256, &sha)
        .header(shared::jobs::HDR_REQUEST_SIGNATURE, shared::jobs::request_signature(&key, "PUT", &path, time, &sha))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    c.all_done(Duration::from_secs(5)).await;
    c.stop().await;
}

/// An agent killed and started again at once (before the timeout): the restart is noticed by
/// its new instance id and the job moves on without waiting for the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agents_lost_attempt_is_noticed_at_once() {
    let _serial = SERIAL.lock().await;
    // A long timeout: only the restart detection can move the job in time.
    let mut c = Chaos::new(&["restart-a"], |conf| conf.heartbeat_timeout = Duration::from_secs(60)).await;
    let job = c.submit(10.0).await;
    let first = c.running(&job, 1, Duration::from_secs(20)).await;
    c.agent(&first).restart();
    c.running(&job, 2, Duration::from_secs(15)).await;
    let attempts = c.attempts(&job).await;
    assert_eq!((attempts[0].2.as_str(), attempts[0].3.as_deref()), ("lost", Some("agent restarted")), "{attempts:?}");
    // The killed agent's script dies with it (its parent-death signal, delivered at once but
    // acted on when the process is next scheduled): soon only attempt 2's runs. (Attempt 2 is
    // "running" as soon as its agent says so, a moment before its script is spawned: wait for
    // exactly one, not for at most one.)
    let deadline = Instant::now() + Duration::from_secs(10);
    while scripts_running("sleep.py") != 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(scripts_running("sleep.py"), 1);
    let res = c.user.http.post(c.user.url(&format!("/api/v1/jobs/{job}/cancel"))).bearer_auth(&c.user.token).send().await.unwrap();
    assert_eq!(res.status(), 200);
    c.all_done(Duration::from_secs(5)).await;
    c.stop().await;
}

/// SIGTERM drains: a job that fits in the grace period finishes where it runs and the node
/// gets nothing new; one that does not is handed back and finishes elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_short_jobs_and_hands_back_long_ones() {
    let _serial = SERIAL.lock().await;
    let mut c = Chaos::with_agent_args(&["term-a", "term-b"], &["--drain-timeout", "4s"], |_| {}).await;
    let short = c.submit(2.0).await;
    let on = c.running(&short, 1, Duration::from_secs(20)).await;
    c.agent(&on).signal(Signal::SIGTERM);
    c.user.wait_node_status(&on, "stopping", Duration::from_secs(5)).await;
    let done = c.user.wait_job(&short).await;
    assert_eq!((done["status"].as_str(), done["attempt"].as_u64()), (Some("succeeded"), Some(1)), "{done}");
    assert_eq!(done["node_id"], on.as_str());
    // A job submitted meanwhile goes to the other node; the drained agent exits cleanly.
    let next = c.submit(0.1).await;
    assert_eq!(c.user.wait_job(&next).await["node_id"], c.other(&on).as_str());
    let start = Instant::now();
    while c.agent(&on).exited().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10), "agent did not exit after draining");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(c.agent(&on).exited().unwrap().success());

    // A job longer than the grace period: handed back when it ends, and run by the other node.
    c.agent(&on).restart();
    c.user.wait_node_active(&on).await;
    let long = c.submit(10.0).await;
    let holder = c.running(&long, 1, Duration::from_secs(20)).await;
    let other = c.other(&holder);
    c.agent(&holder).signal(Signal::SIGTERM);
    let second = c.running(&long, 2, Duration::from_secs(20)).await;
    assert_eq!(second, other);
    let attempts = c.attempts(&long).await;
    assert_eq!(attempts[0].2, "failed");
    assert!(attempts[0].3.as_deref().unwrap().contains("handed back"), "{attempts:?}");
    let jobs = c.all_done(Duration::from_secs(30)).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    c.stop().await;
}

/// The broker stops and starts while jobs run: everything confirmed survives and every job ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_broker_restart() {
    let _serial = SERIAL.lock().await;
    let mut c = Chaos::new(&["broker-a", "broker-b"], |_| {}).await;
    for _ in 0..6 {
        c.submit(1.5).await;
    }
    let first = c.jobs[0].clone();
    c.running(&first, 1, Duration::from_secs(20)).await;
    {
        let _broker = BrokerDown::now();
        tokio::time::sleep(Duration::from_secs(2)).await;
        // Submitted while the broker is away: queued, and dispatched once it is back.
        c.submit(0.5).await;
    }
    let jobs = c.all_done(Duration::from_secs(90)).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    c.stop().await;
}

/// The server stops while jobs run (their results arrive while it is down) and starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_survive_a_server_restart() {
    let _serial = SERIAL.lock().await;
    let mut c = Chaos::new(&["server-a", "server-b"], |_| {}).await;
    for _ in 0..4 {
        c.submit(1.0).await;
    }
    let first = c.jobs[0].clone();
    c.running(&first, 1, Duration::from_secs(20)).await;
    c.server.take_down().await;
    // The running jobs finish now; their agents keep their results until the server answers.
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.server.bring_up().await;
    let jobs = c.all_done(Duration::from_secs(60)).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    c.stop().await;
}

/// A burst of jobs while one agent is killed and a new one joins: all end, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_rides_out_an_agent_dying_and_another_joining() {
    let _serial = SERIAL.lock().await;
    let mut c = Chaos::new(&["burst-a", "burst-b"], |_| {}).await;
    for _ in 0..12 {
        c.submit(0.5).await;
    }
    let victim = c.agents[0].0.clone();
    tokio::time::sleep(Duration::from_millis(700)).await;
    c.agent(&victim).kill();
    let (id, token) = c.user.add_node("burst-c").await;
    c.agents.push((id.clone(), Agent::start(&c.server, &token, "burst-c", &["--max-jobs", "2"])));
    let jobs = c.all_done(Duration::from_secs(90)).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    c.stop().await;
}

/// A job held on a node ahead of its busy slots goes back to the server's queue when no slot
/// frees within 3 s: the attempt is not counted, the node (its slots now taken by long jobs)
/// is sent no more than it runs, and the job runs once a slot frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_held_ahead_of_long_jobs_goes_back_and_runs_later() {
    let _serial = SERIAL.lock().await;
    // Two slots (the harness's --max-jobs 2) and one place ahead.
    let mut c = Chaos::with_agent_args(&["ahead-a"], &["--queue-ahead", "1"], |_| {}).await;
    let node = c.agents[0].0.clone();
    let long = [c.submit(8.0).await, c.submit(8.0).await];
    let held = c.submit(0.1).await;
    // While the long jobs are young, the node takes the third one too, beyond its slots.
    let j = c.user.wait_job_until(&held, Duration::from_secs(5), |j| j["status"] != "queued").await;
    assert_eq!((j["status"].as_str(), j["node_id"].as_str()), (Some("dispatched"), Some(node.as_str())), "{j}");
    for id in &long {
        c.running(id, 1, Duration::from_secs(10)).await;
    }
    // No slot frees: the agent gives it back after 3 s.
    let back = Instant::now();
    let j = c.user.wait_job_until(&held, Duration::from_secs(8), |j| j["status"] == "queued").await;
    assert_eq!(j["attempt"], 0, "a returned job's attempt is given back: {j}");
    // The node's oldest job is now seconds old: it gets no job beyond its slots, so the
    // returned one waits on the server (the long jobs run for 8 s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let j = c.user.job(&held).await;
    assert_eq!(j["status"], "queued", "held again on a node whose slots are all busy: {j}");
    let jobs = c.all_done(Duration::from_secs(30)).await;
    assert!(jobs.iter().all(|j| j["status"] == "succeeded"), "{jobs:?}");
    println!("returned to the queue {} ms after it was seen held", back.elapsed().as_millis());
    let attempts = c.attempts(&held).await;
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!((attempts[0].0, attempts[0].2.as_str()), (1, "succeeded"));
    let events: Vec<(String, String)> = sqlx::query_as("select status, message from job_events where job_id = $1 order by at, id")
        .bind(&held)
        .fetch_all(&c.state.db.pool)
        .await
        .unwrap();
    let returned: Vec<_> = events.iter().filter(|(_, m)| m.contains("no slot came free on the node within 3 s")).collect();
    assert_eq!(returned.len(), 1, "{events:?}");
    assert_eq!(returned[0].0, "queued");
    assert!(c.agent(&node).log().contains("job returned to the server"), "{}", c.agent(&node).log());
    c.stop().await;
}

/// A job fails at once on its own error; one that keeps losing its node fails after the
/// attempt limit, listing every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_errors_fail_at_once_and_attempts_are_bounded() {
    let _serial = SERIAL.lock().await;
    let mut c = Chaos::new(&["bound-a", "bound-b"], |conf| conf.max_attempts = 2).await;
    let manifest = "entry = \"python3 bad.py\"\nruntime = \"python3\"\noutput = \"out.csv\"\n";
    json(c.user.upload("broken", "broken.zip", bundle(manifest, &[("bad.py", "raise SystemExit(3)\n")]), None).await, 201).await;
    let broken = json(c.user.submit("broken", Some(b"x\n1\n".to_vec())).await, 201).await;
    let broken = broken["id"].as_str().unwrap().to_string();
    c.jobs.push(broken.clone());
    let done = c.user.wait_job(&broken).await;
    assert_eq!((done["status"].as_str(), done["attempt"].as_u64()), (Some("failed"), Some(1)), "{done}");

    let job = c.submit(15.0).await;
    let first = c.running(&job, 1, Duration::from_secs(20)).await;
    c.agent(&first).kill();
    let second = c.running(&job, 2, TIMEOUT + Duration::from_secs(8)).await;
    c.agent(&second).kill();
    let done = c.user.wait_job_until(&job, TIMEOUT + Duration::from_secs(8), |j| j["status"] == "failed").await;
    let error = done["error"].as_str().unwrap();
    assert!(error.starts_with("failed after 2 attempts: #1 on bound-"), "{error}");
    assert!(error.contains("#2 on bound-") && error.contains("lost"), "{error}");
    c.all_done(Duration::from_secs(5)).await;
    c.stop().await;
}

/// Garbage and forged messages on every queue the platform reads (the server's heartbeat
/// queue, each node's job queue) go to the dead-letter queue; nothing else changes, nobody
/// crashes, and a replayed (well-formed, well-signed) job message does not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_forged_messages_are_dead_lettered_and_change_nothing() {
    let _serial = SERIAL.lock().await;
    let mut c = Chaos::new(&["poison-a", "poison-b"], |_| {}).await;
    let (a, b) = (c.agents[0].0.clone(), c.agents[1].0.clone());
    let (key_a, key_b) = (c.agent(&a).key(), c.agent(&b).key());
    let before = c.submit(0.1).await;
    let finished = c.user.wait_job(&before).await;
    assert_eq!(finished["status"], "succeeded");

    let topology = server::broker::Topology::new(&c.server.config.amqp_namespace);
    let conn = lapin::Connection::connect(&c.server.config.amqp_url, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let publish = |exchange: String, key: String, body: Vec<u8>, headers: Vec<(&'static str, String)>| {
        let ch = ch.clone();
        async move {
            let mut table = FieldTable::default();
            for (k, v) in headers {
                table.insert(k.into(), AMQPValue::LongString(v.into()));
            }
            ch.basic_publish(&exchange, &key, BasicPublishOptions::default(), &body, BasicProperties::default().with_headers(table))
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    let (node_hdr, sig_hdr) = (shared::wire::HDR_NODE_ID, shared::wire::HDR_SIGNATURE);
    // Heartbeats: garbage; a heartbeat with a signature from the wrong key; one correctly
    // signed by node A whose body claims to be node B.
    let hb = |node: &str| {
        serde_json::json!({"node_id": node, "seq": 999_999, "sent_at_ms": now_ms(), "metrics": {"free_cpu_pct": 100.0, "free_mem_pct": 100.0, "free_ram_gib": 64.0, "events_per_sec": 1e9, "temperature_c": null, "running_jobs": 0}}).to_string().into_bytes()
    };
    let hx = topology.heartbeat_exchange();
    publish(hx.clone(), String::new(), b"\x00\xffnot json".to_vec(), vec![]).await;
    publish(hx.clone(), String::new(), hb(&a), vec![(node_hdr, a.clone()), (sig_hdr, shared::wire::sign("wrong key", &hb(&a)))]).await;
    let claims_b = hb(&b);
    publish(hx, String::new(), claims_b.clone(), vec![(node_hdr, a.clone()), (sig_hdr, shared::wire::sign(&key_a, &claims_b))]).await;
    // Job messages on node A's queue: garbage; a job signed with a wrong key; a job for node B
    // signed with B's key (forged routing); and a replay of the finished job's message.
    let jx = topology.jobs_exchange();
    let message = |node: &str, attempt: u32| {
        serde_json::to_vec(&shared::jobs::JobMessage {
            job_id: before.clone(),
            attempt,
            node_id: node.into(),
            kind: shared::jobs::AppKind::Script,
            app_sha256: "0".repeat(64),
            app_size: 1,
            issued_at_ms: now_ms(),
            input_csv: None,
        })
        .unwrap()
    };
    publish(jx.clone(), a.clone(), b"{{{{".to_vec(), vec![]).await;
    publish(
        jx.clone(),
        a.clone(),
        message(&a, 7),
        vec![(node_hdr, a.clone()), (sig_hdr, shared::wire::sign("wrong key", &message(&a, 7)))],
    )
    .await;
    publish(jx.clone(), a.clone(), message(&b, 7), vec![(node_hdr, b.clone()), (sig_hdr, shared::wire::sign(&key_b, &message(&b, 7)))])
        .await;
    let ran_on = finished["node_id"].as_str().unwrap().to_string();
    let replay = message(&ran_on, 1);
    let key = if ran_on == a { &key_a } else { &key_b };
    publish(jx, ran_on.clone(), replay.clone(), vec![(node_hdr, ran_on.clone()), (sig_hdr, shared::wire::sign(key, &replay))]).await;

    // Six dead letters: three heartbeats, three job messages (the replay is fenced, not dead).
    let start = Instant::now();
    loop {
        let q = ch
            .queue_declare(
                &topology.dead_letter_queue(),
                QueueDeclareOptions { passive: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .unwrap();
        if q.message_count() == 6 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "dead letters: {}", q.message_count());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Nobody crashed, nothing changed, and the platform still works.
    for (id, agent) in &mut c.agents {
        assert!(agent.exited().is_none(), "agent died");
        assert_eq!(c.user.node(id).await["status"], "active");
    }
    let after = c.user.job(&before).await;
    assert_eq!(
        (after["status"].clone(), after["attempt"].clone(), after["finished_at_ms"].clone()),
        (finished["status"].clone(), finished["attempt"].clone(), finished["finished_at_ms"].clone())
    );
    assert_eq!(c.attempts(&before).await.len(), 1);
    let next = c.submit(0.1).await;
    assert_eq!(c.user.wait_job(&next).await["status"], "succeeded");
    c.all_done(Duration::from_secs(5)).await;
    let _ = conn.close(200, "done").await;
    c.stop().await;
}

/// Stops RabbitMQ's application (every connection drops; durable queues and persistent
/// messages stay) and starts it again when dropped, even if the test fails.
struct BrokerDown;

impl BrokerDown {
    fn now() -> Self {
        rabbitmqctl("stop_app");
        Self
    }
}

impl Drop for BrokerDown {
    fn drop(&mut self) {
        rabbitmqctl("start_app");
        rabbitmqctl("await_startup");
    }
}

fn rabbitmqctl(command: &str) {
    let status = std::process::Command::new("rabbitmqctl").arg(command).stdout(std::process::Stdio::null()).status().expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {command} failed");
}

/// Processes whose command line mentions `needle`.
fn scripts_running(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).contains(needle))
        .count()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
