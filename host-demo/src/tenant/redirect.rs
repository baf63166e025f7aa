//! The loopback listener for the browser's OAuth2 redirect (`mailplug oauth login`), served by
//! hyper 1: bound before the authorization URL is shown, answers only a GET of the registered
//! path (a small page in English and German), 404 to anything else, one request per
//! connection, bounded request size and connection time, and a bounded wait overall.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::error::HostError;

/// The largest request head a browser may send (hyper's read buffer).
const MAX_REDIRECT_REQUEST: usize = 16 * 1024;
/// How long one connection may take from accept to the answer written.
const CONNECTION_TIME: Duration = Duration::from_secs(10);
/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 16;

const RECEIVED: &str = "mailplug received the answer. You can close this window.<br>\
    mailplug hat die Antwort erhalten. Sie k&ouml;nnen dieses Fenster schlie&szlig;en.";
const ELSEWHERE: &str = "Not the mailplug redirect.<br>Nicht die Weiterleitung f&uuml;r mailplug.";

/// The loopback listener for the browser's redirect (`oauth login`): bound before the
/// authorization URL is shown, so a browser that comes back at once finds it listening.
pub struct LoopbackReceiver {
    listener: TcpListener,
    path: String,
}

impl LoopbackReceiver {
    /// Listens on the host and port of a loopback `http://` redirect URI.
    pub async fn bind(redirect_uri: &str) -> Result<LoopbackReceiver, HostError> {
        let bad = |m: &str| HostError::NotFound(format!("redirect_uri {redirect_uri}: {m}"));
        let rest = redirect_uri
            .strip_prefix("http://")
            .ok_or_else(|| bad("must be a loopback http:// URL to receive the redirect here"))?;
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], rest[i..].split(['?', '#']).next().unwrap_or("")),
            None => (rest, ""),
        };
        let host = match authority.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        };
        if !crate::http::is_loopback_host(host.trim_start_matches('[').trim_end_matches(']')) {
            return Err(bad("must be a loopback http:// URL (127.0.0.1, [::1] or localhost) to receive the redirect here"));
        }
        let path = if path.is_empty() { "/".to_string() } else { path.to_string() };
        let listener = TcpListener::bind(authority)
            .await
            .map_err(|e| HostError::Network { server: authority.to_string(), message: format!("cannot listen: {e}") })?;
        Ok(LoopbackReceiver { listener, path })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Waits for a GET of the registered redirect path and returns its path and query, once
    /// the browser has its answer. Any other request (another path, a favicon, a probe) is
    /// answered 404 and waited past; the login's state is not touched by it.
    pub async fn receive(&self, timeout: Duration) -> Result<String, HostError> {
        let wait = async {
            let mut connections: JoinSet<Option<String>> = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = self.listener.accept(), if connections.len() < MAX_CONNECTIONS => match accepted {
                        Ok((stream, _)) => {
                            connections.spawn(serve(stream, self.path.clone()));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    },
                    Some(done) = connections.join_next(), if !connections.is_empty() => {
                        if let Ok(Some(target)) = done {
                            return target;
                        }
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| HostError::OAuth {
            kind: "NoRedirect".into(),
            needs_reauthorization: true,
            message: format!(
                "no redirect arrived within {} s; run the login again / innerhalb von {} s kam keine Weiterleitung an; Anmeldung wiederholen",
                timeout.as_secs(),
                timeout.as_secs()
            ),
        })
    }

    /// The request target when the request is a GET of the redirect path.
    #[cfg(test)]
    fn accepts(&self, method: &Method, target: &str) -> Option<String> {
        accepts(&self.path, method, target)
    }
}

fn accepts(path: &str, method: &Method, target: &str) -> Option<String> {
    let asked = target.split(['?', '#']).next()?;
    (method == Method::GET && asked == path).then(|| target.to_string())
}

fn page(status: StatusCode, text: &str) -> hyper::Response<Full<Bytes>> {
    let body = format!("<!doctype html><html><head><meta charset=\"utf-8\"><title>mailplug</title></head><body><p>{text}</p></body></html>");
    let mut r = hyper::Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    h.insert(hyper::header::REFERRER_POLICY, hyper::header::HeaderValue::from_static("no-referrer"));
    r
}

/// Serves one connection (one request); the redirect's target when it was the one.
async fn serve(stream: TcpStream, path: String) -> Option<String> {
    let found: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = found.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let target = req.uri().path_and_query().map(|pq| pq.as_str().to_string()).unwrap_or_default();
        let answer = match accepts(&path, req.method(), &target) {
            Some(t) => {
                if let Ok(mut f) = seen.lock() {
                    *f = Some(t);
                }
                page(StatusCode::OK, RECEIVED)
            }
            None => page(StatusCode::NOT_FOUND, ELSEWHERE),
        };
        async move { Ok::<_, Infallible>(answer) }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .max_buf_size(MAX_REDIRECT_REQUEST)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(CONNECTION_TIME, connection).await;
    found.lock().ok().and_then(|mut f| f.take())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, target) of a request head's first line.
    fn line(head: &str) -> (Method, String) {
        let mut words = head.lines().next().unwrap_or("").split(' ');
        let method = Method::from_bytes(words.next().unwrap_or("").as_bytes()).unwrap_or(Method::CONNECT);
        (method, words.next().unwrap_or("").to_string())
    }

    fn accepted(r: &LoopbackReceiver, head: &str) -> Option<String> {
        let (m, t) = line(head);
        if t.is_empty() {
            return None;
        }
        r.accepts(&m, &t)
    }

    #[tokio::test]
    async fn the_receiver_accepts_only_the_redirect_path() {
        let r = LoopbackReceiver::bind("http://127.0.0.1:0/callback").await.unwrap();
        assert_eq!(accepted(&r, "GET /callback?code=x&state=y HTTP/1.1\r\n").as_deref(), Some("/callback?code=x&state=y"));
        assert_eq!(accepted(&r, "GET /callback HTTP/1.1\r\n").as_deref(), Some("/callback"));
        for other in ["GET /evil?code=x&state=y HTTP/1.1", "GET /callback/x?state=y HTTP/1.1", "POST /callback?state=y HTTP/1.1", "GET /favicon.ico HTTP/1.1", ""] {
            assert_eq!(accepted(&r, other), None, "{other}");
        }
        let root = LoopbackReceiver::bind("http://127.0.0.1:0").await.unwrap();
        assert!(accepted(&root, "GET /?state=y HTTP/1.1").is_some());
        assert!(LoopbackReceiver::bind("https://127.0.0.1:0/cb").await.is_err());
        assert!(LoopbackReceiver::bind("http://192.0.2.1:0/cb").await.is_err());
    }

    async fn get(client: &reqwest::Client, url: String) -> (u16, String) {
        let r = client.get(url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Over real HTTP: other paths and methods get 404 and the wait goes on; the redirect
    /// gets the page in English and German, and its target is returned.
    #[tokio::test]
    async fn the_receiver_answers_over_http_and_returns_the_redirect() {
        let r = LoopbackReceiver::bind("http://127.0.0.1:0/callback").await.unwrap();
        let base = format!("http://{}", r.local_addr().unwrap());
        let browser = tokio::spawn(async move {
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            let elsewhere = get(&c, format!("{base}/elsewhere?code=x&state=y")).await;
            let posted = c.post(format!("{base}/callback?code=x&state=y")).send().await.unwrap().status().as_u16();
            let back = get(&c, format!("{base}/callback?code=abc&state=def")).await;
            (elsewhere, posted, back)
        });
        let target = r.receive(Duration::from_secs(20)).await.unwrap();
        assert_eq!(target, "/callback?code=abc&state=def");
        let ((status, _), posted, (ok, page)) = browser.await.unwrap();
        assert_eq!((status, posted, ok), (404, 404, 200));
        assert!(page.contains("You can close this window") && page.contains("Fenster schlie"), "{page}");
    }

    /// A request head over 16 KB is refused by hyper (431) without reaching the service; the
    /// login keeps waiting for the real redirect.
    #[tokio::test]
    async fn an_oversized_request_is_refused_and_does_not_count() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let r = LoopbackReceiver::bind("http://127.0.0.1:0/callback").await.unwrap();
        let addr = r.local_addr().unwrap();
        let browser = tokio::spawn(async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let big = format!("GET /callback?code=big&state=y HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(20 * 1024));
            let _ = s.write_all(big.as_bytes()).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer)).await;
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            let ok = c.get(format!("http://{addr}/callback?code=real&state=y")).send().await.unwrap().status().as_u16();
            (String::from_utf8_lossy(&answer).into_owned(), ok)
        });
        assert_eq!(r.receive(Duration::from_secs(20)).await.unwrap(), "/callback?code=real&state=y");
        let (answer, ok) = browser.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert_eq!(ok, 200);
    }

    #[tokio::test]
    async fn the_wait_is_bounded() {
        let r = LoopbackReceiver::bind("http://127.0.0.1:0/callback").await.unwrap();
        // A connection that never sends its request does not hold the wait past its bound.
        let _silent = tokio::net::TcpStream::connect(r.local_addr().unwrap()).await.unwrap();
        let e = r.receive(Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(&e, HostError::OAuth { kind, .. } if kind == "NoRedirect"), "{e:?}");
    }
}
