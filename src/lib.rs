//! # mde-liveresponse-exporter
//!
//! Watches Microsoft Defender for Endpoint Live Response machine actions and exposes
//! their transcripts (exit codes, errors) and the API quota as Prometheus metrics.
//!
//! ## Layout
//! The data path runs one way: discovery → fetch → parse → account → state → metrics, and
//! a scrape only reads.
//! - [`cli`]: flags (low level) resolved into validated [`cli::Settings`] (high level).
//! - [`config`]: the YAML file: its raw schema, then each section validated by its own
//!   module (tenant, sign-in with its file reads, cloud URLs, quota, discovery, proxy, logs).
//!   A leaf but for the pure [`certificate`] (a wrong or expired certificate is refused at
//!   load), [`sign_in_file`] and [`shard`].
//! - [`shard`]: rendezvous sharding, which exporter of `count` serves a tenant (pure).
//! - [`certificate`]: PEM certificate and key, or a PKCS#12 (`.pfx`) file → a checked signing
//!   credential and the client assertion of `method: certificate` (imports nothing from this
//!   crate but [`sign_in_file`]).
//! - [`sign_in_file`]: the 1 MiB cap of every sign-in file (certificates, keys, `.pfx`,
//!   password, secret and federated token files).
//! - [`app`]: wiring: from a config to running collectors and the HTTP server; reloads; the
//!   demo (`app::demo`, the simulator of the `mde-sim` crate in-process); the binary's run
//!   ([`app::run`]: runtime size, `--config.check`, subcommands, signals).
//! - [`collector`]: one tenant's poll loop (`collector/mod.rs`: the poll order), its list
//!   calls (`discover`: one contract for both discovery modes), counting and fetching results
//!   exactly once (`results`) and the retry policy (`retry`).
//! - [`clock`]: the API's clock per tenant (the answers' `Date` header, carried by the
//!   monotonic clock) and the verdict whether time-based decisions (in-flight horizon, series
//!   expiry) may be taken: only when the local clock agrees with it within `max_clock_skew`.
//! - [`discovery`]: the pure core of discovery: filters, the watermark, batches of in-flight
//!   ids, which ids are read again and what stays followed (decisions only, no I/O).
//! - [`machines`]: the slow machine-context refresh (`mde_machine_info`, `mde_machine_tag`)
//!   for the machines that have per-machine series.
//! - [`mde`]: the API client, one method per endpoint (`mod`), every call metered: its error
//!   (`error`), sending with slot, quota, token, 401/429 (`send`), result downloads and their
//!   trust policy (`download`), the one `reqwest` client and its policy with the cap on
//!   requests in flight ([`mde::http`]), its token cache and sign-in methods ([`mde::auth`])
//!   and the pure parsers, one file per noun ([`mde::model`]).
//! - [`quota`]: the sliding-window quota policy, a pure core, and [`quota::SharedQuota`], the
//!   one name of a tenant's quota handle.
//! - [`script_metrics`]: script output as metrics (#21): Prometheus text-format samples
//!   amid transcript noise (`parse`) and one JSON object's numbers (`json`), both pure, and
//!   the current set per (tenant, machine, script) rendered at scrape time (`store`).
//! - [`state`]: what is remembered across restarts: the indexes and exactly-once rules
//!   (`state/mod.rs`), the redb file, its migration and reopening (`state/store.rs`).
//! - [`series`]: the per-machine series: set, restored after a start, expired, started at 0.
//! - [`shared`]: what collectors and the server share: the config in force, metrics, state,
//!   quotas, the collectors' settings, per-tenant status and readiness.
//! - [`metrics`]: the metric contract (`mod`, label sets in `labels`), the recording methods
//!   each subsystem calls ([`metrics::api`], [`metrics::results`], [`metrics::poll`],
//!   [`metrics::exporter`]), the `/metrics` encoder (`encode`) and the families read at
//!   scrape time (`collectors`). [`events`]: log events that also count.
//! - [`excerpt`]: what the transcript page may show of a run, bounded (kept in [`state`]).
//! - [`telemetry`]: logs, OTLP spans, exemplar ids.
//! - [`otlp_metrics`]: the metric contract pushed over OTLP (`OTEL_METRICS_EXPORTER=otlp`):
//!   the `/metrics` OpenMetrics text read back (`parse`), turned into OTLP metrics named for
//!   Prometheus's translation (`build`), sent over HTTP or gRPC (`send`).
//! - [`server`]: `/metrics`, health, readiness, reload and the status page.
//! - [`transcript`]: the `transcript` command (one result, as the API returns it).
//! - [`web`]: routes beyond `/metrics` and the status page: `/probe` (one tenant's series).
//!
//! The simulator (`crates/mde-sim`) and the exporter-toolkit web configuration
//! (`crates/exporter-web`) are crates of their own: the simulator cannot import what it
//! checks, and the web configuration is usable by any hyper/axum exporter.
#![forbid(unsafe_code)]

pub mod app;
pub mod certificate;
pub mod cli;
pub mod clock;
pub mod collector;
pub mod config;
pub mod discovery;
pub mod events;
pub mod excerpt;
pub mod machines;
pub mod mde;
pub mod metrics;
pub mod otlp_metrics;
pub mod quota;
pub mod script_metrics;
pub mod series;
pub mod server;
pub mod shard;
pub mod shared;
pub mod sign_in_file;
pub mod state;
pub mod telemetry;
pub mod transcript;
pub mod web;
