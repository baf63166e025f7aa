//! What the driver hands its results to: `MessageSink`.

use crate::engine::{FetchedMessage, MessageResult, SkippedMessage, StepReport};
use crate::error::HostError;

/// Where delivered messages go. `commit` must make everything stored so far durable; only
/// then does the guest hear `stored` and change anything on the server.
pub trait MessageSink {
    fn deliver(&mut self, message: FetchedMessage) -> Result<(), HostError>;
    /// A message the guest will not deliver (over a limit); reported once.
    fn skipped(&mut self, _notice: SkippedMessage) -> Result<(), HostError> {
        Ok(())
    }
    fn commit(&mut self) -> Result<(), HostError>;
    /// A step of a check session completed (see `check`); nothing to store.
    fn progress(&mut self, _report: StepReport) {}
    /// The server the deliveries of this session come from (`store::binding`), told before
    /// the session starts: server ids are only unique per server.
    fn source(&mut self, _server: &str) {}
    /// Something the admin should know about the run (English, German); nothing failed.
    fn warning(&mut self, _en: &str, _de: &str) {}
    /// A batch submission is about to write the final dot of message `index`: record it
    /// durably now. The driver performs no write that follows the commit point before this
    /// returns; an error ends the session before the dot is written.
    fn commit_point(&mut self, _index: u32) -> Result<(), HostError> {
        Ok(())
    }
    /// Whether the driver performs the batch submissions' armed writes (`arm-write`); a sink
    /// that says no gets every reply through the component first, as the contract allows (the
    /// send bench's comparison row).
    fn armed_writes(&self) -> bool {
        true
    }
    /// A batch submission's armed write for message `index` was performed as its replies
    /// arrived (`arm-write`), right after `commit_point(index)`; for counting only.
    fn armed_write(&mut self, _index: u32) {}
    /// A batch submission knows the fate of one message; record it.
    fn message_done(&mut self, _result: MessageResult) -> Result<(), HostError> {
        Ok(())
    }
    /// A batch submission asks for the bytes of message `index` (`need-message`): the driver
    /// calls this once the writes of the step that asked are performed, and hands them over
    /// with `message-data` before reading again, so the copy overlaps the server's work. Return them with at least
    /// `slack` bytes of spare capacity (`Vec::with_capacity(len + slack)`): the final dot and
    /// the next commands are appended there when the message is written; without the room the
    /// driver makes it, which copies the message once more.
    fn batch_message(&mut self, index: u32, _slack: usize) -> Result<Vec<u8>, HostError> {
        Err(HostError::Plugin(format!("the component asked for message {index}, but this session sends none")))
    }
    /// Whether `stored_state` wants the guest's sync state after each `stored`.
    fn wants_stored_state(&self) -> bool {
        false
    }
    /// The guest's committed sync state right after it handled `stored`: it covers everything
    /// committed so far, so a run cut or trapped later resumes from here.
    fn stored_state(&mut self, _state: Option<Vec<u8>>) -> Result<(), HostError> {
        Ok(())
    }
}
