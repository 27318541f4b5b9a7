//! TLS: `tls_server_config` turned into a rustls [`ServerConfig`].
//!
//! Owns reading the PEM inputs (files or inline), the protocol versions, cipher suites and
//! key-exchange groups, the client-certificate policies of Go's `crypto/tls` (as rustls
//! verifiers, with `client_allowed_sans`), and re-reading `cert_file`/`key_file` when they
//! rotate. Does not own the handshake itself or its timeout (see [`crate::serve`](mod@crate::serve)),
//! nor the rest of the file (see [`crate::config`]) or its raw schema and errors (`raw`, `error`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, aws_lc_rs};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};

use crate::error::{Ctx, Error, io_message};
use crate::raw::{RawTls, set};

/// `cert_file`/`key_file` are checked for changes at most this often.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The client authentication policies, named as in Go's `crypto/tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientAuth {
    NoClientCert,
    RequestClientCert,
    RequireAnyClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(s: &str) -> Option<ClientAuth> {
        Some(match s {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // "RequireClientCert" is exporter-toolkit's backwards-compatible alias.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }
}

/// Where a PEM input comes from: a file (`*_file`, resolved against the config's directory)
/// or inline text.
struct PemSource {
    key: &'static str,
    bytes: Vec<u8>,
    /// "in /x/server.crt" or "in the inline value", for messages.
    origin: String,
    /// The file, when it came from one (so it can be watched for rotation).
    file: Option<PathBuf>,
}

/// Read `path` for the key `tls_server_config.{key}`.
fn read_pem_file(key: &'static str, path: &Path, ctx: &Ctx) -> Result<PemSource, Error> {
    let bytes = std::fs::read(path).map_err(|e| {
        ctx.invalid(
            format!("tls_server_config.{key}"),
            format!("cannot read {}: {}", path.display(), io_message(&e)),
        )
    })?;
    Ok(PemSource {
        key,
        bytes,
        origin: format!("in {}", path.display()),
        file: Some(path.to_path_buf()),
    })
}

fn pem_source(
    inline: (&'static str, &Option<String>),
    file: (&'static str, &Option<String>),
    dir: &Path,
    ctx: &Ctx,
) -> Result<Option<PemSource>, Error> {
    match (set(inline.1), set(file.1)) {
        (Some(_), Some(_)) => Err(ctx.invalid(
            format!("tls_server_config.{}", file.0),
            format!("cannot be used together with {}", inline.0),
        )),
        (Some(text), None) => Ok(Some(PemSource {
            key: inline.0,
            bytes: text.as_bytes().to_vec(),
            origin: "in the inline value".into(),
            file: None,
        })),
        (None, Some(name)) => read_pem_file(file.0, &dir.join(name), ctx).map(Some),
        (None, None) => Ok(None),
    }
}

impl PemSource {
    fn key(&self) -> String {
        format!("tls_server_config.{}", self.key)
    }

    fn certificates(&self, ctx: &Ctx) -> Result<Vec<CertificateDer<'static>>, Error> {
        let certs = CertificateDer::pem_slice_iter(&self.bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ctx.invalid(self.key(), format!("bad PEM {}: {e}", self.origin)))?;
        if certs.is_empty() {
            return Err(ctx.invalid(
                self.key(),
                format!("no PEM certificate found {}", self.origin),
            ));
        }
        Ok(certs)
    }

    fn private_key(&self, ctx: &Ctx) -> Result<PrivateKeyDer<'static>, Error> {
        PrivateKeyDer::from_pem_slice(&self.bytes).map_err(|e| match e {
            rustls::pki_types::pem::Error::NoItemsFound => ctx.invalid(
                self.key(),
                format!("no PEM private key found {}", self.origin),
            ),
            e => ctx.invalid(self.key(), format!("bad PEM {}: {e}", self.origin)),
        })
    }
}

/// Parse a certificate chain and its key into what rustls serves, checking they belong together.
fn certified_key(
    cert: &PemSource,
    key: &PemSource,
    provider: &CryptoProvider,
    ctx: &Ctx,
) -> Result<CertifiedKey, Error> {
    let chain = cert.certificates(ctx)?;
    let private_key = key.private_key(ctx)?;
    CertifiedKey::from_der(chain, private_key, provider).map_err(|e| {
        ctx.invalid(
            key.key(),
            format!("cannot be used with the certificate: {e}"),
        )
    })
}

/// Serves the certificate from `cert_file`/`key_file`, re-reading them when their content
/// changes so a rotated certificate is picked up without a restart.
#[derive(Debug)]
struct ReloadingCert {
    /// The web config file, for messages.
    config_path: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    provider: Arc<CryptoProvider>,
    /// How long after a check the files are trusted not to have changed.
    check_interval: Duration,
    state: Mutex<CertState>,
}

#[derive(Debug)]
struct CertState {
    current: Arc<CertifiedKey>,
    /// SHA-256 of the cert and key file bytes last seen (loaded or not), so a broken pair is
    /// reported once, not on every check, and is retried as soon as either file changes.
    seen: [u8; 32],
    checked: std::time::Instant,
}

impl ReloadingCert {
    /// `None` unless both the certificate and the key come from files.
    fn new(
        config_path: &Path,
        cert: &PemSource,
        key: &PemSource,
        current: CertifiedKey,
        provider: Arc<CryptoProvider>,
    ) -> Option<ReloadingCert> {
        Some(ReloadingCert {
            config_path: config_path.to_path_buf(),
            cert_file: cert.file.clone()?,
            key_file: key.file.clone()?,
            provider,
            check_interval: CERT_CHECK_INTERVAL,
            state: Mutex::new(CertState {
                current: Arc::new(current),
                seen: files_digest(&cert.bytes, &key.bytes),
                checked: std::time::Instant::now(),
            }),
        })
    }

    /// The pair to serve now, re-reading the files if they are due for a check.
    fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a usable certificate.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.checked.elapsed() >= self.check_interval {
            state.checked = std::time::Instant::now();
            self.reload_if_changed(&mut state);
        }
        state.current.clone()
    }

    fn reload_if_changed(&self, state: &mut CertState) {
        let ctx = Ctx {
            path: &self.config_path,
        };
        let loaded = read_pem_file("cert_file", &self.cert_file, &ctx).and_then(|cert| {
            let key = read_pem_file("key_file", &self.key_file, &ctx)?;
            let digest = files_digest(&cert.bytes, &key.bytes);
            if digest == state.seen {
                return Ok(None);
            }
            state.seen = digest;
            certified_key(&cert, &key, &self.provider, &ctx).map(Some)
        });
        match loaded {
            Ok(None) => {}
            Ok(Some(new)) => {
                state.current = Arc::new(new);
                tracing::info!(cert_file = %self.cert_file.display(), "reloaded TLS certificate");
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reload TLS certificate; serving the previous one");
            }
        }
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// Identifies the content of a cert/key file pair (length-prefixed so the split is unambiguous).
fn files_digest(cert: &[u8], key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((cert.len() as u64).to_be_bytes());
    h.update(cert);
    h.update(key);
    h.finalize().into()
}

/// `TLS12`/`TLS13` → the rustls version; the Go names of older versions get a clear refusal.
fn tls_version(
    key: &str,
    value: Option<&str>,
    default: &'static SupportedProtocolVersion,
    ctx: &Ctx,
) -> Result<&'static SupportedProtocolVersion, Error> {
    match value {
        None => Ok(default),
        Some("TLS12") => Ok(&rustls::version::TLS12),
        Some("TLS13") => Ok(&rustls::version::TLS13),
        Some(v @ ("TLS10" | "TLS11")) => Err(ctx.invalid(
            format!("tls_server_config.{key}"),
            format!("{v} is not supported (rustls implements only TLS12 and TLS13)"),
        )),
        Some(v) => Err(ctx.invalid(
            format!("tls_server_config.{key}"),
            format!("unknown TLS version {v:?} (expected TLS12 or TLS13)"),
        )),
    }
}

/// A provider restricted to the configured TLS 1.2 cipher suites and key-exchange groups.
fn crypto_provider(raw: &RawTls, ctx: &Ctx) -> Result<CryptoProvider, Error> {
    let mut provider = aws_lc_rs::default_provider();
    if let Some(names) = raw.cipher_suites.as_ref().filter(|n| !n.is_empty()) {
        // Like Go, the list only governs TLS 1.2; TLS 1.3 suites are always enabled, and naming
        // one (Go's tls.CipherSuites() lists them) is accepted.
        let mut suites: Vec<_> = aws_lc_rs::ALL_CIPHER_SUITES
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for name in names {
            let tls13 = [
                "TLS_AES_128_GCM_SHA256",
                "TLS_AES_256_GCM_SHA384",
                "TLS_CHACHA20_POLY1305_SHA256",
            ];
            if tls13.contains(&name.as_str()) {
                continue;
            }
            let found = aws_lc_rs::ALL_CIPHER_SUITES.iter().find(|s| {
                s.version() == &rustls::version::TLS12 && s.suite().as_str() == Some(name.as_str())
            });
            match found {
                Some(s) => suites.push(*s),
                None => {
                    let supported: Vec<_> = aws_lc_rs::ALL_CIPHER_SUITES
                        .iter()
                        .filter(|s| s.version() == &rustls::version::TLS12)
                        .filter_map(|s| s.suite().as_str())
                        .collect();
                    return Err(ctx.invalid(
                        "tls_server_config.cipher_suites",
                        format!(
                            "unsupported cipher suite {name:?} (supported: {})",
                            supported.join(", ")
                        ),
                    ));
                }
            }
        }
        provider.cipher_suites = suites;
    }
    if let Some(names) = raw.curve_preferences.as_ref().filter(|n| !n.is_empty()) {
        use aws_lc_rs::kx_group;
        let mut groups = Vec::with_capacity(names.len());
        for name in names {
            groups.push(match name.as_str() {
                "CurveP256" => kx_group::SECP256R1,
                "CurveP384" => kx_group::SECP384R1,
                "X25519" => kx_group::X25519,
                "X25519MLKEM768" => kx_group::X25519MLKEM768,
                _ => {
                    return Err(ctx.invalid(
                        "tls_server_config.curve_preferences",
                        format!(
                            "unsupported curve {name:?} (supported: CurveP256, CurveP384, X25519, X25519MLKEM768)"
                        ),
                    ));
                }
            });
        }
        provider.kx_groups = groups;
    }
    Ok(provider)
}

/// Accepts any client certificate without checking who issued it: Go's `RequestClientCert`
/// and `RequireAnyClientCert`. The client must still prove it holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: after `inner` accepts the certificate, require one of its SANs to be
/// in the list.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let parsed = ParsedCertificate::try_from(end_entity)?;
        if self
            .allowed
            .iter()
            .any(|name| rustls::client::verify_server_name(&parsed, name).is_ok())
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `tls_server_config` → a rustls config, or `None` when nothing in it is set (plain HTTP,
/// as exporter-toolkit does).
pub(crate) fn build_tls(
    raw: RawTls,
    dir: &Path,
    ctx: &Ctx,
) -> Result<Option<Arc<ServerConfig>>, Error> {
    let enabled = [
        &raw.cert,
        &raw.key,
        &raw.cert_file,
        &raw.key_file,
        &raw.client_ca,
        &raw.client_ca_file,
        &raw.client_auth_type,
    ]
    .into_iter()
    .any(|s| set(s).is_some());
    if !enabled {
        return Ok(None);
    }
    // Both checked before either file is read, so the message names what is missing.
    if set(&raw.cert).is_none() && set(&raw.cert_file).is_none() {
        return Err(ctx.invalid("tls_server_config", "missing one of cert or cert_file"));
    }
    if set(&raw.key).is_none() && set(&raw.key_file).is_none() {
        return Err(ctx.invalid("tls_server_config", "missing one of key or key_file"));
    }
    let cert = pem_source(("cert", &raw.cert), ("cert_file", &raw.cert_file), dir, ctx)?
        .ok_or_else(|| ctx.invalid("tls_server_config", "missing one of cert or cert_file"))?;
    let key = pem_source(("key", &raw.key), ("key_file", &raw.key_file), dir, ctx)?
        .ok_or_else(|| ctx.invalid("tls_server_config", "missing one of key or key_file"))?;
    let provider = Arc::new(crypto_provider(&raw, ctx)?);
    let current = certified_key(&cert, &key, &provider, ctx)?;

    let client_auth =
        ClientAuth::parse(set(&raw.client_auth_type).unwrap_or("")).ok_or_else(|| {
            ctx.invalid(
                "tls_server_config.client_auth_type",
                format!(
                    "unknown value {:?} (expected one of NoClientCert, RequestClientCert, \
                 RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)",
                    raw.client_auth_type.as_deref().unwrap_or_default()
                ),
            )
        })?;
    let client_ca = pem_source(
        ("client_ca", &raw.client_ca),
        ("client_ca_file", &raw.client_ca_file),
        dir,
        ctx,
    )?;

    let min = tls_version(
        "min_version",
        set(&raw.min_version),
        &rustls::version::TLS12,
        ctx,
    )?;
    let max = tls_version(
        "max_version",
        set(&raw.max_version),
        &rustls::version::TLS13,
        ctx,
    )?;
    let versions: Vec<&'static SupportedProtocolVersion> = match (min.version, max.version) {
        (a, b) if a == b => vec![min],
        (rustls::ProtocolVersion::TLSv1_2, rustls::ProtocolVersion::TLSv1_3) => {
            vec![&rustls::version::TLS13, &rustls::version::TLS12]
        }
        _ => {
            return Err(ctx.invalid(
                "tls_server_config.min_version",
                "TLS13 is greater than max_version TLS12",
            ));
        }
    };

    let algorithms = provider.signature_verification_algorithms;

    let verifier: Option<Arc<dyn ClientCertVerifier>> = match client_auth {
        ClientAuth::NoClientCert => {
            if let Some(ca) = &client_ca {
                return Err(ctx.invalid(
                    ca.key(),
                    "client CAs have been configured without a client_auth_type",
                ));
            }
            None
        }
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Some(Arc::new(AnyClientCert {
                mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                algorithms,
            }))
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let ca = client_ca.as_ref().ok_or_else(|| {
                ctx.invalid(
                    "tls_server_config.client_ca_file",
                    format!(
                        "is required with client_auth_type {:?}",
                        set(&raw.client_auth_type).unwrap_or_default()
                    ),
                )
            })?;
            let mut roots = RootCertStore::empty();
            for c in ca.certificates(ctx)? {
                roots.add(c).map_err(|e| {
                    ctx.invalid(ca.key(), format!("bad CA certificate {}: {e}", ca.origin))
                })?;
            }
            let mut builder =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            if client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder = builder.allow_unauthenticated();
            }
            Some(
                builder
                    .build()
                    .map_err(|e| ctx.invalid(ca.key(), e.to_string()))?,
            )
        }
    };

    let verifier = match raw.client_allowed_sans.as_ref() {
        None => verifier,
        Some(sans) => {
            let key = "tls_server_config.client_allowed_sans";
            let inner = match (client_auth, verifier) {
                (
                    ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert,
                    Some(v),
                ) => v,
                _ => {
                    return Err(ctx.invalid(
                        key,
                        "requires client_auth_type to be one of RequireAnyClientCert or \
                         RequireAndVerifyClientCert",
                    ));
                }
            };
            let mut allowed = Vec::with_capacity(sans.len());
            for san in sans {
                let name = ServerName::try_from(san.clone()).map_err(|_| {
                    ctx.invalid(
                        key,
                        format!(
                            "{san:?} is not a DNS name or IP address (only those are supported)"
                        ),
                    )
                })?;
                allowed.push(name);
            }
            Some(Arc::new(AllowedSans { inner, allowed }) as Arc<dyn ClientCertVerifier>)
        }
    };

    // Inline PEM cannot change; files are watched for rotation.
    let resolver: Arc<dyn rustls::server::ResolvesServerCert> =
        match ReloadingCert::new(ctx.path, &cert, &key, current.clone(), provider.clone()) {
            Some(reloading) => Arc::new(reloading),
            None => Arc::new(rustls::sign::SingleCertAndKey::from(current)),
        };
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| ctx.invalid("tls_server_config", e.to_string()))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Go's prefer_server_cipher_suites defaults to true.
    config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(true);
    Ok(Some(Arc::new(config)))
}

#[cfg(test)]
mod tests;
