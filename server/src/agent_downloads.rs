//! The agent binaries this server hands out, and the installer that fetches them.
//!
//! `scripts/build-agents.sh` (or `scripts/release.sh`) puts `node-agent-<target>` files in a
//! directory (`--agents-dir`); at start the server hashes each one it knows the target of and
//! serves:
//!
//! - `GET /install.sh`: the installer (`deploy/install.sh`, compiled in), with this server's
//!   public URL as its default, for `curl -fsSL SERVER/install.sh | sudo sh -s -- --token …`;
//! - `GET /agent/v1/manifest`: version, and per target its `uname -m` names, size and SHA-256;
//! - `GET /agent/v1/checksums`: the same hashes in `sha256sum -c` format, for the installer;
//! - `GET /agent/v1/download/{target}`: the binary.
//!
//! None of it is secret: anyone may download the agent, as anyone may read its source. The
//! hashes are taken once at start, so a file changed afterwards no longer matches its published
//! hash and the installer refuses it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tower::ServiceExt;

/// The targets agents are built for, with the `uname -m` names of the machines each one runs on.
pub const TARGETS: [(&str, &[&str]); 3] = [
    ("x86_64-unknown-linux-musl", &["x86_64", "amd64"]),
    ("aarch64-unknown-linux-musl", &["aarch64", "arm64"]),
    // Raspberry Pi 2/3/4 (and 5) with a 32-bit OS; glibc, since Rust serves no armv7 musl std here.
    ("armv7-unknown-linux-gnueabihf", &["armv7l", "armv8l"]),
];

/// The file name of a target's agent in the agents directory (and in `dist/agents`).
pub fn file_name(target: &str) -> String {
    format!("node-agent-{target}")
}

/// One binary on offer.
#[derive(Clone, Debug, Serialize)]
pub struct AgentBinary {
    pub target: &'static str,
    /// What `uname -m` prints on the machines it runs on.
    pub machines: &'static [&'static str],
    pub size_bytes: u64,
    pub sha256: String,
    /// Where to download it, relative to the server.
    pub url: String,
    #[serde(skip)]
    path: PathBuf,
}

/// The manifest: what `GET /agent/v1/manifest` answers.
#[derive(Clone, Debug, Serialize)]
pub struct Manifest {
    /// The agent version these binaries are (the `VERSION` file beside them, else the server's).
    pub version: String,
    pub agents: Vec<AgentBinary>,
}

/// The binaries, found and hashed once at start; cheap to clone into each request.
#[derive(Clone, Debug)]
pub struct Downloads {
    manifest: Arc<Manifest>,
    /// The installer with this server's URL filled in.
    installer: Arc<str>,
}

/// The installer's source; `@@SERVER@@` is replaced by the server's public URL.
const INSTALLER: &str = include_str!("../../deploy/install.sh");

impl Downloads {
    /// Looks for the agents in `dir` (a missing directory offers none: the install line then
    /// says so) and hashes them, off the async threads.
    pub async fn load(dir: &Path, public_url: &str) -> anyhow::Result<Self> {
        let dir = dir.to_path_buf();
        let manifest = tokio::task::spawn_blocking(move || scan(&dir)).await??;
        if manifest.agents.is_empty() {
            tracing::info!("no agent binaries to hand out: build them with scripts/build-agents.sh and point --agents-dir at them");
        } else {
            let targets: Vec<_> = manifest.agents.iter().map(|a| a.target).collect();
            tracing::info!(version = %manifest.version, ?targets, "handing out agent binaries");
        }
        Ok(Self { manifest: Arc::new(manifest), installer: INSTALLER.replace("@@SERVER@@", public_url.trim_end_matches('/')).into() })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
}

/// Hashes each known target's binary in `dir`.
fn scan(dir: &Path) -> anyhow::Result<Manifest> {
    use anyhow::Context;
    let own = env!("CARGO_PKG_VERSION").to_string();
    let version = match std::fs::read_to_string(dir.join("VERSION")) {
        Ok(v) => v.trim().to_string(),
        Err(_) => own.clone(),
    };
    if version != own {
        tracing::warn!(agents = %version, server = %own, "the agent binaries are not this server's version");
    }
    let mut agents = Vec::new();
    for (target, machines) in TARGETS {
        let path = dir.join(file_name(target));
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        let mut hasher = Sha256::new();
        let size_bytes =
            std::io::copy(&mut std::io::BufReader::new(file), &mut hasher).with_context(|| format!("reading {}", path.display()))?;
        agents.push(AgentBinary {
            target,
            machines,
            size_bytes,
            sha256: hex::encode(hasher.finalize()),
            url: format!("/agent/v1/download/{target}"),
            path,
        });
    }
    Ok(Manifest { version, agents })
}

/// `GET /install.sh`.
pub async fn installer(Extension(downloads): Extension<Downloads>) -> Response {
    ([(header::CONTENT_TYPE, "text/x-shellscript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], downloads.installer.to_string())
        .into_response()
}

/// `GET /agent/v1/manifest`.
pub async fn manifest(Extension(downloads): Extension<Downloads>) -> Json<Manifest> {
    Json(downloads.manifest.as_ref().clone())
}

/// `GET /agent/v1/checksums`: `sha256sum` lines (`HASH  node-agent-TARGET`).
pub async fn checksums(Extension(downloads): Extension<Downloads>) -> Response {
    let text: String = downloads.manifest.agents.iter().map(|a| format!("{}  {}\n", a.sha256, file_name(a.target))).collect();
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], text).into_response()
}

/// `GET /agent/v1/download/{target}`: the binary, with its hash in a header; 404 naming the
/// targets on offer for any other name.
pub async fn download(Extension(downloads): Extension<Downloads>, UrlPath(target): UrlPath<String>, request: Request) -> Response {
    let Some(agent) = downloads.manifest.agents.iter().find(|a| a.target == target) else {
        let offered: Vec<_> = downloads.manifest.agents.iter().map(|a| a.target).collect();
        let message = if offered.is_empty() {
            "this server has no agent binaries to hand out (its operator builds them with scripts/build-agents.sh)".to_string()
        } else {
            format!("no agent for {target:?}; this server has: {}", offered.join(", "))
        };
        return (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": "not_found", "message": message }))).into_response();
    };
    // ServeFile answers ranges and conditional requests, so a broken download can resume.
    let served = tower_http::services::ServeFile::new(&agent.path).oneshot(request).await;
    let mut response = match served {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    if let Ok(disposition) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", file_name(agent.target))) {
        headers.insert(header::CONTENT_DISPOSITION, disposition);
    }
    if let Ok(sha) = HeaderValue::from_str(&agent.sha256) {
        headers.insert("x-checksum-sha256", sha);
    }
    response
}
