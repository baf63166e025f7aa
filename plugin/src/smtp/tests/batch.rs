//! Batch submissions (`new_batch`): pipelining order within and across messages, RSET after a
//! refused transaction, commit points, one outcome per message, and the stop after an
//! uncertain message.

use super::*;
use crate::session::{BatchReport, Delivery, MessageResult};

const EHLO_NO_PIPELINING: &[u8] = b"250-smtp.shop.example\r\n250-SIZE 200\r\n250 AUTH PLAIN LOGIN\r\n";

fn message(i: usize, to: &[&str]) -> BatchMessage {
    BatchMessage {
        message_id: format!("m{i}@shop.example"),
        envelope_from: "agent@shop.example".into(),
        envelope_to: to.iter().map(|s| s.to_string()).collect(),
        raw: format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes(),
    }
}

fn data(i: usize) -> String {
    format!("Subject: {i}\r\n\r\nbody {i}\r\n.\r\n")
}

fn size(i: usize) -> usize {
    data(i).len() - 3
}

fn envelope(i: usize, to: &[&str]) -> String {
    let mut out = format!("MAIL FROM:<agent@shop.example> SIZE={}\r\n", size(i));
    for t in to {
        out.push_str(&format!("RCPT TO:<{t}>\r\n"));
    }
    out + "DATA\r\n"
}

fn batch(messages: Vec<BatchMessage>) -> SmtpSession {
    SmtpSession::new_batch(submission(Security::ImplicitTls, basic()), messages).unwrap()
}

/// Connected, greeted, EHLO (with `caps`) and logged in; returns the first transfer actions.
fn logged_in(s: &mut SmtpSession, caps: &[u8], chunking: Chunking) -> Vec<Action> {
    connect(s);
    exchange(s, GREETING, EHLO, chunking);
    exchange(s, caps, AUTH_PLAIN, chunking);
    server(s, AUTH_OK, chunking).unwrap()
}

fn done(actions: &[Action]) -> Vec<&MessageResult> {
    actions.iter().filter_map(|a| if let Action::MessageDone(r) = a { Some(r) } else { None }).collect()
}

fn deliveries(actions: &[Action]) -> Vec<Delivery> {
    done(actions).iter().map(|r| r.delivery).collect()
}

fn finished(actions: &[Action]) -> &BatchReport {
    match actions.last() {
        Some(Action::Finished(Outcome::SentBatch(r))) => r,
        other => panic!("not finished: {other:?}"),
    }
}

/// Actions other than writes, with each write shown as its text, in order.
fn trace(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Write(b) => format!("write {}", text(b)),
            Action::CommitPoint(i) => format!("commit {i}"),
            Action::MessageDone(r) => format!("done {} {:?}", r.index, r.delivery),
            Action::Close => "close".into(),
            Action::Finished(_) => "finished".into(),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_pipelined_batch_sends_the_next_envelope_with_the_data_and_reports_each_message() {
    let to = ["ann@example.com"];
    for chunking in ALL {
        let mut s = batch((0..3).map(|i| message(i, &to)).collect());
        let first = logged_in(&mut s, EHLO_TLS_CAPS, chunking);
        assert_eq!(text(&written(&first)), envelope(0, &to));
        // 354 for message 0: commit point, then its data, its dot and message 1's envelope in one write.
        let a = server(&mut s, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", chunking).unwrap();
        assert_eq!(trace(&a), ["commit 0".to_string(), format!("write {}{}", data(0), envelope(1, &to))]);
        // Message 0 accepted, message 1's envelope and 354 in the same read.
        let a = server(&mut s, b"250 2.0.0 Ok: queued as A\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", chunking).unwrap();
        let writes = text(&written(&a));
        assert_eq!(writes, format!("{}{}", data(1), envelope(2, &to)));
        assert_eq!(deliveries(&a), [Delivery::Delivered]);
        let commit = a.iter().position(|x| matches!(x, Action::CommitPoint(1))).expect("commit point 1");
        let write = a.iter().position(|x| matches!(x, Action::Write(_))).unwrap();
        assert!(commit < write, "{:?}", trace(&a));
        let a = server(&mut s, b"250 2.0.0 Ok: queued as B\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", chunking).unwrap();
        assert_eq!(text(&written(&a)), data(2));
        let a = server(&mut s, b"250 2.0.0 Ok: queued as C\r\n", chunking).unwrap();
        assert_eq!(text(&written(&a)), "QUIT\r\n");
        assert_eq!(deliveries(&a), [Delivery::Delivered]);
        let r = done(&a)[0];
        assert_eq!((r.index, r.message_id.as_str()), (2, "m2@shop.example"));
        assert_eq!(r.final_reply, Some(ServerReply::new("250", "2.0.0 Ok: queued as C")));
        assert!(r.recipients[0].accepted && r.error.is_none());
        let end = server(&mut s, b"221 2.0.0 Bye\r\n", chunking).unwrap();
        assert_eq!(finished(&end), &BatchReport { delivered: 3, not_delivered: 0, stopped: None });
    }
}

#[test]
fn a_refused_recipient_is_reset_and_the_batch_goes_on() {
    let mut s = batch(vec![message(0, &["ann@example.com"]), message(1, &["busy@example.com", "nouser@example.com"]), message(2, &["bob@example.net"])]);
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    server(&mut s, b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    // Message 1: both recipients refused, DATA refused: RSET goes out with message 2's envelope.
    let a = server(
        &mut s,
        b"250 Ok: queued as A\r\n250 Ok\r\n451 4.2.1 Mailbox busy\r\n550 5.1.1 No such user\r\n554 5.5.1 Error: no valid recipients\r\n",
        Chunking::Whole,
    )
    .unwrap();
    assert_eq!(text(&written(&a)), format!("RSET\r\n{}", envelope(2, &["bob@example.net"])));
    assert_eq!(deliveries(&a), [Delivery::Delivered, Delivery::Transient]);
    let r = done(&a)[1];
    let e = r.error.as_ref().unwrap();
    assert_eq!(e.kind, ErrorKind::Refused, "{e}");
    assert_eq!(e.retry, Retry::Later, "one refusal is temporary: {e}");
    assert_eq!(r.recipients.iter().map(|x| (x.address.as_str(), x.reply.code.as_str())).collect::<Vec<_>>(), [("busy@example.com", "451"), ("nouser@example.com", "550")]);
    let a = server(&mut s, b"250 2.0.0 Reset\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    assert_eq!(trace(&a), ["commit 2".to_string(), format!("write {}", data(2))]);
    let a = server(&mut s, b"250 Ok: queued as C\r\n", Chunking::Whole).unwrap();
    assert_eq!(deliveries(&a), [Delivery::Delivered]);
    assert_eq!(text(&written(&a)), "QUIT\r\n");
    let end = s.handle(Event::Closed, T0).unwrap();
    assert_eq!(finished(&end), &BatchReport { delivered: 2, not_delivered: 1, stopped: None });
}

#[test]
fn a_refusal_after_the_data_is_reported_and_the_next_message_still_sent() {
    let to = ["ann@example.com"];
    let mut s = batch((0..3).map(|i| message(i, &to)).collect());
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    server(&mut s, b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    let a = server(&mut s, b"451 4.3.0 Try again later\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    assert_eq!(deliveries(&a), [Delivery::Transient]);
    assert_eq!(done(&a)[0].final_reply, Some(ServerReply::new("451", "4.3.0 Try again later")));
    // No RSET after a completed DATA: the transaction is over either way.
    assert_eq!(text(&written(&a)), format!("{}{}", data(1), envelope(2, &to)));
    let a = server(&mut s, b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    let r = done(&a)[0];
    assert_eq!(r.delivery, Delivery::Permanent);
    assert!(r.error.as_ref().unwrap().refusal.is_some(), "{r:?}");
    let a = server(&mut s, b"250 Ok\r\n221 Bye\r\n", Chunking::Whole).unwrap();
    assert_eq!(deliveries(&a), [Delivery::Delivered]);
    assert_eq!(finished(&a).delivered, 1);
}

#[test]
fn a_connection_lost_after_a_final_dot_makes_that_message_uncertain_and_stops_the_batch() {
    let to = ["ann@example.com"];
    for cut in [Event::Closed, Event::Timer] {
        let mut s = batch((0..4).map(|i| message(i, &to)).collect());
        logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
        server(&mut s, b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
        let a = server(&mut s, b"250 Ok: queued as A\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
        assert!(a.contains(&Action::CommitPoint(1)));
        let now = if cut == Event::Timer { s.deadline().unwrap() } else { T0 };
        let end = s.handle(cut, now).unwrap();
        assert!(written(&end).is_empty(), "nothing more is written: {:?}", trace(&end));
        assert_eq!(deliveries(&end), [Delivery::Uncertain, Delivery::NotSent, Delivery::NotSent], "{cut:?}");
        let r = done(&end)[0];
        assert_eq!(r.index, 1);
        let e = r.error.as_ref().unwrap();
        assert_eq!(e.retry, Retry::Uncertain);
        assert!(e.message.contains("m1@shop.example") && e.message.contains("may have been delivered"), "{e}");
        assert_eq!(done(&end)[1].error.as_ref().unwrap().retry, Retry::Later);
        let report = finished(&end);
        assert_eq!((report.delivered, report.not_delivered), (1, 3));
        assert!(report.stopped.is_some());
        assert_eq!(end[end.len() - 2], Action::Close);
        assert_eq!(s.deadline(), None);
        assert!(s.handle(Event::Closed, T0).is_err(), "the session is over");
    }
}

#[test]
fn a_broken_reply_after_the_data_keeps_the_outcomes_already_known() {
    let to = ["ann@example.com"];
    let mut s = batch((0..3).map(|i| message(i, &to)).collect());
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    server(&mut s, b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    // Message 0 accepted, message 1 gets its 354 (its data goes out), then garbage.
    let a = server(&mut s, b"250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\nthis is no reply\r\n", Chunking::Whole).unwrap();
    assert_eq!(deliveries(&a), [Delivery::Delivered, Delivery::Uncertain, Delivery::NotSent]);
    assert_eq!(text(&written(&a)), format!("{}{}", data(1), envelope(2, &to)));
    assert_eq!(finished(&a).delivered, 1);
}

#[test]
fn without_pipelining_one_command_at_a_time_and_rset_after_a_refusal() {
    let mut s = batch(vec![message(0, &["nouser@example.com"]), message(1, &["ann@example.com"])]);
    let a = logged_in(&mut s, EHLO_NO_PIPELINING, Chunking::Whole);
    assert_eq!(text(&written(&a)), format!("MAIL FROM:<agent@shop.example> SIZE={}\r\n", size(0)));
    exchange(&mut s, b"250 Ok\r\n", b"RCPT TO:<nouser@example.com>\r\n", Chunking::Whole);
    let a = exchange(&mut s, b"550 5.1.1 No such user\r\n", b"RSET\r\n", Chunking::Whole);
    assert_eq!(deliveries(&a), [Delivery::Permanent]);
    exchange(&mut s, b"250 Ok\r\n", format!("MAIL FROM:<agent@shop.example> SIZE={}\r\n", size(1)).as_bytes(), Chunking::Whole);
    exchange(&mut s, b"250 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", Chunking::Whole);
    exchange(&mut s, b"250 Ok\r\n", b"DATA\r\n", Chunking::Whole);
    let a = exchange(&mut s, b"354 go\r\n", data(1).as_bytes(), Chunking::Whole);
    assert_eq!(a[0], Action::CommitPoint(1));
    let a = exchange(&mut s, b"250 Ok\r\n", b"QUIT\r\n", Chunking::Whole);
    assert_eq!(deliveries(&a), [Delivery::Delivered]);
    let end = server(&mut s, b"221 Bye\r\n", Chunking::Whole).unwrap();
    assert_eq!(finished(&end), &BatchReport { delivered: 1, not_delivered: 1, stopped: None });
}

#[test]
fn a_message_over_the_advertised_size_is_refused_without_sending_it_and_reported_in_order() {
    let big = BatchMessage { raw: vec![b'x'; 300], ..message(1, &["ann@example.com"]) };
    let caps = b"250-smtp.shop.example\r\n250-PIPELINING\r\n250-SIZE 200\r\n250 AUTH PLAIN\r\n";
    let mut s = batch(vec![message(0, &["ann@example.com"]), big, message(2, &["ann@example.com"])]);
    logged_in(&mut s, caps, Chunking::Whole);
    let a = server(&mut s, b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    // Message 1 is skipped: message 2's envelope follows message 0's data; no outcome before 0's.
    assert_eq!(text(&written(&a)), format!("{}{}", data(0), envelope(2, &["ann@example.com"])));
    assert!(done(&a).is_empty());
    let a = server(&mut s, b"250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    assert_eq!(deliveries(&a), [Delivery::Delivered, Delivery::Permanent]);
    assert!(!text(&written(&a)).contains("xxx"));
    let e = done(&a)[1].error.as_ref().unwrap();
    assert_eq!(e.kind, ErrorKind::Refused);
    assert!(e.message.contains("at most 200 bytes"), "{e}");
}

#[test]
fn data_accepted_without_a_recipient_hangs_up_without_a_final_dot() {
    let mut s = batch(vec![message(0, &["nouser@example.com"]), message(1, &["ann@example.com"])]);
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    let a = server(&mut s, b"250 Ok\r\n550 No such user\r\n354 go\r\n", Chunking::Whole).unwrap();
    assert!(written(&a).is_empty(), "{:?}", trace(&a));
    assert_eq!(deliveries(&a), [Delivery::Permanent, Delivery::NotSent]);
    assert!(finished(&a).stopped.is_some());
}

#[test]
fn a_batch_is_validated_before_connecting() {
    let sub = || submission(Security::ImplicitTls, basic());
    assert!(SmtpSession::new_batch(sub(), Vec::new()).is_err());
    let e = SmtpSession::new_batch(sub(), vec![message(0, &["a@example.com"]), message(1, &[])]).unwrap_err();
    assert!(e.message.contains("message 1") && e.message.contains("m1@shop.example"), "{e}");
    let bad = BatchMessage { raw: b"a\0b".to_vec(), ..message(0, &["a@example.com"]) };
    assert_eq!(SmtpSession::new_batch(sub(), vec![bad]).unwrap_err().kind, ErrorKind::InvalidInput);
}

#[test]
fn a_secret_echoed_in_a_refusal_is_redacted_in_the_message_outcome() {
    let mut s = batch(vec![message(0, &["ann@example.com"])]);
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    let line = format!("250 Ok\r\n250 Ok\r\n354 go\r\n");
    server(&mut s, line.as_bytes(), Chunking::Whole).unwrap();
    let a = server(&mut s, format!("554 5.7.1 rejected {PASSWORD}\r\n").as_bytes(), Chunking::Whole).unwrap();
    let shown = format!("{:?}", done(&a));
    assert!(!shown.contains(PASSWORD), "{shown}");
}
