//! Running the async API from synchronous code.
//!
//! The store and provider traits are async, so that a service on an async
//! runtime does not block a worker thread on a database or key-service
//! round trip. Synchronous callers use the hierarchy's blocking methods,
//! which drive the async ones to completion on the calling thread with
//! [`block_on`].

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `future` to completion on the calling thread, parking it while the
/// future waits.
///
/// The embedded implementations (SQLite, PKCS#11, the service key store)
/// complete without waiting on any runtime. Do not use it for a future that
/// needs a particular async runtime's I/O driver; call the async method
/// from that runtime instead.
pub fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        // One waker per thread: the hot paths (a file key from a warm
        // cache) complete at the first poll and should not allocate.
        static WAKER: Waker = Waker::from(Arc::new(Unpark(thread::current())));
    }
    let mut future = std::pin::pin!(future);
    WAKER.with(|waker| {
        let mut context = Context::from_waker(waker);
        loop {
            match future.as_mut().poll(&mut context) {
                Poll::Ready(output) => return output,
                Poll::Pending => thread::park(),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use super::block_on;

    /// Pending until another thread marks it done and wakes it.
    struct WokenLater {
        done: Arc<AtomicBool>,
        started: bool,
    }

    impl Future for WokenLater {
        type Output = u32;

        fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<u32> {
            if self.done.load(Ordering::Acquire) {
                return Poll::Ready(7);
            }
            if !self.started {
                self.started = true;
                let (done, waker) = (Arc::clone(&self.done), context.waker().clone());
                let _ = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    done.store(true, Ordering::Release);
                    waker.wake();
                });
            }
            Poll::Pending
        }
    }

    #[test]
    fn a_future_woken_from_another_thread_completes() {
        for _ in 0..3 {
            let future = WokenLater {
                done: Arc::new(AtomicBool::new(false)),
                started: false,
            };
            assert_eq!(block_on(future), 7);
        }
        assert_eq!(block_on(async { 1 + 1 }), 2);
    }
}
