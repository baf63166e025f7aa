//! SMTP replies (RFC 5321 4.2): "250-first\r\n250 last\r\n", with RFC 3463 enhanced status
//! codes at the start of the text, and the EHLO keywords carried by a 250 reply.

use crate::error::{Error, Result, ServerReply, Stage};

/// Most lines one reply may have; real EHLO replies have about 15.
pub(crate) const MAX_REPLY_LINES: usize = 64;

/// One complete reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub code: u16,
    /// The text of each line, without the code and separator, joined by "\n" (a line never
    /// holds one: the link splits at each LF). One string rather than a list: most replies
    /// have one line, and a batch reads four replies per message.
    pub text: String,
}

impl Reply {
    /// A reply with these lines (tests and hand-made replies).
    #[cfg(test)]
    pub fn from_lines(code: u16, lines: &[&str]) -> Self {
        Reply { code, text: lines.join("\n") }
    }

    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// Each line's text.
    pub fn lines(&self) -> std::str::Split<'_, char> {
        self.text.split('\n')
    }

    /// The last line's text.
    pub fn last_line(&self) -> &str {
        self.text.rsplit('\n').next().unwrap_or("")
    }

    fn code_text(&self) -> String {
        // The code is three digits (`ReplyReader::feed`).
        let mut code = String::with_capacity(3);
        for digit in [self.code / 100 % 10, self.code / 10 % 10, self.code % 10] {
            code.push(char::from(b'0' + digit as u8));
        }
        code
    }

    /// The reply for the admin: the code, and the lines joined by "\n" (enhanced code kept).
    pub fn to_server_reply(&self) -> ServerReply {
        ServerReply::new(self.code_text(), self.text.clone())
    }

    /// `to_server_reply` without copying the text, which it takes (leaving it empty).
    pub fn take_server_reply(&mut self) -> ServerReply {
        ServerReply::new(self.code_text(), std::mem::take(&mut self.text))
    }

    /// "550 5.1.1 No such user" on one line, for error sentences.
    pub fn summary(&self) -> String {
        let text = self.last_line();
        if text.is_empty() { self.code.to_string() } else { format!("{} {}", self.code, text) }
    }
}

/// The RFC 3463 enhanced status code ("5.7.8") that starts a reply line, if any.
pub(crate) fn enhanced_status(line: &str) -> Option<&str> {
    let token = line.trim_start().split([' ', '\t']).next()?;
    let mut parts = token.split('.');
    let (Some(class), Some(subject), Some(detail), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let digits = |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
    (matches!(class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3)).then_some(token)
}

/// Collects the lines of one reply as they are popped from the link.
#[derive(Debug, Default)]
pub(crate) struct ReplyReader {
    code: Option<u16>,
    /// The lines so far, joined by "\n".
    text: String,
    lines: usize,
}

impl ReplyReader {
    /// Gives back a reply's text once read, so that the next reply reuses its buffer (a batch
    /// reads four replies per message and keeps the text of two).
    pub fn recycle(&mut self, mut text: String) {
        if self.text.capacity() == 0 {
            text.clear();
            self.text = text;
        }
    }

    /// No reply is half read (no line of a multi-line reply is waiting for the rest).
    pub fn idle(&self) -> bool {
        self.lines == 0
    }

    /// Feeds one line (without CRLF); returns the reply once its last line arrived.
    pub fn feed(&mut self, line: &[u8], stage: Stage) -> Result<Option<Reply>> {
        let (code, last) = match (line.get(..3), line.get(3)) {
            (Some(digits), sep) if digits.iter().all(u8::is_ascii_digit) && matches!(digits.first(), Some(b'2'..=b'5')) => {
                let code = digits.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
                match sep {
                    None | Some(b' ') => (code, true),
                    Some(b'-') => (code, false),
                    Some(_) => return Err(malformed(line, stage)),
                }
            }
            _ => return Err(malformed(line, stage)),
        };
        match self.code {
            Some(first) if first != code => {
                return Err(Error::protocol(
                    stage,
                    format!(
                        "the server changed the reply code from {first} to {code} within one multi-line reply during {}; it does not speak SMTP correctly",
                        stage.as_str()
                    ),
                ));
            }
            _ => self.code = Some(code),
        }
        if self.lines >= MAX_REPLY_LINES {
            return Err(Error::limit(
                stage,
                format!("the server sent a reply with more than {MAX_REPLY_LINES} lines during {}; the session was stopped", stage.as_str()),
            ));
        }
        let text = line.get(4..).unwrap_or_default();
        if self.lines > 0 {
            self.text.push('\n');
        }
        self.lines += 1;
        // Replies are nearly always ASCII: the checked conversion is cheaper than the lossy one.
        match std::str::from_utf8(text) {
            Ok(text) => self.text.push_str(text),
            Err(_) => self.text.push_str(&String::from_utf8_lossy(text)),
        }
        if !last {
            return Ok(None);
        }
        self.code = None;
        self.lines = 0;
        Ok(Some(Reply { code, text: std::mem::take(&mut self.text) }))
    }
}

fn malformed(line: &[u8], stage: Stage) -> Error {
    Error::protocol_quoting(stage, line, |shown| {
        format!(
            "the server sent {shown} during {}, which is not an SMTP reply (a 3-digit code 2xx-5xx, then a space or '-'); check that the port is an SMTP submission port",
            stage.as_str()
        )
    })
}

/// What an EHLO reply advertises, as far as this client uses it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Capabilities {
    pub starttls: bool,
    pub pipelining: bool,
    pub auth: Vec<String>,
    /// SIZE was advertised (so MAIL may carry SIZE=).
    pub size: bool,
    /// The advertised maximum message size; None when absent or 0 (no fixed limit).
    pub size_limit: Option<u64>,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
}

impl Capabilities {
    /// Reads the keywords of a 250 EHLO reply; the first line is the server's name.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities::default();
        for line in reply.lines().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else { continue };
            let keyword = keyword.to_ascii_uppercase();
            match keyword.as_str() {
                "STARTTLS" => caps.starttls = true,
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "SIZE" => {
                    caps.size = true;
                    caps.size_limit = words.next().and_then(|n| n.parse::<u64>().ok()).filter(|&n| n > 0);
                }
                "AUTH" => add_mechanisms(&mut caps.auth, words),
                _ => {
                    // Pre-RFC 4954 servers write "AUTH=PLAIN LOGIN".
                    if let Some(first) = keyword.strip_prefix("AUTH=") {
                        add_mechanisms(&mut caps.auth, std::iter::once(first).chain(words));
                    }
                }
            }
        }
        caps
    }
}

fn add_mechanisms<'a>(into: &mut Vec<String>, words: impl Iterator<Item = &'a str>) {
    for w in words {
        if !into.iter().any(|m| m.eq_ignore_ascii_case(w)) {
            into.push(w.to_ascii_uppercase());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn read_all(lines: &[&[u8]]) -> Result<Vec<Reply>> {
        let mut r = ReplyReader::default();
        let mut out = Vec::new();
        for l in lines {
            if let Some(reply) = r.feed(l, Stage::Capabilities)? {
                out.push(reply);
            }
        }
        Ok(out)
    }

    #[test]
    fn single_and_multi_line_replies() {
        let replies = read_all(&[b"220 mx ESMTP", b"250-mx.example", b"250-PIPELINING", b"250 SIZE 100", b"354"]).unwrap();
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[0], Reply::from_lines(220, &["mx ESMTP"]));
        assert_eq!(replies[1].code, 250);
        assert_eq!(replies[1].lines().collect::<Vec<_>>(), ["mx.example", "PIPELINING", "SIZE 100"]);
        assert_eq!(replies[1].to_server_reply(), ServerReply::new("250", "mx.example\nPIPELINING\nSIZE 100"));
        assert_eq!(replies[2], Reply::from_lines(354, &[""]));
        assert_eq!(replies[2].lines().collect::<Vec<_>>(), [""]);
    }

    #[test]
    fn malformed_codes_are_protocol_errors() {
        for bad in [&b"25 short"[..], b"2x0 letters", b"250x text", b"", b"* OK imap", b"+OK pop3", b"600 out of range", b"199 info"] {
            let e = read_all(&[bad]).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Protocol, "{:?}", String::from_utf8_lossy(bad));
            assert_eq!(e.stage, Stage::Capabilities);
        }
    }

    #[test]
    fn continuation_must_keep_the_code() {
        let e = read_all(&[b"250-first", b"550 second"]).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(e.message.contains("250") && e.message.contains("550"), "{}", e.message);
    }

    #[test]
    fn too_many_lines_is_a_limit_error() {
        let mut r = ReplyReader::default();
        for _ in 0..MAX_REPLY_LINES {
            assert!(r.feed(b"250-x", Stage::Capabilities).unwrap().is_none());
        }
        assert_eq!(r.feed(b"250 x", Stage::Capabilities).unwrap_err().kind, ErrorKind::Limit);
    }

    #[test]
    fn enhanced_status_codes() {
        assert_eq!(enhanced_status("5.7.8 Error: authentication failed"), Some("5.7.8"));
        assert_eq!(enhanced_status("2.0.0"), Some("2.0.0"));
        assert_eq!(enhanced_status("5.7.139 Authentication unsuccessful"), Some("5.7.139"));
        assert_eq!(enhanced_status("5.7.8x bad"), None);
        assert_eq!(enhanced_status("3.1.1 not a class"), None);
        assert_eq!(enhanced_status("5.1 short"), None);
        assert_eq!(enhanced_status("Authentication failed"), None);
        let r = Reply::from_lines(535, &["5.7.8 Error"]);
        assert_eq!(r.summary(), "535 5.7.8 Error");
    }

    #[test]
    fn ehlo_keywords() {
        let reply = Reply::from_lines(
            250,
            &["mx.example Hello", "pipelining", "SIZE 10240000", "AUTH PLAIN LOGIN", "AUTH=login xoauth2", "STARTTLS", "8BITMIME", "SMTPUTF8", ""],
        );
        let caps = Capabilities::from_ehlo(&reply);
        assert!(caps.pipelining && caps.starttls && caps.eight_bit_mime && caps.smtputf8 && caps.size);
        assert_eq!(caps.size_limit, Some(10_240_000));
        assert_eq!(caps.auth, ["PLAIN", "LOGIN", "XOAUTH2"]);
        // The greeting line is never a keyword.
        let only_name = Reply::from_lines(250, &["STARTTLS"]);
        assert!(!Capabilities::from_ehlo(&only_name).starttls);
        let unlimited = Reply::from_lines(250, &["mx", "SIZE 0"]);
        let caps = Capabilities::from_ehlo(&unlimited);
        assert!(caps.size);
        assert_eq!(caps.size_limit, None);
    }
}
