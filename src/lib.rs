//! # mde-liveresponse-exporter
//!
//! Watches Microsoft Defender for Endpoint Live Response machine actions and exposes
//! their transcripts (exit codes, errors) and the API quota as Prometheus metrics.
//!
//! ## Layout
//! The folders follow the data path, one way, and a scrape only reads:
//!
//! ```text
//! app ─▶ poll ─▶ api            (list, fetch, parse)
//!          └───▶ record         (outcome → state → series, excerpts, events)
//!                  └──▶ metrics ◀── scrape (app::server, app::web), otlp_metrics
//! ```
//! - [`app`]: the face: wiring from a config to running collectors and the HTTP server,
//!   reloads, the demo, the binary's run, flags ([`app::cli`]), `/metrics` and the status page
//!   ([`app::server`]), the renders they share ([`app::render`]), `/probe` and `/transcripts`
//!   ([`app::web`]), the `transcript` command ([`app::transcript_command`]).
//! - [`poll`]: a tenant's poll: discovery's pure decisions, the collector's poll order, the
//!   machine-context refresh.
//! - [`api`]: the MDE API client, one method per endpoint, every call metered and governed;
//!   sign-in, result downloads and their trust policy, the pure parsers ([`api::model`]) and
//!   the API's clock ([`api::clock`]).
//! - [`record`]: what a result becomes: the exactly-once state over its storage, the
//!   per-machine series, transcript excerpts and log events.
//! - [`shared`]: what collectors and the server share: the config in force, metrics, state,
//!   quotas, per-tenant status and readiness.
//! - [`metrics`]: the metric contract, the recording methods, the `/metrics` encoder.
//! - [`script_metrics`]: script output as metrics: the parsers (pure) and the store rendered
//!   at scrape time.
//! - [`otlp_metrics`]: the metric contract pushed over OTLP.
//! - [`quota`]: the sliding-window quota policy, a pure core.
//! - [`telemetry`]: logs, OTLP spans, exemplar ids.
//! - [`config`]: the YAML file, each section validated; its leaves (signing credentials,
//!   sign-in files, shards). The ground floor: it imports nothing of this crate.
//!
//! The simulator (`crates/mde-sim`), the exporter-toolkit web configuration
//! (`crates/exporter-web`) and the flat log line both programs write (`crates/flat-log`) are
//! crates of their own: the simulator cannot import what it checks, and the web configuration
//! is usable by any hyper/axum exporter.
#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod otlp_metrics;
pub mod poll;
pub mod quota;
pub mod record;
pub mod script_metrics;
pub mod shared;
pub mod telemetry;
