//! The bounds of the duration and size keys of the config file: the range each duration key
//! must fall in, beyond which a value is a typo (or an attack on the arithmetic:
//! `poll_interval: 10000000000000000000s` parses, then overflows a timer), and the largest
//! sizes and counts.
//!
//! Owns these constants (public as `config::limits`). Does not own checking a value against
//! them nor how a bound is shown in a message (`check`).

use std::time::Duration;

/// Seconds in a day.
pub(super) const DAY: u64 = 24 * 3600;

pub const POLL_INTERVAL: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(DAY));
pub const REQUEST_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(3600));
pub const SERIES_TTL: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(365 * DAY));
/// `max_clock_skew`: beyond a day the check would let a clock that jumped past
/// `series_ttl`'s default act.
pub const MAX_CLOCK_SKEW: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(DAY));
/// Discovery never reaches back further than 30 days.
pub const LOOKBACK_MAX: Duration = Duration::from_secs(30 * DAY);
pub const QUOTA_WINDOW_MAX: Duration = Duration::from_secs(7 * DAY);
/// Largest `max_transcript_bytes`: a transcript is held in memory while it is read.
pub const MAX_TRANSCRIPT_BYTES: u64 = 1 << 30;
/// `max_requests_in_flight`: each request in flight holds a connection (a file
/// descriptor) and its buffers.
pub const MAX_REQUESTS_IN_FLIGHT: (usize, usize) = (1, 4096);
/// `failure_signatures_top_k`: each signature shown is a series per script (#36).
pub const FAILURE_SIGNATURES_TOP_K: (usize, usize) = (1, 100);
