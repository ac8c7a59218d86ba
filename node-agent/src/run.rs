//! `node-agent run`: register once, then measure and send heartbeats until stopped.
//!
//! Two loops share a `watch` channel holding the latest metrics:
//!
//! - the **measure loop** samples the machine every heartbeat interval (on the blocking pool)
//!   and reruns the CPU benchmark every `--benchmark-interval` while idle. It never stops for
//!   the broker, so the first heartbeat after a reconnect is fresh.
//! - the **publish loop** owns the RabbitMQ [`Link`]: it publishes each new measurement as a
//!   signed [`Heartbeat`], and on broker loss reconnects with capped exponential backoff and
//!   jitter. The first heartbeat of each connection carries the node's facts.
//!
//! A `watch` channel rather than a queue: only the newest measurement matters, so nothing piles
//! up while the broker is away. Both loops end on the [`CancellationToken`] (SIGTERM, Ctrl-C).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::Rng;
use shared::wire::{Heartbeat, NodeFacts, NodeMetrics, RegisterRequest};
use tokio::sync::watch;
use tokio::time::{interval_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::cli::RunArgs;
use crate::heartbeat::Link;
use crate::metrics::Sampler;
use crate::register::{self, RegisterError};
use crate::state::{self, redact_url, AgentState};
use crate::worker::{Worker, WorkerConfig};
use crate::{bench, facts};

/// Heartbeat interval when neither the command line nor the server names one.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
/// Heartbeats expire after this many intervals.
const EXPIRE_AFTER_INTERVALS: u32 = 3;
/// Longest wait for the broker to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Reconnect backoff: first delay and cap.
const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_CAP: Duration = Duration::from_secs(10);

/// Runs until `cancel` fires (then returns `Ok`) or something fatal happens.
pub async fn run(args: RunArgs, drain: CancellationToken) -> anyhow::Result<()> {
    // `drain` asks for a graceful stop; `cancel` stops everything. Until the job worker runs
    // there is nothing to drain, so the one means the other.
    let cancel = CancellationToken::new();
    let early_stop = tokio::spawn({
        let (drain, cancel) = (drain.clone(), cancel.clone());
        async move {
            drain.cancelled().await;
            cancel.cancel();
        }
    });
    // Random per process: the server tells a restart from a pause by it.
    let instance = format!("{:016x}", rand::thread_rng().gen::<u64>());
    let state_file = args.files.prepare()?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), state_file = %state_file.display(), max_jobs = args.max_jobs, queue_ahead = args.queue_ahead, "node-agent starting");
    if let Some(addr) = args.metrics_bind {
        crate::telemetry::serve(addr, cancel.clone()).await?;
    }

    // The first benchmark takes a second; run it while we register and gather facts.
    let first_bench = tokio::spawn(bench::run_blocking(bench::DEFAULT_DURATION, cancel.clone()));
    // A node whose scripts would fail at setup must not be offered scripts (every attempt sent
    // here would be lost to it); it says so, and still runs models.
    let launcher = std::env::current_exe().context("locating the agent binary")?;
    let scripts = !args.no_scripts && scripts_can_run(&args, &launcher).await;
    let facts = facts::gather(args.max_jobs, args.queue_ahead, scripts).await;

    let enrolment = Enrolment { server: args.server.as_deref(), token: args.token.as_deref(), name: args.name.as_deref() };
    let state = match obtain_state(&enrolment, &state_file, &facts, &cancel).await {
        Ok(Some(state)) => state,
        Ok(None) => return Ok(()), // cancelled while registering
        Err(err) => {
            cancel.cancel();
            let _ = first_bench.await;
            return Err(err);
        }
    };

    let Some(measured) = first_bench.await.context("cpu benchmark")?? else {
        return Ok(()); // cancelled during the benchmark
    };
    let events_per_sec = args.fixed_events_per_sec.unwrap_or(measured);

    let interval = args
        .heartbeat_interval
        .or(state.heartbeat_interval_ms.map(Duration::from_millis))
        .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL)
        .max(crate::cli::MIN_HEARTBEAT_INTERVAL);
    let amqp_url = args.amqp_url.clone().unwrap_or_else(|| state.amqp_url.clone());
    tracing::info!(
        node_id = %state.node_id,
        broker = %redact_url(&amqp_url),
        exchange = %state.heartbeat_exchange,
        interval_ms = interval.as_millis() as u64,
        "sending heartbeats"
    );

    let running = Arc::new(AtomicU32::new(0));
    let worker = if state.jobs_queue.is_empty() {
        tracing::info!("the server gave no job queue (it predates jobs): sending heartbeats only");
        None
    } else {
        let worker = Worker::new(
            WorkerConfig {
                server: state.server.clone(),
                node_id: state.node_id.clone(),
                node_key: state.node_key.clone(),
                amqp_url: amqp_url.clone(),
                queue: state.jobs_queue.clone(),
                max_jobs: args.max_jobs,
                queue_ahead: args.queue_ahead,
                work_dir: args.files.work_dir.clone(),
                launcher,
                accepts_scripts: scripts,
                script_caps: args.script_caps(),
                instance: instance.clone(),
            },
            running.clone(),
        )?;
        early_stop.abort();
        // A stop request from now on drains: no new jobs, running ones finish within the
        // grace period or are handed back; heartbeats go on (saying so) until it is done.
        tokio::spawn({
            let (worker, drain, cancel, grace) = (worker.clone(), drain.clone(), cancel.clone(), args.drain_timeout);
            async move {
                tokio::select! {
                    () = drain.cancelled() => {
                        worker.drain(grace).await;
                        cancel.cancel();
                    }
                    () = cancel.cancelled() => {}
                }
            }
        });
        Some(tokio::spawn(worker.run(cancel.clone())))
    };

    let (metrics_tx, metrics_rx) = watch::channel(None);
    let measure = tokio::spawn(measure_loop(
        interval,
        args.benchmark_interval,
        events_per_sec,
        args.fixed_events_per_sec.is_some(),
        running,
        metrics_tx,
        cancel.clone(),
    ));
    // Check in now and then; a removed node stops instead of heartbeating into the void.
    let watch = tokio::spawn(watch_credentials(state.clone(), cancel.clone()));
    let publisher = Publisher {
        amqp_url,
        exchange: state.heartbeat_exchange.clone(),
        node_id: state.node_id.clone(),
        node_key: state.node_key.clone(),
        facts,
        expiration: interval * EXPIRE_AFTER_INTERVALS,
        instance,
        draining: drain,
    };
    publisher.run(metrics_rx, &cancel).await;

    // The publisher only stops on cancel or when the measure loop is gone; stop both either way.
    cancel.cancel();
    measure.await.context("measure loop")??;
    if let Some(worker) = worker {
        // Jobs in progress get a moment to report; their messages are back on the queue anyway.
        let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
    }
    if let Ok(Some(revoked)) = watch.await {
        return Err(revoked.into());
    }
    tracing::info!("node-agent stopped");
    Ok(())
}

/// The state from the state file, or from a fresh registration (saved before it is used).
/// `Ok(None)` if cancelled while registering.
/// Whether this node can give scripts the sandbox they are promised; says plainly why not.
async fn scripts_can_run(args: &RunArgs, launcher: &std::path::Path) -> bool {
    let off = |why: &str| tracing::warn!("script jobs are OFF on this node: {why} (ONNX models still run)");
    if let Err(why) = runner::sandbox::check_reachable_below(&args.files.work_dir) {
        off(&why);
        return false;
    }
    let isolation = runner::sandbox::isolation();
    if isolation.landlock == runner::sandbox::LandlockLevel::Unavailable && !args.allow_scripts_without_landlock {
        off("this kernel has no Landlock, so nothing would keep a script from the files its uid can read; \
             start the agent with --allow-scripts-without-landlock to run them anyway");
        return false;
    }
    let caps = args.script_caps();
    if let Err(why) = crate::worker::probe_sandbox(&args.files.work_dir, launcher, &caps).await {
        off(&format!("the sandbox does not work here: {why}"));
        return false;
    }
    tracing::info!(
        %isolation,
        network = if caps.network { "allowed (--script-network)" } else { "none (a namespace of its own)" },
        max_memory_mb = args.script_max_memory_mb,
        max_time = %humantime::format_duration(caps.time_limit),
        max_disk_mb = args.script_max_disk_mb,
        "script jobs sandboxed"
    );
    true
}

/// What a node enrols with: `run` and `enrol` both take these.
pub struct Enrolment<'a> {
    pub server: Option<&'a str>,
    pub token: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The node's saved credentials, or new ones from the server (registering with the token and
/// saving them): `Ok(None)` when `cancel` fired first.
pub async fn obtain_state(
    enrolment: &Enrolment<'_>,
    state_file: &std::path::Path,
    facts: &NodeFacts,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<AgentState>> {
    if let Some(state) = state::load(state_file)? {
        tracing::info!(node_id = %state.node_id, "using saved node credentials");
        if let Some(server) = enrolment.server.filter(|s| *s != state.server) {
            tracing::warn!(saved = %state.server, given = %server, "--server differs from the server this node registered with");
        }
        if enrolment.token.is_some() {
            tracing::info!("state file present: the registration token is not needed and was not used");
        }
        return Ok(Some(state));
    }

    let server = enrolment.server.with_context(|| format!("no state file at {} and no --server to register with", state_file.display()))?;
    let token = enrolment.token.with_context(|| format!("no state file at {} and no --token to register with", state_file.display()))?;
    let request = RegisterRequest { token: token.to_string(), name: enrolment.name.map(str::to_string), facts: facts.clone() };
    let client = register::client().context("building the HTTP client")?;

    let mut attempt = 0;
    let response = loop {
        tracing::info!(server = %server, "registering node");
        let outcome = tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            outcome = register::register(&client, server, &request) => outcome,
        };
        match outcome {
            Ok(response) => break response,
            Err(err) if err.is_transient() => {
                let delay = jittered(backoff(attempt));
                attempt += 1;
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "registration failed; retrying");
                tokio::select! {
                    () = cancel.cancelled() => return Ok(None),
                    () = tokio::time::sleep(delay) => {}
                }
            }
            Err(RegisterError::Refused(refused)) => return Err(refused.into()),
            Err(err) => return Err(err.into()),
        }
    };

    let state = AgentState::from_registration(server, response);
    state::save(state_file, &state)?;
    tracing::info!(node_id = %state.node_id, state_file = %state_file.display(), "node registered");
    Ok(Some(state))
}

/// How often the agent checks that its credentials still stand.
const CHECK_IN_EVERY: Duration = Duration::from_secs(30);

/// Checks in at start and every [`CHECK_IN_EVERY`]; on revocation cancels the agent and
/// returns why.
async fn watch_credentials(state: AgentState, cancel: CancellationToken) -> Option<crate::register::Revoked> {
    let client = register::client().ok()?;
    loop {
        if let Err(revoked) = register::check_in(&client, &state.server, &state.node_id, &state.node_key).await {
            tracing::error!(error = %revoked, "stopping");
            cancel.cancel();
            return Some(revoked);
        }
        tokio::select! {
            () = cancel.cancelled() => return None,
            () = tokio::time::sleep(CHECK_IN_EVERY) => {}
        }
    }
}

/// Samples the machine every `interval` into `tx`; reruns the benchmark every `bench_every`.
#[allow(clippy::too_many_arguments)]
async fn measure_loop(
    interval: Duration,
    bench_every: Duration,
    mut events_per_sec: f64,
    fixed_events: bool,
    running: Arc<AtomicU32>,
    tx: watch::Sender<Option<NodeMetrics>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let sampler = Sampler::shared().await?;
    // The sampler's first reading is the baseline: the first tick comes one interval later.
    let mut tick = interval_at(Instant::now() + interval, interval);
    // IMPORTANT: without Skip, ticks missed during a benchmark would run back to back.
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut bench_tick = interval_at(Instant::now() + bench_every, bench_every);
    bench_tick.set_missed_tick_behavior(MissedTickBehavior::Skip);

    loop {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let sample = Sampler::sample_shared(&sampler).await?;
                tracing::debug!(?sample, "sampled");
                tx.send_replace(Some(sample.into_metrics(events_per_sec, running.load(Ordering::Relaxed))));
            }
            // Never while a job runs: the benchmark would steal its CPU and measure the job.
            _ = bench_tick.tick(), if !fixed_events && running.load(Ordering::Relaxed) == 0 => {
                match bench::run_blocking(bench::DEFAULT_DURATION, cancel.clone()).await? {
                    Some(eps) => events_per_sec = eps,
                    None => return Ok(()),
                }
                // The benchmark's own second of full CPU is not load the balancer should see.
                Sampler::restart_cpu_window_shared(&sampler).await?;
                tick.reset();
            }
        }
    }
}

/// Everything the publish loop needs.
struct Publisher {
    amqp_url: String,
    exchange: String,
    node_id: String,
    node_key: String,
    facts: NodeFacts,
    expiration: Duration,
    instance: String,
    /// Fired once the agent is stopping: heartbeats say so.
    draining: CancellationToken,
}

/// Why a connection's publishing stopped.
enum Stop {
    /// Cancelled, or no more measurements: close and return.
    Done,
    /// The broker went away: reconnect.
    Lost(String),
}

impl Publisher {
    async fn run(&self, mut rx: watch::Receiver<Option<NodeMetrics>>, cancel: &CancellationToken) {
        let mut seq = 0;
        let mut attempt = 0;
        loop {
            if rx.has_changed().is_err() {
                return; // the measure loop is gone; nothing left to send
            }
            let opened = tokio::select! {
                () = cancel.cancelled() => return,
                opened = tokio::time::timeout(CONNECT_TIMEOUT, Link::open(&self.amqp_url, &self.exchange)) => opened,
            };
            let problem = match opened {
                Ok(Ok(link)) => {
                    if attempt > 0 {
                        tracing::info!(attempts = attempt, "reconnected to broker");
                    } else {
                        tracing::info!("connected to broker");
                    }
                    attempt = 0;
                    match self.pump(&link, &mut rx, &mut seq, cancel).await {
                        Stop::Done => {
                            link.close(Duration::from_secs(2)).await;
                            return;
                        }
                        Stop::Lost(why) => {
                            // Best effort: the socket may already be gone.
                            link.close(Duration::from_millis(500)).await;
                            why
                        }
                    }
                }
                Ok(Err(err)) => err.to_string(),
                Err(_) => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
            };
            let delay = jittered(backoff(attempt));
            attempt += 1;
            tracing::warn!(
                error = %problem,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
                broker = %redact_url(&self.amqp_url),
                "broker unavailable; reconnecting"
            );
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Publishes every new measurement on `link` until it breaks or we are told to stop.
    async fn pump(&self, link: &Link, rx: &mut watch::Receiver<Option<NodeMetrics>>, seq: &mut u64, cancel: &CancellationToken) -> Stop {
        let mut first = true;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Stop::Done,
                () = link.lost() => return Stop::Lost("connection lost".into()),
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Stop::Done;
                    }
                    let Some(metrics) = rx.borrow_and_update().clone() else { continue };
                    // Counted per attempt, not per confirm: a heartbeat whose confirm was lost
                    // in a broken connection may still have been delivered, and the next one
                    // must not carry the same number.
                    let heartbeat = Heartbeat {
                        node_id: self.node_id.clone(),
                        seq: *seq,
                        sent_at_ms: now_ms(),
                        metrics,
                        facts: first.then(|| self.facts.clone()),
                        instance: Some(self.instance.clone()),
                        draining: self.draining.is_cancelled(),
                    };
                    *seq += 1;
                    let publish = link.publish(&heartbeat, &self.node_key, self.expiration);
                    // A broker that stops confirming is as good as gone.
                    match tokio::time::timeout(self.expiration.max(Duration::from_secs(5)), publish).await {
                        Ok(Ok(())) => {
                            crate::telemetry::heartbeat(true);
                            tracing::debug!(seq = heartbeat.seq, with_facts = first, "heartbeat sent");
                            first = false;
                        }
                        Ok(Err(err)) => {
                            crate::telemetry::heartbeat(false);
                            return Stop::Lost(format!("{err:#}"));
                        }
                        Err(_) => {
                            crate::telemetry::heartbeat(false);
                            return Stop::Lost("no publisher confirm in time".into());
                        }
                    }
                }
            }
        }
    }
}

/// Reconnect delay before jitter: 200 ms doubling per failed attempt, capped at 10 s.
pub fn backoff(attempt: u32) -> Duration {
    BACKOFF_START.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(BACKOFF_CAP)
}

/// `delay` scaled by a random factor in 0.75..1.25, so a fleet that lost the same broker does
/// not come back in lockstep.
fn jittered(delay: Duration) -> Duration {
    delay.mul_f64(rand::thread_rng().gen_range(0.75..1.25))
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap() {
        assert_eq!(backoff(0), Duration::from_millis(200));
        assert_eq!(backoff(1), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(6400));
        assert_eq!(backoff(6), BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
    }

    #[test]
    fn jitter_stays_near_the_delay() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(4));
            assert!(d >= Duration::from_secs(3) && d <= Duration::from_secs(5), "{d:?}");
        }
    }
}
