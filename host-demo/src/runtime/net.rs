//! TCP and TLS for the guest's sessions: connect with a timeout, TCP_NODELAY, rustls with the
//! system roots plus an optional extra CA, and in-place STARTTLS upgrades.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::HostError;

/// Builds the TLS client configuration: system roots plus `extra_ca` (PEM). Certificates and
/// host names are always verified.
pub fn tls_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, HostError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path)
            .map_err(|e| HostError::NotFound(format!("cannot read extra_ca_file {}: {e}", path.display())))?;
        let mut added = 0;
        for item in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: CertificateDer<'static> = item.map_err(|e| {
                HostError::NotFound(format!("extra_ca_file {} is not PEM certificates: {e}", path.display()))
            })?;
            roots
                .add(cert)
                .map_err(|e| HostError::NotFound(format!("extra_ca_file {}: bad certificate: {e}", path.display())))?;
            added += 1;
        }
        if added == 0 {
            return Err(HostError::NotFound(format!("extra_ca_file {} holds no certificate", path.display())));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HostError::Plugin(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Resolves host:port to its addresses (bounded by `timeout`).
pub async fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, HostError> {
    let label = format!("{host}:{port}");
    let found = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| HostError::Timeout { server: label.clone(), message: "the host name did not resolve in time".into() })?
        .map_err(|e| HostError::Network {
            server: label.clone(),
            message: format!("the host name does not resolve ({e}); check its spelling"),
        })?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(HostError::Network { server: label, message: "the host name has no address; check its spelling".into() });
    }
    Ok(addrs)
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

/// One connection to a mail server.
pub struct Conn {
    inner: Inner,
    host: String,
    port: u16,
    label: String,
    tls: Arc<ClientConfig>,
}

/// A TLS failure's text (rustls' words, also inside an `io::Error`) with what an admin can do
/// about the common ones; `expired` is added to the text of an expired certificate.
pub fn describe_tls_text(text: String, expired: &str) -> String {
    if text.contains("UnknownIssuer") {
        format!("the server's certificate is not signed by a trusted authority ({text}); install the issuing CA with `extra_ca_file`, or fix the server's certificate chain")
    } else if text.contains("NotValidForName") {
        format!("the server's certificate is not valid for this host name ({text}); use the host name printed on the certificate")
    } else if text.contains("Expired") {
        format!("the server's certificate has expired ({text}){expired}")
    } else {
        text
    }
}

/// Whether the handshake failed because the server's first bytes were no TLS record at all
/// (a clear-text greeting such as "* OK", "+OK" or "220" on a port without TLS from the first
/// byte), rather than a TLS problem such as a certificate.
fn answered_in_clear_text(e: &io::Error) -> bool {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidMessage(_)) => true,
        Some(_) => false,
        None => e.to_string().contains("InvalidContentType"),
    }
}

impl Conn {
    /// Connects to host:port; with `implicit_tls` the TLS handshake runs before returning.
    pub async fn connect(
        host: &str,
        port: u16,
        implicit_tls: bool,
        tls: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<Conn, HostError> {
        let addrs = resolve(host, port, timeout).await?;
        let mut conn = Conn::open_tcp(host, port, &addrs, tls, timeout).await?;
        if implicit_tls {
            conn.handshake(timeout).await?;
        }
        Ok(conn)
    }

    /// TCP to the first of `addrs` that accepts (the resolved addresses of `host`).
    pub async fn open_tcp(
        host: &str,
        port: u16,
        addrs: &[SocketAddr],
        tls: Arc<ClientConfig>,
        timeout: Duration,
    ) -> Result<Conn, HostError> {
        let label = format!("{host}:{port}");
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(addrs))
            .await
            .map_err(|_| HostError::Timeout {
                server: label.clone(),
                message: format!("no TCP connection within {} s; check the host name, the port and firewalls", timeout.as_secs()),
            })?
            .map_err(|e| HostError::Network {
                server: label.clone(),
                message: if e.kind() == io::ErrorKind::ConnectionRefused {
                    "connection refused: nothing listens on this port; check the port number and whether the protocol is enabled at the provider".to_string()
                } else {
                    format!("cannot connect: {e}")
                },
            })?;
        // Commands are small; never let Nagle hold them back.
        tcp.set_nodelay(true).map_err(|e| HostError::Network { server: label.clone(), message: e.to_string() })?;
        Ok(Conn { inner: Inner::Plain(tcp), host: host.to_string(), port, label, tls })
    }

    /// The implicit-TLS handshake, bounded by `timeout`.
    pub async fn handshake(&mut self, timeout: Duration) -> Result<(), HostError> {
        tokio::time::timeout(timeout, self.upgrade(true)).await.map_err(|_| HostError::Timeout {
            server: self.label.clone(),
            message: "the TLS handshake did not finish in time".into(),
        })?
    }

    /// The negotiated TLS version, once TLS is up.
    pub fn tls_version(&self) -> Option<String> {
        match &self.inner {
            Inner::Tls(t) => t.get_ref().1.protocol_version().map(|v| format!("{v:?}").replace('_', ".").replace("TLSv1.", "TLS 1.")),
            _ => None,
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Upgrades the connection to TLS in place. Refuses when the server already sent bytes
    /// that we have not read (they would be clear text the server injected before TLS).
    pub async fn start_tls(&mut self) -> Result<(), HostError> {
        self.upgrade(false).await
    }

    /// The TLS handshake on the TCP connection: `implicit` right after connecting (TLS from
    /// the first byte), otherwise after the server accepted STARTTLS.
    async fn upgrade(&mut self, implicit: bool) -> Result<(), HostError> {
        let tcp = match std::mem::replace(&mut self.inner, Inner::Gone) {
            Inner::Plain(t) => t,
            other => {
                self.inner = other;
                return Err(HostError::Tls { server: self.label.clone(), message: "TLS is already active".into() });
            }
        };
        let mut probe = [0u8; 1];
        match tcp.try_read(&mut probe) {
            Ok(0) => {
                return Err(HostError::Network {
                    server: self.label.clone(),
                    message: "the server closed the connection before the TLS handshake".into(),
                })
            }
            // Before our first byte on a TLS port, the server speaks first only in clear text:
            // the port expects no TLS from the first byte (the admin's TLS switch is wrong).
            Ok(_) if implicit => {
                return Err(HostError::NotTls {
                    server: self.label.clone(),
                    port: self.port,
                    detail: "the server greeted in clear text before the TLS handshake began".into(),
                })
            }
            Ok(_) => {
                return Err(HostError::Tls {
                    server: self.label.clone(),
                    message: "the server sent data before the TLS handshake (possible response injection); aborted".into(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(HostError::Network { server: self.label.clone(), message: e.to_string() }),
        }
        let name = ServerName::try_from(self.host.clone()).map_err(|_| HostError::Tls {
            server: self.label.clone(),
            message: format!("\"{}\" is not a valid TLS server name", self.host),
        })?;
        let tls = TlsConnector::from(self.tls.clone()).connect(name, tcp).await.map_err(|e| {
            if implicit && answered_in_clear_text(&e) {
                // rustls' own words ("received corrupt message of type InvalidContentType")
                // are kept as the detail; the headline says what the admin must change.
                HostError::NotTls { server: self.label.clone(), port: self.port, detail: e.to_string() }
            } else {
                HostError::Tls { server: self.label.clone(), message: describe_tls_text(e.to_string(), "; the mail provider must renew it") }
            }
        })?;
        self.inner = Inner::Tls(Box::new(tls));
        Ok(())
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(t) => t.write_all(bytes).await,
            Inner::Tls(t) => {
                t.write_all(bytes).await?;
                t.flush().await
            }
            Inner::Gone => Err(io::Error::new(io::ErrorKind::NotConnected, "connection closed")),
        }
    }

    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(t) => t.read(buf).await,
            Inner::Tls(t) => t.read(buf).await,
            Inner::Gone => Ok(0),
        }
    }

    pub async fn close(&mut self) {
        match std::mem::replace(&mut self.inner, Inner::Gone) {
            Inner::Plain(mut t) => {
                let _ = t.shutdown().await;
            }
            Inner::Tls(mut t) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), t.shutdown()).await;
            }
            Inner::Gone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A clear-text server on a port configured for TLS from the first byte: whether its
    /// greeting arrives before or after our handshake starts, the error names clear text (the
    /// TLS switch), never an injection.
    #[tokio::test]
    async fn a_clear_text_greeting_on_a_tls_port_is_the_tls_switch() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"* OK IMAP4rev1 ready\r\n").await.unwrap();
            let _ = sent_tx.send(());
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let tls = tls_config(None).unwrap();
        let mut conn = Conn::open_tcp("localhost", addr.port(), &[addr], tls, Duration::from_secs(5)).await.unwrap();
        sent_rx.await.unwrap();
        // The greeting is on our side of the socket before the handshake starts (peek waits
        // for it without consuming it).
        if let Inner::Plain(t) = &conn.inner {
            let mut b = [0u8; 1];
            tokio::time::timeout(Duration::from_secs(5), t.peek(&mut b)).await.unwrap().unwrap();
        }
        let e = conn.handshake(Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(e, HostError::NotTls { .. }), "{e:?}");
        let headline = e.to_string();
        assert!(headline.contains("clear text") && headline.contains("did not speak TLS"), "{headline}");
        assert!(!headline.contains("injection"), "{headline}");
    }
}
