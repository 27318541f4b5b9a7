//! Rendezvous sharding: which of `count` exporters serves a tenant.
//!
//! Owns the tenant → shard mapping ([`shard_of`]), a contract between replicas of different
//! builds (pinned by a test). Does not own the flags that choose this exporter's shard
//! (`cli`), nor dropping the other shards' tenants from a configuration (`config::Config::shard`).

/// The shard (0..count) a tenant belongs to, by rendezvous (highest random weight) hashing:
/// every shard `i` scores the tenant with a hash of (tenant name, `i`) and the highest score
/// wins (ties, which need a 64-bit collision, go to the lowest index). Going from `n` to
/// `n + 1` shards therefore moves only the tenants the new shard wins, about `1/(n + 1)` of
/// them, and none between old shards; `name % count` moved most of them.
///
/// The hash is SHA-256 over the UTF-8 name, a zero byte and the shard index as 4 big-endian
/// bytes, read as the big-endian `u64` of its first 8 bytes: a published function, so the
/// mapping never changes across Rust versions, platforms, runs or releases of this exporter
/// (unlike `std`'s `DefaultHasher`, whose algorithm is unspecified).
pub fn shard_of(tenant: &str, count: u32) -> u32 {
    (0..count.max(1))
        .map(|index| (shard_weight(tenant, index), index))
        // Highest weight; on a tie the lower index (`Reverse` makes it compare greater).
        .max_by_key(|&(weight, index)| (weight, std::cmp::Reverse(index)))
        .map_or(0, |(_, index)| index)
}

/// The member (of `members`, by name) that owns `tenant` in a cluster (#31): the same
/// rendezvous hashing as [`shard_of`], each member scoring the tenant with a hash of (tenant
/// name, member name), so a member joining takes about `1/(n + 1)` of the tenants and one
/// leaving gives away only its own. `None` when there is no member.
pub fn member_of<'a>(tenant: &str, members: &[&'a str]) -> Option<&'a str> {
    members
        .iter()
        .map(|m| (member_weight(tenant, m), *m))
        // Highest weight; on a tie the smaller name.
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, m)| m)
}

/// The rendezvous weight of `tenant` on member `member`: SHA-256 over the tenant's name, a
/// zero byte and the member's name, its first 8 bytes big-endian.
fn member_weight(tenant: &str, member: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_bytes());
    hasher.update([0u8]);
    hasher.update(member.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The rendezvous weight of `tenant` on shard `index`.
fn shard_weight(tenant: &str, index: u32) -> u64 {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(tenant.as_bytes());
    hasher.update([0u8]);
    hasher.update(index.to_be_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn shards_partition_tenants() {
        let names: Vec<String> = (0..200).map(|i| format!("tenant-{i}")).collect();
        for count in 1..5u32 {
            for n in &names {
                let owners = (0..count).filter(|i| shard_of(n, count) == *i).count();
                assert_eq!(owners, 1, "{n} with {count} shards");
            }
        }
        // All shards get some of 200 tenants.
        let used: BTreeSet<u32> = names.iter().map(|n| shard_of(n, 3)).collect();
        assert_eq!(used.len(), 3);
    }

    // See: #11
    #[test]
    fn issue_11_adding_a_shard_moves_only_the_tenants_it_takes() {
        let names: Vec<String> = (0..3000).map(|i| format!("customer-{i:04}")).collect();
        for n in 1..8u32 {
            let mut moved = 0;
            let mut per_shard = vec![0usize; n as usize + 1];
            for name in &names {
                let (before, after) = (shard_of(name, n), shard_of(name, n + 1));
                per_shard[after as usize] += 1;
                if before != after {
                    moved += 1;
                    // A moved tenant only ever goes to the new shard.
                    assert_eq!(
                        after,
                        n,
                        "{name}: {n} → {} shards moved it to {after}",
                        n + 1
                    );
                }
            }
            // About 1/(n+1) moves; allow sampling noise of a few standard deviations.
            let expected = names.len() as f64 / f64::from(n + 1);
            let slack = 4.0 * expected.sqrt();
            assert!(
                (moved as f64 - expected).abs() < slack,
                "{n} → {}: {moved} of {} moved, expected about {expected:.0}",
                n + 1,
                names.len()
            );
            // And the load stays balanced.
            for (shard, &count) in per_shard.iter().enumerate() {
                assert!(
                    (count as f64 - expected).abs() < slack,
                    "shard {shard} of {} has {count} tenants, expected about {expected:.0}",
                    n + 1
                );
            }
        }
        // 3 → 4, the case of the issue: at most a third move.
        let moved = names
            .iter()
            .filter(|n| shard_of(n, 3) != shard_of(n, 4))
            .count();
        assert!(moved * 3 <= names.len(), "{moved} of {} moved", names.len());
    }

    /// A member joining takes about 1/(n+1) of the tenants, from every member alike; one
    /// leaving gives away only its own. See: #31
    #[test]
    fn members_move_only_what_they_take_or_leave() {
        let names: Vec<String> = (0..3000).map(|i| format!("customer-{i:04}")).collect();
        let three = ["a", "b", "c"];
        let four = ["a", "b", "c", "d"];
        let mut moved = 0;
        for n in &names {
            let before = member_of(n, &three).unwrap();
            let after = member_of(n, &four).unwrap();
            if before != after {
                assert_eq!(after, "d", "{n} moved between old members");
                moved += 1;
            }
            // The order the members are listed in does not matter.
            assert_eq!(member_of(n, &["c", "a", "b"]), Some(before));
        }
        assert!(
            (600..900).contains(&moved),
            "{moved} of 3000 moved to the 4th member"
        );
        for n in &names {
            let before = member_of(n, &three).unwrap();
            let after = member_of(n, &["a", "c"]).unwrap();
            if before != "b" {
                assert_eq!(before, after, "{n}: only b's tenants move when b leaves");
            }
        }
        assert_eq!(member_of("x", &[]), None);
    }

    // See: #11. The mapping is a contract between replicas of different builds: pin it.
    #[test]
    fn issue_11_the_mapping_is_pinned() {
        let got: Vec<u32> = ["contoso", "fabrikam", "tailspin", "northwind", "adatum"]
            .iter()
            .map(|n| shard_of(n, 4))
            .collect();
        // Computed independently: Python's hashlib over the same bytes.
        assert_eq!(got, [0, 0, 1, 3, 2]);
        assert_eq!(shard_of("anything", 1), 0);
        assert_eq!(shard_of("anything", 0), 0);
    }
}
