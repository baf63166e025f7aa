//! `mailplug check` against the real Dovecot and Postfix: a good configuration passes every
//! step; a wrong port, a wrong TLS switch, a wrong password and an untrusted certificate each
//! stop at the right step with the right cause and action, in English and German. The check
//! changes nothing on the server, and no password reaches its output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mailplug_tests::{rig, sample_message, test_box, wasm_path};
use mailplug_tests::TempPath;

fn bin() -> PathBuf {
    std::env::var("MAILPLUG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/tmp/mailplug-target/debug/mailplug"))
}

fn tmpdir(name: &str) -> TempPath {
    TempPath::dir(&format!("check-{name}"))
}

/// One server under test: what the config says about it.
struct Server<'a> {
    /// "imap", "pop3" or "smtp".
    protocol: &'a str,
    host: &'a str,
    port: u16,
    tls: bool,
    username: String,
    password: String,
}

/// A tenant with one mailbox (imap/pop3) or one queue (smtp) for `s`.
fn write_config(dir: &Path, s: &Server<'_>, trust_rig_ca: bool) -> PathBuf {
    let r = rig();
    std::fs::write(dir.join("pw"), &s.password).expect("pw");
    let ca = if trust_rig_ca { format!("extra_ca_file = \"{}\"\n", r.get("RIG_CA")) } else { String::new() };
    let server = format!(
        "host = \"{}\"\nport = {}\ntls = {}\nusername = \"{}\"\npassword_file = \"pw\"\n",
        s.host, s.port, s.tls, s.username
    );
    let body = if s.protocol == "smtp" {
        format!("[[queue]]\nname = \"q\"\n[queue.smtp]\n{server}")
    } else {
        format!(
            "[[mailbox]]\nname = \"m\"\naddress = \"{}\"\nprotocol = \"{}\"\nfolders = [\"INBOX\"]\n{server}",
            s.username, s.protocol
        )
    };
    let text = format!(
        "tenant = \"check-test\"\nlicensed = true\n{ca}database = \"{}/db.sqlite3\"\n\n[limits]\nreply_timeout_secs = 3\nconnect_timeout_secs = 5\n\n{body}",
        dir.display()
    );
    let path = dir.join("tenant.toml");
    std::fs::write(&path, text).expect("config");
    path
}

struct Checked {
    out: Output,
    json: serde_json::Value,
    text: String,
}

fn check(name: &str, s: &Server<'_>, trust_rig_ca: bool) -> Checked {
    let dir = tmpdir(name);
    let cfg = write_config(&dir, s, trust_rig_ca);
    let run = |json: bool| {
        let mut c = Command::new(bin());
        c.arg("check").arg("--config").arg(&cfg).env("MAILPLUG_WASM", wasm_path());
        if json {
            c.arg("--json");
        }
        c.output().unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()))
    };
    let out = run(true);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("check --json printed no JSON ({e}): {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    let plain = run(false);
    let text = format!("{}{}", String::from_utf8_lossy(&plain.stdout), String::from_utf8_lossy(&plain.stderr));
    for o in [&out, &plain] {
        let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(!all.contains(&s.password), "the password leaked into the check output: {all}");
    }
    assert_eq!(out.status.code(), plain.status.code());
    Checked { out, json, text }
}

fn steps(c: &Checked) -> Vec<String> {
    c.json["steps"].as_array().expect("steps").iter().map(|s| s["step"].as_str().unwrap_or("").to_string()).collect()
}

/// Asserts the check stopped at `step` and that cause + action mention the given words.
#[track_caller]
fn assert_failed_at(c: &Checked, step: &str, en: &[&str], de: &[&str]) {
    assert_eq!(c.out.status.code(), Some(1), "a failed check exits 1: {}", c.text);
    assert_eq!(c.json["passed"], false, "{}", c.json);
    let all = c.json["steps"].as_array().expect("steps");
    let last = all.last().expect("at least the failed step");
    assert_eq!(last["ok"], false, "the last step is the failure: {}", c.json);
    assert_eq!(last["step"], step, "stopped at the wrong step: {}", c.json);
    assert!(all[..all.len() - 1].iter().all(|s| s["ok"] == true), "{}", c.json);
    let en_text = format!("{} {}", last["cause"]["en"], last["action"]["en"]);
    let de_text = format!("{} {}", last["cause"]["de"], last["action"]["de"]);
    for w in en {
        assert!(en_text.contains(w), "English cause/action lacks {w:?}: {en_text}");
    }
    for w in de {
        assert!(de_text.contains(w), "German cause/action lacks {w:?}: {de_text}");
    }
    // The plain-text form shows the same failure in both languages.
    assert!(c.text.contains(&format!("FAIL  {step}")), "{}", c.text);
    assert!(c.text.contains("Ursache:") && c.text.contains("Maßnahme:"), "{}", c.text);
}

/// Box 14 of the rig, never changed by these tests; box 13 is the one whose mailbox is filled.
fn good(protocol: &'static str, port_key: &str, tls: bool) -> Server<'static> {
    let (username, password) = test_box(14);
    Server { protocol, host: "localhost", port: rig().port(port_key), tls, username, password }
}

#[test]
fn a_good_imap_mailbox_passes_every_step_over_tls_and_starttls_and_changes_nothing() {
    let r = rig();
    let (user, password) = test_box(13);
    r.reset_mailbox(&user);
    r.put(&user, "INBOX", &sample_message("check-1@example.test", "check 1"));
    r.put(&user, "INBOX", &sample_message("check-2@example.test", "check 2"));
    let before = r.listing(&user, "INBOX");
    let box13 = |port_key: &str, tls: bool| Server {
        protocol: "imap",
        host: "localhost",
        port: r.port(port_key),
        tls,
        username: user.clone(),
        password: password.clone(),
    };

    let c = check("imaps", &box13("RIG_IMAPS_PORT", true), true);
    assert_eq!(c.out.status.code(), Some(0), "{}", c.text);
    assert_eq!(
        steps(&c),
        ["settings", "resolve", "connect", "tls", "greeting", "capabilities", "mechanisms", "login", "folder", "logout"]
    );
    assert_eq!(c.json["folders"][0]["folder"], "INBOX");
    assert_eq!(c.json["folders"][0]["messages"], 2);
    assert!(c.text.contains("passed"), "{}", c.text);
    assert!(c.json["steps"].as_array().unwrap().iter().all(|s| s["ms"].is_u64()));

    let c = check("imap-starttls", &box13("RIG_IMAP_STARTTLS_PORT", false), true);
    assert_eq!(c.out.status.code(), Some(0), "{}", c.text);
    assert_eq!(
        steps(&c),
        [
            "settings", "resolve", "connect", "greeting", "capabilities", "starttls", "capabilities", "mechanisms",
            "login", "folder", "logout"
        ]
    );
    // The greeting came before TLS: its text is never shown as the server's.
    let greeting = c.json["steps"].as_array().unwrap().iter().find(|s| s["step"] == "greeting").unwrap();
    assert!(!greeting["detail"].as_str().unwrap().contains("Dovecot"), "{greeting}");

    assert_eq!(r.listing(&user, "INBOX"), before, "a check must not change the mailbox");
}

#[test]
fn a_good_pop3_mailbox_and_smtp_queue_pass_every_step() {
    let c = check("pop3s", &good("pop3", "RIG_POP3S_PORT", true), true);
    assert_eq!(c.out.status.code(), Some(0), "{}", c.text);
    assert_eq!(steps(&c).last().map(String::as_str), Some("logout"));
    assert!(steps(&c).contains(&"folder".to_string()) && steps(&c).contains(&"login".to_string()), "{}", c.text);
    assert_eq!(c.json["folders"][0]["folder"], "INBOX");
    assert!(c.json["folders"][0]["messages"].is_u64());

    let c = check("submission", &good("smtp", "RIG_SUBMISSION_PORT", false), true);
    assert_eq!(c.out.status.code(), Some(0), "{}", c.text);
    assert_eq!(
        steps(&c),
        [
            "settings", "resolve", "connect", "greeting", "capabilities", "starttls", "capabilities", "mechanisms",
            "login", "envelope", "reset", "logout"
        ]
    );
    let c = check("smtps", &good("smtp", "RIG_SMTPS_PORT", true), true);
    assert_eq!(c.out.status.code(), Some(0), "{}", c.text);
    assert!(steps(&c).contains(&"tls".to_string()) && steps(&c).contains(&"reset".to_string()), "{}", c.text);
}

#[test]
fn a_wrong_port_stops_at_connect() {
    // Nothing listens on 10999 in the rig.
    let mut s = good("imap", "RIG_IMAPS_PORT", true);
    s.port = 10999;
    let c = check("wrong-port", &s, true);
    assert_failed_at(&c, "connect", &["refused", "port"], &["abgelehnt", "Port"]);
}

#[test]
fn an_unknown_host_name_stops_at_resolve() {
    // ".invalid" never resolves (RFC 2606).
    let mut s = good("imap", "RIG_IMAPS_PORT", true);
    s.host = "imap.no-such-provider.invalid";
    let c = check("unknown-host", &s, true);
    assert_failed_at(&c, "resolve", &["does not exist in DNS", "spelling"], &["existiert im DNS nicht"]);
}

#[test]
fn tls_on_for_a_starttls_port_stops_at_tls() {
    let c = check("tls-on-starttls-port", &good("imap", "RIG_IMAP_STARTTLS_PORT", true), true);
    assert_failed_at(&c, "tls", &["clear text", "TLS switch off"], &["TLS-Schalter aus"]);
}

#[test]
fn tls_off_for_a_tls_port_stops_at_greeting() {
    let c = check("tls-off-tls-port", &good("pop3", "RIG_POP3S_PORT", false), true);
    assert_failed_at(&c, "greeting", &["no greeting", "TLS switch on"], &["TLS-Schalter an"]);
}

#[test]
fn a_wrong_password_stops_at_login_for_every_protocol() {
    for (protocol, key, tls) in
        [("imap", "RIG_IMAPS_PORT", true), ("pop3", "RIG_POP3_STLS_PORT", false), ("smtp", "RIG_SUBMISSION_PORT", false)]
    {
        let mut s = good(protocol, key, tls);
        s.password = "Not-The-Password-1!".into();
        let c = check(&format!("wrong-password-{protocol}"), &s, true);
        assert_failed_at(&c, "login", &["user name", "password", "app password"], &["Benutzername", "Kennwort"]);
        assert!(steps(&c).contains(&"mechanisms".to_string()), "{protocol}: {}", c.text);
    }
}

#[test]
fn an_untrusted_certificate_stops_at_tls_or_starttls() {
    // Without the rig's CA the server's certificate has an unknown issuer.
    let c = check("untrusted-implicit", &good("imap", "RIG_IMAPS_PORT", true), false);
    assert_failed_at(&c, "tls", &["certificate authority"], &["Zertifizierungsstelle"]);
    let c = check("untrusted-starttls", &good("smtp", "RIG_SUBMISSION_PORT", false), false);
    assert_failed_at(&c, "starttls", &["certificate authority"], &["Zertifizierungsstelle"]);
}

#[test]
fn a_missing_folder_stops_at_folder() {
    let dir = tmpdir("missing-folder");
    let s = good("imap", "RIG_IMAPS_PORT", true);
    let cfg = write_config(&dir, &s, true);
    let text = std::fs::read_to_string(&cfg).unwrap().replace("folders = [\"INBOX\"]", "folders = [\"INBOX\", \"No/Such/Folder\"]");
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(bin())
        .args(["check", "--json", "--mailbox", "m", "--config"])
        .arg(&cfg)
        .env("MAILPLUG_WASM", wasm_path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let last = json["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["step"], "folder", "{json}");
    assert!(last["error"].as_str().unwrap().contains("No/Such/Folder"), "{last}");
    assert!(last["action"]["en"].as_str().unwrap().contains("folder name"), "{last}");
    // INBOX was counted before the missing folder stopped the check.
    assert!(json["steps"].as_array().unwrap().iter().any(|s| s["step"] == "folder" && s["ok"] == true), "{json}");
}

#[test]
fn settings_that_cannot_work_stop_before_connecting() {
    // Port 993 with TLS off is named by validation; nothing connects.
    let mut s = good("imap", "RIG_IMAPS_PORT", false);
    s.port = 993;
    let c = check("settings", &s, true);
    assert_failed_at(&c, "settings", &["993"], &["993"]);
    assert_eq!(steps(&c), ["settings"]);
}
