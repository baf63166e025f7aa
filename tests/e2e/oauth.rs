//! OAuth2 end to end against the rig's real authorization server and Dovecot / Postfix
//! validating its tokens: the authorization-code flow with PKCE driven headlessly, IMAP, POP3
//! and SMTP with the token, refresh with rotation, revocation, typed redirect errors, and no
//! token or secret in any error or output.

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
use mailplug_host::tokens::SecretKeys;
use mailplug_host::HostError;
use mailplug_tests::{plugin, rig, sample_message, test_box};
use mailplug_tests::{TempDatabase, TempPath};

/// The tests' token keys (32 bytes each, as hex).
const KEY_A: [u8; 32] = [0xa1; 32];
const KEY_B: [u8; 32] = [0xb2; 32];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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

fn db_path(name: &str) -> TempPath {
    TempPath::file(&format!("oauth-{name}"), "mailplug.sqlite3")
}

fn db(name: &str) -> TempDatabase {
    TempDatabase::open_with(&format!("oauth-{name}"), |p| Database::open_with_keys(p, SecretKeys::new(Some(&KEY_A), None)).expect("db"))
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
    let s = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*store).await.unwrap_or_else(|e| panic!("IMAP with OAuth2: {e}"));
    drop(sink);
    assert_eq!(s.delivered, 1);

    // The same account's token serves POP3 (a store of its own: the IMAP mailbox's sync state
    // would not fit) and SMTP.
    let pop = oauth_config("pop3", &user, free_port());
    let pop_store = db("flow-pop");
    pop_store.save_tokens(&pop.tenant, "rig", &user, &t).expect("save");
    let mut sink = pop_store.sink(&pop.tenant, "inbox");
    let s = ops::fetch(plugin(), &pop, "inbox", &mut sink, &*pop_store).await.unwrap_or_else(|e| panic!("POP3 with OAuth2: {e}"));
    drop(sink);
    assert_eq!(s.delivered, 1);
    let msg = Outgoing { to: vec![r.user("CUSTOMER").into()], subject: "sent with OAuth2".into(), text_body: "x".into() };
    let sent = ops::send(plugin(), &cfg, "q", &msg, &*store).await.unwrap_or_else(|e| panic!("SMTP with OAuth2: {e}"));
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
    ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*store).await.unwrap_or_else(|e| panic!("fetch after refresh: {e}"));
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
    let e = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*store).await.expect_err("the grant is gone");
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
    let e = oauth::finish_login(&mut instance, &cfg, &*store, &target, &second, &redirect).await.expect_err("state mismatch");
    assert!(matches!(&e, HostError::OAuth { kind, .. } if kind == "StateMismatch"), "{e}");

    // The provider's "no": the rig's authorization server declines deny@example.test.
    let denied = oauth_config("imap", "deny@example.test", free_port());
    let started = oauth::begin_login(&mut instance, &denied, &target).await.expect("begin");
    let redirect = location(&get(&started.url).await);
    assert!(redirect.contains("error=access_denied"), "{redirect}");
    let e = oauth::finish_login(&mut instance, &denied, &*store, &target, &started, &redirect).await.expect_err("denied");
    assert!(matches!(&e, HostError::OAuth { kind, needs_reauthorization: true, .. } if kind == "AccessDenied"), "{e}");
}

/// A CLI tenant configuration in `dir` for `user` (IMAP, OAuth2 with the rig), its database
/// `dir/m.sqlite3` and its redirect on `port`; returns the configuration's path.
fn cli_config(dir: &Path, tenant: &str, user: &str, port: u16) -> std::path::PathBuf {
    let r = rig();
    let text = format!(
        "tenant = \"{tenant}\"\nlicensed = true\nextra_ca_file = \"{ca}\"\ndatabase = \"{db}\"\n\
         [oauth.rig]\nprovider = \"custom\"\nauthorization_endpoint = \"{a}\"\ntoken_endpoint = \"{t}\"\n\
         scopes = [\"openid\", \"email\", \"offline_access\"]\nclient_id = \"{c}\"\nclient_secret_file = \"secret\"\n\
         redirect_uri = \"http://127.0.0.1:{port}/callback\"\n\
         [[mailbox]]\nname = \"inbox\"\naddress = \"{user}\"\nprotocol = \"imap\"\nhost = \"localhost\"\nport = {imaps}\n\
         tls = true\nauth = \"oauth2\"\noauth = \"rig\"\nusername = \"{user}\"\nfirst_sync = \"all\"\n",
        ca = r.get("RIG_CA"),
        db = dir.join("m.sqlite3").display(),
        a = r.get("RIG_OAUTH_AUTHORIZE_URL"),
        t = r.get("RIG_OAUTH_TOKEN_URL"),
        c = r.get("RIG_OAUTH_CLIENT_ID"),
        imaps = r.port("RIG_IMAPS_PORT"),
    );
    std::fs::write(dir.join("secret"), r.get("RIG_OAUTH_CLIENT_SECRET")).expect("secret");
    std::fs::write(dir.join("t.toml"), text).expect("config");
    dir.join("t.toml")
}

fn fresh_dir(name: &str) -> TempPath {
    TempPath::dir(&format!("oauth-{name}"))
}

/// A key file readable by its owner only, holding `key` in hex.
fn key_file(dir: &Path, key: &[u8; 32]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("token.key");
    std::fs::write(&p, hex(key)).expect("key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

fn bin() -> String {
    std::env::var("MAILPLUG_BIN").unwrap_or_else(|_| "/var/tmp/mailplug-target/debug/mailplug".into())
}

/// `mailplug ARGS` under umask 022 (so a file created without an explicit mode would be
/// world-readable), with `key` as MAILPLUG_SECRET_KEY_FILE (or no key at all).
fn cli(args: &[&str], key: Option<&Path>) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c").arg("umask 022; exec \"$@\"").arg("sh").arg(bin()).args(args);
    c.env("MAILPLUG_WASM", mailplug_tests::wasm_path())
        .env("PATH", "/usr/bin:/bin") // no xdg-open surprises
        .env_remove("MAILPLUG_SECRET_KEY")
        .env_remove("MAILPLUG_SECRET_KEY_OLD")
        .env_remove("MAILPLUG_SECRET_KEY_OLD_FILE");
    match key {
        Some(k) => c.env("MAILPLUG_SECRET_KEY_FILE", k),
        None => c.env_remove("MAILPLUG_SECRET_KEY_FILE"),
    };
    c
}

/// Starts `mailplug oauth login` and waits (at most 120 s, for a loaded machine) for the URL it
/// prints once its redirect listener is bound.
fn start_login(config: &Path, key: &Path) -> (std::process::Child, String) {
    let mut child = cli(&["oauth", "login", "--config", config.to_str().expect("utf8"), "--mailbox", "inbox", "--timeout", "120"], Some(key))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mailplug runs");
    match mailplug_tests::first_stdout_line(&mut child, Duration::from_secs(120)) {
        Some(url) if url.starts_with("http") => (child, url.trim().to_string()),
        other => {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!("no URL printed ({other:?}): {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

/// The token in every form it could be found in at rest: itself, hex (both cases), and base64
/// (standard and URL-safe) at each of the three alignments it could have inside a longer
/// encoded text (the characters that depend on its neighbours left out).
fn token_forms(token: &str) -> Vec<Vec<u8>> {
    const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b64 = |raw: &[u8], alphabet: &[u8; 64]| -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in raw.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize]);
            }
        }
        out
    };
    let mut url = *STD;
    url[62] = b'-';
    url[63] = b'_';
    let mut forms = vec![token.as_bytes().to_vec(), hex(token.as_bytes()).into_bytes(), hex(token.as_bytes()).to_uppercase().into_bytes()];
    for pad in 0..3 {
        let mut raw = vec![0u8; pad];
        raw.extend_from_slice(token.as_bytes());
        for alphabet in [STD, &url] {
            let e = b64(&raw, alphabet);
            forms.push(e[4..e.len() - 4].to_vec());
        }
    }
    forms
}

/// Asserts that no token of `t` is in the database's files (main, WAL, SHM) in any form.
fn not_at_rest(db: &Path, t: &Tokens) {
    let mut secrets = vec![t.access_token.clone()];
    secrets.extend(t.refresh_token.clone());
    for ext in ["", "-wal", "-shm"] {
        let Ok(bytes) = std::fs::read(format!("{}{ext}", db.display())) else { continue };
        for s in &secrets {
            for form in token_forms(s) {
                assert!(!mailplug_tests::contains(&bytes, &form), "a token is readable in {}{ext}", db.display());
            }
        }
    }
}

#[tokio::test]
async fn cli_login_receives_the_redirect_and_status_never_prints_tokens() {
    let r = rig();
    let user = r.user("CUSTOMER").to_string();
    let dir = fresh_dir("cli");
    let config = cli_config(&dir, "oauth-cli", &user, free_port());
    let key = key_file(&dir, &KEY_A);
    // The URL is only printed once the listener is bound: the "browser" may come back at once.
    let (child, url) = start_login(&config, &key);
    // The "browser": consent, then follow the redirect to the CLI's loopback listener.
    let redirect = location(&get(&url).await);
    // The same answer on another path is not the redirect: 404, and the login still waits.
    let elsewhere = redirect.replacen("/callback?", "/elsewhere?", 1);
    assert_ne!(elsewhere, redirect);
    assert_eq!(get(&elsewhere).await.status, 404);
    assert_eq!(get(&redirect.replacen("/callback?", "/callback/x?", 1)).await.status, 404);
    let back = get(&redirect).await;
    assert_eq!(back.status, 200);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "login failed: {err}");
    assert!(err.contains(&user), "names the account: {err}");

    let status = cli(&["oauth", "status", "--config", config.to_str().expect("utf8")], Some(&key)).output().expect("status");
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(shown.contains(&user) && shown.contains("ok, expires in"), "{shown}");
    let store = Database::open_with_keys(&dir.join("m.sqlite3"), SecretKeys::new(Some(&KEY_A), None)).expect("db");
    let t = store.load_tokens("oauth-cli", "rig", &user).expect("load").expect("stored");
    secrets_absent(&format!("{shown}{err}"), &t);
}

#[tokio::test]
async fn cli_database_wal_shm_and_eml_files_are_private_and_tokens_are_encrypted_at_rest() {
    let r = rig();
    let (user, _) = test_box(31);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("private-1@test", "private files"));
    let dir = fresh_dir("private");
    let config = cli_config(&dir, "oauth-private", &user, free_port());
    let key = key_file(&dir, &KEY_A);
    let database = dir.join("m.sqlite3");
    let (child, url) = start_login(&config, &key);
    // While the CLI waits for the browser it holds the database open: WAL and SHM exist.
    for f in ["m.sqlite3", "m.sqlite3-wal", "m.sqlite3-shm"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f} under umask 022");
    }
    assert_eq!(get(&location(&get(&url).await)).await.status, 200);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "login failed: {}", String::from_utf8_lossy(&out.stderr));

    // A database made readable by others (an old version, a careless copy) is tightened.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out_dir = dir.join("out");
    let fetched = cli(&["fetch", "--config", config.to_str().expect("utf8"), "--out", out_dir.to_str().expect("utf8"), "--json"], Some(&key))
        .output()
        .expect("fetch");
    assert!(fetched.status.success(), "fetch: {}", String::from_utf8_lossy(&fetched.stderr));
    assert_eq!(mode(&database), 0o600, "tightened on open");
    let emls: Vec<_> = std::fs::read_dir(out_dir.join("inbox")).expect("out/inbox").map(|e| e.expect("entry").path()).collect();
    assert_eq!(emls.len(), 1, "{emls:?}");
    assert!(emls[0].extension().is_some_and(|e| e == "eml"));
    assert_eq!(mode(&emls[0]), 0o600, ".eml file");
    assert_eq!(mode(&out_dir.join("inbox")), 0o700, "the folder created for the .eml files");

    let t = Database::open_with_keys(&database, SecretKeys::new(Some(&KEY_A), None))
        .expect("db")
        .load_tokens("oauth-private", "rig", &user)
        .expect("load")
        .expect("stored");
    assert!(t.refresh_token.is_some());
    not_at_rest(&database, &t);
    // Without the key the stored tokens are of no use.
    let e = Database::open_with_keys(&database, SecretKeys::none()).expect("db").load_tokens("oauth-private", "rig", &user).expect_err("no key");
    assert!(e.to_string().contains("MAILPLUG_SECRET_KEY_FILE"), "{e}");
    secrets_absent(&format!("{e} {e:?}"), &t);
}

#[tokio::test]
async fn without_a_key_login_is_refused_before_the_browser_and_nothing_is_stored() {
    let r = rig();
    let dir = fresh_dir("nokey");
    let config = cli_config(&dir, "oauth-nokey", r.user("SUPPORT"), free_port());
    let out = cli(&["oauth", "login", "--config", config.to_str().expect("utf8"), "--mailbox", "inbox", "--timeout", "5"], None)
        .output()
        .expect("login");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty(), "no URL to consent with: {}", String::from_utf8_lossy(&out.stdout));
    assert!(err.contains("MAILPLUG_SECRET_KEY_FILE") && err.contains("openssl rand -hex 32") && err.contains("kein Schlüssel"), "{err}");
    // A key file others may read is refused too, naming the file and the fix.
    let key = key_file(&dir, &KEY_A);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = cli(&["oauth", "login", "--config", config.to_str().expect("utf8"), "--mailbox", "inbox", "--timeout", "5"], Some(&key))
        .output()
        .expect("login");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("chmod 600") && err.contains("0640") && !err.contains(&hex(&KEY_A)), "{err}");
    let t = Tokens { access_token: "x".into(), refresh_token: None, expires_at: None, scopes: vec![], account: None };
    let store = Database::open_with_keys(&dir.join("m.sqlite3"), SecretKeys::none()).expect("db");
    assert!(store.save_tokens("oauth-nokey", "rig", "u", &t).is_err());
}

#[tokio::test]
async fn plaintext_tokens_of_an_older_version_are_used_and_encrypted() {
    let r = rig();
    let (user, _) = test_box(34);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("legacy-1@test", "legacy tokens"));
    let cfg = oauth_config("imap", &user, free_port());
    let path = db_path("legacy");
    drop(Database::open_with_keys(&path, SecretKeys::none()).expect("schema"));
    let token = minted(&user, "").await;
    let refresh = "legacy-refresh-token-that-was-never-issued";
    {
        // The row as the version before encryption wrote it.
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.execute(
            "INSERT INTO oauth_tokens (tenant, client, username, access_token, refresh_token, expires_at_ms, scopes, account, updated_at_ms)
             VALUES (?1, 'rig', ?2, ?3, ?4, NULL, '', NULL, 0)",
            rusqlite::params![cfg.tenant, user, token, refresh],
        )
        .expect("legacy row");
    }
    let store = Database::open_with_keys(&path, SecretKeys::new(Some(&KEY_A), None)).expect("db");
    let mut sink = store.sink(&cfg.tenant, "inbox");
    let s = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &store).await.unwrap_or_else(|e| panic!("fetch with the legacy token: {e}"));
    drop(sink);
    assert_eq!(s.delivered, 1);
    drop(store);
    let c = rusqlite::Connection::open(&path).expect("sqlite");
    let (a, rf): (String, String) = c
        .query_row("SELECT access_token, refresh_token FROM oauth_tokens", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("row");
    drop(c);
    assert!(a.starts_with("mpenc1:") && rf.starts_with("mpenc1:"), "re-encrypted");
    let t = Tokens { access_token: token, refresh_token: Some(refresh.into()), expires_at: None, scopes: vec![], account: None };
    not_at_rest(&path, &t);
}

#[tokio::test]
async fn a_rotated_key_reads_the_old_tokens_and_writes_under_the_new_key() {
    let r = rig();
    let (user, _) = test_box(33);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("rotate-1@test", "rotation"));
    let cfg = oauth_config("imap", &user, free_port());
    let path = db_path("rotate");
    let first = login(&cfg, &Database::open_with_keys(&path, SecretKeys::new(Some(&KEY_A), None)).expect("db")).await;
    let key_id = |k: &[u8; 32]| SecretKeys::new(Some(k), None).current_id().expect("id").to_string();
    let stored = || -> (String, String) {
        rusqlite::Connection::open(&path)
            .expect("sqlite")
            .query_row("SELECT access_token, refresh_token FROM oauth_tokens", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("row")
    };
    assert!(stored().0.starts_with(&format!("mpenc1:{}:", key_id(&KEY_A))));

    // Rotation: B is the key, A the old one. Reading works and rewrites under B; a refresh
    // (the stored access token made stale) writes under B.
    let rotating = Database::open_with_keys(&path, SecretKeys::new(Some(&KEY_B), Some(&KEY_A))).expect("db");
    let mut stale = rotating.load_tokens(&cfg.tenant, "rig", &user).expect("old key reads").expect("tokens");
    assert_eq!(stale.refresh_token, first.refresh_token);
    let (a, rf) = stored();
    assert!(a.starts_with(&format!("mpenc1:{}:", key_id(&KEY_B))) && rf.starts_with(&format!("mpenc1:{}:", key_id(&KEY_B))), "{a}");
    stale.expires_at = Some(1);
    rotating.save_tokens(&cfg.tenant, "rig", &user, &stale).expect("save");
    let mut sink = rotating.sink(&cfg.tenant, "inbox");
    ops::fetch(plugin(), &cfg, "inbox", &mut sink, &rotating).await.unwrap_or_else(|e| panic!("fetch during rotation: {e}"));
    drop(sink);
    let fresh = rotating.load_tokens(&cfg.tenant, "rig", &user).expect("load").expect("tokens");
    assert_ne!(fresh.refresh_token, first.refresh_token, "refreshed");
    assert!(stored().1.starts_with(&format!("mpenc1:{}:", key_id(&KEY_B))));
    drop(rotating);

    // The old key alone no longer reads them: the error says which key is missing.
    let old_only = Database::open_with_keys(&path, SecretKeys::new(Some(&KEY_A), None)).expect("db");
    let mut sink = old_only.sink(&cfg.tenant, "inbox");
    let e = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &old_only).await.expect_err("old key only");
    drop(sink);
    assert!(matches!(&e, HostError::OAuth { kind, needs_reauthorization: true, .. } if kind == "UnknownKey"), "{e}");
    assert!(e.to_string().contains(&key_id(&KEY_B)) && e.to_string().contains("MAILPLUG_SECRET_KEY_OLD_FILE"), "{e}");
    secrets_absent(&format!("{e} {e:?}"), &fresh);
    // After the rotation the new key alone is enough.
    let new_only = Database::open_with_keys(&path, SecretKeys::new(Some(&KEY_B), None)).expect("db");
    let mut sink = new_only.sink(&cfg.tenant, "inbox");
    ops::fetch(plugin(), &cfg, "inbox", &mut sink, &new_only).await.unwrap_or_else(|e| panic!("fetch with the new key: {e}"));
    drop(sink);
    not_at_rest(&path, &fresh);
}

#[tokio::test]
async fn a_consent_by_another_account_is_refused_and_not_stored() {
    let r = rig();
    let (user, _) = test_box(32);
    let other = r.user("SALES").to_string();
    let cfg = oauth_config("imap", &user, free_port());
    let store = db("mismatch");
    let target = Target::Mailbox("inbox".into());
    let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
    let started = oauth::begin_login(&mut instance, &cfg, &target).await.expect("begin");
    // The admin's browser is signed in to another account: the rig consents as the login hint.
    let hint = format!("login_hint={}", oauth_percent(&user));
    assert!(started.url.contains(&hint), "{}", started.url);
    let url = started.url.replace(&hint, &format!("login_hint={}", oauth_percent(&other)));
    let redirect = location(&get(&url).await);
    let e = oauth::finish_login(&mut instance, &cfg, &*store, &target, &started, &redirect).await.expect_err("another account");
    assert!(matches!(&e, HostError::OAuth { kind, needs_reauthorization: true, .. } if kind == "AccountMismatch"), "{e}");
    let text = e.to_string();
    assert!(text.contains(&other) && text.contains(&user) && text.contains("oauth login") && text.contains("zugestimmt"), "{text}");
    assert!(store.load_tokens(&cfg.tenant, "rig", &user).expect("load").is_none(), "nothing stored");
    // The right account afterwards is accepted.
    let t = login(&cfg, &store).await;
    assert_eq!(t.account.as_deref(), Some(user.as_str()));
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
    let s = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*store).await.unwrap_or_else(|e| panic!("IMAP, big token: {e}"));
    drop(sink);
    assert_eq!(s.delivered, 1);
    let msg = Outgoing { to: vec![r.user("CUSTOMER").into()], subject: "big token".into(), text_body: "x".into() };
    ops::send(plugin(), &cfg, "q", &msg, &*store).await.unwrap_or_else(|e| panic!("SMTP, big token: {e}"));
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
            let e = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*store).await.expect_err(what);
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
        let e = ops::send(plugin(), &cfg, "q", &msg, &*store).await.expect_err(what);
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
        let report = mailplug_host::check::check_mailbox(plugin(), &cfg, &*store, "inbox", &[])
            .await
            .unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert!(report.passed(), "{protocol}: {report:?}");
        let mechanisms = report.steps.iter().find(|s| s.step == "mechanisms").expect("mechanisms step");
        assert!(mechanisms.detail.ends_with("XOAUTH2"), "{protocol} did not use XOAUTH2: {}", mechanisms.detail);
        assert_eq!(report.folders, vec![("INBOX".to_string(), 1)], "{protocol}");
        secrets_absent(&format!("{report:?}"), &t);
        let mut sink = store.sink(&cfg.tenant, "inbox");
        let s = ops::fetch(plugin(), &cfg, "inbox", &mut sink, &*store).await.unwrap_or_else(|e| panic!("{protocol}: {e}"));
        assert_eq!(s.delivered, 1, "{protocol}");
    }
    let cfg = oauth_config_pinned("imap", &user, free_port(), Some("xoauth2"));
    let store = db("xoauth2-smtp");
    store.save_tokens(&cfg.tenant, "rig", &user, &t).expect("save");
    let report = mailplug_host::check::check_queue(plugin(), &cfg, &*store, "q", None, &[]).await.expect("smtp check");
    assert!(report.passed(), "{report:?}");
    let mechanisms = report.steps.iter().find(|s| s.step == "mechanisms").expect("mechanisms step");
    assert!(mechanisms.detail.ends_with("using AUTH XOAUTH2"), "{}", mechanisms.detail);
    let msg = Outgoing { to: vec![r.user("CUSTOMER").into()], subject: "xoauth2".into(), text_body: "x".into() };
    ops::send(plugin(), &cfg, "q", &msg, &*store).await.unwrap_or_else(|e| panic!("SMTP, XOAUTH2: {e}"));
    // Unpinned, the same servers are logged in to with OAUTHBEARER.
    let cfg = oauth_config("imap", &user, free_port());
    let store = db("oauthbearer-default");
    store.save_tokens(&cfg.tenant, "rig", &user, &t).expect("save");
    let report = mailplug_host::check::check_mailbox(plugin(), &cfg, &*store, "inbox", &[]).await.expect("check");
    let mechanisms = report.steps.iter().find(|s| s.step == "mechanisms").expect("mechanisms step");
    assert!(mechanisms.detail.ends_with("OAUTHBEARER"), "{}", mechanisms.detail);
}
