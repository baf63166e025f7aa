//! The host's small HTTPS client for the OAuth requests the guest builds: one request per
//! connection (`Connection: close`), bounded response size, TLS verified with the tenant's
//! roots. Plain http is only allowed to loopback addresses (test authorization servers).

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::HostError;

/// Responses larger than this are refused (token responses are a few kilobytes).
const MAX_RESPONSE: usize = 1024 * 1024;

/// A request to execute (the guest's `http-request`).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

/// A response (the guest's `http-response`).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

fn err(url: &str, message: impl Into<String>) -> HostError {
    HostError::Network { server: url.split('?').next().unwrap_or(url).to_string(), message: message.into() }
}

fn parse_url(url: &str) -> Result<Target, HostError> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(err(url, "only http:// and https:// URLs are supported"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(url, "the URL is malformed"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h.trim_start_matches('[').trim_end_matches(']').to_string(), p.parse().map_err(|_| err(url, "bad port"))?)
        }
        _ => (authority.to_string(), if tls { 443 } else { 80 }),
    };
    if !tls && !matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1") {
        return Err(err(url, "refusing plain http to a non-loopback host; OAuth endpoints must use https"));
    }
    Ok(Target { tls, host, port, path })
}

/// Executes one request.
pub async fn execute(req: &Request<'_>, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Response, HostError> {
    tokio::time::timeout(timeout, execute_inner(req, tls, None))
        .await
        .map_err(|_| err(req.url, format!("no answer within {} s", timeout.as_secs())))?
}

/// Executes one request over a connection to `ip` (resolved by the caller, e.g. with its own
/// DNS resolver); the URL's host is still the TLS server name and the Host header.
pub async fn execute_at(req: &Request<'_>, ip: std::net::IpAddr, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Response, HostError> {
    tokio::time::timeout(timeout, execute_inner(req, tls, Some(ip)))
        .await
        .map_err(|_| err(req.url, format!("no answer within {} s", timeout.as_secs())))?
}

async fn execute_inner(req: &Request<'_>, tls: Arc<ClientConfig>, ip: Option<std::net::IpAddr>) -> Result<Response, HostError> {
    let t = parse_url(req.url)?;
    let tcp = match ip {
        Some(ip) => TcpStream::connect((ip, t.port)).await,
        None => TcpStream::connect((t.host.as_str(), t.port)).await,
    }
    .map_err(|e| err(req.url, format!("cannot connect: {e}")))?;
    tcp.set_nodelay(true).map_err(|e| err(req.url, e.to_string()))?;
    let mut head = format!("{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n", req.method, t.path, t.host, req.body.len());
    for (k, v) in req.headers {
        if k.chars().chain(v.chars()).any(|c| c == '\r' || c == '\n') {
            return Err(err(req.url, "a request header contains a line break"));
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(req.body);
    if t.tls {
        let name = ServerName::try_from(t.host.clone()).map_err(|_| err(req.url, "bad TLS server name"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| HostError::Tls { server: t.host.clone(), message: e.to_string() })?;
        exchange(stream, &bytes, req.url).await
    } else {
        exchange(tcp, &bytes, req.url).await
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, request: &[u8], url: &str) -> Result<Response, HostError> {
    s.write_all(request).await.map_err(|e| err(url, format!("write failed: {e}")))?;
    s.flush().await.map_err(|e| err(url, format!("write failed: {e}")))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_RESPONSE {
                    return Err(err(url, "the response is larger than 1 MB"));
                }
            }
            // A peer that closes TLS without close_notify after a complete response is common.
            Err(_) if !raw.is_empty() => break,
            Err(e) => return Err(err(url, format!("read failed: {e}"))),
        }
    }
    parse_response(&raw).ok_or_else(|| err(url, "the server sent a malformed HTTP response"))
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        body = dechunk(&body)?;
    } else if let Some(len) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.parse::<usize>().ok()) {
        body.truncate(len);
    }
    Some(Response { status, headers, body })
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_loopback_only_http() {
        let t = parse_url("https://login.example.com/tenant/token?x=1").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port, t.path.as_str()), (true, "login.example.com", 443, "/tenant/token?x=1"));
        let t = parse_url("http://127.0.0.1:10800/token").unwrap();
        assert_eq!((t.tls, t.port), (false, 10800));
        assert!(parse_url("http://auth.example.com/token").is_err());
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("https://user@evil.example/").is_err());
    }

    #[test]
    fn responses_with_length_and_chunks() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse_response(b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\"}\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"{\"a\"}"[..]));
        assert!(parse_response(b"garbage").is_none());
    }
}
