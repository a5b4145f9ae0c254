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
//! multi-threaded runtime it runs the call on the calling thread, so the
//! caller does not wait for a pool thread to wake up and then for a worker
//! to take the task back — two waits that, under load, cost more than the
//! call. Whether the worker's other tasks move to another thread meanwhile
//! depends on how long calls of that kind have been taking: see
//! [`run_short`].

use std::any::TypeId;
use std::collections::HashMap;
use std::panic;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

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
/// multi-threaded tokio runtime, on the calling thread; on any other
/// runtime as [`run`]; outside a runtime on the calling thread.
///
/// On a multi-threaded runtime the worker's other tasks are handed to
/// another thread for the call ([`tokio::task::block_in_place`]) unless
/// calls of this kind have lately been short: handing them over wakes a
/// thread to take the worker's place and back again, which costs more
/// than the call itself when the call takes a few hundred microseconds (a
/// SQLite transaction or a batch of small files on a fast disk). A kind of
/// call is its closure's type (one call site, with its type parameters);
/// its first call is handed over, and its calls run in place while a
/// moving average of their durations stays within [`SHORT_CALL`]. Long
/// calls move the average fast: a kind whose calls wait on a slow disk is
/// handed over, and one that turns slow holds a worker for about one or
/// two long calls before it is.
///
/// Give it only calls whose work is bounded by their arguments (a
/// transaction over a batch, a file opened): a call whose work grows with
/// what is stored (every record of a tenant) would hold a worker whenever
/// the other calls of its kind are short; use [`run`] for it.
///
/// The runtime's other tasks keep running on its other workers (and, when
/// the call is handed over, on this one's replacement), but this task's
/// own concurrent futures (those it joins or selects with this one) wait
/// for the call: use [`run`] for long calls and for I/O meant to overlap
/// with the caller's other work (streaming a blob while its next run is
/// sealed). The call runs to its end whatever happens to the future, as
/// with [`run`].
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
            let pace = Pace::of(TypeId::of::<F>());
            // The call alone is timed, not the handing over of the worker's
            // tasks: a hand-over slowed by a busy machine must not keep a
            // kind of short calls handed over. If `work` panics, its kind
            // keeps the estimate it had.
            let timed = move || {
                let started = Instant::now();
                let output = work();
                (output, started.elapsed())
            };
            let (output, took) = if pace.is_short() {
                timed()
            } else {
                tokio::task::block_in_place(timed)
            };
            pace.took(took);
            output
        }
        _ => run(work).await,
    }
}

/// How long a call of one kind may have lately taken to run on the calling
/// worker without handing the worker's other tasks over (see
/// [`run_short`]). Below it, handing the tasks over costs the runtime's
/// threads more than the call delays them; it is also, on average, how
/// long the tasks queued on the worker may wait for such a call (a single
/// call may take longer: then its kind is soon handed over).
pub const SHORT_CALL: Duration = Duration::from_millis(1);

/// The recent duration of one kind of short call, in nanoseconds:
/// [`Pace::UNKNOWN`] until its first call.
struct Pace(AtomicU64);

impl Pace {
    const UNKNOWN: u64 = u64::MAX;

    /// The pace of the calls of closure type `kind`, made on first use.
    /// There is one per closure type that is ever called, a number fixed
    /// by the program's code, so each lives as long as the program.
    fn of(kind: TypeId) -> &'static Self {
        static KINDS: OnceLock<RwLock<HashMap<TypeId, &'static Pace>>> = OnceLock::new();
        let kinds = KINDS.get_or_init(RwLock::default);
        if let Some(pace) = kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&kind)
        {
            return pace;
        }
        kinds
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kind)
            .or_insert_with(|| Box::leak(Box::new(Self(AtomicU64::new(Self::UNKNOWN)))))
    }

    fn is_short(&self) -> bool {
        self.0.load(Ordering::Relaxed) <= duration_nanos(SHORT_CALL)
    }

    fn took(&self, elapsed: Duration) {
        let sample = duration_nanos(elapsed);
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |estimate| {
                Some(next_estimate(estimate, sample))
            });
    }
}

/// The estimate after a call that took `sample` nanoseconds: a moving
/// average that follows longer calls faster (a quarter of the way) than
/// shorter ones (an eighth), so that a kind whose calls are often long
/// stays handed over while one late call among short ones (the thread was
/// preempted) does not hand its kind over.
fn next_estimate(estimate: u64, sample: u64) -> u64 {
    if estimate == Pace::UNKNOWN {
        sample
    } else if sample >= estimate {
        estimate + (sample - estimate) / 4
    } else {
        estimate - (estimate - sample) / 8
    }
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(Pace::UNKNOWN - 1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use super::{Pace, SHORT_CALL, duration_nanos, next_estimate, run, run_short};

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
    /// thread, and the first of its kind is handed over: the runtime's
    /// other tasks keep running meanwhile, even with a single worker.
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

    /// Calls of a kind that has been short run in place: the worker's other
    /// tasks wait for them. Once one is long, the next is handed over.
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn short_kinds_run_in_place_until_one_is_long() {
        fn nap(pause: Duration) -> impl FnOnce() + Send + 'static {
            move || std::thread::sleep(pause)
        }
        let (ticks, ticker) = ticker();
        // The calls are made by a task on the worker (the test's own body
        // runs on a thread of its own).
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            // The first call of a kind is handed over; it was short.
            run_short(nap(Duration::ZERO)).await;
            let before = ticks.load(Ordering::Relaxed);
            // So this one holds the only worker: the ticker stands still.
            run_short(nap(Duration::from_millis(300))).await;
            let held = ticks.load(Ordering::Relaxed);
            assert!(
                held <= before + 1,
                "ticked {before} -> {held}: not in place"
            );
            // That was long: the next call of the kind is handed over.
            run_short(nap(Duration::from_millis(300))).await;
            let after = ticks.load(Ordering::Relaxed);
            assert!(
                after >= held + 5,
                "ticked {held} -> {after}: the worker was held"
            );
        })
        .await
        .unwrap();
        ticker.await.unwrap();
    }

    #[test]
    fn estimates_follow_long_calls_faster_than_short_ones() {
        let micros = |n: u64| n * 1_000;
        assert_eq!(next_estimate(Pace::UNKNOWN, micros(40)), micros(40));
        assert_eq!(next_estimate(micros(40), micros(3_040)), micros(790));
        assert_eq!(next_estimate(micros(840), micros(40)), micros(740));
        // One late call among short ones: still short.
        let estimate = next_estimate(micros(300), micros(2_000));
        assert!(estimate <= duration_nanos(SHORT_CALL));
        // A short kind turned long (a disk that stalls) is handed over
        // after its first long call.
        let estimate = next_estimate(micros(300), micros(5_000));
        assert!(estimate > duration_nanos(SHORT_CALL));
        // Two short calls for each long one (a flush on a slow disk): the
        // kind stays handed over.
        let mut estimate = next_estimate(Pace::UNKNOWN, micros(5_000));
        for _ in 0..100 {
            for sample in [micros(50), micros(50), micros(5_000)] {
                estimate = next_estimate(estimate, sample);
                assert!(estimate > duration_nanos(SHORT_CALL));
            }
        }
        // Short calls alone bring it back within a few dozen.
        for _ in 0..30 {
            estimate = next_estimate(estimate, micros(50));
        }
        assert!(estimate <= duration_nanos(SHORT_CALL));
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
