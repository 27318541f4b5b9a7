//! An early warning that an API endpoint is going away (#20): which answers are notices.
//!
//! A notice is a `Deprecation` header (RFC 9745) or a `Sunset` header (RFC 8594) on any API
//! answer, or a 404/410 on a collection endpoint (`/api/machineactions`, `/api/machines`,
//! which exist whatever the tenant holds; a 404 on one action or one result link only means
//! that item is gone). Microsoft documents neither header for this API: they are what
//! well-behaved HTTP APIs send before an endpoint is retired, and cost nothing to watch.
//!
//! Owns deciding which answers are notices and what of them is shown. Does not own counting
//! and showing them (`metrics::api::record_deprecation_notice`, the status page) nor the
//! exchange (`send`).

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::quota::Endpoint;

/// `reason` of `mde_api_endpoint_deprecation_notices_total`: a `Deprecation` header.
pub const DEPRECATION_HEADER: &str = "deprecation_header";
/// `reason`: a `Sunset` header.
pub const SUNSET_HEADER: &str = "sunset_header";
/// `reason`: 404 or 410 on a collection endpoint.
pub const GONE: &str = "gone";

/// Longest header value kept for the log line and the status page.
const MAX_DETAIL: usize = 200;

/// One notice of an answer: its `reason` and what the answer said (a header value, or the
/// status), cut to [`MAX_DETAIL`] characters of printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub reason: &'static str,
    pub detail: String,
}

/// Whether a 404 on `ep` means the endpoint itself is gone.
fn is_collection(ep: Endpoint) -> bool {
    matches!(ep, Endpoint::ListMachineActions | Endpoint::ListMachines)
}

fn detail(raw: &[u8]) -> String {
    raw.iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .take(MAX_DETAIL)
        .collect()
}

/// The notices in one answer of `ep`: none for almost every answer.
pub fn notices(ep: Endpoint, status: StatusCode, headers: &HeaderMap) -> Vec<Notice> {
    let mut out = Vec::new();
    for (name, reason) in [
        ("deprecation", DEPRECATION_HEADER),
        ("sunset", SUNSET_HEADER),
    ] {
        if let Some(v) = headers.get(name) {
            out.push(Notice {
                reason,
                detail: format!("{name}: {}", detail(v.as_bytes())),
            });
        }
    }
    if status == StatusCode::GONE || (status == StatusCode::NOT_FOUND && is_collection(ep)) {
        out.push(Notice {
            reason: GONE,
            detail: format!("HTTP {}", status.as_u16()),
        });
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_bytes(v).expect("header value"));
        }
        h
    }

    #[test]
    fn an_ordinary_answer_is_no_notice() {
        for status in [
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::BAD_REQUEST,
        ] {
            assert_eq!(
                notices(Endpoint::ListMachineActions, status, &HeaderMap::new()),
                vec![]
            );
        }
    }

    #[test]
    fn deprecation_and_sunset_headers_are_notices_on_any_endpoint() {
        let h = headers(&[
            ("deprecation", b"@1767225600"),
            ("sunset", b"Wed, 01 Jul 2026 00:00:00 GMT"),
        ]);
        assert_eq!(
            notices(Endpoint::GetResultDownloadLink, StatusCode::OK, &h),
            vec![
                Notice {
                    reason: DEPRECATION_HEADER,
                    detail: "deprecation: @1767225600".into()
                },
                Notice {
                    reason: SUNSET_HEADER,
                    detail: "sunset: Wed, 01 Jul 2026 00:00:00 GMT".into()
                },
            ]
        );
    }

    #[test]
    fn not_found_is_a_notice_on_collections_only_and_gone_everywhere() {
        let none = HeaderMap::new();
        let gone = |ep, s| {
            notices(ep, s, &none)
                .iter()
                .map(|n| n.reason)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            gone(Endpoint::ListMachineActions, StatusCode::NOT_FOUND),
            vec![GONE]
        );
        assert_eq!(
            gone(Endpoint::ListMachines, StatusCode::NOT_FOUND),
            vec![GONE]
        );
        assert_eq!(
            gone(Endpoint::GetMachineAction, StatusCode::NOT_FOUND),
            Vec::<&str>::new()
        );
        assert_eq!(
            gone(Endpoint::GetResultDownloadLink, StatusCode::NOT_FOUND),
            Vec::<&str>::new()
        );
        assert_eq!(
            gone(Endpoint::GetMachineAction, StatusCode::GONE),
            vec![GONE]
        );
    }

    #[test]
    fn a_hostile_header_value_is_cut_and_made_printable() {
        let long = [b'a'; 5000];
        let h = headers(&[("sunset", &long), ("deprecation", b"x\ty\xffz")]);
        let n = notices(Endpoint::ListMachines, StatusCode::OK, &h);
        assert_eq!(n[0].detail, "deprecation: x?y?z");
        assert_eq!(n[1].detail.len(), "sunset: ".len() + MAX_DETAIL);
    }
}
