//! Job pipeline benchmark: what a trivial job costs end to end, how many jobs per second one
//! server and its agents sustain, and how fast the ONNX runner itself goes.
//!
//!     cargo build --release -p node-agent
//!     cargo run --release -p server --example jobs_bench -- [--agents 1,4] [--jobs 2000] [--concurrency 32]
//!     cargo run --release -p server --example jobs_bench -- --compare-metrics 4 --agents 4   # recorder on vs off
//!
//! For each agent count it starts the real server in-process (SQLite in a temp dir, or a fresh
//! PostgreSQL database with `--postgres`) on its own AMQP namespace, registers a user, creates an
//! API token, enrols the nodes and starts real `node-agent` processes (`--max-jobs 4`), uploads
//! `runner/fixtures/iris_logreg.onnx` and warms every agent up (model downloaded and loaded).
//! Then, through the JSON API with the bearer token, exactly as a script would:
//! 1. overhead: `--sequential` jobs one at a time, each with a 1-row input CSV, waiting with
//!    `GET /api/v1/jobs/{id}?wait=30` (or polling every `--poll-us`) until it is `succeeded`;
//!    the client's wall time (before the submit call → succeeded seen) and the server's own
//!    timestamps per stage;
//! 2. throughput: `--jobs` jobs from `--concurrency` concurrent submitters; jobs/s = jobs /
//!    (first submit → last `finished_at`).
//! 3. the runner alone (no server): `runner::onnx::Model::predict_csv` rows/s.
//!
//! Server, agents and this client share the machine's cores; the numbers are for all of them.
//! The agent binary is `target/release/node-agent` beside this example, or `AIEDGE_AGENT_BIN`.
//!
//! Failover (`--failover N`, instead of the phases above): three agents at the default heartbeat
//! interval, the server with its default dead-node timeout; N times, a 15 s script job starts,
//! the agent running it is SIGKILLed, and the time until the job runs again on another node is
//! measured from the server's timestamps (then the job is cancelled and the agent restarted).
//!
//! Metrics on vs off (`--compare-metrics N`, instead of the phases above): one server with the
//! first `--agents` count, warmed up, runs the throughput phase 2N times, N with the Prometheus
//! recorder on and N with it off, in the order on, off, off, on, … so a drift of the shared
//! machine (or of the growing database) weighs on both alike; prints each round and the ratio
//! of their jobs/s. The recorder is process-wide and the server runs in this process, so this
//! example installs it first, behind a switch (see [`MetricsSwitch`]).
//!
//! Retention (`--retention 100000`, instead of the phases above): real jobs are copied (with
//! their events, attempts, and database-kept input and result) into that many jobs that ended
//! two days ago, with the server keeping jobs a day; the job round trip is measured at rest
//! (before the fill and after the prune) and while the server's retention task prunes them;
//! the database's and artifact store's footprint is printed after each step, over
//! `--retention-cycles` cycles (does the space pruned get used again?).
//!
//! Replicas (`--postgres --replicas 1,2`): for each count, a fresh deployment of that many
//! server replicas in this process on one database and broker, measured as above with the
//! client's requests spread over them in turn (a job submitted on one is waited for on the
//! next) and the agents spread over them too. They share this machine's cores: the numbers
//! say what running replicas costs, not what more machines would add.
//!
//! Diagnostics: `--trace` (server tracing to stderr, by `RUST_LOG`, e.g. `tower_http=debug` for
//! each request's timing), `--agent-log` (agents' warnings), `--closed-loop` (no backlog: each
//! submitter waits for its job), `--scratch /dev/shm` (data and work dirs off the disk).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benchmarks may panic

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures_util::StreamExt;
use reqwest::header::ACCEPT;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use sqlx::{Connection, Executor};
use tokio_util::sync::CancellationToken;

#[derive(Parser, Clone)]
struct Args {
    /// Agent counts to measure, one fresh server each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    agents: Vec<usize>,
    /// Jobs in the throughput phase.
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Concurrent submitters in the throughput phase.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Jobs in the sequential (overhead) phase.
    #[arg(long, default_value_t = 200)]
    sequential: usize,
    /// Poll a job's status at this interval, in microseconds, in the overhead phase, instead of
    /// waiting for its end with `?wait=` (0, the default).
    #[arg(long, default_value_t = 0)]
    poll_us: u64,
    /// Each agent's `--max-jobs`.
    #[arg(long, default_value_t = 4)]
    max_jobs: u32,
    /// Each agent's `--queue-ahead`.
    #[arg(long, default_value_t = 0)]
    queue_ahead: u32,
    /// A fresh PostgreSQL database (dropped at the end) instead of SQLite.
    #[arg(long)]
    postgres: bool,
    /// PostgreSQL server for `--postgres` (a database is created on it).
    #[arg(long, env = "AIEDGE_TEST_POSTGRES", default_value = "postgres://postgres@127.0.0.1:5432")]
    postgres_admin_url: String,
    /// RabbitMQ URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Skip the server phases (runner only).
    #[arg(long)]
    no_server: bool,
    /// Skip the runner phase.
    #[arg(long)]
    no_runner: bool,
    /// Print the server's tracing to stderr, filtered by `RUST_LOG` (e.g. `tower_http=debug` for
    /// every request's latency). Off by default: the server is quiet.
    #[arg(long)]
    trace: bool,
    /// Let the agents' warnings through to stderr (they are silenced by default).
    #[arg(long)]
    agent_log: bool,
    /// Diagnostic: in the throughput phase each submitter waits for its job to finish before
    /// submitting the next (at most `--concurrency` jobs in the system, no backlog). Jobs are
    /// watched in the database every 10 ms, not through the API.
    #[arg(long)]
    closed_loop: bool,
    /// Where the server's data dir and the agents' work dirs are created (default: the system's
    /// temp dir), e.g. /dev/shm to take the disk's file system out of the picture.
    #[arg(long)]
    scratch: Option<PathBuf>,
    /// Measure failover instead: this many SIGKILLs of the agent running a job.
    #[arg(long, default_value_t = 0)]
    failover: usize,
    /// Measure what the Prometheus recorder costs instead: this many throughput rounds with it
    /// on and as many with it off, alternating, on one server.
    #[arg(long, default_value_t = 0)]
    compare_metrics: usize,
    /// Server replicas to measure, one fresh deployment each (comma-separated; more than one
    /// needs `--postgres`). The replicas run in this process on one database and broker; the
    /// client spreads its requests over them in turn, and agent i talks to replica i mod N.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    replicas: Vec<usize>,
    /// Measure retention at scale instead: this many finished jobs (copies of real ones) are
    /// pruned while the job path is measured, `--retention-cycles` times over.
    #[arg(long, default_value_t = 0)]
    retention: usize,
    #[arg(long, default_value_t = 2)]
    retention_cycles: usize,
    /// What node job queues are declared as (the server's `--amqp-job-queues`).
    #[arg(long, value_enum, default_value_t = server::broker::QueueType::Classic)]
    job_queues: server::broker::QueueType,
}

/// A temp dir under `--scratch`, or the system's.
fn scratch_dir(args: &Args) -> std::io::Result<tempfile::TempDir> {
    match &args.scratch {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runner/fixtures").join(name)
}

fn epoch_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

/// `target/<profile>/examples/jobs_bench` → `target/<profile>/node-agent`, or `AIEDGE_AGENT_BIN`.
fn agent_bin() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("AIEDGE_AGENT_BIN") {
        return Ok(bin.into());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.parent().and_then(Path::parent).map(|d| d.join("node-agent")).ok_or_else(|| anyhow::anyhow!("no target dir"))?;
    if !bin.exists() {
        anyhow::bail!(
            "no node-agent at {}: build it first with `cargo build --release -p node-agent` (or set AIEDGE_AGENT_BIN)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Percentile (nearest rank) of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

// ---------------------------------------------------------------------------------------------
// The server and its agents
// ---------------------------------------------------------------------------------------------

/// An agent process, its work dir, and how to start it again.
struct Agent(Child, #[allow(dead_code)] tempfile::TempDir, Command);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Setup {
    /// Every replica's address; requests go to each in turn.
    bases: Vec<String>,
    next: AtomicUsize,
    config: server::config::Config,
    shutdown: CancellationToken,
    /// The replicas' tasks, the first launched first.
    handles: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The PostgreSQL database and the admin URL it was created with.
    pg_database: Option<(String, String)>,
    /// For counting unfinished jobs without loading the API.
    state: app::backend::AppState,
    /// Session client (cookies) and the bearer client.
    web: reqwest::Client,
    http: reqwest::Client,
    token: String,
    node_ids: Vec<String>,
    agents: Vec<Agent>,
    _data_dir: tempfile::TempDir,
}

async fn call(web: &reqwest::Client, url: String, form: &[(&str, &str)]) -> anyhow::Result<Value> {
    let res = web.post(url).header(ACCEPT, "application/json").form(form).send().await?;
    let status = res.status();
    let text = res.text().await?;
    anyhow::ensure!(status.is_success(), "{status}: {text}");
    Ok(serde_json::from_str(&text)?)
}

impl Setup {
    async fn start(args: &Args, n_agents: usize, agent_bin: &Path, heartbeat: &str) -> anyhow::Result<Self> {
        Self::start_replicas(args, n_agents, 1, agent_bin, heartbeat).await
    }

    async fn start_replicas(args: &Args, n_agents: usize, replicas: usize, agent_bin: &Path, heartbeat: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(replicas <= 1 || args.postgres, "several replicas need --postgres (SQLite takes one server)");
        let data_dir = scratch_dir(args)?;
        let namespace = format!("aiedge-bench-{}", uuid::Uuid::new_v4().simple());
        let mut cli = vec!["server".to_string(), "--data-dir".into(), data_dir.path().display().to_string()];
        cli.extend(["--amqp-url".into(), args.amqp_url.clone(), "--amqp-namespace".into(), namespace]);
        let mut config = server::config::Cli::try_parse_from(cli)?.config;
        config.login_per_ip_per_min = 1000;
        config.register_per_ip_per_min = 1000;
        config.amqp_job_queues = args.job_queues;
        // Nothing the benchmark makes is old enough for the server's own pruner but what
        // `--retention` makes: jobs that ended two days ago, pruned after one.
        config.retention_days = u32::from(args.retention > 0);
        let mut pg_database = None;
        if args.postgres {
            let name = format!("aiedge_bench_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", args.postgres_admin_url)).await?;
            conn.execute(format!("create database {name}").as_str()).await?;
            config.database_url = Some(format!("{}/{name}", args.postgres_admin_url));
            pg_database = Some((name, args.postgres_admin_url.clone()));
        }

        let shutdown = CancellationToken::new();
        let (mut bases, mut handles) = (Vec::new(), Vec::new());
        // One after the other: the first takes the lease, the others stand by.
        for _ in 0..replicas.max(1) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("http://{}", listener.local_addr()?);
            handles.push(tokio::spawn(server::launch(config.clone(), listener, shutdown.clone())));
            let probe = reqwest::Client::new();
            let mut ready = false;
            for _ in 0..400 {
                if probe.get(format!("{base}/healthz")).send().await.is_ok() {
                    ready = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            anyhow::ensure!(ready, "server replica {} did not start", bases.len() + 1);
            bases.push(base);
        }
        let base = bases[0].clone();
        let state = server::build_state(&config).await?;

        let web = reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build()?;
        call(&web, format!("{base}/api/auth/register"), &[("email", "bench@example.org"), ("password", "correct horse battery")]).await?;
        let token = call(&web, format!("{base}/api/tokens/create"), &[("name", "bench")]).await?["secret"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no token secret"))?
            .to_string();
        let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;

        let mut setup = Self {
            bases,
            next: AtomicUsize::new(0),
            config,
            shutdown,
            handles,
            pg_database,
            state,
            web,
            http,
            token,
            node_ids: Vec::new(),
            agents: Vec::new(),
            _data_dir: data_dir,
        };
        for i in 0..n_agents {
            let name = format!("bench-{i}");
            let v = call(&setup.web, setup.url("/api/nodes/add"), &[("name", &name)]).await?;
            let id = v["node"]["id"].as_str().unwrap_or_default().to_string();
            let node_token = v["token"].as_str().unwrap_or_default().to_string();
            let dir = scratch_dir(args)?;
            let mut command = Command::new(agent_bin);
            command
                .arg("run")
                .args(["--server", &setup.bases[i % setup.bases.len()], "--name", &name, "--token", &node_token])
                .arg("--work-dir")
                .arg(dir.path().join("work"))
                .args(["--max-jobs", &args.max_jobs.to_string()])
                .args(["--queue-ahead", &args.queue_ahead.to_string()])
                .args(["--heartbeat-interval", heartbeat, "--benchmark-interval", "1h"])
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(if args.agent_log { Stdio::inherit() } else { Stdio::null() });
            let child = command.spawn()?;
            setup.agents.push(Agent(child, dir, command));
            setup.node_ids.push(id);
        }
        setup.wait_nodes_active().await?;
        Ok(setup)
    }

    /// `path` on the next replica in turn.
    fn url(&self, path: &str) -> String {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.bases.len();
        format!("{}{path}", self.bases[i])
    }

    async fn wait_nodes_active(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let nodes: Value = self.web.get(self.url("/api/nodes/mine")).send().await?.json().await?;
            let active =
                nodes.as_array().map(|a| a.iter().filter(|n| n["status"] == "active" && n["score"].is_object()).count()).unwrap_or(0);
            if active == self.node_ids.len() {
                return Ok(());
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "only {active} of {} nodes active: {nodes}", self.node_ids.len());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn upload(&self, name: &str, model: Vec<u8>) -> anyhow::Result<String> {
        self.upload_file(name, "model.onnx", model).await
    }

    async fn upload_file(&self, name: &str, filename: &str, bytes: Vec<u8>) -> anyhow::Result<String> {
        let form = Form::new().text("name", name.to_string()).part("file", Part::bytes(bytes).file_name(filename.to_string()));
        let res = self.http.post(self.url("/api/v1/applications")).bearer_auth(&self.token).multipart(form).send().await?;
        let status = res.status();
        let text = res.text().await?;
        anyhow::ensure!(status.as_u16() == 201, "upload: {status}: {text}");
        let v: Value = serde_json::from_str(&text)?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    async fn submit(&self, app_id: &str, input: &[u8]) -> anyhow::Result<String> {
        let form = Form::new().text("application", app_id.to_string()).part("input", Part::bytes(input.to_vec()).file_name("input.csv"));
        let res = self.http.post(self.url("/api/v1/jobs")).bearer_auth(&self.token).multipart(form).send().await?;
        let status = res.status();
        let text = res.text().await?;
        anyhow::ensure!(status.as_u16() == 201, "submit: {status}: {text}");
        let v: Value = serde_json::from_str(&text)?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    async fn job(&self, id: &str) -> anyhow::Result<Value> {
        self.job_query(id, "").await
    }

    async fn job_query(&self, id: &str, query: &str) -> anyhow::Result<Value> {
        let res = self.http.get(self.url(&format!("/api/v1/jobs/{id}{query}"))).bearer_auth(&self.token).send().await?;
        let status = res.status();
        anyhow::ensure!(status.is_success(), "job {id}: {status}");
        Ok(res.json().await?)
    }

    /// Waits until the job is finished (`poll` zero: the API's `?wait=`, else polling every
    /// `poll`); returns it and when it was seen so.
    async fn wait_job(&self, id: &str, poll: Duration) -> anyhow::Result<(Value, Instant, f64)> {
        let start = Instant::now();
        let query = if poll.is_zero() { "?wait=30" } else { "" };
        loop {
            let job = self.job_query(id, query).await?;
            if ["succeeded", "failed", "cancelled"].contains(&job["status"].as_str().unwrap_or_default()) {
                return Ok((job, Instant::now(), epoch_ms()));
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(120), "job did not finish: {job}");
            if !poll.is_zero() {
                tokio::time::sleep(poll).await;
            }
        }
    }

    async fn unfinished(&self) -> anyhow::Result<i64> {
        // By status, so it walks an index rather than the whole table (it runs in the loop that
        // waits for the throughput phase to drain, beside the server it measures).
        let (n,): (i64,) = sqlx::query_as("select count(*) from jobs where status in ('queued', 'dispatched', 'running')")
            .fetch_one(&self.state.db.pool)
            .await?;
        Ok(n)
    }

    async fn wait_finished_in_db(&self, id: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let (n,): (i64,) = sqlx::query_as("select count(*) from jobs where id = $1 and finished_at is not null")
                .bind(id)
                .fetch_one(&self.state.db.pool)
                .await?;
            if n > 0 {
                return Ok(());
            }
            anyhow::ensure!(start.elapsed() < Duration::from_secs(120), "job {id} did not finish");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        self.agents.clear();
        self.shutdown.cancel();
        for handle in &mut self.handles {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
        // Node queues are durable and never expire by design: remove this run's.
        let topology = server::broker::Topology::new(&self.config.amqp_namespace);
        if let Ok(conn) = lapin::Connection::connect(&self.config.amqp_url, lapin::ConnectionProperties::default()).await {
            if let Ok(ch) = conn.create_channel().await {
                for id in &self.node_ids {
                    let _ = ch.queue_delete(&topology.node_queue(id), Default::default()).await;
                }
                let _ = ch.queue_delete(&topology.heartbeat_queue(), Default::default()).await;
                let _ = ch.exchange_delete(&topology.jobs_exchange(), Default::default()).await;
                let _ = ch.exchange_delete(&topology.heartbeat_exchange(), Default::default()).await;
                let _ = ch.queue_delete(&topology.dead_letter_queue(), Default::default()).await;
                let _ = ch.exchange_delete(&topology.dead_letter_exchange(), Default::default()).await;
            }
            let _ = conn.close(200, "bench done").await;
        }
        self.state.db.pool.close().await;
        if let Some((name, admin)) = self.pg_database.take() {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{admin}/postgres")).await {
                let _ = conn.execute(format!("drop database if exists {name} with (force)").as_str()).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

/// A finished job's server-side timestamps.
#[derive(Clone, Copy)]
struct Stamps {
    created: f64,
    dispatched: f64,
    started: f64,
    finished: f64,
}

impl Stamps {
    fn of(job: &Value) -> Option<Self> {
        Some(Self {
            created: job["created_at_ms"].as_f64()?,
            dispatched: job["dispatched_at_ms"].as_f64()?,
            started: job["started_at_ms"].as_f64()?,
            finished: job["finished_at_ms"].as_f64()?,
        })
    }
}

/// One configuration's results.
#[derive(Default)]
struct Result1 {
    agents: usize,
    replicas: usize,
    /// Sequential: client wall time submit → succeeded seen, ms.
    e2e: Vec<f64>,
    /// Sequential: the submit call alone (until its 201), ms.
    submit_call: Vec<f64>,
    /// Sequential: server created → finished, ms.
    server: Vec<f64>,
    /// Sequential stages, ms: submit start → created, created → dispatched, dispatched →
    /// started, started → finished, finished → seen.
    stages: [Vec<f64>; 5],
    seq_failed: Vec<String>,
    /// Diagnostics, ms: a status GET and a (tiny) result download.
    probe_status: Vec<f64>,
    probe_result: Vec<f64>,
    // Throughput.
    jobs: usize,
    tput_elapsed_s: f64,
    tput_client_s: f64,
    submit_s: f64,
    submit_errors: Vec<String>,
    failed: Vec<String>,
    tput_stages: [Vec<f64>; 3],
    /// CPU seconds during the throughput phase: this process (server + client), the agents,
    /// the broker (RabbitMQ's `beam.smp`, when it runs on this machine; 0 otherwise).
    cpu_self_s: f64,
    cpu_agents_s: f64,
    cpu_broker_s: f64,
    per_node: BTreeMap<String, usize>,
}

async fn measure(args: &Args, n_agents: usize, replicas: usize, agent_bin: &Path) -> anyhow::Result<Result1> {
    let setup = Setup::start_replicas(args, n_agents, replicas, agent_bin, "500ms").await?;
    let result = measure_on(args, &setup, n_agents).await.map(|r| Result1 { replicas, ..r });
    setup.stop().await;
    result
}

async fn measure_on(args: &Args, setup: &Setup, n_agents: usize) -> anyhow::Result<Result1> {
    let mut r = Result1 { agents: n_agents, jobs: args.jobs, ..Default::default() };
    let (app, input) = warm_up(args, setup, n_agents).await?;
    let poll = Duration::from_micros(args.poll_us);

    // 1. Overhead: one job at a time.
    println!("  {n_agents} agent(s): {} sequential jobs…", args.sequential);
    for _ in 0..args.sequential {
        let submit_epoch = epoch_ms();
        let t0 = Instant::now();
        let id = setup.submit(&app, &input).await?;
        r.submit_call.push(t0.elapsed().as_secs_f64() * 1000.0);
        let (job, seen, seen_epoch) = setup.wait_job(&id, poll).await?;
        r.e2e.push(seen.duration_since(t0).as_secs_f64() * 1000.0);
        if job["status"] != "succeeded" {
            r.seq_failed.push(format!("{id}: {} {}", job["status"], job["error"]));
            continue;
        }
        if let Some(s) = Stamps::of(&job) {
            r.server.push(s.finished - s.created);
            r.stages[0].push(s.created - submit_epoch);
            r.stages[1].push(s.dispatched - s.created);
            r.stages[2].push(s.started - s.dispatched);
            r.stages[3].push(s.finished - s.started);
            r.stages[4].push(seen_epoch - s.finished);
        }
    }

    // Diagnostics on the last sequential jobs: plain API round trips.
    let recent: Vec<Value> = setup.http.get(setup.url("/api/v1/jobs?limit=20")).bearer_auth(&setup.token).send().await?.json().await?;
    for job in &recent {
        let id = job["id"].as_str().unwrap_or_default();
        let t = Instant::now();
        setup.job(id).await?;
        r.probe_status.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let res = setup.http.get(setup.url(&format!("/api/v1/jobs/{id}/result"))).bearer_auth(&setup.token).send().await?;
        res.bytes().await?;
        r.probe_result.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    // 2. Throughput.
    throughput(args, setup, &app, &input, &mut r).await?;
    Ok(r)
}

/// Uploads the iris model and warms every agent up (model downloaded and loaded, connections
/// open); returns the application's id and a 1-row input.
async fn warm_up(args: &Args, setup: &Setup, n_agents: usize) -> anyhow::Result<(String, Vec<u8>)> {
    let app = setup.upload("iris", std::fs::read(fixture("iris_logreg.onnx"))?).await?;
    let iris = std::fs::read_to_string(fixture("iris.csv"))?;
    let input: Vec<u8> = iris.lines().take(2).map(|l| format!("{l}\n")).collect::<String>().into_bytes();

    // Warm-up: every agent has downloaded and loaded the model, connections are open.
    let mut warmed: HashSet<String> = HashSet::new();
    for _ in 0..30 {
        let burst = (n_agents * args.max_jobs as usize * 2).max(4);
        let ids = futures_util::future::try_join_all((0..burst).map(|_| setup.submit(&app, &input))).await?;
        for id in ids {
            let (job, _, _) = setup.wait_job(&id, Duration::from_millis(5)).await?;
            anyhow::ensure!(job["status"] == "succeeded", "warm-up job failed: {job}");
            if let Some(node) = job["node_id"].as_str() {
                warmed.insert(node.to_string());
            }
        }
        if warmed.len() >= n_agents {
            break;
        }
    }
    if warmed.len() < n_agents {
        println!("  (warm-up reached only {} of {n_agents} agents)", warmed.len());
    }
    for _ in 0..10 {
        let id = setup.submit(&app, &input).await?;
        setup.wait_job(&id, Duration::from_micros(args.poll_us)).await?;
    }
    Ok((app, input))
}

/// The throughput phase into `r`: `--jobs` jobs from `--concurrency` submitters, then wait for
/// all of them.
async fn throughput(args: &Args, setup: &Setup, app: &str, input: &[u8], r: &mut Result1) -> anyhow::Result<()> {
    let n_agents = r.agents;
    anyhow::ensure!(setup.unfinished().await? == 0, "jobs left over before the throughput phase");
    println!("  {n_agents} agent(s): {} jobs from {} submitters…", args.jobs, args.concurrency);
    let agent_pids: Vec<u32> = setup.agents.iter().map(|a| a.0.id()).collect();
    let broker_pid = broker_pid();
    let cpu0 = (
        cpu_seconds("self"),
        agent_pids.iter().map(|p| cpu_seconds(&p.to_string())).sum::<f64>(),
        broker_pid.as_deref().map_or(0.0, cpu_seconds),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let first_epoch = epoch_ms();
    let start = Instant::now();
    let submitters = (0..args.concurrency.max(1)).map(|_| {
        let next = next.clone();
        async move {
            let mut ids = Vec::new();
            let mut errors = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < args.jobs {
                match setup.submit(app, input).await {
                    Ok(id) => {
                        if args.closed_loop {
                            if let Err(e) = setup.wait_finished_in_db(&id).await {
                                errors.push(e.to_string());
                            }
                        }
                        ids.push(id)
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (ids, errors)
        }
    });
    let mut ids = Vec::with_capacity(args.jobs);
    for (i, e) in futures_util::future::join_all(submitters).await {
        ids.extend(i);
        r.submit_errors.extend(e);
    }
    r.submit_s = start.elapsed().as_secs_f64();
    let deadline = Duration::from_secs(600);
    loop {
        let left = setup.unfinished().await?;
        if left == 0 {
            break;
        }
        if start.elapsed() > deadline {
            println!("  gave up with {left} jobs unfinished");
            break;
        }
        // The rate comes from the server's own finish times, not from this loop.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.tput_client_s = start.elapsed().as_secs_f64();
    r.cpu_self_s = cpu_seconds("self") - cpu0.0;
    r.cpu_agents_s = agent_pids.iter().map(|p| cpu_seconds(&p.to_string())).sum::<f64>() - cpu0.1;
    r.cpu_broker_s = broker_pid.as_deref().map_or(0.0, cpu_seconds) - cpu0.2;
    let jobs: Vec<anyhow::Result<Value>> =
        futures_util::stream::iter(ids.iter().map(|id| setup.job(id))).buffer_unordered(16).collect().await;
    let mut last_finished = first_epoch;
    for job in jobs {
        let job = job?;
        if job["status"] != "succeeded" {
            r.failed.push(format!("{}: {} {}", job["id"], job["status"], job["error"]));
        }
        *r.per_node.entry(job["node_id"].as_str().unwrap_or("-").to_string()).or_default() += 1;
        if let Some(s) = Stamps::of(&job) {
            last_finished = last_finished.max(s.finished);
            r.tput_stages[0].push(s.dispatched - s.created);
            r.tput_stages[1].push(s.started - s.dispatched);
            r.tput_stages[2].push(s.finished - s.started);
        }
    }
    r.tput_elapsed_s = (last_finished - first_epoch) / 1000.0;
    Ok(())
}

/// RabbitMQ's Erlang VM on this machine, if it runs here (its CPU counts in the budget).
fn broker_pid() -> Option<String> {
    let out = Command::new("pgrep").args(["-o", "beam.smp"]).output().ok()?;
    let pid = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!pid.is_empty()).then_some(pid)
}

/// User + system CPU time of a process so far (`self` or a pid), from /proc; 0 elsewhere.
fn cpu_seconds(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(str::to_string))
        .map(|rest| rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse::<u64>().ok()).sum::<u64>())
        .unwrap_or(0) as f64
        / 100.0
}

/// `runner::onnx` alone: rows per second through `predict_csv` into memory, batch 4096.
fn runner_bench(model: &str, csv: &[u8], rows: usize) -> anyhow::Result<(f64, f64)> {
    let model = runner::onnx::Model::load(&fixture(model)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut times = Vec::new();
    let mut out = Vec::with_capacity(csv.len() * 2);
    for _ in 0..5 {
        out.clear();
        let t = Instant::now();
        let n = model.predict_csv(csv, &mut out, 4096, &mut |_| {}).map_err(|e| anyhow::anyhow!("{e}"))?;
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(n as usize == rows, "{n} rows predicted, {rows} expected");
    }
    let times = sorted(times);
    Ok((rows as f64 / times[times.len() / 2], times[times.len() / 2] * 1000.0))
}

fn runner_phase() -> anyhow::Result<Vec<(String, usize, f64, f64)>> {
    let mut out = Vec::new();
    // Iris: 100 000 synthetic rows of 4 floats.
    let rows = 100_000;
    let mut csv = String::from("a,b,c,d\n");
    let mut x: u32 = 12345;
    for _ in 0..rows {
        let mut v = [0f32; 4];
        for f in &mut v {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            *f = 0.5 + 7.0 * ((x >> 8) as f32 / (1u32 << 24) as f32);
        }
        csv.push_str(&format!("{:.3},{:.3},{:.3},{:.3}\n", v[0], v[1], v[2], v[3]));
    }
    let (rps, ms) = runner_bench("iris_logreg.onnx", csv.as_bytes(), rows)?;
    out.push(("iris_logreg.onnx (4 features)".to_string(), rows, rps, ms));

    // Tiny CNN: the fixture's rows repeated to 20 000.
    let cnn = std::fs::read_to_string(fixture("tiny_cnn.csv"))?;
    let mut lines = cnn.lines();
    let header = lines.next().unwrap_or_default();
    let body: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    let rows = 20_000;
    let mut csv = format!("{header}\n");
    for i in 0..rows {
        csv.push_str(body[i % body.len()]);
        csv.push('\n');
    }
    let (rps, ms) = runner_bench("tiny_cnn.onnx", csv.as_bytes(), rows)?;
    out.push(("tiny_cnn.onnx (1×4×4 image)".to_string(), rows, rps, ms));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Failover
// ---------------------------------------------------------------------------------------------

/// A script job that takes 15 s: long enough to be caught running.
fn sleeper_bundle() -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("aiedge.toml", opts)?;
    zip.write_all(b"entry = \"python3 s.py\"\nruntime = \"python3\"\noutput = \"out.csv\"\n")?;
    zip.start_file("s.py", opts)?;
    zip.write_all(b"import os, time\ntime.sleep(15)\nopen(os.environ['AIEDGE_OUTPUT'], 'w').write('row\\n')\n")?;
    Ok(zip.finish()?.into_inner())
}

/// One SIGKILL: (kill → node declared dead, kill → job running on another node), seconds.
async fn failover_once(setup: &mut Setup, app: &str) -> anyhow::Result<(f64, f64)> {
    let job = setup.submit(app, b"x\n1\n").await?;
    let poll = |sql: &'static str| {
        let (pool, job) = (setup.state.db.pool.clone(), job.clone());
        async move {
            let start = Instant::now();
            loop {
                let row: Option<(String, i64)> = sqlx::query_as(sql).bind(&job).fetch_optional(&pool).await?;
                if let Some(row) = row {
                    return anyhow::Ok(row);
                }
                anyhow::ensure!(start.elapsed() < Duration::from_secs(120), "job {job} stuck");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let (node, _) = poll("select node_id, attempt from jobs where id = $1 and status = 'running'").await?;
    let i = setup.node_ids.iter().position(|n| *n == node).ok_or_else(|| anyhow::anyhow!("unknown node"))?;
    let _ = setup.agents[i].0.kill();
    let killed = epoch_ms();
    let _ = setup.agents[i].0.wait();
    let (_, started) = poll("select node_id, started_at from jobs where id = $1 and status = 'running' and attempt = 2").await?;
    let (dead,): (Option<i64>,) = sqlx::query_as("select max(at) from node_events where node_id = $1 and to_status = 'dead'")
        .bind(&node)
        .fetch_one(&setup.state.db.pool)
        .await?;
    let dead = dead.ok_or_else(|| anyhow::anyhow!("the job moved but its node was never declared dead"))?;
    // Free the slot, and bring the node back for the next run.
    let res = setup.http.post(setup.url(&format!("/api/v1/jobs/{job}/cancel"))).bearer_auth(&setup.token).send().await?;
    anyhow::ensure!(res.status().is_success(), "cancel: {}", res.status());
    setup.agents[i].0 = setup.agents[i].2.spawn()?;
    setup.wait_nodes_active().await?;
    Ok(((dead as f64 - killed) / 1000.0, (started as f64 - killed) / 1000.0))
}

/// `--failover N`: the time from an agent's death to its job running elsewhere, with the
/// server's and the agents' default timings.
async fn failover(args: &Args, bin: &Path) -> anyhow::Result<()> {
    let mut setup = Setup::start(args, 3, bin, "2s").await?;
    let app = setup.upload_file("sleeper", "sleeper.zip", sleeper_bundle()?).await?;
    println!();
    println!(
        "Failover: 3 agents (heartbeat every 2 s), dead-node timeout {} s; SIGKILL the agent running a 15 s script job.",
        setup.config.heartbeat_timeout.as_secs()
    );
    println!();
    println!("| run | kill → node dead (s) | kill → running on another node (s) |");
    println!("|---:|---:|---:|");
    let mut again = Vec::new();
    for run in 1..=args.failover {
        let (dead, running) = failover_once(&mut setup, &app).await?;
        println!("| {run} | {dead:.2} | {running:.2} |");
        again.push(running);
    }
    let again = sorted(again);
    println!();
    println!(
        "kill → running again: p50 {:.2} s, worst {:.2} s over {} runs",
        pct(&again, 50.0),
        again.last().copied().unwrap_or(f64::NAN),
        again.len()
    );
    setup.stop().await;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Metrics on vs off
// ---------------------------------------------------------------------------------------------

/// The process's metrics recorder for `--compare-metrics`: the server's Prometheus recorder
/// behind a switch. Installed before the server starts, it is the one every `counter!`,
/// `histogram!` and `gauge!` of the server reaches (the server's own `metrics::handle()` then
/// finds a recorder in place and keeps its own uninstalled). On, it hands them the Prometheus
/// recorder's handles; off, no-op handles, exactly what they get in a process that has no
/// recorder. Descriptions always go through (they are registered once, at start).
struct MetricsSwitch {
    on: Arc<AtomicBool>,
    inner: metrics_exporter_prometheus::PrometheusRecorder,
}

impl MetricsSwitch {
    /// Installs the switch (on) as the global recorder; the flag and the exporter's handle.
    fn install() -> anyhow::Result<(Arc<AtomicBool>, metrics_exporter_prometheus::PrometheusHandle)> {
        // The server's own recorder, with its buckets.
        let inner = server::metrics::build_recorder();
        let handle = inner.handle();
        let on = Arc::new(AtomicBool::new(true));
        metrics::set_global_recorder(MetricsSwitch { on: on.clone(), inner })
            .map_err(|_| anyhow::anyhow!("a recorder is already installed"))?;
        Ok((on, handle))
    }
}

impl metrics::Recorder for MetricsSwitch {
    fn describe_counter(&self, key: metrics::KeyName, unit: Option<metrics::Unit>, description: metrics::SharedString) {
        self.inner.describe_counter(key, unit, description)
    }
    fn describe_gauge(&self, key: metrics::KeyName, unit: Option<metrics::Unit>, description: metrics::SharedString) {
        self.inner.describe_gauge(key, unit, description)
    }
    fn describe_histogram(&self, key: metrics::KeyName, unit: Option<metrics::Unit>, description: metrics::SharedString) {
        self.inner.describe_histogram(key, unit, description)
    }
    fn register_counter(&self, key: &metrics::Key, metadata: &metrics::Metadata<'_>) -> metrics::Counter {
        if self.on.load(Ordering::Relaxed) {
            self.inner.register_counter(key, metadata)
        } else {
            metrics::Counter::noop()
        }
    }
    fn register_gauge(&self, key: &metrics::Key, metadata: &metrics::Metadata<'_>) -> metrics::Gauge {
        if self.on.load(Ordering::Relaxed) {
            self.inner.register_gauge(key, metadata)
        } else {
            metrics::Gauge::noop()
        }
    }
    fn register_histogram(&self, key: &metrics::Key, metadata: &metrics::Metadata<'_>) -> metrics::Histogram {
        if self.on.load(Ordering::Relaxed) {
            self.inner.register_histogram(key, metadata)
        } else {
            metrics::Histogram::noop()
        }
    }
}

/// HTTP requests the recorder has counted so far (the sum of `aiedge_http_requests_total`).
fn requests_counted(handle: &metrics_exporter_prometheus::PrometheusHandle) -> f64 {
    handle
        .render()
        .lines()
        .filter(|l| l.starts_with("aiedge_http_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Nanoseconds per request of what `server::metrics::track` records for each HTTP request (a
/// counter with three labels and a histogram with two, the label values built per call), with
/// the switch as it is: the recorder's own cost, without the machine's noise.
fn record_like_track(requests: u32) -> f64 {
    let routes = ["/api/v1/jobs", "/api/v1/jobs/{id}", "/agent/v1/jobs/{id}/finish"];
    let began = Instant::now();
    for i in 0..requests {
        let (method, route, status) = (if i % 3 == 0 { "POST" } else { "GET" }, routes[i as usize % 3], 200 + (i % 2) as u16);
        let route = route.to_owned();
        metrics::counter!("aiedge_http_requests_total", "method" => method.to_string(), "route" => route.clone(), "status" => status.to_string())
            .increment(1);
        metrics::histogram!("aiedge_http_request_duration_seconds", "method" => method.to_string(), "route" => route.clone())
            .record(f64::from(i % 1000) * 1e-5);
    }
    began.elapsed().as_nanos() as f64 / f64::from(requests)
}

/// `--compare-metrics N`: the throughput phase 2N times on one server, N with the recorder on
/// and N off (on, off, off, on, …), and the ratio of their jobs/s.
async fn compare_metrics(
    args: &Args,
    bin: &Path,
    on: &AtomicBool,
    handle: &metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let n_agents = args.agents.first().copied().unwrap_or(1);
    let rounds = args.compare_metrics;
    // What the server does for its recorder: drain the histograms every 5 s; and a scrape
    // every 15 s, Prometheus's default interval (deploy/prometheus.yml).
    let upkeep = tokio::spawn({
        let handle = handle.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            for i in 0u64.. {
                tick.tick().await;
                if i % 3 == 0 {
                    std::hint::black_box(handle.render());
                } else {
                    handle.run_upkeep();
                }
            }
        }
    });
    let setup = Setup::start(args, n_agents, bin, "500ms").await?;
    let (app, input) = warm_up(args, &setup, n_agents).await?;
    let mut rows = Vec::new();
    for round in 0..2 * rounds {
        // On, off, off, on: a linear drift weighs on both alike.
        let metrics_on = matches!(round % 4, 0 | 3);
        on.store(metrics_on, Ordering::Relaxed);
        let counted = requests_counted(handle);
        let mut r = Result1 { agents: n_agents, jobs: args.jobs, ..Default::default() };
        throughput(args, &setup, &app, &input, &mut r).await?;
        let counted = requests_counted(handle) - counted;
        let done = r.jobs - r.submit_errors.len();
        anyhow::ensure!(
            r.failed.is_empty() && r.submit_errors.is_empty(),
            "round {} had failures: {:?} {:?}",
            round + 1,
            r.failed.first(),
            r.submit_errors.first()
        );
        rows.push((metrics_on, done, r.tput_elapsed_s, r.cpu_self_s, counted));
    }
    upkeep.abort();
    setup.stop().await;
    // The same alternation for the recorder alone, on this thread (the server is stopped).
    let mut per_request = [Vec::new(), Vec::new()];
    for round in 0..8 {
        let metrics_on = matches!(round % 4, 0 | 3);
        on.store(metrics_on, Ordering::Relaxed);
        per_request[usize::from(metrics_on)].push(record_like_track(200_000));
    }
    on.store(true, Ordering::Relaxed);
    handle.run_upkeep();

    println!();
    println!(
        "Metrics on vs off: {n_agents} agent(s), {} jobs from {} submitters per round, on one server ({}), alternating on, off, off, on:",
        args.jobs,
        args.concurrency,
        if args.postgres { "PostgreSQL" } else { "SQLite" }
    );
    println!();
    println!("| round | recorder | jobs/s | elapsed s | server+client CPU per job ms | HTTP requests the recorder counted |");
    println!("|---:|---|---:|---:|---:|---:|");
    for (i, (metrics_on, done, elapsed, cpu, counted)) in rows.iter().enumerate() {
        println!(
            "| {} | {} | {:.0} | {elapsed:.2} | {:.3} | {counted:.0} |",
            i + 1,
            if *metrics_on { "on" } else { "off" },
            *done as f64 / elapsed,
            cpu / *done as f64 * 1000.0
        );
    }
    let rate = |want: bool| {
        let (jobs, secs) = rows.iter().filter(|r| r.0 == want).fold((0usize, 0.0), |(j, s), r| (j + r.1, s + r.2));
        jobs as f64 / secs
    };
    let median = |want: bool| {
        let v = sorted(rows.iter().filter(|r| r.0 == want).map(|r| r.1 as f64 / r.2).collect());
        pct(&v, 50.0)
    };
    let cpu_per_job = |want: bool| {
        let (jobs, cpu) = rows.iter().filter(|r| r.0 == want).fold((0usize, 0.0), |(j, c), r| (j + r.1, c + r.3));
        cpu / jobs as f64 * 1000.0
    };
    let (on_rate, off_rate) = (rate(true), rate(false));
    println!();
    println!(
        "jobs/s over all rounds: on {on_rate:.0}, off {off_rate:.0}; on/off = {:.3} (medians {:.0} / {:.0} = {:.3}); the aim (issue 22): at least 0.95",
        on_rate / off_rate,
        median(true),
        median(false),
        median(true) / median(false)
    );
    println!(
        "server+client CPU per job: on {:.3} ms, off {:.3} ms (on/off = {:.3})",
        cpu_per_job(true),
        cpu_per_job(false),
        cpu_per_job(true) / cpu_per_job(false)
    );
    let (req_on, req_off) = (pct(&sorted(per_request[1].clone()), 50.0), pct(&sorted(per_request[0].clone()), 50.0));
    let requests_per_job =
        rows.iter().filter(|r| r.0).map(|r| r.4).sum::<f64>() / rows.iter().filter(|r| r.0).map(|r| r.1).sum::<usize>() as f64;
    println!(
        "the recorder alone, per HTTP request as the server records it (median of 4 × 200 000): on {req_on:.0} ns, off {req_off:.0} ns; \
         × {requests_per_job:.1} requests per job = {:.1} µs per job, {:.2} % of the CPU per job with it off",
        (req_on - req_off) * requests_per_job / 1000.0,
        (req_on - req_off) * requests_per_job / 1e6 / cpu_per_job(false) * 100.0
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Retention at scale
// ---------------------------------------------------------------------------------------------

/// What the deployment stores, by where.
struct Footprint {
    /// The database's size on disk, and the part of it in use (SQLite: minus its free pages;
    /// PostgreSQL: the same, as its files keep what autovacuum frees for reuse).
    database: (i64, i64),
    /// The artifact store's files.
    artifacts: u64,
    jobs: i64,
    rows: i64,
}

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mb = |b: f64| b / 1e6;
        write!(
            f,
            "{} jobs, {} rows of theirs; database {:.1} MB on disk ({:.1} MB in use), artifact files {:.2} MB",
            self.jobs,
            self.rows,
            mb(self.database.0 as f64),
            mb(self.database.1 as f64),
            mb(self.artifacts as f64)
        )
    }
}

async fn footprint(setup: &Setup) -> anyhow::Result<Footprint> {
    let db = &setup.state.db;
    let on_disk = aiedge_store::storage::database_bytes(db).await?;
    let in_use = match db.backend {
        aiedge_store::db::Backend::Sqlite => {
            let (free,): (i64,) = sqlx::query_as("select freelist_count * page_size from pragma_freelist_count(), pragma_page_size()")
                .fetch_one(&db.pool)
                .await?;
            on_disk - free
        }
        aiedge_store::db::Backend::Postgres => on_disk,
    };
    let count = |sql: &'static str| async move { sqlx::query_as::<_, (i64,)>(sql).fetch_one(&db.pool).await.map(|(n,)| n) };
    let jobs = count("select count(*) from jobs").await?;
    let rows = count("select count(*) from job_events").await?
        + count("select count(*) from job_attempts").await?
        + count("select count(*) from inline_artifacts").await?;
    let artifacts = setup.state.artifacts.sizes().await?.iter().map(|(_, bytes)| bytes).sum();
    Ok(Footprint { database: (on_disk, in_use), artifacts, jobs, rows })
}

/// Adds `n` finished jobs, each a copy of one of `seeds` (real jobs: their events, attempts and
/// database-kept input and result come along) that ended two days ago.
async fn fill(setup: &Setup, seeds: &[String], n: usize) -> anyhow::Result<()> {
    let db = &setup.state.db;
    let ended = aiedge_store::now_ms() - 2 * 24 * 3600 * 1000;
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut tx = db.writer.begin().await?;
        for &i in chunk {
            let seed = &seeds[i % seeds.len()];
            let id = uuid::Uuid::new_v4().simple().to_string();
            let suffix = format!("-{id}");
            let at = ended + i as i64 % 1000;
            // Keys as the server makes them: the input's own, the results' under the job's id
            // (the retention task derives those from the id).
            sqlx::query(
                "insert into inline_artifacts (key, content, created_at)
                 select case when key like 'inline:jobs/%' then replace(key, $3, $4) else key || $1 end, content, $2
                 from inline_artifacts
                 where key in (select input_key from jobs where id = $3 union select result_key from jobs where id = $3
                               union select log_key from jobs where id = $3)",
            )
            .bind(&suffix)
            .bind(at)
            .bind(seed)
            .bind(&id)
            .execute(&mut *tx)
            .await?;
            // Both take the copy's id, the suffix of its keys, when it ended, and the seed's id.
            for sql in [
                "insert into jobs (id, owner_id, app_id, status, input_key, input_name, input_rows, node_id, attempt, decision, error,
                                   result_key, result_rows, log_key, progress_rows, created_at, dispatched_at, started_at, finished_at, max_attempts, pool)
                 select $1, owner_id, app_id, status, input_key || $2, input_name, input_rows, node_id, attempt, decision, error,
                        replace(result_key, $4, $1), result_rows, replace(log_key, $4, $1), progress_rows, $3, $3, $3, $3, max_attempts, pool
                 from jobs where id = $4",
                "insert into job_events (id, job_id, at, status, attempt, node_id, message)
                 select id || $2, $1, $3, status, attempt, node_id, message from job_events where job_id = $4",
            ] {
                sqlx::query(sql).bind(&id).bind(&suffix).bind(at).bind(seed).execute(&mut *tx).await?;
            }
            sqlx::query(
                "insert into job_attempts (job_id, attempt, node_id, node_name, agent_instance, dispatched_at, started_at, finished_at, outcome, reason)
                 select $1, attempt, node_id, node_name, agent_instance, $2, $2, $2, outcome, reason from job_attempts where job_id = $3",
            )
            .bind(&id)
            .bind(at)
            .bind(seed)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// One job, submitted and waited for: its round trip in ms.
async fn round_trip(setup: &Setup, app: &str, input: &[u8]) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let id = setup.submit(app, input).await?;
    let (job, seen, _) = setup.wait_job(&id, Duration::ZERO).await?;
    anyhow::ensure!(job["status"] == "succeeded", "job failed: {job}");
    Ok(seen.duration_since(t0).as_secs_f64() * 1000.0)
}

/// Jobs that ended over a day ago: the ones `fill` made, until the server prunes them.
async fn expired(setup: &Setup) -> anyhow::Result<i64> {
    let cut = aiedge_store::now_ms() - 24 * 3600 * 1000;
    let (n,): (i64,) = sqlx::query_as("select count(*) from jobs where finished_at < $1").bind(cut).fetch_one(&setup.state.db.pool).await?;
    Ok(n)
}

/// `--retention N`: a database that holds `N` more finished jobs than it keeps (the server runs
/// with `--retention-days 1`, and they ended two days ago), `--retention-cycles` times. The
/// server's own retention task prunes them (on its minute tick, once the usage roll-up has
/// counted them) while this runs jobs one at a time: the round trips before and during the
/// prune say what it costs the job path, the footprint after it what stays.
async fn retention(args: &Args, bin: &Path) -> anyhow::Result<()> {
    let setup = Setup::start(args, 2, bin, "500ms").await?;
    let (app, input) = warm_up(args, &setup, 2).await?;
    println!(
        "retention: {} finished jobs pruned per cycle, {} cycles, {}, 2 agents",
        args.retention,
        args.retention_cycles,
        if args.postgres { "PostgreSQL" } else { "SQLite" }
    );
    let mut seeds = Vec::new();
    for _ in 0..100 {
        let id = setup.submit(&app, &input).await?;
        setup.wait_job(&id, Duration::ZERO).await?;
        seeds.push(id);
    }
    println!("start: {}", footprint(&setup).await?);
    for cycle in 1..=args.retention_cycles {
        // At rest first: nothing to prune.
        let mut rest = Vec::new();
        for _ in 0..args.sequential {
            rest.push(round_trip(&setup, &app, &input).await?);
        }
        let t = Instant::now();
        fill(&setup, &seeds, args.retention).await?;
        let fill_s = t.elapsed().as_secs_f64();
        println!("cycle {cycle}: {} finished jobs added in {fill_s:.1} s: {}", args.retention, footprint(&setup).await?);
        // The server's task prunes on its minute tick (it may have begun during the fill).
        let (mut during, waiting) = (Vec::new(), Instant::now());
        let mut started = None;
        loop {
            let left = expired(&setup).await?;
            if left == 0 {
                break;
            }
            anyhow::ensure!(waiting.elapsed() < Duration::from_secs(900), "not pruned within 15 minutes ({left} left)");
            if started.is_none() && left >= args.retention as i64 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            started.get_or_insert_with(Instant::now);
            during.push(round_trip(&setup, &app, &input).await?);
            // A steady load, not a flood: the jobs run meanwhile stay, and count in the footprint.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let prune_s = started.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
        for _ in 0..args.sequential {
            rest.push(round_trip(&setup, &app, &input).await?);
        }
        let (rest, during) = (sorted(rest), sorted(during));
        println!(
            "  the server pruned them in about {prune_s:.0} s ({:.0} jobs/s; batches sized to take about 5 ms, at most {} jobs)",
            args.retention as f64 / prune_s,
            server::retention::MAX_BATCH,
        );
        println!(
            "  job round trip, p50 / p95 / max ms: at rest {:.1} / {:.1} / {:.1} ({} jobs, before the fill and after the prune); while pruning {:.1} / {:.1} / {:.1} ({} jobs); p95 ratio {:.2}",
            pct(&rest, 50.0),
            pct(&rest, 95.0),
            rest.last().copied().unwrap_or(f64::NAN),
            rest.len(),
            pct(&during, 50.0),
            pct(&during, 95.0),
            during.last().copied().unwrap_or(f64::NAN),
            during.len(),
            pct(&during, 95.0) / pct(&rest, 95.0)
        );
        println!("  after: {}", footprint(&setup).await?);
    }
    setup.stop().await;
    Ok(())
}

/// The table's first cell: the agents, and the replicas when there are several.
fn who(r: &Result1) -> String {
    if r.replicas > 1 {
        format!("{} ({} replicas)", r.agents, r.replicas)
    } else {
        r.agents.to_string()
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.trace {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    }
    if args.failover > 0 {
        return failover(&args, &agent_bin()?).await;
    }
    if args.retention > 0 {
        return retention(&args, &agent_bin()?).await;
    }
    if args.compare_metrics > 0 {
        // Before anything records: the server's recorder must be this switch.
        let (on, handle) = MetricsSwitch::install()?;
        return compare_metrics(&args, &agent_bin()?, &on, &handle).await;
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!(
        "jobs_bench: {cores} cores, database {}, {:?} job queues, agents --max-jobs {} --queue-ahead {}, {} sequential jobs ({}), {} jobs from {} submitters{}",
        if args.postgres { "PostgreSQL" } else { "SQLite" },
        args.job_queues,
        args.max_jobs,
        args.queue_ahead,
        args.sequential,
        if args.poll_us == 0 { "waiting with ?wait=".to_string() } else { format!("polling every {} µs", args.poll_us) },
        args.jobs,
        args.concurrency,
        if args.closed_loop { ", closed loop (diagnostic)" } else { "" }
    );

    let mut results = Vec::new();
    if !args.no_server {
        let bin = agent_bin()?;
        for &n in &args.agents {
            for &k in &args.replicas {
                results.push(measure(&args, n, k, &bin).await?);
            }
        }
    }
    let runner = if args.no_runner { Vec::new() } else { tokio::task::spawn_blocking(runner_phase).await?? };

    println!();
    println!(
        "Machine: {cores} cores (server, agents and client share them). Database: {}. Data and work dirs under {}.",
        if args.postgres { "PostgreSQL" } else { "SQLite" },
        args.scratch.as_deref().map_or_else(|| std::env::temp_dir().display().to_string(), |p| p.display().to_string())
    );
    if !results.is_empty() {
        println!();
        println!("Trivial job (iris_logreg.onnx, 1-row CSV), one at a time, submit → `succeeded` seen by the client, ms:");
        println!();
        println!("| agents | jobs | p50 | p95 | p99 | max | submit call p50 | server created→finished p50 / p95 |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for r in &results {
            let e = sorted(r.e2e.clone());
            let s = sorted(r.submit_call.clone());
            let sv = sorted(r.server.clone());
            println!(
                "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} |",
                who(r),
                e.len(),
                pct(&e, 50.0),
                pct(&e, 95.0),
                pct(&e, 99.0),
                e.last().copied().unwrap_or(f64::NAN),
                pct(&s, 50.0),
                pct(&sv, 50.0),
                pct(&sv, 95.0)
            );
        }
        println!();
        println!("Where a sequential job's time goes (server timestamps are whole ms), p50 / p95 ms:");
        println!();
        println!("| agents | submit→created | created→dispatched | dispatched→started | started→finished | finished→seen |");
        println!("|---:|---:|---:|---:|---:|---:|");
        for r in &results {
            let cells: Vec<String> = r
                .stages
                .iter()
                .map(|v| {
                    let v = sorted(v.clone());
                    format!("{:.1} / {:.1}", pct(&v, 50.0), pct(&v, 95.0))
                })
                .collect();
            println!("| {} | {} |", who(r), cells.join(" | "));
        }
        println!();
        for r in &results {
            let (a, b) = (sorted(r.probe_status.clone()), sorted(r.probe_result.clone()));
            println!(
                "Diagnostics, {} agent(s), p50 ms: GET /api/v1/jobs/{{id}} {:.1}, GET …/result (1-row CSV) {:.1}",
                who(r),
                pct(&a, 50.0),
                pct(&b, 50.0)
            );
        }
        println!();
        println!("Sustained throughput ({} jobs, {} concurrent submitters):", args.jobs, args.concurrency);
        println!();
        println!("| agents | jobs/s (first submit → last finished) | elapsed s | submit phase s | failed | queue wait (created→dispatched) p50 / p95 ms | dispatched→started p50 ms | started→finished p50 ms | jobs per node |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in &results {
            let q = sorted(r.tput_stages[0].clone());
            let d = sorted(r.tput_stages[1].clone());
            let f = sorted(r.tput_stages[2].clone());
            let done = r.jobs - r.submit_errors.len();
            println!(
                "| {} | {:.0} | {:.2} | {:.2} | {} | {:.0} / {:.0} | {:.0} | {:.0} | {} |",
                who(r),
                done as f64 / r.tput_elapsed_s,
                r.tput_elapsed_s,
                r.submit_s,
                r.failed.len() + r.submit_errors.len(),
                pct(&q, 50.0),
                pct(&q, 95.0),
                pct(&d, 50.0),
                pct(&f, 50.0),
                r.per_node.values().map(usize::to_string).collect::<Vec<_>>().join("/")
            );
        }
        println!();
        for r in &results {
            let done = (r.jobs - r.submit_errors.len()).max(1) as f64;
            println!(
                "CPU in the throughput phase, {} agent(s): server+client {:.1} s, agents {:.1} s, broker {:.1} s over {:.1} s wall = {:.2} cores busy; per job {:.2} ms server+client, {:.2} ms agents, {:.2} ms broker",
                who(r),
                r.cpu_self_s,
                r.cpu_agents_s,
                r.cpu_broker_s,
                r.tput_client_s,
                (r.cpu_self_s + r.cpu_agents_s + r.cpu_broker_s) / r.tput_client_s,
                r.cpu_self_s / done * 1000.0,
                r.cpu_agents_s / done * 1000.0,
                r.cpu_broker_s / done * 1000.0
            );
        }
        for r in &results {
            for f in r.seq_failed.iter().chain(&r.submit_errors).chain(&r.failed).take(20) {
                println!("  {} agent(s) failure: {f}", who(r));
            }
        }
    }
    if !runner.is_empty() {
        println!();
        println!("ONNX runner alone (`Model::predict_csv`, CSV in memory → CSV in memory, batch 4096, median of 5):");
        println!();
        println!("| model | rows | ms | rows/s |");
        println!("|---|---:|---:|---:|");
        for (name, rows, rps, ms) in &runner {
            println!("| {name} | {rows} | {ms:.1} | {rps:.0} |");
        }
    }
    Ok(())
}
