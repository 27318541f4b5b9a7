//! A client certificate for `method: certificate`: PEM files → a checked signing credential,
//! and the client assertion the Microsoft identity platform asks for (an RS256 JWT whose
//! header carries the certificate's `x5t` and `x5t#S256` thumbprints).
//!
//! Owns reading the PEM blocks (certificate and private key in two files or one), the checks
//! that give a clear error before anything is sent (the key matches the certificate, the
//! certificate is within its validity), and the assertion's claims. Pure apart from reading
//! the two files; imports nothing from the rest of the crate, so both `config` (to check a file
//! at load and `--config.check`) and `mde::auth` (to sign, re-reading the files on every token
//! request so that a rotated certificate is picked up) can use it without an import circle.
//! Signing is `jsonwebtoken`'s (on aws-lc-rs, which rustls already links); the X.509 parsing
//! is `x509-parser`'s.

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
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| unix.to_string())
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
        let der = der.contents();
        let (_, x509) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| format!("{cert_name}: not an X.509 certificate: {e}"))?;
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
                "RSA PRIVATE KEY" => Some(Ok(EncodingKey::from_rsa_der(b.contents()))),
                "PRIVATE KEY" => Some(
                    EncodingKey::from_rsa_pem(pem::encode(b).as_bytes())
                        .map_err(|e| format!("{key_name}: not an RSA private key: {e}")),
                ),
                _ => None,
            })
            .ok_or_else(|| format!("{key_name}: no PRIVATE KEY block"))??;
        let spki = x509.public_key();
        let certificate = Certificate {
            path: cert_name.to_string(),
            x5t: b64url(&sha1::Sha1::digest(der)),
            x5t_s256: b64url(&sha2::Sha256::digest(der)),
            not_before: x509.validity().not_before.timestamp(),
            not_after: x509.validity().not_after.timestamp(),
            key: encoding,
        };
        // A key that cannot sign, or signs for another certificate, is found now rather
        // than as an AADSTS700027 from the identity provider.
        let probe = certificate
            .sign("probe", "probe", "probe", certificate.not_before)
            .map_err(|e| format!("{key_name}: cannot sign with this key: {e}"))?;
        let public = DecodingKey::from_rsa_der(&spki.subject_public_key.data);
        let mut check = Validation::new(Algorithm::RS256);
        check.validate_exp = false;
        check.validate_aud = false;
        check.required_spec_claims.clear();
        if jsonwebtoken::decode::<Claims>(&probe, &public, &check).is_err() {
            return Err(format!(
                "the private key in {key_name} does not belong to the certificate in {cert_name}"
            ));
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
}
