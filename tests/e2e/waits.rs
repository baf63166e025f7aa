//! Waits that never end, through the real component: a server that accepts STARTTLS / STLS and
//! then never starts TLS (IMAP, POP3, SMTP), a server that keeps a session busy by drip-feeding
//! lines, and a session whose server asks for weaker security than the tenant configured.
//! Real servers do not misbehave this way, so these are scripted servers on 127.0.0.1:0.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailplug_host::config::TenantConfig;
use mailplug_host::driver::{drive, DriveOptions};
use mailplug_host::engine::{
    BasicCredentials, Credentials, GuestAfterFetch, GuestFirstSync, GuestLimits, GuestMailbox, GuestProtocol, GuestSecurity,
    GuestServer,
};
use mailplug_host::error::Kind;
use mailplug_host::ops::{self, Outgoing};
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_host::HostError;
use mailplug_tests::{plugin, tenant, ServerSpec};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// How a scripted server answers one command line; `None` closes nothing and goes silent.
type Script = fn(&str) -> Reply;

enum Reply {
    /// Write this and read the next command.
    Say(String),
    /// Write this, then never write again (the client's TLS ClientHello is read and ignored).
    SayThenSilence(String),
    /// Write `* OK x`-style lines every 200 ms, forever.
    Drip(String),
}

/// A scripted server on 127.0.0.1:0: sends `greeting`, then answers each line with `script`.
/// Returns its port and the number of connections it accepted.
async fn scripted(greeting: &'static str, script: Script) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(sock, greeting, script));
        }
    });
    (port, accepted)
}

async fn serve(sock: TcpStream, greeting: &'static str, script: Script) {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    if w.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        match script(line.trim_end()) {
            Reply::Say(s) => {
                if w.write_all(s.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::SayThenSilence(s) => {
                let _ = w.write_all(s.as_bytes()).await;
                let mut sink = [0u8; 4096];
                // Hold the connection open, reading whatever comes, answering nothing.
                while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
                return;
            }
            Reply::Drip(s) => {
                let _ = w.write_all(s.as_bytes()).await;
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if w.write_all(b"* OK still working\r\n").await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

fn tag(line: &str) -> &str {
    line.split(' ').next().unwrap_or("*")
}

fn imap_starttls_then_silence(line: &str) -> Reply {
    let t = tag(line);
    let cmd = line.to_ascii_uppercase();
    if cmd.contains("STARTTLS") {
        Reply::SayThenSilence(format!("{t} OK Begin TLS negotiation now\r\n"))
    } else if cmd.contains("CAPABILITY") {
        Reply::Say(format!("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED\r\n{t} OK done\r\n"))
    } else {
        Reply::Say(format!("{t} BAD unexpected\r\n"))
    }
}

fn pop3_stls_then_silence(line: &str) -> Reply {
    let cmd = line.to_ascii_uppercase();
    if cmd.starts_with("STLS") {
        Reply::SayThenSilence("+OK Begin TLS negotiation\r\n".into())
    } else if cmd.starts_with("CAPA") {
        Reply::Say("+OK Capability list follows\r\nSTLS\r\nUSER\r\nUIDL\r\n.\r\n".into())
    } else {
        Reply::Say("-ERR unexpected\r\n".into())
    }
}

fn smtp_starttls_then_silence(line: &str) -> Reply {
    let cmd = line.to_ascii_uppercase();
    if cmd.starts_with("STARTTLS") {
        Reply::SayThenSilence("220 2.0.0 Ready to start TLS\r\n".into())
    } else if cmd.starts_with("EHLO") {
        Reply::Say("250-fake.test\r\n250-PIPELINING\r\n250-STARTTLS\r\n250 8BITMIME\r\n".into())
    } else {
        Reply::Say("502 5.5.2 unexpected\r\n".into())
    }
}

/// IMAP in clear text (an opted-in test server): logs in, then answers SELECT with an endless
/// trickle of untagged lines, each well within the reply timeout.
fn imap_drip(line: &str) -> Reply {
    let t = tag(line);
    let cmd = line.to_ascii_uppercase();
    if cmd.contains("CAPABILITY") {
        Reply::Say(format!("* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR\r\n{t} OK done\r\n"))
    } else if cmd.contains("LOGIN") || cmd.contains("AUTHENTICATE") {
        Reply::Say(format!("{t} OK logged in\r\n"))
    } else if cmd.contains("LIST") {
        Reply::Say(format!("* LIST () \"/\" \"\"\r\n{t} OK done\r\n"))
    } else {
        Reply::Drip("* 3 EXISTS\r\n".into())
    }
}

fn config(protocol: &str, port: u16, tls_mode: &str) -> TenantConfig {
    let mut spec = ServerSpec::new("127.0.0.1", port, false, "user@example.test", "Pw-not-for-the-wire");
    spec.insecure_plaintext = tls_mode == "plaintext";
    let mut cfg = tenant(protocol, &spec, &spec, false);
    cfg.limits.reply_timeout_secs = 2;
    cfg
}

async fn fetch(cfg: &TenantConfig) -> Result<usize, HostError> {
    let mut sink = MemorySink::default();
    ops::fetch(plugin(), cfg, "inbox", &mut sink, &NoSyncState).await.map(|_| sink.messages.len())
}

/// Asserts the typed STARTTLS handshake timeout, reached within the reply timeout (2 s) plus
/// a margin, never after a hang.
fn assert_starttls_timeout(e: HostError, started: Instant, what: &str) {
    let took = started.elapsed();
    assert_eq!(e.kind(), Some(Kind::Timeout), "{what}: {e}");
    let text = e.to_string();
    assert!(text.contains("TLS handshake after STARTTLS") && text.contains("within 2 s"), "{what}: {text}");
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(10), "{what}: ended after {took:?}");
}

#[tokio::test]
async fn imap_starttls_accepted_then_silence_ends_within_the_reply_timeout() {
    let (port, _) = scripted("* OK fake IMAP ready\r\n", imap_starttls_then_silence).await;
    let _ = plugin(); // compiled before the clock starts
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(30), fetch(&config("imap", port, "starttls")))
        .await
        .expect("the fetch must not hang")
        .expect_err("no TLS ever starts");
    assert_starttls_timeout(e, started, "IMAP");
}

#[tokio::test]
async fn pop3_stls_accepted_then_silence_ends_within_the_reply_timeout() {
    let (port, _) = scripted("+OK fake POP3 ready\r\n", pop3_stls_then_silence).await;
    let _ = plugin(); // compiled before the clock starts
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(30), fetch(&config("pop3", port, "starttls")))
        .await
        .expect("the fetch must not hang")
        .expect_err("no TLS ever starts");
    assert_starttls_timeout(e, started, "POP3");
}

#[tokio::test]
async fn smtp_starttls_accepted_then_silence_ends_within_the_reply_timeout() {
    let (port, _) = scripted("220 fake.test ESMTP\r\n", smtp_starttls_then_silence).await;
    let cfg = config("imap", port, "starttls");
    let msg = Outgoing { to: vec!["customer@example.test".into()], subject: "waits".into(), text_body: "x".into() };
    let _ = plugin(); // compiled before the clock starts
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(30), ops::send(plugin(), &cfg, "q", &msg, &NoSyncState))
        .await
        .expect("the send must not hang")
        .expect_err("no TLS ever starts");
    assert_starttls_timeout(e, started, "SMTP");
}

#[tokio::test]
async fn a_drip_feeding_server_is_cut_off_at_max_session_secs() {
    let (port, _) = scripted("* OK fake IMAP ready\r\n", imap_drip).await;
    let mut cfg = config("imap", port, "plaintext");
    // Each line comes well within the reply timeout, so only the session bound can end it.
    cfg.limits.reply_timeout_secs = 5;
    cfg.limits.max_session_secs = 3;
    let _ = plugin(); // compiled before the clock starts
    let started = Instant::now();
    let e = tokio::time::timeout(Duration::from_secs(60), fetch(&cfg))
        .await
        .expect("the fetch must not hang")
        .expect_err("the session never finishes");
    let took = started.elapsed();
    assert!(matches!(e, HostError::SessionLimit { limit_secs: 3, .. }), "{e}");
    assert_eq!(e.kind(), Some(Kind::Timeout));
    let text = e.to_string();
    assert!(text.contains("took longer than limits.max_session_secs (3 s)") && text.contains("raise limits.max_session_secs"), "{text}");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(8), "ended after {took:?}");
}

fn mailbox(port: u16, security: GuestSecurity) -> GuestMailbox {
    GuestMailbox {
        protocol: GuestProtocol::Imap,
        server: GuestServer { host: "127.0.0.1".into(), port, security },
        credentials: Credentials::Basic(BasicCredentials { username: "u@example.test".into(), password: "Pw-not-for-the-wire".into() }),
        folders: vec![],
        limits: GuestLimits { max_line_bytes: 8192, max_message_bytes: 1 << 20, max_batch_messages: 10, max_batch_bytes: 1 << 20, reply_timeout_ms: 2000 },
        after_fetch: GuestAfterFetch::Keep,
        first_sync: GuestFirstSync::All,
        idle: false,
    }
}

/// Drives an inbound session whose `server()` asks for `asked` against an allow-list that
/// configured `configured` for the same host and port.
async fn drive_with(asked: GuestSecurity, configured: GuestSecurity) -> (Result<(), HostError>, usize) {
    let (port, accepted) = scripted("* OK fake IMAP ready\r\n", imap_starttls_then_silence).await;
    let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
    let session = instance.open_inbound(&mailbox(port, asked), None, 0).await.expect("open");
    let allowed = vec![("127.0.0.1".to_string(), port, configured)];
    let opts = DriveOptions {
        allowed: &allowed,
        tls: mailplug_host::net::tls_config(None).expect("tls"),
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        reply_timeout: Duration::from_secs(2),
        greeting_timeout: Duration::from_secs(2),
        max_session: Duration::from_secs(5),
    };
    let r = drive(&mut instance, session, &opts, &mut MemorySink::default()).await.map(|_| ());
    // Give a connection the refused session might have opened time to be counted.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (r, accepted.load(Ordering::SeqCst))
}

#[tokio::test]
async fn a_session_asking_for_weaker_security_than_configured_is_refused_before_connecting() {
    use GuestSecurity::*;
    for (asked, configured) in [(InsecurePlaintext, ImplicitTls), (Starttls, ImplicitTls), (InsecurePlaintext, Starttls)] {
        let (r, accepted) = drive_with(asked, configured).await;
        let e = r.expect_err("weaker security must be refused");
        assert!(matches!(e, HostError::WeakerSecurity { .. }), "{asked:?} for {configured:?}: {e}");
        assert_eq!(e.kind(), Some(Kind::Policy));
        assert!(e.to_string().contains("nothing was sent"), "{e}");
        assert_eq!(accepted, 0, "{asked:?} for {configured:?}: the host connected anyway");
    }
    // The configured mode itself is let through: the host connects (and then the scripted
    // server's silence after STARTTLS ends the session with the handshake timeout).
    let (r, accepted) = drive_with(Starttls, Starttls).await;
    assert_eq!(accepted, 1);
    let e = r.expect_err("the scripted server never starts TLS");
    assert!(e.to_string().contains("TLS handshake after STARTTLS"), "{e}");
}
