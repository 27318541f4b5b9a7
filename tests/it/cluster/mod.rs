//! A cluster of real exporter processes on a real PostgreSQL (#31): the server comes from the
//! environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`: `pg_virtualenv`, which
//! scripts/test.sh runs the suite under); without one these tests say so and skip, and with
//! `CI=true` they fail. Each test makes a database of its own.
//!
//! - [`members`]: kill -9, SIGTERM, SIGSTOP past the lease, scaling 2 → 3 → 2 and a database
//!   restart, with every result link asked for once and every transcript logged once.
//! - [`config`]: `--config.check`, the password never shown, a start that cannot reach the
//!   database, `--state.import`.
//! - [`tenant_files`]: tenant files added, broken and removed under two members (#34).

mod config;
mod members;
mod tenant_files;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::common::scrape;

/// The test server's connection, from the libpq variables; `None` (after saying so) when
/// there is none.
pub fn server() -> Option<BTreeMap<&'static str, String>> {
    let mut vars = BTreeMap::new();
    for k in ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD"] {
        match std::env::var(k) {
            Ok(v) => {
                vars.insert(k, v);
            }
            Err(_) => {
                let ci = std::env::var("CI").is_ok_and(|v| v == "true");
                assert!(
                    !ci,
                    "CI=true but no PostgreSQL test server ({k} unset): run the suite with scripts/test.sh (it starts one with pg_virtualenv)"
                );
                eprintln!(
                    "SKIPPED: no PostgreSQL test server ({k} unset); scripts/test.sh runs these tests under pg_virtualenv"
                );
                return None;
            }
        }
    }
    Some(vars)
}

/// A fresh database on the test server; returns its URL.
pub async fn database(vars: &BTreeMap<&'static str, String>, name: &str) -> String {
    let host = if vars["PGHOST"].starts_with('/') || vars["PGHOST"] == "localhost" {
        "127.0.0.1".to_string()
    } else {
        vars["PGHOST"].clone()
    };
    let base = format!(
        "postgres://{}:{}@{}:{}",
        vars["PGUSER"], vars["PGPASSWORD"], host, vars["PGPORT"]
    );
    let (client, conn) =
        tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(conn);
    for sql in [
        format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        format!("CREATE DATABASE {name}"),
    ] {
        client.batch_execute(&sql).await.unwrap();
    }
    format!("{base}/{name}?sslmode=disable")
}

/// A client on `url` (the test's own view of the database).
pub async fn client(url: &str) -> tokio_postgres::Client {
    let url = url.replace("?sslmode=disable", "");
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// The tenants a member's /metrics serves (a poll recorded), by `mde_exporter_poll_success`.
pub async fn served(addr: SocketAddr) -> BTreeSet<String> {
    scrape(addr)
        .await
        .keys()
        .filter(|(name, _)| name == "mde_exporter_poll_success")
        .filter_map(|(_, labels)| labels.get("tenant").cloned())
        .collect()
}

/// Each tenant served by at most one of `members` (asserted), and which one.
pub async fn owners(members: &[(&str, SocketAddr)]) -> BTreeMap<String, String> {
    let mut owner = BTreeMap::new();
    for (name, addr) in members {
        for t in served(*addr).await {
            if let Some(other) = owner.insert(t.clone(), name.to_string()) {
                panic!("tenant {t} is served by both {other} and {name}");
            }
        }
    }
    owner
}

/// Every tenant with a series on a member's /metrics is one it serves (one scrape): a tenant
/// it lost left with all its series, counters and histograms too, not only its per-machine
/// ones (#32), and its quota gauges (every member holds every configured tenant's windows; it
/// shows those of the tenants it polls).
pub async fn no_series_of_lost_tenants(member: &str, addr: SocketAddr) {
    let samples = scrape(addr).await;
    let tenants_of = |names: &dyn Fn(&str) -> bool| -> BTreeSet<String> {
        samples
            .keys()
            .filter(|(name, _)| names(name))
            .filter_map(|(_, labels)| labels.get("tenant").cloned())
            .collect()
    };
    let serving = tenants_of(&|n| n == "mde_exporter_poll_success");
    let shown = tenants_of(&|_| true);
    let left: BTreeSet<&String> = shown.difference(&serving).collect();
    let names: BTreeSet<&String> = samples
        .keys()
        .filter(|(_, labels)| labels.get("tenant").is_some_and(|t| left.contains(t)))
        .map(|(name, _)| name)
        .collect();
    assert!(
        left.is_empty(),
        "{member} shows series of {left:?}, which it does not serve: {names:?}"
    );
}
