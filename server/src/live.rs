//! Live feeds for the browser, as server-sent events. `GET /live/nodes` streams the nodes the
//! caller may see (their own; `?scope=all` for admins: every node) whenever they change.
//!
//! The feed reads the database every half second and sends only when something changed.
//! Heartbeats are flushed about once a second and status changes are written at once, so a
//! browser sees a heartbeat within about 1.5 s and a death within half a second of it being
//! declared. One cheap query per open page keeps this simple and always consistent with what
//! a reload would show.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Extension;
use futures_util::stream::{self, Stream};
use serde::Deserialize;

use app::backend::{nodes, AppState, CurrentUser};

const POLL: Duration = Duration::from_millis(500);

#[derive(Deserialize)]
pub struct LiveQuery {
    #[serde(default)]
    scope: Option<String>,
}

pub async fn nodes_feed(
    State(state): State<AppState>,
    Extension(CurrentUser(user)): Extension<CurrentUser>,
    Query(query): Query<LiveQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, StatusCode> {
    let user = user.ok_or(StatusCode::UNAUTHORIZED)?;
    let owner = match query.scope.as_deref() {
        Some("all") if user.is_admin() => None,
        Some("all") => return Err(StatusCode::FORBIDDEN),
        _ => Some(user.id.clone()),
    };
    // The state is the last list sent; before the first one it is empty, so the first query
    // is sent at once and later ones wait a poll interval.
    let stream = stream::unfold((state, owner, String::new()), |(state, owner, last)| async move {
        loop {
            if !last.is_empty() {
                tokio::time::sleep(POLL).await;
            }
            let json = match nodes::list(&state.db, owner.as_deref()).await {
                Ok(list) => serde_json::to_string(&list).unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(error = %e, "live feed query failed");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            if json != last {
                let event = Event::default().event("nodes").data(json.clone());
                return Some((Ok(event), (state, owner, json)));
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
