//! Reading an answer's body under a cap, and an error's chain on one line: the two helpers
//! every caller of the API (sign-in, sending, downloads) shares.
//!
//! Owns those two. Does not own what a call does with a body or an error (`send`, `download`,
//! `auth`) nor the error type of the client (`error`). A leaf: it imports nothing from the crate.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

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
