//! Families with a `tenant` label, and taking one tenant's series out of all of them at once
//! (a reload or a tenant file that removes the tenant, a cluster member that loses it). See:
//! #32
//!
//! Owns [`TenantFamily`]: a family that knows its label sets, because prometheus-client's
//! `Family` can remove a label set it is given but cannot list them; the [`PerTenant`] trait
//! (the label sets that carry a `tenant`); and [`Forget`], what the registry keeps of every
//! such family so that [`crate::metrics::Metrics::forget_tenant`] walks them all. A group
//! registers a `TenantFamily` with `Parts::register_per_tenant` (a `TenantFamily` is not a
//! `Metric`: it cannot be registered the plain way and be left out of the walk). Does not own
//! the families (the groups), nor the bookkeeping some groups keep beside their series (the
//! machine index of `results`, the tag count of `machines`: the groups' own `forget_tenant`).

use std::collections::{BTreeSet, HashSet};
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::metrics::family::{Family, MetricConstructor};

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

/// A family with a `tenant` label that knows its label sets. Writes go through
/// [`TenantFamily::get_or_create`], which notes a new label set with the series it creates
/// (under one lock, so that a tenant forgotten meanwhile never leaves an unlisted series).
pub struct TenantFamily<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    keys: Arc<RwLock<HashSet<L>>>,
}

/// A latency histogram family with a `tenant` label (see `native`).
pub type TenantHistogramFamily<L> = TenantFamily<L, ClassicAndNative, Buckets>;

impl<L: PerTenant, M: Default> Default for TenantFamily<L, M> {
    fn default() -> Self {
        TenantFamily {
            family: Family::default(),
            keys: Arc::default(),
        }
    }
}

impl<L, M, C: Clone> Clone for TenantFamily<L, M, C> {
    fn clone(&self) -> Self {
        TenantFamily {
            family: self.family.clone(),
            keys: self.keys.clone(),
        }
    }
}

impl<L: PerTenant, M, C: MetricConstructor<M>> TenantFamily<L, M, C> {
    pub fn new_with_constructor(constructor: C) -> Self {
        TenantFamily {
            family: Family::new_with_constructor(constructor),
            keys: Arc::default(),
        }
    }

    /// The series of `labels`, created (and its label set noted) if new.
    pub fn get_or_create(&self, labels: &L) -> impl Deref<Target = M> + '_ {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        if keys.contains(labels) {
            return self.family.get_or_create(labels);
        }
        drop(keys);
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.insert(labels.clone());
        self.family.get_or_create(labels)
    }

    pub fn get(&self, labels: &L) -> Option<impl Deref<Target = M> + '_> {
        self.family.get(labels)
    }

    #[cfg(test)]
    pub fn contains(&self, labels: &L) -> bool {
        self.family.get(labels).is_some()
    }

    /// Remove one series; whether it was there.
    pub fn remove(&self, labels: &L) -> bool {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.remove(labels);
        self.family.remove(labels)
    }

    /// Remove every series, all tenants'.
    pub fn clear(&self) {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        keys.clear();
        self.family.clear();
    }

    /// The family itself, to register (`Parts::register_per_tenant`).
    pub(super) fn family(&self) -> &Family<L, M, C> {
        &self.family
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
    C: MetricConstructor<M> + Send + Sync + 'static,
{
    fn forget(&self, tenant: &str) -> usize {
        let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<L> = keys
            .iter()
            .filter(|l| l.tenant() == tenant)
            .cloned()
            .collect();
        for l in &gone {
            keys.remove(l);
            self.family.remove(l);
        }
        gone.len()
    }

    fn tenants(&self, into: &mut BTreeSet<String>) {
        let keys = self.keys.read().unwrap_or_else(PoisonError::into_inner);
        for l in keys.iter() {
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
}
