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
//! Its failures are one [`Error`] (its messages in `error`). Does not own where the files are
//! configured (`config::auth`) nor the token request (`api::auth`).

mod error;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sha2::Digest as _;

pub use error::Error;

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

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    crate::config::sign_in_file::read(path).map_err(|error| Error::Read {
        name: path.display().to_string(),
        error,
    })
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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
    /// Anything else.
    Other(Error),
}

/// The signing key of `key`, or an error naming `key_name`.
fn encoding_key(key_name: &str, key: KeyDer<'_>) -> Result<EncodingKey, Error> {
    match key {
        KeyDer::Pkcs1(der) => Ok(EncodingKey::from_rsa_der(der)),
        KeyDer::Pkcs8(der) => {
            let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()));
            EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|error| Error::NotRsa {
                name: key_name.to_string(),
                error,
            })
        }
    }
}

impl Certificate {
    /// Read `cert_path` (PEM; may also hold the key) and `key_path` (PEM private key; when
    /// `None`, the key must be in `cert_path`).
    pub fn load(cert_path: &Path, key_path: Option<&Path>) -> Result<Certificate, Error> {
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
    ) -> Result<Certificate, Error> {
        let not_pem = |name: &str| {
            let name = name.to_string();
            |error| Error::NotPem { name, error }
        };
        let blocks = pem::parse_many(cert).map_err(not_pem(cert_name))?;
        let Some(der) = blocks.iter().find(|b| b.tag() == "CERTIFICATE") else {
            return Err(Error::NoCertificateBlock {
                name: cert_name.to_string(),
            });
        };
        let (key_name, key_blocks) = match key {
            Some((name, bytes)) => (name, pem::parse_many(bytes).map_err(not_pem(name))?),
            None => (cert_name, blocks.clone()),
        };
        let encoding = key_blocks
            .iter()
            .find_map(|b| match b.tag() {
                "RSA PRIVATE KEY" => Some(encoding_key(key_name, KeyDer::Pkcs1(b.contents()))),
                "PRIVATE KEY" => Some(encoding_key(key_name, KeyDer::Pkcs8(b.contents()))),
                "EC PRIVATE KEY" => Some(Err(Error::EcKey {
                    name: key_name.to_string(),
                })),
                _ => None,
            })
            .ok_or_else(|| Error::NoKeyBlock {
                name: key_name.to_string(),
            })??;
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
    pub fn load_pkcs12(path: &Path, password: &str) -> Result<Certificate, Error> {
        let bytes = read(path)?;
        Certificate::from_pkcs12(&path.display().to_string(), &bytes, password)
    }

    /// [`Certificate::load_pkcs12`] on bytes already read; `name` is for messages.
    pub fn from_pkcs12(name: &str, pfx: &[u8], password: &str) -> Result<Certificate, Error> {
        use p12_keystore::error::Error as P12;
        let named = name.to_string();
        let store = p12_keystore::KeyStore::from_pkcs12(pfx, password).map_err(|error| {
            let name = named.clone();
            match error {
                P12::MacError(_) => Error::WrongPassword { name },
                // No MAC to check (rare): a wrong password shows as bad padding.
                P12::UnpadError | P12::Pkcs5Error(_) => Error::Undecryptable { name, error },
                P12::UnsupportedEncryptionScheme | P12::UnsupportedMacAlgorithm => {
                    Error::UnsupportedPkcs12 { name, error }
                }
                P12::IoError(_) => Error::Pkcs12Io { name, error },
                _ => Error::NotPkcs12 { name, error },
            }
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
            return Err(Error::NoPrivateKey { name: named });
        }
        if certificates.is_empty() {
            return Err(Error::NoCertificate { name: named });
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
        Err(other_error.unwrap_or(Error::NoMatchingCertificate { name: named }))
    }

    /// The one constructor behind both formats: a DER certificate and its signing key,
    /// checked to belong together. Validity is checked by the callers
    /// ([`Certificate::check_valid_at`]), at load and for every assertion.
    fn from_der(
        cert_name: &str,
        der: &[u8],
        key_name: &str,
        key: EncodingKey,
    ) -> Result<Certificate, Error> {
        Certificate::pair(cert_name, der, key_name, key).map_err(|e| match e {
            Unpaired::Mismatch => Error::KeyMismatch {
                key: key_name.to_string(),
                certificate: cert_name.to_string(),
            },
            Unpaired::Other(e) => e,
        })
    }

    fn pair(
        cert_name: &str,
        der: &[u8],
        key_name: &str,
        key: EncodingKey,
    ) -> Result<Certificate, Unpaired> {
        let (_, x509) = x509_parser::parse_x509_certificate(der).map_err(|error| {
            Unpaired::Other(Error::NotX509 {
                name: cert_name.to_string(),
                error,
            })
        })?;
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
            .map_err(|error| {
                Unpaired::Other(Error::KeyCannotSign {
                    name: key_name.to_string(),
                    error,
                })
            })?;
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
    pub fn check_valid_at(&self, now: i64) -> Result<(), Error> {
        if now > self.not_after {
            return Err(Error::Expired {
                name: self.path.clone(),
                not_after: self.not_after,
            });
        }
        if now < self.not_before {
            return Err(Error::NotYetValid {
                name: self.path.clone(),
                not_before: self.not_before,
            });
        }
        Ok(())
    }

    /// The client assertion for `client_id` at the token endpoint `audience`, issued at
    /// `now` (Unix seconds), with a fresh `jti`.
    pub fn assertion(&self, client_id: &str, audience: &str, now: i64) -> Result<String, Error> {
        self.check_valid_at(now)?;
        self.sign(client_id, audience, &jti(now), now)
            .map_err(|error| Error::Sign { error })
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
pub(crate) mod tests;
