//! Live feeds for the browser, as server-sent events. `GET /live/nodes` streams the nodes the
//! caller may see (their own; `?scope=all` for admins: every node) whenever they change, or
//! with `?node=ID&window=1h` that node's page; `GET /live/jobs` does the same for jobs, or for
//! one job's page.
//!
//! A feed queries when it is told something it shows changed (`aiedge_services::Changes`:
//! the use cases and the dispatcher notify job changes, the heartbeat path node changes), at
//! most every [`MIN_GAP`], and sends only what differs from its last message. An idle page costs
//! nothing but a look every [`FALLBACK`], for changes nobody announced (another process wrote
//! the database). Heartbeats are flushed about once a second, so a browser sees one within
//! about 1.3 s. The query is the page's own, so a feed is always what a reload would show.
//!
//! Before each query a feed checks that the session it was opened with still stands: a logout,
//! a change of password or role (which end the account's sessions) or expiry ends the stream
//! within [`FALLBACK`], so nothing more is shown to a browser that is no longer entitled to it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, KeepAliveStream, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream};
use serde::Deserialize;

use aiedge_store::sessions::DbSessionStore;
use aiedge_store::{jobs, nodes};
use app::backend::{AppState, CurrentUser};
use tower_sessions::Session;

/// The least time between two queries of one feed, however often things change.
const MIN_GAP: Duration = Duration::from_millis(250);
/// A feed looks again after this long even when it was told nothing.
const FALLBACK: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
pub struct LiveQuery {
    #[serde(default)]
    scope: Option<String>,
    /// One node's page instead of a list.
    #[serde(default)]
    node: Option<String>,
    /// The page's chart window (see `app::nodes::WINDOWS`).
    #[serde(default)]
    window: Option<String>,
}

/// The session a feed was opened with, looked up again before each query.
#[derive(Clone)]
struct SessionWatch {
    store: DbSessionStore,
    id: Option<tower_sessions::session::Id>,
}

impl SessionWatch {
    fn new(state: &AppState, session: &Session) -> Self {
        Self { store: DbSessionStore::new(state.db.clone()), id: session.id() }
    }

    /// Whether it still stands; none at all (no cookie) never does.
    async fn stands(&self) -> bool {
        match &self.id {
            // A failed lookup keeps the feed: the database may be back at the next look.
            Some(id) => self.store.is_live(id).await.unwrap_or(true),
            None => false,
        }
    }
}

pub async fn nodes_feed(
    State(state): State<AppState>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    session: Session,
    Query(query): Query<LiveQuery>,
) -> Result<Sse<KeepAliveStream<Events>>, StatusCode> {
    let user = user.ok_or(StatusCode::UNAUTHORIZED)?;
    let alive = SessionWatch::new(&state, &session);
    if let Some(id) = query.node {
        let window = query.window.as_deref().unwrap_or(app::nodes::DEFAULT_WINDOW);
        let window_ms = app::nodes::window_ms(window).ok_or(StatusCode::BAD_REQUEST)?;
        // The same check as the page's: someone else's node is not found.
        let first = nodes::detail(&state.db, &state.settings.thermal, &id, &user, window_ms)
            .await
            .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        if first.is_none() {
            return Err(StatusCode::NOT_FOUND);
        }
        return Ok(feed("node", state.changes.watch_nodes(), alive, move || {
            let (state, id, user) = (state.clone(), id.clone(), user.clone());
            async move {
                let detail = nodes::detail(&state.db, &state.settings.thermal, &id, &user, window_ms).await?;
                Ok::<_, sqlx::Error>(serde_json::to_string(&detail).unwrap_or_default())
            }
        }));
    }
    let owner = match query.scope.as_deref() {
        Some("all") if user.is_admin() => None,
        Some("all") => return Err(StatusCode::FORBIDDEN),
        _ => Some(user.id.clone()),
    };
    Ok(feed("nodes", state.changes.watch_nodes(), alive, move || {
        let (state, owner) = (state.clone(), owner.clone());
        async move {
            nodes::list(&state.db, owner.as_deref(), &state.settings.thermal).await.map(|l| serde_json::to_string(&l).unwrap_or_default())
        }
    }))
}

#[derive(Deserialize)]
pub struct JobsQuery {
    #[serde(default)]
    scope: Option<String>,
    /// One job's page instead of a list.
    #[serde(default)]
    job: Option<String>,
}

/// `GET /live/jobs`: the caller's jobs (`?scope=all`: everyone's, admins only) as `jobs`
/// events, or with `?job=ID` that job's page data as `job` events.
pub async fn jobs_feed(
    State(state): State<AppState>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    session: Session,
    Query(query): Query<JobsQuery>,
) -> Result<Sse<KeepAliveStream<Events>>, StatusCode> {
    let user = user.ok_or(StatusCode::UNAUTHORIZED)?;
    let alive = SessionWatch::new(&state, &session);
    if let Some(id) = query.job {
        let owner = jobs::owner_of(&state.db, &id).await.map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
        if owner.is_none_or(|o| !aiedge_core::may_manage(&user, &o)) {
            return Err(StatusCode::NOT_FOUND);
        }
        return Ok(feed("job", state.changes.watch_jobs(), alive, move || {
            let (state, id) = (state.clone(), id.clone());
            async move {
                let detail = jobs::detail_with_log(&state.db, state.artifacts.as_ref(), &id).await?;
                let detail = detail.map(|d| d.with_retention(state.settings.retention_days));
                Ok::<_, sqlx::Error>(serde_json::to_string(&detail).unwrap_or_default())
            }
        }));
    }
    let owner = match query.scope.as_deref() {
        Some("all") if user.is_admin() => None,
        Some("all") => return Err(StatusCode::FORBIDDEN),
        _ => Some(user.id.clone()),
    };
    Ok(feed("jobs", state.changes.watch_jobs(), alive, move || {
        let (state, owner) = (state.clone(), owner.clone());
        async move { jobs::list(&state.db, owner.as_deref(), 200).await.map(|l| serde_json::to_string(&l).unwrap_or_default()) }
    }))
}

/// A boxed stream of events, so one handler can answer with either kind of feed.
pub type Events = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;

/// Sends `query`'s JSON as an `event` at once, then again whenever it differs after a change
/// notice on `changed` (or after [`FALLBACK`] without one), while the session stands.
fn feed<F, Fut, E>(
    event: &'static str,
    changed: tokio::sync::watch::Receiver<u64>,
    alive: SessionWatch,
    query: F,
) -> Sse<KeepAliveStream<Events>>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<String, E>> + Send,
    E: std::fmt::Display,
{
    // Counted open until the stream is dropped (the client left, or the feed ended).
    let start = (query, changed, String::new(), None::<tokio::time::Instant>, crate::metrics::OpenFeed::new());
    let stream = stream::unfold(start, move |(query, mut changed, last, mut queried, open)| {
        let alive = alive.clone();
        async move {
            loop {
                if let Some(at) = queried {
                    tokio::select! {
                        // Closed: the server is stopping; the fallback still serves.
                        _ = changed.changed() => {}
                        () = tokio::time::sleep(FALLBACK) => {}
                    }
                    tokio::time::sleep_until(at + MIN_GAP).await;
                }
                if !alive.stands().await {
                    return None;
                }
                // Marked seen before the query, so a change during it is not missed.
                changed.borrow_and_update();
                queried = Some(tokio::time::Instant::now());
                let json = match query().await.map_err(|e| e.to_string()) {
                    Ok(json) => json,
                    Err(e) => {
                        tracing::warn!(error = %e, event, "live feed query failed");
                        continue;
                    }
                };
                if json != last {
                    let sse = Event::default().event(event).data(json.clone());
                    return Some((Ok(sse), (query, changed, json, queried, open)));
                }
            }
        }
    });
    Sse::new(Box::pin(stream) as Events).keep_alive(KeepAlive::default())
}
