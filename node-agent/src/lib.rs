//! The AI on the Edge node agent: one small binary that runs beside the real work on an edge
//! machine.
//!
//! - [`cli`]: the command line (`probe`, `run`); `--help` is the reference.
//! - [`facts`]: what the machine is (hostname, OS, cores, memory, accelerators, runtimes).
//! - [`metrics`]: how the machine is doing (free CPU/memory, temperature), sampled with sysinfo.
//! - [`bench`](mod@bench): the `sysbench cpu`-style benchmark behind `events_per_sec`.
//! - [`state`]: the private state file holding the node's credentials.
//! - [`register`]: trading the one-time token for those credentials.
//! - [`heartbeat`]: the RabbitMQ link that publishes signed heartbeats.
//! - [`worker`]: takes jobs from the node's queue and runs them; [`api`]: its signed HTTP calls.
//! - [`run`]: the long-running loop tying these together, with reconnects and clean shutdown.
//! - [`telemetry`]: the agent's own Prometheus metrics at `/metrics`, with `--metrics-bind`.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod bench;
pub mod cli;
pub mod facts;
pub mod heartbeat;
pub mod logging;
pub mod metrics;
pub mod register;
pub mod run;
pub mod state;
pub mod telemetry;
pub mod worker;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Hidden first argument that turns the agent into the sandbox launcher of a script job.
pub const SANDBOX_SUBCOMMAND: &str = "__sandbox";

/// Exit code when the server refuses the registration token: restarting will not help, so a
/// service manager can be told not to (systemd `RestartPreventExitStatus=3`).
pub const EXIT_REGISTRATION_REFUSED: u8 = 3;

/// Runs one subcommand to completion.
pub async fn execute(command: cli::Command) -> anyhow::Result<()> {
    match command {
        cli::Command::Probe(args) => probe(args).await,
        cli::Command::Predict(args) => tokio::task::spawn_blocking(move || predict(&args)).await?,
        cli::Command::Enrol(args) => enrol(args).await,
        cli::Command::Run(args) => {
            let drain = CancellationToken::new();
            stop_on_signal(drain.clone())?;
            run::run(args, drain).await
        }
    }
}

/// The process exit code for an error returned by [`execute`].
pub fn exit_code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|cause| cause.downcast_ref::<register::Refused>().is_some() || cause.downcast_ref::<register::Revoked>().is_some()) {
        EXIT_REGISTRATION_REFUSED
    } else {
        1
    }
}

/// `node-agent predict`: the job's ONNX path on local files, with what the model takes and how
/// fast it ran on stderr.
fn predict(args: &cli::PredictArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let started = std::time::Instant::now();
    let model = runner::onnx::Model::load(&args.model).with_context(|| format!("model {}", args.model.display()))?;
    let info = model.info();
    let loaded_ms = started.elapsed().as_secs_f64() * 1000.0;
    eprintln!("model: {} features in, columns out: {}", info.features, info.output_columns.join(","));
    let input = std::fs::File::open(&args.input).with_context(|| format!("input {}", args.input.display()))?;
    let reader = std::io::BufReader::new(input);
    let started = std::time::Instant::now();
    let rows = if args.output.as_os_str() == "-" {
        let stdout = std::io::stdout().lock();
        let mut out = std::io::BufWriter::new(stdout);
        let rows = model.predict_csv(reader, &mut out, worker::BATCH_ROWS, &mut |_| {})?;
        out.flush()?;
        rows
    } else {
        // Written beside the target and renamed, so a failed run leaves no half file.
        let dir = args.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let mut part = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("writing in {}", dir.display()))?;
        let rows = model.predict_csv(reader, std::io::BufWriter::new(part.as_file_mut()), worker::BATCH_ROWS, &mut |_| {})?;
        part.persist(&args.output).with_context(|| format!("output {}", args.output.display()))?;
        rows
    };
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{rows} rows in {:.1} ms ({:.0} rows/s); model loaded in {loaded_ms:.1} ms", secs * 1000.0, rows as f64 / secs.max(1e-9));
    Ok(())
}

/// `node-agent probe`: measure once and print facts, metrics and score as JSON.
async fn probe(args: cli::ProbeArgs) -> anyhow::Result<()> {
    let policy = shared::score::ThermalPolicy { warn_c: args.warn_temp, critical_c: args.critical_temp };
    let facts = facts::gather(1, 0, true).await;

    let sampler = metrics::Sampler::shared().await?;
    // CPU usage is a difference between two samples; give it a meaningful window.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sample = metrics::Sampler::sample_shared(&sampler).await?;

    let events = bench::run_blocking(bench::DEFAULT_DURATION, CancellationToken::new()).await?;
    let metrics = sample.into_metrics(events.unwrap_or(0.0), 0);
    let score = shared::score::score(&metrics, &policy);

    let out = serde_json::json!({ "facts": facts, "metrics": metrics, "score": score });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// How long `enrol` keeps trying a server that does not answer.
const ENROL_TIMEOUT: Duration = Duration::from_secs(60);

/// `node-agent enrol`: register with the token (or find the saved credentials) and say which
/// node this machine is, on stdout, for the installer to print.
async fn enrol(args: cli::EnrolArgs) -> anyhow::Result<()> {
    let state_file = args.files.prepare()?;
    let already = state::load(&state_file)?;
    // The facts a registration carries; the first heartbeat sends them again with the real
    // slots and whether scripts can run.
    let facts = facts::gather(1, 0, false).await;
    let enrolment = run::Enrolment { server: Some(&args.server), token: Some(&args.token), name: args.name.as_deref() };
    // Registration retries while the server is unreachable; an installer must not wait forever.
    let give_up = CancellationToken::new();
    let timer = tokio::spawn({
        let give_up = give_up.clone();
        async move {
            tokio::time::sleep(ENROL_TIMEOUT).await;
            give_up.cancel();
        }
    });
    let obtained = run::obtain_state(&enrolment, &state_file, &facts, &give_up).await;
    timer.abort();
    let Some(state) = obtained? else {
        anyhow::bail!("could not reach the server at {} within {} s", args.server, ENROL_TIMEOUT.as_secs());
    };
    if already.is_some() {
        println!("already enrolled as node {} with {}; the token was not used", state.node_id, state.server);
    } else {
        println!("enrolled as node {} with {}", state.node_id, state.server);
    }
    Ok(())
}

/// Cancels `drain` on the first Ctrl-C (SIGINT) or SIGTERM (the agent finishes or hands back
/// its jobs, then stops); a second one exits at once.
///
/// The handlers are installed before this returns (not in the spawned task), so a signal that
/// arrives right after start-up is not left to the default action, which kills the process
/// without closing anything.
fn stop_on_signal(drain: CancellationToken) -> anyhow::Result<()> {
    use anyhow::Context;
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    tokio::spawn(async move {
        for round in 0..2 {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            if round == 0 {
                tracing::info!("shutting down: finishing running jobs, taking no new ones (signal again to force)");
                drain.cancel();
            } else {
                tracing::warn!("second signal: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}
