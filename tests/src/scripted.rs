//! Scripted servers for the integration tests: a server on 127.0.0.1:0 that plays a fixed
//! script (write these bytes, read a line or a whole command, start TLS, flood) and records
//! everything clients sent. For faults and attacks a real server never produces, and for
//! server kinds the rig does not have (Courier's namespaces). Moved here from
//! `e2e/hostile.rs` so that more than one test file can use it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::rig;

/// One step of a scripted server.
#[derive(Clone)]
pub enum Step {
    /// Write these bytes.
    Send(Vec<u8>),
    /// Read one line from the client.
    Recv,
    /// Read one IMAP command with its literals: a line, and while it ends with `{n}` (answered
    /// with "+ go" first) or `{n+}`, n bytes and the line that follows.
    RecvCommand,
    /// Run the TLS handshake as the rig's server certificate (after STARTTLS).
    Tls,
    /// Write this line again and again until the client goes away (at most `n` times).
    Flood(Vec<u8>, usize),
}
use Step::{Recv, RecvCommand, Send, Tls};

pub fn s(text: &str) -> Step {
    Send(text.as_bytes().to_vec())
}

trait Io: AsyncRead + AsyncWrite + Unpin + std::marker::Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + std::marker::Send> Io for T {}

/// A scripted server: accepts connections one after another (each runs the whole script) and
/// records every byte clients sent.
pub struct Fake {
    pub port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    connections: Arc<Mutex<u32>>,
}

impl Fake {
    pub async fn start(script: Vec<Step>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let (rec, conns) = (received.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                *conns.lock().unwrap() += 1;
                let (script, rec) = (script.clone(), rec.clone());
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(30), serve(Box::new(tcp), script, rec)).await;
                });
            }
        });
        Fake { port, received, connections }
    }
    /// Everything clients sent, as text.
    pub fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
    pub fn connections(&self) -> u32 {
        *self.connections.lock().unwrap()
    }
}

/// One line from `pending` (filled from `io` as needed), recorded; None when the client left.
async fn read_line(io: &mut Box<dyn Io>, pending: &mut Vec<u8>, rec: &Mutex<Vec<u8>>) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(p) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=p).collect();
            rec.lock().unwrap().extend_from_slice(&line);
            return Ok(Some(line));
        }
        let mut buf = [0u8; 4096];
        let n = io.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        pending.extend_from_slice(&buf[..n]);
    }
}

/// `{n}` or `{n+}` at the end of a line: (n, non-synchronising).
fn literal_at_end(line: &[u8]) -> Option<(usize, bool)> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let inner = text.strip_suffix('}')?;
    let open = inner.rfind('{')?;
    let digits = &inner[open + 1..];
    let (digits, non_sync) = match digits.strip_suffix('+') {
        Some(d) => (d, true),
        None => (digits, false),
    };
    Some((digits.parse().ok()?, non_sync))
}

async fn serve(mut io: Box<dyn Io>, script: Vec<Step>, rec: Arc<Mutex<Vec<u8>>>) -> std::io::Result<()> {
    let mut pending: Vec<u8> = Vec::new();
    for step in script {
        match step {
            Send(bytes) => io.write_all(&bytes).await?,
            Recv => {
                if read_line(&mut io, &mut pending, &rec).await?.is_none() {
                    return Ok(());
                }
            }
            RecvCommand => {
                let Some(mut line) = read_line(&mut io, &mut pending, &rec).await? else { return Ok(()) };
                while let Some((n, non_sync)) = literal_at_end(&line) {
                    if !non_sync {
                        io.write_all(b"+ go\r\n").await?;
                    }
                    while pending.len() < n {
                        let mut buf = [0u8; 4096];
                        let got = io.read(&mut buf).await?;
                        if got == 0 {
                            return Ok(());
                        }
                        pending.extend_from_slice(&buf[..got]);
                    }
                    let literal: Vec<u8> = pending.drain(..n).collect();
                    rec.lock().unwrap().extend_from_slice(&literal);
                    let Some(rest) = read_line(&mut io, &mut pending, &rec).await? else { return Ok(()) };
                    line = rest;
                }
            }
            Tls => {
                let acceptor = tokio_rustls::TlsAcceptor::from(server_tls());
                io = Box::new(acceptor.accept(io).await?);
            }
            Step::Flood(line, n) => {
                for _ in 0..n {
                    io.write_all(&line).await?;
                }
            }
        }
    }
    // Keep the connection open until the client closes it.
    let mut buf = [0u8; 4096];
    while io.read(&mut buf).await? > 0 {}
    Ok(())
}

/// The rig's server certificate and key.
pub fn server_tls() -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(rig().get("RIG_DIR")).join("tls");
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("server-chain.pem")).expect("chain").map(|c| c.expect("cert")).collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).expect("key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    Arc::new(cfg)
}
