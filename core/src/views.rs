//! Accounts, applications, jobs and nodes as the pages and the JSON API show them. None holds
//! a secret (password hash, token hash, artifact key), so each is safe to send to a browser.

use serde::{Deserialize, Serialize};
use shared::jobs::Decision;
use shared::score::Score;
use shared::wire::{NodeFacts, NodeMetrics};

use crate::states::{AdminState, AttemptOutcome, JobStatus, NodeStatus, Pool, Role, Sharing};

/// What the pages may know of a user. Deliberately holds no password hash or token, so it is
/// safe to serialize to the browser.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at_ms: i64,
    /// An admin disabled the account: it cannot sign in, its tokens are refused and its jobs
    /// wait.
    #[serde(default)]
    pub disabled: bool,
}

impl UserView {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// One tensor of an ONNX model, for display: `input: f32 [N, 4]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TensorLine {
    pub name: String,
    pub dtype: String,
    pub shape: String,
}

/// What an application is, as checked at upload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AppDetails {
    Onnx {
        inputs: Vec<TensorLine>,
        outputs: Vec<TensorLine>,
        /// Columns an input CSV must have.
        features: u64,
        /// Header of the predictions CSV.
        columns: Vec<String>,
    },
    Script {
        entry: String,
        runtime: String,
        output: String,
        time_limit_secs: u64,
        memory_mb: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AppView {
    pub id: String,
    pub name: String,
    /// onnx or script.
    pub kind: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub details: AppDetails,
    /// Rows of the default input CSV, if the application has one.
    pub default_input_rows: Option<u64>,
    pub created_at_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    pub id: String,
    pub app_id: String,
    pub app_name: String,
    pub app_kind: String,
    pub owner_email: String,
    pub status: JobStatus,
    pub input_name: String,
    pub input_rows: Option<u64>,
    pub node_id: Option<String>,
    /// The node's name when it is the job owner's own, else "a shared node".
    pub node_name: Option<String>,
    /// The nodes it may run on.
    #[serde(default = "shared_pool")]
    pub pool: Pool,
    pub attempt: u32,
    /// Attempts the job gets before it fails for good.
    pub max_attempts: u32,
    pub error: Option<String>,
    pub result_rows: Option<u64>,
    pub progress_rows: Option<u64>,
    pub has_result: bool,
    pub has_log: bool,
    pub created_at_ms: i64,
    pub dispatched_at_ms: Option<i64>,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// For a queued job no node takes now: why, counted over the nodes of its pool, e.g.
    /// "3 nodes: no python3 on the node; 1 node: no free slot". Only on a single job's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

impl JobView {
    /// True once the job can no longer change.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

/// One step of a job's timeline.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobEventView {
    pub at_ms: i64,
    pub status: JobStatus,
    pub attempt: u32,
    pub node_id: Option<String>,
    pub message: String,
}

/// One dispatch of a job to a node, and how it ended.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptView {
    pub attempt: u32,
    pub node_id: Option<String>,
    pub node_name: String,
    pub dispatched_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub outcome: AttemptOutcome,
    /// Why it ended, when it did not succeed.
    pub reason: Option<String>,
}

/// Everything the job page shows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobDetail {
    pub job: JobView,
    pub events: Vec<JobEventView>,
    /// Every attempt, first first.
    #[serde(default)]
    pub attempts: Vec<AttemptView>,
    pub decision: Option<Decision>,
    /// The last few KiB of the log, when there is one.
    pub log_tail: Option<String>,
    /// When retention deletes the finished job and its result (`None`: kept for good, or not
    /// finished yet).
    #[serde(default)]
    pub kept_until_ms: Option<i64>,
}

impl JobDetail {
    /// Sets [`JobDetail::kept_until_ms`] for a server that deletes finished jobs
    /// `retention_days` after they ended (0: never).
    pub fn with_retention(mut self, retention_days: u32) -> Self {
        self.kept_until_ms = match (retention_days, self.job.finished_at_ms) {
            (0, _) | (_, None) => None,
            (days, Some(end)) => Some(end.saturating_add(i64::from(days) * 24 * 3600 * 1000)),
        };
        self
    }
}

/// A personal API token as listed (the secret itself is shown once, at creation).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// The first characters of the token, to tell tokens apart.
    pub prefix: String,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
    /// Past this the token is refused; `None`: it lasts until revoked.
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
}

/// A token just created: the only time its secret is shown.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewToken {
    pub token: TokenView,
    pub secret: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    pub owner_email: String,
    pub status: NodeStatus,
    pub admin_state: AdminState,
    /// Whose jobs it runs besides its owner's.
    #[serde(default = "private")]
    pub sharing: Sharing,
    pub facts: Option<NodeFacts>,
    pub metrics: Option<NodeMetrics>,
    pub score: Option<Score>,
    pub last_heartbeat_ms: Option<i64>,
    pub created_at_ms: i64,
    /// Job attempts that failed or were lost on this node in the last 24 hours.
    #[serde(default)]
    pub recent_failures: u32,
}

fn shared_pool() -> Pool {
    Pool::Shared
}

fn private() -> Sharing {
    Sharing::Private
}

impl NodeView {
    /// The agent version the node reported, when it is older than `current` (the version the
    /// server hands out): the admin view flags those nodes for an upgrade.
    pub fn outdated_agent(&self, current: &str) -> Option<&str> {
        let reported = self.facts.as_ref()?.agent_version.as_str();
        older_version(reported, current).then_some(reported)
    }

    /// The word a badge shows: the admin's decision when it is not "enabled", else the status.
    pub fn badge(&self) -> &'static str {
        if self.admin_state == AdminState::Enabled {
            self.status.as_str()
        } else {
            self.admin_state.as_str()
        }
    }
}

/// A freshly added node with its one-time token: the only time the token is ever shown.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NewNode {
    pub node: NodeView,
    pub token: String,
    pub expires_at_ms: i64,
    /// The one line to paste on the machine: download, verify, install as a service, enrol.
    pub install: String,
    /// The agent's own command, for a machine that already has the binary.
    pub command: String,
}

impl NewNode {
    /// The node with its install line and agent command for `public_url` (where the machine
    /// reaches the server). The name is quoted for a POSIX shell.
    pub fn new(node: NodeView, token: String, expires_at_ms: i64, public_url: &str) -> Self {
        let server = public_url.trim_end_matches('/');
        let name = shell_quote(&node.name);
        let install = format!("curl -fsSL {server}/install.sh | sudo sh -s -- --token {token} --name {name}");
        let command = format!("node-agent run --server {server} --token {token} --name {name}");
        Self { node, token, expires_at_ms, install, command }
    }
}

/// Whether dotted version `a` (e.g. `0.1.0`, any pre-release suffix ignored) is older than
/// `b`; a version that does not parse is not called older.
pub fn older_version(a: &str, b: &str) -> bool {
    fn parts(v: &str) -> Option<Vec<u64>> {
        let core = v.trim().trim_start_matches('v').split(['-', '+']).next()?;
        core.split('.').map(|p| p.parse().ok()).collect()
    }
    match (parts(a), parts(b)) {
        (Some(a), Some(b)) => a < b,
        _ => false,
    }
}

/// `text` as one word for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// One recorded change of a node's status.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeEvent {
    pub at_ms: i64,
    pub from_status: NodeStatus,
    pub to_status: NodeStatus,
    /// Why, e.g. "no heartbeat for 10 s" or "heartbeats resumed".
    pub reason: String,
}

/// One point of a node's history.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    pub at_ms: i64,
    pub free_cpu_pct: f64,
    pub free_mem_pct: f64,
    pub temperature_c: Option<f64>,
    pub score: f64,
}

/// How many points a live chart keeps (about five minutes at one a second).
pub const HISTORY_POINTS: usize = 300;

/// A node's page: the node, its history over `window_ms`, and its newest transitions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NodeDetail {
    pub node: NodeView,
    /// The viewer owns the node (otherwise an admin is looking).
    pub mine: bool,
    /// The e-mail addresses of the users it is shared with by name.
    #[serde(default)]
    pub shared_with: Vec<String>,
    /// Newest first, at most the latest 50.
    pub events: Vec<NodeEvent>,
    /// How many transitions were recorded in all.
    pub events_total: u64,
    /// Averages over equal spans of the window, oldest first.
    pub history: Vec<Sample>,
    pub window_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(older_version("0.1.0", "0.2.0"));
        assert!(older_version("0.9.9", "0.10.0"), "numbers, not text");
        assert!(older_version("1.2", "1.2.1"));
        assert!(older_version("0.1.0-rc.1", "0.1.1"));
        assert!(!older_version("0.1.0", "0.1.0"));
        assert!(!older_version("0.2.0", "0.1.9"));
        assert!(!older_version("matrix", "0.1.0"), "an unparseable version is not called older");
        assert!(!older_version("0.1.0", "dev"));
    }

    #[test]
    fn install_line_quotes_the_name_for_the_shell() {
        assert_eq!(shell_quote("lab pc"), "'lab pc'");
        assert_eq!(shell_quote("it's; rm -rf /"), r"'it'\''s; rm -rf /'");
    }
}
