//! A cluster of real exporter processes on a real PostgreSQL (#31): the server comes from the
//! environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`: `pg_virtualenv`, which
//! scripts/test.sh runs the suite under); without one these tests say so and skip, and with
//! `CI=true` they fail. Each test makes a database of its own.
//!
//! - [`members`]: kill -9, SIGTERM, SIGSTOP past the lease, scaling 2 → 3 → 2 and a database
//!   restart, with every result link asked for once and every transcript logged once.
//! - [`config`]: `--config.check`, the password never shown, a start that cannot reach the
//!   database, `--state.import`.

mod config;
mod members;

use std::collections::BTreeMap;

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
