//! The results waiting to be fetched: one queued result and the queue, kept in fetch order
//! with an index of its keys.
//!
//! Owns the queue's order (oldest command first) and its "already queued?" rule. Does not own
//! what is queued when, the fetch, nor the accounting (`results`).

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::api::model::CommandType;
use crate::record::state::ResultKey;

/// A result waiting to be fetched.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    pub(super) key: ResultKey,
    pub(super) kind: CommandType,
    pub(super) script: Option<String>,
    pub(super) machine: String,
    pub(super) end_time: Option<DateTime<Utc>>,
    /// The action's `lastUpdateDateTimeUtc`: which script_metrics set is the latest (#21).
    pub(super) last_update: Option<DateTime<Utc>>,
    /// When this exporter first queued it (the age of a result without an `endTime`).
    pub(super) queued_at: DateTime<Utc>,
    pub(super) attempts: u32,
    /// Not tried again before this instant (backoff after a transient failure).
    pub(super) not_before: Option<Instant>,
    /// The download link of an earlier try, reused while it is valid.
    pub(super) link: Option<crate::api::model::DownloadLink>,
}

/// The results waiting to be fetched: a list kept in fetch order, and its keys, so that asking
/// "is this one already queued?" costs O(1) whatever the backlog.
#[derive(Debug, Default)]
pub(super) struct PendingQueue {
    pub(super) items: Vec<Pending>,
    pub(super) keys: HashSet<ResultKey>,
}

impl PendingQueue {
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    pub(super) fn contains(&self, key: &ResultKey) -> bool {
        self.keys.contains(key)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Pending> {
        self.items.iter()
    }

    /// Queue a result unless it is already queued.
    pub(super) fn push_new(&mut self, p: Pending) {
        if self.keys.insert(p.key.clone()) {
            self.items.push(p);
        }
    }

    /// Take every item out in fetch order (oldest command first); their keys stay, since each
    /// is either put back with [`Self::put_back`] or settled with [`Self::settled`].
    pub(super) fn take_sorted(&mut self) -> VecDeque<Pending> {
        self.items
            .sort_by(|a, b| a.end_time.cmp(&b.end_time).then(a.key.cmp(&b.key)));
        std::mem::take(&mut self.items).into()
    }

    pub(super) fn put_back(&mut self, p: Pending) {
        self.items.push(p);
    }

    /// A result taken out is done (counted or given up): forget its key. The last one gives
    /// the index's table back: a drained queue is the steady state of most tenants, and the
    /// table its backlog grew (16 places of 56 bytes for 10 results) stayed for the tenant's
    /// life. See: #34
    pub(super) fn settled(&mut self, key: &ResultKey) {
        self.keys.remove(key);
        if self.keys.is_empty() {
            self.keys = HashSet::new();
        }
    }
}
