//! What every client needs from its connection, whatever the protocol: the TLS phase
//! (implicit, STARTTLS, opted-in plaintext), a bounded input buffer that yields lines and
//! exact byte counts without re-scanning, and the reply deadline.

use crate::config::{Limits, Security, Server};
use crate::error::{Error, Result, Stage};
use crate::session::{Event, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tls {
    /// Clear text; STARTTLS not yet done.
    Clear,
    /// We asked the host to start TLS and wait for the handshake.
    Upgrading,
    /// Encrypted (implicit TLS, or after STARTTLS).
    Secure,
}

/// Input bytes not yet consumed. `start` is the first unconsumed byte, `scanned` how far we
/// already looked for a line end, so a long line arriving in many reads is scanned once.
#[derive(Debug, Default)]
struct InputBuffer {
    buf: Vec<u8>,
    start: usize,
    scanned: usize,
}

impl InputBuffer {
    fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }
    fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// A line popped from the input: the bytes without the line ending.
pub struct Line<'a>(pub &'a [u8]);

/// The connection state every client embeds.
#[derive(Debug)]
pub struct Link {
    security: Security,
    tls: Tls,
    input: InputBuffer,
    deadline: Option<Instant>,
    reply_timeout: u64,
    max_line: usize,
}

impl Link {
    pub fn new(server: &Server, limits: &Limits) -> Self {
        Link {
            security: server.security,
            tls: if server.security == Security::ImplicitTls { Tls::Secure } else { Tls::Clear },
            input: InputBuffer::default(),
            deadline: None,
            reply_timeout: u64::from(limits.reply_timeout_ms),
            max_line: limits.max_line_bytes as usize,
        }
    }

    /// A connection another instance set up and handed over (an idling IMAP session resumed):
    /// encrypted unless the mailbox is plaintext, since credentials were sent over it.
    pub fn resumed(server: &Server, limits: &Limits) -> Self {
        let mut link = Link::new(server, limits);
        if server.security != Security::InsecurePlaintext {
            link.tls = Tls::Secure;
        }
        link
    }

    pub fn security(&self) -> Security {
        self.security
    }

    /// True once the connection is encrypted.
    pub fn is_secure(&self) -> bool {
        self.tls == Tls::Secure
    }

    /// True while a STARTTLS connection is not yet encrypted: what the server says cannot be
    /// trusted (and must not be quoted to the admin).
    pub fn unverified(&self) -> bool {
        self.security == Security::Starttls && self.tls != Tls::Secure
    }

    /// True when the client still has to run STARTTLS before authenticating.
    pub fn needs_starttls(&self) -> bool {
        self.security == Security::Starttls && self.tls == Tls::Clear
    }

    /// Credentials may only cross an encrypted connection, or a plaintext one the tenant
    /// explicitly opted in to.
    pub fn check_credentials_allowed(&self) -> Result<()> {
        if self.is_secure() || self.security == Security::InsecurePlaintext {
            Ok(())
        } else {
            Err(Error::policy(
                Stage::Authenticate,
                "refusing to send credentials over an unencrypted connection; turn TLS on or use STARTTLS",
            ))
        }
    }

    /// The server accepted STARTTLS. Any byte already buffered after that reply was sent
    /// before the handshake and could be an injected response: abort.
    pub fn begin_starttls(&mut self) -> Result<()> {
        if self.input.pending() > 0 {
            return Err(Error::policy(
                Stage::Starttls,
                format!(
                    "the server sent {} unexpected bytes right after accepting STARTTLS (possible response injection); the connection was aborted",
                    self.input.pending()
                ),
            ));
        }
        self.tls = Tls::Upgrading;
        self.deadline = None;
        Ok(())
    }

    /// Handles the events that mean the same thing for every protocol, and appends received
    /// bytes to the buffer. Returns `Ok(true)` when the event was fully handled here (the
    /// caller has nothing to do), `Ok(false)` when the caller must act on it.
    pub fn absorb(&mut self, event: &Event<'_>, now: Instant, stage: Stage) -> Result<bool> {
        match *event {
            Event::Received(bytes) => {
                if self.tls == Tls::Upgrading {
                    return Err(Error::policy(
                        Stage::Starttls,
                        "the server sent data while TLS was being started; the connection was aborted",
                    ));
                }
                self.input.push(bytes);
                Ok(false)
            }
            Event::TlsEstablished => {
                if self.tls != Tls::Upgrading {
                    return Err(Error::protocol(stage, "host reported a TLS handshake the session did not ask for"));
                }
                self.tls = Tls::Secure;
                Ok(false)
            }
            Event::TlsFailed(why) => Err(Error::tls(Stage::Starttls, format!("TLS could not be started: {why}"))),
            Event::Closed => Err(Error::network(
                stage,
                format!("the server closed the connection during {}", stage.as_str()),
            )),
            Event::Timer => match self.deadline {
                // No greeting with TLS off: the port most likely waits for a TLS handshake, and
                // a longer timeout would only make the admin wait longer for the same failure.
                Some(d) if now >= d && stage == Stage::Greeting && self.security != Security::ImplicitTls => Err(Error::timeout(
                    stage,
                    format!(
                        "the server sent no greeting within {} s with TLS off: a port that expects TLS from the first byte stays silent like this; turn TLS on if this is such a port (IMAP 993, POP3 995, SMTP 465), or check the host name and port",
                        self.reply_timeout / 1000
                    ),
                )),
                Some(d) if now >= d => Err(Error::timeout(
                    stage,
                    format!(
                        "the server did not answer within {} s during {}; check the host name and port, or raise the reply timeout",
                        self.reply_timeout / 1000,
                        stage.as_str()
                    ),
                )),
                _ => Ok(true),
            },
            Event::Connected | Event::Stored => Ok(false),
        }
    }

    /// Start waiting for the server: the deadline is `now` plus the reply timeout.
    pub fn expect_reply(&mut self, now: Instant) {
        self.deadline = Some(now.saturating_add(self.reply_timeout));
    }

    /// Stop waiting (nothing outstanding).
    pub fn clear_deadline(&mut self) {
        self.deadline = None;
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The longest protocol line accepted, without its line end (`limits.max_line_bytes`).
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// Number of buffered, unconsumed bytes.
    pub fn pending(&self) -> usize {
        self.input.pending()
    }

    /// Pops one protocol line (at most `max_line_bytes`), without its CRLF or LF.
    pub fn next_line(&mut self, stage: Stage) -> Result<Option<Line<'_>>> {
        let max = self.max_line;
        self.next_line_max(max, stage)
    }

    /// Pops one line of at most `max` bytes (used for message bodies, whose lines are bounded
    /// by the message limit rather than the protocol line limit).
    pub fn next_line_max(&mut self, max: usize, stage: Stage) -> Result<Option<Line<'_>>> {
        let inp = &mut self.input;
        let from = inp.scanned.max(inp.start);
        // memchr: wasm simd128 in the component (a batch reads four reply lines per message).
        match memchr::memchr(b'\n', &inp.buf[from..]) {
            Some(off) => {
                let end = from + off; // index of '\n'
                let line_start = inp.start;
                let mut line_end = end;
                if line_end > line_start && inp.buf[line_end - 1] == b'\r' {
                    line_end -= 1;
                }
                if line_end - line_start > max {
                    return Err(line_too_long(max, stage));
                }
                inp.start = end + 1;
                inp.scanned = inp.start;
                Ok(Some(Line(&inp.buf[line_start..line_end])))
            }
            None => {
                inp.scanned = inp.buf.len();
                if inp.pending() > max + 1 {
                    return Err(line_too_long(max, stage));
                }
                Ok(None)
            }
        }
    }

    /// Pops exactly `n` bytes (an IMAP literal), or `None` until that many are buffered.
    pub fn take_exact(&mut self, n: usize) -> Option<Vec<u8>> {
        let inp = &mut self.input;
        if inp.pending() < n {
            return None;
        }
        let out = inp.buf[inp.start..inp.start + n].to_vec();
        inp.start += n;
        inp.scanned = inp.start;
        Some(out)
    }
}

fn line_too_long(max: usize, stage: Stage) -> Error {
    Error::limit(
        stage,
        format!("the server sent a line longer than {max} bytes during {}; the session was stopped", stage.as_str()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(sec: Security) -> Link {
        let server = Server { host: "h".into(), port: 1, security: sec };
        Link::new(&server, &Limits { max_line_bytes: 10, ..Limits::default() })
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let mut l = link(Security::ImplicitTls);
        l.absorb(&Event::Received(b"+OK he"), 0, Stage::Greeting).unwrap();
        assert!(l.next_line(Stage::Greeting).unwrap().is_none());
        l.absorb(&Event::Received(b"llo\r\n-E"), 0, Stage::Greeting).unwrap();
        assert_eq!(l.next_line(Stage::Greeting).unwrap().unwrap().0, b"+OK hello");
        assert!(l.next_line(Stage::Greeting).unwrap().is_none());
        l.absorb(&Event::Received(b"RR\n"), 0, Stage::Greeting).unwrap();
        assert_eq!(l.next_line(Stage::Greeting).unwrap().unwrap().0, b"-ERR");
    }

    #[test]
    fn overlong_line_is_a_limit_error_even_without_newline() {
        let mut l = link(Security::ImplicitTls);
        l.absorb(&Event::Received(&[b'a'; 64]), 0, Stage::Greeting).unwrap();
        let e = l.next_line(Stage::Greeting).err().unwrap();
        assert_eq!(e.kind, crate::error::ErrorKind::Limit);
    }

    #[test]
    fn bytes_buffered_before_starttls_abort() {
        let mut l = link(Security::Starttls);
        l.absorb(&Event::Received(b"OK go\r\ninjected\r\n"), 0, Stage::Starttls).unwrap();
        l.next_line(Stage::Starttls).unwrap().unwrap();
        let e = l.begin_starttls().unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Policy);
    }

    #[test]
    fn credentials_refused_on_clear_starttls_link() {
        let l = link(Security::Starttls);
        assert!(l.check_credentials_allowed().is_err());
        assert!(link(Security::InsecurePlaintext).check_credentials_allowed().is_ok());
        assert!(link(Security::ImplicitTls).check_credentials_allowed().is_ok());
    }

    #[test]
    fn timer_before_deadline_is_ignored_after_is_timeout() {
        let mut l = link(Security::ImplicitTls);
        l.expect_reply(1000);
        assert!(l.absorb(&Event::Timer, 1500, Stage::Greeting).unwrap());
        let e = l.absorb(&Event::Timer, 1000 + 60_000, Stage::Greeting).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Timeout);
    }

    #[test]
    fn no_greeting_with_tls_off_advises_tls_not_a_longer_timeout() {
        for security in [Security::Starttls, Security::InsecurePlaintext] {
            let mut l = link(security);
            l.expect_reply(0);
            let e = l.absorb(&Event::Timer, 60_000, Stage::Greeting).unwrap_err();
            assert_eq!(e.kind, crate::error::ErrorKind::Timeout);
            assert!(e.message.contains("no greeting") && e.message.contains("turn TLS on"), "{}", e.message);
            assert!(!e.message.contains("raise"), "{}", e.message);
        }
        // Later stages, and the greeting over TLS, keep the general advice.
        let mut l = link(Security::Starttls);
        l.expect_reply(0);
        assert!(l.absorb(&Event::Timer, 60_000, Stage::Capabilities).unwrap_err().message.contains("raise the reply timeout"));
        let mut l = link(Security::ImplicitTls);
        l.expect_reply(0);
        assert!(!l.absorb(&Event::Timer, 60_000, Stage::Greeting).unwrap_err().message.contains("turn TLS on"));
    }

    #[test]
    fn take_exact_waits_for_all_bytes() {
        let mut l = link(Security::ImplicitTls);
        l.absorb(&Event::Received(b"abc"), 0, Stage::FetchMessage).unwrap();
        assert!(l.take_exact(5).is_none());
        l.absorb(&Event::Received(b"de)\r\n"), 0, Stage::FetchMessage).unwrap();
        assert_eq!(l.take_exact(5).unwrap(), b"abcde");
        assert_eq!(l.next_line(Stage::FetchMessage).unwrap().unwrap().0, b")");
    }
}
