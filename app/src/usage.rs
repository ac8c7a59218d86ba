//! The Usage page's data: admins only, like everything under `admin/`.

use leptos::prelude::*;

#[cfg(feature = "ssr")]
use crate::backend;
pub use aiedge_core::usage::{UsageReport, Window};

/// The usage report over `window` (`24h`, `7d` or `30d`; empty for 24h).
#[server(endpoint = "admin/usage", input = server_fn::codec::GetUrl)]
pub async fn get_usage(#[server(default)] window: String) -> Result<UsageReport, ServerFnError> {
    let admin = backend::require_admin()?;
    let state = backend::state()?;
    let window = match window.as_str() {
        "" => Window::Day,
        w => Window::parse(w).ok_or_else(|| backend::deny(http::StatusCode::BAD_REQUEST, "window must be 24h, 7d or 30d"))?,
    };
    // This server's latest counts and the jobs that just ended first, so the page includes the
    // requests that led to it (the background writes lag by seconds).
    aiedge_services::usage::flush(&state.db, &state.usage).await.map_err(backend::refused)?;
    aiedge_services::usage::roll_up(&state.db, backend::now_ms()).await.map_err(backend::refused)?;
    aiedge_services::usage::report(&state.db, &admin, window, backend::now_ms()).await.map_err(backend::refused)
}
