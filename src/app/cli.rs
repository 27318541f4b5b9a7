//! The command line: flags as clap parses them ([`Cli`], the low-level arguments) and the one
//! place they are resolved into validated settings ([`Settings`], the high-level ones), in the
//! way ripgrep turns `LowArgs` into `HiArgs`.
//!
//! Owns flag names, their defaults and their cross-checks (shards, listen address, telemetry
//! path), the demo's options ([`DemoOptions`]), and how a reload re-reads the file with the
//! same overrides ([`Loader`], built by `app::tenant_files` with the tenant files). Does not own the file's schema (`config`), logging
//! (`telemetry`) or running anything (`app`, which imports this module, never the reverse).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;
use crate::telemetry::LogFormat;

/// Prometheus exporter for Microsoft Defender for Endpoint Live Response results and API quota.
///
/// Without --config.file it runs against its built-in MDE API simulator (demo mode).
#[derive(Debug, Parser)]
#[command(name = "mde-liveresponse-exporter", version, about, long_about = None)]
pub struct Cli {
    /// YAML configuration file (tenants, selectors, quota).
    #[arg(
        long = "config.file",
        env = "MDE_EXPORTER_CONFIG_FILE",
        value_name = "PATH",
        global = true
    )]
    pub config_file: Option<PathBuf>,
    /// Validate the configuration file and exit (0 valid, 1 invalid).
    #[arg(long = "config.check", requires = "config_file")]
    pub config_check: bool,
    /// Address to serve metrics on.
    #[arg(
        long = "web.listen-address",
        env = "MDE_EXPORTER_LISTEN_ADDRESS",
        default_value = "0.0.0.0:9717"
    )]
    pub listen_address: String,
    /// Web configuration file (TLS, mutual TLS, basic auth) in the exporter-toolkit format.
    #[arg(
        long = "web.config.file",
        env = "MDE_EXPORTER_WEB_CONFIG_FILE",
        value_name = "PATH"
    )]
    pub web_config_file: Option<PathBuf>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics")]
    pub telemetry_path: String,
    /// Where to keep state (overrides `state_path` in the config file).
    #[arg(
        long = "state.path",
        env = "MDE_EXPORTER_STATE_PATH",
        value_name = "PATH"
    )]
    pub state_path: Option<PathBuf>,
    /// Move the state file aside (renamed with the time) and start afresh: results still in
    /// each tenant's lookback window are counted again. For a corrupt or unwanted file.
    #[arg(long = "state.reset")]
    pub state_reset: bool,
    /// Cluster mode (#31): copy this state file (of one process or one static shard) into the
    /// cluster's database at start, so that moving to a cluster counts nothing again.
    /// Idempotent; refused when a tenant's identity in the file differs from the database's.
    #[arg(long = "state.import", value_name = "FILE")]
    pub state_import: Option<PathBuf>,
    /// The URL under which the exporter is reachable from outside (behind a reverse proxy, say),
    /// as Prometheus' flag: links the exporter makes (the transcript page's) start with it.
    /// Absolute http(s), no query or fragment; it does not change the paths served.
    #[arg(
        long = "web.external-url",
        env = "MDE_EXPORTER_WEB_EXTERNAL_URL",
        value_name = "URL"
    )]
    pub external_url: Option<String>,
    /// Enable `POST /-/reload` (off by default, as in Prometheus); SIGHUP always reloads.
    #[arg(long = "web.enable-lifecycle")]
    pub enable_lifecycle: bool,
    /// Log level (off, error, warn, info, debug, trace) or a RUST_LOG-style filter such as
    /// info,mde_liveresponse_exporter=debug. Spans and OTLP log records do not depend on it.
    #[arg(
        long = "log.level",
        env = "MDE_EXPORTER_LOG_LEVEL",
        default_value = "info",
        value_parser = crate::telemetry::parse_level,
        global = true
    )]
    pub log_level: String,
    /// Log line format: flat JSON (ts, level, msg, then the fields) or logfmt.
    #[arg(
        long = "log.format",
        env = "MDE_EXPORTER_LOG_FORMAT",
        value_enum,
        default_value = "json",
        global = true
    )]
    pub log_format: LogFormat,
    /// This shard's index (0-based) when tenants are split over several exporters.
    #[arg(long = "shard.index")]
    pub shard_index: Option<u32>,
    /// Number of shards; the index defaults to the ordinal at the end of $HOSTNAME (pod-2 → 2).
    #[arg(long = "shard.count")]
    pub shard_count: Option<u32>,
    #[command(flatten)]
    pub demo: DemoArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags of the built-in demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Run against the built-in MDE API simulator (the default without --config.file).
    #[arg(long = "demo", conflicts_with = "config_file")]
    pub demo: bool,
    /// Demo time speed-up: 60 makes a quota minute last one second.
    #[arg(long = "demo.time-scale", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Seed of the demo scenario.
    #[arg(long = "demo.seed", default_value_t = 42)]
    pub seed: u64,
    /// Number of Live Response actions in the demo scenario.
    #[arg(long = "demo.actions", default_value_t = 80)]
    pub actions: usize,
    /// Let another simulated client spend the same API quota, so throttling shows.
    #[arg(long = "demo.noisy-neighbour")]
    pub noisy_neighbour: bool,
    /// The fleet scenario: this many more actions of one script, Pending on offline devices,
    /// every tenth coming online during the run (#20).
    #[arg(long = "demo.fleet", default_value_t = 0)]
    pub fleet: usize,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the MDE API simulator alone (token, machine actions, result links, blobs);
    /// the same as the `mde-sim` binary.
    Simulate(mde_sim::cli::SimArgs),
    /// Print one Live Response result as the API returns it (script name, exit code, output,
    /// errors; a GetFile result's size), through the same client and quota rules as the
    /// exporter. Needs --config.file. Without --index, every command of the action.
    Transcript(TranscriptArgs),
}

/// Flags of `transcript`.
#[derive(Debug, Args)]
pub struct TranscriptArgs {
    /// The tenant's `name` in the configuration file.
    #[arg(long = "tenant")]
    pub tenant: String,
    /// The machine action's id (as in the alert, the log line or the status page).
    #[arg(value_name = "ACTION_ID")]
    pub action_id: String,
    /// The command's index within the action.
    #[arg(long = "index")]
    pub index: Option<u32>,
}

impl TranscriptArgs {
    pub fn request(&self) -> crate::app::transcript_command::Request {
        crate::app::transcript_command::Request {
            tenant: self.tenant.clone(),
            action_id: self.action_id.clone(),
            index: self.index,
        }
    }
}

/// Reads the configuration again for a reload (the file, with the command line's overrides).
pub type Loader = std::sync::Arc<dyn Fn() -> Result<Config, crate::config::Error> + Send + Sync>;

/// Options of the built-in demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// 60 makes a minute last a second, for the simulator and our quota alike.
    pub time_scale: f64,
    pub seed: u64,
    pub actions: usize,
    /// Another client spends the same quota, so that 429s happen.
    pub noisy_neighbour: bool,
    /// Actions of the fleet scenario (`SimConfig::fleet`).
    pub fleet: usize,
}

/// Where the configuration comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `--config.file` as read at start (`config`), read again from `path` on every reload.
    File { path: PathBuf, config: Box<Config> },
    /// The built-in simulator; `explicit` when `--demo` was given.
    Demo {
        options: DemoOptions,
        explicit: bool,
    },
}

/// Everything the exporter needs from its command line, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub source: Source,
    pub listen: SocketAddr,
    pub telemetry_path: String,
    pub web_config_file: Option<PathBuf>,
    pub state_path: Option<PathBuf>,
    /// `--state.reset`: move the state file aside before opening it.
    pub state_reset: bool,
    /// `--web.enable-lifecycle`: serve `POST /-/reload`.
    pub enable_lifecycle: bool,
    /// `--web.external-url`, without a trailing `/`.
    pub external_url: Option<String>,
    /// `(index, count)` with `index < count`.
    pub shard: Option<(u32, u32)>,
    /// `--state.import`: a state file to copy into the cluster's database at start.
    pub state_import: Option<PathBuf>,
}

impl Cli {
    /// Resolve and cross-check the serving flags. Errors name the flag. `file` is
    /// `--config.file` as read before the runtime started (its path and its configuration):
    /// with one the exporter serves it, without one it runs the demo.
    pub fn settings(&self, file: Option<(PathBuf, Config)>) -> Result<Settings> {
        if !self.telemetry_path.starts_with('/') {
            bail!("--web.telemetry-path must start with '/'");
        }
        let source = match file {
            Some((path, config)) => Source::File {
                path,
                config: Box::new(config),
            },
            None => Source::Demo {
                options: DemoOptions {
                    time_scale: self.demo.time_scale,
                    seed: self.demo.seed,
                    actions: self.demo.actions,
                    noisy_neighbour: self.demo.noisy_neighbour,
                    fleet: self.demo.fleet,
                },
                explicit: self.demo.demo,
            },
        };
        let hostname = std::env::var("HOSTNAME").unwrap_or_default();
        let cluster = matches!(&source, Source::File { config, .. } if config.cluster.is_some());
        if cluster {
            if self.shard_index.is_some() || self.shard_count.is_some() {
                bail!(
                    "--shard.index and --shard.count are not used with cluster: the members share the tenants by themselves (remove the flags)"
                );
            }
            if self.state_path.is_some() || self.state_reset {
                bail!(
                    "--state.path and --state.reset are not used with cluster: the state is in the cluster's database (to bring a state file into it, use --state.import FILE)"
                );
            }
        } else if self.state_import.is_some() && matches!(source, Source::File { .. }) {
            bail!(
                "--state.import needs a cluster: section in the configuration (it copies a state file into the cluster's database)"
            );
        }
        Ok(Settings {
            source,
            listen: parse_listen(&self.listen_address)?,
            telemetry_path: self.telemetry_path.clone(),
            web_config_file: self.web_config_file.clone(),
            state_path: self.state_path.clone(),
            state_reset: self.state_reset,
            enable_lifecycle: self.enable_lifecycle,
            external_url: self.external_url.as_deref().map(external_url).transpose()?,
            shard: shard(self.shard_index, self.shard_count, &hostname)?,
            state_import: self.state_import.clone(),
        })
    }
}

/// `--web.external-url`: an absolute http(s) URL without query or fragment, returned without
/// its trailing `/` so paths can be appended.
fn external_url(s: &str) -> Result<String> {
    let url = url::Url::parse(s)
        .map_err(|e| anyhow::anyhow!("--web.external-url {s:?} is not an absolute URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        bail!("--web.external-url {s:?} must be an http:// or https:// URL with a host");
    }
    if url.query().is_some() || url.fragment().is_some() {
        bail!("--web.external-url {s:?} must have no query or fragment");
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

impl Cli {
    /// What start-up refuses of the flags, for `--config.check`: [`Cli::settings`]'s checks
    /// (telemetry path, listen address, shard index and count, the index from `HOSTNAME`),
    /// with their messages. See: #24 (item 8).
    pub fn check_flags(&self) -> Result<()> {
        // Without the file: the flags' checks do not depend on it.
        self.settings(None).map(|_| ())
    }
}

impl Settings {
    /// Apply the command line's overrides to a configuration: the state path and the shard.
    pub fn apply(&self, mut config: Config) -> Config {
        if let Some(p) = &self.state_path {
            config.state_path = Some(p.clone());
        }
        match self.shard {
            Some((index, count)) => config.shard(index, count),
            None => config,
        }
    }
}

/// Resolve `--shard.index`, or derive it from a StatefulSet pod name (`name-3` → 3).
fn shard(index: Option<u32>, count: Option<u32>, hostname: &str) -> Result<Option<(u32, u32)>> {
    let Some(count) = count else {
        if index.is_some() {
            bail!("--shard.index needs --shard.count");
        }
        return Ok(None);
    };
    if count == 0 {
        bail!("--shard.count must be at least 1");
    }
    let index = match index {
        Some(i) => i,
        None => hostname
            .rsplit('-')
            .next()
            .and_then(|o| o.parse::<u32>().ok())
            .with_context(|| {
                format!(
                    "--shard.index not given and HOSTNAME {hostname:?} does not end in -<ordinal>"
                )
            })?,
    };
    if index >= count {
        bail!("--shard.index {index} must be less than --shard.count {count}");
    }
    Ok(Some((index, count)))
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn err(r: Result<impl std::fmt::Debug>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn shard_flags_are_checked_and_the_ordinal_comes_from_the_hostname() {
        assert_eq!(shard(None, None, "x").unwrap(), None);
        assert_eq!(shard(Some(1), Some(3), "").unwrap(), Some((1, 3)));
        assert_eq!(shard(None, Some(3), "exporter-2").unwrap(), Some((2, 3)));
        assert_eq!(
            err(shard(Some(1), None, "")),
            "--shard.index needs --shard.count"
        );
        assert_eq!(
            err(shard(None, Some(0), "")),
            "--shard.count must be at least 1"
        );
        assert_eq!(
            err(shard(Some(3), Some(3), "")),
            "--shard.index 3 must be less than --shard.count 3"
        );
        assert_eq!(
            err(shard(None, Some(3), "exporter")),
            "--shard.index not given and HOSTNAME \"exporter\" does not end in -<ordinal>"
        );
    }

    #[test]
    fn listen_addresses_in_prometheus_style() {
        assert_eq!(parse_listen(":9717").unwrap().to_string(), "0.0.0.0:9717");
        assert_eq!(
            parse_listen("127.0.0.1:1").unwrap().to_string(),
            "127.0.0.1:1"
        );
        assert_eq!(
            err(parse_listen("nope")),
            "--web.listen-address \"nope\" is not host:port: invalid socket address syntax"
        );
    }

    // See: #12
    #[test]
    fn an_unknown_level_word_is_refused_with_the_valid_ones() {
        let e = Cli::try_parse_from(["x", "--log.level", "verbose"]).unwrap_err();
        assert!(
            e.to_string().contains(
                "unknown log level \"verbose\": use one of off, error, warn, info, debug, trace"
            ),
            "{e}"
        );
        let ok = Cli::try_parse_from(["x", "--log.level", "info,mde_liveresponse_exporter=debug"]);
        assert!(ok.is_ok());
        // The log flags also work after a subcommand.
        let cli = Cli::try_parse_from([
            "x",
            "simulate",
            "--log.format",
            "logfmt",
            "--log.level",
            "warn",
        ])
        .unwrap();
        assert_eq!(cli.log_format, LogFormat::Logfmt);
        assert_eq!(cli.log_level, "warn");
    }

    #[test]
    fn the_external_url_is_absolute_http_and_loses_its_trailing_slash() {
        // See: #22
        let url = |v: &str| {
            Cli::parse_from(["x", "--web.external-url", v])
                .settings(None)
                .map(|s| s.external_url)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            url("https://mde.example/exporter/"),
            Ok(Some("https://mde.example/exporter".to_string()))
        );
        assert_eq!(
            url("http://10.0.0.1:9717"),
            Ok(Some("http://10.0.0.1:9717".to_string()))
        );
        assert_eq!(
            url("mde.example"),
            Err("--web.external-url \"mde.example\" is not an absolute URL: relative URL without a base".to_string())
        );
        assert_eq!(
            url("ftp://mde.example"),
            Err("--web.external-url \"ftp://mde.example\" must be an http:// or https:// URL with a host".to_string())
        );
        assert_eq!(
            url("https://mde.example/?a=1"),
            Err(
                "--web.external-url \"https://mde.example/?a=1\" must have no query or fragment"
                    .to_string()
            )
        );
        assert_eq!(
            Cli::parse_from(["x"])
                .settings(None)
                .map(|s| s.external_url)
                .ok(),
            Some(None)
        );
    }

    #[test]
    fn a_relative_telemetry_path_is_refused() {
        let cli = Cli::parse_from(["x", "--web.telemetry-path", "metrics"]);
        assert_eq!(
            err(cli.settings(None)),
            "--web.telemetry-path must start with '/'"
        );
    }
}
