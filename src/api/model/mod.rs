//! The API's nouns as serde types, and pure parsers from bytes.
//!
//! Owns how a machine action, a list page, a download link and a transcript are read, leniently
//! where the API is known to vary (unknown fields and status values are kept, not rejected)
//! and strictly where a value matters. Does no I/O. By noun: `action` (a machine action and
//! its commands), `page` (a list page, item by item), `machine` (a device), `transcript`
//! (a RunScript result); here the errors, download links, URL redaction and API error bodies.
//! Does not own any request or download (the client, `api`).

mod action;
mod machine;
mod page;
mod poison;
mod transcript;

use serde::Deserialize;

pub use action::{
    ActionStatus, Command, CommandSpec, CommandStatus, CommandType, MachineAction, Param,
    parse_action,
};
pub use machine::Machine;
pub(crate) use page::parse_page;
pub use page::{ActionPage, parse_action_page};
pub use transcript::{Transcript, parse_transcript};

/// Why some bytes could not be understood.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("transcript is not text: {0}")]
    Encoding(String),
}

/// The answer of `GetLiveResponseResultDownloadLink`.
#[derive(Debug, Deserialize)]
struct RawLink {
    value: String,
}

/// A short-lived SAS URL. Its `Debug` hides the signature.
#[derive(Clone)]
pub struct DownloadLink(pub url::Url);

impl std::fmt::Debug for DownloadLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DownloadLink({})", redact_url(&self.0))
    }
}

pub fn parse_download_link(bytes: &[u8]) -> Result<DownloadLink, ParseError> {
    let raw: RawLink =
        serde_json::from_slice(bytes).map_err(|e| ParseError::Json(e.to_string()))?;
    let url = url::Url::parse(&raw.value)
        .map_err(|e| ParseError::Json(format!("download link is not a URL: {e}")))?;
    Ok(DownloadLink(url))
}

/// Query parameters whose values are credentials (SAS signature, tokens).
const SECRET_PARAMS: &[&str] = &["sig", "token", "access_token", "client_secret", "code"];

/// A URL safe to show: credential parameters (the SAS `sig`, tokens) are replaced by
/// `REDACTED`; the rest of the query (expiry, filter) stays, since it helps debugging.
pub fn redact_url(url: &url::Url) -> String {
    let mut u = url.clone();
    u.set_fragment(None);
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s));
                (
                    k.into_owned(),
                    if secret {
                        "REDACTED".into()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

/// The `error` object of an API error body.
#[derive(Debug, Deserialize)]
struct RawApiError {
    error: ApiErrorBody,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ApiErrorBody {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

pub fn parse_api_error(bytes: &[u8]) -> Option<ApiErrorBody> {
    serde_json::from_slice::<RawApiError>(bytes)
        .ok()
        .map(|e| e.error)
}

/// A string field the API may send as `null`: read as empty.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// An item of a listing, known by its id (a page served again is known by its ids).
pub trait Listed {
    fn id(&self) -> &str;
}

impl Listed for MachineAction {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Listed for Machine {
    fn id(&self) -> &str {
        &self.id
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn link_debug_hides_the_signature() {
        let l = parse_download_link(
            br#"{"@odata.context":"x","value":"https://a.blob.core.windows.net/c/b?se=2021&sp=r&sig=SECRET%3D"}"#,
        )
        .unwrap();
        let shown = format!("{l:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(
            shown.contains("a.blob.core.windows.net/c/b?se=2021&sp=r&sig=REDACTED"),
            "{shown}"
        );
    }

    #[test]
    fn api_error_body() {
        let e = parse_api_error(br#"{"error":{"code":"429","message":"API calls quota exceeded! maximum allowed 100 per 00:01:00","target":"g"}}"#).unwrap();
        assert_eq!(e.code, "429");
        assert!(parse_api_error(b"<xml/>").is_none());
    }
}
