//! What a retrieved result becomes and what is remembered of it: one value per transcript
//! applied to its sinks in one order ([`outcome`]), the exactly-once state over its storage
//! ([`state`]), the per-machine series ([`series`]), the transcript excerpts the transcript
//! page may show ([`excerpt`]), the failure signature of a run ([`signature`]) and the log
//! events that also count ([`events`]).
//!
//! Owns: the exactly-once rules and what is written where once a result is in hand. Does not
//! own: asking the API (that is [`crate::poll`] and [`crate::api`]), the metric contract
//! ([`crate::metrics`]).
pub mod events;
pub mod excerpt;
pub mod outcome;
pub mod series;
pub mod signature;
pub mod state;
