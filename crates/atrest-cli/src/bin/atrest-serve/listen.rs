//! Accepting clients: TLS 1.2 and 1.3 (rustls), or plain HTTP only when
//! asked for; HTTP/1.1 and HTTP/2 (ALPN `h2`, `http/1.1`); a bound on
//! connections and on how long a client may take to say what it wants; and
//! a stop that lets the requests in flight finish.
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
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
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
/// `tls`, else plain — until `stop` resolves; then accepts no more and
/// returns once the requests in flight have finished (the caller bounds
/// that).
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
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
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
        let (router, tls, watcher) = (router.clone(), tls.clone(), graceful.watcher());
        tokio::spawn(async move {
            let _slot = slot;
            connection(stream, peer, router, tls, limits, watcher).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
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
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
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
    let served = match tls {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
            let stream = match handshake.await {
                Ok(Ok(stream)) => stream,
                // Not TLS, a handshake refused (an old version, no shared
                // cipher) or too slow: nothing to answer.
                Ok(Err(_)) | Err(_) => return,
            };
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watcher.watch(connection.into_owned()).await
        }
        None => {
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watcher.watch(connection.into_owned()).await
        }
    };
    // A client that went away or broke the protocol: its business only.
    let _ = (served, peer);
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
