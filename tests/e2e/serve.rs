//! `mailplug serve` as a platform runs it: the real binary (MAILPLUG_BIN) with a tenants folder,
//! a store and an admin token, against the rig's Dovecot, observed only through its HTTP API
//! and its exit status. Every wait polls the API with a bound; no fixed sleeps.
//! Rig boxes 49 to 60.

use std::path::Path;
use std::time::{Duration, Instant};

use mailplug_tests::serve::*;
use mailplug_tests::{rig, sample_message, test_box};
use serde_json::Value;

/// One mailbox of a tenant file: (name, "imap"/"pop3", rig box).
type Mb<'a> = (&'a str, &'a str, u32);

/// A tenant file's text: its mailboxes polled every second, a queue sending as the first one,
/// passwords and the API token in files of their own.
fn tenant_toml(dir: &Path, id: &str, mailboxes: &[Mb<'_>], token: Option<&str>, limits: &str) -> String {
    let r = rig();
    let mut t = format!("tenant = \"{id}\"\nlicensed = true\nextra_ca_file = \"{}\"\n", r.get("RIG_CA"));
    if let Some(tok) = token {
        let p = dir.join(format!("secrets/{id}.token"));
        private(&p, tok);
        t += &format!("api_token_file = \"{}\"\n", p.display());
    }
    t += &format!("[limits]\nreply_timeout_secs = 15\nconnect_timeout_secs = 5\n{limits}\n");
    for (name, protocol, n) in mailboxes {
        let (user, pass) = test_box(*n);
        let pw = dir.join(format!("secrets/box{n}.pw"));
        private(&pw, &pass);
        let port = if *protocol == "imap" { r.port("RIG_IMAPS_PORT") } else { r.port("RIG_POP3S_PORT") };
        t += &format!(
            "[[mailbox]]\nname = \"{name}\"\naddress = \"{user}\"\nprotocol = \"{protocol}\"\nfirst_sync = \"all\"\npoll_interval_secs = 1\n\
             host = \"localhost\"\nport = {port}\ntls = true\nusername = \"{user}\"\npassword_file = \"{}\"\n",
            pw.display()
        );
    }
    if let Some((first, _, n)) = mailboxes.first() {
        let (user, _) = test_box(*n);
        t += &format!(
            "[[queue]]\nname = \"q\"\nmailboxes = [\"{first}\"]\n[queue.smtp]\nhost = \"localhost\"\nport = {}\ntls = true\n\
             username = \"{user}\"\npassword_file = \"{}\"\n",
            r.port("RIG_SMTPS_PORT"),
            dir.join(format!("secrets/box{n}.pw")).display()
        );
    }
    t
}

/// Mail put into an IMAP box and a POP3 box appears through the API; the API's scoping,
/// messages, check and plan-from; metrics count the fetches; SIGTERM exits 0 promptly and a
/// restart fetches nothing twice.
#[test]
fn serve_fetches_imap_and_pop3_mail_scopes_tokens_and_restarts_without_duplicates() {
    let r = rig();
    let dir = workdir("fetch");
    let (imap_user, _) = test_box(49);
    let (pop_user, _) = test_box(50);
    r.reset_mailbox(&imap_user);
    r.reset_mailbox(&pop_user);
    r.reset_mailbox(&test_box(51).0);
    let tok_a = "tenant-a-token-0123456789abcdef";
    let tok_b = "tenant-b-token-0123456789abcdef";
    write_tenant(&dir, "a.toml", &tenant_toml(&dir, "acme", &[("in", "imap", 49), ("pop", "pop3", 50)], Some(tok_a), ""));
    write_tenant(&dir, "b.toml", &tenant_toml(&dir, "bravo", &[("in", "imap", 51)], Some(tok_b), ""));
    let s = Serve::start(&dir, "serve-1.log");

    let tag = std::process::id();
    let (m1, m2) = (format!("serve-imap-{tag}@test"), format!("serve-pop-{tag}@test"));
    r.put(&imap_user, "INBOX", &sample_message(&m1, "by IMAP"));
    r.put(&pop_user, "INBOX", &sample_message(&m2, "by POP3"));
    let started = Instant::now();
    let list = wait_for("both messages through the API", 30, || {
        let l = messages(&s, "acme", tok_a);
        (with_mid(&l, &m1).len() == 1 && with_mid(&l, &m2).len() == 1).then_some(l)
    });
    eprintln!("both messages listed {} ms after they were put", started.elapsed().as_millis());
    let imap_msg = with_mid(&list, &m1)[0].clone();
    assert_eq!(imap_msg["mailbox"], "in");
    assert_eq!(imap_msg["subject"], "by IMAP");
    assert!(imap_msg["from"].as_str().unwrap_or_default().contains("customer@example.test"), "{imap_msg}");
    assert_eq!(with_mid(&list, &m2)[0]["mailbox"], "pop");

    // One message, parsed and raw.
    let id = imap_msg["id"].as_i64().expect("id");
    let (status, detail) = s.get(&format!("/v1/tenants/acme/messages/{id}"), Some(tok_a));
    assert_eq!(status, 200, "{detail}");
    assert!(detail["text_body"].as_str().unwrap_or_default().contains(&format!("Hello, this is {m1}.")), "{detail}");
    let (status, raw) = s.request("GET", &format!("/v1/tenants/acme/messages/{id}/raw"), Some(tok_a), None);
    assert_eq!(status, 200);
    assert_eq!(raw, sample_message(&m1, "by IMAP"), "the raw bytes exactly as put");

    // Scoping: 401 without or with a wrong token, 404 for another tenant's token, as for a
    // tenant that does not exist; the admin sees everything.
    let routes = ["/v1/tenants/acme", "/v1/tenants/acme/messages", &format!("/v1/tenants/acme/messages/{id}"), &format!("/v1/tenants/acme/messages/{id}/raw")];
    for route in routes {
        assert_eq!(s.request("GET", route, None, None).0, 401, "{route} without a token");
        assert_eq!(s.request("GET", route, Some("not-a-token-at-all-000000"), None).0, 401, "{route} wrong token");
        let (status, body) = s.request("GET", route, Some(tok_b), None);
        assert_eq!(status, 404, "{route} with bravo's token: {}", String::from_utf8_lossy(&body));
        assert_eq!(s.request("GET", route, Some(ADMIN), None).0, 200, "{route} as admin");
    }
    assert_eq!(s.get("/v1/tenants/nosuch", Some(tok_b)).0, 404);
    assert_eq!(s.request("POST", "/v1/tenants/acme/check/in", Some(tok_b), None).0, 404);
    assert_eq!(s.get("/v1/tenants", Some(tok_a)).0, 403, "the tenant list is the admin's");
    assert_eq!(s.get("/v1/tenants/bravo", Some(tok_b)).0, 200);
    let (status, err) = s.get("/v1/tenants", None);
    assert_eq!(status, 401);
    assert!(err["error"].is_string() && err["explanation_en"].is_string() && err["explanation_de"].is_string(), "{err}");

    // The state: both mailboxes fetched, no error.
    let state = s.admin("/v1/tenants/acme");
    for mb in ["in", "pop"] {
        assert!(state["mailboxes"][mb]["last_success_ms"].is_i64(), "{state}");
        assert!(state["mailboxes"][mb]["last_error"].is_null(), "{state}");
    }
    assert_eq!(state["queues"][0]["name"], "q");

    // Check and plan-from through the API.
    let (status, body) = s.request("POST", "/v1/tenants/acme/check/in", Some(tok_a), None);
    let check: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{check}");
    assert_eq!(check["passed"], true, "{check}");
    assert!(check["steps"].as_array().is_some_and(|s| s.iter().any(|x| x["step"] == "login")), "{check}");
    let (status, body) = s.request("POST", "/v1/tenants/acme/plan-from", Some(tok_a), Some(r#"{"queue":"q","mailbox":"in"}"#));
    let plan: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(status, 200, "{plan}");
    assert!(plan["from"].as_str().unwrap_or_default().contains(&imap_user), "{plan}");
    let big = format!("{{\"queue\":\"{}\"}}", "x".repeat(20 * 1024));
    assert_eq!(s.request("POST", "/v1/tenants/acme/plan-from", Some(tok_a), Some(&big)).0, 413, "bodies are capped");

    // Metrics.
    let m = s.metrics();
    for mb in ["in", "pop"] {
        let line = format!("mailplug_messages_fetched_total{{tenant=\"acme\",mailbox=\"{mb}\"}} 1");
        assert!(m.contains(&line), "{line} in\n{m}");
    }
    assert!(m.contains("mailplug_tenants_loaded 2"), "{m}");
    assert!(m.contains("process_resident_memory_bytes "), "{m}");
    assert!(m.contains("mailplug_last_success_timestamp_seconds{tenant=\"acme\",mailbox=\"pop\"}"), "{m}");

    // SIGTERM: exit 0, promptly.
    let (status, took) = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(12), "took {took:?}");

    // A restart resumes from the stored sync state: the old messages are not stored again,
    // a new one is.
    let s = Serve::start(&dir, "serve-2.log");
    let m3 = format!("serve-after-restart-{tag}@test");
    r.put(&imap_user, "INBOX", &sample_message(&m3, "after the restart"));
    let list = wait_for("the message put after the restart", 30, || {
        let l = messages(&s, "acme", tok_a);
        (with_mid(&l, &m3).len() == 1).then_some(l)
    });
    // Wait for one more completed poll of the POP3 mailbox after the restart, and for the IMAP
    // one to idle (everything fetched: later mail comes through IDLE), then count.
    let runs = |mb: &str| mailbox_state(&s, "acme", mb)["runs"].as_u64().unwrap_or(0);
    let idling = || mailbox_state(&s, "acme", "in")["state"] == "idling";
    wait_for("the IMAP mailbox idling and two polls of POP3 after the restart", 30, || (idling() && runs("in") >= 1 && runs("pop") >= 2).then_some(()));
    let list2 = messages(&s, "acme", tok_a);
    assert_eq!(with_mid(&list2, &m1).len(), 1, "IMAP message stored once");
    assert_eq!(with_mid(&list2, &m2).len(), 1, "POP3 message stored once");
    assert_eq!(list2.len(), 3, "nothing else: {list2:?}");
    assert_eq!(list.len(), 3);
    let m = s.metrics();
    assert!(m.contains("mailplug_messages_fetched_total{tenant=\"acme\",mailbox=\"pop\"} 0"), "nothing new from POP3: {m}");
    let (status, _) = s.terminate();
    assert!(status.success());
    // The logs name tenants and mailboxes, never a password or a token.
    let logs = std::fs::read_to_string(dir.join("serve-1.log")).unwrap_or_default() + &std::fs::read_to_string(dir.join("serve-2.log")).unwrap_or_default();
    assert!(logs.contains("tenant=acme") && logs.contains("mailbox=in"), "{logs}");
    for secret in [test_box(49).1, test_box(50).1, tok_a.to_string(), tok_b.to_string(), ADMIN.to_string()] {
        assert!(!logs.contains(&secret), "a secret in the logs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tenant files added, changed into something invalid, and removed at run time; an invalid
/// file is reported while the others keep running.
#[test]
fn serve_picks_up_added_invalid_and_removed_tenant_files() {
    let r = rig();
    let dir = workdir("files");
    let (user52, _) = test_box(52);
    let (user53, _) = test_box(53);
    r.reset_mailbox(&user52);
    r.reset_mailbox(&user53);
    let tok = "tenant-c-token-0123456789abcdef";
    write_tenant(&dir, "c.toml", &tenant_toml(&dir, "charlie", &[("in", "imap", 52)], Some(tok), ""));
    write_tenant(&dir, "broken.toml", "tenant = \"broken\"\nlicensed = true\n[[mailbox]]\nname = \"x\"\n");
    write_tenant(&dir, "unlicensed.toml", &tenant_toml(&dir, "nolicence", &[], None, "").replace("licensed = true", "licensed = false"));
    let s = Serve::start(&dir, "serve.log");

    let all = s.admin("/v1/tenants");
    let invalid = all["invalid"].as_array().cloned().unwrap_or_default();
    assert_eq!(invalid.len(), 2, "{all}");
    let broken = invalid.iter().find(|i| i["file"].as_str().unwrap_or_default().ends_with("broken.toml")).expect("broken reported");
    assert!(broken["error"].as_str().unwrap_or_default().contains("missing field"), "{broken}");
    let unlicensed = invalid.iter().find(|i| i["file"].as_str().unwrap_or_default().ends_with("unlicensed.toml")).expect("unlicensed");
    assert!(unlicensed["error"].as_str().unwrap_or_default().contains("not licensed"), "{unlicensed}");
    assert!(s.metrics().contains("mailplug_tenants_invalid 2"));

    // The valid one runs next to them.
    let tag = std::process::id();
    let m1 = format!("files-c-{tag}@test");
    r.put(&user52, "INBOX", &sample_message(&m1, "charlie"));
    wait_for("charlie's message", 30, || (with_mid(&messages(&s, "charlie", tok), &m1).len() == 1).then_some(()));

    // Added at run time: picked up.
    let tok_d = "tenant-d-token-0123456789abcdef";
    let m2 = format!("files-d-{tag}@test");
    r.put(&user53, "INBOX", &sample_message(&m2, "delta"));
    write_tenant(&dir, "d.toml", &tenant_toml(&dir, "delta", &[("in", "imap", 53)], Some(tok_d), ""));
    // Its token works once the file is loaded.
    wait_for("delta's message", 30, || (with_mid(&try_messages(&s, "delta", tok_d).ok()?, &m2).len() == 1).then_some(()));

    // Changed into an invalid file: reported, the previous version keeps running.
    write_tenant(&dir, "d.toml", "tenant = \"delta\"\nlicensed = true\nunknown_key = 1\n");
    let state = wait_for("the invalid change reported", 20, || {
        let st = s.admin("/v1/tenants/delta");
        st["config_error"].is_string().then_some(st)
    });
    assert_eq!(state["status"], "running-previous", "{state}");
    let m3 = format!("files-d2-{tag}@test");
    r.put(&user53, "INBOX", &sample_message(&m3, "still running"));
    wait_for("delta still fetching", 30, || (with_mid(&messages(&s, "delta", tok_d), &m3).len() == 1).then_some(()));

    // Removed: its state leaves /v1/tenants, its token reaches nothing.
    std::fs::remove_file(dir.join("tenants/d.toml")).expect("remove");
    wait_for("delta gone", 20, || {
        let all = s.admin("/v1/tenants");
        let names: Vec<&str> = all["tenants"].as_array()?.iter().filter_map(|t| t["tenant"].as_str()).collect();
        (!names.contains(&"delta") && names.contains(&"charlie")).then_some(())
    });
    assert_eq!(s.get("/v1/tenants/delta", Some(ADMIN)).0, 404);
    assert_eq!(s.get("/v1/tenants/delta", Some(tok_d)).0, 401, "a removed tenant's token is no token");
    // The fixed file comes back.
    write_tenant(&dir, "broken.toml", &tenant_toml(&dir, "broken", &[], None, ""));
    wait_for("the fixed file loaded", 20, || (s.get("/v1/tenants/broken", Some(ADMIN)).0 == 200).then_some(()));
    assert_eq!(s.admin("/v1/tenants")["invalid"].as_array().map(Vec::len), Some(1));
    let (status, _) = s.terminate();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Isolation: a tenant whose session memory cap is too small for a message traps, waits for
/// a fix and is reported, while the tenant next to it keeps receiving.
#[test]
fn a_trapping_tenant_waits_while_its_neighbour_keeps_receiving() {
    let r = rig();
    let dir = workdir("isolation");
    let (poison_user, _) = test_box(54);
    let (healthy_user, _) = test_box(55);
    r.reset_mailbox(&poison_user);
    r.reset_mailbox(&healthy_user);
    // 20 MB cannot be held in 16 MB of guest memory.
    let mut big = format!("From: <a@example.test>\r\nTo: <b@example.test>\r\nSubject: too big\r\nMessage-ID: <big-{}@test>\r\n\r\n", std::process::id()).into_bytes();
    while big.len() < 20 << 20 {
        big.extend_from_slice(&[b'x'; 62]);
        big.extend_from_slice(b"\r\n");
    }
    r.put(&poison_user, "INBOX", &big);
    write_tenant(
        &dir,
        "poison.toml",
        &tenant_toml(&dir, "poison", &[("in", "imap", 54)], None, "guest_memory_mb = 16\nmax_message_bytes = 104857600"),
    );
    write_tenant(&dir, "healthy.toml", &tenant_toml(&dir, "healthy", &[("in", "imap", 55)], None, ""));
    let s = Serve::start(&dir, "serve.log");

    let state = wait_for("the poison tenant's trap reported", 60, || {
        let st = mailbox_state(&s, "poison", "in");
        st["last_error"].is_object().then_some(st)
    });
    let err = &state["last_error"];
    assert_eq!(err["kind"], "trap", "{state}");
    assert!(err["error"].as_str().unwrap_or_default().contains("memory limit of 16 MB"), "{state}");
    assert!(err["explanation_en"].is_string() && err["explanation_de"].is_string(), "{state}");
    assert_eq!(state["state"], "waiting-for-fix", "{state}");
    let m = s.metrics();
    assert!(m.contains("mailplug_guest_traps_total{tenant=\"poison\",kind=\"memory\"} 1"), "{m}");

    // Its neighbour keeps receiving, message after message.
    for i in 0..3 {
        let mid = format!("healthy-{i}-{}@test", std::process::id());
        r.put(&healthy_user, "INBOX", &sample_message(&mid, "healthy"));
        wait_for("the healthy tenant's message", 30, || (with_mid(&messages(&s, "healthy", ADMIN), &mid).len() == 1).then_some(()));
    }
    let healthy = mailbox_state(&s, "healthy", "in");
    assert!(healthy["last_error"].is_null(), "{healthy}");
    // The poison tenant stays parked: no retry storm.
    assert_eq!(mailbox_state(&s, "poison", "in")["runs"], 1);
    assert!(messages_empty(&s, "poison"));
    let (status, _) = s.terminate();
    assert!(status.success());
    r.reset_mailbox(&poison_user);
    let _ = std::fs::remove_dir_all(&dir);
}

fn messages_empty(s: &Serve, tenant: &str) -> bool {
    messages(s, tenant, ADMIN).is_empty()
}

/// The guest's retry advice: a refused connection (retry later) backs off and tries again; a
/// wrong password (fix first) waits, without retrying, until the tenant's file or a secret it
/// names changes; the fixed password file restarts the mailbox, which then fetches.
#[test]
fn errors_back_off_or_wait_for_a_fix_until_the_file_changes() {
    let r = rig();
    let dir = workdir("advice");
    let (user, _) = test_box(56);
    r.reset_mailbox(&user);
    // A port nothing listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let good = tenant_toml(&dir, "echo", &[("in", "imap", 56)], None, "");
    let refused = good.replacen(&format!("port = {}", r.port("RIG_IMAPS_PORT")), &format!("port = {closed}"), 1);
    assert_ne!(refused, good);
    write_tenant(&dir, "e.toml", &refused);
    let wrong_pw = dir.join("secrets/wrong.pw");
    private(&wrong_pw, "not-the-password");
    let pw_line = format!("password_file = \"{}\"", dir.join("secrets/box56.pw").display());
    let wrong = good.replacen(&pw_line, &format!("password_file = \"{}\"", wrong_pw.display()), 1);
    assert_ne!(wrong, good);
    let s = Serve::start(&dir, "serve.log");

    // Retry later: backing off, and trying again (1 s, then 2 s).
    let st = wait_for("two refused connections", 30, || {
        let st = mailbox_state(&s, "echo", "in");
        (st["errors"].as_u64() >= Some(2)).then_some(st)
    });
    assert_eq!(st["last_error"]["retry"], "later", "{st}");
    assert_eq!(st["last_error"]["kind"], "network", "{st}");
    assert!(st["last_error"]["explanation_en"].is_string() && st["last_error"]["explanation_de"].is_string(), "{st}");
    let backing_off = wait_for("the backing-off state", 10, || {
        let st = mailbox_state(&s, "echo", "in");
        (st["state"] == "backing-off").then_some(st)
    });
    assert!(backing_off["until_ms"].is_i64(), "{backing_off}");
    assert!(s.metrics().contains("mailplug_errors_total{tenant=\"echo\",mailbox=\"in\",kind=\"network\"}"));

    // Fix first: a rejected password parks the mailbox.
    write_tenant(&dir, "e.toml", &wrong);
    let st = wait_for("the rejected login", 30, || {
        let st = mailbox_state(&s, "echo", "in");
        (st["last_error"]["kind"] == "auth-rejected" && st["state"] == "waiting-for-fix").then_some(st)
    });
    assert_eq!(st["last_error"]["retry"], "fix-first", "{st}");
    assert!(!st["last_error"]["error"].as_str().unwrap_or_default().contains("not-the-password"), "{st}");
    let runs = st["runs"].as_u64();
    // It does not retry on its own: a fetch of another tenant's mailbox (polled every second;
    // POP3, since an IMAP mailbox idles instead of polling) completes three times meanwhile.
    write_tenant(&dir, "other.toml", &tenant_toml(&dir, "foxtrot", &[("in", "pop3", 57)], None, ""));
    wait_for("three polls of another tenant", 30, || {
        let (status, st) = s.get("/v1/tenants/foxtrot", Some(ADMIN));
        (status == 200 && st["mailboxes"]["in"]["runs"].as_u64() >= Some(3)).then_some(())
    });
    assert_eq!(mailbox_state(&s, "echo", "in")["runs"].as_u64(), runs, "no retry while waiting for a fix");

    // The fixed password file (the tenant file unchanged): restarted, fetches.
    let mid = format!("advice-{}@test", std::process::id());
    r.put(&user, "INBOX", &sample_message(&mid, "after the fix"));
    private(&wrong_pw, &test_box(56).1);
    wait_for("the message after the fix", 30, || (with_mid(&messages(&s, "echo", ADMIN), &mid).len() == 1).then_some(()));
    let st = mailbox_state(&s, "echo", "in");
    assert!(st["last_error"].is_null(), "{st}");
    let (status, _) = s.terminate();
    assert!(status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
