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
//!   demo (the simulator of the `mde-sim` crate in-process).
//! - [`collector`]: one tenant's poll loop: what to call next, exactly-once accounting.
//! - [`discovery`]: the pure core of incremental discovery: filters, the watermark, batches
//!   of in-flight ids.
//! - [`machines`]: the slow machine-context refresh (`mde_machine_info`, `mde_machine_tag`)
//!   for the machines that have per-machine series.
//! - [`mde`]: the API client (one method per endpoint, every call metered), its token cache
//!   and sign-in methods ([`mde::auth`]) and the pure parsers ([`mde::model`]).
//! - [`quota`]: the sliding-window quota policy, a pure core.
//! - [`state`]: what is remembered across restarts (redb).
//! - [`shared`]: what collectors and the server share: the config in force, metrics, state,
//!   quotas, per-tenant status, and the local housekeeping on them.
//! - [`metrics`]: the metric contract. [`events`]: log events that also count.
//! - [`telemetry`]: logs, OTLP spans, exemplar ids.
//! - [`server`]: `/metrics`, health, readiness, reload and the status page.
//! - [`transcript`]: the `transcript` command (one result, as the API returns it).
//!
//! The simulator (`crates/mde-sim`) and the exporter-toolkit web configuration
//! (`crates/exporter-web`) are crates of their own: the simulator cannot import what it
//! checks, and the web configuration is usable by any hyper/axum exporter.
#![forbid(unsafe_code)]

pub mod app;
pub mod certificate;
pub mod cli;
pub mod collector;
pub mod config;
pub mod discovery;
pub mod events;
pub mod machines;
pub mod mde;
pub mod metrics;
pub mod quota;
pub mod server;
pub mod shard;
pub mod shared;
pub mod sign_in_file;
pub mod state;
pub mod telemetry;
pub mod transcript;
