//! The RunScript commands counted as not run, and the latest attempt of each series that ever
//! had one, behind `mde_liveresponse_script_not_run` (#20): whether a command was counted, which
//! attempt (a not-run, or a run after it) is the latest, the runs remembered to judge that, and
//! their expiry.
//!
//! Owns those rules over the state's not-run, attempt and run indexes. Does not own the
//! indexes themselves, their storage or the other exactly-once rules (`state`), nor the
//! records ([`super::model::Attempt`]).

use super::packed::{Done, Series};
use super::storage::{PerMachine, Write};
use super::{
    Attempt, Cutoff, ResultKey, RunUpdate, SeriesKey, State, StoreError, expired, is_newer,
};

impl State {
    pub fn is_not_run_done(&self, key: &ResultKey) -> bool {
        self.not_run.contains(&Done::new(key))
    }

    /// Mark a RunScript command counted as not run and offer its attempt as the latest of its
    /// series, in one durable transaction, before anything is counted (like
    /// [`State::commit_result`]). `None`: it already was; else whether the attempt is now the
    /// latest of its series. The latest is the newest of the attempt already known, this one
    /// and the newest run remembered for the series: a run seen before this older not-run
    /// still wins (see [`State::offer_ran`]), so [`State::attempt`] is right whatever the
    /// order the attempts came in. See: #20
    pub fn commit_not_run(
        &mut self,
        key: ResultKey,
        series: SeriesKey,
        attempt: Attempt,
    ) -> Result<Option<RunUpdate>, StoreError> {
        let done = Done::new(&key);
        if self.not_run.contains(&done) {
            return Ok(None);
        }
        let packed = Series::new(&series);
        let mut latest = self.attempts.get(&packed).cloned();
        for candidate in [Some(&attempt), self.ran.get(&packed)]
            .into_iter()
            .flatten()
        {
            if is_newer(candidate, latest.as_ref()) {
                latest = Some(candidate.clone());
            }
        }
        let changed = latest
            .as_ref()
            .filter(|l| self.attempts.get(&packed) != Some(l));
        let mut writes = vec![Write::NotRun(&key)];
        if let Some(a) = changed {
            writes.push(Write::Attempt(&series, a));
        }
        self.apply(&writes)?;
        self.not_run.insert(done);
        let update = if latest.as_ref() == Some(&attempt) {
            RunUpdate::Latest
        } else {
            RunUpdate::Older
        };
        if let Some(l) = latest {
            self.attempts.insert(packed, l);
        }
        Ok(Some(update))
    }

    /// A command that ran. It is remembered as the newest run of its series (durably, so a
    /// not-run seen later, even after a restart, can be compared with it), and it becomes the
    /// latest attempt of its series if that series already had a not-run and this run is newer
    /// (other series get no `mde_liveresponse_script_not_run` series, to keep its cardinality
    /// to machines that had a problem). Returns whether the latest attempt changed; both are
    /// written in one transaction, and nothing when neither changes.
    pub fn offer_ran(&mut self, series: SeriesKey, attempt: Attempt) -> Result<bool, StoreError> {
        let packed = Series::new(&series);
        let remember = is_newer(&attempt, self.ran.get(&packed));
        let take = self.attempts.contains_key(&packed)
            && is_newer(&attempt, self.attempts.get(&packed))
            && self.attempts.get(&packed) != Some(&attempt);
        if !remember && !take {
            return Ok(false);
        }
        let mut writes = Vec::with_capacity(2);
        if remember {
            writes.push(Write::Ran(&series, &attempt));
        }
        if take {
            writes.push(Write::Attempt(&series, &attempt));
        }
        self.apply(&writes)?;
        if take {
            self.attempts.insert(packed.clone(), attempt.clone());
        }
        if remember {
            self.ran.insert(packed, attempt);
        }
        Ok(take)
    }

    /// The latest attempt of `series`, if it ever had a not-run.
    pub fn attempt(&self, series: &SeriesKey) -> Option<&Attempt> {
        self.attempts.get(&Series::new(series))
    }

    /// The series with a latest attempt, and it, of `tenant`.
    pub fn attempts_of(&self, tenant: &str) -> Vec<(SeriesKey, Attempt)> {
        // A tenant's series sort together, from (tenant, "", ""): each collector asks once at
        // start, so a scan of every tenant's would make a start quadratic (#34).
        let first = Series::new(&(tenant.to_string(), String::new(), String::new()));
        self.attempts
            .range(first..)
            .take_while(|(k, _)| k.tenant() == tenant)
            .map(|(k, a)| (k.key(), a.clone()))
            .collect()
    }

    /// The series with a latest attempt whose tenant `pick` accepts.
    pub fn attempt_series(&self, pick: impl Fn(&str) -> bool) -> Vec<SeriesKey> {
        self.attempts
            .keys()
            .filter(|k| pick(k.tenant()))
            .map(Series::key)
            .collect()
    }

    /// How many series have a latest attempt.
    pub fn attempts_len(&self) -> usize {
        self.attempts.len()
    }

    /// Drop attempts older than their tenant's `cutoff`, then the oldest beyond `max`;
    /// returns their keys.
    pub fn expire_attempts(
        &mut self,
        cutoff: Cutoff<'_>,
        max: usize,
    ) -> Result<Vec<SeriesKey>, StoreError> {
        let attempts = self.attempts.iter().map(|(k, a)| (a.at, k));
        let gone = expired(attempts, Series::tenant, cutoff, max);
        let removed: Vec<SeriesKey> = gone.iter().map(Series::key).collect();
        self.remove(PerMachine::Attempts, &removed)?;
        // The runs remembered for the order of attempts go with the same TTL and cap.
        let ran = self.ran.iter().map(|(k, a)| (a.at, k));
        let old_runs = expired(ran, Series::tenant, cutoff, max);
        let keys: Vec<SeriesKey> = old_runs.iter().map(Series::key).collect();
        self.remove(PerMachine::Ran, &keys)?;
        for k in &old_runs {
            self.ran.remove(k);
        }
        for k in &gone {
            self.attempts.remove(k);
        }
        Ok(removed)
    }
}
