//! The transcript harness of the IMAP sessions' unit tests (`tests` for `ImapSession`,
//! `append::tests` for `AppendSession`): a script of what the server sends and what the
//! client must write, fed whole, in odd chunks and one byte at a time.

use std::fmt;

use crate::error::Error;
use crate::session::{Action, Event, Session};

#[derive(Clone, Copy)]
pub(crate) enum Step<'a> {
    /// The server sends these bytes.
    S(&'a [u8]),
    /// The client must have written exactly these bytes since the last check.
    C(&'a [u8]),
    /// The client must have asked for TLS; the host reports the handshake done.
    Tls,
    /// The host reports everything delivered stored.
    Stored,
    /// The server closes the connection.
    Closed,
    /// The session must be waiting for the host, not the server: no deadline.
    Idle,
}
use Step::{Closed, Idle, Stored, Tls, C, S};

/// What each test suite adds to the common checks of a scripted session.
pub(crate) trait Scripted: Session + fmt::Debug {
    /// True when a script that runs without an error must check every byte written (end
    /// with no unchecked client bytes).
    const CHECKS_EVERY_WRITE: bool;

    /// Checks after every successful `handle` call.
    fn after_handle(&self) {}
}

#[derive(Debug)]
pub(crate) struct Run<T> {
    /// Non-write actions in order.
    pub(crate) actions: Vec<Action>,
    /// Everything the client wrote.
    pub(crate) wire: Vec<u8>,
    pub(crate) error: Option<Error>,
    /// Writes, counted over the `handle` calls that wrote anything.
    pub(crate) writes: usize,
    pub(crate) session: Option<T>,
}

impl<T> Run<T> {
    pub(crate) fn err(&self) -> &Error {
        self.error.as_ref().expect("the session should have failed")
    }
}

/// Drives one session through the script, feeding server bytes `chunk` at a time.
pub(crate) fn drive<T: Scripted>(mut s: T, script: &[Step<'_>], chunk: usize) -> Run<T> {
    let mut run = Run { actions: Vec::new(), wire: Vec::new(), error: None, writes: 0, session: None };
    let mut unchecked: Vec<u8> = Vec::new();
    let mut now = 1_000u64;
    let mut feed = |s: &mut T, ev: Event<'_>, run: &mut Run<T>, unchecked: &mut Vec<u8>| -> bool {
        now += 1;
        match s.handle(ev, now) {
            Ok(actions) => {
                s.after_handle();
                let writes = actions.iter().filter(|a| matches!(a, Action::Write(_))).count();
                assert!(writes <= 1, "one write per handle call, got {writes}");
                run.writes += writes;
                for a in actions {
                    match a {
                        Action::Write(b) => {
                            run.wire.extend_from_slice(&b);
                            unchecked.extend_from_slice(&b);
                        }
                        other => run.actions.push(other),
                    }
                }
                true
            }
            Err(e) => {
                run.error = Some(e);
                false
            }
        }
    };
    'script: {
        if !feed(&mut s, Event::Connected, &mut run, &mut unchecked) {
            break 'script;
        }
        for step in script {
            match step {
                S(bytes) => {
                    for piece in bytes.chunks(chunk.max(1)) {
                        if !feed(&mut s, Event::Received(piece), &mut run, &mut unchecked) {
                            break 'script;
                        }
                    }
                }
                C(expected) => {
                    assert_eq!(
                        String::from_utf8_lossy(&unchecked),
                        String::from_utf8_lossy(expected),
                        "client wrote (chunk {chunk})"
                    );
                    unchecked.clear();
                }
                Tls => {
                    assert_eq!(run.actions.last(), Some(&Action::StartTls), "chunk {chunk}");
                    assert_eq!(s.deadline(), None, "no deadline while the host runs the handshake");
                    if !feed(&mut s, Event::TlsEstablished, &mut run, &mut unchecked) {
                        break 'script;
                    }
                }
                Idle => assert_eq!(s.deadline(), None, "no deadline while waiting for the host (chunk {chunk})"),
                Stored => {
                    if !feed(&mut s, Event::Stored, &mut run, &mut unchecked) {
                        break 'script;
                    }
                }
                Closed => {
                    if !feed(&mut s, Event::Closed, &mut run, &mut unchecked) {
                        break 'script;
                    }
                }
            }
        }
        if T::CHECKS_EVERY_WRITE {
            assert!(unchecked.is_empty(), "unchecked client bytes: {:?}", String::from_utf8_lossy(&unchecked));
        }
    }
    run.session = Some(s);
    run
}

/// Runs the script whole, in odd chunks and byte by byte; all runs must write, do and fail
/// alike and leave the same sync state.
pub(crate) fn drive_all<T: Scripted>(make: impl Fn() -> T, script: &[Step<'_>]) -> Run<T> {
    let whole = drive(make(), script, usize::MAX);
    for chunk in [1, 2, 3, 7, 13, 64] {
        let r = drive(make(), script, chunk);
        assert_eq!(r.actions, whole.actions, "actions differ with chunk {chunk}");
        assert_eq!(r.wire, whole.wire, "writes differ with chunk {chunk}");
        assert_eq!(r.error, whole.error, "chunk {chunk}");
        assert_eq!(
            r.session.as_ref().and_then(|s| s.sync_state()),
            whole.session.as_ref().and_then(|s| s.sync_state()),
            "chunk {chunk}"
        );
    }
    whole
}

/// A script built step by step, for the scripts the tests share: `Script::login()` and the
/// other openings in `imap::tests`, then the steps of each test. Bytes built at run time
/// (`String`, `Vec<u8>`) are kept for the rest of the test process, like every script's
/// literals. Derefs to the steps, so `&script` is what `drive` and `drive_all` take.
pub(crate) struct Script(Vec<Step<'static>>);

/// Bytes a script step can hold.
pub(crate) trait ScriptBytes {
    fn into_static(self) -> &'static [u8];
}

impl ScriptBytes for &'static [u8] {
    fn into_static(self) -> &'static [u8] {
        self
    }
}

impl<const N: usize> ScriptBytes for &'static [u8; N] {
    fn into_static(self) -> &'static [u8] {
        self
    }
}

impl ScriptBytes for &'static str {
    fn into_static(self) -> &'static [u8] {
        self.as_bytes()
    }
}

impl ScriptBytes for Vec<u8> {
    fn into_static(self) -> &'static [u8] {
        Box::leak(self.into_boxed_slice())
    }
}

impl ScriptBytes for String {
    fn into_static(self) -> &'static [u8] {
        self.into_bytes().into_static()
    }
}

impl Script {
    /// The server sends `bytes`.
    pub(crate) fn s(mut self, bytes: impl ScriptBytes) -> Script {
        self.0.push(S(bytes.into_static()));
        self
    }

    /// The client must have written exactly `bytes` since the last check.
    pub(crate) fn c(mut self, bytes: impl ScriptBytes) -> Script {
        self.0.push(C(bytes.into_static()));
        self
    }

    pub(crate) fn stored(mut self) -> Script {
        self.0.push(Stored);
        self
    }

    pub(crate) fn idle(mut self) -> Script {
        self.0.push(Idle);
        self
    }

    pub(crate) fn closed(mut self) -> Script {
        self.0.push(Closed);
        self
    }

    /// Step `i` replaced (another greeting, another command).
    pub(crate) fn with_step(mut self, i: usize, step: Step<'static>) -> Script {
        self.0[i] = step;
        self
    }
}

impl std::ops::Deref for Script {
    type Target = [Step<'static>];
    fn deref(&self) -> &[Step<'static>] {
        &self.0
    }
}

impl From<Vec<Step<'static>>> for Script {
    fn from(steps: Vec<Step<'static>>) -> Script {
        Script(steps)
    }
}
