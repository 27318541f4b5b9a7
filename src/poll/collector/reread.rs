//! Reading followed actions again by id: one by one on the get-by-id endpoint when they fit
//! its budget now (#33), else in `id eq … or …` batches on the list endpoint (#20).
//!
//! A followed action that leaves the in-flight listing has changed (it became final): it is
//! read in the same poll, and its results are fetched in that poll too. Read in a batch, it
//! costs a second list call, and the cadence then waits twice as long before the next poll
//! (9.6 s instead of 5 s at half the budget) exactly while results are finishing. The
//! get-by-id endpoint has a budget of its own (100 a minute, 1,500 an hour documented) that
//! discovery otherwise spends only on configured `action_ids`.
//!
//! Owns these calls and where a poll cut short by quota stops among them (what was read is
//! kept, the rest waits for the next poll). Does not own which ids are read nor how they are
//! sent (the pure `discovery::follow`, `discovery::filter`), nor what is done with the answers
//! (`discover`).

use futures_util::future::join_all;
use tokio::time::Instant;

use super::error::PollError;
use super::poller::TenantCollector;
use crate::api::model::MachineAction;
use crate::api::{self, ErrorKind, QuotaWait};
use crate::config::QuotaScope;
use crate::poll::discovery as disc;
use crate::quota::Endpoint;

/// What reading followed actions again gave.
#[derive(Default)]
pub(super) struct Reread {
    /// The answers, in no particular order.
    pub(super) found: Vec<MachineAction>,
    /// The ids not read because the budget ran out, in order: the next poll reads them first.
    pub(super) unread: Vec<String>,
    /// Why the reading stopped early (quota or a 429).
    pub(super) cut_short: Option<api::Error>,
}

impl TenantCollector {
    /// Read `ids` again, one by one when [`disc::reread_one_by_one`] says so, else in batches.
    pub(super) async fn reread(
        &self,
        ids: &[String],
        deadline: Instant,
    ) -> Result<Reread, PollError> {
        let sel = &self.tenant.selectors;
        let room = self
            .client
            .quota()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remaining(Endpoint::GetMachineAction, Instant::now());
        let one_by_one = disc::reread_one_by_one(
            ids.len(),
            sel.discovery.batch_size,
            room,
            sel.action_ids.len(),
            self.tenant.quota.scope == QuotaScope::Shared,
        );
        if one_by_one {
            self.reread_one_by_one(ids, deadline).await
        } else {
            self.reread_in_batches(ids, deadline).await
        }
    }

    /// `GET /api/machineactions/{id}` for each id, at once (at most `batch_size` of them; the
    /// client's cap on requests in flight holds).
    async fn reread_one_by_one(
        &self,
        ids: &[String],
        deadline: Instant,
    ) -> Result<Reread, PollError> {
        let answers = join_all(ids.iter().map(|id| {
            self.client
                .get_machine_action(id, QuotaWait::Until(deadline))
        }))
        .await;
        let mut out = Reread::default();
        for (id, answer) in ids.iter().zip(answers) {
            match answer {
                Ok(a) => out.found.push(a),
                // As an id missing from a batch's answer: it stays followed until its horizon.
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e @ (api::Error::Quota { .. } | api::Error::Throttled { .. })) => {
                    out.unread.push(id.clone());
                    out.cut_short.get_or_insert(e);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// `id eq … or …` listings of `batch_size` ids, in order, until the budget runs out (#20
    /// item 2: what was read is kept, the rest is read at the next poll).
    async fn reread_in_batches(
        &self,
        ids: &[String],
        deadline: Instant,
    ) -> Result<Reread, PollError> {
        let batch_size = self.tenant.selectors.discovery.batch_size;
        let mut out = Reread::default();
        let mut read = 0;
        for batch in disc::id_batches(ids, batch_size, disc::MAX_FILTER_URL_BYTES) {
            match self
                .client
                .list_machine_actions(&batch, QuotaWait::Until(deadline))
                .await
            {
                Ok(found) => {
                    out.found.extend(found);
                    read += batch.matches("id eq '").count();
                }
                Err(e @ (api::Error::Quota { .. } | api::Error::Throttled { .. })) => {
                    out.cut_short = Some(e);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if out.cut_short.is_some() {
            out.unread = ids.get(read..).unwrap_or_default().to_vec();
        }
        Ok(out)
    }
}
