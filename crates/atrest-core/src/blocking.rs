//! Blocking calls from async code: the one way the atrest backends over
//! blocking libraries (SQLite through `rusqlite`, PKCS#11 tokens through
//! `cryptoki`, local files) run them without holding up the async
//! runtime's worker threads.
//!
//! [`run`] moves a closure onto tokio's blocking pool and awaits it. A
//! future that awaits it holds a task, not a worker thread, while the
//! database or the token answers; the worker threads keep serving other
//! tasks. [`run_short`] is for short calls on a request's path (a
//! database statement, a batch of small files written): on a
//! multi-threaded runtime it runs the call on the calling thread and
//! moves the worker's other tasks to another thread instead, so the
//! caller does not wait for a pool thread to wake up and then for a worker
//! to take the task back — two waits that, under load, cost more than the
//! call.

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

/// Runs a short blocking call where it costs the caller least: on a
/// multi-threaded tokio runtime, on the calling thread, with the worker's
/// other tasks handed to another thread meanwhile
/// ([`tokio::task::block_in_place`]); on any other runtime as [`run`];
/// outside a runtime on the calling thread.
///
/// The runtime's other tasks keep running, but this task's own concurrent
/// futures (those it joins or selects with this one) wait for the call:
/// use [`run`] for long calls and for I/O meant to overlap with the
/// caller's other work (streaming a blob while its next run is sealed).
/// The call runs to its end whatever happens to the future, as with
/// [`run`].
///
/// # Panics
/// Resumes a panic of `work` in the caller.
///
/// ```
/// # #[tokio::main]
/// # async fn main() {
/// let sum = atrest_core::blocking::run_short(|| (1..=10).sum::<u32>()).await;
/// assert_eq!(sum, 55);
/// # }
/// ```
pub async fn run_short<T, F>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => run(work).await,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::{run, run_short};

    /// A task that counts ten ticks of 10 ms on the runtime.
    fn ticker() -> (Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticking = Arc::clone(&ticks);
        let ticker = tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let _ = ticking.fetch_add(1, Ordering::Relaxed);
            }
        });
        (ticks, ticker)
    }

    /// Blocking work runs off the worker thread: while a call sleeps on
    /// the pool, the runtime's only worker keeps serving other tasks.
    #[tokio::test(flavor = "current_thread")]
    async fn blocking_work_leaves_the_worker_free() {
        let (ticks, ticker) = ticker();
        let started = Instant::now();
        run(|| std::thread::sleep(Duration::from_millis(300))).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(ticks.load(Ordering::Relaxed) >= 5, "the worker was held");
        ticker.await.unwrap();
    }

    /// A short call on a multi-threaded runtime runs on the calling
    /// thread, and the runtime's other tasks keep running meanwhile, even
    /// with a single worker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_short_call_runs_here_and_leaves_the_runtime_free() {
        let (ticks, ticker) = ticker();
        // Let the ticker start on the worker.
        tokio::task::yield_now().await;
        let caller = std::thread::current().id();
        let ran_on = run_short(|| {
            std::thread::sleep(Duration::from_millis(300));
            std::thread::current().id()
        })
        .await;
        assert_eq!(ran_on, caller);
        assert!(ticks.load(Ordering::Relaxed) >= 5, "the runtime was held");
        ticker.await.unwrap();
    }

    /// On a single-threaded runtime a short call goes to the pool, as the
    /// worker cannot be handed over.
    #[tokio::test(flavor = "current_thread")]
    async fn a_short_call_on_one_thread_goes_to_the_pool() {
        let caller = std::thread::current().id();
        let ran_on = run_short(move || std::thread::current().id()).await;
        assert_ne!(ran_on, caller);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[should_panic(expected = "short and failing")]
    async fn a_panic_of_a_short_call_reaches_the_caller() {
        run_short(|| panic!("short and failing")).await;
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
