//! The simulator's server-side quota: per (client, endpoint) a per-minute and a per-hour
//! *sliding* window (a log of admitted call instants, not fixed buckets), as the MDE gateway
//! is described to behave. Rejected calls do not consume quota.
//!
//! Pure core: takes `tokio::time::Instant`s, never sleeps, never sees HTTP. Does not own the
//! 429 body or the `Retry-After` header (see `respond`, `gate`), nor which endpoints are quota'd (`endpoints`).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// At most `limit` admitted calls within any span of `length`.
#[derive(Debug)]
pub struct Window {
    limit: u32,
    length: Duration,
    /// Instants of admitted calls still inside the window, oldest first.
    admitted: VecDeque<Instant>,
}

impl Window {
    pub fn new(limit: u32, length: Duration) -> Self {
        Window {
            limit,
            length,
            admitted: VecDeque::new(),
        }
    }

    fn prune(&mut self, now: Instant) {
        while self
            .admitted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.length)
        {
            self.admitted.pop_front();
        }
    }

    /// Zero when one more call fits now, else how long until the oldest blocking call leaves.
    fn wait(&mut self, now: Instant) -> Duration {
        self.prune(now);
        let limit = self.limit as usize;
        if self.admitted.len() < limit {
            return Duration::ZERO;
        }
        // Once the call at `len - limit` leaves, `limit - 1` remain and one more fits.
        match self.admitted.get(self.admitted.len() - limit) {
            Some(t) => (*t + self.length).saturating_duration_since(now),
            // limit == 0 with an empty log: nothing ever fits.
            None => self.length,
        }
    }

    /// Calls currently counted in the window.
    #[cfg(test)]
    pub fn used(&mut self, now: Instant) -> usize {
        self.prune(now);
        self.admitted.len()
    }
}

/// Why a call was refused: the binding window and how long until a slot frees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub wait: Duration,
    pub limit: u32,
    pub window: Duration,
}

impl Rejection {
    /// The `Retry-After` value: whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        secs.max(1)
    }
}

/// The two windows of one (client, endpoint) pair.
#[derive(Debug)]
pub struct Throttle {
    minute: Window,
    hour: Window,
}

impl Throttle {
    pub fn new(per_minute: u32, minute: Duration, per_hour: u32, hour: Duration) -> Self {
        Throttle {
            minute: Window::new(per_minute, minute),
            hour: Window::new(per_hour, hour),
        }
    }

    /// Admit (and count) one call at `now`, or refuse it without counting it.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Rejection> {
        let m = self.minute.wait(now);
        let h = self.hour.wait(now);
        if m.is_zero() && h.is_zero() {
            self.minute.admitted.push_back(now);
            self.hour.admitted.push_back(now);
            return Ok(());
        }
        // The call fits only when both windows have room: the longer wait binds.
        let w = if h > m { &self.hour } else { &self.minute };
        Err(Rejection {
            wait: m.max(h),
            limit: w.limit,
            window: w.length,
        })
    }

    /// (calls in the minute window, calls in the hour window) at `now`.
    #[cfg(test)]
    pub fn used(&mut self, now: Instant) -> (usize, usize) {
        (self.minute.used(now), self.hour.used(now))
    }
}

/// A window length the way .NET prints a `TimeSpan` in the 429 message: `00:01:00`,
/// `01:00:00`, with seven fractional digits only when there is a fraction.
pub fn timespan(d: Duration) -> String {
    let s = d.as_secs();
    let base = format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
    match d.subsec_nanos() / 100 {
        0 => base,
        ticks => format!("{base}.{ticks:07}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn the_minute_window_slides_rather_than_resets() {
        let mut t = Throttle::new(3, 60 * SEC, 1000, 3600 * SEC);
        let t0 = Instant::now();
        assert!(t.try_acquire(Instant::now()).is_ok());
        tokio::time::advance(20 * SEC).await;
        assert!(t.try_acquire(Instant::now()).is_ok());
        assert!(t.try_acquire(Instant::now()).is_ok());
        tokio::time::advance(10 * SEC).await;
        // Full: the first call (t0) frees its slot at t0 + 60 s, 30 s from now.
        let r = t.try_acquire(Instant::now()).unwrap_err();
        assert_eq!(r.wait, 30 * SEC);
        assert_eq!((r.limit, r.window), (3, 60 * SEC));
        assert_eq!(r.retry_after_secs(), 30);
        // A rejected call is not counted.
        assert_eq!(t.used(Instant::now()), (3, 3));
        tokio::time::advance(30 * SEC).await;
        assert_eq!(Instant::now() - t0, 60 * SEC);
        assert!(t.try_acquire(Instant::now()).is_ok());
        // A fixed bucket would reset at 60 s; the sliding window still holds the two calls
        // made at 20 s, plus the new one.
        let r = t.try_acquire(Instant::now()).unwrap_err();
        assert_eq!(r.wait, 20 * SEC);
    }

    #[tokio::test(start_paused = true)]
    async fn the_hour_window_binds_when_it_is_the_longer_wait() {
        let mut t = Throttle::new(100, 60 * SEC, 5, 3600 * SEC);
        for _ in 0..5 {
            assert!(t.try_acquire(Instant::now()).is_ok());
            tokio::time::advance(SEC).await;
        }
        let r = t.try_acquire(Instant::now()).unwrap_err();
        assert_eq!((r.limit, r.window), (5, 3600 * SEC));
        assert_eq!(r.wait, 3595 * SEC);
        tokio::time::advance(3595 * SEC).await;
        assert!(t.try_acquire(Instant::now()).is_ok());
        assert!(t.try_acquire(Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_rounds_up_and_is_at_least_one_second() {
        let mut t = Throttle::new(1, Duration::from_millis(1500), 100, 3600 * SEC);
        assert!(t.try_acquire(Instant::now()).is_ok());
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            t.try_acquire(Instant::now())
                .unwrap_err()
                .retry_after_secs(),
            2
        );
        tokio::time::advance(Duration::from_millis(1300)).await;
        let r = t.try_acquire(Instant::now()).unwrap_err();
        assert_eq!(r.wait, Duration::from_millis(100));
        assert_eq!(r.retry_after_secs(), 1);
    }

    #[test]
    fn a_zero_limit_never_admits() {
        let mut t = Throttle::new(0, 60 * SEC, 10, 3600 * SEC);
        assert_eq!(t.try_acquire(Instant::now()).unwrap_err().wait, 60 * SEC);
    }

    #[test]
    fn timespans_print_like_dotnet() {
        assert_eq!(timespan(60 * SEC), "00:01:00");
        assert_eq!(timespan(3600 * SEC), "01:00:00");
        assert_eq!(timespan(Duration::from_millis(1500)), "00:00:01.5000000");
    }
}
