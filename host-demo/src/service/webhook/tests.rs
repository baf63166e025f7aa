//! The webhook deliverer against real HTTP receivers (hyper, bound to 127.0.0.1:0) and an
//! in-memory event source.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Instant;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;

use super::*;
use crate::secret::Secret;

const SECRET: &str = "s3cr3t-webhook-key-never-shown";

/// How the test receiver answers one request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    /// Accepts the request and never answers.
    Hang,
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    timestamp: String,
    signature: String,
    content_type: String,
    body: Vec<u8>,
}

struct Receiver {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Receiver {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn ids(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.id).collect()
    }
}

/// A receiver on 127.0.0.1:0 answering the requests in turn with `script`, then with `then`.
async fn receiver(script: &[Answer], then: Answer) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks/mailplug?token=query-secret-xyz", listener.local_addr().unwrap());
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let script: Arc<Mutex<VecDeque<Answer>>> = Arc::new(Mutex::new(script.iter().copied().collect()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let (log, script) = (log.clone(), script.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (log, script) = (log.clone(), script.clone());
                    async move {
                        let header = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default();
                        let (id, timestamp, signature, content_type) =
                            (header("mailplug-event-id"), header("mailplug-timestamp"), header("mailplug-signature"), header("content-type"));
                        let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                        log.lock().unwrap().push(Seen { id, timestamp, signature, content_type, body });
                        let answer = script.lock().unwrap().pop_front().unwrap_or(then);
                        let status = match answer {
                            Answer::Status(s) => s,
                            Answer::Hang => {
                                tokio::time::sleep(Duration::from_secs(120)).await;
                                200
                            }
                        };
                        let mut r = hyper::Response::new(Full::new(Bytes::from_static(b"{\"echo\":\"whatever\"}")));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    Receiver { url, seen }
}

fn target(tenant: &str, url: &str, timeout: Duration) -> Target {
    Target {
        tenant: tenant.into(),
        webhook: WebhookConfig { url: url.into(), secret: Secret::new(SECRET.into()), timeout, insecure_plaintext: false },
        extra_ca: None,
        fence: None,
    }
}

fn fast() -> Policy {
    Policy {
        connect_timeout: Duration::from_secs(5),
        backoff_first: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        poll_interval: Duration::from_millis(50),
        ..Policy::default()
    }
}

fn event(id: &str, tenant: &str) -> Event {
    Event {
        id: id.into(),
        tenant: tenant.into(),
        kind: "message.stored".into(),
        payload: json!({"mailbox": "support", "message": id}),
        created_at_ms: now_ms(),
        attempts: 0,
    }
}

/// deliver_once until `done` says so, waiting for each retry's due time; at most 20 s.
async fn deliver_until(d: &mut Deliverer, source: &MemoryEvents, done: impl Fn(&MemoryEvents) -> bool) -> Vec<Report> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut reports = Vec::new();
    while !done(source) {
        assert!(Instant::now() < deadline, "not done within 20 s: {reports:?}");
        reports.push(d.deliver_once(source).await.unwrap());
        if let Some(at) = d.blocked_until_ms() {
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()) + 5)).await;
        }
    }
    reports
}

fn hmac_ok(secret: &[u8], s: &Seen) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = unhex(s.signature.strip_prefix("v1=").unwrap_or("")).unwrap_or_default();
    let mut signed = format!("{}.", s.timestamp).into_bytes();
    signed.extend_from_slice(&s.body);
    hmac::verify(&key, &signed, &tag).is_ok()
}

#[tokio::test]
async fn the_signature_verifies_with_the_secret_and_fails_with_another() {
    let r = receiver(&[], Answer::Status(200)).await;
    let source = MemoryEvents::default();
    let mut e = event("01J0000000000000000000000A", "acme");
    e.created_at_ms = 1_700_000_000_123;
    source.push(e);
    let mut d = Deliverer::new(target("acme", &r.url, Duration::from_secs(10)), fast()).unwrap();
    let report = d.deliver_once(&source).await.unwrap();
    assert_eq!(report.delivered, vec!["01J0000000000000000000000A".to_string()]);
    let seen = r.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    // Checked here with ring directly, and with the receiver's helper.
    assert!(hmac_ok(SECRET.as_bytes(), s), "{s:?}");
    assert!(!hmac_ok(b"another-secret-of-the-same-size", s));
    let now: u64 = s.timestamp.parse().unwrap();
    assert!(verify(SECRET.as_bytes(), &s.timestamp, &s.body, &s.signature, now, Duration::from_secs(300)));
    assert!(!verify(b"another-secret-of-the-same-size", &s.timestamp, &s.body, &s.signature, now, Duration::from_secs(300)));
    // A changed body, a changed timestamp or an old request do not verify.
    let mut tampered = s.body.clone();
    tampered[2] ^= 1;
    assert!(!verify(SECRET.as_bytes(), &s.timestamp, &tampered, &s.signature, now, Duration::from_secs(300)));
    assert!(!verify(SECRET.as_bytes(), &(now + 1).to_string(), &s.body, &s.signature, now, Duration::from_secs(300)));
    assert!(!verify(SECRET.as_bytes(), &s.timestamp, &s.body, &s.signature, now + 301, Duration::from_secs(300)));
    // The body: id, tenant, kind, created_at (RFC 3339), data; headers name the event.
    assert_eq!(s.id, "01J0000000000000000000000A");
    assert_eq!(s.content_type, "application/json");
    let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
    assert_eq!(v["id"], "01J0000000000000000000000A");
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["kind"], "message.stored");
    assert_eq!(v["created_at"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["data"]["message"], "01J0000000000000000000000A");
    assert_eq!(source.status("01J0000000000000000000000A"), Some((EventState::Delivered, 0, 0, 1)));
}

#[tokio::test]
async fn a_500_then_200_is_retried_and_delivered_once() {
    let r = receiver(&[Answer::Status(500)], Answer::Status(200)).await;
    let source = MemoryEvents::default();
    source.push(event("01A", "acme"));
    let policy = Policy { backoff_first: Duration::from_millis(400), ..fast() };
    let mut d = Deliverer::new(target("acme", &r.url, Duration::from_secs(10)), policy).unwrap();
    let first = d.deliver_once(&source).await.unwrap();
    let failed = first.failed.expect("the 500 fails");
    assert!(failed.error.contains("HTTP 500"), "{failed:?}");
    assert!(first.delivered.is_empty());
    let (state, attempts, next, _) = source.status("01A").unwrap();
    assert_eq!((state, attempts), (EventState::Pending, 1));
    assert!(next > now_ms().saturating_sub(1000), "the next attempt time is recorded");
    // Before the backoff has passed nothing is posted.
    if now_ms() + 20 < failed.retry_at_ms {
        d.deliver_once(&source).await.unwrap();
        assert_eq!(r.seen().len(), 1);
    }
    deliver_until(&mut d, &source, |s| s.status("01A").unwrap().0 == EventState::Delivered).await;
    assert_eq!(r.ids(), vec!["01A", "01A"]);
    // Delivered once: never posted again.
    assert_eq!(d.deliver_once(&source).await.unwrap(), Report::default());
    assert_eq!(r.seen().len(), 2);
    assert_eq!(source.status("01A").unwrap().3, 1);
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_cut_at_the_timeout_and_retried() {
    let r = receiver(&[Answer::Hang], Answer::Status(204)).await;
    let source = MemoryEvents::default();
    source.push(event("01A", "acme"));
    let mut d = Deliverer::new(target("acme", &r.url, Duration::from_secs(1)), fast()).unwrap();
    let started = Instant::now();
    let report = d.deliver_once(&source).await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    let failed = report.failed.expect("cut at the timeout");
    assert!(failed.error.contains("no answer within 1 s"), "{failed:?}");
    deliver_until(&mut d, &source, |s| s.status("01A").unwrap().0 == EventState::Delivered).await;
    assert_eq!(r.ids(), vec!["01A", "01A"]);
}

#[tokio::test]
async fn a_refused_connection_is_retried() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let source = MemoryEvents::default();
    source.push(event("01A", "acme"));
    let mut d = Deliverer::new(target("acme", &format!("http://127.0.0.1:{port}/h"), Duration::from_secs(5)), fast()).unwrap();
    let failed = d.deliver_once(&source).await.unwrap().failed.expect("refused");
    assert!(failed.error.contains("connection refused"), "{failed:?}");
    assert_eq!(source.status("01A").unwrap().1, 1);
}

#[tokio::test]
async fn events_of_a_tenant_go_in_order_and_a_failed_one_blocks_the_later_ones() {
    // The second request fails once.
    let r = receiver(&[Answer::Status(200), Answer::Status(503)], Answer::Status(200)).await;
    let source = MemoryEvents::default();
    for id in ["01C", "01A", "01B"] {
        source.push(event(id, "acme"));
    }
    let mut d = Deliverer::new(target("acme", &r.url, Duration::from_secs(10)), fast()).unwrap();
    let first = d.deliver_once(&source).await.unwrap();
    assert_eq!(first.delivered, vec!["01A".to_string()]);
    assert_eq!(first.failed.as_ref().map(|f| f.id.as_str()), Some("01B"));
    // 01C waits behind 01B.
    assert_eq!(r.ids(), vec!["01A", "01B"]);
    assert_eq!(source.status("01C").unwrap().0, EventState::Pending);
    deliver_until(&mut d, &source, |s| s.status("01C").unwrap().0 == EventState::Delivered).await;
    assert_eq!(r.ids(), vec!["01A", "01B", "01B", "01C"]);
}

#[tokio::test]
async fn an_event_failing_past_its_maximum_age_is_dead_and_the_next_goes() {
    let r = receiver(&[Answer::Status(500)], Answer::Status(200)).await;
    let source = MemoryEvents::default();
    source.push(event("01A", "acme"));
    source.push(event("01B", "acme"));
    let policy = Policy { max_age: Duration::from_millis(10), backoff_first: Duration::from_secs(60), ..fast() };
    let mut d = Deliverer::new(target("acme", &r.url, Duration::from_secs(10)), policy).unwrap();
    let report = d.deliver_once(&source).await.unwrap();
    assert_eq!((report.dead, report.delivered, report.failed), (vec!["01A".to_string()], vec!["01B".to_string()], None));
    assert_eq!(source.status("01A").unwrap().0, EventState::Dead);
    assert_eq!(r.ids(), vec!["01A", "01B"]);
    // Dead is final.
    assert_eq!(d.deliver_once(&source).await.unwrap(), Report::default());
}

/// Captures what `tracing` writes while it lives (this thread only).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn the_secret_never_appears_in_errors_or_logs() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let r = receiver(&[Answer::Status(500), Answer::Hang], Answer::Status(200)).await;
    let refused = format!("http://127.0.0.1:{}/h?token=query-secret-xyz", std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port());
    let mut errors = String::new();
    for url in [r.url.as_str(), r.url.as_str(), refused.as_str()] {
        let source = MemoryEvents::default();
        source.push(event("01A", "acme"));
        let mut d = Deliverer::new(target("acme", url, Duration::from_secs(1)), fast()).unwrap();
        let report = d.deliver_once(&source).await.unwrap();
        errors.push_str(&format!("{report:?}\n"));
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    // What was said is useful: the tenant, the event, the causes, the URL without its query.
    for said in ["acme", "01A", "HTTP 500", "no answer within 1 s", "connection refused", "/hooks/mailplug"] {
        assert!(logs.contains(said), "the log lacks {said}: {logs}");
        assert!(errors.contains(said) || said == "acme", "the errors lack {said}: {errors}");
    }
    for text in [&logs, &errors] {
        assert!(!text.contains(SECRET) && !text.contains("query-secret-xyz") && !text.contains("echo"), "{text}");
    }
    // A deliverer's Debug does not print the secret either.
    assert!(!format!("{:?}", target("acme", &r.url, Duration::from_secs(1))).contains(SECRET));
}

#[tokio::test]
async fn run_serves_tenants_independently_picks_up_new_ones_and_stops_on_cancel() {
    let down = receiver(&[], Answer::Status(500)).await;
    let up = receiver(&[], Answer::Status(200)).await;
    let late = receiver(&[], Answer::Status(200)).await;
    let source = Arc::new(MemoryEvents::default());
    for (id, tenant) in [("01A", "down"), ("01B", "down"), ("01C", "up"), ("01D", "up"), ("01E", "late")] {
        source.push(event(id, tenant));
    }
    let policy = Policy { backoff_first: Duration::from_secs(60), backoff_max: Duration::from_secs(60), ..fast() };
    let (tx, rx) = watch::channel(vec![
        target("down", &down.url, Duration::from_secs(2)),
        target("up", &up.url, Duration::from_secs(2)),
    ]);
    let cancel = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let running = tokio::spawn(run_with(source.clone(), rx, cancel.clone(), policy, wake.clone()));
    let wait_for = |what: &'static str, f: Box<dyn Fn() -> bool>| async move {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < deadline, "{what} within 20 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let s = source.clone();
    wait_for("up's events delivered", Box::new(move || s.status("01D").unwrap().0 == EventState::Delivered)).await;
    assert_eq!(up.ids(), vec!["01C", "01D"]);
    // The failing tenant tried its first event and holds the second.
    let s = source.clone();
    wait_for("down's first attempt", Box::new(move || s.status("01A").unwrap().1 >= 1)).await;
    assert_eq!(down.ids(), vec!["01A"]);
    assert!(late.ids().is_empty());
    // A tenant added at run time starts; an event appended later is posted when woken.
    tx.send(vec![
        target("down", &down.url, Duration::from_secs(2)),
        target("up", &up.url, Duration::from_secs(2)),
        target("late", &late.url, Duration::from_secs(2)),
    ])
    .unwrap();
    let s = source.clone();
    wait_for("late's event delivered", Box::new(move || s.status("01E").unwrap().0 == EventState::Delivered)).await;
    source.push(event("01F", "up"));
    wake.notify_waiters();
    let s = source.clone();
    wait_for("the appended event delivered", Box::new(move || s.status("01F").unwrap().0 == EventState::Delivered)).await;
    let started = Instant::now();
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.expect("run stops on cancel").unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(down.ids(), vec!["01A"]);
    assert_eq!(source.status("01B").unwrap().0, EventState::Pending);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let p = Policy::default();
    assert_eq!(p.backoff(1), Duration::from_secs(10));
    assert_eq!(p.backoff(2), Duration::from_secs(20));
    assert_eq!(p.backoff(5), Duration::from_secs(160));
    assert_eq!(p.backoff(20), Duration::from_secs(30 * 60));
    assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30 * 60));
}

/// The vector in docs/WEBHOOKS.md, computed there with Python's hmac module.
#[test]
fn the_documented_signature_vector() {
    let sig = sign(b"whsec-example-0123456789", 1_700_000_000, br#"{"id":"01J"}"#);
    assert_eq!(sig, "v1=d8ad280d7466a8407c41bf16c46334c92e07807e4393cb042310e97ee0e33689");
    assert!(verify(b"whsec-example-0123456789", "1700000000", br#"{"id":"01J"}"#, &sig, 1_700_000_100, Duration::from_secs(300)));
    assert!(verify(b"whsec-example-0123456789", "1700000000", br#"{"id":"01J"}"#, &format!("v1=00, {sig}"), 1_700_000_000, Duration::from_secs(300)));
    assert!(!verify(b"whsec-example-0123456789", "1700000000", br#"{"id":"01J"}"#, "v1=zz", 1_700_000_000, Duration::from_secs(300)));
}

/// The Rust receiver example of docs/WEBHOOKS.md, as written there.
mod documented_receiver {
    use ring::hmac;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn mailplug_signature_ok(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
        let Ok(ts) = timestamp.trim().parse::<u64>() else { return false };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
        if now.abs_diff(ts) > 300 {
            return false;
        }
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
        let mut signed = format!("{ts}.").into_bytes();
        signed.extend_from_slice(body);
        signature
            .split(',')
            .filter_map(|part| part.trim().strip_prefix("v1="))
            .filter_map(|hex| (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect::<Option<Vec<u8>>>())
            // hmac::verify compares in constant time.
            .any(|tag| hmac::verify(&key, &signed, &tag).is_ok())
    }
}

#[tokio::test]
async fn the_documented_rust_receiver_accepts_a_real_delivery() {
    let r = receiver(&[], Answer::Status(200)).await;
    let source = MemoryEvents::default();
    source.push(event("01A", "acme"));
    let mut d = Deliverer::new(target("acme", &r.url, Duration::from_secs(10)), fast()).unwrap();
    d.deliver_once(&source).await.unwrap();
    let s = &r.seen()[0];
    assert!(documented_receiver::mailplug_signature_ok(SECRET.as_bytes(), &s.timestamp, &s.body, &s.signature));
    assert!(!documented_receiver::mailplug_signature_ok(b"another-secret-of-the-same-size", &s.timestamp, &s.body, &s.signature));
}

#[test]
fn a_target_built_without_the_configuration_is_still_checked() {
    let refused = |url: &str, insecure: bool| {
        let mut t = target("acme", url, Duration::from_secs(1));
        t.webhook.insecure_plaintext = insecure;
        Deliverer::new(t, fast()).err().map(|e| e.to_string())
    };
    let e = refused("http://hooks.example.com/h?token=query-secret-xyz", false).expect("plain http elsewhere");
    assert!(e.contains("https") && !e.contains("query-secret-xyz"), "{e}");
    assert!(refused("ftp://hooks.example.com/h", false).is_some());
    assert!(refused("https://u:p@hooks.example.com/h", false).is_some());
    assert_eq!(refused("http://hooks.example.com/h", true), None);
    assert_eq!(refused("https://hooks.example.com/h", false), None);
    assert_eq!(refused("http://[::1]:9/h", false), None);
    // The configuration's own parser: what it refuses, the deliverer refuses too.
    assert!(refused("https://hooks.example.com:99999/h", false).is_some_and(|e| e.contains("not a valid URL")));
    assert!(refused("https://hooks.example.com/a\tb", false).is_some_and(|e| e.contains("not a valid URL")));
    assert!(refused("http://127.0.0.1.hooks.example.com/h", false).is_some_and(|e| e.contains("https")));
}

/// Not a test: deliveries per second to a local receiver over one kept-alive connection
/// (`cargo test -p mailplug-host --lib webhook_throughput -- --ignored --nocapture`).
#[tokio::test]
#[ignore]
async fn webhook_throughput() {
    let r = receiver(&[], Answer::Status(204)).await;
    let source = MemoryEvents::default();
    let n = 2000;
    for i in 0..n {
        source.push(event(&format!("01T{i:08}"), "acme"));
    }
    let mut d = Deliverer::new(target("acme", &r.url, Duration::from_secs(10)), fast()).unwrap();
    let started = Instant::now();
    let mut delivered = 0;
    while delivered < n {
        delivered += d.deliver_once(&source).await.unwrap().delivered.len();
    }
    let took = started.elapsed();
    println!("{n} events in {took:?}: {:.0} per second", n as f64 / took.as_secs_f64());
    assert_eq!(r.seen().len(), n);
}
