//! Secured HTTP serving: TLS, mutual TLS and basic auth driven by a `--web.config.file`.
//!
//! Owns the web configuration file in the schema of prometheus/exporter-toolkit (so users can
//! reuse the file they give node_exporter or blackbox_exporter), its validation into a
//! [`WebConfig`], and [`serve`]: the accept loop that terminates TLS, enforces basic auth and
//! adds the configured response headers before handing requests to a [`Router`]. Does not own
//! the routes themselves (see `server.rs`) nor which address to listen on (see `main.rs`).
//!
//! Where this differs from exporter-toolkit, on purpose:
//! - TLS 1.0 and 1.1 are rejected at load time: rustls does not implement them.
//! - Only HTTP/1.1 is served (ALPN advertises `http/1.1`); `http_server_config.http2` is accepted
//!   and ignored.
//! - `client_auth_type: VerifyClientCertIfGiven`/`RequireAndVerifyClientCert` need a
//!   `client_ca_file` (or inline `client_ca`); Go would fall back to the system roots, which is
//!   never what an exporter operator means.
//! - `client_allowed_sans` matches DNS names and IP addresses only (rustls' name check, so a
//!   wildcard SAN in a client certificate covers the names it matches); e-mail and URI entries
//!   are rejected at load time instead of never matching.
//! - `cert_file`/`key_file` are re-read when they change (checked at most once a second, on a
//!   handshake), so certificate rotation needs no restart, as with Go which re-reads them on
//!   every handshake. A pair that does not load (say, mid-rotation, new cert with the old key)
//!   is logged and the previous one kept. `client_ca_file` is read once, at load.
//! - `curve_preferences: [CurveP521]` is rejected: the aws-lc-rs provider has no P-521 key
//!   exchange.
//! - `rate_limit` with an interval but no `burst` is rejected (Go would refuse every request).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
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

/// The `WWW-Authenticate` challenge sent with every 401.
const CHALLENGE: &str = r#"Basic realm="mde-liveresponse-exporter""#;

/// A TLS client gets this long to finish its handshake; stops half-open connections from
/// pinning a task forever.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An HTTP/1 client gets this long to send its request headers (slowloris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// `cert_file`/`key_file` are checked for changes at most this often.
const CERT_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// How many successful credential checks are remembered; exporter-toolkit uses the same bound.
/// Only a few scrapers ever authenticate, so this is never reached in normal operation.
const AUTH_CACHE_CAPACITY: usize = 100;

/// A web config problem. The message always names the file and, when there is one, the key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The web config file itself could not be read.
    #[error("cannot read web config file {}: {message}", path.display())]
    Read {
        path: PathBuf,
        message: String,
        #[source]
        source: io::Error,
    },
    /// The YAML is malformed or has unknown or mistyped keys.
    #[error("web config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// A value is present but not acceptable (including files it names that cannot be used).
    #[error("web config file {}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// A validated web configuration: TLS material loaded and checked, users' hashes checked.
pub struct WebConfig {
    /// The file it came from, for log lines.
    path: PathBuf,
    /// `None` serves plain HTTP (no `tls_server_config`, or one with nothing set, as in Go).
    tls: Option<Arc<ServerConfig>>,
    /// User name → bcrypt hash. Empty disables basic auth.
    users: BTreeMap<String, String>,
    /// Extra headers set on every response, including 401s.
    headers: Vec<(HeaderName, HeaderValue)>,
    /// `rate_limit`: (interval, burst) for one server-wide token bucket.
    rate_limit: Option<(Duration, u32)>,
}

impl fmt::Debug for WebConfig {
    // Hand-written so password hashes never reach a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls.is_some())
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl WebConfig {
    /// Read and validate a web config file; relative paths in it resolve against its directory.
    pub fn load(path: &Path) -> Result<WebConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            message: io_message(&source),
            source,
        })?;
        WebConfig::parse(&text, path)
    }

    /// Validate web config text. `path` is used in messages and to resolve relative file names
    /// (against its parent directory); it is not read.
    pub fn parse(text: &str, path: &Path) -> Result<WebConfig, Error> {
        let ctx = Ctx { path };
        // An empty file (or one with only comments) is a valid "no TLS, no auth" config.
        let raw: Option<RawFile> = serde_norway::from_str(text).map_err(|e| Error::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let raw = raw.unwrap_or_default();
        let rate_limit = match raw.rate_limit {
            Some(r) => r.validate(&ctx)?,
            None => None,
        };
        let dir = path.parent().unwrap_or(Path::new(""));
        let tls = match raw.tls_server_config {
            Some(t) => build_tls(t, dir, &ctx)?,
            None => None,
        };
        let mut headers = Vec::new();
        if let Some(http) = raw.http_server_config {
            // `http2` is accepted so toolkit files load, and has no effect: only HTTP/1.1 is
            // compiled into hyper here, and TLS advertises only `http/1.1` in ALPN.
            let _http2_is_ignored = http.http2;
            for (name, value) in http.headers.unwrap_or_default() {
                headers.push(check_header(&name, &value, &ctx)?);
            }
        }
        let users = raw.basic_auth_users.unwrap_or_default();
        for (user, hash) in &users {
            check_bcrypt_hash(hash)
                .map_err(|m| ctx.invalid(format!("basic_auth_users.{user}"), m))?;
        }
        Ok(WebConfig {
            path: path.to_path_buf(),
            tls,
            users,
            headers,
            rate_limit,
        })
    }

    /// The file this came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The rustls server configuration, when TLS is configured.
    pub fn tls_config(&self) -> Option<&Arc<ServerConfig>> {
        self.tls.as_ref()
    }

    /// Whether requests must carry basic-auth credentials.
    pub fn basic_auth_enabled(&self) -> bool {
        !self.users.is_empty()
    }
}

/// Serve `router` on `listener` until `shutdown` resolves, then stop accepting and wait for
/// in-flight requests to finish.
///
/// Plain HTTP when `web` is `None` or has no TLS settings, TLS (optionally mutual) otherwise.
/// When users are configured every request, including unknown paths, needs valid basic-auth
/// credentials. Handlers can extract [`ConnectInfo<SocketAddr>`](ConnectInfo) for the peer.
/// A failed TLS handshake or a broken connection is logged at debug and does not stop the
/// server.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    web: Option<Arc<WebConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (router, acceptor) = match &web {
        Some(web) => (guard(router, web), web.tls.clone().map(TlsAcceptor::from)),
        None => (router, None),
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(
            address = %addr,
            tls = acceptor.is_some(),
            basic_auth = web.as_ref().is_some_and(|w| w.basic_auth_enabled()),
            web_config = ?web.as_ref().map(|w| w.path()),
            "listening"
        );
    }
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        // The peer address as `ConnectInfo`, so handlers and logs can see who is calling.
        let router = TowerToHyperService::new(router.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            router.call(req)
        });
        tokio::spawn(async move {
            let result = match acceptor {
                None => {
                    let io = TokioIo::new(stream);
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    // The handshake runs here, not in the accept loop, so a slow client
                    // cannot hold up others.
                    let handshake = acceptor.accept(stream);
                    let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let io = TokioIo::new(tls);
                    let conn = builder.serve_connection_with_upgrades(io, service);
                    watcher.watch(conn).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    // Dropping the listener closes the socket so new clients are refused, not left queued.
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "shutting down HTTP server; waiting for in-flight requests"
    );
    graceful.shutdown().await;
    Ok(())
}

/// What to do when `accept` fails. Per-connection errors (the client gave up before we
/// accepted) are ignored; anything else (typically EMFILE) is logged and retried after a pause
/// so a full file table does not turn into a busy loop. Same policy as `axum::serve`.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

// ---------------------------------------------------------------------------------------------
// Request guard: extra headers and basic auth.

/// Wrap `router` with the configured response headers and basic auth.
fn guard(router: Router, web: &WebConfig) -> Router {
    if web.users.is_empty() && web.headers.is_empty() && web.rate_limit.is_none() {
        return router;
    }
    let state = Arc::new(Guard {
        limiter: web
            .rate_limit
            .map(|(interval, burst)| RateLimiter::new(interval, burst)),
        headers: web.headers.clone(),
        auth: (!web.users.is_empty()).then(|| BasicAuth::new(web.users.clone())),
    });
    router.layer(axum::middleware::from_fn_with_state(state, guard_request))
}

struct Guard {
    limiter: Option<RateLimiter>,
    headers: Vec<(HeaderName, HeaderValue)>,
    auth: Option<BasicAuth>,
}

/// In exporter-toolkit's order: rate limit (before any bcrypt is spent), then auth; the extra
/// headers go on every response that is not a 429.
async fn guard_request(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let now = tokio::time::Instant::now();
    if guard.limiter.as_ref().is_some_and(|l| !l.allow(now)) {
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response();
    }
    let mut response = match &guard.auth {
        Some(auth) if !auth.allows(&req).await => unauthorized(),
        _ => next.run(req).await,
    };
    for (name, value) in &guard.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, HeaderValue::from_static(CHALLENGE))],
        Body::from("Unauthorized\n"),
    )
        .into_response()
}

/// `rate_limit` as golang.org/x/time/rate does it: a bucket of `burst` tokens, refilled at one
/// token per `interval`, starting full; each request takes one token or gets a 429.
struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// (tokens, when they were counted).
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl RateLimiter {
    fn new(interval: Duration, burst: u32) -> RateLimiter {
        RateLimiter {
            interval,
            burst,
            state: Mutex::new((f64::from(burst), tokio::time::Instant::now())),
        }
    }

    /// Takes `now` so tests can drive it without a clock.
    fn allow(&self, now: tokio::time::Instant) -> bool {
        // A poisoned lock still holds a valid (tokens, instant) pair.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, then) = *state;
        let refill =
            now.saturating_duration_since(then).as_secs_f64() / self.interval.as_secs_f64();
        let tokens = (tokens + refill).min(f64::from(self.burst));
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

/// Checks basic-auth credentials against bcrypt hashes, remembering successes.
struct BasicAuth {
    /// User name → bcrypt hash.
    users: BTreeMap<String, String>,
    /// Verified against for unknown users so that a wrong user name costs as much as a wrong
    /// password (no user enumeration by timing). Any configured hash does: the result is
    /// discarded.
    decoy_hash: String,
    /// SHA-256 of (user, hash, password) for credentials that verified. A scrape every 15 s
    /// would otherwise cost a full bcrypt (tens of ms of CPU) each time. Keyed by a digest so
    /// the process never holds passwords; the hash is in the key so a changed hash never
    /// matches an old entry. Failures are not cached: they are rare, and caching them would
    /// let a client fill the cache with junk.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// Serialises bcrypt runs: each one is deliberately CPU-heavy and there are 2 cores;
    /// a burst of bad requests must not starve the scrape path (exporter-toolkit does this too).
    bcrypt_lock: tokio::sync::Mutex<()>,
    /// bcrypt verifications run so far; shows up in debug logs and tells tests the cache works.
    bcrypt_runs: AtomicU64,
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> BasicAuth {
        let decoy_hash = users.values().next().cloned().unwrap_or_default();
        BasicAuth {
            users,
            decoy_hash,
            cache: Mutex::new(HashSet::new()),
            bcrypt_lock: tokio::sync::Mutex::new(()),
            bcrypt_runs: AtomicU64::new(0),
        }
    }

    /// Whether the request carries valid credentials. Takes the request by reference but
    /// reads everything before awaiting: a request body is not `Sync`, so holding `&Request`
    /// across an await would make the middleware future `!Send`.
    fn allows(&self, req: &Request) -> impl Future<Output = bool> + Send + '_ {
        let credentials = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| parse_basic_auth(v.as_bytes()));
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        async move {
            let Some((user, password)) = credentials else {
                return false;
            };
            let ok = self.check(&user, &password).await;
            if !ok {
                tracing::debug!(user = %user, peer = ?peer, "basic auth failed");
            }
            ok
        }
    }

    async fn check(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash.clone(), true),
            None => (self.decoy_hash.clone(), false),
        };
        let key = cache_key(user, &hash, password);
        if known && self.cached(&key) {
            return true;
        }
        let _permit = self.bcrypt_lock.lock().await;
        // Another request may have verified the same credentials while we waited.
        if known && self.cached(&key) {
            return true;
        }
        let runs = self.bcrypt_runs.fetch_add(1, Ordering::Relaxed) + 1;
        let password = password.to_vec();
        let verified = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        tracing::debug!(bcrypt_runs = runs, "ran a bcrypt verification");
        let ok = known && verified;
        if ok {
            self.remember(key);
        }
        ok
    }

    fn remember(&self, key: [u8; 32]) {
        // A poisoned lock only means another request panicked mid-insert; the set is still
        // a valid set, and the worst case of skipping the insert is one more bcrypt.
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= AUTH_CACHE_CAPACITY {
            // Evict an arbitrary entry: in practice the set holds one entry per scraper.
            if let Some(evict) = cache.iter().next().copied() {
                cache.remove(&evict);
            }
        }
        cache.insert(key);
    }

    fn cached(&self, key: &[u8; 32]) -> bool {
        self.cache.lock().is_ok_and(|c| c.contains(key))
    }
}

/// Digest of the credentials with length prefixes, so ("ab", "c") and ("a", "bc") differ.
fn cache_key(user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [user.as_bytes(), hash.as_bytes(), password] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// `Basic <base64(user:password)>` → (user, password). The scheme is case-insensitive
/// (RFC 7235); the user name must be UTF-8 to be looked up, the password may be any bytes.
fn parse_basic_auth(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = decode_base64(token.trim())?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Standard-alphabet base64 with optional padding, as browsers and Prometheus send it.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(s).ok()
}

// ---------------------------------------------------------------------------------------------
// The file schema (exporter-toolkit's `web.Config`).

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    tls_server_config: Option<RawTls>,
    #[serde(default)]
    http_server_config: Option<RawHttp>,
    #[serde(default)]
    rate_limit: Option<RawRateLimit>,
    #[serde(default)]
    basic_auth_users: Option<BTreeMap<String, String>>,
}

/// Go treats an empty string as unset; so do we (`Option<String>` + [`set`]).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    burst: Option<u32>,
    /// Go duration syntax ("1s", "500ms", "1m30s"); humantime reads those.
    #[serde(default, with = "humantime_serde")]
    interval: Option<Duration>,
}

impl RawRateLimit {
    /// An unset or zero interval disables limiting, as in Go.
    fn validate(self, ctx: &Ctx) -> Result<Option<(Duration, u32)>, Error> {
        let Some(interval) = self.interval.filter(|i| !i.is_zero()) else {
            return Ok(None);
        };
        match self.burst {
            // Go would build a limiter that refuses every request; say so instead.
            None | Some(0) => Err(ctx.invalid(
                "rate_limit.burst",
                "must be at least 1 when rate_limit.interval is set",
            )),
            Some(burst) => Ok(Some((interval, burst))),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

/// `Some` only for a non-empty string.
fn set(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.is_empty())
}

/// Builds `Error::Invalid` for one file.
struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            path: self.path.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }
}

/// `io::Error`'s message without the " (os error N)" suffix, like Go prints it.
fn io_message(e: &io::Error) -> String {
    let s = e.to_string();
    match e.raw_os_error() {
        Some(code) => s
            .strip_suffix(&format!(" (os error {code})"))
            .map(str::to_owned)
            .unwrap_or(s),
        None => s,
    }
}

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
fn build_tls(raw: RawTls, dir: &Path, ctx: &Ctx) -> Result<Option<Arc<ServerConfig>>, Error> {
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

/// exporter-toolkit allows only these headers, and for two of them only these values; kept the
/// same so a file accepted there means the same here.
fn check_header(name: &str, value: &str, ctx: &Ctx) -> Result<(HeaderName, HeaderValue), Error> {
    const ALLOWED: &[(&str, &[&str])] = &[
        ("Strict-Transport-Security", &[]),
        ("X-Content-Type-Options", &["nosniff"]),
        ("X-Frame-Options", &["deny", "sameorigin"]),
        ("X-XSS-Protection", &[]),
        ("Content-Security-Policy", &[]),
    ];
    let key = format!("http_server_config.headers.{name}");
    let Some((_, values)) = ALLOWED.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) else {
        return Err(ctx.invalid(
            key,
            "this header can not be configured (allowed: Strict-Transport-Security, \
             X-Content-Type-Options, X-Frame-Options, X-XSS-Protection, Content-Security-Policy)",
        ));
    };
    if !values.is_empty() && !values.contains(&value) {
        return Err(ctx.invalid(
            key,
            format!("invalid value {value:?}, expected one of {values:?}"),
        ));
    }
    let header_name = HeaderName::try_from(name).map_err(|e| ctx.invalid(&key, e.to_string()))?;
    let header_value =
        HeaderValue::try_from(value).map_err(|e| ctx.invalid(&key, e.to_string()))?;
    Ok((header_name, header_value))
}

/// What exporter-toolkit checks at load (`bcrypt.Cost`): the hash parses and its cost is valid.
fn check_bcrypt_hash(hash: &str) -> Result<(), String> {
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|e: bcrypt::BcryptError| format!("not a bcrypt hash: {e}"))?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(format!("not a bcrypt hash: cost {cost} is outside 4..=31"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A self-signed server certificate and its key, written into `dir`.
    fn write_server_cert(dir: &Path) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
        std::fs::write(dir.join("ca.crt"), cert.pem()).unwrap();
    }

    fn parse_in(dir: &Path, text: &str) -> Result<WebConfig, Error> {
        WebConfig::parse(text, &dir.join("web.yml"))
    }

    fn err(text: &str) -> String {
        WebConfig::parse(text, Path::new("/x/web.yml"))
            .unwrap_err()
            .to_string()
    }

    /// A minimal valid TLS section plus `extra` lines inside `tls_server_config`.
    fn tls_err(extra: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        write_server_cert(dir.path());
        let text =
            format!("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n{extra}");
        let e = parse_in(dir.path(), &text).unwrap_err().to_string();
        e.replace(&dir.path().display().to_string(), "DIR")
    }

    #[test]
    fn empty_or_comment_only_file_means_plain_http_without_auth() {
        for text in ["", "# nothing\n", "{}"] {
            let web = WebConfig::parse(text, Path::new("/x/web.yml")).unwrap();
            assert!(web.tls_config().is_none(), "{text:?}");
            assert!(!web.basic_auth_enabled(), "{text:?}");
        }
    }

    #[test]
    fn tls_section_with_nothing_set_means_plain_http() {
        let web = WebConfig::parse(
            "tls_server_config:\n  cert_file: \"\"\n  min_version: TLS13\n",
            Path::new("/x/web.yml"),
        )
        .unwrap();
        assert!(web.tls_config().is_none());
    }

    #[test]
    fn relative_paths_resolve_against_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        write_server_cert(dir.path());
        let web = parse_in(
            dir.path(),
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n",
        )
        .unwrap();
        let tls = web.tls_config().unwrap();
        assert_eq!(tls.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(tls.ignore_client_order);
    }

    #[test]
    fn rotated_certificate_files_are_picked_up_and_broken_pairs_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        let new_pair = || {
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let der = |pem: &str| CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let (cert_a, key_a) = new_pair();
        std::fs::write(&cert_path, &cert_a).unwrap();
        std::fs::write(&key_path, &key_a).unwrap();

        let ctx = Ctx {
            path: &dir.path().join("web.yml"),
        };
        let provider = Arc::new(aws_lc_rs::default_provider());
        let cert = read_pem_file("cert_file", &cert_path, &ctx).unwrap();
        let key = read_pem_file("key_file", &key_path, &ctx).unwrap();
        let first = certified_key(&cert, &key, &provider, &ctx).unwrap();
        let mut reloading = ReloadingCert::new(ctx.path, &cert, &key, first, provider).unwrap();
        reloading.check_interval = Duration::ZERO;
        assert_eq!(reloading.current().cert[0], der(&cert_a));

        let (cert_b, key_b) = new_pair();
        std::fs::write(&cert_path, &cert_b).unwrap();
        std::fs::write(&key_path, &key_b).unwrap();
        assert_eq!(
            reloading.current().cert[0],
            der(&cert_b),
            "rotation picked up"
        );

        // Mid-rotation: a new certificate next to the old key keeps serving the last good pair...
        let (cert_c, key_c) = new_pair();
        std::fs::write(&cert_path, &cert_c).unwrap();
        assert_eq!(reloading.current().cert[0], der(&cert_b));
        std::fs::remove_file(&key_path).unwrap();
        assert_eq!(reloading.current().cert[0], der(&cert_b));
        // ...until the key arrives.
        std::fs::write(&key_path, &key_c).unwrap();
        assert_eq!(reloading.current().cert[0], der(&cert_c));
    }

    #[test]
    fn inline_cert_and_key_are_accepted() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
        let text = format!(
            "tls_server_config:\n  cert: |\n{}  key: |\n{}",
            indent(cert.pem()),
            indent(key.serialize_pem())
        );
        let web = WebConfig::parse(&text, Path::new("/x/web.yml")).unwrap();
        assert!(web.tls_config().is_some());
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert_eq!(
            err("tls_server_config:\n  cert_fil: a\n"),
            "web config file /x/web.yml: tls_server_config: unknown field `cert_fil`, expected \
             one of `cert`, `key`, `client_ca`, `cert_file`, `key_file`, `client_auth_type`, \
             `client_ca_file`, `cipher_suites`, `curve_preferences`, `min_version`, \
             `max_version`, `prefer_server_cipher_suites`, `client_allowed_sans` at line 2 column 3"
        );
        assert_eq!(
            err("basic_auth:\n  a: b\n"),
            "web config file /x/web.yml: unknown field `basic_auth`, expected one of \
             `tls_server_config`, `http_server_config`, `rate_limit`, `basic_auth_users`"
        );
    }

    #[test]
    fn missing_files_name_key_and_path() {
        assert_eq!(
            err("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"),
            "web config file /x/web.yml: tls_server_config.cert_file: cannot read \
             /x/server.crt: No such file or directory"
        );
        assert_eq!(
            tls_err(
                "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: /nope/ca.crt\n"
            ),
            "web config file DIR/web.yml: tls_server_config.client_ca_file: cannot read \
             /nope/ca.crt: No such file or directory"
        );
        assert_eq!(
            err("tls_server_config:\n  cert_file: server.crt\n"),
            "web config file /x/web.yml: tls_server_config: missing one of key or key_file"
        );
        assert_eq!(
            err("tls_server_config:\n  key_file: server.key\n"),
            "web config file /x/web.yml: tls_server_config: missing one of cert or cert_file"
        );
    }

    #[test]
    fn pem_problems_are_named() {
        let dir = tempfile::tempdir().unwrap();
        write_server_cert(dir.path());
        std::fs::write(dir.path().join("empty.pem"), "not pem\n").unwrap();
        let e = parse_in(
            dir.path(),
            "tls_server_config:\n  cert_file: empty.pem\n  key_file: server.key\n",
        )
        .unwrap_err()
        .to_string()
        .replace(&dir.path().display().to_string(), "DIR");
        assert_eq!(
            e,
            "web config file DIR/web.yml: tls_server_config.cert_file: no PEM certificate \
             found in DIR/empty.pem"
        );
        let e = parse_in(
            dir.path(),
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n",
        )
        .unwrap_err()
        .to_string()
        .replace(&dir.path().display().to_string(), "DIR");
        assert_eq!(
            e,
            "web config file DIR/web.yml: tls_server_config.key_file: no PEM private key \
             found in DIR/server.crt"
        );
    }

    #[test]
    fn key_that_does_not_match_the_certificate_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        write_server_cert(dir.path());
        std::fs::write(
            dir.path().join("other.key"),
            rcgen::KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        let e = parse_in(
            dir.path(),
            "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("tls_server_config.key_file: cannot be used with the certificate"),
            "{e}"
        );
    }

    #[test]
    fn client_auth_type_is_checked() {
        assert_eq!(
            tls_err("  client_auth_type: RequireClientCertificate\n"),
            "web config file DIR/web.yml: tls_server_config.client_auth_type: unknown value \
             \"RequireClientCertificate\" (expected one of NoClientCert, RequestClientCert, \
             RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
        );
        assert_eq!(
            tls_err("  client_auth_type: RequireAndVerifyClientCert\n"),
            "web config file DIR/web.yml: tls_server_config.client_ca_file: is required with \
             client_auth_type \"RequireAndVerifyClientCert\""
        );
        assert_eq!(
            tls_err("  client_ca_file: ca.crt\n"),
            "web config file DIR/web.yml: tls_server_config.client_ca_file: client CAs have \
             been configured without a client_auth_type"
        );
        for ok in [
            "NoClientCert",
            "RequestClientCert",
            "RequireAnyClientCert",
            "RequireClientCert",
        ] {
            let dir = tempfile::tempdir().unwrap();
            write_server_cert(dir.path());
            let text = format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 client_auth_type: {ok}\n"
            );
            parse_in(dir.path(), &text).unwrap();
        }
        for ok in ["VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] {
            let dir = tempfile::tempdir().unwrap();
            write_server_cert(dir.path());
            let text = format!(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                 client_auth_type: {ok}\n  client_ca_file: ca.crt\n"
            );
            parse_in(dir.path(), &text).unwrap();
        }
    }

    #[test]
    fn tls_versions_are_checked() {
        assert_eq!(
            tls_err("  min_version: TLS10\n"),
            "web config file DIR/web.yml: tls_server_config.min_version: TLS10 is not supported \
             (rustls implements only TLS12 and TLS13)"
        );
        assert_eq!(
            tls_err("  max_version: TLS11\n"),
            "web config file DIR/web.yml: tls_server_config.max_version: TLS11 is not supported \
             (rustls implements only TLS12 and TLS13)"
        );
        assert_eq!(
            tls_err("  min_version: TLS14\n"),
            "web config file DIR/web.yml: tls_server_config.min_version: unknown TLS version \
             \"TLS14\" (expected TLS12 or TLS13)"
        );
        assert_eq!(
            tls_err("  min_version: TLS13\n  max_version: TLS12\n"),
            "web config file DIR/web.yml: tls_server_config.min_version: TLS13 is greater than \
             max_version TLS12"
        );
    }

    #[test]
    fn cipher_suites_and_curves_map_to_rustls() {
        let dir = tempfile::tempdir().unwrap();
        write_server_cert(dir.path());
        let web = parse_in(
            dir.path(),
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
             cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256]\n  \
             curve_preferences: [X25519, CurveP256]\n  prefer_server_cipher_suites: false\n",
        )
        .unwrap();
        let tls = web.tls_config().unwrap();
        assert!(!tls.ignore_client_order);
        let suites: Vec<_> = tls
            .crypto_provider()
            .cipher_suites
            .iter()
            .filter_map(|s| s.suite().as_str())
            .collect();
        assert_eq!(
            suites,
            [
                "TLS13_AES_256_GCM_SHA384",
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        let groups: Vec<_> = tls
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(
            groups,
            [rustls::NamedGroup::X25519, rustls::NamedGroup::secp256r1]
        );
        assert_eq!(
            tls_err("  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"),
            "web config file DIR/web.yml: tls_server_config.cipher_suites: unsupported cipher \
             suite \"TLS_RSA_WITH_RC4_128_SHA\" (supported: \
             TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, \
             TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, \
             TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256)"
        );
        assert_eq!(
            tls_err("  curve_preferences: [CurveP521]\n"),
            "web config file DIR/web.yml: tls_server_config.curve_preferences: unsupported curve \
             \"CurveP521\" (supported: CurveP256, CurveP384, X25519, X25519MLKEM768)"
        );
    }

    #[test]
    fn client_allowed_sans_needs_a_required_client_cert_and_plain_names() {
        assert_eq!(
            tls_err(
                "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  \
                 client_allowed_sans: [scraper.example]\n"
            ),
            "web config file DIR/web.yml: tls_server_config.client_allowed_sans: requires \
             client_auth_type to be one of RequireAnyClientCert or RequireAndVerifyClientCert"
        );
        assert_eq!(
            tls_err(
                "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  \
                 client_allowed_sans: [prometheus@example.com]\n"
            ),
            "web config file DIR/web.yml: tls_server_config.client_allowed_sans: \
             \"prometheus@example.com\" is not a DNS name or IP address (only those are supported)"
        );
    }

    #[test]
    fn headers_follow_exporter_toolkit_allow_list() {
        let web = WebConfig::parse(
            "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n    \
             Strict-Transport-Security: max-age=31536000\n",
            Path::new("/x/web.yml"),
        )
        .unwrap();
        assert_eq!(web.headers.len(), 2);
        assert_eq!(
            err("http_server_config:\n  headers:\n    X-Powered-By: me\n"),
            "web config file /x/web.yml: http_server_config.headers.X-Powered-By: this header \
             can not be configured (allowed: Strict-Transport-Security, X-Content-Type-Options, \
             X-Frame-Options, X-XSS-Protection, Content-Security-Policy)"
        );
        assert_eq!(
            err("http_server_config:\n  headers:\n    X-Frame-Options: allow\n"),
            "web config file /x/web.yml: http_server_config.headers.X-Frame-Options: invalid \
             value \"allow\", expected one of [\"deny\", \"sameorigin\"]"
        );
    }

    #[test]
    fn rate_limit_is_parsed_like_go() {
        let web = WebConfig::parse(
            "rate_limit:\n  burst: 5\n  interval: 1m30s\n",
            Path::new("/x/web.yml"),
        )
        .unwrap();
        assert_eq!(web.rate_limit, Some((Duration::from_secs(90), 5)));
        let off = WebConfig::parse("rate_limit:\n  burst: 5\n", Path::new("/x/web.yml")).unwrap();
        assert_eq!(off.rate_limit, None);
        assert_eq!(
            err("rate_limit:\n  interval: 1s\n"),
            "web config file /x/web.yml: rate_limit.burst: must be at least 1 when \
             rate_limit.interval is set"
        );
    }

    #[test]
    fn rate_limiter_is_a_token_bucket() {
        let start = tokio::time::Instant::now();
        let limiter = RateLimiter::new(Duration::from_secs(10), 2);
        assert!(limiter.allow(start));
        assert!(limiter.allow(start));
        assert!(!limiter.allow(start), "burst used up");
        assert!(
            !limiter.allow(start + Duration::from_secs(5)),
            "half a token"
        );
        assert!(limiter.allow(start + Duration::from_secs(10)));
        assert!(!limiter.allow(start + Duration::from_secs(10)));
        // A long pause refills to `burst`, not beyond.
        let later = start + Duration::from_secs(1000);
        assert!(limiter.allow(later));
        assert!(limiter.allow(later));
        assert!(!limiter.allow(later));
    }

    #[test]
    fn bcrypt_hashes_are_checked_at_load() {
        assert_eq!(
            err("basic_auth_users:\n  alice: secret\n"),
            "web config file /x/web.yml: basic_auth_users.alice: not a bcrypt hash: Invalid \
             hash: the hash format is malformed; expected 60 ASCII bytes"
        );
        let web = WebConfig::parse(
            "basic_auth_users:\n  alice: $2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi\n",
            Path::new("/x/web.yml"),
        )
        .unwrap();
        assert!(web.basic_auth_enabled());
        assert!(
            !format!("{web:?}").contains("$2y$"),
            "Debug must not show hashes"
        );
    }

    #[test]
    fn cannot_read_the_web_config_itself() {
        let e = WebConfig::load(Path::new("/nonexistent/web.yml")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read web config file /nonexistent/web.yml: No such file or directory"
        );
    }

    #[test]
    fn base64_decoding() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("Zm9vYg").unwrap(), b"foob");
        assert_eq!(decode_base64("YWxpY2U6czNjcjN0").unwrap(), b"alice:s3cr3t");
        assert_eq!(decode_base64("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        for bad in ["Z", "Zm9v=", "Zm9v!", "Zg=a", "=Zg="] {
            assert_eq!(decode_base64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn basic_auth_header_parsing() {
        assert_eq!(
            parse_basic_auth(b"Basic YWxpY2U6czNjcjN0"),
            Some(("alice".to_string(), b"s3cr3t".to_vec()))
        );
        // Scheme is case-insensitive; the password may contain ':'.
        assert_eq!(
            parse_basic_auth(b"basic YWxpY2U6YTpi"),
            Some(("alice".to_string(), b"a:b".to_vec()))
        );
        assert_eq!(parse_basic_auth(b"Bearer YWxpY2U6czNjcjN0"), None);
        assert_eq!(parse_basic_auth(b"Basic bm9jb2xvbg=="), None); // "nocolon"
        assert_eq!(parse_basic_auth(b"Basic"), None);
    }

    #[tokio::test]
    async fn successful_checks_are_cached_failures_are_not() {
        let hash = bcrypt::hash("s3cr3t", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("alice".to_string(), hash)]));
        let runs = || auth.bcrypt_runs.load(Ordering::Relaxed);
        assert!(auth.check("alice", b"s3cr3t").await);
        assert!(auth.check("alice", b"s3cr3t").await);
        assert_eq!(runs(), 1, "second success must come from the cache");
        assert!(!auth.check("alice", b"wrong").await);
        assert!(!auth.check("alice", b"wrong").await);
        assert_eq!(runs(), 3, "failures are verified every time");
        // An unknown user costs a bcrypt too (no enumeration by timing) and never succeeds,
        // even with the decoy hash's own password.
        assert!(!auth.check("mallory", b"s3cr3t").await);
        assert_eq!(runs(), 4);
    }

    #[tokio::test]
    async fn cache_is_bounded() {
        let hash = bcrypt::hash("s3cr3t", 4).unwrap();
        let auth = BasicAuth::new(BTreeMap::from([("alice".to_string(), hash)]));
        for i in 0..(AUTH_CACHE_CAPACITY + 10) {
            auth.remember(cache_key("u", "h", i.to_string().as_bytes()));
        }
        assert_eq!(auth.cache.lock().unwrap().len(), AUTH_CACHE_CAPACITY);
    }
}
