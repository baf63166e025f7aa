//! Discovery for custom domains against the rig's real DNS server (dnsmasq on RIG_DNS) and
//! autoconfig web server (nginx, HTTPS on 127.0.0.1:443 with a certificate from the rig's CA):
//! `mailplug discover ADDRESS --dns IP:PORT`, and the library call behind it.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use mailplug_host::discovery::{self, DiscoveryOptions, Outcome};
use mailplug_tests::{plugin, rig, wasm_path};
use serde_json::Value;

fn bin() -> PathBuf {
    std::env::var("MAILPLUG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/var/tmp/mailplug-target/debug/mailplug"))
}

/// `mailplug discover` against the rig: its DNS server, its CA, loopback allowed.
fn discover(address: &str, extra: &[&str]) -> Output {
    let r = rig();
    Command::new(bin())
        .args(["discover", address, "--dns", r.get("RIG_DNS"), "--extra-ca", r.get("RIG_CA"), "--allow-loopback"])
        .args(extra)
        .env("MAILPLUG_WASM", wasm_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin().display()))
}

fn text(o: &Output) -> String {
    format!("status {:?}\nstdout:\n{}\nstderr:\n{}", o.status, String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json(address: &str) -> Value {
    let o = discover(address, &["--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&o)))
}

fn address(domain_key: &str) -> String {
    format!("support@{}", rig().get(domain_key))
}

/// (protocol, host, port, tls, trusted) of every candidate, in order.
fn candidates(v: &Value) -> Vec<(String, String, u64, bool, bool)> {
    v["candidates"]
        .as_array()
        .expect("candidates")
        .iter()
        .map(|c| {
            (
                c["protocol"].as_str().unwrap().to_string(),
                c["host"].as_str().unwrap().to_string(),
                c["port"].as_u64().unwrap(),
                c["tls"].as_bool().unwrap(),
                c["trusted"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn cand(p: &str, h: &str, port: u64, tls: bool, trusted: bool) -> (String, String, u64, bool, bool) {
    (p.to_string(), h.to_string(), port, tls, trusted)
}

/// The text output is a configuration (findings as comments, then the snippet): it must load.
fn loads(stdout: &[u8]) -> mailplug_host::TenantConfig {
    let snippet = String::from_utf8_lossy(stdout).into_owned();
    let toml = format!("tenant = \"d\"\nlicensed = true\n{snippet}");
    mailplug_host::TenantConfig::parse(&toml, "discovered.toml", std::path::Path::new("/tmp"), &|v| {
        (v == "MAILBOX_PASSWORD").then(|| "a-password".to_string())
    })
    .unwrap_or_else(|e| panic!("the snippet must load: {e}\n{snippet}"))
}

#[test]
fn google_workspace_domain_by_mx() {
    let v = json(&address("RIG_DISCOVER_WORKSPACE_DOMAIN"));
    assert_eq!(v["preset"], "gmail", "{v}");
    assert_eq!(v["trusted"], true, "{v}");
    assert_eq!(
        candidates(&v),
        [
            cand("imap", "imap.gmail.com", 993, true, true),
            cand("pop3", "pop.gmail.com", 995, true, true),
            cand("smtp", "smtp.gmail.com", 587, false, true),
        ]
    );
    // The most preferred MX (preference 1) is named as the source.
    assert!(v["candidates"][0]["source"].as_str().unwrap().starts_with("MX aspmx.l.google.com -> "), "{v}");

    let o = discover(&address("RIG_DISCOVER_WORKSPACE_DOMAIN"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let cfg = loads(&o.stdout);
    assert_eq!(cfg.mailboxes[0].server.host, "imap.gmail.com");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("SUGGESTION"), "{}", text(&o));
}

#[test]
fn microsoft_365_domain_by_mx() {
    let v = json(&address("RIG_DISCOVER_M365_DOMAIN"));
    assert_eq!((v["preset"].as_str(), v["trusted"].as_bool()), (Some("microsoft365"), Some(true)), "{v}");
    assert_eq!(candidates(&v)[0], cand("imap", "outlook.office365.com", 993, true, true));
    assert_eq!(candidates(&v)[2], cand("smtp", "smtp.office365.com", 587, false, true));
    // OAuth2 only: the snippet names an [oauth.microsoft] client, and still loads.
    let o = discover(&address("RIG_DISCOVER_M365_DOMAIN"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let cfg = loads(&o.stdout);
    assert_eq!(cfg.queues[0].smtp.oauth.as_deref(), Some("microsoft"));
}

#[test]
fn srv_records_in_priority_then_weight_order() {
    let v = json(&address("RIG_DISCOVER_SRV_DOMAIN"));
    assert_eq!(v["preset"], Value::Null);
    assert_eq!(v["trusted"], false, "suggestions must be marked: {v}");
    assert_eq!(
        candidates(&v),
        [
            // Priority 0: TLS from the first byte before STARTTLS (which has the higher weight).
            cand("imap", "imap-main.srv-customer.test", 993, true, false),
            cand("imap", "imap-main.srv-customer.test", 143, false, false),
            // Priority 10: weight 60 before weight 5.
            cand("imap", "imap-heavy.srv-customer.test", 993, true, false),
            cand("imap", "imap-light.srv-customer.test", 993, true, false),
            // Submission has the lower priority than submissions.
            cand("smtp", "smtp.srv-customer.test", 587, false, false),
            cand("smtp", "smtp.srv-customer.test", 465, true, false),
        ],
        "{v}"
    );
    // _pop3s has target "." (not offered, no problem); _pop3 has port 0 (refused, reported).
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["source"], "SRV _pop3._tcp.srv-customer.test");
    assert_eq!(problems[0]["kind"], "invalid-input");
    assert!(problems[0]["message"].as_str().unwrap().contains("port 0"), "{v}");

    let o = discover(&address("RIG_DISCOVER_SRV_DOMAIN"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("SUGGESTION TO CONFIRM"), "{out}");
    let cfg = loads(&o.stdout);
    assert_eq!((cfg.mailboxes[0].server.host.as_str(), cfg.mailboxes[0].server.port), ("imap-main.srv-customer.test", 993));
    assert_eq!(cfg.queues[0].smtp.port, 587);
}

#[test]
fn autoconfig_over_https_with_placeholders() {
    let v = json(&address("RIG_DISCOVER_AUTOCONFIG_DOMAIN"));
    assert_eq!(v["trusted"], false, "{v}");
    assert_eq!(
        candidates(&v),
        [
            cand("imap", "imap.autoconfig-customer.test", 993, true, false),
            // The plain POP3 server of the document is never suggested.
            cand("pop3", "pop.autoconfig-customer.test", 110, false, false),
            cand("smtp", "smtp.autoconfig-customer.test", 465, true, false),
        ],
        "{v}"
    );
    assert_eq!(v["candidates"][0]["username"], "support@autoconfig-customer.test");
    assert_eq!(v["candidates"][2]["username"], "support", "%EMAILLOCALPART%: {v}");
    let source = v["candidates"][0]["source"].as_str().unwrap();
    assert!(source.starts_with("autoconfig https://autoconfig.autoconfig-customer.test/mail/config-v1.1.xml?emailaddress="), "{source}");
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    // The well-known URL answered 404: not found, not a failure.
    let lookups = v["lookups"].as_array().unwrap();
    let well_known = lookups.iter().find(|l| l["lookup"].as_str().unwrap().contains("/.well-known/")).unwrap();
    assert_eq!(well_known["outcome"], "not-found", "{v}");

    let o = discover(&address("RIG_DISCOVER_AUTOCONFIG_DOMAIN"), &[]);
    assert!(o.status.success(), "{}", text(&o));
    let cfg = loads(&o.stdout);
    assert_eq!(cfg.queues[0].smtp.username, "support");
    // nginx really served it.
    let log = std::fs::read_to_string(rig().get("RIG_NGINX_ACCESS_LOG")).unwrap_or_default();
    assert!(log.contains("GET /mail/config-v1.1.xml?emailaddress=support%40autoconfig-customer.test"), "{log}");
}

#[test]
fn malformed_autoconfig_is_reported_and_the_other_source_used() {
    let v = json(&address("RIG_DISCOVER_BROKEN_DOMAIN"));
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert!(problems[0]["source"].as_str().unwrap().starts_with("autoconfig https://autoconfig.broken-autoconfig.test/"), "{v}");
    let message = problems[0]["message"].as_str().unwrap();
    assert!(message.contains("malformed") && message.contains("</outgoingServer> closes <incomingServer>"), "{message}");
    // The well-known document of the same domain still gives candidates.
    assert_eq!(
        candidates(&v),
        [cand("imap", "mail.broken-autoconfig.test", 993, true, false), cand("smtp", "mail.broken-autoconfig.test", 587, false, false)]
    );
    let o = discover(&address("RIG_DISCOVER_BROKEN_DOMAIN"), &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("# problem (invalid-input) in autoconfig https://autoconfig.broken-autoconfig.test/"), "{}", text(&o));
    loads(&o.stdout);
}

#[test]
fn hostile_values_are_refused() {
    let v = json(&address("RIG_DISCOVER_HOSTILE_DOMAIN"));
    assert!(candidates(&v).is_empty(), "{v}");
    assert_eq!(v["snippet"], Value::Null);
    let messages: Vec<&str> = v["problems"].as_array().unwrap().iter().map(|p| p["message"].as_str().unwrap()).collect();
    assert_eq!(messages.len(), 2, "{v}");
    assert!(messages[0].contains("spaces or line breaks"), "{messages:?}");
    assert!(messages[1].contains("port '70000'"), "{messages:?}");
    // Nothing usable: exit 1 with what to do, and no line of the output carries the injection.
    let o = discover(&address("RIG_DISCOVER_HOSTILE_DOMAIN"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("by hand"), "{}", text(&o));
    let all = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!all.lines().any(|l| l.starts_with("X-Injected")), "{all}");
}

#[test]
fn private_autoconfig_addresses_are_not_fetched() {
    let v = json(&address("RIG_DISCOVER_PRIVATE_DOMAIN"));
    let lookups = v["lookups"].as_array().unwrap();
    let get = lookups.iter().find(|l| l["lookup"].as_str().unwrap().contains("autoconfig.private-autoconfig.test")).unwrap();
    assert_eq!(get["outcome"], "failed");
    assert!(get["detail"].as_str().unwrap().contains("10.255.0.1, a private or local address"), "{v}");
}

#[test]
fn loopback_and_untrusted_certificates_need_explicit_test_options() {
    let r = rig();
    let addr = address("RIG_DISCOVER_AUTOCONFIG_DOMAIN");
    let run = |args: &[&str]| {
        let o = Command::new(bin())
            .args(["discover", &addr, "--json", "--dns", r.get("RIG_DNS")])
            .args(args)
            .env("MAILPLUG_WASM", wasm_path())
            .output()
            .expect("runs");
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
        let get = v["lookups"].as_array().unwrap().iter().find(|l| l["lookup"].as_str().unwrap().contains("autoconfig.autoconfig-customer")).cloned();
        (v, get.expect("the autoconfig lookup"))
    };
    // Without --allow-loopback the rig's 127.0.0.1 is refused like any local address.
    let (v, get) = run(&["--extra-ca", r.get("RIG_CA")]);
    assert!(candidates(&v).is_empty(), "{v}");
    assert!(get["detail"].as_str().unwrap().contains("127.0.0.1, a private or local address"), "{get}");
    // Without the rig's CA the certificate is not trusted: a failed lookup, not a suggestion.
    let (v, get) = run(&["--allow-loopback"]);
    assert!(candidates(&v).is_empty(), "{v}");
    assert_eq!(get["outcome"], "failed");
    assert!(get["detail"].as_str().unwrap().to_lowercase().contains("certificate"), "{get}");
}

#[tokio::test]
async fn library_call_reports_every_lookup() {
    let r = rig();
    let opts = DiscoveryOptions {
        nameserver: Some(r.get("RIG_DNS").parse().expect("RIG_DNS")),
        lookup_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(15),
        extra_ca: Some(PathBuf::from(r.get("RIG_CA"))),
        allow_loopback: true,
    };
    let mut instance = plugin().instantiate(64 << 20, 2000).await.expect("instance");
    let report = discovery::discover(&mut instance, &address("RIG_DISCOVER_SRV_DOMAIN"), &opts).await.expect("discovery");
    // 1 MX, 6 SRV names, 2 autoconfig URLs: each reported.
    assert_eq!(report.lookups.len(), 9);
    assert_eq!(report.lookups[0].lookup, "MX srv-customer.test");
    assert_eq!(report.lookups[0].outcome, Outcome::Found(1));
    let imaps = report.lookups.iter().find(|l| l.lookup == "SRV _imaps._tcp.srv-customer.test").unwrap();
    assert_eq!(imaps.outcome, Outcome::Found(3));
    assert!(report.lookups.iter().filter(|l| l.lookup.starts_with("GET ")).all(|l| l.outcome == Outcome::NotFound), "{:?}", report.lookups);
    assert!(!report.trusted());
    let (inbound, outbound) = report.best();
    assert_eq!(inbound.map(|c| c.host.as_str()), Some("imap-main.srv-customer.test"));
    assert_eq!(outbound.map(|c| c.port), Some(587));

    // A malformed address is the one error of the whole call.
    let e = discovery::discover(&mut instance, "not-an-address", &opts).await.unwrap_err();
    assert!(e.to_string().contains("no '@'"), "{e}");
}
