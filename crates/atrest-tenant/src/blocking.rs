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
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}
