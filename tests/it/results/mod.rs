//! Results: every transcript and file fetched and counted exactly once against the
//! simulator's ground truth, under faults; script output as metrics; the parsers of what
//! comes from outside. Faults of the quota (429s, Retry-After) are in `quota`.

pub mod exporter;
mod properties;
pub mod resilience;
mod script_metrics;
mod script_metrics_exposition;
mod script_metrics_hostile;
mod script_metrics_parse;
mod signatures;
