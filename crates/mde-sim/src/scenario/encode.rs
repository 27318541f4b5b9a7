//! Encodings as the services write them: ISO 8601 with seven fractional digits, GUIDs, random
//! hex, gzip, and a gzip bomb built without compressing all of it.
//!
//! Owns those byte and text shapes. Does not own what is encoded (`generate`, `view`).

use std::io::Write as _;

use chrono::{DateTime, Utc};
use rand::Rng;

/// ISO 8601 with seven fractional digits and `Z`, as the API writes it. Written from the
/// numbers rather than through a `strftime` pattern: a list page writes three per action,
/// and the fleet benchmark counts the simulator's own time too (#33).
pub fn iso(t: DateTime<Utc>) -> String {
    use chrono::{Datelike as _, Timelike as _};
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.timestamp_subsec_nanos() / 100
    )
}

pub fn guid(rng: &mut impl Rng) -> String {
    let b: [u8; 16] = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]])
    )
}

pub(super) fn hex(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// A gzip stream of `mib` MiB of zeros, a few KiB per MiB on the wire, built without
/// compressing all of it: a sync-flushed deflate block of 1 MiB of zeros whose back-references
/// stay inside the (all-zero) window can be repeated as often as wanted.
pub fn gzip_bomb(mib: usize) -> Vec<u8> {
    use flate2::{Compress, Compression, Crc, FlushCompress};
    const MIB: usize = 1 << 20;
    let zeros = vec![0u8; MIB];
    let mut c = Compress::new(Compression::best(), false);
    let mut block = |input: &[u8], flush: FlushCompress| -> Vec<u8> {
        let mut out = Vec::with_capacity(64 * 1024);
        let before = c.total_in();
        let mut fed = 0;
        loop {
            out.reserve(64 * 1024);
            let _ = c.compress_vec(&input[fed..], &mut out, flush);
            fed = usize::try_from(c.total_in() - before).unwrap_or(input.len());
            // Done once all input is in and the flush left spare room in the buffer.
            if fed >= input.len() && out.len() < out.capacity() {
                return out;
            }
        }
    };
    let first = block(&zeros, FlushCompress::Sync);
    let repeat = block(&zeros, FlushCompress::Sync);
    let end = block(&[], FlushCompress::Finish);
    let mut crc_mib = Crc::new();
    crc_mib.update(&zeros);
    let mut crc = Crc::new();
    let mut body = Vec::with_capacity(first.len() + repeat.len() * mib + end.len() + 18);
    body.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 2, 255]);
    if mib > 0 {
        body.extend_from_slice(&first);
        crc.combine(&crc_mib);
    }
    for _ in 1..mib {
        body.extend_from_slice(&repeat);
        crc.combine(&crc_mib);
    }
    body.extend_from_slice(&end);
    body.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32.
    body.extend_from_slice(&(crc.amount().to_le_bytes()));
    body
}
