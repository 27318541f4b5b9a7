//! Which machines of a tenant have per-machine script series, for the machine-context
//! refresh: kept from what changed since the last check (`metrics`' index of them), so that a
//! check costs what changed, and the spellings of each name the series use.
//!
//! Owns [`Watched`], the changes of one check ([`Changes`]) and the spellings of one name
//! ([`Spellings`]). Does not own what is read or exposed for a machine (`machines`), nor the
//! index of machines with series (`metrics`).

use std::collections::BTreeMap;

use crate::metrics::Metrics;

/// The machines of a tenant with per-machine script series, by name without case (as the
/// refresh asks the API) to the names the series spell; kept from what changed since the
/// last check (`ResultMetrics::take_changed_script_machines`), so that a check costs what changed:
/// it used to collect every series of the tenant from the state at each poll interval. (#24)
#[derive(Debug, Default)]
pub(super) struct Watched {
    pub(super) by_key: BTreeMap<String, Spellings>,
    synced: bool,
    /// Machines looked at so far (what the unit test counts).
    work: u64,
}

/// What changed in [`Watched`] at one check (lower-case names).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Changes {
    pub(super) appeared: Vec<String>,
    pub(super) gone: Vec<String>,
}

/// The spellings the series use of one machine name, sorted, each once: almost always one,
/// so a sorted `Vec` (one `String` on the heap) rather than a `BTreeSet`, which holds even one
/// name in a node of eleven (280 bytes, most of a polling tenant's machine context). See: #34
#[derive(Debug, Default)]
pub(super) struct Spellings(Vec<String>);

impl Spellings {
    fn insert(&mut self, name: String) {
        if let Err(at) = self.0.binary_search(&name) {
            // Room for this one only: a `Vec` grows to four at its first push.
            self.0.reserve_exact(1);
            self.0.insert(at, name);
        }
    }

    fn remove(&mut self, name: &str) {
        if let Ok(at) = self.0.binary_search_by(|n| n.as_str().cmp(name)) {
            self.0.remove(at);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Of several spellings, the first in order.
    fn first(&self) -> Option<&String> {
        self.0.first()
    }
}

impl Watched {
    /// Catch up with the per-machine series of `tenant`: all of them the first time, then
    /// only the machines that got their first series or lost their last one.
    pub(super) fn update(&mut self, metrics: &Metrics, tenant: &str) -> Changes {
        let mut changes = Changes::default();
        let changed: Vec<(String, bool)> = if self.synced {
            metrics.results.take_changed_script_machines(tenant)
        } else {
            self.synced = true;
            metrics
                .results
                .script_machines(tenant)
                .into_iter()
                .map(|m| (m, true))
                .collect()
        };
        for (name, present) in changed {
            self.work += 1;
            let key = name.to_lowercase();
            if present {
                let names = self.by_key.entry(key.clone()).or_default();
                if names.is_empty() {
                    changes.appeared.push(key);
                }
                names.insert(name);
            } else if let Some(names) = self.by_key.get_mut(&key) {
                names.remove(&name);
                if names.is_empty() {
                    self.by_key.remove(&key);
                    changes.gone.push(key);
                }
            }
        }
        changes
    }

    /// The name the series spell for `key` (of several spellings, the first).
    pub(super) fn name(&self, key: &str) -> Option<&String> {
        self.by_key.get(key).and_then(|names| names.first())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// See: #24 item 10. A check costs the machines that appeared or went, not every series
    /// of the tenant (before, each check collected all of them from the state, at every poll
    /// interval), and never another tenant's.
    #[test]
    fn a_check_costs_what_changed() {
        use crate::metrics::{MachineScriptLabels, ScriptSeries};
        let m = Metrics::new();
        let labels = |tenant: &str, machine: &str, script: &str| MachineScriptLabels {
            tenant: tenant.into(),
            machine: machine.into(),
            script: script.into(),
        };
        let run = ScriptSeries {
            exit_code: 0,
            errors_present: false,
            end_time: 1.0,
        };
        for i in 0..1000 {
            for script in ["a.ps1", "b.ps1", "c.ps1"] {
                m.results
                    .set_script_series(&labels("t", &format!("ws-{i}"), script), run);
                m.results
                    .set_script_series(&labels("other", &format!("ws-{i}"), script), run);
            }
        }
        let mut w = Watched::default();
        let first = w.update(&m, "t");
        // The first check: one look per machine, not per series, and only this tenant's.
        assert_eq!((first.appeared.len(), w.work), (1000, 1000));
        // Nothing changed: nothing to look at.
        assert_eq!(w.update(&m, "t"), Changes::default());
        assert_eq!(w.work, 1000);
        // A new run on a known machine changes nothing; a new machine and one that lost its
        // last series are the two looks of the next check.
        m.results
            .set_script_series(&labels("t", "ws-1", "a.ps1"), run);
        m.results
            .set_script_series(&labels("t", "WS-NEW", "a.ps1"), run);
        for script in ["a.ps1", "b.ps1", "c.ps1"] {
            m.results
                .evict_script_series(&labels("t", "ws-7", script), "ttl");
        }
        m.results
            .evict_script_series(&labels("t", "ws-8", "a.ps1"), "ttl");
        let next = w.update(&m, "t");
        assert_eq!(
            next,
            Changes {
                appeared: vec!["ws-new".into()],
                gone: vec!["ws-7".into()],
            }
        );
        assert_eq!(w.work, 1002);
        assert_eq!(w.name("ws-new").map(String::as_str), Some("WS-NEW"));
        assert!(w.name("ws-8").is_some(), "ws-8 keeps two scripts");
    }

    /// See: #34. A machine's spellings take the room of what they hold (one `String` for
    /// one name, not a tree node of eleven); of several, the first in order is the name.
    #[test]
    fn a_machine_name_is_held_in_the_room_it_needs() {
        let mut names = Spellings::default();
        names.insert("ws-1".into());
        assert_eq!((names.0.len(), names.0.capacity()), (1, 1));
        names.insert("WS-1".into());
        names.insert("ws-1".into());
        assert_eq!(names.0, ["WS-1", "ws-1"]);
        assert_eq!(names.0.capacity(), 2);
        assert_eq!(names.first().map(String::as_str), Some("WS-1"));
        names.remove("WS-1");
        assert_eq!(names.first().map(String::as_str), Some("ws-1"));
        names.remove("absent");
        names.remove("ws-1");
        assert!(names.is_empty());
        let m = Metrics::new();
        let labels = crate::metrics::MachineScriptLabels {
            tenant: "t".into(),
            machine: "ws-9".into(),
            script: "a.ps1".into(),
        };
        let run = crate::metrics::ScriptSeries {
            exit_code: 0,
            errors_present: false,
            end_time: 1.0,
        };
        m.results.set_script_series(&labels, run);
        let mut w = Watched::default();
        w.update(&m, "t");
        assert!(w.by_key.values().all(|n| n.0.capacity() == n.0.len()));
    }
}
