//! Group commit: concurrent callers hand items to one task that writes them in a single
//! transaction, so many requests share one fsync instead of paying one each.
//!
//! A caller gets its answer only after the batch's transaction committed. A caller that
//! goes away (a provider hanging up) does not cancel the write: the batch commits, and what
//! happens next (delivery) is driven from the database.

use std::future::Future;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

type Job<T, R> = (T, oneshot::Sender<R>);

/// A handle to a group-commit task.
pub struct Batcher<T, R> {
    tx: mpsc::Sender<Job<T, R>>,
}

impl<T, R> Clone for Batcher<T, R> {
    fn clone(&self) -> Self {
        Self { tx: self.tx.clone() }
    }
}

/// Where a group-commit task runs.
#[derive(Debug, Clone, Copy)]
pub enum Workers {
    /// This many tasks on the shared runtime, each with a batch in flight: for PostgreSQL,
    /// which commits concurrent transactions in parallel.
    Shared(usize),
    /// One task on a thread of its own, for the busiest queue on SQLite's single writer: the
    /// ingest group commit, which runs its transaction synchronously on this thread (see
    /// `commit_sqlite`) and so must not block a worker of the shared runtime. (Through sqlx,
    /// when each statement was a round trip, this thread alone made ingest ~17% faster. The
    /// receipts queue, still on sqlx, measured slightly slower on its own thread and stays
    /// shared.)
    OwnThread(&'static str),
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the task(s): each takes whatever is queued (at most `max_batch`) and calls
    /// `write` once for the lot; `write` returns one answer per item, in order.
    pub fn spawn<F, Fut>(queue: usize, max_batch: usize, workers: Workers, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send,
    {
        let (tx, rx) = mpsc::channel::<Job<T, R>>(queue);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let write = Arc::new(write);
        let count = match workers {
            Workers::Shared(n) => n.max(1),
            Workers::OwnThread(_) => 1,
        };
        for _ in 0..count {
            let (rx, write) = (rx.clone(), write.clone());
            let task = async move {
                let mut jobs = Vec::with_capacity(max_batch);
                loop {
                    // Take a batch, then let the next worker take its own while this one writes.
                    if rx.lock().await.recv_many(&mut jobs, max_batch).await == 0 {
                        return;
                    }
                    let (items, replies): (Vec<T>, Vec<_>) = jobs.drain(..).unzip();
                    let answers = write(items).await;
                    debug_assert_eq!(answers.len(), replies.len());
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        let _ = reply.send(answer);
                    }
                }
            };
            match workers {
                Workers::Shared(_) => {
                    tokio::spawn(task);
                }
                Workers::OwnThread(name) => {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a runtime for the group-commit thread");
                    std::thread::Builder::new()
                        .name(name.into())
                        .spawn(move || runtime.block_on(task))
                        .expect("spawn the group-commit thread");
                }
            }
        }
        Self { tx }
    }

    /// Queues one item and waits for its answer; `None` when the task has stopped.
    pub async fn submit(&self, item: T) -> Option<R> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((item, reply)).await.ok()?;
        answer.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_items_share_batches_and_get_their_own_answers() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let batcher = Batcher::spawn(1024, 64, Workers::Shared(1), move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                items.into_iter().map(|i| i * 2).collect()
            }
        });
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(i).await) })
            })
            .collect();
        for task in tasks {
            let (i, answer) = task.await.unwrap();
            assert_eq!(answer, Some(i * 2));
        }
        assert!(calls.load(Ordering::SeqCst) < 200, "items were not grouped");
    }
}
