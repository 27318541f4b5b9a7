//! What to do when `accept` fails: back off, and log at most every so often.
//!
//! Owns that policy. Does not own the accept loop itself (the parent module).

use std::io;
use std::time::Duration;

use tokio::time::Instant;

use super::options::LOG_EVERY;

/// What to do when `accept` fails. Per-connection errors (the client gave up before we
/// accepted) are ignored; anything else (typically EMFILE or ENFILE) is retried after a pause
/// that doubles from 10 ms to 1 s while failures continue, as Go's `net/http` does, so a full
/// file table does not turn into a busy loop, and is logged at most every [`LOG_EVERY`].
#[derive(Default)]
pub(super) struct AcceptBackoff {
    /// The next pause; zero when the last accept succeeded.
    pub(super) delay: Duration,
    /// Failures since the last log line.
    pub(super) unlogged: u64,
    pub(super) last_log: Option<Instant>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);

    pub(super) fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }

    pub(super) async fn failed(&mut self, e: io::Error) {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
        ) {
            return;
        }
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
        {
            tracing::error!(
                error = %e,
                failures = self.unlogged,
                retry_in = ?self.delay,
                "accept failed"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        }
        tokio::time::sleep(self.delay).await;
    }
}
