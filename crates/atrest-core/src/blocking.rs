//! Blocking calls from async code: the one way the atrest backends over
//! blocking libraries (SQLite through `rusqlite`, PKCS#11 tokens through
//! `cryptoki`, local files) run them without holding up the async
//! runtime's worker threads.
//!
//! [`run`] moves a closure onto tokio's blocking pool and awaits it. A
//! future that awaits it holds a task, not a worker thread, while the
//! database or the token answers; the worker threads keep serving other
//! tasks.

use std::panic;

/// Runs `work` on the blocking pool of the tokio runtime this future is
/// polled on, and returns what it returns.
///
/// Outside a tokio runtime (a synchronous program that drives the future
/// with `futures::executor::block_on`, say) `work` runs on the calling
/// thread, which such a caller blocks anyway.
///
/// Dropping the future before it completes does not stop `work`: it runs
/// to its end on the pool (a SQLite transaction commits or rolls back as a
/// whole), and its result is dropped. If the runtime shuts down before
/// `work` starts, the future never completes (the runtime drops it).
///
/// # Panics
/// Resumes a panic of `work` in the caller.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sum = atrest_core::blocking::run(|| (1..=10).sum::<u32>()).await;
/// assert_eq!(sum, 55);
/// # }
/// ```
pub async fn run<T, F>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return work();
    }
    match tokio::task::spawn_blocking(work).await {
        Ok(output) => output,
        Err(error) => match error.try_into_panic() {
            Ok(payload) => panic::resume_unwind(payload),
            // The runtime is shutting down and dropped the task unrun: it
            // drops this future too.
            Err(_) => std::future::pending().await,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::run;

    /// Blocking work runs off the worker thread: while a call sleeps on
    /// the pool, the runtime's only worker keeps serving other tasks.
    #[tokio::test(flavor = "current_thread")]
    async fn blocking_work_leaves_the_worker_free() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticking = Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = ticking.fetch_add(1, Ordering::Relaxed);
            }
        });
        let started = Instant::now();
        run(|| std::thread::sleep(Duration::from_millis(300))).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(ticks.load(Ordering::Relaxed) >= 5, "the worker was held");
        ticker.await.unwrap();
    }

    #[test]
    fn outside_a_runtime_it_runs_on_the_calling_thread() {
        let caller = std::thread::current().id();
        let ran_on = poll_to_end(run(move || std::thread::current().id()));
        assert_eq!(ran_on, caller);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "from the pool")]
    async fn a_panic_reaches_the_caller() {
        run(|| panic!("from the pool")).await;
    }

    /// Polls a future to completion on this thread (no runtime).
    fn poll_to_end<F: Future>(future: F) -> F::Output {
        use std::task::{Context, Poll, Waker};
        let mut future = std::pin::pin!(future);
        let mut context = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
                return output;
            }
        }
    }
}
