//! HTTP routes beyond `/metrics` and the status page, one module each; `server` mounts them.
//!
//! Owns: [`probe`] (`GET /probe?target=<tenant>`, one tenant's cached series), [`transcripts`]
//! (`GET /transcripts`, the latest transcript of a machine and script) and the external URL
//! their links start with (`--web.external-url`), and the reading of `Accept` they and
//! `/metrics` share ([`accepted`]). Does not own the router, content
//! negotiation of `/metrics`, TLS or basic auth (`server`, and the `exporter-web` crate around
//! the whole router, so these routes sit behind the same TLS and auth as `/metrics`).

use std::sync::OnceLock;

use axum::http::{HeaderMap, header};

pub mod probe;
pub mod transcripts;

/// The media ranges of `Accept` with their weights (`q`, 1 when not given), lower-cased and
/// without spaces: the one reading of the header for `/metrics` and `/transcripts`.
pub fn accepted(headers: &HeaderMap) -> impl Iterator<Item = (String, f32)> + '_ {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|part| {
            let q = part
                .split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            (part.to_ascii_lowercase().replace(' ', ""), q)
        })
}

/// `--web.external-url`, set once at start by `main` (a process serves one address).
static EXTERNAL_URL: OnceLock<Option<String>> = OnceLock::new();

/// Record `--web.external-url` (without its trailing `/`); the first call wins.
pub fn set_external_url(url: Option<String>) {
    let _ = EXTERNAL_URL.set(url);
}

/// A link to `path_and_query` (starting with `/`): under the external URL when one is set,
/// else relative to this server.
pub fn link(path_and_query: &str) -> String {
    match EXTERNAL_URL.get().and_then(Option::as_deref) {
        Some(base) => format!("{base}{path_and_query}"),
        None => path_and_query.to_string(),
    }
}

/// `s` percent-encoded for a query value.
pub fn query_value(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `s` escaped for HTML text and attribute values.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
