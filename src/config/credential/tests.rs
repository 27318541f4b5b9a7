//! The tests of reading PEM and PKCS#12 certificates and of the assertion; the fixtures
//! (`rsa_cert_der`, `pfx`) are shared with `config::auth`'s tests.

use super::*;

/// A self-signed RSA certificate valid from `not_before` to `not_after` (Unix seconds),
/// as (certificate PEM, key PEM).
pub(crate) fn rsa_cert(not_before: i64, not_after: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["mde-exporter".into()]).unwrap();
    params.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn assertion_carries_the_thumbprints_and_claims() {
    let (cert, key) = rsa_cert(1_000, 4_000_000_000);
    let c =
        Certificate::from_pem("c.pem", cert.as_bytes(), Some(("k.pem", key.as_bytes()))).unwrap();
    let jwt = c
        .assertion("app", "https://login/t/oauth2/v2.0/token", 2_000)
        .unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.x5t_s256.as_deref(), Some(c.thumbprint_s256()));
    assert!(header.x5t.is_some());
    // Both in one file works too.
    let both = format!("{cert}{key}");
    assert!(Certificate::from_pem("both.pem", both.as_bytes(), None).is_ok());
}

#[test]
fn expired_certificate_is_named() {
    let (cert, key) = rsa_cert(1_000, 1_700_000_000);
    let c =
        Certificate::from_pem("c.pem", cert.as_bytes(), Some(("k.pem", key.as_bytes()))).unwrap();
    assert_eq!(
        c.assertion("app", "aud", 1_800_000_000)
            .unwrap_err()
            .to_string(),
        "certificate c.pem expired at 2023-11-14T22:13:20Z"
    );
}

/// A self-signed RSA certificate valid between the two Unix times, as (certificate DER,
/// PKCS#8 key DER).
pub(crate) fn rsa_cert_der(not_before: i64, not_after: i64) -> (Vec<u8>, Vec<u8>) {
    let (cert, key) = rsa_cert(not_before, not_after);
    (
        pem::parse(cert).unwrap().into_contents(),
        pem::parse(key).unwrap().into_contents(),
    )
}

/// A PKCS#12 file with `key` and `chain` (leaf first), written by `p12-keystore` with the
/// given encryption and MAC.
pub(crate) fn pfx(
    key: &[u8],
    chain: &[&[u8]],
    password: &str,
    encryption: p12_keystore::EncryptionAlgorithm,
    mac: p12_keystore::MacAlgorithm,
) -> Vec<u8> {
    let chain = chain
        .iter()
        .map(|der| p12_keystore::Certificate::from_der(der).unwrap());
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "mde-exporter",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            key, b"key-1", chain,
        )),
    );
    store
        .writer(password)
        .encryption_algorithm(encryption)
        .mac_algorithm(mac)
        .write()
        .unwrap()
}

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/pkcs12")
        .join(name)
}

fn sha256_of_pem(path: &Path) -> String {
    let der = pem::parse(std::fs::read(path).unwrap())
        .unwrap()
        .into_contents();
    b64url(&sha2::Sha256::digest(der))
}

// See: #10
#[test]
fn pkcs12_of_every_encryption_family_loads_and_signs() {
    use p12_keystore::{EncryptionAlgorithm as E, MacAlgorithm as M};
    let (cert, key) = rsa_cert_der(1_000, 4_000_000_000);
    let from_pem = Certificate::from_pem(
        "c.pem",
        pem::encode(&pem::Pem::new("CERTIFICATE", cert.clone())).as_bytes(),
        Some((
            "k.pem",
            pem::encode(&pem::Pem::new("PRIVATE KEY", key.clone())).as_bytes(),
        )),
    )
    .unwrap();
    for (encryption, mac) in [
        (E::PbeWithHmacSha256AndAes256, M::HmacSha256),
        (E::PbeWithShaAnd3KeyTripleDesCbc, M::HmacSha1),
        (E::PbeWithShaAnd40BitRc4Cbc, M::HmacSha1),
    ] {
        let file = pfx(&key, &[&cert], "pw", encryption, mac);
        let c = Certificate::from_pkcs12("app.pfx", &file, "pw").unwrap();
        // The same certificate as its PEM form: the thumbprints come from the DER.
        assert_eq!(
            c.thumbprint_s256(),
            from_pem.thumbprint_s256(),
            "{encryption:?}"
        );
        assert_eq!(c.x5t, from_pem.x5t);
        let jwt = c.assertion("app", "aud", 2_000).unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.x5t_s256.as_deref(), Some(c.thumbprint_s256()));
    }
    // An empty password, as Windows exports allow.
    let file = pfx(
        &key,
        &[&cert],
        "",
        E::PbeWithHmacSha256AndAes256,
        M::HmacSha256,
    );
    assert!(Certificate::from_pkcs12("app.pfx", &file, "").is_ok());
}

// See: #10
#[test]
fn pkcs12_files_made_by_openssl_load() {
    let leaf = sha256_of_pem(&fixture("leaf.pem"));
    let ca = sha256_of_pem(&fixture("ca.pem"));
    for name in ["openssl3-aes.pfx", "legacy-3des-rc2.pfx"] {
        let c = Certificate::load_pkcs12(&fixture(name), "fixture-password").unwrap();
        // The chain carries the CA too; the certificate of the key is taken.
        assert_eq!(c.thumbprint_s256(), leaf, "{name}");
        assert_ne!(c.thumbprint_s256(), ca);
        assert!(c.assertion("app", "aud", 4_000_000_000).is_ok(), "{name}");
    }
    let c = Certificate::load_pkcs12(&fixture("empty-password.pfx"), "").unwrap();
    assert_eq!(c.thumbprint_s256(), leaf);
}

// See: #10
#[test]
fn the_certificate_matching_the_key_is_taken_not_the_first() {
    use p12_keystore::{EncryptionAlgorithm as E, MacAlgorithm as M};
    let (cert, key) = rsa_cert_der(1_000, 4_000_000_000);
    let (ca, _) = rsa_cert_der(1_000, 4_000_000_000);
    let mut store = p12_keystore::KeyStore::new();
    // Entries come back in alias order: the CA's comes first.
    store.add_entry(
        "a-ca",
        p12_keystore::KeyStoreEntry::Certificate(p12_keystore::Certificate::from_der(&ca).unwrap()),
    );
    store.add_entry(
        "b-app",
        p12_keystore::KeyStoreEntry::PrivateKeyChain(p12_keystore::PrivateKeyChain::new(
            &key,
            b"1",
            [p12_keystore::Certificate::from_der(&cert).unwrap()],
        )),
    );
    let file = store
        .writer("pw")
        .encryption_algorithm(E::PbeWithHmacSha256AndAes256)
        .mac_algorithm(M::HmacSha256)
        .write()
        .unwrap();
    let c = Certificate::from_pkcs12("chain.pfx", &file, "pw").unwrap();
    assert_eq!(c.x5t_s256, b64url(&sha2::Sha256::digest(&cert)));
    assert_ne!(c.x5t_s256, b64url(&sha2::Sha256::digest(&ca)));
}

// See: #10
#[test]
fn pkcs12_errors_name_the_file_and_the_problem() {
    use p12_keystore::{EncryptionAlgorithm as E, MacAlgorithm as M};
    let (cert, key) = rsa_cert_der(1_000, 4_000_000_000);
    let file = pfx(
        &key,
        &[&cert],
        "right",
        E::PbeWithHmacSha256AndAes256,
        M::HmacSha256,
    );
    assert_eq!(
        Certificate::from_pkcs12("app.pfx", &file, "wrong")
            .unwrap_err()
            .to_string(),
        "wrong password for app.pfx (the MAC check failed)"
    );
    let legacy = pfx(
        &key,
        &[&cert],
        "right",
        E::PbeWithShaAnd3KeyTripleDesCbc,
        M::HmacSha1,
    );
    assert_eq!(
        Certificate::from_pkcs12("old.pfx", &legacy, "")
            .unwrap_err()
            .to_string(),
        "wrong password for old.pfx (the MAC check failed)"
    );
    let err = Certificate::load_pkcs12(&fixture("legacy-3des-rc2.pfx"), "nope")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("wrong password for "), "{err}");
    // Not PKCS#12 at all: a PEM file given as pkcs12_file.
    let (cert_pem, _) = rsa_cert(1_000, 4_000_000_000);
    let err = Certificate::from_pkcs12("cert.pem", cert_pem.as_bytes(), "")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cert.pem: not a PKCS#12 file: "), "{err}");
    // A truststore: certificates, no key.
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        "ca",
        p12_keystore::KeyStoreEntry::Certificate(
            p12_keystore::Certificate::from_der(&cert).unwrap(),
        ),
    );
    let trust = store.writer("pw").write().unwrap();
    assert_eq!(
        Certificate::from_pkcs12("trust.pfx", &trust, "pw")
            .unwrap_err()
            .to_string(),
        "no private key in trust.pfx"
    );
    // A key bound to another certificate.
    let (other, _) = rsa_cert_der(1_000, 4_000_000_000);
    let wrong = pfx(
        &key,
        &[&other],
        "pw",
        E::PbeWithHmacSha256AndAes256,
        M::HmacSha256,
    );
    assert_eq!(
        Certificate::from_pkcs12("mixed.pfx", &wrong, "pw")
            .unwrap_err()
            .to_string(),
        "the private key in mixed.pfx belongs to none of its certificates"
    );
    // An EC key: only RSA is supported.
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ec_cert = rcgen::CertificateParams::new(vec!["ec".into()])
        .unwrap()
        .self_signed(&ec)
        .unwrap();
    let ec_file = pfx(
        &ec.serialize_der(),
        &[ec_cert.der()],
        "pw",
        E::PbeWithHmacSha256AndAes256,
        M::HmacSha256,
    );
    let err = Certificate::from_pkcs12("ec.pfx", &ec_file, "pw")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("ec.pfx: not an RSA private key (only RSA keys are supported): "),
        "{err}"
    );
    // A missing file.
    let err = Certificate::load_pkcs12(Path::new("/nonexistent/app.pfx"), "")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "cannot read /nonexistent/app.pfx: No such file or directory (os error 2)"
    );
}

// See: #10
#[test]
fn an_expired_certificate_in_a_pkcs12_file_is_named() {
    use p12_keystore::{EncryptionAlgorithm as E, MacAlgorithm as M};
    let (cert, key) = rsa_cert_der(1_000, 1_700_000_000);
    let file = pfx(
        &key,
        &[&cert],
        "pw",
        E::PbeWithHmacSha256AndAes256,
        M::HmacSha256,
    );
    let c = Certificate::from_pkcs12("app.pfx", &file, "pw").unwrap();
    assert_eq!(
        c.assertion("app", "aud", 1_800_000_000)
            .unwrap_err()
            .to_string(),
        "certificate app.pfx expired at 2023-11-14T22:13:20Z"
    );
}

#[test]
fn a_key_of_another_certificate_is_refused() {
    let (cert, _) = rsa_cert(1_000, 4_000_000_000);
    let (_, other_key) = rsa_cert(1_000, 4_000_000_000);
    let err = Certificate::from_pem(
        "c.pem",
        cert.as_bytes(),
        Some(("k.pem", other_key.as_bytes())),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        "the private key in k.pem does not belong to the certificate in c.pem"
    );
    let err = Certificate::from_pem("c.pem", cert.as_bytes(), None)
        .unwrap_err()
        .to_string();
    assert_eq!(err, "c.pem: no PRIVATE KEY block");
}

// See: #24 (item 3): the PEM, key and .pfx files are read within the 1 MiB cap.
#[test]
fn issue_24_certificate_files_over_1_mib_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, vec![b'#'; 2 << 20]).unwrap();
    let want = format!(
        "cannot read {}: too large for a sign-in file: 2097152 bytes, the limit is 1 MiB (1048576 bytes)",
        big.display()
    );
    let (cert, _) = rsa_cert(1_000, 4_000_000_000);
    let cert_file = dir.path().join("cert.pem");
    std::fs::write(&cert_file, cert).unwrap();
    assert_eq!(
        Certificate::load(&big, None).err().unwrap().to_string(),
        want
    );
    assert_eq!(
        Certificate::load(&cert_file, Some(&big))
            .err()
            .unwrap()
            .to_string(),
        want
    );
    assert_eq!(
        Certificate::load_pkcs12(&big, "")
            .err()
            .unwrap()
            .to_string(),
        want
    );
}
