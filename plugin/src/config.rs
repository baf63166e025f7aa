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
    /// `mechanism`: the only SASL mechanism to use (XOAUTH2 or OAUTHBEARER); None picks one.
    OAuth2 { username: String, access_token: String, mechanism: Option<crate::sasl::Mechanism> },
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
            Credentials::OAuth2 { username, mechanism, .. } => {
                write!(f, "OAuth2 {{ username: {username:?}, access_token: <redacted>, mechanism: {mechanism:?} }}")
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

/// What happens on the server to a message once the host has stored it (never before).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterFetch {
    /// Leave it. With `mark_seen` (IMAP only) set \Seen so people see it was handled.
    Keep { mark_seen: bool },
    /// POP3: DELE, committed by QUIT. IMAP: UID STORE +FLAGS (\Deleted) and UID EXPUNGE of
    /// exactly those UIDs (UIDPLUS); never a plain EXPUNGE.
    Delete,
    /// IMAP only: UID MOVE (or UID COPY + the delete path) to this UTF-8 folder, created when missing.
    MoveTo(String),
}

impl Default for AfterFetch {
    fn default() -> Self {
        AfterFetch::Keep { mark_seen: false }
    }
}

/// Which messages the first fetch of a mailbox (or folder) delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FirstSync {
    /// Everything already in the mailbox.
    All,
    /// Nothing already there: only mail arriving from now on (the default, so connecting a
    /// mailbox with 50,000 old messages does not flood the queue).
    #[default]
    NewOnly,
    /// The newest N messages already there, then everything new.
    Newest(u32),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub protocol: InboundProtocol,
    pub server: Server,
    pub credentials: Credentials,
    /// UTF-8 folder names; empty means INBOX.
    pub folders: Vec<String>,
    pub limits: Limits,
    pub after_fetch: AfterFetch,
    pub first_sync: FirstSync,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmissionServer {
    pub server: Server,
    pub credentials: Credentials,
    pub helo_name: String,
    pub limits: Limits,
}
