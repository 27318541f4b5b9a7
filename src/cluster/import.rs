//! `--state.import FILE`: copy a state file (the redb file of one process or one static
//! shard) into the cluster's database, so moving to a cluster counts nothing again.
//!
//! Owns the copy: one transaction, idempotent (an entry already in the database is kept as it
//! is: importing twice, or a file older than what the cluster has since learnt, changes
//! nothing), refused whole when a tenant's identity in the file differs from the database's.
//! Does not own reading the file (`record::state`) nor the tables (`schema`).

use std::collections::BTreeMap;

use tokio_postgres::Client;

use super::store::{ACTION_SEEN, ATTEMPT, DONE, NOT_RUN, RAN, RUN, SCRIPT_SET};
use crate::record::state::Loaded;

/// What an import did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Imported {
    pub tenants: usize,
    pub rows: u64,
}

/// Copy `loaded` into the database in one transaction.
pub async fn import(client: &mut Client, loaded: &Loaded) -> Result<Imported, String> {
    let db = |e: tokio_postgres::Error| e.to_string();
    let tx = client.transaction().await.map_err(db)?;
    // Identities first: a file of another tenant under the same name is refused whole.
    for (tenant, id) in &loaded.identities {
        if let Some(row) = tx
            .query_opt(
                "SELECT value FROM mde_identity WHERE tenant = $1",
                &[tenant],
            )
            .await
            .map_err(db)?
        {
            let v: Vec<u8> = row.get(0);
            let there: Option<crate::record::state::TenantIdentity> =
                serde_json::from_slice(&v).ok();
            if there.as_ref().is_some_and(|t| t != id) {
                return Err(format!(
                    "tenant {tenant}: the state file's entries were recorded for tenant_id {} at {}, the cluster's for another tenant_id or api_url: nothing was imported",
                    id.tenant_id, id.api_url
                ));
            }
        }
    }
    let mut rows = 0u64;
    let mut tenants = std::collections::BTreeSet::new();
    let counted = "INSERT INTO mde_counted (tenant, kind, action_id, idx) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
    for (kind, keys) in [(DONE, &loaded.done), (NOT_RUN, &loaded.not_run)] {
        for k in keys {
            let idx = i32::try_from(k.index).unwrap_or(i32::MAX);
            rows += tx
                .execute(counted, &[&k.tenant, &kind, &k.action_id, &idx])
                .await
                .map_err(db)?;
            tenants.insert(k.tenant.clone());
        }
    }
    for (t, id) in &loaded.actions_seen {
        rows += tx
            .execute(counted, &[t, &ACTION_SEEN, id, &0i32])
            .await
            .map_err(db)?;
    }
    let times: [(&str, &BTreeMap<String, i64>); 3] = [
        ("discovered", &loaded.discovered),
        ("watermark", &loaded.watermarks),
        ("reconciled", &loaded.reconciled),
    ];
    for (kind, map) in times {
        for (t, at) in map {
            rows += tx
                .execute(
                    "INSERT INTO mde_tenant_time (tenant, kind, at_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[t, &kind, at],
                )
                .await
                .map_err(db)?;
        }
    }
    for ((t, id), tr) in &loaded.tracked {
        rows += tx
            .execute(
                "INSERT INTO mde_tracked (tenant, action_id, value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[t, id, &json(tr)?],
            )
            .await
            .map_err(db)?;
    }
    let series = "INSERT INTO mde_series (tenant, kind, machine, script, value) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING";
    for (k, run) in &loaded.last_runs {
        rows += tx
            .execute(series, &[&k.0, &RUN, &k.1, &k.2, &json(run)?])
            .await
            .map_err(db)?;
    }
    for (kind, map) in [(ATTEMPT, &loaded.attempts), (RAN, &loaded.ran)] {
        for (k, a) in map {
            rows += tx
                .execute(series, &[&k.0, &kind, &k.1, &k.2, &json(a)?])
                .await
                .map_err(db)?;
        }
    }
    for (k, set) in &loaded.script_sets {
        rows += tx
            .execute(series, &[&k.0, &SCRIPT_SET, &k.1, &k.2, set])
            .await
            .map_err(db)?;
    }
    for (t, id) in &loaded.identities {
        rows += tx
            .execute(
                "INSERT INTO mde_identity (tenant, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[t, &json(id)?],
            )
            .await
            .map_err(db)?;
        tenants.insert(t.clone());
    }
    tx.commit().await.map_err(db)?;
    Ok(Imported {
        tenants: tenants.len(),
        rows,
    })
}

/// A record as the state file keeps it: its JSON.
fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    serde_json::to_vec(v).map_err(|e| e.to_string())
}
