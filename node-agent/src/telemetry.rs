//! The agent's own Prometheus metrics: what it does (heartbeats, jobs, model loads, benchmarks),
//! served at `GET /metrics` on `--metrics-bind`, and off without it.
//!
//! Not [`crate::metrics`], which measures the *machine* for the heartbeats. Everything here is
//! recorded through the `metrics` facade; without `--metrics-bind` no recorder is installed
//! and those calls cost next to nothing. With it, [`serve`] installs the Prometheus recorder
//! and answers on a listener of its own with a small HTTP/1.1 responder (one route, one request
//! per connection). The agent has hyper's client (through reqwest) but not its server, and
//! axum is not in it: measured on the stripped release binary, the exporter with this
//! responder adds 335 KiB (1.0 %), the exporter's own listener (hyper's server with HTTP/2)
//! 1.2 MiB (3.6 %), and issue 17 wants a small agent.
//!
//! Names follow the server's: one prefix, base units, `_total` counters, explicit histogram
//! buckets, and no label whose values grow with the data (no job or node ids).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use shared::jobs::Outcome;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Heartbeats the broker confirmed.
pub const HEARTBEATS_SENT: &str = "aiedge_agent_heartbeats_sent_total";
/// Heartbeats whose publish failed or was not confirmed in time (the link is then reopened).
pub const HEARTBEATS_FAILED: &str = "aiedge_agent_heartbeats_failed_total";
/// Jobs run here, by outcome (see [`JOB_OUTCOMES`]).
pub const JOBS_RUN: &str = "aiedge_agent_jobs_run_total";
/// Time of a job that ran to an outcome: from its start to its outcome, fetching the
/// application and input and uploading the result included, the final report not.
pub const JOB_SECONDS: &str = "aiedge_agent_job_duration_seconds";
/// Jobs running here now.
pub const JOBS_RUNNING: &str = "aiedge_agent_jobs_running";
/// Time to load an ONNX model that was not in the cache.
pub const MODEL_LOAD_SECONDS: &str = "aiedge_agent_model_load_duration_seconds";
/// Time of one CPU benchmark (about a second of work, plus any wait for a blocking thread).
pub const BENCHMARK_SECONDS: &str = "aiedge_agent_benchmark_duration_seconds";
/// The latest CPU benchmark's result, the `events_per_sec` of the heartbeats.
pub const BENCHMARK_EVENTS: &str = "aiedge_agent_benchmark_events_per_second";
/// Always 1, labelled with the version.
pub const BUILD_INFO: &str = "aiedge_agent_build_info";

/// The `outcome` labels of [`JOBS_RUN`], as the server counts attempts: `succeeded`;
/// `app_error` (the application or its input failed); `node_error` (this node failed, or was
/// stopping and handed the job back); `stopped` (the server said stop, or the run was
/// refused or cut short before it had an outcome: cancelled, given to another node).
pub const JOB_OUTCOMES: &[&str] = &["succeeded", "app_error", "node_error", "stopped"];

/// Jobs last from milliseconds (a small model) to an hour (the default longest script).
const JOB_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// Model loads: from a millisecond to the server's 30 s model-check limit.
const LOAD_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// A benchmark runs for [`crate::bench::DEFAULT_DURATION`]; more means a busy blocking pool.
const BENCHMARK_BUCKETS: &[f64] = &[1.01, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0];

/// Largest request head read; a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8 << 10;
/// Longest a connection may take from accept to the last byte of the answer.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections answered at once; more are closed at once.
const MAX_CONNECTIONS: usize = 4;
/// How often histograms are drained when nobody scrapes (the exporter keeps every sample
/// until then).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Binds `addr`, installs the recorder and answers `GET /metrics` there until `cancel`.
/// Fails if the address cannot be bound: the owner asked for metrics there.
pub async fn serve(addr: SocketAddr, cancel: CancellationToken) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr} for metrics"))?;
    let handle = install()?;
    tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving metrics at /metrics");
    tokio::spawn(accept(listener, handle, cancel));
    Ok(())
}

/// Installs the Prometheus recorder as the process's recorder.
fn install() -> anyhow::Result<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(JOB_SECONDS.into()), JOB_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(MODEL_LOAD_SECONDS.into()), LOAD_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(BENCHMARK_SECONDS.into()), BENCHMARK_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
    describe();
    start_at_zero();
    metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HEARTBEATS_SENT, "Heartbeats the broker confirmed.");
    describe_counter!(HEARTBEATS_FAILED, "Heartbeats whose publish failed or was not confirmed in time.");
    describe_counter!(JOBS_RUN, "Jobs run here, by outcome.");
    describe_histogram!(JOB_SECONDS, Unit::Seconds, "Time of a job from its start to its outcome.");
    describe_gauge!(JOBS_RUNNING, "Jobs running here now.");
    describe_histogram!(MODEL_LOAD_SECONDS, Unit::Seconds, "Time to load an ONNX model that was not cached.");
    describe_histogram!(BENCHMARK_SECONDS, Unit::Seconds, "Time of one CPU benchmark.");
    describe_gauge!(BENCHMARK_EVENTS, "The latest CPU benchmark's events per second.");
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
}

/// Every counter with its known labels at 0, so `rate()` has a first point before the first
/// event of its kind.
fn start_at_zero() {
    metrics::counter!(HEARTBEATS_SENT).absolute(0);
    metrics::counter!(HEARTBEATS_FAILED).absolute(0);
    for outcome in JOB_OUTCOMES {
        metrics::counter!(JOBS_RUN, "outcome" => *outcome).absolute(0);
    }
    metrics::gauge!(JOBS_RUNNING).set(0.0);
}

/// A heartbeat published: confirmed by the broker, or not.
pub fn heartbeat(confirmed: bool) {
    metrics::counter!(if confirmed { HEARTBEATS_SENT } else { HEARTBEATS_FAILED }).increment(1);
}

/// A benchmark that ran to its end.
pub fn benchmark(took: Duration, events_per_sec: f64) {
    metrics::histogram!(BENCHMARK_SECONDS).record(took.as_secs_f64());
    metrics::gauge!(BENCHMARK_EVENTS).set(events_per_sec);
}

/// A model loaded into the cache.
pub fn model_loaded(took: Duration) {
    metrics::histogram!(MODEL_LOAD_SECONDS).record(took.as_secs_f64());
}

/// A job running here: counted in `running` (the heartbeats' job count) and in
/// [`JOBS_RUNNING`] while it lives, so no path out of a run can leave it counted.
/// [`JobRun::end`] records its outcome; dropped without one, it counts as `stopped`.
pub struct JobRun {
    running: Arc<AtomicU32>,
    began: Instant,
    outcome: &'static str,
}

impl JobRun {
    pub fn start(running: &Arc<AtomicU32>) -> Self {
        running.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(JOBS_RUNNING).increment(1.0);
        Self { running: running.clone(), began: Instant::now(), outcome: "stopped" }
    }

    /// The run is over: `None` when it has no outcome (the server said stop).
    pub fn end(mut self, outcome: Option<&Outcome>) {
        self.outcome = match outcome {
            None => "stopped",
            Some(Outcome::Succeeded { .. }) => "succeeded",
            Some(Outcome::Failed { user_error: true, .. }) => "app_error",
            Some(Outcome::Failed { user_error: false, .. }) => "node_error",
        };
        if outcome.is_some() {
            metrics::histogram!(JOB_SECONDS).record(self.began.elapsed().as_secs_f64());
        }
    }
}

impl Drop for JobRun {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(JOBS_RUNNING).decrement(1.0);
        metrics::counter!(JOBS_RUN, "outcome" => self.outcome).increment(1);
    }
}

/// Answers connections until `cancel`, and drains the histograms now and then.
async fn accept(listener: TcpListener, handle: PrometheusHandle, cancel: CancellationToken) {
    let handle = Arc::new(handle);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut upkeep = tokio::time::interval(UPKEEP_EVERY);
    upkeep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = upkeep.tick() => handle.run_upkeep(),
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::debug!(error = %e, "metrics listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                // Busy: the connection is closed unanswered (dropped here).
                let Ok(slot) = slots.clone().try_acquire_owned() else { continue };
                let handle = handle.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &handle)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(error = %e, "metrics request not answered"),
                        Err(_) => tracing::debug!("metrics request not answered in time"),
                    }
                    drop(slot);
                });
            }
        }
    }
}

/// Reads one request head and answers it: the exposition at `/metrics`, 404 elsewhere.
async fn answer(mut stream: TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request head too large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(()); // closed before a whole request
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let response = respond(&head, handle);
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// The whole response to a request whose head is `head`.
fn respond(head: &[u8], handle: &PrometheusHandle) -> Vec<u8> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    let (status, extra, body) = match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => ("200 OK", "content-type: text/plain; version=0.0.4; charset=utf-8\r\n", handle.render()),
        (_, b"/metrics") => ("405 Method Not Allowed", "allow: GET, HEAD\r\n", String::new()),
        _ => ("404 Not Found", "content-type: text/plain; charset=utf-8\r\n", "only /metrics is here\n".to_owned()),
    };
    let mut response = format!("HTTP/1.1 {status}\r\n{extra}content-length: {}\r\nconnection: close\r\n\r\n", body.len()).into_bytes();
    if method != b"HEAD" {
        response.extend_from_slice(body.as_bytes());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(response: Vec<u8>) -> String {
        String::from_utf8(response).unwrap()
    }

    #[test]
    fn answers_metrics_and_nothing_else() {
        // A recorder of its own, not installed: the tests of this crate share the process.
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || metrics::counter!(HEARTBEATS_SENT).increment(3));

        let ok = text(respond(b"GET /metrics?x=1 HTTP/1.1\r\nhost: a\r\n\r\n", &handle));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("content-type: text/plain; version=0.0.4"), "{ok}");
        let body = ok.split("\r\n\r\n").nth(1).unwrap();
        assert!(ok.contains(&format!("content-length: {}\r\n", body.len())), "{ok}");
        assert!(body.contains("aiedge_agent_heartbeats_sent_total 3"), "{body}");

        let head = text(respond(b"HEAD /metrics HTTP/1.1\r\n\r\n", &handle));
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        assert!(text(respond(b"POST /metrics HTTP/1.1\r\n\r\n", &handle)).starts_with("HTTP/1.1 405 "));
        assert!(text(respond(b"GET / HTTP/1.1\r\n\r\n", &handle)).starts_with("HTTP/1.1 404 "));
        assert!(text(respond(b"GET /metricsx HTTP/1.1\r\n\r\n", &handle)).starts_with("HTTP/1.1 404 "));
        assert!(text(respond(b"\r\n\r\n", &handle)).starts_with("HTTP/1.1 404 "));
    }

    #[test]
    fn a_job_run_counts_while_it_lives_and_ends_with_its_outcome() {
        let recorder =
            PrometheusBuilder::new().set_buckets_for_metric(Matcher::Full(JOB_SECONDS.into()), JOB_BUCKETS).unwrap().build_recorder();
        let handle = recorder.handle();
        let running = Arc::new(AtomicU32::new(0));
        metrics::with_local_recorder(&recorder, || {
            let run = JobRun::start(&running);
            assert_eq!(running.load(Ordering::Relaxed), 1);
            run.end(Some(&Outcome::Succeeded { rows: 1 }));
            assert_eq!(running.load(Ordering::Relaxed), 0);
            let fail = |user_error| Outcome::Failed { error: "x".into(), user_error };
            JobRun::start(&running).end(Some(&fail(true)));
            JobRun::start(&running).end(Some(&fail(false)));
            JobRun::start(&running).end(None);
            drop(JobRun::start(&running));
        });
        assert_eq!(running.load(Ordering::Relaxed), 0, "every path out of a run uncounts it");
        let text = handle.render();
        for (outcome, n) in [("succeeded", 1), ("app_error", 1), ("node_error", 1), ("stopped", 2)] {
            assert!(text.contains(&format!("aiedge_agent_jobs_run_total{{outcome=\"{outcome}\"}} {n}\n")), "{outcome}: {text}");
        }
        assert!(text.contains("aiedge_agent_job_duration_seconds_count 3\n"), "only runs with an outcome are timed: {text}");
        assert!(text.contains("aiedge_agent_job_duration_seconds_bucket{le=\"3600\"} 3\n"), "{text}");
        assert!(text.contains("aiedge_agent_jobs_running 0\n"), "{text}");
    }

    #[test]
    fn buckets_are_valid() {
        for buckets in [JOB_BUCKETS, LOAD_BUCKETS, BENCHMARK_BUCKETS] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]), "{buckets:?}");
        }
    }
}
