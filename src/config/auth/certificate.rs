//! `method: certificate`: the PEM form (`certificate_file`, `key_file`) or the PKCS#12 form
//! (`pkcs12_file` and its password keys), each read and checked at load.
//!
//! Owns which keys each form takes and refusing a wrong or expired certificate at load
//! (through the pure `crate::config::credential`, which does the parsing). Does not own signing
//! client assertions (`crate::config::credential`, `crate::api::auth`).

use std::path::Path;

use super::super::check::Invalid;
use super::super::env::expand_secret;
use super::RawAuth;
use super::{Auth, Cx, Pkcs12Password, Secret};

impl Cx<'_> {
    /// Exactly one of the PEM form (certificate_file, key_file) and the PKCS#12 form
    /// (pkcs12_file and its password keys); each checked now, so that `--config.check` and
    /// a reload catch a wrong or expired certificate. The token source reads the files
    /// again for every token.
    pub(super) fn certificate(&self, raw: &RawAuth) -> Result<Auth, Invalid> {
        match (&raw.certificate_file, &raw.pkcs12_file) {
            (Some(_), Some(_)) => Err(self.invalid(
                "pkcs12_file",
                "set either certificate_file or pkcs12_file, not both",
            )),
            (None, None) => Err(self.invalid(
                "certificate_file",
                "required for method certificate (or pkcs12_file)",
            )),
            (Some(cert), None) => self.certificate_pem(raw, cert),
            (None, Some(pfx)) => self.certificate_pkcs12(raw, pfx),
        }
    }

    fn certificate_pem(&self, raw: &RawAuth, cert: &Path) -> Result<Auth, Invalid> {
        let pkcs12_keys = [
            ("pkcs12_password", raw.pkcs12_password.is_some()),
            ("pkcs12_password_file", raw.pkcs12_password_file.is_some()),
        ];
        if let Some((field, _)) = pkcs12_keys.iter().find(|(_, set)| *set) {
            return Err(self.invalid(field, "only used with pkcs12_file"));
        }
        let certificate_file = self.relative(cert);
        let key_file = raw.key_file.as_deref().map(|k| self.relative(k));
        let checked =
            crate::config::credential::Certificate::load(&certificate_file, key_file.as_deref())
                .map_err(|e| self.invalid("certificate_file", e.to_string()))?;
        checked
            .check_valid_at(chrono::Utc::now().timestamp())
            .map_err(|e| self.invalid("certificate_file", e.to_string()))?;
        Ok(Auth::Certificate {
            certificate_file,
            key_file,
        })
    }

    fn certificate_pkcs12(&self, raw: &RawAuth, pfx: &Path) -> Result<Auth, Invalid> {
        if raw.key_file.is_some() {
            return Err(self.invalid(
                "key_file",
                "only used with certificate_file; pkcs12_file holds the key",
            ));
        }
        let password = match (&raw.pkcs12_password, &raw.pkcs12_password_file) {
            (Some(_), Some(_)) => {
                return Err(self.invalid(
                    "pkcs12_password",
                    "set either pkcs12_password or pkcs12_password_file, not both",
                ));
            }
            (Some(p), None) => Pkcs12Password::Value(Secret(
                expand_secret(p, self.env).map_err(|m| self.invalid("pkcs12_password", m))?,
            )),
            (None, Some(f)) => Pkcs12Password::File(self.relative(f)),
            (None, None) => Pkcs12Password::Empty,
        };
        let pkcs12_file = self.relative(pfx);
        let secret = password
            .resolve()
            .map_err(|e| self.invalid("pkcs12_password_file", e.to_string()))?;
        let checked =
            crate::config::credential::Certificate::load_pkcs12(&pkcs12_file, secret.expose())
                .map_err(|e| self.invalid("pkcs12_file", e.to_string()))?;
        checked
            .check_valid_at(chrono::Utc::now().timestamp())
            .map_err(|e| self.invalid("pkcs12_file", e.to_string()))?;
        Ok(Auth::CertificatePkcs12 {
            pkcs12_file,
            password,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;

    use super::super::super::AuthMethod;
    use super::super::super::Config;
    use super::super::super::fixtures::parse;
    use super::*;

    /// A directory with `app.pfx` (password `pfx-pw`), `cert.pem`/`key.pem` (the same
    /// certificate) and `pw.txt` (the password and a newline).
    fn pkcs12_dir() -> tempfile::TempDir {
        use p12_keystore::{EncryptionAlgorithm as E, MacAlgorithm as M};
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::Utc::now().timestamp();
        let (cert, key) = crate::config::credential::tests::rsa_cert_der(now - 3600, now + 86400);
        let file = crate::config::credential::tests::pfx(
            &key,
            &[&cert],
            "pfx-pw",
            E::PbeWithHmacSha256AndAes256,
            M::HmacSha256,
        );
        std::fs::write(dir.path().join("app.pfx"), file).unwrap();
        std::fs::write(
            dir.path().join("cert.pem"),
            pem::encode(&pem::Pem::new("CERTIFICATE", cert)),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            pem::encode(&pem::Pem::new("PRIVATE KEY", key)),
        )
        .unwrap();
        std::fs::write(dir.path().join("pw.txt"), "pfx-pw\n").unwrap();
        dir
    }

    // See: #10
    #[test]
    fn pkcs12_file_with_its_password_from_a_variable_or_a_file() {
        let dir = pkcs12_dir();
        let d = dir.path().display();
        let env = |name: &str| (name == "PFX_PW").then(|| "pfx-pw".to_string());
        let base = "tenants:\n  - name: t\n    tenant_id: tid\n    client_id: cid\n    auth:\n      method: certificate\n";
        let c = Config::parse(
            &format!("{base}      pkcs12_file: {d}/app.pfx\n      pkcs12_password: ${{PFX_PW}}\n"),
            Path::new("cfg.yml"),
            &env,
        )
        .unwrap();
        assert_eq!(
            c.tenants[0].auth,
            Auth::CertificatePkcs12 {
                pkcs12_file: dir.path().join("app.pfx"),
                password: Pkcs12Password::Value(Secret::new("pfx-pw")),
            }
        );
        assert_eq!(c.tenants[0].auth.method(), AuthMethod::Certificate);
        // The password never prints itself.
        let shown = format!("{:?}", c.tenants[0]);
        assert!(!shown.contains("pfx-pw"), "{shown}");
        assert!(shown.contains("Value(Secret(<redacted>))"), "{shown}");
        let c = parse(&format!(
            "{base}      pkcs12_file: {d}/app.pfx\n      pkcs12_password_file: {d}/pw.txt\n"
        ))
        .unwrap();
        let Auth::CertificatePkcs12 { password, .. } = &c.tenants[0].auth else {
            panic!("{:?}", c.tenants[0].auth);
        };
        assert_eq!(password, &Pkcs12Password::File(dir.path().join("pw.txt")));
        assert_eq!(password.resolve().unwrap().expose(), "pfx-pw");
        // The PEM form is unchanged.
        let c = parse(&format!(
            "{base}      certificate_file: {d}/cert.pem\n      key_file: {d}/key.pem\n"
        ))
        .unwrap();
        assert_eq!(
            c.tenants[0].auth,
            Auth::Certificate {
                certificate_file: dir.path().join("cert.pem"),
                key_file: Some(dir.path().join("key.pem")),
            }
        );
    }

    // See: #10
    #[test]
    fn pkcs12_config_errors_name_the_key_and_the_file() {
        let dir = pkcs12_dir();
        let d = dir.path().display();
        let base = "tenants:\n  - name: t\n    tenant_id: tid\n    client_id: cid\n    auth:\n";
        let cert = format!("{base}      method: certificate\n");
        let cases = [
            (
                format!("{cert}      certificate_file: {d}/cert.pem\n      pkcs12_file: {d}/app.pfx\n"),
                "tenants[0].auth.pkcs12_file: set either certificate_file or pkcs12_file, not both".to_string(),
            ),
            (
                format!("{cert}      pkcs12_file: {d}/app.pfx\n      key_file: {d}/key.pem\n"),
                "tenants[0].auth.key_file: only used with certificate_file; pkcs12_file holds the key".to_string(),
            ),
            (
                format!("{cert}      certificate_file: {d}/cert.pem\n      key_file: {d}/key.pem\n      pkcs12_password_file: {d}/pw.txt\n"),
                "tenants[0].auth.pkcs12_password_file: only used with pkcs12_file".to_string(),
            ),
            (
                format!("{cert}      pkcs12_file: {d}/app.pfx\n      pkcs12_password: x\n      pkcs12_password_file: {d}/pw.txt\n"),
                "tenants[0].auth.pkcs12_password: set either pkcs12_password or pkcs12_password_file, not both".to_string(),
            ),
            (
                format!("{cert}      pkcs12_file: {d}/app.pfx\n      pkcs12_password: ${{NOPE}}\n"),
                "tenants[0].auth.pkcs12_password: environment variable NOPE is not set".to_string(),
            ),
            (
                format!("{cert}      pkcs12_file: {d}/app.pfx\n      pkcs12_password: 'pfx-pw${{'\n"),
                "tenants[0].auth.pkcs12_password: unterminated ${ in the value (not shown: it is a secret)".to_string(),
            ),
            (
                format!("{cert}      pkcs12_file: {d}/app.pfx\n      pkcs12_password_file: {d}/missing.txt\n"),
                format!("tenants[0].auth.pkcs12_password_file: cannot read {d}/missing.txt: No such file or directory (os error 2)"),
            ),
            (
                format!("{cert}      pkcs12_file: {d}/app.pfx\n      pkcs12_password: wrong\n"),
                format!("tenants[0].auth.pkcs12_file: wrong password for {d}/app.pfx (the MAC check failed)"),
            ),
            (
                // No password key: the empty password, which is not this file's.
                format!("{cert}      pkcs12_file: {d}/app.pfx\n"),
                format!("tenants[0].auth.pkcs12_file: wrong password for {d}/app.pfx (the MAC check failed)"),
            ),
            (
                format!("{cert}      pkcs12_file: {d}/none.pfx\n"),
                format!("tenants[0].auth.pkcs12_file: cannot read {d}/none.pfx: No such file or directory (os error 2)"),
            ),
            (
                format!("{cert}      pkcs12_file: {d}/cert.pem\n"),
                format!("tenants[0].auth.pkcs12_file: {d}/cert.pem: not a PKCS#12 file: "),
            ),
            (
                format!("{base}      method: client_secret\n      client_secret: x\n      pkcs12_password: y\n"),
                "tenants[0].auth.pkcs12_password: not used by method client_secret".to_string(),
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            let want = format!("config file cfg.yml: {want}");
            // The DER reader's own words follow "not a PKCS#12 file: ".
            if want.ends_with(": ") {
                assert!(err.starts_with(&want), "{err}");
            } else {
                assert_eq!(err, want, "{text}");
            }
            assert!(!err.contains("pfx-pw"), "{err}");
        }
    }
}
