//! Connecting to the cluster's PostgreSQL: the URL's `sslmode` and `sslrootcert` as libpq
//! reads them, over rustls (`tokio-postgres-rustls`), with a connect timeout and TCP
//! keepalives, and errors that name the server but never the password.
//!
//! Owns turning a [`PostgresUrl`] into a connected [`tokio_postgres::Client`] (its connection
//! driven by a task on the caller's runtime) and the TLS policy of each `sslmode`. Does not
//! own the URL's validation (`config::cluster`), the schema, nor what is queried.

use std::sync::Arc;
use std::time::Duration;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::config::{PostgresUrl, SslMode};

/// How long a connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the database could not be reached; it names the server (`host:port/db`), never the
/// password.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot connect to PostgreSQL at {target}: {message}")]
pub struct ConnectError {
    pub target: String,
    pub message: String,
}

/// Connect, the connection driven by a task spawned on the current runtime (it ends when the
/// client is dropped or the connection breaks).
pub async fn connect(url: &PostgresUrl) -> Result<tokio_postgres::Client, ConnectError> {
    let err = |message: String| ConnectError {
        target: url.target(),
        message,
    };
    let mut config: tokio_postgres::Config = url
        .expose()
        .parse()
        .map_err(|e: tokio_postgres::Error| err(e.to_string()))?;
    config
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("mde-liveresponse-exporter");
    }
    let attempt = async {
        match url.sslmode {
            SslMode::Disable => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                let (client, conn) = config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| err(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(client)
            }
            mode => {
                config.ssl_mode(match mode {
                    SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
                    _ => tokio_postgres::config::SslMode::Require,
                });
                let tls = tls_config(mode, url.sslrootcert.as_deref()).map_err(err)?;
                let (client, conn) = config
                    .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
                    .await
                    .map_err(|e| err(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(client)
            }
        }
    };
    tokio::time::timeout(CONNECT_TIMEOUT + Duration::from_secs(1), attempt)
        .await
        .unwrap_or_else(|_| Err(err(format!("no answer within {CONNECT_TIMEOUT:?}"))))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The roots `sslrootcert` names: a PEM file, or `system` for the system's store.
fn roots(rootcert: &str) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = if rootcert == "system" {
        let found = rustls_native_certs::load_native_certs();
        if found.certs.is_empty() {
            return Err("sslrootcert=system: no system CA certificates found".into());
        }
        found.certs
    } else {
        CertificateDer::pem_file_iter(rootcert)
            .map_err(|e| format!("cannot read sslrootcert {rootcert}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("sslrootcert {rootcert}: not PEM certificates: {e}"))?
    };
    for c in certs {
        store
            .add(c)
            .map_err(|e| format!("sslrootcert {rootcert}: {e}"))?;
    }
    if store.is_empty() {
        return Err(format!("sslrootcert {rootcert} holds no certificate"));
    }
    Ok(store)
}

/// The TLS policy of `mode`, as libpq: `prefer`/`require` encrypt, and check the chain only
/// when `sslrootcert` is given; `verify-ca` checks the chain; `verify-full` also the name.
fn tls_config(mode: SslMode, rootcert: Option<&str>) -> Result<rustls::ClientConfig, String> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let chain = |r: &str| {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots(r)?), provider.clone())
            .build()
            .map_err(|e| e.to_string())
    };
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, rootcert) {
        (SslMode::VerifyFull, Some(r)) => chain(r)?,
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err("this sslmode needs sslrootcert".into());
        }
        (_, r) => Arc::new(Lenient {
            chain: r.map(chain).transpose()?,
            provider: provider.clone(),
        }),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// libpq's weaker modes: `verify-ca` (and `prefer`/`require` with a root) check the chain and
/// not the name; `prefer`/`require` without a root check nothing (docs/cluster.md says to use
/// `verify-full` across a network). The handshake's signatures are always checked.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
