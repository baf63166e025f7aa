//! OAuth2 end to end against the rig's real authorization server and Dovecot / Postfix
//! validating its tokens: the authorization-code flow with PKCE driven headlessly, IMAP, POP3
//! and SMTP with the token, refresh with rotation, revocation, typed redirect errors, and no
//! token or secret in any error or output.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailplug_host::config::TenantConfig;
use mailplug_host::db::Database;
use mailplug_host::engine::Tokens;
use mailplug_host::http;
use mailplug_host::oauth::{self, Target};
use mailplug_host::ops::{self, Outgoing};
use mailplug_host::store::SyncStateStore;
use mailplug_host::HostError;
use mailplug_tests::{plugin, rig, sample_message, test_box};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

/// A tenant whose mailbox (IMAP or POP3) and queue log in as `user` with OAuth2 from the rig.
fn oauth_config(protocol: &str, user: &str, redirect_port: u16) -> TenantConfig {
    oauth_config_pinned(protocol, user, redirect_port, None)
}

/// The same, with every server pinned to one SASL mechanism (`sasl_mechanism`).
fn oauth_config_pinned(protocol: &str, user: &str, redirect_port: u16, mechanism: Option<&str>) -> TenantConfig {
    let r = rig();
    let pin = mechanism.map(|m| format!("\nsasl_mechanism = \"{m}\"")).unwrap_or_default();
    let port = if protocol == "imap" { r.port("RIG_IMAPS_PORT") } else { r.port("RIG_POP3S_PORT") };
    let text = format!(
        r#"tenant = "oauth-test"
licensed = true
extra_ca_file = "{ca}"
database = "/nonexistent/unused.sqlite3"

[oauth.rig]
provider = "custom"
authorization_endpoint = "{authz}"
token_endpoint = "{token}"
scopes = ["openid", "email", "offline_access"]
client_id = "{client}"
client_secret_env = "RIG_CLIENT_SECRET"
redirect_uri = "http://127.0.0.1:{redirect_port}/callback"

[[mailbox]]
name = "inbox"
address = "{user}"
protocol = "{protocol}"
first_sync = "all"
host = "localhost"
port = {port}
tls = true
auth = "oauth2"
oauth = "rig"{pin}
username = "{user}"

[[queue]]
name = "q"
mailboxes = ["inbox"]
[queue.smtp]
host = "localhost"
port = {smtps}
tls = true
auth = "oauth2"
oauth = "rig"{pin}
username = "{user}"
"#,
        ca = r.get("RIG_CA"),
        authz = r.get("RIG_OAUTH_AUTHORIZE_URL"),
        token = r.get("RIG_OAUTH_TOKEN_URL"),
        client = r.get("RIG_OAUTH_CLIENT_ID"),
        smtps = r.port("RIG_SMTPS_PORT"),
    );
    let secret = r.get("RIG_OAUTH_CLIENT_SECRET").to_string();
    TenantConfig::parse(&text, "oauth.toml", Path::new("/tmp"), &move |k| (k == "RIG_CLIENT_SECRET").then(|| secret.clone()))
        .expect("oauth config parses")
}

fn db(name: &str) -> Database {
    let p = std::env::temp_dir().join(format!("mailplug-oauth-{name}-{}.sqlite3", std::process::id()));
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", p.display()));
    }
    Database::open(&p).expect("db")
}

async fn get(url: &str) -> http::Response {
    let tls = mailplug_host::net::tls_config(None).expect("tls");
    http::execute(&http::Request { method: "GET", url, headers: &[], body: &[] }, tls, Duration::from_secs(10))
        .await
        .expect("GET")
}

async fn post_form(url: &str, body: &str) -> http::Response {
    let tls = mailplug_host::net::tls_config(None).expect("tls");
    let headers = [("Content-Type".to_string(), "application/x-www-form-urlencoded".to_string())];
    http::execute(&http::Request { method: "POST", url, headers: &headers, body: body.as_bytes() }, tls, Duration::from_secs(10))
        .await
        .expect("POST")
}

fn location(r: &http::Response) -> String {
    assert!((300..400).contains(&r.status), "expected a redirect, got {} {}", r.status, String::from_utf8_lossy(&r.body));
    r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.clone()).expect("Location")
}

/// The admin's consent, headless: start the flow, follow /authorize, finish with its redirect.
async fn login(cfg: &TenantConfig, store: &Database) -> Tokens {
    let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
    let started = oauth::begin_login(&mut instance, cfg, &Target::Mailbox("inbox".into())).await.expect("begin");
    assert!(started.url.contains("code_challenge_method=S256"), "PKCE S256 in {}", started.url);
    let redirect = location(&get(&started.url).await);
    oauth::finish_login(&mut instance, cfg, store, &Target::Mailbox("inbox".into()), &started, &redirect)
        .await
        .unwrap_or_else(|e| panic!("token exchange failed: {e}"))
}

fn secrets_absent(text: &str, t: &Tokens) {
    assert!(!text.contains(&t.access_token), "access token leaked: {text}");
    if let Some(r) = &t.refresh_token {
        assert!(!text.contains(r.as_str()), "refresh token leaked: {text}");
    }
    assert!(!text.contains(rig().get("RIG_OAUTH_CLIENT_SECRET")), "client secret leaked: {text}");
}

#[tokio::test]
async fn authorization_code_flow_then_imap_pop3_and_smtp_with_the_token() {
    let r = rig();
    // Test binaries run one after another, so reusing an inbound test's box is safe.
    let (user, _) = test_box(5);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("oauth-1@test", "oauth fetch"));
    let cfg = oauth_config("imap", &user, free_port());
    let store = db("flow");
    let t = login(&cfg, &store).await;
    assert_eq!(t.account.as_deref(), Some(user.as_str()), "the account comes from the id_token");
    assert!(t.refresh_token.is_some(), "offline access gives a refresh token");

    let mut sink = store.sink(&cfg.tenant, "inbox");
    let s = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &store).await.unwrap_or_else(|e| panic!("IMAP with OAuth2: {e}"));
    drop(sink);
    assert_eq!(s.delivered, 1);

    // The same account's token serves POP3 (a store of its own: the IMAP mailbox's sync state
    // would not fit) and SMTP.
    let pop = oauth_config("pop3", &user, free_port());
    let pop_store = db("flow-pop");
    pop_store.save_tokens(&pop.tenant, "rig", &user, &t).expect("save");
    let mut sink = pop_store.sink(&pop.tenant, "inbox");
    let s = ops::fetch(plugin(), &pop, "inbox", &mut sink, &pop_store).await.unwrap_or_else(|e| panic!("POP3 with OAuth2: {e}"));
    drop(sink);
    assert_eq!(s.delivered, 1);
    let msg = Outgoing { to: vec![r.user("CUSTOMER").into()], subject: "sent with OAuth2".into(), text_body: "x".into() };
    let sent = ops::send(plugin(), &cfg, "q", &msg, &store).await.unwrap_or_else(|e| panic!("SMTP with OAuth2: {e}"));
    assert!(sent.report.final_reply.code.starts_with('2'));
}

#[tokio::test]
async fn expired_access_token_is_refreshed_and_the_rotated_refresh_token_stored() {
    let r = rig();
    let user = r.user("SALES").to_string();
    let cfg = oauth_config("imap", &user, free_port());
    let store = db("refresh");
    let first = login(&cfg, &store).await;
    // Make the stored access token look expired.
    let mut stale = first.clone();
    stale.expires_at = Some(1);
    store.save_tokens(&cfg.tenant, "rig", &user, &stale).expect("save");

    let mut sink = store.sink(&cfg.tenant, "inbox");
    ops::fetch(plugin(), &cfg, "inbox", &mut sink, &store).await.unwrap_or_else(|e| panic!("fetch after refresh: {e}"));
    drop(sink);
    let now = store.load_tokens(&cfg.tenant, "rig", &user).expect("load").expect("tokens");
    assert_ne!(now.access_token, first.access_token, "a new access token");
    assert_ne!(now.refresh_token, first.refresh_token, "the rotated refresh token was stored");
    assert!(now.expires_at.unwrap_or(0) > 1);

    // The old refresh token is dead now.
    let body = format!(
        "grant_type=refresh_token&refresh_token={}&client_id={}&client_secret={}",
        oauth_percent(first.refresh_token.as_deref().unwrap_or("")),
        oauth_percent(r.get("RIG_OAUTH_CLIENT_ID")),
        oauth_percent(r.get("RIG_OAUTH_CLIENT_SECRET"))
    );
    let resp = post_form(r.get("RIG_OAUTH_TOKEN_URL"), &body).await;
    assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(&resp.body));
    assert!(String::from_utf8_lossy(&resp.body).contains("invalid_grant"));
}

fn oauth_percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn a_revoked_grant_needs_reauthorization_and_is_not_retried() {
    let r = rig();
    let user = r.user("AGENT").to_string();
    let cfg = oauth_config("imap", &user, free_port());
    let store = db("revoked");
    let t = login(&cfg, &store).await;
    let body = format!(
        "token={}&token_type_hint=refresh_token&client_id={}&client_secret={}",
        oauth_percent(t.refresh_token.as_deref().unwrap_or("")),
        oauth_percent(r.get("RIG_OAUTH_CLIENT_ID")),
        oauth_percent(r.get("RIG_OAUTH_CLIENT_SECRET"))
    );
    let resp = post_form(r.get("RIG_OAUTH_REVOKE_URL"), &body).await;
    assert!(resp.status < 300, "revoke: {} {}", resp.status, String::from_utf8_lossy(&resp.body));
    let mut stale = t.clone();
    stale.expires_at = Some(1);
    store.save_tokens(&cfg.tenant, "rig", &user, &stale).expect("save");

    let started = Instant::now();
    let mut sink = store.sink(&cfg.tenant, "inbox");
    let e = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &store).await.expect_err("the grant is gone");
    drop(sink);
    assert!(started.elapsed() < Duration::from_secs(10), "no retry loop");
    match &e {
        HostError::OAuth { needs_reauthorization: true, .. } => {}
        other => panic!("expected needs-reauthorization, got {other}"),
    }
    secrets_absent(&e.to_string(), &t);
    secrets_absent(&format!("{e:?}"), &t);
}

#[tokio::test]
async fn state_mismatch_and_access_denied_are_typed_errors() {
    let cfg = oauth_config("imap", rig().user("SUPPORT"), free_port());
    let store = db("typed");
    let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
    let target = Target::Mailbox("inbox".into());
    let first = oauth::begin_login(&mut instance, &cfg, &target).await.expect("begin");
    let second = oauth::begin_login(&mut instance, &cfg, &target).await.expect("begin");
    let redirect = location(&get(&first.url).await);
    // The redirect of the first authorization presented to the second: forged or mixed up.
    let e = oauth::finish_login(&mut instance, &cfg, &store, &target, &second, &redirect).await.expect_err("state mismatch");
    assert!(matches!(&e, HostError::OAuth { kind, .. } if kind == "StateMismatch"), "{e}");

    // The provider's "no": the rig's authorization server declines deny@example.test.
    let denied = oauth_config("imap", "deny@example.test", free_port());
    let started = oauth::begin_login(&mut instance, &denied, &target).await.expect("begin");
    let redirect = location(&get(&started.url).await);
    assert!(redirect.contains("error=access_denied"), "{redirect}");
    let e = oauth::finish_login(&mut instance, &denied, &store, &target, &started, &redirect).await.expect_err("denied");
    assert!(matches!(&e, HostError::OAuth { kind, needs_reauthorization: true, .. } if kind == "AccessDenied"), "{e}");
}

#[tokio::test]
async fn cli_login_receives_the_redirect_and_status_never_prints_tokens() {
    let r = rig();
    let user = r.user("CUSTOMER").to_string();
    let dir = std::env::temp_dir().join(format!("mailplug-oauth-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let port = free_port();
    let text = format!(
        "tenant = \"oauth-cli\"\nlicensed = true\nextra_ca_file = \"{ca}\"\ndatabase = \"{db}\"\n\
         [oauth.rig]\nprovider = \"custom\"\nauthorization_endpoint = \"{a}\"\ntoken_endpoint = \"{t}\"\n\
         scopes = [\"openid\", \"email\", \"offline_access\"]\nclient_id = \"{c}\"\nclient_secret_file = \"secret\"\n\
         redirect_uri = \"http://127.0.0.1:{port}/callback\"\n\
         [[mailbox]]\nname = \"inbox\"\naddress = \"{user}\"\nprotocol = \"imap\"\nhost = \"localhost\"\nport = {imaps}\n\
         tls = true\nauth = \"oauth2\"\noauth = \"rig\"\nusername = \"{user}\"\n",
        ca = r.get("RIG_CA"),
        db = dir.join("m.sqlite3").display(),
        a = r.get("RIG_OAUTH_AUTHORIZE_URL"),
        t = r.get("RIG_OAUTH_TOKEN_URL"),
        c = r.get("RIG_OAUTH_CLIENT_ID"),
        imaps = r.port("RIG_IMAPS_PORT"),
    );
    std::fs::write(dir.join("secret"), r.get("RIG_OAUTH_CLIENT_SECRET")).expect("secret");
    std::fs::write(dir.join("t.toml"), text).expect("config");
    let bin = std::env::var("MAILPLUG_BIN").unwrap_or_else(|_| "/var/tmp/mailplug-target/debug/mailplug".into());
    let config = dir.join("t.toml");
    let mut child = Command::new(&bin)
        .args(["oauth", "login", "--config", config.to_str().expect("utf8"), "--mailbox", "inbox", "--timeout", "30"])
        .env("MAILPLUG_WASM", mailplug_tests::wasm_path())
        .env("PATH", "/usr/bin:/bin") // no xdg-open surprises
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mailplug runs");
    let mut url = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut url).expect("the URL is printed");
    // The "browser": consent, then follow the redirect to the CLI's loopback listener.
    let redirect = location(&get(url.trim()).await);
    let back = get(&redirect).await;
    assert_eq!(back.status, 200);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "login failed: {err}");
    assert!(err.contains(&user), "names the account: {err}");

    let status = Command::new(&bin)
        .args(["oauth", "status", "--config", config.to_str().expect("utf8")])
        .env("MAILPLUG_WASM", mailplug_tests::wasm_path())
        .output()
        .expect("status");
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(shown.contains(&user) && shown.contains("ok, expires in"), "{shown}");
    let store = Database::open(&dir.join("m.sqlite3")).expect("db");
    let t = store.load_tokens("oauth-cli", "rig", &user).expect("load").expect("stored");
    secrets_absent(&format!("{shown}{err}"), &t);
}

fn json_field(body: &[u8], field: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let key = format!("\"{field}\":\"");
    text.split(&key).nth(1).and_then(|r| r.split('"').next()).unwrap_or_else(|| panic!("no {field} in {text}")).to_string()
}

/// A token minted by the rig's test helper, for `email`.
async fn minted(email: &str, extra: &str) -> String {
    let url = format!("{}?email={}{extra}", rig().get("RIG_OAUTH_TEST_TOKEN_URL"), oauth_percent(email));
    json_field(&get(&url).await.body, "access_token")
}

#[tokio::test]
async fn tokens_larger_than_2_kb_work_for_imap_and_smtp() {
    let r = rig();
    let (user, _) = test_box(6);
    let settings = format!("{}?email={}&token_size=3500", r.get("RIG_OAUTH_TEST_USER_SETTINGS_URL"), oauth_percent(&user));
    assert!(get(&settings).await.status < 300);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("big-token@test", "big token"));
    let cfg = oauth_config("imap", &user, free_port());
    let store = db("big");
    let t = login(&cfg, &store).await;
    assert!(t.access_token.len() > 2048, "token of {} bytes", t.access_token.len());
    let mut sink = store.sink(&cfg.tenant, "inbox");
    let s = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &store).await.unwrap_or_else(|e| panic!("IMAP, big token: {e}"));
    drop(sink);
    assert_eq!(s.delivered, 1);
    let msg = Outgoing { to: vec![r.user("CUSTOMER").into()], subject: "big token".into(), text_body: "x".into() };
    ops::send(plugin(), &cfg, "q", &msg, &store).await.unwrap_or_else(|e| panic!("SMTP, big token: {e}"));
}

#[tokio::test]
async fn wrong_user_expired_and_revoked_tokens_are_refused_by_every_protocol() {
    let r = rig();
    let (user, _) = test_box(7);
    let other = r.user("SUPPORT").to_string();
    let revoked = minted(&user, "").await;
    let revoke = format!(
        "token={}&client_id={}&client_secret={}",
        oauth_percent(&revoked),
        oauth_percent(r.get("RIG_OAUTH_CLIENT_ID")),
        oauth_percent(r.get("RIG_OAUTH_CLIENT_SECRET"))
    );
    assert!(post_form(r.get("RIG_OAUTH_REVOKE_URL"), &revoke).await.status < 300);
    let cases = [
        ("another user's token", minted(&other, "").await),
        ("an expired token", minted(&user, "&expires_in=0").await),
        ("a revoked token", revoked),
    ];
    for (what, token) in cases {
        // No refresh token: after the refusal there is nothing to refresh with.
        let t = Tokens { access_token: token, refresh_token: None, expires_at: None, scopes: vec![], account: None };
        for protocol in ["imap", "pop3"] {
            let cfg = oauth_config(protocol, &user, free_port());
            let store = db(&format!("refused-{protocol}"));
            store.save_tokens(&cfg.tenant, "rig", &user, &t).expect("save");
            let mut sink = store.sink(&cfg.tenant, "inbox");
            let e = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &store).await.expect_err(what);
            drop(sink);
            secrets_absent(&format!("{e} {e:?}"), &t);
            let refused = e.kind() == Some(mailplug_host::Kind::AuthRejected)
                || matches!(e, HostError::OAuth { needs_reauthorization: true, .. });
            assert!(refused, "{protocol}, {what}: {e}");
        }
        let cfg = oauth_config("imap", &user, free_port());
        let store = db("refused-smtp");
        store.save_tokens(&cfg.tenant, "rig", &user, &t).expect("save");
        let msg = Outgoing { to: vec![r.user("CUSTOMER").into()], subject: "refused".into(), text_body: "x".into() };
        let e = ops::send(plugin(), &cfg, "q", &msg, &store).await.expect_err(what);
        secrets_absent(&format!("{e} {e:?}"), &t);
    }
}

#[tokio::test]
async fn xoauth2_pinned_works_for_imap_pop3_and_smtp() {
    // Dovecot and Postfix offer both OAUTHBEARER and XOAUTH2; Microsoft 365 offers only
    // XOAUTH2. Pinned, the login must use it, and the real servers must accept it.
    let r = rig();
    let (user, _) = test_box(8);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("xoauth2@test", "xoauth2"));
    let token = minted(&user, "").await;
    let t = Tokens { access_token: token, refresh_token: None, expires_at: None, scopes: vec![], account: None };
    for protocol in ["imap", "pop3"] {
        let cfg = oauth_config_pinned(protocol, &user, free_port(), Some("xoauth2"));
        let store = db(&format!("xoauth2-{protocol}"));
        store.save_tokens(&cfg.tenant, "rig", &user, &t).expect("save");
        let report = mailplug_host::check::check_mailbox(plugin(), &cfg, &store, "inbox", &[])
            .await
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert!(report.passed(), "{protocol}: {report:?}");
        let mechanisms = report.steps.iter().find(|s| s.step == "mechanisms").expect("mechanisms step");
        assert!(mechanisms.detail.ends_with("XOAUTH2"), "{protocol} did not use XOAUTH2: {}", mechanisms.detail);
        assert_eq!(report.folders, vec![("INBOX".to_string(), 1)], "{protocol}");
        secrets_absent(&format!("{report:?}"), &t);
        let mut sink = store.sink(&cfg.tenant, "inbox");
        let s = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &store).await.unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(s.delivered, 1, "{protocol}");
    }
    let cfg = oauth_config_pinned("imap", &user, free_port(), Some("xoauth2"));
    let store = db("xoauth2-smtp");
    store.save_tokens(&cfg.tenant, "rig", &user, &t).expect("save");
    let report = mailplug_host::check::check_queue(plugin(), &cfg, &store, "q", None, &[]).await.expect("smtp check");
    assert!(report.passed(), "{report:?}");
    let mechanisms = report.steps.iter().find(|s| s.step == "mechanisms").expect("mechanisms step");
    assert!(mechanisms.detail.ends_with("using AUTH XOAUTH2"), "{}", mechanisms.detail);
    let msg = Outgoing { to: vec![r.user("CUSTOMER").into()], subject: "xoauth2".into(), text_body: "x".into() };
    ops::send(plugin(), &cfg, "q", &msg, &store).await.unwrap_or_else(|e| panic!("SMTP, XOAUTH2: {e}"));
    // Unpinned, the same servers are logged in to with OAUTHBEARER.
    let cfg = oauth_config("imap", &user, free_port());
    let store = db("oauthbearer-default");
    store.save_tokens(&cfg.tenant, "rig", &user, &t).expect("save");
    let report = mailplug_host::check::check_mailbox(plugin(), &cfg, &store, "inbox", &[]).await.expect("check");
    let mechanisms = report.steps.iter().find(|s| s.step == "mechanisms").expect("mechanisms step");
    assert!(mechanisms.detail.ends_with("OAUTHBEARER"), "{}", mechanisms.detail);
}
