//! A simulator clock tests can move forward, at once or between two list page requests: every
//! action whose change falls in the jump (Pending → InProgress → final) changes then, between
//! two pages as it can on the real API while a long listing is read. (#20)
//!
//! Owns the offset added to the simulator clock, the page count that triggers a jump, and
//! when on that clock an action is final.
//! Does not own serving pages (`actions`) nor what an action is at a given time (`scenario`).

use std::sync::Mutex;
use std::time::Duration;

use crate::Simulator;

/// The offset in force and a jump waiting for its page.
#[derive(Debug, Default)]
pub(crate) struct Skew {
    state: Mutex<SkewState>,
}

#[derive(Debug, Default)]
struct SkewState {
    offset: Duration,
    /// After this many more list pages, add `by` to the offset.
    pending: Option<(u32, Duration)>,
}

impl Skew {
    fn lock(&self) -> std::sync::MutexGuard<'_, SkewState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How far the simulator clock is ahead of real time.
    pub(crate) fn offset(&self) -> Duration {
        self.lock().offset
    }
}

impl Simulator {
    /// Once `pages` more pages of `GET /api/machineactions` have been served, move the
    /// simulator clock forward by `by` (before the next page is computed).
    pub fn advance_after_list_pages(&self, pages: u32, by: Duration) {
        self.inner.skew.lock().pending = Some((pages.max(1), by));
    }

    /// Simulator time (since start) at which action `id` is final.
    pub fn final_after(&self, id: &str) -> Option<Duration> {
        let i = *self.inner.by_id.get(id)?;
        self.inner.actions.get(i).map(|a| a.final_after)
    }

    /// Move the simulator clock forward by `by` now: every action whose change falls in the
    /// jump has changed at the next request (#20).
    pub fn advance(&self, by: Duration) {
        self.inner.skew.lock().offset += by;
    }

    /// A list page was served: count it towards a waiting jump.
    pub(crate) fn on_list_page(&self) {
        let mut s = self.inner.skew.lock();
        if let Some((left, by)) = s.pending {
            if left <= 1 {
                s.offset += by;
                s.pending = None;
            } else {
                s.pending = Some((left - 1, by));
            }
        }
    }
}
