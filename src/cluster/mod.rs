//! A cluster of exporters on PostgreSQL (#31): any number of processes started with the same
//! `cluster:` section share the configured tenants, each tenant polled by exactly one live
//! member at a time, its state in the database, so a member may die and nothing is lost or
//! counted twice.
//!
//! Owns the cluster's database side: connecting ([`connect`]), the schema ([`schema`]), the
//! state's second [`crate::record::state::Storage`] ([`store`], every write fenced by the
//! writer's lease), members and leases ([`lease`]), the lease loop and what this process
//! owns ([`membership`]), and `--state.import` ([`import`]). Does not own the exactly-once
//! rules (`record::state`), polling (`poll`), nor starting a tenant's collector when it is
//! owned (`app::cluster`). Not a consensus protocol: the database's row locks and clock
//! decide who holds a lease; the members only heartbeat, hash and ask.

pub mod connect;
pub mod import;
pub mod lease;
pub mod membership;
pub mod schema;
pub mod store;

pub use membership::{ClusterView, Holding, Membership, Ownership, QuotaHandover, Sources, Taken};

/// A number naming this process among the members (the `holder` of its leases): a member
/// restarted under the same name is another holder, so the old process's late writes fail.
pub fn incarnation() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    // Positive, so it reads well in the table.
    (h.finish() >> 1) as i64
}
