//! Result downloads and their trust policy: a result link is a credential (a SAS signature),
//! so it is fetched only from the clouds' blob storage over https (or from a loopback API's
//! own origin, the simulator), without a bearer token, with the body capped as it streams in.
//!
//! Owns reading a transcript or sizing a GetFile result from its link. Does not own asking
//! for the link (`mod`) nor parsing the transcript (`model`).

use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;
use tracing::field::Empty;
use url::Url;

use super::http::{ReadError, location_host, read_capped};
use super::model::{self, DownloadLink, Transcript, redact_url};
use super::send::{body_failed, transport};
use super::span::http_span;
use super::{Client, DOWNLOAD, DOWNLOAD_URL_TEMPLATE, Error, Slot};

impl Client {
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
        let (resp, shown, slot, span) = self.get_blob(link).await?;
        let body = read_capped(resp, max_bytes).await;
        drop(slot);
        let body = body.map_err(|e| {
            let e = match e {
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
            };
            body_failed(&span, &e);
            e
        })?;
        self.metrics
            .api
            .record_transcript_bytes(&self.tenant, body.len());
        // `exit_code` is the older name, `process.exit.code` the OpenTelemetry convention's:
        // both, for one release (docs/operations.md#semantic-conventions).
        let parse_span = tracing::info_span!(
            "parse",
            bytes = body.len(),
            exit_code = Empty,
            process.exit.code = Empty,
            errors_present = Empty,
        );
        match parse_span.in_scope(|| model::parse_transcript(&body)) {
            Ok(t) => {
                parse_span.record("exit_code", t.exit_code);
                parse_span.record("process.exit.code", t.exit_code);
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
        let (resp, shown, _slot, span) = self.get_blob(link).await?;
        if let Some(len) = resp.content_length() {
            // Dropping the response closes the connection: the bytes are never read.
            return Ok(len);
        }
        let mut size = 0u64;
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                let e = transport(DOWNLOAD, &shown, e);
                body_failed(&span, &e);
                e
            })?;
            size += chunk.len() as u64;
        }
        Ok(size)
    }

    /// GET a SAS link (no bearer token) and return the 2xx response, the redacted URL, the
    /// slot the request holds until its body has been read, and the exchange's span (a body
    /// that fails to arrive fails the exchange).
    async fn get_blob(
        &self,
        link: &DownloadLink,
    ) -> Result<(reqwest::Response, String, Slot, tracing::Span), Error> {
        let shown = redact_url(&link.0);
        if !self.trusted_download(&link.0) {
            return Err(Error::UntrustedLink(shown));
        }
        let slot = self.http.slot().await;
        let span = http_span(
            "GET",
            DOWNLOAD,
            &link.0,
            &shown,
            DOWNLOAD_URL_TEMPLATE,
            None,
        );
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
        Ok((resp, shown, slot, span))
    }

    /// Whether a result link may be fetched: https to the clouds' blob storage, or the API's
    /// own origin when that is loopback (the simulator serves blobs there).
    pub(super) fn trusted_download(&self, url: &Url) -> bool {
        if self.api_is_loopback && url.origin().ascii_serialization() == self.api_origin {
            return true;
        }
        url.scheme() == "https"
            && url.username().is_empty()
            && url.password().is_none()
            && matches!(url.host(), Some(url::Host::Domain(_)))
            && url.host_str().is_some_and(|h| {
                let h = h.to_ascii_lowercase();
                self.trusted_hosts
                    .iter()
                    .any(|s| h.ends_with(s.as_str()) && h.len() > s.len())
            })
    }
}
