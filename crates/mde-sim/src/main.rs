//! `mde-sim`: the MDE Live Response API simulator on its own (token endpoints, machine
//! actions, result links, expiring SAS blobs, per-endpoint 429s). Thin: flags → logging →
//! serve until SIGTERM or Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use mde_sim::cli::SimArgs;

/// Serve a simulated Microsoft Defender for Endpoint Live Response API on one address.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    sim: SimArgs,
    /// Log level or RUST_LOG-style filter.
    #[arg(long = "log.level", default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log_level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mde-sim: --log.level {:?}: {e}", cli.log_level);
            return ExitCode::from(2);
        }
    };
    mde_sim::log::init(filter);
    match cli.sim.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mde-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
