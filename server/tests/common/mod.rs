//! Starts the real server in-process on a port-0 listener, against a real database: a fresh
//! SQLite file in a temp dir, or a fresh PostgreSQL database (dropped again by `stop`), and the
//! real RabbitMQ. Set `AIEDGE_TEST_POSTGRES` to point at another PostgreSQL server.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fleet;

use std::time::Duration;

use clap::Parser;
use reqwest::header::{HeaderMap, ACCEPT};
use server::config::{Cli, Config};
use sqlx::{Connection, Executor};
use tokio_util::sync::CancellationToken;

/// The node-agent binary cargo built beside these tests (`cargo test -p node-agent -p server`
/// builds it), or `AIEDGE_AGENT_BIN`.
pub fn agent_bin() -> std::path::PathBuf {
    if let Ok(bin) = std::env::var("AIEDGE_AGENT_BIN") {
        return bin.into();
    }
    // target/<profile>/deps/<test>-<hash> → target/<profile>/node-agent
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe.parent().and_then(std::path::Path::parent).expect("target dir").join("node-agent");
    assert!(bin.exists(), "build the agent first: cargo build -p node-agent (looked for {})", bin.display());
    bin
}

#[derive(Clone, Copy, Debug)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

pub fn postgres_admin_url() -> String {
    std::env::var("AIEDGE_TEST_POSTGRES").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Creates a fresh, empty PostgreSQL database and returns its name.
pub async fn create_pg_database() -> String {
    let name = format!("aiedge_t_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_admin_url()))
        .await
        .expect("PostgreSQL reachable for tests (is it running?)");
    conn.execute(format!("create database {name}").as_str()).await.expect("create test database");
    name
}

pub async fn drop_pg_database(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{}/postgres", postgres_admin_url())).await {
        let _ = conn.execute(format!("drop database if exists {name} with (force)").as_str()).await;
    }
}

/// A fresh, migrated database alone (no server), for tests of the storage layer: a SQLite
/// file in a temp dir, or a new PostgreSQL database that `close` drops.
pub struct TestDb {
    pub db: aiedge_store::Db,
    _dir: tempfile::TempDir,
    pg_database: Option<String>,
}

impl TestDb {
    pub async fn new(kind: DbKind) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg_database) = match kind {
            DbKind::Sqlite => (format!("sqlite://{}/test.db", dir.path().display()), None),
            DbKind::Postgres => {
                let name = create_pg_database().await;
                (format!("{}/{name}", postgres_admin_url()), Some(name))
            }
        };
        let db = aiedge_store::Db::connect(&url).await.expect("connect and migrate the test database");
        Self { db, _dir: dir, pg_database }
    }

    pub async fn close(mut self) {
        self.db.pool.close().await;
        if let Some(name) = self.pg_database.take() {
            drop_pg_database(&name).await;
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_database.take() {
            drop_pg_database_blocking(name);
        }
    }
}

/// Drops a test database from synchronous code (a `Drop` while a failed test unwinds), on a
/// thread of its own since the caller may be inside a runtime.
fn drop_pg_database_blocking(name: String) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
            rt.block_on(drop_pg_database(&name));
        }
    })
    .join();
}

pub struct TestServer {
    pub base: String,
    pub config: Config,
    pub data_dir: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    pg_database: Option<String>,
}

/// Builds a configuration from flags, as the binary would parse them.
pub fn config_from(args: &[&str]) -> Config {
    let mut all = vec!["server"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).expect("test flags parse").config
}

impl TestServer {
    pub async fn start(kind: DbKind) -> Self {
        Self::start_with(kind, |_| {}).await
    }

    pub async fn start_with(kind: DbKind, tweak: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut config = config_from(&["--data-dir", data_dir.path().to_str().expect("utf-8 path")]);
        // Generous limits unless a test is about them.
        config.login_per_ip_per_min = 1000;
        config.login_per_account_per_min = 1000;
        config.register_per_ip_per_min = 1000;
        // Each test gets its own exchanges and queues on the shared broker.
        config.amqp_namespace = format!("aiedge-test-{}", uuid::Uuid::new_v4().simple());
        // Uploaded models are checked by the real server binary, as in production.
        config.model_checker = Some(env!("CARGO_BIN_EXE_server").into());
        let mut pg_database = None;
        if let DbKind::Postgres = kind {
            let name = create_pg_database().await;
            config.database_url = Some(format!("{}/{name}", postgres_admin_url()));
            pg_database = Some(name);
        }
        tweak(&mut config);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(server::launch(config.clone(), listener, shutdown.clone()));
        let server = Self { base, config, data_dir, shutdown, handle, pg_database };
        server.wait_ready().await;
        server
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if client.get(self.url("/healthz")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("server did not start");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An admin, `root@example.org` with `password`, made as `server admin create` makes one
    /// and signed in; with the server's state, for tests that look past HTTP.
    pub async fn signed_in_admin(&self, password: &str) -> (Client, app::backend::AppState) {
        let state = server::build_state(&self.config).await.expect("state");
        server::admin_cli::create_admin(&state.db, "root@example.org", password).await.expect("admin created");
        let admin = self.client();
        assert_eq!(admin.login("root@example.org", password).await.status(), 200);
        (admin, state)
    }

    /// Stops the server as SIGTERM would (in-flight requests finish, background work stops).
    pub async fn take_down(&mut self) {
        self.shutdown.cancel();
        let handle = std::mem::replace(&mut self.handle, tokio::spawn(async { Ok(()) }));
        let result = tokio::time::timeout(Duration::from_secs(10), handle).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "server did not stop cleanly: {result:?}");
    }

    /// Starts the server again on the same address, database and data directory.
    pub async fn bring_up(&mut self) {
        let addr = self.base.trim_start_matches("http://").to_string();
        let listener = loop {
            match tokio::net::TcpListener::bind(&addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.shutdown = CancellationToken::new();
        self.handle = tokio::spawn(server::launch(self.config.clone(), listener, self.shutdown.clone()));
        self.wait_ready().await;
    }

    /// A client that keeps cookies, like a browser, but does not follow redirects, so tests
    /// see them.
    pub fn client(&self) -> Client {
        Client {
            base: self.base.clone(),
            http: reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("client"),
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let handle = std::mem::replace(&mut self.handle, tokio::spawn(async { Ok(()) }));
        let result = tokio::time::timeout(Duration::from_secs(10), handle).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "server did not stop cleanly: {result:?}");
        // After the server: its database has one writer at a time.
        self.delete_node_queues().await;
        if let Some(name) = self.pg_database.take() {
            drop_pg_database(&name).await;
        }
    }
}

impl Drop for TestServer {
    /// A test that failed before `stop` still stops its server and drops its database.
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(name) = self.pg_database.take() {
            drop_pg_database_blocking(name);
        }
    }
}

impl TestServer {
    /// Node queues and the dead letters are durable and never expire by design; a test
    /// removes its own.
    async fn delete_node_queues(&self) {
        let Ok(db) = aiedge_store::Db::connect(&self.config.database_url()).await else { return };
        let ids: Vec<(String,)> = sqlx::query_as("select id from nodes").fetch_all(&db.pool).await.unwrap_or_default();
        db.pool.close().await;
        let ids: Vec<String> = ids.into_iter().map(|(id,)| id).collect();
        delete_broker_topology(&self.config.amqp_url, &self.config.amqp_namespace, &ids).await;
    }
}

/// Removes what a deployment declared on the broker under `namespace` (durable queues and
/// exchanges never expire by design; a test removes its own).
pub async fn delete_broker_topology(amqp_url: &str, namespace: &str, node_ids: &[String]) {
    let topology = server::broker::Topology::new(namespace);
    let Ok(conn) = lapin::Connection::connect(amqp_url, lapin::ConnectionProperties::default()).await else {
        return;
    };
    if let Ok(ch) = conn.create_channel().await {
        for id in node_ids {
            let _ = ch.queue_delete(&topology.node_queue(id), Default::default()).await;
        }
        let _ = ch.exchange_delete(&topology.jobs_exchange(), Default::default()).await;
        let _ = ch.exchange_delete(&topology.heartbeat_exchange(), Default::default()).await;
        let _ = ch.queue_delete(&topology.heartbeat_queue(), Default::default()).await;
        let _ = ch.queue_delete(&topology.dead_letter_queue(), Default::default()).await;
        let _ = ch.exchange_delete(&topology.dead_letter_exchange(), Default::default()).await;
        let _ = ch.exchange_delete(&topology.replica_exchange(), Default::default()).await;
        let _ = ch.queue_delete(&topology.claim_queue(), Default::default()).await;
    }
    let _ = conn.close(200, "test done").await;
}

pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Calls a server function the way a script or the hydrated app does.
    pub async fn call(&self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http.post(self.url(path)).header(ACCEPT, "application/json").form(form).send().await.expect("request")
    }

    /// Posts a form the way a browser without the WASM does.
    pub async fn browser_post(&self, path: &str, referer: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header(ACCEPT, "text/html,application/xhtml+xml")
            .header(reqwest::header::REFERER, self.url(referer))
            .form(form)
            .send()
            .await
            .expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).header(ACCEPT, "text/html").send().await.expect("request")
    }

    pub async fn register(&self, email: &str, password: &str) -> reqwest::Response {
        self.call("/api/auth/register", &[("email", email), ("password", password)]).await
    }

    pub async fn login(&self, email: &str, password: &str) -> reqwest::Response {
        self.call("/api/auth/login", &[("email", email), ("password", password)]).await
    }

    /// The signed-in user as the server sees it, or JSON null.
    pub async fn me(&self) -> serde_json::Value {
        let res = self.http.get(self.url("/api/auth/me")).send().await.expect("request");
        assert_eq!(res.status(), 200);
        res.json().await.expect("json")
    }
}

/// The `Set-Cookie` header for the session cookie, if the response set one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("aiedge_session="))
        .map(str::to_string)
}

/// Runs an async test body once against SQLite and once against PostgreSQL.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::DbKind::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::DbKind::Postgres).await
                }
            }
        )*
    };
}
