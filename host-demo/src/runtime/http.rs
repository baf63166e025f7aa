//! The host's HTTPS client for the OAuth requests the guest builds and for discovery's
//! autoconfig fetches, on reqwest (hyper 1 underneath, rustls with the roots of
//! `net::tls_config`): no redirects followed, no proxy, HTTP/1.1, bounded response size, a
//! connect and a whole-request timeout. Plain http is only allowed to loopback addresses (test
//! authorization servers). Errors name the URL without its query and never carry a header or
//! a body.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use rustls::ClientConfig;

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

/// Where a URL points: what the checks below decided.
struct Target {
    #[cfg_attr(not(test), allow(dead_code))]
    tls: bool,
    host: String,
    port: u16,
    #[cfg_attr(not(test), allow(dead_code))]
    path: String,
    url: Url,
}

/// The URL as errors show it: without query and fragment (they may carry codes or tokens).
pub fn redacted(url: &str) -> String {
    url.split(['?', '#']).next().unwrap_or(url).to_string()
}

fn err(url: &str, message: impl Into<String>) -> HostError {
    HostError::Network { server: redacted(url), message: message.into() }
}

/// Whether `host` (as written in a URL, IPv6 without brackets) is a loopback name or address.
pub fn is_loopback_host(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn parse_url(url: &str) -> Result<Target, HostError> {
    let tls = if url.starts_with("https://") {
        true
    } else if url.starts_with("http://") {
        false
    } else {
        return Err(err(url, "only http:// and https:// URLs are supported"));
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err(url, "the URL is malformed"));
    }
    let parsed = Url::parse(url).map_err(|_| err(url, "the URL is malformed"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(err(url, "the URL is malformed"));
    }
    let host = match parsed.host_str() {
        Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
        _ => return Err(err(url, "the URL is malformed")),
    };
    let port = parsed.port_or_known_default().ok_or_else(|| err(url, "bad port"))?;
    if !tls && !is_loopback_host(&host) {
        return Err(err(url, "refusing plain http to a non-loopback host; OAuth endpoints must use https"));
    }
    let path = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    };
    Ok(Target { tls, host, port, path, url: parsed })
}

/// Executes one request.
pub async fn execute(req: &Request<'_>, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Response, HostError> {
    execute_inner(req, tls, None, timeout).await
}

/// Executes one request over a connection to `ip` (resolved by the caller, e.g. with its own
/// DNS resolver); the URL's host is still the TLS server name and the Host header.
pub async fn execute_at(req: &Request<'_>, ip: IpAddr, tls: Arc<ClientConfig>, timeout: Duration) -> Result<Response, HostError> {
    execute_inner(req, tls, Some(ip), timeout).await
}

/// A client for one kind of request (idle connections are kept for its next requests while it
/// lives): rustls with `tls` (HTTP/1.1, no ALPN change), no proxy,
/// no redirects, connect bounded by `connect_timeout`, the whole request by `timeout`;
/// `pin` makes `host` connect to that address (the caller resolved it).
pub fn client(
    tls: &ClientConfig,
    connect_timeout: Duration,
    timeout: Duration,
    pin: Option<(&str, SocketAddr)>,
) -> Result<reqwest::Client, HostError> {
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(tls.clone())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .timeout(timeout);
    if let Some((host, addr)) = pin {
        b = b.resolve(host, addr);
    }
    b.build().map_err(|e| HostError::Plugin(format!("HTTP client setup: {}", e.without_url())))
}

async fn execute_inner(req: &Request<'_>, tls: Arc<ClientConfig>, ip: Option<IpAddr>, timeout: Duration) -> Result<Response, HostError> {
    let t = parse_url(req.url)?;
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|_| err(req.url, "bad HTTP method"))?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in req.headers {
        if k.chars().chain(v.chars()).any(|c| c == '\r' || c == '\n') {
            return Err(err(req.url, "a request header contains a line break"));
        }
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).map_err(|_| err(req.url, "a request header name is malformed"))?;
        // The value is not quoted: it may be a credential.
        let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| err(req.url, format!("the value of request header {name} is malformed")))?;
        headers.append(name, value);
    }
    let client = client(&tls, timeout, timeout, ip.map(|ip| (t.host.as_str(), SocketAddr::new(ip, t.port))))?;
    let call = async {
        let mut resp = client
            .request(method, t.url.clone())
            .headers(headers)
            .body(req.body.to_vec())
            .send()
            .await
            .map_err(|e| failure(req.url, &t, &e, timeout))?;
        if resp.content_length().is_some_and(|n| n > MAX_RESPONSE as u64) {
            return Err(err(req.url, "the response is larger than 1 MB"));
        }
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = read_body(&mut resp, MAX_RESPONSE).await.map_err(|e| match e {
            BodyError::TooLarge => err(req.url, "the response is larger than 1 MB"),
            BodyError::Failed(e) => failure(req.url, &t, &e, timeout),
        })?;
        Ok(Response { status, headers, body })
    };
    // reqwest's own timeout covers the request; this one also covers reading the body.
    tokio::time::timeout(timeout + Duration::from_millis(100), call)
        .await
        .map_err(|_| err(req.url, format!("no answer within {} s", timeout.as_secs())))?
}

/// Why a body was not read.
pub enum BodyError {
    TooLarge,
    Failed(reqwest::Error),
}

/// Reads a response body, refusing it once it exceeds `max` bytes (nothing more is read).
pub async fn read_body(resp: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Failed)? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A reqwest error as a typed host error: the cause in words, never the URL's query (reqwest
/// would print the whole URL).
fn failure(url: &str, t: &Target, e: &reqwest::Error, timeout: Duration) -> HostError {
    if e.is_timeout() {
        return err(url, format!("no answer within {} s", timeout.as_secs()));
    }
    if let Some(tls) = find_source::<rustls::Error>(e) {
        return HostError::Tls { server: t.host.clone(), message: describe_tls(tls) };
    }
    if e.is_connect() {
        return match find_source::<std::io::Error>(e) {
            Some(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                err(url, "cannot connect: connection refused (nothing listens on this port)")
            }
            Some(io) => err(url, format!("cannot connect: {io}")),
            None => err(url, "cannot connect"),
        };
    }
    if e.is_body() || e.is_decode() {
        return err(url, format!("read failed: {}", cause(e)));
    }
    if e.is_request() && find_source::<hyper::Error>(e).is_some_and(|h| h.is_parse()) {
        return err(url, "the server sent a malformed HTTP response");
    }
    err(url, cause(e))
}

/// The innermost cause of an error, in words (the URL left out).
pub fn cause(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    if text.contains("://") {
        "the request failed".into()
    } else {
        text
    }
}

/// The first error of type `T` in `e`'s source chain, looking inside `io::Error`s too (their
/// `source` skips the error they wrap, e.g. rustls' certificate errors).
pub fn find_source<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(t) = x.downcast_ref::<T>() {
            return Some(t);
        }
        cur = match x.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => x.source(),
        };
    }
    None
}

/// A TLS failure in words an admin can act on.
pub fn describe_tls(e: &rustls::Error) -> String {
    super::net::describe_tls_text(e.to_string(), "")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    /// Serves `raw` as the answer to one request on a loopback port and returns that port.
    async fn answer_with(raw: &'static [u8]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 16 * 1024];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(raw).await;
            let _ = s.shutdown().await;
        });
        port
    }

    async fn get(port: u16) -> Result<Response, HostError> {
        let url = format!("http://127.0.0.1:{port}/token?code=secret-code");
        let tls = crate::net::tls_config(None).unwrap();
        execute(&Request { method: "GET", url: &url, headers: &[], body: &[] }, tls, Duration::from_secs(10)).await
    }

    #[tokio::test]
    async fn responses_with_length_and_chunks() {
        let r = get(answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}").await).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let chunked = b"HTTP/1.1 400 Bad\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n2\r\n\"}\r\n0\r\n\r\n";
        let r = get(answer_with(chunked).await).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (400, &b"{\"a\"}"[..]));
        let e = get(answer_with(b"garbage").await).await.unwrap_err().to_string();
        assert!(!e.contains("secret-code"), "{e}");
    }

    #[tokio::test]
    async fn large_responses_redirects_and_silence_are_bounded() {
        // Over 1 MB, announced or not: refused.
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let big = BIG.get_or_init(|| {
            let mut v = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
            v.resize(v.len() + MAX_RESPONSE + 10, b'x');
            v
        });
        let e = get(answer_with(big).await).await.unwrap_err().to_string();
        assert!(e.contains("larger than 1 MB"), "{e}");
        let e = get(answer_with(b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\nxx").await).await.unwrap_err().to_string();
        assert!(e.contains("larger than 1 MB"), "{e}");
        // A redirect is returned, not followed.
        let r = get(answer_with(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/x\r\nContent-Length: 0\r\n\r\n").await).await.unwrap();
        assert_eq!(r.status, 302);
        assert!(r.headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("location") && v == "http://127.0.0.1:1/x"));
        // A server that accepts and never answers: cut at the timeout.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let url = format!("http://127.0.0.1:{port}/token?code=secret-code");
        let tls = crate::net::tls_config(None).unwrap();
        let started = std::time::Instant::now();
        let e = execute(&Request { method: "GET", url: &url, headers: &[], body: &[] }, tls, Duration::from_secs(1)).await.unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let e = e.to_string();
        assert!(e.contains("no answer within 1 s") && !e.contains("secret-code"), "{e}");
        hold.abort();
        // Nothing listening: a typed network error without the query.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = get(free).await.unwrap_err();
        assert!(matches!(&e, HostError::Network { message, .. } if message.contains("refused")), "{e:?}");
        assert!(!e.to_string().contains("secret-code"), "{e}");
    }
}
