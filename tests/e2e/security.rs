//! Negative paths against the real servers: wrong password, untrusted certificate, a server
//! that does not offer STARTTLS (nothing secret may leave), licence and allow-list refusals.
//! Every error text is also checked for the password.

use mailplug_host::error::Kind;
use mailplug_host::ops::{self, Outgoing};
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_host::{HostError, TenantConfig};
use mailplug_tests::{contains, plugin, recording_proxy, rig, secret_forms, tenant, ServerSpec};

fn smtp_ok() -> ServerSpec {
    let r = rig();
    ServerSpec::new("localhost", r.port("RIG_SUBMISSION_PORT"), false, r.user("AGENT"), r.pass("AGENT"))
}

fn assert_no_secret(text: &str, password: &str) {
    assert!(!text.contains(password), "the password leaked into: {text}");
}

async fn fetch(cfg: &TenantConfig) -> Result<usize, HostError> {
    let mut sink = MemorySink::default();
    ops::fetch(plugin(), cfg, "inbox", &mut sink, &NoSyncState).await.map(|_| sink.messages.len())
}

async fn send(cfg: &TenantConfig) -> Result<(), HostError> {
    let msg = Outgoing { to: vec![rig().user("CUSTOMER").into()], subject: "security test".into(), text_body: "x".into() };
    ops::send(plugin(), cfg, "q", &msg, &NoSyncState).await.map(|_| ())
}

/// Asserts an auth-rejected error carrying the server's own reply, without the password.
fn assert_auth_rejected(r: Result<impl std::fmt::Debug, HostError>, wrong: &str) {
    let e = r.expect_err("a wrong password must fail");
    assert_eq!(e.kind(), Some(Kind::AuthRejected), "{e}");
    let HostError::Guest(g) = &e else { panic!("not a guest error: {e}") };
    let (code, text) = g.reply.clone().expect("the server's reply is carried");
    assert!(!code.is_empty() && !text.is_empty(), "empty server reply in {e}");
    assert_no_secret(&e.to_string(), wrong);
    assert_no_secret(&format!("{e:?}"), wrong);
}

const WRONG: &str = "Wrong-Pw-9xK#q";

#[tokio::test]
async fn wrong_password_imap_is_auth_rejected_with_server_text() {
    let r = rig();
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("SUPPORT"), WRONG);
    assert_auth_rejected(fetch(&tenant("imap", &inb, &smtp_ok(), true)).await, WRONG);
}

#[tokio::test]
async fn wrong_password_pop3_is_auth_rejected_with_server_text() {
    let r = rig();
    let inb = ServerSpec::new("localhost", r.port("RIG_POP3_STLS_PORT"), false, r.user("SUPPORT"), WRONG);
    assert_auth_rejected(fetch(&tenant("pop3", &inb, &smtp_ok(), true)).await, WRONG);
}

#[tokio::test]
async fn wrong_password_smtp_is_auth_rejected_with_server_text() {
    let r = rig();
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("SUPPORT"), r.pass("SUPPORT"));
    let smtp = ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), WRONG);
    assert_auth_rejected(send(&tenant("imap", &inb, &smtp, true)).await, WRONG);
}

fn assert_tls_untrusted(r: Result<impl std::fmt::Debug, HostError>, password: &str) {
    let e = r.expect_err("an untrusted certificate must fail");
    assert_eq!(e.kind(), Some(Kind::Tls), "{e}");
    let text = e.to_string();
    assert!(text.contains("trusted"), "the admin is told the certificate is not trusted: {text}");
    assert_no_secret(&text, password);
}

#[tokio::test]
async fn untrusted_certificate_is_a_tls_error_implicit_and_starttls() {
    let r = rig();
    let pw = r.pass("SUPPORT");
    for (proto, port, tls) in [
        ("imap", r.port("RIG_IMAPS_PORT"), true),
        ("imap", r.port("RIG_IMAP_STARTTLS_PORT"), false),
        ("pop3", r.port("RIG_POP3S_PORT"), true),
        ("pop3", r.port("RIG_POP3_STLS_PORT"), false),
    ] {
        let inb = ServerSpec::new("localhost", port, tls, r.user("SUPPORT"), pw);
        // Without the rig's CA, its certificates chain to nothing the host trusts.
        assert_tls_untrusted(fetch(&tenant(proto, &inb, &smtp_ok(), false)).await, pw);
    }
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("SUPPORT"), pw);
    let smtp = smtp_ok();
    assert_tls_untrusted(send(&tenant("imap", &inb, &smtp, false)).await, smtp.password.as_str());
}

/// Runs `op` through a recording proxy to a server without STARTTLS and checks that it fails by
/// policy before any credential went out; then proves with the explicit plaintext opt-in that
/// the same server would have accepted the login (so the refusal was ours, not the server's).
async fn no_starttls_case(proto: &str, host_key: &str, port_key: &str, user: &str, pw: &str, smtp_side: bool) {
    let r = rig();
    let upstream = (r.get(host_key).to_string(), r.port(port_key));
    let proxy = recording_proxy(upstream).await;
    let mut spec = ServerSpec::new("127.0.0.1", proxy.port, false, user, pw);
    let ok_inbound = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("SUPPORT"), r.pass("SUPPORT"));
    let run = |spec: &ServerSpec| {
        if smtp_side {
            tenant("imap", &ok_inbound, spec, true)
        } else {
            tenant(proto, spec, &smtp_ok(), true)
        }
    };
    let result = if smtp_side { send(&run(&spec)).await.map(|_| 0) } else { fetch(&run(&spec)).await };
    let e = result.expect_err("a server without STARTTLS must be refused");
    assert_eq!(e.kind(), Some(Kind::Policy), "{e}");
    assert!(e.to_string().to_uppercase().contains("STARTTLS") || e.to_string().contains("STLS"), "{e}");
    assert_no_secret(&e.to_string(), pw);

    let sent = proxy.client_bytes.lock().expect("lock").clone();
    for form in secret_forms(user, pw) {
        assert!(!contains(&sent, &form), "a credential form went out: {}", String::from_utf8_lossy(&sent));
    }
    for verb in [&b"LOGIN"[..], b"AUTHENTICATE", b"AUTH ", b"PASS ", b"USER "] {
        assert!(!contains(&sent.to_ascii_uppercase(), verb), "{} was sent: {}", String::from_utf8_lossy(verb), String::from_utf8_lossy(&sent));
    }

    // Control: with the explicit test-server opt-in the same server accepts the login, and the
    // proxy does see the credential then, so the checks above could have caught a leak.
    spec.insecure_plaintext = true;
    let control = if smtp_side { send(&run(&spec)).await.map(|_| 0) } else { fetch(&run(&spec)).await };
    control.unwrap_or_else(|e| panic!("the plaintext control run should log in: {e}"));
    let all = proxy.client_bytes.lock().expect("lock").clone();
    assert!(
        secret_forms(user, pw).iter().any(|f| contains(&all[sent.len()..], f)),
        "the recording proxy did not see the credential in the opted-in plaintext run"
    );
}

#[tokio::test]
async fn imap_without_starttls_fails_before_any_credential() {
    let r = rig();
    no_starttls_case("imap", "RIG_IMAP_NOTLS_HOST", "RIG_IMAP_NOTLS_PORT", r.user("SALES"), r.pass("SALES"), false).await;
}

#[tokio::test]
async fn pop3_without_stls_fails_before_any_credential() {
    let r = rig();
    no_starttls_case("pop3", "RIG_POP3_NOTLS_HOST", "RIG_POP3_NOTLS_PORT", r.user("SALES"), r.pass("SALES"), false).await;
}

#[tokio::test]
async fn smtp_without_starttls_fails_before_any_credential() {
    let r = rig();
    no_starttls_case("imap", "RIG_SMTP_NOTLS_HOST", "RIG_SMTP_NOTLS_PORT", r.user("AGENT"), r.pass("AGENT"), true).await;
}

#[tokio::test]
async fn unlicensed_tenant_is_refused_before_connecting() {
    let r = rig();
    let inb = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, r.user("SUPPORT"), r.pass("SUPPORT"));
    let mut cfg = tenant("imap", &inb, &smtp_ok(), true);
    cfg.licensed = false;
    let e = fetch(&cfg).await.expect_err("unlicensed");
    assert!(matches!(e, HostError::Unlicensed(_)), "{e}");
    assert!(e.to_string().contains("licensed feature"), "{e}");
    let e = send(&cfg).await.expect_err("unlicensed");
    assert!(matches!(e, HostError::Unlicensed(_)), "{e}");
}

#[tokio::test]
async fn host_connects_only_to_configured_servers() {
    use mailplug_host::driver::{drive, DriveOptions};
    use mailplug_host::engine::{
        BasicCredentials, Credentials, GuestAfterFetch, GuestFirstSync, GuestLimits, GuestMailbox, GuestProtocol, GuestSecurity,
        GuestServer,
    };
    let r = rig();
    let mut instance = plugin().instantiate(64 << 20, 1000).await.expect("instance");
    let mailbox = GuestMailbox {
        protocol: GuestProtocol::Imap,
        server: GuestServer { host: "localhost".into(), port: r.port("RIG_IMAPS_PORT"), security: GuestSecurity::ImplicitTls },
        credentials: Credentials::Basic(BasicCredentials { username: "u".into(), password: "p".into() }),
        folders: vec![],
        limits: GuestLimits { max_line_bytes: 8192, max_message_bytes: 1 << 20, max_batch_messages: 10, max_batch_bytes: 1 << 20, reply_timeout_ms: 5000 },
        after_fetch: GuestAfterFetch::Keep,
        first_sync: GuestFirstSync::All,
        idle: false,
    };
    let session = instance.open_inbound(&mailbox, None, 0).await.expect("open");
    let allowed = vec![("localhost".to_string(), 1u16, GuestSecurity::ImplicitTls)];
    let opts = DriveOptions {
        allowed: &allowed,
        tls: mailplug_host::net::tls_config(None).expect("tls"),
        connect_timeout: std::time::Duration::from_secs(2),
        idle_timeout: std::time::Duration::from_secs(2),
        reply_timeout: std::time::Duration::from_secs(2),
        greeting_timeout: std::time::Duration::from_secs(2),
        max_session: std::time::Duration::from_secs(30),
    };
    let e = drive(&mut instance, session, &opts, &mut MemorySink::default()).await.expect_err("not allowed");
    assert!(matches!(e, HostError::NotAllowed(_)), "{e}");
}
