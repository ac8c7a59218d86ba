//! Trading the one-time registration token for lasting node credentials.
//!
//! `POST {server}/agent/v1/register` with a [`RegisterRequest`]; 200 carries a
//! [`RegisterResponse`]. 401, 403 and 410 mean the token is no good and retrying cannot help;
//! network errors and 5xx answers are worth retrying (see [`crate::run`]).

use std::time::Duration;

use shared::wire::{Hello, RegisterRequest, RegisterResponse, HDR_SIGNATURE, HELLO_PATH, REGISTER_PATH};

/// The server refused the token.
#[derive(Debug, thiserror::Error)]
#[error("registration refused: token invalid, expired or already used (HTTP {status})")]
pub struct Refused {
    pub status: u16,
}

/// The server no longer accepts this node's credentials: an administrator removed it.
#[derive(Debug, thiserror::Error)]
#[error("node credentials revoked: this node was removed on the server (HTTP {status}); enrol the machine again with a new token")]
pub struct Revoked {
    pub status: u16,
}

/// Checks in with the server: `Ok(())` while the credentials are good, `Err(Revoked)` once the
/// node was removed. Network trouble is not revocation: it is logged and counts as good.
pub async fn check_in(client: &reqwest::Client, server: &str, node_id: &str, node_key: &str) -> Result<(), Revoked> {
    let hello = Hello { node_id: node_id.to_string(), sent_at_ms: crate::run::now_ms() };
    let Ok(body) = serde_json::to_vec(&hello) else { return Ok(()) };
    let url = format!("{}{}", server.trim_end_matches('/'), HELLO_PATH);
    let resp = client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(HDR_SIGNATURE, shared::wire::sign(node_key, &body))
        .body(body)
        .send()
        .await;
    match resp {
        Ok(r) if r.status() == reqwest::StatusCode::FORBIDDEN || r.status() == reqwest::StatusCode::UNAUTHORIZED => {
            Err(Revoked { status: r.status().as_u16() })
        }
        Ok(r) if !r.status().is_success() => {
            tracing::warn!(status = r.status().as_u16(), "check-in answered with an error");
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "check-in failed; will try again");
            Ok(())
        }
    }
}

/// Why a registration attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The token is no good (401/403/410); do not retry.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// Any other 4xx, or a 200 whose body is not a registration answer; retrying will not help.
    #[error("registration failed: {0}")]
    Rejected(String),
    /// The server could not be reached or had a problem (5xx); worth retrying.
    #[error("registration attempt failed: {0}")]
    Transient(String),
}

impl RegisterError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

/// The HTTP client the agent talks to the server with.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(concat!("node-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()
}

/// `{server}/agent/v1/register`, whether or not `server` ends with a slash.
pub fn register_url(server: &str) -> String {
    format!("{}{}", server.trim_end_matches('/'), REGISTER_PATH)
}

/// One registration attempt.
pub async fn register(client: &reqwest::Client, server: &str, request: &RegisterRequest) -> Result<RegisterResponse, RegisterError> {
    let url = register_url(server);
    let resp =
        client.post(&url).json(request).send().await.map_err(|e| RegisterError::Transient(format!("POST {url}: {}", error_chain(&e))))?;
    let status = resp.status();
    match status.as_u16() {
        200..=299 => {
            let body = resp.bytes().await.map_err(|e| RegisterError::Transient(format!("reading answer: {}", error_chain(&e))))?;
            serde_json::from_slice::<RegisterResponse>(&body)
                .map_err(|e| RegisterError::Rejected(format!("server answered {status} with an unexpected body: {e}")))
        }
        401 | 403 | 410 => Err(Refused { status: status.as_u16() }.into()),
        code if status.is_server_error() || code == 408 || code == 429 => {
            Err(RegisterError::Transient(format!("server answered {status}")))
        }
        _ => {
            let body = resp.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            Err(RegisterError::Rejected(format!("server answered {status}: {}", body.trim())))
        }
    }
}

/// reqwest's Display hides the cause ("error sending request"); add it.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_joins_cleanly() {
        assert_eq!(register_url("http://s:3000"), "http://s:3000/agent/v1/register");
        assert_eq!(register_url("http://s:3000/"), "http://s:3000/agent/v1/register");
    }

    #[test]
    fn refusal_message_is_one_clear_line() {
        let msg = RegisterError::from(Refused { status: 401 }).to_string();
        assert_eq!(msg, "registration refused: token invalid, expired or already used (HTTP 401)");
    }
}
