//! A faithful MDE Live Response API simulator on one address: AAD token endpoints (v1, v2),
//! machine actions (list with OData `$filter`/`$top`/`$skip`/`$orderby`/`$count` and
//! `@odata.nextLink`, get), result download links, SAS blob storage with expiry, per-client
//! per-endpoint sliding-window quotas answering the `"429"` body, and runtime fault injection.
//! The tenant is generated from a seed; everything that decides (windows, expiry, actions
//! finishing) runs on `tokio::time::Instant`, so tests can `pause()`; wall timestamps are an
//! anchor taken at [`Simulator::new`] plus elapsed simulator time.
//!
//! Owns the fake API and its ground truth ([`Simulator::truth`]) and call log
//! ([`Simulator::stats`]). It never depends on the exporter it checks (a crate of its own, so
//! the compiler enforces that); the exporter uses it only for `--demo`, `simulate` and tests.
//! Does not own anything of the exporter: what it is checked against is the API's documented
//! behaviour (`shared/mde-api.md`), not the exporter's code.
//!
//! - `cli`: the flags shared by the `mde-sim` binary and the exporter's `simulate`.
//! - `scenario`: the seeded tenant and the JSON view of an action at a moment.
//! - `routes`: the route table and the middleware in front of it.
//! - `gate`: the checks every call goes through, in order (count, delay, faults, bearer, quota).
//! - `respond`: the response shapes (MDE, quota, AAD and Azure Storage errors, JSON).
//! - `endpoints`: the endpoint names calls are counted under, and which have a quota.
//! - `actions`: the machine-action API (list, get, download link).
//! - `blob`: the blob container (SAS check, bytes, blob faults).
//! - `throttle`: the sliding windows.
//! - `filter`: the `$filter` language.
//! - `machines`: `GET /api/machines` and its `$filter`.
//! - `identity`: the token endpoints, client assertions (certificate, federated token) and the
//!   managed-identity metadata endpoint.
//! - `log`: the `mde-sim` binary's log lines (flat JSON, as the exporter writes them).
//! - `truth`: the ground-truth types [`Simulator::truth`] returns, and their tallies.
//! - `multi`: many tenants, each a whole simulator, behind one router (`--sim.tenants`).

mod actions;
mod blob;
pub mod cli;
mod clock;
mod endpoints;
mod filter;
mod gate;
mod identity;
pub mod log;
mod machines;
pub mod multi;
mod respond;
mod routes;
mod scenario;
mod throttle;
mod truth;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Timelike as _, Utc};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

pub use identity::{CertificateError, Identity};
pub use machines::TruthMachine;
use scenario::{Blob, SimAction};
pub use scenario::{
    FAILING_SCRIPT, Failing, FailingErrors, JSON_SCRIPT, TEXT_SCRIPT, failing_device,
    script_metrics_rules,
};
use throttle::Throttle;
pub use truth::{Truth, TruthAction, TruthFile, TruthNotRun, TruthTranscript};

/// Scenario and behaviour of the simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Seeds the scenario: the same seed gives the same tenant.
    pub seed: u64,
    pub machines: usize,
    /// Live Response actions; about 10% more non-Live-Response actions (Isolate,
    /// RunAntiVirusScan, ...; no commands) are added.
    pub actions: usize,
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// Calls per endpoint and client within `minute`.
    pub per_minute: u32,
    /// Calls per endpoint and client within `hour`.
    pub per_hour: u32,
    pub minute: Duration,
    pub hour: Duration,
    /// Lifetime of a result download link (the SAS `se`).
    pub link_ttl: Duration,
    pub token_ttl: Duration,
    /// Server page size when `$top` is absent or larger; beyond it, `@odata.nextLink`.
    pub page_size: usize,
    /// Actions not final at start (Pending/InProgress) become final within this horizon.
    pub finish_within: Duration,
    /// Creation times of already-final actions spread over this past.
    pub history: Duration,
    /// Application permissions granted to the app: the `roles` claim of its tokens. Reading
    /// machine actions, result links and machines needs `Machine.Read.All` or
    /// `Machine.ReadWrite.All` (else 403 Forbidden).
    pub roles: Vec<String>,
    /// Extra Live Response actions created one to three days ago and still `Pending` at
    /// start (queued for an offline device), final within `finish_within`: most succeed, every
    /// fourth times out with its commands never started. (#9)
    pub queued_for_days: usize,
    /// Extra final Live Response actions whose RunScript commands never ran, cycling through
    /// the four ways: the script is not in the library (command `Failed`, never started), the
    /// action timed out or was cancelled (commands `Created`), or an earlier PutFile failed.
    /// Every other one becomes final during the run (after `finish_within / 2`). (#9)
    pub not_run: usize,
    /// The fleet scenario (#20): this many extra Live Response actions of one script, each on
    /// a device of its own, created within the last 90 minutes and `Pending` on offline
    /// devices; every tenth device comes online during the run (`Succeeded` within
    /// `finish_within`), the others stay `Pending` until their 2-hour queue ends (`TimeOut`).
    pub fleet: usize,
    /// Two scripts of the library report findings in their output (#21): [`TEXT_SCRIPT`]
    /// prints Prometheus text-format samples, [`JSON_SCRIPT`] one JSON object, amid the
    /// transcript's noise ([`TruthTranscript::printed`] has the values). Off: they print
    /// only noise. Either way the same seed draws the same tenant.
    pub script_metrics: bool,
    /// The failing-fleet scenario (#36): this many extra devices each ran [`FAILING_SCRIPT`]
    /// once before the start, and it failed with errors of `failing.errors`' kind, paths,
    /// numbers and names the device's own. Off with 0 machines.
    pub failing: Failing,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            machines: 25,
            actions: 80,
            tenant_id: "00000000-0000-4000-8000-000000005e70".into(),
            client_id: "11111111-1111-4111-8111-111111111111".into(),
            client_secret: "sim-client-secret".into(),
            per_minute: 100,
            per_hour: 1500,
            minute: Duration::from_secs(60),
            hour: Duration::from_secs(3600),
            link_ttl: Duration::from_secs(30 * 60),
            token_ttl: Duration::from_secs(3599),
            page_size: 100,
            finish_within: Duration::from_secs(60),
            history: Duration::from_secs(12 * 3600),
            roles: vec!["Machine.Read.All".into(), "Machine.LiveResponse".into()],
            queued_for_days: 0,
            not_run: 0,
            fleet: 0,
            script_metrics: false,
            failing: Failing::default(),
        }
    }
}

impl SimConfig {
    /// Divide `minute`, `hour`, `link_ttl`, `token_ttl` and `finish_within` by `factor`
    /// (60: a minute lasts a second). Factors ≤ 0 or not finite leave the config unchanged.
    pub fn time_scaled(mut self, factor: f64) -> Self {
        if !(factor.is_finite() && factor > 0.0) {
            return self;
        }
        for d in [
            &mut self.minute,
            &mut self.hour,
            &mut self.link_ttl,
            &mut self.token_ttl,
            &mut self.finish_within,
        ] {
            *d = d.div_f64(factor);
        }
        self
    }
}

/// What a download can be made to return instead of the blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobFault {
    /// 404 `BlobNotFound`.
    NotFound,
    /// A `Content-Length` of 4 KiB, a few bytes, then the connection breaks.
    Truncated,
    /// 200 with bytes that are neither a transcript nor gzip.
    Garbage,
    /// 200 with this many bytes of a syntactically valid transcript, streamed.
    Huge(usize),
    /// 200 with a ~1 MiB gzip stream that inflates to 1 GiB of zeros.
    GzipBomb,
    /// 200 with a transcript (exit code 0, no errors) whose `script_output` is this text: what
    /// a compromised machine's script prints (#32 item 1). The exporter reads it under the
    /// rule of the script the action names. Shared: queued many times over, it is one copy.
    Printed(std::sync::Arc<str>),
}

/// What was called so far. Endpoint names: `token`, `list_machine_actions`,
/// `get_machine_action`, `get_result_download_link`, `download`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Every request received, throttled and failed ones included.
    pub requests: BTreeMap<String, u64>,
    /// 429s sent (quota, `throttle_next`, `fail_next(.., 429, ..)`).
    pub throttled: BTreeMap<String, u64>,
    /// Successful link mints per (action id, index).
    pub link_requests: BTreeMap<(String, u32), u64>,
    /// Simulator time of the first successful link mint per (action id, index): with
    /// [`Simulator::final_after`], how long after an action became final its result was asked
    /// for (the fleet benchmark, #20).
    pub first_link: BTreeMap<(String, u32), Duration>,
    /// Genuine 200 blob downloads per (action id, index); answers replaced by a
    /// [`BlobFault`] are not counted.
    pub downloads: BTreeMap<(String, u32), u64>,
    /// 403 `AuthenticationFailed` answers (expired link or bad signature).
    pub expired_downloads: u64,
    /// Machine actions served by the list endpoint, over all pages.
    pub list_items: u64,
    /// Bytes of the 200 bodies served, per endpoint (today: `list_machine_actions`).
    pub response_bytes: BTreeMap<String, u64>,
    /// Requests by the `Host` they were sent to (e.g. `127.0.0.1:9718` or `localhost:9718`).
    pub hosts: BTreeMap<String, u64>,
    /// Requests that carried a `Referer` header.
    pub with_referer: u64,
}

#[derive(Debug, Default)]
struct FaultState {
    /// Per endpoint, statuses to answer with, in order.
    fail_next: HashMap<String, VecDeque<u16>>,
    /// Per endpoint, injected 429s and their `Retry-After`.
    throttle_next: HashMap<String, VecDeque<Option<u64>>>,
    expire_links: bool,
    delay: HashMap<String, Duration>,
    blob: VecDeque<BlobFault>,
    malformed_api: HashMap<String, u32>,
    /// Action ids the list endpoint leaves out (an index that lags), see `hide_from_list`.
    hidden: std::collections::HashSet<String>,
    /// (path prefix, base URL, count): answer 302 to `base` + the same path and query.
    redirect: Vec<(String, String, u32)>,
    /// Every list page's `@odata.nextLink` is the page itself.
    loop_next_link: bool,
    /// The list endpoint ignores `$skip`: every page serves the first items again, under the
    /// nextLink an honest page would give.
    ignore_skip: bool,
    /// Raw items put first into every list page's `value`.
    list_items: Vec<Vec<u8>>,
    /// Result links point at this base URL instead of the simulator's own.
    link_base: Option<String>,
    /// (path prefix, header, value): added to every answer under the prefix, see `announce`.
    announce: Vec<(String, String, String)>,
    /// Listings whose `$filter` asks for `Pending` or `InProgress` answer 400 (#20).
    refuse_in_flight_filter: bool,
    /// Listings whose `$filter` nests the status clause in an `or` of dates answer 400 (#20).
    refuse_combined_filter: bool,
    /// Tags every machine carries after its own, see `machine_tags` (#24).
    extra_machine_tags: Vec<String>,
}

/// An issued token.
#[derive(Debug)]
struct Grant {
    client_id: String,
    expires: Instant,
    /// The `roles` claim: whether the API lets this token read.
    can_read: bool,
}

#[derive(Debug, Default)]
struct Mutable {
    tokens: HashMap<String, Grant>,
    /// Quota windows per (client id, endpoint).
    throttles: HashMap<(String, &'static str), Throttle>,
    stats: Stats,
    faults: FaultState,
    /// Certificates, federated tokens and managed identities of the app registration.
    identity: identity::IdentityState,
}

struct Inner {
    cfg: SimConfig,
    /// Simulator time zero; `now_wall` = `anchor` + time since `start`.
    start: Instant,
    anchor: DateTime<Utc>,
    /// The whole scenario, by creation time; immutable, what changes is the clock.
    actions: Vec<SimAction>,
    by_id: HashMap<String, usize>,
    /// Signs SAS links; a fresh simulator refuses another's links.
    signing_key: String,
    /// Never held across an await.
    state: Mutex<Mutable>,
    /// Moves the clock forward for tests (#20).
    skew: clock::Skew,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Mutable> {
        // A panicking test thread must not take the simulator down with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The simulator; cheap to clone (an `Arc`).
#[derive(Clone)]
pub struct Simulator {
    inner: Arc<Inner>,
}

/// A handle to inject faults at runtime; cheap to clone, thread-safe.
#[derive(Clone)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl Simulator {
    pub fn new(cfg: SimConfig) -> Simulator {
        let now = Utc::now();
        // Whole 100 ns ticks, so every timestamp survives the 7-digit JSON format exactly.
        let anchor = now
            .with_nanosecond(now.nanosecond() / 100 * 100)
            .unwrap_or(now);
        let actions = scenario::generate(&cfg, anchor);
        let by_id = actions
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let signing_key = format!(
            "sim-account-key-{}-{}",
            cfg.seed,
            scenario::guid(&mut rand::rng())
        );
        Simulator {
            inner: Arc::new(Inner {
                cfg,
                start: Instant::now(),
                anchor,
                actions,
                by_id,
                signing_key,
                state: Mutex::new(Mutable::default()),
                skew: clock::Skew::default(),
            }),
        }
    }

    /// Everything on one address: `/{tenant}/oauth2/...`, `/api/...`, `/blob/...`.
    pub fn router(&self) -> axum::Router {
        routes::router(self.clone())
    }

    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.cfg
    }

    /// (tenant id, client id, client secret).
    pub fn credentials(&self) -> (&str, &str, &str) {
        let c = &self.inner.cfg;
        (&c.tenant_id, &c.client_id, &c.client_secret)
    }

    pub fn faults(&self) -> Faults {
        Faults {
            inner: self.inner.clone(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.inner.lock().stats.clone()
    }

    /// The Live Response actions that are final now, with their results.
    pub fn truth(&self) -> Truth {
        let elapsed = self.elapsed();
        let mut truth = Truth::default();
        let final_lr = self
            .inner
            .actions
            .iter()
            .filter(|a| a.is_live_response() && a.is_final_at(elapsed));
        for a in final_lr {
            truth.actions.push(TruthAction {
                id: a.id.clone(),
                machine_id: a.machine_id.clone(),
                computer_dns_name: a.dns.clone(),
                status: a.status.to_string(),
                requestor: a.requestor.to_string(),
                commands: a
                    .commands
                    .iter()
                    .map(|c| (c.kind.to_string(), c.status.to_string()))
                    .collect(),
            });
            for c in &a.commands {
                if c.kind == "RunScript" && c.status != "Completed" {
                    let reason = match (c.status, a.status) {
                        ("Failed", _) => "command_failed",
                        (_, "TimeOut") => "action_timeout",
                        (_, "Cancelled") => "action_cancelled",
                        _ => "action_failed",
                    };
                    truth.not_run.push(TruthNotRun {
                        action_id: a.id.clone(),
                        index: c.index,
                        machine: a.dns.clone(),
                        script: c.params.first().map(|(_, s)| s.clone()).unwrap_or_default(),
                        reason,
                        last_update: a.finished,
                    });
                }
                match &c.blob {
                    Some(Blob::Transcript {
                        script,
                        exit_code,
                        errors_present,
                        malformed,
                        printed,
                        ..
                    }) => truth.transcripts.push(TruthTranscript {
                        action_id: a.id.clone(),
                        index: c.index,
                        machine: a.dns.clone(),
                        script: script.clone(),
                        exit_code: *exit_code,
                        errors_present: *errors_present,
                        end_time: c.end.unwrap_or(a.finished),
                        last_update: a.finished,
                        malformed: *malformed,
                        printed: printed.clone(),
                    }),
                    Some(Blob::File { gz }) => truth.files.push(TruthFile {
                        action_id: a.id.clone(),
                        index: c.index,
                        compressed_bytes: gz.len() as u64,
                    }),
                    None => {}
                }
            }
        }
        truth
    }

    /// Live Response actions not final now: (id, status, creation time), oldest first.
    pub fn in_flight(&self) -> Vec<(String, &'static str, DateTime<Utc>)> {
        let elapsed = self.elapsed();
        self.inner
            .actions
            .iter()
            .filter(|a| a.is_live_response() && !a.is_final_at(elapsed))
            .map(|a| (a.id.clone(), a.status_at(elapsed), a.created))
            .collect()
    }

    /// Every Live Response action of the scenario, final or not: (id, creation time).
    pub fn live_response_actions(&self) -> Vec<(String, DateTime<Utc>)> {
        self.inner
            .actions
            .iter()
            .filter(|a| a.is_live_response())
            .map(|a| (a.id.clone(), a.created))
            .collect()
    }

    fn elapsed(&self) -> Duration {
        self.inner.start.elapsed() + self.inner.skew.offset()
    }

    fn now_wall(&self) -> DateTime<Utc> {
        self.inner.anchor + chrono::Duration::from_std(self.elapsed()).unwrap_or_default()
    }

    /// The SAS `sig`: base64 of SHA-256 over key, blob path and expiry.
    fn sign(&self, path: &str, se: &str) -> String {
        use base64::Engine as _;
        let digest = Sha256::digest(format!("{}{path}{se}", self.inner.signing_key).as_bytes());
        base64::engine::general_purpose::STANDARD.encode(digest)
    }
}

impl Faults {
    fn with(&self, f: impl FnOnce(&mut FaultState)) {
        f(&mut self.inner.lock().faults);
    }

    /// The next `n` requests to `endpoint` answer `status` with that endpoint's error body
    /// (MDE JSON, AAD JSON for `token`, Azure XML for `download`).
    pub fn fail_next(&self, endpoint: &str, status: u16, n: u32) {
        self.with(|f| {
            f.fail_next
                .entry(endpoint.into())
                .or_default()
                .extend(std::iter::repeat_n(status, n as usize));
        });
    }

    /// While `on`, a listing whose `$filter` selects `status eq 'Pending'` or
    /// `status eq 'InProgress'` answers 400 `ODataError`, as an API that does not accept the
    /// status filter would (#20).
    pub fn refuse_in_flight_filter(&self, on: bool) {
        self.with(|f| f.refuse_in_flight_filter = on);
    }

    /// While `on`, a listing whose `$filter` joins a creation date `or` a status clause
    /// (what is new and what is in flight in one listing) answers 400 `ODataError`; the two
    /// apart are still accepted (#20).
    pub fn refuse_combined_filter(&self, on: bool) {
        self.with(|f| f.refuse_combined_filter = on);
    }

    /// The next `n` requests to `endpoint` get the quota 429, with `Retry-After` when `Some`.
    pub fn throttle_next(&self, endpoint: &str, n: u32, retry_after: Option<u64>) {
        self.with(|f| {
            f.throttle_next
                .entry(endpoint.into())
                .or_default()
                .extend(std::iter::repeat_n(retry_after, n as usize));
        });
    }

    /// Another client of the same app registration makes `n` calls to `endpoint` now. Like
    /// real calls, those refused by the windows spend nothing.
    pub fn spend_quota(&self, endpoint: &str, n: u32) {
        let Some(ep) = endpoints::QUOTA_ENDPOINTS.iter().find(|e| **e == endpoint) else {
            return;
        };
        let cfg = &self.inner.cfg;
        let now = Instant::now();
        let mut st = self.inner.lock();
        let t = st
            .throttles
            .entry((cfg.client_id.clone(), *ep))
            .or_insert_with(|| Throttle::new(cfg.per_minute, cfg.minute, cfg.per_hour, cfg.hour));
        for _ in 0..n {
            if t.try_acquire(now).is_err() {
                break;
            }
        }
    }

    /// A background neighbour calls every quota'd endpoint `calls_per_minute` times per
    /// (configured) minute, until the simulator is dropped. Needs a Tokio runtime.
    pub fn noisy_neighbour(&self, calls_per_minute: u32) {
        if calls_per_minute == 0 {
            return;
        }
        let weak = Arc::downgrade(&self.inner);
        let every = (self.inner.cfg.minute / calls_per_minute).max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let me = Faults { inner };
                for ep in endpoints::QUOTA_ENDPOINTS {
                    me.spend_quota(ep, 1);
                }
            }
        });
    }

    /// While on, newly minted links are already expired.
    pub fn expire_links(&self, on: bool) {
        self.with(|f| f.expire_links = on);
    }

    /// Every answer of `endpoint` waits `d` first (zero: no delay).
    pub fn delay(&self, endpoint: &str, d: Duration) {
        self.with(|f| {
            f.delay.insert(endpoint.into(), d);
        });
    }

    /// Every token issued so far becomes invalid: the next API call with one gets 401.
    pub fn revoke_tokens(&self) {
        self.inner.lock().tokens.clear();
    }

    /// The next `n` downloads (of existing blobs, with valid links) answer `kind`.
    pub fn blob_fault(&self, kind: BlobFault, n: u32) {
        self.with(|f| f.blob.extend(std::iter::repeat_n(kind, n as usize)));
    }

    /// While `hidden`, the list endpoint leaves these actions out (as an API index that lags
    /// would); `GET /api/machineactions/{id}` still serves them.
    pub fn hide_from_list(&self, ids: &[String], hidden: bool) {
        self.with(|f| {
            for id in ids {
                if hidden {
                    f.hidden.insert(id.clone());
                } else {
                    f.hidden.remove(id);
                }
            }
        });
    }

    /// Hostile: the next `n` requests whose path starts with `prefix` (`/api/`, `/blob/`)
    /// answer `302 Found` to `base` (e.g. `http://localhost:<port>`, another host name for
    /// the same simulator) with the same path and query. See [`Stats::hosts`].
    pub fn redirect_next(&self, prefix: &str, base: &str, n: u32) {
        self.with(|f| f.redirect.push((prefix.into(), base.into(), n)));
    }

    /// Hostile: while on, every list page's `@odata.nextLink` points at the page itself.
    pub fn loop_next_link(&self, on: bool) {
        self.with(|f| f.loop_next_link = on);
    }

    /// Hostile: while on, the list endpoint ignores `$skip`: every page serves the first
    /// items again, each under a new nextLink (no URL repeats).
    pub fn ignore_skip(&self, on: bool) {
        self.with(|f| f.ignore_skip = on);
    }

    /// Hostile: every list page carries these raw items first (bytes as given: invalid
    /// UTF-8, lone surrogate escapes, deep nesting...). Empty: none.
    pub fn list_items(&self, items: Vec<Vec<u8>>) {
        self.with(|f| f.list_items = items);
    }

    /// Hostile: every machine of `GET /api/machines` also carries these tags after its own
    /// (thousands, some of thousands of characters: a fleet whose tags nobody curates).
    /// Empty: only its own. (#24)
    pub fn machine_tags(&self, tags: Vec<String>) {
        self.with(|f| f.extra_machine_tags = tags);
    }

    /// Hostile: result links point at `base` (another host) instead of the simulator's own
    /// address; `None` restores them.
    pub fn link_base(&self, base: Option<&str>) {
        self.with(|f| f.link_base = base.map(str::to_string));
    }

    /// The next `n` answers of API `endpoint` that pass auth and quota are 200 with a
    /// broken JSON body.
    pub fn malformed_api(&self, endpoint: &str, n: u32) {
        self.with(|f| *f.malformed_api.entry(endpoint.into()).or_default() += n);
    }
}

#[cfg(test)]
mod tests;
