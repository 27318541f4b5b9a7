//! `mde-liveresponse-exporter`: thin entry point. Cli → Config → logging → run → ExitCode.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use exporter_web::WebConfig;
use mde_liveresponse_exporter::app::{self, DemoOptions};
use mde_liveresponse_exporter::config::Config;
use mde_liveresponse_exporter::telemetry::{self, LogFormat};
use tokio::net::TcpListener;

/// Prometheus exporter for Microsoft Defender for Endpoint Live Response results and API quota.
///
/// Without --config.file it runs against its built-in MDE API simulator (demo mode).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// YAML configuration file (tenants, selectors, quota).
    #[arg(
        long = "config.file",
        env = "MDE_EXPORTER_CONFIG_FILE",
        value_name = "PATH"
    )]
    config_file: Option<PathBuf>,
    /// Validate the configuration file and exit (0 valid, 1 invalid).
    #[arg(long = "config.check", requires = "config_file")]
    config_check: bool,
    /// Address to serve metrics on.
    #[arg(
        long = "web.listen-address",
        env = "MDE_EXPORTER_LISTEN_ADDRESS",
        default_value = "0.0.0.0:9717"
    )]
    listen_address: String,
    /// Web configuration file (TLS, mutual TLS, basic auth) in the exporter-toolkit format.
    #[arg(
        long = "web.config.file",
        env = "MDE_EXPORTER_WEB_CONFIG_FILE",
        value_name = "PATH"
    )]
    web_config_file: Option<PathBuf>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    telemetry_path: String,
    /// Where to keep state (overrides `state_path` in the config file).
    #[arg(
        long = "state.path",
        env = "MDE_EXPORTER_STATE_PATH",
        value_name = "PATH"
    )]
    state_path: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace; or a RUST_LOG-style filter).
    #[arg(
        long = "log.level",
        env = "MDE_EXPORTER_LOG_LEVEL",
        default_value = "info"
    )]
    log_level: String,
    /// Log line format.
    #[arg(long = "log.format", value_enum, default_value = "json")]
    log_format: LogFormat,
    /// This shard's index (0-based) when tenants are split over several exporters.
    #[arg(long = "shard.index")]
    shard_index: Option<u32>,
    /// Number of shards; the index defaults to the ordinal at the end of $HOSTNAME (pod-2 → 2).
    #[arg(long = "shard.count")]
    shard_count: Option<u32>,
    #[command(flatten)]
    demo: DemoArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Run against the built-in MDE API simulator (the default without --config.file).
    #[arg(long = "demo", conflicts_with = "config_file")]
    demo: bool,
    /// Demo time speed-up: 60 makes a quota minute last one second.
    #[arg(long = "demo.time-scale", default_value_t = 1.0)]
    time_scale: f64,
    /// Seed of the demo scenario.
    #[arg(long = "demo.seed", default_value_t = 42)]
    seed: u64,
    /// Number of Live Response actions in the demo scenario.
    #[arg(long = "demo.actions", default_value_t = 80)]
    actions: usize,
    /// Let another simulated client spend the same API quota, so throttling shows.
    #[arg(long = "demo.noisy-neighbour")]
    noisy_neighbour: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the MDE API simulator alone (token, machine actions, result links, blobs);
    /// the same as the `mde-sim` binary.
    Simulate(mde_sim::cli::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.config_check {
        return check_config(&cli);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mde-liveresponse-exporter: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting");
            eprintln!("mde-liveresponse-exporter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(cli: &Cli) -> ExitCode {
    let Some(path) = &cli.config_file else {
        eprintln!("--config.check needs --config.file");
        return ExitCode::FAILURE;
    };
    match Config::load(path) {
        Ok(c) => println!("{}: OK ({} tenant(s))", path.display(), c.tenants.len()),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(web) = &cli.web_config_file {
        match WebConfig::load(web) {
            Ok(_) => println!("{}: OK", web.display()),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Resolve `--shard.index`, or derive it from a StatefulSet pod name (`name-3` → 3).
fn shard(cli: &Cli) -> Result<Option<(u32, u32)>> {
    let Some(count) = cli.shard_count else {
        if cli.shard_index.is_some() {
            bail!("--shard.index needs --shard.count");
        }
        return Ok(None);
    };
    if count == 0 {
        bail!("--shard.count must be at least 1");
    }
    let index = match cli.shard_index {
        Some(i) => i,
        None => {
            let host = std::env::var("HOSTNAME").unwrap_or_default();
            host.rsplit('-')
                .next()
                .and_then(|o| o.parse::<u32>().ok())
                .with_context(|| {
                    format!(
                        "--shard.index not given and HOSTNAME {host:?} does not end in -<ordinal>"
                    )
                })?
        }
    };
    if index >= count {
        bail!("--shard.index {index} must be less than --shard.count {count}");
    }
    Ok(Some((index, count)))
}

async fn run(cli: Cli) -> Result<()> {
    // The config comes first: it says how to log and trace.
    let file_config = match &cli.config_file {
        Some(path) => Some(Config::load(path)?),
        None => None,
    };
    let otel = file_config
        .as_ref()
        .map(|c| c.otel.clone())
        .unwrap_or_default();
    let provider = telemetry::tracer_provider(&otel).map_err(anyhow::Error::msg)?;
    let telemetry =
        telemetry::init(&cli.log_level, cli.log_format, provider).map_err(anyhow::Error::msg)?;
    if telemetry.tracing_enabled() {
        tracing::info!(
            endpoint = otel.effective_endpoint(),
            "exporting spans over OTLP"
        );
    }
    let result = serve(cli, file_config).await;
    telemetry.shutdown().await;
    result
}

async fn serve(cli: Cli, file_config: Option<Config>) -> Result<()> {
    if let Some(Command::Simulate(sim)) = &cli.command {
        return sim.run(shutdown_signal()).await;
    }

    let mut _demo_sim = None;
    let mut config = match file_config {
        Some(c) => c,
        None => {
            if !cli.demo.demo {
                tracing::info!(
                    "no --config.file given: running the demo against the built-in simulator"
                );
            }
            let (sim, config, _task) = app::start_demo(&DemoOptions {
                time_scale: cli.demo.time_scale,
                seed: cli.demo.seed,
                actions: cli.demo.actions,
                noisy_neighbour: cli.demo.noisy_neighbour,
            })
            .await?;
            _demo_sim = Some(sim);
            config
        }
    };
    if let Some(p) = &cli.state_path {
        config.state_path = Some(p.clone());
    }
    if let Some((index, count)) = shard(&cli)? {
        config = config.shard(index, count);
        tracing::info!(
            index,
            count,
            tenants = config.tenants.len(),
            "sharding tenants"
        );
    }
    if !cli.telemetry_path.starts_with('/') {
        bail!("--web.telemetry-path must start with '/'");
    }
    let web = match &cli.web_config_file {
        Some(p) => Some(std::sync::Arc::new(WebConfig::load(p)?)),
        None => None,
    };
    let addr: SocketAddr = parse_listen(&cli.listen_address)?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    // A reload reads the file again with the same command-line overrides; the state file
    // stays the one opened at start.
    let sharding = shard(&cli)?;
    let loader: Option<app::Loader> = cli.config_file.clone().map(|path| {
        let load = move || -> Result<Config, String> {
            let config = Config::load(&path).map_err(|e| e.to_string())?;
            Ok(match sharding {
                Some((index, count)) => config.shard(index, count),
                None => config,
            })
        };
        std::sync::Arc::new(load) as app::Loader
    });
    // Listen for SIGHUP before saying we listen: a SIGHUP without a handler ends the process.
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hup = None;
    let handle = app::start_with(config, listener, &cli.telemetry_path, web, loader).await?;
    wait_for_stop(&handle, hup).await;
    tracing::info!("shutting down");
    handle.shutdown().await?;
    Ok(())
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

/// Serve until SIGTERM or Ctrl-C; SIGHUP reloads the configuration on the way.
async fn wait_for_stop(handle: &app::Handle, hup: Option<Hangup>) {
    #[cfg(unix)]
    if let Some(mut hup) = hup {
        let stop = shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    // The outcome is logged and in mde_exporter_config_last_reload_successful.
                    let _ = handle.reload().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (handle, hup);
    shutdown_signal().await;
}

/// Accept Prometheus-style `:9717` as well as `host:port`.
fn parse_listen(s: &str) -> Result<SocketAddr> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .with_context(|| format!("--web.listen-address {s:?} is not host:port"))
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
