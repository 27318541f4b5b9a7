//! Whether another process holds the state file, and which one: the exporter holds its file
//! through redb, which on Linux takes an exclusive `flock` on it (beside its own byte-range
//! locks) for as long as it is open. `--state.reset` takes that lock itself before it moves
//! the file, and an open that fails asks here whether the reason is a live holder.
//!
//! Owns the lock probe and finding the holder's pid (`/proc/locks`, Linux; elsewhere unknown).
//! Does not own the file format nor the messages (`state::redb_file`).

use std::fs::{File, TryLockError};
use std::path::Path;

/// Another process holds the file: its pid when it could be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: Option<u32>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "(pid {pid})"),
            None => write!(f, "(pid unknown)"),
        }
    }
}

/// The file opened and locked exclusively, or who holds it. `Ok(None)`: there is no file.
/// The lock lasts as long as the returned `File`.
pub fn lock(path: &Path) -> std::io::Result<Result<Option<File>, Holder>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Ok(None)),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => Ok(Ok(Some(file))),
        Err(TryLockError::WouldBlock) => Ok(Err(Holder {
            pid: holder_pid(path),
        })),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Who holds the file, if another process does (a probe: the lock is released at once).
pub fn held_by(path: &Path) -> Option<Holder> {
    match lock(path) {
        Ok(Err(holder)) => Some(holder),
        _ => None,
    }
}

/// The pid of the process holding a `flock` on `path`, from `/proc/locks`.
#[cfg(target_os = "linux")]
fn holder_pid(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    find_holder(&locks, meta.dev(), meta.ino(), std::process::id())
}

#[cfg(not(target_os = "linux"))]
fn holder_pid(_path: &Path) -> Option<u32> {
    None
}

/// The first pid (not `me`) holding a lock on the inode `(dev, ino)` in the text of
/// `/proc/locks`: lines such as `1: FLOCK  ADVISORY  WRITE 4242 fd:01:131 0 EOF`, the device as
/// hex `major:minor`; waiting requests (`1: -> FLOCK ...`) and OFD locks (pid -1) are skipped.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn find_holder(locks: &str, dev: u64, ino: u64, me: u32) -> Option<u32> {
    // glibc's encoding of a dev_t (gnu_dev_major / gnu_dev_minor).
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let inode = format!("{major:02x}:{minor:02x}:{ino}");
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") || fields.get(5) != Some(&inode.as_str()) {
            return None;
        }
        let pid = fields.get(4)?.parse::<u32>().ok()?;
        (pid != me).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_holder_is_found_by_device_and_inode() {
        let locks = "1: OFDLCK ADVISORY  WRITE -1 fd:01:131 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 77 fd:01:131 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 55 fd:01:999 0 EOF\n\
                     4: FLOCK  ADVISORY  WRITE 12 fd:01:131 0 EOF\n\
                     5: FLOCK  ADVISORY  WRITE 4242 fd:01:131 0 EOF\n";
        let dev = (0xfd << 8) | 0x01;
        assert_eq!(
            find_holder(locks, dev, 131, 12),
            Some(4242),
            "not me, not a waiter"
        );
        assert_eq!(find_holder(locks, dev, 131, 1), Some(12));
        assert_eq!(find_holder(locks, dev, 132, 1), None);
        assert_eq!(find_holder(locks, 0x0801, 131, 1), None, "another device");
    }
}
