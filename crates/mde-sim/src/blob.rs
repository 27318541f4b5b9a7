//! The blob container behind the download links: the SAS check (signature, `sp`, `se` expiry
//! with the storage service's wording), the transcript or file bytes, and the injected blob
//! faults (not found, garbage, truncated, huge, gzip bomb, a transcript of given output).
//!
//! Owns those answers. Does not own the link (`actions`), the call counting and injected
//! failures (`gate`) or the bytes themselves (`scenario`).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::endpoints::DOWNLOAD;
use super::gate::intake;
use super::respond::{AUTH_FAILED, blob_error, blob_not_found, http_date, octets};
use super::scenario::{self, Blob};
use super::{BlobFault, Simulator};

/// The bomb is built once: 1 GiB of zeros in about 1 MiB.
fn gzip_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| scenario::gzip_bomb(1024))
}

/// `n` bytes (at least the JSON frame) of a syntactically valid transcript, streamed.
fn huge_transcript(n: usize) -> Response {
    const UNIT: &[u8] = b"Collected item\\n";
    const CHUNK: usize = 64 * 1024;
    let head = b"{\"script_name\":\"collect-triage.ps1\",\"exit_code\":0,\"script_output\":\"Transcript started, output file is C:\\\\ProgramData\\\\Microsoft\\\\Windows Defender Advanced Threat Protection\\\\Temp\\\\PSScriptOutputs\\\\PSScript_Transcript_0.txt\\n";
    let tail = b"\",\"script_errors\":\"\"}";
    let fill = n.saturating_sub(head.len() + tail.len());
    let units = fill / UNIT.len();
    let chunk = Bytes::from(UNIT.repeat(CHUNK / UNIT.len()));
    let mut parts = vec![Bytes::from_static(head)];
    let per_chunk = CHUNK / UNIT.len();
    parts.extend(std::iter::repeat_n(chunk, units / per_chunk));
    parts.push(Bytes::from(UNIT.repeat(units % per_chunk)));
    // Spaces are fine inside the string; they make the total exactly `n`.
    parts.push(Bytes::from(vec![b' '; fill % UNIT.len()]));
    parts.push(Bytes::from_static(tail));
    let total: usize = parts.iter().map(Bytes::len).sum();
    let stream = futures_util::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

fn blob_fault_response(fault: BlobFault, now: DateTime<Utc>) -> Response {
    match fault {
        BlobFault::NotFound => blob_not_found(now),
        BlobFault::Garbage => octets(Bytes::from_static(b"\xde\xad\xbe\xef\x00\xffnot a result")),
        BlobFault::Truncated => {
            // Promise 4 KiB, send a few bytes, then (once they are surely on the wire) break
            // the connection.
            let stream = futures_util::stream::unfold(0u8, |step| async move {
                match step {
                    0 => Some((Ok(Bytes::from_static(b"{\"script_name\":\"x\"")), 1)),
                    1 => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some((
                            Err(std::io::Error::other("connection reset by simulator")),
                            2,
                        ))
                    }
                    _ => None,
                }
            });
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from_static("4096"));
            resp
        }
        BlobFault::Huge(n) => huge_transcript(n),
        BlobFault::GzipBomb => octets(Bytes::from_static(gzip_bomb())),
        BlobFault::Printed(output) => octets(Bytes::from(
            serde_json::json!({
                "script_name": "printed.ps1",
                "exit_code": 0,
                "script_output": &*output,
                "script_errors": "",
            })
            .to_string(),
        )),
    }
}

pub(crate) async fn blob(
    State(sim): State<Simulator>,
    Path(path): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(r) = intake(&sim, DOWNLOAD).await {
        return r;
    }
    let now = sim.now_wall();
    let q: HashMap<String, String> =
        url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let full = format!("/blob/{path}");
    let se = q.get("se").map(String::as_str).unwrap_or_default();
    let signed = q.get("sig").is_some_and(|s| *s == sim.sign(&full, se))
        && q.get("sp").is_some_and(|s| s == "r");
    let expiry = DateTime::parse_from_rfc3339(se)
        .ok()
        .map(|d| d.with_timezone(&Utc));
    let refusal = match expiry {
        _ if !signed => Some("Signature did not match. String to sign used was r\n\n".to_string()),
        Some(e) if e > now => None,
        // The storage service's wording when `se` is past and no `st` was signed.
        Some(e) => Some(format!(
            "Signed expiry time [{}] must be after signed start time [{}]",
            http_date(e),
            http_date(now)
        )),
        None => Some("se is mandatory. Cannot be empty".to_string()),
    };
    if let Some(detail) = refusal {
        sim.inner.lock().stats.expired_downloads += 1;
        return blob_error(
            StatusCode::FORBIDDEN,
            "AuthenticationFailed",
            AUTH_FAILED,
            Some(detail),
            now,
        );
    }
    // investigation-actions-data/{id}/CustomPlaybookCommandOutput/{index}-{hex}
    let found = match path.split('/').collect::<Vec<_>>()[..] {
        [
            "investigation-actions-data",
            id,
            "CustomPlaybookCommandOutput",
            name,
        ] => sim
            .find(id)
            .filter(|a| a.is_final_at(sim.elapsed()))
            .and_then(|a| {
                a.commands
                    .iter()
                    .find(|c| c.blob_name == name)
                    .and_then(|c| Some((a, c.index, c.blob.as_ref()?)))
            }),
        _ => None,
    };
    let Some((action, index, blob)) = found else {
        return blob_not_found(now);
    };
    let fault = sim.inner.lock().faults.blob.pop_front();
    if let Some(fault) = fault {
        return blob_fault_response(fault, now);
    }
    *sim.inner
        .lock()
        .stats
        .downloads
        .entry((action.id.clone(), index))
        .or_insert(0) += 1;
    let bytes = match blob {
        Blob::Transcript { bytes, .. } => bytes,
        Blob::File { gz } => gz,
    };
    octets(Bytes::copy_from_slice(bytes))
}
