//! TLS to PostgreSQL through rustls, with the certificate and the host name
//! verified (libpq's `verify-full`), and the rule that decides when a
//! connection may go without: only to a loopback address or a Unix socket.
//!
//! A connection string names its TLS with libpq's parameters:
//! `sslmode=verify-full` (TLS, the server's certificate checked against the
//! trusted roots and the host name) or `sslmode=disable` (none: loopback and
//! Unix sockets only); without `sslmode`, a loopback host goes without and
//! any other host gets `verify-full`. `prefer`, `allow`, `require` and
//! `verify-ca` are refused: the first two fall back to plaintext when the
//! server asks, the other two accept a certificate for another host.
//! `sslrootcert=FILE` names the PEM file of the CA(s) to trust instead of
//! the system's roots.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use atrest_core::ErrorKind;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::Host;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

use crate::db::PgError;

/// What a connection string asks of TLS, once `sslmode` and `sslrootcert`
/// were taken out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsRequest {
    /// `sslmode`, if given.
    pub(crate) mode: Option<String>,
    /// `sslrootcert`, if given.
    pub(crate) root_cert: Option<PathBuf>,
}

/// Takes `sslmode` and `sslrootcert` out of a `postgresql://` URL (the
/// client library knows no `sslrootcert`, and `sslmode` is decided here);
/// a key-value string is left as it is, with its `sslmode` read back from
/// the parsed configuration by [`decide`].
pub(crate) fn take_tls_parameters(url: &str) -> Result<(String, TlsRequest), PgError> {
    let mut request = TlsRequest {
        mode: None,
        root_cert: None,
    };
    let Some(query_at) = url
        .find('?')
        .filter(|_| url.starts_with("postgres://") || url.starts_with("postgresql://"))
    else {
        return Ok((url.to_owned(), request));
    };
    let (base, query) = url.split_at(query_at);
    let mut kept = Vec::new();
    for pair in query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value)?;
        match key {
            "sslmode" => request.mode = Some(value),
            "sslrootcert" => request.root_cert = Some(PathBuf::from(value)),
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((url, request))
}

/// Percent-decodes a query value.
fn decode(value: &str) -> Result<String, PgError> {
    let invalid = || {
        PgError::new(
            ErrorKind::Usage,
            "invalid percent-encoding in the connection string",
        )
    };
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        if byte == b'%' {
            let hex = value.get(i + 1..i + 3).ok_or_else(invalid)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            i += 3;
        } else {
            out.push(if byte == b'+' { b' ' } else { byte });
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| invalid())
}

/// Whether every address the configuration connects to is on this
/// machine: Unix sockets, loopback addresses and `localhost` (with any
/// `hostaddr` loopback too).
fn only_loopback(config: &tokio_postgres::Config) -> bool {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let host_local = |host: &Host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            name.eq_ignore_ascii_case("localhost")
                || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    };
    (!hosts.is_empty() || !addrs.is_empty())
        && hosts.iter().all(host_local)
        && addrs.iter().all(IpAddr::is_loopback)
}

/// How connections are made: without TLS, or with it.
pub(crate) enum Decision {
    /// Plaintext (loopback and Unix sockets only).
    Plain,
    /// TLS, verify-full, with these settings.
    Tls(RustlsConnect),
}

/// Decides a connection's TLS from what the string asked and where it
/// connects, and sets the client library's `sslmode` to match (TLS
/// required, or none: never a fallback from one to the other).
pub(crate) fn decide(
    config: &mut tokio_postgres::Config,
    request: &TlsRequest,
    ca_file: Option<&Path>,
) -> Result<Decision, PgError> {
    use tokio_postgres::config::SslMode;
    let local = only_loopback(config);
    let mode = match request.mode.as_deref() {
        Some(mode) => mode,
        // A key-value string's own `sslmode` (its default reads as prefer).
        None => match config.get_ssl_mode() {
            SslMode::Disable => "disable",
            SslMode::Require => "require",
            _ if local => "disable",
            _ => "verify-full",
        },
    };
    match mode {
        "disable" if local => {
            let _ = config.ssl_mode(SslMode::Disable);
            Ok(Decision::Plain)
        }
        "disable" => Err(PgError::new(
            ErrorKind::Usage,
            "sslmode=disable is only for a loopback address or a Unix socket: \
             use sslmode=verify-full (TLS, certificate and host name checked)",
        )),
        "verify-full" => {
            let roots = match request.root_cert.as_deref().or(ca_file) {
                Some(file) => roots_from(file)?,
                None => system_roots()?,
            };
            let config_tls = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| PgError::with_source(ErrorKind::Usage, "TLS settings", e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let _ = config.ssl_mode(SslMode::Require);
            Ok(Decision::Tls(RustlsConnect {
                config: Arc::new(config_tls),
            }))
        }
        "prefer" | "allow" => Err(PgError::new(
            ErrorKind::Usage,
            "sslmode=prefer and allow fall back to plaintext: use sslmode=verify-full \
             (or sslmode=disable on loopback)",
        )),
        "require" | "verify-ca" => Err(PgError::new(
            ErrorKind::Usage,
            "sslmode=require and verify-ca accept a certificate for another host: \
             use sslmode=verify-full",
        )),
        _ => Err(PgError::new(ErrorKind::Usage, "unknown sslmode")),
    }
}

/// The CA certificates in a PEM file.
fn roots_from(file: &Path) -> Result<rustls::RootCertStore, PgError> {
    let pem = std::fs::read(file)
        .map_err(|e| PgError::with_source(ErrorKind::Usage, "cannot read sslrootcert", e))?;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate
            .map_err(|e| PgError::with_source(ErrorKind::Usage, "sslrootcert is not PEM", e))?;
        roots.add(certificate).map_err(|e| {
            PgError::with_source(ErrorKind::Usage, "a certificate of sslrootcert", e)
        })?;
    }
    if roots.is_empty() {
        return Err(PgError::new(
            ErrorKind::Usage,
            "sslrootcert holds no certificate",
        ));
    }
    Ok(roots)
}

/// The system's trusted roots.
fn system_roots() -> Result<rustls::RootCertStore, PgError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(PgError::new(
            ErrorKind::Usage,
            "no trusted CA certificates on this system: give sslrootcert",
        ));
    }
    Ok(roots)
}

/// Makes verify-full TLS connections (see the module documentation).
#[derive(Clone)]
pub(crate) struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
}

impl core::fmt::Debug for RustlsConnect {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("RustlsConnect").finish_non_exhaustive()
    }
}

impl<S> MakeTlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type TlsConnect = ConnectTo;
    type Error = rustls::pki_types::InvalidDnsNameError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<ConnectTo, Self::Error> {
        Ok(ConnectTo {
            config: Arc::clone(&self.config),
            name: ServerName::try_from(domain.to_owned())?,
        })
    }
}

/// One connection's TLS, to the host it names.
pub(crate) struct ConnectTo {
    config: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for ConnectTo
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = Stream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let connector = tokio_rustls::TlsConnector::from(self.config);
            Ok(Stream(connector.connect(self.name, stream).await?))
        })
    }
}

/// A TLS connection to the server.
pub(crate) struct Stream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Stream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Stream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for Stream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> (tokio_postgres::Config, TlsRequest) {
        let (url, request) = take_tls_parameters(url).unwrap();
        (url.parse().unwrap(), request)
    }

    #[test]
    fn tls_parameters_are_taken_out_of_the_url() {
        let (url, request) = take_tls_parameters(
            "postgresql://u@db.example:5432/x?connect_timeout=5&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgresql://u@db.example:5432/x?connect_timeout=5");
        assert_eq!(request.mode.as_deref(), Some("verify-full"));
        assert_eq!(request.root_cert, Some(PathBuf::from("/etc/ca.pem")));
    }

    #[test]
    fn only_loopback_goes_without_tls() {
        for url in [
            "postgresql://u@127.0.0.1:5432/x",
            "postgresql://u@localhost/x?sslmode=disable",
            "postgresql://u@[::1]:5432/x",
            "host=/run/postgresql user=u dbname=x",
        ] {
            let (mut config, request) = parsed(url);
            assert!(
                matches!(decide(&mut config, &request, None), Ok(Decision::Plain)),
                "{url}"
            );
        }
        for url in [
            "postgresql://u@db.example/x?sslmode=disable",
            "postgresql://u@10.0.0.5/x?sslmode=disable",
            "postgresql://u@db.example/x?hostaddr=127.0.0.1&sslmode=disable",
            "postgresql://u@127.0.0.1/x?hostaddr=10.0.0.5&sslmode=disable",
            "host=db.example user=u dbname=x sslmode=disable",
        ] {
            let (mut config, request) = parsed(url);
            let refused = decide(&mut config, &request, None).err().unwrap();
            assert_eq!(refused.kind(), ErrorKind::Usage, "{url}");
        }
    }

    #[test]
    fn modes_that_fall_back_or_skip_the_host_name_are_refused() {
        for mode in ["prefer", "allow", "require", "verify-ca", "nonsense"] {
            let url = format!("postgresql://u@127.0.0.1/x?sslmode={mode}");
            let (mut config, request) = parsed(&url);
            let refused = decide(&mut config, &request, None).err().unwrap();
            assert_eq!(refused.kind(), ErrorKind::Usage, "{mode}");
        }
    }

    #[test]
    fn a_remote_host_without_sslmode_gets_verify_full() {
        let dir = std::env::temp_dir().join(format!("atrest-pg-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, b"").unwrap();
        let url = format!(
            "postgresql://u@db.example/x?sslrootcert={}",
            empty.display()
        );
        let (mut config, request) = parsed(&url);
        // Verify-full was chosen: its CA file is read (and refused, empty).
        let refused = decide(&mut config, &request, None).err().unwrap();
        assert!(refused.to_string().contains("sslrootcert"), "{refused}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
