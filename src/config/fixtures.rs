//! Test fixtures of the config sections' unit tests: a good file, an environment and a
//! table runner for bad files; and one tenant as the other modules' unit tests build it.
//!
//! Owns nothing of the exporter; compiled only for tests.

use std::path::Path;

use super::{Auth, Config, Error, Secret, Tenant};

/// `MDE_SECRET` is the only variable set.
pub fn env(name: &str) -> Option<String> {
    match name {
        "MDE_SECRET" => Some("s3cret".into()),
        _ => None,
    }
}

/// Parse `text` as the file `cfg.yml` with [`env`]; a tenant refused alone is the error.
pub fn parse(text: &str) -> Result<Config, Error> {
    Config::parse(text, Path::new("cfg.yml"), &env)?.strict()
}

/// One tenant with a client secret; append keys of the tenant with four spaces.
pub const GOOD: &str = "
tenants:
  - name: contoso
    tenant_id: 11111111-2222-3333-4444-555555555555
    client_id: app
    client_secret: ${MDE_SECRET}
";

/// Each file must be refused with exactly its message.
#[track_caller]
pub fn assert_errors<S: AsRef<str>>(cases: &[(S, &str)]) {
    for (text, want) in cases {
        let text = text.as_ref();
        match parse(text) {
            Ok(_) => panic!("accepted, expected {want:?}:\n{text}"),
            Err(e) => assert_eq!(e.to_string(), *want, "{text}"),
        }
    }
}

/// A tenant `name` with a client secret whose API and sign-in are a closed loopback port.
#[allow(clippy::unwrap_used)]
pub fn tenant(name: &str) -> Tenant {
    let url = url::Url::parse("http://127.0.0.1:9").unwrap();
    Tenant {
        name: name.into(),
        tenant_id: "tid".into(),
        client_id: "cid".into(),
        auth: Auth::ClientSecret(Secret::new("s")),
        api_url: url.clone(),
        login_url: url,
        audience: super::Cloud::Commercial.audience().to_string(),
        selectors: Default::default(),
        quota: Default::default(),
        machine_context: Default::default(),
    }
}
