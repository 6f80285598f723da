//! The `workflow-dlq` binary: `serve` runs the service.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use workflow_dlq::{cli, config::ServeArgs, telemetry, Config, Service};

#[derive(Parser)]
#[command(
    name = "workflow-dlq",
    version,
    about = "A Kafka-native dead letter queue for durable workflow runs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (embedded in-memory broker when no bootstrap is configured).
    Serve(ServeArgs),
    /// List, inspect, restart, resume, re-run callbacks of, or delete DLQ entries over the
    /// HTTP API (`--url`, `--token`).
    Dlq(cli::DlqArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Dlq(args) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("workflow-dlq: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(cli::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e @ cli::CliError::Usage(_)) => {
                    eprintln!("workflow-dlq dlq: {e}");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("workflow-dlq dlq: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let cfg = match Config::load(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("workflow-dlq: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            telemetry::init(cfg.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("workflow-dlq: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "workflow-dlq stopped");
                    eprintln!("workflow-dlq: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(cfg: Config) -> Result<(), workflow_dlq::ServiceError> {
    let token_generated = cfg.api_token.is_none();
    let mut service = Service::start(cfg).await?;
    if let Some(banner) = service.embedded_banner() {
        println!("{banner}");
    }
    println!("HTTP API on http://{}", service.http_addr);
    if token_generated {
        // Printed once, to stdout only: never logged.
        println!(
            "API token (generated; set --api-token / DLQ_API_TOKEN to choose one): {}",
            service.api_token.expose_secret()
        );
    }
    let outcome = tokio::select! {
        r = service.wait() => r,
        _ = shutdown_signal() => {
            tracing::info!("shutdown signal received; stopping");
            Ok(())
        }
    };
    let stopped = service.stop().await;
    outcome.and(stopped)
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
