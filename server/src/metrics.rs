//! Prometheus metrics: the exporter, what the server itself measures (HTTP requests, heartbeats,
//! dispatch rounds, live feeds, the database pool, jobs and nodes by status), and `/metrics`.
//!
//! The use cases record the domain's counters through the `metrics` facade (names in
//! `aiedge_services::metrics`); this module installs the one recorder of the process, so
//! several servers in one process (the tests) share it. `/metrics` is off unless
//! `--metrics-bind` (a listener of its own, e.g. on a private interface) or `--metrics-token`
//! (on the public port, `Authorization: Bearer <token>`) turns it on.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aiedge_core::usage::Channel;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use tokio_util::sync::CancellationToken;

use app::backend::{AppState, CurrentUser};

/// HTTP requests answered, by method, route template and status.
pub const HTTP_REQUESTS: &str = "aiedge_http_requests_total";
/// Time to answer an HTTP request (to its headers, for streams), by method and route template.
pub const HTTP_SECONDS: &str = "aiedge_http_request_duration_seconds";
/// Heartbeat messages taken off the broker.
pub const HEARTBEATS_RECEIVED: &str = "aiedge_heartbeats_received_total";
/// Heartbeats refused, by reason (`bad_signature`, `stale`, …).
pub const HEARTBEATS_REFUSED: &str = "aiedge_heartbeats_refused_total";
/// Time of one dispatch round that placed at least one job.
pub const DISPATCH_SECONDS: &str = "aiedge_dispatch_round_duration_seconds";
/// Jobs dispatched.
pub const JOBS_DISPATCHED: &str = "aiedge_jobs_dispatched_total";
/// Live feeds (server-sent events) open now.
pub const LIVE_FEEDS: &str = "aiedge_live_feeds_open";
/// Jobs and nodes by status, counted in the database every few seconds.
pub const JOBS_BY_STATUS: &str = "aiedge_jobs";
pub const NODES_BY_STATUS: &str = "aiedge_nodes";
/// Database connections: open and idle, by pool (`read`, `write`).
pub const DB_CONNECTIONS: &str = "aiedge_db_connections";
pub const DB_CONNECTIONS_IDLE: &str = "aiedge_db_connections_idle";
/// Jobs' queue waits (submitted to dispatched) and run times (started to finished), observed
/// by the upkeep from the jobs that ended (off the job path).
pub const JOB_WAIT_SECONDS: &str = "aiedge_job_queue_wait_seconds";
pub const JOB_RUN_SECONDS: &str = "aiedge_job_run_seconds";
/// Always 1, labelled with the version.
pub const BUILD_INFO: &str = "aiedge_build_info";

/// Latencies from 1 ms to 30 s: HTTP answers and dispatch rounds.
const SECONDS_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// How often the gauges read from the database are refreshed.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
/// Jobs that ended less than this long ago are observed on a later tick (see `spawn_upkeep`).
const JOBS_SETTLE: Duration = Duration::from_secs(2);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// A Prometheus recorder with the server's histogram buckets, not installed (benchmarks wrap it).
pub fn build_recorder() -> PrometheusRecorder {
    // A constant, valid list: this cannot fail.
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .unwrap_or_else(|_| PrometheusBuilder::new())
        .build_recorder()
}

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed: /metrics shows only what was recorded before");
        }
        describe();
        start_at_zero();
        metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
}

fn describe() {
    use aiedge_services::metrics as domain;
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(HTTP_REQUESTS, "HTTP requests answered, by method, route template and status.");
    describe_histogram!(HTTP_SECONDS, Unit::Seconds, "Time to answer an HTTP request (to the headers for streams).");
    describe_counter!(HEARTBEATS_RECEIVED, "Heartbeat messages taken off the broker.");
    describe_counter!(HEARTBEATS_REFUSED, "Heartbeats refused, by reason.");
    describe_histogram!(DISPATCH_SECONDS, Unit::Seconds, "Time of a dispatch round that placed at least one job.");
    describe_counter!(JOBS_DISPATCHED, "Jobs dispatched to nodes.");
    describe_gauge!(LIVE_FEEDS, "Live feeds (server-sent events) open now.");
    describe_gauge!(JOBS_BY_STATUS, "Jobs by status.");
    describe_gauge!(NODES_BY_STATUS, "Nodes by status.");
    describe_gauge!(DB_CONNECTIONS, "Database connections open, by pool.");
    describe_gauge!(DB_CONNECTIONS_IDLE, "Database connections idle, by pool.");
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
    describe_histogram!(JOB_WAIT_SECONDS, Unit::Seconds, "Time from a job's submission to its (last) dispatch, for jobs that ended.");
    describe_histogram!(
        aiedge_services::metrics::SCHEDULE_LATENESS,
        Unit::Seconds,
        "From a schedule's fire time to its job being recorded."
    );
    describe_counter!(aiedge_services::metrics::SCHEDULE_RUNS, "Fire times of schedules, by outcome (fired, skipped, missed).");
    describe_histogram!(JOB_RUN_SECONDS, Unit::Seconds, "Time from a job's start on a node to its end, for jobs that ended.");
    describe_counter!(domain::JOBS_SUBMITTED, "Jobs recorded, by application kind.");
    describe_counter!(domain::JOBS_CANCELLED, "Jobs cancelled.");
    describe_counter!(domain::ATTEMPTS_ENDED, "Attempts that ended, by outcome.");
    describe_counter!(domain::REPORTS_REFUSED, "Agent reports refused as not about the node's live attempt, by report.");
}

/// Every counter with its known labels, at 0: a series that exists from the start gives
/// `rate()` a first point and a dashboard a line, before the first event of its kind.
fn start_at_zero() {
    use aiedge_services::metrics as domain;
    for kind in ["onnx", "script"] {
        metrics::counter!(domain::JOBS_SUBMITTED, "kind" => kind).absolute(0);
    }
    metrics::counter!(domain::JOBS_CANCELLED).absolute(0);
    for outcome in domain::ATTEMPT_OUTCOMES {
        metrics::counter!(domain::ATTEMPTS_ENDED, "outcome" => *outcome).absolute(0);
    }
    for report in domain::REPORTS {
        metrics::counter!(domain::REPORTS_REFUSED, "report" => *report).absolute(0);
    }
    for reason in crate::heartbeats::Rejected::LABELS {
        metrics::counter!(HEARTBEATS_REFUSED, "reason" => *reason).absolute(0);
    }
    metrics::counter!(HEARTBEATS_RECEIVED).absolute(0);
    metrics::counter!(JOBS_DISPATCHED).absolute(0);
    metrics::gauge!(LIVE_FEEDS).set(0.0);
}

/// Counts and times every request, and writes one log line for it: request id, method, route
/// template, status, latency and the user where one is known (a session's, or an API token's
/// through [`crate::usage::Actor`]). A person's requests are also counted for the Usage page.
/// Added with `Router::layer`, so it runs after routing and sees the route's template.
pub async fn track(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let began = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let session_user = request.extensions().get::<CurrentUser>().and_then(|u| u.0.as_ref().map(|u| u.id.clone()));
    let channel = if request.headers().contains_key(header::AUTHORIZATION) { Channel::Api } else { Channel::Web };
    let actor = crate::usage::Actor::default();
    request.extensions_mut().insert(actor.clone());
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let mut response = next.run(request).await;
    let latency = began.elapsed();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    let status = response.status().as_u16();
    let user_id = session_user.as_deref().or(actor.get());
    metrics::counter!(HTTP_REQUESTS, "method" => method.to_string(), "route" => route.clone(), "status" => status.to_string()).increment(1);
    metrics::histogram!(HTTP_SECONDS, "method" => method.to_string(), "route" => route.clone()).record(latency.as_secs_f64());
    if let Some(action) = aiedge_core::usage::classify(method.as_str(), &route) {
        state.usage.record(aiedge_services::usage::Request {
            at_ms: aiedge_store::now_ms(),
            action,
            channel,
            method: method.as_str(),
            route: &route,
            status,
            latency_ms,
            user_id,
        });
    }
    tracing::info!(
        target: "aiedge::http",
        request_id,
        method = %method,
        route,
        status,
        latency_ms,
        user_id = user_id.unwrap_or(""),
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// Who may read `/metrics` on the public port: the bearer of this token, or nobody (`None`:
/// off, or served on `--metrics-bind` instead).
#[derive(Clone, Default)]
pub struct PublicMetrics(pub Option<std::sync::Arc<str>>);

/// `GET /metrics` on the public port.
pub async fn public_exposition(Extension(access): Extension<PublicMetrics>, headers: HeaderMap) -> Response {
    let Some(token) = access.0 else {
        return (StatusCode::NOT_FOUND, "metrics are not served on this port\n").into_response();
    };
    let offered = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    // Compared in constant time: the token is a secret.
    let matches =
        offered.is_some_and(|o| o.len() == token.len() && o.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0);
    if !matches {
        return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "a metrics token is needed\n").into_response();
    }
    exposition().await
}

/// Serves `/metrics` alone on `listener` until `cancel` (a port of its own: not in the public
/// route table).
pub async fn serve_private(listener: tokio::net::TcpListener, cancel: CancellationToken) -> std::io::Result<()> {
    let app = crate::routes::Routes::<()>::new(crate::routes::Kind::Metrics).get("/metrics", exposition).into_router();
    axum::serve(listener, app).with_graceful_shutdown(cancel.cancelled_owned()).await
}

/// The exposition in Prometheus's text format.
pub async fn exposition() -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle().render()).into_response()
}

/// Refreshes the gauges read from the database, observes the queue waits and run times of the
/// jobs that ended since the last tick, and drains the histograms, until `cancel`.
pub fn spawn_upkeep(state: AppState, cancel: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(GAUGE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Jobs that ended before the server started were observed by the one before.
        let mut ended_after = aiedge_store::now_ms();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            // A job whose end is being committed right now is observed on the next tick.
            let until = aiedge_store::now_ms() - JOBS_SETTLE.as_millis() as i64;
            if until > ended_after {
                match aiedge_store::usage::job_times(&state.db, ended_after, until).await {
                    Ok(times) => {
                        for (wait_ms, run_ms) in times {
                            if let Some(ms) = wait_ms {
                                metrics::histogram!(JOB_WAIT_SECONDS).record(ms as f64 / 1000.0);
                            }
                            if let Some(ms) = run_ms {
                                metrics::histogram!(JOB_RUN_SECONDS).record(ms as f64 / 1000.0);
                            }
                        }
                        ended_after = until;
                    }
                    Err(e) => tracing::debug!(error = %e, "reading job times for the metrics failed"),
                }
            }
            handle().run_upkeep();
            for (pool, name) in [(&state.db.pool, "read"), (&state.db.writer, "write")] {
                metrics::gauge!(DB_CONNECTIONS, "pool" => name).set(f64::from(pool.size()));
                metrics::gauge!(DB_CONNECTIONS_IDLE, "pool" => name).set(pool.num_idle() as f64);
            }
            match aiedge_store::jobs::count_by_status(&state.db).await {
                Ok(counts) => {
                    for (status, n) in counts {
                        metrics::gauge!(JOBS_BY_STATUS, "status" => status).set(n as f64);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "counting jobs for the metrics failed"),
            }
            match aiedge_store::nodes::count_by_status(&state.db).await {
                Ok(counts) => {
                    for (status, n) in counts {
                        metrics::gauge!(NODES_BY_STATUS, "status" => status).set(n as f64);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "counting nodes for the metrics failed"),
            }
        }
    });
}

/// A live feed counted while it is open.
pub struct OpenFeed(());

impl OpenFeed {
    pub fn new() -> Self {
        metrics::gauge!(LIVE_FEEDS).increment(1.0);
        OpenFeed(())
    }
}

impl Default for OpenFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OpenFeed {
    fn drop(&mut self) {
        metrics::gauge!(LIVE_FEEDS).decrement(1.0);
    }
}
