//! `mde-liveresponse-exporter`: thin entry point. Cli → Config → runtime → run → ExitCode.
//! Flags are resolved in `cli`; the run (logging, subcommands, serving, signals) is in
//! `app::run`, the wiring in `app`.

use std::process::ExitCode;

use clap::Parser;
use mde_liveresponse_exporter::app::cli::{Cli, Command};
use mde_liveresponse_exporter::app::run;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.config_check {
        return run::check_config(&cli);
    }
    // The config comes first: it says how to log and trace, and how many tenants there are.
    let file_config = run::load_file_config(&cli);
    let runtime = match run::runtime(&cli, &file_config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mde-liveresponse-exporter: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // A one-off command's error is its answer, on stderr once; a server's is also logged.
    let one_off = matches!(cli.command, Some(Command::Transcript(_)));
    let result = runtime.block_on(run::run(cli, file_config));
    // Bounded: a flush still blocked on an OTLP endpoint must not hold the exit.
    runtime.shutdown_timeout(run::RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !one_off {
                tracing::error!(error = format!("{e:#}"), "exiting");
            }
            eprintln!("mde-liveresponse-exporter: {e:#}");
            ExitCode::FAILURE
        }
    }
}
