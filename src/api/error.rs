//! The API client's one error type, its kinds (the `reason` label of results given up on)
//! and which errors are worth a retry.
//!
//! Owns the messages (each names the endpoint and the URL without its query or signature).
//! Does not own where errors arise (`send`, `download`, `auth`).

use std::time::Duration;

use super::model::ParseError;
use super::{DOWNLOAD, MAX_PAGES, auth};

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
        "{endpoint}: page {link} holds the same items as a page already read in this listing: the API ignores the paging (`$skip`) and the listing would never end"
    )]
    RepeatedPage {
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
            | Error::RepeatedPage { .. }
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
            | Error::RepeatedPage { .. }
            | Error::TooManyPages { .. }
            | Error::UntrustedLink(_) => false,
        }
    }
}
