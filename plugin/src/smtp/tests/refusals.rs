//! Ordinary refusals: recipients refused at RCPT TO (all of them, some of them, in a check),
//! the message over the server's size limit, and refusals of MAIL, DATA and the message data.

use super::*;
use crate::error::{RefusalCause, Retry};

#[test]
fn mixed_recipient_results_are_reported_and_the_message_sent() {
    for chunking in ALL {
        let mut s = envelope_sent(chunking);
        exchange(
            &mut s,
            b"250 2.1.0 Ok\r\n550 5.1.1 <ann@example.com>: Recipient address rejected: User unknown\r\n250 2.1.5 Ok\r\n354 go\r\n",
            DATA,
            chunking,
        );
        exchange(&mut s, b"250 2.0.0 Ok: queued as 9\r\n", b"QUIT\r\n", chunking);
        // The server hangs up instead of answering QUIT: still a success.
        let end = s.handle(Event::Closed, T0).unwrap();
        let [Action::Close, Action::Finished(Outcome::Sent(report))] = end.as_slice() else { panic!("{end:?}") };
        assert_eq!(
            report.recipients,
            [
                RecipientResult {
                    address: "ann@example.com".into(),
                    accepted: false,
                    reply: ServerReply::new("550", "5.1.1 <ann@example.com>: Recipient address rejected: User unknown"),
                    retry: Some(Retry::FixFirst),
                },
                RecipientResult { address: "bob@example.net".into(), accepted: true, reply: ServerReply::new("250", "2.1.5 Ok"), retry: None },
            ]
        );
    }
}

#[test]
fn no_recipient_accepted_resets_quits_and_fails() {
    for chunking in ALL {
        // Without PIPELINING: RSET, then QUIT, one at a time; DATA is never sent.
        let mut s = authenticating(session(Security::ImplicitTls), b"250-mx\r\n250 AUTH PLAIN\r\n", chunking);
        exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", chunking);
        exchange(&mut s, b"250 2.1.0 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", chunking);
        exchange(&mut s, b"550 5.1.1 User unknown\r\n", b"RCPT TO:<bob@example.net>\r\n", chunking);
        exchange(&mut s, b"553 5.7.1 Relay access denied\r\n", b"RSET\r\n", chunking);
        exchange(&mut s, b"250 2.0.0 Ok\r\n", b"QUIT\r\n", chunking);
        let e = server(&mut s, b"221 2.0.0 Bye\r\n", chunking).unwrap_err();
        assert_eq!((e.kind, e.stage), (ErrorKind::Refused, Stage::Envelope));
        // The reply shown is the refusal `explain` knows.
        assert_eq!(e.reply, Some(ServerReply::new("553", "5.7.1 Relay access denied")));
        assert!(e.message.contains("ann@example.com") && e.message.contains("bob@example.net"), "{}", e.message);
        assert_eq!(s.deadline(), None);
    }
}

#[test]
fn no_recipient_accepted_with_pipelining_sends_rset_and_quit_together() {
    let mut s = envelope_sent(Chunking::Whole);
    let reset = exchange(
        &mut s,
        b"250 2.1.0 Ok\r\n550 5.1.1 no\r\n550 5.1.1 no\r\n554 5.5.1 Error: no valid recipients\r\n",
        b"RSET\r\nQUIT\r\n",
        Chunking::Whole,
    );
    assert_eq!(writes(&reset), 1);
    let e = server(&mut s, b"250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n", Chunking::Whole).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Refused, Stage::Envelope));
    assert_eq!(e.reply.unwrap().code, "550");
}

#[test]
fn pipelined_data_accepted_without_recipients_never_completes_a_message() {
    let mut s = envelope_sent(Chunking::Whole);
    let e = server(&mut s, b"250 Ok\r\n550 no\r\n550 no\r\n354 go ahead\r\n", Chunking::Whole).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Refused, Stage::Envelope));
}

#[test]
fn size_limit_advertised_by_the_server_is_checked_before_mail() {
    let mut s = authenticating(session(Security::ImplicitTls), b"250-mx\r\n250-SIZE 10\r\n250 AUTH PLAIN\r\n", Chunking::Whole);
    let e = server(&mut s, AUTH_OK, Chunking::Whole).unwrap_err();
    assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::Refused, Stage::Envelope, Retry::FixFirst));
    let size = (DATA.len() - 4) as u64;
    assert_eq!(e.refusal.as_ref().map(|r| &r.cause), Some(&RefusalCause::MessageTooBig { size, server_limit: Some(10) }));
    assert!(e.message.contains("at most 10 bytes") && e.message.contains("set by the provider"), "{}", e.message);
    assert!(!e.message.contains("raise") && !e.message.contains("limit the message names"), "{}", e.message);
}

#[test]
fn refusals_at_mail_data_and_after_the_dot_retry_later_on_4xx_and_fix_first_on_5xx() {
    for chunking in ALL {
        for (reply, retry) in [(&b"451 4.3.0 Temporary lookup failure\r\n"[..], Retry::Later), (b"553 5.7.1 Sender not owned\r\n", Retry::FixFirst)] {
            let mut s = envelope_sent(chunking);
            let e = server(&mut s, reply, chunking).unwrap_err();
            assert_eq!((e.stage, e.retry), (Stage::Envelope, retry), "MAIL {chunking:?} {}", text(reply));
        }
        for (reply, retry) in [(&b"451 4.3.0 try later\r\n"[..], Retry::Later), (b"554 5.5.1 no DATA here\r\n", Retry::FixFirst)] {
            let mut s = envelope_sent(chunking);
            let replies = [&b"250 Ok\r\n250 Ok\r\n250 Ok\r\n"[..], reply].concat();
            let e = server(&mut s, &replies, chunking).unwrap_err();
            assert_eq!((e.stage, e.retry), (Stage::Data, retry), "DATA {chunking:?} {}", text(reply));
        }
        for (reply, retry) in [(&b"452 4.3.1 Insufficient system storage\r\n"[..], Retry::Later), (b"554 5.7.1 Message rejected as spam\r\n", Retry::FixFirst)] {
            let mut s = data_sent(chunking);
            let e = server(&mut s, reply, chunking).unwrap_err();
            assert_eq!((e.stage, e.retry), (Stage::Data, retry), "after the dot {chunking:?} {}", text(reply));
            assert!(e.message.contains("it was not sent"), "{}", e.message);
        }
    }
}

#[test]
fn all_recipients_refused_retries_later_when_any_refusal_was_temporary() {
    let cases: [(&[u8], Retry); 3] = [
        (b"250 Ok\r\n450 4.2.0 Greylisted\r\n451 4.3.0 try later\r\n554 5.5.1 no valid recipients\r\n", Retry::Later),
        (b"250 Ok\r\n450 4.2.0 Greylisted\r\n550 5.1.1 unknown\r\n554 5.5.1 no valid recipients\r\n", Retry::Later),
        (b"250 Ok\r\n550 5.1.1 unknown\r\n550 5.1.1 unknown\r\n554 5.5.1 no valid recipients\r\n", Retry::FixFirst),
    ];
    for (replies, retry) in cases {
        let mut s = envelope_sent(Chunking::Whole);
        exchange(&mut s, replies, b"RSET\r\nQUIT\r\n", Chunking::Whole);
        let e = server(&mut s, b"250 Ok\r\n221 Bye\r\n", Chunking::Whole).unwrap_err();
        assert_eq!((e.stage, e.retry), (Stage::Envelope, retry), "{}", text(replies));
    }
}

#[test]
fn hang_up_during_rset_still_reports_the_refused_recipients() {
    let mut s = authenticating(session(Security::ImplicitTls), b"250-mx\r\n250 AUTH PLAIN\r\n", Chunking::Whole);
    exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", Chunking::Whole);
    exchange(&mut s, b"250 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", Chunking::Whole);
    exchange(&mut s, b"450 4.2.0 Greylisted\r\n", b"RCPT TO:<bob@example.net>\r\n", Chunking::Whole);
    exchange(&mut s, b"450 4.2.0 Greylisted\r\n", b"RSET\r\n", Chunking::Whole);
    let e = s.handle(Event::Closed, T0).unwrap_err();
    assert_eq!((e.stage, e.retry), (Stage::Envelope, Retry::Later));
    assert!(e.message.contains("ann@example.com") && e.message.contains("Greylisted"), "{}", e.message);
}

#[test]
fn check_with_one_refused_recipient_resets_quits_and_fails_at_the_envelope() {
    for chunking in ALL {
        let mut s = authenticating(check_session(Security::ImplicitTls, basic(), &["ann@example.com", "bob@example.net"]), EHLO_TLS_CAPS, chunking);
        exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", chunking);
        exchange(&mut s, b"250 2.1.0 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", chunking);
        exchange(&mut s, b"250 2.1.5 Ok\r\n", b"RCPT TO:<bob@example.net>\r\n", chunking);
        // One refusal is enough to fail a check, though a send would go ahead for ann.
        let reset = exchange(&mut s, b"550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown\r\n", b"RSET\r\n", chunking);
        assert!(steps(&reset).is_empty(), "no envelope step: {reset:?}");
        exchange(&mut s, b"250 2.0.0 Ok\r\n", b"QUIT\r\n", chunking);
        let e = server(&mut s, b"221 2.0.0 Bye\r\n", chunking).unwrap_err();
        assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::Refused, Stage::Envelope, Retry::FixFirst));
        assert_eq!(e.reply, Some(ServerReply::new("550", "5.1.1 <bob@example.net>: Recipient address rejected: User unknown")));
        assert!(e.message.contains("refused 1 of 2 recipients") && e.message.contains("<bob@example.net> \"550 5.1.1"), "{}", e.message);
        let refusal = e.refusal.as_ref().expect("refusal details");
        assert_eq!(refusal.recipients.iter().map(|r| (r.accepted, r.retry)).collect::<Vec<_>>(), [(true, None), (false, Some(Retry::FixFirst))]);
        assert!(!e.message.contains("ann@"), "{}", e.message);
        assert_eq!(s.deadline(), None);
    }
    // The server hangs up during RSET: still the recipient refusal, and a temporary one.
    let mut s = authenticating(check_session(Security::ImplicitTls, basic(), &["ann@example.com"]), EHLO_TLS_CAPS, Chunking::Whole);
    exchange(&mut s, AUTH_OK, b"MAIL FROM:<agent@shop.example>\r\n", Chunking::Whole);
    exchange(&mut s, b"250 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", Chunking::Whole);
    exchange(&mut s, b"450 4.2.0 Greylisted\r\n", b"RSET\r\n", Chunking::Whole);
    let e = s.handle(Event::Closed, T0).unwrap_err();
    assert_eq!((e.stage, e.retry), (Stage::Envelope, Retry::Later));
    assert!(e.message.contains("Greylisted"), "{}", e.message);
}

/// A session at the pipelined envelope against a server like smtp2 (npm smtp-server).
fn smtp2_envelope(to: &[&str]) -> SmtpSession {
    let caps = b"250-smtp2.test Nice to meet you\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250-SIZE 1048576\r\n250 AUTH PLAIN LOGIN\r\n";
    let mut s = authenticating(session_with(Security::ImplicitTls, basic(), to), caps, Chunking::Whole);
    let mut envelope = format!("MAIL FROM:<agent@shop.example> SIZE={}\r\n", DATA.len() - 4);
    for t in to {
        envelope.push_str(&format!("RCPT TO:<{t}>\r\n"));
    }
    envelope.push_str("DATA\r\n");
    exchange(&mut s, AUTH_OK, envelope.as_bytes(), Chunking::Whole);
    s
}

#[test]
fn every_recipient_refused_is_an_ordinary_refusal_naming_each_reply() {
    let busy = "451 4.2.1 Mailbox busy\r\n";
    let nouser = "550 5.1.1 No such user\r\n";
    let no_rcpt = "503 5.5.1 Error: need RCPT command\r\n";
    let cases: [(&[&str], String, Retry); 3] = [
        (&["busy@smtp2.test"], format!("250 2.1.0 Accepted\r\n{busy}{no_rcpt}"), Retry::Later),
        (&["nouser@smtp2.test"], format!("250 2.1.0 Accepted\r\n{nouser}{no_rcpt}"), Retry::FixFirst),
        (&["busy@smtp2.test", "nouser@smtp2.test"], format!("250 2.1.0 Accepted\r\n{busy}{nouser}{no_rcpt}"), Retry::Later),
    ];
    for (to, replies, retry) in cases {
        for chunking in ALL {
            let mut s = smtp2_envelope(to);
            exchange(&mut s, replies.as_bytes(), b"RSET\r\nQUIT\r\n", chunking);
            let e = server(&mut s, b"250 2.0.0 Flushed\r\n221 Bye\r\n", chunking).unwrap_err();
            assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::Refused, Stage::Envelope, retry), "{to:?}: {e}");
            let refusal = e.refusal.as_ref().expect("refusal details");
            assert_eq!(refusal.cause, RefusalCause::Recipients);
            let got: Vec<(&str, bool, &str, Option<Retry>)> =
                refusal.recipients.iter().map(|r| (r.address.as_str(), r.accepted, r.reply.code.as_str(), r.retry)).collect();
            let want: Vec<(&str, bool, &str, Option<Retry>)> = to
                .iter()
                .map(|&a| if a.starts_with("busy") { (a, false, "451", Some(Retry::Later)) } else { (a, false, "550", Some(Retry::FixFirst)) })
                .collect();
            assert_eq!(got, want);
            assert!(e.message.contains("so the message was not sent"), "{}", e.message);
            if to.contains(&"busy@smtp2.test") {
                assert!(e.message.contains("<busy@smtp2.test> \"451 4.2.1 Mailbox busy\" (temporary: try again later)"), "{}", e.message);
            }
            if to.contains(&"nouser@smtp2.test") {
                assert!(e.message.contains("<nouser@smtp2.test> \"550 5.1.1 No such user\" (permanent: correct or remove the address)"), "{}", e.message);
            }
            let d = crate::diagnose::explain(&e);
            let all = format!("{e} | {} | {} | {} | {}", d.cause_en, d.action_en, d.cause_de, d.action_de);
            for wrong in ["protocol", "belongs to the protocol", "give this message to the provider", "unerwartet"] {
                assert!(!all.to_lowercase().contains(wrong), "{wrong:?}: {all}");
            }
            assert!(d.cause_de.contains("abgelehnt") && d.cause_de.contains("<") , "{}", d.cause_de);
        }
    }
}

#[test]
fn one_accepted_one_refused_sends_to_the_accepted_and_reports_the_refused() {
    let mut s = smtp2_envelope(&["ann@example.com", "busy@smtp2.test"]);
    exchange(&mut s, b"250 2.1.0 Accepted\r\n250 2.1.5 Accepted\r\n451 4.2.1 Mailbox busy\r\n354 End data with <CR><LF>.<CR><LF>\r\n", DATA, Chunking::Whole);
    exchange(&mut s, b"250 2.0.0 OK: message queued\r\n", b"QUIT\r\n", Chunking::Whole);
    let end = server(&mut s, b"221 Bye\r\n", Chunking::Whole).unwrap();
    let Some(Action::Finished(Outcome::Sent(report))) = end.last() else { panic!("{end:?}") };
    let got: Vec<(&str, bool, Option<Retry>)> = report.recipients.iter().map(|r| (r.address.as_str(), r.accepted, r.retry)).collect();
    assert_eq!(got, [("ann@example.com", true, None), ("busy@smtp2.test", false, Some(Retry::Later))]);
}

#[test]
fn size_refusals_from_the_server_are_the_providers_limit() {
    // 552 5.3.4 to MAIL FROM with SIZE= (a server that advertises no or a larger limit).
    for chunking in ALL {
        let mut s = envelope_sent(chunking);
        let e = server(&mut s, b"552 5.3.4 Message size exceeds fixed maximum message size\r\n503 5.5.1 Error: need MAIL command\r\n", chunking).unwrap_err();
        assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::Refused, Stage::Envelope, Retry::FixFirst), "{e}");
        assert!(matches!(e.refusal.as_ref().map(|r| &r.cause), Some(RefusalCause::MessageTooBig { .. })), "{e:?}");
        assert!(e.message.contains("\"552 5.3.4 Message size exceeds fixed maximum message size\""), "{}", e.message);
        assert!(!e.message.contains("send as"), "not a sender problem: {}", e.message);
    }
    // 552 5.3.4 after the data.
    let mut s = data_sent(Chunking::Whole);
    let e = server(&mut s, b"552 5.3.4 Message size exceeds fixed maximum message size\r\n", Chunking::Whole).unwrap_err();
    assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::Refused, Stage::Data, Retry::FixFirst), "{e}");
    let d = crate::diagnose::explain(&e);
    assert!(d.cause_en.contains("provider's") && d.action_en.contains("smaller message") && d.action_en.contains("ask the provider"), "{d:?}");
    assert!(d.action_de.contains("kleinere Nachricht") && d.action_de.contains("Anbieter"), "{d:?}");
    assert!(!d.action_en.contains("Raise the limit"), "{d:?}");
    // 552 5.2.2 (a full mailbox) is not about the message's size.
    let mut s = data_sent(Chunking::Whole);
    let e = server(&mut s, b"552 5.2.2 Mailbox full\r\n", Chunking::Whole).unwrap_err();
    assert_eq!((e.kind, e.stage), (ErrorKind::Protocol, Stage::Data), "{e}");
}

#[test]
fn the_size_limit_refusal_up_front_says_whose_limit_it_is_in_both_languages() {
    let mut s = smtp2_like_small_limit();
    let e = server(&mut s, AUTH_OK, Chunking::Whole).unwrap_err();
    assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::Refused, Stage::Envelope, Retry::FixFirst));
    let d = crate::diagnose::explain(&e);
    assert!(d.cause_en.contains("at most 16 bytes") && d.cause_en.contains("not a setting of mailplug"), "{}", d.cause_en);
    assert!(d.cause_de.contains("höchstens 16 Bytes") && d.cause_de.contains("legt der Anbieter fest"), "{}", d.cause_de);
    for text in [&d.action_en, &d.action_de] {
        assert!(!text.contains("Raise") && !text.contains("Erhöhen"), "{text}");
    }
}

fn smtp2_like_small_limit() -> SmtpSession {
    authenticating(session(Security::ImplicitTls), b"250-mx\r\n250-SIZE 16\r\n250 AUTH PLAIN\r\n", Chunking::Whole)
}

#[test]
fn recipient_replies_echoing_the_password_are_redacted_everywhere() {
    let mut s = smtp2_envelope(&["x@example.com"]);
    let reply = format!("250 Ok\r\n550 5.1.1 no user {PASSWORD}\r\n503 need RCPT\r\n");
    let actions = crate::session::handle_checked(&mut s, Event::Received(reply.as_bytes()), T0).unwrap();
    assert_eq!(text(&written(&actions)), "RSET\r\nQUIT\r\n");
    let e = crate::session::handle_checked(&mut s, Event::Received(b"250 Ok\r\n221 Bye\r\n"), T0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Refused);
    assert_no_secret(&e, b"");
    let r = &e.refusal.as_ref().unwrap().recipients[0];
    assert_eq!(r.reply.text, "5.1.1 no user <redacted>");
}

#[test]
fn withholding_server_text_covers_every_recipient_reply() {
    let mut s = smtp2_envelope(&["a@example.com", "b@example.com"]);
    exchange(&mut s, b"250 Ok\r\n450 4.2.0 forged text one\r\n550 5.1.1 forged text two\r\n503 need RCPT\r\n", b"RSET\r\nQUIT\r\n", Chunking::Whole);
    let mut e = server(&mut s, b"250 Ok\r\n221 Bye\r\n", Chunking::Whole).unwrap_err();
    e.withhold_server_text();
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("forged"), "{shown}");
    assert!(e.refusal.as_ref().unwrap().recipients.iter().all(|r| r.reply.text == crate::error::WITHHELD), "{e:?}");
}
