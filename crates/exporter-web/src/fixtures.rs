//! Test builders shared by the modules' unit tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use crate::config::{Error, WebConfig};

/// A self-signed server certificate and its key, written into `dir`.
pub(crate) fn write_server_cert(dir: &Path) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
}

pub(crate) fn parse_in(dir: &Path, text: &str) -> Result<WebConfig, Error> {
    WebConfig::parse(text, &dir.join("web.yml"))
}

pub(crate) fn err(text: &str) -> String {
    WebConfig::parse(text, Path::new("/x/web.yml"))
        .unwrap_err()
        .to_string()
}

/// A minimal valid TLS section plus `extra` lines inside `tls_server_config`.
pub(crate) fn tls_err(extra: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    write_server_cert(dir.path());
    let text =
        format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}");
    let e = parse_in(dir.path(), &text).unwrap_err().to_string();
    e.replace(&dir.path().display().to_string(), "DIR")
}
