//! The web app: pages, components and server functions, rendered on the server and hydrated in
//! the browser.
//!
//! - [`auth`]: accounts as the pages see them, and the register/login/logout server functions.
//! - [`admin`]: the admin dashboard's server functions.
//! - [`usage`]: the Usage page's report (admins).
//! - [`charts`]: server-rendered SVG charts.
//! - [`nodes`]: nodes as the pages see them; add and list server functions.
//! - [`jobs`]: applications, jobs and API tokens as the pages see them, and their server functions.
//! - [`schedules`]: schedules as the pages see them, and their server functions.
//! - [`live`]: live data from the server-sent event feeds, and chart history.
//! - [`node_table`]: the resource view (nodes with metrics, scores and charts).
//! - [`pages`]: one module per page.
//! - [`upload`]: file upload forms with a progress bar.
//! - [`components`]: the layout and form pieces the pages share.
//! - `backend` (with the `ssr` feature): state, database, sessions, rate limits.

// Leptos views are deeply nested types; the node table needs more room than the default.
#![recursion_limit = "512"]

pub mod admin;
pub mod auth;
pub mod charts;
pub mod components;
pub mod jobs;
pub mod live;
pub mod node_table;
pub mod nodes;
pub mod pages;
pub mod schedules;
pub mod upload;
pub mod usage;

#[cfg(feature = "ssr")]
pub mod backend;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Title};
use leptos_router::components::{Route, Router, Routes};
use leptos_router::{path, SsrMode};

/// The HTML document around the app, rendered on the server.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <meta name="color-scheme" content="light dark" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                <AutoReload options=options.clone() />
                // In the shell, not the hydrated body: its path names the build (see the
                // server's `assets`), which only the server knows.
                <link rel="stylesheet" id="leptos" href=format!("/{}/{}.css", options.site_pkg_dir, options.output_name) />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    mark_hydrated();

    view! {
        <Title formatter=|title: String| {
            if title.is_empty() { "AI on the Edge".to_string() } else { format!("{title} · AI on the Edge") }
        } />
        <Router>
            <components::Nav />
            <main>
                // Async: the server resolves every resource before it sends the page, so pages
                // are complete without JavaScript (out-of-order streaming needs it to fill in).
                <Routes fallback=pages::NotFound>
                    <Route path=path!("") view=pages::Landing ssr=SsrMode::Async />
                    <Route path=path!("register") view=pages::Register ssr=SsrMode::Async />
                    <Route path=path!("login") view=pages::Login ssr=SsrMode::Async />
                    <Route path=path!("home") view=pages::Home ssr=SsrMode::Async />
                    <Route path=path!("admin") view=pages::Admin ssr=SsrMode::Async />
                    <Route path=path!("nodes") view=pages::Nodes ssr=SsrMode::Async />
                    <Route path=path!("nodes/:id") view=pages::NodePage ssr=SsrMode::Async />
                    <Route path=path!("apps") view=pages::Apps ssr=SsrMode::Async />
                    <Route path=path!("apps/:id") view=pages::AppPage ssr=SsrMode::Async />
                    <Route path=path!("jobs") view=pages::Jobs ssr=SsrMode::Async />
                    <Route path=path!("jobs/:id") view=pages::JobPage ssr=SsrMode::Async />
                    <Route path=path!("schedules") view=pages::Schedules ssr=SsrMode::Async />
                    <Route path=path!("schedules/:id") view=pages::SchedulePage ssr=SsrMode::Async />
                    <Route path=path!("settings") view=pages::Settings ssr=SsrMode::Async />
                    <Route path=path!("usage") view=pages::Usage ssr=SsrMode::Async />
                </Routes>
            </main>
        </Router>
    }
}

/// Sets `data-hydrated` on `<body>` once the WASM has taken over, so tests (and curious people)
/// can tell a page that merely rendered from one that is interactive.
fn mark_hydrated() {
    #[cfg(feature = "hydrate")]
    Effect::new(|_| {
        if let Some(body) = web_sys::window().and_then(|w| w.document()).and_then(|d| d.body()) {
            let _ = body.set_attribute("data-hydrated", "true");
        }
    });
}
