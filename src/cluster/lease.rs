//! Members and leases in the database, and the pure decision of what this member should
//! hold: rendezvous hashing over the live members' names (`config::shard::member_of`).
//!
//! Owns the SQL of heartbeats, leases (acquire with a new epoch, renew, release) and the
//! ownership table, and [`plan`]. Does not own when any of it runs (`membership`) nor the
//! state's rows (`store`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio_postgres::Client;

use crate::config::shard::member_of;

/// One row of the ownership table (the status page shows it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    pub tenant: String,
    pub owner: String,
    pub epoch: i64,
    /// Not expired (by the database's clock).
    pub valid: bool,
}

/// What this member does about leases this round.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Tenants it should hold and does not: try to take them (free or expired leases only).
    pub acquire: Vec<String>,
    /// Tenants it holds and should not (another live member wins them, or they are no longer
    /// configured): give them up.
    pub release: Vec<String>,
}

/// Decide, from the tenants configured, the live members (this one included), the tenants
/// held and the lease table, what to acquire and release. Pure.
pub fn plan(
    me: &str,
    configured: &[String],
    live: &[String],
    held: &BTreeSet<String>,
    leases: &BTreeMap<String, LeaseRow>,
) -> Plan {
    let mut members: Vec<&str> = live.iter().map(String::as_str).collect();
    if !members.contains(&me) {
        members.push(me);
    }
    let configured_set: BTreeSet<&str> = configured.iter().map(String::as_str).collect();
    let mut plan = Plan::default();
    for t in configured {
        let mine = member_of(t, &members) == Some(me);
        if mine && !held.contains(t) {
            // Taken only when nobody holds a valid lease on it (a member giving it up
            // releases it; a lost member's lease expires).
            let free = leases.get(t).is_none_or(|l| !l.valid || l.owner == me);
            if free {
                plan.acquire.push(t.clone());
            }
        }
    }
    for t in held {
        let mine = configured_set.contains(t.as_str()) && member_of(t, &members) == Some(me);
        if !mine {
            plan.release.push(t.clone());
        }
    }
    plan
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Announce this member. Refused (`Ok(false)`) when another live process already uses the
/// name: two members of one name would both believe they own its tenants.
pub async fn heartbeat(
    c: &Client,
    me: &str,
    holder: i64,
    lease: Duration,
) -> Result<bool, tokio_postgres::Error> {
    let row = c
        .query_opt(
            "INSERT INTO mde_member (name, incarnation, last_seen, started_at, version)
             VALUES ($1, $2, now(), now(), $3)
             ON CONFLICT (name) DO UPDATE SET last_seen = now(), incarnation = $2, version = $3
               WHERE mde_member.incarnation = $2
                  OR mde_member.last_seen < now() - make_interval(secs => $4)
             RETURNING name",
            &[&me, &holder, &env!("CARGO_PKG_VERSION"), &secs(lease)],
        )
        .await?;
    Ok(row.is_some())
}

/// The members seen within one lease duration, by name.
pub async fn live_members(
    c: &Client,
    lease: Duration,
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(c
        .query(
            "SELECT name FROM mde_member WHERE last_seen > now() - make_interval(secs => $1) ORDER BY name",
            &[&secs(lease)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Every lease, by tenant.
pub async fn leases(c: &Client) -> Result<BTreeMap<String, LeaseRow>, tokio_postgres::Error> {
    Ok(c.query(
        "SELECT tenant, owner, epoch, expires_at > now() FROM mde_lease",
        &[],
    )
    .await?
    .iter()
    .map(|r| {
        let row = LeaseRow {
            tenant: r.get(0),
            owner: r.get(1),
            epoch: r.get(2),
            valid: r.get(3),
        };
        (row.tenant.clone(), row)
    })
    .collect())
}

/// Renew the leases of `tenants` this process holds; returns those renewed, with their
/// epoch and whether the lease had already expired (renewed late: nobody took it meanwhile).
pub async fn renew(
    c: &Client,
    holder: i64,
    tenants: &[String],
    lease: Duration,
) -> Result<Vec<(String, i64, bool)>, tokio_postgres::Error> {
    if tenants.is_empty() {
        return Ok(Vec::new());
    }
    Ok(c.query(
        "UPDATE mde_lease l SET expires_at = now() + make_interval(secs => $3)
             FROM (SELECT tenant, expires_at AS old FROM mde_lease
                   WHERE holder = $1 AND tenant = ANY($2) FOR UPDATE) o
             WHERE l.tenant = o.tenant
             RETURNING l.tenant, l.epoch, o.old <= now()",
        &[&holder, &tenants, &secs(lease)],
    )
    .await?
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect())
}

/// Take the lease of `tenant` if it is free, expired or already this process's; returns
/// the new epoch, and whether its last holder lost it (expired without releasing it).
pub async fn acquire(
    c: &Client,
    tenant: &str,
    me: &str,
    holder: i64,
    lease: Duration,
) -> Result<Option<(i64, bool)>, tokio_postgres::Error> {
    Ok(c.query_opt(
        "WITH old AS (SELECT holder, released FROM mde_lease WHERE tenant = $1)
             INSERT INTO mde_lease (tenant, owner, holder, epoch, expires_at, acquired_at, released)
             VALUES ($1, $2, $3, 1, now() + make_interval(secs => $4), now(), false)
             ON CONFLICT (tenant) DO UPDATE SET owner = EXCLUDED.owner, holder = EXCLUDED.holder,
                 epoch = mde_lease.epoch + 1, expires_at = EXCLUDED.expires_at,
                 acquired_at = now(), released = false
               WHERE mde_lease.expires_at <= now() OR mde_lease.holder = EXCLUDED.holder
             RETURNING epoch,
                 COALESCE((SELECT NOT released AND holder <> $3 FROM old), false)",
        &[&tenant, &me, &holder, &secs(lease)],
    )
    .await?
    .map(|r| (r.get(0), r.get(1))))
}

/// Give up the leases of `tenants` (expired now, so another member takes them at once).
pub async fn release(
    c: &Client,
    holder: i64,
    tenants: &[String],
) -> Result<u64, tokio_postgres::Error> {
    if tenants.is_empty() {
        return Ok(0);
    }
    c.execute(
        "UPDATE mde_lease SET expires_at = now(), released = true WHERE holder = $1 AND tenant = ANY($2)",
        &[&holder, &tenants],
    )
    .await
}

/// Leave the cluster: this member's row goes, so the others stop counting it at once.
pub async fn leave(c: &Client, me: &str, holder: i64) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        "DELETE FROM mde_member WHERE name = $1 AND incarnation = $2",
        &[&me, &holder],
    )
    .await
}

/// The quota windows saved for `tenant` by its last owner, and when (Unix ms).
pub async fn load_quota(
    c: &Client,
    tenant: &str,
) -> Result<Option<(Vec<u8>, i64)>, tokio_postgres::Error> {
    Ok(c
        .query_opt(
            "SELECT value, (extract(epoch FROM saved_at) * 1000)::bigint FROM mde_quota WHERE tenant = $1",
            &[&tenant],
        )
        .await?
        .map(|r| (r.get(0), r.get(1))))
}

/// Save `tenant`'s quota windows, if this process still holds its lease.
pub async fn save_quota(
    c: &Client,
    tenant: &str,
    holder: i64,
    value: &[u8],
) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        "INSERT INTO mde_quota (tenant, value, saved_at)
         SELECT $1, $3, now() WHERE EXISTS (SELECT 1 FROM mde_lease WHERE tenant = $1 AND holder = $2)
         ON CONFLICT (tenant) DO UPDATE SET value = EXCLUDED.value, saved_at = now()",
        &[&tenant, &holder, &value],
    )
    .await
}

/// Save the quota windows of several tenants (each if this process still holds its lease),
/// the statements sent together.
pub async fn save_quotas(
    c: &Client,
    holder: i64,
    quotas: &[(String, Vec<u8>)],
) -> Result<(), tokio_postgres::Error> {
    futures_util::future::try_join_all(quotas.iter().map(|(t, q)| save_quota(c, t, holder, q)))
        .await
        .map(|_| ())
}

/// Mark the saved quota windows of `tenants` current as of now (no call was sent since they
/// were saved): the next owner after a death counts as unknown only what follows.
pub async fn touch_quota(
    c: &Client,
    holder: i64,
    tenants: &[String],
) -> Result<u64, tokio_postgres::Error> {
    if tenants.is_empty() {
        return Ok(0);
    }
    c.execute(
        "UPDATE mde_quota q SET saved_at = now() FROM mde_lease l
         WHERE q.tenant = ANY($2) AND l.tenant = q.tenant AND l.holder = $1",
        &[&holder, &tenants],
    )
    .await
}

/// Forget results, not-run commands and final actions counted longer ago than `keep` for
/// `tenants`: discovery no longer lists them (they are older than the lookback window).
pub async fn prune(
    c: &Client,
    tenants: &[String],
    keep: Duration,
) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        "DELETE FROM mde_counted WHERE tenant = ANY($1) AND at < now() - make_interval(secs => $2)",
        &[&tenants, &secs(keep)],
    )
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_tenant_is_planned_for_one_member() {
        let tenants: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
        let live = names(&["a", "b", "c"]);
        let none = BTreeMap::new();
        let mut taken = BTreeSet::new();
        for me in ["a", "b", "c"] {
            let p = plan(me, &tenants, &live, &BTreeSet::new(), &none);
            assert!(p.release.is_empty());
            for t in p.acquire {
                assert!(taken.insert(t), "two members plan one tenant");
            }
        }
        assert_eq!(taken.len(), 60);
    }

    #[test]
    fn a_valid_lease_of_another_member_is_waited_for() {
        let tenants = names(&["t"]);
        let owner = member_of("t", &["a", "b"])
            .map(str::to_string)
            .unwrap_or_default();
        let other = if owner == "a" { "b" } else { "a" };
        let mut leases = BTreeMap::new();
        leases.insert(
            "t".to_string(),
            LeaseRow {
                tenant: "t".into(),
                owner: other.into(),
                epoch: 3,
                valid: true,
            },
        );
        let live = names(&["a", "b"]);
        let p = plan(&owner, &tenants, &live, &BTreeSet::new(), &leases);
        assert!(p.acquire.is_empty(), "taken while another holds it");
        // The other member gives it up: it is not its own.
        let held: BTreeSet<String> = ["t".to_string()].into();
        let p = plan(other, &tenants, &live, &held, &leases);
        assert_eq!(p.release, names(&["t"]));
        // Expired: taken.
        if let Some(l) = leases.get_mut("t") {
            l.valid = false;
        }
        let p = plan(&owner, &tenants, &live, &BTreeSet::new(), &leases);
        assert_eq!(p.acquire, names(&["t"]));
        // A tenant no longer configured is released.
        let p = plan(&owner, &[], &live, &held, &leases);
        assert_eq!(p.release, names(&["t"]));
    }
}
