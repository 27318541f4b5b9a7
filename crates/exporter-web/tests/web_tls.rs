//! `web::serve` over real sockets on 127.0.0.1:0, driven by a real TLS client (reqwest/rustls):
//! plain HTTP, TLS, mutual TLS, `client_allowed_sans`, basic auth with and without TLS,
//! response headers, graceful shutdown, and the exact error text of bad web config files.
//!
//! Certificates are generated per test with rcgen, so nothing expires in a fixtures folder.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use exporter_web::{self as web, WebConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

const CHALLENGE: &str = r#"Basic realm="mde-liveresponse-exporter""#;

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and its PEM private key.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, sans: &[&str], purpose: ExtendedKeyUsagePurpose) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans.clone()).unwrap();
        params.distinguished_name.push(DnType::CommonName, &sans[0]);
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self) -> Leaf {
        self.leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, san: &str) -> Leaf {
        self.leaf(&[san], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

/// A directory holding `ca.crt`, `server.crt`, `server.key` and a `web.yml` written per test.
struct Fixture {
    dir: tempfile::TempDir,
    ca: Ca,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("exporter test CA");
        let server = ca.server();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.crt"), &server.cert).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key).unwrap();
        Fixture { dir, ca }
    }

    fn write_config(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("web.yml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&self, text: &str) -> WebConfig {
        WebConfig::load(&self.write_config(text)).unwrap()
    }

    /// The load error, with the temp directory replaced by `DIR` so texts can be compared.
    fn load_err(&self, text: &str) -> String {
        let err = WebConfig::load(&self.write_config(text)).unwrap_err();
        err.to_string()
            .replace(&self.dir.path().display().to_string(), "DIR")
    }
}

const TLS: &str = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

/// A running `web::serve`.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(router: Router, web: Option<WebConfig>) -> Server {
        Server::start_with(router, web, web::ServeOptions::default()).await
    }

    async fn start_with(
        router: Router,
        web: Option<WebConfig>,
        options: web::ServeOptions,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = tokio::spawn(web::serve_with(
            listener,
            router,
            web.map(Arc::new),
            shutdown,
            options,
        ));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
    }
}

fn metrics_router() -> Router {
    Router::new().route("/metrics", get(|| async { "ok" }))
}

/// A reqwest client that trusts only `ca` (if any) and presents `identity` (if any).
fn client(ca: Option<&Ca>, identity: Option<&Leaf>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(ca) = ca {
        builder =
            builder.tls_certs_only([reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap()]);
    }
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.cert, leaf.key);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// Status and body, or the error's `Debug` text (which carries the TLS alert, e.g.
/// `AlertReceived(CertificateRequired)`, so tests can tell *why* a request failed).
async fn get_metrics(client: &reqwest::Client, url: &str) -> Result<(u16, String), String> {
    let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| format!("{e:?}"))?;
    Ok((status, body))
}

#[tokio::test]
async fn plain_http_without_a_web_config() {
    let server = Server::start(metrics_router(), None).await;
    let got = get_metrics(&client(None, None), &server.url("http", "/metrics")).await;
    assert_eq!(got, Ok((200, "ok".to_string())));
    server.stop().await;
}

#[tokio::test]
async fn web_config_without_tls_settings_serves_plain_http() {
    let fx = Fixture::new();
    let web = fx.load("tls_server_config: {}\nhttp_server_config:\n  http2: false\n");
    assert!(web.tls_config().is_none());
    let server = Server::start(metrics_router(), Some(web)).await;
    let got = get_metrics(&client(None, None), &server.url("http", "/metrics")).await;
    assert_eq!(got, Ok((200, "ok".to_string())));
    server.stop().await;
}

#[tokio::test]
async fn tls_serves_clients_that_trust_the_ca_and_survives_those_that_do_not() {
    let fx = Fixture::new();
    let server = Server::start(metrics_router(), Some(fx.load(TLS))).await;
    let url = server.url("https", "/metrics");

    let stranger = Ca::new("some other CA");
    let err = get_metrics(&client(Some(&stranger), None), &url)
        .await
        .unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");

    // Plain HTTP to the TLS port and a garbage handshake fail without hurting the server.
    assert!(
        get_metrics(&client(None, None), &server.url("http", "/metrics"))
            .await
            .is_err()
    );
    {
        use tokio::io::AsyncWriteExt;
        let mut raw = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        raw.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
    }

    let got = get_metrics(&client(Some(&fx.ca), None), &url).await;
    assert_eq!(got, Ok((200, "ok".to_string())));
    // Also by name, which the certificate covers as well.
    let by_name = format!("https://localhost:{}/metrics", server.addr.port());
    let got = get_metrics(&client(Some(&fx.ca), None), &by_name).await;
    assert_eq!(got, Ok((200, "ok".to_string())));
    server.stop().await;
}

#[tokio::test]
async fn tls13_only_server_refuses_a_tls12_only_client() {
    let fx = Fixture::new();
    let web = fx.load(&format!("{TLS}  min_version: TLS13\n"));
    let server = Server::start(metrics_router(), Some(web)).await;
    let url = server.url("https", "/metrics");
    let tls12 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(fx.ca.pem().as_bytes()).unwrap()])
        .tls_version_max(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let err = get_metrics(&tls12, &url).await.unwrap_err();
    assert!(err.contains("AlertReceived(ProtocolVersion)"), "{err}");
    let got = get_metrics(&client(Some(&fx.ca), None), &url).await;
    assert_eq!(got, Ok((200, "ok".to_string())));
    server.stop().await;
}

#[tokio::test]
async fn mtls_require_and_verify_client_cert() {
    let fx = Fixture::new();
    let web = fx.load(&format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
    ));
    let server = Server::start(metrics_router(), Some(web)).await;
    let url = server.url("https", "/metrics");

    let err = get_metrics(&client(Some(&fx.ca), None), &url)
        .await
        .unwrap_err();
    assert!(err.contains("AlertReceived(CertificateRequired)"), "{err}");

    let stranger = Ca::new("some other CA").client("prometheus.example");
    let err = get_metrics(&client(Some(&fx.ca), Some(&stranger)), &url)
        .await
        .unwrap_err();
    assert!(err.contains("AlertReceived(UnknownCA)"), "{err}");

    let scraper = fx.ca.client("prometheus.example");
    let got = get_metrics(&client(Some(&fx.ca), Some(&scraper)), &url).await;
    assert_eq!(got, Ok((200, "ok".to_string())));
    server.stop().await;
}

#[tokio::test]
async fn mtls_verify_client_cert_if_given() {
    let fx = Fixture::new();
    let web = fx.load(&format!(
        "{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n"
    ));
    let server = Server::start(metrics_router(), Some(web)).await;
    let url = server.url("https", "/metrics");

    let got = get_metrics(&client(Some(&fx.ca), None), &url).await;
    assert_eq!(got, Ok((200, "ok".to_string())), "no certificate is fine");
    let stranger = Ca::new("some other CA").client("prometheus.example");
    let err = get_metrics(&client(Some(&fx.ca), Some(&stranger)), &url)
        .await
        .unwrap_err();
    assert!(
        err.contains("AlertReceived(UnknownCA)"),
        "a certificate that is given must verify: {err}"
    );
    let scraper = fx.ca.client("prometheus.example");
    let got = get_metrics(&client(Some(&fx.ca), Some(&scraper)), &url).await;
    assert_eq!(got, Ok((200, "ok".to_string())));
    server.stop().await;
}

#[tokio::test]
async fn mtls_require_any_client_cert_does_not_verify_the_issuer() {
    let fx = Fixture::new();
    let web = fx.load(&format!("{TLS}  client_auth_type: RequireAnyClientCert\n"));
    let server = Server::start(metrics_router(), Some(web)).await;
    let url = server.url("https", "/metrics");

    let err = get_metrics(&client(Some(&fx.ca), None), &url)
        .await
        .unwrap_err();
    assert!(err.contains("AlertReceived(CertificateRequired)"), "{err}");
    let stranger = Ca::new("some other CA").client("prometheus.example");
    let got = get_metrics(&client(Some(&fx.ca), Some(&stranger)), &url).await;
    assert_eq!(got, Ok((200, "ok".to_string())));
    server.stop().await;
}

#[tokio::test]
async fn client_allowed_sans_rejects_other_certificates_from_the_same_ca() {
    let fx = Fixture::new();
    let web = fx.load(&format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
         client_allowed_sans: [prometheus.example, 10.0.0.7]\n"
    ));
    let server = Server::start(metrics_router(), Some(web)).await;
    let url = server.url("https", "/metrics");

    for allowed in ["prometheus.example", "10.0.0.7"] {
        let scraper = fx.ca.client(allowed);
        let got = get_metrics(&client(Some(&fx.ca), Some(&scraper)), &url).await;
        assert_eq!(got, Ok((200, "ok".to_string())), "{allowed}");
    }
    let other = fx.ca.client("grafana.example");
    let err = get_metrics(&client(Some(&fx.ca), Some(&other)), &url)
        .await
        .unwrap_err();
    assert!(err.contains("AlertReceived(AccessDenied)"), "{err}");
    server.stop().await;
}

/// Basic auth behaves the same over plain HTTP and TLS.
async fn check_basic_auth(scheme: &str, tls: &str) {
    let fx = Fixture::new();
    // Cost 4 keeps the unoptimised test build fast; production hashes use 10 or more.
    let hash = bcrypt::hash("s3cr3t", 4).unwrap();
    let web = fx.load(&format!(
        "{tls}basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    \
         X-Content-Type-Options: nosniff\n"
    ));
    let server = Server::start(metrics_router(), Some(web)).await;
    let client = client(Some(&fx.ca), None);

    for path in ["/metrics", "/no-such-page"] {
        let url = server.url(scheme, path);
        let anonymous = client.get(&url).send().await.unwrap();
        assert_eq!(anonymous.status(), 401, "{path}");
        assert_eq!(anonymous.headers()["www-authenticate"], CHALLENGE);
        assert_eq!(anonymous.headers()["x-content-type-options"], "nosniff");
    }
    let url = server.url(scheme, "/metrics");
    for (user, password) in [("alice", "wrong"), ("mallory", "s3cr3t"), ("alice", "")] {
        let denied = client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status(), 401, "{user}:{password}");
        assert_eq!(denied.headers()["www-authenticate"], CHALLENGE);
    }
    let bearer = client.get(&url).bearer_auth("s3cr3t").send().await.unwrap();
    assert_eq!(bearer.status(), 401);

    // Twice: the second one is served from the verification cache.
    for _ in 0..2 {
        let ok = client
            .get(&url)
            .basic_auth("alice", Some("s3cr3t"))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["x-content-type-options"], "nosniff");
        assert!(ok.headers().get("www-authenticate").is_none());
        assert_eq!(ok.text().await.unwrap(), "ok");
    }
    server.stop().await;
}

#[tokio::test]
async fn basic_auth_over_plain_http() {
    check_basic_auth("http", "").await;
}

#[tokio::test]
async fn basic_auth_over_tls() {
    check_basic_auth("https", TLS).await;
}

#[tokio::test]
async fn realm_is_an_option() {
    let fx = Fixture::new();
    let hash = bcrypt::hash("s3cr3t", 4).unwrap();
    let web = Arc::new(fx.load(&format!("basic_auth_users:\n  alice: {hash}\n")));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut options = web::ServeOptions::default();
    options.realm = "node".to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(web::serve_with(
        listener,
        metrics_router(),
        Some(web.clone()),
        async move {
            let _ = stopped.await;
        },
        options,
    ));
    let denied = client(None, None)
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    assert_eq!(
        denied.headers()["www-authenticate"],
        r#"Basic realm="node""#
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // A realm no header can carry is refused before anything is served.
    let mut bad = web::ServeOptions::default();
    bad.realm = "two\nlines".to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = web::serve_with(listener, metrics_router(), Some(web), async {}, bad)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn rate_limit_answers_429_once_the_burst_is_spent() {
    let fx = Fixture::new();
    // One token, refilled once an hour: the second request in this test is always refused.
    let web = fx.load(&format!("{TLS}rate_limit:\n  burst: 1\n  interval: 1h\n"));
    let server = Server::start(metrics_router(), Some(web)).await;
    let client = client(Some(&fx.ca), None);
    let url = server.url("https", "/metrics");
    assert_eq!(
        get_metrics(&client, &url).await,
        Ok((200, "ok".to_string()))
    );
    assert_eq!(
        get_metrics(&client, &url).await,
        Ok((429, "Too Many Requests\n".to_string()))
    );
    server.stop().await;
}

/// See: #13. Over TLS, a client that never starts its handshake, and one that completes it but
/// then sends no request, are both closed.
#[tokio::test]
async fn silent_tls_clients_are_closed() {
    use tokio::io::AsyncReadExt;
    let fx = Fixture::new();
    let mut options = web::ServeOptions::default();
    options.tls_handshake_timeout = Duration::from_millis(300);
    options.header_read_timeout = Duration::from_millis(300);
    let stats = options.stats.clone();
    let server = Server::start_with(metrics_router(), Some(fx.load(TLS)), options).await;

    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");

    // A completed handshake, then nothing: the request-head timeout closes it.
    let roots = {
        let mut roots = tokio_rustls::rustls::RootCertStore::empty();
        let der = first_cert_der(&fx.ca.pem());
        roots.add(der).unwrap();
        roots
    };
    // An explicit provider: which one is the process default depends on the features that
    // the dev-dependencies happen to turn on.
    let provider = Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    assert!(stats.timed_out_connections() >= 2, "{stats:?}");

    let got = get_metrics(
        &client(Some(&fx.ca), None),
        &server.url("https", "/metrics"),
    )
    .await;
    assert_eq!(got, Ok((200, "ok".to_string())));
    server.stop().await;
}

/// The DER of the first certificate in `pem`.
fn first_cert_der(pem: &str) -> tokio_rustls::rustls::pki_types::CertificateDer<'static> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    tokio_rustls::rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let router = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.ip().to_string() }),
    );
    let server = Server::start(router, None).await;
    let got = get_metrics(&client(None, None), &server.url("http", "/peer")).await;
    assert_eq!(got, Ok((200, "127.0.0.1".to_string())));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_in_flight_requests_finish() {
    let fx = Fixture::new();
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let router = {
        let (entered, release) = (entered.clone(), release.clone());
        Router::new().route(
            "/slow",
            get(move || async move {
                entered.notify_one();
                release.notified().await;
                "done"
            }),
        )
    };
    let mut server = Server::start(router, Some(fx.load(TLS))).await;
    let url = server.url("https", "/slow");
    let in_flight =
        tokio::spawn(async move { get_metrics(&client(Some(&fx.ca), None), &url).await });
    entered.notified().await;

    server.stop.take().unwrap().send(()).unwrap();
    // The listener closes: new connections are refused (poll until the loop has noticed).
    let addr = server.addr;
    tokio::time::timeout(Duration::from_secs(10), async {
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("listener still accepting after shutdown");
    assert!(
        !server.task.is_finished(),
        "must wait for the in-flight request"
    );

    release.notify_one();
    let got = in_flight.await.unwrap();
    assert_eq!(got, Ok((200, "done".to_string())));
    server.stop().await;
}

#[test]
fn bad_web_config_files_give_exact_errors() {
    let fx = Fixture::new();
    let cases = [
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  clientauth: x\n",
            "web config file DIR/web.yml: tls_server_config: unknown field `clientauth`, \
             expected one of `cert`, `key`, `client_ca`, `cert_file`, `key_file`, \
             `client_auth_type`, `client_ca_file`, `cipher_suites`, `curve_preferences`, \
             `min_version`, `max_version`, `prefer_server_cipher_suites`, `client_allowed_sans` \
             at line 4 column 3",
        ),
        (
            "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n",
            "web config file DIR/web.yml: tls_server_config.cert_file: cannot read \
             DIR/missing.crt: No such file or directory",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             client_auth_type: RequireAndVerify\n",
            "web config file DIR/web.yml: tls_server_config.client_auth_type: unknown value \
             \"RequireAndVerify\" (expected one of NoClientCert, RequestClientCert, \
             RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)",
        ),
        (
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             min_version: TLS10\n",
            "web config file DIR/web.yml: tls_server_config.min_version: TLS10 is not supported \
             (rustls implements only TLS12 and TLS13)",
        ),
        (
            "basic_auth_users:\n  alice: $2y$10$tooshort\n",
            "web config file DIR/web.yml: basic_auth_users.alice: not a bcrypt hash: Invalid \
             hash: the hash format is malformed; expected 60 ASCII bytes",
        ),
        (
            "basic_auth_users:\n  alice: [not, a, string]\n",
            "web config file DIR/web.yml: basic_auth_users.alice: invalid type: sequence, \
             expected a string at line 2 column 10",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(fx.load_err(text), want, "for:\n{text}");
    }
    let missing = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err();
    assert_eq!(
        missing.to_string(),
        "cannot read web config file /nonexistent/web.yml: No such file or directory"
    );
}
