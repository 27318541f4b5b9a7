//! Sign-in without a client secret, end to end against the simulator, which checks what the
//! Microsoft identity platform checks: a certificate's client assertion (signature against
//! the registered certificate, `aud`, `iss`/`sub`, `nbf`/`exp`, an unused `jti`), a federated
//! token it was told to trust (read again from the file when it changed), and its own
//! managed-identity metadata endpoint. Each method's clear error is asserted too. See: #10

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::common::*;
use mde_liveresponse_exporter::config::Config;
use mde_liveresponse_exporter::config::credential::Certificate;
use mde_sim::{SimConfig, Simulator};

/// A self-signed RSA certificate valid between the two Unix times: (cert PEM, key PEM).
fn rsa_cert(not_before: i64, not_after: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["mde-exporter".into()]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn sim_config(seed: u64) -> SimConfig {
    SimConfig {
        seed,
        machines: 3,
        actions: 8,
        finish_within: Duration::from_millis(200),
        ..SimConfig::default()
    }
}

/// One tenant named `name` on the simulator, signing in with `auth` (YAML lines, indented
/// for the `auth:` block); `ids` adds tenant_id/client_id.
fn tenant(name: &str, sim: &Simulator, addr: SocketAddr, ids: bool, auth: &str) -> String {
    let (tenant_id, client_id, _) = sim.credentials();
    let ids = if ids {
        format!("    tenant_id: {tenant_id}\n    client_id: {client_id}\n")
    } else {
        String::new()
    };
    format!(
        "  - name: {name}\n{ids}    api_url: http://{addr}\n    login_url: http://{addr}\n    auth:\n{auth}"
    )
}

/// The configuration as `--config.check` sees it: a tenant refused alone (its sign-in cannot
/// be resolved, #34) is the error, with the message a start used to refuse.
fn parse_in(
    dir: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, String> {
    let path = dir.join("config.yml");
    Config::parse(text, &path, env)
        .and_then(Config::strict)
        .map_err(|e| e.to_string())
}

async fn status_page(addr: SocketAddr) -> String {
    get(addr, "/", None).await.2
}

fn token_calls(m: &Samples, tenant: &str, code: &str) -> f64 {
    sum(
        m,
        "mde_api_requests_total",
        &[("tenant", tenant), ("endpoint", "token"), ("code", code)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_signs_in_and_an_unregistered_one_is_refused() {
    let (sim, addr) = start_sim(sim_config(101)).await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = rsa_cert(now() - 3600, now() + 86400);
    sim.identity().register_certificate(&cert).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    // Another certificate, never uploaded to the app registration; key and cert in one file.
    let (other, other_key) = rsa_cert(now() - 3600, now() + 86400);
    std::fs::write(dir.path().join("other.pem"), format!("{other}{other_key}")).unwrap();
    let text = format!(
        "poll_interval: 200ms\ntenants:\n{}{}",
        tenant(
            "cert",
            &sim,
            addr,
            true,
            "      method: certificate\n      certificate_file: cert.pem\n      key_file: key.pem\n"
        ),
        tenant(
            "unregistered",
            &sim,
            addr,
            true,
            "      method: certificate\n      certificate_file: other.pem\n"
        ),
    );
    let config = parse_in(dir.path(), &text, &|_| None).unwrap();
    let exporter = start_exporter(config).await;
    let at = exporter.addr;
    eventually("the certificate tenant polls", || async move {
        let m = scrape(at).await;
        token_calls(&m, "cert", "200") > 0.0
            && sum(
                &m,
                "mde_liveresponse_script_runs_total",
                &[("tenant", "cert")],
            ) > 0.0
            && token_calls(&m, "unregistered", "401") > 0.0
    })
    .await;
    let page = status_page(at).await;
    assert!(
        page.contains("AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application."),
        "{page}"
    );
    exporter.shutdown().await.unwrap();
}

fn pkcs12_fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pkcs12")
        .join(name)
}

/// A PKCS#12 file (PBES2, as `p12-keystore` writes by default) of a fresh self-signed
/// certificate, and that certificate's PEM.
fn fresh_pfx(password: &str) -> (Vec<u8>, String) {
    let (cert, key) = rsa_cert(now() - 3600, now() + 86400);
    let der = |text: &str| pem::parse(text).unwrap().into_contents();
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "app",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            der(&key),
            b"1",
            [p12_keystore::Certificate::from_der(&der(&cert)).unwrap()],
        )),
    );
    (store.writer(password).write().unwrap(), cert)
}

// See: #10
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs12_files_sign_in_and_a_rotated_one_is_read_again() {
    let (sim, addr) = start_sim(sim_config(106)).await;
    let dir = tempfile::tempdir().unwrap();
    // The OpenSSL-made fixtures (PBES2 and legacy 3DES/RC2-40) hold the leaf certificate.
    let leaf = std::fs::read_to_string(pkcs12_fixture("leaf.pem")).unwrap();
    sim.identity().register_certificate(&leaf).unwrap();
    std::fs::write(dir.path().join("pfx-password"), "fixture-password\n").unwrap();
    // A .pfx of a certificate never uploaded to the app registration, until it is replaced.
    let (unregistered, _) = fresh_pfx("fixture-password");
    std::fs::write(dir.path().join("rotated.pfx"), unregistered).unwrap();
    let aes = pkcs12_fixture("openssl3-aes.pfx");
    let legacy = pkcs12_fixture("legacy-3des-rc2.pfx");
    let text = format!(
        "poll_interval: 200ms\ntenants:\n{}{}{}",
        tenant(
            "aes",
            &sim,
            addr,
            true,
            &format!(
                "      method: certificate\n      pkcs12_file: {}\n      pkcs12_password_file: pfx-password\n",
                aes.display()
            )
        ),
        tenant(
            "legacy",
            &sim,
            addr,
            true,
            &format!(
                "      method: certificate\n      pkcs12_file: {}\n      pkcs12_password: ${{PFX_PASSWORD}}\n",
                legacy.display()
            )
        ),
        tenant(
            "rotated",
            &sim,
            addr,
            true,
            "      method: certificate\n      pkcs12_file: rotated.pfx\n      pkcs12_password_file: pfx-password\n"
        ),
    );
    let env = |name: &str| (name == "PFX_PASSWORD").then(|| "fixture-password".to_string());
    let config = parse_in(dir.path(), &text, &env).unwrap();
    let exporter = start_exporter(config).await;
    let at = exporter.addr;
    eventually(
        "both fixtures sign in, the unregistered one is refused",
        || async move {
            let m = scrape(at).await;
            token_calls(&m, "aes", "200") > 0.0
                && token_calls(&m, "legacy", "200") > 0.0
                && sum(
                    &m,
                    "mde_liveresponse_script_runs_total",
                    &[("tenant", "legacy")],
                ) > 0.0
                && token_calls(&m, "rotated", "401") > 0.0
        },
    )
    .await;
    assert!(
        status_page(at)
            .await
            .contains("AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application."),
    );
    // Rotate: the registered certificate replaces the file, with no restart or reload.
    std::fs::copy(&aes, dir.path().join("rotated.pfx")).unwrap();
    eventually(
        "the rotated .pfx is read for the next token",
        || async move { token_calls(&scrape(at).await, "rotated", "200") > 0.0 },
    )
    .await;
    // The password is nowhere on the status page.
    assert!(!status_page(at).await.contains("fixture-password"));
    exporter.shutdown().await.unwrap();
}

// See: #10
#[test]
fn pkcs12_errors_are_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let (expired_cert, expired_key) = rsa_cert(1_600_000_000, 1_700_000_000);
    let der = |text: &str| pem::parse(text).unwrap().into_contents();
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "old",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            der(&expired_key),
            b"1",
            [p12_keystore::Certificate::from_der(&der(&expired_cert)).unwrap()],
        )),
    );
    std::fs::write(
        dir.path().join("expired.pfx"),
        store.writer("pw").write().unwrap(),
    )
    .unwrap();
    let base = "tenants:\n  - name: t\n    tenant_id: tid\n    client_id: cid\n    auth:\n      method: certificate\n";
    let d = dir.path().display();
    let cases = [
        (
            "      pkcs12_file: expired.pfx\n      pkcs12_password: pw\n".to_string(),
            format!("certificate {d}/expired.pfx expired at 2023-11-14T22:13:20Z"),
        ),
        (
            format!(
                "      pkcs12_file: {}\n      pkcs12_password: not-it\n",
                pkcs12_fixture("legacy-3des-rc2.pfx").display()
            ),
            format!(
                "wrong password for {} (the MAC check failed)",
                pkcs12_fixture("legacy-3des-rc2.pfx").display()
            ),
        ),
        (
            "      pkcs12_file: missing.pfx\n".to_string(),
            format!("cannot read {d}/missing.pfx: No such file or directory (os error 2)"),
        ),
    ];
    for (auth, want) in cases {
        let err = parse_in(dir.path(), &format!("{base}{auth}"), &|_| None).unwrap_err();
        assert_eq!(
            err,
            format!("config file {d}/config.yml: tenants[0].auth.pkcs12_file: {want}")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_checks_audience_and_replayed_assertions() {
    let (sim, addr) = start_sim(sim_config(102)).await;
    let (cert, key) = rsa_cert(now() - 3600, now() + 86400);
    sim.identity().register_certificate(&cert).unwrap();
    let c = Certificate::from_pem(
        "cert.pem",
        cert.as_bytes(),
        Some(("key.pem", key.as_bytes())),
    )
    .unwrap();
    let (tenant_id, client_id, _) = sim.credentials();
    let token_url = format!("http://{addr}/{tenant_id}/oauth2/v2.0/token");
    let post = |assertion: String| {
        let token_url = token_url.clone();
        let client_id = client_id.to_string();
        async move {
            let resp = reqwest::Client::new()
                .post(&token_url)
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", &client_id),
                    ("scope", "https://api.securitycenter.microsoft.com/.default"),
                    (
                        "client_assertion_type",
                        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    ),
                    ("client_assertion", &assertion),
                ])
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let good = c.assertion(client_id, &token_url, now()).unwrap();
    let (status, body) = post(good.clone()).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(good).await;
    assert_eq!(status, 401);
    assert!(body.contains("jti that was already used"), "{body}");
    let elsewhere = c
        .assertion(
            client_id,
            "https://login.example/other/oauth2/v2.0/token",
            now(),
        )
        .unwrap();
    let (status, body) = post(elsewhere).await;
    assert_eq!(status, 401);
    assert!(body.contains("audience claim does not match"), "{body}");
    // A tampered assertion: the signature no longer matches the registered certificate.
    let fresh = c.assertion(client_id, &token_url, now()).unwrap();
    let (head, sig) = fresh.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let (status, body) = post(format!("{head}.{flipped}{}", &sig[1..])).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("AADSTS700027: Client assertion failed signature validation."),
        "{body}"
    );
    // A registered certificate that has expired (the assertion made while it was valid).
    let (old_cert, old_key) = rsa_cert(1_600_000_000, 1_700_000_000);
    sim.identity().register_certificate(&old_cert).unwrap();
    let old = Certificate::from_pem(
        "old.pem",
        old_cert.as_bytes(),
        Some(("old-key.pem", old_key.as_bytes())),
    )
    .unwrap();
    let (status, body) = post(old.assertion(client_id, &token_url, 1_650_000_000).unwrap()).await;
    assert_eq!(status, 401);
    assert!(body.contains("is expired on application"), "{body}");
    // Signed an hour ago: outside the 10-minute validity plus 5 minutes of skew.
    let stale = c.assertion(client_id, &token_url, now() - 3600).unwrap();
    let (status, body) = post(stale).await;
    assert_eq!(status, 401);
    assert!(
        body.contains("AADSTS700024: Client assertion is not within its valid time range."),
        "{body}"
    );
}

#[test]
fn expired_certificate_and_wrong_key_are_named_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let (expired, expired_key) = rsa_cert(1_600_000_000, 1_700_000_000);
    let (cert, _) = rsa_cert(now() - 3600, now() + 86400);
    let (_, stranger) = rsa_cert(now() - 3600, now() + 86400);
    std::fs::write(
        dir.path().join("expired.pem"),
        format!("{expired}{expired_key}"),
    )
    .unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("stranger.pem"), &stranger).unwrap();
    let base = "tenants:\n  - name: t\n    tenant_id: tid\n    client_id: cid\n    auth:\n      method: certificate\n";
    let d = dir.path().display();
    let err = parse_in(
        dir.path(),
        &format!("{base}      certificate_file: expired.pem\n"),
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        format!(
            "config file {d}/config.yml: tenants[0].auth.certificate_file: certificate {d}/expired.pem expired at 2023-11-14T22:13:20Z"
        )
    );
    let err = parse_in(
        dir.path(),
        &format!("{base}      certificate_file: cert.pem\n      key_file: stranger.pem\n"),
        &|_| None,
    )
    .unwrap_err();
    assert_eq!(
        err,
        format!(
            "config file {d}/config.yml: tenants[0].auth.certificate_file: the private key in {d}/stranger.pem does not belong to the certificate in {d}/cert.pem"
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_reads_the_token_file_for_every_token() {
    let (sim, addr) = start_sim(sim_config(103)).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "federated-token-1\n").unwrap();
    sim.identity().trust_federated_token("federated-token-1");
    let (tenant_id, client_id, _) = sim.credentials();
    // As AKS injects them; the tenant names neither ids nor the token file.
    let env = {
        let (tenant_id, client_id) = (tenant_id.to_string(), client_id.to_string());
        let file = token_file.display().to_string();
        let authority = format!("http://{addr}");
        move |name: &str| match name {
            "AZURE_TENANT_ID" => Some(tenant_id.clone()),
            "AZURE_CLIENT_ID" => Some(client_id.clone()),
            "AZURE_FEDERATED_TOKEN_FILE" => Some(file.clone()),
            "AZURE_AUTHORITY_HOST" => Some(authority.clone()),
            _ => None,
        }
    };
    let text = format!(
        "poll_interval: 200ms\ntenants:\n  - name: wi\n    api_url: http://{addr}\n    auth:\n      method: workload_identity\n"
    );
    let config = parse_in(dir.path(), &text, &env).unwrap();
    let exporter = start_exporter(config).await;
    let at = exporter.addr;
    eventually("a token for the federated token", || async move {
        token_calls(&scrape(at).await, "wi", "200") == 1.0
    })
    .await;
    // The projected token rotates: the old one is no longer trusted, the file holds the new
    // one, and the next token request must read it.
    sim.identity().distrust_federated_token("federated-token-1");
    sim.identity().trust_federated_token("federated-token-2");
    std::fs::write(&token_file, "federated-token-2\n").unwrap();
    sim.faults().revoke_tokens();
    eventually("a second token from the rotated file", || async move {
        token_calls(&scrape(at).await, "wi", "200") == 2.0
    })
    .await;
    // The file disappears: the error names it.
    std::fs::remove_file(&token_file).unwrap();
    sim.faults().revoke_tokens();
    eventually("the missing token file on the status page", || async move {
        status_page(at)
            .await
            .contains("cannot read federated token file")
    })
    .await;
    let page = status_page(at).await;
    assert!(
        page.contains(&format!(
            "cannot read federated token file {}: No such file or directory",
            token_file.display()
        )),
        "{page}"
    );
    exporter.shutdown().await.unwrap();

    // At load, a missing file is named too.
    let err = parse_in(dir.path(), &text, &env).unwrap_err();
    assert_eq!(
        err,
        format!(
            "config file {}/config.yml: tenants[0].auth.token_file: cannot read {}: No such file or directory (os error 2)",
            dir.path().display(),
            token_file.display()
        )
    );
    let err = parse_in(dir.path(), &text, &|_| None).unwrap_err();
    assert_eq!(
        err,
        format!(
            "config file {}/config.yml: tenants[0].tenant_id: not set, and AZURE_TENANT_ID is not set",
            dir.path().display()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_uses_the_metadata_endpoint() {
    let (sim, addr) = start_sim(sim_config(104)).await;
    sim.identity()
        .add_managed_identity("22222222-2222-4222-8222-222222222222");
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://{addr}/metadata/identity/oauth2/token");
    let text = format!(
        "poll_interval: 200ms\ntenants:\n{}{}{}",
        tenant(
            "system",
            &sim,
            addr,
            false,
            &format!("      method: managed_identity\n      endpoint: {endpoint}\n")
        ),
        tenant(
            "user",
            &sim,
            addr,
            false,
            &format!(
                "      method: managed_identity\n      endpoint: {endpoint}\n      client_id: 22222222-2222-4222-8222-222222222222\n"
            )
        ),
        tenant(
            "unknown",
            &sim,
            addr,
            false,
            &format!(
                "      method: managed_identity\n      endpoint: {endpoint}\n      client_id: 33333333-3333-4333-8333-333333333333\n"
            )
        ),
    );
    let config = parse_in(dir.path(), &text, &|_| None).unwrap();
    let exporter = start_exporter(config).await;
    let at = exporter.addr;
    eventually("system- and user-assigned identities poll", || async move {
        let m = scrape(at).await;
        token_calls(&m, "system", "200") > 0.0
            && token_calls(&m, "user", "200") > 0.0
            && token_calls(&m, "unknown", "400") > 0.0
            && sum(
                &m,
                "mde_liveresponse_script_runs_total",
                &[("tenant", "user")],
            ) > 0.0
    })
    .await;
    let page = status_page(at).await;
    assert!(
        page.contains("HTTP 400: invalid_request: Identity not found"),
        "{page}"
    );
    exporter.shutdown().await.unwrap();
}

// See: #24 (item 3). A 300 MB token file was read on every token and sent to the token
// endpoint; a file over 1 MiB is refused at token time, named, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_24_a_token_file_over_1_mib_is_refused_at_token_time_and_not_sent() {
    let (sim, addr) = start_sim(sim_config(124)).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("azure-identity-token");
    std::fs::write(&token_file, "federated-token-1\n").unwrap();
    sim.identity().trust_federated_token("federated-token-1");
    let auth = format!(
        "      method: workload_identity\n      token_file: {}\n",
        token_file.display()
    );
    let text = format!(
        "poll_interval: 200ms\ntenants:\n{}",
        tenant("wi", &sim, addr, true, &auth)
    );
    let config = parse_in(dir.path(), &text, &|_| None).unwrap();
    let exporter = start_exporter(config).await;
    let at = exporter.addr;
    eventually("a token for the federated token", || async move {
        token_calls(&scrape(at).await, "wi", "200") == 1.0
    })
    .await;
    std::fs::write(&token_file, vec![b'a'; 2 << 20]).unwrap();
    sim.faults().revoke_tokens();
    eventually(
        "the oversized token file on the status page",
        || async move {
            status_page(at)
                .await
                .contains("too large for a sign-in file")
        },
    )
    .await;
    let page = status_page(at).await;
    assert!(
        page.contains(&format!(
            "cannot read federated token file {}: too large for a sign-in file: 2097152 bytes, the limit is 1 MiB (1048576 bytes)",
            token_file.display()
        )),
        "{page}"
    );
    let sent = sum(
        &scrape(at).await,
        "mde_api_requests_total",
        &[("tenant", "wi"), ("endpoint", "token")],
    );
    assert_eq!(sent, 1.0, "only the first token request was sent");
    exporter.shutdown().await.unwrap();
    // At load, the same file is refused, naming it and the limit.
    assert_eq!(
        parse_in(dir.path(), &text, &|_| None).unwrap_err(),
        format!(
            "config file {}/config.yml: tenants[0].auth.token_file: cannot read {}: too large for a sign-in file: 2097152 bytes, the limit is 1 MiB (1048576 bytes)",
            dir.path().display(),
            token_file.display()
        )
    );
}
