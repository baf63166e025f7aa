//! Configuration values the host passes in (`types.server`, `types.credentials`, `types.limits`).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    ImplicitTls,
    Starttls,
    InsecurePlaintext,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

/// Credentials. `Debug` is written by hand so that secrets never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic { username: String, password: String },
    OAuth2 { username: String, access_token: String },
}

impl Credentials {
    pub fn username(&self) -> &str {
        match self {
            Credentials::Basic { username, .. } | Credentials::OAuth2 { username, .. } => username,
        }
    }
    /// The secret, for the few places that put it on the wire (SASL encoders) and for
    /// redaction checks.
    pub fn secret(&self) -> &str {
        match self {
            Credentials::Basic { password, .. } => password,
            Credentials::OAuth2 { access_token, .. } => access_token,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, password: <redacted> }}")
            }
            Credentials::OAuth2 { username, .. } => {
                write!(f, "OAuth2 {{ username: {username:?}, access_token: <redacted> }}")
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_line_bytes: u32,
    pub max_message_bytes: u64,
    pub max_batch_messages: u32,
    pub max_batch_bytes: u64,
    pub reply_timeout_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            max_message_bytes: 50 * 1024 * 1024,
            max_batch_messages: 500,
            max_batch_bytes: 200 * 1024 * 1024,
            reply_timeout_ms: 60_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InboundProtocol {
    Pop3,
    Imap,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub protocol: InboundProtocol,
    pub server: Server,
    pub credentials: Credentials,
    /// UTF-8 folder names; empty means INBOX.
    pub folders: Vec<String>,
    pub limits: Limits,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmissionServer {
    pub server: Server,
    pub credentials: Credentials,
    pub helo_name: String,
    pub limits: Limits,
}
