//! The idle state: what an idling IMAP session hands to the host (`Action::Idle`) so that a
//! fresh instance can take over the connection (`ImapSession::resume`) without logging in
//! again. Versioned JSON of a few hundred bytes: the server and user it belongs to, the
//! watched folder with its UIDVALIDITY and highest UID seen, the IDLE command's tag and the
//! tag counter, the TLS phase, the capabilities and the configured folder names as the server
//! spells them. Never credentials.
//!
//! Decoding is bounded (size, counts, lengths) and every failure is an `invalid-input` error:
//! the bytes come back from the host, which may have kept them for another mailbox or a
//! plugin of another version.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Mailbox, Security};
use crate::error::{Error, Result, Stage};

const VERSION: u32 = 1;
const KIND: &str = "imap-idle";
/// An idle state is a few hundred bytes; anything much larger is not one of ours.
pub const MAX_IDLE_STATE_BYTES: usize = 64 * 1024;
const MAX_CAPS: usize = 256;
const MAX_NAMES: usize = 256;
const MAX_TEXT: usize = 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleState {
    pub v: u32,
    pub kind: String,
    /// The server and user the connection is logged in to (not secrets: the admin configured
    /// them), so a state is never resumed for another mailbox.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The watched folder (the first configured), as configured.
    pub folder: String,
    pub uidvalidity: u32,
    /// The highest UID below which everything was delivered and stored.
    pub last_uid: u32,
    /// The IDLE command's tag number ("a<n>") and the tags handed out so far.
    pub idle_tag: u32,
    pub last_tag: u32,
    /// True when the connection is encrypted (implicit TLS, or STARTTLS done).
    pub secure: bool,
    pub caps: Vec<String>,
    /// Configured folder name (and after-fetch target) -> the name on the server.
    pub names: BTreeMap<String, String>,
}

fn unreadable(why: impl std::fmt::Display) -> Error {
    Error::invalid(
        Stage::Connect,
        format!("the saved IDLE state is unreadable ({why}); open the mailbox afresh (a new connection)"),
    )
}

fn foreign(what: &str) -> Error {
    Error::invalid(
        Stage::Connect,
        format!("the saved IDLE state belongs to another {what}; open the mailbox afresh (a new connection)"),
    )
}

impl IdleState {
    pub fn encode(&self) -> Vec<u8> {
        // Plain strings and numbers: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads an idle state and checks it belongs to `mailbox` (server, user, first folder).
    pub fn decode(bytes: &[u8], mailbox: &Mailbox, folder: &str) -> Result<Self> {
        if bytes.len() > MAX_IDLE_STATE_BYTES {
            return Err(unreadable(format!("{} bytes, more than {MAX_IDLE_STATE_BYTES}", bytes.len())));
        }
        #[derive(Deserialize)]
        struct Header {
            v: u32,
            kind: String,
        }
        let h: Header = serde_json::from_slice(bytes).map_err(unreadable)?;
        if h.kind != KIND {
            return Err(unreadable(format!("it is of kind {:?}, not an IMAP idle state", crate::error::quote(h.kind.as_bytes(), 40))));
        }
        if h.v != VERSION {
            return Err(unreadable(format!("version {}, this plugin reads version {VERSION}", h.v)));
        }
        let s: IdleState = serde_json::from_slice(bytes).map_err(unreadable)?;
        let long = |t: &String| t.len() > MAX_TEXT;
        if s.caps.len() > MAX_CAPS
            || s.names.len() > MAX_NAMES
            || s.caps.iter().any(long)
            || s.names.iter().any(|(k, v)| long(k) || long(v))
            || long(&s.host)
            || long(&s.user)
            || long(&s.folder)
        {
            return Err(unreadable("a field is larger than any real state"));
        }
        if s.idle_tag == 0 || s.idle_tag > s.last_tag || s.last_tag == u32::MAX {
            return Err(unreadable("the tags do not fit together"));
        }
        if s.names.values().any(|w| w.bytes().any(|b| b < 0x20 || b == 0x7f)) {
            return Err(unreadable("a folder name holds characters a server name never has"));
        }
        let server = &mailbox.server;
        if !s.host.eq_ignore_ascii_case(&server.host) || s.port != server.port || s.user != mailbox.credentials.username() {
            return Err(foreign("server or account"));
        }
        if s.folder != folder {
            return Err(foreign("folder"));
        }
        if s.secure == (server.security == Security::InsecurePlaintext) {
            return Err(unreadable("its TLS phase does not match the mailbox's security"));
        }
        Ok(s)
    }

    pub fn idle_tag(&self) -> String {
        format!("a{}", self.idle_tag)
    }
}

#[cfg(test)]
pub(crate) fn kind() -> &'static str {
    KIND
}
