//! A fleet for the job tests: real `node-agent` processes (which a test can kill, pause, resume
//! and restart with the same credentials), and users who drive the JSON API with a token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::multipart::{Form, Part};
use serde_json::Value;

use super::{agent_bin, TestServer};

pub const PASSWORD: &str = "correct horse battery";

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runner/fixtures").join(name)
}

/// A `node-agent run` process. Its log (`RUST_LOG=info`) goes to `agent.log` in its directory.
pub struct Agent {
    child: Child,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Agent {
    pub fn start(server: &TestServer, token: &str, name: &str, extra: &[&str]) -> Self {
        Self::start_at(&server.base, token, name, extra)
    }

    /// An agent of the server at `base` (for servers that are not a [`TestServer`]).
    pub fn start_at(base: &str, token: &str, name: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("agent dir");
        let mut args: Vec<String> =
            vec!["run".into(), "--server".into(), base.to_string(), "--name".into(), name.into(), "--token".into(), token.into()];
        args.push("--work-dir".into());
        args.push(dir.path().join("work").display().to_string());
        args.extend(["--heartbeat-interval", "300ms", "--benchmark-interval", "1h"].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Self::spawn(&args, dir.path());
        Self { child, dir, args }
    }

    fn spawn(args: &[String], dir: &Path) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("agent.log")).expect("agent log");
        Command::new(agent_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .env("AIEDGE_LOG_FORMAT", "text")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start node-agent")
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("pid"))
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal the agent");
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the agent again on the same work dir: it reuses its saved credentials.
    pub fn restart(&mut self) {
        self.kill();
        self.child = Self::spawn(&self.args, self.dir.path());
    }

    /// Whether the process has exited (and its status).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The node key from the agent's state file.
    pub fn key(&self) -> String {
        let state: Value =
            serde_json::from_slice(&std::fs::read(self.dir.path().join("work/node-agent-state.json")).expect("state file")).expect("json");
        state["node_key"].as_str().expect("key").to_string()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A paused agent must be resumed to die cleanly with its children.
        let _ = kill(self.pid(), Signal::SIGCONT);
        self.kill();
    }
}

/// A signed-in user with an API token.
pub struct User {
    pub web: super::Client,
    pub token: String,
    pub base: String,
    pub http: reqwest::Client,
}

impl User {
    pub async fn new(server: &TestServer, email: &str) -> Self {
        let web = server.client();
        assert_eq!(web.register(email, PASSWORD).await.status(), 200);
        let res = web.call("/api/tokens/create", &[("name", "tests")]).await;
        assert_eq!(res.status(), 200);
        let token: Value = res.json().await.unwrap();
        Self { web, token: token["secret"].as_str().unwrap().to_string(), base: server.base.clone(), http: reqwest::Client::new() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).bearer_auth(&self.token).send().await.unwrap()
    }

    pub async fn post_form(&self, path: &str, form: Form) -> reqwest::Response {
        self.http.post(self.url(path)).bearer_auth(&self.token).multipart(form).send().await.unwrap()
    }

    pub async fn upload(&self, name: &str, filename: &str, bytes: Vec<u8>, default_input: Option<Vec<u8>>) -> reqwest::Response {
        let mut form = Form::new().text("name", name.to_string()).part("file", Part::bytes(bytes).file_name(filename.to_string()));
        if let Some(input) = default_input {
            form = form.part("default_input", Part::bytes(input).file_name("default.csv"));
        }
        self.post_form("/api/v1/applications", form).await
    }

    pub async fn submit(&self, app: &str, input: Option<Vec<u8>>) -> reqwest::Response {
        let mut form = Form::new().text("application", app.to_string());
        if let Some(input) = input {
            form = form.part("input", Part::bytes(input).file_name("input.csv"));
        }
        self.post_form("/api/v1/jobs", form).await
    }

    /// Uploads the iris classifier as `iris`, with `iris.csv` as its default input; returns the
    /// application.
    pub async fn upload_iris(&self) -> Value {
        let model = std::fs::read(fixture("iris_logreg.onnx")).unwrap();
        json(self.upload("iris", "iris_logreg.onnx", model, Some(std::fs::read(fixture("iris.csv")).unwrap())).await, 201).await
    }

    /// A node of this user's with its agent running (`--max-jobs 2`), active.
    pub async fn node_with_agent(&self, server: &TestServer, name: &str) -> (String, Agent) {
        let (node_id, token) = self.add_node(name).await;
        let agent = Agent::start(server, &token, name, &["--max-jobs", "2"]);
        self.wait_node_active(&node_id).await;
        (node_id, agent)
    }

    pub async fn add_node(&self, name: &str) -> (String, String) {
        let res = self.web.call("/api/nodes/add", &[("name", name)]).await;
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        (v["node"]["id"].as_str().unwrap().to_string(), v["token"].as_str().unwrap().to_string())
    }

    /// The node as its owner's list shows it.
    pub async fn node(&self, id: &str) -> Value {
        let nodes: Value = self.web.http.get(self.web.url("/api/nodes/mine")).send().await.unwrap().json().await.unwrap();
        nodes.as_array().unwrap().iter().find(|n| n["id"] == id).cloned().unwrap_or(Value::Null)
    }

    pub async fn wait_node_status(&self, id: &str, status: &str, within: Duration) {
        let start = Instant::now();
        loop {
            let node = self.node(id).await;
            if node["status"] == status && (status != "active" || node["score"].is_object()) {
                return;
            }
            assert!(start.elapsed() < within, "node not {status}: {node}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_node_active(&self, id: &str) {
        self.wait_node_status(id, "active", Duration::from_secs(30)).await;
    }

    pub async fn job(&self, id: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{id}")).await.json().await.unwrap()
    }

    /// Polls a job until `done(job)`; returns it.
    pub async fn wait_job_until(&self, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let job = self.job(id).await;
            if done(&job) {
                return job;
            }
            assert!(start.elapsed() < within, "job never got there: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls a job until it is finished; returns it.
    pub async fn wait_job(&self, id: &str) -> Value {
        self.wait_job_until(id, Duration::from_secs(60), |j| {
            ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap_or_default())
        })
        .await
    }
}

pub async fn json(res: reqwest::Response, status: u16) -> Value {
    let code = res.status().as_u16();
    let text = res.text().await.unwrap();
    assert_eq!(code, status, "{text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A script bundle: `aiedge.toml` plus files.
pub fn bundle(manifest: &str, files: &[(&str, &str)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default();
    zip.start_file("aiedge.toml", opts).unwrap();
    zip.write_all(manifest.as_bytes()).unwrap();
    for (name, body) in files {
        zip.start_file(*name, opts).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Compares two predictions CSVs: same header, same labels and row ids, numbers within 1e-5
/// (1e-4 relative for large values), NaN equal to NaN.
pub fn assert_same_predictions(got: &str, expected: &str) {
    let (got, expected): (Vec<_>, Vec<_>) = (got.lines().collect(), expected.lines().collect());
    assert_eq!(got.len(), expected.len(), "row count");
    assert_eq!(got[0], expected[0], "header");
    for (g, e) in got.iter().zip(&expected).skip(1) {
        for (a, b) in g.split(',').zip(e.split(',')) {
            match (a.parse::<f64>(), b.parse::<f64>()) {
                (Ok(x), Ok(y)) if x.is_nan() && y.is_nan() => {}
                (Ok(x), Ok(y)) => assert!((x - y).abs() <= 1e-5_f64.max(1e-4 * y.abs()), "{g} vs {e}"),
                _ => assert_eq!(a, b, "{g} vs {e}"),
            }
        }
    }
}
