//! The signed HTTP calls an agent makes about its jobs (see `shared::jobs`): every request
//! carries the node id, the time and an HMAC over method, path, time and body hash.

use std::path::Path;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use shared::jobs::{request_signature, EMPTY_SHA256, HDR_BODY_SHA256, HDR_NODE, HDR_REQUEST_SIGNATURE, HDR_TIME};
use tokio::io::AsyncWriteExt;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server or the network had a problem; trying again later may work.
    #[error("server unreachable or failing: {0}")]
    Transient(String),
    /// The server said no (4xx); trying again will not help.
    #[error("server refused ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("local file: {0}")]
    Io(#[from] std::io::Error),
}

impl CallError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CallError::Transient(_))
    }
}

/// A client for one node's calls to its server.
#[derive(Clone)]
pub struct NodeApi {
    client: reqwest::Client,
    server: String,
    node_id: String,
    node_key: String,
}

impl NodeApi {
    pub fn new(server: &str, node_id: &str, node_key: &str) -> reqwest::Result<Self> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("node-agent/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            // Artifacts can be large; a stalled transfer is caught by the read timeout.
            .read_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self { client, server: server.trim_end_matches('/').to_string(), node_id: node_id.into(), node_key: node_key.into() })
    }

    fn signed(&self, method: reqwest::Method, path: &str, body_sha256: &str) -> reqwest::RequestBuilder {
        let time = crate::run::now_ms();
        let signature = request_signature(&self.node_key, method.as_str(), path, time, body_sha256);
        self.client
            .request(method, format!("{}{path}", self.server))
            .header(HDR_NODE, &self.node_id)
            .header(HDR_TIME, time.to_string())
            .header(HDR_REQUEST_SIGNATURE, signature)
    }

    async fn check(resp: Result<reqwest::Response, reqwest::Error>) -> Result<reqwest::Response, CallError> {
        let resp = resp.map_err(|e| CallError::Transient(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(text);
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            Err(CallError::Transient(format!("{status}: {message}")))
        } else {
            Err(CallError::Refused { status: status.as_u16(), message })
        }
    }

    /// `POST path` with a JSON body; the JSON answer.
    pub async fn post<B: Serialize, R: DeserializeOwned>(&self, path: &str, body: &B) -> Result<R, CallError> {
        let bytes = serde_json::to_vec(body).map_err(|e| CallError::Transient(e.to_string()))?;
        let sha = hex::encode(Sha256::digest(&bytes));
        let resp = self
            .signed(reqwest::Method::POST, path, &sha)
            .timeout(Duration::from_secs(30))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes)
            .send()
            .await;
        Self::check(resp).await?.json().await.map_err(|e| CallError::Transient(e.to_string()))
    }

    /// `GET path` into `dest`, streamed; returns the SHA-256 of what was written.
    pub async fn download(&self, path: &str, dest: &Path) -> Result<String, CallError> {
        let resp = self.signed(reqwest::Method::GET, path, EMPTY_SHA256).send().await;
        let mut resp = Self::check(resp).await?;
        let mut file = tokio::fs::File::create(dest).await?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| CallError::Transient(e.to_string()))? {
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        Ok(hex::encode(hasher.finalize()))
    }

    /// `PUT path` with the file at `src` as the body, streamed; the JSON answer.
    /// The body of `path` in memory when the server says it is at most `max` bytes; `None`
    /// (and nothing read) when it is bigger or does not say.
    pub async fn download_small(&self, path: &str, max: u64) -> Result<Option<Vec<u8>>, CallError> {
        let resp = self.signed(reqwest::Method::GET, path, EMPTY_SHA256).send().await;
        let resp = Self::check(resp).await?;
        match resp.content_length() {
            Some(len) if len <= max => {
                let bytes = resp.bytes().await.map_err(|e| CallError::Transient(e.to_string()))?;
                Ok(Some(bytes.to_vec()))
            }
            _ => Ok(None),
        }
    }

    /// Like [`NodeApi::upload`], from memory.
    pub async fn upload_bytes<R: DeserializeOwned>(&self, path: &str, bytes: Vec<u8>) -> Result<R, CallError> {
        let sha = hex::encode(Sha256::digest(&bytes));
        let resp = self.signed(reqwest::Method::PUT, path, &sha).header(HDR_BODY_SHA256, &sha).body(bytes).send().await;
        Self::check(resp).await?.json().await.map_err(|e| CallError::Transient(e.to_string()))
    }

    pub async fn upload<R: DeserializeOwned>(&self, path: &str, src: &Path) -> Result<R, CallError> {
        let sha = sha256_file(src).await?;
        let file = tokio::fs::File::open(src).await?;
        let len = file.metadata().await?.len();
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let resp = self
            .signed(reqwest::Method::PUT, path, &sha)
            .header(HDR_BODY_SHA256, &sha)
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body)
            .send()
            .await;
        Self::check(resp).await?.json().await.map_err(|e| CallError::Transient(e.to_string()))
    }
}

/// SHA-256 of a file, hex, read in chunks.
pub async fn sha256_file(path: &Path) -> std::io::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
