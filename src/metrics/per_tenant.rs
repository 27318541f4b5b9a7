//! Families with a `tenant` label, and taking one tenant's series out of all of them at once
//! (a reload or a tenant file that removes the tenant, a cluster member that loses it). See:
//! #32
//!
//! Owns [`TenantFamily`]: a family that knows its label sets (its own map of series, encoded
//! as prometheus-client's `Family` is, because that `Family` can remove a label set it is
//! given but cannot list them, and a list beside it held every label set twice: #34); the
//! [`PerTenant`] trait
//! (the label sets that carry a `tenant`); and [`Forget`], what the registry keeps of every
//! such family so that [`crate::metrics::Metrics::forget_tenant`] walks them all. A group
//! registers a `TenantFamily` with `Parts::register_per_tenant` (a `TenantFamily` is not a
//! `Metric`: it cannot be registered the plain way and be left out of the walk). Does not own
//! the families (the groups), nor the bookkeeping some groups keep beside their series (the
//! machine index of `results`, the tag count of `machines`: the groups' own `forget_tenant`).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::family::MetricConstructor;
use prometheus_client::metrics::{MetricType, TypedMetric};

use super::labels::{
    CadenceLabels, CommandLabels, EndpointLabels, MachineInfoLabels, MachineScriptLabels,
    MachineTagLabels, NotRunLabels, NoticeLabels, PermissionLabels, ReasonLabels, RequestLabels,
    ScriptLabels, StatusLabels, TenantLabels,
};
use super::native::{Buckets, ClassicAndNative};

/// A label set with a `tenant` label.
pub trait PerTenant: Clone + Hash + Eq + Send + Sync + 'static {
    fn tenant(&self) -> &str;
}

macro_rules! per_tenant {
    ($($t:ty),* $(,)?) => {
        $(impl PerTenant for $t {
            fn tenant(&self) -> &str {
                &self.tenant
            }
        })*
    };
}

per_tenant!(
    TenantLabels,
    ScriptLabels,
    MachineScriptLabels,
    CommandLabels,
    StatusLabels,
    ReasonLabels,
    NotRunLabels,
    RequestLabels,
    EndpointLabels,
    NoticeLabels,
    MachineInfoLabels,
    PermissionLabels,
    MachineTagLabels,
    CadenceLabels,
);

/// A family with a `tenant` label that knows its label sets: the series by label set, in one
/// map that is both what a scrape encodes and what [`Forget`] walks. prometheus-client's
/// `Family` cannot list its label sets, so a first version kept a second set of them beside
/// it: every label set (with its tenant name and other strings) was held twice. See: #34
pub struct TenantFamily<L, M, C = fn() -> M> {
    series: Arc<RwLock<HashMap<L, M>>>,
    constructor: C,
}

/// A latency histogram family with a `tenant` label (see `native`).
pub type TenantHistogramFamily<L> = TenantFamily<L, ClassicAndNative, Buckets>;

impl<L: PerTenant, M: Default> Default for TenantFamily<L, M> {
    fn default() -> Self {
        TenantFamily {
            series: Arc::default(),
            constructor: M::default,
        }
    }
}

impl<L, M, C: Clone> Clone for TenantFamily<L, M, C> {
    fn clone(&self) -> Self {
        TenantFamily {
            series: self.series.clone(),
            constructor: self.constructor.clone(),
        }
    }
}

impl<L, M, C> std::fmt::Debug for TenantFamily<L, M, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("TenantFamily").field("series", &n).finish()
    }
}

/// One series of a [`TenantFamily`]: a handle on the metric (prometheus-client's metrics are
/// shared handles), so no lock is held while it is written.
pub struct Series<M>(M);

impl<M> Deref for Series<M> {
    type Target = M;
    fn deref(&self) -> &M {
        &self.0
    }
}

impl<L: PerTenant, M: Clone, C: MetricConstructor<M>> TenantFamily<L, M, C> {
    pub fn new_with_constructor(constructor: C) -> Self {
        TenantFamily {
            series: Arc::default(),
            constructor,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<L, M>> {
        self.series.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<L, M>> {
        self.series.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// The series of `labels`, created if new.
    pub fn get_or_create(&self, labels: &L) -> impl Deref<Target = M> + use<L, M, C> {
        if let Some(m) = self.read().get(labels) {
            return Series(m.clone());
        }
        let mut series = self.write();
        if let Some(m) = series.get(labels) {
            return Series(m.clone());
        }
        let m = self.constructor.new_metric();
        series.insert(labels.clone(), m.clone());
        Series(m)
    }

    pub fn get(&self, labels: &L) -> Option<impl Deref<Target = M> + use<L, M, C>> {
        self.read().get(labels).map(|m| Series(m.clone()))
    }

    #[cfg(test)]
    pub fn contains(&self, labels: &L) -> bool {
        self.read().contains_key(labels)
    }

    /// Remove one series; whether it was there.
    pub fn remove(&self, labels: &L) -> bool {
        self.write().remove(labels).is_some()
    }

    /// Remove every series, all tenants'.
    pub fn clear(&self) {
        self.write().clear();
    }
}

impl<L, M, C: Clone> TenantFamily<L, M, C> {
    /// The family as the registry encodes it (`Parts::register_per_tenant`).
    pub(super) fn exposed(&self) -> Exposed<L, M, C> {
        Exposed(self.clone())
    }
}

/// A [`TenantFamily`] as a registered metric, encoded as prometheus-client's `Family` is:
/// each label set, then its metric. Only `Parts::register_per_tenant` makes one, so a family
/// with a `tenant` label is never registered without being walked by [`Forget`].
pub struct Exposed<L, M, C>(TenantFamily<L, M, C>);

impl<L, M, C> std::fmt::Debug for Exposed<L, M, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<L, M, C> TypedMetric for Exposed<L, M, C>
where
    M: TypedMetric,
{
    const TYPE: MetricType = M::TYPE;
}

impl<L, M, C> EncodeMetric for Exposed<L, M, C>
where
    L: PerTenant + EncodeLabelSet,
    M: EncodeMetric + TypedMetric,
{
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let series = self.0.series.read().unwrap_or_else(PoisonError::into_inner);
        for (labels, m) in series.iter() {
            let encoder = encoder.encode_family(labels)?;
            m.encode(encoder)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        M::TYPE
    }

    fn is_empty(&self) -> bool {
        self.0
            .series
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }
}

/// What the registry keeps of a [`TenantFamily`]: removing a tenant's series, and the tenants
/// that have series.
pub trait Forget: Send + Sync {
    /// Remove every series of `tenant`; how many there were.
    fn forget(&self, tenant: &str) -> usize;
    /// Add the tenants with a series here to `into`.
    fn tenants(&self, into: &mut BTreeSet<String>);
}

impl<L, M, C> Forget for TenantFamily<L, M, C>
where
    L: PerTenant,
    M: Send + Sync + 'static,
    C: Send + Sync + 'static,
{
    fn forget(&self, tenant: &str) -> usize {
        let mut series = self.series.write().unwrap_or_else(PoisonError::into_inner);
        let before = series.len();
        series.retain(|l, _| l.tenant() != tenant);
        before - series.len()
    }

    fn tenants(&self, into: &mut BTreeSet<String>) {
        let series = self.series.read().unwrap_or_else(PoisonError::into_inner);
        for l in series.keys() {
            if !into.contains(l.tenant()) {
                into.insert(l.tenant().to_string());
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::metrics::labels::endpoint;
    use prometheus_client::metrics::counter::Counter;

    #[test]
    fn forgetting_a_tenant_removes_its_series_and_only_those() {
        let f: TenantFamily<EndpointLabels, Counter> = TenantFamily::default();
        f.get_or_create(&endpoint("a", "token")).inc();
        f.get_or_create(&endpoint("a", "download")).inc();
        f.get_or_create(&endpoint("b", "token")).inc_by(5);
        let mut tenants = BTreeSet::new();
        f.tenants(&mut tenants);
        assert_eq!(tenants, BTreeSet::from(["a".into(), "b".into()]));

        assert_eq!(f.forget("a"), 2);
        assert!(!f.contains(&endpoint("a", "token")));
        assert!(!f.contains(&endpoint("a", "download")));
        assert_eq!(f.get(&endpoint("b", "token")).unwrap().get(), 5);
        let mut tenants = BTreeSet::new();
        f.tenants(&mut tenants);
        assert_eq!(tenants, BTreeSet::from(["b".into()]));
        assert_eq!(f.forget("a"), 0);

        // A series removed one by one leaves the list too.
        assert!(f.remove(&endpoint("b", "token")));
        assert_eq!(f.forget("b"), 0);
    }

    // See: #34. The family encodes as prometheus-client's `Family` does, line for line (the
    // order of label sets is a hash map's in both).
    #[test]
    fn encodes_as_a_family_does() {
        use crate::metrics::labels::tenant;
        use crate::metrics::native::Buckets;
        use prometheus_client::encoding::text::encode;
        use prometheus_client::metrics::family::Family;
        use prometheus_client::registry::Registry;

        let ours: TenantHistogramFamily<EndpointLabels> =
            TenantFamily::new_with_constructor(Buckets(&[0.1, 1.0]));
        let theirs: Family<EndpointLabels, ClassicAndNative, Buckets> =
            Family::new_with_constructor(Buckets(&[0.1, 1.0]));
        let counts: TenantFamily<TenantLabels, Counter> = TenantFamily::default();
        let counts_theirs: Family<TenantLabels, Counter> = Family::default();
        for (t, ep, v) in [("a", "token", 0.05), ("a", "list", 2.0), ("b", "list", 0.5)] {
            ours.get_or_create(&endpoint(t, ep)).observe(v, None, None);
            theirs
                .get_or_create(&endpoint(t, ep))
                .observe(v, None, None);
            counts.get_or_create(&tenant(t)).inc();
            counts_theirs.get_or_create(&tenant(t)).inc();
        }
        let body = |r: Registry| {
            let mut s = String::new();
            encode(&mut s, &r).unwrap();
            let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
            lines.sort();
            lines
        };
        let (mut a, mut b) = (Registry::default(), Registry::default());
        a.register("latency_seconds", "Latency", ours.exposed());
        a.register("polls", "Polls", counts.exposed());
        b.register("latency_seconds", "Latency", theirs);
        b.register("polls", "Polls", counts_theirs);
        let (a, b) = (body(a), body(b));
        assert_eq!(a, b);
        assert!(
            a.iter()
                .any(|l| l.contains("tenant=\"b\",endpoint=\"list\"")),
            "{a:?}"
        );
        // A handle taken before a tenant is forgotten writes to nothing shown.
        let stale = counts.get_or_create(&tenant("a"));
        assert_eq!(counts.forget("a"), 1);
        stale.inc();
        assert!(!counts.contains(&tenant("a")));
    }
}
