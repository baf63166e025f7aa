//! The one error family of the contract (`types.error` in the WIT), as plain Rust.

use std::fmt;

/// Where in a session something failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Greeting,
    Capabilities,
    Starttls,
    Authenticate,
    SelectMailbox,
    ListMessages,
    FetchMessage,
    Envelope,
    Data,
    Logout,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Capabilities => "capabilities",
            Stage::Starttls => "STARTTLS",
            Stage::Authenticate => "authentication",
            Stage::SelectMailbox => "mailbox selection",
            Stage::ListMessages => "message listing",
            Stage::FetchMessage => "message download",
            Stage::Envelope => "envelope (MAIL FROM / RCPT TO)",
            Stage::Data => "message data",
            Stage::Logout => "logout",
        }
    }
}

/// A server reply kept for the admin (never contains our secrets: we only keep what the
/// server said).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerReply {
    pub code: String,
    pub text: String,
}

impl ServerReply {
    pub fn new(code: impl Into<String>, text: impl Into<String>) -> Self {
        ServerReply { code: code.into(), text: text.into() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    Network,
    Tls,
    AuthRejected,
    Protocol,
    /// An ordinary refusal (recipients, the message's size); `Error::refusal` says which.
    Refused,
    Policy,
    Limit,
    Timeout,
    InvalidInput,
}

/// What an ordinary refusal is about (`refusal-cause` in the WIT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusalCause {
    /// Recipients refused at RCPT TO; `Refusal::recipients` has every answer.
    Recipients,
    /// The message is bigger than the server accepts (its SIZE limit, or 552 / 5.3.4).
    MessageTooBig { size: u64, server_limit: Option<u64> },
}

/// The details of an `ErrorKind::Refused` error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub cause: RefusalCause,
    /// Every recipient with the server's answer (recipient refusals only).
    pub recipients: Vec<crate::session::RecipientResult>,
}

/// Whether trying the same operation again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Permanent: the same attempt will fail again until something is fixed (credentials,
    /// configuration, a 5xx refusal).
    FixFirst,
    /// Transient: try again later (4xx, network trouble, a timeout before the message was
    /// handed over).
    Later,
    /// Unknown: the message data was sent completely but the server's answer never came; it
    /// may have been delivered. Do not resend blindly.
    Uncertain,
}

/// A typed error: kind, stage, a sentence for the admin, the server's reply if any, and
/// whether a retry can help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub stage: Stage,
    pub message: String,
    pub reply: Option<ServerReply>,
    pub retry: Retry,
    /// Server text quoted in `message`, exactly as it appears there (see `quote`). Kept so
    /// that text received before TLS can be withheld and echoed secrets redacted in one place
    /// (`session::handle_checked`), whatever the protocol or the path that built the error.
    pub quoted: Vec<String>,
    /// Set exactly for `ErrorKind::Refused` (see `Error::refused`).
    pub refusal: Option<Refusal>,
}

impl Error {
    /// Network trouble and timeouts default to `Later`, everything else to `FixFirst`;
    /// `with_retry` overrides it.
    pub fn new(kind: ErrorKind, stage: Stage, message: impl Into<String>) -> Self {
        let retry = match kind {
            ErrorKind::Network | ErrorKind::Timeout => Retry::Later,
            _ => Retry::FixFirst,
        };
        Error { kind, stage, message: message.into(), reply: None, retry, quoted: Vec::new(), refusal: None }
    }
    /// An ordinary refusal by the server (never a fault of the connection or the settings).
    pub fn refused(stage: Stage, message: impl Into<String>, refusal: Refusal) -> Self {
        let mut e = Self::new(ErrorKind::Refused, stage, message);
        e.refusal = Some(refusal);
        e
    }
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }
    pub fn with_reply(mut self, reply: ServerReply) -> Self {
        self.reply = Some(reply);
        self
    }
    /// A protocol error whose sentence quotes server bytes (at most 80 characters, see
    /// `quote`); the excerpt is recorded so that it can be withheld.
    pub fn protocol_quoting(stage: Stage, bytes: &[u8], sentence: impl FnOnce(&str) -> String) -> Self {
        let shown = quote(bytes, 80);
        Self::protocol(stage, sentence(&shown)).with_quote(shown)
    }

    /// Records that `message` quotes `shown` (built by `quote`), so that it can be withheld.
    pub fn with_quote(mut self, shown: impl Into<String>) -> Self {
        self.quoted.push(shown.into());
        self
    }

    /// Replaces every piece of server text in this error (the reply, each of its lines, and
    /// every quoted excerpt) with a note that it was withheld: it arrived before encryption on
    /// a STARTTLS connection and could have been written by an attacker on the path.
    pub fn withhold_server_text(&mut self) {
        let had_text = self.reply.is_some() || !self.quoted.is_empty();
        let mut pieces = std::mem::take(&mut self.quoted);
        if let Some(r) = self.reply.take() {
            pieces.push(format!("{} {}", r.code, r.text));
            pieces.push(format!("{} {}", r.code, r.text.replace('\n', " ")));
            pieces.push(r.text.replace('\n', " "));
            pieces.extend(r.text.split('\n').map(|l| format!("{} {}", r.code, l.trim())));
            pieces.extend(r.text.split('\n').map(|l| l.trim().to_string()));
            pieces.push(r.text);
        }
        // Each recipient's answer too: it is server text like the reply.
        let recipients = self.refusal.as_mut().map(|r| r.recipients.as_mut_slice()).unwrap_or_default();
        let had_text = had_text || !recipients.is_empty();
        for r in recipients {
            pieces.push(std::mem::replace(&mut r.reply.text, WITHHELD.to_string()));
        }
        // Longest first, so a line is not withheld inside a longer piece that then no longer matches.
        pieces.retain(|p| !p.trim().is_empty());
        pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in pieces {
            if self.message.contains(&p) {
                self.message = self.message.replace(&p, WITHHELD);
            }
        }
        // The reply was dropped without being quoted: say so, the admin may look for it.
        if had_text && !self.message.contains(WITHHELD) {
            self.message.push(' ');
            self.message.push_str(WITHHELD);
        }
    }

    /// Replaces each secret form (the password or token, and their encodings on the wire) in
    /// the message, the reply and the quoted excerpts with `<redacted>`: some servers echo
    /// what they were sent in their error texts.
    pub fn redact(&mut self, forms: &[String]) {
        self.message = redact(&self.message, forms);
        for q in &mut self.quoted {
            *q = redact(q, forms);
        }
        if let Some(r) = &mut self.reply {
            r.text = redact(&r.text, forms);
        }
        for r in self.refusal.iter_mut().flat_map(|r| r.recipients.iter_mut()) {
            r.reply.text = redact(&r.reply.text, forms);
        }
    }

    pub fn network(stage: Stage, m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Network, stage, m)
    }
    pub fn tls(stage: Stage, m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Tls, stage, m)
    }
    pub fn auth(stage: Stage, m: impl Into<String>) -> Self {
        Self::new(ErrorKind::AuthRejected, stage, m)
    }
    pub fn protocol(stage: Stage, m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, stage, m)
    }
    pub fn policy(stage: Stage, m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Policy, stage, m)
    }
    pub fn limit(stage: Stage, m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Limit, stage, m)
    }
    pub fn timeout(stage: Stage, m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, stage, m)
    }
    pub fn invalid(stage: Stage, m: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, stage, m)
    }
}

/// What stands in an error message for server text that arrived before TLS.
pub const WITHHELD: &str = "(the server's text is withheld: it arrived before encryption)";

/// `text` with each of `forms` (secrets and their encodings) replaced by `<redacted>`.
pub fn redact(text: &str, forms: &[String]) -> String {
    redact_owned(text.to_string(), forms)
}

/// `redact` of a string the caller gives away: no copy when nothing is to be redacted (the
/// usual case, once per reply of a batch).
pub fn redact_owned(text: String, forms: &[String]) -> String {
    let mut out = text;
    for f in forms.iter().filter(|f| !f.is_empty()) {
        if holds(&out, f) {
            out = out.replace(f.as_str(), "<redacted>");
        }
    }
    out
}

/// `text.contains(form)`, cheaper for the short texts of most replies: no searcher to set up
/// for a form longer than the text, and a plain scan for the first byte under 128 bytes.
fn holds(text: &str, form: &str) -> bool {
    let (t, f) = (text.as_bytes(), form.as_bytes());
    if f.len() > t.len() {
        return false;
    }
    if t.len() >= 128 {
        return text.contains(form);
    }
    let first = f[0];
    (0..=t.len() - f.len()).any(|k| t[k] == first && &t[k..k + f.len()] == f)
}

/// Server bytes shown in an error message: at most `max` characters, control characters as
/// '?', in double quotes, "..." when cut. The one way every protocol quotes server text in an
/// error; pass the result to `Error::with_quote` too.
pub fn quote(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s: String = text.chars().take(max).map(|c| if c.is_control() { '?' } else { c }).collect();
    if text.chars().count() > max {
        s.push_str("...");
    }
    format!("\"{s}\"")
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} error during {}: {}", self.kind, self.stage.as_str(), self.message)?;
        if let Some(r) = &self.reply {
            write!(f, " (server said: {} {})", r.code, r.text)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_short_text_search_agrees_with_contains() {
        // Texts and forms over a small alphabet, so that near misses are common.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..20_000 {
            let t: String = (0..next(200)).map(|_| ['a', 'b', 'ü', ' '][next(4) as usize]).collect();
            let f: String = (0..1 + next(6)).map(|_| ['a', 'b', 'ü'][next(3) as usize]).collect();
            assert_eq!(holds(&t, &f), t.contains(&f), "{t:?} {f:?}");
        }
        assert_eq!(redact_owned("250 Ok queued s3cr3t".into(), &["s3cr3t".into()]), "250 Ok queued <redacted>");
        assert_eq!(redact_owned("s3cr3".into(), &["s3cr3t".into()]), "s3cr3");
    }
}
