//! The request guard: rate limit, basic auth and the configured response headers.
//!
//! Owns what happens to a request before it reaches the routes: the `rate_limit` token bucket,
//! checking `Authorization: Basic` against the bcrypt hashes (with a cache of verified
//! credentials), the `WWW-Authenticate` challenge and the extra headers. Does not own the
//! connection (timeouts, TLS; see [`crate::serve`](mod@crate::serve)) nor reading the users
//! from the file (see [`crate::config`]).
//!
//! # bcrypt under load
//!
//! A bcrypt verification is deliberately slow: tens of milliseconds of CPU at the usual cost
//! of 10, more at higher costs. Anyone who can reach the port can make the server spend that
//! by sending wrong passwords, so:
//!
//! - Verifications run on tokio's blocking pool (`spawn_blocking`), never on the async
//!   workers, and at most `max_concurrent_auth_checks` at once (default: one per CPU), so a
//!   flood of bad passwords cannot take every core or stall other connections.
//! - Credentials that verified are remembered (a digest of user, hash and password; no
//!   passwords are kept), so a scraper that authenticated once is checked with a lookup and
//!   never waits behind bcrypt, however many bad passwords are queued.
//! - Requests with credentials that are not remembered wait in a bounded queue
//!   (`max_queued_auth_checks`); when it is full they are answered `429 Too Many Requests`
//!   at once, without spending bcrypt on them. Their password was never checked, so 401 would
//!   be a lie, and a retry later may succeed. A new scraper caught in a flood gets a 429, as
//!   it would from `rate_limit`, and gets in once the queue has room; from then on it is
//!   remembered.
//! - Each peer address may have at most `max_auth_checks_per_peer` requests waiting for or
//!   running a verification; beyond that its requests are answered 429 at once. So one
//!   address flooding wrong passwords is throttled on its own and cannot fill the queue: a
//!   scraper from another address whose credentials are not remembered yet (after a restart,
//!   a new Prometheus replica) waits behind at most that many of the flood's checks. See: #24
//! - The slot (and the peer's place) is given back when the verification ends, not when the
//!   request is dropped, so clients that hang up cannot get more verifications running than
//!   the limit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::config::WebConfig;

/// How many successful credential checks are remembered; exporter-toolkit uses the same bound.
/// Only a few scrapers ever authenticate, so this is never reached in normal operation.
const AUTH_CACHE_CAPACITY: usize = 100;

/// The guard's settings that come from the code rather than the file.
#[derive(Debug, Clone)]
pub(crate) struct GuardOptions {
    /// The `WWW-Authenticate` header value sent with every 401, from [`challenge`].
    pub(crate) challenge: HeaderValue,
    /// bcrypt verifications allowed to run at once (at least 1).
    pub(crate) max_concurrent_checks: usize,
    /// Requests allowed to wait for a verification slot; beyond that, 429 at once.
    pub(crate) max_queued_checks: usize,
    /// Requests from one peer address allowed to wait for or run a verification (at least 1).
    pub(crate) max_checks_per_peer: usize,
    /// Counts the requests refused because the queue was full.
    pub(crate) overloaded: Arc<AtomicU64>,
}

/// Put into each request's extensions by the accept loop: the guard calls it when a request
/// passes basic auth, which establishes the connection (see [`crate::serve`](mod@crate::serve)).
#[derive(Clone)]
pub(crate) struct Admitted(Arc<dyn Fn() + Send + Sync>);

impl Admitted {
    pub(crate) fn new(f: impl Fn() + Send + Sync + 'static) -> Admitted {
        Admitted(Arc::new(f))
    }
}

impl fmt::Debug for Admitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Admitted")
    }
}

/// `Basic realm="<realm>"`, with `"` and `\` escaped as RFC 7230 quoted-strings need; `None`
/// when `realm` has characters a header cannot carry (control characters).
pub(crate) fn challenge(realm: &str) -> Option<HeaderValue> {
    let quoted = realm.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::try_from(format!("Basic realm=\"{quoted}\"")).ok()
}

/// Wrap `router` with the configured response headers and basic auth.
pub(crate) fn guard(router: Router, web: &WebConfig, options: &GuardOptions) -> Router {
    if web.users.is_empty() && web.headers.is_empty() && web.rate_limit.is_none() {
        return router;
    }
    let state = Arc::new(Guard {
        limiter: web
            .rate_limit
            .map(|(interval, burst)| RateLimiter::new(interval, burst)),
        headers: web.headers.clone(),
        auth: (!web.users.is_empty()).then(|| BasicAuth::new(web.users.clone(), options)),
        challenge: options.challenge.clone(),
    });
    router.layer(axum::middleware::from_fn_with_state(state, guard_request))
}

struct Guard {
    limiter: Option<RateLimiter>,
    headers: Vec<(HeaderName, HeaderValue)>,
    auth: Option<BasicAuth>,
    /// The `WWW-Authenticate` value for 401s.
    challenge: HeaderValue,
}

/// In exporter-toolkit's order: rate limit (before any bcrypt is spent), then auth; the extra
/// headers go on every response that is not a 429.
async fn guard_request(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    let now = tokio::time::Instant::now();
    if guard.limiter.as_ref().is_some_and(|l| !l.allow(now)) {
        return (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response();
    }
    let verdict = match &guard.auth {
        Some(auth) => auth.allows(&req).await,
        None => Verdict::Allowed,
    };
    let mut response = match verdict {
        Verdict::Allowed => {
            // Without basic auth the accept loop establishes connections itself.
            let admitted = req.extensions().get::<Admitted>();
            if let Some(admitted) = admitted.filter(|_| guard.auth.is_some()) {
                (admitted.0)();
            }
            next.run(req).await
        }
        Verdict::Denied => unauthorized(&guard.challenge),
        Verdict::Busy => busy(),
    };
    for (name, value) in &guard.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

fn unauthorized(challenge: &HeaderValue) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, challenge.clone())],
        Body::from("Unauthorized\n"),
    )
        .into_response()
}

/// The bcrypt queue is full: the credentials were not checked, try again shortly.
fn busy() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(RETRY_AFTER, HeaderValue::from_static("1"))],
        Body::from("Too Many Requests\n"),
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

/// What the guard makes of a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allowed,
    /// Missing or wrong: 401.
    Denied,
    /// Not checked because the bcrypt queue is full: 429.
    Busy,
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
    /// would otherwise cost a full bcrypt (tens of ms of CPU) each time, and a known scraper
    /// would queue behind a flood of bad passwords. Keyed by a digest so the process never
    /// holds passwords; the hash is in the key so a changed hash never matches an old entry.
    /// Failures are not cached: caching them would let a client fill the cache with junk.
    cache: Mutex<HashSet<[u8; 32]>>,
    /// One permit per bcrypt verification allowed to run at once (one per core by default):
    /// each is deliberately CPU-heavy, and the rest of the server needs CPU too.
    slots: Arc<Semaphore>,
    /// Requests waiting for a slot now.
    queued: AtomicUsize,
    /// Most requests allowed to wait; beyond that they get [`Verdict::Busy`].
    max_queued: usize,
    /// Per peer address (`None`: unknown), requests waiting for or running a verification.
    /// An entry goes when its count reaches 0, so the map never holds more entries than
    /// `max_queued` plus the slots.
    per_peer: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
    /// Most requests one peer address may have in `per_peer`; beyond that [`Verdict::Busy`].
    max_per_peer: usize,
    /// Requests answered [`Verdict::Busy`] (shared with [`crate::ServeStats`]).
    overloaded: Arc<AtomicU64>,
    /// bcrypt verifications run so far; shows up in debug logs and tells tests the cache works.
    bcrypt_runs: AtomicU64,
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>, options: &GuardOptions) -> BasicAuth {
        let decoy_hash = users.values().next().cloned().unwrap_or_default();
        BasicAuth {
            users,
            decoy_hash,
            cache: Mutex::new(HashSet::new()),
            slots: Arc::new(Semaphore::new(options.max_concurrent_checks.max(1))),
            queued: AtomicUsize::new(0),
            max_queued: options.max_queued_checks,
            per_peer: Arc::default(),
            max_per_peer: options.max_checks_per_peer.max(1),
            overloaded: options.overloaded.clone(),
            bcrypt_runs: AtomicU64::new(0),
        }
    }

    /// What to do with the request's credentials. Takes the request by reference but reads
    /// everything before awaiting: a request body is not `Sync`, so holding `&Request` across
    /// an await would make the middleware future `!Send`.
    fn allows(&self, req: &Request) -> impl Future<Output = Verdict> + Send + '_ {
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
                return Verdict::Denied;
            };
            let verdict = self
                .check(peer.map(|p| p.ip().to_canonical()), &user, &password)
                .await;
            match verdict {
                Verdict::Allowed => {}
                Verdict::Denied => tracing::debug!(user = %user, peer = ?peer, "basic auth failed"),
                Verdict::Busy => tracing::debug!(
                    user = %user,
                    peer = ?peer,
                    "bcrypt queue full; answered 429 without checking the password"
                ),
            }
            verdict
        }
    }

    async fn check(&self, peer: Option<IpAddr>, user: &str, password: &[u8]) -> Verdict {
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash.clone(), true),
            None => (self.decoy_hash.clone(), false),
        };
        let key = cache_key(user, &hash, password);
        if known && self.cached(&key) {
            return Verdict::Allowed;
        }
        let Some(peer_place) = self.peer_place(peer) else {
            self.overloaded.fetch_add(1, Ordering::Relaxed);
            return Verdict::Busy;
        };
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let Some(_place) = self.enqueue() else {
                    self.overloaded.fetch_add(1, Ordering::Relaxed);
                    return Verdict::Busy;
                };
                // The semaphore is never closed; if it were, refusing is the safe answer.
                let Ok(permit) = self.slots.clone().acquire_owned().await else {
                    return Verdict::Busy;
                };
                permit
            }
        };
        // Another request may have verified the same credentials while we waited.
        if known && self.cached(&key) {
            return Verdict::Allowed;
        }
        let runs = self.bcrypt_runs.fetch_add(1, Ordering::Relaxed) + 1;
        let password = password.to_vec();
        // The permit moves into the blocking task, so the slot stays taken until bcrypt is
        // done even if this request is dropped meanwhile.
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _peer_place = peer_place;
            bcrypt::verify(password, &hash)
        })
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(false);
        tracing::debug!(bcrypt_runs = runs, "ran a bcrypt verification");
        if known && verified {
            self.remember(key);
            Verdict::Allowed
        } else {
            Verdict::Denied
        }
    }

    /// A place in the queue for a verification slot, or `None` when the queue is full.
    fn enqueue(&self) -> Option<QueuePlace<'_>> {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < self.max_queued).then_some(q + 1)
            })
            .ok()
            .map(|_| QueuePlace(&self.queued))
    }

    /// A place among `peer`'s requests waiting for or running a verification, or `None` when
    /// it has `max_per_peer` already.
    fn peer_place(&self, peer: Option<IpAddr>) -> Option<PeerPlace> {
        // A poisoned lock only means another request panicked while counting; the map is
        // still usable.
        let mut map = self.per_peer.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(peer).or_insert(0);
        if *n >= self.max_per_peer {
            return None;
        }
        *n += 1;
        Some(PeerPlace {
            map: self.per_peer.clone(),
            peer,
        })
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

/// A request waiting for a verification slot; leaving the queue (or giving up) frees the place.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request's place among its peer's verifications; dropping it gives the place back.
struct PeerPlace {
    map: Arc<Mutex<HashMap<Option<IpAddr>, usize>>>,
    peer: Option<IpAddr>,
}

impl Drop for PeerPlace {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.peer);
            }
        }
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn options(max_concurrent_checks: usize, max_queued_checks: usize) -> GuardOptions {
        GuardOptions {
            challenge: challenge("test").unwrap(),
            max_concurrent_checks,
            max_queued_checks,
            max_checks_per_peer: usize::MAX,
            overloaded: Arc::default(),
        }
    }

    fn auth_for(user: &str, hash: String) -> BasicAuth {
        BasicAuth::new(BTreeMap::from([(user.to_string(), hash)]), &options(2, 4))
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
    fn challenge_quotes_the_realm() {
        assert_eq!(
            challenge("mde-liveresponse-exporter").unwrap(),
            r#"Basic realm="mde-liveresponse-exporter""#
        );
        assert_eq!(
            challenge(r#"a "b" \ c"#).unwrap(),
            r#"Basic realm="a \"b\" \\ c""#
        );
        assert_eq!(challenge("bad\nrealm"), None);
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
        let auth = auth_for("alice", hash);
        let runs = || auth.bcrypt_runs.load(Ordering::Relaxed);
        assert_eq!(auth.check(None, "alice", b"s3cr3t").await, Verdict::Allowed);
        assert_eq!(auth.check(None, "alice", b"s3cr3t").await, Verdict::Allowed);
        assert_eq!(runs(), 1, "second success must come from the cache");
        assert_eq!(auth.check(None, "alice", b"wrong").await, Verdict::Denied);
        assert_eq!(auth.check(None, "alice", b"wrong").await, Verdict::Denied);
        assert_eq!(runs(), 3, "failures are verified every time");
        // An unknown user costs a bcrypt too (no enumeration by timing) and never succeeds,
        // even with the decoy hash's own password.
        assert_eq!(
            auth.check(None, "mallory", b"s3cr3t").await,
            Verdict::Denied
        );
        assert_eq!(runs(), 4);
    }

    #[tokio::test]
    async fn a_full_queue_answers_busy_at_once_but_remembered_credentials_pass() {
        let hash = bcrypt::hash("s3cr3t", 4).unwrap();
        let auth = Arc::new(BasicAuth::new(
            BTreeMap::from([("alice".to_string(), hash)]),
            &options(1, 1),
        ));
        assert_eq!(auth.check(None, "alice", b"s3cr3t").await, Verdict::Allowed);
        // Hold the only slot and the only place in the queue.
        let slot = auth.slots.clone().acquire_owned().await.unwrap();
        let waiting = tokio::spawn({
            let auth = auth.clone();
            async move { auth.check(None, "alice", b"wrong").await }
        });
        while auth.queued.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(auth.check(None, "alice", b"other").await, Verdict::Busy);
        assert_eq!(auth.overloaded.load(Ordering::Relaxed), 1);
        assert_eq!(
            auth.check(None, "alice", b"s3cr3t").await,
            Verdict::Allowed,
            "remembered credentials skip the queue"
        );
        drop(slot);
        assert_eq!(waiting.await.unwrap(), Verdict::Denied);
        assert_eq!(auth.queued.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_dropped_request_keeps_its_slot_until_bcrypt_is_done() {
        // Cost 12: slow enough that the verification is still running when we look.
        let hash = bcrypt::hash("s3cr3t", 12).unwrap();
        let auth = Arc::new(BasicAuth::new(
            BTreeMap::from([("alice".to_string(), hash)]),
            &options(1, 0),
        ));
        let check = tokio::spawn({
            let auth = auth.clone();
            async move { auth.check(None, "alice", b"wrong").await }
        });
        while auth.bcrypt_runs.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        check.abort();
        let _ = check.await;
        assert_eq!(
            auth.slots.available_permits(),
            0,
            "the abandoned verification still holds its slot"
        );
        assert_eq!(auth.check(None, "alice", b"other").await, Verdict::Busy);
    }

    #[tokio::test]
    async fn cache_is_bounded() {
        let hash = bcrypt::hash("s3cr3t", 4).unwrap();
        let auth = auth_for("alice", hash);
        for i in 0..(AUTH_CACHE_CAPACITY + 10) {
            auth.remember(cache_key("u", "h", i.to_string().as_bytes()));
        }
        assert_eq!(auth.cache.lock().unwrap().len(), AUTH_CACHE_CAPACITY);
    }

    /// See: #24. One address with its share in use is refused at once; another address still
    /// gets its credentials checked, and a remembered one never counts against its address.
    #[tokio::test]
    async fn one_address_is_throttled_on_its_own() {
        let hash = bcrypt::hash("s3cr3t", 4).unwrap();
        let mut options = options(1, 8);
        options.max_checks_per_peer = 1;
        let auth = Arc::new(BasicAuth::new(
            BTreeMap::from([
                ("alice".to_string(), hash.clone()),
                ("bob".to_string(), hash),
            ]),
            &options,
        ));
        let flooder = Some(IpAddr::from([127, 0, 0, 2]));
        let scraper = Some(IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            auth.check(flooder, "alice", b"s3cr3t").await,
            Verdict::Allowed
        );
        // Hold the flooder's only place.
        let place = auth.peer_place(flooder).unwrap();
        assert_eq!(auth.check(flooder, "alice", b"wrong").await, Verdict::Busy);
        assert_eq!(
            auth.check(scraper, "bob", b"s3cr3t").await,
            Verdict::Allowed
        );
        assert_eq!(
            auth.check(flooder, "alice", b"s3cr3t").await,
            Verdict::Allowed,
            "remembered credentials skip the per-address limit"
        );
        drop(place);
        assert!(auth.per_peer.lock().unwrap().is_empty(), "entries go at 0");
        assert_eq!(
            auth.check(flooder, "alice", b"wrong").await,
            Verdict::Denied
        );
    }
}
