//! The configuration's parsing and validation.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<TenantConfig, ConfigError> {
    TenantConfig::parse(text, "t.toml", Path::new("/cfg"), &|v| (v == "PW").then(|| "Hunter2-secret".to_string()))
}

const GOOD: &str = r#"
tenant = "acme"
licensed = true
[[mailbox]]
name = "support"
address = "support@example.test"
protocol = "imap"
host = "localhost"
port = 993
tls = true
username = "support@example.test"
password_env = "PW"
[[queue]]
name = "q"
mailboxes = ["support"]
[queue.smtp]
host = "localhost"
port = 587
tls = false
username = "support@example.test"
password_env = "PW"
"#;

#[test]
fn good_config_loads_with_security_from_tls_switch() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.mailboxes[0].server.security, Security::ImplicitTls);
    assert_eq!(c.queues[0].smtp.security, Security::Starttls);
    assert_eq!(c.mailboxes[0].server.secret.expose(), "Hunter2-secret");
    assert_eq!(c.database, Path::new("/cfg/mailplug.sqlite3"));
    assert_eq!(c.mailboxes[0].after_fetch, AfterFetch::Keep);
    assert_eq!(c.mailboxes[0].first_sync, FirstSync::NewOnly);
    assert!(!format!("{c:?}").contains("Hunter2"), "Debug must not print secrets");
}

#[test]
fn inline_password_is_refused_naming_the_field() {
    let text = GOOD.replacen("password_env = \"PW\"", "password = \"x\"", 1);
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("mailbox[0]") && e.contains("`password`"), "{e}");
}

#[test]
fn unknown_field_and_bad_values_are_named() {
    let e = parse(&GOOD.replace("protocol = \"imap\"", "protocol = \"smtp\"")).unwrap_err().to_string();
    assert!(e.contains("protocol") || e.contains("smtp"), "{e}");
    let e = parse(&GOOD.replace("port = 993", "port = 0")).unwrap_err().to_string();
    assert!(e.contains("`port`"), "{e}");
    let e = parse(&GOOD.replace("mailboxes = [\"support\"]", "mailboxes = [\"nope\"]")).unwrap_err().to_string();
    assert!(e.contains("`mailboxes`") && e.contains("nope"), "{e}");
    let e = parse(&GOOD.replace("password_env = \"PW\"", "password_env = \"MISSING\"")).unwrap_err().to_string();
    assert!(e.contains("MISSING"), "{e}");
    let e = parse(&GOOD.replace("tenant = \"acme\"", "tenant = \"acme\"\nbogus = 1")).unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn after_fetch_and_first_sync_are_validated() {
    let with = |extra: &str| parse(&GOOD.replacen("protocol = \"imap\"", &format!("protocol = \"imap\"\n{extra}"), 1));
    let c = with("after_fetch = \"move\"\nmove_to = \"Archive\"\nfirst_sync = \"newest\"\nnewest = 20").unwrap();
    assert_eq!(c.mailboxes[0].after_fetch, AfterFetch::MoveTo("Archive".into()));
    assert_eq!(c.mailboxes[0].first_sync, FirstSync::Newest(20));
    assert!(with("after_fetch = \"move\"").unwrap_err().to_string().contains("move_to"));
    assert!(with("after_fetch = \"move\"\nmove_to = \"INBOX\"").unwrap_err().to_string().contains("is fetched"));
    assert!(with("move_to = \"Archive\"").unwrap_err().to_string().contains("only applies"));
    assert!(with("first_sync = \"newest\"").unwrap_err().to_string().contains("newest = N"));
    assert!(with("after_fetch = \"sometimes\"").unwrap_err().to_string().contains("after_fetch"));
    let pop = GOOD.replacen("protocol = \"imap\"", "protocol = \"pop3\"\nafter_fetch = \"mark-seen\"", 1);
    assert!(parse(&pop).unwrap_err().to_string().contains("POP3 can only keep or delete"));
}

#[test]
fn save_sent_needs_imap_and_a_folder_that_is_not_fetched() {
    let with = |extra: &str| parse(&GOOD.replacen("protocol = \"imap\"", &format!("protocol = \"imap\"\n{extra}"), 1));
    assert_eq!(with("save_sent = \"Sent Items\"").unwrap().mailboxes[0].save_sent.as_deref(), Some("Sent Items"));
    assert_eq!(parse(GOOD).unwrap().mailboxes[0].save_sent, None);
    for (extra, want) in [
        ("save_sent = \"INBOX\"", "is fetched"),
        ("save_sent = \"inbox\"", "is fetched"),
        ("folders = [\"Support\"]\nsave_sent = \"Support\"", "is fetched"),
        ("save_sent = \"\"", "control characters"),
        ("save_sent = \"Sent\\r\\nX\"", "control characters"),
    ] {
        let e = with(extra).unwrap_err().to_string();
        assert!(e.contains("`save_sent`") && e.contains(want), "{extra}: {e}");
    }
    let pop = GOOD.replacen("protocol = \"imap\"", "protocol = \"pop3\"\nsave_sent = \"Sent\"", 1);
    assert!(parse(&pop).unwrap_err().to_string().contains("needs an IMAP mailbox"));
}

#[test]
fn oauth2_with_password_is_refused() {
    let text = GOOD.replacen("password_env = \"PW\"", "auth = \"oauth2\"\npassword_env = \"PW\"", 1);
    let e = parse(&text).unwrap_err().to_string();
    assert!(e.contains("OAuth2 takes no password"), "{e}");
}

#[test]
fn plaintext_needs_explicit_opt_in_and_contradiction_is_refused() {
    let text = GOOD.replacen("tls = true", "tls = true\ninsecure_plaintext = true", 1);
    assert!(parse(&text).unwrap_err().to_string().contains("insecure_plaintext"));
    let text = GOOD.replacen("tls = true", "tls = false\ninsecure_plaintext = true", 1);
    assert_eq!(parse(&text).unwrap().mailboxes[0].server.security, Security::InsecurePlaintext);
}

#[test]
fn greeting_timeout_defaults_to_ten_seconds_and_never_exceeds_the_reply_timeout() {
    let with = |limits: &str| parse(&GOOD.replacen("licensed = true", &format!("licensed = true\n[limits]\n{limits}"), 1));
    assert_eq!(parse(GOOD).unwrap().limits.greeting_timeout_secs, 10);
    assert_eq!(with("greeting_timeout_secs = 2").unwrap().limits.greeting_timeout_secs, 2);
    // Not set: 10 s, or the reply timeout when that is shorter.
    assert_eq!(with("reply_timeout_secs = 3").unwrap().limits.greeting_timeout_secs, 3);
    let e = with("greeting_timeout_secs = 0").unwrap_err().to_string();
    assert!(e.contains("`limits.greeting_timeout_secs`") && e.contains("at least 1"), "{e}");
    let e = with("reply_timeout_secs = 5\ngreeting_timeout_secs = 30").unwrap_err().to_string();
    assert!(e.contains("`limits.greeting_timeout_secs`") && e.contains("`limits.reply_timeout_secs` (5)"), "{e}");
    let e = with("greeting_timeout = 5").unwrap_err().to_string();
    assert!(e.contains("greeting_timeout"), "{e}");
}

#[test]
fn webhook_needs_https_or_loopback_and_a_secret_from_env_or_file() {
    let secret = "wh-secret-0123456789abcdef";
    let env = move |v: &str| match v {
        "PW" => Some("Hunter2-secret".to_string()),
        "WH" => Some(secret.to_string()),
        "SHORT" => Some("short".to_string()),
        _ => None,
    };
    let with = |table: &str| TenantConfig::parse(&format!("{GOOD}\n[webhook]\n{table}"), "t.toml", Path::new("/cfg"), &env);
    assert!(parse(GOOD).unwrap().webhook.is_none());
    let c = with("url = \"https://hooks.example.com/mailplug?x=1\"\nsecret_env = \"WH\"").unwrap();
    let w = c.webhook.as_ref().unwrap();
    assert_eq!((w.url.as_str(), w.secret.expose(), w.timeout.as_secs()), ("https://hooks.example.com/mailplug?x=1", secret, 10));
    assert!(!format!("{c:?}").contains(secret), "Debug must not print the webhook secret");
    assert_eq!(with("url = \"http://127.0.0.1:9/h\"\nsecret_env = \"WH\"\ntimeout_secs = 3").unwrap().webhook.unwrap().timeout.as_secs(), 3);
    assert!(with("url = \"http://[::1]:9/h\"\nsecret_env = \"WH\"").is_ok());
    assert!(with("url = \"http://localhost/h\"\nsecret_env = \"WH\"").is_ok());
    // Plain http elsewhere only with the test receiver opt-in.
    let e = with("url = \"http://hooks.example.com/h\"\nsecret_env = \"WH\"").unwrap_err().to_string();
    assert!(e.contains("webhook") && e.contains("`url`") && e.contains("https"), "{e}");
    assert!(with("url = \"http://hooks.example.com/h\"\nsecret_env = \"WH\"\ninsecure_plaintext = true").is_ok());
    for (table, want) in [
        ("url = \"ftp://hooks.example.com/h\"\nsecret_env = \"WH\"", "`url`"),
        ("url = \"https://user:pw@hooks.example.com/h\"\nsecret_env = \"WH\"", "user name or password"),
        // The hand parser accepted these, and the deliverer refused them when it started.
        ("url = \"https://hooks.example.com:99999/h\"\nsecret_env = \"WH\"", "not a valid URL"),
        ("url = \"https://[::1/h\"\nsecret_env = \"WH\"", "not a valid URL"),
        ("url = \"https://hooks<example>.com/h\"\nsecret_env = \"WH\"", "not a valid URL"),
        ("url = \"hooks.example.com/h\"\nsecret_env = \"WH\"", "https://"),
        ("url = \"https://hooks.example.com/h\"", "`secret_env`"),
        ("url = \"https://hooks.example.com/h\"\nsecret = \"inline-secret-value-123\"", "not accepted inline"),
        ("url = \"https://hooks.example.com/h\"\nsecret_env = \"NOPE\"", "NOPE"),
        ("url = \"https://hooks.example.com/h\"\nsecret_env = \"SHORT\"", "shorter than 16"),
        ("url = \"https://hooks.example.com/h\"\nsecret_env = \"WH\"\nsecret_file = \"f\"", "not both"),
        ("url = \"https://hooks.example.com/h\"\nsecret_file = \"/nonexistent/wh\"", "`secret_file`"),
        ("url = \"https://hooks.example.com/h\"\nsecret_env = \"WH\"\ntimeout_secs = 0", "`timeout_secs`"),
        ("url = \"https://hooks.example.com/h\"\nsecret_env = \"WH\"\nbogus = 1", "bogus"),
    ] {
        let e = with(table).unwrap_err().to_string();
        assert!(e.contains(want), "{table}: {e}");
        assert!(!e.contains("inline-secret-value") && !e.contains(secret), "{e}");
    }
}

#[test]
fn idle_renew_defaults_to_25_minutes_and_stays_below_29() {
    let with = |limits: &str| parse(&GOOD.replacen("licensed = true", &format!("licensed = true\n[limits]\n{limits}"), 1));
    assert_eq!(parse(GOOD).unwrap().limits.idle_renew_secs, 1500);
    assert_eq!(with("idle_renew_secs = 2").unwrap().limits.idle_renew_secs, 2);
    assert_eq!(with("idle_renew_secs = 1740").unwrap().limits.idle_renew_secs, 1740);
    let e = with("idle_renew_secs = 1741").unwrap_err().to_string();
    assert!(e.contains("`limits.idle_renew_secs`") && e.contains("at most 1740"), "{e}");
    let e = with("idle_renew_secs = 0").unwrap_err().to_string();
    assert!(e.contains("`limits.idle_renew_secs`") && e.contains("at least 1"), "{e}");
}

#[test]
fn serve_keys_poll_interval_and_api_token_file() {
    let c = parse(GOOD).unwrap();
    assert_eq!(c.mailboxes[0].poll_interval_secs, DEFAULT_POLL_INTERVAL_SECS);
    assert!(c.api_token.is_none());
    let text = GOOD.replace("protocol = \"imap\"\n", "protocol = \"imap\"\npoll_interval_secs = 2\n");
    assert_eq!(parse(&text).unwrap().mailboxes[0].poll_interval_secs, 2);
    let zero = GOOD.replace("protocol = \"imap\"\n", "protocol = \"imap\"\npoll_interval_secs = 0\n");
    assert!(parse(&zero).unwrap_err().message.contains("poll_interval_secs"));

    let tmp = tempfile::Builder::new().prefix("mailplug-api-token-").tempdir().unwrap();
    let dir = tmp.path();
    let with_token = |token: &str| {
        let p = dir.join("t.token");
        std::fs::write(&p, token).unwrap();
        parse(&GOOD.replace("licensed = true\n", &format!("licensed = true\napi_token_file = \"{}\"\n", p.display())))
    };
    let c = with_token("a-long-enough-token-123\n").unwrap();
    assert_eq!(c.api_token.as_ref().map(|s| s.expose()), Some("a-long-enough-token-123"));
    assert_eq!(format!("{:?}", c.api_token), "Some(<redacted>)", "the token never prints");
    let short = with_token("short").unwrap_err();
    assert!(short.message.contains("api_token_file") && short.message.contains("16"), "{short}");
    assert!(!short.message.contains("short\""), "the token is not quoted: {short}");
    assert!(with_token("two words and more than 16").is_err());
    let missing = parse(&GOOD.replace("licensed = true\n", "licensed = true\napi_token_file = \"/nonexistent/t\"\n"));
    assert!(missing.unwrap_err().message.contains("cannot read"));
}

#[test]
fn serve_idle_is_on_by_default_and_can_be_turned_off() {
    assert!(parse(GOOD).unwrap().mailboxes[0].idle);
    let off = GOOD.replace("protocol = \"imap\"\n", "protocol = \"imap\"\nidle = false\n");
    assert!(!parse(&off).unwrap().mailboxes[0].idle);
    let bad = GOOD.replace("protocol = \"imap\"\n", "protocol = \"imap\"\nidle = \"no\"\n");
    assert!(parse(&bad).is_err(), "a typed value, not a string");
}

#[test]
fn every_secret_is_read_the_same_way_from_env_or_file() {
    let tmp = tempfile::Builder::new().prefix("mailplug-config-secrets-").tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("good"), "file-secret-0123456789\r\n").unwrap();
    std::fs::write(dir.join("empty"), "\n").unwrap();
    let env = |v: &str| match v {
        "PW" => Some("Hunter2-secret".to_string()),
        "WH" => Some("wh-secret-0123456789abcdef".to_string()),
        "BLANK" => Some(String::new()),
        _ => None,
    };
    let parse_in = |text: String| TenantConfig::parse(&text, "t.toml", &dir, &env);
    // (name of the secret, the config with `{src}` where its source goes)
    let oauth = "[oauth.g]\nprovider = \"google\"\nclient_id = \"id\"\n";
    let tables = [
        ("password", GOOD.replacen("password_env = \"PW\"", "{src}", 1)),
        ("secret", format!("{GOOD}\n[webhook]\nurl = \"https://hooks.example.com/h\"\n{{src}}")),
        ("client_secret", format!("{GOOD}\n{oauth}{{src}}")),
    ];
    for (name, table) in &tables {
        let with = |src: &str| parse_in(table.replace("{src}", src));
        let c = with(&format!("{name}_file = \"good\"")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let got = match *name {
            "password" => c.mailboxes[0].server.secret.expose().to_string(),
            "secret" => c.webhook.as_ref().unwrap().secret.expose().to_string(),
            _ => c.oauth_client("g").unwrap().client_secret.as_ref().unwrap().expose().to_string(),
        };
        assert_eq!(got, "file-secret-0123456789", "{name}: the file's line end is not part of the secret");
        for (src, want) in [
            (format!("{name}_env = \"NOPE\""), format!("`{name}_env` names the environment variable NOPE, which is not set or empty")),
            (format!("{name}_env = \"BLANK\""), "BLANK, which is not set or empty".to_string()),
            (format!("{name}_file = \"empty\""), format!("field `{name}_file`: {} is empty", dir.join("empty").display())),
            (format!("{name}_file = \"missing\""), format!("field `{name}_file`: cannot read {}", dir.join("missing").display())),
            (format!("{name}_env = \"WH\"\n{name}_file = \"good\""), format!("set either `{name}_env` or `{name}_file`, not both")),
        ] {
            let e = with(&src).map(|_| ()).unwrap_err().to_string();
            assert!(e.contains(&want), "{name} with {src}: {e}");
            assert!(!e.contains("file-secret") && !e.contains("wh-secret"), "{e}");
        }
    }
}
