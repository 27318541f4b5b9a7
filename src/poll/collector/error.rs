//! Why a poll of the collector, or one result of it, did not complete.
//!
//! Owns [`PollError`] and its messages. Does not own the errors it wraps (`crate::api`,
//! `crate::record::state`) nor what a poll does about them (`collector`).

use crate::api;
use crate::record::state::StoreError;

/// Why a poll (or one result) did not complete.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error(transparent)]
    Api(#[from] api::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Nothing could be asked of the API this poll: every call was throttled (a 429, or
    /// the quota blocked after one) or had no room in the budget.
    #[error("no API call got through this poll: {0}")]
    Throttled(api::Error),
}
