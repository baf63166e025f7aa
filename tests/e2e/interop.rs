//! Interop findings of issue 11 (items 3-5) against the rig: the saved copy of a reply is byte
//! for byte what the second SMTP server (smtp2) received; `fetch --json` prints decoded
//! subjects and display names; a TLS switch that does not match the port is named quickly and
//! plainly for IMAP, POP3 and SMTP, both ways.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mailplug_host::config::{AfterFetch, TenantConfig};
use mailplug_host::db::Database;
use mailplug_host::engine::{GuestError, Stage};
use mailplug_host::error::Kind;
use mailplug_host::ops::{self, Outgoing, Reply, SavedReply};
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_host::HostError;
use mailplug_tests::{plugin, rig, tenant, test_box, wasm_path, ServerSpec};
use mailplug_tests::TempPath;

fn bin() -> PathBuf {
    std::env::var("MAILPLUG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/tmp/mailplug-target/debug/mailplug"))
}

fn unique() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}", t.as_nanos())
}

fn tmpdir(name: &str) -> TempPath {
    TempPath::dir(&format!("interop-{name}"))
}

fn run(args: &[&str], config: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .env("MAILPLUG_WASM", wasm_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tenant file with one mailbox (`imap` / `pop3`) or one queue (`smtp`) on the rig, with
/// the given `[limits]` lines; the password in a file beside it.
fn write_config(dir: &Path, protocol: &str, port: u16, tls: bool, user: &(String, String), limits: &str) -> PathBuf {
    let r = rig();
    std::fs::write(dir.join("pw"), &user.1).expect("pw");
    let server = format!("host = \"localhost\"\nport = {port}\ntls = {tls}\nusername = \"{}\"\npassword_file = \"pw\"\n", user.0);
    let body = if protocol == "smtp" {
        format!("[[queue]]\nname = \"q\"\n[queue.smtp]\n{server}")
    } else {
        format!("[[mailbox]]\nname = \"m\"\naddress = \"{}\"\nprotocol = \"{protocol}\"\nfirst_sync = \"all\"\n{server}", user.0)
    };
    let text = format!(
        "tenant = \"interop\"\nlicensed = true\nextra_ca_file = \"{}\"\ndatabase = \"{}/db.sqlite3\"\n\n[limits]\n{limits}\n\n{body}",
        r.get("RIG_CA"),
        dir.display()
    );
    let path = dir.join("tenant.toml");
    std::fs::write(&path, text).expect("config");
    path
}

// ---- item 3: the saved copy is what SMTP received ----

/// The exact DATA bytes smtp2 spooled for the message with this Message-ID (waits until its
/// `.json`, written last, is there).
fn smtp2_spooled(message_id: &str) -> Vec<u8> {
    let spool = PathBuf::from(rig().get("RIG_SMTP2_SPOOL"));
    let start = Instant::now();
    loop {
        for entry in std::fs::read_dir(&spool).expect("smtp2 spool").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                let Ok(text) = std::fs::read_to_string(&path) else { continue };
                let Ok(meta) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
                if meta["message_id"].as_str().map(|m| m.trim_matches(['<', '>'])) == Some(message_id) {
                    return std::fs::read(path.with_extension("eml")).expect("the spooled .eml");
                }
            }
        }
        assert!(start.elapsed() < Duration::from_secs(15), "smtp2 spooled no message {message_id}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A reply whose body does not end with a line break, sent through smtp2 with `save_sent`:
/// the copy APPENDed to Dovecot is byte for byte what smtp2 received with DATA.
#[tokio::test]
async fn the_saved_copy_is_byte_for_byte_what_smtp2_received_also_without_a_final_newline() {
    let r = rig();
    let a = test_box(20);
    r.reset_mailbox(&a.0);
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, &a.0, &a.1);
    let smtp = ServerSpec::new(r.get("RIG_SMTP2_HOST"), r.port("RIG_SMTP2_STARTTLS_PORT"), false, &a.0, &a.1);
    let mut cfg = tenant("imap", &inb, &smtp, true);
    cfg.mailboxes[0].save_sent = Some("Sent".into());
    cfg.mailboxes[0].after_fetch = AfterFetch::Keep;
    let dir = tmpdir("saved-copy");
    let db = Database::open(&dir.join("db.sqlite3")).expect("db");

    let orig_id = format!("interop-{}@customer.example.test", unique());
    let original = format!(
        "From: Customer <{}>\r\nTo: Support <{}>\r\nSubject: Byte for byte\r\nMessage-ID: <{orig_id}>\r\n\r\nHello?\r\n",
        r.user("CUSTOMER"),
        a.0
    );
    r.put(&a.0, "INBOX", original.as_bytes());
    let mut sink = db.sink(&cfg.tenant, "inbox");
    ops::fetch(plugin(), &cfg, "inbox", &mut sink, &db).await.expect("fetch the original");
    drop(sink);

    // No line break at the end, and a last line that starts with a dot (stuffed on the wire).
    let reply = Reply { text_body: "Thanks, it ships today.\n.and no newline at the end".into(), html_body: None, force: false };
    let sent = ops::send_reply(plugin(), &cfg, "q", &db, &format!("mid:{orig_id}"), &reply).await.expect("reply sent");
    assert!(matches!(&sent.saved, SavedReply::Saved { .. }), "{:?}", sent.saved);

    let received = smtp2_spooled(&sent.sent.message_id);
    assert!(received.ends_with(b"and no newline at the end\r\n"), "{:?}", String::from_utf8_lossy(&received));

    // The copy in Sent, read back through the component's own fetch (IMAP BODY.PEEK[]).
    let mut read_back = cfg.clone();
    read_back.mailboxes[0].folders = vec!["Sent".into()];
    read_back.mailboxes[0].save_sent = None;
    let mut sink = MemorySink::default();
    ops::fetch(plugin(), &read_back, "inbox", &mut sink, &NoSyncState).await.expect("fetch Sent");
    let copies: Vec<&[u8]> = sink.messages.iter().map(|m| m.raw.as_slice()).collect();
    assert_eq!(copies.len(), 1, "one copy in Sent");
    assert_eq!(
        String::from_utf8_lossy(copies[0]),
        String::from_utf8_lossy(&received),
        "the saved copy differs from what SMTP received"
    );
    assert_eq!(copies[0], received.as_slice());
    assert_eq!(sent.sent.raw, received, "the composed message is what DATA carried");
}

/// A new message (not a reply) through smtp2's implicit-TLS port: what DATA carried is the
/// composed message, the last line ended.
#[tokio::test]
async fn a_new_message_is_composed_exactly_as_smtp2_receives_it() {
    let r = rig();
    let a = test_box(20);
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, &a.0, &a.1);
    let smtp = ServerSpec::new(r.get("RIG_SMTP2_HOST"), r.port("RIG_SMTP2_TLS_PORT"), true, &a.0, &a.1);
    let cfg = tenant("imap", &inb, &smtp, true);
    let msg = Outgoing { to: vec![r.user("CUSTOMER").to_string()], subject: "Grüße".into(), text_body: "Kein Zeilenende".into() };
    let sent = ops::send(plugin(), &cfg, "q", &msg, &NoSyncState).await.expect("sent");
    let received = smtp2_spooled(&sent.message_id);
    assert!(received.ends_with(b"\r\n"));
    assert_eq!(sent.raw, received);
}

// ---- item 4: fetch --json decodes ----

#[test]
fn fetch_json_prints_the_decoded_subject_and_display_names() {
    let r = rig();
    let a = test_box(30);
    r.reset_mailbox(&a.0);
    let dir = tmpdir("decoded");
    let cfg = write_config(&dir, "imap", r.port("RIG_IMAPS_PORT"), true, &a, "reply_timeout_secs = 15");
    let id = format!("decoded-{}@example.test", unique());
    let raw = format!(
        "From: =?UTF-8?Q?J=C3=BCrgen_M=C3=BCller?= <juergen@example.test>\r\n\
         To: =?ISO-8859-1?Q?Bj=F6rn_Sch=E4fer?= <bjoern@example.test>, plain@example.test\r\n\
         Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?= =?UTF-8?B?4oCTIFRlaWwgMg==?=\r\n\
         Message-ID: <{id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo\r\n"
    );
    r.put(&a.0, "INBOX", raw.as_bytes());
    let out = run(&["fetch", "--json"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.contains("\"bytes\"")).unwrap_or_else(|| panic!("no message line: {stdout}"));
    let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
    assert_eq!(v["subject"], "Grüße aus Köln– Teil 2", "{v}");
    assert_eq!(v["from"], "Jürgen Müller <juergen@example.test>", "{v}");
    assert_eq!(v["to"], serde_json::json!(["Björn Schäfer <bjoern@example.test>", "plain@example.test"]), "{v}");
    assert!(!line.contains("=?"), "an encoded word reached the output: {line}");

    // The text output decodes too, and a decoded line break cannot forge a second line.
    let id2 = format!("decoded2-{}@example.test", unique());
    let hostile = format!(
        "From: =?UTF-8?Q?Ann=0D=0Amailbox=09fake?= <ann@example.test>\r\nTo: support@example.test\r\n\
         Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe=0D=0Am=09forged=09line?=\r\nMessage-ID: <{id2}>\r\n\r\nHi\r\n"
    );
    r.put(&a.0, "INBOX", hostile.as_bytes());
    let out = run(&["fetch"], &cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one line for one message: {stdout}");
    assert!(stdout.contains("Subject: Grüße  m forged line"), "{stdout}");
    assert!(stdout.contains("From: Ann  mailbox fake <ann@example.test>"), "{stdout}");
}

// ---- item 5: the TLS switch does not match the port ----

/// (protocol, the rig's implicit-TLS port, its STARTTLS port).
fn ports() -> [(&'static str, u16, u16); 3] {
    let r = rig();
    [
        ("imap", r.port("RIG_IMAPS_PORT"), r.port("RIG_IMAP_STARTTLS_PORT")),
        ("pop3", r.port("RIG_POP3S_PORT"), r.port("RIG_POP3_STLS_PORT")),
        ("smtp", r.port("RIG_SMTPS_PORT"), r.port("RIG_SUBMISSION_PORT")),
    ]
}

/// The last step of `check --json`, which must have failed.
fn failed_step(out: &Output) -> serde_json::Value {
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("check --json printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(json["passed"], false, "{json}");
    let last = json["steps"].as_array().expect("steps").last().expect("a step").clone();
    assert_eq!(last["ok"], false, "{json}");
    last
}

/// Runs the failing operation through the CLI: `fetch` for a mailbox, `send` for a queue.
fn run_operation(protocol: &str, cfg: &Path) -> Output {
    if protocol == "smtp" {
        run(&["send", "--queue", "q", "--to", rig().user("CUSTOMER"), "--subject", "never sent", "--body", "x"], cfg)
    } else {
        run(&["fetch"], cfg)
    }
}

/// Through the library: fetch for a mailbox, send for a queue.
async fn library_operation(protocol: &str, cfg: &TenantConfig) -> HostError {
    if protocol == "smtp" {
        let msg = Outgoing { to: vec![rig().user("CUSTOMER").to_string()], subject: "never sent".into(), text_body: "x".into() };
        ops::send(plugin(), cfg, "q", &msg, &NoSyncState).await.expect_err("no greeting")
    } else {
        ops::fetch(plugin(), cfg, "m", &mut MemorySink::default(), &NoSyncState).await.expect_err("no greeting")
    }
}

#[tokio::test]
async fn tls_off_for_a_tls_port_stops_at_the_greeting_timeout_for_every_protocol() {
    let user = test_box(30);
    // The reply timeout stays long: the greeting timeout alone must end the wait. It is longer
    // than the component's CPU budget per call (2 s), so the explanation must come from an
    // instance that did not trap meanwhile.
    let limits = "reply_timeout_secs = 60\ngreeting_timeout_secs = 3\nconnect_timeout_secs = 5";
    for (protocol, tls_port, _) in ports() {
        let dir = tmpdir(&format!("no-greeting-{protocol}"));
        let path = write_config(&dir, protocol, tls_port, false, &user, limits);

        // Library: the typed error, at the greeting, well before the reply timeout.
        let cfg = TenantConfig::load(&path).expect("config");
        let started = Instant::now();
        let e = library_operation(protocol, &cfg).await;
        let took = started.elapsed();
        assert!(matches!(e, HostError::NoGreeting { secs: 3, implicit_tls: false, .. }), "{protocol}: {e:?}");
        assert_eq!(e.kind(), Some(Kind::Timeout));
        assert!(took < Duration::from_secs(30), "{protocol}: ended after {took:?}");
        match e.to_guest_error(Stage::Connect) {
            Some(GuestError::Timeout(d)) => assert_eq!(d.stage, Stage::Greeting, "{protocol}"),
            other => panic!("{protocol}: {other:?}"),
        }
        let headline = e.to_string();
        assert!(headline.contains("no greeting within 3 s") && headline.contains("turn TLS on"), "{protocol}: {headline}");
        assert!(!headline.contains("raise"), "{protocol}: contradicting advice: {headline}");

        // CLI check: the greeting step fails, explained in both languages.
        let out = run(&["check", "--json"], &path);
        assert_eq!(out.status.code(), Some(1), "{protocol}: {}", stderr(&out));
        let last = failed_step(&out);
        assert_eq!(last["step"], "greeting", "{protocol}: {last}");
        let error = last["error"].as_str().unwrap_or_default();
        assert!(error.contains("no greeting within 3 s") && !error.contains("raise"), "{protocol}: {last}");
        assert!(last["ms"].as_u64().unwrap_or(u64::MAX) < 30_000, "{protocol}: {last}");
        let (en, de) = (format!("{} {}", last["cause"]["en"], last["action"]["en"]), format!("{} {}", last["cause"]["de"], last["action"]["de"]));
        assert!(en.contains("TLS switch on") && de.contains("TLS-Schalter an"), "{protocol}: {last}");

        // CLI fetch / send: the same headline, the cause and action under it, no advice to wait longer.
        let out = run_operation(protocol, &path);
        assert_eq!(out.status.code(), Some(1), "{protocol}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(text.contains("no greeting within 3 s"), "{protocol}: {text}");
        assert!(text.contains("TLS switch on") && text.contains("TLS-Schalter an"), "{protocol}: {text}");
        assert!(!text.contains("raise the reply timeout") && !text.contains("reply_timeout"), "{protocol}: {text}");
    }
}

#[tokio::test]
async fn tls_on_for_a_starttls_port_keeps_the_tls_library_text_in_the_detail() {
    let user = test_box(30);
    let limits = "reply_timeout_secs = 15\ngreeting_timeout_secs = 2\nconnect_timeout_secs = 5";
    for (protocol, _, starttls_port) in ports() {
        let dir = tmpdir(&format!("not-tls-{protocol}"));
        let path = write_config(&dir, protocol, starttls_port, true, &user, limits);

        // Library: the typed error; rustls' words only in the detail.
        let cfg = TenantConfig::load(&path).expect("config");
        let e = library_operation(protocol, &cfg).await;
        let HostError::NotTls { port, detail, .. } = &e else { panic!("{protocol}: {e:?}") };
        assert_eq!(*port, starttls_port);
        assert!(!detail.is_empty());
        assert_eq!(e.kind(), Some(Kind::Tls));
        let headline = e.to_string();
        assert!(headline.contains(&format!("did not speak TLS on port {starttls_port}")), "{protocol}: {headline}");
        assert!(headline.contains("turn TLS off"), "{protocol}: {headline}");
        for raw in ["InvalidContentType", "corrupt message", "InvalidMessage"] {
            assert!(!headline.contains(raw), "{protocol}: {raw} in the headline: {headline}");
        }

        // CLI check: the tls step, the headline in "error", the library text in "detail".
        let out = run(&["check", "--json"], &path);
        assert_eq!(out.status.code(), Some(1), "{protocol}: {}", stderr(&out));
        let last = failed_step(&out);
        assert_eq!(last["step"], "tls", "{protocol}: {last}");
        let error = last["error"].as_str().unwrap_or_default();
        assert!(error.contains("did not speak TLS") && !error.contains("InvalidContentType"), "{protocol}: {last}");
        assert!(last["detail"].as_str().is_some_and(|d| !d.is_empty()), "{protocol}: {last}");
        let (en, de) = (format!("{} {}", last["cause"]["en"], last["action"]["en"]), format!("{} {}", last["cause"]["de"], last["action"]["de"]));
        assert!(en.contains("TLS switch off") && de.contains("TLS-Schalter aus"), "{protocol}: {last}");
        let plain = run(&["check"], &path);
        let text = String::from_utf8_lossy(&plain.stdout);
        assert!(text.contains("FAIL  tls") && text.contains("detail:"), "{protocol}: {text}");

        // CLI fetch / send: the headline line without the library text, then a detail line.
        let out = run_operation(protocol, &path);
        assert_eq!(out.status.code(), Some(1), "{protocol}: {}", stderr(&out));
        let text = stderr(&out);
        let headline = text.lines().find(|l| l.contains("did not speak TLS")).unwrap_or_else(|| panic!("{protocol}: {text}"));
        assert!(!headline.contains("InvalidContentType") && !headline.contains("corrupt"), "{protocol}: {headline}");
        assert!(text.lines().any(|l| l.starts_with("mailplug:   detail:")), "{protocol}: {text}");
        assert!(text.contains("TLS switch off") && text.contains("TLS-Schalter aus"), "{protocol}: {text}");
    }
}
