//! A tenant's first discovery (no watermark yet), the collector's side: what is in flight,
//! then the window (#20), each read page by page into a [`Bootstrap`] that a poll cut short by
//! quota keeps for the next poll to go on with (#32 item 4).
//!
//! Owns the first discovery's listings, their fallback when the API refuses the status filter,
//! and when a poll cut short counts as progress. Does not own the filters (the pure
//! `discovery` module), the paging (`crate::api::Listing`), nor what is done with what was
//! found (`discover`, `results`).

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::discover::refused_filter;
use super::error::PollError;
use super::poller::{Bootstrap, InFlightListing, TenantCollector};
use crate::api::model::MachineAction;
use crate::api::{self, QuotaWait};
use crate::poll::discovery as disc;

/// A first discovery's answer: when it started, what is in flight, the window.
pub(super) type BootstrapListed = (DateTime<Utc>, Vec<MachineAction>, Vec<MachineAction>);

impl TenantCollector {
    /// The first discovery's two listings (#20): what is in flight (when the horizon reaches
    /// before the window), then the window whatever the status. Both are read page by page
    /// into [`Bootstrap`]: a poll cut short by quota keeps the pages read and the next poll
    /// goes on from the page it stopped at (#32 item 4), so a first discovery longer than one
    /// quota window ends after a few polls instead of starting over at every poll.
    /// `Ok(None)`: cut short after some pages, to go on at the next poll; the error when not
    /// one page got through. Returns (when the discovery started, what is in flight, the
    /// window).
    pub(super) async fn bootstrap_listings(
        &mut self,
        now: DateTime<Utc>,
        last_discovery: Option<DateTime<Utc>>,
        deadline: Instant,
    ) -> Result<Option<BootstrapListed>, PollError> {
        let mut b = match self.bootstrap.take() {
            Some(b) => *b,
            None => self.start_bootstrap(now, last_discovery),
        };
        let before = b.pages_read();
        match self.read_bootstrap(&mut b, deadline).await {
            Ok(()) => {}
            Err(e @ (api::Error::Quota { .. } | api::Error::Throttled { .. })) => {
                let (pages, actions) = (b.pages_read(), b.actions());
                let progress = pages > before;
                self.bootstrap = Some(Box::new(b));
                if !progress {
                    return Err(e.into());
                }
                tracing::info!(tenant = %self.tenant.name, error = %e, pages, actions, "first discovery cut short by quota: the pages read are kept, and it goes on from where it stopped at the next poll");
                self.note_outcome(format!(
                    "first discovery in progress: {pages} pages read ({actions} actions); it goes on at the next poll ({})",
                    e.kind().as_str()
                ));
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        let in_flight = match b.in_flight {
            None => Vec::new(),
            Some(f) if f.every_status => f
                .listing
                .into_items()
                .into_iter()
                .filter(|a| !a.status.is_final())
                .collect(),
            Some(f) => f.listing.into_items(),
        };
        Ok(Some((b.started, in_flight, b.window.into_items())))
    }

    /// A first discovery starting now: its two listings, nothing read yet.
    fn start_bootstrap(
        &self,
        now: DateTime<Utc>,
        last_discovery: Option<DateTime<Utc>>,
    ) -> Bootstrap {
        let sel = &self.tenant.selectors;
        let every_status = self.in_flight_filter_refused;
        let in_flight = disc::in_flight_filter(sel, now, last_discovery).map(|f| {
            let filter = if every_status {
                disc::incremental_filter(sel, disc::in_flight_since(sel, now))
            } else {
                f
            };
            InFlightListing {
                listing: self.client.machine_action_listing(&filter),
                every_status,
            }
        });
        let window = disc::bootstrap_filter(sel, now, last_discovery);
        Bootstrap {
            started: now,
            in_flight,
            window: self.client.machine_action_listing(&window),
        }
    }

    /// Read the first discovery's listings on from where they stopped. An API that refuses
    /// the status filter (400) gets the whole horizon listed whatever the status instead, of
    /// which the actions not final are kept: dearer, once, but no action in flight at the
    /// start is left unfollowed.
    async fn read_bootstrap(
        &mut self,
        b: &mut Bootstrap,
        deadline: Instant,
    ) -> Result<(), api::Error> {
        let wait = QuotaWait::Until(deadline);
        if let Some(f) = b.in_flight.as_mut()
            && !f.listing.is_done()
        {
            match self.client.read_machine_actions(&mut f.listing, wait).await {
                Ok(()) if !f.every_status => self.set_filter_supported(true),
                Ok(()) => {}
                Err(e) if !f.every_status && refused_filter(&e) => {
                    self.filter_refused(&e);
                    let sel = &self.tenant.selectors;
                    let all = disc::incremental_filter(sel, disc::in_flight_since(sel, b.started));
                    f.listing = self.client.machine_action_listing(&all);
                    f.every_status = true;
                    self.client
                        .read_machine_actions(&mut f.listing, wait)
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        self.client.read_machine_actions(&mut b.window, wait).await
    }
}
