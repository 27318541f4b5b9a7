//! The binary's run, from parsed flags to an exit: how many worker threads, `--config.check`,
//! logging and tracing, the `simulate` and `transcript` subcommands, and serving until a
//! signal (SIGHUP reloads on the way).
//!
//! Owns the order of those steps and the signals. Does not own the flags (`cli`), the
//! configuration (`config`) nor what serving starts (`app`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use exporter_web::WebConfig;
use tokio::net::TcpListener;

use crate::app::cli::{Cli, Command, Settings, Source};
use crate::app::tenant_files::TenantFiles;
use crate::app::transcript_command;
use crate::config::Config;
use crate::record::state;
use crate::telemetry;

/// Worker threads at most. Collecting is waiting on the network: 2,000 tenants take about 3 %
/// of one core (`cargo bench --bench scale`), and `/metrics` is encoded on threads of its own.
/// Each worker thread costs its stack and an allocator arena (about 0.2 MiB), so one per core
/// on a large host made an idle exporter grow with the host. See: #11
const MAX_WORKERS: usize = 4;
/// Tenants a worker thread serves before the next one is started. More than one worker is for
/// the moments a poll holds its thread (the state file's durable commit waits for the disk).
const TENANTS_PER_WORKER: usize = 250;

/// Worker threads for `tenants` configured at start on `cores` cores: one per
/// `TENANTS_PER_WORKER` tenants, at most one per core and at most `MAX_WORKERS`.
pub fn worker_threads(tenants: usize, cores: usize) -> usize {
    tenants
        .div_ceil(TENANTS_PER_WORKER)
        .clamp(1, cores.clamp(1, MAX_WORKERS))
}

/// `--config.file`, read (for serving, and for `transcript`, which needs it).
pub fn load_file_config(cli: &Cli) -> Result<Option<(PathBuf, Config)>> {
    match (&cli.command, &cli.config_file) {
        (None | Some(Command::Transcript(_)), Some(path)) => {
            Ok(Some((path.clone(), Config::load(path)?)))
        }
        (Some(Command::Transcript(_)), None) => {
            anyhow::bail!("transcript needs --config.file (the tenants and their credentials)")
        }
        _ => Ok(None),
    }
}

/// How long the runtime may take to stop once the run returned: a blocking flush still
/// waiting on an OTLP endpoint that never answers (`telemetry::Telemetry::shutdown` stopped
/// waiting for it) must not hold the process (dropping a runtime waits for every blocking
/// task). See: #32 item 9
pub const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(1);

/// The tokio runtime for `cli`, sized by the configuration read at start (`file_config`).
/// TOKIO_WORKER_THREADS, when set, is read by tokio itself.
pub fn runtime(
    cli: &Cli,
    file_config: &Result<Option<(PathBuf, Config)>>,
) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let tenants = match (&cli.command, file_config) {
            (Some(Command::Simulate(_)), _) => usize::MAX,
            // Tenant files are read once serving starts: their tenants are not counted yet, so
            // they may be many (#34).
            (_, Ok(Some((_, config)))) if config.tenant_files.refresh_interval().is_some() => {
                usize::MAX
            }
            (_, Ok(Some((_, config)))) => config.tenants.len(),
            // The demo's one tenant, or a config that will be refused with its error.
            _ => 1,
        };
        builder.worker_threads(worker_threads(tenants, cores));
    }
    builder.enable_all().build()
}

/// `--config.check`: read the configuration (and the web configuration) and say whether
/// they are valid.
pub fn check_config(cli: &Cli) -> ExitCode {
    let Some(path) = &cli.config_file else {
        eprintln!("--config.check needs --config.file");
        return ExitCode::FAILURE;
    };
    // What start-up would refuse of the flags, the check refuses too.
    if let Err(e) = cli.check_flags() {
        eprintln!("{e:#}");
        return ExitCode::FAILURE;
    }
    match Config::load(path) {
        Ok(c) => {
            // The OTLP metrics variables, as start-up reads them (see `serve`).
            if let Err(e) =
                crate::otlp_metrics::PushConfig::resolve(&c.otel, &|name| std::env::var(name).ok())
            {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
            // Every tenant file, and every tenant refused alone, with the messages a running
            // exporter logs (#34).
            let files = TenantFiles::new(path, c, None);
            let status = files.status();
            let errors: Vec<&String> = status
                .files
                .iter()
                .filter_map(|f| f.error.as_ref())
                .chain(status.refused.iter().map(|(_, e)| e))
                .collect();
            for e in &errors {
                eprintln!("{e}");
            }
            if !errors.is_empty() {
                return ExitCode::FAILURE;
            }
            let config = files.config();
            let own = config.tenants.len() - status.files.iter().map(|f| f.tenants).sum::<usize>();
            println!("{}: OK ({own} tenant(s))", path.display());
            for f in &status.files {
                println!("{}: OK ({} tenant(s))", f.file, f.tenants);
            }
        }
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

/// Everything after the runtime started: logging and tracing, then the subcommand or serving.
pub async fn run(cli: Cli, file_config: Result<Option<(PathBuf, Config)>>) -> Result<()> {
    let file_config = file_config?;
    let otel = file_config
        .as_ref()
        .map(|(_, c)| c.otel.clone())
        .unwrap_or_default();
    // A one-off command sends no spans: nothing waits for them at exit.
    let pipelines = match &cli.command {
        Some(Command::Transcript(_)) => telemetry::Pipelines::default(),
        _ => telemetry::pipelines(&otel).map_err(anyhow::Error::msg)?,
    };
    let telemetry =
        telemetry::init(&cli.log_level, cli.log_format, pipelines).map_err(anyhow::Error::msg)?;
    // Only a traced span gives a latency observation its exemplar (#34).
    crate::metrics::keep_exemplars(telemetry.tracing_enabled());
    if telemetry.tracing_enabled() {
        tracing::info!(
            endpoint = otel.effective_endpoint(),
            log_records = telemetry.logs_enabled(),
            "exporting spans over OTLP"
        );
    }
    let result = match &cli.command {
        Some(Command::Simulate(sim)) => sim.run(shutdown_signal()).await,
        Some(Command::Transcript(args)) => match &file_config {
            Some((_, config)) => match transcript_command::run(config, &args.request()).await {
                Ok(printed) => {
                    print!("{}", printed.text);
                    match printed.unreadable {
                        0 => Ok(()),
                        n => Err(anyhow::anyhow!(
                            "{n} result(s) could not be read (see above)"
                        )),
                    }
                }
                Err(e) => Err(e.into()),
            },
            None => Err(anyhow::anyhow!("transcript needs --config.file")),
        },
        None => match cli.settings(file_config) {
            Ok(settings) => serve(settings).await,
            Err(e) => Err(e),
        },
    };
    telemetry.shutdown().await;
    result
}

/// Serve the configuration of `settings` (or the demo) until SIGTERM or Ctrl-C.
async fn serve(settings: Settings) -> Result<()> {
    let mut _demo_sim = None;
    // The tenant files, read for the first time, and how a reload reads everything (#34).
    let mut files = None;
    let config = match &settings.source {
        Source::File { config, path } => {
            let f = TenantFiles::new(path, (**config).clone(), settings.shard);
            let config = f.config();
            files = Some(f);
            config
        }
        Source::Demo { options, explicit } => {
            if !explicit {
                tracing::info!(
                    "no --config.file given: running the demo against the built-in simulator"
                );
            }
            let (sim, config, _task) = super::start_demo(options).await?;
            _demo_sim = Some(sim);
            config
        }
    };
    let config = settings.apply(config);
    // The OTLP metrics push the OTEL_* variables ask for; a wrong one stops the start.
    let push =
        crate::otlp_metrics::PushConfig::resolve(&config.otel, &|name| std::env::var(name).ok())?;
    if settings.state_reset {
        match &config.state_path {
            Some(path) => match state::reset(path, chrono::Utc::now())? {
                Some(aside) => tracing::warn!(
                    path = %path.display(),
                    moved_to = %aside.display(),
                    "--state.reset: the state file was moved aside; starting afresh (results still inside each tenant's lookback window are counted again)"
                ),
                None => {
                    tracing::info!(path = %path.display(), "--state.reset: no state file to move aside")
                }
            },
            None => tracing::warn!(
                "--state.reset given without a state file (--state.path or state_path): nothing to reset"
            ),
        }
    }
    if let Some(path) = &settings.state_import {
        match &config.cluster {
            Some(cluster) => crate::app::cluster::import(cluster, path).await?,
            None => anyhow::bail!("--state.import needs a cluster: section in the configuration"),
        }
    }
    if let Some((index, count)) = settings.shard {
        crate::metrics::exporter::set_shard(index, count);
        tracing::info!(
            index,
            count,
            tenants = config.tenants.len(),
            "sharding tenants"
        );
    }
    crate::app::web::set_external_url(settings.external_url.clone());
    let web = match &settings.web_config_file {
        Some(p) => Some(Arc::new(WebConfig::load(p)?)),
        None => None,
    };
    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    // Listen for SIGHUP before saying we listen: a SIGHUP without a handler ends the process.
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hup = None;
    // The same for SIGTERM: one sent right after "exporter listening" must stop us gracefully,
    // not by the default action (which ends the process without a shutdown).
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    #[cfg(not(unix))]
    let term = None;
    let handle = super::start_with_lifecycle(
        config,
        listener,
        &settings.telemetry_path,
        web,
        files.as_ref().map(TenantFiles::loader),
        settings.enable_lifecycle,
    )
    .await?;
    if let Some(f) = &files {
        f.publish(&handle.shared().metrics);
    }
    let mut handle = handle;
    if let Some(push) = push {
        tracing::info!(
            endpoint = %crate::otlp_metrics::shown_endpoint(&push.endpoint),
            protocol = ?push.protocol,
            compression = ?push.compression,
            interval_ms = push.interval.as_millis() as u64,
            headers = push.header_names().join(","),
            "pushing metrics over OTLP"
        );
        handle.push_metrics(push)?;
    }
    wait_for_stop(&handle, hup, term, files).await;
    tracing::info!("shutting down");
    handle.shutdown().await?;
    Ok(())
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = ();

/// Serve until SIGTERM or Ctrl-C; SIGHUP reloads the configuration on the way, and the
/// tenant files are read again every refresh interval (#34).
async fn wait_for_stop(
    handle: &super::Handle,
    hup: Option<Hangup>,
    term: Option<Hangup>,
    files: Option<Arc<TenantFiles>>,
) {
    let stop = shutdown_signal_with(term);
    tokio::pin!(stop);
    #[cfg(unix)]
    let mut hup = hup;
    #[cfg(not(unix))]
    let _ = hup;
    loop {
        let refresh = files.as_ref().map(|f| f.refresh_interval());
        let hangup = async {
            #[cfg(unix)]
            if let Some(h) = hup.as_mut() {
                h.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = hangup => {
                tracing::info!("SIGHUP: reloading the configuration");
                // The outcome is logged and in mde_exporter_config_last_reload_successful.
                let _ = handle.reload().await;
                if let Some(f) = &files {
                    f.publish(&handle.shared().metrics);
                }
            }
            _ = tokio::time::sleep(refresh.unwrap_or(Duration::MAX)), if refresh.is_some() => {
                if let Some(f) = &files {
                    f.tick(handle).await;
                }
            }
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    shutdown_signal_with(None).await;
}

/// Ctrl-C or SIGTERM; `term` is a SIGTERM stream registered earlier (else one is made now).
#[cfg_attr(not(unix), allow(unused_variables))]
async fn shutdown_signal_with(term: Option<Hangup>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        let registered = match term {
            Some(s) => Ok(s),
            None => tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()),
        };
        match registered {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// One worker for a few tenants, one more per 250, never more than the cores nor four.
    #[test]
    fn worker_threads_follow_tenants_and_cores() {
        assert_eq!(worker_threads(1, 16), 1);
        assert_eq!(worker_threads(0, 16), 1);
        assert_eq!(worker_threads(250, 16), 1);
        assert_eq!(worker_threads(251, 16), 2);
        assert_eq!(worker_threads(2000, 16), 4);
        assert_eq!(worker_threads(2000, 2), 2);
        assert_eq!(worker_threads(usize::MAX, 2), 2);
        assert_eq!(worker_threads(500, 0), 1);
    }
}
