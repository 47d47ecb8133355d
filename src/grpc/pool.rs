//! A bounded pool for CPU work (decoding, hashing, searching) that must stay off the async
//! workers: at most `max_in_flight` jobs run at once on blocking threads, at most
//! `max_queued` more wait for a slot, and anything beyond that is refused at once. Memory
//! therefore stays bounded however many requests arrive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Why a job did not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("server busy: {in_flight} images in progress and {queued} waiting; retry with backoff")]
    Busy { in_flight: usize, queued: usize },
    #[error("deadline exceeded before the work could finish")]
    DeadlineExceeded,
    #[error("a worker panicked")]
    Panicked,
}

pub struct WorkPool {
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    max_queued: usize,
    queued: AtomicUsize,
    /// Also exported as a metric (the same counter, shared).
    rejected: Counter,
}

/// Decrements a counter when dropped (also when the waiting future is cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WorkPool {
    pub fn new(max_in_flight: usize, max_queued: usize) -> WorkPool {
        let max_in_flight = max_in_flight.max(1);
        WorkPool {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_queued,
            queued: AtomicUsize::new(0),
            rejected: Counter::default(),
        }
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    pub fn max_queued(&self) -> usize {
        self.max_queued
    }

    /// Jobs running now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.permits.available_permits()
    }

    /// Jobs waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Jobs refused as busy since start.
    pub fn rejected(&self) -> u64 {
        self.rejected.get()
    }

    /// The refusal counter itself, for registering as a metric.
    pub fn rejected_counter(&self) -> Counter {
        self.rejected.clone()
    }

    /// Run `job` on a blocking thread once a slot is free. Waits in the queue if there is
    /// room, else fails with `Busy`. With a deadline, gives up waiting at the deadline and
    /// skips the job if the deadline passed before it started. A job that has started runs
    /// to the end (its slot stays taken) even if the caller has gone away.
    pub async fn run<T, F>(&self, deadline: Option<Instant>, job: F) -> Result<T, PoolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let ahead = self.queued.fetch_add(1, Ordering::SeqCst);
                let _waiting = Waiting(&self.queued);
                if ahead >= self.max_queued {
                    self.rejected.inc();
                    return Err(PoolError::Busy { in_flight: self.in_flight(), queued: ahead });
                }
                let acquire = self.permits.clone().acquire_owned();
                let acquired = match deadline {
                    Some(d) => tokio::time::timeout_at(d, acquire).await.map_err(|_| PoolError::DeadlineExceeded)?,
                    None => acquire.await,
                };
                acquired.expect("the pool's semaphore is never closed")
            }
        };
        let deadline = deadline.map(Instant::into_std);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(PoolError::DeadlineExceeded);
            }
            Ok(job())
        })
        .await
        .map_err(|_| PoolError::Panicked)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_beyond_the_queue_and_recovers() {
        let pool = Arc::new(WorkPool::new(1, 1));
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        // One job running (blocked until released)...
        let running = {
            let (pool, rx) = (pool.clone(), release_rx.clone());
            tokio::spawn(async move { pool.run(None, move || rx.lock().unwrap().recv().unwrap()).await })
        };
        while pool.in_flight() < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // ...one waiting...
        let waiting = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(None, || 7).await })
        };
        while pool.queued() < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // ...so the third is refused at once.
        assert_eq!(pool.run(None, || 0).await, Err(PoolError::Busy { in_flight: 1, queued: 1 }));
        assert_eq!(pool.rejected(), 1);
        // A deadline that passes while waiting is reported as such (the queue has room again
        // only after the waiting job leaves, so use a fresh pool state: release first).
        release_tx.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(()));
        assert_eq!(waiting.await.unwrap(), Ok(7));
        assert_eq!((pool.in_flight(), pool.queued()), (0, 0));
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(pool.run(Some(past), || 1).await, Err(PoolError::DeadlineExceeded));
        assert_eq!(pool.run(None, || 2).await, Ok(2));
    }
}
