//! The web app's side of the server: the state every request gets, who is asking, and how a
//! refusal is answered (a status for scripts and the hydrated app, a redirect back to the form
//! for a plain browser post). Compiled only with the `ssr` feature; storage is
//! `aiedge_store`'s.
//!
//! - [`sessions`]: sign-in/out, and the middleware that resolves the current user.
//! - [`rate_limit`]: login and registration throttles.
//! - [`guard`]: which pages need a signed-in user or an admin.

pub mod guard;
pub mod rate_limit;
pub mod sessions;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRef};
use http::{header, request::Parts, StatusCode};
use leptos::prelude::*;
use leptos_axum::ResponseOptions;

use crate::auth::{FormError, FormErrors, UserView};

pub use aiedge_store::{now_ms, Db};
pub use rate_limit::Limits;

/// Settings the app needs at request time.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Mark cookies `Secure` (the server is reached over HTTPS).
    pub secure_cookies: bool,
    /// Take the client address from the first `X-Forwarded-For` entry (behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// The URL agents and people reach the server at.
    pub public_url: String,
    /// The temperatures the node score is derated between (`--warn-temp`, `--critical-temp`).
    pub thermal: shared::score::ThermalPolicy,
    /// Attempts a new job gets (`--max-attempts`).
    pub max_attempts: u32,
    /// Finished jobs are deleted this many days after they ended (`--retention-days`; 0: never).
    pub retention_days: u32,
}

/// Everything a handler or server function needs, cloned cheaply into each request.
#[derive(Clone, FromRef)]
pub struct AppState {
    pub leptos_options: LeptosOptions,
    pub db: Db,
    pub limits: Arc<Limits>,
    pub settings: Arc<Settings>,
    pub node_keys: aiedge_store::nodes::NodeKeys,
    pub artifacts: Arc<dyn aiedge_store::artifacts::ArtifactStore>,
    pub job_ends: aiedge_services::JobEnds,
    /// Change notices for the live feeds.
    pub changes: aiedge_services::Changes,
    /// What the use cases raise (wake the dispatcher, a job ended, a node changed); the
    /// server implements it.
    pub events: Arc<dyn aiedge_services::Events>,
    /// Where new jobs are recorded (see [`aiedge_store::jobs::Intake`]).
    pub intake: aiedge_store::jobs::Intake,
    /// Where successes that carry their result are recorded (see [`aiedge_store::jobs::Finishes`]).
    pub finishes: aiedge_store::jobs::Finishes,
    /// Requests counted for the Usage page since they were last written.
    pub usage: aiedge_services::usage::Tally,
}

/// The user the request was made by, resolved once per request by
/// [`sessions::resolve_user`] and kept in the request's extensions.
#[derive(Clone, Debug, Default)]
pub struct CurrentUser(pub Option<UserView>);

/// The app state, inside a server function.
pub fn state() -> Result<AppState, ServerFnError> {
    use_context::<AppState>().ok_or_else(|| ServerFnError::new("app state missing"))
}

fn parts() -> Option<Parts> {
    use_context::<Parts>()
}

/// The signed-in user of the current request, inside a server function or SSR.
pub fn current_user() -> Option<UserView> {
    parts()?.extensions.get::<CurrentUser>()?.0.clone()
}

/// The signed-in user, or a 401.
pub fn require_user() -> Result<UserView, ServerFnError> {
    current_user().ok_or_else(|| deny(StatusCode::UNAUTHORIZED, "sign in first"))
}

/// The signed-in admin, or a 401 (anonymous) or 403 (not an admin).
pub fn require_admin() -> Result<UserView, ServerFnError> {
    let user = require_user()?;
    if user.is_admin() {
        Ok(user)
    } else {
        Err(deny(StatusCode::FORBIDDEN, "admins only"))
    }
}

/// Sets the response status and returns an error carrying `message` to the caller.
pub fn deny(status: StatusCode, message: &str) -> ServerFnError {
    if let Some(res) = use_context::<ResponseOptions>() {
        res.set_status(status);
    }
    ServerFnError::new(message)
}

/// Answers a refused or failed use case with its status and message (internal errors are
/// logged here and sent without details).
pub fn refused(err: aiedge_services::ServiceError) -> ServerFnError {
    if err.status() == 500 {
        return internal(err);
    }
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    deny(status, &err.public_message())
}

/// Logs an internal error with its details and gives the caller a 500 without them.
pub fn internal(err: impl std::fmt::Display) -> ServerFnError {
    tracing::error!(error = %err, "request failed");
    deny(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

/// The client's address, for rate limiting.
pub fn client_ip() -> IpAddr {
    let Some(parts) = parts() else {
        return IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    };
    let peer =
        parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let trust_proxy = use_context::<AppState>().is_some_and(|s| s.settings.trust_forwarded_for);
    if !trust_proxy {
        return peer;
    }
    let values: Vec<&str> = parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).collect();
    forwarded_client(&values, peer)
}

/// The client as the trusted proxy in front of us saw it: the right-most `X-Forwarded-For`
/// entry, the one that proxy appended. Entries to its left came from the client, who can write
/// anything there (a rate limiter keyed on them is keyed on the attacker's choice). No header, or
/// a last entry that is not an address: the peer (the proxy) itself.
fn forwarded_client(values: &[&str], peer: IpAddr) -> IpAddr {
    values.iter().flat_map(|v| v.split(',')).next_back().and_then(|last| last.trim().parse().ok()).unwrap_or(peer)
}

/// True when the request is a plain browser navigation or form post (no WASM yet).
fn wants_html() -> bool {
    parts().is_some_and(|p| p.headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html")))
}

/// Answers a refused form. A plain form post is redirected back to `page` with the error codes
/// and the fields to keep in the query; the hydrated app gets the errors as data, with a 200:
/// the server-function client reads any 4xx body as an error, not as data.
pub fn form_refused(page: &str, errors: &FormErrors, keep: &[(&str, &str)]) -> FormErrors {
    if wants_html() {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in keep.iter().filter(|(_, v)| !v.is_empty()) {
            // Typed values are echoed back into the form, within reason.
            query.append_pair(k, &v.chars().take(320).collect::<String>());
        }
        for (k, v) in errors.query_pairs() {
            query.append_pair(k, v);
        }
        leptos_axum::redirect(&format!("{page}?{}", query.finish()));
    }
    errors.clone()
}

/// Answers a rate-limited form with `Retry-After` (whole seconds, rounded up). Scripts and the
/// hydrated app get a 429 and an error; a plain form post goes back to the form with the
/// message, since a bare 429 page would leave a person stranded.
pub fn rate_limited(page: &str, wait: Duration, keep: &[(&str, &str)]) -> Result<FormErrors, ServerFnError> {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    tracing::warn!(page, retry_after_secs = secs, "rate limited");
    if let Some(res) = use_context::<ResponseOptions>() {
        if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
            res.insert_header(header::RETRY_AFTER, v);
        }
    }
    let errors = FormErrors::form(FormError::RateLimited);
    if wants_html() {
        Ok(form_refused(page, &errors, keep))
    } else {
        Err(deny(StatusCode::TOO_MANY_REQUESTS, &FormError::RateLimited.message()))
    }
}

#[cfg(test)]
mod forwarded_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_client_cannot_choose_its_address() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(forwarded_client(&["203.0.113.7"], proxy), client);
        // A client that sends its own header gets its made-up entries ignored: the proxy appends.
        assert_eq!(forwarded_client(&["1.2.3.4, 5.6.7.8, 203.0.113.7"], proxy), client);
        assert_eq!(forwarded_client(&["1.2.3.4", "203.0.113.7"], proxy), client, "several header lines are one list");
        assert_eq!(forwarded_client(&[], proxy), proxy);
        assert_eq!(forwarded_client(&["1.2.3.4, garbage"], proxy), proxy);
        assert_eq!(forwarded_client(&[" 2001:db8::1 "], proxy), "2001:db8::1".parse::<IpAddr>().unwrap());
    }
}
