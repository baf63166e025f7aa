//! Where the host keeps what the guest hands it: messages and opaque sync state.
//! Files are written to a temporary name, synced and renamed, so a crash leaves either the old
//! or the new version, never half of one.

pub mod events;
pub mod outbox;
pub mod postgres;
pub mod private_files;
pub mod select;
pub mod sqlite;

pub use events::{Event, Events};
pub use select::{Location, Opener, Store, StoreSink};
pub use outbox::{Envelope, Explanation, NewOutbound, Outbox, OutboxRow, OutboxState, RecordedOutcome, RefusedTransition, StateCount};

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::driver::MessageSink;
use crate::engine::{FetchedMessage, Tokens};
use crate::error::HostError;

/// Keeps what must survive between runs: each mailbox's opaque sync state and, for OAuth2
/// accounts, the tokens (secrets: stored like passwords, never logged).
pub trait SyncStateStore {
    fn load(&self, tenant: &str, mailbox: &str) -> Result<Option<SavedState>, HostError>;
    /// Saves `state`, bound to the server it is for (see `binding`).
    fn save(&self, tenant: &str, mailbox: &str, binding: &str, state: &[u8]) -> Result<(), HostError>;
    /// The tokens of `username` obtained through OAuth2 client `client`, if any.
    fn load_tokens(&self, _tenant: &str, _client: &str, _username: &str) -> Result<Option<Tokens>, HostError> {
        Ok(None)
    }
    /// Replaces the tokens atomically (a rotated refresh token must never be lost).
    fn save_tokens(&self, _tenant: &str, _client: &str, _username: &str, _tokens: &Tokens) -> Result<(), HostError> {
        Err(HostError::Storage("this store cannot keep OAuth2 tokens".into()))
    }
    /// Fails, saying what to do, unless `save_tokens` can work (checked before a consent or a
    /// refresh, whose new tokens would otherwise be lost).
    fn token_storage_ready(&self) -> Result<(), HostError> {
        Err(HostError::Storage("this store cannot keep OAuth2 tokens".into()))
    }
}

/// Reading stored messages back, as the service's API and the CLI do: implemented by the SQLite
/// store (`sqlite::Database`) and the PostgreSQL store (`postgres::PgStore`).
pub trait MessageQuery {
    /// A tenant's stored messages with an id above `after`, oldest first, at most `limit`.
    fn list_messages(&self, tenant: &str, after: i64, limit: u32) -> Result<Vec<sqlite::MessageSummary>, HostError>;
    /// How many messages a tenant has stored.
    fn count_messages(&self, tenant: &str) -> Result<u64, HostError>;
    /// One of the tenant's messages by database id, with its parsed fields (None: not the
    /// tenant's, or no such message).
    fn message_detail(&self, tenant: &str, id: i64) -> Result<Option<sqlite::MessageDetail>, HostError>;
    /// One of the tenant's messages by database id, exactly as fetched.
    fn message_raw(&self, tenant: &str, id: i64) -> Result<Option<Vec<u8>>, HostError>;
    /// A stored message named explicitly (`MessageRef`: `db:17`, `mid:<...>`, `<...>`,
    /// `imap:...`, `pop3:...`); a reference matching several messages is refused with the
    /// candidates listed. Returns (mailbox, raw bytes).
    fn find(&self, tenant: &str, reference: &str) -> Result<(String, Vec<u8>), HostError>;
}

impl MessageQuery for sqlite::Database {
    fn list_messages(&self, tenant: &str, after: i64, limit: u32) -> Result<Vec<sqlite::MessageSummary>, HostError> {
        sqlite::Database::list_messages(self, tenant, after, limit)
    }
    fn count_messages(&self, tenant: &str) -> Result<u64, HostError> {
        sqlite::Database::count_messages(self, tenant)
    }
    fn message_detail(&self, tenant: &str, id: i64) -> Result<Option<sqlite::MessageDetail>, HostError> {
        sqlite::Database::message_detail(self, tenant, id)
    }
    fn message_raw(&self, tenant: &str, id: i64) -> Result<Option<Vec<u8>>, HostError> {
        sqlite::Database::message_raw(self, tenant, id)
    }
    fn find(&self, tenant: &str, reference: &str) -> Result<(String, Vec<u8>), HostError> {
        sqlite::Database::find(self, tenant, reference)
    }
}

/// A stored message named explicitly (`Store::find`): `db:17` (its database id),
/// `mid:<id@host>` or `<id@host>` (its Message-ID), or its server id (`imap:...`, `pop3:...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageRef {
    Id(i64),
    MessageId(String),
    ServerId(String),
}

impl MessageRef {
    /// Parses a reference; a bare number or other text is refused, since it could be read more
    /// than one way.
    pub fn parse(reference: &str) -> Result<MessageRef, HostError> {
        let r = reference.trim();
        let bracketed = |v: &str| v.strip_prefix('<').and_then(|v| v.strip_suffix('>')).map(str::to_string);
        if let Some(n) = r.strip_prefix("db:") {
            let id = n.trim().parse::<i64>().map_err(|_| HostError::NotFound(format!("\"{r}\": after db: give the message's database id, a number")))?;
            Ok(MessageRef::Id(id))
        } else if let Some(m) = r.strip_prefix("mid:") {
            let m = m.trim();
            Ok(MessageRef::MessageId(bracketed(m).unwrap_or_else(|| m.to_string())))
        } else if let Some(m) = bracketed(r) {
            Ok(MessageRef::MessageId(m))
        } else if r.starts_with("imap:") || r.starts_with("pop3:") {
            Ok(MessageRef::ServerId(r.to_string()))
        } else {
            Err(HostError::NotFound(format!(
                "\"{r}\" does not say what it names; give db:<database id>, mid:<Message-ID> (or <Message-ID> in angle brackets), or the server id (imap:... / pop3:...)"
            )))
        }
    }

    /// The column of `messages` it is matched against (the same in both stores).
    pub fn column(&self) -> &'static str {
        match self {
            MessageRef::Id(_) => "id",
            MessageRef::MessageId(_) => "message_id",
            MessageRef::ServerId(_) => "server_id",
        }
    }
}

/// A message candidate for a reference: (database id, mailbox, server id, From, Subject).
pub type RefCandidate = (i64, String, String, Option<String>, Option<String>);

/// The error for a reference with no match or several (`Store::find`, both stores), up to
/// 11 candidates given (10 listed, the 11th says "more than").
pub fn reference_error(reference: &str, tenant: &str, found: &[RefCandidate]) -> HostError {
    let r = reference.trim();
    if found.len() <= 1 {
        return HostError::NotFound(format!("no stored message \"{r}\" for tenant \"{tenant}\""));
    }
    let list: Vec<String> = found
        .iter()
        .take(10)
        .map(|(id, mailbox, server_id, from, subject)| {
            format!("db:{id} (mailbox {mailbox}, {server_id}, From: {}, Subject: {})", from.as_deref().unwrap_or("-"), subject.as_deref().unwrap_or("-"))
        })
        .collect();
    HostError::NotFound(format!(
        "\"{r}\" matches {}{} stored messages, so the reply is not sent: {}; name the one to answer by its db: id",
        if found.len() > 10 { "more than " } else { "" },
        found.len().min(10),
        list.join("; ")
    ))
}

/// A mailbox's stored sync state and the server it was saved for.
#[derive(Debug, Clone)]
pub struct SavedState {
    pub state: Vec<u8>,
    /// `binding` of the server; None for states saved before bindings were recorded.
    pub binding: Option<String>,
}

/// What a sync state (UIDs, UIDLs) is only valid for: the protocol, host, port and user.
/// The host name is compared without case and without a trailing dot.
pub fn binding(protocol: &str, host: &str, port: u16, username: &str) -> String {
    format!("{protocol}:{}:{port}:{username}", host.trim_end_matches('.').to_ascii_lowercase())
}

/// Drops a delivered message's decoded attachment bytes (the stores record attachments by
/// name, type and size only; the content stays in the raw message) and returns the bytes the
/// message still holds: raw plus bodies, what a store's backlog counts.
pub fn without_attachment_bytes(m: &mut FetchedMessage) -> usize {
    let mut size = m.raw.len();
    if let Ok(p) = &mut m.parsed {
        for a in &mut p.attachments {
            a.bytes = Vec::new();
        }
        size += p.text_body.as_ref().map_or(0, |b| b.len()) + p.html_body.as_ref().map_or(0, |b| b.len());
    }
    size
}

/// A file name safe on every file system for an arbitrary id.
pub fn safe_name(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' { c } else { '_' })
        .collect()
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HostError> {
    let err = |e: std::io::Error| HostError::Storage(format!("cannot write {}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        crate::private_files::create_dir(dir)?;
    }
    let tmp = path.with_extension("tmp");
    // Messages are private: mode 0600 (see `private_files`).
    let mut f = crate::private_files::create_file(&tmp)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    fs::rename(&tmp, path).map_err(err)?;
    Ok(())
}

/// Keeps no sync state: every run starts from scratch.
pub struct NoSyncState;

impl SyncStateStore for NoSyncState {
    fn load(&self, _: &str, _: &str) -> Result<Option<SavedState>, HostError> {
        Ok(None)
    }
    fn save(&self, _: &str, _: &str, _: &str, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
}

/// Writes each message as `<dir>/<id>.eml`; `commit` syncs the folder.
pub struct EmlDir {
    pub dir: PathBuf,
    /// Paths written in this run, in delivery order.
    pub written: Vec<PathBuf>,
}

impl EmlDir {
    pub fn new(dir: PathBuf) -> Result<Self, HostError> {
        crate::private_files::create_dir(&dir)?;
        Ok(EmlDir { dir, written: Vec::new() })
    }
}

impl EmlDir {
    /// Writes one message as `<dir>/<id>.eml` (also used for messages read back from the store).
    pub fn write(&mut self, id: &str, raw: &[u8]) -> Result<PathBuf, HostError> {
        let path = self.dir.join(format!("{}.eml", safe_name(id)));
        write_atomically(&path, raw)?;
        self.written.push(path.clone());
        Ok(path)
    }
}

impl MessageSink for EmlDir {
    fn deliver(&mut self, m: FetchedMessage) -> Result<(), HostError> {
        self.write(&m.id, &m.raw).map(|_| ())
    }
    fn commit(&mut self) -> Result<(), HostError> {
        // Each file was synced before its rename; sync the folder so the renames are durable too.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Keeps messages in memory (tests, and callers that store elsewhere).
#[derive(Default)]
pub struct MemorySink {
    pub messages: Vec<FetchedMessage>,
    pub commits: usize,
}

impl MessageSink for MemorySink {
    fn deliver(&mut self, m: FetchedMessage) -> Result<(), HostError> {
        self.messages.push(m);
        Ok(())
    }
    fn commit(&mut self) -> Result<(), HostError> {
        self.commits += 1;
        Ok(())
    }
}

/// For sessions that never deliver (submission): a delivery is a contract violation.
pub struct NoMessages;

impl MessageSink for NoMessages {
    fn deliver(&mut self, _: FetchedMessage) -> Result<(), HostError> {
        Err(HostError::Plugin("the component delivered a message in a send session".into()))
    }
    fn commit(&mut self) -> Result<(), HostError> {
        Ok(())
    }
}
