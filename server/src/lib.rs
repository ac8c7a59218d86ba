//! The AI on the Edge server as a library, so tests can start the real thing on a port-0
//! listener. `main.rs` is a thin shell over [`launch`].
//!
//! - [`config`]: flags and environment.
//! - [`cross_site`]: state-changing requests from other sites refused (CSRF).
//! - [`broker`]: the RabbitMQ connection and its reconnects.
//! - [`broker_users`]: a RabbitMQ user per node, allowed its own queue and the heartbeat exchange.
//! - [`health`] answers `/healthz`.
//! - [`errors`]: malformed server-function calls answered 400.
//! - [`events`]: what the use cases raise, turned into dispatcher wake-ups and job-end news.
//! - [`admin_cli`]: `server admin create`, `server node add`.
//! - [`agent_api`]: the HTTP endpoints agents call (registration, check-in).
//! - [`agent_jobs`]: the signed HTTP endpoints agents call about their jobs (fenced by attempt).
//! - [`api`]: the JSON API under `/api/v1` (uploads, jobs, downloads) and its OpenAPI document.
//! - [`scheduler`]: queued jobs out to the nodes' queues, with publisher confirms.
//! - [`schedule_ticker`]: fires the users' schedules (jobs at times they set).
//! - [`heartbeats`]: heartbeats in, node status and scores out; dead-node detection.
//! - [`leadership`]: which replica runs the work that must happen once (a lease with a term).
//! - [`live`]: server-sent event feeds for the live pages.
//! - [`retention`]: finished jobs deleted after `--retention-days`, in small batches.
//! - [`replica_events`]: dispatcher wake-ups, job ends and page changes passed between replicas.
//! - [`secret`]: the server secret that node keys derive from.
//! - [`sqlite_lock`]: one server per SQLite database.
//! - [`routes`]: every route the server answers, listed by the code that routes it.
//! - [`metrics`]: Prometheus metrics and the one log line per request.
//! - [`usage`]: requests counted for the Usage page, written and rolled up in the background.
//! - The web app and its server functions live in the `app` crate; the domain in
//!   `aiedge_core` (no I/O), `aiedge_store` (every SQL statement) and `aiedge_services` (the use
//!   cases, called by the web app, the JSON API and the agent routes alike).

pub mod admin_cli;
pub mod agent_api;
pub mod agent_downloads;
pub mod agent_jobs;
pub mod api;
pub mod assets;
pub mod broker;
pub mod broker_users;
pub mod config;
pub mod cross_site;
pub mod errors;
pub mod events;
pub mod health;
pub mod heartbeats;
pub mod leadership;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod model_check;
pub mod replica_events;
pub mod retention;
pub mod routes;
pub mod schedule_ticker;
pub mod scheduler;
pub mod secret;
pub mod sqlite_lock;
pub mod storage;
pub mod usage;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aiedge_store::{nodes, sessions::DbSessionStore, Db};
use anyhow::Context;
use app::backend::{self, rate_limit::LimitConfig, AppState, Limits, Settings};
use app::{shell, App};
use axum::{middleware, Extension, Router};
use leptos::prelude::*;
use leptos_axum::{generate_route_list, LeptosRoutes};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};

use crate::broker::Broker;
use crate::config::{redact, Config};
use crate::heartbeats::{Fleet, LivenessSettings};
use crate::routes::{Kind, Routes};

pub use routes::route_table;

/// What agents are told at registration, and their broker users.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    pub broker_users: broker_users::BrokerUsers,
    pub heartbeat_exchange: String,
    pub heartbeat_interval: Duration,
}

impl AgentSettings {
    pub fn new(config: &Config, broker_users: broker_users::BrokerUsers) -> Self {
        Self {
            broker_users,
            heartbeat_exchange: broker::Topology::new(&config.amqp_namespace).heartbeat_exchange(),
            heartbeat_interval: config.heartbeat_interval,
        }
    }
}

/// The means to give each node a broker user of its own (see [`broker_users`]).
pub fn broker_users(config: &Config) -> anyhow::Result<broker_users::BrokerUsers> {
    // The configuration's own checks first: they name a bad URL best.
    config.validate()?;
    broker_users::BrokerUsers::new(
        &config.amqp_url,
        config.amqp_management_url.as_deref(),
        config.agent_amqp_url.as_deref().unwrap_or(&config.amqp_url),
        broker::Topology::new(&config.amqp_namespace),
    )
}

/// Largest request body outside the upload routes: forms are small.
const MAX_FORM_BODY: usize = 256 * 1024;

/// Connects to the database (applying migrations) and builds the shared state, with a
/// dispatcher of its own that no loop runs (for tools and tests; [`launch`] runs one).
pub async fn build_state(config: &Config) -> anyhow::Result<AppState> {
    build_state_with(config, scheduler::Dispatcher::default(), broker_users(config)?, replica_events::Relay::new().0).await
}

/// The shared state, whose use cases wake `dispatcher`.
async fn build_state_with(
    config: &Config,
    dispatcher: scheduler::Dispatcher,
    broker_users: broker_users::BrokerUsers,
    relay: replica_events::Relay,
) -> anyhow::Result<AppState> {
    config.validate()?;
    let secret = secret::load_or_create(&config.secret_file())?;
    let url = config.database_url();
    let db = Db::connect(&url).await.with_context(|| format!("database {}", redact(&url)))?;
    let job_ends = aiedge_services::JobEnds::default();
    let changes = aiedge_services::Changes::default();
    let leptos_options = LeptosOptions::builder()
        .output_name(env!("LEPTOS_OUTPUT_NAME"))
        .site_root(config.site_root.clone())
        .site_pkg_dir(assets::pkg_path(std::path::Path::new(&config.site_root)))
        .site_addr(config.bind)
        .build();
    Ok(AppState {
        leptos_options,
        limits: Arc::new(Limits::new(LimitConfig {
            login_per_ip: config.login_per_ip_per_min,
            login_per_account: config.login_per_account_per_min,
            register_per_ip: config.register_per_ip_per_min,
        })),
        settings: Arc::new(Settings {
            secure_cookies: config.secure_cookies(),
            trust_forwarded_for: config.trust_forwarded_for,
            public_url: config.public_url(),
            thermal: shared::score::ThermalPolicy { warn_c: config.warn_temp, critical_c: config.critical_temp },
            max_attempts: config.max_attempts,
            retention_days: config.retention_days,
        }),
        node_keys: nodes::NodeKeys::new(secret),
        artifacts: Arc::new(
            aiedge_store::artifacts::LocalStore::new(&config.data_dir)
                .with_context(|| format!("artifact store in {}", config.data_dir.display()))?,
        ),
        events: Arc::new(events::ServerEvents { dispatcher, job_ends: job_ends.clone(), changes: changes.clone(), broker_users, relay }),
        job_ends,
        changes,
        intake: aiedge_store::jobs::Intake::start(&db),
        finishes: aiedge_store::jobs::Finishes::start(&db),
        usage: aiedge_services::usage::Tally::default(),
        db,
    })
}

/// Size limits of uploads and logs.
#[derive(Clone, Copy, Debug)]
pub struct SizeLimits {
    pub uploads: api::UploadLimits,
    pub log: agent_jobs::LogLimit,
}

impl SizeLimits {
    pub fn from_config(config: &Config) -> Self {
        Self {
            uploads: api::UploadLimits { max_bytes: config.max_upload_mb.saturating_mul(1 << 20) },
            log: agent_jobs::LogLimit(config.max_log_kb.saturating_mul(1 << 10)),
        }
    }
}

/// The routes of this module's own: health, agent registration and check-in, the live feeds.
pub(crate) fn own_routes() -> Routes<AppState> {
    Routes::new(Kind::Health)
        .get("/healthz", health::healthz)
        .kind(Kind::Agent)
        .post(shared::wire::REGISTER_PATH, agent_api::register)
        .post(shared::wire::HELLO_PATH, agent_api::hello)
        .kind(Kind::Download)
        .get("/install.sh", agent_downloads::installer)
        .get("/agent/v1/manifest", agent_downloads::manifest)
        .get("/agent/v1/checksums", agent_downloads::checksums)
        .get("/agent/v1/download/{target}", agent_downloads::download)
        .kind(Kind::Live)
        .get("/live/nodes", live::nodes_feed)
        .get("/live/jobs", live::jobs_feed)
        .kind(Kind::Metrics)
        .get("/metrics", metrics::public_exposition)
}

/// The whole HTTP surface: pages, server functions, the JSON API, agent endpoints, health.
pub fn router(state: AppState, broker: Broker, agents: AgentSettings, limits: SizeLimits) -> Router {
    let routes = generate_route_list(App);
    let sessions = SessionManagerLayer::new(DbSessionStore::new(state.db.clone()))
        .with_name(aiedge_store::sessions::COOKIE_NAME)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(state.settings.secure_cookies)
        .with_expiry(Expiry::OnSessionEnd);

    let context_state = state.clone();
    let shell_options = state.leptos_options.clone();
    // Forms and server functions are small; only the upload routes take big bodies.
    let pages = own_routes()
        .into_router()
        .leptos_routes_with_context(&state, routes, move || provide_context(context_state.clone()), move || shell(shell_options.clone()))
        .layer(RequestBodyLimitLayer::new(MAX_FORM_BODY));
    let site_root = std::path::PathBuf::from(state.leptos_options.site_root.as_ref());
    let router = assets::serve(Router::new(), &site_root, &state.leptos_options.site_pkg_dir);
    let router = router
        .merge(pages)
        .merge(api::router(limits.uploads))
        .merge(agent_jobs::router(limits.uploads, limits.log))
        .fallback(leptos_axum::file_and_error_handler::<AppState, _>(shell))
        // Innermost: it sees the route's template and the signed-in user.
        .layer(middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(middleware::from_fn(backend::guard::guard_pages))
        .layer(middleware::from_fn(errors::bad_arguments_are_400))
        .layer(middleware::from_fn_with_state(state.clone(), cross_site::same_site_only))
        .layer(middleware::from_fn_with_state(state.clone(), backend::sessions::resolve_user))
        .layer(sessions)
        .layer(Extension(broker))
        .layer(Extension(agents))
        .layer(compression())
        .layer(TraceLayer::new_for_http())
        .with_state(state);
    with_security_headers(router)
}

/// Compresses what a client asks to have compressed (pages, JSON, CSV downloads). Leaves alone
/// what is already compressed (the precompressed site files), event streams (each event must go
/// out as it happens) and tiny bodies. A middle level: pages are made per request.
fn compression() -> tower_http::compression::CompressionLayer {
    tower_http::compression::CompressionLayer::new().quality(tower_http::CompressionLevel::Precise(5))
}

/// Headers every response carries: no content-type sniffing, no framing by other sites (click-
/// jacking), no referrer sent to other sites, no plugins, and forms that post only here. The
/// policy stops short of `script-src`: hydration runs inline scripts.
fn with_security_headers(router: Router) -> Router {
    use axum::http::{header, HeaderValue};
    use tower_http::set_header::SetResponseHeaderLayer;
    router
        .layer(SetResponseHeaderLayer::if_not_present(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("same-origin")))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'; base-uri 'self'; object-src 'none'; form-action 'self'"),
        ))
}

/// Serves on `listener` until `shutdown` fires, then drains in-flight requests.
pub async fn launch(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    // Held until the server stops; refuses a second server on the same SQLite file.
    let one_server = sqlite_lock::acquire(&config.database_url())?;
    let dispatcher = scheduler::Dispatcher::default();
    let users = broker_users(&config)?;
    let (relay, outbox) = replica_events::Relay::new();
    let peers = relay.peers.clone();
    let state = build_state_with(&config, dispatcher.clone(), users.clone(), relay).await?;
    let topology = broker::Topology::new(&config.amqp_namespace).with_job_queues(config.amqp_job_queues);
    let deployment = aiedge_store::leases::deployment_id(&state.db, aiedge_store::now_ms()).await.context("reading the deployment id")?;
    let broker = Broker::start(config.amqp_url.clone(), topology, Some(deployment), shutdown.child_token());
    // A namespace of another deployment is refused before this replica does anything with it.
    broker.first_contact(Duration::from_secs(6)).await?;
    // ...and at any later reconnect: the server stops with that error.
    let refusal = spawn_refusal_watch(&broker, shutdown.clone());
    let addr = listener.local_addr().context("listener address")?;
    let leadership = leadership::spawn(
        state.db.clone(),
        leadership::this_replica(&addr.to_string()),
        one_server.is_some(),
        peers,
        shutdown.child_token(),
    );
    let local = replica_events::Local { dispatcher: dispatcher.clone(), job_ends: state.job_ends.clone(), changes: state.changes.clone() };
    replica_events::spawn(broker.clone(), leadership.replica.id.clone(), outbox, local, shutdown.child_token());
    spawn_housekeeping(state.clone(), leadership.clone(), shutdown.child_token());
    let liveness = LivenessSettings {
        timeout: config.heartbeat_timeout,
        thermal: shared::score::ThermalPolicy { warn_c: config.warn_temp, critical_c: config.critical_temp },
    };
    let keep_jobs = Duration::from_secs(u64::from(config.retention_days) * 24 * 3600);
    let once = OncePerDeployment { liveness, start_timeout: config.start_timeout, keep_jobs };
    spawn_once_per_deployment(&leadership, state.clone(), broker.clone(), dispatcher, once, shutdown.child_token());
    tracing::info!(%addr, database = ?state.db.backend, replica = %leadership.replica.id, "serving");
    metrics::handle();
    metrics::spawn_upkeep(state.clone(), shutdown.child_token());
    usage::spawn(state.clone(), leadership.clone(), shutdown.child_token());
    if let Some(bind) = config.metrics_bind {
        let metrics_listener = TcpListener::bind(bind).await.with_context(|| format!("cannot listen on {bind} for metrics"))?;
        tracing::info!(addr = %bind, "serving metrics");
        let cancel = shutdown.child_token();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve_private(metrics_listener, cancel).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    let downloads = agent_downloads::Downloads::load(&config.agents_dir, &config.public_url())
        .await
        .with_context(|| format!("agent binaries in {}", config.agents_dir.display()))?;
    let public_metrics = metrics::PublicMetrics(config.metrics_token.as_deref().map(std::sync::Arc::from));
    let app = router(state, broker, AgentSettings::new(&config, users), SizeLimits::from_config(&config))
        .layer(Extension(leadership.clone()))
        .layer(Extension(model_check::ModelChecker::from_config(&config)))
        .layer(Extension(downloads))
        .layer(Extension(public_metrics));
    // IMPORTANT: without TCP_NODELAY a streamed response (headers, then body) waits out the
    // client's delayed ACK: every artifact download took ~40 ms in the jobs benchmark.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .context("http server")?;
    leadership.stopped(Duration::from_secs(5)).await;
    if let Some(why) = refusal.get() {
        return Err(anyhow::anyhow!("{why}"));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Stops the server when the broker namespace turns out to be another deployment's (see
/// [`Broker::start`]); the returned cell then holds why.
fn spawn_refusal_watch(broker: &Broker, shutdown: CancellationToken) -> Arc<std::sync::OnceLock<broker::NamespaceTaken>> {
    let cell = Arc::new(std::sync::OnceLock::new());
    let (broker, set) = (broker.clone(), cell.clone());
    let cancel = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            why = broker.refusal() => {
                let _ = set.set(why);
                shutdown.cancel();
            }
            _ = cancel.cancelled() => {}
        }
    });
    cell
}

/// Settings of the work that runs on the lease holder alone.
#[derive(Clone)]
struct OncePerDeployment {
    liveness: LivenessSettings,
    start_timeout: Duration,
    /// Finished jobs are deleted this long after they ended (zero: never).
    keep_jobs: Duration,
}

/// What runs on the lease holder alone, for each of its terms (see [`leadership`]): the
/// heartbeat intake with the dead-node sweep, the dispatcher, the schedules and retention.
/// Each stops when the term ends; their writes carry the term's fence.
fn spawn_once_per_deployment(
    leadership: &leadership::Leadership,
    state: AppState,
    broker: Broker,
    dispatcher: scheduler::Dispatcher,
    settings: OncePerDeployment,
    cancel: CancellationToken,
) {
    leadership.while_holding(cancel, move |fence, term| {
        let (state, broker, dispatcher, settings) = (state.clone(), broker.clone(), dispatcher.clone(), settings.clone());
        async move {
            // Nodes the database says are alive get a full timeout from now to be heard.
            let fleet = loop {
                match Fleet::load(&state, Some(fence.clone())).await {
                    Ok(fleet) => break fleet,
                    Err(e) => tracing::warn!(error = %e, "loading nodes failed; retrying"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = term.cancelled() => return,
                }
            };
            heartbeats::spawn(state.clone(), broker.clone(), fleet, settings.liveness, dispatcher.clone(), term.clone());
            scheduler::spawn(state.clone(), broker, dispatcher, settings.start_timeout, fence.clone(), term.clone());
            retention::spawn(state.clone(), fence, settings.keep_jobs, term.clone());
            storage::spawn(state.clone(), term.clone());
            schedule_ticker::spawn(state, term);
        }
    });
}

/// Periodic chores: expired sessions out of the database, and on the lease holder, full
/// buckets out of the rate limits and node history older than an hour averaged into minutes (and
/// week-old minutes dropped). Its own task, so a big roll-up never delays the heartbeat
/// sweeper's death notices.
fn spawn_housekeeping(state: AppState, leadership: leadership::Leadership, cancel: CancellationToken) {
    tokio::spawn(async move {
        let store = DbSessionStore::new(state.db.clone());
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        // IMPORTANT: without Skip, a stalled process runs the missed ticks back to back.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = cancel.cancelled() => return,
            }
            match store.delete_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(deleted = n, "expired sessions removed"),
                Err(e) => tracing::warn!(error = %e, "session cleanup failed"),
            }
            if !leadership.is_holder() {
                continue;
            }
            match Limits::prune(&state.db).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(removed = n, "idle rate-limit buckets removed"),
                Err(e) => tracing::warn!(error = %e, "rate-limit cleanup failed"),
            }
            let now = aiedge_store::now_ms();
            match nodes::roll_up(&state.db, now, nodes::FULL_RATE_MS, nodes::MINUTE_RETENTION_MS).await {
                Ok(done) => tracing::debug!(minutes = done.minutes, samples = done.samples, pruned = done.pruned, "node history rolled up"),
                // Nothing is lost: the samples wait for the next try.
                Err(e) => tracing::warn!(error = %e, "rolling up node history failed"),
            }
        }
    });
}
