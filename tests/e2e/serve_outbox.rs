//! The outbox, the events, SSE and webhooks in `mailplug serve`: the real binary with a
//! tenants folder, observed through its HTTP API, an SSE stream, a plain-HTTP webhook receiver
//! on loopback (checking the HMAC signature) and the rig's mailboxes. Every wait is bounded;
//! no fixed sleeps. Rig boxes 71 to 76; SMTP: Postfix submission and smtp2.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mailplug_tests::serve::*;
use mailplug_tests::{rig, sample_message, test_box, unique_text as unique};
use serde_json::{json, Value};

const TOKEN: &str = "tenant-ob-token-0123456789abcdef";
const OTHER: &str = "tenant-other-token-0123456789abcd";
const HOOK_SECRET: &str = "serve-outbox-webhook-secret-0123456789";

/// A tenant: mailbox "in" (rig box `n`, IMAPS), queue "q" through Postfix submission and queue
/// "q2" through smtp2 (both logging in as box `n`), its API token, and a webhook when given.
fn tenant_toml(dir: &Path, id: &str, n: u32, token: &str, webhook_port: Option<u16>) -> String {
    let r = rig();
    let (user, pass) = test_box(n);
    let pw = dir.join(format!("secrets/box{n}.pw"));
    private(&pw, &pass);
    let tok = dir.join(format!("secrets/{id}.token"));
    private(&tok, token);
    let mut t = format!(
        "tenant = \"{id}\"\nlicensed = true\nextra_ca_file = \"{ca}\"\napi_token_file = \"{tok}\"\n\
         [limits]\nreply_timeout_secs = 30\nconnect_timeout_secs = 5\n\
         [[mailbox]]\nname = \"in\"\naddress = \"{user}\"\nprotocol = \"imap\"\nfirst_sync = \"all\"\npoll_interval_secs = 1\n\
         host = \"localhost\"\nport = {imaps}\ntls = true\nusername = \"{user}\"\npassword_file = \"{pw}\"\n\
         [[queue]]\nname = \"q\"\nmailboxes = [\"in\"]\n[queue.smtp]\nhost = \"localhost\"\nport = {sub}\ntls = false\n\
         username = \"{user}\"\npassword_file = \"{pw}\"\n\
         [[queue]]\nname = \"q2\"\nmailboxes = [\"in\"]\n[queue.smtp]\nhost = \"{h2}\"\nport = {p2}\ntls = false\n\
         username = \"{user}\"\npassword_file = \"{pw}\"\n",
        ca = r.get("RIG_CA"),
        tok = tok.display(),
        imaps = r.port("RIG_IMAPS_PORT"),
        pw = pw.display(),
        sub = r.port("RIG_SUBMISSION_PORT"),
        h2 = r.get("RIG_SMTP2_HOST"),
        p2 = r.port("RIG_SMTP2_STARTTLS_PORT"),
    );
    if let Some(port) = webhook_port {
        let secret = dir.join("secrets/webhook.secret");
        private(&secret, HOOK_SECRET);
        t += &format!("[webhook]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret_file = \"{}\"\ntimeout_secs = 5\n", secret.display());
    }
    t
}

/// Enqueues a message through the API as tenant `ob`; asserts 201 and `queued`.
fn enqueue(s: &Serve, queue: &str, to: &str, subject: &str) -> Value {
    let body = json!({"to": [to], "subject": subject, "text": format!("{subject}\n")}).to_string();
    let (status, v) = s.call("POST", &format!("/v1/tenants/ob/queues/{queue}/outbox"), Some(TOKEN), Some(&body));
    assert_eq!(status, 201, "enqueue: {v}");
    assert_eq!(v["state"], "queued", "{v}");
    v
}

/// Tenant `ob`'s outbox row `id`.
fn outbox_row(s: &Serve, id: &str) -> Value {
    let (status, v) = s.call("GET", &format!("/v1/tenants/ob/outbox/{id}"), Some(TOKEN), None);
    assert_eq!(status, 200, "{v}");
    v
}

/// An SSE stream's events as (id, event, data) through a channel (`serve::sse_stream` without
/// the comment lines).
fn sse(addr: &str, path: &str, token: &str, last_event_id: Option<&str>) -> (u16, mpsc::Receiver<(String, String, Value)>) {
    let (status, items) = sse_stream(addr, path, token, last_event_id);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for item in items {
            if let SseItem::Event(id, kind, data) = item {
                if tx.send((id, kind, data)).is_err() {
                    return;
                }
            }
        }
    });
    (status, rx)
}

/// Waits (bounded) for an SSE event matching `f`.
fn next_sse(rx: &mpsc::Receiver<(String, String, Value)>, what: &str, mut f: impl FnMut(&str, &Value) -> bool) -> (String, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((id, kind, v)) if f(&kind, &v) => return (id, v),
            Ok(_) => {}
            Err(_) => panic!("no SSE event within 60 s: {what}"),
        }
    }
}

fn states_on_hook(hooks: &HookReceiver, id: &str) -> Vec<String> {
    hooks.requests().iter().filter(|h| h["kind"] == "outbox.state-changed" && h["data"]["id"] == id).map(|h| h["data"]["state"].as_str().unwrap_or("").to_string()).collect()
}

#[test]
fn the_service_sends_its_outbox_and_publishes_the_events_on_sse_and_the_webhook() {
    let r = rig();
    let dir = workdir("main");
    let (box71, _) = test_box(71);
    let (box73, _) = test_box(73);
    r.reset_mailbox(&box71);
    r.reset_mailbox(&test_box(72).0);
    r.reset_mailbox(&box73);
    let hooks = HookReceiver::start_signed(200, HOOK_SECRET);
    write_tenant(&dir, "ob.toml", &tenant_toml(&dir, "ob", 71, TOKEN, Some(hooks.port)));
    write_tenant(&dir, "other.toml", &tenant_toml(&dir, "other", 72, OTHER, None));
    let s = Serve::start(&dir, "serve.log");
    wait_for("both tenants loaded", 60, || (s.call("GET", "/v1/tenants/other", Some(OTHER), None).0 == 200 && s.call("GET", "/v1/tenants/ob", Some(TOKEN), None).0 == 200).then_some(()));
    let (status, events) = sse(&s.addr, "/v1/tenants/ob/events", TOKEN, None);
    assert_eq!(status, 200);

    // A fetched message's event reaches the webhook, signed.
    let mid_in = format!("serve-outbox-in-{}@test", std::process::id());
    r.put(&box71, "INBOX", &sample_message(&mid_in, "for the webhook"));
    wait_for("message.stored at the webhook", 60, || {
        hooks.requests().iter().any(|h| h["kind"] == "message.stored" && h.to_string().contains(&mid_in)).then_some(())
    });

    // Enqueue through the API: 201 after the commit, delivered through Postfix once.
    let subject = unique("serve outbox to postfix");
    let v = enqueue(&s, "q", &box73, &subject);
    let (id, mid) = (v["id"].as_str().expect("id").to_string(), v["message_id"].as_str().expect("mid").to_string());
    let started = Instant::now();
    wait_for("the row delivered", 60, || (outbox_row(&s, &id)["state"] == "delivered").then_some(()));
    eprintln!("delivered {} ms after the 201", started.elapsed().as_millis());
    wait_for("the message in box73", 60, || (r.listing(&box73, "INBOX").iter().filter(|(_, _, m)| *m == mid).count() == 1).then_some(()));
    let (status, list) = s.call("GET", "/v1/tenants/ob/outbox?state=delivered", Some(TOKEN), None);
    assert_eq!(status, 200, "{list}");
    assert!(list["outbox"].as_array().expect("list").iter().any(|x| x["id"] == id.as_str()), "{list}");
    let (status, _) = s.call("GET", "/v1/tenants/ob/outbox?state=nonsense", Some(TOKEN), None);
    assert_eq!(status, 400);

    // Its state changes on the SSE stream, in order, and at the webhook, signed.
    let mut seen = Vec::new();
    let mut last_id = String::new();
    while seen.last().map(String::as_str) != Some("delivered") {
        let (eid, e) = next_sse(&events, "the row's state changes", |k, e| k == "outbox.state-changed" && e["data"]["id"] == id.as_str());
        seen.push(e["data"]["state"].as_str().unwrap_or("").to_string());
        last_id = eid;
    }
    assert_eq!(seen, ["queued", "in-flight", "delivered"]);
    wait_for("the delivered state at the webhook", 60, || (states_on_hook(&hooks, &id) == ["queued", "in-flight", "delivered"]).then_some(()));
    assert!(hooks.all_signed(), "every webhook request carries a valid signature");

    // Replay after Last-Event-ID starts after it; an unknown id is a 404.
    let (status, replay) = sse(&s.addr, "/v1/tenants/ob/events", TOKEN, Some(&last_id));
    assert_eq!(status, 200);
    let subject2 = unique("serve outbox to busy");
    let busy = enqueue(&s, "q2", r.get("RIG_SMTP2_BUSY_RCPT"), &subject2);
    let busy_id = busy["id"].as_str().expect("id").to_string();
    let (_, first) = next_sse(&replay, "the first event after Last-Event-ID", |_, _| true);
    assert_eq!(first["data"]["id"], busy_id.as_str(), "the replay starts after the given id: {first}");
    assert_eq!(s.call("GET", "/v1/tenants/ob/events?after=01NOSUCHEVENT0000000000000", Some(TOKEN), None).0, 404);

    // smtp2: busy is queued again (transient, with backoff); nouser fails with the explanation.
    let row = wait_for("busy queued again after an attempt", 60, || {
        let v = outbox_row(&s, &busy_id);
        (v["attempts"] == 1).then_some(v)
    });
    assert_eq!(row["state"], "queued", "{row}");
    assert!(row["last_reply"].as_str().unwrap_or("").starts_with("451"), "{row}");
    let nouser = enqueue(&s, "q2", r.get("RIG_SMTP2_NOUSER_RCPT"), &unique("serve outbox to nouser"));
    let nouser_id = nouser["id"].as_str().expect("id").to_string();
    // The guest's explanation is recorded after the outcome (it explains after the batch); until
    // then the row carries the error's text in a provisional sentence ("Sending failed: ...").
    let row = wait_for("nouser failed with the guest's explanation", 60, || {
        let v = outbox_row(&s, &nouser_id);
        let guest = v["explanation"]["en"].as_str().is_some_and(|en| !en.starts_with("Sending failed: "));
        (v["state"] == "failed" && guest).then_some(v)
    });
    assert!(row["last_reply"].as_str().unwrap_or("").starts_with("550"), "{row}");
    let (en, de) = (row["explanation"]["en"].as_str().unwrap_or(""), row["explanation"]["de"].as_str().unwrap_or(""));
    assert!(!en.is_empty() && !de.is_empty() && en != de, "English and German: {row}");

    // Metrics: the depth by state.
    let m = wait_for("the outbox depth in the metrics", 30, || {
        let m = s.metrics();
        (m.contains("mailplug_outbox_depth{tenant=\"ob\",queue=\"q2\",state=\"queued\"} 1")
            && m.contains("mailplug_outbox_depth{tenant=\"ob\",queue=\"q2\",state=\"failed\"} 1"))
        .then_some(m)
    });
    assert!(m.contains("mailplug_outbox_oldest_age_seconds{tenant=\"ob\",queue=\"q2\"}"), "{m}");

    // Admin decisions: cancel the busy one; a second cancel conflicts; resend of the failed one.
    let (status, v) = s.call("POST", &format!("/v1/tenants/ob/outbox/{busy_id}/cancel"), Some(TOKEN), None);
    assert_eq!((status, v["state"].as_str()), (200, Some("cancelled")), "{v}");
    assert_eq!(s.call("POST", &format!("/v1/tenants/ob/outbox/{busy_id}/cancel"), Some(TOKEN), None).0, 409);
    assert_eq!(s.call("POST", &format!("/v1/tenants/ob/outbox/{busy_id}/explode"), Some(TOKEN), None).0, 404);

    // Another tenant's token: 404 on every outbox and events route of "ob".
    let body = json!({"to": [box73], "subject": "x", "text": "x"}).to_string();
    for (method, route, body) in [
        ("GET", "/v1/tenants/ob/outbox".to_string(), None),
        ("GET", format!("/v1/tenants/ob/outbox/{id}"), None),
        ("POST", format!("/v1/tenants/ob/outbox/{nouser_id}/resend"), None),
        ("POST", format!("/v1/tenants/ob/outbox/{nouser_id}/cancel"), None),
        ("POST", "/v1/tenants/ob/queues/q/outbox".to_string(), Some(body.as_str())),
        ("GET", "/v1/tenants/ob/events".to_string(), None),
    ] {
        let (status, v) = s.call(method, &route, Some(OTHER), body);
        assert_eq!(status, 404, "{method} {route} with another tenant's token: {v}");
    }
    // And an id of "ob" through "other"'s own routes is not found either.
    assert_eq!(s.call("GET", &format!("/v1/tenants/other/outbox/{id}"), Some(OTHER), None).0, 404);
    assert_eq!(outbox_row(&s, &nouser_id)["state"], "failed", "the other tenant changed nothing");
    // Bad bodies: typed 4xx.
    let (status, _) = s.call("POST", "/v1/tenants/ob/queues/q/outbox", Some(TOKEN), Some("{\"to\": []"));
    assert!((400..500).contains(&status), "{status}");
    let (status, _) = s.call("POST", "/v1/tenants/ob/queues/q/outbox", Some(TOKEN), Some(&json!({"text": "no recipient"}).to_string()));
    assert_eq!(status, 400);
    let (status, _) = s.call("POST", "/v1/tenants/ob/queues/nosuch/outbox", Some(TOKEN), Some(&body));
    assert_eq!(status, 404);
    let big = json!({"to": [box73], "subject": "big", "text": "x".repeat(100_000)}).to_string();
    assert_eq!(s.call("POST", "/v1/tenants/ob/queues/q/outbox", Some(TOKEN), Some(&big)).0, 413);

    assert!(s.terminate().0.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_message_enqueued_as_the_service_stops_is_delivered_exactly_once_after_the_restart() {
    let r = rig();
    let dir = workdir("restart");
    let (box74, _) = test_box(74);
    let (box75, _) = test_box(75);
    r.reset_mailbox(&box74);
    r.reset_mailbox(&box75);
    write_tenant(&dir, "ob.toml", &tenant_toml(&dir, "ob", 74, TOKEN, None));
    let s = Serve::start(&dir, "serve-1.log");
    wait_for("the tenant loaded", 60, || (s.call("GET", "/v1/tenants/ob", Some(TOKEN), None).0 == 200).then_some(()));
    let v = enqueue(&s, "q", &box75, &unique("serve outbox across a restart"));
    let (id, mid) = (v["id"].as_str().expect("id").to_string(), v["message_id"].as_str().expect("mid").to_string());
    // SIGTERM right after the 201: the row is committed; the send is either finished by the
    // stopping service or done by the next one, never both.
    assert!(s.terminate().0.success(), "serve exits 0 on SIGTERM");
    let s = Serve::start(&dir, "serve-2.log");
    wait_for("the row delivered after the restart", 90, || (outbox_row(&s, &id)["state"] == "delivered").then_some(()));
    wait_for("the message in box75", 60, || (r.listing(&box75, "INBOX").iter().any(|(_, _, m)| *m == mid)).then_some(()));
    let (status, events) = sse(&s.addr, "/v1/tenants/ob/events", TOKEN, None);
    assert_eq!(status, 200);
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("delivered") {
        let (_, e) = next_sse(&events, "the row's events", |k, e| k == "outbox.state-changed" && e["data"]["id"] == id.as_str());
        states.push(e["data"]["state"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(states, ["queued", "in-flight", "delivered"], "sent exactly once");
    assert_eq!(r.listing(&box75, "INBOX").iter().filter(|(_, _, m)| *m == mid).count(), 1, "delivered exactly once");
    assert!(s.terminate().0.success());
    let _ = std::fs::remove_dir_all(&dir);
}
