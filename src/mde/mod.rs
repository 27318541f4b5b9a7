//! The MDE API client for one tenant: one method per endpoint, every call metered.
//!
//! Owns sending: a slot among the requests in flight (`http`), the quota check before a call,
//! the bearer token, one token renewal on 401, `Retry-After` on 429, response size caps, and
//! the per-call metrics (`mde_api_*`), which are recorded whether the call succeeds or not.
//! Does not own what to call next (the collector) nor parsing (`model`).

pub mod auth;
pub mod http;
pub mod model;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use reqwest::StatusCode;
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;
use url::Url;

use crate::config::Tenant;
use crate::metrics::{Metrics, RequestLabels, endpoint};
use crate::quota::{Endpoint, Quota};
pub use http::{Http, Slot};
use model::{DownloadLink, Machine, MachineAction, ParseError, Transcript, redact_url};

/// Largest API answer we read (a full `$top=10000` page is a few MiB).
const MAX_API_BODY: u64 = 64 * 1024 * 1024;
/// Longest `Retry-After` we accept; beyond it we assume a broken header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Most pages one listing may take. The server pages are 100 to 10,000 actions; at 200 pages
/// a listing that has not ended is a loop or a runaway, and it must not spend the whole
/// hour's quota (1,500 calls) before anyone notices.
pub const MAX_PAGES: usize = 200;
/// Hosts result downloads may come from: the blob storage of each Microsoft cloud. Anything
/// else (loopback, link-local, another company's host) is refused before a byte is sent.
pub const BLOB_HOST_SUFFIXES: &[&str] = &[
    ".blob.core.windows.net",
    ".blob.core.usgovcloudapi.net",
    ".blob.core.chinacloudapi.cn",
];

/// An API problem. Messages name the endpoint and the URL (without query/signature).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    #[error("{endpoint}: not sent, the API quota allows the next call in {wait:?}")]
    Quota {
        endpoint: &'static str,
        wait: Duration,
    },
    #[error("{endpoint}: throttled (HTTP 429), retry after {retry_after:?}")]
    Throttled {
        endpoint: &'static str,
        retry_after: Duration,
    },
    #[error("{endpoint}: HTTP {status} from {url}: {code} {message}")]
    Status {
        endpoint: &'static str,
        url: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{endpoint}: request to {url} failed: {message}")]
    Transport {
        endpoint: &'static str,
        url: String,
        message: String,
        timeout: bool,
    },
    #[error("{endpoint}: unreadable answer from {url}: {source}")]
    Parse {
        endpoint: &'static str,
        url: String,
        #[source]
        source: ParseError,
    },
    #[error("{endpoint}: answer from {url} is larger than {limit} bytes")]
    TooLarge {
        endpoint: &'static str,
        url: String,
        limit: u64,
    },
    #[error("{endpoint}: refusing @odata.nextLink to another host: {link}")]
    ForeignNextLink {
        endpoint: &'static str,
        link: String,
    },
    #[error(
        "{endpoint}: @odata.nextLink {link} repeats a page already read in this listing: the listing loops"
    )]
    NextLinkLoop {
        endpoint: &'static str,
        link: String,
    },
    #[error(
        "{endpoint}: the listing did not end within {MAX_PAGES} pages (last @odata.nextLink {link})"
    )]
    TooManyPages {
        endpoint: &'static str,
        link: String,
    },
    #[error(
        "download: refusing result link {0}: only https links to Azure blob storage (*.blob.core.windows.net, *.blob.core.usgovcloudapi.net, *.blob.core.chinacloudapi.cn) are fetched"
    )]
    UntrustedLink(String),
}

/// What kind of problem an [`Error`] is: the `reason` label of
/// `mde_liveresponse_result_fetch_failures_total` and what retry decisions match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorKind {
    Token,
    Quota,
    Throttled,
    NotFound,
    Forbidden,
    /// A result download answered 403: the SAS link expired (or was refused).
    ExpiredLink,
    HttpError,
    Timeout,
    Io,
    Malformed,
    TooLarge,
    /// A result link to a host that is not blob storage, or a redirect to another host.
    UntrustedLink,
}

impl ErrorKind {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Token => "token",
            ErrorKind::Quota => "quota",
            ErrorKind::Throttled => "throttled",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::ExpiredLink => "expired_link",
            ErrorKind::HttpError => "http_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Io => "io",
            ErrorKind::Malformed => "malformed",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::UntrustedLink => "untrusted_link",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// What kind of problem this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Token(_) => ErrorKind::Token,
            Error::Quota { .. } => ErrorKind::Quota,
            Error::Throttled { .. } => ErrorKind::Throttled,
            Error::Status {
                endpoint: DOWNLOAD,
                status: 403,
                ..
            } => ErrorKind::ExpiredLink,
            Error::Status { status: 404, .. } => ErrorKind::NotFound,
            // A redirect our policy did not follow: it pointed at another host.
            Error::Status {
                status: 300..=399, ..
            } => ErrorKind::UntrustedLink,
            Error::Status { status: 403, .. } => ErrorKind::Forbidden,
            Error::Status { .. } => ErrorKind::HttpError,
            Error::Transport { timeout: true, .. } => ErrorKind::Timeout,
            Error::Transport { .. } => ErrorKind::Io,
            Error::Parse { .. } => ErrorKind::Malformed,
            Error::TooLarge { .. } => ErrorKind::TooLarge,
            Error::ForeignNextLink { .. }
            | Error::NextLinkLoop { .. }
            | Error::TooManyPages { .. } => ErrorKind::Malformed,
            Error::UntrustedLink(_) => ErrorKind::UntrustedLink,
        }
    }

    /// Whether asking again later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Token(_) | Error::Quota { .. } | Error::Throttled { .. } => true,
            Error::Transport { .. } => true,
            Error::Status { status, .. } => *status >= 500 || *status == 408 || *status == 401,
            Error::Parse { .. }
            | Error::TooLarge { .. }
            | Error::ForeignNextLink { .. }
            | Error::NextLinkLoop { .. }
            | Error::TooManyPages { .. }
            | Error::UntrustedLink(_) => false,
        }
    }
}

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

/// Shared per-tenant quota; a std mutex is fine, it is never held across an await.
pub type SharedQuota = Arc<Mutex<Quota>>;

/// The client for one tenant.
pub struct Client {
    http: Http,
    api: Url,
    api_origin: String,
    /// The API is on a loopback host (the simulator, tests): result links may then come from
    /// that same origin too.
    api_is_loopback: bool,
    tenant: String,
    /// Shared with [`Client::sibling`]s: one token cache per tenant.
    auth: Arc<auth::TokenSource>,
    quota: SharedQuota,
    metrics: Arc<Metrics>,
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
        Ok(Client {
            api_origin: api.origin().ascii_serialization(),
            api_is_loopback: is_loopback(&api),
            http,
            api,
            tenant: t.name.clone(),
            auth,
            quota,
            metrics,
        })
    }

    /// Another handle on the same tenant: same token cache, quota and HTTP client (for
    /// background work beside the collector, like the machine-context refresh).
    pub fn sibling(&self) -> Client {
        Client {
            http: self.http.clone(),
            api: self.api.clone(),
            api_origin: self.api_origin.clone(),
            api_is_loopback: self.api_is_loopback,
            tenant: self.tenant.clone(),
            auth: self.auth.clone(),
            quota: self.quota.clone(),
            metrics: self.metrics.clone(),
        }
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
        self.list_all(Endpoint::ListMachineActions, "api/machineactions", filter, wait, "action", |invalid| {
            for problem in invalid {
                tracing::warn!(tenant = %self.tenant, problem, "skipping a machine action that does not parse");
            }
            self.metrics
                .invalid_actions
                .get_or_create(&crate::metrics::tenant(&self.tenant))
                .inc_by(invalid.len() as u64);
        })
        .await
    }

    /// `GET {path}?$filter=…` and every page after it ([`Client::next_page`]): the items of
    /// all pages that parse as `T` (named `item` in problems); each page's problems go to
    /// `skipped` as that page is read.
    async fn list_all<T: serde::de::DeserializeOwned>(
        &self,
        ep: Endpoint,
        path: &str,
        filter: &str,
        wait: QuotaWait,
        item: &str,
        skipped: impl Fn(&[String]),
    ) -> Result<Vec<T>, Error> {
        let mut url = self.api_url(path);
        url.query_pairs_mut().append_pair("$filter", filter);
        let mut all = Vec::new();
        // Every page's URL, to tell a listing that loops from one that ends.
        let mut seen = std::collections::HashSet::from([url.to_string()]);
        let mut next = Some(url);
        while let Some(url) = next.take() {
            let body = self.api_get(ep, &url, wait, None).await?;
            let (items, invalid, next_link) =
                model::parse_page::<T>(&body, item).map_err(|source| Error::Parse {
                    endpoint: ep.as_str(),
                    url: redact_url(&url),
                    source,
                })?;
            skipped(&invalid);
            all.extend(items);
            next = self.next_page(ep, next_link, &mut seen)?;
        }
        Ok(all)
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

    /// Download a `RunScript` result and read it as a transcript. The link is the credential:
    /// no bearer token is sent. Bodies over `max_bytes` are refused as they stream in; the
    /// bytes read count in `mde_liveresponse_transcript_bytes_total` even when they do not
    /// parse.
    pub async fn fetch_transcript(
        &self,
        link: &DownloadLink,
        max_bytes: u64,
        what: &str,
    ) -> Result<Transcript, Error> {
        let (resp, shown, slot) = self.get_blob(link).await?;
        let body = read_capped(resp, max_bytes).await;
        drop(slot);
        let body = body.map_err(|e| match e {
            ReadError::TooLarge => Error::TooLarge {
                endpoint: DOWNLOAD,
                url: shown.clone(),
                limit: max_bytes,
            },
            ReadError::Io(message) => Error::Transport {
                endpoint: DOWNLOAD,
                url: shown.clone(),
                message,
                timeout: false,
            },
        })?;
        self.metrics
            .transcript_bytes
            .get_or_create(&crate::metrics::tenant(&self.tenant))
            .inc_by(body.len() as u64);
        let parse_span = tracing::info_span!(
            "parse",
            bytes = body.len(),
            exit_code = Empty,
            errors_present = Empty,
        );
        match parse_span.in_scope(|| model::parse_transcript(&body)) {
            Ok(t) => {
                parse_span.record("exit_code", t.exit_code);
                parse_span.record("errors_present", t.errors_present());
                Ok(t)
            }
            Err(source) => {
                crate::telemetry::record_error(&parse_span, &source.to_string());
                Err(Error::Parse {
                    endpoint: DOWNLOAD,
                    url: what.to_string(),
                    source,
                })
            }
        }
    }

    /// Size a `GetFile` result (gzip-compressed bytes) without keeping it: from
    /// `Content-Length` when given (the body is never read), else by streaming it through.
    pub async fn measure_file(&self, link: &DownloadLink) -> Result<u64, Error> {
        let (resp, shown, _slot) = self.get_blob(link).await?;
        if let Some(len) = resp.content_length() {
            // Dropping the response closes the connection: the bytes are never read.
            return Ok(len);
        }
        let mut size = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| transport(DOWNLOAD, &shown, e))?;
            size += chunk.len() as u64;
        }
        Ok(size)
    }

    /// GET a SAS link (no bearer token) and return the 2xx response, the redacted URL and the
    /// slot the request holds until its body has been read.
    async fn get_blob(
        &self,
        link: &DownloadLink,
    ) -> Result<(reqwest::Response, String, Slot), Error> {
        let shown = redact_url(&link.0);
        if !self.trusted_download(&link.0) {
            return Err(Error::UntrustedLink(shown));
        }
        let slot = self.http.slot().await;
        let span = http_span(DOWNLOAD, &link.0, &shown, None);
        let started = Instant::now();
        let sent = self
            .http
            .client
            .get(link.0.clone())
            .send()
            .instrument(span.clone())
            .await;
        let resp = self.observe(DOWNLOAD, started, sent, &shown, &span)?;
        let status = resp.status();
        if status.is_redirection() {
            return Err(Error::Status {
                endpoint: DOWNLOAD,
                url: shown,
                status: status.as_u16(),
                code: "redirect".into(),
                message: format!(
                    "not followed: redirects to another host are refused (Location {})",
                    location_host(&resp.headers().get(reqwest::header::LOCATION).cloned())
                ),
            });
        }
        if !status.is_success() {
            let code = resp
                .headers()
                .get("x-ms-error-code")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            return Err(Error::Status {
                endpoint: DOWNLOAD,
                url: shown,
                status: status.as_u16(),
                message: String::new(),
                code,
            });
        }
        Ok((resp, shown, slot))
    }

    /// Whether a result link may be fetched: https to the clouds' blob storage, or the API's
    /// own origin when that is loopback (the simulator serves blobs there).
    fn trusted_download(&self, url: &Url) -> bool {
        if self.api_is_loopback && url.origin().ascii_serialization() == self.api_origin {
            return true;
        }
        url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && matches!(url.host(), Some(url::Host::Domain(_)))
            && url.host_str().is_some_and(|h| {
                let h = h.to_ascii_lowercase();
                BLOB_HOST_SUFFIXES
                    .iter()
                    .any(|s| h.ends_with(s) && h.len() > s.len())
            })
    }

    fn api_url(&self, path: &str) -> Url {
        let mut url = self.api.clone();
        let joined = format!("{}{}", self.api.path(), path);
        url.set_path(&joined);
        url
    }

    /// Record the request metrics for one HTTP exchange and turn transport errors into ours.
    fn observe(
        &self,
        ep: &'static str,
        started: Instant,
        sent: reqwest::Result<reqwest::Response>,
        shown: &str,
        span: &tracing::Span,
    ) -> Result<reqwest::Response, Error> {
        let sent = sent.map_err(|e| transport(ep, shown, e));
        let code = match &sent {
            Ok(r) => {
                let status = r.status();
                span.record("http.response.status_code", status.as_u16());
                if status.is_client_error() || status.is_server_error() {
                    crate::telemetry::record_error(span, &format!("HTTP {}", status.as_u16()));
                }
                status.as_u16().to_string()
            }
            Err(e) => {
                // Our error, built without the URL's query: no signature reaches the span.
                crate::telemetry::record_error(span, &e.to_string());
                "error".to_string()
            }
        };
        let exemplar = || {
            crate::telemetry::span_ids(span)
                .map(|(trace_id, _)| crate::metrics::TraceLabel { trace_id })
        };
        self.metrics
            .api_requests
            .get_or_create(&RequestLabels {
                tenant: self.tenant.clone(),
                endpoint: ep.into(),
                code,
            })
            .inc_by(1, exemplar(), None);
        self.metrics
            .api_duration
            .get_or_create(&endpoint(&self.tenant, ep))
            .observe(started.elapsed().as_secs_f64(), exemplar(), None);
        sent
    }

    fn with_quota<R>(&self, f: impl FnOnce(&mut Quota) -> R) -> R {
        f(&mut self.quota.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A slot among the requests in flight, then room in the quota, in that order: the quota
    /// records the instant a call is sent, which must not be earlier than the real one, so the
    /// wait for a slot comes first. The slot is given back while the quota makes the call wait.
    async fn slot_and_quota(&self, ep: Endpoint, wait: QuotaWait) -> Result<Slot, Error> {
        loop {
            let slot = self.http.slot().await;
            let now = Instant::now();
            let decision = self.with_quota(|q| q.try_acquire(ep, now));
            match (decision, wait) {
                (Ok(()), _) => return Ok(slot),
                (Err(w), QuotaWait::Until(deadline)) if now + w <= deadline => {
                    drop(slot);
                    tokio::time::sleep(w).await;
                }
                (Err(w), _) => {
                    return Err(Error::Quota {
                        endpoint: ep.as_str(),
                        wait: w,
                    });
                }
            }
        }
    }

    /// A quota'd, authenticated GET that returns the body of a 2xx answer.
    async fn api_get(
        &self,
        ep: Endpoint,
        url: &Url,
        wait: QuotaWait,
        action: Option<(&str, Option<u32>)>,
    ) -> Result<Bytes, Error> {
        let shown = redact_url(url);
        let mut renewed = false;
        loop {
            // The token first: a token request takes no slot, and no slot waits for one.
            let token = self.auth.token().await?;
            let slot = self.slot_and_quota(ep, wait).await?;
            let span = http_span(ep.as_str(), url, &shown, action);
            let started = Instant::now();
            let sent = self
                .http
                .client
                .get(url.clone())
                .bearer_auth(&token)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .instrument(span.clone())
                .await;
            let resp = self.observe(ep.as_str(), started, sent, &shown, &span)?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                // The token may have been revoked or expired early: renew once.
                self.auth.invalidate(&token).await;
                renewed = true;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                return Err(self.throttled(ep, retry_after));
            }
            self.with_quota(|q| q.succeeded(ep, Instant::now()));
            let location = resp.headers().get(reqwest::header::LOCATION).cloned();
            let body = read_capped(resp, MAX_API_BODY).await;
            drop(slot);
            let body = body.map_err(|e| match e {
                ReadError::TooLarge => Error::TooLarge {
                    endpoint: ep.as_str(),
                    url: shown.clone(),
                    limit: MAX_API_BODY,
                },
                ReadError::Io(message) => Error::Transport {
                    endpoint: ep.as_str(),
                    url: shown.clone(),
                    message,
                    timeout: false,
                },
            })?;
            if status.is_redirection() {
                return Err(Error::Status {
                    endpoint: ep.as_str(),
                    url: shown,
                    status: status.as_u16(),
                    code: "redirect".into(),
                    message: format!(
                        "not followed: redirects to another host are refused (Location {})",
                        location_host(&location)
                    ),
                });
            }
            if !status.is_success() {
                let (code, message) = model::parse_api_error(&body)
                    .map(|e| (e.code, e.message))
                    .unwrap_or_else(|| (String::new(), String::new()));
                return Err(Error::Status {
                    endpoint: ep.as_str(),
                    url: shown,
                    status: status.as_u16(),
                    code,
                    message,
                });
            }
            return Ok(body);
        }
    }

    fn throttled(&self, ep: Endpoint, retry_after: Option<Duration>) -> Error {
        // The quota decides the wait (Retry-After, or a backoff without one) and lowers
        // the limit in force: a 429 means someone else spends the same quota.
        let header_given = retry_after.is_some();
        let retry_after = self.with_quota(|q| q.throttled(ep, Instant::now(), retry_after));
        self.metrics
            .api_throttled
            .get_or_create(&endpoint(&self.tenant, ep.as_str()))
            .inc();
        self.metrics
            .retry_after
            .get_or_create(&endpoint(&self.tenant, ep.as_str()))
            .set(retry_after.as_secs_f64());
        tracing::warn!(tenant = %self.tenant, endpoint = ep.as_str(), wait_s = retry_after.as_secs_f64(), retry_after_header = header_given, "throttled by the MDE API");
        Error::Throttled {
            endpoint: ep.as_str(),
            retry_after,
        }
    }
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

/// Whether a URL's host is loopback (`localhost`, 127.0.0.0/8, `::1`).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The host of a `Location` header, for messages (never its query: it may hold a signature).
fn location_host(location: &Option<reqwest::header::HeaderValue>) -> String {
    location
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Url::parse(v).ok())
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "not an absolute URL".into())
}

/// The redirect policy of every client: follow only to the same origin (scheme, host and
/// port), at most 5 times. A redirect elsewhere is answered to the caller as the 3xx it is,
/// which refuses it: an API answer from a foreign host is never trusted, and a SAS link's
/// signature or a bearer token never travels to another host.
pub fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .last()
            .is_some_and(|prev| prev.origin() == attempt.url().origin());
        if same_origin && attempt.previous().len() <= 5 {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// A client span with the OpenTelemetry HTTP semantic conventions. `url.full` never holds
/// a signature or token.
fn http_span(
    ep: &'static str,
    url: &Url,
    shown: &str,
    action: Option<(&str, Option<u32>)>,
) -> tracing::Span {
    let span = tracing::info_span!(
        "http",
        otel.name = %format!("GET {ep}"),
        otel.kind = "client",
        http.request.method = "GET",
        url.full = %shown,
        server.address = url.host_str().unwrap_or_default(),
        server.port = url.port_or_known_default().unwrap_or_default(),
        http.response.status_code = Empty,
        mde.endpoint = ep,
        mde.action_id = Empty,
        mde.command_index = Empty,
        trace_id = Empty,
        span_id = Empty,
    );
    if let Some((id, index)) = action {
        span.record("mde.action_id", id);
        if let Some(i) = index {
            span.record("mde.command_index", i);
        }
    }
    crate::telemetry::record_ids(&span);
    span
}

fn transport(endpoint: &'static str, shown: &str, e: reqwest::Error) -> Error {
    Error::Transport {
        endpoint,
        url: shown.to_string(),
        timeout: e.is_timeout(),
        message: error_chain(&e.without_url()),
    }
}

/// An error and its sources on one line ("error sending request: connection refused").
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

/// `Retry-After` as seconds or an HTTP date; absurd values are ignored.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    (d <= MAX_RETRY_AFTER).then_some(d)
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("body larger than the limit")]
    TooLarge,
    #[error("{0}")]
    Io(String),
}

/// Read a body, stopping as soon as it passes `max` bytes: memory stays bounded.
pub(crate) async fn read_capped(resp: reqwest::Response, max: u64) -> Result<Bytes, ReadError> {
    if resp.content_length().is_some_and(|l| l > max) {
        return Err(ReadError::TooLarge);
    }
    // Room for the announced length (at most the cap) at once: growing by doubling would
    // hold up to twice the body while copying.
    let announced = resp.content_length().unwrap_or(0).min(max);
    let mut buf = BytesMut::with_capacity(usize::try_from(announced).unwrap_or(0));
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ReadError::Io(error_chain(&e.without_url())))?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(ReadError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("999999", now), None);
    }

    fn test_tenant(name: &str, quota: crate::config::QuotaConfig) -> Tenant {
        let api = Url::parse("http://127.0.0.1:9").unwrap();
        Tenant {
            name: name.into(),
            tenant_id: "tid".into(),
            client_id: "cid".into(),
            auth: crate::config::Auth::ClientSecret(crate::config::Secret::new("s")),
            api_url: api.clone(),
            login_url: api,
            audience: "a".into(),
            selectors: Default::default(),
            quota,
            machine_context: Default::default(),
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
            let quota = Arc::new(Mutex::new(Quota::new(&t.quota)));
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

    /// See: #13. Result links only from blob storage over https, or from a loopback API's own
    /// origin.
    #[tokio::test]
    async fn downloads_only_from_blob_storage() {
        let metrics = Arc::new(Metrics::new());
        let client = |api: &str| {
            let mut t = test_tenant("t", Default::default());
            t.api_url = Url::parse(api).unwrap();
            t.login_url = t.api_url.clone();
            let quota = Arc::new(Mutex::new(Quota::new(&t.quota)));
            let http = Http::new(reqwest::Client::new(), 1, &metrics);
            Client::new(&t, http, quota, metrics.clone()).unwrap()
        };
        let real = client("https://api.securitycenter.microsoft.com");
        let sim = client("http://127.0.0.1:9718");
        let ok = |c: &Client, u: &str| c.trusted_download(&Url::parse(u).unwrap());
        assert!(ok(&real, "https://acct.blob.core.windows.net/c/b?sig=x"));
        assert!(ok(&real, "https://ACCT.BLOB.CORE.USGOVCLOUDAPI.NET/c/b"));
        assert!(ok(&real, "https://a.blob.core.chinacloudapi.cn:444/c/b"));
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
