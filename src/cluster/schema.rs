//! The cluster's tables in PostgreSQL and their migration: created (or migrated) at start
//! under an advisory lock, so members starting together do it once; a database written by a
//! newer version, or whose `mde_schema` row belongs to something else, is refused.
//!
//! Owns the DDL and the schema number. Does not own what is written in the tables (`store`
//! for the state, `lease` for members and leases).
//!
//! Every table is prefixed `mde_` so the database can be shared with other applications.

use tokio_postgres::Client;

/// The schema this version writes and reads.
pub const SCHEMA: i32 = 1;

/// What the `app` column of `mde_schema` holds: a database whose row says anything else is
/// not this exporter's.
const APP: &str = "mde-liveresponse-exporter";

/// The advisory lock key the migration holds (any fixed 64-bit number; "mdeexprt").
const LOCK_KEY: i64 = 0x6d64_6565_7870_7274;

const DDL: &str = "
CREATE TABLE IF NOT EXISTS mde_member (
    name text PRIMARY KEY,
    incarnation bigint NOT NULL,
    last_seen timestamptz NOT NULL,
    started_at timestamptz NOT NULL,
    version text NOT NULL
);
CREATE TABLE IF NOT EXISTS mde_lease (
    tenant text PRIMARY KEY,
    owner text NOT NULL,
    holder bigint NOT NULL,
    epoch bigint NOT NULL,
    expires_at timestamptz NOT NULL,
    acquired_at timestamptz NOT NULL,
    -- Given up by its holder (not expired because the holder died).
    released boolean NOT NULL DEFAULT false
);
-- Results counted (kind 0), commands counted as not run (1), final actions counted (2).
CREATE TABLE IF NOT EXISTS mde_counted (
    tenant text NOT NULL,
    kind smallint NOT NULL,
    action_id text NOT NULL,
    idx integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, kind, action_id, idx)
);
CREATE INDEX IF NOT EXISTS mde_counted_at ON mde_counted (at);
-- Per tenant: discovered, watermark, reconciled (Unix ms).
CREATE TABLE IF NOT EXISTS mde_tenant_time (
    tenant text NOT NULL,
    kind text NOT NULL,
    at_ms bigint NOT NULL,
    PRIMARY KEY (tenant, kind)
);
CREATE TABLE IF NOT EXISTS mde_tracked (
    tenant text NOT NULL,
    action_id text NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tenant, action_id)
);
-- Per (tenant, machine, script): the latest run (kind 0), attempt (1), run that ran (2),
-- script-output set (3); values are the JSON the state file keeps.
CREATE TABLE IF NOT EXISTS mde_series (
    tenant text NOT NULL,
    kind smallint NOT NULL,
    machine text NOT NULL,
    script text NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tenant, kind, machine, script)
);
CREATE TABLE IF NOT EXISTS mde_identity (
    tenant text PRIMARY KEY,
    value bytea NOT NULL
);
-- Per tenant: the quota windows' sends, so the next owner spends only what is left.
CREATE TABLE IF NOT EXISTS mde_quota (
    tenant text PRIMARY KEY,
    value bytea NOT NULL,
    saved_at timestamptz NOT NULL
);
";

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the cluster database was written by a newer version of the exporter (schema {found}, this version reads {reads}): run that version or newer"
    )]
    Newer { found: i32, reads: i32 },
    #[error(
        "the cluster database's mde_schema table belongs to {found:?}, not to this exporter: use a database (or schema) of its own"
    )]
    Foreign { found: String },
    #[error("{0}")]
    Database(String),
}

/// Create or migrate the tables, holding the advisory lock meanwhile.
pub async fn migrate(client: &Client) -> Result<(), SchemaError> {
    let db = |e: tokio_postgres::Error| SchemaError::Database(e.to_string());
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(db)?;
    let result = migrate_locked(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await
        .map_err(db);
    result.and(unlocked.map(|_| ()))
}

async fn migrate_locked(client: &Client) -> Result<(), SchemaError> {
    let db = |e: tokio_postgres::Error| SchemaError::Database(e.to_string());
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS mde_schema (
                id integer PRIMARY KEY CHECK (id = 1),
                app text NOT NULL,
                version integer NOT NULL
            )",
        )
        .await
        .map_err(db)?;
    let row = client
        .query_opt("SELECT app, version FROM mde_schema WHERE id = 1", &[])
        .await
        .map_err(db)?;
    if let Some(row) = row {
        let (app, version): (String, i32) = (row.get(0), row.get(1));
        if app != APP {
            return Err(SchemaError::Foreign { found: app });
        }
        if version > SCHEMA {
            return Err(SchemaError::Newer {
                found: version,
                reads: SCHEMA,
            });
        }
    }
    // Version 1 is the first: migrations from it add their statements here, in order.
    client.batch_execute(DDL).await.map_err(db)?;
    client
        .execute(
            "INSERT INTO mde_schema (id, app, version) VALUES (1, $1, $2)
             ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version",
            &[&APP, &SCHEMA],
        )
        .await
        .map_err(db)?;
    Ok(())
}
