//! The batch submission session (`open-batch`) under arbitrary server bytes, driven the way
//! the host's driver drives it: each `need-message` answered with `message-data` (the bytes, or
//! `clean` when the host's own check passes them), `write-message` standing for those bytes, and
//! an `arm-write` performed when the next read is exactly the lines it names, with the read then
//! handed over by `received-armed`.

use super::{check_error, check_no_secret, host_event, limits, pieces, server, Piece, MAX_MESSAGE, PASSWORD};
use crate::config::{Credentials, Security, SubmissionServer};
use crate::session::{Action, ArmedWrite, Delivery, Event, MessageBytes, Session};
use crate::smtp::{BatchEnvelope, SmtpSession};

/// The messages a batch may hold: plain, with leading dots, 8-bit, with a NUL (never
/// sendable), without a final line end, and one just over the harness's message limit.
fn messages() -> Vec<Vec<u8>> {
    let big = {
        let mut m = b"Subject: big\r\n\r\n".to_vec();
        m.resize(MAX_MESSAGE as usize + 1, b'x');
        m.extend_from_slice(b"\r\n");
        m
    };
    vec![
        b"Subject: one\r\n\r\nhello\r\n".to_vec(),
        b"Subject: dots\r\n\r\n.\r\n..x\r\n.\r\n".to_vec(),
        "Subject: acht\r\n\r\nGr\u{fc}\u{df}e\r\n".as_bytes().to_vec(),
        b"Subject: nul\r\n\r\na\0b\r\n".to_vec(),
        b"Subject: open\r\n\r\nno line end".to_vec(),
        big,
    ]
}

/// `data`: a configuration byte, then what the server sends. The configuration picks the
/// security, which messages the batch holds (bits 2 to 4: how many, 1 to 6, the first from the
/// list above rotated by the second byte), whether the host hands over clean bytes (bit 5),
/// honours arms (bit 6) and reads whole pieces (bit 7) or line by line. Two bytes `0xFF k` in
/// the stream are a host event or a read boundary: 'T' timer past the deadline, 'C' closed,
/// 'F' TLS failed, '|' the end of a read.
pub fn smtp_batch(data: &[u8]) -> BatchRun {
    let mut run = BatchRun::default();
    drive(data, &mut run);
    run
}

/// What a harness run saw: each outcome in order, and how many armed writes were performed.
#[derive(Debug, Default)]
pub struct BatchRun {
    pub outcomes: Vec<(u32, Delivery)>,
    pub armed: usize,
}

fn drive(data: &[u8], run: &mut BatchRun) {
    let (cfg, pick, stream) = match data {
        [cfg, pick, rest @ ..] => (*cfg, *pick, rest),
        _ => return,
    };
    let security = [Security::ImplicitTls, Security::Starttls, Security::InsecurePlaintext, Security::ImplicitTls][usize::from(cfg & 3)];
    let all = messages();
    let count = 1 + usize::from((cfg >> 2) & 7) % all.len();
    let raws: Vec<Vec<u8>> = (0..count).map(|k| all[(usize::from(pick) + k) % all.len()].clone()).collect();
    let envelopes = raws
        .iter()
        .enumerate()
        .map(|(i, raw)| BatchEnvelope {
            message_id: format!("m{i}@example.com"),
            envelope_from: "agent@example.com".into(),
            envelope_to: if i % 2 == 0 { vec!["ann@example.org".into()] } else { vec!["ann@example.org".into(), "bob@example.org".into()] },
            size: raw.len() as u64,
        })
        .collect();
    let submission = SubmissionServer {
        server: server(security),
        credentials: Credentials::Basic { username: "agent@example.com".into(), password: PASSWORD.into() },
        helo_name: "client.example.com".into(),
        limits: limits(),
    };
    let Ok(mut s) = SmtpSession::new_batch(submission, envelopes) else { return };
    let mut host = Host {
        raws,
        clean: cfg & 0x20 != 0,
        honour_arms: cfg & 0x40 != 0,
        now: 1_000,
        received: 0,
        written: 0,
        run,
        stopped: false,
        armed: None,
        pending: Vec::new(),
    };
    if !host.step(&mut s, Input::Event(Event::Connected)) {
        return;
    }
    let whole = cfg & 0x80 != 0;
    for piece in pieces(stream) {
        let piece = match piece {
            // A batch session never waits for `stored`: 'S' is only a read boundary here.
            Piece::Host(k) => {
                if let Some(ev) = host_event(k).filter(|ev| !matches!(ev, Event::Stored)) {
                    if matches!(ev, Event::Timer) {
                        host.now = s.deadline().unwrap_or(host.now).max(host.now);
                    }
                    if !host.step(&mut s, Input::Event(ev)) {
                        return;
                    }
                }
                continue;
            }
            Piece::Data(data) => data,
        };
        let reads: Vec<&[u8]> = if whole { vec![piece] } else { piece.split_inclusive(|&b| b == b'\n').collect() };
        for read in reads {
            host.received += read.len();
            if !host.step(&mut s, Input::Read(read)) {
                return;
            }
        }
    }
    let _ = host.step(&mut s, Input::Event(Event::Closed));
}

enum Input<'a> {
    Event(Event<'a>),
    Read(&'a [u8]),
}

struct Host<'r> {
    raws: Vec<Vec<u8>>,
    clean: bool,
    honour_arms: bool,
    now: u64,
    received: usize,
    written: usize,
    /// The outcomes so far and the armed writes performed.
    run: &'r mut BatchRun,
    /// An uncertain outcome was reported: nothing more may be written for any message.
    stopped: bool,
    armed: Option<ArmedWrite>,
    pending: Vec<Event<'static>>,
}

impl Host<'_> {
    /// One step and the host's answers to it; false once the session ended.
    fn step(&mut self, s: &mut SmtpSession, input: Input<'_>) -> bool {
        self.now += 1;
        let unverified = s.unverified();
        let armed = self.armed.take().filter(|_| self.honour_arms);
        let result = match input {
            Input::Read(bytes) => match armed {
                Some(w) if mailplug_wire::armed_lines_match(bytes, &w.lines, w.max_line as usize) => {
                    self.wrote_message(w.message);
                    self.wrote(w.after.len());
                    self.run.armed += 1;
                    crate::session::received_armed_checked(s, bytes, self.now)
                }
                _ => crate::session::handle_checked(s, Event::Received(bytes), self.now),
            },
            Input::Event(ev) => crate::session::handle_checked(s, ev, self.now),
        };
        let mut queue = match result {
            Ok(a) => a,
            Err(e) => return self.failed(&e, unverified),
        };
        while !queue.is_empty() {
            let mut needs = Vec::new();
            for a in std::mem::take(&mut queue) {
                match a {
                    Action::Write(b) => self.wrote(b.len()),
                    Action::WriteMessage(i) => self.wrote_message(i),
                    Action::ArmWrite(w) => {
                        assert!(!self.stopped, "an arm after an uncertain message");
                        assert!((w.message as usize) < self.raws.len(), "armed message {} of {}", w.message, self.raws.len());
                        self.armed = Some(w);
                    }
                    Action::NeedMessage(i) => {
                        assert!(!self.stopped, "message {i} asked for after an uncertain message");
                        needs.push(i);
                    }
                    Action::MessageDone(r) => {
                        assert!((r.index as usize) < self.raws.len(), "an outcome for message {} of {}", r.index, self.raws.len());
                        assert!(!self.run.outcomes.iter().any(|(i, _)| *i == r.index), "two outcomes for message {}", r.index);
                        if let Some(e) = &r.error {
                            check_error(e);
                            check_no_secret(e, PASSWORD);
                        }
                        self.run.outcomes.push((r.index, r.delivery));
                        self.stopped |= r.delivery == Delivery::Uncertain;
                    }
                    Action::StartTls => self.pending.push(Event::TlsEstablished),
                    Action::Finished(_) | Action::Idle(_) => return false,
                    _ => {}
                }
            }
            for i in needs {
                let Some(raw) = self.raws.get(i as usize) else { panic!("message {i} asked for, the batch has {}", self.raws.len()) };
                let bytes = match mailplug_wire::clean_for_data(raw).filter(|_| self.clean) {
                    Some(c) => MessageBytes::Clean { size: raw.len() as u64, eight_bit: c.eight_bit },
                    None => MessageBytes::Raw(raw.clone()),
                };
                match s.message_data(i, bytes, self.now) {
                    Ok(more) => queue.extend(more),
                    Err(e) => return self.failed(&e, unverified),
                }
            }
        }
        while !self.pending.is_empty() {
            let ev = self.pending.remove(0);
            if !self.step(s, Input::Event(ev)) {
                return false;
            }
        }
        true
    }

    /// A step's error: explained, without the password, and without a reply read before TLS.
    fn failed(&self, e: &crate::error::Error, unverified: bool) -> bool {
        check_error(e);
        check_no_secret(e, PASSWORD);
        assert!(!unverified || e.reply.is_none(), "a reply kept from before TLS: {e:?}");
        false
    }

    fn wrote_message(&mut self, i: u32) {
        assert!(!self.stopped, "message {i} written after an uncertain message");
        let len = self.raws.get(i as usize).map_or(0, Vec::len);
        self.wrote(len);
    }

    /// The client's writes are bounded by the batch and what it was sent.
    fn wrote(&mut self, n: usize) {
        self.written += n;
        let batch: usize = self.raws.iter().map(|r| 2 * r.len() + 1024).sum();
        assert!(self.written <= batch + 64 * 1024 + 16 * self.received, "{} bytes written for {} received", self.written, self.received);
    }
}
