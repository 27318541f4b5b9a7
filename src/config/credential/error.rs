//! Why a client certificate could not be read, checked or used to sign.
//!
//! Owns the error type of `config::credential` and its messages (the text `--config.check`,
//! a reload and a failed token request show), each naming the file at fault. Does not own
//! the reading and the checks themselves (`config::credential`).

/// Why a certificate did not load or sign. The causes are in the messages (as the text errors
/// before them were), not chained as `source`: `{:#}` would print them twice.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read (or is over the cap of sign-in files).
    #[error("cannot read {name}: {error}")]
    Read { name: String, error: std::io::Error },
    #[error("{name}: not PEM: {error}")]
    NotPem { name: String, error: pem::PemError },
    #[error("{name}: no CERTIFICATE block")]
    NoCertificateBlock { name: String },
    #[error("{name}: no PRIVATE KEY block")]
    NoKeyBlock { name: String },
    #[error("{name}: an EC private key; only RSA keys are supported")]
    EcKey { name: String },
    #[error("{name}: not an RSA private key (only RSA keys are supported): {error}")]
    NotRsa {
        name: String,
        error: jsonwebtoken::errors::Error,
    },
    #[error("{name}: not an X.509 certificate: {error}")]
    NotX509 {
        name: String,
        error: x509_parser::nom::Err<x509_parser::error::X509Error>,
    },
    #[error("{name}: cannot sign with this key: {error}")]
    KeyCannotSign {
        name: String,
        error: jsonwebtoken::errors::Error,
    },
    #[error("the private key in {key} does not belong to the certificate in {certificate}")]
    KeyMismatch { key: String, certificate: String },
    /// The MAC check of a PKCS#12 file failed.
    #[error("wrong password for {name} (the MAC check failed)")]
    WrongPassword { name: String },
    /// No MAC to check (rare): a wrong password shows as bad padding.
    #[error("cannot decrypt {name}: wrong password? ({error})")]
    Undecryptable {
        name: String,
        error: p12_keystore::error::Error,
    },
    #[error(
        "{name}: {error}; AES-CBC (PBES2), 3DES and 40-bit RC2 encryption and HMAC-SHA1 or HMAC-SHA256 MACs are read: re-export it with `openssl pkcs12 -export`"
    )]
    UnsupportedPkcs12 {
        name: String,
        error: p12_keystore::error::Error,
    },
    /// PKCS#12 decoding met an I/O error.
    #[error("cannot read {name}: {error}")]
    Pkcs12Io {
        name: String,
        error: p12_keystore::error::Error,
    },
    #[error("{name}: not a PKCS#12 file: {error}")]
    NotPkcs12 {
        name: String,
        error: p12_keystore::error::Error,
    },
    #[error("no private key in {name}")]
    NoPrivateKey { name: String },
    #[error("no certificate in {name}")]
    NoCertificate { name: String },
    #[error("the private key in {name} belongs to none of its certificates")]
    NoMatchingCertificate { name: String },
    /// `not_after` in Unix seconds.
    #[error("certificate {name} expired at {}", rfc3339(*.not_after))]
    Expired { name: String, not_after: i64 },
    /// `not_before` in Unix seconds.
    #[error("certificate {name} is not valid before {}", rfc3339(*.not_before))]
    NotYetValid { name: String, not_before: i64 },
    #[error("cannot sign the client assertion: {error}")]
    Sign { error: jsonwebtoken::errors::Error },
}

/// Unix seconds as RFC 3339 (UTC, whole seconds); the number itself when out of range.
fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| unix.to_string())
}
