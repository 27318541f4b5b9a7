//! Tests of the TLS section: PEM inputs, versions, suites, groups, client-certificate
//! policies and rotation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::WebConfig;
use crate::fixtures::{err, parse_in, tls_err, write_server_cert};

#[test]
fn tls_section_with_nothing_set_means_plain_http() {
    let web = WebConfig::parse(
        "tls_server_config:\n  cert_file: \"\"\n  min_version: TLS13\n",
        Path::new("/x/web.yml"),
    )
    .unwrap();
    assert!(web.tls_config().is_none());
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    write_server_cert(dir.path());
    let web = parse_in(
        dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
    )
    .unwrap();
    let tls = web.tls_config().unwrap();
    assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
    assert!(tls.ignore_client_order);
}

#[test]
fn rotated_certificate_files_are_picked_up_and_broken_pairs_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let new_pair = || {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (cert_a, key_a) = new_pair();
    std::fs::write(&cert_path, &cert_a).unwrap();
    std::fs::write(&key_path, &key_a).unwrap();

    let ctx = Ctx {
        path: &dir.path().join("web.yml"),
    };
    let provider = Arc::new(aws_lc_rs::default_provider());
    let cert = read_pem_file("cert_file", &cert_path, &ctx).unwrap();
    let key = read_pem_file("key_file", &key_path, &ctx).unwrap();
    let first = certified_key(&cert, &key, &provider, &ctx).unwrap();
    let mut reloading = ReloadingCert::new(ctx.path, &cert, &key, first, provider).unwrap();
    reloading.check_interval = Duration::ZERO;
    assert_eq!(reloading.current().cert[0], der(&cert_a));

    let (cert_b, key_b) = new_pair();
    std::fs::write(&cert_path, &cert_b).unwrap();
    std::fs::write(&key_path, &key_b).unwrap();
    assert_eq!(
        reloading.current().cert[0],
        der(&cert_b),
        "rotation picked up"
    );

    // Mid-rotation: a new certificate next to the old key keeps serving the last good pair...
    let (cert_c, key_c) = new_pair();
    std::fs::write(&cert_path, &cert_c).unwrap();
    assert_eq!(reloading.current().cert[0], der(&cert_b));
    std::fs::remove_file(&key_path).unwrap();
    assert_eq!(reloading.current().cert[0], der(&cert_b));
    // ...until the key arrives.
    std::fs::write(&key_path, &key_c).unwrap();
    assert_eq!(reloading.current().cert[0], der(&cert_c));
}

#[test]
fn inline_cert_and_key_are_accepted() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let text = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}",
        indent(cert.pem()),
        indent(key.serialize_pem())
    );
    let web = WebConfig::parse(&text, Path::new("/x/web.yml")).unwrap();
    assert!(web.tls_config().is_some());
}

#[test]
fn missing_files_name_key_and_path() {
    assert_eq!(
        err("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"),
        "web config file /x/web.yml: tls_server_config.cert_file: cannot read \
         /x/server.crt: No such file or directory"
    );
    assert_eq!(
        tls_err("  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: /nope/ca.crt\n"),
        "web config file DIR/web.yml: tls_server_config.client_ca_file: cannot read \
         /nope/ca.crt: No such file or directory"
    );
    assert_eq!(
        err("tls_server_config:\n  cert_file: server.crt\n"),
        "web config file /x/web.yml: tls_server_config: missing one of key or key_file"
    );
    assert_eq!(
        err("tls_server_config:\n  key_file: server.key\n"),
        "web config file /x/web.yml: tls_server_config: missing one of cert or cert_file"
    );
}

#[test]
fn pem_problems_are_named() {
    let dir = tempfile::tempdir().unwrap();
    write_server_cert(dir.path());
    std::fs::write(dir.path().join("empty.pem"), "not pem\n").unwrap();
    let e = parse_in(
        dir.path(),
        "tls_server_config:\n  cert_file: empty.pem\n  key_file: server.key\n",
    )
    .unwrap_err()
    .to_string()
    .replace(&dir.path().display().to_string(), "DIR");
    assert_eq!(
        e,
        "web config file DIR/web.yml: tls_server_config.cert_file: no PEM certificate \
         found in DIR/empty.pem"
    );
    let e = parse_in(
        dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n",
    )
    .unwrap_err()
    .to_string()
    .replace(&dir.path().display().to_string(), "DIR");
    assert_eq!(
        e,
        "web config file DIR/web.yml: tls_server_config.key_file: no PEM private key \
         found in DIR/server.crt"
    );
}

#[test]
fn key_that_does_not_match_the_certificate_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    write_server_cert(dir.path());
    std::fs::write(
        dir.path().join("other.key"),
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    let e = parse_in(
        dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("tls_server_config.key_file: cannot be used with the certificate"),
        "{e}"
    );
}

#[test]
fn client_auth_type_is_checked() {
    assert_eq!(
        tls_err("  client_auth_type: RequireClientCertificate\n"),
        "web config file DIR/web.yml: tls_server_config.client_auth_type: unknown value \
         \"RequireClientCertificate\" (expected one of NoClientCert, RequestClientCert, \
         RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
    );
    assert_eq!(
        tls_err("  client_auth_type: RequireAndVerifyClientCert\n"),
        "web config file DIR/web.yml: tls_server_config.client_ca_file: is required with \
         client_auth_type \"RequireAndVerifyClientCert\""
    );
    assert_eq!(
        tls_err("  client_ca_file: ca.crt\n"),
        "web config file DIR/web.yml: tls_server_config.client_ca_file: client CAs have \
         been configured without a client_auth_type"
    );
    for ok in [
        "NoClientCert",
        "RequestClientCert",
        "RequireAnyClientCert",
        "RequireClientCert",
    ] {
        let dir = tempfile::tempdir().unwrap();
        write_server_cert(dir.path());
        let text = format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: {ok}\n"
        );
        parse_in(dir.path(), &text).unwrap();
    }
    for ok in ["VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] {
        let dir = tempfile::tempdir().unwrap();
        write_server_cert(dir.path());
        let text = format!(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: {ok}\n  client_ca_file: ca.crt\n"
        );
        parse_in(dir.path(), &text).unwrap();
    }
}

#[test]
fn tls_versions_are_checked() {
    assert_eq!(
        tls_err("  min_version: TLS10\n"),
        "web config file DIR/web.yml: tls_server_config.min_version: TLS10 is not supported \
         (rustls implements only TLS12 and TLS13)"
    );
    assert_eq!(
        tls_err("  max_version: TLS11\n"),
        "web config file DIR/web.yml: tls_server_config.max_version: TLS11 is not supported \
         (rustls implements only TLS12 and TLS13)"
    );
    assert_eq!(
        tls_err("  min_version: TLS14\n"),
        "web config file DIR/web.yml: tls_server_config.min_version: unknown TLS version \
         \"TLS14\" (expected TLS12 or TLS13)"
    );
    assert_eq!(
        tls_err("  min_version: TLS13\n  max_version: TLS12\n"),
        "web config file DIR/web.yml: tls_server_config.min_version: TLS13 is greater than \
         max_version TLS12"
    );
}

#[test]
fn cipher_suites_and_curves_map_to_rustls() {
    let dir = tempfile::tempdir().unwrap();
    write_server_cert(dir.path());
    let web = parse_in(
        dir.path(),
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
         cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n  \
         curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n",
    )
    .unwrap();
    let tls = web.tls_config().unwrap();
    assert!(!tls.ignore_client_order);
    let suites: Vec<_> = tls
        .crypto_provider()
        .cipher_suites
        .iter()
        .filter_map(|s| s.suite().as_str())
        .collect();
    assert_eq!(
        suites,
        [
            "TLS13_AES_256_GCM_SHA384",
            "TLS13_AES_128_GCM_SHA256",
            "TLS13_CHACHA20_POLY1305_SHA256",
            "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
        ]
    );
    let groups: Vec<_> = tls
        .crypto_provider()
        .kx_groups
        .iter()
        .map(|g| g.name())
        .collect();
    assert_eq!(
        groups,
        [rustls::NamedGroup::X25519, rustls::NamedGroup::secp256r1]
    );
    assert_eq!(
        tls_err("  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"),
        "web config file DIR/web.yml: tls_server_config.cipher_suites: unsupported cipher \
         suite \"TLS_RSA_WITH_RC4_128_SHA\" (supported: \
         TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, \
         TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, \
         TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)"
    );
    assert_eq!(
        tls_err("  curve_preferences: [CurveP521]\n"),
        "web config file DIR/web.yml: tls_server_config.curve_preferences: unsupported curve \
         \"CurveP521\" (supported: CurveP256, CurveP384, X25519, X25519MLKEM768)"
    );
}

#[test]
fn client_allowed_sans_needs_a_required_client_cert_and_plain_names() {
    assert_eq!(
        tls_err(
            "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  \
             client_allowed_sans: [scraper.example]\n"
        ),
        "web config file DIR/web.yml: tls_server_config.client_allowed_sans: requires \
         client_auth_type to be one of RequireAnyClientCert or RequireAndVerifyClientCert"
    );
    assert_eq!(
        tls_err(
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
             client_allowed_sans: [prometheus@example.com]\n"
        ),
        "web config file DIR/web.yml: tls_server_config.client_allowed_sans: \
         \"prometheus@example.com\" is not a DNS name or IP address (only those are supported)"
    );
}
