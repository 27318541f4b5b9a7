//! The families of a cluster member (#31): the live members it sees
//! (`mde_exporter_cluster_members`), the tenants it owns (`mde_exporter_cluster_tenants_owned`),
//! its lease transitions (`mde_exporter_cluster_lease_transitions_total{reason}`) and whether
//! it reaches the cluster's database (`mde_exporter_cluster_store_up`). Each series carries the
//! `member` label; a process that is not a cluster member serves none of them.
//!
//! Owns those families ([`ClusterMetrics`], fields private), their registration and writing.
//! Does not own the leases or when they change (`crate::cluster`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use super::registry::Parts;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub member: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub member: String,
    pub reason: String,
}

/// Why a lease changed hands (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Taken: free, expired, or given up by its last owner.
    Acquired,
    /// Renewed after it had expired, nobody having taken it meanwhile.
    RenewedLate,
    /// Lost: expired, or taken over by another member, before it was renewed.
    Lost,
    /// Given up: another member wins it, the tenant left the configuration, or shutdown.
    Released,
    /// Acquired from a member that died (its lease expired, not released): counted beside
    /// `acquired`. The signal that a member was lost.
    TakenOver,
}

impl Transition {
    pub const ALL: [Transition; 5] = [
        Transition::Acquired,
        Transition::RenewedLate,
        Transition::Lost,
        Transition::Released,
        Transition::TakenOver,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Acquired => "acquired",
            Transition::RenewedLate => "renewed_late",
            Transition::Lost => "lost",
            Transition::Released => "released",
            Transition::TakenOver => "taken_over",
        }
    }
}

pub struct ClusterMetrics {
    members: Family<MemberLabels, Gauge>,
    tenants_configured: Family<MemberLabels, Gauge>,
    tenants_owned: Family<MemberLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    store_up: Family<MemberLabels, Gauge>,
}

impl ClusterMetrics {
    pub(super) fn register(r: &mut Parts) -> Self {
        let m = ClusterMetrics {
            members: Family::default(),
            tenants_configured: Family::default(),
            tenants_owned: Family::default(),
            transitions: Family::default(),
            store_up: Family::default(),
        };
        r.register(
            "mde_exporter_cluster_members",
            "Cluster members this member saw alive at its last heartbeat (itself included)",
            m.members.clone(),
        );
        r.register(
            "mde_exporter_cluster_tenants_configured",
            "Tenants this member's configuration lists (the cluster shares them): more than the sum of mde_exporter_cluster_tenants_owned over the members means tenants nobody polls",
            m.tenants_configured.clone(),
        );
        r.register(
            "mde_exporter_cluster_tenants_owned",
            "Tenants whose lease this member holds: the tenants it polls",
            m.tenants_owned.clone(),
        );
        r.register(
            "mde_exporter_cluster_lease_transitions",
            "Tenant lease transitions of this member, by reason: acquired, renewed_late (renewed after it had expired, nobody having taken it), lost (expired or taken over before it was renewed), released (given up to another member, left the configuration, or shutdown), taken_over (acquired from a member that died: counted beside acquired)",
            m.transitions.clone(),
        );
        r.register(
            "mde_exporter_cluster_store_up",
            "1 if this member's last heartbeat reached the cluster's PostgreSQL database, else 0 (it then stops polling once its leases run out)",
            m.store_up.clone(),
        );
        m
    }

    /// Start this member's series (at start-up in cluster mode).
    pub fn init(&self, member: &str) {
        let l = MemberLabels {
            member: member.to_string(),
        };
        let _ = self.members.get_or_create(&l);
        let _ = self.tenants_configured.get_or_create(&l);
        let _ = self.tenants_owned.get_or_create(&l);
        let _ = self.store_up.get_or_create(&l);
        for t in Transition::ALL {
            let _ = self.transitions.get_or_create(&TransitionLabels {
                member: member.to_string(),
                reason: t.as_str().into(),
            });
        }
    }

    pub fn record(
        &self,
        member: &str,
        members: usize,
        configured: usize,
        owned: usize,
        store_up: bool,
    ) {
        let l = MemberLabels {
            member: member.to_string(),
        };
        self.tenants_configured
            .get_or_create(&l)
            .set(i64::try_from(configured).unwrap_or(i64::MAX));
        self.members
            .get_or_create(&l)
            .set(i64::try_from(members).unwrap_or(i64::MAX));
        self.tenants_owned
            .get_or_create(&l)
            .set(i64::try_from(owned).unwrap_or(i64::MAX));
        self.store_up.get_or_create(&l).set(i64::from(store_up));
    }

    pub fn set_store_up(&self, member: &str, up: bool) {
        self.store_up
            .get_or_create(&MemberLabels {
                member: member.to_string(),
            })
            .set(i64::from(up));
    }

    pub fn transition(&self, member: &str, t: Transition, n: u64) {
        self.transitions
            .get_or_create(&TransitionLabels {
                member: member.to_string(),
                reason: t.as_str().into(),
            })
            .inc_by(n);
    }
}
