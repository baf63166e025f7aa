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
    Policy,
    Limit,
    Timeout,
    InvalidInput,
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
}

impl Error {
    /// Network trouble and timeouts default to `Later`, everything else to `FixFirst`;
    /// `with_retry` overrides it.
    pub fn new(kind: ErrorKind, stage: Stage, message: impl Into<String>) -> Self {
        let retry = match kind {
            ErrorKind::Network | ErrorKind::Timeout => Retry::Later,
            _ => Retry::FixFirst,
        };
        Error { kind, stage, message: message.into(), reply: None, retry }
    }
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }
    pub fn with_reply(mut self, reply: ServerReply) -> Self {
        self.reply = Some(reply);
        self
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
