//! What the exporter serves over HTTP besides the metrics contract: the status page,
//! `/probe`, `/transcripts`, `/-/reload`, scrapes under load, and hardening against hostile
//! answers and bad days.

pub mod hardening;
mod headers;
mod probe;
mod scale;
mod status_page;
mod transcripts;
