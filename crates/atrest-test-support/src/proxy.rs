//! A TCP proxy that can cut the connection to a real server, or swallow it:
//! how a test makes a database or a key service go down (connections reset)
//! or fall silent (a network that drops every packet) while the server
//! itself keeps running (for the other tests that share it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

/// Forwards every connection made to [`Proxy::addr`] to the target, until
/// [`Proxy::cut`]: then every connection through it is closed, and new ones
/// are closed as soon as they are accepted (to the client, the server went
/// down), until [`Proxy::restore`]. [`Proxy::blackhole`] instead keeps new
/// connections open and never answers (to the client, the network drops
/// everything). Stops when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    cut: AtomicBool,
    silent: AtomicBool,
    /// Connections accepted while silent, held open unanswered.
    held: Mutex<Vec<TcpStream>>,
    stopped: AtomicBool,
    /// Both ends of every connection forwarded so far.
    streams: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn close_all(&self) {
        for stream in self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Proxy {
    /// A proxy on a free loopback port to `target`.
    ///
    /// # Panics
    /// If no port can be bound or `target` does not resolve.
    pub fn start(target: impl ToSocketAddrs) -> Self {
        Self::start_on("127.0.0.1", target)
    }

    /// A proxy on a free port of loopback address `ip` (say `127.0.0.2`,
    /// to reach a server under an address its certificate does not name)
    /// to `target`.
    ///
    /// # Panics
    /// If no port can be bound or `target` does not resolve.
    pub fn start_on(ip: &str, target: impl ToSocketAddrs) -> Self {
        let target = target
            .to_socket_addrs()
            .unwrap()
            .next()
            .expect("the proxy's target resolves");
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let accepting = Arc::clone(&shared);
        let _ = thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                if accepting.cut.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                if accepting.silent.load(Ordering::Acquire) {
                    accepting
                        .held
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(client);
                    continue;
                }
                let _ = forward(client, target, &accepting);
            }
        });
        Self { addr, shared }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::Release);
        self.shared.close_all();
    }

    /// Closes every connection through the proxy, then accepts new ones
    /// and never answers them (nor closes them) until [`Proxy::restore`].
    pub fn blackhole(&self) {
        self.shared.silent.store(true, Ordering::Release);
        self.shared.close_all();
    }

    /// Forwards new connections again (and closes the ones held silent).
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::Release);
        self.shared.silent.store(false, Ordering::Release);
        for held in self
            .shared
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            let _ = held.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.close_all();
        // Wake the accepting thread so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Connects to `target` and copies both ways on two threads.
fn forward(client: TcpStream, target: SocketAddr, shared: &Shared) -> io::Result<()> {
    let server = match TcpStream::connect(target) {
        Ok(server) => server,
        Err(error) => {
            let _ = client.shutdown(Shutdown::Both);
            return Err(error);
        }
    };
    {
        let mut streams = shared
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        streams.push(client.try_clone()?);
        streams.push(server.try_clone()?);
    }
    for (mut from, mut to) in [(client.try_clone()?, server.try_clone()?), (server, client)] {
        let _ = thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn forwards_until_cut_and_again_once_restored() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        let _ = thread::spawn(move || {
            for stream in server.incoming() {
                let mut stream = stream.unwrap();
                let _ = thread::spawn(move || {
                    let mut byte = [0u8; 1];
                    while stream.read_exact(&mut byte).is_ok() {
                        stream.write_all(&byte).unwrap();
                    }
                });
            }
        });
        let proxy = Proxy::start(target);
        let echo = |stream: &mut TcpStream| {
            stream.write_all(b"x")?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte)?;
            Ok::<_, io::Error>(byte)
        };
        let mut open = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(echo(&mut open).unwrap(), *b"x");
        proxy.cut();
        assert!(
            echo(&mut open).is_err(),
            "a connection open at the cut is closed"
        );
        let mut refused = TcpStream::connect(proxy.addr()).unwrap();
        assert!(echo(&mut refused).is_err(), "a new connection is closed");
        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(echo(&mut again).unwrap(), *b"x");
        // Silent: connected, never answered, never closed.
        proxy.blackhole();
        let mut silent = TcpStream::connect(proxy.addr()).unwrap();
        silent
            .set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        silent.write_all(b"x").unwrap();
        let mut byte = [0u8; 1];
        let waited = silent.read(&mut byte).unwrap_err();
        assert!(
            matches!(
                waited.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{waited}"
        );
        proxy.restore();
        let mut again = TcpStream::connect(proxy.addr()).unwrap();
        assert_eq!(echo(&mut again).unwrap(), *b"x");
    }
}
