//! What the groups register their families into and with: the registry in parts (#11, #21),
//! one family or collector to a part, with the size each took in the latest body, whether it
//! is left out of OpenMetrics, whether it is a part of the script-output store (written
//! directly by the text formats), and the name it is put in the exposition order by; the
//! metric kinds the families are made of ([`ExCounter`], [`FloatGauge`]); and the help-text
//! suffix of the families background polls update ([`background`]).
//!
//! Owns that bookkeeping and the sorting of the parts into an order. Does not own the
//! families (each group: `api`, `results`, `poll`, `exporter`), the order itself (`metrics`)
//! nor the encoding (`encode`).

use std::sync::atomic::{AtomicU64, AtomicUsize};

use prometheus_client::collector::Collector;
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::per_tenant::{Exposed, Forget, PerTenant, TenantFamily};

/// A counter whose increments carry the trace that made them (OpenMetrics exemplars): see
/// `native`, which keeps the exemplars only when spans are exported.
pub use super::native::ExCounter;
/// A gauge of seconds, timestamps and other fractions.
pub type FloatGauge = Gauge<f64, AtomicU64>;

const BACKGROUND: &str =
    "Updated by background polls, not at scrape time (the MDE API quota forbids polling on scrape)";

/// `help` of a family that background polls update, with the sentence saying so.
pub fn background(help: &str) -> String {
    format!("{help} {BACKGROUND}")
}

/// The registry, one family (or collector) to a part, in the order they were registered until
/// [`Parts::put_in_order`] sorts them, with the size each took in the latest body; see
/// [`Metrics::encode_chunks`] (in `encode`).
#[derive(Default)]
pub struct Parts {
    pub parts: Vec<Registry>,
    pub last_len: Vec<AtomicUsize>,
    /// Parts left out of the OpenMetrics exposition (a name that clashes there).
    pub text_only: Vec<bool>,
    /// Per part, the script-output part it is, if it is one: the text formats write it
    /// directly, the same bytes its collector gives (#21).
    pub script: Vec<Option<crate::script_metrics::store::Part>>,
    /// Per part, the name [`Parts::put_in_order`] places it by: the family's name as
    /// registered, or the name a collector was registered under.
    keys: Vec<&'static str>,
    /// Every family with a `tenant` label, to take a tenant's series out of all of them
    /// (`per_tenant`, #32).
    pub per_tenant: Vec<Box<dyn Forget>>,
}

impl Parts {
    pub fn register(
        &mut self,
        name: &'static str,
        help: impl Into<String>,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let mut r = Registry::default();
        r.register(name, help, metric);
        self.push(name, r);
    }

    /// A family with a `tenant` label: registered, and walked when a tenant is forgotten.
    pub fn register_per_tenant<L, M, C>(
        &mut self,
        name: &'static str,
        help: impl Into<String>,
        family: &TenantFamily<L, M, C>,
    ) where
        L: PerTenant,
        M: Send + Sync + 'static,
        C: MetricConstructor<M> + Clone + Send + Sync + 'static,
        Exposed<L, M, C>: prometheus_client::registry::Metric,
    {
        self.register(name, help, family.exposed());
        self.per_tenant.push(Box::new(family.clone()));
    }

    /// As [`Parts::register_per_tenant`], served in the Prometheus text format only.
    pub fn register_per_tenant_text_only<L, M, C>(
        &mut self,
        name: &'static str,
        help: impl Into<String>,
        family: &TenantFamily<L, M, C>,
    ) where
        L: PerTenant,
        M: Send + Sync + 'static,
        C: MetricConstructor<M> + Clone + Send + Sync + 'static,
        Exposed<L, M, C>: prometheus_client::registry::Metric,
    {
        self.register_per_tenant(name, help, family);
        // Left out of OpenMetrics: a name that clashes there.
        if let Some(last) = self.text_only.last_mut() {
            *last = true;
        }
    }

    /// A collector (families computed at scrape time), placed in the order by `key`.
    pub fn register_collector(&mut self, key: &'static str, collector: Box<dyn Collector>) {
        let mut r = Registry::default();
        r.register_collector(collector);
        self.push(key, r);
    }

    /// A part of the script-output store, placed in the order by `key`.
    pub fn register_script_part(
        &mut self,
        key: &'static str,
        part: crate::script_metrics::store::Part,
    ) {
        let mut r = Registry::default();
        r.register_collector(Box::new(part.clone()));
        self.push(key, r);
        if let Some(last) = self.script.last_mut() {
            *last = Some(part);
        }
    }

    fn push(&mut self, key: &'static str, r: Registry) {
        self.parts.push(r);
        self.last_len.push(AtomicUsize::new(0));
        self.text_only.push(false);
        self.script.push(None);
        self.keys.push(key);
    }

    /// Sort the parts by where their name is in `order`; parts with the same name, and
    /// those whose name `order` does not list (after all the listed ones), keep the order
    /// they were registered in.
    pub fn put_in_order(&mut self, order: &[&str]) {
        let rank = |key: &str| order.iter().position(|o| *o == key).unwrap_or(order.len());
        let mut by_rank: Vec<usize> = (0..self.parts.len()).collect();
        by_rank.sort_by_key(|&i| rank(self.keys[i]));
        permute(&mut self.parts, &by_rank);
        permute(&mut self.last_len, &by_rank);
        permute(&mut self.text_only, &by_rank);
        permute(&mut self.script, &by_rank);
        permute(&mut self.keys, &by_rank);
    }

    /// Whether a part was registered under `key`.
    #[cfg(test)]
    pub fn has(&self, key: &str) -> bool {
        self.keys.contains(&key)
    }
}

/// `v` rearranged so that its `k`-th element is the old `v[order[k]]` (`order` a permutation).
fn permute<T>(v: &mut Vec<T>, order: &[usize]) {
    let mut old: Vec<Option<T>> = std::mem::take(v).into_iter().map(Some).collect();
    *v = order.iter().filter_map(|&i| old[i].take()).collect();
}
