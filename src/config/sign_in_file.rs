//! The size cap of sign-in files: certificate, key and `.pfx` files, the PKCS#12 password
//! file, `client_secret_file` and the federated token file.
//!
//! Owns the limit (1 MiB) and the bounded read that refuses a larger file before reading it,
//! with an error that gives the size and the limit ([`read_at_most`], which tenant files use
//! with their own limit). Does not own naming the file in the message (each caller does, as
//! for any other read error), nor what the files hold (`credential`, `config::auth`,
//! `crate::api::auth`). Imports nothing from the crate.

use std::path::Path;

/// The largest sign-in file read: a certificate chain, a key, a `.pfx`, a password, a client
/// secret or a federated token (a JWT) is a few KiB. A larger file is a mistake (or an
/// attack on memory: a 300 MB token file was read on every token and sent whole) and is
/// refused before it is read.
pub const MAX_BYTES: u64 = 1 << 20;

/// Read a whole sign-in file of at most [`MAX_BYTES`]. A larger one is an
/// error of kind `FileTooLarge` whose text gives the size and the limit; the caller names
/// the file, as it does for any other read error. The size is checked before reading and
/// the read is bounded too, for a file that grows meanwhile or has no size (a FIFO).
pub fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    read_at_most(path, MAX_BYTES, too_large)
}

/// Read a whole file of at most `max` bytes. A larger one is the error `too_large` makes of
/// its size (`None`: more than `max`, found while reading a file that grew meanwhile or has
/// no size). The size is checked before reading and the read is bounded too.
pub fn read_at_most(
    path: &Path,
    max: u64,
    too_large: impl Fn(Option<u64>) -> std::io::Error,
) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len > max {
        return Err(too_large(Some(len)));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_large(None));
    }
    Ok(bytes)
}

/// [`read`]'s size check, for a file that is only looked at (`len` from its
/// metadata).
pub fn check_size(len: u64) -> std::io::Result<()> {
    if len > MAX_BYTES {
        return Err(too_large(Some(len)));
    }
    Ok(())
}

fn too_large(len: Option<u64>) -> std::io::Error {
    let size = match len {
        Some(len) => format!("{len} bytes"),
        None => format!("more than {MAX_BYTES} bytes"),
    };
    std::io::Error::new(
        std::io::ErrorKind::FileTooLarge,
        format!("too large for a sign-in file: {size}, the limit is 1 MiB ({MAX_BYTES} bytes)"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // See: #24 (item 3). A 300 MB token file and a 200 MB PEM were read whole.
    #[test]
    fn issue_24_files_over_1_mib_are_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, len: usize| {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![b'#'; len]).unwrap();
            path
        };
        let cases = [
            (
                2 << 20,
                "too large for a sign-in file: 2097152 bytes, the limit is 1 MiB (1048576 bytes)",
            ),
            (
                (1 << 20) + 1,
                "too large for a sign-in file: 1048577 bytes, the limit is 1 MiB (1048576 bytes)",
            ),
        ];
        for (len, want) in cases {
            let err = read(&file("big", len)).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::FileTooLarge);
            assert_eq!(err.to_string(), want);
        }
        // Exactly at the limit is read.
        assert_eq!(read(&file("limit", 1 << 20)).unwrap().len(), 1 << 20);
        assert!(check_size(1 << 20).is_ok());
    }
}
