//! TCP and TLS for the guest's sessions: connect with a timeout, TCP_NODELAY, rustls with the
//! system roots plus an optional extra CA, and in-place STARTTLS upgrades.
//!
//! Once TLS is up, `Conn::start_reader` moves reading and decryption to a thread of its own,
//! so the transfer overlaps the guest's parsing and the host's storing.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
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
    /// TLS whose reading runs on its own thread (see `Conn::start_reader`).
    Pumped(Box<Pump>),
    Gone,
}

/// Ciphertext read from the socket at once by the reader thread; each read becomes at most one
/// plaintext chunk.
const WIRE_CHUNK: usize = 256 * 1024;

/// Plaintext chunks the reader thread may run ahead of the session: with `WIRE_CHUNK` this
/// bounds the memory of a connection to about 1 MB whatever the mailbox holds.
const READ_AHEAD: usize = 4;

/// What the reader thread hands over: plaintext, or an empty chunk at the end of the stream.
type Chunk = io::Result<Vec<u8>>;

/// A TLS connection whose reading and decryption run on a thread of its own. Only the
/// session's thread writes to the socket, so TLS records go out in the order they were sealed;
/// anything the reader's side must send (a key update) waits in the connection for the next write.
struct Pump {
    tls: Arc<Mutex<ClientConnection>>,
    /// Used for writing only; the reader thread holds a clone of the same socket.
    tcp: TcpStream,
    chunks: mpsc::Receiver<Chunk>,
    /// Set while the reader holds bytes it read from the socket and has not handed over yet.
    busy: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The unread rest of a chunk, for `Conn::read` into a caller's buffer.
    rest: Vec<u8>,
    ended: bool,
}

fn poisoned() -> io::Error {
    io::Error::other("the TLS reader stopped unexpectedly")
}

impl Pump {
    fn start(tls: TlsStream<TcpStream>) -> io::Result<Pump> {
        let (tcp, conn) = tls.into_inner();
        // The reader gets a clone of the socket registered with a runtime of its own; this one
        // stays with the session's runtime for writing.
        let std_tcp = tcp.into_std()?;
        let reader_tcp = std_tcp.try_clone()?;
        let tcp = TcpStream::from_std(std_tcp)?;
        let tls = Arc::new(Mutex::new(conn));
        let busy = Arc::new(AtomicBool::new(false));
        let (tx, chunks) = mpsc::channel(READ_AHEAD);
        let (stop, stopped) = oneshot::channel();
        let (t2, b2) = (tls.clone(), busy.clone());
        let thread = std::thread::Builder::new()
            .name("mailplug-tls-reader".into())
            .spawn(move || read_loop(reader_tcp, t2, tx, b2, stopped))?;
        Ok(Pump { tls, tcp, chunks, busy, stop: Some(stop), thread: Some(thread), rest: Vec::new(), ended: false })
    }

    async fn next(&mut self) -> Chunk {
        if self.ended {
            return Ok(Vec::new());
        }
        let chunk = self.chunks.recv().await.unwrap_or_else(|| Ok(Vec::new()));
        self.ended = !matches!(&chunk, Ok(c) if !c.is_empty());
        chunk
    }

    /// A chunk that is already here or being decrypted; None when the next one must come
    /// from the server.
    async fn ready(&mut self) -> Option<Chunk> {
        if self.ended {
            return Some(Ok(Vec::new()));
        }
        match self.chunks.try_recv() {
            Ok(chunk) => {
                self.ended = !matches!(&chunk, Ok(c) if !c.is_empty());
                Some(chunk)
            }
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.ended = true;
                Some(Ok(Vec::new()))
            }
            Err(mpsc::error::TryRecvError::Empty) if self.busy.load(Ordering::Acquire) => Some(self.next().await),
            Err(mpsc::error::TryRecvError::Empty) => None,
        }
    }

    /// Seals `bytes` (possibly after records the reader side queued) and writes them.
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let sealed = {
            let mut conn = self.tls.lock().map_err(|_| poisoned())?;
            conn.writer().write_all(bytes)?;
            let mut out = Vec::with_capacity(bytes.len() + 64);
            while conn.wants_write() {
                conn.write_tls(&mut out)?;
            }
            out
        };
        self.tcp.write_all(&sealed).await
    }

    fn stop_reader(&mut self) -> Option<JoinHandle<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.chunks.close();
        self.thread.take()
    }

    async fn close(mut self) {
        if let Some(thread) = self.stop_reader() {
            // The reader only ever waits on the socket or the channel, and both stop with it.
            let _ = thread.join();
        }
        let notify = self.tls.lock().ok().map(|mut conn| {
            conn.send_close_notify();
            let mut out = Vec::new();
            while conn.wants_write() {
                if conn.write_tls(&mut out).is_err() {
                    break;
                }
            }
            out
        });
        let tcp = &mut self.tcp;
        let _ = tokio::time::timeout(Duration::from_secs(2), async move {
            if let Some(bytes) = notify {
                tcp.write_all(&bytes).await?;
            }
            tcp.shutdown().await
        })
        .await;
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        // Not joined here: dropping must not wait; the thread ends on its own.
        self.stop_reader();
    }
}

/// The reader thread: reads ciphertext, decrypts it and hands plaintext to the session until
/// the end of the stream, an error, or `stop`.
fn read_loop(
    tcp: std::net::TcpStream,
    tls: Arc<Mutex<ClientConnection>>,
    out: mpsc::Sender<Chunk>,
    busy: Arc<AtomicBool>,
    stop: oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_io().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = out.blocking_send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let mut stop = stop;
        let mut tcp = match TcpStream::from_std(tcp) {
            Ok(t) => t,
            Err(e) => {
                let _ = out.send(Err(e)).await;
                return;
            }
        };
        let mut wire = vec![0u8; WIRE_CHUNK];
        // Records that came with the handshake may already wait inside the connection.
        let mut n = 0;
        let mut eof = false;
        loop {
            let (plain, end) = decrypt(&tls, &wire[..n], eof);
            if !plain.is_empty() && out.send(Ok(plain)).await.is_err() {
                return;
            }
            if let Some(end) = end {
                let _ = out.send(end).await;
                return;
            }
            busy.store(false, Ordering::Release);
            n = tokio::select! {
                r = tcp.read(&mut wire) => match r {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = out.send(Err(e)).await;
                        return;
                    }
                },
                _ = &mut stop => return,
            };
            busy.store(true, Ordering::Release);
            eof = n == 0;
        }
    });
}

/// Feeds ciphertext to the connection (an empty `wire` with `eof` marks the end of the
/// stream) and returns the plaintext it yields, with the end of the stream when it came: an
/// empty chunk after the server's close_notify, an error otherwise.
fn decrypt(tls: &Mutex<ClientConnection>, mut wire: &[u8], eof: bool) -> (Vec<u8>, Option<Chunk>) {
    let mut plain = Vec::new();
    let mut conn = match tls.lock() {
        Ok(c) => c,
        Err(_) => return (plain, Some(Err(poisoned()))),
    };
    loop {
        if !wire.is_empty() || eof {
            // Fails only while received plaintext waits unread; it is drained below each time.
            match conn.read_tls(&mut wire) {
                // Nothing more is accepted after the server's close_notify: the rest is ignored.
                Ok(0) => wire = &[],
                Ok(_) => {}
                Err(e) => return (plain, Some(Err(e))),
            }
        }
        let state = match conn.process_new_packets() {
            Ok(s) => s,
            Err(e) => return (plain, Some(Err(io::Error::new(io::ErrorKind::InvalidData, e)))),
        };
        let start = plain.len();
        plain.resize(start + state.plaintext_bytes_to_read(), 0);
        if let Err(e) = conn.reader().read_exact(&mut plain[start..]) {
            plain.truncate(start);
            return (plain, Some(Err(e)));
        }
        if wire.is_empty() {
            break;
        }
    }
    // Everything is drained: this tells the end of the stream (clean or not) from "more to come".
    match conn.reader().read(&mut [0u8; 1]) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => (plain, None),
        Ok(_) => (plain, Some(Ok(Vec::new()))),
        Err(e) => (plain, Some(Err(e))),
    }
}

/// One connection to a mail server.
pub struct Conn {
    inner: Inner,
    host: String,
    label: String,
    tls: Arc<ClientConfig>,
}

fn describe_tls_error(e: &io::Error) -> String {
    // rustls errors come wrapped in io::Error; make the common ones actionable.
    let text = e.to_string();
    if text.contains("UnknownIssuer") {
        format!("the server's certificate is not signed by a trusted authority ({text}); install the issuing CA with `extra_ca_file`, or fix the server's certificate chain")
    } else if text.contains("NotValidForName") {
        format!("the server's certificate is not valid for this host name ({text}); use the host name printed on the certificate")
    } else if text.contains("Expired") {
        format!("the server's certificate has expired ({text}); the mail provider must renew it")
    } else {
        text
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
        Ok(Conn { inner: Inner::Plain(tcp), host: host.to_string(), label, tls })
    }

    /// The implicit-TLS handshake, bounded by `timeout`.
    pub async fn handshake(&mut self, timeout: Duration) -> Result<(), HostError> {
        tokio::time::timeout(timeout, self.start_tls()).await.map_err(|_| HostError::Timeout {
            server: self.label.clone(),
            message: "the TLS handshake did not finish in time".into(),
        })?
    }

    /// The negotiated TLS version, once TLS is up.
    pub fn tls_version(&self) -> Option<String> {
        let version = match &self.inner {
            Inner::Tls(t) => t.get_ref().1.protocol_version(),
            Inner::Pumped(p) => p.tls.lock().ok().and_then(|c| c.protocol_version()),
            _ => None,
        };
        version.map(|v| format!("{v:?}").replace('_', ".").replace("TLSv1.", "TLS 1."))
    }

    /// Moves reading and decryption of a TLS connection to a thread of its own, feeding a
    /// bounded queue of plaintext chunks (see `read_chunk`). Only once TLS is up: a clear-text
    /// connection keeps reading in place, so that STARTTLS still finds any bytes the server
    /// sent ahead of the handshake. Without TLS, or when already started, nothing changes.
    pub fn start_reader(&mut self) -> Result<(), HostError> {
        if !matches!(self.inner, Inner::Tls(_)) {
            return Ok(());
        }
        let Inner::Tls(tls) = std::mem::replace(&mut self.inner, Inner::Gone) else {
            return Ok(());
        };
        let pump = Pump::start(*tls)
            .map_err(|e| HostError::Network { server: self.label.clone(), message: format!("cannot start reading: {e}") })?;
        self.inner = Inner::Pumped(Box::new(pump));
        Ok(())
    }

    /// The next bytes from the server, as many as arrived (up to 256 KB); empty at the end
    /// of the stream.
    pub async fn read_chunk(&mut self) -> io::Result<Vec<u8>> {
        if let Inner::Pumped(p) = &mut self.inner {
            if !p.rest.is_empty() {
                return Ok(std::mem::take(&mut p.rest));
            }
            return p.next().await;
        }
        let mut buf = vec![0u8; WIRE_CHUNK];
        let n = self.read(&mut buf).await?;
        buf.truncate(n);
        Ok(buf)
    }

    /// Bytes from the server that are already here (or, with the reader thread, being
    /// decrypted); None when a read would have to wait for the server.
    pub async fn ready_chunk(&mut self) -> Option<io::Result<Vec<u8>>> {
        if let Inner::Pumped(p) = &mut self.inner {
            if !p.rest.is_empty() {
                return Some(Ok(std::mem::take(&mut p.rest)));
            }
            return p.ready().await;
        }
        tokio::time::timeout(Duration::ZERO, self.read_chunk()).await.ok()
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Upgrades the connection to TLS in place. Refuses when the server already sent bytes
    /// that we have not read (they would be clear text the server injected before TLS).
    pub async fn start_tls(&mut self) -> Result<(), HostError> {
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
        let tls = TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| HostError::Tls { server: self.label.clone(), message: describe_tls_error(&e) })?;
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
            Inner::Pumped(p) => p.write_all(bytes).await,
            Inner::Gone => Err(io::Error::new(io::ErrorKind::NotConnected, "connection closed")),
        }
    }

    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(t) => t.read(buf).await,
            Inner::Tls(t) => t.read(buf).await,
            Inner::Pumped(p) => {
                if p.rest.is_empty() {
                    p.rest = p.next().await?;
                }
                let n = buf.len().min(p.rest.len());
                buf[..n].copy_from_slice(&p.rest[..n]);
                p.rest.drain(..n);
                Ok(n)
            }
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
            Inner::Pumped(p) => p.close().await,
            Inner::Gone => {}
        }
    }
}
