//! Whose history a tenant's entries are (#24): the state is keyed by tenant name, so the same
//! name pointed at another `tenant_id` or `api_url` would apply the old watermark to a new
//! history and never list its older actions.
//!
//! Owns the check at a tenant's start and what a mismatch drops. Does not own the record
//! ([`super::model::TenantIdentity`]), its storage (`state::storage`), nor the log line and
//! counter of a change (the collector that asks).

use super::storage::Write;
use super::{State, StoreError, TenantIdentity};

/// What [`State::check_identity`] found.
#[derive(Debug, PartialEq)]
pub enum IdentityCheck {
    /// The state's entries of the tenant are its own.
    Same,
    /// No identity was recorded (a new tenant, or a file written before #24): the one
    /// configured now is recorded, nothing else changes.
    Adopted,
    /// The name now points at another tenant or API: its discovery state was dropped, so the
    /// tenant starts as on a first start (bootstrap).
    Changed { was: TenantIdentity },
}

impl State {
    /// Make sure the entries kept for `tenant` are the history of `identity` (#24). On a
    /// mismatch the tenant's discovery state (watermark, last discovery, last sweep, actions
    /// followed by id) is dropped with the new identity written, in one transaction, so its
    /// next poll bootstraps and lists its lookback window. What is done or seen (keyed by
    /// action id) is kept, so a tenant that was the same after all (a new API host for the
    /// same tenant) counts nothing twice; its per-machine series expire by `series_ttl`.
    /// Other tenants are untouched.
    pub fn check_identity(
        &mut self,
        tenant: &str,
        identity: &TenantIdentity,
    ) -> Result<IdentityCheck, StoreError> {
        let check = match self.identities.get(tenant) {
            Some(known) if known == identity => return Ok(IdentityCheck::Same),
            Some(known) => IdentityCheck::Changed { was: known.clone() },
            None => IdentityCheck::Adopted,
        };
        let changed = matches!(check, IdentityCheck::Changed { .. });
        let tracked: Vec<String> = if changed {
            self.tracked_of(tenant)
                .map(|((_, id), _)| id.clone())
                .collect()
        } else {
            Vec::new()
        };
        let mut writes = vec![Write::Identity { tenant, identity }];
        if changed {
            writes.push(Write::ForgetDiscovery { tenant });
            writes.extend(tracked.iter().map(|id| Write::Untrack {
                tenant,
                action_id: id,
            }));
        }
        self.apply(&writes)?;
        self.identities.insert(tenant.to_string(), identity.clone());
        if changed {
            self.discovered.remove(tenant);
            self.watermarks.remove(tenant);
            self.reconciled.remove(tenant);
            for id in tracked {
                self.tracked.remove(&(tenant.to_string(), id));
            }
        }
        Ok(check)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::state::{DiscoveryUpdate, Tracked};
    use chrono::{TimeZone, Utc};

    fn id(tenant_id: &str, api: &str) -> TenantIdentity {
        TenantIdentity {
            tenant_id: tenant_id.into(),
            api_url: api.into(),
        }
    }

    /// Two tenants with a watermark, a sweep, a discovery time and an action followed each.
    fn two_tenants(s: &mut State) {
        for t in ["a", "b"] {
            let at = Utc.timestamp_opt(1_000, 0).unwrap();
            s.commit_discovery(DiscoveryUpdate {
                tenant: t.into(),
                upsert: vec![(
                    format!("{t}-1"),
                    Tracked {
                        created: at,
                        status: "Pending".into(),
                    },
                )],
                remove: vec![],
                watermark: Some(at),
                reconciled: Some(at),
            })
            .unwrap();
            s.set_last_discovery(t, at).unwrap();
            s.mark_action_seen(t, &format!("{t}-0")).unwrap();
        }
    }

    /// See: #24 item 6. The same name pointed at another tenant_id (or API) drops that
    /// tenant's discovery state, and only that tenant's; what was counted stays counted.
    #[test]
    fn a_changed_identity_bootstraps_that_tenant_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let mut s = State::open(Some(&path)).unwrap();
            two_tenants(&mut s);
            // A file of before #24 has no identity: adopted silently, nothing dropped.
            assert_eq!(
                s.check_identity("a", &id("t1", "https://api")).unwrap(),
                IdentityCheck::Adopted
            );
            assert_eq!(
                s.check_identity("b", &id("t2", "https://api")).unwrap(),
                IdentityCheck::Adopted
            );
            assert!(s.watermark("a").is_some() && s.tracked("a").len() == 1);
            assert_eq!(
                s.check_identity("a", &id("t1", "https://api")).unwrap(),
                IdentityCheck::Same
            );
        }
        let mut s = State::open(Some(&path)).unwrap();
        assert_eq!(
            s.check_identity("a", &id("t1", "https://api")).unwrap(),
            IdentityCheck::Same,
            "recorded in the file"
        );
        assert_eq!(
            s.check_identity("a", &id("t9", "https://api")).unwrap(),
            IdentityCheck::Changed {
                was: id("t1", "https://api")
            }
        );
        assert_eq!(
            s.check_identity("b", &id("t2", "https://eu.api")).unwrap(),
            IdentityCheck::Changed {
                was: id("t2", "https://api")
            },
            "another API is another identity"
        );
        assert_eq!(s.watermark("a"), None);
        assert_eq!(s.last_discovery("a"), None);
        assert_eq!(s.last_reconcile("a"), None);
        assert!(s.tracked("a").is_empty());
        assert!(s.action_seen("a", "a-0"), "counted stays counted");
        drop(s);
        let mut s = State::open(Some(&path)).unwrap();
        assert_eq!(s.watermark("a"), None, "dropped in the file too");
        assert!(s.tracked("a").is_empty());
        assert_eq!(
            s.check_identity("a", &id("t9", "https://api")).unwrap(),
            IdentityCheck::Same
        );

        // Other tenants untouched.
        let mut s = State::default();
        two_tenants(&mut s);
        s.check_identity("a", &id("t1", "u")).unwrap();
        s.check_identity("b", &id("t2", "u")).unwrap();
        s.check_identity("a", &id("t3", "u")).unwrap();
        assert!(s.watermark("a").is_none() && s.tracked("a").is_empty());
        assert!(s.watermark("b").is_some() && s.tracked("b").len() == 1);
        assert!(s.last_discovery("b").is_some() && s.last_reconcile("b").is_some());
    }
}
