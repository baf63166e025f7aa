//! Outbound against real Postfix and Dovecot (and Postfix's own smtp-sink for faults):
//! From / Sender planning per provider as the customer receives it, threading, header and
//! DATA safety on the wire, outcome classes, per-recipient results.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command};
use std::time::Duration;

use mailplug_host::config::{AfterFetch, Provider, SendPermission, TenantConfig};
use mailplug_host::db::Database;
use mailplug_host::driver::{drive, DriveOptions};
use mailplug_host::engine::{
    BasicCredentials, Credentials, GuestLimits, GuestSecurity, GuestServer, Outcome, SubmissionServer,
};
use mailplug_host::error::Kind;
use mailplug_host::ops::{self, Outgoing, Reply};
use mailplug_host::store::{MemorySink, NoMessages, NoSyncState};
use mailplug_host::Retry;
use mailplug_tests::{contains, plugin, recording_proxy, rig, tenant, test_box, ServerSpec, TempDatabase};

/// The unfolded value of a header in raw message bytes (first occurrence), None when absent.
fn header(raw: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    let mut value: Option<String> = None;
    for line in head.split("\r\n") {
        if let Some(v) = &mut value {
            if line.starts_with([' ', '\t']) {
                v.push(' ');
                v.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case(name) {
                value = Some(v.trim().to_string());
            }
        }
    }
    value
}

/// The bare address of "Name <addr>" or "addr", lower-cased.
fn addr_of(v: Option<&str>) -> Option<String> {
    let v = v?;
    let a = match (v.rfind('<'), v.rfind('>')) {
        (Some(l), Some(r)) if l < r => &v[l + 1..r],
        _ => v,
    };
    Some(a.trim().to_ascii_lowercase())
}

fn unique() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}", t.as_nanos())
}

/// Fetches the customer's mailbox until a message matching `found` shows up.
async fn wait_for_customer(what: &str, found: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let r = rig();
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("CUSTOMER"), r.pass("CUSTOMER"));
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let cfg = tenant("imap", &inb, &smtp, true);
    for _ in 0..60 {
        let mut sink = MemorySink::default();
        ops::fetch(plugin(), &cfg, "inbox", &mut sink, &NoSyncState).await.expect("fetch customer");
        if let Some(m) = sink.messages.into_iter().find(|m| found(&m.raw)) {
            return m.raw;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what} never arrived");
}

async fn wait_for_reply(in_reply_to: &str) -> Vec<u8> {
    let want = format!("<{in_reply_to}>");
    wait_for_customer(&format!("a reply to {in_reply_to}"), |raw| header(raw, "In-Reply-To").as_deref() == Some(want.as_str())).await
}

async fn wait_for(message_id: &str) -> Vec<u8> {
    wait_for_customer(message_id, |raw| contains(raw, message_id.as_bytes())).await
}

struct Case {
    name: &'static str,
    provider: Provider,
    permission: SendPermission,
    gmail_alias: bool,
    same_account: bool,
    /// Expected (From, Sender, Reply-To) with A / B standing for the addresses.
    from: &'static str,
    sender: Option<&'static str>,
    reply_to: Option<&'static str>,
}

/// A tenant whose mailbox A (a test box) is served by a queue sending as B.
fn reply_config(c: &Case, a: &(String, String)) -> (TenantConfig, String) {
    let r = rig();
    let b = if c.same_account { a.clone() } else { (r.user("AGENT").to_string(), r.pass("AGENT").to_string()) };
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, &a.0, &a.1);
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, &b.0, &b.1);
    let mut cfg = tenant("imap", &inb, &smtp, true);
    cfg.mailboxes[0].display_name = Some("ACME Support".into());
    cfg.mailboxes[0].after_fetch = AfterFetch::Keep;
    let q = &mut cfg.queues[0];
    q.provider = c.provider;
    q.send_permission = c.permission;
    q.gmail_aliases = if c.gmail_alias { vec![a.0.clone()] } else { vec![] };
    (cfg, b.0)
}

#[tokio::test]
async fn replies_carry_the_planned_identity_and_thread_onto_the_original() {
    let r = rig();
    let a = test_box(16);
    let cases = [
        Case { name: "gmail, other account, no alias", provider: Provider::Gmail, permission: SendPermission::None, gmail_alias: false, same_account: false, from: "B", sender: None, reply_to: Some("A") },
        Case { name: "gmail, verified alias", provider: Provider::Gmail, permission: SendPermission::None, gmail_alias: true, same_account: false, from: "A", sender: None, reply_to: None },
        Case { name: "microsoft, same account", provider: Provider::Microsoft, permission: SendPermission::None, gmail_alias: false, same_account: true, from: "A", sender: None, reply_to: None },
        Case { name: "microsoft, send on behalf", provider: Provider::Microsoft, permission: SendPermission::SendOnBehalf, gmail_alias: false, same_account: false, from: "A", sender: Some("B"), reply_to: None },
        Case { name: "microsoft, send as", provider: Provider::Microsoft, permission: SendPermission::SendAs, gmail_alias: false, same_account: false, from: "A", sender: None, reply_to: None },
        Case { name: "microsoft, no permission", provider: Provider::Microsoft, permission: SendPermission::None, gmail_alias: false, same_account: false, from: "B", sender: None, reply_to: Some("A") },
        Case { name: "generic, send on behalf", provider: Provider::Generic, permission: SendPermission::SendOnBehalf, gmail_alias: false, same_account: false, from: "A", sender: Some("B"), reply_to: None },
    ];
    r.reset_mailbox(&a.0);
    for c in &cases {
        // The customer's original, with a thread behind it, arrives in mailbox A and is stored.
        let orig_id = format!("orig-{}@customer.example.test", unique());
        let original = format!(
            "From: Customer <{cust}>\r\nTo: ACME Support <{a}>\r\nSubject: AW: Re: Order 4711\r\nMessage-ID: <{orig_id}>\r\n\
             References: <root@customer.example.test>\r\nIn-Reply-To: <root@customer.example.test>\r\n\r\nWhere is my order?\r\n",
            cust = r.user("CUSTOMER"),
            a = a.0
        )
        .into_bytes();
        r.put(&a.0, "INBOX", &original);
        let (cfg, b) = reply_config(c, &a);
        let db = TempDatabase::open("reply");
        let mut sink = db.sink(&cfg.tenant, "inbox");
        ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*db).await.expect("fetch A");
        drop(sink);

        // What the admin is told before sending matches what is sent.
        let plan = ops::plan_from(plugin(), &cfg, "q", "inbox").await.unwrap_or_else(|e| panic!("{}: plan: {e}", c.name));
        let reply = Reply { text_body: format!("Your order ships today. ({})", c.name), html_body: None, force: false };
        let sent = ops::send_reply(plugin(), &cfg, "q", &*db, &format!("mid:{orig_id}"), &reply)
            .await
            .unwrap_or_else(|e| panic!("{}: reply failed: {e}", c.name));
        let same = |p: &mailplug_host::engine::FromPlan| {
            (p.from.clone(), p.sender.clone(), p.reply_to.clone(), p.envelope_from.clone(), p.customer_sees.en.clone())
        };
        assert_eq!(same(&sent.plan), same(&plan), "{}", c.name);

        let got = wait_for_reply(&orig_id).await;
        let addr = |who: &str| if who == "A" { a.0.clone() } else { b.clone() };
        let from = header(&got, "From").unwrap_or_default();
        assert!(from.contains(&format!("<{}>", addr(c.from))) || from == addr(c.from), "{}: From {from}", c.name);
        match c.sender {
            Some(s) => assert!(header(&got, "Sender").unwrap_or_default().contains(&addr(s)), "{}: Sender", c.name),
            None => assert_eq!(header(&got, "Sender"), None, "{}: no Sender", c.name),
        }
        match c.reply_to {
            Some(s) => assert!(header(&got, "Reply-To").unwrap_or_default().contains(&addr(s)), "{}: Reply-To", c.name),
            None => assert_eq!(header(&got, "Reply-To"), None, "{}: no Reply-To", c.name),
        }
        // Headers exactly as planned (addresses compared; display names may be quoted).
        assert_eq!(addr_of(Some(&plan.from)), addr_of(header(&got, "From").as_deref()), "{}", c.name);
        assert_eq!(addr_of(plan.sender.as_deref()), addr_of(header(&got, "Sender").as_deref()), "{}", c.name);
        assert_eq!(addr_of(plan.reply_to.as_deref()), addr_of(header(&got, "Reply-To").as_deref()), "{}", c.name);
        // Threading: In-Reply-To the original, References root .. original, one "Re: ".
        assert_eq!(header(&got, "In-Reply-To"), Some(format!("<{orig_id}>")));
        let refs = header(&got, "References").unwrap_or_default();
        assert!(refs.starts_with("<root@customer.example.test>") && refs.ends_with(&format!("<{orig_id}>")), "{}: {refs}", c.name);
        assert_eq!(header(&got, "Subject").as_deref(), Some("Re: Order 4711"), "{}", c.name);
        assert!(contains(&got, sent.sent.message_id.as_bytes()));
    }
}

#[tokio::test]
async fn header_injection_is_refused_before_anything_is_sent() {
    let r = rig();
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("SUPPORT"), r.pass("SUPPORT"));
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let cfg = tenant("imap", &inb, &smtp, true);
    for (to, subject) in [
        (r.user("CUSTOMER").to_string(), "Hi\r\nBcc: x@evil.example".to_string()),
        (r.user("CUSTOMER").to_string(), "Hi\nBcc: x@evil.example".to_string()),
        (format!("{}\r\nBcc: x@evil.example", r.user("CUSTOMER")), "Hi".to_string()),
        (format!("Evil\r\nBcc: x@evil.example <{}>", r.user("CUSTOMER")), "Hi".to_string()),
        (r.user("CUSTOMER").to_string(), "nul\0byte".to_string()),
    ] {
        let msg = Outgoing { to: vec![to.clone()], subject: subject.clone(), text_body: "x".into() };
        let e = ops::send(plugin(), &cfg, "q", &msg, &NoSyncState).await.expect_err("injection must be refused");
        assert_eq!(e.kind(), Some(Kind::InvalidInput), "{to:?} / {subject:?}: {e}");
    }
}

/// Bodies that try to end the DATA early or smuggle a second message: on the wire only CRLF,
/// stuffed dots and exactly one terminator; in the mailbox the body arrives intact.
#[tokio::test]
async fn data_on_the_wire_is_crlf_stuffed_and_terminated_once() {
    let r = rig();
    let bodies: [&[u8]; 7] = [
        b"line\n.\nMAIL FROM:<smuggled@evil.example>\n",
        b"line\r.\rsmuggled\r",
        b"line\r\n.\nsmuggled\r\n",
        b".leading dot\r\n..two dots\r\n",
        b"no final newline",
        b".\r\n..\r\n...",
        b"bare\rCR and bare\nLF\r\n",
    ];
    let upstream = (r.get("RIG_SMTP_NOTLS_HOST").to_string(), r.port("RIG_SMTP_NOTLS_PORT"));
    for body in bodies {
        let proxy = recording_proxy(upstream.clone()).await;
        let id = format!("smuggle-{}@test", unique());
        let mut raw = format!("From: <{}>\r\nTo: <{}>\r\nSubject: smuggling\r\nMessage-ID: <{id}>\r\n\r\n", r.user("AGENT"), r.user("CUSTOMER")).into_bytes();
        raw.extend_from_slice(body);
        let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
        let sub = SubmissionServer {
            server: GuestServer { host: "127.0.0.1".into(), port: proxy.port, security: GuestSecurity::InsecurePlaintext },
            credentials: Credentials::Basic(BasicCredentials { username: r.user("AGENT").into(), password: r.pass("AGENT").into() }),
            helo_name: "localhost".into(),
            limits: GuestLimits { max_line_bytes: 8192, max_message_bytes: 1 << 20, max_batch_messages: 1, max_batch_bytes: 1 << 20, reply_timeout_ms: 10_000 },
        };
        let session = instance.open_outbound(&sub, r.user("AGENT"), &[r.user("CUSTOMER").to_string()], &raw, 0).await.expect("open");
        let allowed = vec![("127.0.0.1".to_string(), proxy.port, GuestSecurity::InsecurePlaintext)];
        let opts = DriveOptions {
            allowed: &allowed,
            tls: mailplug_host::net::tls_config(None).expect("tls"),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(10),
            greeting_timeout: Duration::from_secs(10),
            max_session: Duration::from_secs(60),
        };
        let outcome = drive(&mut instance, session, &opts, &mut NoMessages).await.expect("sent");
        assert!(matches!(outcome, Outcome::Sent(_)));

        let wire = proxy.client_bytes.lock().expect("lock").clone();
        let start = wire.windows(6).position(|w| w == b"DATA\r\n").expect("DATA sent") + 6;
        let data = &wire[start..];
        let end = data.windows(5).position(|w| w == b"\r\n.\r\n").expect("terminator") + 5;
        let (data, after) = data.split_at(end);
        assert!(after.starts_with(b"QUIT") || after.is_empty(), "only QUIT follows the terminator: {:?}", String::from_utf8_lossy(after));
        for (i, &b) in data.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && data[i - 1] == b'\r', "bare LF on the wire in {:?}", String::from_utf8_lossy(body));
            }
            if b == b'\r' {
                assert_eq!(data.get(i + 1), Some(&b'\n'), "bare CR on the wire in {:?}", String::from_utf8_lossy(body));
            }
        }
        let content = &data[..data.len() - 3]; // without ".\r\n"
        for line in content.split(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                assert!(line.starts_with(b".."), "unstuffed dot line {:?}", String::from_utf8_lossy(line));
            }
        }
        // Delivered intact (line endings normalised to CRLF, dots unstuffed by the server).
        let got = wait_for(&id).await;
        let normalised = String::from_utf8_lossy(body).replace("\r\n", "\n").replace('\r', "\n").replace('\n', "\r\n");
        let got_body = String::from_utf8_lossy(&got).split_once("\r\n\r\n").map(|x| x.1.to_string()).unwrap_or_default();
        assert!(got_body.starts_with(normalised.trim_end_matches("\r\n")), "body changed: {got_body:?} vs {normalised:?}");
    }
}

/// Postfix's smtp-sink on a free loopback port, stopped on drop.
struct Sink {
    child: Child,
    port: u16,
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp_sink(flags: &[&str]) -> Sink {
    let port = StdListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
    let child = Command::new("/usr/sbin/smtp-sink")
        .args(["-u", "nobody"])
        .args(flags)
        .arg(format!("127.0.0.1:{port}"))
        .arg("10")
        .spawn()
        .expect("smtp-sink runs");
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Sink { child, port };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("smtp-sink did not start");
}

fn sink_config(port: u16) -> TenantConfig {
    let r = rig();
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("SUPPORT"), r.pass("SUPPORT"));
    let mut smtp = ServerSpec::new("127.0.0.1", port, false, "agent@example.test", "Sink-Pw-1!");
    smtp.insecure_plaintext = true;
    let mut cfg = tenant("imap", &inb, &smtp, true);
    cfg.limits.reply_timeout_secs = 5;
    cfg
}

#[tokio::test]
async fn outcome_classes_against_smtp_sink() {
    let cases: [(&[&str], Option<Retry>, &str); 10] = [
        (&[], None, "delivered"),
        (&["-r", "mail"], Some(Retry::Later), "4xx at MAIL"),
        (&["-f", "mail"], Some(Retry::FixFirst), "5xx at MAIL"),
        (&["-r", "rcpt"], Some(Retry::Later), "4xx at RCPT"),
        (&["-f", "rcpt"], Some(Retry::FixFirst), "5xx at RCPT"),
        (&["-r", "data"], Some(Retry::Later), "4xx at DATA"),
        (&["-f", "data"], Some(Retry::FixFirst), "5xx at DATA"),
        (&["-r", "."], Some(Retry::Later), "4xx after the data"),
        (&["-f", "."], Some(Retry::FixFirst), "5xx after the data"),
        (&["-q", "."], Some(Retry::Uncertain), "disconnect after the data"),
    ];
    for (flags, want, what) in cases {
        let sink = smtp_sink(flags);
        let cfg = sink_config(sink.port);
        let msg = Outgoing { to: vec!["someone@example.test".into()], subject: what.into(), text_body: "x".into() };
        match (ops::send(plugin(), &cfg, "q", &msg, &NoSyncState).await, want) {
            (Ok(sent), None) => assert!(sent.report.final_reply.code.starts_with('2'), "{what}"),
            (Err(e), Some(retry)) => {
                assert_eq!(e.retry(), retry, "{what}: {e}");
                if retry == Retry::Uncertain {
                    assert!(e.to_string().contains("Message-ID <"), "{what}: the host learns the Message-ID: {e}");
                }
            }
            (other, want) => panic!("{what}: got {other:?}, wanted {want:?}"),
        }
    }
    // 421 and disconnect: transient.
    let sink = smtp_sink(&["-Q", "mail"]);
    let msg = Outgoing { to: vec!["someone@example.test".into()], subject: "421".into(), text_body: "x".into() };
    let e = ops::send(plugin(), &sink_config(sink.port), "q", &msg, &NoSyncState).await.expect_err("421");
    assert_eq!(e.retry(), Retry::Later, "{e}");
}

#[tokio::test]
async fn mixed_recipients_are_reported_one_by_one() {
    let r = rig();
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("SUPPORT"), r.pass("SUPPORT"));
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let cfg = tenant("imap", &inb, &smtp, true);
    let msg = Outgoing {
        to: vec![r.user("CUSTOMER").into(), "nobody-here@example.test".into()],
        subject: format!("mixed {}", unique()),
        text_body: "x".into(),
    };
    let sent = ops::send(plugin(), &cfg, "q", &msg, &NoSyncState).await.expect("sent to the accepted recipient");
    let by = |a: &str| sent.report.recipients.iter().find(|x| x.address == a).expect("reported");
    assert!(by(r.user("CUSTOMER")).accepted);
    let refused = by("nobody-here@example.test");
    assert!(!refused.accepted && refused.reply.code.starts_with('5'), "{refused:?}");

    // None accepted: nothing is sent, a permanent error.
    let msg = Outgoing { to: vec!["nobody-here@example.test".into()], subject: "none".into(), text_body: "x".into() };
    let e = ops::send(plugin(), &cfg, "q", &msg, &NoSyncState).await.expect_err("no recipient accepted");
    assert_eq!(e.retry(), Retry::FixFirst, "{e}");
}

/// The customer's message to mailbox `a`, stored in the host's database through a fetch;
/// returns its Message-ID.
async fn store_original(cfg: &TenantConfig, db: &Database, a: &str, subject: &str) -> String {
    let r = rig();
    let orig_id = format!("save-{}@customer.example.test", unique());
    let original = format!(
        "From: Customer <{cust}>\r\nTo: ACME Support <{a}>\r\nSubject: {subject}\r\nMessage-ID: <{orig_id}>\r\n\r\nHello?\r\n",
        cust = r.user("CUSTOMER"),
    );
    r.put(a, "INBOX", original.as_bytes());
    let mut sink = db.sink(&cfg.tenant, "inbox");
    ops::fetch(plugin(), cfg, "inbox", &mut sink, db).await.expect("fetch the original");
    orig_id
}

/// `save_sent`: each reply is APPENDed to the mailbox's Sent folder exactly as submitted,
/// \Seen, the folder created (and subscribed) the first time; a failing APPEND leaves the send
/// successful and comes back as a warning.
#[tokio::test]
async fn sent_replies_are_saved_in_the_mailbox_sent_folder() {
    use mailplug_host::ops::SavedReply;
    let r = rig();
    let a = test_box(1);
    r.reset_mailbox(&a.0);
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, &a.0, &a.1);
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let mut cfg = tenant("imap", &inb, &smtp, true);
    cfg.mailboxes[0].save_sent = Some("Sent".into());
    let db = TempDatabase::open("save");

    let mut sent_copies = Vec::new();
    for round in 0..2 {
        let orig_id = store_original(&cfg, &db, &a.0, &format!("Saved copy {round}")).await;
        let reply = Reply { text_body: format!("Answer {round}\n.\nwith a dot line"), html_body: None, force: false };
        let sent = ops::send_reply(plugin(), &cfg, "q", &*db, &format!("mid:{orig_id}"), &reply).await.expect("reply sent");
        assert!(sent.sent.report.final_reply.code.starts_with('2'));
        let SavedReply::Saved { folder, uid, created_folder } = &sent.saved else {
            panic!("round {round}: no copy saved: {:?}", sent.saved)
        };
        assert_eq!(folder, "Sent");
        assert_eq!(*created_folder, round == 0, "created only while missing");
        assert!(uid.is_some(), "Dovecot has UIDPLUS: the UID is reported");
        sent_copies.push((sent.sent.message_id.clone(), sent.sent.raw.clone(), *uid));
    }

    // Both in Sent, \Seen, under the reported UIDs; the new folder is subscribed.
    let listing = r.listing(&a.0, "Sent");
    assert_eq!(listing.len(), 2, "{listing:?}");
    for ((mid, _, uid), (luid, flags, lmid)) in sent_copies.iter().zip(&listing) {
        assert_eq!(lmid, mid);
        assert_eq!(Some(*luid), *uid);
        assert!(flags.contains("\\Seen"), "flags {flags:?}");
    }
    assert!(r.doveadm(&["mailbox", "list", "-s", "-u", &a.0]).lines().any(|l| l.trim() == "Sent"), "Sent is subscribed");

    // Byte for byte what was submitted (read back through the component's own fetch).
    let mut read_back = cfg.clone();
    read_back.mailboxes[0].folders = vec!["Sent".into()];
    read_back.mailboxes[0].save_sent = None;
    let mut sink = MemorySink::default();
    ops::fetch(plugin(), &read_back, "inbox", &mut sink, &NoSyncState).await.expect("fetch Sent");
    let got: Vec<&[u8]> = sink.messages.iter().map(|m| m.raw.as_slice()).collect();
    let want: Vec<&[u8]> = sent_copies.iter().map(|(_, raw, _)| raw.as_slice()).collect();
    assert_eq!(got, want);

    // The mailbox password is wrong: the reply still goes out, the copy is a warning.
    let orig_id = store_original(&cfg, &db, &a.0, "Broken copy").await;
    let mut broken = cfg.clone();
    broken.mailboxes[0].server.secret = mailplug_host::secret::Secret::new("Wrong-Pw-7!".into());
    let reply = Reply { text_body: "Sent anyway".into(), html_body: None, force: false };
    let sent = ops::send_reply(plugin(), &broken, "q", &*db, &format!("mid:{orig_id}"), &reply).await.expect("the send itself succeeds");
    assert!(sent.sent.report.final_reply.code.starts_with('2'));
    let warning = sent.saved.warning().unwrap_or_else(|| panic!("a warning, got {:?}", sent.saved));
    assert!(warning.contains("was sent") && warning.contains("\"Sent\"") && warning.contains("login rejected"), "{warning}");
    assert!(!warning.contains("Wrong-Pw-7!"), "{warning}");
    assert_eq!(r.listing(&a.0, "Sent").len(), 2, "nothing more saved");
    wait_for_reply(&orig_id).await;
}

/// Over STARTTLS, into a nested folder: the "/" of the configured name becomes Dovecot's "."
/// hierarchy delimiter, learnt with LIST.
#[tokio::test]
async fn sent_replies_are_saved_in_a_nested_folder_over_starttls() {
    use mailplug_host::ops::SavedReply;
    let r = rig();
    let a = test_box(2);
    r.reset_mailbox(&a.0);
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAP_STARTTLS_PORT"), false, &a.0, &a.1);
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT"));
    let mut cfg = tenant("imap", &inb, &smtp, true);
    cfg.mailboxes[0].save_sent = Some("Support/Gesendete Antworten".into());
    let db = TempDatabase::open("save");
    let orig_id = store_original(&cfg, &db, &a.0, "Nested copy").await;
    let reply = Reply { text_body: "Saved below Support".into(), html_body: None, force: false };
    let sent = ops::send_reply(plugin(), &cfg, "q", &*db, &format!("mid:{orig_id}"), &reply).await.expect("reply sent");
    assert!(matches!(&sent.saved, SavedReply::Saved { created_folder: true, .. }), "{:?}", sent.saved);
    let folders = r.doveadm(&["mailbox", "list", "-u", &a.0]);
    assert!(folders.lines().any(|l| l.trim() == "Support.Gesendete Antworten"), "{folders}");
    let listing = r.listing(&a.0, "Support.Gesendete Antworten");
    assert_eq!(listing.iter().map(|l| l.2.as_str()).collect::<Vec<_>>(), vec![sent.sent.message_id.as_str()]);
}
