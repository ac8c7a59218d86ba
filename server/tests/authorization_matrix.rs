//! The authorization matrix: every route the server answers × every kind of caller, against one
//! real server (SQLite, the real RabbitMQ), with what each caller must get.
//!
//! The routes come from the server itself (`server::route_table()`, built by the code that
//! routes them: the axum routes, the Leptos pages and the server functions), so a route without
//! a row here fails the test, and so does a row for a route that is gone; the JSON API's rows
//! must be exactly the paths of its OpenAPI document. A second test refuses routing calls in
//! `server/src` that bypass the table.
//!
//! Callers: anonymous; the owner of the resources the requests name; another user; an admin; the
//! node the job runs on (signed agent requests); another user's node; a removed node; a revoked
//! API token; an expired session. Users call the JSON API with their API token and everything
//! else with their session; nodes sign every request as an agent does.
//!
//! Each cell is an outcome class: allowed (2xx, or a redirect after an action), refused with a
//! status (401, 403, 404, 410), sent to the login page, fenced (a node's report about an attempt
//! that is not its own: 409, or "do not proceed"), or hidden: exactly the answer a missing
//! resource gets, so nobody learns what exists (SECURITY.md). Every refused request must change
//! nothing (accounts, nodes, applications, jobs and their attempts, tokens), must not show the
//! owner's names or address, and leaves `/healthz` fine.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::fleet::{fixture, PASSWORD};
use common::{DbKind, TestServer};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION};
use reqwest::Method;
use serde_json::{json, Value};
use server::routes::{Kind, Route};
use sha2::Digest;
use shared::jobs::{EMPTY_SHA256, HDR_BODY_SHA256, HDR_NODE, HDR_REQUEST_SIGNATURE, HDR_TIME, JOBS_PATH};

/// The callers, in the order of a row's cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum P {
    Anonymous,
    Owner,
    Other,
    Admin,
    OwningNode,
    OtherNode,
    RemovedNode,
    RevokedToken,
    ExpiredSession,
}

const PRINCIPALS: [P; 9] =
    [P::Anonymous, P::Owner, P::Other, P::Admin, P::OwningNode, P::OtherNode, P::RemovedNode, P::RevokedToken, P::ExpiredSession];

/// What a caller must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum E {
    /// Allowed: 2xx (a node's report with "proceed"), or a redirect that is not to the login page.
    Ok,
    /// Refused with this status.
    No(u16),
    /// A page: sent to the login page.
    Login,
    /// Refused as missing: the very answer a resource that does not exist gets.
    Hidden,
    /// A node's call about an attempt that is not its own: 409, or 200 with "do not proceed".
    Fenced,
}

use E::{Fenced as FENCE, Hidden as HID, Login as LOGIN, Ok as OK};
const N401: E = E::No(401);
const N403: E = E::No(403);
const N404: E = E::No(404);
const N410: E = E::No(410);

// The usual rows. Cells in the order of PRINCIPALS: anonymous, owner, other user, admin, owning
// node, other node, removed node, revoked token, expired session.
const PUBLIC: [E; 9] = [OK; 9];
const USERS: [E; 9] = [N401, OK, OK, OK, N401, N401, N401, N401, N401];
const ADMINS: [E; 9] = [N401, N403, N403, OK, N401, N401, N401, N401, N401];
const OWNER_OR_ADMIN: [E; 9] = [N401, OK, HID, OK, N401, N401, N401, N401, N401];
/// The owner only: an admin is told it does not exist either (their own lists only).
const OWNER: [E; 9] = [N401, OK, HID, HID, N401, N401, N401, N401, N401];
const THE_NODE: [E; 9] = [N401, N401, N401, N401, OK, FENCE, N403, N401, N401];
const PAGE: [E; 9] = [LOGIN, OK, OK, OK, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN];
const ADMIN_PAGE: [E; 9] = [LOGIN, N403, N403, OK, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN];
const OWNED_PAGE: [E; 9] = [LOGIN, OK, HID, OK, LOGIN, LOGIN, LOGIN, LOGIN, LOGIN];

/// The resource a row's request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Nothing,
    /// The owner's node, the one that runs the jobs.
    Node,
    /// The owner's application (an ONNX model with a default input).
    App,
    /// The owner's succeeded job, with its result and log.
    DoneJob,
    /// A job of the owner's dispatched to the owning node.
    LiveJob,
    /// The owner's schedule (of the owner's application, firing once a year).
    Schedule,
    /// A new one for each caller allowed to change it (and one for all the refused callers).
    Fresh(Fresh),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fresh {
    /// A node of the owner's (added, no agent).
    Node,
    /// A node's one-time registration token.
    NodeToken,
    App,
    /// An API token of the owner's (its id).
    Token,
    /// An account of its own (its id), for the admins' account actions.
    Account,
    /// A job dispatched to the owning node.
    Dispatched,
    /// A job the owning node has started.
    Running,
    /// A schedule of the owner's.
    Schedule,
}

/// The resource a request names: its id, and for jobs the live attempt.
#[derive(Clone, Debug, Default)]
struct Target {
    id: String,
    attempt: u32,
}

enum Body {
    Empty,
    Form(Vec<(&'static str, String)>),
    Json(Value),
    Bytes(Vec<u8>),
    /// Multipart fields: (name, file name, content); no file name for a text field.
    Multipart(Vec<(&'static str, Option<&'static str>, Vec<u8>)>),
}

struct Req {
    method: Method,
    path: String,
    body: Body,
    headers: Vec<(&'static str, String)>,
}

impl Req {
    fn new(method: Method, path: impl Into<String>) -> Self {
        Self { method, path: path.into(), body: Body::Empty, headers: Vec::new() }
    }
    fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }
    fn post(path: impl Into<String>) -> Self {
        Self::new(Method::POST, path)
    }
    fn form(mut self, fields: &[(&'static str, &str)]) -> Self {
        self.body = Body::Form(fields.iter().map(|(k, v)| (*k, v.to_string())).collect());
        self
    }
    fn json(mut self, value: Value) -> Self {
        self.body = Body::Json(value);
        self
    }
    fn bytes(mut self, bytes: &[u8]) -> Self {
        self.body = Body::Bytes(bytes.to_vec());
        self
    }
    fn header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }
    /// The bytes a signature covers (multipart bodies are the client's to frame: empty).
    fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Body::Empty | Body::Multipart(_) => Vec::new(),
            Body::Form(fields) => url::form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish().into_bytes(),
            Body::Json(v) => serde_json::to_vec(v).unwrap(),
            Body::Bytes(b) => b.clone(),
        }
    }
}

type Probe = fn(&World, P, &Target) -> Req;

struct Row {
    method: &'static str,
    path: &'static str,
    need: Need,
    expect: [E; 9],
    probe: Probe,
    /// Signs in or out: users call it with a session made for the call (it would end theirs).
    own_session: bool,
}

fn row(method: &'static str, path: &'static str, need: Need, expect: [E; 9], probe: Probe) -> Row {
    Row { method, path, need, expect, probe, own_session: false }
}

/// A small input CSV for the iris model (4 features), carried inline.
const INPUT: &[u8] = b"5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n";
const RESULT: &str = "row,label\n0,1\n";
const INSTANCE: &str = "matrix-agent";
/// The id of a resource that does not exist.
const MISSING: &str = "00000000-0000-4000-8000-000000000000";

fn agent_path(t: &Target, what: &str) -> String {
    format!("{JOBS_PATH}/{}/{what}", t.id)
}

/// Every route, who may call it, and how it is called.
fn matrix() -> Vec<Row> {
    vec![
        // ---- health and the site's files ----
        row("GET", "/healthz", Need::Nothing, PUBLIC, |_, _, _| Req::get("/healthz")),
        row("GET", server::routes::ASSETS_PATH, Need::Nothing, PUBLIC, |w, _, _| Req::get(format!("/{}/aiedge.js", w.pkg_path))),
        // Off unless the server has a metrics token (this one has none): nobody reads it, not
        // even an admin; the token is Prometheus's (tests/metrics.rs checks it).
        row("GET", "/metrics", Need::Nothing, [N404; 9], |_, _, _| Req::get("/metrics")),
        // The agent binaries and the installer are public, like the agent's source.
        row("GET", "/install.sh", Need::Nothing, PUBLIC, |_, _, _| Req::get("/install.sh")),
        row("GET", "/agent/v1/manifest", Need::Nothing, PUBLIC, |_, _, _| Req::get("/agent/v1/manifest")),
        row("GET", "/agent/v1/checksums", Need::Nothing, PUBLIC, |_, _, _| Req::get("/agent/v1/checksums")),
        row("GET", "/agent/v1/download/{target}", Need::Nothing, PUBLIC, |_, _, _| {
            Req::get("/agent/v1/download/aarch64-unknown-linux-musl")
        }),
        // Whatever matches no route: the not-found page, for everyone.
        row("GET", server::routes::FALLBACK_PATH, Need::Nothing, [N404; 9], |_, _, _| Req::get("/no/such/page")),
        // ---- agents ----
        // The one-time token in the body is the credential, whoever sends it: the owner sends a
        // fresh one and is registered; everyone else sends a spent one (the owning node's).
        row(
            "POST",
            "/agent/v1/register",
            Need::Fresh(Fresh::NodeToken),
            [N410, OK, N410, N410, N410, N410, N410, N410, N410],
            |w, p, t| {
                let token = if p == P::Owner { t.id.clone() } else { w.spent_token.clone() };
                Req::post("/agent/v1/register").json(json!({ "token": token, "name": "matrix", "facts": facts() }))
            },
        ),
        // A node checks in as itself (the other node too: it is its own check-in); anyone else
        // claims the owning node's id without its key.
        row("POST", "/agent/v1/hello", Need::Nothing, [N401, N401, N401, N401, OK, OK, N403, N401, N401], |w, p, _| {
            let node = w.node_of(p).unwrap_or(&w.owning);
            let body = serde_json::to_vec(&json!({ "node_id": node.id, "sent_at_ms": now_ms() })).unwrap();
            let signature = if w.node_of(p).is_some() { shared::wire::sign(&node.key, &body) } else { "00".repeat(32) };
            Req::post("/agent/v1/hello").bytes(&body).header(shared::wire::HDR_SIGNATURE, signature)
        }),
        row("GET", "/agent/v1/jobs/{id}/application", Need::LiveJob, THE_NODE, |_, _, t| {
            Req::get(format!("{}?attempt={}", agent_path(t, "application"), t.attempt))
        }),
        row("GET", "/agent/v1/jobs/{id}/input", Need::LiveJob, THE_NODE, |_, _, t| {
            Req::get(format!("{}?attempt={}", agent_path(t, "input"), t.attempt))
        }),
        row("POST", "/agent/v1/jobs/{id}/start", Need::Fresh(Fresh::Dispatched), THE_NODE, |_, _, t| {
            Req::post(agent_path(t, "start")).json(json!({ "attempt": t.attempt, "instance": INSTANCE }))
        }),
        row("POST", "/agent/v1/jobs/{id}/progress", Need::Fresh(Fresh::Running), THE_NODE, |_, _, t| {
            Req::post(agent_path(t, "progress")).json(json!({ "attempt": t.attempt, "rows_done": 1 }))
        }),
        row("POST", "/agent/v1/jobs/{id}/return", Need::Fresh(Fresh::Dispatched), THE_NODE, |_, _, t| {
            Req::post(agent_path(t, "return")).json(json!({ "attempt": t.attempt }))
        }),
        row("PUT", "/agent/v1/jobs/{id}/result", Need::Fresh(Fresh::Running), THE_NODE, |_, _, t| upload(t, "result", RESULT.as_bytes())),
        row("PUT", "/agent/v1/jobs/{id}/log", Need::Fresh(Fresh::Running), THE_NODE, |_, _, t| upload(t, "log", b"a line of log\n")),
        row("POST", "/agent/v1/jobs/{id}/finish", Need::Fresh(Fresh::Running), THE_NODE, |_, _, t| {
            Req::post(agent_path(t, "finish"))
                .json(json!({ "attempt": t.attempt, "outcome": "succeeded", "rows": 1, "result_csv": RESULT }))
        }),
        // ---- live feeds (server-sent events) ----
        row("GET", "/live/nodes", Need::Node, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/live/nodes?node={}&window=1h", t.id))),
        row("GET", "/live/jobs", Need::DoneJob, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/live/jobs?job={}", t.id))),
        row("GET", "/live/nodes", Need::Nothing, ADMINS, |_, _, _| Req::get("/live/nodes?scope=all")),
        row("GET", "/live/jobs", Need::Nothing, ADMINS, |_, _, _| Req::get("/live/jobs?scope=all")),
        row("GET", "/live/nodes", Need::Nothing, USERS, |_, _, _| Req::get("/live/nodes")),
        row("GET", "/live/jobs", Need::Nothing, USERS, |_, _, _| Req::get("/live/jobs")),
        // ---- pages ----
        row("GET", "/", Need::Nothing, PUBLIC, |_, _, _| Req::get("/")),
        row("GET", "/register", Need::Nothing, PUBLIC, |_, _, _| Req::get("/register")),
        row("GET", "/login", Need::Nothing, PUBLIC, |_, _, _| Req::get("/login")),
        row("GET", "/home", Need::Nothing, PAGE, |_, _, _| Req::get("/home")),
        row("GET", "/nodes", Need::Nothing, PAGE, |_, _, _| Req::get("/nodes")),
        row("GET", "/apps", Need::Nothing, PAGE, |_, _, _| Req::get("/apps")),
        row("GET", "/jobs", Need::Nothing, PAGE, |_, _, _| Req::get("/jobs")),
        row("GET", "/jobs", Need::Nothing, ADMIN_PAGE, |_, _, _| Req::get("/jobs?scope=all")),
        row("GET", "/settings", Need::Nothing, PAGE, |_, _, _| Req::get("/settings")),
        row("GET", "/admin", Need::Nothing, ADMIN_PAGE, |_, _, _| Req::get("/admin")),
        row("GET", "/usage", Need::Nothing, ADMIN_PAGE, |_, _, _| Req::get("/usage?window=7d")),
        row("GET", "/nodes/{id}", Need::Node, OWNED_PAGE, |_, _, t| Req::get(format!("/nodes/{}", t.id))),
        row("GET", "/apps/{id}", Need::App, OWNED_PAGE, |_, _, t| Req::get(format!("/apps/{}", t.id))),
        row("GET", "/jobs/{id}", Need::DoneJob, OWNED_PAGE, |_, _, t| Req::get(format!("/jobs/{}", t.id))),
        row("GET", "/schedules", Need::Nothing, PAGE, |_, _, _| Req::get("/schedules")),
        row("GET", "/schedules/{id}", Need::Schedule, OWNED_PAGE, |_, _, t| Req::get(format!("/schedules/{}", t.id))),
        // ---- server functions ----
        Row {
            own_session: true,
            ..row("POST", "/api/auth/register", Need::Nothing, PUBLIC, |w, _, _| {
                Req::post("/api/auth/register").form(&[("email", &w.unique("new") as &str), ("password", PASSWORD)])
            })
        },
        Row {
            own_session: true,
            ..row("POST", "/api/auth/login", Need::Nothing, PUBLIC, |w, _, _| {
                Req::post("/api/auth/login").form(&[("email", &w.login_email as &str), ("password", PASSWORD)])
            })
        },
        Row { own_session: true, ..row("POST", "/api/auth/logout", Need::Nothing, PUBLIC, |_, _, _| Req::post("/api/auth/logout")) },
        row("GET", "/api/auth/me", Need::Nothing, PUBLIC, |_, _, _| Req::get("/api/auth/me")),
        row("GET", "/api/admin/overview", Need::Nothing, ADMINS, |_, _, _| Req::get("/api/admin/overview")),
        row("GET", "/api/admin/accounts", Need::Nothing, ADMINS, |_, _, _| Req::get("/api/admin/accounts?q=example")),
        row("GET", "/api/admin/storage", Need::Nothing, ADMINS, |_, _, _| Req::get("/api/admin/storage")),
        row("GET", "/api/admin/usage", Need::Nothing, ADMINS, |_, _, _| Req::get("/api/admin/usage?window=30d")),
        // With a wrong current password: answered (a form error), nothing changes.
        row("POST", "/api/auth/password", Need::Nothing, USERS, |_, _, _| {
            Req::post("/api/auth/password").form(&[("current", "not the password"), ("password", "a long new password")])
        }),
        row("POST", "/api/admin/set-disabled", Need::Fresh(Fresh::Account), ADMINS, |_, _, t| {
            Req::post("/api/admin/set-disabled").form(&[("id", &t.id as &str), ("disabled", "true")])
        }),
        row("POST", "/api/admin/set-role", Need::Fresh(Fresh::Account), ADMINS, |_, _, t| {
            Req::post("/api/admin/set-role").form(&[("id", &t.id as &str), ("role", "admin")])
        }),
        // Confirmed, so only who calls decides: an admin deletes the account for good.
        row("POST", "/api/admin/delete-account", Need::Fresh(Fresh::Account), ADMINS, |_, _, t| {
            Req::post("/api/admin/delete-account").form(&[("id", &t.id as &str), ("confirm", "yes")])
        }),
        row("POST", "/api/nodes/add", Need::Nothing, USERS, |w, _, _| {
            Req::post("/api/nodes/add").form(&[("name", &w.unique("node") as &str)])
        }),
        row("GET", "/api/nodes/mine", Need::Nothing, USERS, |_, _, _| Req::get("/api/nodes/mine")),
        row("GET", "/api/nodes/all", Need::Nothing, ADMINS, |_, _, _| Req::get("/api/nodes/all")),
        row("GET", "/api/nodes/history", Need::Nothing, ADMINS, |_, _, _| Req::get("/api/nodes/history?scope=all")),
        row("GET", "/api/nodes/history", Need::Nothing, USERS, |_, _, _| Req::get("/api/nodes/history?scope=mine")),
        row("GET", "/api/nodes/detail", Need::Node, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/api/nodes/detail?id={}&window=1h", t.id))),
        // Removal, the strongest change: the node's owner or an admin.
        row("POST", "/api/nodes/set-state", Need::Fresh(Fresh::Node), OWNER_OR_ADMIN, |_, _, t| {
            Req::post("/api/nodes/set-state").form(&[("id", &t.id as &str), ("state", "removed")])
        }),
        row("POST", "/api/nodes/share", Need::Fresh(Fresh::Node), OWNER_OR_ADMIN, |_, _, t| {
            Req::post("/api/nodes/share").form(&[("id", &t.id as &str), ("sharing", "everyone")])
        }),
        row("GET", "/api/apps/mine", Need::Nothing, USERS, |_, _, _| Req::get("/api/apps/mine")),
        row("GET", "/api/apps/get", Need::App, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/api/apps/get?id={}", t.id))),
        // Deleting matches the owner (`apps::delete`): an admin may read another's application
        // but not delete it.
        row("POST", "/api/apps/delete", Need::Fresh(Fresh::App), OWNER, |_, _, t| {
            Req::post("/api/apps/delete").form(&[("id", &t.id as &str)])
        }),
        row("GET", "/api/jobs/list", Need::Nothing, ADMINS, |_, _, _| Req::get("/api/jobs/list?scope=all")),
        row("GET", "/api/jobs/list", Need::Nothing, USERS, |_, _, _| Req::get("/api/jobs/list?scope=mine")),
        row("GET", "/api/jobs/detail", Need::DoneJob, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/api/jobs/detail?id={}", t.id))),
        row("POST", "/api/jobs/cancel", Need::Fresh(Fresh::Dispatched), OWNER_OR_ADMIN, |_, _, t| {
            Req::post("/api/jobs/cancel").form(&[("id", &t.id as &str)])
        }),
        row("GET", "/api/schedules/mine", Need::Nothing, USERS, |_, _, _| Req::get("/api/schedules/mine")),
        row("GET", "/api/schedules/detail", Need::Schedule, OWNER_OR_ADMIN, |_, _, t| {
            Req::get(format!("/api/schedules/detail?id={}", t.id))
        }),
        row("GET", "/api/schedules/preview", Need::Nothing, USERS, |_, _, _| {
            Req::get("/api/schedules/preview?cron=0+2+*+*+*&time_zone=Europe/Berlin")
        }),
        row("POST", "/api/schedules/pause", Need::Fresh(Fresh::Schedule), OWNER_OR_ADMIN, |_, _, t| {
            Req::post("/api/schedules/pause").form(&[("id", &t.id as &str), ("paused", "true")])
        }),
        row("POST", "/api/schedules/update", Need::Fresh(Fresh::Schedule), OWNER_OR_ADMIN, |_, _, t| {
            Req::post("/api/schedules/update").form(&[("id", &t.id as &str), ("cron", "0 4 * * *")])
        }),
        row("POST", "/api/schedules/delete", Need::Fresh(Fresh::Schedule), OWNER_OR_ADMIN, |_, _, t| {
            Req::post("/api/schedules/delete").form(&[("id", &t.id as &str)])
        }),
        row("GET", "/api/tokens/mine", Need::Nothing, USERS, |_, _, _| Req::get("/api/tokens/mine")),
        row("POST", "/api/tokens/create", Need::Nothing, USERS, |w, _, _| {
            Req::post("/api/tokens/create").form(&[("name", &w.unique("token") as &str)])
        }),
        // Tokens are personal: an admin revokes only their own.
        row("POST", "/api/tokens/revoke", Need::Fresh(Fresh::Token), OWNER, |_, _, t| {
            Req::post("/api/tokens/revoke").form(&[("id", &t.id as &str)])
        }),
        // ---- the JSON API ----
        row("GET", "/api/v1/openapi.json", Need::Nothing, PUBLIC, |_, _, _| Req::get("/api/v1/openapi.json")),
        row("GET", "/api/v1/applications", Need::Nothing, USERS, |_, _, _| Req::get("/api/v1/applications")),
        row("POST", "/api/v1/applications", Need::Nothing, USERS, |w, _, _| {
            let mut req = Req::post("/api/v1/applications");
            req.body = Body::Multipart(vec![("name", None, w.unique("model").into_bytes()), ("file", Some("iris.onnx"), w.model.clone())]);
            req
        }),
        row("GET", "/api/v1/applications/{id}", Need::App, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/api/v1/applications/{}", t.id))),
        // As the server function: the owner only.
        row("DELETE", "/api/v1/applications/{id}", Need::Fresh(Fresh::App), OWNER, |_, _, t| {
            Req::new(Method::DELETE, format!("/api/v1/applications/{}", t.id))
        }),
        row("GET", "/api/v1/jobs", Need::Nothing, USERS, |_, _, _| Req::get("/api/v1/jobs")),
        // Jobs run on the caller's own applications: another's is missing, for admins too.
        row("POST", "/api/v1/jobs", Need::App, OWNER, |_, _, t| {
            let mut req = Req::post("/api/v1/jobs");
            req.body =
                Body::Multipart(vec![("application", None, t.id.clone().into_bytes()), ("input", Some("input.csv"), INPUT.to_vec())]);
            req
        }),
        row("GET", "/api/v1/jobs/{id}", Need::DoneJob, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/api/v1/jobs/{}", t.id))),
        row("POST", "/api/v1/jobs/{id}/cancel", Need::Fresh(Fresh::Dispatched), OWNER_OR_ADMIN, |_, _, t| {
            Req::post(format!("/api/v1/jobs/{}/cancel", t.id))
        }),
        row("GET", "/api/v1/jobs/{id}/result", Need::DoneJob, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/api/v1/jobs/{}/result", t.id))),
        row("GET", "/api/v1/jobs/{id}/log", Need::DoneJob, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/api/v1/jobs/{}/log", t.id))),
        row("GET", "/api/v1/nodes", Need::Nothing, USERS, |_, _, _| Req::get("/api/v1/nodes")),
        row("POST", "/api/v1/nodes", Need::Nothing, USERS, |w, _, _| {
            Req::post("/api/v1/nodes").json(json!({ "name": w.unique("api-node") }))
        }),
        row("GET", "/api/v1/nodes/{id}", Need::Node, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/api/v1/nodes/{}", t.id))),
        row("GET", "/api/v1/schedules", Need::Nothing, USERS, |_, _, _| Req::get("/api/v1/schedules")),
        // Schedules run the caller's own applications: another's is missing, for admins too.
        row("POST", "/api/v1/schedules", Need::App, OWNER, |w, _, t| {
            let mut req = Req::post("/api/v1/schedules");
            req.body = Body::Multipart(vec![
                ("application", None, t.id.clone().into_bytes()),
                ("name", None, w.unique("schedule").into_bytes()),
                ("cron", None, b"0 3 1 1 *".to_vec()),
            ]);
            req
        }),
        row("GET", "/api/v1/schedules/preview", Need::Nothing, USERS, |_, _, _| Req::get("/api/v1/schedules/preview?cron=*/5+*+*+*+*")),
        row("GET", "/api/v1/schedules/{id}", Need::Schedule, OWNER_OR_ADMIN, |_, _, t| Req::get(format!("/api/v1/schedules/{}", t.id))),
        row("PATCH", "/api/v1/schedules/{id}", Need::Fresh(Fresh::Schedule), OWNER_OR_ADMIN, |_, _, t| {
            Req::new(Method::PATCH, format!("/api/v1/schedules/{}", t.id)).json(json!({ "cron": "0 5 * * *", "overlap": "allow" }))
        }),
        row("DELETE", "/api/v1/schedules/{id}", Need::Fresh(Fresh::Schedule), OWNER_OR_ADMIN, |_, _, t| {
            Req::new(Method::DELETE, format!("/api/v1/schedules/{}", t.id))
        }),
        row("POST", "/api/v1/schedules/{id}/pause", Need::Fresh(Fresh::Schedule), OWNER_OR_ADMIN, |_, _, t| {
            Req::post(format!("/api/v1/schedules/{}/pause", t.id))
        }),
        row("POST", "/api/v1/schedules/{id}/resume", Need::Fresh(Fresh::Schedule), OWNER_OR_ADMIN, |_, _, t| {
            Req::post(format!("/api/v1/schedules/{}/resume", t.id))
        }),
    ]
}

fn upload(t: &Target, what: &str, body: &[u8]) -> Req {
    let sha = hex::encode(sha2::Sha256::digest(body));
    Req::new(Method::PUT, format!("{}?attempt={}", agent_path(t, what), t.attempt)).bytes(body).header(HDR_BODY_SHA256, sha)
}

fn facts() -> Value {
    json!({
        "hostname": "matrix", "os": "Linux", "arch": "x86_64", "cpu_cores": 64,
        "total_memory_bytes": 64u64 << 30, "agent_version": "matrix", "max_jobs": 256,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

struct Account {
    id: String,
    email: String,
    /// An API token's secret.
    token: String,
    /// `aiedge_session=…`.
    cookie: String,
}

struct NodeCreds {
    id: String,
    key: String,
}

/// One server and everything the rows name.
struct World {
    server: TestServer,
    db: aiedge_store::Db,
    http: reqwest::Client,
    owner: Account,
    other: Account,
    admin: Account,
    revoked_token: String,
    expired_cookie: String,
    owning: NodeCreds,
    other_node: NodeCreds,
    removed_node: NodeCreds,
    spent_token: String,
    login_email: String,
    app_id: String,
    schedule_id: String,
    done_job: String,
    live_job: Target,
    model: Vec<u8>,
    pkg_path: String,
    _site: tempfile::TempDir,
    /// What no caller but the owner (and admins) may ever see: the owner's address and names.
    secrets: Vec<String>,
    counter: AtomicU32,
}

/// A response, as far as the matrix looks.
#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
    fn proceed(&self) -> Option<bool> {
        self.json().and_then(|v| v.get("proceed").and_then(Value::as_bool))
    }
}

impl World {
    fn url(&self, path: &str) -> String {
        self.server.url(path)
    }

    fn unique(&self, what: &str) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        if what == "new" {
            format!("new-{n}@example.org")
        } else {
            format!("matrix-{what}-{n}")
        }
    }

    fn node_of(&self, p: P) -> Option<&NodeCreds> {
        match p {
            P::OwningNode => Some(&self.owning),
            P::OtherNode => Some(&self.other_node),
            P::RemovedNode => Some(&self.removed_node),
            _ => None,
        }
    }

    fn account(&self, p: P) -> Option<&Account> {
        match p {
            P::Owner => Some(&self.owner),
            P::Other => Some(&self.other),
            P::Admin => Some(&self.admin),
            _ => None,
        }
    }

    /// Sends `req` as `p`: users with their token (JSON API) or session (everything else), nodes
    /// signed, the dead credentials as they are. `session` replaces a user's own session.
    async fn send(&self, p: P, req: Req, session: Option<&str>) -> Answer {
        let page = !req.path.starts_with("/api/") && !req.path.starts_with("/agent/") && !req.path.starts_with("/live/");
        let mut builder =
            self.http.request(req.method.clone(), self.url(&req.path)).header(ACCEPT, if page { "text/html" } else { "application/json" });
        let bytes = req.body_bytes();
        if let Some(node) = self.node_of(p) {
            if !req.headers.iter().any(|(name, _)| *name == shared::wire::HDR_SIGNATURE) {
                let time = now_ms();
                let sha = if bytes.is_empty() { EMPTY_SHA256.to_string() } else { hex::encode(sha2::Sha256::digest(&bytes)) };
                let signature = shared::jobs::request_signature(&node.key, req.method.as_str(), &req.path, time, &sha);
                builder = builder.header(HDR_NODE, &node.id).header(HDR_TIME, time.to_string()).header(HDR_REQUEST_SIGNATURE, signature);
            }
        }
        match (p, self.account(p)) {
            (_, Some(account)) if req.path.starts_with("/api/v1/") => {
                builder = builder.header(AUTHORIZATION, format!("Bearer {}", account.token))
            }
            (_, Some(account)) => builder = builder.header(COOKIE, session.unwrap_or(&account.cookie)),
            (P::RevokedToken, _) => builder = builder.header(AUTHORIZATION, format!("Bearer {}", self.revoked_token)),
            (P::ExpiredSession, _) => builder = builder.header(COOKIE, &self.expired_cookie),
            _ => {}
        }
        for (name, value) in &req.headers {
            builder = builder.header(*name, value);
        }
        builder = match req.body {
            Body::Empty => builder,
            Body::Form(_) => builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded").body(bytes),
            Body::Json(_) => builder.header(CONTENT_TYPE, "application/json").body(bytes),
            Body::Bytes(_) => builder.body(bytes),
            Body::Multipart(fields) => {
                let mut form = reqwest::multipart::Form::new();
                for (name, file, content) in fields {
                    let part = reqwest::multipart::Part::bytes(content);
                    form = form.part(name, if let Some(file) = file { part.file_name(file) } else { part });
                }
                builder.multipart(form)
            }
        };
        let res = builder.send().await.unwrap();
        let status = res.status().as_u16();
        let location = res.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
        let streaming = res.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/event-stream"));
        // A live feed never ends: its headers are the answer.
        let body = if streaming { String::new() } else { String::from_utf8_lossy(&res.bytes().await.unwrap()).into_owned() };
        Answer { status, location, body }
    }

    /// Everything a refused request must leave as it was.
    async fn snapshot(&self) -> String {
        const TABLES: &[&str] = &[
            "select id || ' ' || email || ' ' || name || ' ' || role || ' ' || password_hash || ' ' || coalesce(disabled_at, '-') \
             from users order by id",
            "select id || ' ' || owner_id || ' ' || name || ' ' || admin_state || ' ' || sharing from nodes order by id",
            "select node_id || ' ' || user_id from node_shares order by node_id, user_id",
            "select node_id || ' ' || coalesce(used_at, '-') from node_tokens order by token_hash",
            "select id || ' ' || name || ' ' || coalesce(deleted_at, '-') from applications order by id",
            "select id || ' ' || status || ' ' || coalesce(node_id, '-') || ' ' || attempt || ' ' || coalesce(result_key, '-') \
             || ' ' || coalesce(log_key, '-') || ' ' || coalesce(progress_rows, '-') || ' ' || coalesce(error, '-') \
             || ' ' || returns from jobs order by id",
            "select job_id || ' ' || attempt || ' ' || outcome || ' ' || coalesce(started_at, '-') || ' ' || coalesce(finished_at, '-') \
             from job_attempts order by job_id, attempt",
            "select job_id || ' ' || status || ' ' || attempt from job_events order by job_id, id",
            "select id || ' ' || user_id || ' ' || name || ' ' || coalesce(revoked_at, '-') from api_tokens order by id",
            "select key from inline_artifacts order by key",
            "select id || ' ' || name || ' ' || coalesce(cron, '-') || ' ' || overlap || ' ' || coalesce(paused_at, '-') \
             || ' ' || coalesce(next_fire_at, '-') from schedules order by id",
        ];
        let mut out = String::new();
        for sql in TABLES {
            let rows: Vec<(String,)> = sqlx::query_as(sql).fetch_all(&self.db.pool).await.unwrap();
            for (line,) in rows {
                out.push_str(&line);
                out.push('\n');
            }
            out.push_str("--\n");
        }
        out
    }

    /// Waits until the dispatcher has placed every queued job (on the owning node).
    async fn settle(&self) {
        let start = Instant::now();
        loop {
            let (queued,): (i64,) =
                sqlx::query_as("select count(*) from jobs where status = 'queued'").fetch_one(&self.db.pool).await.unwrap();
            if queued == 0 {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{queued} job(s) never dispatched");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A session of `user_id`'s, made the way signing in makes one.
    async fn session_for(&self, user_id: &str) -> String {
        use tower_sessions::cookie::time::{Duration as TimeDuration, OffsetDateTime};
        use tower_sessions::session::{Id, Record};
        use tower_sessions::SessionStore;
        let store = aiedge_store::sessions::DbSessionStore::new(self.db.clone());
        let mut record = Record {
            id: Id::default(),
            data: HashMap::from([(aiedge_store::sessions::USER_ID.to_string(), json!(user_id))]),
            expiry_date: OffsetDateTime::now_utc() + TimeDuration::hours(1),
        };
        store.create(&mut record).await.unwrap();
        format!("{}={}", aiedge_store::sessions::COOKIE_NAME, record.id)
    }

    async fn owner_call(&self, req: Req) -> Value {
        let answer = self.send(P::Owner, req, None).await;
        assert!((200..300).contains(&answer.status), "{answer:?}");
        answer.json().unwrap_or(Value::Null)
    }

    async fn prepare(&self, need: Need) -> Target {
        match need {
            Need::Nothing => Target::default(),
            Need::Node => Target { id: self.owning.id.clone(), attempt: 0 },
            Need::App => Target { id: self.app_id.clone(), attempt: 0 },
            Need::DoneJob => Target { id: self.done_job.clone(), attempt: 0 },
            Need::Schedule => Target { id: self.schedule_id.clone(), attempt: 0 },
            Need::Fresh(Fresh::Schedule) => Target { id: self.new_schedule(&self.unique("spare-schedule")).await, attempt: 0 },
            Need::LiveJob => self.live_job.clone(),
            Need::Fresh(Fresh::Node) => {
                let new = self.owner_call(Req::post("/api/nodes/add").form(&[("name", &self.unique("spare-node"))])).await;
                Target { id: new["node"]["id"].as_str().unwrap().to_string(), attempt: 0 }
            }
            Need::Fresh(Fresh::NodeToken) => {
                let new = self.owner_call(Req::post("/api/nodes/add").form(&[("name", &self.unique("spare-node"))])).await;
                Target { id: new["token"].as_str().unwrap().to_string(), attempt: 0 }
            }
            Need::Fresh(Fresh::App) => Target { id: self.upload_app(&self.unique("spare-model")).await, attempt: 0 },
            Need::Fresh(Fresh::Token) => {
                let new = self.owner_call(Req::post("/api/tokens/create").form(&[("name", &self.unique("spare-token"))])).await;
                Target { id: new["token"]["id"].as_str().unwrap().to_string(), attempt: 0 }
            }
            Need::Fresh(Fresh::Account) => {
                let account = sign_up(&self.http, &self.server, &format!("{}@example.org", self.unique("spare"))).await;
                Target { id: account.id, attempt: 0 }
            }
            Need::Fresh(Fresh::Dispatched) => self.dispatched_job().await,
            Need::Fresh(Fresh::Running) => {
                let job = self.dispatched_job().await;
                let req = Req::post(agent_path(&job, "start")).json(json!({ "attempt": job.attempt, "instance": INSTANCE }));
                let answer = self.send(P::OwningNode, req, None).await;
                assert_eq!(answer.proceed(), Some(true), "start: {answer:?}");
                job
            }
        }
    }

    async fn upload_app(&self, name: &str) -> String {
        let mut req = Req::post("/api/v1/applications");
        req.body = Body::Multipart(vec![
            ("name", None, name.as_bytes().to_vec()),
            ("file", Some("iris.onnx"), self.model.clone()),
            ("default_input", Some("default.csv"), INPUT.to_vec()),
        ]);
        self.owner_call(req).await["id"].as_str().unwrap().to_string()
    }

    /// A schedule of the owner's application that fires once a year (never during the test).
    async fn new_schedule(&self, name: &str) -> String {
        let mut req = Req::post("/api/v1/schedules");
        req.body = Body::Multipart(vec![
            ("application", None, self.app_id.clone().into_bytes()),
            ("name", None, name.as_bytes().to_vec()),
            ("cron", None, b"0 3 1 1 *".to_vec()),
            ("time_zone", None, b"Europe/Berlin".to_vec()),
        ]);
        self.owner_call(req).await["id"].as_str().unwrap().to_string()
    }

    /// A new job of the owner's, once the dispatcher has sent it to the owning node.
    async fn dispatched_job(&self) -> Target {
        let mut req = Req::post("/api/v1/jobs");
        req.body = Body::Multipart(vec![("application", None, self.app_id.clone().into_bytes())]);
        let id = self.owner_call(req).await["id"].as_str().unwrap().to_string();
        let start = Instant::now();
        loop {
            let (status, node, attempt): (String, Option<String>, i32) =
                sqlx::query_as("select status, node_id, attempt from jobs where id = $1").bind(&id).fetch_one(&self.db.pool).await.unwrap();
            if status == "dispatched" {
                assert_eq!(node.as_deref(), Some(self.owning.id.as_str()));
                return Target { id, attempt: u32::try_from(attempt).unwrap() };
            }
            assert!(start.elapsed() < Duration::from_secs(20), "job {id} not dispatched: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Registers a node through the agent endpoint with its one-time token; returns its credentials
/// and the heartbeat exchange.
async fn register(http: &reqwest::Client, server: &TestServer, token: &str) -> (NodeCreds, String) {
    let res = http.post(server.url("/agent/v1/register")).json(&json!({ "token": token, "facts": facts() })).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let creds = NodeCreds { id: v["node_id"].as_str().unwrap().to_string(), key: v["node_key"].as_str().unwrap().to_string() };
    (creds, v["heartbeat_exchange"].as_str().unwrap().to_string())
}

/// Signs up (the account's session) and makes an API token.
async fn sign_up(http: &reqwest::Client, server: &TestServer, email: &str) -> Account {
    let cookie = post_credentials(http, server, "/api/auth/register", email).await;
    account(http, server, email, cookie).await
}

async fn log_in(http: &reqwest::Client, server: &TestServer, email: &str) -> String {
    post_credentials(http, server, "/api/auth/login", email).await
}

/// Sends `email` and the tests' password to a sign-in form's server function; returns the
/// session cookie it set.
async fn post_credentials(http: &reqwest::Client, server: &TestServer, path: &str, email: &str) -> String {
    let res = http
        .post(server.url(path))
        .header(ACCEPT, "application/json")
        .form(&[("email", email), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    cookie_of(&res)
}

fn cookie_of(res: &reqwest::Response) -> String {
    let set = common::session_cookie(res.headers()).expect("a session cookie");
    set.split(';').next().unwrap().to_string()
}

async fn account(http: &reqwest::Client, server: &TestServer, email: &str, cookie: String) -> Account {
    let me: Value = http.get(server.url("/api/auth/me")).header(COOKIE, &cookie).send().await.unwrap().json().await.unwrap();
    let res = http
        .post(server.url("/api/tokens/create"))
        .header(ACCEPT, "application/json")
        .header(COOKIE, &cookie)
        .form(&[("name", format!("{}-token", email.split('@').next().unwrap()))])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let token: Value = res.json().await.unwrap();
    Account {
        id: me["id"].as_str().unwrap().to_string(),
        email: email.to_string(),
        token: token["secret"].as_str().unwrap().to_string(),
        cookie,
    }
}

async fn heartbeat(server: &TestServer, exchange: &str, node: &NodeCreds) {
    let conn = lapin::Connection::connect(&server.config.amqp_url, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let body = serde_json::to_vec(&json!({
        "node_id": node.id, "seq": 1, "sent_at_ms": now_ms(), "instance": INSTANCE, "facts": facts(),
        "metrics": { "free_cpu_pct": 90.0, "free_mem_pct": 90.0, "free_ram_gib": 32.0, "events_per_sec": 1000.0,
                     "temperature_c": null, "running_jobs": 0 },
    }))
    .unwrap();
    let mut headers = FieldTable::default();
    headers.insert(shared::wire::HDR_NODE_ID.into(), AMQPValue::LongString(node.id.clone().into()));
    headers.insert(shared::wire::HDR_SIGNATURE.into(), AMQPValue::LongString(shared::wire::sign(&node.key, &body).into()));
    ch.basic_publish(exchange, "", BasicPublishOptions::default(), &body, BasicProperties::default().with_headers(headers))
        .await
        .unwrap()
        .await
        .unwrap();
    let _ = conn.close(200, "beat sent").await;
}

async fn set_up() -> World {
    let site = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(site.path().join("pkg")).unwrap();
    std::fs::write(site.path().join("pkg/aiedge.js"), "// the site's script\n").unwrap();
    let site_root = site.path().to_str().unwrap().to_string();
    std::fs::create_dir_all(site.path().join("agents")).unwrap();
    std::fs::write(site.path().join("agents/node-agent-aarch64-unknown-linux-musl"), b"\x7fELF not really").unwrap();
    let server = TestServer::start_with(DbKind::Sqlite, |c| {
        c.site_root = site_root.clone();
        c.agents_dir = site.path().join("agents");
        // Nodes that never beat again stay alive, and dispatched jobs wait for their node: the
        // matrix decides when anything moves.
        c.heartbeat_timeout = Duration::from_secs(3600);
        c.start_timeout = Duration::from_secs(3600);
    })
    .await;
    let db = aiedge_store::Db::connect(&server.config.database_url()).await.unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let owner = sign_up(&http, &server, "owner.secret@example.org").await;
    let other = sign_up(&http, &server, "other@example.org").await;
    let login_email = "login-target@example.org".to_string();
    sign_up(&http, &server, &login_email).await;
    server::admin_cli::create_admin(&db, "admin@example.org", PASSWORD).await.unwrap();
    let admin_cookie = log_in(&http, &server, "admin@example.org").await;
    let admin = account(&http, &server, "admin@example.org", admin_cookie).await;

    // A revoked token of the owner's, and an expired session of theirs.
    let res = http
        .post(server.url("/api/tokens/create"))
        .header(ACCEPT, "application/json")
        .header(COOKIE, &owner.cookie)
        .form(&[("name", "revoked")])
        .send()
        .await
        .unwrap();
    let revoked: Value = res.json().await.unwrap();
    let res = http
        .post(server.url("/api/tokens/revoke"))
        .header(ACCEPT, "application/json")
        .header(COOKIE, &owner.cookie)
        .form(&[("id", revoked["token"]["id"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let before: BTreeSet<(String,)> = sqlx::query_as("select id from sessions").fetch_all(&db.pool).await.unwrap().into_iter().collect();
    let expired_cookie = log_in(&http, &server, &owner.email).await;
    let after: BTreeSet<(String,)> = sqlx::query_as("select id from sessions").fetch_all(&db.pool).await.unwrap().into_iter().collect();
    let new: Vec<_> = after.difference(&before).collect();
    assert_eq!(new.len(), 1, "one new session");
    sqlx::query("update sessions set expires_at = $1 where id = $2")
        .bind(now_ms() - 1000)
        .bind(&new[0].0)
        .execute(&db.writer)
        .await
        .unwrap();

    let mut world = World {
        server,
        db,
        http,
        owner,
        other,
        admin,
        revoked_token: revoked["secret"].as_str().unwrap().to_string(),
        expired_cookie,
        owning: NodeCreds { id: String::new(), key: String::new() },
        other_node: NodeCreds { id: String::new(), key: String::new() },
        removed_node: NodeCreds { id: String::new(), key: String::new() },
        spent_token: String::new(),
        login_email,
        app_id: String::new(),
        schedule_id: String::new(),
        done_job: String::new(),
        live_job: Target::default(),
        model: std::fs::read(fixture("iris_logreg.onnx")).unwrap(),
        pkg_path: server::assets::pkg_path(site.path()),
        _site: site,
        secrets: vec![
            "owner.secret@example.org".into(),
            "owner-secret-node".into(),
            "owner-secret-model".into(),
            "owner-secret-token".into(),
            "owner-secret-schedule".into(),
        ],
        counter: AtomicU32::new(0),
    };
    assert_eq!(world.send(P::ExpiredSession, Req::get("/api/auth/me"), None).await.body, "null", "the session expired");
    world.owner_call(Req::post("/api/tokens/create").form(&[("name", "owner-secret-token")])).await;

    // The owner's node, registered through the agent endpoint and alive by a signed heartbeat;
    // another user's node; a node of the owner's that an admin removed.
    let new = world.owner_call(Req::post("/api/nodes/add").form(&[("name", "owner-secret-node")])).await;
    world.spent_token = new["token"].as_str().unwrap().to_string();
    let (owning, exchange) = register(&world.http, &world.server, &world.spent_token).await;
    heartbeat(&world.server, &exchange, &owning).await;
    world.owning = owning;
    let res = world.send(P::Other, Req::post("/api/nodes/add").form(&[("name", "other-node")]), None).await;
    let token = res.json().unwrap()["token"].as_str().unwrap().to_string();
    world.other_node = register(&world.http, &world.server, &token).await.0;
    let new = world.owner_call(Req::post("/api/nodes/add").form(&[("name", "owner-removed-node")])).await;
    let (removed, _) = register(&world.http, &world.server, new["token"].as_str().unwrap()).await;
    let res = world.send(P::Admin, Req::post("/api/nodes/set-state").form(&[("id", &removed.id), ("state", "removed")]), None).await;
    assert_eq!(res.status, 200, "{res:?}");
    world.removed_node = removed;
    let start = Instant::now();
    loop {
        let (status,): (String,) =
            sqlx::query_as("select status from nodes where id = $1").bind(&world.owning.id).fetch_one(&world.db.pool).await.unwrap();
        if status == "active" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "the owning node never came alive: {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The owner's model, a job that succeeded with a log, and one dispatched to the owning node.
    world.app_id = world.upload_app("owner-secret-model").await;
    world.schedule_id = world.new_schedule("owner-secret-schedule").await;
    let done = world.prepare(Need::Fresh(Fresh::Running)).await;
    let answer = world.send(P::OwningNode, upload(&done, "log", b"a line of log\n"), None).await;
    assert_eq!(answer.proceed(), Some(true), "log: {answer:?}");
    let finish = Req::post(agent_path(&done, "finish"))
        .json(json!({ "attempt": done.attempt, "outcome": "succeeded", "rows": 1, "result_csv": RESULT }));
    assert_eq!(world.send(P::OwningNode, finish, None).await.proceed(), Some(true));
    world.done_job = done.id;
    world.live_job = world.dispatched_job().await;
    world
}

/// Checks one answer against its cell; `missing` is the answer for a resource that does not exist.
fn check(expect: E, answer: &Answer, missing: Option<&Answer>, target: &Target) -> Result<(), String> {
    let login = answer.location.as_deref().is_some_and(|l| l.starts_with("/login"));
    let ok = match expect {
        E::Ok => {
            ((200..300).contains(&answer.status) && answer.proceed() != Some(false)) || ((300..400).contains(&answer.status) && !login)
        }
        E::No(status) => answer.status == status,
        E::Login => (300..400).contains(&answer.status) && login,
        E::Fenced => answer.status == 409 || ((200..300).contains(&answer.status) && answer.proceed() == Some(false)),
        E::Hidden => {
            let missing = missing.expect("the answer for a missing resource");
            let same = |a: &Answer, id: &str| (a.status, without_nonces(&a.body.replace(id, "<id>")));
            let refused = answer.status == 404 || answer.body == "null" || (answer.status == 200 && missing.status == 200);
            let (a, m) = (same(answer, &target.id), same(missing, MISSING));
            if refused && a != m {
                let at = a.1.chars().zip(m.1.chars()).take_while(|(x, y)| x == y).count();
                let around = |s: &str| s.chars().skip(at.saturating_sub(80)).take(240).collect::<String>();
                return Err(format!(
                    "answered unlike a missing resource ({} vs {}):\n  got:     {}\n  missing: {}",
                    a.0,
                    m.0,
                    around(&a.1),
                    around(&m.1)
                ));
            }
            refused && a == m
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected {expect:?}, got {} {:?} {}",
            answer.status,
            answer.location,
            answer.body.chars().take(300).collect::<String>()
        ))
    }
}

/// A page with its per-response nonces blanked (Leptos marks its scripts with one).
fn without_nonces(body: &str) -> String {
    let mut out = body.to_string();
    for attr in ["nonce=\"", "crossorigin=\""] {
        let mut from = 0;
        while let Some(at) = out[from..].find(attr).map(|i| from + i + attr.len()) {
            let Some(len) = out[at..].find('"') else { break };
            out.replace_range(at..at + len, "");
            from = at;
        }
    }
    out
}

/// The whole matrix, on one server. The routes first: a route without a row fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_caller_as_the_matrix_says() {
    let rows = matrix();
    let table = server::route_table();
    let listed: BTreeMap<(String, String), Kind> = table.iter().map(|r| ((r.method.clone(), r.path.clone()), r.kind)).collect();
    assert_eq!(listed.len(), table.len(), "a route listed twice: {table:#?}");
    // A route may have several rows (its variants: `?scope=all`, one resource or a list).
    let covered: BTreeSet<(String, String)> = rows.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    let unlisted: Vec<_> = listed.keys().filter(|k| !covered.contains(*k)).collect();
    let stale: Vec<_> = covered.iter().filter(|k| !listed.contains_key(*k)).collect();
    assert!(
        unlisted.is_empty() && stale.is_empty(),
        "routes without a row in the matrix (say who may call them): {unlisted:?}; rows for routes the server does not have: {stale:?}"
    );

    let world = set_up().await;

    // The JSON API's rows are exactly its documented operations.
    let doc: Value = world.http.get(world.url("/api/v1/openapi.json")).send().await.unwrap().json().await.unwrap();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.to_ascii_uppercase(), path.clone())))
        .filter(|(m, _)| ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&m.as_str()))
        .collect();
    let api: BTreeSet<(String, String)> = table
        .iter()
        .filter(|r: &&Route| r.kind == Kind::Api && r.path != "/api/v1/openapi.json")
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(api, documented, "the API's routes and its OpenAPI document differ");

    let mut failures = Vec::new();
    let mut cells = 0;
    for r in &rows {
        // Refused callers first, sharing one target; each allowed caller gets its own when the
        // call changes it.
        let refused: Vec<usize> = (0..PRINCIPALS.len()).filter(|&i| r.expect[i] != E::Ok).collect();
        let allowed: Vec<usize> = (0..PRINCIPALS.len()).filter(|&i| r.expect[i] == E::Ok).collect();
        let shared_target = world.prepare(r.need).await;
        world.settle().await;
        for i in refused.into_iter().chain(allowed) {
            let p = PRINCIPALS[i];
            let expect = r.expect[i];
            let target = match (expect, r.need) {
                (E::Ok, Need::Fresh(_)) => {
                    let t = world.prepare(r.need).await;
                    world.settle().await;
                    t
                }
                _ => shared_target.clone(),
            };
            let session = match (r.own_session, world.account(p)) {
                (true, Some(account)) => Some(world.session_for(&account.id).await),
                _ => None,
            };
            let before = if expect == E::Ok { None } else { Some(world.snapshot().await) };
            let answer = world.send(p, (r.probe)(&world, p, &target), session.as_deref()).await;
            let missing = if expect == E::Hidden {
                let gone = Target { id: MISSING.into(), attempt: target.attempt };
                Some(world.send(p, (r.probe)(&world, p, &gone), None).await)
            } else {
                None
            };
            cells += 1;
            let cell = format!("{} {} as {p:?}", r.method, r.path);
            if let Err(e) = check(expect, &answer, missing.as_ref(), &target) {
                failures.push(format!("{cell}: {e}"));
            }
            if let Some(before) = before {
                let after = world.snapshot().await;
                if before != after {
                    failures.push(format!("{cell}: a refused request changed something:\n{}", diff(&before, &after)));
                }
            }
            if !matches!(p, P::Owner | P::Admin | P::OwningNode) {
                for secret in &world.secrets {
                    if answer.body.contains(secret.as_str()) {
                        failures.push(format!("{cell}: the answer shows the owner's {secret:?}"));
                    }
                }
            }
            if expect == E::Ok {
                world.settle().await;
            }
        }
        let health = world.http.get(world.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "after {} {}", r.method, r.path);
    }
    assert_eq!(cells, rows.len() * PRINCIPALS.len());
    assert!(failures.is_empty(), "{} of {cells} cells failed:\n{}", failures.len(), failures.join("\n"));
    eprintln!("authorization matrix: {} routes, {} rows × {} callers = {cells} cells", listed.len(), rows.len(), PRINCIPALS.len());
    world.db.pool.close().await;
    world.server.stop().await;
}

fn diff(before: &str, after: &str) -> String {
    let (b, a): (BTreeSet<&str>, BTreeSet<&str>) = (before.lines().collect(), after.lines().collect());
    let gone = b.difference(&a).map(|l| format!("  - {l}"));
    let new = a.difference(&b).map(|l| format!("  + {l}"));
    gone.chain(new).collect::<Vec<_>>().join("\n")
}

/// Routes enter the router only through `server::routes::Routes` (or the few calls the route
/// table accounts for), so none can be added that the matrix does not see.
#[test]
fn routes_are_added_only_where_the_route_table_sees_them() {
    // (file, call, times): the listing router itself, the browser's files, the pages and
    // server functions, and the fallback.
    let allowed: &[(&str, &str, usize)] =
        &[("routes.rs", ".route(", 1), ("assets.rs", ".nest_service(", 1), ("lib.rs", "leptos_routes", 1), ("lib.rs", ".fallback(", 1)];
    let calls =
        [".route(", ".route_service(", ".nest(", ".nest_service(", ".fallback(", ".fallback_service(", "leptos_routes", ".route_layer("];
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut found: BTreeMap<(String, &str), usize> = BTreeMap::new();
    // Every source file, in module directories too (named by their path under src/).
    let mut dirs = vec![src.clone()];
    let mut files = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 20, "server/src scanned: {files:?}");
    for path in files {
        let name = path.strip_prefix(&src).unwrap().to_str().unwrap().to_string();
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let code = line.trim_start();
            if code.starts_with("//") {
                continue;
            }
            for call in calls {
                let n = code.matches(call).count();
                if n > 0 {
                    *found.entry((name.clone(), call)).or_default() += n;
                }
            }
        }
    }
    let expected: BTreeMap<(String, &str), usize> = allowed.iter().map(|(f, c, n)| ((f.to_string(), *c), *n)).collect();
    assert_eq!(found, expected, "route through server::routes::Routes so the route table (and the authorization matrix) lists it");
}
