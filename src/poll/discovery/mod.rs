//! The pure core of discovery: decisions only, no I/O (no sockets, no clock, no state file).
//!
//! - [`filter`]: the OData filters a poll sends (full window, bootstrap, incremental, the
//!   in-flight set, id batches under a URL-length cap) and how the watermark moves.
//! - [`cadence`]: how long until the next poll, and why (the list budget share, the bounds,
//!   the quiet back-off).
//! - [`follow`]: which followed actions are read again by id, which configured ids are asked
//!   for, whether a sweep is due, what stays followed after a poll and what is abandoned.
//! - here: why a `RunScript` command never ran, and the list-quota arithmetic of a sweep.
//!
//! Owns these decisions as functions of their inputs (times, ids, statuses, quota windows).
//! Does not own sending (the client), remembering (the state) nor the order of work in a
//! poll (the collector).

pub mod cadence;
pub mod filter;
pub mod follow;

pub use cadence::*;
pub use filter::*;
pub use follow::*;

use crate::api::model::{ActionStatus, CommandStatus};

/// The page size assumed when estimating a sweep's cost from the actions it found last time.
/// The API's default page size is not documented; 100 is what the simulator serves.
pub const ASSUMED_PAGE: usize = 100;

/// Why a `RunScript` command of a final action produced no transcript; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRunReason {
    /// The command itself failed (for example, the script is not in the library).
    CommandFailed,
    /// The action timed out (often queued on an offline device) before the command ran.
    ActionTimeout,
    /// The action was cancelled before the command ran.
    ActionCancelled,
    /// An earlier command of the action failed, so this one never started.
    ActionFailed,
}

impl NotRunReason {
    pub fn as_str(self) -> &'static str {
        match self {
            NotRunReason::CommandFailed => "command_failed",
            NotRunReason::ActionTimeout => "action_timeout",
            NotRunReason::ActionCancelled => "action_cancelled",
            NotRunReason::ActionFailed => "action_failed",
        }
    }
}

/// Why a command of a *final* action did not run, or `None` when it completed (or the
/// combination is one the API does not produce: a command not completed in a succeeded action).
pub fn not_run_reason(action: &ActionStatus, command: &CommandStatus) -> Option<NotRunReason> {
    match command {
        CommandStatus::Completed => None,
        CommandStatus::Failed => Some(NotRunReason::CommandFailed),
        _ => match action {
            ActionStatus::TimeOut => Some(NotRunReason::ActionTimeout),
            ActionStatus::Cancelled => Some(NotRunReason::ActionCancelled),
            ActionStatus::Failed => Some(NotRunReason::ActionFailed),
            _ => None,
        },
    }
}

/// Whether a sweep expected to take `sweep_pages` list calls fits in `spare` while leaving
/// `next_poll_calls` for the next poll's own discovery.
pub fn sweep_fits(spare: u32, sweep_pages: usize, next_poll_calls: usize) -> bool {
    (spare as usize) >= sweep_pages.saturating_add(next_poll_calls)
}

/// The list calls one incremental poll is expected to need: one listing, and for what is in
/// flight either the in-flight listing and one batch of changed ids (`in_flight_listing`, #20)
/// or one batch per `batch_size` ids in flight (the fallback when the API refuses the status
/// filter).
pub fn poll_cost(in_flight: usize, batch_size: usize, in_flight_listing: bool) -> usize {
    match (in_flight, in_flight_listing) {
        (0, _) => 1,
        (_, true) => 3,
        (n, false) => 1 + n.div_ceil(batch_size.max(1)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use std::time::Duration;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
    }

    // See: #9
    #[test]
    fn why_a_script_did_not_run() {
        use ActionStatus as A;
        use CommandStatus as C;
        assert_eq!(not_run_reason(&A::Succeeded, &C::Completed), None);
        assert_eq!(not_run_reason(&A::Failed, &C::Completed), None);
        assert_eq!(
            not_run_reason(&A::Failed, &C::Failed),
            Some(NotRunReason::CommandFailed)
        );
        assert_eq!(
            not_run_reason(&A::Failed, &C::Created),
            Some(NotRunReason::ActionFailed)
        );
        assert_eq!(
            not_run_reason(&A::TimeOut, &C::Created),
            Some(NotRunReason::ActionTimeout)
        );
        assert_eq!(
            not_run_reason(&A::Cancelled, &C::InProgress),
            Some(NotRunReason::ActionCancelled)
        );
        assert_eq!(
            not_run_reason(&A::TimeOut, &C::Failed),
            Some(NotRunReason::CommandFailed)
        );
        assert_eq!(not_run_reason(&A::Succeeded, &C::Created), None);
    }

    #[test]
    fn horizon_and_sweep_arithmetic() {
        let day = Duration::from_secs(86400);
        assert!(!past_horizon(
            now() - chrono::Duration::days(3),
            7 * day,
            now()
        ));
        assert!(past_horizon(
            now() - chrono::Duration::days(8),
            7 * day,
            now()
        ));
        let hour = Duration::from_secs(3600);
        assert!(sweep_due(None, now(), hour));
        assert!(!sweep_due(
            Some(now() - chrono::Duration::minutes(59)),
            now(),
            hour
        ));
        assert!(sweep_due(
            Some(now() - chrono::Duration::hours(1)),
            now(),
            hour
        ));
        assert_eq!(poll_cost(0, 20, true), 1);
        assert_eq!(poll_cost(21, 20, false), 3);
        assert_eq!(poll_cost(2000, 20, false), 101);
        assert_eq!(poll_cost(2000, 20, true), 3);
        assert!(sweep_fits(40, 30, 10));
        assert!(!sweep_fits(40, 31, 10));
    }
}
