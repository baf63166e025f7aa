//! Batch submissions (`new_batch`): pipelining order within and across messages, RSET after a
//! refused transaction, commit points, one outcome per message, the stop after an uncertain
//! message, and the messages' bytes asked for one ahead (`need-message`).

use std::collections::VecDeque;

use super::*;
use crate::session::{BatchReport, Delivery, MessageBytes, MessageResult};

const EHLO_NO_PIPELINING: &[u8] = b"250-smtp.shop.example\r\n250-SIZE 200\r\n250 AUTH PLAIN LOGIN\r\n";

/// A message of a test batch: its envelope and the bytes the host hands over when asked.
struct M {
    env: BatchEnvelope,
    raw: Vec<u8>,
}

fn message(i: usize, to: &[&str]) -> M {
    with_raw(i, to, format!("Subject: {i}\r\n\r\nbody {i}\r\n").into_bytes())
}

fn with_raw(i: usize, to: &[&str], raw: Vec<u8>) -> M {
    M {
        env: BatchEnvelope {
            message_id: format!("m{i}@shop.example"),
            envelope_from: "agent@shop.example".into(),
            envelope_to: to.iter().map(|s| s.to_string()).collect(),
            size: raw.len() as u64,
        },
        raw,
    }
}

/// The session and a host that answers each `need-message` as the driver does: after the
/// actions of the call that asked, in order; the answers' actions follow.
struct Host {
    s: SmtpSession,
    raws: Vec<Vec<u8>>,
    /// Every index asked for, in order.
    asked: Vec<u32>,
    /// Answers `clean` for bytes that `mailplug_wire::clean_for_data` passes, as the driver
    /// does; otherwise hands every message over (`raw`).
    checks: bool,
    /// How many armed writes were performed.
    fired: usize,
    /// The write armed for the next bytes (`arm-write`), performed as the driver does when
    /// they match (`server` with whole reads).
    armed: Option<crate::session::ArmedWrite>,
    /// False: a host that ignores every `arm-write` (the contract allows it).
    honour_arms: bool,
}

impl std::ops::Deref for Host {
    type Target = SmtpSession;
    fn deref(&self) -> &SmtpSession {
        &self.s
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut SmtpSession {
        &mut self.s
    }
}

impl Host {
    fn answer(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let mut out = Vec::new();
        let mut needs = VecDeque::new();
        for a in actions {
            match a {
                Action::NeedMessage(i) => needs.push_back(i),
                a => out.push(a),
            }
        }
        while let Some(i) = needs.pop_front() {
            self.asked.push(i);
            let raw = &self.raws[i as usize];
            let bytes = match mailplug_wire::clean_for_data(raw).filter(|_| self.checks) {
                Some(c) => MessageBytes::Clean { size: raw.len() as u64, eight_bit: c.eight_bit },
                None => MessageBytes::Raw(raw.clone()),
            };
            let more = self.s.message_data(i, bytes, T0).unwrap_or_else(|e| panic!("message {i}: {e}"));
            for a in more {
                match a {
                    Action::NeedMessage(j) => needs.push_back(j),
                    a => out.push(a),
                }
            }
        }
        self.expand(out)
    }

    /// The writes as the driver performs them: `write-message(i)` is the bytes handed over
    /// for message i, and consecutive writes are one.
    fn expand(&mut self, actions: Vec<Action>) -> Vec<Action> {
        let mut out: Vec<Action> = Vec::new();
        for a in actions {
            let bytes = match a {
                Action::ArmWrite(armed) => {
                    self.armed = Some(armed);
                    continue;
                }
                Action::WriteMessage(i) => {
                    assert!(self.asked.contains(&i), "message {i} written before it was handed over");
                    self.raws[i as usize].clone()
                }
                Action::Write(b) => b,
                a => {
                    out.push(a);
                    continue;
                }
            };
            match out.last_mut() {
                Some(Action::Write(w)) => w.extend_from_slice(&bytes),
                _ => out.push(Action::Write(bytes)),
            }
        }
        out
    }

    /// The server's bytes; read whole, they are one read as the driver makes it: when they
    /// match the armed write, it is performed first and they go in with `received_armed`.
    fn server(&mut self, bytes: &[u8], chunking: Chunking) -> Result<Vec<Action>, Error> {
        let armed = self.armed.take().filter(|_| self.honour_arms);
        if !matches!(chunking, Chunking::Whole) {
            let a = server(&mut self.s, bytes, chunking)?;
            return Ok(self.answer(a));
        }
        let mut a = Vec::new();
        let step = match armed {
            Some(w) if mailplug_wire::armed_lines_match(bytes, &w.lines, w.max_line as usize) => {
                self.fired += 1;
                a.extend([Action::CommitPoint(w.message), Action::WriteMessage(w.message), Action::Write(w.after)]);
                self.s.received_armed(bytes, T0)?
            }
            _ => self.s.handle(Event::Received(bytes), T0)?,
        };
        let finished = step.iter().any(|a| matches!(a, Action::Finished(_)));
        assert_eq!(self.s.deadline().is_some(), !finished, "a deadline exactly while waiting for the server");
        a.extend(step);
        Ok(self.answer(a))
    }

    fn exchange(&mut self, from_server: &[u8], expected: &[u8], chunking: Chunking) -> Vec<Action> {
        let actions = self.server(from_server, chunking).unwrap_or_else(|e| panic!("{chunking:?}: {e}"));
        assert_eq!(text(&written(&actions)), text(expected), "{chunking:?}");
        actions
    }

    /// The guest holds at most this many messages' bytes: asked for, not yet started.
    fn held(&self) -> usize {
        self.s.batch_held()
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

fn batch(messages: Vec<M>) -> Host {
    let (envelopes, raws) = messages.into_iter().map(|m| (m.env, m.raw)).unzip();
    Host {
        s: SmtpSession::new_batch(submission(Security::ImplicitTls, basic()), envelopes).unwrap(),
        raws,
        asked: Vec::new(),
        checks: true,
        fired: 0,
        armed: None,
        honour_arms: true,
    }
}

/// Connected (message 0 asked for and handed over), greeted, EHLO (with `caps`) and logged
/// in; returns the first transfer actions.
fn logged_in(s: &mut Host, caps: &[u8], chunking: Chunking) -> Vec<Action> {
    let a = s.s.handle(Event::Connected, T0).unwrap();
    assert!(!a.is_empty() && a.iter().all(|x| matches!(x, Action::NeedMessage(_))), "{a:?}");
    assert!(s.answer(a).is_empty());
    assert_eq!(s.deadline(), Some(T0 + TIMEOUT));
    s.exchange(GREETING, EHLO, chunking);
    s.exchange(caps, AUTH_PLAIN, chunking);
    s.server(AUTH_OK, chunking).unwrap()
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
    // Whether the host checked the clean messages itself or handed them over: the same wire.
    for (chunking, checks) in ALL.into_iter().flat_map(|c| [(c, true), (c, false)]) {
        let mut s = batch((0..3).map(|i| message(i, &to)).collect());
        s.checks = checks;
        let first = logged_in(&mut s, EHLO_TLS_CAPS, chunking);
        assert_eq!(text(&written(&first)), envelope(0, &to));
        // 354 for message 0: commit point, then its data, its dot and message 1's envelope in one write.
        let a = s.server(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", chunking).unwrap();
        assert_eq!(trace(&a), ["commit 0".to_string(), format!("write {}{}", data(0), envelope(1, &to))]);
        // Message 0 accepted, message 1's envelope and 354 in the same read.
        let a = s.server(b"250 2.0.0 Ok: queued as A\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", chunking).unwrap();
        let writes = text(&written(&a));
        assert_eq!(writes, format!("{}{}", data(1), envelope(2, &to)));
        assert_eq!(deliveries(&a), [Delivery::Delivered]);
        let commit = a.iter().position(|x| matches!(x, Action::CommitPoint(1))).expect("commit point 1");
        let write = a.iter().position(|x| matches!(x, Action::Write(_))).unwrap();
        assert!(commit < write, "{:?}", trace(&a));
        let a = s.server(b"250 2.0.0 Ok: queued as B\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", chunking).unwrap();
        assert_eq!(text(&written(&a)), data(2));
        let a = s.server(b"250 2.0.0 Ok: queued as C\r\n", chunking).unwrap();
        assert_eq!(text(&written(&a)), "QUIT\r\n");
        assert_eq!(deliveries(&a), [Delivery::Delivered]);
        let r = done(&a)[0];
        assert_eq!((r.index, r.message_id.as_str()), (2, "m2@shop.example"));
        assert_eq!(r.final_reply, Some(ServerReply::new("250", "2.0.0 Ok: queued as C")));
        assert!(r.recipients[0].accepted && r.error.is_none());
        let end = s.server(b"221 2.0.0 Bye\r\n", chunking).unwrap();
        assert_eq!(finished(&end), &BatchReport { delivered: 3, not_delivered: 0, stopped: None });
    }
}

#[test]
fn a_refused_recipient_is_reset_and_the_batch_goes_on() {
    let mut s = batch(vec![
        message(0, &["ann@example.com"]),
        message(1, &["busy@example.com", "nouser@example.com"]),
        message(2, &["bob@example.net"]),
    ]);
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    s.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
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
    assert_eq!(
        r.recipients.iter().map(|x| (x.address.as_str(), x.reply.code.as_str())).collect::<Vec<_>>(),
        [("busy@example.com", "451"), ("nouser@example.com", "550")]
    );
    let a = s.server(b"250 2.0.0 Reset\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    assert_eq!(trace(&a), ["commit 2".to_string(), format!("write {}", data(2))]);
    let a = s.server(b"250 Ok: queued as C\r\n", Chunking::Whole).unwrap();
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
    s.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    let a = s.server(b"451 4.3.0 Try again later\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    assert_eq!(deliveries(&a), [Delivery::Transient]);
    assert_eq!(done(&a)[0].final_reply, Some(ServerReply::new("451", "4.3.0 Try again later")));
    // No RSET after a completed DATA: the transaction is over either way.
    assert_eq!(text(&written(&a)), format!("{}{}", data(1), envelope(2, &to)));
    let a =
        s.server(b"552 5.3.4 Message size exceeds fixed maximum message size\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    let r = done(&a)[0];
    assert_eq!(r.delivery, Delivery::Permanent);
    assert!(r.error.as_ref().unwrap().refusal.is_some(), "{r:?}");
    let a = s.server(b"250 Ok\r\n221 Bye\r\n", Chunking::Whole).unwrap();
    assert_eq!(deliveries(&a), [Delivery::Delivered]);
    assert_eq!(finished(&a).delivered, 1);
}

#[test]
fn a_connection_lost_after_a_final_dot_makes_that_message_uncertain_and_stops_the_batch() {
    let to = ["ann@example.com"];
    for cut in [Event::Closed, Event::Timer] {
        let mut s = batch((0..4).map(|i| message(i, &to)).collect());
        logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
        s.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
        let a = s.server(b"250 Ok: queued as A\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
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
    s.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    // Message 0 accepted, message 1 gets its 354 (its data goes out), then garbage.
    let a = s.server(b"250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\nthis is no reply\r\n", Chunking::Whole).unwrap();
    assert_eq!(deliveries(&a), [Delivery::Delivered, Delivery::Uncertain, Delivery::NotSent]);
    assert_eq!(text(&written(&a)), format!("{}{}", data(1), envelope(2, &to)));
    assert_eq!(finished(&a).delivered, 1);
}

#[test]
fn without_pipelining_one_command_at_a_time_and_rset_after_a_refusal() {
    let mut s = batch(vec![message(0, &["nouser@example.com"]), message(1, &["ann@example.com"])]);
    let a = logged_in(&mut s, EHLO_NO_PIPELINING, Chunking::Whole);
    assert_eq!(text(&written(&a)), format!("MAIL FROM:<agent@shop.example> SIZE={}\r\n", size(0)));
    s.exchange(b"250 Ok\r\n", b"RCPT TO:<nouser@example.com>\r\n", Chunking::Whole);
    let a = s.exchange(b"550 5.1.1 No such user\r\n", b"RSET\r\n", Chunking::Whole);
    assert_eq!(deliveries(&a), [Delivery::Permanent]);
    s.exchange(b"250 Ok\r\n", format!("MAIL FROM:<agent@shop.example> SIZE={}\r\n", size(1)).as_bytes(), Chunking::Whole);
    s.exchange(b"250 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", Chunking::Whole);
    s.exchange(b"250 Ok\r\n", b"DATA\r\n", Chunking::Whole);
    let a = s.exchange(b"354 go\r\n", data(1).as_bytes(), Chunking::Whole);
    assert_eq!(a[0], Action::CommitPoint(1));
    let a = s.exchange(b"250 Ok\r\n", b"QUIT\r\n", Chunking::Whole);
    assert_eq!(deliveries(&a), [Delivery::Delivered]);
    let end = s.server(b"221 Bye\r\n", Chunking::Whole).unwrap();
    assert_eq!(finished(&end), &BatchReport { delivered: 1, not_delivered: 1, stopped: None });
}

#[test]
fn a_message_over_the_advertised_size_is_refused_without_sending_it_and_reported_in_order() {
    let big = with_raw(1, &["ann@example.com"], vec![b'x'; 300]);
    let caps = b"250-smtp.shop.example\r\n250-PIPELINING\r\n250-SIZE 200\r\n250 AUTH PLAIN\r\n";
    let mut s = batch(vec![message(0, &["ann@example.com"]), big, message(2, &["ann@example.com"])]);
    logged_in(&mut s, caps, Chunking::Whole);
    let a = s.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    // Message 1 is skipped: message 2's envelope follows message 0's data; no outcome before 0's.
    assert_eq!(text(&written(&a)), format!("{}{}", data(0), envelope(2, &["ann@example.com"])));
    assert!(done(&a).is_empty());
    let a = s.server(b"250 Ok\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
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
    let a = s.server(b"250 Ok\r\n550 No such user\r\n354 go\r\n", Chunking::Whole).unwrap();
    assert!(written(&a).is_empty(), "{:?}", trace(&a));
    assert_eq!(deliveries(&a), [Delivery::Permanent, Delivery::NotSent]);
    assert!(finished(&a).stopped.is_some());
}

#[test]
fn a_batch_is_validated_before_connecting() {
    let sub = || submission(Security::ImplicitTls, basic());
    assert!(SmtpSession::new_batch(sub(), Vec::new()).is_err());
    let e = SmtpSession::new_batch(sub(), vec![message(0, &["a@example.com"]).env, message(1, &[]).env]).unwrap_err();
    assert!(e.message.contains("message 1") && e.message.contains("m1@shop.example"), "{e}");
    let bad =
        BatchEnvelope { envelope_from: "agent@shop.example\r\nRCPT TO:<x@evil.example>".into(), ..message(0, &["a@example.com"]).env };
    assert_eq!(SmtpSession::new_batch(sub(), vec![bad]).unwrap_err().kind, ErrorKind::InvalidInput);
}

#[test]
fn a_nul_in_message_1_of_3_gets_its_own_outcome_and_0_and_2_are_sent() {
    let to = ["ann@example.com"];
    for pipelining in [true, false] {
        let mut s = batch(vec![message(0, &to), with_raw(1, &to, b"Subject: 1\r\n\r\nbin\0ary\r\n".to_vec()), message(2, &to)]);
        if pipelining {
            logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
            // Message 1 is skipped: message 2's envelope follows message 0's data.
            let a = s.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
            assert_eq!(trace(&a), ["commit 0".to_string(), format!("write {}{}", data(0), envelope(2, &to))]);
            let a = s.server(b"250 Ok: queued as A\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
            assert_eq!(deliveries(&a), [Delivery::Delivered, Delivery::Permanent]);
            assert_eq!(text(&written(&a)), data(2));
        } else {
            logged_in(&mut s, EHLO_NO_PIPELINING, Chunking::Whole);
            s.exchange(b"250 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", Chunking::Whole);
            s.exchange(b"250 Ok\r\n", b"DATA\r\n", Chunking::Whole);
            s.exchange(b"354 go\r\n", data(0).as_bytes(), Chunking::Whole);
            let a = s.exchange(
                b"250 Ok: queued as A\r\n",
                format!("MAIL FROM:<agent@shop.example> SIZE={}\r\n", size(2)).as_bytes(),
                Chunking::Whole,
            );
            assert_eq!(deliveries(&a), [Delivery::Delivered, Delivery::Permanent]);
            s.exchange(b"250 Ok\r\n", b"RCPT TO:<ann@example.com>\r\n", Chunking::Whole);
            s.exchange(b"250 Ok\r\n", b"DATA\r\n", Chunking::Whole);
            s.exchange(b"354 go\r\n", data(2).as_bytes(), Chunking::Whole);
        }
        let r = {
            let all = s.server(b"250 Ok: queued as C\r\n221 Bye\r\n", Chunking::Whole).unwrap();
            assert_eq!(deliveries(&all), [Delivery::Delivered]);
            assert_eq!(finished(&all), &BatchReport { delivered: 2, not_delivered: 1, stopped: None });
            all
        };
        assert!(!trace(&r).iter().any(|x| x.contains("bin")), "message 1 never goes out");
        assert_eq!(s.asked, [0, 1, 2]);
    }
    // The outcome of message 1, on its own.
    let mut s = batch(vec![message(0, &to), with_raw(1, &to, b"x\0".to_vec())]);
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    let a = s.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n250 Ok\r\n", Chunking::Whole).unwrap();
    let r = done(&a)[1];
    assert_eq!((r.index, r.message_id.as_str(), r.delivery), (1, "m1@shop.example", Delivery::Permanent));
    let e = r.error.as_ref().unwrap();
    assert_eq!((e.kind, e.stage, e.retry), (ErrorKind::InvalidInput, Stage::Data, Retry::FixFirst));
    assert!(e.message.contains("NUL byte (at byte 1)"), "{e}");
}

#[test]
fn a_message_over_the_configured_limit_gets_its_own_outcome() {
    let to = ["ann@example.com"];
    let mut sub = submission(Security::ImplicitTls, basic());
    sub.limits.max_message_bytes = 100;
    let big = with_raw(0, &to, vec![b'x'; 101]);
    let (envelopes, raws) = vec![big, message(1, &to)].into_iter().map(|m| (m.env, m.raw)).unzip();
    let mut s = Host { s: SmtpSession::new_batch(sub, envelopes).unwrap(), raws, asked: Vec::new(), checks: true, fired: 0, armed: None, honour_arms: true };
    let a = logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    assert_eq!(text(&written(&a)), envelope(1, &to));
    assert_eq!(deliveries(&a), [Delivery::Permanent]);
    let e = done(&a)[0].error.as_ref().unwrap();
    assert_eq!((e.kind, e.retry), (ErrorKind::Limit, Retry::FixFirst));
    assert!(e.message.contains("101 bytes") && e.message.contains("limit of 100 bytes"), "{e}");
    assert_eq!(s.asked, [1], "its bytes are never asked for");
}

/// A message of `kb` KB (CRLF, no leading dot: sent as is), and what goes out for it.
fn big(i: usize, to: &[&str], kb: usize) -> M {
    let mut raw = format!("Subject: {i}\r\n\r\n").into_bytes();
    while raw.len() < kb * 1024 {
        raw.extend_from_slice(b"The quick brown fox jumps over the lazy dog, line after line.\r\n");
    }
    with_raw(i, to, raw)
}

fn big_envelope(m: &M) -> String {
    let mut out = format!("MAIL FROM:<agent@shop.example> SIZE={}\r\n", m.raw.len());
    for t in &m.env.envelope_to {
        out.push_str(&format!("RCPT TO:<{t}>\r\n"));
    }
    out + "DATA\r\n"
}

#[test]
fn the_bytes_are_asked_for_a_window_ahead_after_the_writes_and_the_guest_holds_little() {
    let to = ["ann@example.com"];
    let n = 10;
    // 12 KB each: two fit in the 32 KiB window.
    for chunking in [Chunking::Whole, Chunking::Odd] {
        let mut s = batch((0..n).map(|i| big(i, &to, 12)).collect());
        logged_in(&mut s, EHLO_TLS_CAPS, chunking);
        assert_eq!(s.asked, [0, 1, 2], "0 and 1 once connected, 2 when 0 started");
        let mut asks = 0;
        for i in 0..n {
            assert!(s.held() <= 3, "{} held", s.held());
            let replies = if i == 0 { "250 Ok\r\n250 Ok\r\n354 go\r\n" } else { "250 Ok: queued\r\n250 Ok\r\n250 Ok\r\n354 go\r\n" };
            // As the session returns them, before a host answers: requests follow the writes.
            let raw = server(&mut s.s, replies.as_bytes(), chunking).unwrap();
            let last_write = raw.iter().rposition(|x| matches!(x, Action::Write(_))).expect("write");
            let needs: Vec<usize> = raw.iter().enumerate().filter(|(_, x)| matches!(x, Action::NeedMessage(_))).map(|(k, _)| k).collect();
            assert!(needs.iter().all(|&k| k > last_write), "{:?}", trace(&raw));
            asks += needs.len();
            // Message i-1's outcome: with the answer to the step's request when it made one
            // (read in pieces, the step with the 250 asks for nothing and reports it).
            if matches!(chunking, Chunking::Whole) {
                assert_eq!(done(&raw).is_empty(), i == 0 || !needs.is_empty(), "{i}: {:?}", trace(&raw));
            }
            let answered = s.answer(raw);
            assert_eq!(deliveries(&answered).len(), usize::from(i > 0), "{i}: {:?}", trace(&answered));
        }
        assert_eq!(asks, 7, "one more (3 to 9) as each of messages 1 to 7 starts");
        let a = s.server(b"250 Ok: queued\r\n221 Bye\r\n", chunking).unwrap();
        assert_eq!(finished(&a).delivered, n as u32);
        assert_eq!(s.asked, (0..n as u32).collect::<Vec<_>>());
        assert_eq!(s.held(), 0);
    }
    // Small messages: as many as fit in the window at once.
    let mut s = batch((0..40).map(|i| message(i, &to)).collect());
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    assert_eq!(s.asked, (0..40).collect::<Vec<u32>>());
}

#[test]
fn an_outcome_learnt_in_a_step_that_asks_for_bytes_comes_first_in_the_answering_step() {
    let to = ["ann@example.com"];
    let mut s = batch((0..6).map(|i| big(i, &to, 12)).collect());
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    s.server(b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    // Message 0 accepted, message 1's 354: the write and the request, the outcome held back.
    let raw = server(&mut s.s, b"250 Ok: queued as A\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    let raw = s.expand(raw);
    assert_eq!(trace(&raw)[..2], ["commit 1".to_string(), format!("write {}.\r\n{}", text(&s.raws[1]), big_envelope(&big(2, &to, 12)))]);
    assert_eq!(raw[2..], [Action::NeedMessage(4)]);
    // The host answers before reading again: the outcome comes first, then the rest.
    let a = s.s.message_data(4, MessageBytes::Clean { size: s.raws[4].len() as u64, eight_bit: false }, T0).unwrap();
    s.asked.push(4);
    assert_eq!(deliveries(&a), [Delivery::Delivered]);
    let r = done(&a)[0];
    assert_eq!((r.index, r.final_reply.as_ref().map(|x| x.text.as_str())), (0, Some("Ok: queued as A")));
    assert!(matches!(a[0], Action::MessageDone(_)), "{:?}", trace(&a));
    // Held back again, and the host does not answer but the connection is lost: every
    // outcome still comes, in batch order, with the server's text redacted as ever.
    let echo = format!("250 Ok: queued as B {PASSWORD}\r\n250 Ok\r\n250 Ok\r\n354 go\r\n");
    let raw = server(&mut s.s, echo.as_bytes(), Chunking::Whole).unwrap();
    assert!(done(&raw).is_empty() && raw.contains(&Action::NeedMessage(5)), "{:?}", trace(&raw));
    let end = s.s.handle(Event::Closed, T0).unwrap();
    assert_eq!(done(&end).iter().map(|r| r.index).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    let shown = format!("{:?}", done(&end));
    assert!(shown.contains("queued as B") && !shown.contains(PASSWORD), "{shown}");
    assert_eq!(deliveries(&end), [Delivery::Delivered, Delivery::Uncertain, Delivery::NotSent, Delivery::NotSent, Delivery::NotSent]);
    assert_eq!(finished(&end).delivered, 2);
}

#[test]
fn a_message_not_handed_over_yet_holds_the_batch_back_until_it_comes() {
    let to = ["ann@example.com"];
    // 200 KB each: asked for one at a time.
    let m: Vec<M> = (0..3).map(|i| big(i, &to, 200)).collect();
    let (env, data_of) =
        (m.iter().map(big_envelope).collect::<Vec<_>>(), m.iter().map(|x| format!("{}.\r\n", text(&x.raw))).collect::<Vec<_>>());
    let mut s = batch(m);
    assert_eq!(s.s.handle(Event::Connected, T0).unwrap(), [Action::NeedMessage(0)]);
    s.s.message_data(0, MessageBytes::Raw(s.raws[0].clone()), T0).unwrap();
    s.asked.push(0);
    s.exchange(GREETING, EHLO, Chunking::Whole);
    s.exchange(EHLO_TLS_CAPS, AUTH_PLAIN, Chunking::Whole);
    let a = server(&mut s.s, AUTH_OK, Chunking::Whole).unwrap();
    assert_eq!(trace(&a), [format!("write {}", env[0]), "NeedMessage(1)".to_string()]);
    // The host has not answered yet: message 0's data goes out alone.
    let a = server(&mut s.s, b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    let a = s.expand(a);
    assert_eq!(trace(&a), ["commit 0".to_string(), format!("write {}", data_of[0])]);
    // Message 1's bytes arrive: its envelope goes out, message 2 is asked for.
    let a = s.s.message_data(1, MessageBytes::Raw(s.raws[1].clone()), T0 + 5).unwrap();
    assert_eq!(trace(&a), [format!("write {}", env[1]), "NeedMessage(2)".to_string()]);
    assert_eq!(s.deadline(), Some(T0 + 5 + TIMEOUT));
    // Bytes of another length than announced are the host's mistake.
    let e = s.s.message_data(2, MessageBytes::Raw(s.raws[2][1..].to_vec()), T0).unwrap_err();
    assert!(e.message.contains("announced"), "{e}");
    assert!(s.s.handle(Event::Closed, T0).is_err(), "the session is over");
}

#[test]
fn a_message_not_asked_for_or_handed_over_twice_is_the_hosts_mistake() {
    let to = ["ann@example.com"];
    let mut s = batch((0..2).map(|i| big(i, &to, 200)).collect());
    assert_eq!(s.s.handle(Event::Connected, T0).unwrap(), [Action::NeedMessage(0)]);
    let e = s.s.message_data(1, MessageBytes::Raw(s.raws[1].clone()), T0).unwrap_err();
    assert!(e.message.contains("did not ask for"), "{e}");
    let mut s = batch((0..2).map(|i| big(i, &to, 200)).collect());
    s.s.handle(Event::Connected, T0).unwrap();
    s.s.message_data(0, MessageBytes::Raw(s.raws[0].clone()), T0).unwrap();
    let e = s.s.message_data(0, MessageBytes::Raw(s.raws[0].clone()), T0).unwrap_err();
    assert!(e.message.contains("already has"), "{e}");
}

#[test]
fn a_single_submission_asks_for_no_message() {
    let mut s = SmtpSession::new(
        submission(Security::ImplicitTls, basic()),
        "agent@shop.example".into(),
        vec!["ann@example.com".into()],
        b"x\r\n".to_vec(),
    )
    .unwrap();
    assert!(s.handle(Event::Connected, T0).unwrap().is_empty());
    assert_eq!(s.message_data(0, MessageBytes::Raw(b"x".to_vec()), T0).unwrap_err().kind, ErrorKind::Protocol);
}

#[test]
fn a_secret_echoed_in_a_refusal_is_redacted_in_the_message_outcome() {
    let mut s = batch(vec![message(0, &["ann@example.com"])]);
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    let line = format!("250 Ok\r\n250 Ok\r\n354 go\r\n");
    s.server(line.as_bytes(), Chunking::Whole).unwrap();
    let a = s.server(format!("554 5.7.1 rejected {PASSWORD}\r\n").as_bytes(), Chunking::Whole).unwrap();
    let shown = format!("{:?}", done(&a));
    assert!(!shown.contains(PASSWORD), "{shown}");
}

#[test]
fn a_clean_message_is_written_from_the_hosts_copy_and_one_needing_changes_from_the_guests() {
    let to = ["ann@example.com"];
    let clean = with_raw(0, &to, b"Subject: 0\r\n\r\nbody 0\r\n".to_vec());
    let bare_lf = with_raw(1, &to, b"Subject: 1\n\n.dot\n".to_vec());
    let no_final_crlf = with_raw(2, &to, b"Subject: 2\r\n\r\nlast".to_vec());
    let mut s = batch(vec![clean, bare_lf, no_final_crlf]);
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    assert_eq!(s.asked, [0, 1, 2]);
    let env = |size: usize| format!("MAIL FROM:<agent@shop.example> SIZE={size}\r\nRCPT TO:<ann@example.com>\r\nDATA\r\n");
    // Message 0 is clean: the host writes its bytes, the guest only the dot and what follows.
    let a = server(&mut s.s, b"250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    let k = a.iter().position(|x| *x == Action::WriteMessage(0)).unwrap_or_else(|| panic!("{a:?}"));
    assert_eq!(a[k - 1], Action::CommitPoint(0), "the commit point precedes the bytes");
    let Action::Write(rest) = &a[k + 1] else { panic!("{a:?}") };
    assert_eq!(text(rest), format!(".\r\n{}", env(b"Subject: 1\r\n\r\n.dot\r\n".len())));
    // Message 1 needed changes: the guest writes the encoded bytes, none of the host's.
    let a = server(&mut s.s, b"250 Ok: queued\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    assert!(!a.iter().any(|x| matches!(x, Action::WriteMessage(_))), "{a:?}");
    assert_eq!(text(&written(&a)), format!("Subject: 1\r\n\r\n..dot\r\n.\r\n{}", env(b"Subject: 2\r\n\r\nlast\r\n".len())));
    // Message 2 is clean but has no final line end: the guest adds it before the dot.
    let a = server(&mut s.s, b"250 Ok: queued\r\n250 Ok\r\n250 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
    let k = a.iter().position(|x| *x == Action::WriteMessage(2)).unwrap_or_else(|| panic!("{a:?}"));
    let Action::Write(rest) = &a[k + 1] else { panic!("{a:?}") };
    assert_eq!(text(rest), "\r\n.\r\n");
    assert_eq!(text(&written(&s.expand(a))), "Subject: 2\r\n\r\nlast\r\n.\r\n");
    let a = s.server(b"250 Ok: queued\r\n221 Bye\r\n", Chunking::Whole).unwrap();
    assert_eq!(finished(&a).delivered, 3);
}

#[test]
fn bytes_the_host_checked_are_written_by_the_host_with_8bitmime_as_it_said() {
    let to = ["ann@example.com"];
    let raw = "Subject: Gr\u{fc}\u{df}e\r\n\r\nSch\u{f6}n\r\n".as_bytes().to_vec();
    let mut s = batch(vec![with_raw(0, &to, raw.clone())]);
    let a = s.s.handle(Event::Connected, T0).unwrap();
    assert_eq!(a, [Action::NeedMessage(0)]);
    // The host's word: clean, with an 8-bit byte. The session never sees the bytes.
    assert!(s.s.message_data(0, MessageBytes::Clean { size: raw.len() as u64, eight_bit: true }, T0).unwrap().is_empty());
    s.asked.push(0);
    s.exchange(GREETING, EHLO, Chunking::Whole);
    s.exchange(EHLO_TLS_CAPS, AUTH_PLAIN, Chunking::Whole);
    let a = s.server(AUTH_OK, Chunking::Whole).unwrap();
    let mail = format!("MAIL FROM:<agent@shop.example> SIZE={} BODY=8BITMIME\r\nRCPT TO:<ann@example.com>\r\nDATA\r\n", raw.len());
    assert_eq!(text(&written(&a)), mail);
    let a = s.s.handle(Event::Received(b"250 Ok\r\n250 Ok\r\n354 go\r\n"), T0).unwrap();
    // The host's own bytes, then only the final dot: nothing added, nothing stuffed.
    let k = a.iter().position(|x| *x == Action::WriteMessage(0)).unwrap_or_else(|| panic!("{a:?}"));
    assert_eq!(a.get(k + 1), Some(&Action::Write(b".\r\n".to_vec())), "{a:?}");
}

#[test]
fn clean_bytes_too_short_to_end_with_crlf_are_the_hosts_mistake() {
    let to = ["ann@example.com"];
    let mut s = batch(vec![with_raw(0, &to, b"x".to_vec())]);
    assert_eq!(s.s.handle(Event::Connected, T0).unwrap(), [Action::NeedMessage(0)]);
    let e = s.s.message_data(0, MessageBytes::Clean { size: 1, eight_bit: false }, T0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.message.contains("too few to end with CRLF"), "{e}");
}

#[test]
fn clean_bytes_of_another_length_than_announced_are_the_hosts_mistake() {
    let to = ["ann@example.com"];
    let mut s = batch(vec![message(0, &to)]);
    assert_eq!(s.s.handle(Event::Connected, T0).unwrap(), [Action::NeedMessage(0)]);
    let announced = s.raws[0].len() as u64;
    let e = s.s.message_data(0, MessageBytes::Clean { size: announced + 1, eight_bit: false }, T0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.message.contains("announced"), "{e}");
    assert!(s.s.handle(Event::Closed, T0).is_err(), "the session is over");
}

/// One batch as the server answers it, read whole: the replies to message 0's envelope, then
/// per message the final reply of the one before with the next one's envelope replies (the
/// message `refused` has its second recipient refused), then the last final reply and QUIT's.
fn run_whole(honour_arms: bool, messages: Vec<M>, refused: usize) -> (Host, Vec<Action>) {
    let n = messages.len();
    let recipients: Vec<usize> = messages.iter().map(|m| m.env.envelope_to.len()).collect();
    let mut s = batch(messages);
    s.honour_arms = honour_arms;
    let mut all = logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    let envelope_replies = |i: usize| {
        let rcpts: String = (0..recipients[i]).map(|k| if i == refused && k == 1 { "550 5.1.1 no such user\r\n" } else { "250 2.1.5 Ok\r\n" }).collect();
        format!("250 2.1.0 Ok\r\n{rcpts}354 go\r\n")
    };
    all.extend(s.server(envelope_replies(0).as_bytes(), Chunking::Whole).unwrap());
    for i in 1..n {
        let replies = format!("250 2.0.0 Ok: queued as Q{i}\r\n{}", envelope_replies(i));
        all.extend(s.server(replies.as_bytes(), Chunking::Whole).unwrap());
    }
    all.extend(s.server(b"250 2.0.0 Ok: queued as LAST\r\n", Chunking::Whole).unwrap());
    all.extend(s.server(b"221 2.0.0 Bye\r\n", Chunking::Whole).unwrap());
    (s, all)
}

#[test]
fn armed_writes_go_out_as_the_354_arrives_and_the_wire_is_the_same_as_without_them() {
    let to = ["ann@example.com"];
    let two = ["ann@example.com", "bob@example.com"];
    let messages = || {
        vec![
            message(0, &to),
            message(1, &two),
            // Needs its leading dot stuffed: the session holds it, and no write is armed for it.
            with_raw(2, &to, b"Subject: 2\r\n\r\n.dot\r\n".to_vec()),
            message(3, &two),
            message(4, &to),
            message(5, &to),
        ]
    };
    // Message 3 has a recipient refused: its replies do not match, the session writes itself.
    let (armed, with) = run_whole(true, messages(), 3);
    let (plain, without) = run_whole(false, messages(), 3);
    assert_eq!(text(&written(&with)), text(&written(&without)), "the same bytes on the wire, in the same order");
    assert_eq!(done(&with), done(&without), "the same outcomes");
    assert_eq!(deliveries(&with), [Delivery::Delivered; 6]);
    assert_eq!(finished(&with), finished(&without));
    // Armed for 0, 1, 4 and 5; not for 2 (held by the session), nor for 3 (a refusal came).
    assert_eq!((armed.fired, plain.fired), (4, 0));
    // Each commit point still comes before the write with that message's final dot.
    let t = trace(&with);
    for i in [0, 1, 3, 4, 5] {
        let commit = t.iter().position(|x| *x == format!("commit {i}")).unwrap_or_else(|| panic!("commit {i}: {t:?}"));
        let dot = t.iter().position(|x| x.starts_with("write") && x.contains(&format!("body {i}\r\n.\r\n")));
        assert!(dot.is_some_and(|dot| commit < dot), "message {i}: {t:?}");
    }
    assert!(!with.iter().any(|a| matches!(a, Action::ArmWrite(_))), "the host keeps the arms");
}

#[test]
fn bytes_reported_for_a_write_that_was_not_armed_end_the_session() {
    let to = ["ann@example.com"];
    let mut s = batch(vec![message(0, &to), message(1, &to)]);
    logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
    assert!(s.armed.is_some(), "message 0's write is armed after its envelope");
    // A read that does not match ends the arm on both sides; a host that still reports the
    // armed write performed is refused.
    s.s.handle(Event::Received(b"250 2.1.0 Ok\r\n"), T0).unwrap();
    let e = s.s.received_armed(b"250 2.1.5 Ok\r\n354 go\r\n", T0).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(e.message.contains("no write is armed"), "{}", e.message);
    assert!(s.s.handle(Event::Timer, T0).is_err(), "the session is over");
}

#[test]
fn a_write_performed_on_replies_that_do_not_match_the_arm_leaves_that_message_uncertain() {
    let to = ["ann@example.com"];
    for replies in [&b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 try later\r\n"[..], b"250 2.1.0 Ok\r\n550 5.1.1 no such user\r\n354 go\r\n", b"250 2.1.0 Ok\r\n"] {
        let mut s = batch(vec![message(0, &to), message(1, &to)]);
        logged_in(&mut s, EHLO_TLS_CAPS, Chunking::Whole);
        assert!(s.armed.is_some(), "message 0's write is armed after its envelope");
        // A host that performed the armed write on these replies broke the contract: the
        // message went out, so it is uncertain (never "not sent", which would send it twice).
        let a = s.s.received_armed(replies, T0).expect("the batch ends with every outcome");
        assert_eq!(deliveries(&a), [Delivery::Uncertain, Delivery::NotSent], "{:?}", String::from_utf8_lossy(replies));
        assert!(written(&a).is_empty(), "nothing more is written: {:?}", trace(&a));
        assert!(a.contains(&Action::Close));
        assert!(finished(&a).stopped.is_some());
    }
}

#[test]
fn no_write_is_armed_when_the_next_message_cannot_go_to_this_server() {
    // PIPELINING, SIZE 60 and no SMTPUTF8: message 1 is either over the size or has an
    // address the server cannot carry, so what the 354 of message 0 calls for is not the next
    // message's commands; the session does not arm, and writes message 0 itself.
    let caps = b"250-smtp.shop.example\r\n250-PIPELINING\r\n250-SIZE 60\r\n250 AUTH PLAIN LOGIN\r\n";
    let to = ["ann@example.com"];
    let big = with_raw(1, &to, format!("Subject: 1\r\n\r\n{}\r\n", "x".repeat(100)).into_bytes());
    let utf8 = message(1, &["j\u{f6}rg@example.com"]);
    for second in [big, utf8] {
        let mut s = batch(vec![message(0, &to), second]);
        logged_in(&mut s, caps, Chunking::Whole);
        assert!(s.armed.is_none(), "nothing armed");
        let a = s.server(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n", Chunking::Whole).unwrap();
        assert_eq!(s.fired, 0);
        assert_eq!(text(&written(&a)), data(0), "message 0, its final dot, no commands for message 1");
        assert_eq!(deliveries(&a), [], "message 1's refusal waits for message 0's outcome");
        let a = s.server(b"250 2.0.0 Ok: queued as A\r\n", Chunking::Whole).unwrap();
        assert_eq!(deliveries(&a), [Delivery::Delivered, Delivery::Permanent]);
    }
}
