//! `node-agent`: see the library ([`node_agent`]) for what it does; this file only wires the
//! command line, the logs, the runtime and the exit code together.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use node_agent::cli::Cli;

fn main() -> ExitCode {
    // The sandbox launcher for script jobs: the agent re-executes itself with this hidden first
    // argument, and the fresh single-threaded process tightens its limits and execs the script.
    // It must run before anything else starts threads.
    if std::env::args_os().nth(1).is_some_and(|a| a == node_agent::SANDBOX_SUBCOMMAND) {
        runner::sandbox::child_main(std::env::args_os().skip(2).collect());
    }
    let cli = Cli::parse();
    node_agent::logging::init(cli.log_format);

    // One thread is plenty for a heartbeat and a few HTTP calls; the blocking work (sampling,
    // benchmark) goes to tokio's blocking pool. This keeps the agent frugal on small boards.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(node_agent::execute(cli.command));
    // IMPORTANT: without a timeout, dropping the runtime waits for every blocking task.
    runtime.shutdown_timeout(Duration::from_secs(2));

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = node_agent::exit_code(&err);
            tracing::error!(error = %format!("{err:#}"), "node-agent stopped");
            // One line a person can act on, whatever the log format.
            eprintln!("error: {err:#}");
            ExitCode::from(code)
        }
    }
}
