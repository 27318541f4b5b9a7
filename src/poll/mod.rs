//! A tenant's poll, in the order it runs: discovery's pure decisions ([`discovery`]: filters,
//! watermark, in-flight batches, cadence), the poll loop that lists, fetches and hands each
//! result to the record ([`collector`]), and the slow machine-context refresh ([`machines`]).
//!
//! Owns: when and what to ask the API for. Does not own: the API client and its parsers
//! ([`crate::api`]), what a result becomes once retrieved ([`crate::record`]), the quota policy
//! ([`crate::quota`]).
pub mod collector;
pub mod discovery;
pub mod machines;
