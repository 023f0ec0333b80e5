//! A bounded pool for image work, off the async runtime: at most `workers` jobs run at
//! once (on tokio's blocking threads), at most `queue` more wait for a place, and any
//! further job is refused at once, for the client to retry (`503`, `Retry-After`).

use std::sync::Arc;

use tokio::sync::Semaphore;

pub struct Pool {
    /// Places for jobs running or waiting.
    admitted: Arc<Semaphore>,
    /// Places for jobs running.
    running: Arc<Semaphore>,
}

/// Why a job did not run to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolError {
    /// Every worker is busy and the queue is full.
    Full,
    /// The job panicked, or the pool is shutting down.
    Failed,
}

impl Pool {
    pub fn new(workers: usize, queue: usize) -> Pool {
        Pool {
            admitted: Arc::new(Semaphore::new(workers.saturating_add(queue))),
            running: Arc::new(Semaphore::new(workers)),
        }
    }

    /// Runs `job` when a worker is free, or refuses it when too many wait already. The
    /// places are held by the job itself: a caller that goes away does not free a worker
    /// that is still busy.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| PoolError::Full)?;
        let running = self
            .running
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| PoolError::Failed)?;
        tokio::task::spawn_blocking(move || {
            let _places = (admitted, running);
            job()
        })
        .await
        .map_err(|_| PoolError::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_beyond_workers_and_queue() {
        let pool = Arc::new(Pool::new(1, 0));
        let (hold_tx, hold_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let p = pool.clone();
        let first = tokio::spawn(async move {
            p.run(move || {
                let _ = started_tx.send(());
                let _ = hold_rx.recv();
                7
            })
            .await
        });
        started_rx.await.unwrap();
        assert_eq!(pool.run(|| 1).await, Err(PoolError::Full));
        hold_tx.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(7));
        assert_eq!(pool.run(|| 2).await, Ok(2));
    }
}
