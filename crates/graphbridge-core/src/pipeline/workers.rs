//! The crypto workers: long-lived threads, one per core, that open the items needing RSA.
//!
//! Why not `spawn_blocking` per chunk: on a core saturated by RSA (≈0.26 ms per item on AVX-512
//! IFMA) every other per-batch cost counts. A blocking-pool task per chunk took a trip through
//! the reactor between two chunks (the semaphore permit, then the spawn), so the core switched
//! threads once more per batch and the next chunk waited for the reactor to be scheduled. Here
//! the reactor queues chunks as soon as they are parsed, and a worker that finishes one takes
//! the next from the queue without a hand-off. The queue holds at most as many chunks as there
//! are workers (RSA still never runs on the reactor, and never more chunks at once than cores).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, Semaphore};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Why a job gave no result.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkerError {
    #[error("a crypto worker panicked while opening items")]
    Panicked,
    #[error("the crypto workers have stopped")]
    Stopped,
}

pub(super) struct Workers {
    jobs: mpsc::Sender<Job>,
    /// Chunks running or queued: at most two per worker, so a worker finishing one finds the
    /// next already waiting while the queue stays bounded.
    slots: Arc<Semaphore>,
}

impl Workers {
    /// Starts `count` threads (at least one); they exit when the `Workers` is dropped.
    pub fn start(count: usize) -> Self {
        let count = count.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..count {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("graphbridge-crypto-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job, not while running it.
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    match job {
                        Ok(job) => job(),
                        Err(mpsc::RecvError) => return, // every sender dropped
                    }
                })
                .expect("spawn a crypto worker thread");
        }
        Workers {
            jobs,
            slots: Arc::new(Semaphore::new(2 * count)),
        }
    }

    /// Runs `f` on a worker and returns its result. Waits (asynchronously) while the queue is
    /// full. A panic in `f` is caught: the worker lives on and the caller gets an error.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, WorkerError> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(f));
            drop(slot);
            // The caller may be gone (its request was dropped): nothing to tell then.
            let _ = tx.send(result.map_err(|_| WorkerError::Panicked));
        });
        self.jobs.send(job).map_err(|_| WorkerError::Stopped)?;
        rx.await.map_err(|_| WorkerError::Stopped)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_calling_thread_and_return_their_results() {
        let w = Workers::start(2);
        let caller = std::thread::current().id();
        let (name, other) = w
            .run(move || {
                let t = std::thread::current();
                (t.name().map(str::to_string), t.id() != caller)
            })
            .await
            .unwrap();
        assert!(other, "ran on the caller's thread");
        assert!(name.unwrap().starts_with("graphbridge-crypto-"));
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_worker_lives_on() {
        let w = Workers::start(1);
        let r: Result<(), _> = w.run(|| panic!("boom")).await;
        assert_eq!(r, Err(WorkerError::Panicked));
        assert_eq!(w.run(|| 7).await, Ok(7), "the one worker still takes jobs");
    }
}
