//! The state file: the node's lasting credentials, so a restart needs no token.
//!
//! It holds the node key (and usually a broker password), so it is created with mode 0600, in a
//! directory created with mode 0700, and replaced atomically (temp file, fsync, rename) so a
//! crash mid-write never leaves a half file behind.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use shared::wire::RegisterResponse;

/// File name of the state file inside the work directory.
pub const STATE_FILE_NAME: &str = "node-agent-state.json";

/// What the agent remembers between runs. Not `Debug`-printed in full: it holds the node key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub node_id: String,
    pub node_key: String,
    pub amqp_url: String,
    pub heartbeat_exchange: String,
    /// Server the node registered with.
    pub server: String,
    /// Interval the server asked for at registration, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
    /// The node's job queue; empty when the server predates jobs (then no jobs are taken).
    #[serde(default)]
    pub jobs_queue: String,
}

impl std::fmt::Debug for AgentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentState")
            .field("node_id", &self.node_id)
            .field("node_key", &"<redacted>")
            .field("amqp_url", &redact_url(&self.amqp_url))
            .field("heartbeat_exchange", &self.heartbeat_exchange)
            .field("server", &self.server)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("jobs_queue", &self.jobs_queue)
            .finish()
    }
}

impl AgentState {
    /// The state to keep after a successful registration with `server`.
    pub fn from_registration(server: &str, resp: RegisterResponse) -> Self {
        Self {
            node_id: resp.node_id,
            node_key: resp.node_key,
            amqp_url: resp.amqp_url,
            heartbeat_exchange: if resp.heartbeat_exchange.is_empty() {
                shared::wire::HEARTBEAT_EXCHANGE.to_string()
            } else {
                resp.heartbeat_exchange
            },
            server: server.to_string(),
            heartbeat_interval_ms: (resp.heartbeat_interval_ms > 0).then_some(resp.heartbeat_interval_ms),
            jobs_queue: resp.jobs_queue,
        }
    }
}

/// Reads the state file; `Ok(None)` when there is none yet.
pub fn load(path: &Path) -> anyhow::Result<Option<AgentState>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("reading state file {}", path.display())),
    };
    let state: AgentState = serde_json::from_slice(&bytes)
        .with_context(|| format!("state file {} is not valid; remove it to register again", path.display()))?;
    tighten_permissions(path);
    Ok(Some(state))
}

/// A state file readable by others leaks the node key; say so and fix it.
fn tighten_permissions(path: &Path) {
    let Ok(meta) = fs::metadata(path) else { return };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "state file was readable by others; setting mode 0600");
        if let Err(err) = fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), error = %err, "could not tighten state file mode");
        }
    }
}

/// Writes the state file atomically with mode 0600, creating its directory (0700) if needed.
pub fn save(path: &Path, state: &AgentState) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)?;
    let file_name = path.file_name().with_context(|| format!("state file path {} has no file name", path.display()))?;
    let tmp = dir.join(format!(".{}.tmp-{}", file_name.to_string_lossy(), std::process::id()));
    // A leftover from a crash may have other permissions; `mode` only applies on creation.
    let _ = fs::remove_file(&tmp);

    let body = serde_json::to_vec_pretty(state)?;
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        file.write_all(&body)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        fs::File::open(&dir)?.sync_all()
    };
    write()
        .inspect_err(|_| {
            let _ = fs::remove_file(&tmp);
        })
        .with_context(|| format!("writing state file {}", path.display()))
}

/// Creates `dir` and its parents with mode 0700 (existing directories are left as they are).
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("creating directory {}", dir.display()))
}

/// `amqp://user:secret@host/vhost` -> `amqp://user:***@host/vhost`, for logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &userinfo[..colon], &rest[at..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> AgentState {
        AgentState {
            node_id: "n-1".into(),
            node_key: "very-secret".into(),
            amqp_url: "amqp://agent:pw@broker:5672/%2f".into(),
            heartbeat_exchange: "aiedge.heartbeats".into(),
            server: "https://edge.example".into(),
            heartbeat_interval_ms: Some(2000),
            jobs_queue: "aiedge.node.n-1".into(),
        }
    }

    #[test]
    fn save_then_load_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir").join(STATE_FILE_NAME);
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &state()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(state()));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        // No temp file is left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn overwrite_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE_NAME);
        save(&path, &state()).unwrap();
        let other = AgentState { node_id: "n-2".into(), heartbeat_interval_ms: None, ..state() };
        save(&path, &other).unwrap();
        assert_eq!(load(&path).unwrap(), Some(other));
    }

    #[test]
    fn loose_permissions_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE_NAME);
        save(&path, &state()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        load(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn corrupt_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE_NAME);
        fs::write(&path, "{not json").unwrap();
        let err = load(&path).unwrap_err();
        assert!(format!("{err:#}").contains("not valid"), "{err:#}");
    }

    #[test]
    fn debug_hides_secrets() {
        let dbg = format!("{:?}", state());
        assert!(!dbg.contains("very-secret") && !dbg.contains(":pw@"), "{dbg}");
    }

    #[test]
    fn redacts_urls() {
        assert_eq!(redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact_url("amqps://u:p@h"), "amqps://u:***@h");
        assert_eq!(redact_url("amqp://u@h/v"), "amqp://u@h/v");
        assert_eq!(redact_url("amqp://h/v@x"), "amqp://h/v@x");
        assert_eq!(redact_url("not a url"), "not a url");
    }
}
