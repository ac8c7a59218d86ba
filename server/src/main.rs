//! The `server` binary: parses the configuration, sets up logging, and runs a command.

use anyhow::Context;
use clap::Parser;
use server::config::{AdminCommand, Cli, Command, Config, NodeCommand, TokenCommand};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    // The model checker child (see server::model_check): before any thread or runtime starts.
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|first| first == server::model_check::SUBCOMMAND) {
        runner::model_check::child_main(args.collect())
    }
    let mut cli = Cli::parse();
    if cli.config.model_checker.is_none() {
        cli.config.model_checker = std::env::current_exe().ok();
    }
    server::logging::init(cli.config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole chain: what was tried and why it failed.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(cli.config).await,
        Command::Migrate => {
            server::build_state(&cli.config).await?;
            println!("database is up to date");
            Ok(())
        }
        Command::Node(NodeCommand::Add { owner, name, share_with_everyone }) => {
            let state = server::build_state(&cli.config).await?;
            let sharing = if share_with_everyone { aiedge_core::Sharing::Everyone } else { aiedge_core::Sharing::Private };
            println!("{}", server::admin_cli::add_node(&state, &owner, &name, sharing).await?);
            Ok(())
        }
        Command::Token(TokenCommand::Create { email, name }) => {
            let state = server::build_state(&cli.config).await?;
            println!("{}", server::admin_cli::create_token(&state, &email, &name).await?);
            Ok(())
        }
        Command::Status => {
            // The database alone: nothing else is needed to read the lease and the replicas.
            let url = cli.config.database_url();
            let db = aiedge_store::Db::connect(&url).await.with_context(|| format!("database {}", server::config::redact(&url)))?;
            print!("{}", server::admin_cli::status(&db, aiedge_store::now_ms()).await?);
            Ok(())
        }
        Command::Admin(AdminCommand::Create { email, password_stdin }) => {
            let password = server::admin_cli::read_password(password_stdin)?;
            let state = server::build_state(&cli.config).await?;
            println!("{}", server::admin_cli::create_admin(&state.db, &email, &password).await?);
            Ok(())
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.bind).await.with_context(|| format!("cannot listen on {}", config.bind))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    server::launch(config, listener, shutdown).await
}

/// Cancels `token` on Ctrl-C or SIGTERM.
async fn stop_on_signal(token: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutting down");
    token.cancel();
}
