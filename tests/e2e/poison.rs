//! Poison messages never halt a mailbox: messages are parsed one call each in a parse instance
//! of their own with its own budget, so a message that makes the parser trap is stored raw and
//! flagged, the rest of the batch is stored, and the next run goes on after it. Against the
//! real Dovecot, through the real component.

use mailplug_host::config::{AfterFetch, TenantConfig};
use mailplug_host::engine::ParseBudget;
use mailplug_tests::{box_tenant, fetch_into as fetch, plugin, rig, sample_message, test_box};
use mailplug_tests::{TempDatabase, TempPath};

/// A message whose parse needs far more than 16 MB: a 12 MB base64 attachment (decoded, 9 MB
/// more). The session itself only carries its bytes.
fn poison(marker: &str) -> Vec<u8> {
    let mut m = format!(
        "From: Someone <someone@example.test>\r\nTo: support@example.test\r\nSubject: {marker}\r\n\
         Message-ID: <{marker}@test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--b\r\nContent-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n";
    while m.len() < 12 << 20 {
        m.extend_from_slice(line);
    }
    m.extend_from_slice(b"--b--\r\n");
    m
}

fn db(name: &str) -> TempDatabase {
    TempDatabase::open(&format!("poison-{name}"))
}

fn config(protocol: &str, user: &str, pass: &str, after: AfterFetch) -> TenantConfig {
    let mut cfg = box_tenant(protocol, user, pass, after);
    cfg.limits.parse_memory_mb = 16;
    cfg
}

async fn poison_in_the_middle(protocol: &str, boxn: u32, after: AfterFetch) {
    let r = rig();
    let (user, pass) = test_box(boxn);
    r.reset_mailbox(&user);
    let marker = format!("poison-{protocol}-{}", std::process::id());
    let first = format!("before-{marker}@test");
    let last = format!("after-{marker}@test");
    r.put(&user, "INBOX", &sample_message(&first, "before the poison"));
    r.put(&user, "INBOX", &poison(&marker));
    r.put(&user, "INBOX", &sample_message(&last, "after the poison"));
    let cfg = config(protocol, &user, &pass, after.clone());
    let store = db(protocol);

    let s = fetch(&cfg, &store).await.expect("a poison message does not end the run");
    assert_eq!(s.delivered, 3, "{protocol}: all three delivered");
    let stored = store.messages(&cfg.tenant, "inbox").expect("messages");
    assert_eq!(stored.len(), 3, "{protocol}: all three stored");
    let bad: Vec<_> = stored.iter().filter(|m| m.parse_error.is_some()).collect();
    assert_eq!(bad.len(), 1, "{protocol}: exactly the poison is flagged");
    let why = bad[0].parse_error.as_deref().unwrap_or_default();
    assert!(why.contains("parse memory budget of 16 MB") && why.contains("limits.parse_memory_mb"), "{why}");
    assert!(bad[0].raw.len() >= 12 << 20, "{protocol}: the raw bytes are kept");
    assert!(String::from_utf8_lossy(&bad[0].raw[..300]).contains(&marker));
    let good: Vec<&str> = stored.iter().filter(|m| m.parse_error.is_none()).map(|m| m.message_id.as_str()).collect();
    assert!(good.contains(&first.as_str()) && good.contains(&last.as_str()), "{protocol}: {good:?}");

    // Acknowledged like any other stored message.
    if after == AfterFetch::Delete {
        assert!(r.listing(&user, "INBOX").is_empty(), "{protocol}: every stored message deleted, the poison too");
    }

    // The next run goes on after it: only the new message, nothing fetched again.
    let newer = format!("newer-{marker}@test");
    r.put(&user, "INBOX", &sample_message(&newer, "after the run"));
    let s = fetch(&cfg, &store).await.expect("second run");
    assert_eq!(s.delivered, 1, "{protocol}: only the new message, the poison is not fetched again");
    let stored = store.messages(&cfg.tenant, "inbox").expect("messages");
    assert_eq!(stored.len(), 4);
    assert!(stored.iter().any(|m| m.message_id == newer));
}

#[tokio::test]
async fn imap_poison_message_in_a_batch_is_stored_flagged_and_the_mailbox_goes_on() {
    poison_in_the_middle("imap", 27, AfterFetch::Keep).await;
}

#[tokio::test]
async fn pop3_poison_message_in_a_batch_is_stored_flagged_deleted_and_the_mailbox_goes_on() {
    poison_in_the_middle("pop3", 28, AfterFetch::Delete).await;
}

#[tokio::test]
async fn parser_traps_poison_only_the_parse_instance_which_is_renewed() {
    let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
    let generous = ParseBudget { memory_bytes: 256 << 20, cpu_ms: 20_000 };
    instance.set_parse_budget(ParseBudget { memory_bytes: 16 << 20, cpu_ms: 20_000 });
    let ok = sample_message("fine@test", "fine");
    for _ in 0..3 {
        let p = instance.parse_message(&ok).await.expect("parser runs").expect("parses");
        assert_eq!(p.message_id, "fine@test");
    }
    assert_eq!(instance.parse_instantiations(), 1, "one parse instance per run, not per message");

    let bad = poison("parse-budget");
    let why = instance.parse_message(&bad).await.expect("a trap is not a host error").expect_err("over 16 MB");
    assert!(why.contains("parse memory budget of 16 MB"), "{why}");
    let p = instance.parse_message(&ok).await.expect("parser runs").expect("parses after the trap");
    assert_eq!(p.message_id, "fine@test");
    assert_eq!(instance.parse_instantiations(), 2, "made again after the trap, once");

    // The CPU budget: 10 ms cannot decode 9 MB of base64.
    instance.set_parse_budget(ParseBudget { memory_bytes: 256 << 20, cpu_ms: 10 });
    let why = instance.parse_message(&bad).await.expect("a trap is not a host error").expect_err("over 10 ms");
    assert!(why.contains("parse CPU budget of 10 ms") && why.contains("limits.parse_cpu_ms"), "{why}");
    instance.set_parse_budget(generous);
    assert!(instance.parse_message(&bad).await.expect("parser runs").is_ok(), "with room the same message parses");

    // The session's own instance never ran the parser: it still works.
    assert!(instance.preset_by_domain("gmail.com").await.expect("session instance alive").is_some());
}

/// Through the `mailplug` CLI: the poison is reported once, in the first run's JSON lines, with
/// `parse_error` naming the budget; the next run reports only what is new.
#[test]
fn the_cli_reports_a_poison_message_once_with_its_parse_error() {
    use std::process::Command;
    let r = rig();
    let (user, pass) = test_box(29);
    r.reset_mailbox(&user);
    let marker = format!("poison-cli-{}", std::process::id());
    r.put(&user, "INBOX", &sample_message(&format!("before-{marker}@test"), "before"));
    r.put(&user, "INBOX", &poison(&marker));
    r.put(&user, "INBOX", &sample_message(&format!("after-{marker}@test"), "after"));

    let dir = TempPath::dir(&marker);
    std::fs::write(dir.join("in.pw"), &pass).expect("pw");
    let config = format!(
        "tenant = \"poison\"\nlicensed = true\nextra_ca_file = \"{ca}\"\ndatabase = \"{db}\"\n\
         [limits]\nparse_memory_mb = 16\n\
         [[mailbox]]\nname = \"inbox\"\naddress = \"{user}\"\nprotocol = \"imap\"\nfirst_sync = \"all\"\n\
         host = \"localhost\"\nport = {port}\ntls = true\nusername = \"{user}\"\npassword_file = \"in.pw\"\n",
        ca = r.get("RIG_CA"),
        db = dir.join("mailplug.sqlite3").display(),
        port = r.port("RIG_IMAPS_PORT"),
    );
    let cfg = dir.join("tenant.toml");
    std::fs::write(&cfg, config).expect("config");
    let bin = std::env::var("MAILPLUG_BIN").unwrap_or_else(|_| "/var/tmp/mailplug-target/debug/mailplug".into());
    let fetch = || {
        let o = Command::new(&bin)
            .args(["fetch", "--config", cfg.to_str().expect("utf8"), "--json"])
            .env("MAILPLUG_WASM", mailplug_tests::wasm_path())
            .output()
            .expect("mailplug runs");
        assert!(o.status.success(), "fetch failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line")).collect::<Vec<_>>()
    };
    let first = fetch();
    assert_eq!(first.len(), 3, "{first:?}");
    let flagged: Vec<_> = first.iter().filter(|v| !v["parse_error"].is_null()).collect();
    assert_eq!(flagged.len(), 1, "{first:?}");
    assert_eq!(flagged[0]["subject"], marker.as_str());
    assert_eq!(flagged[0]["classification"], "unparsed");
    assert_eq!(flagged[0]["duplicate"], false);
    assert!(flagged[0]["parse_error"].as_str().unwrap_or_default().contains("parse memory budget of 16 MB"), "{:?}", flagged[0]);

    r.put(&user, "INBOX", &sample_message(&format!("newer-{marker}@test"), "newer"));
    let second = fetch();
    assert_eq!(second.len(), 1, "only the new message is reported: {second:?}");
    assert!(second[0]["parse_error"].is_null());
    let _ = std::fs::remove_dir_all(&dir);
}
