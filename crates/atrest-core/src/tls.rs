//! Telling a TLS refusal from a connection that failed: a server whose
//! certificate or host name the client does not accept (or that refuses
//! the handshake) is not an outage, whatever the transport reports it as.

/// What TLS refused, if a refusal is among `error`'s causes: a certificate
/// or name the client does not accept (an unknown issuer, another host
/// name, expired, none presented), or a handshake alert or protocol the
/// peer refused. `None` for anything else, bytes that are not TLS
/// included (an outage, not a refusal).
///
/// Transports wrap TLS errors in I/O errors, whose own `source` skips the
/// error they wrap: both are looked into.
pub fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let refused = |tls: &rustls::Error| {
        matches!(
            tls,
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::UnsupportedNameType
                | rustls::Error::AlertReceived(_)
                | rustls::Error::PeerIncompatible(_)
        )
        .then(|| tls.to_string())
    };
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return refused(tls);
        }
        cause = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_refusals_and_broken_connections_are_not() {
        let issuer = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, issuer);
        let outer = std::io::Error::other(wrapped);
        assert!(refusal(&outer).is_some());
        let name = rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName);
        assert!(refusal(&name).is_some());
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(refusal(&refused).is_none());
        let garbage = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
        );
        assert!(refusal(&garbage).is_none());
    }
}
