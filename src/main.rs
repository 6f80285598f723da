//! The `workflow-dlq` binary: `serve` runs the service; `dlq` and `failures` are its command
//! line.
//!
//! Nothing here prints with `println!`/`eprintln!`: they panic when the stream is a closed pipe
//! (`workflow-dlq dlq list | head -1`). Results go through `cli::output`'s writers and a broken
//! pipe on stdout ends the command with exit code 0, as ripgrep does: every result is printed
//! after its work is done, so a reader that stops early has lost nothing it asked to be done,
//! and a non-zero code would invite a script to retry a bulk action that already happened.

use std::{io::Write, process::ExitCode};

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use workflow_dlq::{
    cli::{self, output::warn},
    config::ServeArgs,
    telemetry, Config, Service,
};

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
    /// Produce failure events to the failures topic (`send`), to try the service without
    /// writing a producer.
    Failures(cli::FailuresArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Dlq(args) => cli_command("dlq", async move |out| {
            cli::run(args, out).await.map(|()| ExitCode::SUCCESS)
        }),
        Command::Failures(cli::FailuresArgs {
            command: cli::FailuresCommand::Send(args),
        }) => cli_command("failures send", async move |out| {
            let summary = cli::send::run(args, out).await?;
            Ok(if summary.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }),
        Command::Serve(args) => {
            let cfg = match Config::load(&args) {
                Ok(c) => c,
                Err(e) => {
                    warn(format_args!("workflow-dlq: configuration error: {e}"));
                    return ExitCode::from(2);
                }
            };
            telemetry::init(cfg.log_format);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    warn(format_args!(
                        "workflow-dlq: cannot start the async runtime: {e}"
                    ));
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "workflow-dlq stopped");
                    warn(format_args!("workflow-dlq: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Runs a command-line command on a one-thread runtime with stdout as its output, and maps its
/// error to an exit code: usage and configuration errors 2, a broken pipe 0 (quietly: see the
/// module comment), anything else 1.
fn cli_command<F>(name: &str, command: F) -> ExitCode
where
    F: AsyncFnOnce(&mut dyn std::io::Write) -> Result<ExitCode, cli::CliError>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            warn(format_args!(
                "workflow-dlq: cannot start the async runtime: {e}"
            ));
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = cli::output::stdout();
    let out: &mut dyn std::io::Write = &mut stdout;
    let outcome = runtime.block_on(async {
        let code = command(&mut *out).await?;
        // A command's exit code stands whether or not its reader is still there (`failures
        // send` says 1 for invalid input either way).
        match out.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(cli::CliError::Output(e)),
            _ => Ok(code),
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e @ (cli::CliError::Usage(_) | cli::CliError::Config(_))) => {
            warn(format_args!("workflow-dlq {name}: {e}"));
            ExitCode::from(2)
        }
        Err(e) => {
            warn(format_args!("workflow-dlq {name}: {e}"));
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: Config) -> Result<(), workflow_dlq::ServiceError> {
    let token_generated = cfg.api_token.is_none() && cfg.api_tokens.is_empty();
    let mut service = Service::start(cfg).await?;
    // Best effort: a closed stdout must not stop the service (`println!` would panic).
    let mut out = std::io::stdout().lock();
    if let Some(banner) = service.embedded_banner() {
        let _ = writeln!(out, "{banner}");
    }
    let _ = writeln!(out, "HTTP API on http://{}", service.http_addr);
    if let (true, Some(token)) = (token_generated, &service.api_token) {
        // Printed once, to stdout only: never logged.
        let _ = writeln!(
            out,
            "API token (generated; set --api-token / DLQ_API_TOKEN to choose one): {}",
            token.expose_secret()
        );
    }
    let _ = out.flush();
    drop(out);
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks over the whole command line, `failures send`'s flattened
    /// service settings included (a clash would otherwise show only when the command runs).
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
