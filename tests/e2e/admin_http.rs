//! The admin page of `mailplug serve` over plain HTTP, as a browser without JavaScript uses it:
//! the real binary (MAILPLUG_BIN) with two tenants against the rig. Sign-in, sessions, cookie
//! flags, CSRF, tenant isolation, the security headers on every page, escaping, the mail-server
//! form writing the tenant's file and the service picking it up. Rig boxes 97 and 98.

use mailplug_tests::serve::admin::*;
use mailplug_tests::serve::*;
use mailplug_tests::{rig, test_box};

/// Sign-in with the token or the password, wrong secrets refused and rate limited per tenant,
/// the session cookie's flags, sign-out, CSRF on sign-out, and tenant isolation: A's session
/// gets 404 on every page of B (existing or not), and B's sign-in refuses A's token.
#[test]
fn admin_sign_in_sessions_csrf_and_tenant_isolation() {
    let s = start("signin");
    let addr = s.serve.addr.clone();

    // Without a session every page sends to the sign-in page, for any tenant name alike.
    let mut anon = Browser::new(&addr);
    for t in ["acme", "nonexistent"] {
        let a = anon.get(&format!("/admin/t/{t}/"));
        assert_eq!(a.status, 303, "{t}: {a:?}");
        assert_eq!(a.header("location"), Some(format!("/admin/t/{t}/login").as_str()));
    }

    // A wrong token: 401, no session cookie.
    let mut b = Browser::new(&addr);
    let wrong = b.sign_in("acme", "acme-api-token-0123456789abcdeX");
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(wrong.body.contains("id=\"token\"") && wrong.body.contains("wrong"), "the form again with the reason");
    assert!(!b.cookies.contains_key("mailplug_admin"));
    // B's token does not open A's page, nor does the service's admin token.
    assert_eq!(b.sign_in("acme", TOKEN_B).status, 401, "another tenant's token");
    assert_eq!(b.sign_in("acme", ADMIN).status, 401, "the service's admin token");

    // The right token: a session cookie with every flag, then the overview.
    let ok = b.sign_in("acme", TOKEN_A);
    assert_eq!(ok.status, 303, "{ok:?}");
    assert_eq!(ok.header("location"), Some("/admin/t/acme/"));
    let cookie = ok.all("set-cookie").into_iter().find(|c| c.starts_with("mailplug_admin=")).expect("the session cookie").to_string();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    let id = cookie.split(';').next().unwrap().trim_start_matches("mailplug_admin=");
    assert_eq!(id.len(), 64, "a 256-bit id in hex");
    let overview = b.get("/admin/t/acme/");
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert!(overview.body.contains("id=\"mailboxes\"") && overview.body.contains("data-mailbox=\"in\""));

    // A's session on B's pages, and on a tenant that does not exist: the same 404.
    for path in ["/admin/t/bravo/", "/admin/t/bravo/mailboxes/in", "/admin/t/bravo/mailboxes/new", "/admin/t/nonexistent/"] {
        let a = b.get(path);
        assert_eq!(a.status, 404, "{path}: {}", a.body);
        assert!(!a.body.contains("bravo"), "{path}: the 404 names no tenant");
    }
    let a_csrf = csrf_of(&b.get("/admin/t/acme/"));
    let post = b.post_form("/admin/t/bravo/logout", &[("csrf", &a_csrf)]);
    assert_eq!(post.status, 404, "a POST to B with A's session and token");
    let nb = b.get("/admin/t/nonexistent/");
    assert_eq!(nb.body.replace("nonexistent", "bravo"), b.get("/admin/t/bravo/").body, "B's 404 tells nothing beyond a missing tenant's");

    // The admin page password signs in too, in a second browser.
    let mut pw = Browser::new(&addr);
    assert_eq!(pw.sign_in("acme", PASSWORD_A).status, 303);
    assert_eq!(pw.get("/admin/t/acme/").status, 200);
    // The password is acme's only: bravo's sign-in refuses it and acme's token.
    let mut other = Browser::new(&addr);
    assert_eq!(other.sign_in("bravo", PASSWORD_A).status, 401);
    assert_eq!(other.sign_in("bravo", TOKEN_A).status, 401, "B's sign-in refuses A's token");

    // Sign-out needs the CSRF token: without it or with a wrong one 403, and the session lives on.
    let out = b.post_form("/admin/t/acme/logout", &[]);
    assert_eq!(out.status, 403, "{}", out.body);
    let out = b.post_form("/admin/t/acme/logout", &[("csrf", &"0".repeat(64))]);
    assert_eq!(out.status, 403);
    assert_eq!(b.get("/admin/t/acme/").status, 200, "still signed in");
    let out = b.post_form("/admin/t/acme/logout", &[("csrf", &a_csrf)]);
    assert_eq!(out.status, 303);
    assert!(out.all("set-cookie").iter().any(|c| c.starts_with("mailplug_admin=;") && c.contains("Max-Age=0")));
    // The old id no longer works even when a client keeps sending it.
    let mut replay = Browser::new(&addr);
    replay.cookies.insert("mailplug_admin".into(), id.to_string());
    assert_eq!(replay.get("/admin/t/acme/").status, 303, "the signed-out session is gone on the server");

    // The sign-in form's own CSRF token: a POST without the matching cookie is refused.
    let mut forged = Browser::new(&addr);
    let a = forged.post_form("/admin/t/acme/login", &[("token", TOKEN_A), ("csrf", &"1".repeat(64))]);
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(!forged.cookies.contains_key("mailplug_admin"));

    // Failed sign-ins are limited per tenant: after 5 in a minute even the right token waits
    // (bravo had 2 failures above, so 3 more are tried and then it pauses).
    let mut brute = Browser::new(&addr);
    let mut statuses = Vec::new();
    for i in 0..5 {
        statuses.push(brute.sign_in("bravo", &format!("bravo-guess-{i:020}")).status);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429], "{statuses:?}");
    assert_eq!(brute.sign_in("bravo", TOKEN_B).status, 429, "paused for bravo");
    assert_eq!(Browser::new(&addr).sign_in("acme", TOKEN_A).status, 303, "acme is not paused");
}

/// Every admin answer (pages, the sign-in page, a 404, the static files) carries the CSP and
/// the other protective headers; no page has an inline script or style, nor a script or style
/// sheet in its body (the queue and mailbox pages' own ones are in the head); a mailbox name with
/// markup is shown escaped; the static files are cached under a content-hashed name; the
/// language switches with ?lang= and stays by cookie.
#[test]
fn admin_pages_send_csp_and_escape_everything() {
    let s = start("csp");
    let mut b = Browser::new(&s.serve.addr);
    let mut answers = vec![("login", b.get("/admin/t/acme/login"))];
    assert_eq!(b.sign_in("acme", TOKEN_A).status, 303);
    answers.push(("overview", b.get("/admin/t/acme/")));
    answers.push(("404", b.get("/admin/t/acme/no/such/page")));
    answers.push(("other tenant", b.get("/admin/t/bravo/")));
    answers.push(("outside", b.get("/admin/nothing")));
    answers.push(("queue", b.get("/admin/t/acme/queues/q")));
    answers.push(("mailbox", b.get("/admin/t/acme/mailboxes/in")));
    for (what, a) in &answers[5..] {
        assert_eq!(a.status, 200, "{what}");
        assert!(a.body.contains("/admin/static/live."), "{what}: the live preview's script and style sheet");
    }
    let overview = answers[1].1.clone();
    let js = overview.body.split("src=\"").nth(1).and_then(|r| r.split('"').next()).expect("the script's URL").to_string();
    let css = overview.body.split("rel=\"stylesheet\" href=\"").nth(1).and_then(|r| r.split('"').next()).expect("the style sheet's URL").to_string();
    assert!(js.starts_with("/admin/static/admin.") && js.ends_with(".js"), "{js}");
    answers.push(("js", b.get(&js)));
    answers.push(("css", b.get(&css)));
    for (what, a) in &answers {
        assert_eq!(
            a.header("content-security-policy"),
            Some("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
            "{what}"
        );
        assert_eq!(a.header("x-content-type-options"), Some("nosniff"), "{what}");
        assert_eq!(a.header("referrer-policy"), Some("no-referrer"), "{what}");
        assert_eq!(a.header("x-frame-options"), Some("DENY"), "{what}");
        if a.header("content-type").is_some_and(|c| c.starts_with("text/html")) {
            assert_no_inline(what, &a.body);
        }
    }
    let (js_a, css_a) = (&answers[7].1, &answers[8].1);
    assert_eq!(js_a.status, 200);
    assert!(js_a.header("cache-control").unwrap().contains("max-age=31536000"), "{js_a:?}");
    assert!(css_a.header("content-type").unwrap().starts_with("text/css"));
    assert_eq!(b.get("/admin/static/admin.000000000000.js").status, 404, "an old name is gone");
    assert_eq!(overview.header("cache-control"), Some("no-store"));

    // The evil mailbox name: escaped in the text and in attributes, never markup.
    assert!(!overview.body.contains("<script>alert"), "unescaped name in the overview");
    // askama writes `<` as `&#60;` and `>` as `&#62;` (named entities would do as well).
    let escaped = |s: &str| s.replace("&lt;", "&#60;").replace("&gt;", "&#62;");
    let body = escaped(&overview.body);
    assert!(body.contains("x&#60;script&#62;alert(1)&#60;/script&#62;"), "the name is shown escaped");
    assert!(body.contains("data-mailbox=\"x&#60;script&#62;"), "escaped in the attribute too");

    // Languages: Accept-Language, then ?lang= which sets the cookie, and <html lang>.
    assert!(overview.body.contains("<html lang=\"en\">") && overview.body.contains("id=\"lang-de\""));
    let mut de = Browser::new(&s.serve.addr);
    de.lang = Some("de-DE,de;q=0.9");
    assert!(de.get("/admin/t/acme/login").body.contains("<html lang=\"de\">"), "German from Accept-Language");
    let en = b.get("/admin/t/acme/?lang=de");
    assert!(en.body.contains("<html lang=\"de\">") && en.body.contains("Postfächer"), "German by ?lang=de");
    assert!(en.all("set-cookie").iter().any(|c| c.starts_with("mailplug_lang=de")));
    assert!(b.get("/admin/t/acme/").body.contains("<html lang=\"de\">"), "the cookie keeps German");
}


/// The mail-server form without JavaScript plus the JSON its script uses: presets with the
/// errata, findings as `presets --config` gives them, discovery; CSRF refusals write nothing;
/// errors keep what was typed (but never the password); a saved server lands in the tenant
/// file (comments kept, the password in a 0600 file of its own) and the running service picks
/// it up without a restart; no answer ever contains a password.
#[test]
fn admin_form_saves_the_server_and_the_service_picks_it_up() {
    let r = rig();
    let s = start("form");
    let file = s.dir.join("tenants/acme.toml");
    let (user, box_pw) = test_box(97);
    let mut bodies: Vec<String> = Vec::new();
    let mut b = Browser::new(&s.serve.addr);
    assert_eq!(b.sign_in("acme", TOKEN_A).status, 303);

    let page = b.get("/admin/t/acme/mailboxes/new");
    assert_eq!(page.status, 200, "{}", page.body);
    for id in ["id=\"server-form\"", "id=\"preset\"", "id=\"discover-email\"", "id=\"discover\"", "id=\"protocol\"", "id=\"host\"", "id=\"port\"",
        "id=\"tls\"", "id=\"auth\"", "id=\"username\"", "id=\"password-row\"", "id=\"password\"", "id=\"findings\"", "id=\"save\"", "name=\"csrf\""] {
        assert!(page.body.contains(id), "{id} on the form");
    }
    assert!(page.body.contains("encrypted from the first byte") && page.body.contains("STARTTLS before the login"), "the TLS switch says what it means");
    for field in ["preset", "discover-email", "protocol", "host", "port", "tls", "auth", "username", "password"] {
        assert!(page.body.contains(&format!("<label for=\"{field}\">")), "a label for {field}");
    }
    assert!(page.body.contains("value=\"gmail\""), "the catalogue in the preset picker");
    let csrf = csrf_of(&page);
    bodies.push(page.body.clone());

    // The presets, with the errata applied.
    let presets = b.get("/admin/t/acme/api/presets");
    assert_eq!(presets.status, 200);
    let v: serde_json::Value = serde_json::from_str(&presets.body).unwrap();
    let by_id = |id: &str| v["presets"].as_array().unwrap().iter().find(|p| p["id"] == id).cloned().unwrap_or_else(|| panic!("preset {id}: {v}"));
    let gmail = by_id("gmail");
    assert_eq!((gmail["imap"]["host"].as_str(), gmail["imap"]["port"].as_u64(), gmail["imap"]["tls"].as_bool()), (Some("imap.gmail.com"), Some(993), Some(true)));
    let ms = by_id("microsoft365");
    assert_eq!((ms["smtp"]["port"].as_u64(), ms["smtp"]["tls"].as_bool(), ms["auth"].as_str()), (Some(587), Some(false), Some("oauth2")), "587 is STARTTLS; OAuth2");

    // Findings as typed (the same check as `presets --config`), CSRF header required.
    let typed = |proto: &str, host: &str, port: u16, tls: bool, auth: &str, pw: &str| {
        format!(r#"{{"protocol":"{proto}","host":"{host}","port":"{port}","tls":{tls},"auth":"{auth}","username":"someone@example.com","password":"{pw}"}}"#)
    };
    let body = typed("smtp", "smtp.office365.com", 587, true, "oauth2", "");
    assert_eq!(b.post_json("/admin/t/acme/api/findings", None, &body).status, 403, "no X-CSRF-Token");
    assert_eq!(b.post_json("/admin/t/acme/api/findings", Some(&"0".repeat(64)), &body).status, 403, "a wrong one");
    let codes = |b: &mut Browser, body: &str| -> Vec<(String, String)> {
        let a = b.post_json("/admin/t/acme/api/findings", Some(&csrf), body);
        assert_eq!(a.status, 200, "{}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        v["findings"].as_array().unwrap().iter().map(|f| (f["code"].as_str().unwrap().to_string(), f["severity"].as_str().unwrap().to_string())).collect()
    };
    assert!(codes(&mut b, &body).contains(&("tls".into(), "error".into())), "587 with TLS on is refused");
    let as_number = body.replace("\"port\":\"587\"", "\"port\":587");
    assert_ne!(as_number, body);
    assert!(codes(&mut b, &as_number).contains(&("tls".into(), "error".into())), "the port as a number");
    assert!(codes(&mut b, &typed("imap", "outlook.office365.com", 993, true, "basic", "pw-0123456789")).iter().any(|(c, s)| c == "auth" && s == "error"), "Basic where Microsoft retired it");
    assert!(codes(&mut b, &typed("imap", "imap.gmail.com", 993, true, "basic", "an ordinary password")).iter().any(|(c, _)| c == "password"), "the Gmail app password hint");
    assert!(codes(&mut b, &typed("imap", "imap.gmail.com", 993, true, "basic", "abcd efgh ijkl mnop")).is_empty(), "an app password: nothing to say");

    // Discovery from an address in the catalogue.
    let d = b.post_json("/admin/t/acme/api/discover", Some(&csrf), r#"{"email":"someone@gmail.com"}"#);
    let dv: serde_json::Value = serde_json::from_str(&d.body).unwrap();
    assert_eq!(dv["found"], true, "{dv}");
    assert!(dv["candidates"].as_array().unwrap().iter().any(|c| c["protocol"] == "imap" && c["host"] == "imap.gmail.com" && c["port"] == 993));

    // CSRF: a POST without or with a wrong token gets 403 and the file stays as it was.
    let before = std::fs::read(&file).unwrap();
    let new_pw = "a-new-secret-password-1234";
    let fields = |csrf: &str, name: &str, port: u16, pw: &str| -> Vec<(String, String)> {
        vec![
            ("csrf".into(), csrf.into()), ("name".into(), name.into()), ("address".into(), user.clone()), ("protocol".into(), "imap".into()),
            ("host".into(), "localhost".into()), ("port".into(), port.to_string()), ("tls".into(), "on".into()), ("auth".into(), "basic".into()),
            ("username".into(), user.clone()), ("password".into(), pw.into()),
        ]
    };
    let post = |b: &mut Browser, path: &str, f: &[(String, String)]| {
        let refs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        b.post_form(path, &refs)
    };
    let imaps = r.port("RIG_IMAPS_PORT");
    let mut no_csrf = fields("", "added", imaps, &box_pw);
    no_csrf.remove(0);
    for (what, f) in [("missing", no_csrf), ("wrong", fields(&"f".repeat(64), "added", imaps, &box_pw))] {
        let a = post(&mut b, "/admin/t/acme/mailboxes/new", &f);
        assert_eq!(a.status, 403, "{what}: {}", a.body);
        bodies.push(a.body);
    }
    assert_eq!(std::fs::read(&file).unwrap(), before, "nothing written without the CSRF token");

    // A refused save: the errors in div#form-errors, what was typed kept, the password not.
    let bad = post(&mut b, "/admin/t/acme/mailboxes/new", &fields(&csrf, "bad name", 0, new_pw));
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert!(bad.body.contains("id=\"form-errors\"") && bad.body.contains("Enter a port between 1 and 65535"), "{}", bad.body);
    assert!(bad.body.contains("value=\"bad name\"") && bad.body.contains(&format!("value=\"{user}\"")), "the typed values stay");
    bodies.push(bad.body);
    b.lang = Some("de");
    let bad_de = post(&mut b, "/admin/t/acme/mailboxes/new", &fields(&csrf, "added", 0, new_pw));
    assert!(bad_de.body.contains("Geben Sie einen Port zwischen 1 und 65535 ein"), "errors in the admin's language");
    bodies.push(bad_de.body);
    b.lang = None;
    // The component's error finding refuses the save too (TLS on the STARTTLS port 143).
    let starttls = post(&mut b, "/admin/t/acme/mailboxes/new", &fields(&csrf, "added", 143, new_pw));
    assert_eq!(starttls.status, 422);
    assert!(starttls.body.contains("id=\"form-errors\"") && starttls.body.contains("tls:"), "{}", starttls.body);
    bodies.push(starttls.body);
    assert_eq!(std::fs::read(&file).unwrap(), before, "nothing written by refused saves");

    // Saved: the rig box as a new mailbox "added".
    let saved = post(&mut b, "/admin/t/acme/mailboxes/new", &fields(&csrf, "added", imaps, &box_pw));
    assert_eq!(saved.status, 303, "{}", saved.body);
    assert_eq!(saved.header("location"), Some("/admin/t/acme/mailboxes/added?saved=1"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("# acme's tenant file (a comment the admin page keeps)"), "the comment survives: {text}");
    assert!(text.contains("name = \"added\"") && text.contains("password_file = \"acme.secrets/mailbox-added-"), "{text}");
    assert!(!text.contains(&box_pw), "the password is not in the tenant file");
    let secret_rel = text.split("password_file = \"acme.secrets/").nth(1).unwrap().split('"').next().unwrap();
    let secret = s.dir.join("tenants/acme.secrets").join(secret_rel);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), box_pw);
    let shown = b.get("/admin/t/acme/mailboxes/added?saved=1");
    assert_eq!(shown.status, 200);
    assert!(shown.body.contains("id=\"saved\"") && shown.body.contains("value=\"localhost\""));
    assert!(shown.body.contains("Leave empty to keep the stored password"));
    bodies.push(shown.body);

    // The running service picks it up (the tenants folder's rescan) and fetches with it.
    let state = wait_for("the new mailbox runs and has fetched once", 60, || {
        let (st, v) = s.serve.get("/v1/tenants/acme", Some(ADMIN));
        (st == 200 && v["mailboxes"]["added"]["last_success_ms"].is_number()).then_some(v)
    });
    assert!(state["mailboxes"]["added"]["last_error"].is_null(), "{state}");
    let overview = b.get("/admin/t/acme/");
    assert!(overview.body.contains("data-mailbox=\"added\""));
    bodies.push(overview.body);

    // An edit with an empty password keeps the stored one; the form shows no password.
    let mut keep = fields(&csrf, "added", imaps, "");
    keep.retain(|(k, _)| k != "name");
    let edited = post(&mut b, "/admin/t/acme/mailboxes/added", &keep);
    assert_eq!(edited.status, 303, "{}", edited.body);
    let text2 = std::fs::read_to_string(&file).unwrap();
    assert!(text2.contains(secret_rel) && secret.exists(), "the same password file");
    // A new password replaces the file.
    let mut change = fields(&csrf, "added", imaps, new_pw);
    change.retain(|(k, _)| k != "name");
    assert_eq!(post(&mut b, "/admin/t/acme/mailboxes/added", &change).status, 303);
    let text3 = std::fs::read_to_string(&file).unwrap();
    assert!(!text3.contains(secret_rel) && !secret.exists(), "the old password file is gone");
    for path in ["/admin/t/acme/mailboxes/added", "/admin/t/acme/mailboxes/in", "/admin/t/acme/mailboxes/q?smtp=1", "/admin/t/acme/"] {
        let a = b.get(path);
        assert_eq!(a.status, 200, "{path}");
        bodies.push(a.body);
    }
    for body in &bodies {
        for pw in [box_pw.as_str(), new_pw, TOKEN_A, PASSWORD_A] {
            assert!(!body.contains(pw), "a secret in an answer: {body}");
        }
    }
    let log = std::fs::read_to_string(s.dir.join("serve.log")).unwrap();
    assert!(log.contains("the admin page saved a mail server"), "the log is the service's: {log}");
    for pw in [box_pw.as_str(), new_pw, TOKEN_A, PASSWORD_A] {
        assert!(!log.contains(pw), "a secret in the log");
    }
}


/// The overview without JavaScript: a working mailbox is shown connected or idle with its next
/// poll, one whose server is unreachable backing off with its next try, one whose password the
/// server refuses is shown in error with the component's
/// explanation and action in the admin's language (English, German) and "after the settings are
/// changed" as its next attempt; an invalid change of the tenant's file is shown with its error
/// while the previous version keeps running.
#[test]
fn admin_overview_shows_states_and_errors_in_the_admins_language() {
    let dir = workdir("admin-overview");
    let wrong = dir.join("secrets/wrong.pw");
    private(&wrong, "not-the-password-of-box-98");
    let (user98, _) = test_box(98);
    let broken = format!(
        "[[mailbox]]\nname = \"broken\"\naddress = \"{user98}\"\nprotocol = \"imap\"\npoll_interval_secs = 30\nhost = \"localhost\"\nport = {}\n\
         tls = true\nusername = \"{user98}\"\npassword_file = \"{}\"\n[[queue]]",
        rig().port("RIG_IMAPS_PORT"),
        wrong.display()
    );
    // A port nobody listens on: connection refused, a network error to retry later.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = format!(
        "[[mailbox]]\nname = \"down\"\naddress = \"{user98}\"\nprotocol = \"imap\"\nhost = \"127.0.0.1\"\nport = {closed}\ntls = true\n\
         username = \"{user98}\"\npassword_file = \"{}\"\n[[queue]]",
        wrong.display()
    );
    let text = tenant_toml(&dir, "acme", 97, TOKEN_A, None).replacen("[[queue]]", &broken, 1).replacen("[[queue]]", &down, 1);
    write_tenant(&dir, "acme.toml", &text);
    let serve = Serve::start(&dir, "serve.log");
    let s = Setup { dir, serve };
    let api = wait_for("both mailboxes ran once", 60, || {
        let (st, v) = s.serve.get("/v1/tenants/acme", Some(ADMIN));
        (st == 200 && v["mailboxes"]["in"]["last_success_ms"].is_number() && v["mailboxes"]["broken"]["state"] == "waiting-for-fix").then_some(v)
    });
    let err = &api["mailboxes"]["broken"]["last_error"];
    let (en, de) = (err["explanation_en"].as_str().expect("an English explanation"), err["explanation_de"].as_str().expect("a German one"));

    let mut b = Browser::new(&s.serve.addr);
    assert_eq!(b.sign_in("acme", TOKEN_A).status, 303);
    let page = b.get("/admin/t/acme/");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("id=\"refresh\" href=\"/admin/t/acme/\""), "a plain refresh link");
    let ok = unescape(row(&page.body, "in"));
    assert!(ok.contains("class=\"state\" data-state=\"waiting\">idle (waiting for the next poll)") || ok.contains("data-state=\"idling\">connected"), "{ok}");
    assert!(ok.contains("<td class=\"last-error\">-</td>"), "no error: {ok}");
    assert!(ok.contains("<td class=\"next\">20") || ok.contains("<td class=\"next\">as soon as new mail arrives</td>"), "the next poll's time: {ok}");
    let bad = unescape(row(&page.body, "broken"));
    assert!(bad.contains("data-state=\"waiting-for-fix\">error: waiting for a fix of the settings"), "{bad}");
    assert!(bad.contains(&format!("<span class=\"explanation\">{en}</span>")), "the explanation in English: {bad}");
    assert!(bad.contains(err["error"].as_str().unwrap()), "the error itself: {bad}");
    assert!(bad.contains("<td class=\"next\">after the settings are changed</td>"), "{bad}");

    // The unreachable server backs off (1 s, then 2 s in this harness), with the next try's time.
    let down = wait_for("the unreachable mailbox is shown backing off", 60, || {
        let p = b.get("/admin/t/acme/");
        let r = unescape(row(&p.body, "down"));
        r.contains("data-state=\"backing-off\"").then_some(r)
    });
    assert!(down.contains("backing off after an error (attempt "), "{down}");
    assert!(down.contains("<span class=\"explanation\">") && down.contains("<td class=\"next\">"), "{down}");
    assert!(down.contains(" UTC</td>") || down.contains("<td class=\"next\">now</td>"), "the next try: {down}");

    let page = b.get("/admin/t/acme/?lang=de");
    let bad = unescape(row(&page.body, "broken"));
    assert!(bad.contains("Fehler: wartet auf eine Korrektur der Einstellungen"), "{bad}");
    assert!(bad.contains(&format!("<span class=\"explanation\">{de}</span>")), "the explanation in German: {bad}");
    assert!(bad.contains("nach einer Änderung der Einstellungen"), "{bad}");
    assert_ne!(en, de);

    // An invalid change of the file: shown with its error; the previous version keeps running.
    write_tenant(&s.dir, "acme.toml", &text.replacen("poll_interval_secs = 30", "poll_interval_secs = \"often\"", 1));
    let page = wait_for("the invalid change is shown", 60, || {
        let p = b.get("/admin/t/acme/?lang=en");
        p.body.contains("id=\"config-error\"").then_some(p)
    });
    assert!(page.body.contains("the previous version keeps running"), "{}", page.body);
    assert!(page.body.contains("data-mailbox=\"in\"") && page.body.contains("data-mailbox=\"broken\""), "the running version's mailboxes");
    assert!(!page.body.contains(TOKEN_A) && !page.body.contains(&test_box(97).1));
}

/// A rotated API token ends the tenant's sessions opened with the old secrets (the next page
/// asks to sign in again, the old token no longer signs in, the new one does); another tenant's
/// sessions go on until its file is removed.
#[test]
fn admin_sessions_end_when_the_tenants_secrets_change() {
    let s = start("rotate");
    let mut a = Browser::new(&s.serve.addr);
    assert_eq!(a.sign_in("acme", TOKEN_A).status, 303);
    let mut b = Browser::new(&s.serve.addr);
    assert_eq!(b.sign_in("bravo", TOKEN_B).status, 303);
    assert_eq!(a.get("/admin/t/acme/").status, 200);

    let rotated = "acme-rotated-token-0123456789abcdef";
    private(&s.dir.join("secrets/acme.token"), rotated);
    wait_for("the service uses the rotated token", 60, || (s.serve.get("/v1/tenants/acme", Some(rotated)).0 == 200).then_some(()));
    let page = a.get("/admin/t/acme/");
    assert_eq!(page.status, 303, "the old session ends: {}", page.body);
    assert_eq!(page.header("location"), Some("/admin/t/acme/login"));
    assert_eq!(a.sign_in("acme", TOKEN_A).status, 401, "the old token");
    assert_eq!(a.sign_in("acme", rotated).status, 303, "the new token");
    assert_eq!(a.get("/admin/t/acme/").status, 200);
    assert_eq!(b.get("/admin/t/bravo/").status, 200, "bravo's session goes on");

    // A removed tenant file ends its sessions too.
    std::fs::remove_file(s.dir.join("tenants/bravo.toml")).unwrap();
    wait_for("bravo is gone", 60, || (s.serve.get("/v1/tenants/bravo", Some(ADMIN)).0 == 404).then_some(()));
    let gone = b.get("/admin/t/bravo/");
    assert_eq!((gone.status, gone.header("location")), (303, Some("/admin/t/bravo/login")));
    assert_eq!(b.sign_in("bravo", TOKEN_B).status, 401);
}

/// OAuth2 on the mail-server form without JavaScript: the tenant's OAuth client is offered, a
/// server with OAuth2 saves without a password (the password row hidden on its page), and a
/// mailbox switched from a password to OAuth2 loses its `password_file` key while the file it
/// named, which the admin page did not write, stays.
#[test]
fn admin_form_saves_an_oauth2_server_without_a_password() {
    let r = rig();
    let dir = workdir("admin-oauth");
    private(&dir.join("secrets/rig.client"), "client-secret-not-used-here");
    let client = format!(
        "[oauth.rig]\nprovider = \"custom\"\nauthorization_endpoint = \"{}\"\ntoken_endpoint = \"{}\"\nscopes = [\"openid\", \"email\", \"offline_access\"]\n\
         client_id = \"{}\"\nclient_secret_file = \"{}\"\nredirect_uri = \"http://127.0.0.1:9/callback\"\n[limits]",
        r.get("RIG_OAUTH_AUTHORIZE_URL"),
        r.get("RIG_OAUTH_TOKEN_URL"),
        r.get("RIG_OAUTH_CLIENT_ID"),
        dir.join("secrets/rig.client").display()
    );
    write_tenant(&dir, "acme.toml", &tenant_toml(&dir, "acme", 97, TOKEN_A, None).replacen("[limits]", &client, 1));
    let serve = Serve::start(&dir, "serve.log");
    let s = Setup { dir, serve };
    loaded(&s, &["acme"]);
    let file = s.dir.join("tenants/acme.toml");
    let (user, _) = test_box(97);
    let mut b = Browser::new(&s.serve.addr);
    assert_eq!(b.sign_in("acme", TOKEN_A).status, 303);
    let page = b.get("/admin/t/acme/mailboxes/new");
    assert!(page.body.contains("<select id=\"oauth\" name=\"oauth\">") && page.body.contains("<option value=\"rig\""), "the tenant's client is offered");
    let csrf = csrf_of(&page);

    let imaps = r.port("RIG_IMAPS_PORT").to_string();
    let mut fields = vec![
        ("csrf", csrf.as_str()), ("name", "viaoauth"), ("address", user.as_str()), ("protocol", "imap"), ("host", "localhost"),
        ("port", imaps.as_str()), ("tls", "on"), ("auth", "oauth2"), ("oauth", "rig"), ("username", user.as_str()), ("password", ""),
    ];
    let saved = b.post_form("/admin/t/acme/mailboxes/new", &fields);
    assert_eq!(saved.status, 303, "no password needed with OAuth2: {}", saved.body);
    let text = std::fs::read_to_string(&file).unwrap();
    let entry = text.split("name = \"viaoauth\"").nth(1).expect("the new entry").split("[[").next().unwrap();
    assert!(entry.contains("auth = \"oauth2\"") && entry.contains("oauth = \"rig\"") && !entry.contains("password"), "{entry}");
    let shown = b.get("/admin/t/acme/mailboxes/viaoauth");
    assert!(shown.body.contains("<option value=\"oauth2\" selected"), "{}", shown.body);
    assert!(shown.body.contains("id=\"password-row\" hidden"), "the password row is hidden for OAuth2");

    // An unknown client is refused, and nothing is written.
    let before = std::fs::read(&file).unwrap();
    fields[1] = ("name", "other");
    fields[8] = ("oauth", "nosuchclient");
    let refused = b.post_form("/admin/t/acme/mailboxes/new", &fields);
    assert_eq!(refused.status, 422);
    assert!(refused.body.contains("id=\"form-errors\""));
    assert_eq!(std::fs::read(&file).unwrap(), before);

    // "in" from its password file to OAuth2: the key goes, the file (not the page's) stays.
    let pw_file = s.dir.join("secrets/box97.pw");
    assert!(text.contains(&pw_file.display().to_string()));
    fields.retain(|(k, _)| *k != "name");
    fields.iter_mut().for_each(|f| if f.0 == "oauth" { f.1 = "rig" });
    let switched = b.post_form("/admin/t/acme/mailboxes/in", &fields);
    assert_eq!(switched.status, 303, "{}", switched.body);
    let text = std::fs::read_to_string(&file).unwrap();
    let entry = text.split("name = \"in\"").nth(1).unwrap().split("[[").next().unwrap();
    assert!(entry.contains("auth = \"oauth2\"") && !entry.contains("password_file"), "{entry}");
    assert!(pw_file.exists() && text.contains(&pw_file.display().to_string()), "the queue still uses the file the admin wrote by hand");
}
