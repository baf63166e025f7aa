//! Hostile servers through the real component (issue 10, items 2, 3, 10, 11 and 12's
//! redaction): small scripted servers on 127.0.0.1:0 for attacks a real server never makes,
//! driven through `mailplug_host::ops` (fetch, send), the connection check, and the engine.
//! Every limit here is hit inside the wasm32 component, where `usize` has 32 bits.

use std::time::Duration;

use mailplug_host::check::{check_mailbox, check_queue, CheckReport};
use mailplug_host::driver::{drive, now_ms, MessageSink};
use mailplug_host::engine::{
    BasicCredentials, Credentials, FetchedMessage, Oauth2Credentials, Oauth2Mechanism, StepReport,
};
use mailplug_host::error::Kind;
use mailplug_host::ops::{self, Outgoing};
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_host::{HostError, TenantConfig};
use mailplug_tests::scripted::{s, Fake, Step};
use mailplug_tests::{plugin, rig, tenant, ServerSpec};
use mailplug_tests::TempPath;
use Step::{Recv, Send, Tls};

/// What an attacker on the path writes before TLS: it must never reach the admin.
const ATTACK: &str = "555-0100";
const PASSWORD: &str = "Echo-Pw-7Rq!";

/// How the tenant reaches the fake server.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Starttls,
    Plaintext,
}

fn spec(port: u16, mode: Mode) -> ServerSpec {
    let mut sp = ServerSpec::new("localhost", port, false, "agent@example.test", PASSWORD);
    sp.insecure_plaintext = mode == Mode::Plaintext;
    sp
}

/// A tenant whose mailbox (`protocol`) and queue both point at `port`.
fn cfg(protocol: &str, port: u16, mode: Mode) -> TenantConfig {
    tenant(protocol, &spec(port, mode), &spec(port, mode), true)
}

async fn fetch(cfg: &TenantConfig) -> Result<usize, HostError> {
    let mut sink = MemorySink::default();
    ops::fetch(plugin(), cfg, "inbox", &mut sink, &NoSyncState).await.map(|_| sink.messages.len())
}

async fn send(cfg: &TenantConfig) -> Result<(), HostError> {
    let msg = Outgoing { to: vec!["ann@example.org".into()], subject: "hostile".into(), text_body: "x".into() };
    ops::send(plugin(), cfg, "q", &msg, &NoSyncState).await.map(|_| ())
}

/// Everything the admin could be shown of a failed run: Display, Debug and the guest error.
fn shown(e: &HostError) -> String {
    format!("{e} || {e:?}")
}

fn report_text(r: &CheckReport) -> String {
    format!("{r:?}")
}

fn guest_kind(e: &HostError) -> Option<Kind> {
    e.kind()
}

// ---- Item 3: text received before TLS ---------------------------------------------------

const IMAP_PRE: &str = "* OK [CAPABILITY IMAP4rev1 STARTTLS X-CALL-+1-555-0100] call +1-555-0100 now\r\n";
const IMAP_LIST: &str = "* LIST () \"/\" \"call +1-555-0100\"\r\n";

/// IMAP scripts: attacker text in greeting, capabilities and an untagged LIST, then the
/// STARTTLS answer `end`.
fn imap_scripts() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        ("refused", vec![s(IMAP_PRE), Recv, s(IMAP_LIST), s("a1 NO call +1-555-0100\r\n")]),
        ("malformed", vec![s(IMAP_PRE), Recv, s(IMAP_LIST), s("* LIST call +1-555-0100\r\n")]),
        ("foreign tag", vec![s(IMAP_PRE), Recv, s(IMAP_LIST), s("call+1-555-0100 OK go\r\n")]),
        (
            "TLS then misbehaves",
            vec![
                s(IMAP_PRE),
                Recv,
                s(IMAP_LIST),
                s("a1 OK begin TLS\r\n"),
                Tls,
                Recv,
                s("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na2 OK\r\n"),
                Recv,
                s("a3 NO [AUTHENTICATIONFAILED] encrypted refusal\r\n"),
            ],
        ),
    ]
}

const POP_PRE: &str = "+OK call +1-555-0100 now\r\n";
const POP_CAPA: &str = "+OK\r\nSTLS\r\nX-CALL +1-555-0100\r\nUSER\r\n.\r\n";

fn pop3_scripts() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        ("refused", vec![s(POP_PRE), Recv, s(POP_CAPA), Recv, s("-ERR call +1-555-0100\r\n")]),
        ("unexpected", vec![s(POP_PRE), Recv, s(POP_CAPA), Recv, s("call +1-555-0100\r\n")]),
        ("greeting not POP3", vec![s("call +1-555-0100\r\n")]),
        (
            "TLS then misbehaves",
            vec![
                s(POP_PRE),
                Recv,
                s(POP_CAPA),
                Recv,
                s("+OK begin TLS\r\n"),
                Tls,
                Recv,
                s("+OK\r\nUSER\r\n.\r\n"),
                Recv,
                s("+OK\r\n"),
                Recv,
                s("-ERR [AUTH] encrypted refusal\r\n"),
            ],
        ),
    ]
}

const SMTP_PRE: &str = "220-mx.example.test call +1-555-0100\r\n220 ESMTP\r\n";
const SMTP_EHLO: &str = "250-mx.example.test call +1-555-0100\r\n250-X-CALL +1-555-0100\r\n250 STARTTLS\r\n";

fn smtp_scripts() -> Vec<(&'static str, Vec<Step>)> {
    vec![
        ("refused, multi-line", vec![s(SMTP_PRE), Recv, s(SMTP_EHLO), Recv, s("454-call +1-555-0100\r\n454 4.7.0 no TLS\r\n")]),
        ("EHLO not SMTP", vec![s(SMTP_PRE), Recv, s("250-mx\r\ncall +1-555-0100\r\n")]),
        ("greeting refusal, multi-line", vec![s("554-call +1-555-0100\r\n554 5.7.1 go away\r\n")]),
        (
            "TLS then misbehaves",
            vec![
                s(SMTP_PRE),
                Recv,
                s(SMTP_EHLO),
                Recv,
                s("220 2.0.0 go ahead\r\n"),
                Tls,
                Recv,
                s("250-mx.example.test\r\n250 AUTH PLAIN\r\n"),
                Recv,
                s("535 5.7.8 encrypted refusal\r\n"),
            ],
        ),
    ]
}

async fn assert_pre_tls_text_withheld(protocol: &str, scripts: Vec<(&'static str, Vec<Step>)>) {
    for (name, script) in scripts {
        let fake = Fake::start(script).await;
        // The tenant's mailbox is IMAP when the queue's SMTP server is under test.
        let c = cfg(if protocol == "smtp" { "imap" } else { protocol }, fake.port, Mode::Starttls);
        let err = if protocol == "smtp" { send(&c).await.unwrap_err() } else { fetch(&c).await.unwrap_err() };
        assert!(!shown(&err).contains(ATTACK), "{protocol} {name}: pre-TLS text in the error: {}", shown(&err));
        if let HostError::Guest(g) = &err {
            assert!(g.reply.is_none() || name == "TLS then misbehaves", "{protocol} {name}: {g:?}");
        }
        let report = if protocol == "smtp" {
            check_queue(plugin(), &c, &NoSyncState, "q", None, &[]).await.expect("check runs")
        } else {
            check_mailbox(plugin(), &c, &NoSyncState, "inbox", &[]).await.expect("check runs")
        };
        assert!(!report.passed(), "{protocol} {name}: {report:?}");
        assert!(!report_text(&report).contains(ATTACK), "{protocol} {name}: pre-TLS text in the check: {report:?}");
        if name == "TLS then misbehaves" {
            // After TLS the server's own words are shown again: the admin needs them.
            assert!(shown(&err).contains("encrypted refusal"), "{protocol}: {}", shown(&err));
            assert!(report.steps.iter().any(|st| st.step == "starttls"), "{report:?}");
        }
    }
}

#[tokio::test]
async fn imap_text_before_starttls_reaches_no_error_and_no_check_step() {
    assert_pre_tls_text_withheld("imap", imap_scripts()).await;
}

#[tokio::test]
async fn pop3_text_before_stls_reaches_no_error_and_no_check_step() {
    assert_pre_tls_text_withheld("pop3", pop3_scripts()).await;
}

#[tokio::test]
async fn smtp_text_before_starttls_reaches_no_error_and_no_check_step() {
    assert_pre_tls_text_withheld("smtp", smtp_scripts()).await;
}

// ---- Item 2: untagged floods and CAPA listings ------------------------------------------

/// An IMAP server (plain text, opted in) that logs in and selects a 3-message INBOX, then
/// answers the listing with `then`.
fn imap_selected(then: Vec<Step>) -> Vec<Step> {
    let mut v = vec![
        s("* OK [CAPABILITY IMAP4rev1 ESEARCH AUTH=PLAIN SASL-IR] ready\r\n"),
        Recv,
        s("a1 OK logged in\r\n"),
        Recv,
        s("* 3 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\n* OK [UIDNEXT 4] n\r\na2 OK [READ-WRITE] selected\r\n"),
        Recv,
    ];
    v.extend(then);
    v
}

#[tokio::test]
async fn an_imap_server_drip_feeding_untagged_ok_ends_at_the_cap() {
    let fake = Fake::start(imap_selected(vec![Step::Flood(b"* OK x\r\n".to_vec(), 1_000_000)])).await;
    let started = std::time::Instant::now();
    let err = fetch(&cfg("imap", fake.port, Mode::Plaintext)).await.unwrap_err();
    assert_eq!(guest_kind(&err), Some(Kind::Limit), "{err}");
    assert!(err.to_string().contains("more than 10000 untagged responses"), "{err}");
    assert!(fake.received().contains("a3 UID SEARCH"), "{}", fake.received());
    eprintln!("untagged flood stopped at the cap after {:?}", started.elapsed());
}

#[tokio::test]
async fn untagged_bytes_of_one_command_are_capped() {
    // Useful-looking FETCH lines (not counted as ignored), each within the line limit: the
    // command's byte budget (max_batch_bytes + 256 MiB) ends it.
    let line = format!("* 1 FETCH (FLAGS ({}))\r\n", "x".repeat(60_000)).into_bytes();
    let fake = Fake::start(imap_selected(vec![Step::Flood(line, 10_000)])).await;
    let mut c = cfg("imap", fake.port, Mode::Plaintext);
    c.limits.max_batch_bytes = 1024;
    let started = std::time::Instant::now();
    let err = fetch(&c).await.unwrap_err();
    assert_eq!(guest_kind(&err), Some(Kind::Limit), "{err}");
    assert!(err.to_string().contains("bytes of untagged responses"), "{err}");
    eprintln!("untagged bytes stopped at the cap after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_pop3_capa_listing_that_never_ends_stops_at_the_cap() {
    let fake = Fake::start(vec![s("+OK ready\r\n"), Recv, s("+OK\r\n"), Step::Flood(b"X-NOISE\r\n".to_vec(), 1_000_000)]).await;
    let err = fetch(&cfg("pop3", fake.port, Mode::Plaintext)).await.unwrap_err();
    assert_eq!(guest_kind(&err), Some(Kind::Limit), "{err}");
    assert!(err.to_string().contains("more than 128 CAPA lines"), "{err}");
}

// ---- Item 10: bounds that hold on wasm32 --------------------------------------------------

#[tokio::test]
async fn esearch_over_the_whole_uid_range_is_a_limit_error_on_wasm32() {
    // 1:4294967295 holds 2^32 - 1 UIDs: counted in a 32-bit usize it wraps to 0 and passed.
    let fake = Fake::start(imap_selected(vec![s("* ESEARCH (TAG \"a3\") UID ALL 1:4294967295\r\na3 OK done\r\n")])).await;
    let err = fetch(&cfg("imap", fake.port, Mode::Plaintext)).await.unwrap_err();
    assert_eq!(guest_kind(&err), Some(Kind::Limit), "{err}");
    assert!(!fake.received().contains("UID FETCH"), "nothing fetched: {}", fake.received());
}

#[tokio::test]
async fn uid_0_in_search_answers_is_refused() {
    for answer in ["* ESEARCH (TAG \"a3\") UID ALL 0:4294967295\r\na3 OK done\r\n", "* SEARCH 0 2\r\na3 OK done\r\n"] {
        let fake = Fake::start(imap_selected(vec![s(answer)])).await;
        let err = fetch(&cfg("imap", fake.port, Mode::Plaintext)).await.unwrap_err();
        assert_eq!(guest_kind(&err), Some(Kind::Protocol), "{answer}: {err}");
        assert!(err.to_string().contains("malformed"), "{err}");
    }
}

#[tokio::test]
async fn literal_sizes_beyond_32_bits_are_limit_errors() {
    // A body literal of 2^32 bytes (0 on a 32-bit usize after truncation) and a non-body
    // literal far beyond the line budget, both announced in answer to the listing.
    for answer in ["* 1 FETCH (UID 1 BODY[] {4294967296}\r\n", "* 1 FETCH (UID 1 FLAGS {18446744073709551616}\r\n"] {
        let fake = Fake::start(imap_selected(vec![s(answer)])).await;
        let err = fetch(&cfg("imap", fake.port, Mode::Plaintext)).await.unwrap_err();
        assert_eq!(guest_kind(&err), Some(Kind::Limit), "{answer}: {err}");
    }
}

/// A POP3 server (plain text, opted in): USER/PASS login, STAT of `count` messages, then `uidl`.
fn pop3_listing(count: u32, uidl: String) -> Vec<Step> {
    vec![
        s("+OK ready\r\n"),
        Recv,
        s("+OK\r\nUSER\r\nUIDL\r\n.\r\n"),
        Recv,
        s("+OK\r\n"),
        Recv,
        s("+OK logged in\r\n"),
        Recv,
        Send(format!("+OK {count} 100\r\n").into_bytes()),
        Recv,
        Send(uidl.into_bytes()),
    ]
}

#[tokio::test]
async fn a_pop3_unique_id_over_70_characters_is_refused() {
    let fake = Fake::start(pop3_listing(1, format!("+OK\r\n1 {}\r\n.\r\n", "u".repeat(71)))).await;
    let err = fetch(&cfg("pop3", fake.port, Mode::Plaintext)).await.unwrap_err();
    assert_eq!(guest_kind(&err), Some(Kind::Limit), "{err}");
    assert!(err.to_string().contains("at most 70"), "{err}");
    assert!(!fake.received().contains("RETR"), "{}", fake.received());
}

#[tokio::test]
async fn a_pop3_uidl_listing_is_bounded_in_total_bytes() {
    // 260 000 ids of 70 characters: more than the 16 MiB the listing may hold.
    let n = 260_000u32;
    let mut uidl = String::with_capacity(80 * n as usize);
    uidl.push_str("+OK\r\n");
    for i in 1..=n {
        uidl.push_str(&format!("{i} {:070}\r\n", i));
    }
    uidl.push_str(".\r\n");
    let fake = Fake::start(pop3_listing(n, uidl)).await;
    let err = fetch(&cfg("pop3", fake.port, Mode::Plaintext)).await.unwrap_err();
    assert_eq!(guest_kind(&err), Some(Kind::Limit), "{err}");
    assert!(err.to_string().contains("MiB of unique-ids"), "{err}");
}

// ---- Item 11: injection ---------------------------------------------------------------

/// An SMTP server that records everything and accepts everything.
fn smtp_accepting() -> Vec<Step> {
    vec![s("220 mx ESMTP\r\n"), Recv, s("250-mx\r\n250 AUTH PLAIN\r\n"), Recv, s("235 ok\r\n"), Recv, s("250 ok\r\n"), Recv, s("250 ok\r\n"), Recv, s("354 go\r\n")]
}

struct NoSink;
impl MessageSink for NoSink {
    fn deliver(&mut self, _m: FetchedMessage) -> Result<(), HostError> {
        Ok(())
    }
    fn commit(&mut self) -> Result<(), HostError> {
        Ok(())
    }
    fn progress(&mut self, _r: StepReport) {}
}

/// Opens an outbound session on the component for `message` and drives it.
async fn submit_raw(c: &TenantConfig, credentials: Credentials, message: &[u8]) -> Result<(), HostError> {
    let q = c.queue("q").unwrap();
    let mut instance = ops::instance_for(plugin(), c).await?;
    let allowed = ops::allowed_servers(c);
    let opts = ops::options(c, &allowed)?;
    let sub = ops::submission_server(c, q, credentials);
    let session = instance.open_outbound(&sub, "agent@example.test", &["ann@example.org".to_string()], message, now_ms()).await?;
    drive(&mut instance, session, &opts, &mut NoSink).await.map(|_| ())
}

fn basic() -> Credentials {
    Credentials::Basic(BasicCredentials { username: "agent@example.test".into(), password: PASSWORD.into() })
}

fn oauth(token: &str, mechanism: Option<Oauth2Mechanism>) -> Credentials {
    Credentials::Oauth2(Oauth2Credentials { username: "agent@example.test".into(), access_token: token.into(), mechanism })
}

#[tokio::test]
async fn nul_in_a_message_is_refused_before_anything_is_sent() {
    let fake = Fake::start(smtp_accepting()).await;
    let c = cfg("imap", fake.port, Mode::Plaintext);
    let err = submit_raw(&c, basic(), b"Subject: x\r\n\r\nhi\r\n\0.\r\nMAIL FROM:<evil@x>\r\n").await.unwrap_err();
    assert_eq!(guest_kind(&err), Some(Kind::InvalidInput), "{err}");
    assert!(err.to_string().contains("NUL"), "{err}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.connections(), 0, "nothing connected");
    assert_eq!(fake.received(), "", "nothing was sent");
}

#[tokio::test]
async fn an_access_token_with_a_control_character_never_reaches_the_wire() {
    let fake = Fake::start(smtp_accepting()).await;
    let c = cfg("imap", fake.port, Mode::Plaintext);
    let err = submit_raw(&c, oauth("x\u{1}host=evil", None), b"Subject: x\r\n\r\nhi\r\n").await.unwrap_err();
    assert_eq!(guest_kind(&err), Some(Kind::InvalidInput), "{err}");
    assert!(!shown(&err).contains("evil"), "{}", shown(&err));
    // Inbound sessions (fetch and check) refuse it the same way.
    let mut instance = ops::instance_for(plugin(), &c).await.unwrap();
    for protocol in ["imap", "pop3"] {
        let c2 = cfg(protocol, fake.port, Mode::Plaintext);
        let gm = ops::guest_mailbox(&c2, c2.mailbox("inbox").unwrap(), oauth("x\u{1}host=evil", None));
        let Err(e) = instance.open_inbound(&gm, None, now_ms()).await else { panic!("{protocol}: opened") };
        assert_eq!(guest_kind(&e), Some(Kind::InvalidInput), "{protocol}: {e}");
        let Err(e) = instance.open_check_mailbox(&gm, now_ms()).await else { panic!("{protocol}: check opened") };
        assert_eq!(guest_kind(&e), Some(Kind::InvalidInput), "{protocol}: {e}");
    }
    // A NUL in a PLAIN field (the password) likewise.
    let nul = Credentials::Basic(BasicCredentials { username: "agent@example.test".into(), password: "pw\0authzid".into() });
    let err = submit_raw(&c, nul, b"Subject: x\r\n\r\nhi\r\n").await.unwrap_err();
    assert_eq!(guest_kind(&err), Some(Kind::InvalidInput), "{err}");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.connections(), 0, "nothing connected");
}

#[tokio::test]
async fn an_smtp_oauthbearer_error_challenge_is_answered_with_aq() {
    // {"status":"invalid_token","scope":"mail"}
    let script = vec![
        s("220 mx ESMTP\r\n"),
        Recv,
        s("250-mx\r\n250 AUTH OAUTHBEARER XOAUTH2\r\n"),
        Recv,
        s("334 eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIiwic2NvcGUiOiJtYWlsIn0=\r\n"),
        Recv,
        s("535 5.7.8 invalid credentials\r\n"),
    ];
    for (mech, answer) in [(Oauth2Mechanism::Oauthbearer, "AQ==\r\n"), (Oauth2Mechanism::Xoauth2, "\r\n")] {
        let fake = Fake::start(script.clone()).await;
        let c = cfg("imap", fake.port, Mode::Plaintext);
        let err = submit_raw(&c, oauth("ya29.valid-token", Some(mech)), b"Subject: x\r\n\r\nhi\r\n").await.unwrap_err();
        assert_eq!(guest_kind(&err), Some(Kind::AuthRejected), "{err}");
        assert!(err.to_string().contains("invalid_token"), "{err}");
        let got = fake.received();
        let last = got.split_inclusive("\r\n").last().unwrap_or_default().to_string();
        assert_eq!(last, answer, "{got}");
    }
}

// ---- Item 12: echoed secrets -------------------------------------------------------------

#[tokio::test]
async fn a_password_echoed_by_imap_or_pop3_is_redacted() {
    let imap = vec![s("* OK [CAPABILITY IMAP4rev1] ready\r\n"), Recv, Send(format!("a1 NO [AUTHENTICATIONFAILED] wrong password {PASSWORD}\r\n").into_bytes())];
    let pop3 = vec![
        s("+OK ready\r\n"),
        Recv,
        s("+OK\r\nUSER\r\n.\r\n"),
        Recv,
        s("+OK\r\n"),
        Recv,
        Send(format!("-ERR [AUTH] wrong password {PASSWORD}\r\n").into_bytes()),
    ];
    for (protocol, script) in [("imap", imap), ("pop3", pop3)] {
        let fake = Fake::start(script).await;
        let err = fetch(&cfg(protocol, fake.port, Mode::Plaintext)).await.unwrap_err();
        assert_eq!(guest_kind(&err), Some(Kind::AuthRejected), "{protocol}: {err}");
        assert!(fake.received().contains(PASSWORD), "{protocol}: the server did get the password");
        assert!(!shown(&err).contains(PASSWORD), "{protocol}: {}", shown(&err));
        assert!(shown(&err).contains("<redacted>"), "{protocol}: {}", shown(&err));
    }
}

// ---- Item 3 through the CLI: JSON and text output -----------------------------------------

fn bin() -> std::path::PathBuf {
    std::env::var("MAILPLUG_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from("/var/tmp/mailplug-target/debug/mailplug"))
}

/// A tenant config file for the CLI: mailbox (`protocol`) and queue both at `port`, STARTTLS.
fn cli_config(dir: &std::path::Path, protocol: &str, port: u16) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("pw"), PASSWORD).unwrap();
    let text = format!(
        "tenant = \"hostile\"\nlicensed = true\nextra_ca_file = \"{ca}\"\ndatabase = \"{db}\"\n[limits]\nreply_timeout_secs = 10\n\
         [[mailbox]]\nname = \"inbox\"\naddress = \"agent@example.test\"\nprotocol = \"{protocol}\"\nfirst_sync = \"all\"\n\
         host = \"localhost\"\nport = {port}\ntls = false\nusername = \"agent@example.test\"\npassword_file = \"pw\"\n\
         [[queue]]\nname = \"q\"\nmailboxes = [\"inbox\"]\n[queue.smtp]\nhost = \"localhost\"\nport = {port}\ntls = false\n\
         username = \"agent@example.test\"\npassword_file = \"pw\"\n",
        ca = rig().get("RIG_CA"),
        db = dir.join("db.sqlite3").display(),
    );
    let path = dir.join("tenant.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn cli(args: Vec<String>) -> String {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin())
            .args(&args)
            .env("MAILPLUG_WASM", mailplug_tests::wasm_path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()))
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "the run must fail");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test]
async fn cli_json_and_text_never_show_text_sent_before_starttls() {
    let scripts = [("imap", imap_scripts().remove(0).1), ("pop3", pop3_scripts().remove(0).1), ("smtp", smtp_scripts().remove(0).1)];
    for (protocol, script) in scripts {
        let fake = Fake::start(script).await;
        let dir = TempPath::file(&format!("hostile-{protocol}"), "dir");
        let mailbox_protocol = if protocol == "smtp" { "imap" } else { protocol };
        let config = cli_config(&dir, mailbox_protocol, fake.port).display().to_string();
        let run = |args: &[&str]| cli(args.iter().map(|a| a.to_string()).collect());
        let outputs = if protocol == "smtp" {
            vec![
                run(&["check", "--json", "--queue", "q", "--config", &config]).await,
                run(&["send", "--json", "--queue", "q", "--to", "ann@example.org", "--subject", "s", "--body", "b", "--config", &config]).await,
            ]
        } else {
            vec![
                run(&["check", "--json", "--mailbox", "inbox", "--config", &config]).await,
                run(&["fetch", "--json", "--config", &config]).await,
            ]
        };
        for out in outputs {
            assert!(fake.connections() > 0, "{protocol}: the CLI reached the server: {out}");
            assert!(!out.contains(ATTACK), "{protocol}: pre-TLS text in the CLI output: {out}");
            assert!(out.contains("withheld") || out.contains("STARTTLS") || out.contains("starttls"), "{protocol}: {out}");
        }
    }
}
