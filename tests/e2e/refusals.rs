//! Ordinary SMTP refusals through the real .wasm against smtp2 (npm smtp-server, see
//! tests/rig/smtp2): recipients refused for now (451 4.2.1 Mailbox busy) and for good
//! (550 5.1.1 No such user), both at once, one accepted and one refused, and a message over
//! the server's SIZE limit over STARTTLS and implicit TLS; through the host library and
//! through `mailplug send --json`. Rig mailbox: box17 (logs in to smtp2 and stands in as
//! the inbound mailbox, which a send never contacts).

use std::path::Path;
use std::process::Output;

use mailplug_host::engine::Diagnosis;
use mailplug_host::error::{Kind, RefusalCause, Retry};
use mailplug_host::ops::{self, Outgoing};
use mailplug_host::store::NoSyncState;
use mailplug_host::{HostError, TenantConfig};
use mailplug_tests::{outgoing as message, smtp2_cli_config, unique_text as unique};
use mailplug_tests::{plugin, rig, run_mailplug, smtp2_spec, smtp2_spooled, smtp2_wait_spooled, tenant, test_box, ServerSpec};
use mailplug_tests::TempPath;

fn busy() -> &'static str {
    rig().get("RIG_SMTP2_BUSY_RCPT")
}

fn nouser() -> &'static str {
    rig().get("RIG_SMTP2_NOUSER_RCPT")
}

fn size_limit() -> u64 {
    rig().get("RIG_SMTP2_SIZE_LIMIT").parse().expect("RIG_SMTP2_SIZE_LIMIT")
}

/// A tenant whose queue sends through smtp2 as box17.
fn smtp2_tenant(tls: bool) -> TenantConfig {
    let r = rig();
    let (user, pw) = test_box(17);
    let inbound = ServerSpec::new("localhost", r.port("RIG_IMAPS_PORT"), true, &user, &pw);
    tenant("imap", &inbound, &smtp2_spec(tls, &user, &pw), true)
}

/// A body that makes the message bigger than smtp2's SIZE limit.
fn oversized_body() -> String {
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n".repeat((size_limit() / 64 + 1024) as usize)
}

async fn explained(cfg: &TenantConfig, e: &HostError) -> Diagnosis {
    let mut instance = ops::instance_for(plugin(), cfg).await.expect("instance");
    mailplug_host::check::explain(&mut instance, e, mailplug_host::engine::Stage::Connect).await.expect("an explanation")
}

/// What today's main said for these refusals, which must never be said again.
#[track_caller]
fn assert_not_a_protocol_error(shown: &str) {
    for wrong in ["protocol error", "port belongs to the protocol", "give this message to the provider", "unerwartet", "Raise the limit", "Erhöhen Sie"] {
        assert!(!shown.contains(wrong), "{wrong:?} in: {shown}");
    }
}

/// The recipients a refusal reports: (address, accepted, code, retry).
fn reported(e: &HostError) -> Vec<(String, bool, String, Option<Retry>)> {
    let HostError::Guest(g) = e else { panic!("not a guest error: {e}") };
    let r = g.refused.as_ref().unwrap_or_else(|| panic!("no refusal details: {e}"));
    r.recipients.iter().map(|x| (x.address.clone(), x.accepted, x.reply.code.clone(), x.retry.map(Retry::from))).collect()
}

#[tokio::test]
async fn every_recipient_refused_is_an_ordinary_refusal_with_per_recipient_advice() {
    for tls in [false, true] {
        let cfg = smtp2_tenant(tls);
        let cases: [(&[&str], Retry); 3] = [(&[busy()], Retry::Later), (&[nouser()], Retry::FixFirst), (&[busy(), nouser()], Retry::Later)];
        for (to, retry) in cases {
            let what = format!("refused {to:?} tls={tls}");
            let e = ops::send(plugin(), &cfg, "q", &message(to, &what), &NoSyncState).await.expect_err(&what);
            let HostError::Guest(g) = &e else { panic!("{what}: {e}") };
            assert_eq!((g.kind, e.retry()), (Kind::Refused, retry), "{what}: {e}");
            assert!(matches!(g.refused.as_ref().map(|r| &r.cause), Some(RefusalCause::Recipients)), "{what}");
            assert!(g.message_id.as_deref().is_some_and(|m| m.contains('@')), "{what}: the Message-ID is known: {e}");
            let want: Vec<(String, bool, String, Option<Retry>)> = to
                .iter()
                .map(|&a| {
                    let (code, advice) = if a == busy() { ("451", Retry::Later) } else { ("550", Retry::FixFirst) };
                    (a.to_string(), false, code.to_string(), Some(advice))
                })
                .collect();
            assert_eq!(reported(&e), want, "{what}");
            let line = e.to_string();
            assert!(line.starts_with("refused by the server during envelope"), "{what}: {line}");
            if to.contains(&busy()) {
                assert!(line.contains(&format!("<{}> \"451 4.2.1 Mailbox busy\" (temporary: try again later)", busy())), "{line}");
            }
            if to.contains(&nouser()) {
                assert!(line.contains(&format!("<{}> \"550 5.1.1 No such user\" (permanent", nouser())), "{line}");
            }
            let d = explained(&cfg, &e).await;
            let shown = format!("{line}\n{}\n{}\n{}\n{}", d.cause.en, d.action.en, d.cause.de, d.action.de);
            assert_not_a_protocol_error(&shown);
            for a in to {
                assert!(d.cause.en.contains(&format!("<{a}>")) && d.cause.de.contains(&format!("<{a}>")), "{what}: {shown}");
            }
            let (en, de) = match retry {
                _ if to.len() == 2 => ("Correct or remove the permanently refused addresses", "Korrigieren oder entfernen Sie zuerst"),
                Retry::Later => ("Send the message again later", "Senden Sie die Nachricht später erneut"),
                _ => ("Correct or remove the refused addresses", "Korrigieren oder entfernen Sie die abgelehnten Adressen"),
            };
            assert!(d.action.en.starts_with(en) && d.action.de.starts_with(de), "{what}: {shown}");
            let mid = g.message_id.as_deref().expect("Message-ID");
            assert!(smtp2_spooled(mid).is_none(), "{what}: nothing may reach the spool");
        }
    }
}

#[tokio::test]
async fn one_accepted_and_one_refused_delivers_to_the_accepted_and_reports_the_refused() {
    let cfg = smtp2_tenant(false);
    let accepted = "someone@smtp2.test";
    for refused in [busy(), nouser()] {
        let what = format!("accepted + {refused}");
        let sent = ops::send(plugin(), &cfg, "q", &message(&[accepted, refused], &what), &NoSyncState)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let got: Vec<(&str, bool, &str, Option<Retry>)> = sent
            .report
            .recipients
            .iter()
            .map(|x| (x.address.as_str(), x.accepted, x.reply.code.as_str(), x.retry.map(Retry::from)))
            .collect();
        let (code, advice) = if refused == busy() { ("451", Retry::Later) } else { ("550", Retry::FixFirst) };
        assert_eq!(got, [(accepted, true, "250", None), (refused, false, code, Some(advice))], "{what}");
        let spooled = smtp2_wait_spooled(&sent.message_id).await;
        assert_eq!(spooled["rcpt_to"], serde_json::json!([accepted]), "{what}: only the accepted recipient got it: {spooled}");
    }
}

#[tokio::test]
async fn a_message_over_the_servers_size_limit_is_the_providers_limit() {
    for tls in [false, true] {
        let cfg = smtp2_tenant(tls);
        let what = format!("oversized tls={tls}");
        let msg = Outgoing { to: vec!["someone@smtp2.test".into()], subject: unique(&what), text_body: oversized_body() };
        let e = ops::send(plugin(), &cfg, "q", &msg, &NoSyncState).await.expect_err(&what);
        let HostError::Guest(g) = &e else { panic!("{what}: {e}") };
        assert_eq!((g.kind, e.retry()), (Kind::Refused, Retry::FixFirst), "{what}: {e}");
        let Some(RefusalCause::MessageTooBig(m)) = g.refused.as_ref().map(|r| r.cause) else { panic!("{what}: {e}") };
        assert_eq!(m.server_limit, Some(size_limit()), "{what}");
        assert!(m.size > size_limit(), "{what}: {m:?}");
        let d = explained(&cfg, &e).await;
        let shown = format!("{e}\n{}\n{}\n{}\n{}", d.cause.en, d.action.en, d.cause.de, d.action.de);
        assert_not_a_protocol_error(&shown);
        assert!(d.cause.en.contains("provider's") && d.cause.en.contains(&format!("at most {} bytes", size_limit())), "{shown}");
        assert!(d.action.en.contains("smaller message") && d.action.en.contains("ask the provider"), "{shown}");
        assert!(d.cause.de.contains("Anbieter") && d.action.de.contains("kleinere Nachricht"), "{shown}");
        assert!(smtp2_spooled(g.message_id.as_deref().expect("Message-ID")).is_none(), "{what}: nothing was sent");
    }
}

// ---- through the CLI ----

fn send_json(cfg: &Path, to: &[&str], body: (&str, &str)) -> (Output, serde_json::Value) {
    let mut args = vec!["send", "--config", cfg.to_str().expect("utf8"), "--queue", "out", "--subject", "refusal test", "--json"];
    for t in to {
        args.extend(["--to", t]);
    }
    args.extend([body.0, body.1]);
    let out = run_mailplug(&args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let json = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout:?}; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    (out, json)
}

fn temp_dir(name: &str) -> TempPath {
    TempPath::dir(&format!("refusals-{name}"))
}

#[test]
fn cli_send_json_prints_the_refusal_with_each_recipients_reply_and_advice() {
    let dir = temp_dir("rcpt");
    let cfg = smtp2_cli_config(&dir, "refusals", false);
    let (out, v) = send_json(&cfg, &[busy(), nouser()], ("--body", "hello"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{v}\n{stderr}");
    assert_eq!(v["sent"], false, "{v}");
    assert_eq!(v["retry"], "later", "{v}");
    assert_eq!(v["error"]["kind"], "refused", "{v}");
    assert_eq!(v["error"]["stage"], "envelope", "{v}");
    assert_eq!(v["refusal"]["cause"], "recipients", "{v}");
    assert!(v["message_id"].as_str().is_some_and(|m| m.contains('@')), "{v}");
    let rcpts: Vec<(&str, bool, &str, &str)> = v["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| (r["address"].as_str().unwrap(), r["accepted"].as_bool().unwrap(), r["code"].as_str().unwrap(), r["retry"].as_str().unwrap()))
        .collect();
    assert_eq!(rcpts, [(busy(), false, "451", "later"), (nouser(), false, "550", "fix-first")], "{v}");
    assert_eq!(v["recipients"][0]["reply"], "451 4.2.1 Mailbox busy", "{v}");
    assert!(v["explanation"]["action"]["de"].as_str().is_some_and(|a| a.contains("Korrigieren")), "{v}");
    assert_not_a_protocol_error(&format!("{v}\n{stderr}"));
    assert!(stderr.contains("retry:    later"), "{stderr}");
}

#[test]
fn cli_send_json_reports_a_partial_send_as_sent_with_the_refused_recipient() {
    let dir = temp_dir("partial");
    let cfg = smtp2_cli_config(&dir, "refusals", true);
    let (out, v) = send_json(&cfg, &["someone@smtp2.test", busy()], ("--body", "hello"));
    assert_eq!(out.status.code(), Some(0), "{v}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(v["sent"], true, "{v}");
    assert_eq!(v["recipients"][0]["accepted"], true, "{v}");
    assert_eq!(v["recipients"][0]["retry"], serde_json::Value::Null, "{v}");
    assert_eq!((v["recipients"][1]["code"].as_str(), v["recipients"][1]["retry"].as_str()), (Some("451"), Some("later")), "{v}");
}

#[test]
fn cli_send_json_prints_an_oversized_message_as_the_providers_limit() {
    for tls in [false, true] {
        let dir = temp_dir(&format!("size-{tls}"));
        let cfg = smtp2_cli_config(&dir, "refusals", tls);
        let body = dir.join("body.txt");
        std::fs::write(&body, oversized_body()).expect("body");
        let (out, v) = send_json(&cfg, &["someone@smtp2.test"], ("--body-file", body.to_str().expect("utf8")));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{v}\n{stderr}");
        assert_eq!((v["sent"].as_bool(), v["retry"].as_str(), v["error"]["kind"].as_str()), (Some(false), Some("fix-first"), Some("refused")), "{v}");
        assert_eq!(v["refusal"]["cause"], "message-too-big", "{v}");
        assert_eq!(v["refusal"]["server_limit"].as_u64(), Some(size_limit()), "{v}");
        assert!(v["refusal"]["size"].as_u64().is_some_and(|s| s > size_limit()), "{v}");
        assert!(stderr.contains("ask the provider") && stderr.contains("fragen Sie den Anbieter"), "{stderr}");
        assert_not_a_protocol_error(&format!("{v}\n{stderr}"));
    }
}
