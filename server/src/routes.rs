//! Every route the server answers, listed by the code that routes it, so the router and the list
//! cannot drift apart.
//!
//! Modules add their axum routes through [`Routes`], which records the method and path of each
//! route as it hands it to the router. [`route_table`] gathers those lists and adds the Leptos
//! pages and server functions from the very lists `leptos_routes_with_context` registers, the
//! browser's files and the fallback. The authorization matrix test
//! (`server/tests/authorization_matrix.rs`) compares this table with its rows, so a new route
//! without a row (who may call it, and what everyone else gets) fails it.
//!
//! IMPORTANT: route with [`Routes`], not `Router::route`; the matrix test refuses other routing
//! calls in `server/src`, since a route the table does not list is a route nobody reviewed.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::MethodRouter;
use axum::Router;

/// What answers a route, which says who may call it (see SECURITY.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `/healthz`, for load balancers and scripts.
    Health,
    /// Agent endpoints: one-time registration tokens and signed node requests.
    Agent,
    /// The agent binaries, their manifest and the installer: public, nothing secret.
    Download,
    /// Server-sent event feeds of the live pages.
    Live,
    /// Prometheus metrics: off, or for the bearer of the metrics token (see [`crate::metrics`]).
    Metrics,
    /// A Leptos page.
    Page,
    /// A Leptos server function.
    ServerFn,
    /// The JSON API under `/api/v1` (documented in its OpenAPI document).
    Api,
    /// The browser's versioned files (see [`crate::assets`]).
    Assets,
    /// Whatever no route matches: the site's public files, else the not-found page.
    Fallback,
}

/// One method on one path, in axum's syntax (`/api/v1/jobs/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub kind: Kind,
}

impl Route {
    fn new(method: &Method, path: &str, kind: Kind) -> Self {
        Self { method: method.as_str().to_string(), path: path.to_string(), kind }
    }
}

/// The path of the browser's files in the table: the version is a digest of the build
/// ([`crate::assets::pkg_path`]).
pub const ASSETS_PATH: &str = "/pkg/{version}/{*file}";
/// The fallback's entry in the table.
pub const FALLBACK_PATH: &str = "/{*path}";

/// A router that keeps the list of what it routes.
pub struct Routes<S> {
    kind: Kind,
    router: Router<S>,
    table: Vec<Route>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// An empty router whose routes are of `kind` (until [`Routes::kind`] says otherwise).
    pub fn new(kind: Kind) -> Self {
        Self { kind, router: Router::new(), table: Vec::new() }
    }

    /// The routes added from here on are of `kind`.
    pub fn kind(mut self, kind: Kind) -> Self {
        self.kind = kind;
        self
    }

    fn add(mut self, method: Method, path: &str, route: MethodRouter<S>) -> Self {
        self.table.push(Route::new(&method, path, self.kind));
        // A second method on a path already routed is merged into its method router.
        self.router = self.router.route(path, route);
        self
    }

    pub fn get<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::GET, path, axum::routing::get(handler))
    }

    pub fn post<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::POST, path, axum::routing::post(handler))
    }

    pub fn put<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::PUT, path, axum::routing::put(handler))
    }

    pub fn patch<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::PATCH, path, axum::routing::patch(handler))
    }

    pub fn delete<H: Handler<T, S>, T: 'static>(self, path: &str, handler: H) -> Self {
        self.add(Method::DELETE, path, axum::routing::delete(handler))
    }

    /// What was routed.
    pub fn table(&self) -> &[Route] {
        &self.table
    }

    /// The router, for layers and merging.
    pub fn into_router(self) -> Router<S> {
        self.router
    }
}

/// The Leptos pages, as the router registers them (`generate_route_list(App)`).
pub fn pages() -> Vec<Route> {
    leptos_axum::generate_route_list(app::App)
        .iter()
        .flat_map(|listing| {
            // `leptos_router::Method` is `Get`, `Post`, …: its name is the HTTP method's.
            listing.methods().map(|m| Route {
                method: format!("{m:?}").to_ascii_uppercase(),
                path: listing.path().to_string(),
                kind: Kind::Page,
            })
        })
        .collect()
}

/// The server functions, from the registry `leptos_routes_with_context` registers them from.
pub fn server_fns() -> Vec<Route> {
    leptos::server_fn::axum::server_fn_paths().map(|(path, method)| Route::new(&method, path, Kind::ServerFn)).collect()
}

/// Every route the server answers (see the module's documentation), sorted.
pub fn route_table() -> Vec<Route> {
    let mut table: Vec<Route> = Vec::new();
    table.extend_from_slice(crate::own_routes().table());
    table.extend_from_slice(crate::api::routes().table());
    table.extend_from_slice(crate::agent_jobs::routes().table());
    table.extend(pages());
    table.extend(server_fns());
    table.push(Route::new(&Method::GET, ASSETS_PATH, Kind::Assets));
    table.push(Route::new(&Method::GET, FALLBACK_PATH, Kind::Fallback));
    table.sort();
    table
}
