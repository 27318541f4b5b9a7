//! Reading script output off the async workers (#32 item 1): a transcript's output is
//! untrusted, and reading it (the text format, or the JSON object search) ran inline on the
//! collector's worker, which serves many tenants; one hostile transcript stopped every other
//! tenant's polls for 26 s. Now each reading runs on tokio's blocking threads, at most
//! [`Pool::slots`] at once over all tenants and one at a time per tenant,
//! under a time bound that covers the wait for a slot and the reading: past it the reading is
//! abandoned ([`Abandoned`]) and the poll goes on. An abandoned reading cannot be stopped on
//! its thread; it keeps its slots until it ends, so a tenant whose readings run long delays
//! only its own next readings, and the bounds of the readings themselves (the JSON search
//! parses at most 4 MiB, `json`; the text format is one pass over at most
//! `max_transcript_bytes`, `parse`) bound what it costs meanwhile.
//!
//! Owns the slots and the bound. Does not own the readings (`store::extract`), what an
//! abandoned reading counts and logs (`store`, the collector's `results`) nor the bound's
//! value (`config`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::Semaphore;

/// A reading past its time bound, or one that could not run (the blocking pool is shutting
/// down, or the reading panicked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Abandoned;

/// The readings that may run at once, all tenants together, and each tenant's one slot: a
/// reading still running after its bound keeps its tenant's slot, so that tenant's next
/// readings wait (and are abandoned in their turn) while the other tenants' go on.
#[derive(Debug)]
pub struct Pool {
    slots: Arc<Semaphore>,
    /// By tenant name; kept for the process's life (one small entry a tenant ever served, so
    /// that a tenant reloaded under the same name still waits for its abandoned reading).
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Pool {
    /// A pool of `slots` readings at once (at least one).
    pub fn new(slots: usize) -> Pool {
        Pool {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            tenants: Mutex::default(),
        }
    }

    /// The process's pool: as many slots as cores, at least 2 and at most 8 (a reading is CPU
    /// work; more at once would only queue on the cores).
    pub fn shared() -> &'static Pool {
        static POOL: OnceLock<Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Pool::new(cores.clamp(2, 8))
        })
    }

    /// The slots free now.
    pub fn slots(&self) -> usize {
        self.slots.available_permits()
    }

    /// Run `read` on a blocking thread once `tenant`'s slot and one of the pool's are free,
    /// within `bound` from now (the wait included); [`Abandoned`] past it.
    pub async fn run<T: Send + 'static>(
        &self,
        tenant: &str,
        bound: Duration,
        read: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Abandoned> {
        let tenant = self
            .tenants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        let pool = self.slots.clone();
        let reading = async move {
            let own = tenant.acquire_owned().await.map_err(|_| Abandoned)?;
            let slot = pool.acquire_owned().await.map_err(|_| Abandoned)?;
            tokio::task::spawn_blocking(move || {
                // Held until the reading ends, abandoned or not; the pool's slot given back
                // first (a tuple drops in order), so the tenant's next reading finds it free.
                let _slots = (slot, own);
                read()
            })
            .await
            .map_err(|_| Abandoned)
        };
        tokio::time::timeout(bound, reading)
            .await
            .unwrap_or(Err(Abandoned))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    // Real time: a blocking task in flight keeps a paused clock from advancing.

    /// See: #32 item 1. A reading that never ends (a stand-in for a hostile transcript)
    /// holds its tenant's slot past its bound: it is abandoned, the same tenant's next reading
    /// waits behind it and is abandoned too, and another tenant's reading runs meanwhile,
    /// while the first is still running.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_reading_delays_only_its_own_tenant() {
        let pool = Pool::new(2);
        let (hostile, other) = ("hostile", "other");
        let (release, stuck) = mpsc::channel::<()>();
        let ended = Arc::new(AtomicBool::new(false));
        let flag = ended.clone();
        let bound = Duration::from_millis(50);
        let first = pool
            .run(hostile, bound, move || {
                stuck.recv().ok();
                flag.store(true, Ordering::SeqCst);
            })
            .await;
        assert_eq!(first, Err(Abandoned));
        assert_eq!(pool.slots(), 1, "the abandoned reading keeps its slot");
        assert_eq!(pool.run(hostile, bound, || 1).await, Err(Abandoned));
        let read = pool.run(other, Duration::from_secs(60), || 2).await;
        assert_eq!(read, Ok(2));
        assert!(
            !ended.load(Ordering::SeqCst),
            "the stuck reading is still running"
        );
        release.send(()).unwrap();
        let after = pool.run(hostile, Duration::from_secs(60), || 3).await;
        assert_eq!(after, Ok(3), "its slot is back once the reading ended");
        assert!(ended.load(Ordering::SeqCst));
        assert_eq!(pool.slots(), 2);
    }

    /// The pool's slots bound the readings at once over all tenants: with one slot held by a
    /// stuck reading, another tenant's reading waits for it (and is abandoned at its bound).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pool_bounds_the_readings_at_once() {
        let pool = Pool::new(1);
        let (release, stuck) = mpsc::channel::<()>();
        let bound = Duration::from_millis(50);
        let first = pool.run("a", bound, move || stuck.recv().ok()).await;
        assert_eq!(first, Err(Abandoned));
        let other = pool.run("b", bound, || 1).await;
        assert_eq!(other, Err(Abandoned));
        release.send(()).unwrap();
        let later = pool.run("c", Duration::from_secs(60), || 1).await;
        assert_eq!(later, Ok(1));
    }
}
