//! A client certificate for `method: certificate`: PEM files or a PKCS#12 (`.pfx`) file → a
//! checked signing credential, and the client assertion the Microsoft identity platform asks
//! for (an RS256 JWT whose header carries the certificate's `x5t` and `x5t#S256` thumbprints).
//!
//! Owns reading the PEM blocks (certificate and private key in two files or one) and the
//! PKCS#12 file (its password is given, not looked up here), the checks that give a clear
//! error before anything is sent (the key matches the certificate, the certificate is within
//! its validity), and the assertion's claims. Both formats end in one constructor from a DER
//! certificate and a key, so the checks exist once. Pure apart from reading the files;
//! imports nothing else from the crate, so both `config` (to check a file at load and
//! `--config.check`) and `crate::api::auth` (to sign, re-reading the files on every token
//! request so that a rotated certificate is picked up) can use it without an import circle (the one
//! module of the crate it uses is `sign_in_file`, the 1 MiB cap of its reads). Signing is
//! `jsonwebtoken`'s (on aws-lc-rs, which rustls already links); the X.509 parsing is
//! `x509-parser`'s; PKCS#12 decoding (MAC, PBES1/PBES2 decryption, bags) is `p12-keystore`'s.
//! Does not own where the files are configured (`config::auth`) nor the token request
//! (`api::auth`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sha2::Digest as _;

/// How long an assertion is valid; Microsoft's samples use 10 minutes.
const ASSERTION_LIFETIME_SECS: i64 = 600;

/// A certificate with its private key, checked to belong together.
pub struct Certificate {
    /// Where the certificate came from, for error messages.
    path: String,
    /// base64url SHA-1 of the DER certificate (`x5t`).
    x5t: String,
    /// base64url SHA-256 of the DER certificate (`x5t#S256`).
    x5t_s256: String,
    /// Validity, Unix seconds.
    not_before: i64,
    not_after: i64,
    key: EncodingKey,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Certificate")
            .field("path", &self.path)
            .field("x5t", &self.x5t)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    aud: String,
    iss: String,
    sub: String,
    jti: String,
    nbf: i64,
    iat: i64,
    exp: i64,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    crate::config::sign_in_file::read(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| unix.to_string())
}

/// A private key as the file holds it, before `jsonwebtoken` takes it.
enum KeyDer<'a> {
    /// `RSA PRIVATE KEY`: PKCS#1 `RSAPrivateKey`, which is what the signer wants.
    Pkcs1(&'a [u8]),
    /// `PRIVATE KEY` or a PKCS#12 key bag: PKCS#8 `PrivateKeyInfo`. `jsonwebtoken`'s PEM
    /// reader checks the algorithm is RSA and unwraps the PKCS#1 key inside, so this goes
    /// through it rather than through a second ASN.1 reader of ours.
    Pkcs8(&'a [u8]),
}

/// Why a key and a certificate did not make a [`Certificate`].
enum Unpaired {
    /// The key's signature does not verify with the certificate's public key.
    Mismatch,
    /// Anything else, already a message.
    Other(String),
}

/// The signing key of `key`, or an error naming `key_name`.
fn encoding_key(key_name: &str, key: KeyDer<'_>) -> Result<EncodingKey, String> {
    match key {
        KeyDer::Pkcs1(der) => Ok(EncodingKey::from_rsa_der(der)),
        KeyDer::Pkcs8(der) => {
            let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()));
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| {
                format!("{key_name}: not an RSA private key (only RSA keys are supported): {e}")
            })
        }
    }
}

impl Certificate {
    /// Read `cert_path` (PEM; may also hold the key) and `key_path` (PEM private key; when
    /// `None`, the key must be in `cert_path`).
    pub fn load(cert_path: &Path, key_path: Option<&Path>) -> Result<Certificate, String> {
        let cert_pem = read(cert_path)?;
        let key_pem = match key_path {
            Some(p) => Some(read(p)?),
            None => None,
        };
        Certificate::from_pem(
            &cert_path.display().to_string(),
            &cert_pem,
            key_path
                .map(|p| p.display().to_string())
                .as_deref()
                .zip(key_pem.as_deref()),
        )
    }

    /// From PEM text: the certificate (first `CERTIFICATE` block of `cert`) and the key
    /// (`PRIVATE KEY` or `RSA PRIVATE KEY`, from `key` if given, else from `cert`).
    pub fn from_pem(
        cert_name: &str,
        cert: &[u8],
        key: Option<(&str, &[u8])>,
    ) -> Result<Certificate, String> {
        let blocks = pem::parse_many(cert).map_err(|e| format!("{cert_name}: not PEM: {e}"))?;
        let Some(der) = blocks.iter().find(|b| b.tag() == "CERTIFICATE") else {
            return Err(format!("{cert_name}: no CERTIFICATE block"));
        };
        let (key_name, key_blocks) = match key {
            Some((name, bytes)) => (
                name,
                pem::parse_many(bytes).map_err(|e| format!("{name}: not PEM: {e}"))?,
            ),
            None => (cert_name, blocks.clone()),
        };
        let encoding = key_blocks
            .iter()
            .find_map(|b| match b.tag() {
                "RSA PRIVATE KEY" => Some(encoding_key(key_name, KeyDer::Pkcs1(b.contents()))),
                "PRIVATE KEY" => Some(encoding_key(key_name, KeyDer::Pkcs8(b.contents()))),
                "EC PRIVATE KEY" => Some(Err(format!(
                    "{key_name}: an EC private key; only RSA keys are supported"
                ))),
                _ => None,
            })
            .ok_or_else(|| format!("{key_name}: no PRIVATE KEY block"))??;
        Certificate::from_der(cert_name, der.contents(), key_name, encoding)
    }

    /// Read a PKCS#12 (`.pfx`/`.p12`) file: the private key and the certificate it belongs
    /// to (a file with the chain carries the CA certificates too; the one whose public key
    /// matches the key is taken). `password` may be empty, as Windows exports allow.
    /// Reads both encryption families in use: PBES2 (AES-256-CBC with PBKDF2-HMAC-SHA256,
    /// OpenSSL 3's default and newer Windows exports) and the legacy PBES1
    /// (`pbeWithSHAAnd3-KeyTripleDES-CBC`, `pbeWithSHAAnd40BitRC2-CBC`: older Windows and
    /// `openssl pkcs12 -legacy`); the MAC is checked first, so a wrong password is named as
    /// such rather than surfacing as undecryptable garbage.
    pub fn load_pkcs12(path: &Path, password: &str) -> Result<Certificate, String> {
        let bytes = read(path)?;
        Certificate::from_pkcs12(&path.display().to_string(), &bytes, password)
    }

    /// [`Certificate::load_pkcs12`] on bytes already read; `name` is for messages.
    pub fn from_pkcs12(name: &str, pfx: &[u8], password: &str) -> Result<Certificate, String> {
        use p12_keystore::error::Error as P12;
        let store = p12_keystore::KeyStore::from_pkcs12(pfx, password).map_err(|e| match e {
            P12::MacError(_) => format!("wrong password for {name} (the MAC check failed)"),
            // No MAC to check (rare): a wrong password shows as bad padding.
            P12::UnpadError | P12::Pkcs5Error(_) => {
                format!("cannot decrypt {name}: wrong password? ({e})")
            }
            P12::UnsupportedEncryptionScheme | P12::UnsupportedMacAlgorithm => {
                format!(
                    "{name}: {e}; AES-CBC (PBES2), 3DES and 40-bit RC2 encryption and HMAC-SHA1 \
                     or HMAC-SHA256 MACs are read: re-export it with `openssl pkcs12 -export`"
                )
            }
            P12::IoError(_) => format!("cannot read {name}: {e}"),
            _ => format!("{name}: not a PKCS#12 file: {e}"),
        })?;
        let mut keys = Vec::new();
        let mut certificates = Vec::new();
        for (_, entry) in store.entries() {
            match entry {
                p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                    keys.push(chain.key());
                    certificates.extend(chain.chain().iter().map(|c| c.as_der()));
                }
                p12_keystore::KeyStoreEntry::Certificate(c) => certificates.push(c.as_der()),
                p12_keystore::KeyStoreEntry::Secret(_) => {}
            }
        }
        if keys.is_empty() {
            return Err(format!("no private key in {name}"));
        }
        if certificates.is_empty() {
            return Err(format!("no certificate in {name}"));
        }
        // The first key/certificate pair that belongs together; a certificate that cannot
        // be read, or a key that cannot sign, is reported only when no pair matches.
        let mut other_error = None;
        for key in keys {
            let encoding = encoding_key(name, KeyDer::Pkcs8(key))?;
            for der in &certificates {
                match Certificate::pair(name, der, name, encoding.clone()) {
                    Ok(c) => return Ok(c),
                    Err(Unpaired::Mismatch) => {}
                    Err(Unpaired::Other(e)) => {
                        other_error.get_or_insert(e);
                    }
                }
            }
        }
        Err(other_error.unwrap_or_else(|| {
            format!("the private key in {name} belongs to none of its certificates")
        }))
    }

    /// The one constructor behind both formats: a DER certificate and its signing key,
    /// checked to belong together. Validity is checked by the callers
    /// ([`Certificate::check_valid_at`]), at load and for every assertion.
    fn from_der(
        cert_name: &str,
        der: &[u8],
        key_name: &str,
        key: EncodingKey,
    ) -> Result<Certificate, String> {
        Certificate::pair(cert_name, der, key_name, key).map_err(|e| match e {
            Unpaired::Mismatch => format!(
                "the private key in {key_name} does not belong to the certificate in {cert_name}"
            ),
            Unpaired::Other(e) => e,
        })
    }

    fn pair(
        cert_name: &str,
        der: &[u8],
        key_name: &str,
        key: EncodingKey,
    ) -> Result<Certificate, Unpaired> {
        let (_, x509) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| Unpaired::Other(format!("{cert_name}: not an X.509 certificate: {e}")))?;
        let spki = x509.public_key();
        let certificate = Certificate {
            path: cert_name.to_string(),
            x5t: b64url(&sha1::Sha1::digest(der)),
            x5t_s256: b64url(&sha2::Sha256::digest(der)),
            not_before: x509.validity().not_before.timestamp(),
            not_after: x509.validity().not_after.timestamp(),
            key,
        };
        // A key that cannot sign, or signs for another certificate, is found now rather
        // than as an AADSTS700027 from the identity provider.
        let probe = certificate
            .sign("probe", "probe", "probe", certificate.not_before)
            .map_err(|e| Unpaired::Other(format!("{key_name}: cannot sign with this key: {e}")))?;
        let public = DecodingKey::from_rsa_der(&spki.subject_public_key.data);
        let mut check = Validation::new(Algorithm::RS256);
        check.validate_exp = false;
        check.validate_aud = false;
        check.required_spec_claims.clear();
        if jsonwebtoken::decode::<Claims>(&probe, &public, &check).is_err() {
            return Err(Unpaired::Mismatch);
        }
        Ok(certificate)
    }

    /// The `x5t#S256` thumbprint (base64url), as the simulator registers it.
    pub fn thumbprint_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// An error naming the file when `now` (Unix seconds) is outside the validity.
    pub fn check_valid_at(&self, now: i64) -> Result<(), String> {
        if now > self.not_after {
            return Err(format!(
                "certificate {} expired at {}",
                self.path,
                rfc3339(self.not_after)
            ));
        }
        if now < self.not_before {
            return Err(format!(
                "certificate {} is not valid before {}",
                self.path,
                rfc3339(self.not_before)
            ));
        }
        Ok(())
    }

    /// The client assertion for `client_id` at the token endpoint `audience`, issued at
    /// `now` (Unix seconds), with a fresh `jti`.
    pub fn assertion(&self, client_id: &str, audience: &str, now: i64) -> Result<String, String> {
        self.check_valid_at(now)?;
        self.sign(client_id, audience, &jti(now), now)
            .map_err(|e| format!("cannot sign the client assertion: {e}"))
    }

    fn sign(
        &self,
        client_id: &str,
        audience: &str,
        jti: &str,
        now: i64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.x5t = Some(self.x5t.clone());
        header.x5t_s256 = Some(self.x5t_s256.clone());
        let claims = Claims {
            aud: audience.to_string(),
            iss: client_id.to_string(),
            sub: client_id.to_string(),
            jti: jti.to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

/// A unique assertion id: a process counter, the time and the process id, hashed into a
/// GUID shape. Uniqueness is all `jti` needs; it is not a secret.
fn jti(now: i64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let d = sha2::Sha256::digest(format!("{n}:{now}:{nanos}:{}", std::process::id()));
    let h: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
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
        let c = Certificate::from_pem("c.pem", cert.as_bytes(), Some(("k.pem", key.as_bytes())))
            .unwrap();
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
        let c = Certificate::from_pem("c.pem", cert.as_bytes(), Some(("k.pem", key.as_bytes())))
            .unwrap();
        assert_eq!(
            c.assertion("app", "aud", 1_800_000_000).unwrap_err(),
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
            p12_keystore::KeyStoreEntry::Certificate(
                p12_keystore::Certificate::from_der(&ca).unwrap(),
            ),
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
            Certificate::from_pkcs12("app.pfx", &file, "wrong").unwrap_err(),
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
            Certificate::from_pkcs12("old.pfx", &legacy, "").unwrap_err(),
            "wrong password for old.pfx (the MAC check failed)"
        );
        let err = Certificate::load_pkcs12(&fixture("legacy-3des-rc2.pfx"), "nope").unwrap_err();
        assert!(err.starts_with("wrong password for "), "{err}");
        // Not PKCS#12 at all: a PEM file given as pkcs12_file.
        let (cert_pem, _) = rsa_cert(1_000, 4_000_000_000);
        let err = Certificate::from_pkcs12("cert.pem", cert_pem.as_bytes(), "").unwrap_err();
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
            Certificate::from_pkcs12("trust.pfx", &trust, "pw").unwrap_err(),
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
            Certificate::from_pkcs12("mixed.pfx", &wrong, "pw").unwrap_err(),
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
        let err = Certificate::from_pkcs12("ec.pfx", &ec_file, "pw").unwrap_err();
        assert!(
            err.starts_with("ec.pfx: not an RSA private key (only RSA keys are supported): "),
            "{err}"
        );
        // A missing file.
        let err = Certificate::load_pkcs12(Path::new("/nonexistent/app.pfx"), "").unwrap_err();
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
            c.assertion("app", "aud", 1_800_000_000).unwrap_err(),
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
        .unwrap_err();
        assert_eq!(
            err,
            "the private key in k.pem does not belong to the certificate in c.pem"
        );
        let err = Certificate::from_pem("c.pem", cert.as_bytes(), None).unwrap_err();
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
        assert_eq!(Certificate::load(&big, None).err().unwrap(), want);
        assert_eq!(
            Certificate::load(&cert_file, Some(&big)).err().unwrap(),
            want
        );
        assert_eq!(Certificate::load_pkcs12(&big, "").err().unwrap(), want);
    }
}
