//! Handing a tenant's quota windows to its next owner in a cluster (#31): the sends still
//! inside each budget's windows, written as wall-clock times ([`Quota::snapshot`]) and read
//! back by the new owner into its own windows ([`Quota::seed`]), so a takeover spends only
//! what is left of 100 a minute and 1,500 an hour.
//!
//! Owns that form (JSON: budget key → send times in Unix ms, oldest first). Does not own
//! where it is kept (`crate::cluster`) nor the windows' policy (the parent module).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Quota;

/// What changes in a [`Quota::snapshot`] when a call is sent, and not when old sends leave
/// the windows: the newest send of each budget. A snapshot is worth saving again only when
/// this changed (saving every pruned window cost a write per tenant per lease round).
pub fn fingerprint(snapshot: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    if let Ok(parsed) = serde_json::from_slice::<BTreeMap<String, Vec<i64>>>(snapshot) {
        for (k, sends) in parsed {
            (k, sends.last().copied()).hash(&mut h);
        }
    }
    h.finish()
}

impl Quota {
    /// The sends inside each budget's hour window (the minute window's are among them), as
    /// Unix ms by the wall clock `wall_ms` read at `now`.
    pub fn snapshot(&mut self, now: Instant, wall_ms: i64) -> Vec<u8> {
        let mut out: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for (key, budget) in &mut self.budgets {
            let [_, hour] = &mut budget.windows;
            hour.prune(now);
            let sends = hour
                .sent
                .iter()
                .map(|s| {
                    wall_ms
                        - i64::try_from(now.saturating_duration_since(*s).as_millis())
                            .unwrap_or(i64::MAX)
                })
                .collect();
            out.insert(key, sends);
        }
        serde_json::to_vec(&out).unwrap_or_default()
    }

    /// Count the sends of a [`Quota::snapshot`] (taken by another process, at wall clock
    /// `wall_ms` here read at `now`) in this quota's windows. Unreadable input changes
    /// nothing; a send older than a window is not counted in it; a window never holds more
    /// than its limit (the newest are kept). Returns how many sends were read.
    pub fn seed(&mut self, snapshot: &[u8], now: Instant, wall_ms: i64) -> usize {
        let Ok(parsed) = serde_json::from_slice::<BTreeMap<String, Vec<i64>>>(snapshot) else {
            return 0;
        };
        let mut read = 0;
        for (key, budget) in &mut self.budgets {
            let Some(sends) = parsed.get(*key) else {
                continue;
            };
            read += sends.len();
            for w in &mut budget.windows {
                let mut all: Vec<Instant> = w.sent.iter().copied().collect();
                for ms in sends {
                    let age = Duration::from_millis(u64::try_from(wall_ms - ms).unwrap_or(0));
                    if age < w.length + w.margin
                        && let Some(at) = now.checked_sub(age)
                    {
                        all.push(at);
                    }
                }
                all.sort();
                let limit = w.limit.max(1) as usize;
                let skip = all.len().saturating_sub(limit);
                w.sent = all.into_iter().skip(skip).collect();
            }
        }
        read
    }
}

impl Quota {
    /// After a takeover from a member that died (its lease expired, not released): its sends
    /// after the snapshot it saved last (`saved_ms`) are unknown, at most one lease round
    /// (`round`). Count as many again as it sent in the round before the snapshot, as sent at
    /// the end of that unknown round: the next owner assumes it kept its pace. Returns how
    /// many were added per budget, at most.
    pub fn pad_unknown_round(
        &mut self,
        snapshot: &[u8],
        saved_ms: i64,
        round: Duration,
        now: Instant,
        wall_ms: i64,
    ) -> usize {
        let Ok(parsed) = serde_json::from_slice::<BTreeMap<String, Vec<i64>>>(snapshot) else {
            return 0;
        };
        let round_ms = i64::try_from(round.as_millis()).unwrap_or(i64::MAX);
        let at_ms = saved_ms.saturating_add(round_ms).min(wall_ms);
        let age = Duration::from_millis(u64::try_from(wall_ms - at_ms).unwrap_or(0));
        let Some(at) = now.checked_sub(age) else {
            return 0;
        };
        let mut most = 0;
        for (key, budget) in &mut self.budgets {
            let Some(sends) = parsed.get(*key) else {
                continue;
            };
            let recent = sends
                .iter()
                .filter(|ms| **ms >= saved_ms.saturating_sub(round_ms))
                .count();
            most = most.max(recent);
            for w in &mut budget.windows {
                let limit = w.limit.max(1) as usize;
                for _ in 0..recent {
                    if w.sent.len() >= limit {
                        w.sent.pop_front();
                    }
                    w.sent.push_back(at);
                }
                w.sent.make_contiguous().sort();
            }
        }
        most
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::{Endpoint, Quota};
    use crate::config::QuotaConfig;
    use std::time::Duration;
    use tokio::time::Instant;

    /// What one owner spent is what the next one sees left, in both windows. See: #31
    #[tokio::test(start_paused = true)]
    async fn a_takeover_spends_only_what_is_left() {
        let cfg = QuotaConfig::default();
        let ep = Endpoint::GetResultDownloadLink;
        let mut old = Quota::new(&cfg);
        let start = Instant::now();
        let wall = 1_800_000_000_000i64;
        // 30 sends two hours ago... no: 40 sends 10 minutes ago, 60 sends 10 s ago.
        for _ in 0..40 {
            old.try_acquire(ep, start).unwrap();
        }
        let later = start + Duration::from_secs(590);
        for _ in 0..60 {
            old.try_acquire(ep, later).unwrap();
        }
        let now = later + Duration::from_secs(10);
        let snap = old.snapshot(now, wall);
        let mut new = Quota::new(&cfg);
        // The new owner's monotonic clock has nothing to do with the old one's.
        tokio::time::advance(Duration::from_secs(3)).await;
        let here = Instant::now();
        assert_eq!(new.seed(&snap, here, wall + 3000), 100);
        // The minute window holds the 60 recent sends; the hour all 100.
        assert_eq!(new.remaining(ep, here), 40);
        assert_eq!(new.hour_window(ep, here).0, 100);
        // Taken from a member that died: its unknown last round is assumed at its pace (the
        // 60 sends of the 10 s before its snapshot, counted again).
        let mut padded = Quota::new(&cfg);
        padded.seed(&snap, here, wall + 3000);
        assert_eq!(
            padded.pad_unknown_round(&snap, wall, Duration::from_secs(10), here, wall + 3000),
            60
        );
        assert_eq!(padded.remaining(ep, here), 0);
        // Old sends leaving the windows do not make the snapshot worth saving again; a new
        // send does.
        let mut q = Quota::new(&cfg);
        q.try_acquire(ep, start).unwrap();
        q.try_acquire(ep, later).unwrap();
        let before = super::fingerprint(&q.snapshot(later, wall + 590_000));
        let pruned =
            super::fingerprint(&q.snapshot(start + Duration::from_secs(3700), wall + 3_700_000));
        assert_eq!(before, pruned);
        q.try_acquire(ep, start + Duration::from_secs(3700))
            .unwrap();
        assert_ne!(
            super::fingerprint(&q.snapshot(start + Duration::from_secs(3700), wall + 3_700_000)),
            before
        );
        // Junk changes nothing.
        let mut fresh = Quota::new(&cfg);
        assert_eq!(fresh.seed(b"{not json", here, wall), 0);
        assert_eq!(fresh.remaining(ep, here), 100);
    }
}
