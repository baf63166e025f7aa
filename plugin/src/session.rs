//! The sans-IO driving protocol (`session` in the WIT) as plain Rust, shared by every client.

use crate::config::Server;
use crate::error::{Result, ServerReply};

/// Milliseconds since the Unix epoch, from the host's clock.
pub type Instant = u64;

/// Something that happened on the host's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    Connected,
    Received(&'a [u8]),
    TlsEstablished,
    TlsFailed(&'a str),
    Closed,
    Timer,
    Stored,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedMessage {
    pub id: String,
    pub folder: String,
    pub raw: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FetchSummary {
    pub delivered: u32,
    pub remaining: u32,
    /// Messages reported with `Action::Skipped` in this session.
    pub skipped: u32,
}

/// A message the guest will not deliver (too large for the limits). Reported once: the sync
/// state records it as handled, so it is not retried on every run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedMessage {
    pub id: String,
    pub folder: String,
    /// The size the server reported, in bytes.
    pub size: u64,
    /// A sentence for the admin: why, and what to change to get it.
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientResult {
    pub address: String,
    pub accepted: bool,
    pub reply: ServerReply,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendReport {
    pub final_reply: ServerReply,
    pub recipients: Vec<RecipientResult>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Fetched(FetchSummary),
    Sent(SendReport),
}

/// Something the host must do now, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Write(Vec<u8>),
    StartTls,
    Deliver(FetchedMessage),
    /// A message that will not be delivered; tell the admin.
    Skipped(SkippedMessage),
    Close,
    Finished(Outcome),
}

/// One conversation with one server. Every protocol client implements this; the WIT glue
/// only converts types.
pub trait Session {
    /// The server the host must connect to.
    fn server(&self) -> &Server;
    /// Feed one event at time `now`; returns the actions to perform in order.
    /// After an `Err` or a `Finished` action the session accepts no further events.
    fn handle(&mut self, event: Event<'_>, now: Instant) -> Result<Vec<Action>>;
    /// When the guest gives up waiting, if it is waiting.
    fn deadline(&self) -> Option<Instant>;
    /// Opaque, versioned sync state to store for the next run (inbound only).
    fn sync_state(&self) -> Option<Vec<u8>> {
        None
    }
}
