//! What the collector of one tenant holds between and during polls: the tenant, its client,
//! the shared state, the pending queue, and where the last poll left off.
//!
//! Owns the [`TenantCollector`] type, a first discovery in progress ([`Bootstrap`]), its poll counters and the times it decides by (the
//! API's clock, see `crate::api::clock`). Does not own what a poll does with
//! them (`collector`, `discover`, `results`).

use std::sync::Arc;

use std::time::Duration;

use tokio::time::Instant;

use super::pending::PendingQueue;
use crate::api::Client;
use crate::config::Tenant;
use crate::shared::Shared;

/// The collector of one tenant.
pub struct TenantCollector {
    pub(super) tenant: Tenant,
    pub(super) client: Client,
    pub(super) shared: Arc<Shared>,
    pub(super) pending: PendingQueue,
    /// What the poll in progress did, for its log line.
    pub(super) stats: PollStats,
    /// When result fetching may go on after a 429 or a full budget, before the next poll.
    pub(super) resume_at: Option<Instant>,
    /// The actions followed by id were read again since this collector started, so the
    /// results of final ones are queued again (they are not in `pending` after a restart).
    pub(super) restored: bool,
    /// The followed actions a poll cut short by quota did not read again, in order: the next
    /// poll reads them first, before it lists the in-flight set again, so that a tight budget
    /// spent on listings cannot starve the re-reads. (#20)
    pub(super) rereads: Vec<String>,
    /// Actions the last full-window listing returned: the next sweep's expected cost.
    pub(super) last_sweep_actions: usize,
    /// Final actions followed for their results that were not read again yet since the
    /// start: each has at least one result waiting, which `pending` does not hold yet.
    pub(super) unrestored: usize,
    /// The API refused the status-filtered in-flight listing (400): every action in flight is
    /// read by id, as before #20, until the collector is started again (a restart, or a
    /// reload that changes the tenant's entry).
    pub(super) in_flight_filter_refused: bool,
    /// The API refused the one listing of what is new and what is in flight (400): a poll
    /// lists them apart, as two listings, until the collector is started again. (#20)
    pub(super) combined_filter_refused: bool,
    /// The time from this poll's start to the next, as the cadence chose it (#20).
    pub(super) interval: Duration,
    /// Polls in a row that found nothing in flight and nothing new (the quiet back-off,
    /// `discovery::cadence`).
    pub(super) quiet_polls: u32,
    /// A first discovery cut short by quota, with the pages it read: the next poll goes on
    /// with it instead of starting over (#32 item 4). Boxed: rarely there, and inline it took
    /// its two listings' room in every tenant's task for the tenant's life (#34).
    pub(super) bootstrap: Option<Box<Bootstrap>>,
    /// Which machine id each DNS name stands for in the `machine` label (#32 item 8).
    pub(super) names: super::names::MachineNames,
    /// The configuration in force after a reload that kept this tenant as it was (#34): taken
    /// between two polls, so the collector goes on with its state, cadence and bootstrap.
    pub(super) feed: Option<crate::shared::SharedFeed>,
}

/// Counts for the one info line each poll writes.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PollStats {
    pub(super) discovered: usize,
    pub(super) fetched: usize,
    /// Actions created since the last poll were listed (incremental), a followed action had
    /// changed, or results were fetched: the tenant is not quiet (the cadence, #33).
    pub(super) new_actions: bool,
    /// Configured `action_ids` the API answered as not final yet (the cadence, #33).
    pub(super) configured_open: usize,
}

impl TenantCollector {
    /// The API's time now, else the local time: the "now" of discovery's windows and of a
    /// result's queueing, compared later with the API's own timestamps (#24 item 7).
    pub(super) fn api_now(&self) -> chrono::DateTime<chrono::Utc> {
        self.client
            .clock()
            .now_or_local(chrono::Utc::now(), Instant::now())
    }

    /// The time to judge the in-flight horizon by: the API's, or `None` when the local clock
    /// disagrees with it by more than `max_clock_skew` or no answer told it yet (nothing is
    /// abandoned or given up for age then). See: #24 item 7
    pub(super) fn judge_time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.client
            .clock()
            .decide(
                &self.tenant.name,
                chrono::Utc::now(),
                Instant::now(),
                self.shared.settings.max_clock_skew,
            )
            .time()
    }
}

/// A first discovery in progress (no watermark yet), kept across polls cut short by quota
/// (#32 item 4): when it started and its two listings with the pages read so far. Lost at a
/// restart, or a reload that changes the tenant's entry (it then starts over, as before).
pub(super) struct Bootstrap {
    pub(super) started: chrono::DateTime<chrono::Utc>,
    /// What is in flight before the window; `None` when the window reaches the horizon.
    pub(super) in_flight: Option<InFlightListing>,
    /// The whole window, whatever the status.
    pub(super) window: crate::api::ActionListing,
}

/// The first discovery's in-flight listing.
pub(super) struct InFlightListing {
    pub(super) listing: crate::api::ActionListing,
    /// Listed whatever the status (the API refused the status filter): only the actions not
    /// final are kept of it.
    pub(super) every_status: bool,
}

impl Bootstrap {
    pub(super) fn pages_read(&self) -> usize {
        self.window.pages_read()
            + self
                .in_flight
                .as_ref()
                .map_or(0, |f| f.listing.pages_read())
    }

    pub(super) fn actions(&self) -> usize {
        self.window.len() + self.in_flight.as_ref().map_or(0, |f| f.listing.len())
    }
}
