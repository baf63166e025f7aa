//! The admin page of `mailplug serve` (issue 15) in a real browser: Debian's headless Chromium
//! driven over WebDriver (tests/src/browser.rs), against the real `mailplug serve` binary and
//! the rig. Rig boxes 99 and 100 and the rig's OAuth2 server are this file's.
//!
//! With `MAILPLUG_SCREENSHOTS=<folder>` the tests also save the main pages as PNGs there
//! (docs/screenshots/ holds the ones the docs show).

use std::path::{Path, PathBuf};
use std::time::Duration;

use fantoccini::key::Key;
use mailplug_tests::browser::Browser;
use mailplug_tests::serve::{http, private, wait_for, workdir, write_tenant, Browser as HttpClient, Serve, ADMIN};
use mailplug_tests::{rig, test_box, TempPath};

const TOKEN_A: &str = "acme-browser-token-0123456789abcdef";
const TOKEN_B: &str = "bravo-browser-token-0123456789abcdef";
/// The store's key for OAuth2 tokens (hex), for the serve these tests start.
const KEY: &str = "6d61696c706c75672d62726f777365722d746573742d6b65792d303030303030";

/// A test's work folder in /tmp, removed when the test ends. When it fails, the failure's
/// screenshot and page and the service's log are first copied to the build's temp folder
/// (`CARGO_TARGET_TMPDIR/admin_browser/`), not into /tmp.
struct Workdir(TempPath);

impl Drop for Workdir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let name = self.0.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let keep = Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin_browser").join(name);
        if std::fs::create_dir_all(&keep).is_ok() {
            for e in std::fs::read_dir(&*self.0).into_iter().flatten().flatten() {
                let f = e.file_name().to_string_lossy().into_owned();
                if f.starts_with("failure-") || f.ends_with(".log") {
                    let _ = std::fs::copy(e.path(), keep.join(&f));
                }
            }
            eprintln!("the failure's screenshot, page and logs: {}", keep.display());
        }
    }
}

/// acme: IMAP mailbox "in" on box 99 (password), "wrongtls" (box 99 with TLS on for the
/// STARTTLS port, which cannot work), OAuth2 mailbox "oa" on box 100 with the rig's
/// OAuth2 server, queue "q" (box 99's SMTP account, serving "in") and queue "agent" (box 100's
/// SMTP account, serving nothing). bravo: one mailbox on box 99.
fn acme_toml(dir: &Path) -> String {
    let r = rig();
    private(&dir.join("secrets/acme.token"), TOKEN_A);
    private(&dir.join("secrets/client.secret"), r.get("RIG_OAUTH_CLIENT_SECRET"));
    let (u99, p99) = test_box(99);
    let (u100, p100) = test_box(100);
    private(&dir.join("secrets/box99.pw"), &p99);
    private(&dir.join("secrets/box100.pw"), &p100);
    let s = dir.join("secrets");
    format!(
        "# acme (admin_browser)\ntenant = \"acme\"\nlicensed = true\nextra_ca_file = \"{ca}\"\napi_token_file = \"{s}/acme.token\"\n\
         [limits]\nreply_timeout_secs = 15\nconnect_timeout_secs = 5\n\
         [oauth.rig]\nprovider = \"custom\"\nauthorization_endpoint = \"{authz}\"\ntoken_endpoint = \"{token}\"\n\
         scopes = [\"openid\", \"email\", \"offline_access\"]\nclient_id = \"{client}\"\nclient_secret_file = \"{s}/client.secret\"\n\
         redirect_uri = \"http://127.0.0.1:9/not-used-by-the-admin-page\"\n\
         [[mailbox]]\nname = \"in\"\naddress = \"{u99}\"\nprotocol = \"imap\"\npoll_interval_secs = 300\nhost = \"localhost\"\nport = {imaps}\n\
         tls = true\nusername = \"{u99}\"\npassword_file = \"{s}/box99.pw\"\n\
         [[mailbox]]\nname = \"oa\"\naddress = \"{u100}\"\nprotocol = \"imap\"\npoll_interval_secs = 300\nhost = \"localhost\"\nport = {imaps}\n\
         tls = true\nauth = \"oauth2\"\noauth = \"rig\"\nusername = \"{u100}\"\n\
         [[mailbox]]\nname = \"wrongtls\"\naddress = \"{u99}\"\nprotocol = \"imap\"\npoll_interval_secs = 300\nhost = \"localhost\"\nport = {starttls}\n\
         tls = true\nusername = \"{u99}\"\npassword_file = \"{s}/box99.pw\"\n\
         [[queue]]\nname = \"q\"\nmailboxes = [\"in\"]\n[queue.smtp]\nhost = \"localhost\"\nport = {smtps}\ntls = true\n\
         username = \"{u99}\"\npassword_file = \"{s}/box99.pw\"\n\
         [[queue]]\nname = \"agent\"\nmailboxes = []\n[queue.smtp]\nhost = \"localhost\"\nport = {smtps}\ntls = true\n\
         username = \"{u100}\"\npassword_file = \"{s}/box100.pw\"\n",
        ca = r.get("RIG_CA"),
        s = s.display(),
        authz = r.get("RIG_OAUTH_AUTHORIZE_URL"),
        token = r.get("RIG_OAUTH_TOKEN_URL"),
        client = r.get("RIG_OAUTH_CLIENT_ID"),
        imaps = r.port("RIG_IMAPS_PORT"),
        starttls = r.port("RIG_IMAP_STARTTLS_PORT"),
        smtps = r.port("RIG_SMTPS_PORT"),
    )
}

fn bravo_toml(dir: &Path) -> String {
    let r = rig();
    private(&dir.join("secrets/bravo.token"), TOKEN_B);
    let (u99, _) = test_box(99);
    let s = dir.join("secrets");
    format!(
        "tenant = \"bravo\"\nlicensed = true\nextra_ca_file = \"{ca}\"\napi_token_file = \"{s}/bravo.token\"\n\
         [[mailbox]]\nname = \"b-in\"\naddress = \"{u99}\"\nprotocol = \"imap\"\npoll_interval_secs = 300\nhost = \"localhost\"\nport = {imaps}\n\
         tls = true\nusername = \"{u99}\"\npassword_file = \"{s}/box99.pw\"\n",
        ca = r.get("RIG_CA"),
        s = s.display(),
        imaps = r.port("RIG_IMAPS_PORT"),
    )
}

struct Setup {
    serve: Serve,
    /// "http://localhost:PORT": the admin page as the browser opens it.
    base: String,
    // Last: removed after the service has stopped.
    dir: Workdir,
}

/// A serve with acme and bravo, both loaded.
fn start_blocking(name: &str) -> Setup {
    let dir = workdir(&format!("admin-browser-{name}"));
    write_tenant(&dir, "acme.toml", &acme_toml(&dir));
    write_tenant(&dir, "bravo.toml", &bravo_toml(&dir));
    let serve = Serve::start_with(&dir, "serve.log", &[], &[("MAILPLUG_SECRET_KEY", KEY)]);
    wait_for("both tenants loaded", 60, || {
        (serve.get("/v1/tenants/acme", Some(ADMIN)).0 == 200 && serve.get("/v1/tenants/bravo", Some(ADMIN)).0 == 200).then_some(())
    });
    let port = serve.addr.rsplit(':').next().expect("port").to_string();
    Setup { base: format!("http://localhost:{port}"), serve, dir: Workdir(dir) }
}

/// `start_blocking` off the async threads.
async fn start(name: &str) -> Setup {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || start_blocking(&name)).await.expect("serve starts")
}

/// Where to save the docs' screenshots, if asked.
fn shots() -> Option<PathBuf> {
    std::env::var_os("MAILPLUG_SCREENSHOTS").map(PathBuf::from)
}

async fn shot(b: &Browser, name: &str) {
    if let Some(dir) = shots() {
        b.save_page_png(&dir.join(format!("{name}.png"))).await;
    }
}

/// Signs in on the sign-in page with the keyboard: the token typed into the focused field
/// (autofocus), Enter submits.
async fn sign_in(b: &Browser, base: &str, tenant: &str, token: &str) {
    b.goto(&format!("{base}/admin/t/{tenant}/login")).await;
    b.find("input#token").await;
    let active = b.client.active_element().await.expect("the focused element");
    assert_eq!(active.attr("id").await.ok().flatten().as_deref(), Some("token"), "the token field has the focus");
    active.send_keys(&format!("{token}{}", Key::Enter)).await.expect("type the token");
    b.find("table#mailboxes").await;
}

async fn select(b: &Browser, css: &str, value: &str) {
    b.find(css).await.select_by_value(value).await.unwrap_or_else(|e| panic!("choose {value} in {css}: {e}"));
}

/// The mail-server form: the Gmail preset fills imap.gmail.com/993/TLS; OAuth2 hides the
/// password; SMTP on 587 with TLS on shows the refusal; Test connection on box 99 shows every
/// step succeed, live, for the mailbox and for a queue's SMTP server; a failing step explains
/// itself; the German page has German labels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailbox_form_presets_findings_and_test_connection() {
    let s = start("form").await;
    let b = Browser::start(&s.dir.0).await;
    let base = s.base.clone();
    b.guard("form", async {
        sign_in(&b, &base, "acme", TOKEN_A).await;
        b.find("tr[data-mailbox=\"in\"]").await;
        b.find("tr[data-queue=\"q\"]").await;
        shot(&b, "overview").await;

        // The Gmail preset.
        b.goto(&format!("{base}/admin/t/acme/mailboxes/new")).await;
        b.find("input#address").await.send_keys("someone@gmail.com").await.expect("type");
        // The catalogue loads after the page; the preset takes effect once it is there.
        b.until("the Gmail preset to fill the server", || async {
            select(&b, "select#preset", "gmail").await;
            (b.value("input#host").await == "imap.gmail.com").then_some(())
        })
        .await;
        assert_eq!(b.value("input#port").await, "993");
        assert_eq!(b.find("input#tls").await.prop("checked").await.ok().flatten().as_deref(), Some("true"));
        shot(&b, "mailbox-form").await;

        // OAuth2: the password row disappears; Basic brings it back.
        b.displayed_is("input#password", true).await;
        select(&b, "select#auth", "oauth2").await;
        b.displayed_is("div#password-row", false).await;
        b.displayed_is("input#password", false).await;
        select(&b, "select#auth", "basic").await;
        b.displayed_is("input#password", true).await;

        // SMTP on 587 with TLS on: refused as the admin types.
        select(&b, "select#preset", "").await;
        select(&b, "select#protocol", "smtp").await;
        let host = b.find("input#host").await;
        host.clear().await.expect("clear");
        host.send_keys("mail.example.com").await.expect("type");
        let port = b.find("input#port").await;
        port.clear().await.expect("clear");
        port.send_keys("587").await.expect("type");
        if b.find("input#tls").await.prop("checked").await.ok().flatten().as_deref() != Some("true") {
            b.find("input#tls").await.click().await.expect("TLS on");
        }
        let refusal = b.text_contains("ul#findings li[data-code=\"tls\"][data-severity=\"error\"]", "587").await;
        assert!(refusal.contains("465"), "the refusal says what to do: {refusal}");

        // Test connection on the saved mailbox "in" (box 99): every step, live, then success.
        b.goto(&format!("{base}/admin/t/acme/mailboxes/in")).await;
        assert!(!b.exists("div#token-health").await, "a password mailbox has no token health");
        b.find("button#test-connection").await.click().await.expect("press Test connection");
        let passed = b
            .until_for("the check to finish", Duration::from_secs(60), || async {
                b.client.find(fantoccini::Locator::Css("p#check-result[data-passed]")).await.ok()?.attr("data-passed").await.ok()?
            })
            .await;
        let steps = b.all("ol#check-steps li").await;
        let mut seen = Vec::new();
        for li in &steps {
            let step = li.attr("data-step").await.ok().flatten().unwrap_or_default();
            let status = li.attr("data-status").await.ok().flatten().unwrap_or_default();
            seen.push(format!("{step}={status}"));
        }
        assert_eq!(passed, "true", "the check passed: {seen:?} {}", b.text("p#check-result").await);
        for want in ["settings=ok", "resolve=ok", "connect=ok", "tls=ok", "greeting=ok", "login=ok"] {
            assert!(seen.iter().any(|s| s == want), "{want} in {seen:?}");
        }
        assert!(seen.iter().all(|s| s.ends_with("=ok")), "every step succeeded: {seen:?}");
        assert!(!b.text("ol#check-steps").await.contains(&test_box(99).1), "no password on the page");
        shot(&b, "check-steps").await;

        // The same for a queue's SMTP server (the form's `?smtp=1` page): sign-in and a sender
        // the server accepts, then a reset; nothing is sent.
        b.goto(&format!("{base}/admin/t/acme/mailboxes/q?smtp=1")).await;
        b.find("button#test-connection").await.click().await.expect("press Test connection");
        let passed = b
            .until_for("the SMTP check to finish", Duration::from_secs(60), || async {
                b.client.find(fantoccini::Locator::Css("p#check-result[data-passed]")).await.ok()?.attr("data-passed").await.ok()?
            })
            .await;
        assert_eq!(passed, "true", "{}", b.text("ol#check-steps").await);
        for step in ["tls", "login", "envelope"] {
            assert!(b.exists(&format!("ol#check-steps li[data-step=\"{step}\"][data-status=\"ok\"]")).await, "{step}: {}", b.text("ol#check-steps").await);
        }

        // German.
        b.find("a#lang-de").await.click().await.expect("Deutsch");
        b.text_contains("button#test-connection", "Verbindung testen").await;
        assert_eq!(b.find("html").await.attr("lang").await.ok().flatten().as_deref(), Some("de"));
        b.find("button#test-connection").await.click().await.expect("press Test connection");
        b.text_contains("p#check-result", "erfolgreich").await;
        b.text_contains("ol#check-steps", "Anmelden").await;
        // A step that fails shows its explanation and what to do, in the admin's language
        // (German here), and nothing the server sent in clear text.
        b.goto(&format!("{base}/admin/t/acme/mailboxes/wrongtls")).await;
        b.find("button#test-connection").await.click().await.expect("press Test connection");
        let passed = b
            .until_for("the failing check to finish", Duration::from_secs(60), || async {
                b.client.find(fantoccini::Locator::Css("p#check-result[data-passed]")).await.ok()?.attr("data-passed").await.ok()?
            })
            .await;
        assert_eq!(passed, "false");
        let failed = b.find("ol#check-steps li[data-status=\"failed\"]").await;
        assert_eq!(failed.attr("data-step").await.ok().flatten().as_deref(), Some("tls"));
        let cause = b.text("ol#check-steps li[data-status=\"failed\"] .step-cause").await;
        let action = b.text("ol#check-steps li[data-status=\"failed\"] .step-action").await;
        assert!(cause.starts_with("Ursache:") && cause.contains("unverschlüsselt"), "{cause}");
        assert!(action.starts_with("Was zu tun ist:") && action.contains("TLS für diesen Port aus"), "{action}");
        assert!(b.text("p#check-result").await.contains("fehlgeschlagen"));
        assert!(!b.text("ol#check-steps").await.contains("Dovecot"), "the clear-text greeting is never shown");
        shot(&b, "check-failed-de").await;
        b.find("a#lang-en").await.click().await.expect("English");
        b.text_contains("button#test-connection", "Test connection").await;
    })
    .await;
    b.close().await;
    drop(s.serve);
}

/// Connect account: the OAuth2 authorization-code flow through the rig's OAuth2 server for the
/// OAuth2 mailbox on box 100, back to the mailbox page with the token's health (never the
/// token); Test connection then signs in with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_account_through_the_rigs_oauth2_server() {
    let s = start("oauth").await;
    let b = Browser::start(&s.dir.0).await;
    let base = s.base.clone();
    b.guard("oauth", async {
        sign_in(&b, &base, "acme", TOKEN_A).await;
        b.goto(&format!("{base}/admin/t/acme/mailboxes/oa")).await;
        let health = b.find("div#token-health").await;
        assert_eq!(health.attr("data-state").await.ok().flatten().as_deref(), Some("missing"));
        b.find("button#connect-account").await.click().await.expect("press Connect account");
        // The rig's server consents at once and sends the browser back to the admin page's own
        // callback (another site: the hop page carries the SameSite=Strict session over).
        b.until_for("back on the mailbox page with a token", Duration::from_secs(60), || async {
            let url = b.client.current_url().await.ok()?;
            let e = b.client.find(fantoccini::Locator::Css("div#token-health")).await.ok()?;
            let state = e.attr("data-state").await.ok()??;
            (url.path() == "/admin/t/acme/mailboxes/oa" && state == "valid").then_some(())
        })
        .await;
        b.text_contains("p#connect-outcome", "connected").await;
        assert!(b.text("div#token-health dd.valid-until").await.len() >= 10, "valid until a time");
        assert_eq!(b.find("div#token-health dd.refresh").await.attr("data-present").await.ok().flatten().as_deref(), Some("true"));
        b.text_contains("div#token-health dd.account", &test_box(100).0).await;
        let page = b.client.source().await.expect("page");
        assert!(!page.contains("access_token") && !page.contains("refresh_token\""), "no token on the page");
        assert!(!page.contains(rig().get("RIG_OAUTH_CLIENT_SECRET")), "no client secret on the page");
        // The stored token works: Test connection signs in with it.
        b.find("button#test-connection").await.click().await.expect("press Test connection");
        let passed = b
            .until_for("the check to finish", Duration::from_secs(60), || async {
                b.client.find(fantoccini::Locator::Css("p#check-result[data-passed]")).await.ok()?.attr("data-passed").await.ok()?
            })
            .await;
        assert_eq!(passed, "true", "{}", b.text("ol#check-steps").await);
        assert!(b.exists("ol#check-steps li[data-step=\"token\"][data-status=\"ok\"]").await, "the token step");
        // The outcome is shown once.
        b.client.refresh().await.expect("reload");
        b.find("div#token-health").await;
        assert!(!b.exists("p#connect-outcome").await);
        // The mailbox, which waited for a fix (no tokens), starts again and signs in with them.
        b.goto(&format!("{base}/admin/t/acme/")).await;
        b.until_for("the OAuth2 mailbox to be connected", Duration::from_secs(60), || async {
            b.client.refresh().await.ok()?;
            let td = b.client.find(fantoccini::Locator::Css("tr[data-mailbox=\"oa\"] td.state")).await.ok()?;
            let state = td.attr("data-state").await.ok()??;
            matches!(state.as_str(), "idling" | "waiting" | "polling").then_some(())
        })
        .await;
    })
    .await;
    b.close().await;
    drop(s.serve);
}

/// The queue page: choosing another SMTP account and "send on behalf" changes the preview of
/// what the customer sees before saving; saving writes the tenant's file; German preview; a
/// second tenant's admin gets 404 on the first tenant's pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_page_preview_save_and_tenant_isolation() {
    let s = start("queue").await;
    let b = Browser::start(&s.dir.0).await;
    let base = s.base.clone();
    let (u99, _) = test_box(99);
    let (u100, _) = test_box(100);
    b.guard("queue", async {
        sign_in(&b, &base, "acme", TOKEN_A).await;
        b.goto(&format!("{base}/admin/t/acme/queues/q")).await;
        // As saved: box 99's own account sends box 99's replies.
        let plan = b.text("div#preview article[data-mailbox=\"in\"]").await;
        assert!(plan.contains(&u99), "{plan}");
        assert!(!b.exists("div#preview dd.sender").await, "no Sender when the account is the mailbox's own");
        assert!(b.find("ul#queue-mailboxes input[value=\"in\"]").await.prop("checked").await.ok().flatten().as_deref() == Some("true"));
        // Another account with "send on behalf": From stays the mailbox, Sender is the agent.
        select(&b, "select#smtp-server", "agent").await;
        select(&b, "select#send-permission", "send-on-behalf").await;
        let sender = b.text_contains("div#preview dd.sender", &u100).await;
        assert!(sender.contains(&u100));
        b.text_contains("div#preview dd.from", &u99).await;
        let sees = b.text("div#preview p.customer-sees").await;
        assert!(sees.contains(&u100) || sees.contains("behalf"), "what the customer sees: {sees}");
        shot(&b, "queue-preview").await;
        // Nothing is saved yet.
        let file = s.dir.0.join("tenants/acme.toml");
        assert!(!std::fs::read_to_string(&file).unwrap().contains("send-on-behalf"));
        // Aliases with a bad one: named, nothing saved.
        b.find("textarea#aliases").await.send_keys("not-an-address").await.expect("type");
        b.find("button#save-queue").await.click().await.expect("save");
        b.text_contains("div#form-errors", "not-an-address").await;
        assert!(!std::fs::read_to_string(&file).unwrap().contains("send-on-behalf"));
        // The form keeps what was typed.
        assert_eq!(b.value("select#smtp-server").await, "agent");
        assert_eq!(b.value("select#send-permission").await, "send-on-behalf");
        assert_eq!(b.value("textarea#aliases").await, "not-an-address");
        // Saved.
        b.find("textarea#aliases").await.clear().await.expect("clear");
        b.find("button#save-queue").await.click().await.expect("save");
        b.find("p#form-saved").await;
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("send_permission = \"send-on-behalf\"") && text.contains("# acme (admin_browser)"), "{text}");
        // The service reloads it: the page then shows the saved settings.
        b.until_for("the saved queue to be loaded", Duration::from_secs(30), || async {
            b.client.refresh().await.ok()?;
            let t = b.client.find(fantoccini::Locator::Css("div#preview dd.sender")).await.ok()?.text().await.ok()?;
            t.contains(&u100).then_some(())
        })
        .await;
        // German.
        b.find("a#lang-de").await.click().await.expect("Deutsch");
        b.text_contains("h2#preview-title", "Was der Kunde sieht").await;
        b.text_contains("div#preview", "Der Kunde sieht").await;
        b.find("a#lang-en").await.click().await.expect("English");

        // bravo's admin: acme's pages are 404 (as if they did not exist).
        sign_in(&b, &base, "bravo", TOKEN_B).await;
        for path in ["/admin/t/acme/", "/admin/t/acme/queues/q", "/admin/t/acme/mailboxes/in", "/admin/t/acme/mailboxes/oa"] {
            b.goto(&format!("{base}{path}")).await;
            b.text_contains("main", "Not found").await;
            assert!(!b.exists("table#mailboxes").await && !b.exists("div#preview").await && !b.exists("button#test-connection").await, "{path}");
            assert!(!b.client.source().await.unwrap().contains(&u100), "{path}: nothing of acme");
        }
    })
    .await;
    b.close().await;
    drop(s.serve);
}

/// Keyboard only: from the top of the new-server form, Tab reaches every field in order, the
/// values are typed, and Enter on the save button saves the mailbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_only_tab_through_the_form_and_submit() {
    let s = start("keyboard").await;
    let b = Browser::start(&s.dir.0).await;
    let base = s.base.clone();
    let (u99, p99) = test_box(99);
    let port = rig().port("RIG_IMAPS_PORT").to_string();
    b.guard("keyboard", async {
        sign_in(&b, &base, "acme", TOKEN_A).await;
        b.goto(&format!("{base}/admin/t/acme/mailboxes/new")).await;
        b.find("form#server-form").await;
        let values: Vec<(&str, String)> = vec![
            ("name", "kb".into()),
            ("address", u99.clone()),
            ("host", "localhost".into()),
            ("port", port.clone()),
            ("username", u99.clone()),
            ("password", p99.clone()),
        ];
        let mut visited: Vec<String> = Vec::new();
        let body = b.find("body").await;
        body.send_keys(&Key::Tab.to_string()).await.expect("Tab");
        for _ in 0..60 {
            let active = b.client.active_element().await.expect("focus");
            let id = active.attr("id").await.ok().flatten().unwrap_or_default();
            if !id.is_empty() && visited.last() != Some(&id) {
                visited.push(id.clone());
            }
            if id == "save" {
                active.send_keys(&Key::Enter.to_string()).await.expect("Enter");
                break;
            }
            if let Some((_, v)) = values.iter().find(|(k, _)| *k == id) {
                // Select what the field holds (the new form's port is 993), type over it.
                active.send_keys(&format!("{}a{}", Key::Control, Key::Control)).await.expect("select all");
                active.send_keys(v).await.expect("type");
            }
            active.send_keys(&Key::Tab.to_string()).await.expect("Tab");
        }
        let order: Vec<&str> = ["preset", "name", "protocol", "address", "host", "port", "tls", "auth", "username", "password", "save"].to_vec();
        let mut at = 0;
        for id in &visited {
            if at < order.len() && id == order[at] {
                at += 1;
            }
        }
        assert_eq!(at, order.len(), "Tab reached {:?} in order; visited {visited:?}", order);
        b.find("p#saved").await;
        let text = std::fs::read_to_string(s.dir.0.join("tenants/acme.toml")).unwrap();
        assert!(text.contains("name = \"kb\"") && text.contains(&format!("port = {port}")), "{text}");
        assert!(!text.contains(&p99), "the password is in its own file, not the tenant file");
    })
    .await;
    b.close().await;
    drop(s.serve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_reads_a_page_that_serve_answers() {
    let s = start("rig").await;
    let b = Browser::start(&s.dir.0).await;
    b.guard("healthz", async {
        b.goto(&format!("{}/healthz", s.base)).await;
        let body = b.text_contains("body", "status").await;
        let v: serde_json::Value = serde_json::from_str(body.trim()).expect("the page is the API's JSON");
        assert_eq!(v["status"], "ok");
    })
    .await;
    b.close().await;
    drop(s.serve);
}

/// The HTTP side of Test connection and Connect account, as a script or another site would
/// try them: a check starts only with the session's CSRF header; its stream belongs to the
/// session, tenant and mailbox that started it and is used once; Connect account needs the
/// form's CSRF field; the provider's answer is accepted only in the session that began the
/// login (its state), once.
#[test]
fn check_and_connect_are_bound_to_the_session() {
    let s = start_blocking("bound");
    let addr = s.serve.addr.clone();
    let mut a = HttpClient::new(&addr);
    assert_eq!(a.sign_in("acme", TOKEN_A).status, 303);
    let page = a.get("/admin/t/acme/mailboxes/in");
    assert_eq!(page.status, 200);
    let csrf = HttpClient::field(&page.body, "csrf").expect("csrf");
    let mut other = HttpClient::new(&addr);
    assert_eq!(other.sign_in("acme", TOKEN_A).status, 303);
    let mut bravo = HttpClient::new(&addr);
    assert_eq!(bravo.sign_in("bravo", TOKEN_B).status, 303);

    // Starting a check: the CSRF header, the session's tenant, a mailbox that exists.
    assert_eq!(a.post_json("/admin/t/acme/mailboxes/in/check", None, "").status, 403, "no X-CSRF-Token");
    assert_eq!(a.post_json("/admin/t/acme/mailboxes/in/check", Some(&"0".repeat(64)), "").status, 403, "a wrong one");
    assert_eq!(a.post_json("/admin/t/acme/mailboxes/nope/check", Some(&csrf), "").status, 404);
    assert_eq!(bravo.post_json("/admin/t/acme/mailboxes/in/check", Some(&csrf), "").status, 404, "another tenant's session");
    assert_eq!(HttpClient::new(&addr).post_json("/admin/t/acme/mailboxes/in/check", Some(&csrf), "").status, 401, "no session");
    let started = a.post_json("/admin/t/acme/mailboxes/in/check", Some(&csrf), "");
    assert_eq!(started.status, 200, "{}", started.body);
    let url = serde_json::from_str::<serde_json::Value>(&started.body).unwrap()["stream"].as_str().unwrap().to_string();
    assert!(url.starts_with("/admin/t/acme/mailboxes/in/check/stream?run="), "{url}");
    // Another session, or the run on another mailbox: 404, and the run is still there for its own.
    assert_eq!(other.get(&url).status, 404);
    assert_eq!(a.get(&url.replace("/mailboxes/in/", "/mailboxes/wrongtls/")).status, 404);
    let stream = a.get(&url);
    assert_eq!(stream.status, 200);
    assert!(stream.header("content-type").unwrap_or("").starts_with("text/event-stream"));
    assert!(stream.body.contains("event: step") && stream.body.contains("\"status\":\"running\"") && stream.body.contains("\"status\":\"ok\""), "{}", stream.body);
    assert!(stream.body.contains("event: done") && stream.body.contains("\"passed\":true"), "{}", stream.body);
    assert!(!stream.body.contains(&test_box(99).1), "no password in the stream");
    assert_eq!(a.get(&url).status, 404, "a run streams once");

    // Connect account: the form's CSRF field, then a page that moves on to the provider.
    let oa = a.get("/admin/t/acme/mailboxes/oa");
    assert!(oa.body.contains("id=\"connect-account\"") && oa.body.contains("data-state=\"missing\""));
    assert_eq!(a.post_form("/admin/t/acme/mailboxes/oa/connect", &[]).status, 403, "no CSRF field");
    let go = a.post_form("/admin/t/acme/mailboxes/oa/connect", &[("csrf", &csrf)]);
    assert_eq!(go.status, 200, "{}", go.body);
    let provider = go.body.split("id=\"oauth-continue\"").next().and_then(|h| h.rsplit("href=\"").next()).expect("the provider link");
    let provider = unescape(provider.split('"').next().unwrap());
    let r = rig();
    assert!(provider.starts_with(r.get("RIG_OAUTH_AUTHORIZE_URL")), "{provider}");
    let port = s.serve.addr.rsplit(':').next().unwrap().to_string();
    let own = format!("redirect_uri=http%3A%2F%2F127.0.0.1%3A{port}%2Fadmin%2Ft%2Facme%2Foauth%2Fcallback");
    assert!(provider.contains(&own), "the admin page's own callback: {provider}");
    assert!(provider.contains("code_challenge_method=S256") && provider.contains("state="), "PKCE and state: {provider}");
    // The rig's server consents at once: its redirect carries the code and state.
    let oauth_addr = r.get("RIG_OAUTH_AUTHORIZE_URL").trim_start_matches("http://").split('/').next().unwrap().to_string();
    let consent = http(&oauth_addr, "GET", &provider[provider.find("/authorize").unwrap()..], &[], "");
    let back = consent.header("location").unwrap_or_else(|| panic!("the provider's redirect: {consent:?} for {provider}")).to_string();
    let back_path = &back[back.find("/admin/").expect("to the admin page")..];
    // Another session with that answer: not its login. Without a session: the hop page only.
    assert_eq!(other.get(back_path).status, 404);
    let anon = HttpClient::new(&addr).get(back_path);
    assert_eq!(anon.status, 200);
    assert!(anon.body.contains("hop=1") && !anon.body.contains("token-health"), "{}", anon.body);
    assert_eq!(HttpClient::new(&addr).get(&format!("{back_path}&hop=1")).status, 404, "no session after the hop: refused");
    // Its own session: stored, back to the mailbox page; a second time it is gone.
    let done = a.get(back_path);
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.header("location"), Some("/admin/t/acme/mailboxes/oa#token-health"));
    let oa = a.get("/admin/t/acme/mailboxes/oa");
    assert!(oa.body.contains("data-state=\"valid\"") && oa.body.contains("id=\"connect-outcome\""), "{}", oa.body);
    assert_eq!(a.get(back_path).status, 404, "the answer is used once");
}

/// An HTML attribute's text: the character references askama writes, decoded.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out += &rest[..i];
        let Some(end) = rest[i..].find(';') else { break };
        let ent = &rest[i + 1..i + end];
        let c = match ent {
            "amp" => Some('&'),
            "quot" => Some('"'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            _ => ent.strip_prefix('#').and_then(|n| n.parse::<u32>().ok()).and_then(char::from_u32),
        };
        match c {
            Some(c) => out.push(c),
            None => out += &rest[i..i + end + 1],
        }
        rest = &rest[i + end + 1..];
    }
    out + rest
}
