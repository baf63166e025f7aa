//! The `mailplug` binary end to end: send, fetch to .eml with --json, exit codes, and that no
//! password reaches stdout or stderr, whatever happens.

use std::path::{Path, PathBuf};
use mailplug_tests::{output_text as text, rig, run_mailplug as run, server_toml, tenant_head_toml};
use mailplug_tests::TempPath;

/// Writes a tenant config using `password_file`s under `dir`.
fn write_config(dir: &Path, inbound_pw: &str, smtp_pw: &str, state: &str) -> PathBuf {
    let r = rig();
    std::fs::create_dir_all(dir).expect("dir");
    std::fs::write(dir.join("in.pw"), format!("{inbound_pw}\n")).expect("pw");
    std::fs::write(dir.join("out.pw"), smtp_pw).expect("pw");
    let cust = r.user("CUSTOMER");
    let text = format!(
        r#"{head}
[[mailbox]]
name = "customer"
address = "{cust}"
protocol = "imap"
first_sync = "all"
{inbound}
[[queue]]
name = "support"
mailboxes = ["customer"]
[queue.smtp]
{smtp}"#,
        head = tenant_head_toml("cli-test", &Path::new(state).join("mailplug.sqlite3")),
        inbound = server_toml("localhost", r.port("RIG_IMAPS_PORT"), true, cust, "in.pw"),
        smtp = server_toml("localhost", r.port("RIG_SUBMISSION_PORT"), false, r.user("AGENT"), "out.pw"),
    );
    let path = dir.join("tenant.toml");
    std::fs::write(&path, text).expect("config");
    path
}

fn tmpdir(name: &str) -> TempPath {
    TempPath::dir(&format!("cli-{name}"))
}

#[test]
fn send_then_fetch_writes_eml_and_json_lines() {
    let r = rig();
    let dir = tmpdir("ok");
    let cfg = write_config(&dir, r.pass("CUSTOMER"), r.pass("AGENT"), "state");
    let cfg = cfg.to_str().expect("utf8");
    let subject = format!("CLI test {}", std::process::id());
    let o = run(&["send", "--config", cfg, "--queue", "support", "--to", r.user("CUSTOMER"), "--subject", &subject, "--body", "Hello from the CLI"]);
    assert!(o.status.success(), "send failed: {}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("250"), "prints the server's final reply: {out}");

    let out_dir = dir.join("out");
    let mut found = None;
    for _ in 0..40 {
        let o = run(&["fetch", "--config", cfg, "--mailbox", "customer", "--out", out_dir.to_str().expect("utf8"), "--json"]);
        assert!(o.status.success(), "fetch failed: {}", text(&o));
        assert!(!text(&o).contains(r.pass("CUSTOMER")));
        let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
        for line in stdout.lines() {
            assert!(line.starts_with('{') && line.ends_with('}'), "one JSON object per line: {line}");
            if line.contains(&subject) {
                found = Some(line.to_string());
            }
        }
        if found.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let line = found.expect("the sent message was fetched");
    assert!(line.contains("\"classification\":\"normal\""), "classified as a person's mail: {line}");
    let file = line.split("\"file\":\"").nth(1).and_then(|s| s.split('"').next()).expect("file field");
    let eml = std::fs::read_to_string(file).expect("the .eml file exists");
    assert!(eml.contains("Hello from the CLI"));

    // The sync state was saved: a second fetch does not print the same message again.
    let o = run(&["fetch", "--config", cfg, "--mailbox", "customer", "--out", out_dir.to_str().expect("utf8"), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&subject), "fetched twice: {}", text(&o));
}

#[test]
fn failures_exit_nonzero_with_one_line_an_explanation_and_no_password() {
    let r = rig();
    let dir = tmpdir("bad");
    let wrong = "Cli-Wrong-Pw-4$z";
    let cfg = write_config(&dir, wrong, wrong, "state");
    let cfg = cfg.to_str().expect("utf8");
    let o = run(&["fetch", "--config", cfg, "--out", dir.join("out").to_str().expect("utf8")]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("rejected"), "says the login was rejected: {err}");
    assert!(!text(&o).contains(wrong), "password leaked: {}", text(&o));
    // The error is followed by its cause and the admin's action, in English and German.
    for label in ["cause:", "action:", "Ursache:", "Maßnahme:"] {
        assert!(err.contains(label), "no {label} line: {err}");
    }
    assert!(err.contains("app password") && err.contains("Kennwort"), "{err}");

    let o = run(&["send", "--config", cfg, "--queue", "support", "--to", r.user("CUSTOMER"), "--subject", "x", "--body", "x"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 6, "one line for the reason, four for cause and action, one for the retry advice: {}", text(&o));
    assert!(lines[0].contains("rejected") && lines[1].contains("cause:") && lines[4].contains("Maßnahme:"), "{err}");
    assert!(lines[5].contains("retry:    fix-first"), "a rejected login needs a fix first: {err}");
    assert!(!text(&o).contains(wrong), "password leaked: {}", text(&o));

    // A config error names the field and exits 2.
    std::fs::write(dir.join("broken.toml"), "tenant = \"x\"\nlicensed = true\n[[mailbox]]\nname = \"m\"\n").expect("write");
    let o = run(&["fetch", "--config", dir.join("broken.toml").to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("address") || String::from_utf8_lossy(&o.stderr).contains("missing field"), "{}", text(&o));

    // An unlicensed tenant is refused with its own exit code.
    let unlicensed = std::fs::read_to_string(cfg).expect("read").replace("licensed = true", "licensed = false");
    std::fs::write(dir.join("unlicensed.toml"), unlicensed).expect("write");
    let o = run(&["fetch", "--config", dir.join("unlicensed.toml").to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("licensed"), "{}", text(&o));
}

#[test]
fn plan_from_tells_the_admin_what_the_customer_will_see_in_both_languages() {
    let r = rig();
    let dir = tmpdir("plan");
    let cfg = write_config(&dir, r.pass("CUSTOMER"), r.pass("AGENT"), "state");
    let text = std::fs::read_to_string(&cfg).expect("read")
        .replace("mailboxes = [\"customer\"]", "mailboxes = [\"customer\"]\nsend_permission = \"send-on-behalf\"")
        .replace("[queue.smtp]", "[queue.smtp]\nprovider = \"microsoft\"");
    std::fs::write(&cfg, text).expect("write");
    let cfg = cfg.to_str().expect("utf8");
    let o = run(&["plan-from", "--config", cfg, "--queue", "support", "--mailbox", "customer"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&format!("Sender:     {}", r.user("AGENT"))), "{out}");
    assert!(out.contains("on behalf of") && out.contains("im Auftrag von"), "{out}");
    let o = run(&["plan-from", "--config", cfg, "--queue", "support", "--mailbox", "customer", "--json"]);
    let json = String::from_utf8_lossy(&o.stdout);
    assert!(json.contains("\"sender\":\"agent@example.test\"") && json.contains("\"de\":"), "{json}");
}

#[test]
fn settings_that_cannot_work_are_named_before_anything_connects() {
    let dir = tmpdir("validate");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("pw"), "my-normal-password").expect("pw");
    let toml = r#"tenant = "v"
licensed = true
[[mailbox]]
name = "gmail"
address = "support@gmail.com"
protocol = "imap"
host = "imap.gmail.com"
port = 993
tls = true
username = "support@gmail.com"
password_file = "pw"
[[queue]]
name = "q"
mailboxes = ["gmail"]
[queue.smtp]
host = "smtp.gmail.com"
port = 587
tls = true
username = "support@gmail.com"
password_file = "pw"
"#;
    std::fs::write(dir.join("t.toml"), toml).expect("config");
    let cfg = dir.join("t.toml");
    let cfg = cfg.to_str().expect("utf8");
    let o = run(&["presets", "--config", cfg]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    // 587 with TLS on: named with the fix, in both languages.
    assert!(out.contains("error") && out.contains("587") && out.contains("STARTTLS"), "{out}");
    // A normal password where Gmail wants an app password.
    assert!(out.contains("Gmail wants an app password"), "{out}");
    assert!(!out.contains("my-normal-password"), "the password is never echoed: {out}");
    // fetch stops before connecting, with the same reason.
    let o = run(&["fetch", "--config", cfg]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("587"), "{}", text(&o));
    // The catalogue lists the spec's providers with the errata applied.
    let o = run(&["presets"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("IMAP imap.gmail.com:993 TLS") && out.contains("SMTP smtp.office365.com:587 STARTTLS"), "{out}");
}

#[test]
fn discover_suggests_a_configuration_that_loads_and_validates() {
    let o = run(&["discover", "support@gmail.com"]);
    assert!(o.status.success(), "{}", text(&o));
    let snippet = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(snippet.contains("host = \"imap.gmail.com\"") && snippet.contains("provider = \"gmail\""), "{snippet}");
    let toml = format!("tenant = \"d\"\nlicensed = true\n{snippet}");
    let cfg = mailplug_host::TenantConfig::parse(&toml, "discovered.toml", std::path::Path::new("/tmp"), &|v| {
        (v == "MAILBOX_PASSWORD").then(|| "abcdefghijklmnop".to_string())
    })
    .unwrap_or_else(|e| panic!("the snippet must load: {e}\n{snippet}"));
    assert_eq!(cfg.mailboxes[0].server.port, 993);
    // An unknown domain says what to do instead of guessing.
    let o = run(&["discover", "someone@unknown-company.example"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("by hand"), "{}", text(&o));
}

#[test]
fn a_cli_reply_saves_its_copy_in_sent_and_reports_it_in_json() {
    let r = rig();
    let (user, password) = mailplug_tests::test_box(3);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &mailplug_tests::sample_message("cli-reply-original@example.test", "Where is my order?"));
    let dir = tmpdir("reply");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("pw"), &password).expect("pw");
    let cfg = dir.join("tenant.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"{head}
[[mailbox]]
name = "m"
address = "{user}"
protocol = "imap"
first_sync = "all"
save_sent = "Sent"
{inbound}
[[queue]]
name = "q"
mailboxes = ["m"]
[queue.smtp]
{smtp}"#,
            head = tenant_head_toml("cli-reply", &dir.join("db.sqlite3")),
            inbound = server_toml("localhost", r.port("RIG_IMAPS_PORT"), true, &user, "pw"),
            smtp = server_toml("localhost", r.port("RIG_SMTPS_PORT"), true, &user, "pw"),
        ),
    )
    .expect("config");
    let cfg = cfg.to_str().expect("utf8");
    let o = run(&["fetch", "--config", cfg, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let line = String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string();
    let fetched: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let id = fetched["id"].as_str().expect("id").to_string();

    let o = run(&["send", "--config", cfg, "--queue", "q", "--reply-to-message", &id, "--body", "It left today.", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let sent: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(sent["sent_copy"]["saved"], true, "{sent}");
    assert_eq!(sent["sent_copy"]["folder"], "Sent", "{sent}");
    let message_id = sent["message_id"].as_str().expect("message id").to_string();
    let copies = r.listing(&user, "Sent");
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0].2, message_id);
    assert!(copies[0].1.contains("\\Seen"), "{copies:?}");
    assert!(!text(&o).contains(&password), "password leaked: {}", text(&o));
}
