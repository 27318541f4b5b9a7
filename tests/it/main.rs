//! The exporter's integration tests, one test binary (`cargo test --test it`): the simulator,
//! the exporter in-process or as the real binary, and what a scrape, a log line or an OTLP
//! receiver shows. One module per area of the exporter, one file per subject under it; the
//! shared set-up (simulator and exporter start-up, scraping, the real binary) is `common`.
//! Unit tests stay next to their code in `src/`; the simulator's and the web crate's own tests
//! stay in their crates.
//!
//! Every test shares this one process with the others, so none may change what the process
//! holds for all: no `std::env::set_var`, no global tracing subscriber, no fixed port (every
//! listener binds 127.0.0.1:0). Environment variables and process-wide flags go to a spawned
//! binary ([`common::Binary`]). The one process-wide setting a test makes in-process is
//! `--web.external-url` (`web::transcripts`), which only changes the links to `/transcripts`
//! that no other test reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
mod common;

mod discovery;
mod lifecycle;
mod metrics;
mod quota;
mod results;
mod sign_in;
mod telemetry;
mod web;
