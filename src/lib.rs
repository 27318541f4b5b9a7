//! # mde-liveresponse-exporter
//!
//! Watches Microsoft Defender for Endpoint Live Response machine actions and exposes
//! their transcripts (exit codes, errors) and the API quota as Prometheus metrics.
//!
//! ## Layout
//! - [`sim`]: a faithful MDE API simulator (token endpoints, machine actions, result
//!   links, blob storage, throttling, faults) used by `--demo`, `simulate` and the tests.
#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod collector;
pub mod config;
pub mod events;
pub mod mde;
pub mod metrics;
pub mod quota;
pub mod server;
pub mod shared;
pub mod state;
pub mod telemetry;
