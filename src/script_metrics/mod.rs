//! Script output as metrics (#21): what a fleet-wide script prints (Prometheus text-format
//! sample lines, or one JSON object) becomes per-machine series.
//!
//! Owns reading samples out of a transcript's output: [`parse`] (the text format amid
//! transcript noise, with the bounds of one transcript) and [`json`] (one JSON object and its
//! dotted paths), both pure; [`pool`], where those readings run (off the async workers,
//! bounded in slots and time); and [`store`], the current set per (tenant, machine, script)
//! rendered at scrape time. Does not own which scripts are read nor their names
//! (`config::script_metrics`), fetching transcripts (`collector`) nor the state file.

pub mod json;
pub mod parse;
pub mod pool;
pub mod store;
