//! The hashing pool: a fixed number of OS threads that run the CPU- and memory-heavy work
//! (argon2id, PBKDF2, CAPTCHA drawing), each reusing its own argon2 memory, behind a bounded
//! queue. A job that finds the queue full is refused at once with [`Error::Overloaded`] (503
//! with `Retry-After`), so a flood of logins costs the process at most
//! `workers × argon2 memory` and a queue of small closures, and logins run at the rate
//! argon2id allows whatever the number of clients.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};

use crate::crypto::credentials::Argon2Memory;
use crate::error::{Error, Result};

/// Seconds a refused client is asked to wait.
const RETRY_AFTER: u64 = 1;

type Job = Box<dyn FnOnce(&mut Argon2Memory) + Send>;

/// What the metrics show of the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashingGauges {
    pub workers: usize,
    /// Jobs waiting for a worker.
    pub queued: usize,
    /// Jobs refused because the queue was full, since start.
    pub rejected: u64,
}

pub struct HashPool {
    jobs: Sender<Job>,
    workers: usize,
    rejected: Arc<AtomicU64>,
}

impl HashPool {
    /// Starts `workers` threads (at least one) with room for `queue` waiting jobs. The threads
    /// end when the pool is dropped.
    pub fn new(workers: usize, queue: usize) -> Self {
        let workers = workers.max(1);
        let (jobs, waiting) = crossbeam_channel::bounded::<Job>(queue);
        for n in 0..workers {
            let waiting = waiting.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("latchkey-hash-{n}"))
                .spawn(move || {
                    let mut memory = Argon2Memory::default();
                    while let Ok(job) = waiting.recv() {
                        // A job that panics must not take the worker (and its memory) with it.
                        if catch_unwind(AssertUnwindSafe(|| job(&mut memory))).is_err() {
                            tracing::error!("a hashing job panicked");
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting a hashing worker failed");
            }
        }
        Self {
            jobs,
            workers,
            rejected: Arc::default(),
        }
    }

    /// Runs `work` on a worker and answers its result; `Overloaded` at once when the queue is
    /// full. If the caller stops waiting, the job still runs (its cost is bounded by the pool).
    pub async fn run<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Argon2Memory) -> Result<T> + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |memory| {
            // The caller may have gone: nobody to tell.
            let _ = done.send(work(memory));
        });
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Overloaded {
                    retry_after: RETRY_AFTER,
                });
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(Error::Internal("the hashing workers are gone".into()))
            }
        }
        result
            .await
            .map_err(|_| Error::Internal("a hashing job ended without an answer".into()))?
    }

    pub fn gauges(&self) -> HashingGauges {
        HashingGauges {
            workers: self.workers,
            queued: self.jobs.len(),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_workers_and_a_full_queue_refuses_at_once() {
        let pool = Arc::new(HashPool::new(1, 1));
        let (release, gate) = std::sync::mpsc::channel::<()>();
        // The worker is busy until released; one job waits in the queue.
        let busy = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(move |_| {
                    let _ = gate.recv();
                    Ok(1)
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let queued = {
            let pool = pool.clone();
            tokio::spawn(async move { pool.run(|_| Ok(2)).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(pool.gauges().queued, 1);
        let refused = pool.run(|_| Ok(3)).await;
        assert!(matches!(refused, Err(Error::Overloaded { retry_after: 1 })));
        assert_eq!(pool.gauges().rejected, 1);
        release.send(()).unwrap();
        assert_eq!(busy.await.unwrap().unwrap(), 1);
        assert_eq!(queued.await.unwrap().unwrap(), 2);
        assert_eq!(pool.run(|_| Ok(4)).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_panicking_job_leaves_the_worker_alive() {
        let pool = HashPool::new(1, 4);
        #[allow(clippy::panic)]
        let died = pool.run(|_| -> Result<()> { panic!("boom") }).await;
        assert!(matches!(died, Err(Error::Internal(_))));
        assert_eq!(pool.run(|_| Ok(7)).await.unwrap(), 7);
    }
}
