//! The command line. Every option can also come from an `AIEDGE_*` environment variable, which
//! keeps the token out of `ps` listings.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The AI on the Edge node agent: lends this machine to the platform.
#[derive(Debug, Parser)]
#[command(name = "node-agent", version, about, long_about = None)]
pub struct Cli {
    /// Log line format on stderr.
    #[arg(long, env = "AIEDGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

// Parsed once per process: the size of the largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Measure this machine once and print its facts, metrics and score as JSON.
    Probe(ProbeArgs),
    /// Register (first time only) and send heartbeats until stopped.
    Run(RunArgs),
    /// Register this machine with a one-time token and save its credentials, then exit: what
    /// the installer does before it starts the service. A machine already enrolled keeps its
    /// identity (the token is not used).
    Enrol(EnrolArgs),
    /// Run an ONNX model on a CSV here, exactly as a job would, and write the predictions CSV:
    /// check a model on this machine before uploading it.
    Predict(PredictArgs),
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model file (.onnx).
    #[arg(long, env = "AIEDGE_PREDICT_MODEL")]
    pub model: PathBuf,

    /// The input CSV: a header row, then one row of features per example.
    #[arg(long, env = "AIEDGE_PREDICT_INPUT")]
    pub input: PathBuf,

    /// Where to write the predictions CSV; `-` for standard output.
    #[arg(long, env = "AIEDGE_PREDICT_OUTPUT", default_value = "-")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Temperature (°C) from which the score is derated linearly.
    #[arg(long, env = "AIEDGE_WARN_TEMP", default_value_t = 80.0, allow_negative_numbers = true)]
    pub warn_temp: f64,

    /// Temperature (°C) at or above which the score is 0.
    #[arg(long, env = "AIEDGE_CRITICAL_TEMP", default_value_t = 90.0, allow_negative_numbers = true)]
    pub critical_temp: f64,
}

/// Options of `node-agent enrol`. `Debug` is written by hand: the token is a secret.
#[derive(Args)]
pub struct EnrolArgs {
    /// Base URL of the AI on the Edge server, e.g. `https://edge.example.com`.
    #[arg(long, env = "AIEDGE_SERVER")]
    pub server: String,

    /// One-time registration token from the web app's "Add node".
    #[arg(long, env = "AIEDGE_TOKEN", hide_env_values = true)]
    pub token: String,

    /// Name for this node shown in the web app (the server may default it to the hostname).
    #[arg(long, env = "AIEDGE_NODE_NAME")]
    pub name: Option<String>,

    #[command(flatten)]
    pub files: NodeFiles,
}

/// Where a node keeps its credentials and job files: `run` and `enrol` share them.
#[derive(Debug, Clone, Args)]
pub struct NodeFiles {
    /// Private file (mode 0600) keeping the node's credentials [default: WORK_DIR/node-agent-state.json].
    #[arg(long, env = "AIEDGE_STATE_FILE")]
    pub state_file: Option<PathBuf>,

    /// Directory the agent keeps its state and job files in (created with mode 0700).
    #[arg(long, env = "AIEDGE_WORK_DIR", default_value = "agent-work")]
    pub work_dir: PathBuf,
}

impl NodeFiles {
    /// Creates the work directory (mode 0700) and names the state file.
    pub fn prepare(&self) -> anyhow::Result<PathBuf> {
        crate::state::create_private_dir(&self.work_dir)?;
        Ok(self.state_file.clone().unwrap_or_else(|| self.work_dir.join(crate::state::STATE_FILE_NAME)))
    }
}

impl std::fmt::Debug for EnrolArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolArgs")
            .field("server", &self.server)
            .field("token", &"<redacted>")
            .field("name", &self.name)
            .field("files", &self.files)
            .finish()
    }
}

/// Options of `node-agent run`. `Debug` is written by hand: the token and the broker URL are secrets.
#[derive(Args)]
pub struct RunArgs {
    /// Base URL of the AI on the Edge server, e.g. `https://edge.example.com` (taken from the state
    /// file when omitted).
    #[arg(long, env = "AIEDGE_SERVER")]
    pub server: Option<String>,

    /// One-time registration token from the web app's "Add node"; only needed until the state
    /// file exists.
    #[arg(long, env = "AIEDGE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Name for this node shown in the web app (the server may default it to the hostname).
    #[arg(long, env = "AIEDGE_NODE_NAME")]
    pub name: Option<String>,

    #[command(flatten)]
    pub files: NodeFiles,

    /// Jobs this node runs at the same time.
    #[arg(long, env = "AIEDGE_MAX_JOBS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_jobs: u32,

    /// Jobs this node takes beyond --max-jobs, to start the moment a slot frees instead of
    /// waiting for the server's next dispatch: for many small jobs (0, the default: only as
    /// many as it runs). The server sends them only while this node's jobs come and go within
    /// a second, and a job that finds no slot within 3 s goes back to the server's queue.
    #[arg(long, env = "AIEDGE_QUEUE_AHEAD", default_value_t = 0)]
    pub queue_ahead: u32,

    /// Time between heartbeats, e.g. "2s" or "500ms" [default: what the server asked for at
    /// registration, else 2s].
    #[arg(long, env = "AIEDGE_HEARTBEAT_INTERVAL", value_parser = parse_heartbeat_interval)]
    pub heartbeat_interval: Option<Duration>,

    /// Time between CPU benchmarks while idle, e.g. "5m". Each takes a core for a second: every
    /// 30 minutes that is 0.06 % of a core on average (every 5 minutes, 0.3 %); temperature,
    /// which is what throttles a board, is read at every heartbeat anyway.
    #[arg(long, env = "AIEDGE_BENCHMARK_INTERVAL", default_value = "30m", value_parser = parse_benchmark_interval)]
    pub benchmark_interval: Duration,

    /// On SIGTERM or Ctrl-C, how long running jobs may go on before they are handed back to
    /// the server (which sends them to another node), e.g. "30s". A second signal stops at once.
    #[arg(long, env = "AIEDGE_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Refuse script jobs on this node (ONNX models still run): the server sends it none.
    #[arg(long, env = "AIEDGE_NO_SCRIPTS")]
    pub no_scripts: bool,

    /// Let script jobs reach the network (the LAN, the internet, this machine's services).
    /// Without it each script runs in a network namespace of its own, with no interface up.
    #[arg(long, env = "AIEDGE_SCRIPT_NETWORK")]
    pub script_network: bool,

    /// Run script jobs even where the kernel has no Landlock, so nothing confines what files a
    /// script can read beyond its uid. Without it such a node refuses script jobs.
    #[arg(long, env = "AIEDGE_ALLOW_SCRIPTS_WITHOUT_LANDLOCK")]
    pub allow_scripts_without_landlock: bool,

    /// Most memory any script job gets, in MiB, whatever its manifest asks.
    #[arg(long, env = "AIEDGE_SCRIPT_MAX_MEMORY_MB", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(16..))]
    pub script_max_memory_mb: u64,

    /// Longest any script job runs, e.g. "15m", whatever its manifest asks.
    #[arg(long, env = "AIEDGE_SCRIPT_MAX_TIME", default_value = "1h", value_parser = humantime::parse_duration)]
    pub script_max_time: Duration,

    /// Most disk a script job's work directory may fill, in MiB (also the largest file it may
    /// write), whatever its manifest asks.
    #[arg(long, env = "AIEDGE_SCRIPT_MAX_DISK_MB", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub script_max_disk_mb: u64,

    /// Report this CPU benchmark result (events/s) instead of measuring it: pins the node's
    /// performance factor, for tests and for ranking nodes by hand.
    #[arg(long, env = "AIEDGE_FIXED_EVENTS_PER_SEC", hide = true)]
    pub fixed_events_per_sec: Option<f64>,

    /// RabbitMQ URL to use instead of the one the server handed out at registration.
    #[arg(long, env = "AIEDGE_AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,

    /// Serve this agent's Prometheus metrics (heartbeats, jobs by outcome, job and model-load
    /// times) at `/metrics` on this address, e.g. 127.0.0.1:9187, without authentication: keep
    /// it on loopback or a private interface. Off (nothing listens) when absent.
    #[arg(long, env = "AIEDGE_METRICS_BIND")]
    pub metrics_bind: Option<std::net::SocketAddr>,
}

impl RunArgs {
    /// What this node's owner allows any script.
    pub fn script_caps(&self) -> runner::sandbox::OwnerCaps {
        runner::sandbox::OwnerCaps {
            memory_bytes: self.script_max_memory_mb.saturating_mul(1 << 20),
            time_limit: self.script_max_time,
            disk_bytes: self.script_max_disk_mb.saturating_mul(1 << 20),
            network: self.script_network,
        }
    }
}

impl std::fmt::Debug for RunArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunArgs")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("name", &self.name)
            .field("files", &self.files)
            .field("max_jobs", &self.max_jobs)
            .field("queue_ahead", &self.queue_ahead)
            .field("no_scripts", &self.no_scripts)
            .field("script_network", &self.script_network)
            .field("allow_scripts_without_landlock", &self.allow_scripts_without_landlock)
            .field("script_max_memory_mb", &self.script_max_memory_mb)
            .field("script_max_time", &self.script_max_time)
            .field("script_max_disk_mb", &self.script_max_disk_mb)
            .field("drain_timeout", &self.drain_timeout)
            .field("fixed_events_per_sec", &self.fixed_events_per_sec)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("benchmark_interval", &self.benchmark_interval)
            .field("amqp_url", &self.amqp_url.as_deref().map(crate::state::redact_url))
            .field("metrics_bind", &self.metrics_bind)
            .finish()
    }
}

/// Shortest heartbeat interval: CPU usage is a difference between two samples and is noise
/// below about 100 ms.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

fn parse_heartbeat_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < MIN_HEARTBEAT_INTERVAL {
        return Err(format!("must be at least {}", humantime::format_duration(MIN_HEARTBEAT_INTERVAL)));
    }
    Ok(d)
}

fn parse_benchmark_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_secs(1) {
        return Err("must be at least 1s (one benchmark takes about a second)".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_option_is_documented_and_has_an_env_var() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            for arg in sub.get_arguments() {
                if matches!(arg.get_id().as_str(), "help" | "version") {
                    continue;
                }
                assert!(arg.get_help().is_some(), "{} --{} has no doc", sub.get_name(), arg.get_id());
                assert!(arg.get_env().is_some(), "{} --{} has no env var", sub.get_name(), arg.get_id());
            }
        }
    }

    #[test]
    fn intervals_accept_humantime() {
        assert_eq!(parse_heartbeat_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_heartbeat_interval("500ms"), Ok(Duration::from_millis(500)));
        assert!(parse_heartbeat_interval("10ms").is_err());
        assert!(parse_heartbeat_interval("soon").is_err());
        assert_eq!(parse_benchmark_interval("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_benchmark_interval("0s").is_err());
    }

    #[test]
    fn run_defaults() {
        let cli = Cli::try_parse_from(["node-agent", "run", "--server", "http://s", "--token", "t"]).unwrap();
        let Command::Run(args) = cli.command else { panic!("not run") };
        assert_eq!(args.max_jobs, 1);
        assert_eq!(args.queue_ahead, 0, "a prefetch of the free slots only");
        assert_eq!(args.files.work_dir, PathBuf::from("agent-work"));
        assert_eq!(args.benchmark_interval, Duration::from_secs(1800), "idle CPU under 0.1 % of a core");
        assert_eq!(args.heartbeat_interval, None);
        assert_eq!(args.metrics_bind, None, "metrics are off unless asked for");
        assert!(Cli::try_parse_from(["node-agent", "run", "--max-jobs", "0"]).is_err());
    }
}
