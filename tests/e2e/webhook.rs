//! Webhooks end to end: a message fetched from the rig through the real component becomes an
//! event that the deliverer posts, signed, over HTTPS (the rig's certificate, trusted through
//! the tenant's `extra_ca_file`) to a receiver in this test; a 500 is retried and the event
//! delivered once; an untrusted certificate is a failed attempt, not a delivery.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use mailplug_host::driver::now_ms;
use mailplug_host::ops;
use mailplug_host::service::webhook::{Deliverer, Event, EventSource, EventState, MemoryEvents, Policy, Target};
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_host::TenantConfig;
use mailplug_tests::{plugin, rig, sample_message, test_box};
use ring::hmac;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const SECRET: &str = "e2e-webhook-secret-0123456789";

/// One request the receiver got: Mailplug-Event-Id, Mailplug-Timestamp, Mailplug-Signature, body.
type Seen = (String, String, String, Vec<u8>);

/// An HTTPS receiver on 127.0.0.1:0 with the rig's server certificate (valid for localhost),
/// answering with `script` in turn, then 200. Returns its port and what it saw.
async fn https_receiver(script: &[u16]) -> (u16, Arc<Mutex<Vec<Seen>>>) {
    let r = rig();
    let tls_dir = Path::new(r.get("RIG_CA")).parent().expect("tls dir").to_path_buf();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(tls_dir.join("server-chain.pem")).expect("chain").map(|c| c.expect("cert")).collect();
    let key = PrivateKeyDer::from_pem_file(tls_dir.join("server.key")).expect("key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let script: Arc<Mutex<VecDeque<u16>>> = Arc::new(Mutex::new(script.iter().copied().collect()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, log, script) = (acceptor.clone(), log.clone(), script.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else { return };
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let (log, script) = (log.clone(), script.clone());
                    async move {
                        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                        let (id, ts, sig) = (h("mailplug-event-id"), h("mailplug-timestamp"), h("mailplug-signature"));
                        let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                        log.lock().unwrap().push((id, ts, sig, body));
                        let status = script.lock().unwrap().pop_front().unwrap_or(200);
                        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    (port, seen)
}

/// A tenant with an IMAP mailbox on the rig and a webhook to `https://localhost:{port}/hook`.
fn tenant_with_webhook(user: &str, pass: &str, port: u16, trust_rig_ca: bool) -> TenantConfig {
    let r = rig();
    let ca = if trust_rig_ca { format!("extra_ca_file = \"{}\"\n", r.get("RIG_CA")) } else { String::new() };
    let text = format!(
        "tenant = \"hooked\"\nlicensed = true\n{ca}database = \"/nonexistent/unused.sqlite3\"\n\
         [[mailbox]]\nname = \"inbox\"\naddress = \"{user}\"\nprotocol = \"imap\"\nfirst_sync = \"all\"\n\
         host = \"localhost\"\nport = {imaps}\ntls = true\nusername = \"{user}\"\npassword_env = \"PW\"\n\
         [webhook]\nurl = \"https://localhost:{port}/hook?token=query-secret\"\nsecret_env = \"WH\"\ntimeout_secs = 5\n",
        imaps = r.port("RIG_IMAPS_PORT"),
    );
    let pass = pass.to_string();
    TenantConfig::parse(&text, "hooked.toml", Path::new("/tmp"), &move |k| match k {
        "PW" => Some(pass.clone()),
        "WH" => Some(SECRET.to_string()),
        _ => None,
    })
    .expect("config parses")
}

fn signed_by(secret: &[u8], s: &Seen) -> bool {
    let (_, ts, sig, body) = s;
    let Some(hex) = sig.strip_prefix("v1=") else { return false };
    let tag: Option<Vec<u8>> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect();
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(body);
    tag.is_some_and(|t| hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, secret), &signed, &t).is_ok())
}

fn policy() -> Policy {
    Policy { backoff_first: Duration::from_millis(100), backoff_max: Duration::from_millis(400), ..Policy::default() }
}

#[tokio::test]
async fn a_fetched_message_is_posted_signed_over_https_and_a_500_is_retried_then_delivered_once() {
    let r = rig();
    let (user, pass) = test_box(61);
    r.reset_mailbox(&user);
    let id = format!("webhook-{}@example.test", now_ms());
    r.put(&user, "INBOX", &sample_message(&id, "printer on fire"));
    let (port, seen) = https_receiver(&[500]).await;
    let cfg = tenant_with_webhook(&user, &pass, port, true);

    // The real component fetches the message; the service would record this event with it.
    let mut sink = MemorySink::default();
    ops::fetch(plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await.expect("fetch");
    assert_eq!(sink.messages.len(), 1);
    let m = &sink.messages[0];
    let parsed = m.parsed.as_ref().expect("parsed");
    let events = MemoryEvents::default();
    let event_id = format!("01WEBHOOK{}", now_ms());
    events.push(Event {
        id: event_id.clone(),
        tenant: cfg.tenant.clone(),
        kind: "message.stored".into(),
        payload: serde_json::json!({"mailbox": "inbox", "server_id": m.id, "message_id": parsed.message_id, "subject": parsed.subject}),
        created_at_ms: now_ms(),
        attempts: 0,
    });

    let target = Target::of(&cfg).expect("the tenant has a webhook");
    let mut d = Deliverer::new(target, policy()).expect("deliverer");
    let first = d.deliver_once(&events).await.expect("pass");
    let failed = first.failed.expect("the 500 is a failure");
    assert!(failed.error.contains("HTTP 500") && !failed.error.contains("query-secret"), "{failed:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while events.status(&event_id).expect("event").0 != EventState::Delivered {
        assert!(Instant::now() < deadline, "not delivered within 20 s");
        if let Some(at) = d.blocked_until_ms() {
            tokio::time::sleep(Duration::from_millis(at.saturating_sub(now_ms()) + 5)).await;
        }
        d.deliver_once(&events).await.expect("pass");
    }
    // Delivered once: a further pass posts nothing.
    d.deliver_once(&events).await.expect("pass");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one failed and one delivered post");
    assert_eq!(events.status(&event_id).expect("event").3, 1);
    for s in &seen {
        assert_eq!(s.0, event_id);
        assert!(signed_by(SECRET.as_bytes(), s), "the signature verifies with the tenant's secret");
        assert!(!signed_by(b"another-secret-0123456789abcd", s), "and not with another");
        let v: serde_json::Value = serde_json::from_slice(&s.3).expect("JSON body");
        assert_eq!((v["id"].as_str(), v["tenant"].as_str(), v["kind"].as_str()), (Some(event_id.as_str()), Some("hooked"), Some("message.stored")));
        assert_eq!(v["data"]["message_id"], id.as_str());
        assert_eq!(v["data"]["subject"], "printer on fire");
    }
}

#[tokio::test]
async fn an_untrusted_receiver_certificate_is_a_failed_attempt_not_a_delivery() {
    let (user, pass) = test_box(62);
    let (port, seen) = https_receiver(&[]).await;
    // Without the rig's CA the receiver's certificate is not trusted.
    let cfg = tenant_with_webhook(&user, &pass, port, false);
    let events = MemoryEvents::default();
    events.push(Event {
        id: "01UNTRUSTED".into(),
        tenant: cfg.tenant.clone(),
        kind: "mailbox.state-changed".into(),
        payload: serde_json::json!({"mailbox": "inbox", "state": "idle"}),
        created_at_ms: now_ms(),
        attempts: 0,
    });
    let mut d = Deliverer::new(Target::of(&cfg).expect("webhook"), policy()).expect("deliverer");
    let failed = d.deliver_once(&events).await.expect("pass").failed.expect("refused certificate");
    assert!(failed.error.contains("TLS") && failed.error.contains("UnknownIssuer"), "{failed:?}");
    assert!(!failed.error.contains(SECRET) && !failed.error.contains("query-secret"), "{failed:?}");
    assert_eq!(events.status("01UNTRUSTED").map(|s| (s.0, s.1)), Some((EventState::Pending, 1)));
    assert!(seen.lock().unwrap().is_empty(), "nothing reached the receiver");
    assert!(events.next_undelivered("hooked", 10).expect("list").len() == 1);
}

/// The host's HTTP client (the guest's OAuth requests, discovery) over HTTPS: the tenant's CA
/// makes the rig's certificate trusted; without it the error is a typed TLS error that says
/// what to do and does not show the URL's query.
#[tokio::test]
async fn the_host_http_client_verifies_certificates_with_the_tenants_roots() {
    use mailplug_host::{http, net, HostError};
    let (port, seen) = https_receiver(&[]).await;
    let url = format!("https://localhost:{port}/token?code=secret-code");
    let headers = [("Content-Type".to_string(), "application/x-www-form-urlencoded".to_string())];
    let req = http::Request { method: "POST", url: &url, headers: &headers, body: b"grant_type=x" };
    let trusted = net::tls_config(Some(Path::new(rig().get("RIG_CA")))).expect("tls");
    let r = http::execute(&req, trusted, Duration::from_secs(10)).await.expect("trusted through extra_ca_file");
    assert_eq!(r.status, 200);
    assert_eq!(seen.lock().unwrap().last().map(|s| s.3.clone()), Some(b"grant_type=x".to_vec()));
    let untrusted = net::tls_config(None).expect("tls");
    let e = http::execute(&req, untrusted, Duration::from_secs(10)).await.expect_err("untrusted certificate");
    assert!(matches!(&e, HostError::Tls { message, .. } if message.contains("extra_ca_file")), "{e:?}");
    assert!(!e.to_string().contains("secret-code"), "{e}");
}
