//! The built-in demo: the simulator of the `mde-sim` crate on a loopback port, and a
//! configuration with one tenant pointing at it, whose two scripts that print findings are read
//! by `script_metrics:` rules (#21), so that `mde_script_*` series appear within one poll.
//!
//! Owns the demo's configuration. Does not own the simulator (`mde-sim`) nor serving (`app`).

use std::time::Duration;

use mde_sim::{SimConfig, Simulator};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::Error;
use crate::app::cli::DemoOptions;
use crate::config::{
    Config, JsonMetric, QuotaConfig, ScriptFormat, ScriptMetrics, ScriptRule, Secret, Selectors,
    Tenant,
};

/// Start the simulator on a loopback port and return it with a config that points at it.
pub async fn start_demo(opts: &DemoOptions) -> Result<(Simulator, Config, JoinHandle<()>), Error> {
    let scale = opts.time_scale.max(0.001);
    let sim_cfg = SimConfig {
        seed: opts.seed,
        actions: opts.actions,
        fleet: opts.fleet,
        script_metrics: true,
        ..SimConfig::default()
    }
    .time_scaled(scale);
    let sim = Simulator::new(sim_cfg);
    if opts.noisy_neighbour {
        // Half the per-minute budget of each endpoint goes to "someone else".
        sim.faults().noisy_neighbour(sim.config().per_minute / 2);
    }
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = {
        let sim = sim.clone();
        tokio::spawn(async move {
            if let Err(e) = sim.serve(listener, std::future::pending()).await {
                tracing::error!(error = %e, "simulator stopped");
            }
        })
    };
    let base = format!("http://{addr}");
    let url = |s: &str| url::Url::parse(s).map_err(|e| Error::Http(e.to_string()));
    let (tenant_id, client_id, secret) = sim.credentials();
    // The file's defaults, with a shorter poll so the demo shows results quickly, and one
    // tenant pointing at the simulator.
    let config = Config {
        poll_interval: Duration::from_secs(5)
            .div_f64(scale.max(1.0))
            .max(Duration::from_millis(200)),
        tenants: vec![Tenant {
            name: "demo".into(),
            tenant_id: tenant_id.to_string(),
            client_id: client_id.to_string(),
            auth: crate::config::Auth::ClientSecret(Secret::new(secret)),
            api_url: url(&base)?,
            login_url: url(&base)?,
            audience: crate::config::Cloud::Commercial.audience().to_string(),
            selectors: Selectors::default(),
            quota: QuotaConfig::default().time_scaled(scale),
            machine_context: crate::config::MachineContext {
                tags: vec![regex::Regex::new("^(?:.*)$").map_err(|e| Error::Http(e.to_string()))?],
                interval: Duration::from_secs(3600).div_f64(scale),
                ..crate::config::MachineContext::default()
            },
        }],
        script_metrics: demo_script_metrics(),
        ..Config::default()
    };
    Ok((sim, config, task))
}

/// The rules for the simulator's two scripts that print findings: Prometheus text from
/// `check-bitlocker.ps1`, one JSON object from `get-av-status.ps1`.
fn demo_script_metrics() -> ScriptMetrics {
    let metric = |name: &str, path: &str, help: &str| JsonMetric {
        name: name.into(),
        path: path.into(),
        help: Some(help.into()),
    };
    ScriptMetrics {
        rules: vec![
            ScriptRule::new(mde_sim::TEXT_SCRIPT, ScriptFormat::Prometheus, Vec::new()),
            ScriptRule::new(
                mde_sim::JSON_SCRIPT,
                ScriptFormat::Json,
                vec![
                    metric(
                        "av_enabled",
                        "antivirus_enabled",
                        "1 if Microsoft Defender Antivirus is enabled, reported by get-av-status.ps1",
                    ),
                    metric(
                        "av_signature_age_seconds",
                        "signature.age_seconds",
                        "Age of the antivirus signatures, reported by get-av-status.ps1",
                    ),
                    metric(
                        "av_quick_scan_age_seconds",
                        "quick_scan_age_seconds",
                        "Time since the last quick scan, reported by get-av-status.ps1",
                    ),
                ],
            ),
        ],
        ..ScriptMetrics::default()
    }
}
