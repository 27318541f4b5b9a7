//! The simulator's command line, shared by the `mde-sim` binary and the exporter's
//! `simulate` subcommand so that both take the same flags.
//!
//! Owns flag names and turning them into a [`SimConfig`]; does not own logging (each binary
//! sets up its own) or the simulator's behaviour.

use std::future::Future;

use tokio::net::TcpListener;

use crate::{SimConfig, Simulator};

/// Flags of a stand-alone simulator.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address for the simulator.
    #[arg(long = "web.listen-address", default_value = "127.0.0.1:9718")]
    pub listen_address: String,
    /// Seed of the scenario: the same seed gives the same tenant.
    #[arg(long = "sim.seed", default_value_t = SimConfig::default().seed)]
    pub seed: u64,
    /// Number of machines in the simulated tenant.
    #[arg(long = "sim.machines", default_value_t = SimConfig::default().machines)]
    pub machines: usize,
    /// Number of Live Response actions in the scenario.
    #[arg(long = "sim.actions", default_value_t = SimConfig::default().actions)]
    pub actions: usize,
    /// Spread the already-final actions' creation times over this past (e.g. 24h).
    #[arg(long = "sim.history", value_parser = humantime_duration, default_value = "12h")]
    pub history: std::time::Duration,
    /// Extra actions queued for one to three days, still Pending at start.
    #[arg(long = "sim.queued-for-days", default_value_t = 0)]
    pub queued_for_days: usize,
    /// Extra actions whose RunScript commands never ran.
    #[arg(long = "sim.not-run", default_value_t = 0)]
    pub not_run: usize,
    /// The fleet scenario: this many extra actions of one script, Pending on offline devices,
    /// every tenth coming online during the run.
    #[arg(long = "sim.fleet", default_value_t = 0)]
    pub fleet: usize,
    /// Two scripts print findings for `script_metrics:` rules (Prometheus text and JSON).
    #[arg(long = "sim.script-metrics")]
    pub script_metrics: bool,
    /// 60 makes a minute last one second.
    #[arg(long = "sim.time-scale", default_value_t = 1.0)]
    pub time_scale: f64,
    /// Serve this many tenants, each with its own credentials, scenario (seed + i) and quota:
    /// tenant 0 has the single simulator's credentials, tenant i > 0 tenant id
    /// `{i:08x}-0000-4000-8000-000000005e70`, client id `{i:08x}-1111-4111-8111-111111111111`
    /// and secret `sim-client-secret-{i}`.
    #[arg(long = "sim.tenants", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub tenants: u32,
    /// The first this many result downloads answer a valid transcript of
    /// `--sim.huge-transcript-bytes` bytes instead of the blob (single tenant only; the
    /// transcript memory benchmark, benches/scripts/transcript-memory.sh).
    #[arg(long = "sim.huge-transcripts", default_value_t = 0)]
    pub huge_transcripts: u32,
    #[arg(long = "sim.huge-transcript-bytes", default_value_t = 16 * 1024 * 1024)]
    pub huge_transcript_bytes: usize,
}

/// `12h`, `30m`, `90s`, `2d`: a number and a unit.
fn humantime_duration(s: &str) -> Result<std::time::Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 12h"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(std::time::Duration::from_secs(n * secs))
}

impl SimArgs {
    /// The scenario these flags describe.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            seed: self.seed,
            machines: self.machines,
            actions: self.actions,
            history: self.history,
            queued_for_days: self.queued_for_days,
            not_run: self.not_run,
            fleet: self.fleet,
            script_metrics: self.script_metrics,
            ..SimConfig::default()
        }
        .time_scaled(self.time_scale.max(0.001))
    }

    /// Bind, log where the simulator listens and with which credentials, and serve until
    /// `shutdown` completes.
    pub async fn run(
        &self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let listener = TcpListener::bind(&self.listen_address)
            .await
            .with_context(|| format!("cannot listen on {}", self.listen_address))?;
        if self.tenants > 1 {
            let multi = crate::multi::MultiSim::new(&self.config(), self.tenants as usize);
            tracing::info!(
                address = %listener.local_addr()?,
                tenants = self.tenants,
                "simulator listening (tenant 0: the single simulator's credentials; tenant i > 0: tenant id {{i:08x}}-0000-4000-8000-000000005e70, client id {{i:08x}}-1111-4111-8111-111111111111, secret sim-client-secret-{{i}}; GET /sim/summary for the ground truth)"
            );
            multi.serve(listener, shutdown).await?;
            return Ok(());
        }
        let sim = Simulator::new(self.config());
        if self.huge_transcripts > 0 {
            sim.faults().blob_fault(
                crate::BlobFault::Huge(self.huge_transcript_bytes),
                self.huge_transcripts,
            );
        }
        let (tenant, client, _) = sim.credentials();
        tracing::info!(
            address = %listener.local_addr()?,
            tenant,
            client_id = client,
            "simulator listening (client secret: see SimConfig defaults)"
        );
        sim.serve(listener, shutdown).await?;
        Ok(())
    }
}
