//! IMAP IDLE in `mailplug serve`: the real binary (MAILPLUG_BIN) against the rig's Dovecot,
//! observed through its HTTP API, its metrics, its exit status and Dovecot's log. An IMAP
//! mailbox polled only every 600 s gets new mail within seconds through IDLE; POP3 next to it
//! still polls; `idle = false` polls; SIGTERM and a removed tenant end the idle sessions with
//! LOGOUT. Every wait is bounded; no fixed sleeps. Rig boxes 65 to 70.

use std::path::Path;
use std::time::{Duration, Instant};

use mailplug_tests::serve::*;
use mailplug_tests::{dovecot_log_len, dovecot_log_since, rig, sample_message, test_box};

/// One mailbox of a tenant file: (name, "imap"/"pop3", rig box, poll interval, extra lines).
type Mb<'a> = (&'a str, &'a str, u32, u32, &'a str);

/// A tenant file's text; passwords and the API token in files of their own.
fn tenant_toml(dir: &Path, id: &str, token: &str, mailboxes: &[Mb<'_>]) -> String {
    let r = rig();
    let p = dir.join(format!("secrets/{id}.token"));
    private(&p, token);
    let mut t = format!("tenant = \"{id}\"\nlicensed = true\nextra_ca_file = \"{}\"\napi_token_file = \"{}\"\n", r.get("RIG_CA"), p.display());
    t += "[limits]\nreply_timeout_secs = 15\nconnect_timeout_secs = 5\n";
    for (name, protocol, n, poll, extra) in mailboxes {
        let (user, pass) = test_box(*n);
        let pw = dir.join(format!("secrets/box{n}.pw"));
        private(&pw, &pass);
        let port = if *protocol == "imap" { r.port("RIG_IMAPS_PORT") } else { r.port("RIG_POP3S_PORT") };
        t += &format!(
            "[[mailbox]]\nname = \"{name}\"\naddress = \"{user}\"\nprotocol = \"{protocol}\"\nfirst_sync = \"all\"\npoll_interval_secs = {poll}\n\
             {extra}\nhost = \"localhost\"\nport = {port}\ntls = true\nusername = \"{user}\"\npassword_file = \"{}\"\n",
            pw.display()
        );
    }
    t
}

/// Waits (bounded) until Dovecot logged `user`'s LOGOUT after `from`, and asserts no session
/// of theirs was dropped without one.
fn wait_for_logout(from: u64, user: &str) {
    let lines = wait_for("a LOGOUT in Dovecot's log", 15, || {
        let lines = dovecot_log_since(from, user);
        lines.iter().any(|l| l.contains("Logged out")).then_some(lines)
    });
    assert!(!lines.iter().any(|l| l.contains("Connection closed")), "a session was dropped without LOGOUT: {lines:#?}");
}

fn listed(s: &Serve, tenant: &str, token: &str, mid: &str) -> bool {
    try_messages(s, tenant, token).is_ok_and(|l| !with_mid(&l, mid).is_empty())
}

/// The acceptance test: IDLE brings new mail within seconds though the poll interval is 600 s
/// (state `idling` before and after, `mailplug_idle_connections` 1); POP3 next to it polls;
/// SIGTERM ends the idle session with LOGOUT and the process exits 0.
#[test]
fn serve_idles_imap_so_new_mail_arrives_at_once_pop3_polls_and_sigterm_logs_out() {
    let r = rig();
    let dir = workdir("idle");
    let (imap_user, _) = test_box(65);
    let (pop_user, _) = test_box(66);
    r.reset_mailbox(&imap_user);
    r.reset_mailbox(&pop_user);
    let tag = std::process::id();
    let first = format!("idle-first-{tag}@test");
    r.put(&imap_user, "INBOX", &sample_message(&first, "before the start"));
    let tok = "tenant-idle-token-0123456789abcd";
    write_tenant(&dir, "t.toml", &tenant_toml(&dir, "idler", tok, &[("in", "imap", 65, 600, ""), ("pop", "pop3", 66, 1, "")]));
    let s = Serve::start(&dir, "serve-idle.log");

    wait_for("the IMAP mailbox idles after its first fetch", 60, || (mailbox_state(&s, "idler", "in")["state"] == "idling").then_some(()));
    assert!(listed(&s, "idler", tok, &first), "the first fetch stored the message already there");
    let state = mailbox_state(&s, "idler", "in");
    assert!(state["since_ms"].is_i64() && state["last_error"].is_null(), "{state}");
    let m = s.metrics();
    assert!(m.contains("mailplug_idle_connections 1"), "{m}");
    assert!(m.contains("mailplug_mailbox_state{tenant=\"idler\",mailbox=\"in\",state=\"idling\"} 1"), "{m}");
    assert!(m.contains("mailplug_mailbox_state{tenant=\"idler\",mailbox=\"pop\",state=\"idling\"} 0"), "{m}");

    // New mail: through IDLE, far sooner than the 600 s poll interval.
    let mut latencies = Vec::new();
    for i in 0..5 {
        let mid = format!("idle-new-{tag}-{i}@test");
        let put = Instant::now();
        r.put(&imap_user, "INBOX", &sample_message(&mid, "while idling"));
        wait_for("the new message through IDLE", 15, || listed(&s, "idler", tok, &mid).then_some(()));
        latencies.push(put.elapsed().as_millis());
        wait_for("idling again", 15, || (mailbox_state(&s, "idler", "in")["state"] == "idling").then_some(()));
    }
    eprintln!("new-mail latency through IDLE (put -> listed by the API), ms: {latencies:?}");
    assert!(latencies.iter().all(|ms| *ms < 10_000), "{latencies:?}");
    let state = mailbox_state(&s, "idler", "in");
    assert_eq!(state["fetched"], 6, "{state}");
    assert!(state["last_error"].is_null(), "{state}");

    // POP3 beside it still polls every second.
    let pop_mid = format!("idle-pop-{tag}@test");
    r.put(&pop_user, "INBOX", &sample_message(&pop_mid, "by POP3"));
    wait_for("the POP3 message", 30, || listed(&s, "idler", tok, &pop_mid).then_some(()));
    let pop = mailbox_state(&s, "idler", "pop");
    assert_ne!(pop["state"], "idling", "{pop}");
    assert!(pop["runs"].as_u64().unwrap_or(0) >= 2, "polled: {pop}");

    // SIGTERM: DONE and LOGOUT within the grace period, exit 0.
    let log_from = dovecot_log_len();
    let (status, took) = s.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(12), "took {took:?}");
    wait_for_logout(log_from, &imap_user);
    let log = std::fs::read_to_string(dir.join("serve-idle.log")).unwrap_or_default();
    assert!(!log.contains("abandoned"), "{log}");
}

/// `idle = false` polls at the interval (never `idling`); a removed tenant's idling mailbox
/// logs out, and the idle connection count drops to 0.
#[test]
fn serve_idle_can_be_turned_off_and_a_removed_tenant_logs_out() {
    let r = rig();
    let dir = workdir("idle-off");
    let (idle_user, _) = test_box(67);
    let (poll_user, _) = test_box(68);
    r.reset_mailbox(&idle_user);
    r.reset_mailbox(&poll_user);
    let (tok_a, tok_b) = ("tenant-idle-a-token-0123456789ab", "tenant-idle-b-token-0123456789ab");
    write_tenant(&dir, "a.toml", &tenant_toml(&dir, "idles", tok_a, &[("in", "imap", 67, 600, "")]));
    write_tenant(&dir, "b.toml", &tenant_toml(&dir, "polls", tok_b, &[("in", "imap", 68, 1, "idle = false")]));
    let s = Serve::start(&dir, "serve-idle-off.log");
    wait_for("the IMAP mailbox idles", 60, || (mailbox_state(&s, "idles", "in")["state"] == "idling").then_some(()));

    let mid = format!("idle-off-{}@test", std::process::id());
    r.put(&poll_user, "INBOX", &sample_message(&mid, "polled"));
    wait_for("the polled message", 30, || listed(&s, "polls", tok_b, &mid).then_some(()));
    wait_for("a few polls", 30, || (mailbox_state(&s, "polls", "in")["runs"].as_u64().unwrap_or(0) >= 3).then_some(()));
    for _ in 0..5 {
        let st = mailbox_state(&s, "polls", "in");
        assert_ne!(st["state"], "idling", "{st}");
    }
    assert!(s.metrics().contains("mailplug_idle_connections 1"));

    // The idling tenant's file is removed: its session ends with LOGOUT.
    let log_from = dovecot_log_len();
    std::fs::remove_file(dir.join("tenants/a.toml")).expect("remove");
    wait_for("the tenant is gone", 30, || (s.get("/v1/tenants/idles", Some(ADMIN)).0 == 404).then_some(()));
    wait_for_logout(log_from, &idle_user);
    wait_for("no idle connection left", 15, || s.metrics().contains("mailplug_idle_connections 0").then_some(()));
    let (status, _) = s.terminate();
    assert!(status.success(), "exit status {status:?}");
}
