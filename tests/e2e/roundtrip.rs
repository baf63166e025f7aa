//! Every combination of {SMTP STARTTLS, SMTP implicit TLS} x {IMAP implicit TLS, IMAP STARTTLS,
//! POP3 implicit TLS, POP3 STLS}: a message sent with Basic auth through real Postfix arrives
//! in the real Dovecot mailbox byte for byte, headers and body.

use std::time::Duration;

use mailplug_host::ops::{self, Outgoing};
use mailplug_host::store::{MemorySink, NoSyncState};
use mailplug_tests::{contains, plugin, rig, tenant, ServerSpec};

#[derive(Debug, Clone, Copy)]
enum Smtp {
    Starttls,
    ImplicitTls,
}

#[derive(Debug, Clone, Copy)]
enum Inbound {
    ImapImplicitTls,
    ImapStarttls,
    Pop3ImplicitTls,
    Pop3Stls,
}

fn unique() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}-{}", t.as_nanos(), std::process::id())
}

async fn roundtrip(smtp: Smtp, inbound: Inbound) {
    let r = rig();
    let smtp_spec = match smtp {
        Smtp::Starttls => ServerSpec::new("localhost", r.port("RIG_SUBMISSION_PORT"), false, r.user("AGENT"), r.pass("AGENT")),
        Smtp::ImplicitTls => ServerSpec::new("localhost", r.port("RIG_SMTPS_PORT"), true, r.user("AGENT"), r.pass("AGENT")),
    };
    let (proto, port, tls) = match inbound {
        Inbound::ImapImplicitTls => ("imap", r.port("RIG_IMAPS_PORT"), true),
        Inbound::ImapStarttls => ("imap", r.port("RIG_IMAP_STARTTLS_PORT"), false),
        Inbound::Pop3ImplicitTls => ("pop3", r.port("RIG_POP3S_PORT"), true),
        Inbound::Pop3Stls => ("pop3", r.port("RIG_POP3_STLS_PORT"), false),
    };
    let in_spec = ServerSpec::new("localhost", port, tls, r.user("CUSTOMER"), r.pass("CUSTOMER"));
    let cfg = tenant(proto, &in_spec, &smtp_spec, true);

    let subject = format!("Roundtrip {smtp:?} / {inbound:?} / Grüße {}", unique());
    // Lines that need dot-stuffing, non-ASCII text, a long line, and an empty last line.
    let body = format!(
        "Hello,\n.leading dot\n..two dots\n.\nUmlaute: äöü ß, Emoji: 📬\n{}\nRegards\n",
        "x".repeat(300)
    );
    let msg = Outgoing { to: vec![r.user("CUSTOMER").to_string()], subject: subject.clone(), text_body: body };
    let sent = ops::send(plugin(), &cfg, "q", &msg, &NoSyncState).await.unwrap_or_else(|e| panic!("send failed: {e}"));
    assert!(sent.report.final_reply.code.starts_with('2'), "final reply {:?}", sent.report.final_reply);
    assert!(sent.report.recipients.iter().all(|x| x.accepted));

    // Postfix delivers asynchronously: poll, bounded.
    let mid = sent.message_id.as_bytes().to_vec();
    for _ in 0..60 {
        let mut sink = MemorySink::default();
        ops::fetch(plugin(), &cfg, "inbox", &mut sink, &NoSyncState)
            .await
            .unwrap_or_else(|e| panic!("fetch over {inbound:?} failed: {e}"));
        if let Some(m) = sink.messages.iter().find(|m| contains(&m.raw, &mid)) {
            // The server prepends trace headers (Return-Path, Delivered-To, Received); everything
            // we composed must follow them unchanged.
            assert!(
                m.raw.ends_with(&sent.raw),
                "message changed in transit:\n--- sent ---\n{}\n--- fetched ---\n{}",
                String::from_utf8_lossy(&sent.raw),
                String::from_utf8_lossy(&m.raw)
            );
            assert!(sink.commits >= 1, "the host must have been asked to commit before the session ended");
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("message {} never arrived over {inbound:?}", sent.message_id);
}

macro_rules! matrix {
    ($($name:ident: $smtp:ident, $inbound:ident;)*) => {$(
        #[tokio::test]
        async fn $name() {
            roundtrip(Smtp::$smtp, Inbound::$inbound).await;
        }
    )*};
}

matrix! {
    smtp_starttls_to_imap_implicit_tls: Starttls, ImapImplicitTls;
    smtp_starttls_to_imap_starttls: Starttls, ImapStarttls;
    smtp_starttls_to_pop3_implicit_tls: Starttls, Pop3ImplicitTls;
    smtp_starttls_to_pop3_stls: Starttls, Pop3Stls;
    smtp_implicit_tls_to_imap_implicit_tls: ImplicitTls, ImapImplicitTls;
    smtp_implicit_tls_to_imap_starttls: ImplicitTls, ImapStarttls;
    smtp_implicit_tls_to_pop3_implicit_tls: ImplicitTls, Pop3ImplicitTls;
    smtp_implicit_tls_to_pop3_stls: ImplicitTls, Pop3Stls;
}
