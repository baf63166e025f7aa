//! `mailplug serve --store postgres://...` on one node: the real binary on the rig's
//! PostgreSQL 15 (tests/rig/postgres/up.sh), observed through its HTTP API, an SSE stream, the
//! database itself (through the PostgreSQL store and psql) and the rig's mailboxes. Without the
//! rig's PostgreSQL every test here says so and passes without checking anything. Each test
//! works in a tenant of its own (`unique("b-...")`) in the shared test database. Rig boxes 81
//! to 84; every wait is bounded.

use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use mailplug_host::engine::Tokens;
use mailplug_host::oauth::{self, Target};
use mailplug_host::store::postgres::PgStore;
use mailplug_host::store::{MessageQuery, SyncStateStore};
use mailplug_host::tokens::SecretKeys;
use mailplug_host::{http, TenantConfig};
use mailplug_tests::pg::{pg_env, unique};
use mailplug_tests::serve::*;
use mailplug_tests::{plugin, rig, sample_message, test_box};
use serde_json::{json, Value};

/// The tests here share rig boxes 81 to 84: one at a time.
static BOXES: Mutex<()> = Mutex::new(());

/// The token key serve and this test share (given to serve in a 0600 file).
const KEY: [u8; 32] = [0x5b; 32];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The tenant: "poll" (box 81, IMAPS, polled every second, no IDLE), "idle" (box 82, IMAPS,
/// IDLE, polled only every 10 minutes), "oa" (box 84, IMAPS with OAuth2 through the rig's
/// authorization server, polled every second), and queue "q" through Postfix submission as
/// box 81. Returns the file's text.
fn tenant_toml(dir: &Path, id: &str, token: &str) -> String {
    let r = rig();
    let tok = dir.join(format!("secrets/{id}.token"));
    private(&tok, token);
    let secret = dir.join("secrets/client.secret");
    private(&secret, r.get("RIG_OAUTH_CLIENT_SECRET"));
    let mut t = format!(
        "tenant = \"{id}\"\nlicensed = true\nextra_ca_file = \"{ca}\"\napi_token_file = \"{tok}\"\n\
         [limits]\nreply_timeout_secs = 30\nconnect_timeout_secs = 5\n\
         [oauth.rig]\nprovider = \"custom\"\nauthorization_endpoint = \"{a}\"\ntoken_endpoint = \"{te}\"\n\
         scopes = [\"openid\", \"email\", \"offline_access\"]\nclient_id = \"{c}\"\nclient_secret_file = \"{s}\"\n\
         redirect_uri = \"http://127.0.0.1:9/callback\"\n",
        ca = r.get("RIG_CA"),
        tok = tok.display(),
        a = r.get("RIG_OAUTH_AUTHORIZE_URL"),
        te = r.get("RIG_OAUTH_TOKEN_URL"),
        c = r.get("RIG_OAUTH_CLIENT_ID"),
        s = secret.display(),
    );
    for (name, n, extra) in [("poll", 81, "idle = false\npoll_interval_secs = 1\n"), ("idle", 82, "poll_interval_secs = 600\n")] {
        let (user, pass) = test_box(n);
        let pw = dir.join(format!("secrets/box{n}.pw"));
        private(&pw, &pass);
        t += &format!(
            "[[mailbox]]\nname = \"{name}\"\naddress = \"{user}\"\nprotocol = \"imap\"\nfirst_sync = \"all\"\n{extra}\
             host = \"localhost\"\nport = {}\ntls = true\nusername = \"{user}\"\npassword_file = \"{}\"\n",
            r.port("RIG_IMAPS_PORT"),
            pw.display()
        );
    }
    let (user84, _) = test_box(84);
    t += &format!(
        "[[mailbox]]\nname = \"oa\"\naddress = \"{user84}\"\nprotocol = \"imap\"\nfirst_sync = \"all\"\nidle = false\npoll_interval_secs = 1\n\
         host = \"localhost\"\nport = {}\ntls = true\nauth = \"oauth2\"\noauth = \"rig\"\nusername = \"{user84}\"\n",
        r.port("RIG_IMAPS_PORT"),
    );
    let (user81, _) = test_box(81);
    t += &format!(
        "[[queue]]\nname = \"q\"\nmailboxes = [\"poll\"]\n[queue.smtp]\nhost = \"localhost\"\nport = {}\ntls = false\n\
         username = \"{user81}\"\npassword_file = \"{}\"\n",
        r.port("RIG_SUBMISSION_PORT"),
        dir.join("secrets/box81.pw").display()
    );
    t
}

/// The admin's OAuth2 consent for mailbox "oa", headless (the rig's server consents for the
/// login hint): the tokens are stored in `store`.
async fn login(cfg: &TenantConfig, store: &PgStore) -> Tokens {
    let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
    let target = Target::Mailbox("oa".into());
    let started = oauth::begin_login(&mut instance, cfg, &target).await.expect("begin");
    let tls = mailplug_host::net::tls_config(None).expect("tls");
    let r = http::execute(&http::Request { method: "GET", url: &started.url, headers: &[], body: &[] }, tls, Duration::from_secs(10))
        .await
        .expect("GET /authorize");
    assert!((300..400).contains(&r.status), "a redirect: {}", r.status);
    let redirect = r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("location")).map(|(_, v)| v.clone()).expect("Location");
    oauth::finish_login(&mut instance, cfg, store, &target, &started, &redirect).await.expect("token exchange")
}

/// `sql` through psql as the test role; the rows as text.
fn psql(url: &str, pw: &Path, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args(["-X", "-A", "-t", "-q", url, "-c", sql])
        .env("PGPASSWORD", std::fs::read_to_string(pw).expect("password").trim())
        .output()
        .expect("psql runs");
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An SSE stream of `message.stored` Message-IDs (through a thread; bounded reads).
fn stored_ids(addr: &str, tenant: &str, token: &str) -> mpsc::Receiver<String> {
    let (status, items) = sse_stream(addr, &format!("/v1/tenants/{tenant}/events"), token, None);
    assert_eq!(status, 200);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for item in items {
            if let SseItem::Event(_, kind, data) = item {
                if kind == "message.stored" {
                    let mid = data["data"]["message_id"].as_str().unwrap_or_default().to_string();
                    if tx.send(mid).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

fn next_stored(rx: &mpsc::Receiver<String>, mid: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(m) if m == mid => return,
            Ok(_) => {}
            Err(_) => panic!("no message.stored event for {mid} on the SSE stream within 60 s"),
        }
    }
}

/// Waits until the API lists `mid` in the tenant's messages; asserts it is listed once.
fn wait_listed(s: &Serve, tenant: &str, token: &str, mid: &str, secs: u64) -> Value {
    let list = wait_for(&format!("{mid} listed"), secs, || {
        let list = try_messages(s, tenant, token).ok()?;
        (!with_mid(&list, mid).is_empty()).then_some(list)
    });
    let found = with_mid(&list, mid);
    assert_eq!(found.len(), 1, "{mid} is stored once: {list:?}");
    found[0].clone()
}

/// serve on PostgreSQL, one node: a polled and an idling mailbox, an OAuth2 mailbox whose
/// tokens are in PostgreSQL, the messages API, SSE, the outbox, and a restart that continues
/// from the saved sync state; tokens and secrets are not readable in the database.
#[test]
fn serve_on_postgres_stores_once_serves_the_api_sends_the_outbox_and_resumes_after_a_restart() {
    let Some((url, pw)) = pg_env() else { return };
    let _boxes = BOXES.lock().unwrap_or_else(|p| p.into_inner());
    let r = rig();
    let dir = workdir("pg");
    let tenant = unique("b-pg");
    let token = "tenant-pg-token-0123456789abcdef";
    let users: Vec<String> = (81..=84).map(|n| test_box(n).0).collect();
    for u in &users {
        r.reset_mailbox(u);
    }
    let key = dir.join("secrets/token.key");
    private(&key, &hex(&KEY));
    write_tenant(&dir, "pg.toml", &tenant_toml(&dir, &tenant, token));
    let cfg = TenantConfig::load(&dir.join("tenants/pg.toml")).expect("tenant file");

    // The admin's consent before the start: the tokens go into PostgreSQL, encrypted.
    let store = PgStore::connect_with_keys(&url, Some(&pw), SecretKeys::new(Some(&KEY), None)).expect("the rig's PostgreSQL");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let tokens = rt.block_on(login(&cfg, &store));

    let tag = std::process::id();
    let (m_poll, m_idle, m_oa, m_late) =
        (format!("pg-poll-{tag}@test"), format!("pg-idle-{tag}@test"), format!("pg-oa-{tag}@test"), format!("pg-late-{tag}@test"));
    r.put(&users[0], "INBOX", &sample_message(&m_poll, "polled on postgres"));
    r.put(&users[3], "INBOX", &sample_message(&m_oa, "oauth on postgres"));
    let args = ["--store", url.as_str(), "--store-password-file", pw.to_str().expect("utf8")];
    let env = [("MAILPLUG_SECRET_KEY_FILE", key.to_str().expect("utf8"))];
    let s = Serve::start_with(&dir, "serve-pg.log", &args, &env);
    wait_for("the tenant loaded", 60, || (s.get(&format!("/v1/tenants/{tenant}"), Some(token)).0 == 200).then_some(()));
    let events = stored_ids(&s.addr, &tenant, token);

    // Polled and OAuth2 mail: stored once, on the API and the SSE stream.
    let polled = wait_listed(&s, &tenant, token, &m_poll, 90);
    wait_listed(&s, &tenant, token, &m_oa, 90);
    // IDLE: the mailbox is idling (its next poll is 10 minutes away), so new mail arrives at once.
    wait_for("the idle mailbox idling", 60, || (mailbox_state(&s, &tenant, "idle")["state"] == "idling").then_some(()));
    let put_at = Instant::now();
    r.put(&users[1], "INBOX", &sample_message(&m_idle, "idle on postgres"));
    wait_listed(&s, &tenant, token, &m_idle, 60);
    let idle_took = put_at.elapsed();
    assert!(idle_took < Duration::from_secs(60), "IDLE brought the message in {idle_took:?}");
    next_stored(&events, &m_idle);

    // The detail and the raw bytes come from PostgreSQL.
    let id = polled["id"].as_i64().expect("id");
    let (status, detail) = s.get(&format!("/v1/tenants/{tenant}/messages/{id}"), Some(token));
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["subject"], "polled on postgres", "{detail}");
    let (status, raw) = s.request("GET", &format!("/v1/tenants/{tenant}/messages/{id}/raw"), Some(token), None);
    assert_eq!(status, 200);
    assert_eq!(raw, sample_message(&m_poll, "polled on postgres"), "the raw message exactly as fetched");
    assert_eq!(store.count_messages(&tenant).expect("count"), 3, "three messages in PostgreSQL");

    // The outbox: a reply to the polled message, delivered through Postfix once.
    let (user83, _) = test_box(83);
    let body = json!({"to": [user83], "subject": format!("pg outbox {tag}"), "text": "from serve on postgres\n"}).to_string();
    let (status, v) = s.call("POST", &format!("/v1/tenants/{tenant}/queues/q/outbox"), Some(token), Some(&body));
    assert_eq!(status, 201, "{v}");
    let (row_id, out_mid) = (v["id"].as_str().expect("id").to_string(), v["message_id"].as_str().expect("mid").to_string());
    wait_for("the outbox row delivered", 90, || {
        (s.get(&format!("/v1/tenants/{tenant}/outbox/{row_id}"), Some(token)).1["state"] == "delivered").then_some(())
    });
    wait_for("the message in box 83", 60, || (r.listing(&user83, "INBOX").iter().filter(|(_, _, m)| *m == out_mid).count() == 1).then_some(()));
    let reply = json!({"reply_to_message": format!("db:{id}"), "text": "a reply from serve on postgres\n"}).to_string();
    let (status, v) = s.call("POST", &format!("/v1/tenants/{tenant}/queues/q/outbox"), Some(token), Some(&reply));
    assert_eq!(status, 201, "a reply to a message stored in PostgreSQL: {v}");
    let reply_id = v["id"].as_str().expect("id").to_string();
    wait_for("the reply delivered", 90, || {
        (s.get(&format!("/v1/tenants/{tenant}/outbox/{reply_id}"), Some(token)).1["state"] == "delivered").then_some(())
    });

    // A restart continues from the saved sync state: only the new message is stored.
    let (status, _) = s.terminate();
    assert!(status.success(), "serve stops cleanly");
    let saved = store.load(&tenant, "poll").expect("load").expect("a saved sync state");
    assert!(!saved.state.is_empty());
    r.put(&users[0], "INBOX", &sample_message(&m_late, "after the restart"));
    let s = Serve::start_with(&dir, "serve-pg-2.log", &args, &env);
    wait_listed(&s, &tenant, token, &m_late, 90);
    // Every mailbox had a run after the restart before the list is taken.
    for mb in ["poll", "oa"] {
        wait_for(&format!("{mb} ran after the restart"), 60, || (mailbox_state(&s, &tenant, mb)["runs"].as_u64() >= Some(2)).then_some(()));
    }
    let list = messages(&s, &tenant, token);
    for mid in [&m_poll, &m_idle, &m_oa, &m_late] {
        assert_eq!(with_mid(&list, mid).len(), 1, "{mid} once after the restart: {list:?}");
    }
    assert_eq!(list.len(), 4, "nothing fetched twice: {list:?}");
    assert_eq!(store.count_messages(&tenant).expect("count"), 4);
    let log = std::fs::read_to_string(dir.join("serve-pg-2.log")).unwrap_or_default();
    assert!(log.contains("store_kind=\"postgres\"") || log.contains("store_kind=postgres"), "the log names the store: {log}");
    assert!(s.terminate().0.success());

    // At rest: no token, password or API token in the tenant's rows, in any of the forms psql shows.
    let q = tenant.replace('\'', "''");
    let mut rows = String::new();
    for table in ["oauth_tokens", "sync_state", "outbox", "events"] {
        rows += &psql(&url, &pw, &format!("SELECT t::text FROM {table} t WHERE tenant = '{q}'"));
    }
    assert!(rows.contains(&users[3]), "the token row is there: {rows}");
    let mut secrets = vec![tokens.access_token.clone(), token.to_string(), test_box(81).1, test_box(82).1, r.get("RIG_OAUTH_CLIENT_SECRET").to_string()];
    secrets.extend(tokens.refresh_token.clone());
    for secret in &secrets {
        assert!(!rows.contains(secret.as_str()), "a secret is readable in the database");
        assert!(!rows.contains(&hex(secret.as_bytes())), "a secret is readable (hex) in the database");
    }
    // The logs name the store without its password file's content.
    let password = std::fs::read_to_string(&pw).expect("password");
    for log in ["serve-pg.log", "serve-pg-2.log"] {
        let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
        assert!(!text.contains(password.trim()), "{log} shows the PostgreSQL password");
        assert!(!text.contains(&tokens.access_token), "{log} shows the access token");
    }
    let _ = std::fs::remove_dir_all(&dir);
    for u in &users {
        r.reset_mailbox(u);
    }
}

/// A password in the URL is accepted but never shown: not in the log line naming the store,
/// not in an error (a wrong password), and serve warns that it belongs in a file.
#[test]
fn a_password_in_the_store_url_is_never_shown() {
    let Some((url, pw)) = pg_env() else { return };
    let dir = workdir("pg-redact");
    let wrong = "Wr0ng-Passw0rd-in-the-URL";
    let with_password = url.replacen("postgres://mailplug@", &format!("postgres://mailplug:{wrong}@"), 1);
    assert_ne!(with_password, url, "the rig's URL names the role: {url}");
    let out = std::process::Command::new(bin())
        .args(["serve", "--tenants"])
        .arg(dir.join("tenants"))
        .args(["--store", &with_password, "--listen", "127.0.0.1:0"])
        .env("MAILPLUG_WASM", mailplug_tests::wasm_path())
        .env_remove("MAILPLUG_STORE_PASSWORD_FILE")
        .output()
        .expect("serve runs");
    assert!(!out.status.success(), "a wrong password stops the start");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains(wrong), "the URL's password is shown: {text}");
    assert!(text.contains("password") && text.contains("--store-password-file"), "says where the password belongs: {text}");
    assert!(text.contains("PostgreSQL"), "says what failed: {text}");
    // The CLI too: the same store for a one-shot command.
    let cfg = dir.join("t.toml");
    std::fs::write(&cfg, "tenant = \"b-redact\"\nlicensed = true\n").expect("tenant file");
    let out = std::process::Command::new(bin())
        .args(["outbox", "list", "--config"])
        .arg(&cfg)
        .args(["--store", &with_password])
        .env("MAILPLUG_WASM", mailplug_tests::wasm_path())
        .output()
        .expect("mailplug runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(!text.contains(wrong), "the URL's password is shown: {text}");
    let _ = pw;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The CLI on PostgreSQL: `mailplug fetch --store postgres://...` stores and reports once,
/// `enqueue` and `outbox drain` send through the PostgreSQL outbox.
#[test]
fn the_cli_fetches_enqueues_and_drains_on_postgres() {
    let Some((url, pw)) = pg_env() else { return };
    let _boxes = BOXES.lock().unwrap_or_else(|p| p.into_inner());
    let r = rig();
    let dir = workdir("pg-cli");
    let tenant = unique("b-cli");
    let (user81, pass81) = test_box(81);
    let (user83, _) = test_box(83);
    r.reset_mailbox(&user81);
    r.reset_mailbox(&user83);
    let pwf = dir.join("secrets/box81.pw");
    private(&pwf, &pass81);
    let cfg = dir.join("cli.toml");
    std::fs::write(
        &cfg,
        format!(
            "tenant = \"{tenant}\"\nlicensed = true\nextra_ca_file = \"{ca}\"\n\
             [[mailbox]]\nname = \"in\"\naddress = \"{user81}\"\nprotocol = \"imap\"\nfirst_sync = \"all\"\n\
             host = \"localhost\"\nport = {imaps}\ntls = true\nusername = \"{user81}\"\npassword_file = \"{pw}\"\n\
             [[queue]]\nname = \"q\"\nmailboxes = [\"in\"]\n[queue.smtp]\nhost = \"localhost\"\nport = {sub}\ntls = false\n\
             username = \"{user81}\"\npassword_file = \"{pw}\"\n",
            ca = r.get("RIG_CA"),
            imaps = r.port("RIG_IMAPS_PORT"),
            sub = r.port("RIG_SUBMISSION_PORT"),
            pw = pwf.display()
        ),
    )
    .expect("tenant file");
    let mid = format!("pg-cli-{}@test", std::process::id());
    r.put(&user81, "INBOX", &sample_message(&mid, "fetched by the CLI on postgres"));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .args(["--store", url.as_str(), "--store-password-file", pw.to_str().expect("utf8"), "--json"])
            .env("MAILPLUG_WASM", mailplug_tests::wasm_path())
            .output()
            .expect("mailplug runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "mailplug {args:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    let first = run(&["fetch"]);
    assert_eq!(first.matches("fetched by the CLI on postgres").count(), 1, "reported once: {first}");
    let second = run(&["fetch"]);
    assert!(!second.contains("fetched by the CLI on postgres"), "not fetched or reported again: {second}");
    let store = PgStore::connect(&url, Some(&pw)).expect("the rig's PostgreSQL");
    let stored = store.messages(&tenant, "in").expect("messages");
    assert_eq!(stored.iter().filter(|m| m.message_id == mid).count(), 1, "stored once in PostgreSQL");
    assert!(stored.iter().all(|m| m.reported), "reported, so a later fetch does not report it again");
    let subject = format!("pg cli outbox {}", std::process::id());
    let out = std::process::Command::new(bin())
        .args(["enqueue", "--config"])
        .arg(&cfg)
        .args(["--queue", "q", "--to", &user83, "--subject", &subject, "--body", "queued on postgres\n", "--json"])
        .args(["--store", url.as_str(), "--store-password-file", pw.to_str().expect("utf8")])
        .env("MAILPLUG_WASM", mailplug_tests::wasm_path())
        .output()
        .expect("enqueue runs");
    assert!(out.status.success(), "enqueue: {}", String::from_utf8_lossy(&out.stderr));
    let row: Value = serde_json::from_slice(&out.stdout).expect("enqueue prints the row");
    let out_mid = row["message_id"].as_str().expect("message_id").to_string();
    let drained = run(&["outbox", "drain"]);
    assert!(drained.contains("delivered"), "{drained}");
    wait_for("the message in box 83", 60, || (r.listing(&user83, "INBOX").iter().filter(|(_, _, m)| *m == out_mid).count() == 1).then_some(()));
    let listed = run(&["outbox", "list"]);
    assert!(listed.contains(&out_mid) && listed.contains("delivered"), "{listed}");
    let _ = std::fs::remove_dir_all(&dir);
    r.reset_mailbox(&user81);
    r.reset_mailbox(&user83);
}
