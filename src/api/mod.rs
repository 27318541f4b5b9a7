//! The MDE API client for one tenant: one method per endpoint, every call metered.
//!
//! Owns the endpoints (listings and their paging (`listing`: one that can stop and go on), one action, a result's download link) and
//! the client's parts: `error` (one error type), `send` (slot, quota, token, 401/429,
//! size caps, the per-call metrics), `span` (the client span of an exchange, token requests
//! included), `download` (result links and their trust policy),
//! [`http`] (the one `reqwest` client and its policy: redirects, Referer, proxy; the cap on
//! requests in flight), [`auth`] (tokens) and [`model`] (pure parsers); and reading the API's
//! clock off each answer's `Date` header into the tenant's [`crate::api::clock::ApiClock`], with the
//! skew gauge. Does not own what to
//! call next (the collector) nor parsing (`model`).

pub mod auth;
pub mod clock;
pub mod deprecation;
mod download;
mod error;
pub mod http;
mod listing;
pub mod model;
mod send;
mod span;

use std::sync::Arc;

use tokio::time::Instant;
use url::Url;

use crate::api::clock::ApiClock;
use crate::config::{Tenant, is_loopback};
use crate::metrics::Metrics;
use crate::quota::Endpoint;
pub use crate::quota::SharedQuota;
pub use error::{Error, ErrorKind};
pub use http::{Http, Slot};
pub(crate) use http::{error_chain, read_capped};
pub use listing::Listing;
use model::{DownloadLink, Machine, MachineAction, redact_url};

/// A listing of machine actions that can stop (quota) and go on at the next poll.
pub type ActionListing = Listing<MachineAction>;

/// Most pages one listing may take. The server pages are 100 to 10,000 actions; at 200 pages
/// a listing that has not ended is a loop or a runaway, and it must not spend the whole
/// hour's quota (1,500 calls) before anyone notices.
pub const MAX_PAGES: usize = 200;

/// `$top` of every listing: the documented maximum. The API's default page size is not
/// documented, so no listing relies on it (#20).
pub const LIST_TOP: usize = 10_000;

/// Whether a quota'd call may wait for room in the budget, and until when.
#[derive(Debug, Clone, Copy)]
pub enum QuotaWait {
    /// Fail with `Error::Quota` if the call does not fit now.
    No,
    /// Wait for room until this instant, then fail.
    Until(Instant),
}

/// The `endpoint` label of result downloads (SAS links, not the MDE API).
pub const DOWNLOAD: &str = "download";

/// The `url.template` of result downloads: a blob in a container, with no name, id or SAS
/// signature in it.
pub const DOWNLOAD_URL_TEMPLATE: &str = "/{container}/{blob}";

/// An endpoint's path under the API base, with its ids as `{placeholders}`: the
/// `url.template` of its spans (OpenTelemetry HTTP client conventions), joined to the base
/// path the same way [`Client::api_url`] joins the real path.
pub fn url_template(ep: Endpoint) -> &'static str {
    match ep {
        Endpoint::ListMachineActions => "api/machineactions",
        Endpoint::GetMachineAction => "api/machineactions/{id}",
        Endpoint::GetResultDownloadLink => {
            "api/machineactions/{id}/GetLiveResponseResultDownloadLink(index={index})"
        }
        Endpoint::ListMachines => "api/machines",
    }
}

/// The built-in `trusted_result_hosts`, one list every client shares.
static DEFAULT_TRUSTED_HOSTS: std::sync::OnceLock<Arc<[String]>> = std::sync::OnceLock::new();

/// The host suffixes result links are trusted from, as [`Client::with_trusted_hosts`] takes
/// them: made once for every tenant's client (each held its own copy, #34).
pub fn trusted_hosts(suffixes: &[String]) -> Arc<[String]> {
    suffixes.iter().map(|h| h.to_ascii_lowercase()).collect()
}

/// The client for one tenant: a handle on what it and its siblings share (the collector's
/// and the machine-context refresh's each held a copy of it, with its strings, #34).
pub struct Client(Arc<ClientInner>);

/// What the handles on one tenant's client share (see [`Client`], whose methods read it).
#[derive(Clone)]
pub struct ClientInner {
    http: Http,
    api: Url,
    api_origin: String,
    /// The API is on a loopback host (the simulator, tests): result links may then come from
    /// that same origin too.
    api_is_loopback: bool,
    /// Host suffixes result links may point to (`trusted_result_hosts`, #32 item 14).
    trusted_hosts: Arc<[String]>,
    tenant: String,
    /// Shared with [`Client::sibling`]s: one token cache per tenant.
    auth: Arc<auth::TokenSource>,
    quota: SharedQuota,
    metrics: Arc<Metrics>,
    /// The API's clock as its answers' `Date` header tells it (#24 item 7), shared with the
    /// collector's decisions and `shared`'s expiry.
    clock: ApiClock,
}

impl std::ops::Deref for Client {
    type Target = ClientInner;

    fn deref(&self) -> &ClientInner {
        &self.0
    }
}

impl Client {
    pub fn new(
        t: &Tenant,
        http: Http,
        quota: SharedQuota,
        metrics: Arc<Metrics>,
    ) -> Result<Self, Error> {
        let auth = Arc::new(auth::TokenSource::new(
            t,
            http.client.clone(),
            metrics.clone(),
        )?);
        let mut api = t.api_url.clone();
        if !api.path().ends_with('/') {
            let p = format!("{}/", api.path());
            api.set_path(&p);
        }
        Ok(Client(Arc::new(ClientInner {
            api_origin: api.origin().ascii_serialization(),
            api_is_loopback: is_loopback(&api),
            trusted_hosts: DEFAULT_TRUSTED_HOSTS
                .get_or_init(|| {
                    crate::config::DEFAULT_TRUSTED_RESULT_HOSTS
                        .iter()
                        .map(|h| h.to_string())
                        .collect()
                })
                .clone(),
            http,
            api,
            tenant: t.name.clone(),
            auth,
            quota,
            metrics,
            clock: ApiClock::default(),
        })))
    }

    /// The tenant's view of the API's clock.
    pub fn clock(&self) -> &ApiClock {
        &self.clock
    }

    /// Read the API's clock from `clock` (kept across a reload) instead of a fresh one.
    pub fn with_clock(mut self, clock: ApiClock) -> Self {
        Arc::make_mut(&mut self.0).clock = clock;
        self
    }

    /// An answer came: its `Date` header tells the API's time, and the skew gauge follows.
    fn note_date(&self, headers: &reqwest::header::HeaderMap) {
        let date = headers
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok());
        let at = Instant::now();
        if self.clock.observe_header(date, at)
            && let Some(skew) = self.clock.skew(chrono::Utc::now(), at)
        {
            self.metrics
                .exporter
                .record_clock_skew(&self.tenant, skew.num_milliseconds() as f64 / 1000.0);
        }
    }

    /// Trust result links to hosts ending in one of `hosts` (`trusted_result_hosts`, made by
    /// [`trusted_hosts`]), in place of the built-in list.
    pub fn with_trusted_hosts(mut self, hosts: &Arc<[String]>) -> Client {
        Arc::make_mut(&mut self.0).trusted_hosts = hosts.clone();
        self
    }

    /// The tenant's quota this client spends.
    pub fn quota(&self) -> &SharedQuota {
        &self.quota
    }

    /// Another handle on the same tenant: same token cache, quota and HTTP client (for
    /// background work beside the collector, like the machine-context refresh).
    pub fn sibling(&self) -> Client {
        Client(self.0.clone())
    }

    /// `GET /api/machines?$filter=…`, following `@odata.nextLink` on the API's host. Items
    /// that do not parse are logged and skipped.
    pub async fn list_machines(
        &self,
        filter: &str,
        wait: QuotaWait,
    ) -> Result<Vec<Machine>, Error> {
        self.list_all(Endpoint::ListMachines, "api/machines", filter, wait, "machine", |invalid| {
            for problem in invalid {
                tracing::warn!(tenant = %self.tenant, problem, "skipping a machine that does not parse");
            }
        })
        .await
    }

    /// Application permissions the latest token's `roles` claim lacks (`None`: not known).
    pub fn missing_permissions(&self) -> Option<Vec<String>> {
        self.auth.missing_permissions()
    }

    pub async fn has_token(&self) -> bool {
        self.auth.has_token().await
    }

    /// Make sure a token is held (used at start-up and by polls before any call).
    pub async fn ensure_token(&self) -> Result<(), Error> {
        self.auth.token().await?;
        Ok(())
    }

    /// `GET /api/machineactions?$filter=…`, following `@odata.nextLink`. Items that do not
    /// parse are counted and skipped.
    pub async fn list_machine_actions(
        &self,
        filter: &str,
        wait: QuotaWait,
    ) -> Result<Vec<MachineAction>, Error> {
        let mut listing = self.machine_action_listing(filter);
        self.read_machine_actions(&mut listing, wait).await?;
        Ok(listing.into_items())
    }

    /// A listing of machine actions with `filter`, nothing read yet: read it with
    /// [`Client::read_machine_actions`], and again after an error to go on from where it
    /// stopped (#32 item 4).
    pub fn machine_action_listing(&self, filter: &str) -> ActionListing {
        Listing::start(
            self,
            Endpoint::ListMachineActions,
            "api/machineactions",
            filter,
        )
    }

    /// Read `listing` on from where it stopped to its end. On an error (quota, a 429) it
    /// keeps the pages read so far and goes on from the page that failed at the next call.
    pub async fn read_machine_actions(
        &self,
        listing: &mut ActionListing,
        wait: QuotaWait,
    ) -> Result<(), Error> {
        self.read_listing(listing, wait, "action", |invalid| {
            for problem in invalid {
                tracing::warn!(tenant = %self.tenant, problem, "skipping a machine action that does not parse");
            }
            self.metrics
                .api.record_invalid_actions(&self.tenant, invalid.len());
        })
        .await
    }

    /// `GET {path}?$filter=…&$top=10000` and every page after it ([`Client::next_page`],
    /// [`full_page_continuation`]): the items of all pages that parse as `T` (named `item` in
    /// problems); each page's problems go to `skipped` as that page is read.
    async fn list_all<T: serde::de::DeserializeOwned + model::Listed>(
        &self,
        ep: Endpoint,
        path: &str,
        filter: &str,
        wait: QuotaWait,
        item: &str,
        skipped: impl Fn(&[String]),
    ) -> Result<Vec<T>, Error> {
        let mut listing = Listing::start(self, ep, path, filter);
        self.read_listing(&mut listing, wait, item, skipped).await?;
        Ok(listing.into_items())
    }

    /// The page after this one, from its `@odata.nextLink`: only on the configured API's
    /// origin (our bearer token goes nowhere else), and never a page already read or past
    /// `MAX_PAGES` (a listing that loops fails instead of spending the quota).
    fn next_page(
        &self,
        ep: Endpoint,
        link: Option<String>,
        seen: &mut std::collections::HashSet<String>,
    ) -> Result<Option<Url>, Error> {
        let Some(link) = link else {
            return Ok(None);
        };
        let parsed = Url::parse(&link).map_err(|_| Error::ForeignNextLink {
            endpoint: ep.as_str(),
            link: "not a URL".into(),
        })?;
        if parsed.origin().ascii_serialization() != self.api_origin {
            return Err(Error::ForeignNextLink {
                endpoint: ep.as_str(),
                link: redact_url(&parsed),
            });
        }
        check_next_page(seen, &parsed, ep)?;
        Ok(Some(parsed))
    }

    /// `GET /api/machineactions/{id}`.
    pub async fn get_machine_action(
        &self,
        id: &str,
        wait: QuotaWait,
    ) -> Result<MachineAction, Error> {
        let url = self.api_url(&format!("api/machineactions/{id}"));
        let body = self
            .api_get(Endpoint::GetMachineAction, &url, wait, Some((id, None)))
            .await?;
        model::parse_action(&body).map_err(|source| Error::Parse {
            endpoint: Endpoint::GetMachineAction.as_str(),
            url: redact_url(&url),
            source,
        })
    }

    /// `GET /api/machineactions/{id}/GetLiveResponseResultDownloadLink(index={n})`.
    pub async fn get_result_download_link(
        &self,
        id: &str,
        index: u32,
        wait: QuotaWait,
    ) -> Result<DownloadLink, Error> {
        let url = self.api_url(&format!(
            "api/machineactions/{id}/GetLiveResponseResultDownloadLink(index={index})"
        ));
        let body = self
            .api_get(
                Endpoint::GetResultDownloadLink,
                &url,
                wait,
                Some((id, Some(index))),
            )
            .await?;
        model::parse_download_link(&body).map_err(|source| Error::Parse {
            endpoint: Endpoint::GetResultDownloadLink.as_str(),
            url: redact_url(&url),
            source,
        })
    }

    /// The `url.template` of `ep`'s spans under this tenant's API base path.
    fn api_url_template(&self, ep: Endpoint) -> String {
        format!("{}{}", self.api.path(), url_template(ep))
    }

    fn api_url(&self, path: &str) -> Url {
        let mut url = self.api.clone();
        let joined = format!("{}{}", self.api.path(), path);
        url.set_path(&joined);
        url
    }
}

/// A page that served all the `$top` it was asked for, with no `@odata.nextLink`: whether
/// OData ends a `$top` listing there or more actions match is not documented, so the rest is
/// asked for with `$skip` (a listing of exactly `$top` items costs one empty page more). A
/// page that served fewer ended the listing.
fn full_page_continuation(url: &Url, served: usize) -> Option<Url> {
    let param = |k: &str| {
        url.query_pairs()
            .find(|(n, _)| n == k)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let top = param("$top")?;
    if served == 0 || served < top {
        return None;
    }
    let skip = param("$skip").unwrap_or(0).saturating_add(served);
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(n, _)| n != "$top" && n != "$skip")
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect();
    let mut more = url.clone();
    more.query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .append_pair("$top", &LIST_TOP.to_string())
        .append_pair("$skip", &skip.to_string());
    Some(more)
}

/// The digest of the ids a page served, in order, to tell a page served again under another
/// URL (a listing whose API ignores `$skip`): two different pages of one listing share a
/// 64-bit SipHash with a chance of 2^-64.
fn page_digest<T: model::Listed>(items: &[T]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for item in items {
        item.id().hash(&mut h);
    }
    h.finish()
}

/// A listing must not loop (a nextLink already read) nor run past [`MAX_PAGES`].
fn check_next_page(
    seen: &mut std::collections::HashSet<String>,
    next: &Url,
    ep: Endpoint,
) -> Result<(), Error> {
    if !seen.insert(next.to_string()) {
        return Err(Error::NextLinkLoop {
            endpoint: ep.as_str(),
            link: redact_url(next),
        });
    }
    if seen.len() > MAX_PAGES {
        return Err(Error::TooManyPages {
            endpoint: ep.as_str(),
            link: redact_url(next),
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::quota::Quota;
    use std::time::Duration;
    use tokio::time::Instant;

    fn test_tenant(name: &str, quota: crate::config::QuotaConfig) -> Tenant {
        Tenant {
            quota,
            ..crate::config::fixtures::tenant(name)
        }
    }

    /// See: #11. A call waiting for quota room gives its slot back: with one slot for the
    /// whole process, a tenant out of quota does not hold another tenant's call back, and the
    /// quota counts a call only once it has its slot (the instant it is really sent).
    #[tokio::test(start_paused = true)]
    async fn a_call_waiting_for_quota_holds_no_slot() {
        let metrics = Arc::new(Metrics::new());
        let http = Http::new(reqwest::Client::new(), 1, &metrics);
        let client = |name: &str, per_minute| {
            let t = test_tenant(
                name,
                crate::config::QuotaConfig {
                    per_minute,
                    ..Default::default()
                },
            );
            let quota = Quota::shared(&t.quota);
            Client::new(&t, http.clone(), quota, metrics.clone()).unwrap()
        };
        let a = Arc::new(client("a", 1));
        let b = client("b", 100);
        // `a` spends its only call of the minute, then asks again and has to wait.
        drop(
            a.slot_and_quota(Endpoint::ListMachineActions, QuotaWait::No)
                .await
                .unwrap(),
        );
        let far = Instant::now() + Duration::from_secs(3600);
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move {
                a.slot_and_quota(Endpoint::ListMachineActions, QuotaWait::Until(far))
                    .await
                    .map(drop)
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        // `b` gets the one slot at once, without the clock moving.
        let started = Instant::now();
        let slot = b
            .slot_and_quota(Endpoint::ListMachineActions, QuotaWait::No)
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(http.available(), 0);
        drop(slot);
        // `a` goes once its minute has passed.
        waiting.await.unwrap().unwrap();
        assert!(started.elapsed() >= Duration::from_secs(59));
        assert_eq!(http.available(), 1);
    }

    /// See: #20. A page as full as its `$top` with no nextLink is followed by `$skip`; a
    /// shorter one, or one without `$top`, ends the listing.
    #[test]
    fn a_full_top_page_without_next_link_asks_for_the_rest() {
        let u = Url::parse("http://h/api/machineactions?%24filter=type+eq+%27x%27&%24top=10000")
            .unwrap();
        let more = full_page_continuation(&u, 10_000).unwrap();
        let q: Vec<(String, String)> = more.query_pairs().into_owned().collect();
        assert_eq!(
            q,
            [
                ("$filter".to_string(), "type eq 'x'".to_string()),
                ("$top".to_string(), "10000".to_string()),
                ("$skip".to_string(), "10000".to_string()),
            ]
        );
        // The simulator's last page of a chain asks for what is left of `$top`.
        let last = Url::parse("http://h/api/machineactions?%24top=100&%24skip=9900").unwrap();
        let more = full_page_continuation(&last, 100).unwrap();
        assert!(
            more.as_str().ends_with("%24top=10000&%24skip=10000"),
            "{more}"
        );
        assert_eq!(full_page_continuation(&u, 9_999), None);
        assert_eq!(full_page_continuation(&u, 0), None);
        let no_top = Url::parse("http://h/api/machineactions").unwrap();
        assert_eq!(full_page_continuation(&no_top, 100), None);
    }

    /// See: #13. Result links only from blob storage over https, or from a loopback API's own
    /// origin.
    #[tokio::test]
    async fn downloads_only_from_blob_storage() {
        let metrics = Arc::new(Metrics::new());
        let client = |api: &str| {
            let mut t = test_tenant("t", Default::default());
            t.api_url = Url::parse(api).unwrap();
            t.login_url = t.api_url.clone();
            let quota = Quota::shared(&t.quota);
            let http = Http::new(reqwest::Client::new(), 1, &metrics);
            Client::new(&t, http, quota, metrics.clone()).unwrap()
        };
        let real = client("https://api.securitycenter.microsoft.com");
        let sim = client("http://127.0.0.1:9718");
        let ok = |c: &Client, u: &str| c.trusted_download(&Url::parse(u).unwrap());
        assert!(ok(&real, "https://acct.blob.core.windows.net/c/b?sig=x"));
        assert!(ok(&real, "https://ACCT.BLOB.CORE.USGOVCLOUDAPI.NET/c/b"));
        assert!(ok(&real, "https://a.blob.core.chinacloudapi.cn:444/c/b"));
        // Azure Storage's DNS-zone endpoints are trusted by default (#32 item 14).
        assert!(ok(&real, "https://acct.z12.blob.storage.azure.net/c/b"));
        // A configured list replaces the built-in one.
        let configured = trusted_hosts(&[".blob.example-sovereign.cloud".to_string()]);
        let narrowed =
            client("https://api.securitycenter.microsoft.com").with_trusted_hosts(&configured);
        // One list for every tenant's client, the built-in one and a configured one (#34).
        assert!(Arc::ptr_eq(&real.trusted_hosts, &sim.trusted_hosts));
        let other =
            client("https://api.securitycenter.microsoft.com").with_trusted_hosts(&configured);
        assert!(Arc::ptr_eq(&narrowed.trusted_hosts, &other.trusted_hosts));
        // A sibling is a handle on the same client, not a copy of it (#34).
        let sibling = other.sibling();
        assert!(Arc::ptr_eq(&sibling.0, &other.0));
        assert_eq!(size_of::<Client>(), size_of::<usize>());
        assert!(ok(
            &narrowed,
            "https://acct.BLOB.example-sovereign.cloud/c/b"
        ));
        assert!(!ok(&narrowed, "https://acct.blob.core.windows.net/c/b"));
        for bad in [
            "http://acct.blob.core.windows.net/c/b",
            "https://blob.core.windows.net/c/b",
            "https://.blob.core.windows.net/c/b",
            "https://evil.example/x.blob.core.windows.net",
            "https://acct.blob.core.windows.net.evil.example/c/b",
            "https://user:pw@acct.blob.core.windows.net/c/b",
            "https://127.0.0.1/c/b",
            "https://169.254.169.254/latest/meta-data",
            "http://localhost:9718/blob/x",
            "https://api.securitycenter.microsoft.com/blob/x",
        ] {
            assert!(!ok(&real, bad), "{bad}");
        }
        assert!(ok(&sim, "http://127.0.0.1:9718/blob/x?sig=y"));
        assert!(!ok(&sim, "http://127.0.0.1:9719/blob/x"));
        assert!(!ok(&sim, "http://localhost:9718/blob/x"));
        assert!(!ok(&sim, "http://169.254.169.254/latest/meta-data"));
    }
}
