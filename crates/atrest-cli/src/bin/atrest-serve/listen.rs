//! Accepting clients: TLS 1.2 and 1.3 (rustls), or plain HTTP only when
//! asked for; HTTP/1.1 and HTTP/2 (ALPN `h2`, `http/1.1`); a bound on
//! connections, on how long a client may take to say what it wants and on
//! how long a connection may sit idle (no request in flight: HTTP/2
//! clients that answer pings included) or, if none of its requests carried
//! valid credentials, stay open at all; a bound on the connections of one
//! client address ([`per_address`]); and a stop that lets the requests in
//! flight finish.
//!
//! The certificate chain and key are read from PEM files at start and read
//! again on SIGHUP ([`Certificates::reload`]): new handshakes get the new
//! ones, connections already open keep theirs. A reload that fails keeps
//! the old ones and says why.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Body;

use crate::bridge::watched;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use self::per_address::PerAddress;

mod per_address;
use hyper_util::server::conn::auto;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};

/// How long clients may take, and how many may be connected at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// From a connection's start to the end of its TLS handshake, and from
    /// the start of each request (or of the wait for the next one on a
    /// kept-alive connection) to the end of its headers.
    pub(crate) header_timeout: Duration,
    /// Connections served at once; more wait in the kernel's queue.
    pub(crate) max_connections: usize,
    /// Connections served at once from one client address (an IPv6 `/64`
    /// counts as one); more are closed as soon as they are accepted.
    pub(crate) max_connections_per_address: std::num::NonZeroUsize,
    /// How long a connection may go without a request in flight before it
    /// is closed (gracefully: an HTTP/2 `GOAWAY`, or HTTP/1.1's close).
    pub(crate) idle_timeout: Duration,
}

/// Why the certificates cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// A file cannot be read or holds no PEM object of the kind needed.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the key or the configuration.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The certificate chain and key the service presents, reloadable.
#[derive(Debug)]
pub(crate) struct Certificates {
    chain: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Reads the chain (leaf first) and the key from PEM files.
    ///
    /// # Errors
    /// [`TlsError`] for a file that cannot be read, holds no certificate
    /// or key, or a key that does not match the certificate.
    pub(crate) fn load(chain: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let current = Self::read(&provider, chain, key)?;
        Ok(Self {
            chain: chain.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(current)),
        })
    }

    fn read(
        provider: &rustls::crypto::CryptoProvider,
        chain: &Path,
        key: &Path,
    ) -> Result<CertifiedKey, TlsError> {
        let file_error = |path: &Path, reason: String| TlsError::File {
            path: path.to_path_buf(),
            reason,
        };
        let certificates = CertificateDer::pem_file_iter(chain)
            .map_err(|e| file_error(chain, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(chain, e.to_string()))?;
        if certificates.is_empty() {
            return Err(file_error(chain, "no certificate in it".into()));
        }
        let private =
            PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e.to_string()))?;
        let signing = provider.key_provider.load_private_key(private)?;
        let certified = CertifiedKey::new(certificates, signing);
        certified.keys_match()?;
        Ok(certified)
    }

    /// Reads the files again; the new chain and key serve every handshake
    /// from now on. On failure the old ones stay.
    ///
    /// # Errors
    /// As for [`Certificates::load`].
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let fresh = Self::read(&self.provider, &self.chain, &self.key)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }

    /// A server configuration presenting these certificates: TLS 1.3 and
    /// 1.2 only, ALPN `h2` then `http/1.1`.
    ///
    /// # Errors
    /// [`TlsError::Rustls`].
    pub(crate) fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        ))
    }
}

/// Serves `router` to the clients `listener` accepts — over TLS with
/// `tls`, else plain — until `stop` resolves; then accepts no more, asks
/// every connection to finish (its requests in flight go on) and returns
/// once they have (the caller bounds that).
///
/// # Errors
/// If the listening socket fails for good.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    stop: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let connections = limits.max_connections.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(connections));
    let per_address = PerAddress::new(limits.max_connections_per_address);
    let (stopping, stopped) = tokio::sync::watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = &mut stop => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            // A connection that went away before it was taken, or for want
            // of descriptors for a moment: the next one may do.
            Err(error) if is_transient(&error) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(error) => return Err(error),
        };
        // One address past its share: closed before a byte is read (its
        // slot is free again at once).
        let Some(held) = per_address.take(peer.ip()) else {
            continue;
        };
        let (router, tls, stopped) = (router.clone(), tls.clone(), stopped.clone());
        tokio::spawn(async move {
            let _slots = (slot, held);
            connection(stream, peer, router, tls, limits, stopped).await;
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    // Every connection holds a slot until it is done.
    let _all = slots
        .acquire_many(u32::try_from(connections).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// Serves one connection: its TLS handshake within the header timeout,
/// then HTTP/1.1 or HTTP/2 as ALPN (or the first bytes) say.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let served = match tls {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(stream)) => drive(TokioIo::new(stream), router, limits, stopped).await,
                // Not TLS, a handshake refused (an old version, no shared
                // cipher) or too slow: nothing to answer.
                Ok(Err(_)) | Err(_) => return,
            }
        }
        None => drive(TokioIo::new(stream), router, limits, stopped).await,
    };
    // A client that went away or broke the protocol: its business only.
    let _ = (served, peer);
}

/// Runs HTTP over `io` until the client is done, the connection has been
/// idle for the idle timeout, or the service stops (then the requests in
/// flight finish first).
async fn drive<I>(
    io: I,
    router: Router,
    limits: Limits,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let activity = Arc::new(Activity::new());
    let opened = tokio::time::Instant::now();
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            let busy = Busy::begin(&activity);
            let _ = request
                .extensions_mut()
                .insert(SignedIn(Arc::clone(&activity)));
            let mut router = router.clone();
            async move {
                let response =
                    tower_service::Service::call(&mut router, request.map(Body::new)).await?;
                // The request is in flight until its body is sent.
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| watched(body, move |_| busy.still())),
                )
            }
        })
    };
    let connection = builder.serve_connection_with_upgrades(io, service);
    let mut connection = std::pin::pin!(connection);
    let mut closing = false;
    // An idle connection asked to close that is still open after this
    // (an HTTP/2 client that does not acknowledge the GOAWAY's ping) and
    // still idle is dropped.
    let mut drop_at: Option<tokio::time::Instant> = None;
    // A connection none of whose requests carried valid credentials (health
    // checks, scrapes, refusals) is closed once it is as old as the idle
    // timeout, however busy: else a client with no credentials could hold
    // every connection slot with a request now and then.
    let strangers_until = opened + limits.idle_timeout;
    loop {
        let idle_until = activity.idle_until(limits.idle_timeout);
        let drop_deadline = drop_at.unwrap_or_else(|| idle_until + IDLE_GRACE);
        tokio::select! {
            served = connection.as_mut() => return served,
            () = tokio::time::sleep_until(strangers_until), if !closing && !activity.signed_in() => {
                if !activity.signed_in() {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    drop_at = Some(tokio::time::Instant::now() + IDLE_GRACE);
                }
            }
            _ = stopped.wait_for(|stopped| *stopped), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(idle_until), if !closing => {
                if activity.idle_for() >= limits.idle_timeout {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    drop_at = Some(tokio::time::Instant::now() + IDLE_GRACE);
                }
            }
            () = tokio::time::sleep_until(drop_deadline), if drop_at.is_some() => {
                // A client that never signed in is not waited for: a
                // request it keeps in flight (a body it will not read)
                // must not keep its connection.
                if activity.idle_for() >= IDLE_GRACE || !activity.signed_in() {
                    return Ok(());
                }
                drop_at = Some(tokio::time::Instant::now() + IDLE_GRACE);
            }
        }
    }
}

/// How long an idle connection asked to close may take to do so.
const IDLE_GRACE: Duration = Duration::from_secs(2);

/// A connection's requests: how many are in flight, and since when none;
/// and whether any carried valid credentials.
#[derive(Debug)]
struct Activity {
    state: std::sync::Mutex<(usize, tokio::time::Instant)>,
    signed_in: std::sync::atomic::AtomicBool,
}

/// Put in each request's extensions: the handler that authenticates the
/// request marks its connection as one of a signed-in client
/// ([`SignedIn::mark`]), which the idle timeout alone then closes.
#[derive(Clone, Debug)]
pub(crate) struct SignedIn(Arc<Activity>);

impl SignedIn {
    /// The request carried valid credentials.
    pub(crate) fn mark(&self) {
        self.0
            .signed_in
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Activity {
    fn new() -> Self {
        Self {
            state: std::sync::Mutex::new((0, tokio::time::Instant::now())),
            signed_in: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether a request of the connection carried valid credentials.
    fn signed_in(&self) -> bool {
        self.signed_in.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, (usize, tokio::time::Instant)> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long no request has been in flight (zero while one is).
    fn idle_for(&self) -> Duration {
        let (in_flight, since) = *self.state();
        if in_flight > 0 {
            Duration::ZERO
        } else {
            since.elapsed()
        }
    }

    /// When the connection will have been idle for `timeout`, if nothing
    /// starts meanwhile (checked again then).
    fn idle_until(&self, timeout: Duration) -> tokio::time::Instant {
        let (in_flight, since) = *self.state();
        let now = tokio::time::Instant::now();
        if in_flight > 0 {
            now + timeout
        } else {
            since + timeout
        }
    }
}

/// A request in flight on a connection, until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.state().0 += 1;
        Self(Arc::clone(activity))
    }

    /// Nothing: the request is still in flight while its body is sent.
    fn still(&self) {}
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.0 = state.0.saturating_sub(1);
        state.1 = tokio::time::Instant::now();
    }
}

/// Whether an `accept` error concerns one connection or a passing lack of
/// resources, not the listening socket.
fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind as Kind;
    matches!(
        error.kind(),
        Kind::ConnectionAborted | Kind::ConnectionReset | Kind::Interrupted | Kind::WouldBlock
    ) || [
        rustix::io::Errno::MFILE,
        rustix::io::Errno::NFILE,
        rustix::io::Errno::NOMEM,
        rustix::io::Errno::NOBUFS,
    ]
    .iter()
    .any(|errno| error.raw_os_error() == Some(errno.raw_os_error()))
}
