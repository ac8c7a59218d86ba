//! The server's configuration: command-line flags, each with an environment-variable fallback.
//! `server --help` is the reference; `.env.example` lists the same variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "server", version, about = "AI on the Edge: the web app, API and scheduler")]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the web app and API (the default).
    Serve,
    /// Manage administrator accounts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage personal API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print who holds the lease (and its term) and the replicas on this database.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Mint an API token for an existing account and print it (shown once), for automation.
    Create {
        /// The account's email address.
        #[arg(long)]
        email: String,
        /// A name that tells this token apart under the account's Settings.
        #[arg(long, default_value = "cli")]
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// Add a node for an owner and print its one-time registration token and command.
    Add {
        /// The owner's email address (an existing account).
        #[arg(long)]
        owner: String,
        /// The node's name, unique among the owner's nodes.
        #[arg(long)]
        name: String,
        /// Run everyone's jobs on it, not only its owner's (nodes are private by default).
        #[arg(long)]
        share_with_everyone: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Create an admin account, or make an existing account an admin with a new password.
    Create {
        /// The admin's email address.
        #[arg(long)]
        email: String,
        /// Read the password from standard input instead of prompting for it.
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "AIEDGE_BIND", default_value = "127.0.0.1:3000", global = true)]
    pub bind: SocketAddr,

    /// Directory for the SQLite database and artifacts; created on first run.
    #[arg(long, env = "AIEDGE_DATA_DIR", default_value = "./data", global = true)]
    pub data_dir: PathBuf,

    /// Database URL: `sqlite://PATH` or `postgres://USER@HOST/DB`. Default: SQLite in the data directory.
    #[arg(long, env = "AIEDGE_DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    /// RabbitMQ URL.
    #[arg(long, env = "AIEDGE_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f", global = true, hide_env_values = true)]
    pub amqp_url: String,

    /// The URL people and agents reach this server at. `https://` turns on Secure cookies.
    #[arg(long, env = "AIEDGE_PUBLIC_URL", global = true)]
    pub public_url: Option<String>,

    /// Directory holding the built site (`pkg/` with the WASM, CSS and JS).
    #[arg(long, env = "LEPTOS_SITE_ROOT", default_value = "target/site", global = true)]
    pub site_root: String,

    /// Take the client address from `X-Forwarded-For`: its last entry, the one the proxy in front
    /// of the server appended (only behind one reverse proxy you trust).
    #[arg(long, env = "AIEDGE_TRUST_FORWARDED_FOR", global = true)]
    pub trust_forwarded_for: bool,

    /// Login attempts allowed per client address per minute.
    #[arg(long, env = "AIEDGE_LOGIN_PER_IP_PER_MIN", default_value_t = 20, global = true)]
    pub login_per_ip_per_min: u32,

    /// Login attempts allowed per account from one client address per minute (ten times as many
    /// per account from all addresses together, except from addresses it signed in from).
    #[arg(long, env = "AIEDGE_LOGIN_PER_ACCOUNT_PER_MIN", default_value_t = 5, global = true)]
    pub login_per_account_per_min: u32,

    /// Registrations allowed per client address per minute.
    #[arg(long, env = "AIEDGE_REGISTER_PER_IP_PER_MIN", default_value_t = 10, global = true)]
    pub register_per_ip_per_min: u32,

    /// Heartbeats of a node stop for this long: it is dead.
    #[arg(long, env = "AIEDGE_HEARTBEAT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration, global = true)]
    pub heartbeat_timeout: Duration,

    /// The heartbeat interval agents are told to use.
    #[arg(long, env = "AIEDGE_HEARTBEAT_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration, global = true)]
    pub heartbeat_interval: Duration,

    /// At or above this CPU temperature (°C) a node scores 0.
    #[arg(long, env = "AIEDGE_CRITICAL_TEMP", default_value_t = 90.0, global = true)]
    pub critical_temp: f64,

    /// From this temperature (°C) a node's score is derated linearly, down to 0 at the critical one.
    #[arg(long, env = "AIEDGE_WARN_TEMP", default_value_t = 80.0, global = true)]
    pub warn_temp: f64,

    /// Attempts a job gets: an attempt lost with its node, or failed for a reason another node
    /// may not have, sends the job to another node until this many were made.
    #[arg(long, env = "AIEDGE_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100), global = true)]
    pub max_attempts: u32,

    /// A job sent to a live node that has not started it after this long goes to another node.
    #[arg(long, env = "AIEDGE_START_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration, global = true)]
    pub start_timeout: Duration,

    /// Finished jobs (their timelines, attempts, results, logs and uploaded inputs) are deleted
    /// this many days after they ended; 0 keeps them forever.
    #[arg(long, env = "AIEDGE_RETENTION_DAYS", default_value_t = 30, global = true)]
    pub retention_days: u32,

    /// What node job queues are declared as: `classic`, or `quorum` (Raft-replicated, for a
    /// RabbitMQ cluster; RabbitMQ 3.8 or later). Applies to queues declared from then on: an
    /// existing queue of the other type is used as it is until deleted.
    #[arg(long, env = "AIEDGE_AMQP_JOB_QUEUES", value_enum, default_value_t = crate::broker::QueueType::Classic, global = true)]
    pub amqp_job_queues: crate::broker::QueueType,

    /// Prefix of every exchange and queue name, so deployments (or tests) can share a broker.
    #[arg(long, env = "AIEDGE_AMQP_NAMESPACE", default_value = "aiedge", global = true)]
    pub amqp_namespace: String,

    /// RabbitMQ's management API, with an administrator's credentials, through which each node
    /// gets a broker user of its own (default: the broker URL's host, port 15672, and its
    /// credentials). The `rabbitmq_management` plugin must be enabled.
    #[arg(long, env = "AIEDGE_AMQP_MANAGEMENT_URL", global = true, hide_env_values = true)]
    pub amqp_management_url: Option<String>,

    /// Broker URL handed to agents at registration, without credentials: each node gets its own
    /// (default: the server's broker URL).
    #[arg(long, env = "AIEDGE_AGENT_AMQP_URL", global = true, hide_env_values = true)]
    pub agent_amqp_url: Option<String>,

    /// File holding the secret node keys are derived from; created (mode 0600) if missing.
    /// Default: `server-secret` in the data directory.
    #[arg(long, env = "AIEDGE_SECRET_FILE", global = true)]
    pub secret_file: Option<PathBuf>,

    /// Directory of the agent binaries to hand out (`node-agent-<target>` files, as
    /// `scripts/build-agents.sh` writes them), with `/install.sh` and `/agent/v1/download`.
    #[arg(long, env = "AIEDGE_AGENTS_DIR", default_value = "dist/agents", global = true)]
    pub agents_dir: PathBuf,

    /// Largest upload accepted (models, bundles, input CSVs, results), in MiB.
    #[arg(long, env = "AIEDGE_MAX_UPLOAD_MB", default_value_t = 512, global = true)]
    pub max_upload_mb: u64,

    /// Memory an uploaded model may take to load, in MiB: each upload is loaded in a child
    /// process with this much address space, and a model that needs more is refused.
    #[arg(long, env = "AIEDGE_MODEL_CHECK_MEMORY_MB", default_value_t = 1024, global = true)]
    pub model_check_memory_mb: u64,

    /// Time an uploaded model may take to load in its checker; a slower one is refused.
    #[arg(long, env = "AIEDGE_MODEL_CHECK_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration, global = true)]
    pub model_check_timeout: Duration,

    /// Model checks run at once; further uploads wait for a turn (up to the check timeout).
    #[arg(long, env = "AIEDGE_MODEL_CHECKS_AT_ONCE", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64), global = true)]
    pub model_checks_at_once: u32,

    /// The binary whose hidden `__check-model` subcommand checks uploaded models (default: this
    /// server binary itself).
    #[arg(long, env = "AIEDGE_MODEL_CHECKER", global = true, hide = true)]
    pub model_checker: Option<PathBuf>,

    /// Serve Prometheus metrics at `/metrics` on a listener of its own (e.g. 127.0.0.1:9464, or
    /// a private interface), without authentication.
    #[arg(long, env = "AIEDGE_METRICS_BIND", global = true)]
    pub metrics_bind: Option<SocketAddr>,

    /// Serve Prometheus metrics at `/metrics` on the public port, to requests that carry
    /// `Authorization: Bearer <this token>`.
    #[arg(long, env = "AIEDGE_METRICS_TOKEN", global = true, hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Largest job log kept, in KiB; agents cut logs to this size.
    #[arg(long, env = "AIEDGE_MAX_LOG_KB", default_value_t = 1024, global = true)]
    pub max_log_kb: u64,

    /// Log format.
    #[arg(long, env = "AIEDGE_LOG_FORMAT", value_enum, default_value = "text", global = true)]
    pub log_format: LogFormat,
}

impl Config {
    /// The database URL in force: the given one, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("aiedge.db").display()),
        }
    }

    pub fn public_url(&self) -> String {
        self.public_url.clone().unwrap_or_else(|| format!("http://{}", self.bind))
    }

    pub fn secret_file(&self) -> PathBuf {
        self.secret_file.clone().unwrap_or_else(|| self.data_dir.join("server-secret"))
    }

    pub fn secure_cookies(&self) -> bool {
        self.public_url().starts_with("https://")
    }

    /// Checks what can be checked without connecting: URL shapes and the data directory.
    pub fn validate(&self) -> anyhow::Result<()> {
        let db = self.database_url();
        if aiedge_store::db::Backend::from_url(&db).is_none() {
            bail!("bad database URL {:?}: use sqlite://PATH or postgres://USER@HOST/DB", redact(&db));
        }
        let amqp = url::Url::parse(&self.amqp_url).with_context(|| format!("bad AMQP URL {:?}", redact(&self.amqp_url)))?;
        if amqp.scheme() != "amqp" && amqp.scheme() != "amqps" {
            bail!("bad AMQP URL {:?}: use amqp://USER:PASSWORD@HOST:PORT/VHOST", redact(&self.amqp_url));
        }
        if let Some(public) = &self.public_url {
            let url = url::Url::parse(public).with_context(|| format!("bad public URL {public:?}"))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                bail!("bad public URL {public:?}: use http:// or https://");
            }
        }
        ensure_writable(&self.data_dir)
    }
}

/// Creates the data directory if needed and proves it writable.
fn ensure_writable(dir: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data directory {}", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"ok").with_context(|| format!("data directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// Hides the password in a URL for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["server"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().config
    }

    #[test]
    fn defaults_to_sqlite_in_the_data_dir() {
        let c = parse(&["--data-dir", "/tmp/x"]);
        assert_eq!(c.database_url(), "sqlite:///tmp/x/aiedge.db");
        assert!(!c.secure_cookies());
    }

    #[test]
    fn https_public_url_means_secure_cookies() {
        assert!(parse(&["--public-url", "https://edge.example.org"]).secure_cookies());
    }

    #[test]
    fn bad_urls_are_refused_before_connecting() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        assert!(parse(&["--data-dir", d, "--database-url", "mysql://x"]).validate().is_err());
        assert!(parse(&["--data-dir", d, "--amqp-url", "http://x"]).validate().is_err());
        assert!(parse(&["--data-dir", d, "--amqp-url", "not a url"]).validate().is_err());
        assert!(parse(&["--data-dir", d]).validate().is_ok());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("amqp://guest:secret@host:5672/%2f"), "amqp://guest:***@host:5672/%2f");
    }
}
