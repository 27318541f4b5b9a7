//! Why a script fails across a fleet (#36): per tenant and script, how many machines' latest
//! run fails with each signature, `mde_liveresponse_script_failure_signatures{tenant,script,
//! signature,template}`, the top K by machines (K: `failure_signatures_top_k`, default 10) and
//! the rest as one `signature="other"` series, with how many signatures went into it
//! (`mde_liveresponse_script_failure_signatures_folded{tenant,script}`).
//!
//! Owns the count of machines per signature ([`Signatures`]: kept as the per-machine series
//! are set and removed, so the counts expire, are evicted and are restored with them) and
//! the two families, computed from the counts when `/metrics` is encoded (the top K of a
//! script changes with every run; stored series would have to be moved in and out of
//! `other`). Does not own the signature of a run (`record::signature`), when a series is
//! set or removed (`results`, called by `record::series`) nor the encoding (`encode`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::labels::{LabelValue, MachineScriptLabels};
use super::registry::background;

/// K when the configuration does not say.
pub const DEFAULT_TOP_K: usize = 10;
/// `signature` (and `template`) of the series of the signatures beyond the top K.
pub const OTHER: &str = "other";

/// The machines of a signature of one script.
#[derive(Debug)]
struct Count {
    /// The template as the latest run with this signature gave it (a reload may have changed
    /// the policy that withholds it).
    template: String,
    machines: usize,
}

#[derive(Debug, Default)]
struct Inner {
    /// (tenant, machine, script) → the signature id of its latest run, when it failed.
    by_series: HashMap<MachineScriptLabels, String>,
    /// (tenant, script) → signature id → its machines.
    by_script: BTreeMap<(LabelValue, LabelValue), HashMap<String, Count>>,
}

/// One row of a script's signatures, as the families show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranked {
    pub signature: String,
    pub template: String,
    pub machines: usize,
}

/// A script's signatures as served: the top K, and what went into `other`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Top {
    /// The top K by machines (then by id), most machines first.
    pub top: Vec<Ranked>,
    /// Machines whose signature is not in the top K.
    pub other_machines: usize,
    /// Signatures not in the top K.
    pub folded: usize,
}

/// The count of machines per signature, per tenant and script.
#[derive(Debug)]
pub struct Signatures {
    inner: Mutex<Inner>,
    top_k: AtomicUsize,
}

impl Default for Signatures {
    fn default() -> Self {
        Signatures {
            inner: Mutex::default(),
            top_k: AtomicUsize::new(DEFAULT_TOP_K),
        }
    }
}

impl Signatures {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// K, from the configuration in force (at start and after each reload).
    pub fn set_top_k(&self, k: usize) {
        self.top_k.store(k.max(1), Ordering::Relaxed);
    }

    /// The latest run of a series failed with `(id, template)`, or did not fail (`None`).
    pub fn set(&self, labels: &MachineScriptLabels, signature: Option<(&str, &str)>) {
        let mut inner = self.lock();
        let held = inner.by_series.get(labels);
        if held.map(String::as_str) != signature.map(|(id, _)| id) {
            inner.forget(labels);
        }
        let Some((id, template)) = signature else {
            return;
        };
        let script = (labels.tenant.clone(), labels.script.clone());
        let new = !inner.by_series.contains_key(labels);
        let count = inner
            .by_script
            .entry(script)
            .or_default()
            .entry(id.to_string())
            .or_insert_with(|| Count {
                template: String::new(),
                machines: 0,
            });
        if count.template != template {
            count.template = template.to_string();
        }
        if new {
            count.machines += 1;
            inner.by_series.insert(labels.clone(), id.to_string());
        }
    }

    /// The series is gone (expired, evicted, or its tenant no longer served).
    pub fn remove(&self, labels: &MachineScriptLabels) {
        self.lock().forget(labels);
    }

    /// Every series of `tenant` is gone (a tenant no longer served, #32).
    pub fn forget_tenant(&self, tenant: &str) {
        let mut inner = self.lock();
        inner.by_series.retain(|l, _| l.tenant != tenant);
        inner.by_script.retain(|(t, _), _| t != tenant);
    }

    /// The signatures of `tenant`'s `script` as served now.
    pub fn top(&self, tenant: &str, script: &str) -> Top {
        let k = self.top_k.load(Ordering::Relaxed);
        let inner = self.lock();
        inner
            .by_script
            .get(&(tenant.into(), script.into()))
            .map(|counts| rank(counts, k))
            .unwrap_or_default()
    }

    /// Every script's signatures as served now, by (tenant, script).
    fn all(&self) -> Vec<((LabelValue, LabelValue), Top)> {
        let k = self.top_k.load(Ordering::Relaxed);
        let inner = self.lock();
        inner
            .by_script
            .iter()
            .map(|(key, counts)| (key.clone(), rank(counts, k)))
            .collect()
    }
}

impl Inner {
    fn forget(&mut self, labels: &MachineScriptLabels) {
        let Some(id) = self.by_series.remove(labels) else {
            return;
        };
        let script = (labels.tenant.clone(), labels.script.clone());
        let Some(counts) = self.by_script.get_mut(&script) else {
            return;
        };
        if let Some(c) = counts.get_mut(&id) {
            c.machines = c.machines.saturating_sub(1);
            if c.machines == 0 {
                counts.remove(&id);
            }
        }
        if counts.is_empty() {
            self.by_script.remove(&script);
        }
    }
}

/// The top `k` of `counts` by machines (ties by id, so the choice is stable), the rest summed.
fn rank(counts: &HashMap<String, Count>, k: usize) -> Top {
    let mut all: Vec<(&String, &Count)> = counts.iter().collect();
    let order = |a: &(&String, &Count), b: &(&String, &Count)| {
        b.1.machines.cmp(&a.1.machines).then_with(|| a.0.cmp(b.0))
    };
    if all.len() > k {
        all.select_nth_unstable_by(k, order);
    }
    let rest = all.split_off(k.min(all.len()));
    all.sort_unstable_by(order);
    Top {
        top: all
            .into_iter()
            .map(|(id, c)| Ranked {
                signature: id.clone(),
                template: c.template.clone(),
                machines: c.machines,
            })
            .collect(),
        other_machines: rest.iter().map(|(_, c)| c.machines).sum(),
        folded: rest.len(),
    }
}

/// The two families, from [`Signatures`] at scrape time.
#[derive(Debug)]
pub(super) struct SignaturesCollector(pub(super) Arc<Signatures>);

impl Collector for SignaturesCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // Ranked under one short lock, encoded without it.
        let all = self.0.all();
        if all.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "mde_liveresponse_script_failure_signatures",
            &background(
                "Machines whose latest run of a script failed (non-zero exit code or script_errors), by failure signature: the id and normalised template of the first error; the top failure_signatures_top_k (default 10) by machines, the rest as signature=\"other\".",
            ),
            None,
            MetricType::Gauge,
        )?;
        for ((tenant, script), top) in &all {
            for r in &top.top {
                let labels = [
                    ("tenant", tenant.as_str()),
                    ("script", script.as_str()),
                    ("signature", r.signature.as_str()),
                    ("template", r.template.as_str()),
                ];
                family
                    .encode_family(&labels)?
                    .encode_gauge(&(r.machines as i64))?;
            }
            if top.folded > 0 {
                let labels = [
                    ("tenant", tenant.as_str()),
                    ("script", script.as_str()),
                    ("signature", OTHER),
                    ("template", OTHER),
                ];
                family
                    .encode_family(&labels)?
                    .encode_gauge(&(top.other_machines as i64))?;
            }
        }
        drop(family);
        let mut folded = encoder.encode_descriptor(
            "mde_liveresponse_script_failure_signatures_folded",
            &background(
                "Failure signatures of a script beyond the top failure_signatures_top_k, counted together in mde_liveresponse_script_failure_signatures{signature=\"other\"}.",
            ),
            None,
            MetricType::Gauge,
        )?;
        for ((tenant, script), top) in &all {
            let labels = [("tenant", tenant.as_str()), ("script", script.as_str())];
            folded
                .encode_family(&labels)?
                .encode_gauge(&(top.folded as i64))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn series(machine: &str, script: &str) -> MachineScriptLabels {
        MachineScriptLabels {
            tenant: "t".into(),
            machine: machine.into(),
            script: script.into(),
        }
    }

    #[test]
    fn counts_follow_the_latest_run_and_expire_with_it() {
        let s = Signatures::default();
        s.set_top_k(2);
        for m in 0..5 {
            s.set(&series(&format!("m{m}"), "a.ps1"), Some(("aaa", "denied")));
        }
        s.set(&series("m0", "a.ps1"), Some(("aaa", "denied")));
        s.set(&series("m1", "a.ps1"), Some(("bbb", "missing")));
        s.set(&series("m2", "a.ps1"), Some(("ccc", "full")));
        s.set(&series("m3", "a.ps1"), None);
        s.set(&series("m9", "b.ps1"), Some(("aaa", "denied")));
        let top = s.top("t", "a.ps1");
        assert_eq!(
            top.top,
            vec![
                Ranked {
                    signature: "aaa".into(),
                    template: "denied".into(),
                    machines: 2
                },
                Ranked {
                    signature: "bbb".into(),
                    template: "missing".into(),
                    machines: 1
                },
            ]
        );
        assert_eq!((top.other_machines, top.folded), (1, 1));
        s.remove(&series("m0", "a.ps1"));
        s.remove(&series("m4", "a.ps1"));
        s.remove(&series("m2", "a.ps1"));
        let top = s.top("t", "a.ps1");
        assert_eq!(top.top.len(), 1, "{top:?}");
        assert_eq!(top.top[0].signature, "bbb");
        s.remove(&series("m1", "a.ps1"));
        assert_eq!(s.top("t", "a.ps1"), Top::default());
        assert!(s.lock().by_script.len() == 1, "only b.ps1 is left");
    }
}
